//! What every request passes before a handler, and what every response gets:
//!
//! - **Host** ([`RequestGuard::check`]): a browser tricked by DNS rebinding
//!   sends the attacker's host name; such a request is refused with 421. Bound
//!   to loopback, only `localhost`, `127.0.0.1` and `[::1]` with the server's
//!   port are accepted; otherwise any name, unless `PWA_ALLOWED_HOSTS` lists
//!   them (IP addresses are always accepted: a rebinding attack cannot produce
//!   one). Names in `PWA_ALLOWED_HOSTS` are accepted on any port.
//! - **Origin**: a state-changing request (not GET, HEAD, OPTIONS) from a page
//!   of another site is refused with 403: its `Origin` must be the server's own
//!   (the `Host` it was sent to) or listed in `PWA_ALLOWED_ORIGINS`; without an
//!   `Origin`, `Sec-Fetch-Site: cross-site` is refused. Requests with neither
//!   header (curl, scripts, the original's clients) are not browsers' and pass.
//! - **Response headers** ([`secure_headers`]): `X-Content-Type-Options:
//!   nosniff` on everything, `Cache-Control: no-store` on the API (patient data
//!   must not stay in a browser's or a proxy's cache), and a Content Security
//!   Policy for the API explorer at `/docs`.
//! - **Request ids** ([`acceptable_request_id`]): a client's `X-Request-Id` is
//!   kept only when short and printable, since it is logged.
//!
//! The functions here are policy; `http::edge` applies them to every request.

use std::net::SocketAddr;

use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::config::{AccessSettings, normalize_origin};

/// The longest client-supplied `X-Request-Id` kept.
pub const MAX_REQUEST_ID_LEN: usize = 64;

/// The Content Security Policy of Swagger UI at `/docs`: its own scripts and
/// styles (it sets inline styles), images as data URIs, fetching the OpenAPI
/// document, and never inside a frame.
const DOCS_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; font-src 'self' data:; connect-src 'self'; \
     frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// The Host and Origin rules of one server (see the module documentation).
#[derive(Debug, Clone, Default)]
pub struct RequestGuard {
    /// The port, when bound to a loopback address.
    loopback_port: Option<u16>,
    access: AccessSettings,
}

/// Why a request was refused before reaching a handler.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// 421: not a host name this server answers to.
    Host(String),
    /// 403: a state-changing request from another site's page.
    Origin(String),
}

impl RequestGuard {
    /// The rules for a server bound to `bind` (None: not bound to an address
    /// known here, e.g. in-process tests: only the `access` lists apply).
    pub fn new(bind: Option<SocketAddr>, access: AccessSettings) -> Self {
        Self {
            loopback_port: bind.filter(|b| b.ip().is_loopback()).map(|b| b.port()),
            access,
        }
    }

    /// Refuses a request whose `Host` or `Origin` is not acceptable.
    pub fn check(
        &self,
        method: &Method,
        uri: &axum::http::Uri,
        headers: &HeaderMap,
    ) -> Result<(), Refusal> {
        // Borrowed: this runs on every request, and allocates only to refuse.
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .or_else(|| uri.authority().map(|a| a.as_str()));
        if let Some(host) = host
            && !self.host_allowed(host)
        {
            return Err(Refusal::Host(host.to_owned()));
        }
        if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
            return Ok(());
        }
        match headers.get(header::ORIGIN) {
            Some(origin) => {
                let origin = origin.to_str().unwrap_or("null");
                if self.origin_allowed(origin, host) {
                    Ok(())
                } else {
                    Err(Refusal::Origin(origin.to_owned()))
                }
            }
            None => match headers.get("sec-fetch-site").map(HeaderValue::as_bytes) {
                Some(b"cross-site") => Err(Refusal::Origin("another site".to_owned())),
                _ => Ok(()),
            },
        }
    }

    fn host_allowed(&self, host: &str) -> bool {
        let Some((name, port)) = split_host_port(host.trim()) else {
            return false;
        };
        if self
            .access
            .allowed_hosts
            .iter()
            .any(|h| h.eq_ignore_ascii_case(name))
        {
            return true;
        }
        let loopback_name = ["localhost", "127.0.0.1", "[::1]"]
            .iter()
            .any(|l| l.eq_ignore_ascii_case(name));
        match self.loopback_port {
            Some(bound) => loopback_name && port.map_or(bound == 80, |p| p == bound),
            None => {
                self.access.allowed_hosts.is_empty()
                    || loopback_name
                    || name
                        .trim_matches(['[', ']'])
                        .parse::<std::net::IpAddr>()
                        .is_ok()
            }
        }
    }

    fn origin_allowed(&self, origin: &str, host: Option<&str>) -> bool {
        let Some(origin) = normalize_origin(origin) else {
            return false;
        };
        if self.access.allowed_origins.contains(&origin) {
            return true;
        }
        let Some((scheme, authority)) = origin.split_once("://") else {
            return false;
        };
        host.and_then(|h| normalize_origin(&format!("{scheme}://{h}")))
            .is_some_and(|own| own.split_once("://").map(|(_, a)| a) == Some(authority))
    }
}

