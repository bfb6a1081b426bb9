//! CRAM-MD5 (RFC 2195), both sides: the server sends a unique challenge, the client
//! answers `user SP hex(HMAC-MD5(password, challenge))`.
//!
//! The client keeps only the keyed HMAC (`Hmac<Md5>` of the `hmac` crate), not the
//! password. The server checks the digest with the stored [`CramMd5Secret`](super::CramMd5Secret) in constant
//! time; an unknown user is checked against a decoy secret so the work and the answer
//! are the same.

use std::{
    fmt,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use hmac::{Hmac, Mac};
use md5::Md5;

use crate::ct::ct_eq;

use super::{
    client::{ClientMechanism, Step},
    credentials::CredentialStore,
    decoy,
    error::SaslError,
    hash::keyed_hmac,
    md5_state::{hex, hex_decode},
    mechanism::Mechanism,
    saslprep::saslprep,
    server::{Authenticated, ServerFailure, ServerMechanism, ServerSettings, ServerStep},
};

const MECH: Mechanism = Mechanism::CramMd5;

/// The CRAM-MD5 client.
pub struct CramMd5Client {
    username: String,
    /// HMAC-MD5 keyed with the password, cloned for the one challenge.
    mac: Hmac<Md5>,
    answered: bool,
}

impl CramMd5Client {
    /// A client for `username` and `password` (used as given: RFC 2195 predates
    /// SASLprep).
    pub fn new(username: &str, password: &str) -> Self {
        CramMd5Client {
            username: username.to_string(),
            mac: keyed_hmac::<Md5>(password.as_bytes()),
            answered: false,
        }
    }
}

impl ClientMechanism for CramMd5Client {
    fn mechanism(&self) -> Mechanism {
        MECH
    }

    fn initial(&mut self) -> Option<Vec<u8>> {
        None
    }

    fn step(&mut self, challenge: &[u8]) -> Result<Step, SaslError> {
        if self.answered {
            return Err(SaslError::UnexpectedChallenge {
                mechanism: MECH,
                stage: "after the response",
            });
        }
        if challenge.is_empty() {
            return Err(SaslError::Malformed {
                mechanism: MECH,
                message: "challenge",
                reason: "empty".into(),
            });
        }
        self.answered = true;
        // RFC 2195 §2: user name, a space, the digest as 32 lower-case hex digits.
        let mut mac = self.mac.clone();
        mac.update(challenge);
        let digest = hex(&mac.finalize().into_bytes());
        Ok(Step::Done(
            format!("{} {digest}", self.username).into_bytes(),
        ))
    }

    fn finish(&mut self, _additional_data: Option<&[u8]>) -> Result<(), SaslError> {
        if self.answered {
            Ok(())
        } else {
            Err(SaslError::PrematureSuccess { mechanism: MECH })
        }
    }
}

impl fmt::Debug for CramMd5Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CramMd5Client")
            .field("username", &self.username)
            .field("answered", &self.answered)
            .finish_non_exhaustive()
    }
}

/// The CRAM-MD5 server.
pub struct CramMd5Server {
    store: Arc<dyn CredentialStore>,
    settings: Arc<ServerSettings>,
    challenge: Vec<u8>,
    challenged: bool,
    over: bool,
}

impl CramMd5Server {
    /// A server with a fresh challenge `<random.time@hostname>` (RFC 2195 §2: unique,
    /// in the form of a msg-id).
    pub fn new(store: Arc<dyn CredentialStore>, settings: Arc<ServerSettings>) -> Self {
        let time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let challenge = format!("<{}.{time}@{}>", rand::random::<u64>(), settings.hostname);
        Self::with_challenge(store, settings, challenge.into_bytes())
    }

    /// A server with a given challenge: for the RFC test vector only.
    pub(crate) fn with_challenge(
        store: Arc<dyn CredentialStore>,
        settings: Arc<ServerSettings>,
        challenge: Vec<u8>,
    ) -> Self {
        CramMd5Server {
            store,
            settings,
            challenge,
            challenged: false,
            over: false,
        }
    }

    fn verify(&self, response: &[u8]) -> ServerStep {
        let malformed = |reason: &str| {
            ServerStep::Failure(ServerFailure::Malformed {
                mechanism: MECH,
                reason: reason.into(),
            })
        };
        let Ok(text) = std::str::from_utf8(response) else {
            return malformed("not UTF-8");
        };
        // The digest is the last space-separated word; the name may contain spaces.
        let Some((name, digest)) = text.rsplit_once(' ') else {
            return malformed("expected \"user digest\"");
        };
        let Some(digest) = hex_decode(digest).filter(|d| d.len() == 16) else {
            return malformed("the digest is not 32 hex digits");
        };
        let Ok(username) = saslprep(name, "username") else {
            return ServerStep::Failure(ServerFailure::InvalidUsername { mechanism: MECH });
        };
        let found = self.store.lookup(&username).and_then(|c| c.cram_md5);
        let known = found.is_some();
        let secret = found.unwrap_or_else(|| decoy::cram_md5(&self.settings, &username));
        let digest_ok = ct_eq(&secret.hmac(&self.challenge), &digest);
        match (known, digest_ok) {
            (true, true) => ServerStep::Success(Authenticated {
                username,
                mechanism: MECH,
            }),
            (true, false) => ServerStep::Failure(ServerFailure::InvalidCredentials {
                mechanism: MECH,
                username,
            }),
            (false, _) => ServerStep::Failure(ServerFailure::UnknownUser {
                mechanism: MECH,
                username,
            }),
        }
    }
}

