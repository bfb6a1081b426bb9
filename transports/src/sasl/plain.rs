//! PLAIN (RFC 4616), both sides: one message `authzid NUL authcid NUL passwd`.
//!
//! The password travels as is, so the SMTP layer allows PLAIN only over TLS (or where
//! the operator said otherwise). The server checks it against the account's SCRAM
//! verifier, so no plaintext password is stored; an authzid other than the authcid is
//! refused (relaygate has no proxy authorization).

use std::{fmt, sync::Arc};

use super::{
    client::{ClientMechanism, Step},
    credentials::CredentialStore,
    error::SaslError,
    mechanism::Mechanism,
    saslprep::saslprep,
    server::{check_plaintext, ServerFailure, ServerMechanism, ServerSettings, ServerStep},
};

const MECH: Mechanism = Mechanism::Plain;

/// The PLAIN client (no authzid).
pub struct PlainClient {
    message: Vec<u8>,
    sent: bool,
}

impl PlainClient {
    /// A client for `username` and `password`, both SASLprep'd (RFC 4616 §2), which
    /// also refuses NUL characters.
    pub fn new(username: &str, password: &str) -> Result<Self, SaslError> {
        let username = saslprep(username, "username")?;
        let password = saslprep(password, "password")?;
        let mut message = Vec::with_capacity(username.len() + password.len() + 2);
        message.push(0);
        message.extend_from_slice(username.as_bytes());
        message.push(0);
        message.extend_from_slice(password.as_bytes());
        Ok(PlainClient {
            message,
            sent: false,
        })
    }
}

impl ClientMechanism for PlainClient {
    fn mechanism(&self) -> Mechanism {
        MECH
    }

    fn initial(&mut self) -> Option<Vec<u8>> {
        if self.sent {
            return None;
        }
        self.sent = true;
        Some(self.message.clone())
    }

    fn step(&mut self, challenge: &[u8]) -> Result<Step, SaslError> {
        // Without an initial response the server asks with an empty challenge.
        if self.sent || !challenge.is_empty() {
            return Err(SaslError::UnexpectedChallenge {
                mechanism: MECH,
                stage: "after the credentials were sent",
            });
        }
        self.sent = true;
        Ok(Step::Done(self.message.clone()))
    }

    fn finish(&mut self, _additional_data: Option<&[u8]>) -> Result<(), SaslError> {
        if self.sent {
            Ok(())
        } else {
            Err(SaslError::PrematureSuccess { mechanism: MECH })
        }
    }
}

impl fmt::Debug for PlainClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlainClient")
            .field("sent", &self.sent)
            .finish_non_exhaustive()
    }
}

/// The PLAIN server.
pub struct PlainServer {
    store: Arc<dyn CredentialStore>,
    settings: Arc<ServerSettings>,
    over: bool,
}

impl PlainServer {
    /// A server checking against `store`.
    pub fn new(store: Arc<dyn CredentialStore>, settings: Arc<ServerSettings>) -> Self {
        PlainServer {
            store,
            settings,
            over: false,
        }
    }

    fn verify(&self, message: &[u8]) -> ServerStep {
        let malformed = |reason: &str| {
            ServerStep::Failure(ServerFailure::Malformed {
                mechanism: MECH,
                reason: reason.into(),
            })
        };
        let Ok(text) = std::str::from_utf8(message) else {
            return malformed("not UTF-8");
        };
        // RFC 4616 §2: message = [authzid] UTF8NUL authcid UTF8NUL passwd
        let mut parts = text.split('\0');
        let (Some(authzid), Some(authcid), Some(password), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return malformed("expected authzid NUL authcid NUL password");
        };
        // RFC 4616 §2: authcid and passwd are 1*SAFE.
        if authcid.is_empty() || password.is_empty() {
            return malformed("empty user name or password");
        }
        if !authzid.is_empty() {
            let (Ok(authzid), Ok(authcid)) =
                (saslprep(authzid, "username"), saslprep(authcid, "username"))
            else {
                return ServerStep::Failure(ServerFailure::InvalidUsername { mechanism: MECH });
            };
            if authzid != authcid {
                return ServerStep::Failure(ServerFailure::AuthzidRefused {
                    mechanism: MECH,
                    authcid,
                    authzid,
                });
            }
        }
        check_plaintext(MECH, &*self.store, &self.settings, authcid, password)
    }
}

