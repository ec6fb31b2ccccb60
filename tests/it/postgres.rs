//! PostgreSQL deployments: several server processes on one database, moving a
//! clinic's data between backends, and the operations commands on PostgreSQL.
//! Every test is skipped (and says so) when `PWA_TEST_POSTGRES_URL` is not set.

use std::collections::{BTreeMap, HashSet};

use crate::common::{
    PgTestDb, ServerProcess, client, files_under, postgres_or_skip, run_cli, run_cli_url,
    upload_to, webm,
};
use clinscribe::config::DatabaseSettings;
use clinscribe::db::Database;
use clinscribe::recordings::ListQuery;
use serde_json::{Value, json};

/// `n` server processes on one fresh PostgreSQL database, sharing one audio
/// directory (as instances share a volume or bucket). A cross-instance test is
/// `Cluster::start(name, 2)` and requests to `cluster.servers[i]`.
struct Cluster {
    servers: Vec<ServerProcess>,
    db: PgTestDb,
    audio: tempfile::TempDir,
}

impl Cluster {
    /// None (test skipped) without `PWA_TEST_POSTGRES_URL`.
    async fn start(test: &str, n: usize) -> Option<Self> {
        let admin = postgres_or_skip(test)?;
        let db = PgTestDb::create(&admin).await;
        let audio = tempfile::tempdir().unwrap();
        let env = [("PWA_AUDIO_DIR", audio.path().to_str().unwrap())];
        // The first applies the migrations, as in a rolling deploy.
        let mut servers = vec![ServerProcess::start_url(&db.url, &env)];
        for _ in 1..n {
            servers.push(ServerProcess::start_url(&db.url, &env));
        }
        Some(Self { servers, db, audio })
    }
}

