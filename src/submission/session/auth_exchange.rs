//! The AUTH exchange of a submission session (RFC 4954): challenges and responses
//! through the SASL server mechanisms, the failed-login waits and lockouts of
//! `auth_guard` (the same wait for success and failure), the account recorded on
//! success.

use super::*;
use relaygate_transports::sasl::ServerMechanism;

impl Session {
    /// Runs one SASL step on the blocking pool, within the bounded password-check slots
    /// (a step may run PBKDF2 with hundreds of thousands of iterations).
    async fn sasl_step(
        &self,
        mut server: Box<dyn ServerMechanism>,
        f: impl FnOnce(&mut dyn ServerMechanism) -> ServerStep + Send + 'static,
    ) -> io::Result<(Box<dyn ServerMechanism>, ServerStep)> {
        let slots = Arc::clone(&self.settings.auth_guard.verify_slots);
        let _slot = slots
            .acquire_owned()
            .await
            .map_err(|_| io::Error::other("password check slots closed"))?;
        tokio::task::spawn_blocking(move || {
            let step = f(server.as_mut());
            (server, step)
        })
        .await
        .map_err(|e| io::Error::other(format!("SASL step failed: {e}")))
    }

    /// Runs an AUTH exchange (RFC 4954). `Ok(false)` ends the session.
    pub(super) async fn auth(
        &mut self,
        reader: &mut BufReader<Conn>,
        name: &str,
        initial: Option<String>,
    ) -> io::Result<bool> {
        let offered = self.offered_mechanisms();
        let refuse = match &self.phase {
            _ if offered.is_empty() => Some(Reply::new(502, "5.5.1", "AUTH not available")),
            Phase::Fresh => Some(Reply::new(503, "5.5.1", "send EHLO first")),
            Phase::Mail(..) => Some(Reply::new(
                503,
                "5.5.1",
                "AUTH not allowed during a transaction",
            )),
            Phase::Ready(_) if self.account.is_some() => {
                Some(Reply::new(503, "5.5.1", "already authenticated"))
            }
            Phase::Ready(_) => None,
        };
        if let Some(r) = refuse {
            self.reply(r);
            return Ok(true);
        }
        if self
            .settings
            .auth_guard
            .address_locked(self.peer.ip(), self.trusted)
        {
            tracing::info!(client = %self.peer, "submission: AUTH refused, the address is locked out");
            self.reply(locked_out());
            return Ok(true);
        }
        let Some(mechanism) = Mechanism::from_wire(name).filter(|m| offered.contains(m)) else {
            let plaintext_refused = matches!(
                Mechanism::from_wire(name),
                Some(Mechanism::Plain | Mechanism::Login)
            );
            self.reply(if plaintext_refused {
                // RFC 4954 §6: the mechanism needs an encrypted session.
                Reply::new(
                    538,
                    "5.7.11",
                    "encryption required for requested authentication mechanism",
                )
            } else {
                Reply::new(504, "5.5.4", "unrecognized authentication type")
            });
            return Ok(true);
        };
        let initial = match initial.as_deref().map(auth::decode) {
            None => None,
            Some(Some(bytes)) => Some(bytes),
            Some(None) => {
                self.reply(Reply::new(
                    501,
                    "5.5.2",
                    "cannot decode the initial response",
                ));
                return Ok(true);
            }
        };
        let snap = self.settings.snapshot.get();
        let store: Arc<dyn CredentialStore> = snap.accounts.clone();
        let channel = ServerChannel {
            tls_exporter: self.tls_exporter.clone(),
            plus_advertised: offered.iter().any(|m| m.is_plus()),
        };
        // Unknown users see a decoy with the iteration count real accounts use.
        let mut sasl = (*self.settings.sasl).clone();
        sasl.decoy_iterations = snap.accounts.typical_iterations();
        drop(snap);
        let server = new_server(mechanism, store, Arc::new(sasl), &channel);
        let (mut server, mut step) = self
            .sasl_step(server, move |s| s.start(initial.as_deref()))
            .await?;
        let mut line = Vec::with_capacity(512);
        loop {
            match step {
                ServerStep::Challenge(bytes) => {
                    self.out
                        .extend_from_slice(format!("334 {}\r\n", auth::encode(&bytes)).as_bytes());
                    self.flush(reader).await?;
                    let read = tokio::time::timeout(
                        self.settings.limits.command_timeout,
                        read_line(reader, &mut line, 12 * 1024),
                    )
                    .await;
                    match read {
                        Ok(Ok(Line::Ok)) => {}
                        Ok(Ok(Line::TooLong)) => {
                            self.reply(Reply::new(500, "5.5.6", "authentication line too long"));
                            return Ok(true);
                        }
                        Ok(Ok(Line::Eof)) | Ok(Err(_)) | Err(_) => return Ok(false),
                    }
                    let text = String::from_utf8_lossy(&line).to_string();
                    if text.trim() == "*" {
                        // RFC 4954 §4: the client cancelled.
                        self.reply(Reply::new(501, "5.0.0", "authentication cancelled"));
                        return Ok(true);
                    }
                    let Some(bytes) = auth::decode(&text) else {
                        self.reply(Reply::new(501, "5.5.2", "cannot decode the response"));
                        return Ok(true);
                    };
                    (server, step) = self.sasl_step(server, move |s| s.step(&bytes)).await?;
                }
                ServerStep::Success(who) => {
                    let settled = self.settings.auth_guard.settle(
                        self.peer.ip(),
                        self.trusted,
                        Some(&who.username),
                        true,
                    );
                    tokio::time::sleep(settled.delay).await;
                    if settled.locked {
                        tracing::info!(client = %self.peer, account = %who.username, mechanism = mechanism.as_str(), "submission: AUTH refused, locked out");
                        self.reply(locked_out());
                        return Ok(true);
                    }
                    metrics::counter!("relaygate_sasl_server_total", "mechanism" => mechanism.as_str(), "result" => "success").increment(1);
                    tracing::info!(client = %self.peer, account = %who.username, mechanism = mechanism.as_str(), "submission: authenticated");
                    self.account = Some(who.username);
                    self.reply(Reply::new(235, "2.7.0", "authentication succeeded"));
                    return Ok(true);
                }
                ServerStep::Failure(why) => {
                    let settled = self.settings.auth_guard.settle(
                        self.peer.ip(),
                        self.trusted,
                        why.username(),
                        false,
                    );
                    metrics::counter!("relaygate_sasl_server_total", "mechanism" => mechanism.as_str(), "result" => "failure").increment(1);
                    tracing::info!(client = %self.peer, mechanism = mechanism.as_str(), reason = %why, delay_ms = settled.delay.as_millis() as u64, "submission: authentication failed");
                    // The same wait as a success with this history would get.
                    tokio::time::sleep(settled.delay).await;
                    self.reply(if settled.locked {
                        locked_out()
                    } else {
                        // The same answer for an unknown user and a wrong password.
                        Reply::new(535, "5.7.8", "authentication credentials invalid")
                    });
                    return Ok(true);
                }
            }
        }
    }
}

/// The answer while a lockout holds (RFC 4954 §6: 454 4.7.0, temporary).
fn locked_out() -> Reply {
    Reply::new(454, "4.7.0", "too many failed logins, try again later")
}
