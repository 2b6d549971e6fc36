//! Lectern's HTTP API: routers, extractors, errors, OpenAPI, and the pieces of
//! the `lectern` binary (configuration, the embedded PostgreSQL, the server
//! and its background work).
#![forbid(unsafe_code)]
#![expect(
    clippy::result_large_err,
    reason = "Problem is every handler's error type; it is built at most once per request, so boxing it would buy nothing"
)]

pub mod accepted;
pub mod app;
pub mod audit_cli;
pub mod auth;
pub mod config;
pub mod embedded;
pub mod expiry;
pub mod extract;
pub mod idempotency;
pub mod mail;
pub mod middleware;
pub mod openapi;
pub mod pagination;
pub mod problem;
pub mod realtime;
pub mod routes;
pub mod secrets;
pub mod server;
pub mod telemetry;
pub mod workers;

pub use app::{router, AppState};
