//! Audit events: who did what to which recording, when, from where, with
//! every changed field before and after; chained by hashes so that an event
//! changed, removed or forged afterwards is found.
//!
//! The hash of event `n` is SHA-256 over the hash of event `n - 1` (64 hex
//! digits; 64 zeros before the first) followed by the event's canonical
//! content: the compact JSON array `[seq, at, actor, action, recording_id,
//! patient_id, changes, request_id, client_addr]`, `changes` with its keys
//! sorted. Anyone can recompute it from an export.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::identity::Role;
use crate::timestamp::Timestamp;

/// The `prev_hash` of the first event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What an event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    /// Patient data read: a recording, its audio or history, a list page.
    Read,
    /// A recording created (metadata, no audio yet).
    Create,
    /// A recording created with its audio (an upload completed).
    Upload,
    /// A clinician's change to a recording's fields (`PATCH`).
    Update,
    /// A note signed.
    Sign,
    /// An amendment added to a signed note.
    Amend,
    /// A recording deleted.
    Delete,
    /// A failed recording queued again.
    Retry,
    /// The transcription worker's changes (taken, transcribed, failed).
    Transcribe,
    /// An export of audit events (`clinscribe audit export`).
    Export,
    /// The database replaced by a backup (`clinscribe restore`).
    Restore,
    /// A database written by the original service converted to ours.
    Adopt,
    /// A deleted recording's audio removed after the retention period.
    Purge,
    /// Development recordings generated (`clinscribe seed`).
    Seed,
    /// Every table copied from another database (`clinscribe migrate-data`).
    Migrate,
    /// Recordings given to another clinician (`clinscribe recordings reassign`).
    Reassign,
    /// A user added (`clinscribe user add`, `POST /api/v1/users`, or a first single sign-on).
    UserAdd,
    /// A user's password set (`clinscribe user passwd`).
    UserPassword,
    /// A user disabled (`clinscribe user disable`, `POST /api/v1/users/{id}/disable`).
    UserDisable,
    /// An API token created (`clinscribe token create`).
    TokenCreate,
    /// An API token revoked (`clinscribe token revoke`).
    TokenRevoke,
    /// A browser session begun (password, single sign-on, or the first run's setup).
    SignIn,
    /// Browser sessions ended by their user (one, or all of theirs).
    SignOut,
    /// A user's role set by the single sign-on provider's admin claim.
    UserRole,
    /// A note's text checked by an extraction engine elsewhere (the text
    /// went to it), the check stored.
    Verify,
}

impl AuditAction {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Create => "create",
            Self::Upload => "upload",
            Self::Update => "update",
            Self::Sign => "sign",
            Self::Amend => "amend",
            Self::Delete => "delete",
            Self::Retry => "retry",
            Self::Transcribe => "transcribe",
            Self::Export => "export",
            Self::Restore => "restore",
            Self::Adopt => "adopt",
            Self::Purge => "purge",
            Self::Seed => "seed",
            Self::Migrate => "migrate",
            Self::Reassign => "reassign",
            Self::UserAdd => "user_add",
            Self::UserPassword => "user_password",
            Self::UserDisable => "user_disable",
            Self::TokenCreate => "token_create",
            Self::TokenRevoke => "token_revoke",
            Self::SignIn => "sign_in",
            Self::SignOut => "sign_out",
            Self::UserRole => "user_role",
            Self::Verify => "verify",
        }
    }
}

/// Who acts, and through which request: the clinician from the one identity
/// extractor (or `system:<component>`), the request id and client address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditContext {
    /// The clinician id, or `system:<component>`.
    pub actor: String,
    /// The actor's role (a system component acts as an admin would: it is
    /// not subject to the policy of a clinician's actions).
    pub role: Role,
    /// The request's `X-Request-Id`.
    pub request_id: Option<String>,
    /// The client's address, when known.
    pub client_addr: Option<String>,
}

