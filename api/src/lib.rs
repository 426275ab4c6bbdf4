//! murmur's HTTP server: command routes (appending events through the domain's aggregates),
//! query routes (reading projections only), audit, health and metrics.
//!
//! - [`commands`]: the write side (cqrs-es over murmur's append, the user directory).
//! - [`http`]: routes, extractors, the one error type (`http::error`), OpenAPI, and the
//!   accept loop with its limits (`http::serve`).
//! - [`auth`]: tokens, password hashing, the JWT secret; [`throttle`]: login throttling.
//! - [`config`]: every setting (flag and environment variable); [`server`]: start-up and
//!   shutdown of one process.

pub mod auth;
pub mod commands;
pub mod config;
pub mod http;
pub mod server;
pub mod throttle;
