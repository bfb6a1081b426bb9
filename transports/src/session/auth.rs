//! SMTP AUTH on the client side (RFC 4954), driving a SASL mechanism from [`crate::sasl`].
//!
//! The flow, after TLS and the EHLO that follows it (RFC 3207 §4.2: the capability list
//! from before TLS is gone by then):
//!
//! 1. [`Session::plan_auth`] refuses to go on without TLS unless the operator allowed
//!    plaintext (`no_starttls`), reads the `AUTH` list of the fresh EHLO reply, takes the
//!    `tls-exporter` value when the session is TLS 1.3 (RFC 9266), picks the first
//!    mechanism of our preference list that the server offers ([`sasl::choose`]) and
//!    decides the SCRAM gs2 flag ([`ChannelBinding::negotiate`]).
//! 2. [`Session::run_auth`] sends `AUTH <mech> [initial-response]`, answers each `334`
//!    challenge, and on `235` asks the mechanism to [`finish`](sasl::ClientMechanism::finish),
//!    which for SCRAM fails unless the server proved it knows the password.
//!
//! One AUTH per session: a refusal ends it, and nothing here ever tries a second,
//! weaker mechanism. Responses are never logged: they carry passwords (PLAIN, LOGIN),
//! proofs or bearer tokens (XOAUTH2, OAUTHBEARER: the token is passed in place of the
//! password); only the mechanism name is. For the bearer mechanisms, the JSON error a
//! server sends before refusing (RFC 7628 §3.2.2) goes into the `AuthFailed` error.

use std::{fmt, sync::Arc};

use base64::{engine::general_purpose::STANDARD as B64, Engine as _};
use rustls::ProtocolVersion;

use super::{Session, State};
use crate::{
    outcome::{Stage, TransportError},
    sasl::{
        self, channel_binding::TLS_EXPORTER_LABEL, channel_binding::TLS_EXPORTER_LEN,
        ChannelBinding, Mechanism, SaltedCache,
    },
    stream::Stream,
};

/// RFC 5321 §4.5.3.1.4: a command line is at most 512 octets, CRLF included.
const MAX_COMMAND_LINE: usize = 512;

/// Most `334` challenges answered in one exchange. Every mechanism here needs at most
/// three; a server that keeps challenging is broken or hostile.
const MAX_ROUNDS: usize = 8;

/// A password or other secret: `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value itself, for the one place that needs it (the SASL mechanism).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True for an empty secret.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// What one AUTH needs.
#[derive(Debug, Clone, Copy)]
pub struct AuthParams<'a> {
    /// The authentication identity.
    pub username: &'a str,
    /// Its password; for XOAUTH2 and OAUTHBEARER, the access token.
    pub password: &'a Secret,
    /// Mechanisms in preference order; empty means
    /// [`sasl::DEFAULT_CLIENT_PREFERENCE`].
    pub preference: &'a [Mechanism],
    /// The operator allowed credentials over an unencrypted connection (`no_starttls`).
    pub plaintext_allowed: bool,
    /// SCRAM SaltedPassword cache shared by the logins of one transport.
    pub cache: Option<&'a Arc<SaltedCache>>,
}

impl AuthParams<'_> {
    /// The preference list in force.
    pub fn preference(&self) -> &[Mechanism] {
        if self.preference.is_empty() {
            sasl::DEFAULT_CLIENT_PREFERENCE
        } else {
            self.preference
        }
    }
}

/// How a SCRAM exchange is bound to the TLS channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindingUse {
    /// No binding (gs2 flag `n`), or not a SCRAM mechanism.
    None,
    /// We could bind but the server offers no -PLUS variant (gs2 flag `y`, RFC 5802 §6).
    ServerLacksSupport,
    /// `tls-exporter` (RFC 9266), a -PLUS mechanism.
    TlsExporter,
}

impl fmt::Display for BindingUse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BindingUse::None => "none",
            BindingUse::ServerLacksSupport => "none (y: server lacks -PLUS)",
            BindingUse::TlsExporter => "tls-exporter",
        })
    }
}

/// The mechanism chosen for this session and why.
#[derive(Clone)]
pub struct AuthPlan {
    /// The chosen mechanism.
    pub mechanism: Mechanism,
    /// The AUTH list of the EHLO reply after TLS, as received.
    pub offered: Vec<String>,
    binding: ChannelBinding,
}

