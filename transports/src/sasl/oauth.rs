//! Bearer-token mechanisms, client side: OAUTHBEARER (RFC 7628) and XOAUTH2 (the
//! earlier form that Google and Microsoft document for SMTP).
//!
//! Both send an OAuth 2.0 access token in one initial response:
//!
//! ```text
//! XOAUTH2:      user=USER ^A auth=Bearer TOKEN ^A ^A
//! OAUTHBEARER:  n,a=USER, ^A host=HOST ^A port=PORT ^A auth=Bearer TOKEN ^A ^A
//! ```
//!
//! (`^A` is the byte 0x01.) A server that accepts answers `235`. One that refuses
//! first sends a `334` challenge holding a JSON error (RFC 7628 §3.2.2, e.g.
//! `{"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}`); the
//! client ends the exchange with a dummy response — a single 0x01 for OAUTHBEARER
//! (RFC 7628 §3.2.3), an empty one for XOAUTH2 — and the server's final reply follows
//! (`535` or similar). The decoded error is kept as a [`BearerError`] so the SMTP layer
//! can put its status and scope into the failure it reports.
//!
//! The token is a credential: like PLAIN's password it goes only over TLS unless the
//! operator said `no_starttls` (the SMTP layer checks), and it is never in `Debug`
//! output or errors. The token itself comes from elsewhere (`crate::oauth2`); nothing
//! here fetches or caches it.

use std::fmt;

use super::{
    client::{ClientMechanism, Step},
    error::SaslError,
    mechanism::Mechanism,
    saslprep::escape_username,
    server::{ServerFailure, ServerMechanism, ServerStep},
};

/// RFC 7628 §3.1: `kvsep = %x01`.
const KVSEP: u8 = 0x01;

/// Longest error challenge text kept when it is not the JSON it should be.
const MAX_RAW_ERROR: usize = 200;

/// The JSON error a server sends in a `334` challenge when it refuses a token
/// (RFC 7628 §3.2.2). Every field as the server wrote it; none is secret.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BearerError {
    /// `status`: the HTTP-style status ("401" invalid token, "400" bad request, "403"
    /// insufficient scope).
    pub status: Option<String>,
    /// `schemes`: the schemes the server accepts ("bearer").
    pub schemes: Option<String>,
    /// `scope`: the scope a token needs for this server.
    pub scope: Option<String>,
    /// The challenge as received (shortened) when it is not a JSON object.
    pub undecodable: Option<String>,
}

impl BearerError {
    /// Decodes an error challenge (already base64-decoded). Never fails: a challenge
    /// that is not JSON is kept, shortened, in `undecodable`.
    pub fn parse(challenge: &[u8]) -> BearerError {
        let text = String::from_utf8_lossy(challenge);
        let field = |v: &serde_json::Value, key: &str| match v.get(key) {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            // Some servers send the status as a number.
            Some(serde_json::Value::Number(n)) => Some(n.to_string()),
            Some(_) | None => None,
        };
        match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(v) if v.is_object() => BearerError {
                status: field(&v, "status"),
                schemes: field(&v, "schemes"),
                scope: field(&v, "scope"),
                undecodable: None,
            },
            Ok(_) | Err(_) => BearerError {
                undecodable: Some(text.chars().take(MAX_RAW_ERROR).collect()),
                ..BearerError::default()
            },
        }
    }
}

