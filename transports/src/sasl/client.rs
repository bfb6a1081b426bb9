//! The client side's uniform interface: one trait every mechanism implements, so the
//! SMTP client drives any of them the same way (RFC 4954 §4):
//!
//! ```text
//! let ir = mech.initial();                    // AUTH <name> [base64(ir) or "="]
//! loop on the server's reply:
//!   334 <base64>  => match mech.step(&decoded)? {
//!                        Step::Continue(r) | Step::Done(r) => send base64(r) }
//!   235           => mech.finish(None)?       // fails if the server did not prove itself
//!   535 / other   => authentication failed
//! ```
//!
//! `finish` matters for SCRAM: a server that says 235 without having sent a valid
//! server signature is not trusted, and the delivery must not go on.

use std::sync::Arc;

use super::{
    cache::SaltedCache,
    channel_binding::{ChannelBinding, TLS_EXPORTER_LEN},
    cram_md5::CramMd5Client,
    error::SaslError,
    login::LoginClient,
    mechanism::Mechanism,
    oauth::{BearerClient, BearerError},
    plain::PlainClient,
    scram_client::ScramClient,
};

/// What to send in answer to a challenge.
#[derive(Clone, PartialEq, Eq)]
pub enum Step {
    /// Send this; the server has more to say (or to prove).
    Continue(Vec<u8>),
    /// Send this; on our side the exchange is complete and verified, and the server's
    /// next reply should be success.
    Done(Vec<u8>),
}

impl Step {
    /// The bytes to send, whichever the variant.
    pub fn response(&self) -> &[u8] {
        match self {
            Step::Continue(r) | Step::Done(r) => r,
        }
    }
}

impl std::fmt::Debug for Step {
    /// Responses carry passwords (PLAIN, LOGIN) or proofs: only lengths are shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::Continue(r) => write!(f, "Continue(<{} bytes>)", r.len()),
            Step::Done(r) => write!(f, "Done(<{} bytes>)", r.len()),
        }
    }
}

/// A client-side SASL mechanism in progress. No I/O: raw (base64-decoded) challenges
/// in, raw responses out.
pub trait ClientMechanism: Send {
    /// Which mechanism this is.
    fn mechanism(&self) -> Mechanism;

    /// The initial response to send with the AUTH command, or `None` when the mechanism
    /// waits for a first challenge (CRAM-MD5, LOGIN). Called at most once, before any
    /// `step`; a mechanism whose initial response was not sent accepts an empty first
    /// challenge instead (RFC 4954 §4).
    fn initial(&mut self) -> Option<Vec<u8>>;

    /// Answers one server challenge.
    fn step(&mut self, challenge: &[u8]) -> Result<Step, SaslError>;

    /// The server announced success (`235`), possibly with additional data. Fails when
    /// the exchange did not complete on our side, e.g. SCRAM without a verified server
    /// signature: the server then has not proven it knows the password.
    fn finish(&mut self, additional_data: Option<&[u8]>) -> Result<(), SaslError>;

    /// The error a server reported inside the exchange before refusing, for the
    /// bearer-token mechanisms (RFC 7628 §3.2.2: a JSON challenge with status and
    /// scope); `None` for the others, and when no such challenge came.
    fn bearer_error(&self) -> Option<&BearerError> {
        None
    }
}

/// Builds the client for `mechanism`. `binding` matters only to SCRAM (see
/// [`ChannelBinding::negotiate`]): a -PLUS mechanism needs a `tls-exporter` value of
/// 32 bytes and a non-PLUS one must not get one. `cache` is used by SCRAM only. For
/// XOAUTH2 and OAUTHBEARER `password` is the access token (and OAUTHBEARER gets no
/// `host`/`port`; [`BearerClient::new`] takes them).
pub fn new_client(
    mechanism: Mechanism,
    username: &str,
    password: &str,
    binding: ChannelBinding,
    cache: Option<Arc<SaltedCache>>,
) -> Result<Box<dyn ClientMechanism>, SaslError> {
    match mechanism.scram_hash() {
        Some(hash) => {
            check_binding(mechanism, &binding)?;
            Ok(Box::new(ScramClient::new(
                hash, username, password, binding, cache,
            )?))
        }
        None => match mechanism {
            Mechanism::CramMd5 => Ok(Box::new(CramMd5Client::new(username, password))),
            Mechanism::Plain => Ok(Box::new(PlainClient::new(username, password)?)),
            Mechanism::Login => Ok(Box::new(LoginClient::new(username, password))),
            Mechanism::XOAuth2 | Mechanism::OAuthBearer => Ok(Box::new(BearerClient::new(
                mechanism, username, password, None,
            )?)),
            Mechanism::ScramSha1
            | Mechanism::ScramSha1Plus
            | Mechanism::ScramSha256
            | Mechanism::ScramSha256Plus => Err(SaslError::State {
                mechanism,
                reason: "SCRAM mechanism without a hash",
            }),
        },
    }
}

/// A -PLUS mechanism needs a tls-exporter value (RFC 9266 §2: 32 bytes); a non-PLUS one
/// must not carry one (RFC 5802 §6: "p" is only for -PLUS).
pub(crate) fn check_binding(
    mechanism: Mechanism,
    binding: &ChannelBinding,
) -> Result<(), SaslError> {
    match (mechanism.is_plus(), binding) {
        (true, ChannelBinding::TlsExporter(value)) if value.len() == TLS_EXPORTER_LEN => Ok(()),
        (true, ChannelBinding::TlsExporter(_)) => Err(SaslError::ChannelBinding {
            mechanism,
            reason: "the tls-exporter value must be 32 bytes (RFC 9266 §2)",
        }),
        (true, _) => Err(SaslError::ChannelBinding {
            mechanism,
            reason: "a -PLUS mechanism needs the TLS 1.3 tls-exporter value",
        }),
        (false, ChannelBinding::TlsExporter(_)) => Err(SaslError::ChannelBinding {
            mechanism,
            reason: "channel binding data given for a mechanism without -PLUS",
        }),
        (false, _) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn factory_checks_the_binding() {
        let exporter = ChannelBinding::TlsExporter(vec![0; 32]);
        assert!(new_client(Mechanism::ScramSha256Plus, "u", "p", exporter.clone(), None).is_ok());
        for (mech, binding) in [
            (Mechanism::ScramSha256Plus, ChannelBinding::None),
            (Mechanism::ScramSha1Plus, ChannelBinding::ServerLacksSupport),
            (
                Mechanism::ScramSha1Plus,
                ChannelBinding::TlsExporter(vec![0; 12]),
            ),
            (Mechanism::ScramSha256, exporter.clone()),
        ] {
            let err = new_client(mech, "u", "p", binding, None).err();
            assert!(
                matches!(err, Some(SaslError::ChannelBinding { .. })),
                "{mech}"
            );
        }
        for mech in Mechanism::ALL {
            let binding = if mech.is_plus() {
                exporter.clone()
            } else {
                ChannelBinding::None
            };
            let client = new_client(mech, "u", "p", binding, None).unwrap();
            assert_eq!(client.mechanism(), mech);
        }
    }

    #[test]
    fn step_debug_hides_bytes() {
        let step = Step::Done(b"\0user\0secret".to_vec());
        assert_eq!(format!("{step:?}"), "Done(<12 bytes>)");
        assert_eq!(step.response(), b"\0user\0secret");
    }
}
