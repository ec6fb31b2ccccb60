//! Requests this server makes to servers elsewhere (speech and language
//! model servers): one reading of what went wrong, so that every engine
//! retries the same failures. A connection that fails, a timeout, a 429 (with
//! its `Retry-After`) and a 5xx may pass; any other refusal will not.

use std::time::Duration;

/// Why a server elsewhere gave no usable answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Worth retrying, after `retry_after` when the server asked for it.
    Transient {
        /// What happened.
        message: String,
        /// The server's `Retry-After`, in seconds.
        retry_after: Option<Duration>,
    },
    /// Retrying will not help.
    Permanent(String),
}

/// Sends `request` to `server` (its name in messages: "the Whisper
/// service"); the response when it is a success, or why not. `sent` names
/// what was sent, for a refusal ("the audio").
pub async fn send(
    server: &str,
    sent: &str,
    request: reqwest::RequestBuilder,
) -> Result<reqwest::Response, Refusal> {
    let response = request.send().await.map_err(|e| {
        let kind = if e.is_timeout() {
            "did not answer in time"
        } else if e.is_connect() {
            "cannot be reached"
        } else {
            "failed"
        };
        Refusal::Transient {
            message: format!("{server} {kind}: {e}"),
            retry_after: None,
        }
    })?;
    let status = response.status();
    if status == reqwest::StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        return Err(Refusal::Transient {
            message: format!("{server} answered {status}"),
            retry_after,
        });
    }
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        let body: String = body.chars().take(300).collect();
        return Err(Refusal::Permanent(format!(
            "{server} refused {sent} ({status}): {body}"
        )));
    }
    Ok(response)
}
