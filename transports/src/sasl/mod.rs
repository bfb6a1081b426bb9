//! SASL mechanisms for both sides of relaygate, with no I/O: challenge in, response out.
//!
//! Upstream, relaygate authenticates to smarthosts as a *client*; downstream, applications
//! authenticate to its submission listener, where it is the *server*. Both sides speak
//! SCRAM-SHA-256 and SCRAM-SHA-1 (RFC 5802, RFC 7677) with their -PLUS variants bound to
//! the TLS connection through `tls-exporter` (RFC 9266), CRAM-MD5 (RFC 2195), PLAIN
//! (RFC 4616) and LOGIN (the de-facto "Username:"/"Password:" exchange). Towards
//! providers that take OAuth 2.0 access tokens, the client also speaks OAUTHBEARER
//! (RFC 7628) and XOAUTH2; the submission listener never offers those.
//!
//! Nothing here reads or writes a socket, does base64 on the wire or knows about `334`
//! lines: the SMTP layer (RFC 4954) decodes each challenge, hands the raw bytes to a
//! mechanism and encodes what comes back. That keeps every mechanism testable with byte
//! strings, which is how the RFC test vectors are checked below.
//!
//! # Client flow
//!
//! 1. [`choose`] picks the first mechanism of the operator's preference list (default
//!    [`DEFAULT_CLIENT_PREFERENCE`]) that the server advertised after TLS; a -PLUS
//!    variant only when we have a channel binding (a TLS 1.3 exporter value).
//! 2. [`ChannelBinding::negotiate`] decides the SCRAM gs2 flag: `p=tls-exporter` for
//!    -PLUS, `y` when we could bind but the server did not offer the -PLUS variant
//!    (RFC 5802 §6), `n` otherwise.
//! 3. [`new_client`] builds a [`ClientMechanism`]; `initial()` gives the initial response
//!    for `AUTH <mech> <ir>` (or `None`), `step()` answers each challenge, and `finish()`
//!    is called on `235` and fails if the server claimed success before proving itself
//!    (SCRAM's server signature). SCRAM clients can share a [`SaltedCache`] so repeated
//!    logins skip PBKDF2.
//!
//! # Server flow
//!
//! [`new_server`] builds a [`ServerMechanism`] from a [`CredentialStore`] (accounts as
//! [`StoredCredentials`]: SCRAM verifiers and a CRAM-MD5 HMAC state, never a plaintext
//! password), the [`ServerSettings`] and what this connection offers ([`ServerChannel`]).
//! `start()` takes the initial response if any, `step()` each further response, and each
//! answers a [`ServerStep`]: a challenge, success with the account, or a
//! [`ServerFailure`] — to which the SMTP layer answers the same `535` whatever the cause,
//! so that an unknown user and a wrong password look alike. Unknown users go through a
//! complete decoy exchange (a salt derived from the user name and a server secret).
//!
//! # Layout
//!
//! - [`mechanism`] — names, strength order, the preference list and [`choose`].
//! - [`error`] — client-side errors ([`SaslError`]).
//! - [`client`] / [`server`] — the uniform traits and their factories.
//! - [`channel_binding`] — the SCRAM gs2 flag decision.
//! - [`saslprep`] — SASLprep (RFC 4013) and SCRAM user name escaping.
//! - [`hash`] — H, HMAC and Hi for SHA-1 and SHA-256.
//! - [`scram_msg`] — SCRAM message syntax (attributes, nonces, gs2 header).
//! - [`scram_client`] / [`scram_server`] — the SCRAM state machines.
//! - [`verifier`] — stored SCRAM verifiers in the RFC 5803 format, [`verify_password`].
//! - [`cache`] — the SaltedPassword cache of the client.
//! - [`credentials`] — what the server knows about an account.
//! - [`decoy`] — the fake exchange for unknown users.
//! - [`md5_state`] — CRAM-MD5's stored HMAC-MD5 intermediate states.
//! - [`cram_md5`], [`plain`], [`login`] — the other mechanisms, both sides.
//! - [`oauth`] — OAUTHBEARER and XOAUTH2 (client), their JSON error challenge.

pub mod cache;
pub mod channel_binding;
pub mod client;
pub mod cram_md5;
pub mod credentials;
pub mod decoy;
pub mod error;
pub mod hash;
pub mod login;
pub mod md5_state;
pub mod mechanism;
pub mod oauth;
pub mod plain;
pub mod saslprep;
pub mod scram_client;
pub mod scram_msg;
pub mod scram_server;
pub mod server;
pub mod verifier;

#[cfg(test)]
mod tests;

pub use cache::{CacheStats, SaltedCache};
pub use channel_binding::ChannelBinding;
pub use client::{new_client, ClientMechanism, Step};
pub use cram_md5::{CramMd5Client, CramMd5Server};
pub use credentials::{CredentialParseError, CredentialStore, StoredCredentials};
pub use error::SaslError;
pub use hash::ScramHash;
pub use login::{LoginClient, LoginServer};
pub use md5_state::CramMd5Secret;
pub use mechanism::{
    choose, Mechanism, NoCommonMechanism, UnknownMechanism, DEFAULT_CLIENT_PREFERENCE,
};
pub use oauth::{BearerClient, BearerError};
pub use plain::{PlainClient, PlainServer};
pub use scram_client::ScramClient;
pub use scram_server::ScramServer;
pub use server::{
    new_server, Authenticated, ServerChannel, ServerFailure, ServerMechanism, ServerSettings,
    ServerStep,
};
pub use verifier::{verify_password, ScramVerifier, MAX_ITERATIONS, MIN_ITERATIONS};
