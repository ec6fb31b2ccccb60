//! The change feed (`GET /api/v1/changes`): every create, change and
//! deletion after a cursor, in commit order, so that an offline client that
//! keeps the cursor ends with exactly the server's state, even while writers
//! commit concurrently on several PostgreSQL instances.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{self, PgTestDb, ServerProcess, TestApp, client, postgres_or_skip};
use crate::review::{current, patch, tag_of};
use clinscribe::recordings::RecordingStatus;

async fn feed(app: &TestApp, query: &str) -> Value {
    let r = app.get(&format!("/api/v1/changes{query}")).await;
    assert_eq!(r.status, StatusCode::OK, "{query}: {}", r.text);
    r.body
}

fn ids(changes: &Value) -> Vec<String> {
    changes["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn the_feed_reports_creates_changes_and_deletions_once_in_commit_order(app: TestApp) {
    assert_eq!(feed(&app, "").await, json!({"changes": [], "next": "0"}));

    let a = app.create("patient-a", 10).await;
    let b = app.create("patient-b", 20).await;
    let c = app.create("patient-c", 30).await;
    let (a_id, b_id, c_id) = (
        a["id"].as_str().unwrap(),
        b["id"].as_str().unwrap(),
        c["id"].as_str().unwrap(),
    );
    let first = feed(&app, "").await;
    assert_eq!(ids(&first), [a_id, b_id, c_id]);
    assert_eq!(first["changes"][0]["recording"], a);
    assert_eq!(first["changes"][0]["version"], 1);
    assert_eq!(first["changes"][0]["deleted"], false);
    let cursor = first["next"].as_str().unwrap().to_owned();

    // Nothing new: no changes, the same cursor.
    assert_eq!(
        feed(&app, &format!("?since={cursor}")).await,
        json!({"changes": [], "next": cursor})
    );

    // A clinician's patch, the worker's status change and a deletion.
    let patched = patch(
        &app,
        a_id,
        Some(&tag_of(&a)),
        json!({"patient_id": "patient-a2"}),
    )
    .await;
    assert_eq!(patched.status, StatusCode::OK);
    let c_uuid = uuid::Uuid::parse_str(c_id).unwrap();
    app.state
        .recordings
        .update_status(c_uuid, RecordingStatus::Queued, None)
        .await
        .unwrap();
    let deleted = app
        .send_with(
            Method::DELETE,
            &format!("/api/v1/recordings/{b_id}"),
            &[("if-match", &tag_of(&b))],
            Body::empty(),
        )
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{}", deleted.text);

    let later = feed(&app, &format!("?since={cursor}")).await;
    assert_eq!(ids(&later), [a_id, c_id, b_id], "in commit order");
    assert_eq!(later["changes"][0]["recording"], current(&app, a_id).await);
    assert_eq!(later["changes"][1]["recording"]["status"], "queued");
    assert_eq!(later["changes"][1]["version"], 2);
    assert_eq!(
        later["changes"][2],
        json!({"id": b_id, "version": 2, "deleted": true, "recording": null})
    );

    // From the beginning each recording appears once, where it last changed.
    let all = feed(&app, "").await;
    assert_eq!(ids(&all), [a_id, c_id, b_id]);
    assert_eq!(all["next"], later["next"]);

    // Page by page, the same entries.
    let mut paged = Vec::new();
    let mut since = "0".to_owned();
    loop {
        let page = feed(&app, &format!("?since={since}&limit=1")).await;
        if page["changes"].as_array().unwrap().is_empty() {
            assert_eq!(page["next"], since.as_str());
            break;
        }
        paged.extend(ids(&page));
        since = page["next"].as_str().unwrap().to_owned();
    }
    assert_eq!(paged, [a_id, c_id, b_id]);

    for bad in [
        "?since=abc",
        "?since=-1",
        "?since=1.5",
        "?limit=0",
        "?limit=1001",
    ] {
        let r = app.get(&format!("/api/v1/changes{bad}")).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}: {}",
            r.text
        );
    }
}

crate::on_both_backends!(the_feed_reports_creates_changes_and_deletions_once_in_commit_order);

