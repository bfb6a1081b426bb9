//! The server side's uniform interface: one trait every mechanism implements, so the
//! submission listener drives any of them the same way (RFC 4954 §4):
//!
//! ```text
//! let mut mech = new_server(name, store, settings, &channel);
//! let mut step = mech.start(initial_response);       // from "AUTH <name> [ir]"
//! loop {
//!     match step {
//!         ServerStep::Challenge(c) => { send "334 " + base64(c); step = mech.step(&decoded_reply) }
//!         ServerStep::Success(account) => { send 235; break }
//!         ServerStep::Failure(why) => { log why; send 535 (the same for every cause); break }
//!     }
//! }
//! ```
//!
//! A client's `*` (cancel) is the SMTP layer's business: it drops the mechanism.

use std::{fmt, sync::Arc};

use super::{
    cram_md5::CramMd5Server,
    credentials::CredentialStore,
    decoy,
    hash::ScramHash,
    login::LoginServer,
    mechanism::Mechanism,
    oauth::NoBearerServer,
    plain::PlainServer,
    saslprep::saslprep,
    scram_server::ScramServer,
    verifier::{verify_password, MAX_ITERATIONS, MIN_ITERATIONS},
};

/// Server-wide SASL settings, shared by every connection.
#[derive(Clone)]
pub struct ServerSettings {
    /// Host name in CRAM-MD5 challenges (`<random.time@hostname>`).
    pub hostname: String,
    /// Iteration count shown to unknown users; set it to what real accounts use so that
    /// the decoy looks like them. Clamped to the accepted bounds when used.
    pub decoy_iterations: u32,
    decoy_secret: [u8; 32],
}

impl ServerSettings {
    /// Settings with a given decoy secret. Keep the secret stable across restarts (e.g.
    /// in `data_dir`), or an unknown user's salt changes at each restart while a real
    /// user's does not.
    pub fn new(hostname: impl Into<String>, decoy_secret: [u8; 32]) -> Self {
        ServerSettings {
            hostname: hostname.into(),
            decoy_iterations: MIN_ITERATIONS,
            decoy_secret,
        }
    }

    /// Settings with a random decoy secret.
    pub fn with_random_secret(hostname: impl Into<String>) -> Self {
        Self::new(hostname, rand::random())
    }

    pub(crate) fn decoy_secret(&self) -> &[u8; 32] {
        &self.decoy_secret
    }

    pub(crate) fn clamped_decoy_iterations(&self) -> u32 {
        self.decoy_iterations.clamp(MIN_ITERATIONS, MAX_ITERATIONS)
    }
}

impl fmt::Debug for ServerSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerSettings")
            .field("hostname", &self.hostname)
            .field("decoy_iterations", &self.decoy_iterations)
            .field("decoy_secret", &"<redacted>")
            .finish()
    }
}

/// What this connection offers for channel binding.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ServerChannel {
    /// The `tls-exporter` value of this TLS 1.3 connection (RFC 9266), if any.
    pub tls_exporter: Option<Vec<u8>>,
    /// Whether the EHLO reply listed -PLUS mechanisms. If it did, a client sending the
    /// gs2 flag `y` saw a list without them: someone removed them (RFC 5802 §6).
    pub plus_advertised: bool,
}

impl fmt::Debug for ServerChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerChannel")
            .field("tls_exporter", &self.tls_exporter.as_ref().map(|v| v.len()))
            .field("plus_advertised", &self.plus_advertised)
            .finish()
    }
}

/// A successful authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    /// The account (SASLprep'd authentication identity).
    pub username: String,
    /// The mechanism used.
    pub mechanism: Mechanism,
}

/// What the server answers after a client message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerStep {
    /// Send this challenge (`334`) and wait for the client's answer.
    Challenge(Vec<u8>),
    /// Authenticated (`235`).
    Success(Authenticated),
    /// Refused (`535` whatever the cause, or `501` for syntax if the SMTP layer wishes).
    Failure(ServerFailure),
}