impl AuditContext {
    /// A clinician acting outside a request (tests, tools).
    pub fn clinician(id: &str) -> Self {
        Self {
            actor: id.to_owned(),
            role: Role::Clinician,
            request_id: None,
            client_addr: None,
        }
    }

    /// The event of creating a recording (`create` or `upload`) whose JSON
    /// is `fields`: every field it was created with, as `[null, value]`.
    pub fn creation(
        &self,
        action: AuditAction,
        recording_id: Uuid,
        patient_id: &str,
        fields: &impl Serialize,
    ) -> NewAuditEvent {
        let changes = match serde_json::to_value(fields) {
            _ if super::UNAUDITED => Map::new(),
            Ok(Value::Object(fields)) => fields
                .into_iter()
                .filter(|(field, value)| !value.is_null() && !BOOKKEEPING.contains(&field.as_str()))
                .map(|(field, value)| (field, json!([Value::Null, value])))
                .collect(),
            _ => Map::new(),
        };
        self.event(
            action,
            Some(recording_id),
            Some(patient_id.to_owned()),
            Value::Object(changes),
        )
    }

    /// The event of reading `what` of the recording `recording_id` (of
    /// `patient_id`): `changes` is `{"read": what}`.
    pub fn read(&self, what: ReadOf, recording_id: Uuid, patient_id: &str) -> NewAuditEvent {
        self.event(
            AuditAction::Read,
            Some(recording_id),
            Some(patient_id.to_owned()),
            json!({ "read": what.as_str() }),
        )
    }

    /// The event of an answer listing recordings (a list page, the change
    /// feed): `changes` is `{"read": what, "ids": [every id returned]}`.
    pub fn read_many(&self, what: ReadOf, ids: &[Uuid]) -> NewAuditEvent {
        let ids: Vec<String> = ids.iter().map(|id| id.hyphenated().to_string()).collect();
        self.event(
            AuditAction::Read,
            None,
            None,
            json!({ "read": what.as_str(), "ids": ids }),
        )
    }

    /// An event by this actor, with `changes` as given.
    pub fn event(
        &self,
        action: AuditAction,
        recording_id: Option<Uuid>,
        patient_id: Option<String>,
        changes: Value,
    ) -> NewAuditEvent {
        NewAuditEvent {
            at: Timestamp::now(),
            actor: self.actor.clone(),
            action,
            recording_id,
            patient_id,
            changes,
            request_id: self.request_id.clone(),
            client_addr: self.client_addr.clone(),
        }
    }

    /// A component of the server or the command line acting by itself.
    pub fn system(component: &str) -> Self {
        Self {
            actor: format!("system:{component}"),
            role: Role::Admin,
            request_id: None,
            client_addr: None,
        }
    }
}

/// What a read returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOf {
    /// One recording (its fields, transcript included).
    Recording,
    /// Its audio.
    Audio,
    /// Its audit history.
    History,
    /// A page of the recordings list.
    List,
    /// A page of the change feed.
    Changes,
}

impl ReadOf {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Recording => "recording",
            Self::Audio => "audio",
            Self::History => "history",
            Self::List => "list",
            Self::Changes => "changes",
        }
    }
}

/// An event before it takes its place in the chain (as JSON, a line of the
/// [spool](crate::audit::spool)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewAuditEvent {
    /// When.
    pub at: Timestamp,
    /// Who.
    pub actor: String,
    /// What.
    pub action: AuditAction,
    /// The recording concerned.
    pub recording_id: Option<Uuid>,
    /// Its patient.
    pub patient_id: Option<String>,
    /// `{field: [before, after]}`.
    pub changes: Value,
    /// The request it came in.
    pub request_id: Option<String>,
    /// From where.
    pub client_addr: Option<String>,
}

/// An event as stored: its place in the chain and its hashes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEvent {
    /// Its position in the chain, from 1.
    pub seq: i64,
    /// When (RFC 3339 UTC, microseconds).
    pub at: String,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// The recording concerned.
    pub recording_id: Option<String>,
    /// Its patient.
    pub patient_id: Option<String>,
    /// `{field: [before, after]}`.
    pub changes: Value,
    /// The request it came in.
    pub request_id: Option<String>,
    /// From where.
    pub client_addr: Option<String>,
    /// The previous event's hash.
    pub prev_hash: String,
    /// This event's hash.
    pub hash: String,
}