/// Every recording in a database (any backend), as JSON keyed by id.
async fn recordings_in(settings: &DatabaseSettings) -> BTreeMap<String, Value> {
    let db = Database::open_without_migrating(settings)
        .await
        .expect("open");
    let store = clinscribe::recordings::store::open(&db.clone());
    let mut out = BTreeMap::new();
    for (clinician, _) in store.count_by_clinician().await.expect("clinicians") {
        let mut after = None;
        loop {
            let page = store
                .list_for_clinician(
                    &clinician,
                    ListQuery {
                        status: None,
                        limit: 1000,
                        after,
                    },
                )
                .await
                .expect("list");
            for r in page.recordings().expect("decode") {
                out.insert(r.id.to_string(), serde_json::to_value(&r).unwrap());
            }
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
    }
    db.close().await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_share_one_database_without_losing_or_duplicating_rows() {
    let Some(cluster) = Cluster::start("two_instances_share_one_database", 2).await else {
        return;
    };
    let http = client();
    // 8 clients, each alternating between the two instances, 40 creates each.
    let mut tasks = Vec::new();
    for c in 0..8 {
        let urls: Vec<String> = cluster
            .servers
            .iter()
            .map(|s| s.url("/api/v1/recordings"))
            .collect();
        let http = http.clone();
        tasks.push(tokio::spawn(async move {
            let mut created = Vec::new();
            for i in 0..40 {
                let response = http
                    .post(&urls[(c + i) % 2])
                    .json(&json!({"patient_id": format!("p-{c}-{i}"), "duration_seconds": i}))
                    .send()
                    .await
                    .expect("create");
                assert_eq!(response.status(), 201);
                let body: Value = response.json().await.expect("json");
                created.push(body);
            }
            created
        }));
    }
    let mut created = Vec::new();
    for t in tasks {
        created.extend(t.await.expect("task"));
    }
    assert_eq!(created.len(), 320);
    let ids: HashSet<String> = created
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 320, "every create got its own id");

    // Each instance reads every write, its own and the other's, field for field.
    for server in &cluster.servers {
        let listed: Vec<Value> = server.get_json("/api/v1/recordings?limit=1000").await;
        assert_eq!(listed.len(), 320);
        let listed_ids: HashSet<String> = listed
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(listed_ids, ids);
        for r in created.iter().step_by(16) {
            let id = r["id"].as_str().unwrap();
            let fetched: Value = server.get_json(&format!("/api/v1/recordings/{id}")).await;
            assert_eq!(&fetched, r);
        }
    }
    let stored = recordings_in(&DatabaseSettings::postgres(cluster.db.url.clone())).await;
    assert_eq!(stored.len(), 320, "no lost or duplicated rows");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn migrate_data_moves_a_clinic_to_postgres_and_back_with_every_field() {
    let Some(admin) = postgres_or_skip("migrate_data_moves_a_clinic") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let sqlite = dir.path().join("clinical.db");
    let seeded = run_cli(&sqlite, &["seed", "--count", "2500"]);
    assert_eq!(seeded.code, Some(0), "{}", seeded.stderr);
    let pg = PgTestDb::create(&admin).await;
    let from = format!("sqlite://{}", sqlite.display());
    let migrate = |from: &str, to: &str, extra: &[&str]| {
        let mut args = vec!["migrate-data", "--from", from, "--to", to, "--batch", "700"];
        args.extend_from_slice(extra);
        run_cli_url(from, dir.path(), &args)
    };

    let out = migrate(&from, &pg.url, &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let first_copy = out.stdout.clone();
    assert!(
        out.stdout
            .contains("table recordings: 2500 row(s) copied, counts and checksum"),
        "{}",
        out.stdout
    );
    let original = recordings_in(&DatabaseSettings::sqlite(&sqlite)).await;
    assert_eq!(original.len(), 2500);
    let moved = recordings_in(&DatabaseSettings::postgres(pg.url.clone())).await;
    assert_eq!(moved, original, "every row, every field");
    assert!(
        original
            .values()
            .any(|r| !r["verification_results"].is_null())
            && original.values().any(|r| !r["transcript"].is_null()),
        "the seed exercises the JSON and text columns"
    );

    // A non-empty target is refused and left as it was.
    let out = migrate(&from, &pg.url, &[]);
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr.contains("not empty") && out.stderr.contains("--force"),
        "{}",
        out.stderr
    );
    assert_eq!(
        recordings_in(&DatabaseSettings::postgres(pg.url.clone()))
            .await
            .len(),
        2500
    );
    // Not even --force replaces a target that holds an audit trail (append-only).
    let out = migrate(&from, &pg.url, &["--force"]);
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr.contains("audit trail") && out.stderr.contains("append-only"),
        "{}",
        out.stderr
    );
    assert_eq!(
        recordings_in(&DatabaseSettings::postgres(pg.url.clone())).await,
        original
    );
    // The copied trail verifies there, and ends with the migration's event.
    let out = run_cli_url(&pg.url, dir.path(), &["audit", "export"]);
    let last: serde_json::Value = serde_json::from_str(out.stdout.lines().last().unwrap()).unwrap();
    assert_eq!(last["action"], "migrate");
    assert_eq!(last["changes"]["copied_from"], "sqlite");
    assert_eq!(last["changes"]["rows"]["recordings"], 2500);
    let out = run_cli_url(&pg.url, dir.path(), &["audit", "verify"]);
    assert_eq!(out.code, Some(0), "{}", out.stdout);

    // And back into a new SQLite file: the same checksum both ways.
    let back = dir.path().join("back.db");
    let out = migrate(&pg.url, &format!("sqlite://{}", back.display()), &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        recordings_in(&DatabaseSettings::sqlite(&back)).await,
        original
    );
    // (The trail itself is one event longer by then: the first copy's.)
    let checksum = |s: &str| {
        s.split("table recordings: ")
            .nth(1)
            .and_then(|line| line.split("checksum ").nth(1))
            .map(|c| c.split(' ').next().unwrap().to_owned())
    };
    assert!(checksum(&first_copy).is_some());
    assert_eq!(checksum(&out.stdout), checksum(&first_copy));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn migrate_data_fails_loudly_on_a_table_it_does_not_know() {
    let Some(admin) = postgres_or_skip("migrate_data_fails_loudly_on_unknown_table") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let sqlite = dir.path().join("clinical.db");
    assert_eq!(run_cli(&sqlite, &["seed"]).code, Some(0));
    let pg = PgTestDb::create(&admin).await;
    let target = Database::open(&DatabaseSettings::postgres(pg.url.clone()))
        .await
        .unwrap();
    let Database::Postgres(pool) = &target else {
        unreachable!()
    };
    sqlx::query("CREATE TABLE audit_notes (id bigint PRIMARY KEY, note text)")
        .execute(pool.pool())
        .await
        .unwrap();
    target.close().await;
    let from = format!("sqlite://{}", sqlite.display());
    let out = run_cli_url(
        &from,
        dir.path(),
        &["migrate-data", "--from", &from, "--to", &pg.url],
    );
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr
            .contains("table audit_notes exists in PostgreSQL but not in SQLite"),
        "{}",
        out.stderr
    );
    assert!(
        recordings_in(&DatabaseSettings::postgres(pg.url.clone()))
            .await
            .is_empty()
    );

    // Same backend on both sides, and bad URLs, are usage errors.
    let out = run_cli_url(
        &from,
        dir.path(),
        &["migrate-data", "--from", &from, "--to", &from],
    );
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("backup and restore"), "{}", out.stderr);
    let out = run_cli_url(
        &from,
        dir.path(),
        &["migrate-data", "--from", &from, "--to", "mysql://x/y"],
    );
    assert_eq!(out.code, Some(2));
    assert!(out.stderr.contains("invalid --to"), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn operations_on_postgres_say_what_they_do_and_do_not_do() {
    let Some(admin) = postgres_or_skip("operations_on_postgres") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let pg = PgTestDb::create(&admin).await;
    let cli = |args: &[&str]| run_cli_url(&pg.url, dir.path(), args);

    let out = cli(&["migrate", "--status"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout.contains("pending"), "{}", out.stdout);
    let out = cli(&["migrate"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stdout.contains("applied 12 migration(s)"),
        "{}",
        out.stdout
    );

    let out = cli(&["seed"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stdout.contains("Seeded 5 recording(s)"),
        "{}",
        out.stdout
    );
    let out = cli(&["check"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stdout.contains("table:         recordings: 5 row(s)"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("result:        ok"), "{}", out.stdout);

    for args in [&["backup"][..], &["restore", "some.db"][..]] {
        let out = cli(args);
        assert_eq!(out.code, Some(1), "{args:?}");
        assert!(out.stderr.contains("pg_dump"), "{}", out.stderr);
        assert!(
            out.stderr.contains("point-in-time recovery"),
            "{}",
            out.stderr
        );
    }
    assert!(!dir.path().join("backups").exists(), "no pretend backup");
    let out = cli(&["vacuum"]);
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("autovacuum"), "{}", out.stderr);

    let out = run_cli_url(
        &pg.url,
        dir.path(),
        &["serve", "--bind", "127.0.0.1:0", "--backup-interval", "1h"],
    );
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("PWA_BACKUP_INTERVAL"), "{}", out.stderr);
    let out = cli(&["check", "--database-pool-size", "0"]);
    assert_eq!(out.code, Some(2));
    assert!(
        out.stderr.contains("PWA_DATABASE_POOL_SIZE"),
        "{}",
        out.stderr
    );

    // Health names the backend and its latency; the pool settings are applied.
    let server = ServerProcess::start_url(
        &pg.url,
        &[
            ("PWA_DATABASE_POOL_SIZE", "3"),
            ("PWA_DATABASE_STATEMENT_TIMEOUT", "2s"),
        ],
    );
    let health: Value = server.get_json("/api/v1/health").await;
    assert_eq!(health["backend"], "postgres");
    assert_eq!(health["status"], "healthy");
    assert!(health["database_latency_ms"].as_f64().unwrap() > 0.0);
    let settings: (i64, String) = {
        let db = Database::open_without_migrating(&DatabaseSettings::postgres(pg.url.clone()))
            .await
            .unwrap();
        let Database::Postgres(pool) = &db else {
            unreachable!()
        };
        let row = sqlx::query_as(
            "SELECT count(*), max(application_name) FROM pg_stat_activity \
             WHERE datname = current_database() AND application_name = 'clinscribe' AND pid <> pg_backend_pid()",
        )
        .fetch_one(pool.pool())
        .await
        .unwrap();
        db.close().await;
        row
    };
    assert!(
        settings.0 >= 1 && settings.0 <= 3,
        "pool of at most 3: {settings:?}"
    );
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_timeout_turns_a_stuck_query_into_503_not_500() {
    let Some(admin) = postgres_or_skip("statement_timeout") else {
        return;
    };
    let pg = PgTestDb::create(&admin).await;
    let server = ServerProcess::start_url(&pg.url, &[("PWA_DATABASE_STATEMENT_TIMEOUT", "1s")]);
    // Another session holds an exclusive lock on the table: reads wait, then time out.
    use sqlx::Connection as _;
    let mut locker = sqlx::PgConnection::connect(&pg.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut locker).await.unwrap();
    sqlx::query("LOCK TABLE recordings IN ACCESS EXCLUSIVE MODE")
        .execute(&mut locker)
        .await
        .unwrap();
    let response = client()
        .get(server.url("/api/v1/recordings"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    sqlx::query("ROLLBACK").execute(&mut locker).await.unwrap();
    let response = client()
        .get(server.url("/api/v1/recordings"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_upload_racing_on_two_instances_creates_one_recording() {
    let Some(cluster) = Cluster::start("the_same_upload_racing_on_two_instances", 2).await else {
        return;
    };
    let mut ids = HashSet::new();
    for round in 0..5u64 {
        let audio = webm(120_000, round);
        let key = uuid::Uuid::new_v4().to_string();
        // Three attempts on each instance, all at once.
        let attempts: Vec<_> = (0..6)
            .map(|i| {
                let base = cluster.servers[i % 2].base_url.clone();
                let (audio, key) = (audio.clone(), key.clone());
                tokio::spawn(async move {
                    let (status, json) = upload_to(&base, "patient-1", &audio, &key).await;
                    (status, json["id"].as_str().unwrap().to_owned())
                })
            })
            .collect();
        let mut statuses = Vec::new();
        let mut round_ids = HashSet::new();
        for a in attempts {
            let (status, id) = a.await.unwrap();
            statuses.push(status);
            round_ids.insert(id);
        }
        statuses.sort();
        assert_eq!(
            statuses,
            vec![200, 200, 200, 200, 200, 201],
            "round {round}"
        );
        assert_eq!(round_ids.len(), 1, "one recording per dictation");
        let id = round_ids.into_iter().next().unwrap();
        // Either instance serves its audio.
        for server in &cluster.servers {
            let bytes = server
                .get_bytes(&format!("/api/v1/recordings/{id}/audio"))
                .await;
            assert_eq!(&bytes[..], &audio[..]);
        }
        ids.insert(id);
    }
    let stored = recordings_in(&DatabaseSettings::postgres(cluster.db.url.clone())).await;
    assert_eq!(stored.len(), 5);
    assert_eq!(
        files_under(&cluster.audio.path().join("objects")).len(),
        5,
        "one object each"
    );
}

/// Every list statement reads the page from the list index, in order: no sort
/// (a select-list alias shadowing a column in ORDER BY once made PostgreSQL
/// sort a clinician's every row per page).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_queries_read_the_index_in_order_without_sorting() {
    use clinscribe::recordings::seed::Generator;
    use clinscribe::recordings::store::postgres as sql;
    use clinscribe::timestamp::Timestamp;
    let Some(admin) = postgres_or_skip("list_queries_read_the_index") else {
        return;
    };
    let pg = PgTestDb::create(&admin).await;
    let db = Database::open(&DatabaseSettings::postgres(pg.url.clone()))
        .await
        .unwrap();
    let store = clinscribe::recordings::store::open(&db.clone());
    let mut generator = Generator::new(20_000, Timestamp::now(), 7);
    loop {
        let batch = generator.next_batch(5_000);
        if batch.is_empty() {
            break;
        }
        store.insert_batch(&batch).await.unwrap();
    }
    let Database::Postgres(pool) = &db else {
        unreachable!()
    };
    sqlx::query("ANALYZE").execute(pool.pool()).await.unwrap();
    let now = Timestamp::now().to_string();
    let id = uuid::Uuid::now_v7().to_string();
    for (name, statement, params) in [
        ("LIST", sql::LIST, vec!["current-clinician", "101"]),
        (
            "LIST_BY_STATUS",
            sql::LIST_BY_STATUS,
            vec!["current-clinician", "completed", "101"],
        ),
        (
            "LIST_AFTER",
            sql::LIST_AFTER,
            vec!["current-clinician", &now, &id, "101"],
        ),
        (
            "LIST_BY_STATUS_AFTER",
            sql::LIST_BY_STATUS_AFTER,
            vec!["current-clinician", "completed", &now, &id, "101"],
        ),
    ] {
        let explain = format!("EXPLAIN {statement}");
        // Bind by type: text parameters, then the integer limit.
        let mut query = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(explain.as_str()));
        for p in &params[..params.len() - 1] {
            query = query.bind(p.to_string());
        }
        let plan = query
            .bind(params[params.len() - 1].parse::<i64>().unwrap())
            .fetch_all(pool.pool())
            .await
            .unwrap()
            .join("\n");
        assert!(
            plan.contains("Index Scan using ix_recordings_clinician"),
            "{name}: {plan}"
        );
        assert!(!plan.contains("Sort"), "{name} sorts: {plan}");
    }
    db.close().await;
}
