//! The real SOCKS5 server for tests lives in the transports testkit, shared by both
//! crates' tests.

pub use relaygate_transports::testkit::microsocks::{free_port, Microsocks, EGRESS_IP};
