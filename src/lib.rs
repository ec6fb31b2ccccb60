//! clinscribe: a clinical dictation server and offline-first web app.
//!
//! - [`recordings`]: the domain (model, store, HTTP handlers);
//! - [`db`]: connection setup and migrations;
//! - [`http`]: the router, shared state and the server's life cycle;
//! - [`uploads`], [`audio`]: audio uploads and storage; [`idempotency`];
//! - [`auth`]: users, tokens and who may do what; [`audit`]: the trail;
//! - [`web`]: the offline-first web app (pages and assets, embedded);
//! - [`metrics`], [`telemetry`]: Prometheus metrics and OpenTelemetry traces;
//! - [`cli`]: the `clinscribe` command line; [`config`]: its settings.

pub mod app;
pub mod audio;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod config;
pub mod db;
pub mod digest;
pub mod error;
pub mod files;
pub mod guardrails;
pub mod health;
pub mod http;
pub mod idempotency;
pub mod identity;
pub mod jobs;
pub mod metrics;
pub mod recordings;
pub mod tasks;
pub mod telemetry;
pub mod timestamp;
pub mod transcription;
pub mod uploads;
pub mod validation;
pub mod web;

pub use app::{AppState, router, serve};
