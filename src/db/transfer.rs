//! `migrate-data`: copies every table of one database into another of the other
//! backend (SQLite → PostgreSQL to move a clinic, or back), verifying row counts
//! and per-table checksums before committing.
//!
//! Nothing here names a table or a column: tables and their columns are read
//! from the catalogs, so tables added by later migrations are copied without
//! new code. Both databases are migrated to this binary's schema first; a table
//! present on one side only is an error, never silently skipped.
//!
//! Values travel as text in the backends' shared canonical form (hyphenated
//! ids, `2026-11-27T23:53:30.306917Z` timestamps, JSON) and are cast to the
//! target column's type by the INSERT. A row's checksum is the SHA-256 of its
//! canonical values; a table's is the wrapping sum of its rows' (so it does not
//! depend on the order rows are read in), computed on the source as it is read
//! and on the target after writing, inside the target's transaction: on any
//! mismatch nothing is committed.

use futures_util::TryStreamExt;
use sha2::{Digest, Sha256};
use sqlx::Row;

use super::{Database, DbError, migrations};

/// The migration bookkeeping table: each side keeps its own.
const MIGRATIONS_TABLE: &str = "_sqlx_migrations";
/// Tables that refuse DELETE (the audit trail): a target holding rows in one
/// cannot be replaced, even with `--force`.
const APPEND_ONLY_TABLES: [&str; 1] = ["audit_events"];
/// PostgreSQL's text form of a `timestamptz`, the same as the API's and SQLite's.
const PG_TIMESTAMP_FORMAT: &str = "YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"";

/// What can go wrong moving data.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// Both URLs name the same backend.
    #[error(
        "migrate-data copies between SQLite and PostgreSQL; for SQLite to SQLite use backup and restore"
    )]
    SameBackend,
    /// The schemas differ (a table or a column on one side only).
    #[error("schemas differ: {0}")]
    Schema(String),
    /// The target holds rows and `--force` was not given.
    #[error("the target is not empty ({0}); use --force to replace its contents")]
    TargetNotEmpty(String),
    /// `--force` on a target whose audit trail cannot be removed.
    #[error(
        "the target holds an audit trail ({0}), which is append-only and cannot be replaced, \
         not even with --force: migrate into an empty database"
    )]
    TargetHasAuditTrail(String),
    /// What was written does not match what was read.
    #[error("verification failed for table {table}: {detail}; nothing was committed")]
    Verification {
        /// The table.
        table: String,
        /// Counts or checksums on each side.
        detail: String,
    },
    /// A database error.
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<sqlx::Error> for TransferError {
    fn from(e: sqlx::Error) -> Self {
        Self::Db(DbError::Sqlx(e))
    }
}

/// One table as copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableReport {
    /// Table name.
    pub table: String,
    /// Rows copied (equal on both sides).
    pub rows: u64,
    /// The table's checksum (equal on both sides), hex.
    pub checksum: String,
}

/// A table and its columns, with each column's PostgreSQL type (which decides
/// how its values are cast and compared).
#[derive(Debug, Clone)]
struct Table {
    name: String,
    columns: Vec<(String, String)>,
}

