//! Conditional requests (RFC 9110 §13) over a resource whose version is a
//! number: the strong `ETag` `"<version>"`, `If-None-Match` for reads that
//! may be answered 304, and `If-Match`, required for writes, so that a
//! client changes only the version it saw.

use axum::http::{HeaderMap, HeaderValue, header};

use crate::error::ApiError;

/// The strong entity tag of a version.
pub fn etag(version: i64) -> HeaderValue {
    // Digits and quotes only: always a valid header value.
    HeaderValue::from_str(&format!("\"{version}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
}

/// The tags of an `If-None-Match` / `If-Match` list, as written (with `W/`).
fn tags(headers: &HeaderMap, name: header::HeaderName) -> Option<Vec<String>> {
    let values: Vec<String> = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .collect();
    (!values.is_empty()).then_some(values)
}

/// Whether `If-None-Match` names this version (or `*`): the client's copy is
/// current, and a read is answered 304. Weak comparison, as RFC 9110 asks.
pub fn not_modified(headers: &HeaderMap, version: i64) -> bool {
    let current = format!("\"{version}\"");
    tags(headers, header::IF_NONE_MATCH).is_some_and(|tags| {
        tags.iter()
            .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == current)
    })
}

/// The version a write is conditional on: `If-Match: "<version>"`. Without
/// it, or with anything but one strong tag of a version (`*` included: it
/// would overwrite whatever is there), 428 saying what to send.
pub fn required_version(headers: &HeaderMap) -> Result<i64, ApiError> {
    let Some(tags) = tags(headers, header::IF_MATCH) else {
        return Err(ApiError::PreconditionRequired(
            "If-Match is required: send the ETag of the version you changed, e.g. If-Match: \"3\""
                .into(),
        ));
    };
    match tags.as_slice() {
        [one] => one
            .strip_prefix('"')
            .and_then(|t| t.strip_suffix('"'))
            .and_then(|t| t.parse::<i64>().ok())
            .filter(|v| *v >= 1)
            .ok_or_else(|| {
                ApiError::PreconditionRequired(format!(
                    "If-Match must be one ETag as this server sends it, e.g. \"3\", not {one}"
                ))
            }),
        _ => Err(ApiError::PreconditionRequired(
            "If-Match must name one version, e.g. If-Match: \"3\"".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(name: header::HeaderName, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn if_none_match_compares_weakly_and_accepts_lists() {
        assert!(not_modified(&headers(header::IF_NONE_MATCH, "\"3\""), 3));
        assert!(not_modified(&headers(header::IF_NONE_MATCH, "W/\"3\""), 3));
        assert!(not_modified(
            &headers(header::IF_NONE_MATCH, "\"1\", \"3\""),
            3
        ));
        assert!(not_modified(&headers(header::IF_NONE_MATCH, "*"), 3));
        assert!(!not_modified(&headers(header::IF_NONE_MATCH, "\"2\""), 3));
        assert!(!not_modified(&HeaderMap::new(), 3));
    }

    #[test]
    fn if_match_must_name_one_version() {
        assert_eq!(
            required_version(&headers(header::IF_MATCH, "\"7\"")).unwrap(),
            7
        );
        for bad in ["*", "W/\"7\"", "7", "\"7\", \"8\"", "\"0\"", "\"x\""] {
            assert!(
                matches!(
                    required_version(&headers(header::IF_MATCH, bad)),
                    Err(ApiError::PreconditionRequired(_))
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            required_version(&HeaderMap::new()),
            Err(ApiError::PreconditionRequired(_))
        ));
    }
}