impl AuditEvent {
    /// `new` as event `seq` after the event whose hash is `prev_hash`.
    pub fn chain(new: &NewAuditEvent, seq: i64, prev_hash: &str) -> Self {
        let stored = StoredEvent::chain(new, seq, prev_hash);
        Self {
            seq,
            at: stored.at,
            actor: stored.actor,
            action: stored.action,
            recording_id: stored.recording_id,
            patient_id: stored.patient_id,
            changes: new.changes.clone(),
            request_id: stored.request_id,
            client_addr: stored.client_addr,
            prev_hash: stored.prev_hash,
            hash: stored.hash,
        }
    }

    /// The canonical content the hash covers.
    pub fn canonical(&self) -> String {
        self.stored().canonical()
    }

    /// SHA-256 over `prev_hash` and the canonical content, as it should be.
    pub fn expected_hash(&self) -> String {
        self.stored().expected_hash()
    }

    /// The event as the table stores it (`changes` as its JSON text).
    pub fn stored(&self) -> StoredEvent {
        StoredEvent {
            seq: self.seq,
            at: self.at.clone(),
            actor: self.actor.clone(),
            action: self.action.clone(),
            recording_id: self.recording_id.clone(),
            patient_id: self.patient_id.clone(),
            // Compact, keys sorted (serde_json's map is ordered): what is stored.
            changes: self.changes.to_string(),
            request_id: self.request_id.clone(),
            client_addr: self.client_addr.clone(),
            prev_hash: self.prev_hash.clone(),
            hash: self.hash.clone(),
        }
    }
}

/// An event as the table stores it: `changes` is the JSON text written,
/// hashed as it is (so verification needs no JSON parsing, and a row whose
/// text was edited, even into equivalent JSON, no longer matches).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StoredEvent {
    /// Position in the chain.
    pub seq: i64,
    /// When.
    pub at: String,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// The recording.
    pub recording_id: Option<String>,
    /// Its patient.
    pub patient_id: Option<String>,
    /// `{field: [before, after]}` as JSON text.
    pub changes: String,
    /// The request.
    pub request_id: Option<String>,
    /// From where.
    pub client_addr: Option<String>,
    /// The previous event's hash.
    pub prev_hash: String,
    /// This event's hash.
    pub hash: String,
}

impl StoredEvent {
    /// `new` as event `seq` after the event whose hash is `prev_hash`, as
    /// the table stores it.
    pub fn chain(new: &NewAuditEvent, seq: i64, prev_hash: &str) -> Self {
        let mut event = Self {
            seq,
            at: new.at.to_string(),
            actor: new.actor.clone(),
            action: new.action.as_str().to_owned(),
            recording_id: new.recording_id.map(|id| id.hyphenated().to_string()),
            patient_id: new.patient_id.clone(),
            // Compact, keys sorted (serde_json's map is ordered): what is stored.
            changes: new.changes.to_string(),
            request_id: new.request_id.clone(),
            client_addr: new.client_addr.clone(),
            prev_hash: prev_hash.to_owned(),
            hash: String::new(),
        };
        event.hash = event.expected_hash();
        event
    }

    /// The canonical content: the compact JSON array of the fields, with
    /// `changes` as stored.
    pub fn canonical(&self) -> String {
        let mut out = Vec::new();
        self.write_canonical(&mut out);
        // Made of UTF-8 strings and JSON text: valid UTF-8.
        String::from_utf8_lossy(&out).into_owned()
    }

