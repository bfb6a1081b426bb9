//! LOGIN, both sides: the de-facto exchange (never standardised; see the expired
//! draft-murchison-sasl-login) where the server prompts "Username:" then "Password:"
//! and the client answers each.
//!
//! Servers word the prompts differently and some send empty ones, so the client goes
//! by order, not by text. Some clients send the user name as an initial response; the
//! server accepts that. As with PLAIN the password is checked against the SCRAM
//! verifier, and the SMTP layer allows LOGIN only over TLS.

use std::{fmt, sync::Arc};

use super::{
    client::{ClientMechanism, Step},
    credentials::CredentialStore,
    error::SaslError,
    mechanism::Mechanism,
    server::{check_plaintext, ServerFailure, ServerMechanism, ServerSettings, ServerStep},
};

const MECH: Mechanism = Mechanism::Login;

/// The user name prompt our server sends.
pub const USERNAME_PROMPT: &[u8] = b"Username:";
/// The password prompt our server sends.
pub const PASSWORD_PROMPT: &[u8] = b"Password:";

/// The LOGIN client.
pub struct LoginClient {
    username: String,
    password: String,
    answered: u8,
}

impl LoginClient {
    /// A client for `username` and `password`, sent as given (LOGIN has no SASLprep).
    pub fn new(username: &str, password: &str) -> Self {
        LoginClient {
            username: username.to_string(),
            password: password.to_string(),
            answered: 0,
        }
    }
}

impl ClientMechanism for LoginClient {
    fn mechanism(&self) -> Mechanism {
        MECH
    }

    fn initial(&mut self) -> Option<Vec<u8>> {
        None
    }

    fn step(&mut self, _prompt: &[u8]) -> Result<Step, SaslError> {
        self.answered = self.answered.saturating_add(1);
        match self.answered {
            1 => Ok(Step::Continue(self.username.clone().into_bytes())),
            2 => Ok(Step::Done(std::mem::take(&mut self.password).into_bytes())),
            _ => Err(SaslError::UnexpectedChallenge {
                mechanism: MECH,
                stage: "after the password",
            }),
        }
    }

    fn finish(&mut self, _additional_data: Option<&[u8]>) -> Result<(), SaslError> {
        if self.answered >= 2 {
            Ok(())
        } else {
            Err(SaslError::PrematureSuccess { mechanism: MECH })
        }
    }
}

impl fmt::Debug for LoginClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginClient")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("answered", &self.answered)
            .finish()
    }
}

enum State {
    Initial,
    WantUsername,
    WantPassword { username: String },
    Over,
}

/// The LOGIN server.
pub struct LoginServer {
    store: Arc<dyn CredentialStore>,
    settings: Arc<ServerSettings>,
    state: State,
}

impl LoginServer {
    /// A server checking against `store`.
    pub fn new(store: Arc<dyn CredentialStore>, settings: Arc<ServerSettings>) -> Self {
        LoginServer {
            store,
            settings,
            state: State::Initial,
        }
    }

    fn got_username(&mut self, response: &[u8]) -> ServerStep {
        match String::from_utf8(response.to_vec()) {
            Ok(username) => {
                self.state = State::WantPassword { username };
                ServerStep::Challenge(PASSWORD_PROMPT.to_vec())
            }
            Err(_) => {
                self.state = State::Over;
                ServerStep::Failure(ServerFailure::InvalidUsername { mechanism: MECH })
            }
        }
    }
}

impl ServerMechanism for LoginServer {
    fn mechanism(&self) -> Mechanism {
        MECH
    }

    fn start(&mut self, initial_response: Option<&[u8]>) -> ServerStep {
        if !matches!(self.state, State::Initial) {
            self.state = State::Over;
            return ServerStep::Failure(ServerFailure::ExchangeOver { mechanism: MECH });
        }
        match initial_response {
            Some(username) => self.got_username(username),
            None => {
                self.state = State::WantUsername;
                ServerStep::Challenge(USERNAME_PROMPT.to_vec())
            }
        }
    }

