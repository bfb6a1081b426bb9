//! The SCRAM server (RFC 5802 §5, §7; RFC 7677), with channel binding `tls-exporter`
//! (RFC 9266) for the -PLUS variants.
//!
//! Exchange: client-first (`gs2-header n=user,r=cnonce`) → server-first
//! (`r=cnonce+snonce,s=salt,i=count`); client-final (`c=..,r=..,p=proof`) → server-final
//! (`v=signature`) as a challenge; the client's empty answer → success. A bad proof is
//! a [`ServerFailure`] at client-final.
//!
//! gs2 headers accepted: `n,,`, `y,,`, `p=tls-exporter,,`, each optionally with
//! `a=authzid` (which must equal the user). `y` is refused when we advertised -PLUS
//! (a downgrade), and `c=` must repeat the header and, for `p`, our own exporter value.
//! Unknown users get a decoy salt and run the whole exchange (see [`super::decoy`]).

use std::{fmt, sync::Arc};

use crate::ct::ct_eq;

use super::{
    credentials::CredentialStore,
    decoy,
    hash::{xor, ScramHash},
    mechanism::Mechanism,
    saslprep::{saslprep, unescape_username},
    scram_msg::{attributes, b64, b64_decode, expect_attr, new_nonce, valid_nonce},
    server::{
        Authenticated, ServerChannel, ServerFailure, ServerMechanism, ServerSettings, ServerStep,
    },
    verifier::ScramVerifier,
};

/// Channel binding as the client declared it in its gs2 header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gs2Flag {
    /// `n`: the client does not support channel binding.
    No,
    /// `y`: the client supports it but thinks we do not.
    ClientOnly,
    /// `p=tls-exporter`.
    TlsExporter,
}

/// What server-first committed to, for checking client-final.
struct Pending {
    username: String,
    verifier: ScramVerifier,
    known: bool,
    flag: Gs2Flag,
    /// The gs2 header exactly as received, which `c=` must repeat.
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

enum State {
    Initial,
    SentFirst(Box<Pending>),
    SentFinal { username: String },
    Over,
}

/// A SCRAM-SHA-1 / SCRAM-SHA-256 server, with or without channel binding.
pub struct ScramServer {
    mechanism: Mechanism,
    hash: ScramHash,
    store: Arc<dyn CredentialStore>,
    settings: Arc<ServerSettings>,
    channel: ServerChannel,
    /// Fixed server part of the nonce, for the RFC test vectors only.
    nonce_suffix: Option<String>,
    state: State,
}

impl ScramServer {
    /// A server for `hash`, the -PLUS mechanism when `plus`.
    pub fn new(
        hash: ScramHash,
        plus: bool,
        store: Arc<dyn CredentialStore>,
        settings: Arc<ServerSettings>,
        channel: ServerChannel,
    ) -> Self {
        ScramServer {
            mechanism: Mechanism::scram(hash, plus),
            hash,
            store,
            settings,
            channel,
            nonce_suffix: None,
            state: State::Initial,
        }
    }

    /// Fixes the server part of the nonce: for the RFC test vectors and the fuzz targets
    /// (`fuzz/`) only.
    #[doc(hidden)]
    pub fn with_nonce_suffix(mut self, suffix: &str) -> Self {
        self.nonce_suffix = Some(suffix.to_string());
        self
    }

    fn fail(&mut self, failure: ServerFailure) -> ServerStep {
        self.state = State::Over;
        ServerStep::Failure(failure)
    }

    fn malformed(&self, reason: impl Into<String>) -> ServerFailure {
        ServerFailure::Malformed {
            mechanism: self.mechanism,
            reason: reason.into(),
        }
    }