/// `name[:port]` (IPv6 in brackets) → (name, port); None when the port is not a number.
fn split_host_port(host: &str) -> Option<(&str, Option<u16>)> {
    let (name, port) = if let Some(end) = host.find(']') {
        let (name, rest) = host.split_at(end + 1);
        (name, rest.strip_prefix(':'))
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        }
    };
    match port {
        None => Some((name, None)),
        Some(p) => p.parse().ok().map(|p| (name, Some(p))),
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let (status, detail) = match &self {
            Self::Host(host) => (
                StatusCode::MISDIRECTED_REQUEST,
                format!(
                    "This server does not answer to the host name {host:?}. Behind a reverse proxy, add the public name to PWA_ALLOWED_HOSTS."
                ),
            ),
            Self::Origin(origin) => (
                StatusCode::FORBIDDEN,
                format!(
                    "Cross-origin request refused: a page from {origin} may not change data here. To allow that site, add its origin to PWA_ALLOWED_ORIGINS."
                ),
            ),
        };
        (status, axum::Json(json!({ "detail": detail }))).into_response()
    }
}

impl Refusal {
    /// One log line about the refusal (host names and origins are not patient data).
    pub fn log(&self) {
        match self {
            Self::Host(host) => tracing::warn!(
                host,
                "refused a request for a host name this server does not answer to (behind a reverse proxy, set PWA_ALLOWED_HOSTS)"
            ),
            Self::Origin(origin) => tracing::warn!(
                origin,
                "refused a state-changing request from another site's page (PWA_ALLOWED_ORIGINS)"
            ),
        }
    }
}

/// Which kind of route a path is, for the response headers it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    /// `/api/…`: patient data, never cached.
    Api,
    /// `/docs`: Swagger UI, with its own Content Security Policy.
    Docs,
    /// The web app and everything else.
    Other,
}

impl RouteKind {
    /// The kind of `path`.
    pub fn of(path: &str) -> Self {
        if path.starts_with("/api/") {
            Self::Api
        } else if path == "/docs" || path.starts_with("/docs/") {
            Self::Docs
        } else {
            Self::Other
        }
    }
}

/// The response headers every route gets (see the module documentation).
pub fn secure_headers(headers: &mut HeaderMap, kind: RouteKind) {
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    match kind {
        RouteKind::Api => {
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
        RouteKind::Docs => {
            headers.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(DOCS_CSP),
            );
        }
        RouteKind::Other => {}
    }
}