/// Why the server refused. For logs and metrics only: the client gets the same answer
/// for every credential failure, so it cannot tell an unknown user from a bad password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServerFailure {
    /// No such account (or none with credentials for this mechanism). Reported only at
    /// the end of a full exchange.
    #[error("{mechanism}: unknown user {username:?}")]
    UnknownUser {
        /// The mechanism used.
        mechanism: Mechanism,
        /// The name the client gave.
        username: String,
    },
    /// Wrong password (bad proof, digest or password).
    #[error("{mechanism}: wrong credentials for {username:?}")]
    InvalidCredentials {
        /// The mechanism used.
        mechanism: Mechanism,
        /// The account.
        username: String,
    },
    /// The client message does not follow the mechanism's syntax.
    #[error("{mechanism}: malformed client message: {reason}")]
    Malformed {
        /// The mechanism used.
        mechanism: Mechanism,
        /// What is wrong.
        reason: String,
    },
    /// The user name is badly escaped or refused by SASLprep.
    #[error("{mechanism}: invalid user name encoding")]
    InvalidUsername {
        /// The mechanism used.
        mechanism: Mechanism,
    },
    /// gs2 flag `y` while we advertised -PLUS: a downgrade attack (RFC 5802 §6).
    #[error("{mechanism}: client says the server lacks channel binding, but -PLUS was advertised: downgrade attempt (RFC 5802 §6)")]
    Downgrade {
        /// The mechanism used.
        mechanism: Mechanism,
    },
    /// The channel binding data does not match this connection.
    #[error("{mechanism}: channel binding does not match this TLS connection")]
    ChannelBindingMismatch {
        /// The mechanism used.
        mechanism: Mechanism,
    },
    /// A channel binding type other than `tls-exporter`.
    #[error("{mechanism}: unsupported channel binding type {cb_type:?}")]
    UnsupportedChannelBindingType {
        /// The mechanism used.
        mechanism: Mechanism,
        /// The type the client asked for.
        cb_type: String,
    },
    /// Channel binding asked for where we have none (no TLS 1.3), or with a mechanism
    /// without -PLUS.
    #[error("{mechanism}: channel binding is not supported here")]
    ChannelBindingNotSupported {
        /// The mechanism used.
        mechanism: Mechanism,
    },
    /// A -PLUS mechanism without the `p` flag.
    #[error("{mechanism}: a -PLUS mechanism requires the p= gs2 flag")]
    ChannelBindingRequired {
        /// The mechanism used.
        mechanism: Mechanism,
    },
    /// A mandatory extension (`m=`) we do not support.
    #[error("{mechanism}: unsupported mandatory extension {extension:?}")]
    ExtensionNotSupported {
        /// The mechanism used.
        mechanism: Mechanism,
        /// Its value.
        extension: String,
    },
    /// An authorization identity other than the authentication identity: relaygate does
    /// not let one account act as another.
    #[error("{mechanism}: {authcid:?} may not act as {authzid:?}")]
    AuthzidRefused {
        /// The mechanism used.
        mechanism: Mechanism,
        /// Who authenticated.
        authcid: String,
        /// Who they wanted to be.
        authzid: String,
    },
    /// The SCRAM client-final nonce is not the one of this exchange.
    #[error("{mechanism}: the nonce does not match this exchange")]
    NonceMismatch {
        /// The mechanism used.
        mechanism: Mechanism,
    },
    /// An initial response for a mechanism that has none (CRAM-MD5).
    #[error("{mechanism}: this mechanism takes no initial response")]
    InitialResponseNotAllowed {
        /// The mechanism used.
        mechanism: Mechanism,
    },
    /// A message after the exchange ended.
    #[error("{mechanism}: the exchange is already over")]
    ExchangeOver {
        /// The mechanism used.
        mechanism: Mechanism,
    },
}