    /// Parses client-first and builds server-first.
    fn client_first(&self, message: &[u8]) -> Result<Pending, ServerFailure> {
        let mechanism = self.mechanism;
        let text = std::str::from_utf8(message).map_err(|_| self.malformed("not UTF-8"))?;
        // RFC 5802 §7: gs2-header = gs2-cbind-flag "," [ authzid ] ","
        let (flag, rest) = text
            .split_once(',')
            .ok_or_else(|| self.malformed("no gs2 header"))?;
        let (authzid, bare) = rest
            .split_once(',')
            .ok_or_else(|| self.malformed("no gs2 header"))?;
        let gs2_header = &text[..flag.len() + authzid.len() + 2];
        let flag = self.gs2_flag(flag)?;
        let authzid = match authzid {
            "" => None,
            a => {
                let escaped = a
                    .strip_prefix("a=")
                    .ok_or_else(|| self.malformed("the gs2 authzid must be a=name"))?;
                Some(
                    unescape_username(escaped)
                        .ok_or(ServerFailure::InvalidUsername { mechanism })?,
                )
            }
        };

        let attrs = attributes(bare).map_err(|r| self.malformed(r))?;
        if let Some(('m', extension)) = attrs.first() {
            // RFC 5802 §5.1: an "m" attribute MUST cause authentication failure.
            return Err(ServerFailure::ExtensionNotSupported {
                mechanism,
                extension: extension.to_string(),
            });
        }
        let name = expect_attr(&attrs, 0, 'n').map_err(|r| self.malformed(r))?;
        let client_nonce = expect_attr(&attrs, 1, 'r').map_err(|r| self.malformed(r))?;
        // RFC 5802 §5.1: "=" not followed by "2C" or "3D" MUST fail.
        let username = unescape_username(name)
            .and_then(|n| saslprep(&n, "username").ok())
            .filter(|n| !n.is_empty())
            .ok_or(ServerFailure::InvalidUsername { mechanism })?;
        if !valid_nonce(client_nonce) {
            return Err(self.malformed("the client nonce is empty or has invalid characters"));
        }
        if let Some(authzid) = authzid {
            if authzid != username {
                return Err(ServerFailure::AuthzidRefused {
                    mechanism,
                    authcid: username,
                    authzid,
                });
            }
        }

        let found = self
            .store
            .lookup(&username)
            .and_then(|creds| creds.scram(self.hash).cloned());
        let known = found.is_some();
        let verifier =
            found.unwrap_or_else(|| decoy::verifier(&self.settings, self.hash, &username));
        // RFC 5802 §5.1: the server nonce starts with the client's and adds its own.
        let suffix = self.nonce_suffix.clone().unwrap_or_else(new_nonce);
        let nonce = format!("{client_nonce}{suffix}");
        let server_first = format!(
            "r={nonce},s={},i={}",
            b64(&verifier.salt),
            verifier.iterations
        );
        Ok(Pending {
            username,
            verifier,
            known,
            flag,
            gs2_header: gs2_header.to_string(),
            client_first_bare: bare.to_string(),
            server_first,
            nonce,
        })
    }

    /// Checks the gs2 channel binding flag against the mechanism and this connection.
    fn gs2_flag(&self, flag: &str) -> Result<Gs2Flag, ServerFailure> {
        let mechanism = self.mechanism;
        let plus = mechanism.is_plus();
        match flag {
            "n" | "y" if plus => Err(ServerFailure::ChannelBindingRequired { mechanism }),
            "n" => Ok(Gs2Flag::No),
            // RFC 5802 §6: "y" when the server did advertise -PLUS means the client saw a
            // list stripped of it: the server MUST fail the authentication.
            "y" if self.channel.plus_advertised => Err(ServerFailure::Downgrade { mechanism }),
            "y" => Ok(Gs2Flag::ClientOnly),
            _ => match flag.strip_prefix("p=") {
                // "p" belongs to the -PLUS mechanisms only.
                Some(_) if !plus => Err(ServerFailure::ChannelBindingNotSupported { mechanism }),
                Some("tls-exporter") if self.channel.tls_exporter.is_some() => {
                    Ok(Gs2Flag::TlsExporter)
                }
                Some("tls-exporter") => {
                    Err(ServerFailure::ChannelBindingNotSupported { mechanism })
                }
                Some(other) => Err(ServerFailure::UnsupportedChannelBindingType {
                    mechanism,
                    cb_type: other.to_string(),
                }),
                None => Err(self.malformed(format!("invalid gs2 flag {flag:?}"))),
            },
        }
    }