/// A client's `X-Request-Id`, if it is 1–64 visible ASCII characters (it is
/// logged, so anything else is replaced).
pub fn acceptable_request_id(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty() && bytes.len() <= MAX_REQUEST_ID_LEN && bytes.iter().all(u8::is_ascii_graphic)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).expect("header"));
        }
        h
    }

    fn loopback(port: u16, access: AccessSettings) -> RequestGuard {
        RequestGuard::new(Some(SocketAddr::from(([127, 0, 0, 1], port))), access)
    }

    #[test]
    fn loopback_accepts_only_loopback_names_with_its_port() {
        let guard = loopback(8000, AccessSettings::default());
        let uri = axum::http::Uri::from_static("/api/v1/health");
        let ok = |host: &str| {
            guard
                .check(&Method::GET, &uri, &headers(&[("host", host)]))
                .is_ok()
        };
        assert!(ok("localhost:8000"));
        assert!(ok("127.0.0.1:8000"));
        assert!(ok("[::1]:8000"));
        assert!(ok("LOCALHOST:8000"));
        assert!(!ok("localhost:9000"));
        assert!(!ok("localhost"));
        assert!(!ok("rebind.attacker.example:8000"));
        assert!(!ok("10.0.0.5:8000"));
        assert!(!ok("localhost:x"));
        let with_proxy = loopback(
            8000,
            AccessSettings::parse("dictation.clinic.example", "").expect("valid"),
        );
        assert!(
            with_proxy
                .check(
                    &Method::GET,
                    &uri,
                    &headers(&[("host", "dictation.clinic.example")])
                )
                .is_ok()
        );
    }

    #[test]
    fn other_binds_accept_any_name_unless_listed() {
        let uri = axum::http::Uri::from_static("/");
        let any = RequestGuard::new(
            Some(SocketAddr::from(([0, 0, 0, 0], 8000))),
            AccessSettings::default(),
        );
        assert!(
            any.check(
                &Method::GET,
                &uri,
                &headers(&[("host", "whatever.example")])
            )
            .is_ok()
        );
        let listed = RequestGuard::new(
            Some(SocketAddr::from(([0, 0, 0, 0], 8000))),
            AccessSettings::parse("a.example", "").expect("valid"),
        );
        let ok = |host: &str| {
            listed
                .check(&Method::GET, &uri, &headers(&[("host", host)]))
                .is_ok()
        };
        assert!(ok("a.example"));
        assert!(ok("a.example:8443"));
        assert!(ok("192.168.1.20:8000"));
        assert!(!ok("b.example"));
    }

    #[test]
    fn writes_from_other_origins_are_refused() {
        let guard = loopback(
            8000,
            AccessSettings::parse("", "https://portal.example").expect("valid"),
        );
        let uri = axum::http::Uri::from_static("/api/v1/recordings");
        let post =
            |pairs: &[(&'static str, &str)]| guard.check(&Method::POST, &uri, &headers(pairs));
        assert!(
            post(&[
                ("host", "localhost:8000"),
                ("origin", "http://localhost:8000")
            ])
            .is_ok()
        );
        assert!(post(&[("host", "localhost:8000")]).is_ok());
        assert!(
            post(&[
                ("host", "localhost:8000"),
                ("origin", "https://portal.example")
            ])
            .is_ok()
        );
        assert!(
            post(&[
                ("host", "localhost:8000"),
                ("sec-fetch-site", "same-origin")
            ])
            .is_ok()
        );
        for refused in [
            vec![
                ("host", "localhost:8000"),
                ("origin", "http://evil.example"),
            ],
            vec![
                ("host", "localhost:8000"),
                ("origin", "http://127.0.0.1:8000"),
            ],
            vec![("host", "localhost:8000"), ("origin", "null")],
            vec![("host", "localhost:8000"), ("sec-fetch-site", "cross-site")],
        ] {
            assert!(
                matches!(post(&refused), Err(Refusal::Origin(_))),
                "{refused:?}"
            );
        }
        // Reads are not state-changing.
        assert!(
            guard
                .check(
                    &Method::GET,
                    &uri,
                    &headers(&[
                        ("host", "localhost:8000"),
                        ("origin", "http://evil.example")
                    ])
                )
                .is_ok()
        );
    }

    #[test]
    fn origins_compare_without_default_ports() {
        let guard = RequestGuard::new(None, AccessSettings::default());
        let uri = axum::http::Uri::from_static("/api/v1/recordings");
        let check = |host: &str, origin: &str| {
            guard
                .check(
                    &Method::POST,
                    &uri,
                    &headers(&[("host", host), ("origin", origin)]),
                )
                .is_ok()
        };
        assert!(check("clinic.example", "https://clinic.example"));
        assert!(check("clinic.example:443", "https://clinic.example"));
        assert!(check("clinic.example", "HTTPS://Clinic.Example:443"));
        assert!(!check("clinic.example", "https://clinic.example.evil"));
    }
}
