//! Micro-benchmarks of the store's hot paths (criterion):
//! `cargo bench --bench store`.

// A benchmark that cannot do its work stops with a message: no recovery to attempt.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;

use clinscribe::config::DatabaseSettings;
use clinscribe::db::SqliteDatabase;
use clinscribe::recordings::seed::Generator;
use clinscribe::recordings::{ListQuery, NewRecording, Recording, RecordingStatus};
use clinscribe::timestamp::Timestamp;

fn store_paths(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let (store, ids) = runtime.block_on(async {
        let db = SqliteDatabase::open(&DatabaseSettings::sqlite(dir.path().join("bench.db")))
            .await
            .expect("open");
        let store = clinscribe::recordings::store::open(&clinscribe::db::Database::Sqlite(db));
        let rows = Generator::new(100_000, Timestamp::now(), 1).next_batch(100_000);
        store.insert_batch(&rows).await.expect("load");
        (store, rows.iter().map(|r| r.id).collect::<Vec<_>>())
    });
    let mut n = 0usize;
    let mut next_id = move || {
        n = n.wrapping_add(7919);
        ids[n % ids.len()]
    };

    let mut group = c.benchmark_group("store");
    group.bench_function("create", |b| {
        b.to_async(&runtime).iter(|| async {
            let new = NewRecording {
                patient_id: "patient-bench".into(),
                duration_seconds: 60,
                audio_file_path: None,
            };
            black_box(
                store
                    .create(
                        &clinscribe::audit::AuditContext::clinician("bench-clinician"),
                        new,
                    )
                    .await
                    .expect("create"),
            )
        })
    });
    group.bench_function("get (typed)", |b| {
        b.to_async(&runtime).iter(|| {
            let id = next_id();
            let store = store.clone();
            async move { black_box(store.get(id).await.expect("get")) }
        })
    });
    let mut next_id2 = {
        let ids = runtime.block_on(async {
            store
                .list_for_clinician(
                    "current-clinician",
                    ListQuery {
                        status: None,
                        limit: 1000,
                        after: None,
                    },
                )
                .await
                .expect("list")
                .recordings()
                .expect("parse")
        });
        let ids: Vec<_> = ids.iter().map(|r| r.id).collect();
        let mut n = 0usize;
        move || {
            n = n.wrapping_add(31);
            ids[n % ids.len()]
        }
    };
    group.bench_function("get (JSON by SQLite)", |b| {
        b.to_async(&runtime).iter(|| {
            let id = next_id2();
            let store = store.clone();
            async move { black_box(store.get_json(id).await.expect("get")) }
        })
    });
    for (name, status) in [
        ("list page of 100", None),
        (
            "list page of 100, one status",
            Some(RecordingStatus::Completed),
        ),
    ] {
        group.bench_function(name, |b| {
            b.to_async(&runtime).iter(|| async {
                let query = ListQuery {
                    status,
                    limit: 100,
                    after: None,
                };
                black_box(
                    store
                        .list_for_clinician("current-clinician", query)
                        .await
                        .expect("list"),
                )
            })
        });
    }
    group.bench_function("update status", |b| {
        b.to_async(&runtime).iter(|| {
            let id = next_id2();
            let store = store.clone();
            async move {
                black_box(
                    store
                        .update_status(id, RecordingStatus::Processing, None)
                        .await
                        .expect("update"),
                )
            }
        })
    });
    group.finish();

    let recording: Recording = runtime.block_on(store.get(next_id2())).expect("one");
    let json = serde_json::to_string(&recording).expect("json");
    let mut group = c.benchmark_group("json");
    group.bench_function("serialise a recording", |b| {
        b.iter(|| black_box(serde_json::to_string(black_box(&recording)).expect("ser")))
    });
    group.bench_function("deserialise a recording", |b| {
        b.iter(|| black_box(serde_json::from_str::<Recording>(black_box(&json)).expect("de")))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(3));
    targets = store_paths
}
criterion_main!(benches);
