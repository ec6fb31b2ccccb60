//! `Idempotency-Key` for POST requests: a client that did not get an answer
//! (lost response, timeout) repeats the request with the same key and
//! receives the first request's response instead of creating a duplicate.
//! [`Idempotency::respond_once`] is the whole sequence (claim, replay or
//! run, then remember or release), for any handler; `POST /api/v1/recordings`
//! uses it.
//!
//! - same key, same body → the stored response (same status, same body);
//! - same key, another body → 422;
//! - same key while the first request is still being processed → 409;
//! - keys are kept 24 hours ([`KEEP_FOR`]), then forgotten.
//!
//! A claim whose request died (its client went away, its write failed and the
//! release failed too, its server crashed) must not block the key: this
//! process knows which of its claims are alive ([`ClaimHold`]). On SQLite, one
//! server holds the database, so a claim that is not alive here is dead and is
//! taken over at once. On PostgreSQL another instance may hold it, so a claim
//! not alive here is taken over after [`ABANDONED_AFTER`].
//!
//! The `idempotency_keys` table is reached through [`store::IdempotencyStore`].

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::future::Future;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub mod store;

use crate::db::{Database, StoreError};
use crate::digest::hex;
use crate::error::ApiError;
use crate::timestamp::Timestamp;
use crate::validation::ValidationIssue;

/// How long a key is remembered.
pub const KEEP_FOR: Duration = Duration::from_secs(24 * 3600);
/// On PostgreSQL, a key still "in flight" after this long, and not held by
/// this process, belongs to a request that died: the next request with the
/// key takes it over.
pub const ABANDONED_AFTER: Duration = Duration::from_secs(60);
/// The longest key accepted.
pub const MAX_KEY_LEN: usize = 255;

/// What to do with a request that carries a key.
#[derive(Debug)]
pub enum Claim {
    /// First use of the key: process the request, then
    /// [`Idempotency::complete`]; keep the hold until then.
    Claimed(ClaimHold),
    /// Answered before: send this again.
    Replay {
        /// HTTP status.
        status: u16,
        /// JSON body.
        body: String,
    },
    /// The key was used with a different body.
    Mismatch,
    /// A request with the key is being processed right now.
    InFlight,
}

/// Claims held by requests running in this process: (clinician, key).
type LiveClaims = Arc<Mutex<HashSet<(String, String)>>>;

/// A claim held by a running request; dropping it (the request ended, or its
/// future was dropped) lets a later request take the key over.
#[derive(Debug)]
pub struct ClaimHold {
    live: LiveClaims,
    claim: (String, String),
}

impl Drop for ClaimHold {
    fn drop(&mut self) {
        if let Ok(mut live) = self.live.lock() {
            live.remove(&self.claim);
        }
    }
}

/// Idempotency keys: the claims alive in this process and the table.
#[derive(Debug, Clone)]
pub struct Idempotency {
    store: Arc<dyn store::IdempotencyStore>,
    live: LiveClaims,
    /// SQLite: one server holds the database, so a claim not alive here is dead.
    single_server: bool,
}

/// The body's fingerprint: SHA-256 of its canonical JSON (so whitespace and
/// key order do not make two equal bodies differ).
pub fn fingerprint(body: &serde_json::Value) -> String {
    hex(&Sha256::digest(body.to_string().as_bytes()))
}

