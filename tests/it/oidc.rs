//! Single sign-on's checks that need no provider: settings refused before
//! the server starts, the callback's refusal of a sign-in this browser did
//! not begin, a provider that cannot be reached, and the table of logins
//! under way on both backends. The code flow itself, and the refusal of
//! forged, expired, wrong-audience, wrong-issuer and wrong-nonce ID tokens,
//! run against a real OpenID Provider in the browser tests (e2e/run.mjs,
//! "single sign-on: …").

use std::time::Duration;

use axum::http::{Method, StatusCode};
use clinscribe::auth::oidc::{OidcSettings, SingleSignOn};
use clinscribe::auth::store::{self, PendingLogin};
use clinscribe::timestamp::Timestamp;
use serde_json::json;

use crate::common::{self, Backend, TestApp};

/// `serve` with `env` (and PWA_AUTH=on unless `env` says otherwise):
/// its exit code and standard error.
fn serve_refused(env: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut command = std::process::Command::new(common::binary());
    command
        .args(["serve", "--bind", "127.0.0.1:0"])
        .current_dir(dir.path())
        .env("PWA_DATABASE_URL", "sqlite://./clinical.db")
        .env("PWA_AUTH", "on");
    for (name, value) in env {
        command.env(name, value);
    }
    let out = command.output().unwrap();
    assert!(
        !dir.path().join("clinical.db").exists(),
        "nothing was created"
    );
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn single_sign_on_settings_are_checked_before_anything_starts() {
    let issuer = ("PWA_OIDC_ISSUER", "https://idp.clinic.example/realms/staff");
    let client = ("PWA_OIDC_CLIENT_ID", "clinscribe");
    let cases: [(Vec<(&str, &str)>, &str); 5] = [
        (
            vec![("PWA_OIDC_ISSUER", "http://idp.clinic.example"), client],
            "clinscribe: invalid PWA_OIDC_ISSUER \"http://idp.clinic.example\": expected an \
             https:// URL (http:// only to this machine)",
        ),
        (
            vec![issuer],
            "clinscribe: invalid PWA_OIDC_CLIENT_ID \"\": required with PWA_OIDC_ISSUER",
        ),
        (
            vec![
                issuer,
                client,
                ("PWA_OIDC_REDIRECT_URL", "https://app.clinic.example/cb"),
            ],
            "clinscribe: invalid PWA_OIDC_REDIRECT_URL \"https://app.clinic.example/cb\": its \
             path must be /api/v1/auth/oidc/callback",
        ),
        (
            vec![issuer, client, ("PWA_OIDC_AUTO_CREATE", "maybe")],
            "clinscribe: invalid PWA_OIDC_AUTO_CREATE \"maybe\": expected true or false",
        ),
        (
            vec![issuer, client, ("PWA_AUTH", "off")],
            "clinscribe: invalid PWA_OIDC_ISSUER \"https://idp.clinic.example/realms/staff\": \
             PWA_AUTH=off signs no one in",
        ),
    ];
    for (env, expected) in cases {
        let (code, stderr) = serve_refused(&env);
        assert_eq!(code, Some(2), "{env:?}: {stderr}");
        assert!(stderr.starts_with(expected), "{env:?}: {stderr}");
    }
}

/// A provider at a loopback port nothing listens on.
fn unreachable_provider() -> OidcSettings {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    OidcSettings {
        issuer: format!("http://127.0.0.1:{port}"),
        client_id: "clinscribe".to_owned(),
        client_secret: Some("s3cret".to_owned()),
        auto_create: true,
        admin_claim: None,
        admin_value: "admin".to_owned(),
        scopes: vec!["profile".to_owned()],
        redirect_url: None,
        name: "Clinic IdP".to_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callback_signs_in_no_one_it_did_not_send_to_the_provider() {
    let app = TestApp::new()
        .await
        .with_auth_on()
        .with_single_sign_on(unreachable_provider());
    let providers = app.get("/api/v1/auth/providers").await;
    assert_eq!(providers.status, StatusCode::OK);
    assert_eq!(
        providers.body,
        json!({"password": true,
               "single_sign_on": {"name": "Clinic IdP", "start_url": "/api/v1/auth/oidc/start"}})
    );

    // The provider cannot be reached: back to the sign-in page, which says so.
    let start = app
        .send_with(
            Method::GET,
            "/api/v1/auth/oidc/start?next=/queue",
            &[("host", "127.0.0.1:8000")],
            "",
        )
        .await;
    assert_eq!(start.status, StatusCode::SEE_OTHER);
    assert_eq!(start.headers["location"], "/signin?error=provider");
    let logins = common::execute(&app, "DELETE FROM oidc_logins").await;
    assert_eq!(logins, Ok(0), "no login stored");

    let callbacks: [(&str, Option<&str>); 4] = [
        ("code=c&state=abc", None),
        ("code=c&state=abc", Some("clinscribe_oidc=xyz")),
        ("code=c&state=abc", Some("clinscribe_oidc=abc")),
        ("error=access_denied&state=abc", Some("clinscribe_oidc=abc")),
    ];
    for (query, cookie) in callbacks {
        let headers: Vec<(&str, &str)> = cookie.map(|c| ("cookie", c)).into_iter().collect();
        let r = app
            .send_with(
                Method::GET,
                &format!("/api/v1/auth/oidc/callback?{query}"),
                &headers,
                "",
            )
            .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{query} {cookie:?}");
        assert_eq!(
            r.headers["location"], "/signin?error=expired",
            "{query} {cookie:?}"
        );
        let cookies: Vec<_> = r.headers.get_all("set-cookie").iter().collect();
        assert_eq!(cookies.len(), 1, "{cookies:?}");
        let cleared = cookies[0].to_str().unwrap();
        assert!(
            cleared.starts_with("clinscribe_oidc=; Path=/api/v1/auth/oidc/callback; SameSite=Lax")
                && cleared.contains("Max-Age=0"),
            "only the state cookie, cleared: {cleared}"
        );
    }
    let sessions = common::execute(&app, "DELETE FROM sessions").await;
    assert_eq!(sessions, Ok(0), "no session began");

    // Without single sign-on configured, its routes do not exist.
    let plain = TestApp::new().await.with_auth_on();
    assert_eq!(
        plain.get("/api/v1/auth/providers").await.body,
        json!({"password": true, "single_sign_on": null})
    );
    let r = plain.get("/api/v1/auth/oidc/start").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(
        r.body,
        json!({"detail": "Single sign-on is not configured on this server"})
    );
}

async fn logins_are_taken_once_and_swept_when_stale(backend: Backend) {
    let app = TestApp::on(backend).await;
    let logins = store::open(&app.state.db).logins;
    let login = |age: Duration| PendingLogin {
        nonce: "n".to_owned(),
        pkce_verifier: "v".repeat(43),
        redirect_uri: "http://127.0.0.1:8000/api/v1/auth/oidc/callback".to_owned(),
        return_to: "/queue".to_owned(),
        created_at: Timestamp::ago(age),
    };
    let fresh = login(Duration::from_secs(5));
    logins.insert(&fresh, "fresh").await.unwrap();
    logins
        .insert(&login(Duration::from_secs(11 * 60)), "stale")
        .await
        .unwrap();
    assert_eq!(logins.take("fresh").await.unwrap(), Some(fresh));
    assert_eq!(logins.take("fresh").await.unwrap(), None, "once only");
    let sso = SingleSignOn::new(unreachable_provider(), logins.clone()).unwrap();
    assert_eq!(sso.delete_stale_logins().await.unwrap(), 1);
    assert_eq!(logins.take("stale").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_under_way_is_taken_once_and_swept_when_stale_sqlite() {
    logins_are_taken_once_and_swept_when_stale(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_under_way_is_taken_once_and_swept_when_stale_postgres() {
    if common::postgres_or_skip("a_login_under_way_is_taken_once_and_swept_when_stale_postgres")
        .is_some()
    {
        logins_are_taken_once_and_swept_when_stale(Backend::Postgres).await;
    }
}