impl ServerMechanism for CramMd5Server {
    fn mechanism(&self) -> Mechanism {
        MECH
    }

    fn start(&mut self, initial_response: Option<&[u8]>) -> ServerStep {
        if self.challenged || self.over {
            self.over = true;
            return ServerStep::Failure(ServerFailure::ExchangeOver { mechanism: MECH });
        }
        if initial_response.is_some() {
            // RFC 2195: the server speaks first; there is no initial response.
            self.over = true;
            return ServerStep::Failure(ServerFailure::InitialResponseNotAllowed {
                mechanism: MECH,
            });
        }
        self.challenged = true;
        ServerStep::Challenge(self.challenge.clone())
    }

    fn step(&mut self, response: &[u8]) -> ServerStep {
        if !self.challenged || self.over {
            self.over = true;
            return ServerStep::Failure(ServerFailure::ExchangeOver { mechanism: MECH });
        }
        self.over = true;
        self.verify(response)
    }
}

impl fmt::Debug for CramMd5Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CramMd5Server")
            .field("challenge", &String::from_utf8_lossy(&self.challenge))
            .field("over", &self.over)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sasl::{credentials::StoredCredentials, md5_state::CramMd5Secret};
    use std::collections::HashMap;

    // RFC 2195 §2.
    const CHALLENGE: &[u8] = b"<1896.697170952@postoffice.reston.mci.net>";
    const RESPONSE: &[u8] = b"tim b913a602c7eda7a495b4e6e7334d3890";

    fn server() -> CramMd5Server {
        let creds = StoredCredentials {
            cram_md5: Some(CramMd5Secret::from_password(b"tanstaaftanstaaf")),
            ..Default::default()
        };
        let store: Arc<dyn CredentialStore> = Arc::new(HashMap::from([("tim".to_string(), creds)]));
        CramMd5Server::with_challenge(
            store,
            Arc::new(ServerSettings::new("h", [0; 32])),
            CHALLENGE.to_vec(),
        )
    }

    #[test]
    fn rfc2195_client() {
        let mut c = CramMd5Client::new("tim", "tanstaaftanstaaf");
        assert_eq!(c.initial(), None);
        assert!(matches!(
            c.finish(None),
            Err(SaslError::PrematureSuccess { .. })
        ));
        assert_eq!(c.step(CHALLENGE).unwrap(), Step::Done(RESPONSE.to_vec()));
        c.finish(None).unwrap();
        assert!(matches!(
            c.step(CHALLENGE),
            Err(SaslError::UnexpectedChallenge { .. })
        ));
        assert!(matches!(
            CramMd5Client::new("tim", "x").step(b""),
            Err(SaslError::Malformed { .. })
        ));
        assert!(!format!("{c:?}").contains("tanstaaf"));
    }

    #[test]
    fn rfc2195_server() {
        let mut s = server();
        assert_eq!(s.start(None), ServerStep::Challenge(CHALLENGE.to_vec()));
        assert_eq!(
            s.step(RESPONSE),
            ServerStep::Success(Authenticated {
                username: "tim".into(),
                mechanism: MECH
            })
        );
        assert!(matches!(
            s.step(RESPONSE),
            ServerStep::Failure(ServerFailure::ExchangeOver { .. })
        ));
        // Upper-case hex is accepted too.
        let mut s = server();
        s.start(None);
        assert!(matches!(
            s.step(&RESPONSE.to_ascii_uppercase()[..]),
            ServerStep::Failure(ServerFailure::UnknownUser { .. })
        ));
        let mut s = server();
        s.start(None);
        assert!(matches!(
            s.step(b"tim B913A602C7EDA7A495B4E6E7334D3890"),
            ServerStep::Success(_)
        ));
    }

    #[test]
    fn server_failures() {
        let run = |response: &[u8]| {
            let mut s = server();
            s.start(None);
            match s.step(response) {
                ServerStep::Failure(f) => f,
                other => panic!("{other:?}"),
            }
        };
        assert!(matches!(
            run(b"tim b913a602c7eda7a495b4e6e7334d3891"),
            ServerFailure::InvalidCredentials { .. }
        ));
        assert!(matches!(
            run(b"tom b913a602c7eda7a495b4e6e7334d3890"),
            ServerFailure::UnknownUser { .. }
        ));
        for bad in [
            &b"tim"[..],
            b"tim xyz",
            b"tim b913",
            b"",
            &[0xff, 0x20, 0x30],
        ] {
            assert!(
                matches!(run(bad), ServerFailure::Malformed { .. }),
                "{bad:?}"
            );
        }
        let mut s = server();
        assert!(matches!(
            s.start(Some(b"x")),
            ServerStep::Failure(ServerFailure::InitialResponseNotAllowed { .. })
        ));
        let mut s = server();
        assert!(matches!(
            s.step(RESPONSE),
            ServerStep::Failure(ServerFailure::ExchangeOver { .. })
        ));
    }

    #[test]
    fn fresh_challenges_are_unique_msg_ids() {
        let store: Arc<dyn CredentialStore> = Arc::new(HashMap::<String, StoredCredentials>::new());
        let settings = Arc::new(ServerSettings::new("relay.example.org", [0; 32]));
        let a = CramMd5Server::new(Arc::clone(&store), Arc::clone(&settings)).challenge;
        let b = CramMd5Server::new(store, settings).challenge;
        assert_ne!(a, b);
        let text = String::from_utf8(a).unwrap();
        assert!(
            text.starts_with('<') && text.ends_with("@relay.example.org>"),
            "{text}"
        );
    }
}