impl ServerMechanism for PlainServer {
    fn mechanism(&self) -> Mechanism {
        MECH
    }

    fn start(&mut self, initial_response: Option<&[u8]>) -> ServerStep {
        match initial_response {
            None => ServerStep::Challenge(Vec::new()),
            Some(message) => self.step(message),
        }
    }

    fn step(&mut self, response: &[u8]) -> ServerStep {
        if self.over {
            return ServerStep::Failure(ServerFailure::ExchangeOver { mechanism: MECH });
        }
        self.over = true;
        self.verify(response)
    }
}

impl fmt::Debug for PlainServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlainServer")
            .field("over", &self.over)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sasl::{credentials::StoredCredentials, server::Authenticated};
    use std::collections::HashMap;

    fn server() -> PlainServer {
        let creds = StoredCredentials::from_password("pencil", 4096).unwrap();
        let store: Arc<dyn CredentialStore> =
            Arc::new(HashMap::from([("user".to_string(), creds)]));
        PlainServer::new(store, Arc::new(ServerSettings::new("h", [0; 32])))
    }

    fn fails(message: &[u8]) -> ServerFailure {
        match server().start(Some(message)) {
            ServerStep::Failure(f) => f,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn client_message() {
        let mut c = PlainClient::new("user", "pen\u{00AD}cil").unwrap();
        assert_eq!(c.initial().unwrap(), b"\0user\0pencil");
        assert!(c.step(b"").is_err());
        c.finish(None).unwrap();
        let mut c = PlainClient::new("user", "pencil").unwrap();
        assert!(matches!(
            c.finish(None),
            Err(SaslError::PrematureSuccess { .. })
        ));
        assert_eq!(c.step(b"").unwrap(), Step::Done(b"\0user\0pencil".to_vec()));
        assert!(PlainClient::new("us\0er", "p").is_err());
        assert!(!format!("{c:?}").contains("pencil"));
    }

    #[test]
    fn server_accepts_and_refuses() {
        let ok = ServerStep::Success(Authenticated {
            username: "user".into(),
            mechanism: MECH,
        });
        assert_eq!(server().start(Some(b"\0user\0pencil")), ok);
        assert_eq!(server().start(Some(b"user\0user\0pencil")), ok);
        let mut s = server();
        assert_eq!(s.start(None), ServerStep::Challenge(Vec::new()));
        assert_eq!(s.step(b"\0user\0pencil"), ok);
        assert!(matches!(
            s.step(b"\0user\0pencil"),
            ServerStep::Failure(ServerFailure::ExchangeOver { .. })
        ));

        assert!(matches!(
            fails(b"\0user\0pencil2"),
            ServerFailure::InvalidCredentials { .. }
        ));
        assert!(matches!(
            fails(b"\0nobody\0pencil"),
            ServerFailure::UnknownUser { .. }
        ));
        assert_eq!(
            fails(b"admin\0user\0pencil"),
            ServerFailure::AuthzidRefused {
                mechanism: MECH,
                authcid: "user".into(),
                authzid: "admin".into()
            }
        );
        for bad in [
            &b"user\0pencil"[..],
            b"\0\0pencil",
            b"\0user\0",
            b"\0user\0pencil\0x",
            &[0, 0xff, 0, 0x41],
        ] {
            assert!(
                matches!(fails(bad), ServerFailure::Malformed { .. }),
                "{bad:?}"
            );
        }
    }
}
