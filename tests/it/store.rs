//! The recordings store against a real SQLite file, and a fresh PostgreSQL
//! database when `PWA_TEST_POSTGRES_URL` is set.

use crate::common;

use std::collections::HashSet;

use crate::common::TestApp;
use clinscribe::audit::AuditContext;
use clinscribe::recordings::store::Cursor;
use clinscribe::recordings::{
    ListQuery, NewRecording, RecordingStatus, RecordingStore, StoreError,
};
use uuid::Uuid;

fn new(patient: &str, duration: i64) -> NewRecording {
    NewRecording {
        patient_id: patient.into(),
        duration_seconds: duration,
        audio_file_path: Some(format!("/uploads/{patient}.webm")),
    }
}

fn all(status: Option<RecordingStatus>) -> ListQuery {
    ListQuery {
        status,
        limit: 1000,
        after: None,
    }
}

async fn create_then_get_returns_the_same_recording(app: TestApp) {
    let store = &app.state.recordings;
    let created = store
        .create(
            &AuditContext::clinician("clinician-1"),
            new("patient-001", 120),
        )
        .await
        .unwrap();
    assert_eq!(created.status, RecordingStatus::Pending);
    assert_eq!(created.clinician_id, "clinician-1");
    assert_eq!(created.duration_seconds, Some(120));
    assert_eq!(created.retry_count, 0);
    assert_eq!(created.created_at, created.updated_at);
    assert_eq!(created.processed_at, None);
    let fetched = store.get(created.id).await.unwrap();
    assert_eq!(fetched, created);
}

async fn get_of_an_unknown_id_is_not_found(app: TestApp) {
    let err = app.state.recordings.get(Uuid::new_v4()).await.unwrap_err();
    assert!(
        matches!(err, StoreError::NotFound("Recording not found")),
        "{err:?}"
    );
}

async fn list_is_per_clinician_newest_first_and_filters_by_status(app: TestApp) {
    let store = &app.state.recordings;
    let mut mine = Vec::new();
    for i in 0..5 {
        mine.push(
            store
                .create(&AuditContext::clinician("alice"), new(&format!("p{i}"), i))
                .await
                .unwrap(),
        );
    }
    store
        .create(&AuditContext::clinician("bob"), new("p-bob", 1))
        .await
        .unwrap();
    store
        .update_status(mine[1].id, RecordingStatus::Completed, None)
        .await
        .unwrap();
    store
        .update_status(mine[3].id, RecordingStatus::Completed, None)
        .await
        .unwrap();

    let page = store.list_for_clinician("alice", all(None)).await.unwrap();
    let ids: Vec<_> = page.recordings().unwrap().iter().map(|r| r.id).collect();
    let expected: Vec<_> = mine.iter().rev().map(|r| r.id).collect();
    assert_eq!(ids, expected);
    assert!(page.next.is_none());

    let done = store
        .list_for_clinician("alice", all(Some(RecordingStatus::Completed)))
        .await
        .unwrap();
    let done_ids: Vec<_> = done.recordings().unwrap().iter().map(|r| r.id).collect();
    assert_eq!(done_ids, vec![mine[3].id, mine[1].id]);

    let none = store
        .list_for_clinician("alice", all(Some(RecordingStatus::Error)))
        .await
        .unwrap();
    assert_eq!(none.json, "[]");
    let nobody = store.list_for_clinician("carol", all(None)).await.unwrap();
    assert_eq!(nobody.json, "[]");
}

async fn keyset_pages_cover_everything_exactly_once(app: TestApp) {
    let store = &app.state.recordings;
    let mut created = Vec::new();
    for i in 0..23 {
        created.push(
            store
                .create(&AuditContext::clinician("alice"), new(&format!("p{i}"), i))
                .await
                .unwrap()
                .id,
        );
    }
    let mut seen = Vec::new();
    let mut after: Option<Cursor> = None;
    let mut pages = 0;
    loop {
        let page = store
            .list_for_clinician(
                "alice",
                ListQuery {
                    status: None,
                    limit: 5,
                    after,
                },
            )
            .await
            .unwrap();
        pages += 1;
        let items = page.recordings().unwrap();
        assert!(items.len() <= 5);
        seen.extend(items.iter().map(|r| r.id));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(pages, 5);
    created.reverse();
    assert_eq!(seen, created);
}

async fn update_status_maintains_timestamps_and_error_message(app: TestApp) {
    let store = &app.state.recordings;
    let r = store
        .create(&AuditContext::clinician("alice"), new("p", 10))
        .await
        .unwrap();

    let processing = store
        .update_status(r.id, RecordingStatus::Processing, None)
        .await
        .unwrap();
    assert_eq!(processing.status, RecordingStatus::Processing);
    assert!(processing.updated_at > r.updated_at);
    assert_eq!(processing.processed_at, None, "processing has not ended");

    let failed = store
        .update_status(
            r.id,
            RecordingStatus::Error,
            Some("Transcription service timeout"),
        )
        .await
        .unwrap();
    assert_eq!(
        failed.error_message.as_deref(),
        Some("Transcription service timeout")
    );
    assert_eq!(failed.processed_at, Some(failed.updated_at));
    assert_eq!(failed.created_at, r.created_at);
    assert_eq!(store.get(r.id).await.unwrap(), failed);

    let err = store
        .update_status(Uuid::new_v4(), RecordingStatus::Completed, None)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound("Recording not found")));
}