impl ServerFailure {
    /// The mechanism that failed.
    pub fn mechanism(&self) -> Mechanism {
        match self {
            ServerFailure::UnknownUser { mechanism, .. }
            | ServerFailure::InvalidCredentials { mechanism, .. }
            | ServerFailure::Malformed { mechanism, .. }
            | ServerFailure::InvalidUsername { mechanism }
            | ServerFailure::Downgrade { mechanism }
            | ServerFailure::ChannelBindingMismatch { mechanism }
            | ServerFailure::UnsupportedChannelBindingType { mechanism, .. }
            | ServerFailure::ChannelBindingNotSupported { mechanism }
            | ServerFailure::ChannelBindingRequired { mechanism }
            | ServerFailure::ExtensionNotSupported { mechanism, .. }
            | ServerFailure::AuthzidRefused { mechanism, .. }
            | ServerFailure::NonceMismatch { mechanism }
            | ServerFailure::InitialResponseNotAllowed { mechanism }
            | ServerFailure::ExchangeOver { mechanism } => *mechanism,
        }
    }

    /// The account name the client gave, when the failure is about its credentials
    /// (for counting failures per account; never part of the reply).
    pub fn username(&self) -> Option<&str> {
        match self {
            ServerFailure::UnknownUser { username, .. }
            | ServerFailure::InvalidCredentials { username, .. } => Some(username),
            ServerFailure::AuthzidRefused { authcid, .. } => Some(authcid),
            ServerFailure::Malformed { .. }
            | ServerFailure::InvalidUsername { .. }
            | ServerFailure::Downgrade { .. }
            | ServerFailure::ChannelBindingMismatch { .. }
            | ServerFailure::UnsupportedChannelBindingType { .. }
            | ServerFailure::ChannelBindingNotSupported { .. }
            | ServerFailure::ChannelBindingRequired { .. }
            | ServerFailure::ExtensionNotSupported { .. }
            | ServerFailure::NonceMismatch { .. }
            | ServerFailure::InitialResponseNotAllowed { .. }
            | ServerFailure::ExchangeOver { .. } => None,
        }
    }

    /// The SCRAM `server-error-value` for this failure (RFC 5802 §7), for a protocol
    /// that carries `e=`; SMTP answers 535 instead.
    pub fn scram_error(&self) -> &'static str {
        match self {
            ServerFailure::UnknownUser { .. } => "unknown-user",
            ServerFailure::InvalidCredentials { .. } => "invalid-proof",
            ServerFailure::Malformed { .. } | ServerFailure::NonceMismatch { .. } => {
                "invalid-encoding"
            }
            ServerFailure::InvalidUsername { .. } => "invalid-username-encoding",
            ServerFailure::Downgrade { .. } => "server-does-support-channel-binding",
            ServerFailure::ChannelBindingMismatch { .. } => "channel-bindings-dont-match",
            ServerFailure::UnsupportedChannelBindingType { .. } => {
                "unsupported-channel-binding-type"
            }
            ServerFailure::ChannelBindingNotSupported { .. } => "channel-binding-not-supported",
            ServerFailure::ChannelBindingRequired { .. } => "channel-binding-not-supported",
            ServerFailure::ExtensionNotSupported { .. } => "extensions-not-supported",
            ServerFailure::AuthzidRefused { .. } => "other-error",
            ServerFailure::InitialResponseNotAllowed { .. }
            | ServerFailure::ExchangeOver { .. } => "other-error",
        }
    }

    /// True for a wrong password or unknown user (as opposed to a protocol error).
    pub fn is_bad_credentials(&self) -> bool {
        matches!(
            self,
            ServerFailure::UnknownUser { .. } | ServerFailure::InvalidCredentials { .. }
        )
    }
}

/// A server-side SASL mechanism in progress. No I/O: raw (base64-decoded) client
/// messages in, raw challenges out.
pub trait ServerMechanism: Send {
    /// Which mechanism this is.
    fn mechanism(&self) -> Mechanism;

    /// Starts the exchange, with the initial response of the AUTH command if the client
    /// sent one (`Some(b"")` for "=").
    fn start(&mut self, initial_response: Option<&[u8]>) -> ServerStep;

