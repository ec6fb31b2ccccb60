//! The web app (PWA): pages and assets embedded in the binary, so it works on
//! an air-gapped clinic network (no CDN, no external font).
//!
//! Every page path answers the same HTML shell; the app's modules pick the view
//! from the path. Assets are served under `/static/<version>/`, where the
//! version is a hash of all of them: their URLs change whenever any byte does,
//! so browsers may cache them forever, while the shell, the manifest and the
//! service worker are revalidated on every load (and carry the new version).

use std::sync::LazyLock;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $type:literal) => {
        Asset {
            name: $name,
            content_type: $type,
            bytes: include_bytes!(concat!("assets/", $name)),
        }
    };
}

/// The files served under `/static/<version>/` (and precached by the service worker).
static ASSETS: &[Asset] = &[
    asset!("app.js", "text/javascript; charset=utf-8"),
    asset!("store.js", "text/javascript; charset=utf-8"),
    asset!("recorder.js", "text/javascript; charset=utf-8"),
    asset!("uploader.js", "text/javascript; charset=utf-8"),
    asset!("legacy.js", "text/javascript; charset=utf-8"),
    asset!("review.js", "text/javascript; charset=utf-8"),
    asset!("checks.js", "text/javascript; charset=utf-8"),
    asset!("session.js", "text/javascript; charset=utf-8"),
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("icon-192.png", "image/png"),
    asset!("icon-512.png", "image/png"),
];

const SHELL: &str = include_str!("assets/index.html");
const SERVICE_WORKER: &str = include_str!("assets/sw.js");
const MANIFEST: &str = include_str!("assets/manifest.webmanifest");
/// Served where the original service's web app registered its service worker.
const RETIRED_WORKER: &str = include_str!("assets/retired-worker.js");

/// Only our own origin, no inline script or style, no framing, no plugins.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' data: blob:; media-src 'self' blob:; connect-src 'self'; worker-src 'self'; \
    manifest-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The version of the embedded app: the first 12 hex digits of a SHA-256 over
/// every file, so any change gives new asset URLs and a new service worker.
pub static VERSION: LazyLock<String> = LazyLock::new(|| {
    let mut hasher = Sha256::new();
    for asset in ASSETS {
        hasher.update(asset.name.as_bytes());
        hasher.update(asset.bytes);
    }
    for text in [SHELL, SERVICE_WORKER, MANIFEST] {
        hasher.update(text.as_bytes());
    }
    crate::digest::hex(&hasher.finalize()[..6])
});

static SHELL_HTML: LazyLock<String> = LazyLock::new(|| SHELL.replace("{{VERSION}}", &VERSION));
static MANIFEST_JSON: LazyLock<String> =
    LazyLock::new(|| MANIFEST.replace("{{VERSION}}", &VERSION));
/// The classic service worker: precache, offline pages, and a sync that wakes open pages.
static SERVICE_WORKER_JS: LazyLock<String> = LazyLock::new(|| {
    render_worker(
        "",
        "self.clients.matchAll({ type: 'window' })\n    .then((clients) => clients.forEach((c) => c.postMessage('upload')))",
    )
});
/// The module service worker (browsers with Background Sync): the same, and the
/// sync uploads saved dictations itself, with the pages' upload code.
static SERVICE_WORKER_MODULE_JS: LazyLock<String> = LazyLock::new(|| {
    render_worker(
        &format!(
            "import {{ UploadManager }} from '/static/{}/uploader.js';\n\nconst uploads = new UploadManager();\n",
            *VERSION
        ),
        "navigator.locks.request('clinscribe-uploads', () => uploads.pass())",
    )
});

fn render_worker(module_import: &str, sync_action: &str) -> String {
    let assets: Vec<String> = ASSETS
        .iter()
        .map(|a| format!("'/static/{}/{}'", *VERSION, a.name))
        .collect();
    SERVICE_WORKER
        .replace("{{VERSION}}", &VERSION)
        .replace("{{ASSETS}}", &assets.join(", "))
        .replace("{{MODULE_IMPORT}}", module_import)
        .replace("{{SYNC_ACTION}}", sync_action)
}

/// The pages and assets.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(page))
        .route("/record/{patient_id}", get(page))
        .route("/queue", get(page))
        .route("/status", get(page))
        .route("/signin", get(page))
        .route("/setup", get(page))
        .route("/recordings/{recording_id}", get(page))
        .route("/sw.js", get(service_worker))
        .route("/sw-module.js", get(service_worker_module))
        .route("/manifest.webmanifest", get(manifest))
        .route("/favicon.ico", get(favicon))
        .route("/static/{version}/{name}", get(static_asset))
        .route("/static/js/service-worker.js", get(retired_worker))
}

/// The original service's worker script (`/static/js/service-worker.js`, scope
/// `/static/js/`): a worker that unregisters itself and claims nothing, so a
/// browser that still has the original's registration drops it at its next
/// update check. The app also unregisters it from the page (`legacy.js`).
async fn retired_worker() -> Response {
    with_headers(
        RETIRED_WORKER,
        &[
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
    )
}

fn with_headers(body: impl IntoResponse, headers: &[(HeaderName, &str)]) -> Response {
    let mut response = body.into_response();
    for (name, value) in headers {
        if let Ok(value) = HeaderValue::from_str(value) {
            response.headers_mut().insert(name.clone(), value);
        }
    }
    response
}

/// The app shell (every page).
async fn page() -> Response {
    with_headers(
        SHELL_HTML.as_str(),
        &[
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (
                HeaderName::from_static("permissions-policy"),
                "microphone=(self), camera=(), geolocation=()",
            ),
        ],
    )
}

/// The service worker, at the root so that its scope is the whole app.
async fn service_worker() -> Response {
    worker_response(SERVICE_WORKER_JS.as_str())
}

/// The module service worker (see [`SERVICE_WORKER_MODULE_JS`]).
async fn service_worker_module() -> Response {
    worker_response(SERVICE_WORKER_MODULE_JS.as_str())
}

fn worker_response(script: &'static str) -> Response {
    with_headers(
        script,
        &[
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (HeaderName::from_static("service-worker-allowed"), "/"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
    )
}

async fn manifest() -> Response {
    with_headers(
        MANIFEST_JSON.as_str(),
        &[
            (header::CONTENT_TYPE, "application/manifest+json"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
    )
}

async fn favicon() -> Response {
    static_asset(Path((VERSION.clone(), "icon-192.png".to_owned()))).await
}

/// A versioned asset, cacheable forever (its URL changes with its content).
async fn static_asset(Path((version, name)): Path<(String, String)>) -> Response {
    match ASSETS.iter().find(|a| a.name == name) {
        Some(asset) if version == *VERSION => with_headers(
            asset.bytes,
            &[
                (header::CONTENT_TYPE, asset.content_type),
                (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
        ),
        _ => ApiError::NotFound("Not Found").into_response(),
    }
}