impl fmt::Display for BearerError {
    /// `status 401, schemes bearer, scope https://mail.google.com/`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(raw) = &self.undecodable {
            return write!(f, "undecodable error challenge {raw:?}");
        }
        let parts: Vec<String> = [
            ("status", &self.status),
            ("schemes", &self.schemes),
            ("scope", &self.scope),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k} {v}")))
        .collect();
        if parts.is_empty() {
            f.write_str("no details")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

/// An OAUTHBEARER or XOAUTH2 client for one login.
pub struct BearerClient {
    mechanism: Mechanism,
    message: Vec<u8>,
    sent: bool,
    error: Option<BearerError>,
}

impl BearerClient {
    /// A client sending `token` for `username`. `endpoint` (the host name and port
    /// connected to) goes into OAUTHBEARER's optional `host` and `port` pairs
    /// (RFC 7628 §3.1); XOAUTH2 has none. Fails for another mechanism, or when a
    /// value would break the message's syntax.
    pub fn new(
        mechanism: Mechanism,
        username: &str,
        token: &str,
        endpoint: Option<(&str, u16)>,
    ) -> Result<Self, SaslError> {
        let bad = |field, reason| SaslError::Credential {
            mechanism,
            field,
            reason,
        };
        // RFC 6750 §2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
        if token.is_empty() {
            return Err(bad("access token", "it is empty"));
        }
        if !token.bytes().all(is_b64token_char) {
            return Err(bad(
                "access token",
                "it holds characters a bearer token cannot have (RFC 6750 §2.1)",
            ));
        }
        // RFC 7628 §3.1: values are VCHAR / SP / HTAB / CR / LF; no 0x01 anywhere.
        if username.bytes().any(|b| b < 0x20 || b == 0x7f) {
            return Err(bad("username", "it holds control characters"));
        }
        let mut message = Vec::with_capacity(token.len() + username.len() + 64);
        match mechanism {
            Mechanism::XOAuth2 => {
                message.extend_from_slice(b"user=");
                message.extend_from_slice(username.as_bytes());
                message.push(KVSEP);
            }
            Mechanism::OAuthBearer => {
                // RFC 7628 §3.1: gs2-header (RFC 5801 §4) without channel binding ("n"),
                // the authorization identity escaped as a saslname.
                message.extend_from_slice(b"n,");
                if !username.is_empty() {
                    message.extend_from_slice(b"a=");
                    message.extend_from_slice(escape_username(username).as_bytes());
                }
                message.push(b',');
                message.push(KVSEP);
                if let Some((host, port)) = endpoint {
                    if !host.is_empty() && host.bytes().all(|b| b.is_ascii_graphic()) {
                        message.extend_from_slice(format!("host={host}").as_bytes());
                        message.push(KVSEP);
                        message.extend_from_slice(format!("port={port}").as_bytes());
                        message.push(KVSEP);
                    }
                }
            }
            Mechanism::Login
            | Mechanism::Plain
            | Mechanism::CramMd5
            | Mechanism::ScramSha1
            | Mechanism::ScramSha1Plus
            | Mechanism::ScramSha256
            | Mechanism::ScramSha256Plus => {
                return Err(SaslError::State {
                    mechanism,
                    reason: "not a bearer-token mechanism",
                })
            }
        }
        // RFC 6750 §2.1 credentials, then the closing kvsep of the message.
        message.extend_from_slice(b"auth=Bearer ");
        message.extend_from_slice(token.as_bytes());
        message.push(KVSEP);
        message.push(KVSEP);
        Ok(BearerClient {
            mechanism,
            message,
            sent: false,
            error: None,
        })
    }

    /// What the client sends to end the exchange after an error challenge.
    fn dummy_response(&self) -> Vec<u8> {
        match self.mechanism {
            // RFC 7628 §3.2.3: a single %x01.
            Mechanism::OAuthBearer => vec![KVSEP],
            // Google's and Microsoft's XOAUTH2 documents: an empty response.
            _ => Vec::new(),
        }
    }
}

fn is_b64token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/' | b'=')
}

impl ClientMechanism for BearerClient {
    fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    fn initial(&mut self) -> Option<Vec<u8>> {
        if self.sent {
            return None;
        }
        self.sent = true;
        Some(self.message.clone())
    }

