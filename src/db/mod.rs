//! The database: connection setup, migrations, maintenance, and the store
//! errors every table's store returns.
//!
//! [`Database`] is whichever backend `PWA_DATABASE_URL` names: an embedded
//! SQLite file ([`sqlite::SqliteDatabase`], the default, with backups, restore and
//! adoption) or PostgreSQL ([`postgres::PgDatabase`], for several instances).

pub mod maintenance;
pub mod migrations;
pub mod postgres;
pub mod sqlite;
mod store_error;
pub mod transfer;

pub use sqlite::SqliteDatabase;
pub use store_error::StoreError;

use std::path::PathBuf;

use crate::config::{DatabaseSettings, DatabaseUrl};

/// Errors opening or preparing the database.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The data directory could not be created.
    #[error("cannot create data directory {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Connecting failed (unreadable file, not a database, ...).
    #[error("cannot open database {path}: {source}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// The driver error.
        source: sqlx::Error,
    },
    /// Connecting to PostgreSQL failed.
    #[error("cannot connect to {url}: {source}")]
    Connect {
        /// The URL, password redacted.
        url: String,
        /// The driver error.
        source: sqlx::Error,
    },
    /// A migration failed or the database is newer than this binary.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Converting the original service's database failed.
    #[error(transparent)]
    Adopt(#[from] Box<sqlite::adopt::AdoptError>),
    /// An SQLite-only operation on another backend.
    #[error("{0} works on SQLite only; this database is PostgreSQL")]
    SqliteOnly(&'static str),
    /// SQLite kept its journal mode: another process has the file open.
    #[error("cannot switch the database to journal_mode={wanted}: another process has it open")]
    JournalMode {
        /// The mode asked for.
        wanted: &'static str,
    },
    /// Any other database error.
    #[error(transparent)]
    Sqlx(#[from] sqlx::Error),
}

/// Which backend serves the data.
#[derive(Debug, Clone)]
pub enum Database {
    /// An embedded SQLite file.
    Sqlite(SqliteDatabase),
    /// A PostgreSQL server.
    Postgres(postgres::PgDatabase),
}

impl Database {
    /// Opens the database `settings` names and applies pending migrations (on
    /// SQLite, after adopting a database written by the original service).
    pub async fn open(settings: &DatabaseSettings) -> Result<Self, DbError> {
        match &settings.url {
            DatabaseUrl::Sqlite { .. } => SqliteDatabase::open(settings).await.map(Self::Sqlite),
            DatabaseUrl::Postgres { url } => {
                let db = postgres::PgDatabase::connect(settings, url).await?;
                migrations::POSTGRES.run(db.pool()).await?;
                Ok(Self::Postgres(db))
            }
        }
    }

    /// Opens the database without touching its schema.
    pub async fn open_without_migrating(settings: &DatabaseSettings) -> Result<Self, DbError> {
        match &settings.url {
            DatabaseUrl::Sqlite { .. } => SqliteDatabase::open_without_migrating(settings)
                .await
                .map(Self::Sqlite),
            DatabaseUrl::Postgres { url } => postgres::PgDatabase::connect(settings, url)
                .await
                .map(Self::Postgres),
        }
    }

    /// The adoption of the original's SQLite file that opening it made, once
    /// (the caller appends its audit event); None on PostgreSQL.
    pub fn take_adoption(&self) -> Option<sqlite::adopt::AdoptionReport> {
        match self {
            Self::Sqlite(db) => db.take_adoption(),
            Self::Postgres(_) => None,
        }
    }

    /// `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "sqlite",
            Self::Postgres(_) => "postgres",
        }
    }

    /// Checks that the database answers a query.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        match self {
            Self::Sqlite(db) => db.ping().await,
            Self::Postgres(db) => db.ping().await,
        }
    }

    /// Closes every connection.
    pub async fn close(&self) {
        match self {
            Self::Sqlite(db) => db.close().await,
            Self::Postgres(db) => db.close().await,
        }
    }

    /// Whether [`Database::close`] was called.
    pub fn is_closed(&self) -> bool {
        match self {
            Self::Sqlite(db) => db.is_closed(),
            Self::Postgres(db) => db.is_closed(),
        }
    }
}
