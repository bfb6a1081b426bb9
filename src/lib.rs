//! relaygate: an SMTP transport and SASL proxy gateway.
//!
//! Applications submit mail over SMTP; the gateway stores each message durably before
//! answering `250`, then delivers it, choosing a route and a transport at every attempt.
//!
//! # Layout
//! - [`config`]: the TOML config file, defaults and validation with line numbers.
//! - [`accounts`]: SASL credentials of submitting applications (verifiers only).
//! - [`submission`]: the SMTP server applications talk to (protocol, DATA, sessions).
//! - [`message`]: headers the gateway adds (Received, Date, Message-ID).
//! - [`spool`]: the durable append-only log with group commit and replay.
//! - [`model`]: the stored message and per-recipient state.
//! - [`queue`]: due-time index, the decision after each attempt, the scheduler.
//! - [`routes`]: pure route selection (account → sender domain → global).
//! - [`snapshot`]: routes and live transport objects, swapped whole on reload.
//! - [`store`]: where routes, transports and accounts come from (file or Redis), live
//!   reload, outage handling.
//! - [`secrets`]: upstream passwords from files, environment variables or the config.
//! - [`oauth`]: a smarthost's OAuth2 token source (`[transports.NAME.oauth2]`).
//! - [`dsn`]: delivery status notifications (RFC 3464).
//! - [`admin`], [`metrics`]: the admin HTTP API, Prometheus metrics.
//! - [`app`]: start-up, signals, shutdown; [`cli`]: commands that talk to a gateway.
//!
//! Outbound SMTP (client sessions, TLS, smarthosts) lives in the `relaygate-transports`
//! crate, which knows nothing about the queue.

pub mod accounts;
pub mod address;
pub mod admin;
pub mod app;
pub mod cli;
pub mod config;
pub mod dkim;
pub mod dsn;
pub mod message;
pub mod metrics;
pub mod model;
pub mod oauth;
pub mod queue;
pub mod routes;
pub mod runtime;
pub mod secrets;
pub mod snapshot;
pub mod spool;
pub mod store;
pub mod submission;