/// Copies every table from `source` to `target` (which must be of the other
/// backend) in batches of `batch` rows, calling `progress(rows)` after each.
/// With `force`, the target's tables are emptied first; without, a non-empty
/// target is refused. All or nothing: one transaction on the target.
pub async fn copy_all(
    source: &Database,
    target: &Database,
    force: bool,
    batch: usize,
    progress: impl Fn(&str, u64, u64),
) -> Result<Vec<TableReport>, TransferError> {
    let pg = match (source, target) {
        (Database::Sqlite(_), Database::Postgres(pg))
        | (Database::Postgres(pg), Database::Sqlite(_)) => pg,
        _ => return Err(TransferError::SameBackend),
    };
    migrations::run(source).await?;
    migrations::run(target).await?;
    let tables = postgres_tables(pg).await?;
    check_same_tables(source, target, &tables).await?;

    let mut non_empty = Vec::new();
    for t in &tables {
        let n = count(target, &t.name).await?;
        if n > 0 && APPEND_ONLY_TABLES.contains(&t.name.as_str()) && force {
            return Err(TransferError::TargetHasAuditTrail(format!(
                "{}: {n} row(s)",
                t.name
            )));
        }
        if n > 0 {
            non_empty.push(format!("{}: {n} row(s)", t.name));
        }
    }
    if !non_empty.is_empty() && !force {
        return Err(TransferError::TargetNotEmpty(non_empty.join(", ")));
    }

    let mut writer = Writer::begin(target).await?;
    let mut reports = Vec::new();
    for t in &tables {
        writer.empty(&t.name).await?;
        let total = count(source, &t.name).await?;
        let mut rows = 0u64;
        let mut sum = 0u64;
        let mut pending: Vec<Vec<Option<String>>> = Vec::with_capacity(batch);
        let select = canonical_select(matches!(source, Database::Sqlite(_)), t);
        let mut stream = fetch_text_rows(source, &select);
        while let Some(row) = stream.try_next().await? {
            let row = canonical_row(t, row);
            sum = sum.wrapping_add(row_checksum(&row));
            pending.push(row);
            if pending.len() == batch {
                writer.insert(t, &pending).await?;
                rows += pending.len() as u64;
                pending.clear();
                progress(&t.name, rows, total);
            }
        }
        drop(stream);
        if !pending.is_empty() {
            writer.insert(t, &pending).await?;
            rows += pending.len() as u64;
            progress(&t.name, rows, total);
        }
        let (written, written_sum) = writer.checksum(t).await?;
        if written != rows || written_sum != sum {
            return Err(TransferError::Verification {
                table: t.name.clone(),
                detail: format!(
                    "read {rows} row(s), checksum {sum:016x}; wrote {written} row(s), checksum {written_sum:016x}"
                ),
            });
        }
        reports.push(TableReport {
            table: t.name.clone(),
            rows,
            checksum: format!("{sum:016x}"),
        });
    }
    writer.commit().await?;
    // Fresh statistics, so the target's planner knows what it now holds.
    match target {
        Database::Sqlite(db) => sqlx::query("ANALYZE")
            .execute(db.writer())
            .await
            .map(drop)?,
        Database::Postgres(db) => sqlx::query("ANALYZE").execute(db.pool()).await.map(drop)?,
    }
    Ok(reports)
}

/// Quotes an identifier read from a catalog.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The PostgreSQL side's tables (without the migration table), with column types.
async fn postgres_tables(pg: &super::postgres::PgDatabase) -> Result<Vec<Table>, sqlx::Error> {
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT c.relname::text, a.attname::text, format_type(a.atttypid, a.atttypmod) \
         FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
         WHERE n.nspname = current_schema() AND c.relkind = 'r' AND c.relname <> $1 \
         ORDER BY c.relname, a.attnum",
    )
    .bind(MIGRATIONS_TABLE)
    .fetch_all(pg.pool())
    .await?;
    let mut tables: Vec<Table> = Vec::new();
    for (table, column, ty) in rows {
        match tables.last_mut() {
            Some(t) if t.name == table => t.columns.push((column, ty)),
            _ => tables.push(Table {
                name: table,
                columns: vec![(column, ty)],
            }),
        }
    }
    Ok(tables)
}

/// The SQLite side's tables and column names.
async fn sqlite_tables(
    db: &super::SqliteDatabase,
) -> Result<Vec<(String, Vec<String>)>, sqlx::Error> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT m.name, p.name FROM sqlite_master m, pragma_table_info(m.name) p \
         WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' AND m.name <> ?1 \
         ORDER BY m.name, p.cid",
    )
    .bind(MIGRATIONS_TABLE)
    .fetch_all(db.readers())
    .await?;
    let mut tables: Vec<(String, Vec<String>)> = Vec::new();
    for (table, column) in rows {
        match tables.last_mut() {
            Some((name, columns)) if *name == table => columns.push(column),
            _ => tables.push((table, vec![column])),
        }
    }
    Ok(tables)
}

