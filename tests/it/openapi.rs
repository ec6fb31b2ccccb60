//! The OpenAPI document is generated from the code and snapshot-tested, so an
//! API change shows as a diff in review. To accept a change:
//! `UPDATE_SNAPSHOTS=1 cargo test --test it openapi`.

use crate::common::TestApp;
use axum::http::StatusCode;

const SNAPSHOT: &str = "tests/snapshots/openapi.json";

#[tokio::test]
async fn openapi_document_matches_the_snapshot() {
    let app = TestApp::new().await;
    let r = app.get("/openapi.json").await;
    assert_eq!(r.status, StatusCode::OK);
    let actual = serde_json::to_string_pretty(&r.body).unwrap() + "\n";
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(SNAPSHOT, &actual).unwrap();
    }
    let expected = std::fs::read_to_string(SNAPSHOT).unwrap_or_default();
    assert!(
        actual == expected,
        "the API description changed; review the diff and run UPDATE_SNAPSHOTS=1 cargo test --test it openapi"
    );
}

#[tokio::test]
async fn openapi_covers_every_route_and_schema() {
    let app = TestApp::new().await;
    let doc = app.get("/openapi.json").await.body;
    for (path, method) in [
        ("/api/v1/health", "get"),
        ("/api/v1/recordings", "get"),
        ("/api/v1/recordings", "post"),
        ("/api/v1/recordings/{recording_id}", "get"),
        ("/api/v1/recordings/{recording_id}", "patch"),
        ("/api/v1/recordings/upload", "post"),
        ("/api/v1/recordings/{recording_id}/audio", "get"),
        ("/api/v1/uploads", "post"),
        ("/api/v1/uploads/{local_storage_key}", "get"),
        ("/api/v1/uploads/{local_storage_key}", "put"),
    ] {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} undocumented"
        );
    }
    for schema in [
        "Recording",
        "RecordingStatus",
        "NewRecording",
        "Health",
        "ErrorDetail",
        "ValidationErrorBody",
        "UploadDetails",
        "RecordingPatchBody",
        "StaleBody",
    ] {
        assert!(
            doc["components"]["schemas"][schema].is_object(),
            "schema {schema} missing"
        );
    }
    // The 15 original fields and the version, and the upload's 6 flattened in (`allOf`).
    let parts = doc["components"]["schemas"]["Recording"]["allOf"]
        .as_array()
        .expect("Recording is allOf [UploadDetails, own fields]");
    let own = parts
        .iter()
        .find_map(|p| p["properties"].as_object())
        .expect("own properties");
    assert_eq!(own.len(), 16);
    let upload = doc["components"]["schemas"]["UploadDetails"]["properties"]
        .as_object()
        .unwrap();
    assert_eq!(upload.len(), 6);
}

#[tokio::test]
async fn docs_page_is_served_from_the_binary_without_a_cdn() {
    let app = TestApp::new().await;
    let page = app.get("/docs/").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.text.contains("swagger"), "{}", page.text);
    for needle in ["http://", "https://", "//cdn", "unpkg", "jsdelivr"] {
        assert!(!page.text.contains(needle), "/docs/ references {needle}");
    }
    for asset in [
        "swagger-ui.css",
        "swagger-ui-bundle.js",
        "swagger-ui-standalone-preset.js",
        "swagger-initializer.js",
    ] {
        let r = app.get(&format!("/docs/{asset}")).await;
        assert_eq!(r.status, StatusCode::OK, "{asset}");
        assert!(r.text.len() > 100, "{asset} is empty");
    }
    let init = app.get("/docs/swagger-initializer.js").await;
    assert!(init.text.contains("/openapi.json"), "{}", init.text);
}