    fn write_canonical(&self, out: &mut Vec<u8>) {
        fn text(out: &mut Vec<u8>, value: &str) {
            // Writing a string as JSON into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, value);
        }
        fn optional(out: &mut Vec<u8>, value: Option<&str>) {
            match value {
                Some(v) => text(out, v),
                None => out.extend_from_slice(b"null"),
            }
        }
        out.reserve(256 + self.changes.len());
        out.push(b'[');
        let _ = std::io::Write::write_fmt(out, format_args!("{}", self.seq));
        for field in [&self.at, &self.actor, &self.action] {
            out.push(b',');
            text(out, field);
        }
        for field in [&self.recording_id, &self.patient_id] {
            out.push(b',');
            optional(out, field.as_deref());
        }
        out.push(b',');
        out.extend_from_slice(self.changes.as_bytes());
        for field in [&self.request_id, &self.client_addr] {
            out.push(b',');
            optional(out, field.as_deref());
        }
        out.push(b']');
    }

    /// SHA-256 over `prev_hash` and the canonical content.
    pub fn expected_hash(&self) -> String {
        crate::digest::hex(&self.digest())
    }

    /// Whether the stored `hash` is SHA-256 over `prev_hash` and the
    /// canonical content (compared without building the hex text).
    pub fn hash_matches(&self) -> bool {
        crate::digest::is_hex_of(&self.hash, &self.digest())
    }

    fn digest(&self) -> [u8; 32] {
        let mut content = Vec::new();
        self.write_canonical(&mut content);
        let mut hasher = Sha256::new();
        hasher.update(self.prev_hash.as_bytes());
        hasher.update(&content);
        hasher.finalize().into()
    }
}

/// Fields that change with every write and say nothing by themselves, and
/// the guardrails' check, which follows from the text (whose change the
/// event holds) and the ruleset it names.
const BOOKKEEPING: [&str; 9] = [
    "updated_at",
    "fhir_bundle",
    "version",
    "verification_results",
    "verification_score",
    "verified_at",
    "extraction_started_at",
    "extraction_completed_at",
    "llm_model",
];

/// `{field: [before, after]}` for every field that differs between two JSON
/// objects (a recording before and after a change).
pub fn changes(before: &Value, after: &Value) -> Value {
    let (Value::Object(before), Value::Object(after)) = (before, after) else {
        return Value::Object(Map::new());
    };
    let mut changes = Map::new();
    for (field, new) in after {
        let old = before.get(field).unwrap_or(&Value::Null);
        if old != new && !BOOKKEEPING.contains(&field.as_str()) {
            changes.insert(field.clone(), json!([old, new]));
        }
    }
    Value::Object(changes)
}

/// A change to a recording, to be audited in the transaction that makes it.
#[derive(Debug, Clone)]
pub struct Audited<'a> {
    /// Who and through which request.
    pub context: &'a AuditContext,
    /// What.
    pub action: AuditAction,
    /// The recording.
    pub recording_id: Uuid,
    /// Its patient, before the change.
    pub patient_id: String,
    /// The recording before the change, as JSON.
    pub before: Value,
}

impl<'a> Audited<'a> {
    /// A change by `context` to the recording `id` of `patient_id`, which is
    /// `before` (its JSON) until the change.
    pub fn new(
        context: &'a AuditContext,
        action: AuditAction,
        id: Uuid,
        patient_id: &str,
        before: &impl Serialize,
    ) -> Self {
        Self {
            context,
            action,
            recording_id: id,
            patient_id: patient_id.to_owned(),
            before: serde_json::to_value(before).unwrap_or(Value::Null),
        }
    }

    /// The event of a change that left the recording as `after`.
    pub fn event(&self, after: &impl Serialize) -> NewAuditEvent {
        let after = serde_json::to_value(after).unwrap_or(Value::Null);
        self.event_with(changes(&self.before, &after))
    }

    /// The event of the recording's deletion at `at`.
    pub fn deletion(&self, at: Timestamp) -> NewAuditEvent {
        self.event_with(json!({ "deleted_at": [Value::Null, at.to_string()] }))
    }

    fn event_with(&self, changes: Value) -> NewAuditEvent {
        NewAuditEvent {
            at: Timestamp::now(),
            actor: self.context.actor.clone(),
            action: self.action,
            recording_id: Some(self.recording_id),
            patient_id: Some(self.patient_id.clone()),
            changes,
            request_id: self.context.request_id.clone(),
            client_addr: self.context.client_addr.clone(),
        }
    }
}