/// Fails unless the SQLite side has exactly the PostgreSQL side's tables and columns.
async fn check_same_tables(
    source: &Database,
    target: &Database,
    pg_tables: &[Table],
) -> Result<(), TransferError> {
    let sqlite = match (source, target) {
        (Database::Sqlite(db), _) | (_, Database::Sqlite(db)) => db,
        _ => return Err(TransferError::SameBackend),
    };
    let sqlite_tables = sqlite_tables(sqlite).await?;
    let pg_names: Vec<(String, Vec<String>)> = pg_tables
        .iter()
        .map(|t| {
            let mut columns: Vec<String> = t.columns.iter().map(|(c, _)| c.clone()).collect();
            columns.sort();
            (t.name.clone(), columns)
        })
        .collect();
    for (name, columns) in &sqlite_tables {
        let mut columns = columns.clone();
        columns.sort();
        match pg_names.iter().find(|(n, _)| n == name) {
            None => {
                return Err(TransferError::Schema(format!(
                    "table {name} exists in SQLite but not in PostgreSQL"
                )));
            }
            Some((_, pg_columns)) if *pg_columns != columns => {
                return Err(TransferError::Schema(format!(
                    "table {name} has columns {columns:?} in SQLite but {pg_columns:?} in PostgreSQL"
                )));
            }
            Some(_) => {}
        }
    }
    if let Some((name, _)) = pg_names
        .iter()
        .find(|(n, _)| !sqlite_tables.iter().any(|(s, _)| s == n))
    {
        return Err(TransferError::Schema(format!(
            "table {name} exists in PostgreSQL but not in SQLite"
        )));
    }
    Ok(())
}

async fn count(db: &Database, table: &str) -> Result<u64, sqlx::Error> {
    // The table name comes from a catalog, quoted as an identifier.
    let sql = format!("SELECT count(*) FROM {}", ident(table));
    let n: i64 = match db {
        Database::Sqlite(db) => {
            sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .fetch_one(db.readers())
                .await?
        }
        Database::Postgres(db) => {
            sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .fetch_one(db.pool())
                .await?
        }
    };
    Ok(u64::try_from(n).unwrap_or(0))
}

/// `SELECT` of every column as canonical text, in SQLite's dialect or PostgreSQL's.
fn canonical_select(sqlite: bool, table: &Table) -> String {
    let columns: Vec<String> = table
        .columns
        .iter()
        .map(|(name, ty)| {
            if sqlite {
                format!("CAST({} AS TEXT)", ident(name))
            } else {
                postgres_text(name, ty)
            }
        })
        .collect();
    format!("SELECT {} FROM {}", columns.join(", "), ident(&table.name))
}

/// A PostgreSQL column as the canonical text.
fn postgres_text(name: &str, ty: &str) -> String {
    if ty == "timestamp with time zone" {
        format!(
            "to_char({} AT TIME ZONE 'UTC', '{PG_TIMESTAMP_FORMAT}')",
            ident(name)
        )
    } else {
        format!("{}::text", ident(name))
    }
}

/// Rows of a statement, every value as optional text.
fn fetch_text_rows<'a>(
    db: &'a Database,
    sql: &'a str,
) -> futures_util::stream::BoxStream<'a, Result<Vec<Option<String>>, sqlx::Error>> {
    // Built from catalog names and the fixed fragments above.
    let query = sqlx::AssertSqlSafe(sql);
    match db {
        Database::Sqlite(db) => Box::pin(
            sqlx::query(query)
                .fetch(db.readers())
                .and_then(|row| async move { text_values(&row) }),
        ),
        Database::Postgres(db) => Box::pin(
            sqlx::query(query)
                .fetch(db.pool())
                .and_then(|row| async move { text_values(&row) }),
        ),
    }
}

fn text_values<R: Row>(row: &R) -> Result<Vec<Option<String>>, sqlx::Error>
where
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    usize: sqlx::ColumnIndex<R>,
{
    (0..row.len()).map(|i| row.try_get(i)).collect()
}

/// JSON values re-serialised, so that text that PostgreSQL's `jsonb`
/// normalised (spacing, key order) compares equal to what SQLite kept verbatim.
fn canonical_row(table: &Table, mut row: Vec<Option<String>>) -> Vec<Option<String>> {
    for ((_, ty), value) in table.columns.iter().zip(row.iter_mut()) {
        if (ty == "jsonb" || ty == "json")
            && let Some(text) = value.as_mut()
            && let Ok(json) = serde_json::from_str::<serde_json::Value>(text)
        {
            *text = json.to_string();
        }
    }
    row
}