    /// Takes the client's answer to the last challenge.
    fn step(&mut self, response: &[u8]) -> ServerStep;
}

/// Builds the server for `mechanism`. Offer a -PLUS mechanism only where `channel` has
/// an exporter value; otherwise its exchange fails.
pub fn new_server(
    mechanism: Mechanism,
    store: Arc<dyn CredentialStore>,
    settings: Arc<ServerSettings>,
    channel: &ServerChannel,
) -> Box<dyn ServerMechanism> {
    match mechanism {
        Mechanism::ScramSha1 | Mechanism::ScramSha1Plus => Box::new(ScramServer::new(
            ScramHash::Sha1,
            mechanism.is_plus(),
            store,
            settings,
            channel.clone(),
        )),
        Mechanism::ScramSha256 | Mechanism::ScramSha256Plus => Box::new(ScramServer::new(
            ScramHash::Sha256,
            mechanism.is_plus(),
            store,
            settings,
            channel.clone(),
        )),
        Mechanism::CramMd5 => Box::new(CramMd5Server::new(store, settings)),
        Mechanism::Plain => Box::new(PlainServer::new(store, settings)),
        Mechanism::Login => Box::new(LoginServer::new(store, settings)),
        // Never offered by the submission listener: a bearer token cannot be checked.
        Mechanism::XOAuth2 | Mechanism::OAuthBearer => Box::new(NoBearerServer::new(mechanism)),
    }
}

/// Checks a plaintext user name and password (PLAIN, LOGIN) against the account's SCRAM
/// verifier. An unknown user costs the same PBKDF2 as a known one, against a decoy.
pub(crate) fn check_plaintext(
    mechanism: Mechanism,
    store: &dyn CredentialStore,
    settings: &ServerSettings,
    username: &str,
    password: &str,
) -> ServerStep {
    let Ok(username) = saslprep(username, "username") else {
        return ServerStep::Failure(ServerFailure::InvalidUsername { mechanism });
    };
    let verifier = store
        .lookup(&username)
        .and_then(|creds| creds.password_verifier().cloned());
    match verifier {
        Some(verifier) if verify_password(&verifier, password) => {
            ServerStep::Success(Authenticated {
                username,
                mechanism,
            })
        }
        Some(_) => ServerStep::Failure(ServerFailure::InvalidCredentials {
            mechanism,
            username,
        }),
        None => {
            let decoy = decoy::verifier(settings, ScramHash::Sha256, &username);
            let _ = verify_password(&decoy, password);
            ServerStep::Failure(ServerFailure::UnknownUser {
                mechanism,
                username,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scram_error_values() {
        let m = Mechanism::ScramSha256;
        assert_eq!(
            ServerFailure::Downgrade { mechanism: m }.scram_error(),
            "server-does-support-channel-binding"
        );
        assert_eq!(
            ServerFailure::InvalidCredentials {
                mechanism: m,
                username: "u".into()
            }
            .scram_error(),
            "invalid-proof"
        );
        assert_eq!(
            ServerFailure::ChannelBindingMismatch { mechanism: m }.scram_error(),
            "channel-bindings-dont-match"
        );
        assert!(ServerFailure::UnknownUser {
            mechanism: m,
            username: "u".into()
        }
        .is_bad_credentials());
        assert!(!ServerFailure::Downgrade { mechanism: m }.is_bad_credentials());
        assert_eq!(ServerFailure::Downgrade { mechanism: m }.mechanism(), m);
    }

    #[test]
    fn settings_debug_redacts_the_secret() {
        let s = ServerSettings::new("mx.example", [0xab; 32]);
        let text = format!("{s:?}");
        assert!(!text.contains("171"), "{text}");
        assert!(text.contains("redacted"));
        let mut s = s;
        s.decoy_iterations = 1;
        assert_eq!(s.clamped_decoy_iterations(), MIN_ITERATIONS);
        s.decoy_iterations = u32::MAX;
        assert_eq!(s.clamped_decoy_iterations(), MAX_ITERATIONS);
    }
}
