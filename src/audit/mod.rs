//! The audit trail: every change to patient data, who made it, when and from
//! where, written in the transaction of the change, chained by hashes, and
//! never changed afterwards (see `model` for the chain, docs/API.md for what
//! is audited).

pub mod api;
pub mod log;
pub mod model;
pub mod spool;
pub mod spool_file;
pub mod store;

pub use log::AuditLog;
pub use model::{
    AuditAction, AuditContext, AuditEvent, Audited, BrokenLink, NewAuditEvent, ReadOf,
};
pub use store::AuditStore;

/// Whether this is the benchmark build that writes no audit events (the
/// `unaudited` feature, `scripts/bench-audit`'s baseline; never shipped).
pub const UNAUDITED: bool = cfg!(feature = "unaudited");