impl AuthPlan {
    /// How the exchange is bound to the TLS channel.
    pub fn binding(&self) -> BindingUse {
        match self.binding {
            ChannelBinding::None => BindingUse::None,
            ChannelBinding::ServerLacksSupport => BindingUse::ServerLacksSupport,
            ChannelBinding::TlsExporter(_) => BindingUse::TlsExporter,
        }
    }
}

impl fmt::Debug for AuthPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthPlan")
            .field("mechanism", &self.mechanism)
            .field("offered", &self.offered)
            .field("binding", &self.binding())
            .finish()
    }
}

impl Session {
    /// Chooses the mechanism for AUTH from the current capabilities (those of the EHLO
    /// after TLS), without sending anything.
    pub fn plan_auth(&self, params: &AuthParams<'_>) -> Result<AuthPlan, TransportError> {
        let caps = match &self.state {
            State::Ready { caps } => caps,
            State::Greeted | State::InTransaction { .. } | State::Closed => {
                return Err(self.misuse(Stage::Auth));
            }
        };
        // SPEC §2: credentials never cross an unencrypted connection unless the operator
        // explicitly said no_starttls.
        if !self.is_tls() && !params.plaintext_allowed {
            return Err(TransportError::AuthWithoutTls {
                host: self.host.clone(),
            });
        }
        let preference = params.preference();
        let offered = caps.auth.clone();
        let exporter = self.tls_exporter();
        let mechanism = sasl::choose(preference, &offered, exporter.is_some()).map_err(|e| {
            TransportError::NoCommonMechanism {
                host: self.host.clone(),
                ours: e.preference,
                offered: e.offered,
                plus_needs_binding: e.plus_needs_binding,
            }
        })?;
        let binding =
            ChannelBinding::negotiate(mechanism, preference, &offered, exporter.as_deref());
        Ok(AuthPlan {
            mechanism,
            offered,
            binding,
        })
    }

    /// Runs AUTH with the mechanism of `plan` (RFC 4954 §4). On success the session is
    /// authenticated and ready for MAIL.
    pub async fn run_auth(
        &mut self,
        params: &AuthParams<'_>,
        plan: &AuthPlan,
    ) -> Result<(), TransportError> {
        if !matches!(self.state, State::Ready { .. }) {
            return Err(self.misuse(Stage::Auth));
        }
        let mechanism = plan.mechanism;
        let sasl_error = |host: &str, source| TransportError::Sasl {
            host: host.to_string(),
            mechanism,
            source,
        };
        let mut mech = if mechanism.is_bearer() {
            // RFC 7628 §3.1: OAUTHBEARER names the host and port connected to.
            let endpoint = self.peer.map(|addr| (self.host.as_str(), addr.port()));
            sasl::BearerClient::new(
                mechanism,
                params.username,
                params.password.expose(),
                endpoint,
            )
            .map(|c| Box::new(c) as Box<dyn sasl::ClientMechanism>)
        } else {
            sasl::new_client(
                mechanism,
                params.username,
                params.password.expose(),
                plan.binding.clone(),
                params.cache.cloned(),
            )
        }
        .map_err(|e| sasl_error(&self.host, e))?;
        tracing::debug!(host = %self.host, %mechanism, binding = %plan.binding(), "AUTH");

        let name = mechanism.as_str();
        // RFC 4954 §4: the initial response goes on the AUTH line, "=" when empty, unless
        // that makes the line longer than SMTP allows; then it MUST NOT be used there and
        // is sent after the server's empty challenge (RFC 4422 §5.1).
        let mut deferred = None;
        let line = match mech.initial() {
            None => format!("AUTH {name}\r\n"),
            Some(ir) if ir.is_empty() => format!("AUTH {name} =\r\n"),
            Some(ir) => {
                let line = format!("AUTH {name} {}\r\n", B64.encode(&ir));
                if line.len() <= MAX_COMMAND_LINE {
                    line
                } else {
                    deferred = Some(ir);
                    format!("AUTH {name}\r\n")
                }
            }
        };
        // `send_command` logs "AUTH <redacted>" for this line.
        self.send_command(&line, Stage::Auth).await?;

        for _ in 0..MAX_ROUNDS {
            let reply = self.read_reply(Stage::Auth, self.timeouts.command).await?;
            match reply.code {
                235 => {
                    // RFC 4954 §4: 235 ends the exchange. The mechanism must agree: a
                    // SCRAM server that skipped or forged its signature is refused
                    // (RFC 5802 §5: the client MUST verify ServerSignature).
                    return match mech.finish(None) {
                        Ok(()) => {
                            tracing::debug!(host = %self.host, %mechanism, "authenticated");
                            Ok(())
                        }
                        Err(e) => {
                            // Authenticated towards a server that did not prove itself:
                            // do not use this session for anything.
                            self.state = State::Closed;
                            Err(sasl_error(&self.host, e))
                        }
                    };
                }
                334 => {
                    // RFC 4954 §4: the challenge is base64 after "334 ".
                    let text = reply.lines.concat();
                    let Ok(challenge) = B64.decode(text.trim()) else {
                        self.cancel_auth().await;
                        return Err(self.protocol(
                            Stage::Auth,
                            format!("334 challenge is not base64: {reply}"),
                        ));
                    };
                    let response = match deferred.take() {
                        Some(ir) if challenge.is_empty() => ir,
                        Some(_) => {
                            self.cancel_auth().await;
                            return Err(self.protocol(
                                Stage::Auth,
                                "non-empty challenge where the initial response was due".into(),
                            ));
                        }
                        None => match mech.step(&challenge) {
                            Ok(step) => step.response().to_vec(),
                            Err(e) => {
                                // RFC 4954 §4: a client that cannot go on cancels with "*".
                                self.cancel_auth().await;
                                return Err(sasl_error(&self.host, e));
                            }
                        },
                    };
                    self.send_secret(&response).await?;
                }
                _ => {
                    return Err(TransportError::AuthFailed {
                        host: self.host.clone(),
                        mechanism,
                        reply,
                        // XOAUTH2/OAUTHBEARER: the JSON error of the challenge before.
                        bearer: mech.bearer_error().cloned().map(Box::new),
                    });
                }
            }
        }
        self.cancel_auth().await;
        Err(self.protocol(
            Stage::Auth,
            format!("more than {MAX_ROUNDS} AUTH challenges"),
        ))
    }