    fn step(&mut self, challenge: &[u8]) -> Result<Step, SaslError> {
        if !self.sent {
            // Without an initial response the server asks with an empty challenge.
            if !challenge.is_empty() {
                return Err(SaslError::UnexpectedChallenge {
                    mechanism: self.mechanism,
                    stage: "before the token was sent",
                });
            }
            self.sent = true;
            return Ok(Step::Continue(self.message.clone()));
        }
        if self.error.is_some() {
            return Err(SaslError::UnexpectedChallenge {
                mechanism: self.mechanism,
                stage: "after the error challenge was answered",
            });
        }
        // RFC 7628 §3.2.2: a challenge after the token is the server's error.
        self.error = Some(BearerError::parse(challenge));
        Ok(Step::Done(self.dummy_response()))
    }

    fn finish(&mut self, _additional_data: Option<&[u8]>) -> Result<(), SaslError> {
        if self.sent {
            Ok(())
        } else {
            Err(SaslError::PrematureSuccess {
                mechanism: self.mechanism,
            })
        }
    }

    fn bearer_error(&self) -> Option<&BearerError> {
        self.error.as_ref()
    }
}

impl fmt::Debug for BearerClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BearerClient")
            .field("mechanism", &self.mechanism)
            .field("sent", &self.sent)
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

/// The server side: relaygate's submission listener never offers bearer mechanisms
/// (it has no token issuer to check against), so this refuses whatever it is given.
/// It exists so that every [`Mechanism`] has a server.
#[derive(Debug)]
pub struct NoBearerServer {
    mechanism: Mechanism,
}

impl NoBearerServer {
    /// A server that refuses `mechanism`.
    pub fn new(mechanism: Mechanism) -> Self {
        NoBearerServer { mechanism }
    }

    fn refuse(&self) -> ServerStep {
        ServerStep::Failure(ServerFailure::Malformed {
            mechanism: self.mechanism,
            reason: "bearer tokens are not accepted here".into(),
        })
    }
}

impl ServerMechanism for NoBearerServer {
    fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    fn start(&mut self, _initial_response: Option<&[u8]>) -> ServerStep {
        self.refuse()
    }

