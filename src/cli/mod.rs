//! Command-line front ends. Each subcommand family lives in its own module with its clap
//! definitions and a `run` function; `main.rs` only dispatches.

pub mod account_hash;
pub mod accounts;
pub mod admin_client;
pub mod auth_test;
pub mod dnscheck;
pub mod queue;
pub mod routes;
pub mod sendmail;
pub mod socks_test;
pub mod transports;

pub use admin_client::{admin_target, call, http, AdminTarget};