/// 8 writers create, patch and delete recordings through `servers` (in
/// turn) while a reader follows the feed through them too; the reader's
/// copy must end equal to the server's state, having never seen a
/// recording's version go back.
async fn a_reader_of_the_feed_ends_with_exactly_the_state_writers_left(servers: &[ServerProcess]) {
    const WRITERS: usize = 8;
    const CREATES: usize = 24;
    let urls: Vec<String> = servers.iter().map(|s| s.url("")).collect();
    let http = client();
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (http, urls) = (http.clone(), urls.clone());
        writers.push(tokio::spawn(async move {
            let mut mine: Vec<Value> = Vec::new();
            for i in 0..CREATES {
                let base = &urls[(w + i) % urls.len()];
                let created: Value = http
                    .post(format!("{base}/api/v1/recordings"))
                    .json(&json!({"patient_id": format!("p-{w}-{i}"), "duration_seconds": i}))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                mine.push(created);
                if i % 3 == 2 {
                    // Correct an earlier one.
                    let target = &mine[i - 1];
                    let r = http
                        .patch(format!(
                            "{base}/api/v1/recordings/{}",
                            target["id"].as_str().unwrap()
                        ))
                        .header("if-match", tag_of(target))
                        .json(&json!({"final_transcript": format!("note {w}-{i}")}))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 200);
                    mine[i - 1] = r.json().await.unwrap();
                }
                if i % 5 == 4 {
                    // Delete an earlier one.
                    let target = &mine[i - 2];
                    let r = http
                        .delete(format!(
                            "{base}/api/v1/recordings/{}",
                            target["id"].as_str().unwrap()
                        ))
                        .header("if-match", tag_of(target))
                        .send()
                        .await
                        .unwrap();
                    assert!(matches!(r.status().as_u16(), 204 | 404), "{}", r.status());
                }
            }
        }));
    }

    let mut copy: BTreeMap<String, Value> = BTreeMap::new();
    let mut versions: BTreeMap<String, i64> = BTreeMap::new();
    let mut since = "0".to_owned();
    let mut reads = 0usize;
    let mut follow = |page: &Value, copy: &mut BTreeMap<String, Value>| {
        for change in page["changes"].as_array().unwrap() {
            let id = change["id"].as_str().unwrap().to_owned();
            let version = change["version"].as_i64().unwrap();
            let last = versions.insert(id.clone(), version).unwrap_or(0);
            assert!(version > last, "{id}: version {version} after {last}");
            if change["deleted"] == true {
                copy.remove(&id);
            } else {
                copy.insert(id, change["recording"].clone());
            }
        }
    };
    let read = |since: String, reads: usize| {
        let (http, base) = (http.clone(), urls[reads % urls.len()].clone());
        async move {
            let r = http
                .get(format!("{base}/api/v1/changes?since={since}&limit=7"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()
        }
    };
    while !writers.iter().all(|w| w.is_finished()) {
        let page = read(since.clone(), reads).await;
        reads += 1;
        follow(&page, &mut copy);
        since = page["next"].as_str().unwrap().to_owned();
    }
    for w in writers {
        w.await.unwrap();
    }
    loop {
        let page = read(since.clone(), reads).await;
        reads += 1;
        if page["changes"].as_array().unwrap().is_empty() {
            break;
        }
        follow(&page, &mut copy);
        since = page["next"].as_str().unwrap().to_owned();
    }

    let listed: Vec<Value> = http
        .get(format!("{}/api/v1/recordings?limit=1000", urls[0]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let state: BTreeMap<String, Value> = listed
        .into_iter()
        .map(|r| (r["id"].as_str().unwrap().to_owned(), r))
        .collect();
    assert_eq!(state.len(), WRITERS * CREATES - WRITERS * (CREATES / 5));
    assert!(reads > 2, "the reader read while the writers wrote");
    assert_eq!(copy, state, "the reader's copy is the server's state");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reader_of_the_feed_misses_nothing_while_8_writers_commit_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("clinical.db");
    let server = ServerProcess::start(&db_path);
    a_reader_of_the_feed_ends_with_exactly_the_state_writers_left(&[server]).await;
    let verified = common::run_cli(&db_path, &["audit", "verify"]);
    assert_eq!(verified.code, Some(0), "{}", verified.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reader_of_the_feed_misses_nothing_while_8_writers_commit_on_two_postgresql_instances() {
    let Some(admin) = postgres_or_skip("feed on two instances") else {
        return;
    };
    let db = PgTestDb::create(&admin).await;
    let first = ServerProcess::start_url(&db.url, &[]);
    let second = ServerProcess::start_url(&db.url, &[]);
    a_reader_of_the_feed_ends_with_exactly_the_state_writers_left(&[first, second]).await;
    // Both instances appended to one audit chain, without forking it.
    let dir = tempfile::tempdir().unwrap();
    let verified = common::run_cli_url(&db.url, dir.path(), &["audit", "verify"]);
    assert_eq!(verified.code, Some(0), "{}", verified.stdout);
    assert!(verified.stdout.contains("intact"), "{}", verified.stdout);
}