    /// Checks client-final and builds server-final.
    fn client_final(&self, message: &[u8], p: &Pending) -> Result<String, ServerFailure> {
        let mechanism = self.mechanism;
        let text = std::str::from_utf8(message).map_err(|_| self.malformed("not UTF-8"))?;
        let attrs = attributes(text).map_err(|r| self.malformed(r))?;
        let cbind = expect_attr(&attrs, 0, 'c').map_err(|r| self.malformed(r))?;
        let nonce = expect_attr(&attrs, 1, 'r').map_err(|r| self.malformed(r))?;
        let proof = match attrs.last() {
            Some(('p', proof)) if attrs.len() >= 3 => *proof,
            _ => return Err(self.malformed("the proof p= must come last")),
        };
        // The proof's value has no ",", so the last ",p=" starts it.
        let without_proof = text
            .rfind(",p=")
            .map(|i| &text[..i])
            .ok_or_else(|| self.malformed("no proof"))?;

        // RFC 5802 §7: c= is base64(gs2-header [cbind-data]); the server MUST check it.
        let cbind = b64_decode(cbind).ok_or_else(|| self.malformed("c= is not base64"))?;
        let Some(cb_data) = cbind.strip_prefix(p.gs2_header.as_bytes()) else {
            return Err(ServerFailure::ChannelBindingMismatch { mechanism });
        };
        let binding_ok = match (p.flag, &self.channel.tls_exporter) {
            (Gs2Flag::TlsExporter, Some(ours)) => ct_eq(cb_data, ours),
            (Gs2Flag::TlsExporter, None) => false,
            (Gs2Flag::No | Gs2Flag::ClientOnly, _) => cb_data.is_empty(),
        };
        if !binding_ok {
            return Err(ServerFailure::ChannelBindingMismatch { mechanism });
        }
        if nonce != p.nonce {
            return Err(ServerFailure::NonceMismatch { mechanism });
        }
        let proof = b64_decode(proof)
            .filter(|proof| proof.len() == self.hash.output_len())
            .ok_or_else(|| self.malformed("the proof is not base64 of the hash size"))?;

        // RFC 5802 §3: ClientKey = ClientProof XOR HMAC(StoredKey, AuthMessage), and the
        // server checks H(ClientKey) against StoredKey.
        let hash = self.hash;
        let v = &p.verifier;
        let auth_message = format!("{},{},{without_proof}", p.client_first_bare, p.server_first);
        let client_signature = hash.hmac(&v.stored_key, &[auth_message.as_bytes()]);
        let client_key = xor(&proof, &client_signature);
        let proof_ok = ct_eq(&hash.h(&client_key), &v.stored_key);
        let server_signature = hash.hmac(&v.server_key, &[auth_message.as_bytes()]);
        if !p.known {
            return Err(ServerFailure::UnknownUser {
                mechanism,
                username: p.username.clone(),
            });
        }
        if !proof_ok {
            return Err(ServerFailure::InvalidCredentials {
                mechanism,
                username: p.username.clone(),
            });
        }
        Ok(format!("v={}", b64(&server_signature)))
    }
}

impl ServerMechanism for ScramServer {
    fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    fn start(&mut self, initial_response: Option<&[u8]>) -> ServerStep {
        match initial_response {
            // No initial response: an empty challenge asks for client-first.
            None => ServerStep::Challenge(Vec::new()),
            Some(client_first) => self.step(client_first),
        }
    }