fn row_checksum(row: &[Option<String>]) -> u64 {
    let mut hasher = Sha256::new();
    for value in row {
        match value {
            // A tag byte per value, so NULL, "" and adjacent values never collide.
            None => hasher.update([0u8]),
            Some(text) => {
                hasher.update([1u8]);
                hasher.update((text.len() as u64).to_le_bytes());
                hasher.update(text.as_bytes());
            }
        }
    }
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(first)
}

/// The target's one transaction.
enum Writer {
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
}

impl Writer {
    async fn begin(db: &Database) -> Result<Self, sqlx::Error> {
        Ok(match db {
            Database::Sqlite(db) => Self::Sqlite(db.begin_write().await?),
            Database::Postgres(db) => Self::Postgres(db.pool().begin().await?),
        })
    }

    async fn empty(&mut self, table: &str) -> Result<(), sqlx::Error> {
        let sql = format!("DELETE FROM {}", ident(table));
        match self {
            Self::Sqlite(tx) => sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&mut **tx)
                .await
                .map(drop),
            Self::Postgres(tx) => sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&mut **tx)
                .await
                .map(drop),
        }
    }

    async fn insert(
        &mut self,
        table: &Table,
        rows: &[Vec<Option<String>>],
    ) -> Result<(), sqlx::Error> {
        let names: Vec<String> = table.columns.iter().map(|(n, _)| ident(n)).collect();
        match self {
            Self::Postgres(tx) => {
                // One array per column, unnested into rows and cast to the column types.
                let arrays: Vec<String> =
                    (1..=names.len()).map(|i| format!("${i}::text[]")).collect();
                let casts: Vec<String> = table
                    .columns
                    .iter()
                    .enumerate()
                    .map(|(i, (_, ty))| format!("c{i}::{ty}"))
                    .collect();
                let aliases: Vec<String> = (0..names.len()).map(|i| format!("c{i}")).collect();
                let sql = format!(
                    "INSERT INTO {} ({}) SELECT {} FROM UNNEST({}) AS u({})",
                    ident(&table.name),
                    names.join(", "),
                    casts.join(", "),
                    arrays.join(", "),
                    aliases.join(", ")
                );
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                for i in 0..names.len() {
                    let column: Vec<Option<String>> = rows.iter().map(|r| r[i].clone()).collect();
                    query = query.bind(column);
                }
                query.execute(&mut **tx).await?;
            }
            Self::Sqlite(tx) => {
                // SQLite's STRICT columns convert the text losslessly (or refuse).
                let one = format!("({})", vec!["?"; names.len()].join(", "));
                let per_statement = (30_000 / names.len().max(1)).max(1);
                for chunk in rows.chunks(per_statement) {
                    let sql = format!(
                        "INSERT INTO {} ({}) VALUES {}",
                        ident(&table.name),
                        names.join(", "),
                        vec![one.as_str(); chunk.len()].join(", ")
                    );
                    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                    for row in chunk {
                        for value in row {
                            query = query.bind(value.clone());
                        }
                    }
                    query.execute(&mut **tx).await?;
                }
            }
        }
        Ok(())
    }

    /// Row count and checksum of what the transaction now holds.
    async fn checksum(&mut self, table: &Table) -> Result<(u64, u64), sqlx::Error> {
        let sql = canonical_select(matches!(self, Self::Sqlite(_)), table);
        // Built from catalog names and fixed fragments.
        let query = sqlx::AssertSqlSafe(sql);
        match self {
            Self::Sqlite(tx) => sum_rows(table, sqlx::query(query).fetch(&mut **tx)).await,
            Self::Postgres(tx) => sum_rows(table, sqlx::query(query).fetch(&mut **tx)).await,
        }
    }

    async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Self::Sqlite(tx) => tx.commit().await,
            Self::Postgres(tx) => tx.commit().await,
        }
    }
}

/// Row count and checksum of a stream of canonical rows.
async fn sum_rows<R: Row>(
    table: &Table,
    mut rows: impl futures_util::Stream<Item = Result<R, sqlx::Error>> + Unpin,
) -> Result<(u64, u64), sqlx::Error>
where
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    usize: sqlx::ColumnIndex<R>,
{
    let (mut count, mut sum) = (0u64, 0u64);
    while let Some(row) = rows.try_next().await? {
        let row = canonical_row(table, text_values(&row)?);
        sum = sum.wrapping_add(row_checksum(&row));
        count += 1;
    }
    Ok((count, sum))
}
