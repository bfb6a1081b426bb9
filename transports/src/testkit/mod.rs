//! Test doubles for this crate's tests and the gateway's integration tests (feature
//! `testkit`): a scriptable DNS server with per-name DNSSEC behaviour.

pub mod dns;
mod dnssec;
pub mod microsocks;

pub use dns::{Rcode, TestDns, ZoneTextError};
/// The hickory types [`TestDns::insert`] takes.
pub use hickory_proto as proto;
pub use microsocks::Microsocks;
