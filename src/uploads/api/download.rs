//! `GET /api/v1/recordings/{recording_id}/audio`: a recording's audio, with
//! `Range` for seeking in a player.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::audio::storage::AudioStore;
use crate::audit::AuditContext;
use crate::error::ApiError;
use crate::http::extract::RecordingId;
use crate::recordings::Reads;
use crate::uploads::Uploads;

/// The recording's audio, with `Range` support for seeking in a player.
#[utoipa::path(
    get,
    path = "/api/v1/recordings/{recording_id}/audio",
    tag = "uploads",
    params(
        ("recording_id" = uuid::Uuid, Path, description = "Recording UUID"),
        ("Range" = Option<String>, Header, description = "`bytes=START-END`, `bytes=START-` or `bytes=-SUFFIX`"),
    ),
    responses(
        (status = 200, description = "The whole audio; `ETag` is its SHA-256", content_type = "audio/*"),
        (status = 206, description = "The requested range", content_type = "audio/*"),
        (status = 304, description = "`If-None-Match` matches the ETag"),
        (status = 404, description = "No such recording, or it has no audio", body = crate::http::openapi::ErrorDetail),
        (status = 416, description = "Range beyond the end", body = crate::http::openapi::ErrorDetail),
        (status = 422, description = "Malformed id", body = crate::http::openapi::ValidationErrorBody),
    )
)]
pub async fn download_audio(
    State(uploads): State<Uploads>,
    State(reads): State<Reads>,
    context: AuditContext,
    RecordingId(id): RecordingId,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let recording = reads.audio_source(&context, id).await?;
    // Only audio the server stored itself: a client's audio_file_path is never opened.
    let (Some(sha256), Some(content_type)) = (
        recording.upload.audio_sha256.as_deref(),
        recording.upload.audio_content_type.as_deref(),
    ) else {
        return Err(ApiError::NotFound("Recording has no audio"));
    };
    let etag = format!("\"{sha256}\"");
    if matches_etag(&headers, &etag) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    let key = AudioStore::object_key(id, content_type);
    let unreadable = |e: std::io::Error| {
        ApiError::Internal(anyhow::anyhow!(
            "audio of recording {id} is unreadable ({key}): {e}"
        ))
    };
    let len = uploads.audio_len(&key).await.map_err(unreadable)?;
    reads.audio(&context, &recording).await?;
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_range(v, len).transpose())
        .transpose()?;
    let (start, count) = range.map_or((0, len), |(start, end)| (start, end - start + 1));
    let stream = uploads
        .audio_stream(&key, start, count)
        .await
        .map_err(unreadable)?;
    let mut response = Response::new(Body::from_stream(stream));
    let partial = range.map(|_| (start, count, len));
    audio_headers(&mut response, content_type, count, etag, partial);
    Ok(response)
}

/// Whether `If-None-Match` names this ETag (or `*`).
fn matches_etag(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
}

/// The status and headers of an audio answer; `partial` is (start, count,
/// whole length) for a 206.
fn audio_headers(
    response: &mut Response,
    content_type: &str,
    count: u64,
    etag: String,
    partial: Option<(u64, u64, u64)>,
) {
    let h = response.headers_mut();
    let pairs = [
        (header::CONTENT_TYPE, content_type.to_owned()),
        (header::CONTENT_LENGTH, count.to_string()),
        (header::ETAG, etag),
        (header::ACCEPT_RANGES, "bytes".to_owned()),
    ];
    for (name, value) in pairs {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    }
    if let Some((start, count, len)) = partial {
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        let range = format!("bytes {start}-{}/{len}", start + count - 1);
        if let Ok(v) = HeaderValue::from_str(&range) {
            response.headers_mut().insert(header::CONTENT_RANGE, v);
        }
    }
}

/// One `Range: bytes=…` of a resource of `len` bytes → `(start, end)` inclusive.
/// Ok(None) when the header is not a single byte range (it is then ignored and
/// the whole audio sent, as RFC 9110 allows); 416 when it starts past the end.
fn parse_range(value: &str, len: u64) -> Result<Option<(u64, u64)>, ApiError> {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((first, last)) = spec.split_once('-') else {
        return Ok(None);
    };
    let (first, last) = (first.trim(), last.trim());
    let range = match (first.parse::<u64>().ok(), last.parse::<u64>().ok()) {
        (Some(start), Some(end)) if start <= end => (start, end.min(len.saturating_sub(1))),
        (Some(start), None) if last.is_empty() => (start, len.saturating_sub(1)),
        (None, Some(suffix)) if first.is_empty() && suffix > 0 => {
            (len.saturating_sub(suffix), len.saturating_sub(1))
        }
        _ => return Ok(None),
    };
    if range.0 >= len {
        return Err(ApiError::RangeNotSatisfiable(len));
    }
    Ok(Some(range))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_rfc_9110() {
        let r = |v: &str| parse_range(v, 1000).map_err(|e| e.to_string());
        assert_eq!(r("bytes=0-99").unwrap(), Some((0, 99)));
        assert_eq!(r("bytes=900-").unwrap(), Some((900, 999)));
        assert_eq!(r("bytes=-100").unwrap(), Some((900, 999)));
        assert_eq!(r("bytes=-5000").unwrap(), Some((0, 999)));
        assert_eq!(r("bytes=990-5000").unwrap(), Some((990, 999)));
        assert!(r("bytes=1000-").is_err());
        assert_eq!(r("bytes=5-1").unwrap(), None);
        assert_eq!(r("bytes=0-1,5-6").unwrap(), None);
        assert_eq!(r("items=0-1").unwrap(), None);
    }
}
