//! Errors of the client side of SASL: every check that can refuse a server has its own
//! variant, so logs and tests can tell a forged signature from a broken message.
//!
//! No variant ever carries a password, a salted password or a key. Nonces, salts and
//! server error strings are not secret and are kept for context.

use super::mechanism::Mechanism;

/// Why a client-side SASL exchange failed (or could not start).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    /// A server message did not follow the mechanism's syntax.
    #[error("{mechanism}: malformed {message}: {reason}")]
    Malformed {
        /// The mechanism being run.
        mechanism: Mechanism,
        /// Which message, e.g. "server-first-message".
        message: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The SCRAM server nonce does not start with our client nonce, or adds nothing to it.
    #[error(
        "{mechanism}: server nonce {server_nonce:?} does not extend our nonce {client_nonce:?} \
         (RFC 5802 §5.1)"
    )]
    NonceNotExtended {
        /// The mechanism being run.
        mechanism: Mechanism,
        /// The nonce we sent.
        client_nonce: String,
        /// The nonce the server answered.
        server_nonce: String,
    },
    /// The SCRAM salt is empty or not valid base64.
    #[error("{mechanism}: invalid salt {salt:?}: {reason}")]
    InvalidSalt {
        /// The mechanism being run.
        mechanism: Mechanism,
        /// The salt attribute as received.
        salt: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The SCRAM iteration count is below what we accept.
    #[error(
        "{mechanism}: server asks for {iterations} iterations, fewer than the minimum {minimum}"
    )]
    IterationsTooLow {
        /// The mechanism being run.
        mechanism: Mechanism,
        /// The server's count.
        iterations: u32,
        /// Our minimum.
        minimum: u32,
    },
    /// The SCRAM iteration count is above what we are willing to compute.
    #[error(
        "{mechanism}: server asks for {iterations} iterations, more than the maximum {maximum}"
    )]
    IterationsTooHigh {
        /// The mechanism being run.
        mechanism: Mechanism,
        /// The server's count (saturated at `u32::MAX` when larger).
        iterations: u32,
        /// Our maximum.
        maximum: u32,
    },
    /// The SCRAM server signature (`v=`) is wrong: the server does not know the password,
    /// or the exchange was tampered with.
    #[error("{mechanism}: the server signature does not verify; the server is not who it claims")]
    BadServerSignature {
        /// The mechanism being run.
        mechanism: Mechanism,
    },
    /// The SCRAM server answered `e=...` in its final message.
    #[error("{mechanism}: the server reports error {error:?}")]
    ServerError {
        /// The mechanism being run.
        mechanism: Mechanism,
        /// The server-error-value (RFC 5802 §7), e.g. "invalid-proof".
        error: String,
    },
    /// The SCRAM server sent a mandatory extension (`m=`) that we do not know.
    #[error("{mechanism}: the server requires the unsupported extension m={extension:?} (RFC 5802 §5.1)")]
    MandatoryExtension {
        /// The mechanism being run.
        mechanism: Mechanism,
        /// The extension's value.
        extension: String,
    },
    /// A user name or password is not valid under SASLprep (RFC 4013 §2.3: prohibited
    /// characters, §2.4: bidirectional rules).
    #[error("the {field} is refused by SASLprep (RFC 4013): prohibited or mis-ordered characters")]
    SaslPrep {
        /// "username" or "password"; the value itself is never reported.
        field: &'static str,
    },
    /// A credential we were given cannot be put in the mechanism's message (an empty
    /// bearer token, a byte the syntax does not allow). The value is never reported.
    #[error("{mechanism}: the {field} cannot be used: {reason}")]
    Credential {
        /// The mechanism being run.
        mechanism: Mechanism,
        /// Which credential, e.g. "access token".
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A -PLUS mechanism was asked for without a channel binding value, or the value has the
    /// wrong size.
    #[error("{mechanism}: {reason}")]
    ChannelBinding {
        /// The mechanism being run.
        mechanism: Mechanism,
        /// What is missing or wrong.
        reason: &'static str,
    },
    /// The server sent a challenge where the mechanism expects none (or no more).
    #[error("{mechanism}: unexpected challenge {stage}")]
    UnexpectedChallenge {
        /// The mechanism being run.
        mechanism: Mechanism,
        /// Where in the exchange, e.g. "after the exchange completed".
        stage: &'static str,
    },
    /// The server announced success before the mechanism completed, e.g. before SCRAM's
    /// server signature was verified.
    #[error("{mechanism}: the server announced success before the exchange completed")]
    PrematureSuccess {
        /// The mechanism being run.
        mechanism: Mechanism,
    },
    /// The mechanism was used after an earlier error or out of order.
    #[error("{mechanism}: {reason}")]
    State {
        /// The mechanism being run.
        mechanism: Mechanism,
        /// What was called out of order.
        reason: &'static str,
    },
}