/// Where a chain is broken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BrokenLink {
    /// The first event that does not follow from the ones before it.
    pub seq: i64,
    /// How.
    pub reason: String,
}

/// Follows a chain event by event.
#[derive(Debug, Clone)]
pub struct ChainCheck {
    expected_seq: i64,
    prev_hash: String,
    verified: i64,
}

impl Default for ChainCheck {
    fn default() -> Self {
        Self::after(None)
    }
}

impl ChainCheck {
    /// A check of the events that follow `last` (`(seq, hash)` of the event
    /// before the first one checked; None: from the start of the chain).
    pub fn after(last: Option<(i64, String)>) -> Self {
        let (seq, prev_hash) = last.unwrap_or((0, GENESIS_HASH.to_owned()));
        Self {
            expected_seq: seq + 1,
            prev_hash,
            verified: 0,
        }
    }

    /// Checks the next event; the first broken link, if this is it.
    pub fn next(&mut self, event: &StoredEvent) -> Result<(), BrokenLink> {
        let broken = |reason: String| BrokenLink {
            seq: event.seq,
            reason,
        };
        if event.seq != self.expected_seq {
            return Err(broken(format!(
                "expected event {} here: an event is missing or was inserted",
                self.expected_seq
            )));
        }
        if event.prev_hash != self.prev_hash {
            return Err(broken(
                "its prev_hash is not the previous event's hash: an event before it was changed, removed or forged".into(),
            ));
        }
        if !event.hash_matches() {
            return Err(broken(
                "its hash does not match its content: the event was changed".into(),
            ));
        }
        self.expected_seq += 1;
        self.verified += 1;
        self.prev_hash.clone_from(&event.hash);
        Ok(())
    }

    /// How many events were checked and found in order.
    pub fn count(&self) -> i64 {
        self.verified
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: i64, prev: &str) -> AuditEvent {
        AuditEvent::chain(
            &NewAuditEvent {
                at: Timestamp::parse("2026-12-01T10:00:00.000001Z").unwrap(),
                actor: "dr-a".into(),
                action: AuditAction::Update,
                recording_id: Some(Uuid::nil()),
                patient_id: Some("p-1".into()),
                changes: json!({"final_transcript": [null, "x"]}),
                request_id: None,
                client_addr: None,
            },
            seq,
            prev,
        )
    }

    #[test]
    fn a_chain_verifies_and_any_change_breaks_it_at_that_event() {
        let first = event(1, GENESIS_HASH);
        let second = event(2, &first.hash);
        let third = event(3, &second.hash);
        let mut check = ChainCheck::default();
        for e in [&first, &second, &third] {
            check.next(&e.stored()).unwrap();
        }
        assert_eq!(check.count(), 3);

        let mut edited = second.clone();
        edited.changes = json!({"final_transcript": [null, "y"]});
        let mut check = ChainCheck::default();
        check.next(&first.stored()).unwrap();
        assert_eq!(check.next(&edited.stored()).unwrap_err().seq, 2);

        let mut check = ChainCheck::default();
        check.next(&first.stored()).unwrap();
        assert_eq!(
            check.next(&third.stored()).unwrap_err().seq,
            3,
            "a missing event"
        );
    }

    #[test]
    fn the_hash_is_sha256_of_the_previous_hash_and_the_canonical_content() {
        let e = event(1, GENESIS_HASH);
        assert_eq!(
            e.canonical(),
            r#"[1,"2026-12-01T10:00:00.000001Z","dr-a","update","00000000-0000-0000-0000-000000000000","p-1",{"final_transcript":[null,"x"]},null,null]"#
        );
        let mut hasher = Sha256::new();
        hasher.update(format!("{GENESIS_HASH}{}", e.canonical()).as_bytes());
        assert_eq!(e.hash, crate::digest::hex(&hasher.finalize()));
    }
}