/// The id of the recording a key creates: derived from the clinician and the
/// key (the first 16 bytes of a SHA-256, as a version 8 UUID), so that a
/// retry after a crash finds the recording instead of making a second one.
pub fn recording_id(clinician_id: &str, key: &str) -> uuid::Uuid {
    let digest = Sha256::new()
        .chain_update(b"clinscribe idempotency-key\0")
        .chain_update(clinician_id.as_bytes())
        .chain_update(b"\0")
        .chain_update(key.as_bytes())
        .finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

impl Idempotency {
    /// Idempotency keys kept in `db`.
    pub fn new(db: &Database) -> Self {
        Self {
            store: store::open(db),
            live: Arc::default(),
            single_server: matches!(db, Database::Sqlite(_)),
        }
    }

    /// Marks a claim as alive in this process; None when it already is.
    fn hold(&self, clinician_id: &str, key: &str) -> Option<ClaimHold> {
        let claim = (clinician_id.to_owned(), key.to_owned());
        let mut live = self.live.lock().ok()?;
        live.insert(claim.clone()).then(|| ClaimHold {
            live: self.live.clone(),
            claim,
        })
    }

    /// Claims `key` for a request whose body has `fingerprint`.
    pub async fn claim(
        &self,
        clinician_id: &str,
        key: &str,
        fingerprint: &str,
    ) -> Result<Claim, StoreError> {
        let Some(hold) = self.hold(clinician_id, key) else {
            return Ok(Claim::InFlight);
        };
        let now = Timestamp::now();
        if self
            .store
            .insert_claim(clinician_id, key, fingerprint, &now)
            .await?
        {
            return Ok(Claim::Claimed(hold));
        }
        let Some(stored) = self.store.find(clinician_id, key).await? else {
            // Forgotten between the two statements (expired): try once more.
            drop(hold);
            return Box::pin(self.claim(clinician_id, key, fingerprint)).await;
        };
        if stored.request_sha256 != fingerprint {
            return Ok(Claim::Mismatch);
        }
        match (stored.status_code, stored.response_body) {
            (Some(status), Some(body)) => Ok(Claim::Replay {
                status: u16::try_from(status).unwrap_or(500),
                body,
            }),
            // Not held here (checked above): dead on SQLite, where no other
            // process serves the database; on PostgreSQL, once abandoned.
            _ if self.single_server
                || stored.created_at < Timestamp::ago(ABANDONED_AFTER).to_string() =>
            {
                let taken = self
                    .store
                    .take_over(clinician_id, key, &stored.created_at, &now)
                    .await?;
                Ok(if taken {
                    Claim::Claimed(hold)
                } else {
                    Claim::InFlight
                })
            }
            _ => Ok(Claim::InFlight),
        }
    }

    /// Stores the response of a claimed key.
    pub async fn complete(
        &self,
        clinician_id: &str,
        key: &str,
        status: u16,
        body: &str,
    ) -> Result<(), StoreError> {
        self.store.complete(clinician_id, key, status, body).await
    }

    /// Releases a claimed key whose request failed (nothing was created), so
    /// that the client may retry with the same key.
    pub async fn release(&self, clinician_id: &str, key: &str) -> Result<(), StoreError> {
        self.store.release(clinician_id, key).await
    }

    /// Forgets keys older than [`KEEP_FOR`]; returns how many.
    pub async fn forget_expired(&self) -> Result<u64, StoreError> {
        self.store.forget_before(&Timestamp::ago(KEEP_FOR)).await
    }
}

/// A well-formed `Idempotency-Key`: 1–255 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// The key of a request, if it carries one (422 when it is malformed).
    pub fn from_headers(headers: &HeaderMap) -> Result<Option<Self>, ApiError> {
        let Some(value) = headers.get("idempotency-key") else {
            return Ok(None);
        };
        match value.to_str() {
            Ok(key)
                if !key.is_empty()
                    && key.len() <= MAX_KEY_LEN
                    && key.bytes().all(|b| b.is_ascii_graphic()) =>
            {
                Ok(Some(Self(key.to_owned())))
            }
            _ => Err(ApiError::invalid(ValidationIssue::new(
                "string_pattern_mismatch",
                vec![json!("header"), json!("idempotency-key")],
                "Idempotency-Key must be 1–255 visible ASCII characters",
                Value::String(String::from_utf8_lossy(value.as_bytes()).into_owned()),
            ))),
        }
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Idempotency {
    /// Answers a POST whose effect must happen at most once per key: the
    /// first request runs `act` (which gets the key) and its answer is
    /// remembered; a repeat with the same body gets that answer again (with
    /// `Idempotent-Replayed: true`), one with another body a 422, one while
    /// the first is still running a 409 with `Retry-After`. A request that
    /// fails does not use up its key. Without a key, `act` just runs.
    pub async fn respond_once<'k, F, Fut>(
        &self,
        clinician_id: &str,
        key: Option<&'k IdempotencyKey>,
        body: &Value,
        act: F,
    ) -> Result<Response, ApiError>
    where
        F: FnOnce(Option<&'k IdempotencyKey>) -> Fut,
        Fut: Future<Output = Result<(StatusCode, String), ApiError>>,
    {
        let Some(key) = key else {
            let (status, json) = act(None).await?;
            return Ok(json_response(status, json));
        };
        match self
            .claim(clinician_id, key.as_str(), &fingerprint(body))
            .await?
        {
            Claim::Replay { status, body } => {
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
                let mut response = json_response(status, body);
                response
                    .headers_mut()
                    .insert("idempotent-replayed", HeaderValue::from_static("true"));
                Ok(response)
            }
            Claim::Mismatch => Err(ApiError::invalid(ValidationIssue::new(
                "idempotency_key_reused",
                vec![json!("header"), json!("idempotency-key")],
                "This Idempotency-Key was already used with a different request body; use a new key for a new request",
                Value::String(key.as_str().to_owned()),
            ))),
            Claim::InFlight => Err(ApiError::ConflictRetry(
                "A request with this Idempotency-Key is still being processed; retry shortly"
                    .into(),
            )),
            Claim::Claimed(_hold) => match act(Some(key)).await {
                Ok((status, json)) => {
                    self.complete(clinician_id, key.as_str(), status.as_u16(), &json)
                        .await?;
                    Ok(json_response(status, json))
                }
                Err(e) => {
                    self.release(clinician_id, key.as_str()).await?;
                    Err(e)
                }
            },
        }
    }
}

/// A JSON body already rendered (by the store, or remembered for a replay).
pub fn json_response(status: StatusCode, body: String) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}
