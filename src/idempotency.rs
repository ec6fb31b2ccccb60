//! `Idempotency-Key` for `POST /api/v1/recordings`: a client that did not get
//! an answer (lost response, timeout) repeats the request with the same key and
//! receives the first request's response instead of creating a duplicate.
//!
//! - same key, same body → the stored response (same status, same body);
//! - same key, another body → 422;
//! - same key while the first request is still being processed → 409;
//! - keys are kept 24 hours ([`KEEP_FOR`]), then forgotten.
//!
//! All SQL for the `idempotency_keys` table is here; it is written once for
//! both backends (the table keeps timestamps as text, see its migration).

use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::audio::storage::hex;
use crate::db::{Database, with_pool};
use crate::recordings::StoreError;
use crate::timestamp::Timestamp;

/// How long a key is remembered.
pub const KEEP_FOR: Duration = Duration::from_secs(24 * 3600);
/// A key still "in flight" after this long belongs to a request that died
/// (its server crashed): the next request with the key takes it over.
pub const ABANDONED_AFTER: Duration = Duration::from_secs(60);
/// The longest key accepted.
pub const MAX_KEY_LEN: usize = 255;

/// What to do with a request that carries a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// First use of the key: process the request, then [`IdempotencyStore::complete`].
    Claimed,
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

/// The `idempotency_keys` table.
#[derive(Debug, Clone)]
pub struct IdempotencyStore {
    db: Database,
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

impl IdempotencyStore {
    /// The store over `db`.
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// Claims `key` for a request whose body has `fingerprint`.
    pub async fn claim(
        &self,
        clinician_id: &str,
        key: &str,
        fingerprint: &str,
    ) -> Result<Claim, StoreError> {
        let now = Timestamp::now().to_string();
        let inserted = with_pool!(&self.db, write, |pool| {
            sqlx::query(
                "INSERT INTO idempotency_keys (clinician_id, key, request_sha256, created_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (clinician_id, key) DO NOTHING",
            )
            .bind(clinician_id)
            .bind(key)
            .bind(fingerprint)
            .bind(&now)
            .execute(pool)
            .await?
            .rows_affected()
        });
        if inserted == 1 {
            return Ok(Claim::Claimed);
        }
        let row: Option<(String, Option<i64>, Option<String>, String)> =
            with_pool!(&self.db, write, |pool| {
                sqlx::query_as(
                    "SELECT request_sha256, CAST(status_code AS BIGINT), response_body, created_at \
                     FROM idempotency_keys WHERE clinician_id = $1 AND key = $2",
                )
                .bind(clinician_id)
                .bind(key)
                .fetch_optional(pool)
                .await?
            });
        let Some((stored_fingerprint, status, body, created_at)) = row else {
            // Forgotten between the two statements (expired): try once more.
            return Box::pin(self.claim(clinician_id, key, fingerprint)).await;
        };
        if stored_fingerprint != fingerprint {
            return Ok(Claim::Mismatch);
        }
        match (status, body) {
            (Some(status), Some(body)) => Ok(Claim::Replay {
                status: u16::try_from(status).unwrap_or(500),
                body,
            }),
            _ if created_at < Timestamp::ago(ABANDONED_AFTER).to_string() => {
                let taken = with_pool!(&self.db, write, |pool| {
                    sqlx::query(
                        "UPDATE idempotency_keys SET created_at = $3 \
                         WHERE clinician_id = $1 AND key = $2 AND status_code IS NULL AND created_at = $4",
                    )
                    .bind(clinician_id)
                    .bind(key)
                    .bind(&now)
                    .bind(&created_at)
                    .execute(pool)
                    .await?
                    .rows_affected()
                });
                Ok(if taken == 1 {
                    Claim::Claimed
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
        with_pool!(&self.db, write, |pool| {
            sqlx::query(
                "UPDATE idempotency_keys SET status_code = $3, response_body = $4 \
                 WHERE clinician_id = $1 AND key = $2",
            )
            .bind(clinician_id)
            .bind(key)
            .bind(i64::from(status))
            .bind(body)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(())
    }

    /// Releases a claimed key whose request failed (nothing was created), so
    /// that the client may retry with the same key.
    pub async fn release(&self, clinician_id: &str, key: &str) -> Result<(), StoreError> {
        with_pool!(&self.db, write, |pool| {
            sqlx::query(
                "DELETE FROM idempotency_keys \
                 WHERE clinician_id = $1 AND key = $2 AND status_code IS NULL",
            )
            .bind(clinician_id)
            .bind(key)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(())
    }

    /// Forgets keys older than [`KEEP_FOR`]; returns how many.
    pub async fn forget_expired(&self) -> Result<u64, StoreError> {
        let cutoff = Timestamp::ago(KEEP_FOR).to_string();
        Ok(with_pool!(&self.db, write, |pool| {
            sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
                .bind(&cutoff)
                .execute(pool)
                .await?
                .rows_affected()
        }))
    }
}
