//! Where applications hand mail to the gateway: the SMTP submission server.
//!
//! `proto` parses commands and builds replies, `data` receives the message content; both
//! are pure. `auth` holds what SMTP AUTH needs around the SASL mechanisms, `auth_guard`
//! the failed-login waits and lockouts. `session` drives one connection (state machine
//! over a socket), `server` owns
//! the listeners and graceful shutdown, `limits` what one client may take (connections,
//! time, junk, errors, memory), `tls` loads the server certificate.

pub mod auth;
pub mod auth_guard;
mod conn_io;
pub mod data;
pub mod limits;
pub mod proto;
pub mod server;
pub mod session;
pub mod tls;

pub use server::{SubmissionServer, SubmissionSettings};
