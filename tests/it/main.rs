//! The integration tests, one binary (one link, one build of the harness):
//! real SQLite files in temp dirs, a fresh PostgreSQL database per test, the
//! real binary where processes matter. `common` is the harness.

// A test fails by panicking: unwrap, expect and panic! say where and why.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

mod api;
mod audit;
mod auth;
mod changes;
mod database;
mod embedded;
mod extraction;
mod guardrails;
mod hostile;
mod metrics;
mod oidc;
mod openapi;
mod operations;
mod postgres;
mod process;
mod review;
mod s3;
mod signoff;
mod status;
mod store;
mod traces;
mod transcription;
mod uploads;
mod web;