    fn step(&mut self, _response: &[u8]) -> ServerStep {
        self.refuse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg";

    #[test]
    fn xoauth2_message() {
        // The format of Google's "OAuth 2.0 Mechanism" page and Microsoft's SMTP AUTH
        // documentation: user=, auth=Bearer, each pair ended by ^A, then a final ^A.
        let mut c =
            BearerClient::new(Mechanism::XOAuth2, "someuser@example.com", TOKEN, None).unwrap();
        let ir = c.initial().unwrap();
        assert_eq!(
            ir,
            format!("user=someuser@example.com\x01auth=Bearer {TOKEN}\x01\x01").as_bytes()
        );
        assert_eq!(c.initial(), None);
        c.finish(None).unwrap();
        assert_eq!(c.bearer_error(), None);
        // The host and port are not part of XOAUTH2.
        let mut c =
            BearerClient::new(Mechanism::XOAuth2, "u", TOKEN, Some(("smtp.test", 587))).unwrap();
        assert!(!String::from_utf8_lossy(&c.initial().unwrap()).contains("host="));
    }

    #[test]
    fn oauthbearer_message_rfc7628_section_4_1() {
        // RFC 7628 §4.1: n,a=user@example.com,^Ahost=server.example.com^Aport=143^A
        // auth=Bearer vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==^A^A
        let token = "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==";
        let mut c = BearerClient::new(
            Mechanism::OAuthBearer,
            "user@example.com",
            token,
            Some(("server.example.com", 143)),
        )
        .unwrap();
        assert_eq!(
            c.initial().unwrap(),
            b"n,a=user@example.com,\x01host=server.example.com\x01port=143\x01\
              auth=Bearer vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==\x01\x01"
                .to_vec()
        );
        // host and port are optional (RFC 7628 §3.1).
        let mut c = BearerClient::new(Mechanism::OAuthBearer, "u", token, None).unwrap();
        assert_eq!(
            c.initial().unwrap(),
            format!("n,a=u,\x01auth=Bearer {token}\x01\x01").as_bytes()
        );
        // No authzid: "n,,"; "," and "=" in it are escaped as a saslname (RFC 5801 §4).
        let mut c = BearerClient::new(Mechanism::OAuthBearer, "", token, None).unwrap();
        assert!(c.initial().unwrap().starts_with(b"n,,\x01auth=Bearer "));
        let mut c = BearerClient::new(Mechanism::OAuthBearer, "a,b=c", token, None).unwrap();
        assert!(c.initial().unwrap().starts_with(b"n,a=a=2Cb=3Dc,\x01"));
    }

    #[test]
    fn error_challenge_is_decoded_and_answered() {
        let json = br#"{"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}"#;
        for (mech, dummy) in [
            (Mechanism::OAuthBearer, vec![0x01]),
            (Mechanism::XOAuth2, vec![]),
        ] {
            let mut c = BearerClient::new(mech, "u", TOKEN, None).unwrap();
            c.initial().unwrap();
            assert_eq!(c.step(json).unwrap(), Step::Done(dummy), "{mech}");
            let e = c.bearer_error().unwrap();
            assert_eq!(e.status.as_deref(), Some("401"));
            assert_eq!(e.scope.as_deref(), Some("https://mail.google.com/"));
            assert_eq!(
                e.to_string(),
                "status 401, schemes bearer, scope https://mail.google.com/"
            );
            // A second challenge is not part of either mechanism.
            assert!(matches!(
                c.step(b"{}"),
                Err(SaslError::UnexpectedChallenge { .. })
            ));
        }
    }

    #[test]
    fn odd_error_challenges() {
        let e = BearerError::parse(br#"{"status":400}"#);
        assert_eq!(e.status.as_deref(), Some("400"));
        assert_eq!(e.to_string(), "status 400");
        assert_eq!(BearerError::parse(b"{}").to_string(), "no details");
        let e = BearerError::parse(b"not json");
        assert_eq!(e.undecodable.as_deref(), Some("not json"));
        assert!(e.to_string().contains("not json"));
        let long = vec![b'x'; 1000];
        assert_eq!(
            BearerError::parse(&long).undecodable.map(|s| s.len()),
            Some(MAX_RAW_ERROR)
        );
    }

    #[test]
    fn token_after_an_empty_challenge() {
        // The initial response was not sent (too long for the AUTH line): the server's
        // empty challenge gets the message.
        let mut c = BearerClient::new(Mechanism::XOAuth2, "u", TOKEN, None).unwrap();
        assert!(matches!(
            c.finish(None),
            Err(SaslError::PrematureSuccess { .. })
        ));
        let step = c.step(b"").unwrap();
        assert!(step.response().starts_with(b"user=u\x01"));
        c.finish(None).unwrap();
        let mut c = BearerClient::new(Mechanism::XOAuth2, "u", TOKEN, None).unwrap();
        assert!(c.step(b"what").is_err());
    }

    #[test]
    fn bad_values_and_no_token_in_debug() {
        for bad in ["", "has space", "tab\there", "x\x01y", "quote\""] {
            assert!(
                matches!(
                    BearerClient::new(Mechanism::XOAuth2, "u", bad, None),
                    Err(SaslError::Credential { .. })
                ),
                "{bad:?}"
            );
        }
        assert!(BearerClient::new(Mechanism::XOAuth2, "u\x01", TOKEN, None).is_err());
        assert!(BearerClient::new(Mechanism::Plain, "u", TOKEN, None).is_err());
        let err = BearerClient::new(Mechanism::XOAuth2, "u", "sec ret", None)
            .err()
            .unwrap();
        assert!(!err.to_string().contains("sec ret"), "{err}");
        let c = BearerClient::new(Mechanism::OAuthBearer, "u", TOKEN, None).unwrap();
        assert!(!format!("{c:?}").contains(TOKEN));
    }

    #[test]
    fn the_server_side_refuses() {
        let mut s = NoBearerServer::new(Mechanism::XOAuth2);
        assert!(matches!(s.start(None), ServerStep::Failure(_)));
        assert!(matches!(s.step(b"x"), ServerStep::Failure(_)));
        assert_eq!(s.mechanism(), Mechanism::XOAuth2);
    }
}
