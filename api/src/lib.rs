//! murmur's HTTP server: command routes (appending events through the domain's aggregates),
//! query routes (reading projections only), audit, health and metrics.

pub mod auth;
pub mod commands;
pub mod config;
pub mod http;
pub mod server;
pub mod throttle;