    fn step(&mut self, response: &[u8]) -> ServerStep {
        let mechanism = self.mechanism;
        match std::mem::replace(&mut self.state, State::Over) {
            State::Initial => match self.client_first(response) {
                Ok(pending) => {
                    let challenge = pending.server_first.clone().into_bytes();
                    self.state = State::SentFirst(Box::new(pending));
                    ServerStep::Challenge(challenge)
                }
                Err(failure) => self.fail(failure),
            },
            State::SentFirst(pending) => match self.client_final(response, &pending) {
                Ok(server_final) => {
                    self.state = State::SentFinal {
                        username: pending.username,
                    };
                    ServerStep::Challenge(server_final.into_bytes())
                }
                Err(failure) => self.fail(failure),
            },
            // The client acknowledges server-final with an empty response.
            State::SentFinal { username } if response.is_empty() => {
                ServerStep::Success(Authenticated {
                    username,
                    mechanism,
                })
            }
            State::SentFinal { .. } => {
                let failure = self.malformed("expected an empty response after server-final");
                self.fail(failure)
            }
            State::Over => self.fail(ServerFailure::ExchangeOver { mechanism }),
        }
    }
}

impl fmt::Debug for ScramServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Initial => "initial",
            State::SentFirst(_) => "sent server-first",
            State::SentFinal { .. } => "sent server-final",
            State::Over => "over",
        };
        f.debug_struct("ScramServer")
            .field("mechanism", &self.mechanism)
            .field("channel", &self.channel)
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sasl::{
        credentials::StoredCredentials,
        tests::{ScramVector, RFC5802, RFC7677},
    };
    use std::collections::HashMap;

    /// What a table row expects of the failure.
    type Check = fn(&ServerFailure) -> bool;

    fn store_for(v: &ScramVector) -> Arc<dyn CredentialStore> {
        let salt = b64_decode(v.salt).unwrap();
        let verifier = ScramVerifier::from_password(v.hash, "pencil", &salt, 4096).unwrap();
        let creds = StoredCredentials {
            scram_sha256: (v.hash == ScramHash::Sha256).then(|| verifier.clone()),
            scram_sha1: (v.hash == ScramHash::Sha1).then_some(verifier),
            cram_md5: None,
        };
        Arc::new(HashMap::from([("user".to_string(), creds)]))
    }

    fn server(v: &ScramVector, channel: ServerChannel) -> ScramServer {
        let plus = channel.tls_exporter.is_some() && channel.plus_advertised;
        ScramServer::new(
            v.hash,
            plus,
            store_for(v),
            Arc::new(ServerSettings::new("mx.example", [3; 32])),
            channel,
        )
        .with_nonce_suffix(v.server_nonce_suffix)
    }

    fn challenge(step: ServerStep) -> String {
        match step {
            ServerStep::Challenge(c) => String::from_utf8(c).unwrap(),
            other => panic!("expected a challenge, got {other:?}"),
        }
    }

    fn failure(step: ServerStep) -> ServerFailure {
        match step {
            ServerStep::Failure(f) => f,
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[test]
    fn rfc_vectors_reproduced_exactly() {
        for v in [&RFC5802, &RFC7677] {
            let mut s = server(v, ServerChannel::default());
            assert_eq!(
                challenge(s.start(Some(v.client_first.as_bytes()))),
                v.server_first
            );
            assert_eq!(challenge(s.step(v.client_final.as_bytes())), v.server_final);
            assert_eq!(
                s.step(b""),
                ServerStep::Success(Authenticated {
                    username: "user".into(),
                    mechanism: s.mechanism()
                })
            );
            assert!(matches!(
                failure(s.step(b"")),
                ServerFailure::ExchangeOver { .. }
            ));
        }
    }

    #[test]
    fn without_initial_response() {
        let mut s = server(&RFC5802, ServerChannel::default());
        assert_eq!(s.start(None), ServerStep::Challenge(Vec::new()));
        assert_eq!(
            challenge(s.step(RFC5802.client_first.as_bytes())),
            RFC5802.server_first
        );
    }

    #[test]
    fn wrong_proof() {
        let mut s = server(&RFC7677, ServerChannel::default());
        s.start(Some(RFC7677.client_first.as_bytes()));
        let bad = RFC7677.client_final.replace("p=dHzb", "p=dHzc");
        let f = failure(s.step(bad.as_bytes()));
        assert_eq!(
            f,
            ServerFailure::InvalidCredentials {
                mechanism: Mechanism::ScramSha256,
                username: "user".into()
            }
        );
        assert_eq!(f.scram_error(), "invalid-proof");
    }

    #[test]
    fn client_final_checks() {
        let cases: &[(&str, Check)] = &[
            // Nonce of another exchange.
            ("c=biws,r=fyko+d2lbbFgONRv9qkxdawLXXX,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=", |f| matches!(f, ServerFailure::NonceMismatch { .. })),
            // c= says "y" where client-first said "n".
            ("c=eSws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=", |f| matches!(f, ServerFailure::ChannelBindingMismatch { .. })),
            // Binding data appended to an "n" header.
            ("c=biwsAAAA,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=", |f| matches!(f, ServerFailure::ChannelBindingMismatch { .. })),
            // Proof not last / missing / wrong size.
            ("c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j", |f| matches!(f, ServerFailure::Malformed { .. })),
            ("c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=AAAA", |f| matches!(f, ServerFailure::Malformed { .. })),
            ("c=biws,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=,r=x", |f| matches!(f, ServerFailure::Malformed { .. })),
            ("garbage", |f| matches!(f, ServerFailure::Malformed { .. })),
        ];
        for (client_final, check) in cases {
            let mut s = server(&RFC5802, ServerChannel::default());
            s.start(Some(RFC5802.client_first.as_bytes()));
            let f = failure(s.step(client_final.as_bytes()));
            assert!(check(&f), "{client_final}: {f:?}");
        }
        // Extensions before the proof are allowed and part of the AuthMessage.
        let mut s = server(&RFC5802, ServerChannel::default());
        s.start(Some(RFC5802.client_first.as_bytes()));
        let with_ext = RFC5802.client_final.replace(",p=", ",x=1,p=");
        assert!(matches!(
            failure(s.step(with_ext.as_bytes())),
            ServerFailure::InvalidCredentials { .. }
        ));
    }

    #[test]
    fn client_first_checks() {
        let ch = ServerChannel::default();
        let cases: &[(&str, Check)] = &[
            ("n,,n=us=er,r=abc", |f| {
                matches!(f, ServerFailure::InvalidUsername { .. })
            }),
            ("n,,n=,r=abc", |f| {
                matches!(f, ServerFailure::InvalidUsername { .. })
            }),
            ("n,,m=ext,n=user,r=abc", |f| {
                matches!(f, ServerFailure::ExtensionNotSupported { .. })
            }),
            ("n,a=other,n=user,r=abc", |f| {
                matches!(f, ServerFailure::AuthzidRefused { .. })
            }),
            ("n,x=user,n=user,r=abc", |f| {
                matches!(f, ServerFailure::Malformed { .. })
            }),
            ("n,a=us=er,n=user,r=abc", |f| {
                matches!(f, ServerFailure::InvalidUsername { .. })
            }),
            ("x,,n=user,r=abc", |f| {
                matches!(f, ServerFailure::Malformed { .. })
            }),
            ("n,,n=user", |f| {
                matches!(f, ServerFailure::Malformed { .. })
            }),
            ("n,,n=user,r=a b", |f| {
                matches!(f, ServerFailure::Malformed { .. })
            }),
            ("n,,r=abc,n=user", |f| {
                matches!(f, ServerFailure::Malformed { .. })
            }),
            ("n,n=user,r=abc", |f| {
                matches!(f, ServerFailure::Malformed { .. })
            }),
            ("", |f| matches!(f, ServerFailure::Malformed { .. })),
            // "p" on a mechanism without -PLUS.
            ("p=tls-exporter,,n=user,r=abc", |f| {
                matches!(f, ServerFailure::ChannelBindingNotSupported { .. })
            }),
        ];
        for (client_first, check) in cases {
            let mut s = server(&RFC5802, ch.clone());
            let f = failure(s.start(Some(client_first.as_bytes())));
            assert!(check(&f), "{client_first}: {f:?}");
        }
        // authzid equal to the user is fine.
        let mut s = server(&RFC5802, ch);
        assert!(matches!(
            s.start(Some(b"n,a=user,n=user,r=abc")),
            ServerStep::Challenge(_)
        ));
    }

    #[test]
    fn y_flag_downgrade_detection() {
        // We advertised -PLUS (and have TLS 1.3): "y" means someone stripped it.
        let advertised = ServerChannel {
            tls_exporter: Some(vec![1; 32]),
            plus_advertised: true,
        };
        let mut s = ScramServer::new(
            ScramHash::Sha256,
            false,
            store_for(&RFC7677),
            Arc::new(ServerSettings::new("h", [0; 32])),
            advertised,
        );
        let f = failure(s.start(Some(b"y,,n=user,r=abc")));
        assert_eq!(
            f,
            ServerFailure::Downgrade {
                mechanism: Mechanism::ScramSha256
            }
        );
        assert_eq!(f.scram_error(), "server-does-support-channel-binding");
        // Not advertised: "y" is an honest client.
        let mut s = server(&RFC7677, ServerChannel::default());
        assert!(matches!(
            s.start(Some(b"y,,n=user,r=abc")),
            ServerStep::Challenge(_)
        ));
    }

    #[test]
    fn plus_requires_p_and_our_binding() {
        let ch = ServerChannel {
            tls_exporter: Some(vec![1; 32]),
            plus_advertised: true,
        };
        let new = |ch: ServerChannel| {
            ScramServer::new(
                ScramHash::Sha256,
                true,
                store_for(&RFC7677),
                Arc::new(ServerSettings::new("h", [0; 32])),
                ch,
            )
        };
        for (first, check) in [
            (
                "n,,n=user,r=abc",
                ServerFailure::ChannelBindingRequired {
                    mechanism: Mechanism::ScramSha256Plus,
                },
            ),
            (
                "y,,n=user,r=abc",
                ServerFailure::ChannelBindingRequired {
                    mechanism: Mechanism::ScramSha256Plus,
                },
            ),
            (
                "p=tls-unique,,n=user,r=abc",
                ServerFailure::UnsupportedChannelBindingType {
                    mechanism: Mechanism::ScramSha256Plus,
                    cb_type: "tls-unique".into(),
                },
            ),
        ] {
            assert_eq!(
                failure(new(ch.clone()).start(Some(first.as_bytes()))),
                check,
                "{first}"
            );
        }
        // -PLUS on a connection without an exporter (no TLS 1.3).
        let mut s = new(ServerChannel::default());
        assert!(matches!(
            failure(s.start(Some(b"p=tls-exporter,,n=user,r=abc"))),
            ServerFailure::ChannelBindingNotSupported { .. }
        ));
    }

    #[test]
    fn unknown_user_gets_a_decoy_server_first() {
        let settings = Arc::new(ServerSettings::new("h", [5; 32]));
        let first = |name: &str| {
            let mut s = ScramServer::new(
                ScramHash::Sha256,
                false,
                store_for(&RFC7677),
                Arc::clone(&settings),
                ServerChannel::default(),
            );
            let text = challenge(s.start(Some(format!("n,,n={name},r=abc").as_bytes())));
            (s, text)
        };
        let (mut s, text) = first("nobody");
        // Well-formed: r= extends the client nonce, s= is 16 bytes of base64, i=4096.
        let attrs = attributes(&text).unwrap();
        assert_eq!(attrs.len(), 3);
        assert!(attrs[0].1.starts_with("abc") && attrs[0].1.len() > 3 && valid_nonce(attrs[0].1));
        assert_eq!(b64_decode(attrs[1].1).unwrap().len(), 16);
        assert_eq!(attrs[2], ('i', "4096"));
        // Stable for the same name, different for another.
        let salt = |t: &str| attributes(t).unwrap()[1].1.to_string();
        assert_eq!(salt(&first("nobody").1), salt(&text));
        assert_ne!(salt(&first("somebody").1), salt(&text));
        // The exchange runs to client-final and fails there like a wrong password.
        let nonce = attrs[0].1;
        let client_final = format!("c=biws,r={nonce},p={}", b64(&[0u8; 32]));
        let f = failure(s.step(client_final.as_bytes()));
        assert_eq!(
            f,
            ServerFailure::UnknownUser {
                mechanism: Mechanism::ScramSha256,
                username: "nobody".into()
            }
        );
        assert!(f.is_bad_credentials());
        // An existing user without a SHA-1 verifier gets the decoy for SCRAM-SHA-1.
        let mut s = ScramServer::new(
            ScramHash::Sha1,
            false,
            store_for(&RFC7677),
            settings,
            ServerChannel::default(),
        );
        assert!(matches!(
            s.start(Some(b"n,,n=user,r=abc")),
            ServerStep::Challenge(_)
        ));
    }

    #[test]
    fn escaped_username_is_looked_up_unescaped() {
        let salt = b64_decode(RFC7677.salt).unwrap();
        let verifier =
            ScramVerifier::from_password(ScramHash::Sha256, "pencil", &salt, 4096).unwrap();
        let creds = StoredCredentials {
            scram_sha256: Some(verifier),
            ..Default::default()
        };
        let store: Arc<dyn CredentialStore> =
            Arc::new(HashMap::from([("a,b=c".to_string(), creds)]));
        let mut s = ScramServer::new(
            ScramHash::Sha256,
            false,
            store,
            Arc::new(ServerSettings::new("h", [0; 32])),
            ServerChannel::default(),
        );
        let text = challenge(s.start(Some(b"n,,n=a=2Cb=3Dc,r=abc")));
        assert!(text.contains(&format!("s={}", RFC7677.salt)), "{text}");
    }
}
