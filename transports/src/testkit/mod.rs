//! Test doubles for this crate's tests and the gateway's integration tests (feature
//! `testkit`): a scriptable DNS server with per-name DNSSEC behaviour.

pub mod dns;
pub mod microsocks;
mod dnssec;

pub use dns::{Rcode, TestDns, ZoneTextError};
pub use microsocks::Microsocks;
/// The hickory types [`TestDns::insert`] takes.
pub use hickory_proto as proto;
