//! The web app as the server delivers it: pages, assets, service worker and
//! manifest, with the headers an offline-first, installable app needs. (Its
//! behaviour in a real browser is tested by e2e/run.mjs.)

use crate::common::TestApp;
use axum::http::StatusCode;

#[tokio::test]
async fn every_page_is_the_shell_with_a_strict_content_security_policy() {
    let app = TestApp::new().await;
    for path in [
        "/",
        "/record/patient-001",
        "/record/p%C3%A4tient%20with%20spaces",
        "/queue",
        "/recordings/6f1c1f0e-7b2a-4c39-9d0e-0a1b2c3d4e5f",
    ] {
        let (status, headers, body) = app.get_bytes(path, &[]).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(headers["content-type"], "text/html; charset=utf-8");
        assert_eq!(headers["cache-control"], "no-cache");
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'self'") && csp.contains("script-src 'self'"));
        assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"));
        let html = String::from_utf8(body).unwrap();
        assert!(html.contains(r#"<script type="module" src="/static/"#));
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "no external resource"
        );
        assert!(!html.contains("style="), "no inline style");
    }
}

#[tokio::test]
async fn assets_are_versioned_and_cached_forever_and_the_worker_precaches_them() {
    let app = TestApp::new().await;
    let version = clinscribe::web::VERSION.as_str();
    let (_, _, shell) = app.get_bytes("/", &[]).await;
    let shell = String::from_utf8(shell).unwrap();
    assert!(shell.contains(&format!("/static/{version}/app.js")));

    for (name, content_type) in [
        ("app.js", "text/javascript; charset=utf-8"),
        ("store.js", "text/javascript; charset=utf-8"),
        ("recorder.js", "text/javascript; charset=utf-8"),
        ("uploader.js", "text/javascript; charset=utf-8"),
        ("app.css", "text/css; charset=utf-8"),
        ("icon-192.png", "image/png"),
        ("icon-512.png", "image/png"),
    ] {
        let (status, headers, body) = app
            .get_bytes(&format!("/static/{version}/{name}"), &[])
            .await;
        assert_eq!(status, StatusCode::OK, "{name}");
        assert_eq!(headers["content-type"], content_type, "{name}");
        assert_eq!(
            headers["cache-control"],
            "public, max-age=31536000, immutable"
        );
        assert!(!body.is_empty());
    }
    // Another version's asset, or an unknown file: 404.
    assert_eq!(
        app.get("/static/000000000000/app.js").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get(&format!("/static/{version}/secret.txt"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    let (status, headers, body) = app.get_bytes("/sw.js", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["cache-control"], "no-cache");
    assert_eq!(headers["service-worker-allowed"], "/");
    let worker = String::from_utf8(body).unwrap();
    assert!(worker.contains(&format!("const VERSION = '{version}'")));
    assert!(worker.contains(&format!("'/static/{version}/uploader.js'")));
    assert!(!worker.contains("{{"), "template fully rendered");

    // The module worker (Background Sync browsers) uploads with the pages' code.
    let (status, _, body) = app.get_bytes("/sw-module.js", &[]).await;
    assert_eq!(status, StatusCode::OK);
    let module = String::from_utf8(body).unwrap();
    assert!(module.contains(&format!(
        "import {{ UploadManager }} from '/static/{version}/uploader.js'"
    )));
    assert!(module.contains("uploads.pass()"));
    assert!(
        !worker.contains("import "),
        "the classic worker imports nothing"
    );
    assert!(!module.contains("{{"));

    let manifest = app.get("/manifest.webmanifest").await;
    assert_eq!(manifest.status, StatusCode::OK);
    assert_eq!(
        manifest.headers["content-type"],
        "application/manifest+json"
    );
    assert_eq!(manifest.body["start_url"], "/");
    assert_eq!(manifest.body["display"], "standalone");
    let icons = manifest.body["icons"].as_array().unwrap();
    assert!(icons.iter().any(|i| i["sizes"] == "512x512"));
    for icon in icons {
        let src = icon["src"].as_str().unwrap();
        assert_eq!(app.get(src).await.status, StatusCode::OK, "{src}");
    }
    assert_eq!(app.get("/favicon.ico").await.status, StatusCode::OK);
}