    fn step(&mut self, response: &[u8]) -> ServerStep {
        match std::mem::replace(&mut self.state, State::Over) {
            State::WantUsername => self.got_username(response),
            State::WantPassword { username } => match std::str::from_utf8(response) {
                Ok(password) => {
                    check_plaintext(MECH, &*self.store, &self.settings, &username, password)
                }
                Err(_) => ServerStep::Failure(ServerFailure::Malformed {
                    mechanism: MECH,
                    reason: "the password is not UTF-8".into(),
                }),
            },
            State::Initial | State::Over => {
                ServerStep::Failure(ServerFailure::ExchangeOver { mechanism: MECH })
            }
        }
    }
}

impl fmt::Debug for LoginServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Initial => "initial",
            State::WantUsername => "want username",
            State::WantPassword { .. } => "want password",
            State::Over => "over",
        };
        f.debug_struct("LoginServer")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sasl::{credentials::StoredCredentials, server::Authenticated};
    use std::collections::HashMap;

    fn server() -> LoginServer {
        let creds = StoredCredentials::from_password("pencil", 4096).unwrap();
        let store: Arc<dyn CredentialStore> =
            Arc::new(HashMap::from([("user".to_string(), creds)]));
        LoginServer::new(store, Arc::new(ServerSettings::new("h", [0; 32])))
    }

    #[test]
    fn client_answers_in_order() {
        let mut c = LoginClient::new("user", "pencil");
        assert_eq!(c.initial(), None);
        assert_eq!(
            c.step(b"VXNlcm5hbWU6").unwrap(),
            Step::Continue(b"user".to_vec())
        );
        assert!(matches!(
            c.finish(None),
            Err(SaslError::PrematureSuccess { .. })
        ));
        assert_eq!(c.step(b"").unwrap(), Step::Done(b"pencil".to_vec()));
        c.finish(None).unwrap();
        assert!(matches!(
            c.step(b"Password:"),
            Err(SaslError::UnexpectedChallenge { .. })
        ));
        assert!(!format!("{:?}", LoginClient::new("u", "hunter2")).contains("hunter2"));
    }

    #[test]
    fn server_prompts_and_checks() {
        let ok = ServerStep::Success(Authenticated {
            username: "user".into(),
            mechanism: MECH,
        });
        let mut s = server();
        assert_eq!(
            s.start(None),
            ServerStep::Challenge(USERNAME_PROMPT.to_vec())
        );
        assert_eq!(
            s.step(b"user"),
            ServerStep::Challenge(PASSWORD_PROMPT.to_vec())
        );
        assert_eq!(s.step(b"pencil"), ok);
        assert!(matches!(
            s.step(b"x"),
            ServerStep::Failure(ServerFailure::ExchangeOver { .. })
        ));

        // User name as initial response.
        let mut s = server();
        assert_eq!(
            s.start(Some(b"user")),
            ServerStep::Challenge(PASSWORD_PROMPT.to_vec())
        );
        assert_eq!(s.step(b"pencil"), ok);

        let mut s = server();
        s.start(Some(b"user"));
        assert!(matches!(
            s.step(b"wrong"),
            ServerStep::Failure(ServerFailure::InvalidCredentials { .. })
        ));
        let mut s = server();
        s.start(Some(b"nobody"));
        assert!(matches!(
            s.step(b"pencil"),
            ServerStep::Failure(ServerFailure::UnknownUser { .. })
        ));
        let mut s = server();
        assert!(matches!(
            s.start(Some(&[0xff])),
            ServerStep::Failure(ServerFailure::InvalidUsername { .. })
        ));
        let mut s = server();
        assert!(matches!(
            s.step(b"user"),
            ServerStep::Failure(ServerFailure::ExchangeOver { .. })
        ));
    }
}
