//! Scripted SMTP exchanges against a fake server: sessions, TLS and smarthost delivery.
//!
//! One test binary (like hickory-dns' integration tests): `fake` is the scripted server,
//! `pki` makes test certificates, the other modules hold the tests.

mod auth;
mod fake;
mod oauth;
mod pki;
mod session;
mod smarthost;