    /// [`plan_auth`](Self::plan_auth) then [`run_auth`](Self::run_auth); returns the plan.
    pub async fn authenticate(
        &mut self,
        params: &AuthParams<'_>,
    ) -> Result<AuthPlan, TransportError> {
        let plan = self.plan_auth(params)?;
        self.run_auth(params, &plan).await?;
        Ok(plan)
    }

    /// The RFC 9266 `tls-exporter` value of this connection, only on TLS 1.3 (the
    /// channel binding type is defined for TLS 1.3; on 1.2 -PLUS is not chosen).
    pub fn tls_exporter(&self) -> Option<Vec<u8>> {
        let Some(Stream::Tls(tls)) = &self.stream else {
            return None;
        };
        let (_, conn) = tls.get_ref();
        if conn.protocol_version() != Some(ProtocolVersion::TLSv1_3) {
            return None;
        }
        conn.export_keying_material([0u8; TLS_EXPORTER_LEN], TLS_EXPORTER_LABEL, None)
            .ok()
            .map(|v| v.to_vec())
    }

    /// Sends one base64 response line; never logged.
    async fn send_secret(&mut self, response: &[u8]) -> Result<(), TransportError> {
        tracing::debug!(host = %self.host, "send AUTH response <redacted>");
        let mut line = B64.encode(response);
        line.push_str("\r\n");
        self.send_with(line, Stage::Auth, self.timeouts.command)
            .await
    }

    /// Cancels the exchange with "*" (RFC 4954 §4) and reads the server's (501) answer,
    /// best effort. The session stays usable for QUIT.
    async fn cancel_auth(&mut self) {
        tracing::debug!(host = %self.host, "cancelling AUTH");
        if self
            .send_with("*\r\n", Stage::Auth, self.timeouts.command)
            .await
            .is_ok()
        {
            let _ = self.read_reply(Stage::Auth, self.timeouts.command).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        assert_eq!(format!("{s}"), "<redacted>");
        assert_eq!(s.expose(), "hunter2");
        assert!(!s.is_empty());
        assert!(Secret::default().is_empty());
    }

    #[test]
    fn default_preference_when_empty() {
        let pw = Secret::new("x");
        let mut p = AuthParams {
            username: "u",
            password: &pw,
            preference: &[],
            plaintext_allowed: false,
            cache: None,
        };
        assert_eq!(p.preference(), sasl::DEFAULT_CLIENT_PREFERENCE);
        p.preference = &[Mechanism::Plain];
        assert_eq!(p.preference(), &[Mechanism::Plain]);
        assert!(!format!("{p:?}").contains("\"x\""));
    }
}