async fn a_thousand_concurrent_creates_from_16_tasks_all_succeed(app: TestApp) {
    let store: std::sync::Arc<dyn RecordingStore> = app.state.recordings.clone();
    let tasks: Vec<_> = (0..16)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for i in 0..63 {
                    // 16 × 63 = 1008 ≥ 1000
                    let r = store
                        .create(
                            &AuditContext::clinician(&format!("clinician-{}", t % 4)),
                            new(&format!("p-{t}-{i}"), i),
                        )
                        .await
                        .expect("create under contention");
                    ids.push(r.id);
                }
                ids
            })
        })
        .collect();
    let mut ids = HashSet::new();
    for task in tasks {
        ids.extend(task.await.unwrap());
    }
    assert_eq!(ids.len(), 1008);
    assert_eq!(store.count().await.unwrap(), 1008);
}

/// The API's JSON is built by the database (SQLite's `json_object`) or from
/// its text columns (PostgreSQL); it must be exactly what serde makes of the
/// same recording, for every kind of content.
async fn json_from_the_store_equals_the_serde_representation(app: TestApp) {
    use clinscribe::recordings::Recording;
    use clinscribe::recordings::model::UploadDetails;
    use clinscribe::timestamp::Timestamp;
    use serde_json::json;

    let store = &app.state.recordings;
    let t = |s: &str| Timestamp::parse(s).unwrap();
    let odd = Recording {
        id: Uuid::now_v7(),
        patient_id: "pätient-ü-中文-😀 \"quoted\" back\\slash".into(),
        clinician_id: "alice".into(),
        audio_file_path: Some("/uploads/a b/ç.webm".into()),
        audio_file_size: Some(9_007_199_254_740_993),
        duration_seconds: Some(0),
        status: RecordingStatus::Completed,
        error_message: Some("line 1\nline 2\ttab \u{1} ctrl".into()),
        retry_count: 3,
        created_at: t("2026-01-02T03:04:05Z"),
        updated_at: t("2026-01-02T03:04:05.000001Z"),
        uploaded_at: Some(t("2025-12-31T23:59:59.999999Z")),
        processed_at: Some(t("2026-01-02T03:04:06.5Z")),
        transcript: Some("Patient reports ✓ \u{2028} end".into()),
        verification_results: Some(json!({
            "score": 0.93, "tiny": 1e-7, "big": 12345678901234567u64, "neg": -0.5,
            "issues": [], "nested": {"a": [1, 2.5, null, true, "x\u{2713}"]}, "note": "ok ✓"
        })),
        processing: Default::default(),
        version: 1,
        signoff: Default::default(),
        upload: UploadDetails {
            local_storage_key: Some(Uuid::new_v4()),
            draft_transcript: Some("draft \u{1F600}".into()),
            final_transcript: Some("final".into()),
            upload_attempts: 3,
            audio_sha256: Some("ab".repeat(32)),
            audio_content_type: Some("audio/webm".into()),
        },
    };
    let plain = Recording {
        id: Uuid::now_v7(),
        patient_id: "p".into(),
        clinician_id: "alice".into(),
        audio_file_path: None,
        audio_file_size: None,
        duration_seconds: None,
        status: RecordingStatus::Pending,
        error_message: None,
        retry_count: 0,
        created_at: t("2026-01-03T00:00:00Z"),
        updated_at: t("2026-01-03T00:00:00Z"),
        uploaded_at: None,
        processed_at: None,
        transcript: None,
        verification_results: None,
        processing: Default::default(),
        version: 1,
        signoff: Default::default(),
        upload: Default::default(),
    };
    store
        .insert_batch(&[odd.clone(), plain.clone()])
        .await
        .unwrap();
    for r in [&odd, &plain] {
        let from_sql: serde_json::Value =
            serde_json::from_str(&store.get_json(r.id).await.unwrap().json).unwrap();
        assert_eq!(from_sql, serde_json::to_value(r).unwrap());
        assert_eq!(&store.get(r.id).await.unwrap(), r);
    }
    let page = store.list_for_clinician("alice", all(None)).await.unwrap();
    let listed: serde_json::Value = serde_json::from_str(&page.json).unwrap();
    assert_eq!(listed, serde_json::to_value([&plain, &odd]).unwrap());
}

/// Creates that arrive together share one commit (written with several
/// multi-row statements when the batch is large); a row that breaks a
/// constraint fails alone, and every other caller is told of success exactly
/// when its row is stored (a false failure would make a client retry: a duplicate).
async fn a_bad_row_in_a_group_commit_fails_alone(app: TestApp) {
    let store = app.state.recordings.clone();
    let first = store
        .create(&AuditContext::clinician("alice"), new("p-0", 1))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..300 {
        let store = store.clone();
        let mut r = first.clone();
        if i != 250 {
            r.id = Uuid::now_v7(); // every row but one is new; row 250 repeats an id
        }
        tasks.push(tokio::spawn(async move { (r.id, store.insert(&r).await) }));
    }
    let mut failures = 0;
    for t in tasks {
        let (id, result) = t.await.unwrap();
        match result {
            Ok(()) => assert_eq!(store.get(id).await.unwrap().id, id),
            Err(_) => failures += 1,
        }
    }
    assert_eq!(failures, 1);
    assert_eq!(store.count().await.unwrap(), 300);
}

crate::on_both_backends!(
    json_from_the_store_equals_the_serde_representation,
    create_then_get_returns_the_same_recording,
    get_of_an_unknown_id_is_not_found,
    list_is_per_clinician_newest_first_and_filters_by_status,
    keyset_pages_cover_everything_exactly_once,
    update_status_maintains_timestamps_and_error_message,
    a_thousand_concurrent_creates_from_16_tasks_all_succeed,
    a_bad_row_in_a_group_commit_fails_alone,
);
