//! The SCRAM client (RFC 5802 §5, §7; RFC 7677 for SHA-256), with the checks a client
//! owes its user: the server nonce extends ours, the salt is sane, the iteration count
//! is within bounds, unknown mandatory extensions are refused, server errors are
//! surfaced, and the server signature is verified (in constant time) before success is
//! believed.
//!
//! Exchange: `initial()` gives client-first (`gs2-header n=user,r=cnonce`); `step` with
//! server-first (`r=cnonce+snonce,s=salt,i=count`) gives client-final (`c=..,r=..,p=proof`);
//! `step` with server-final (`v=signature` or `e=error`) verifies and gives an empty
//! `Step::Done`. `finish` accepts the server-final as additional data of the success
//! reply as well.

use std::{fmt, sync::Arc};

use crate::ct::ct_eq;

use super::{
    cache::SaltedCache,
    channel_binding::ChannelBinding,
    client::{check_binding, ClientMechanism, Step},
    error::SaslError,
    hash::{xor, ScramHash},
    mechanism::Mechanism,
    saslprep::{escape_username, saslprep},
    scram_msg::{attributes, b64, b64_decode, expect_attr, new_nonce, parse_count, valid_nonce},
    verifier::check_iterations,
};

const SERVER_FIRST: &str = "server-first-message";
const SERVER_FINAL: &str = "server-final-message";

enum State {
    Initial,
    SentFirst { client_first_bare: String },
    SentFinal { server_signature: Vec<u8> },
    Done,
    Failed,
}

/// A SCRAM-SHA-1 / SCRAM-SHA-256 client, with or without channel binding.
pub struct ScramClient {
    mechanism: Mechanism,
    hash: ScramHash,
    binding: ChannelBinding,
    /// SASLprep'd and escaped (RFC 5802 §5.1 `saslname`).
    username: String,
    /// SASLprep'd; dropped once the proof is computed.
    password: String,
    client_nonce: String,
    cache: Option<Arc<SaltedCache>>,
    state: State,
}

impl ScramClient {
    /// A client for `hash`; the mechanism is the -PLUS one when `binding` is
    /// [`ChannelBinding::TlsExporter`]. User name and password are SASLprep'd here
    /// (RFC 5802 §5.1 "SHOULD prepare the user name", §2.2 `Normalize` for the password).
    pub fn new(
        hash: ScramHash,
        username: &str,
        password: &str,
        binding: ChannelBinding,
        cache: Option<Arc<SaltedCache>>,
    ) -> Result<Self, SaslError> {
        Self::with_client_nonce(hash, username, password, binding, cache, new_nonce())
    }

    /// [`new`](Self::new) with a given client nonce: for the RFC test vectors and the
    /// fuzz targets (`fuzz/`) only.
    #[doc(hidden)]
    pub fn with_client_nonce(
        hash: ScramHash,
        username: &str,
        password: &str,
        binding: ChannelBinding,
        cache: Option<Arc<SaltedCache>>,
        client_nonce: String,
    ) -> Result<Self, SaslError> {
        let plus = matches!(binding, ChannelBinding::TlsExporter(_));
        let mechanism = Mechanism::scram(hash, plus);
        check_binding(mechanism, &binding)?;
        Ok(ScramClient {
            mechanism,
            hash,
            binding,
            username: escape_username(&saslprep(username, "username")?),
            password: saslprep(password, "password")?,
            client_nonce,
            cache,
            state: State::Initial,
        })
    }

    fn client_first_bare(&self) -> String {
        format!("n={},r={}", self.username, self.client_nonce)
    }

    fn client_first(&mut self) -> Vec<u8> {
        let bare = self.client_first_bare();
        let message = format!("{}{}", self.binding.gs2_header(), bare);
        self.state = State::SentFirst {
            client_first_bare: bare,
        };
        message.into_bytes()
    }

    fn malformed(&self, message: &'static str, reason: impl Into<String>) -> SaslError {
        SaslError::Malformed {
            mechanism: self.mechanism,
            message,
            reason: reason.into(),
        }
    }

    /// Checks server-first and computes client-final.
    fn server_first(
        &mut self,
        message: &[u8],
        client_first_bare: &str,
    ) -> Result<Vec<u8>, SaslError> {
        let mechanism = self.mechanism;
        let server_first =
            std::str::from_utf8(message).map_err(|_| self.malformed(SERVER_FIRST, "not UTF-8"))?;
        let attrs = attributes(server_first).map_err(|r| self.malformed(SERVER_FIRST, r))?;
        if let Some(('m', extension)) = attrs.first() {
            // RFC 5802 §5.1: "m" MUST cause authentication failure.
            return Err(SaslError::MandatoryExtension {
                mechanism,
                extension: extension.to_string(),
            });
        }
        let field =
            |i, name| expect_attr(&attrs, i, name).map_err(|r| self.malformed(SERVER_FIRST, r));
        let nonce = field(0, 'r')?;
        let salt_text = field(1, 's')?;
        let count_text = field(2, 'i')?;
        // Later attributes are optional extensions, which a client ignores (RFC 5802 §7).
        if !valid_nonce(nonce) {
            return Err(self.malformed(
                SERVER_FIRST,
                "the nonce has characters outside %x21-7E or a \",\"",
            ));
        }
        // RFC 5802 §5.1: the server's nonce MUST start with the client's nonce; it must
        // also add something, or the server contributed no freshness.
        if !nonce.starts_with(&self.client_nonce) || nonce.len() <= self.client_nonce.len() {
            return Err(SaslError::NonceNotExtended {
                mechanism,
                client_nonce: self.client_nonce.clone(),
                server_nonce: nonce.to_string(),
            });
        }
        let salt = b64_decode(salt_text).ok_or_else(|| SaslError::InvalidSalt {
            mechanism,
            salt: salt_text.to_string(),
            reason: "not valid base64",
        })?;
        if salt.is_empty() {
            return Err(SaslError::InvalidSalt {
                mechanism,
                salt: salt_text.to_string(),
                reason: "empty",
            });
        }
        let iterations = parse_count(count_text).ok_or_else(|| {
            self.malformed(
                SERVER_FIRST,
                format!("iteration count {count_text:?} is not a number"),
            )
        })?;
        check_iterations(mechanism, iterations)?;

        let hash = self.hash;
        let password = std::mem::take(&mut self.password);
        let salted = match &self.cache {
            Some(cache) => cache.salted_password(hash, &password, &salt, iterations),
            None => hash.hi(password.as_bytes(), &salt, iterations),
        };
        drop(password);
        // RFC 5802 §7: c= is base64 of the gs2 header plus, for "p", the binding data.
        let without_proof = format!("c={},r={}", b64(&self.binding.cbind_input()), nonce);
        // RFC 5802 §3: AuthMessage, ClientProof and ServerSignature.
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let client_key = hash.hmac(&salted, &[b"Client Key"]);
        let stored_key = hash.h(&client_key);
        let client_signature = hash.hmac(&stored_key, &[auth_message.as_bytes()]);
        let proof = xor(&client_key, &client_signature);
        let server_key = hash.hmac(&salted, &[b"Server Key"]);
        let server_signature = hash.hmac(&server_key, &[auth_message.as_bytes()]);
        self.state = State::SentFinal { server_signature };
        Ok(format!("{without_proof},p={}", b64(&proof)).into_bytes())
    }

    /// Checks server-final.
    fn server_final(&self, message: &[u8], expected: &[u8]) -> Result<(), SaslError> {
        let mechanism = self.mechanism;
        let text =
            std::str::from_utf8(message).map_err(|_| self.malformed(SERVER_FINAL, "not UTF-8"))?;
        let attrs = attributes(text).map_err(|r| self.malformed(SERVER_FINAL, r))?;
        match attrs.first() {
            // RFC 5802 §7: server-final-message = (server-error / verifier) ["," extensions]
            Some(('e', error)) => Err(SaslError::ServerError {
                mechanism,
                error: error.to_string(),
            }),
            Some(('v', signature)) => {
                let signature = b64_decode(signature)
                    .ok_or_else(|| self.malformed(SERVER_FINAL, "the signature is not base64"))?;
                // RFC 5802 §5.1: the client MUST verify the ServerSignature.
                if ct_eq(&signature, expected) {
                    Ok(())
                } else {
                    Err(SaslError::BadServerSignature { mechanism })
                }
            }
            _ => Err(self.malformed(SERVER_FINAL, "expected v= or e=")),
        }
    }
}

impl ClientMechanism for ScramClient {
    fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    fn initial(&mut self) -> Option<Vec<u8>> {
        match self.state {
            State::Initial => Some(self.client_first()),
            State::SentFirst { .. } | State::SentFinal { .. } | State::Done | State::Failed => None,
        }
    }

    fn step(&mut self, challenge: &[u8]) -> Result<Step, SaslError> {
        let mechanism = self.mechanism;
        match std::mem::replace(&mut self.state, State::Failed) {
            // No initial response was sent: the server's empty challenge asks for it.
            State::Initial if challenge.is_empty() => Ok(Step::Continue(self.client_first())),
            State::Initial => Err(SaslError::UnexpectedChallenge {
                mechanism,
                stage: "before the client-first-message",
            }),
            State::SentFirst { client_first_bare } => self
                .server_first(challenge, &client_first_bare)
                .map(Step::Continue),
            State::SentFinal { server_signature } => {
                self.server_final(challenge, &server_signature)?;
                self.state = State::Done;
                Ok(Step::Done(Vec::new()))
            }
            State::Done => {
                self.state = State::Done;
                Err(SaslError::UnexpectedChallenge {
                    mechanism,
                    stage: "after the exchange completed",
                })
            }
            State::Failed => Err(SaslError::State {
                mechanism,
                reason: "used again after an error",
            }),
        }
    }

    fn finish(&mut self, additional_data: Option<&[u8]>) -> Result<(), SaslError> {
        let mechanism = self.mechanism;
        match std::mem::replace(&mut self.state, State::Failed) {
            State::Done => {
                self.state = State::Done;
                Ok(())
            }
            // Server-final carried as additional data with success (RFC 4422 §5).
            State::SentFinal { server_signature } => match additional_data {
                Some(data) if !data.is_empty() => {
                    self.server_final(data, &server_signature)?;
                    self.state = State::Done;
                    Ok(())
                }
                _ => Err(SaslError::PrematureSuccess { mechanism }),
            },
            State::Initial | State::SentFirst { .. } => {
                Err(SaslError::PrematureSuccess { mechanism })
            }
            State::Failed => Err(SaslError::State {
                mechanism,
                reason: "used again after an error",
            }),
        }
    }
}

impl fmt::Debug for ScramClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Initial => "initial",
            State::SentFirst { .. } => "sent client-first",
            State::SentFinal { .. } => "sent client-final",
            State::Done => "done",
            State::Failed => "failed",
        };
        f.debug_struct("ScramClient")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("binding", &self.binding)
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sasl::tests::{ScramVector, RFC5802, RFC7677};

    fn client(v: &ScramVector, password: &str) -> ScramClient {
        ScramClient::with_client_nonce(
            v.hash,
            "user",
            password,
            ChannelBinding::None,
            None,
            v.client_nonce.to_string(),
        )
        .unwrap()
    }

    /// Runs the vector up to client-final and returns the client.
    fn run_to_final(v: &ScramVector, password: &str) -> (ScramClient, Vec<u8>) {
        let mut c = client(v, password);
        assert_eq!(c.initial().unwrap(), v.client_first.as_bytes());
        let Step::Continue(client_final) = c.step(v.server_first.as_bytes()).unwrap() else {
            panic!("client-final must continue")
        };
        (c, client_final)
    }

    #[test]
    fn rfc_vectors_reproduced_exactly() {
        for v in [&RFC5802, &RFC7677] {
            let (mut c, client_final) = run_to_final(v, "pencil");
            assert_eq!(String::from_utf8(client_final).unwrap(), v.client_final);
            assert_eq!(
                c.step(v.server_final.as_bytes()).unwrap(),
                Step::Done(Vec::new())
            );
            c.finish(None).unwrap();
            assert!(matches!(
                c.step(b"more"),
                Err(SaslError::UnexpectedChallenge { .. })
            ));
        }
    }

    #[test]
    fn server_final_as_success_data() {
        let (mut c, _) = run_to_final(&RFC7677, "pencil");
        c.finish(Some(RFC7677.server_final.as_bytes())).unwrap();
    }

    #[test]
    fn empty_first_challenge_gets_client_first() {
        let mut c = client(&RFC5802, "pencil");
        assert_eq!(
            c.step(b"").unwrap(),
            Step::Continue(RFC5802.client_first.as_bytes().to_vec())
        );
        assert!(c.initial().is_none());
    }

    #[test]
    fn bad_server_signature() {
        let (mut c, _) = run_to_final(&RFC7677, "pencil");
        let forged = format!("v={}", b64(&[0u8; 32]));
        assert_eq!(
            c.step(forged.as_bytes()),
            Err(SaslError::BadServerSignature {
                mechanism: Mechanism::ScramSha256
            })
        );
        // And a failed client stays failed.
        assert!(matches!(
            c.step(RFC7677.server_final.as_bytes()),
            Err(SaslError::State { .. })
        ));
        // The SHA-1 signature under the SHA-256 mechanism does not verify either.
        let (mut c, _) = run_to_final(&RFC7677, "pencil");
        assert!(matches!(
            c.step(RFC5802.server_final.as_bytes()),
            Err(SaslError::BadServerSignature { .. })
        ));
    }

    #[test]
    fn wrong_password_gives_a_different_proof() {
        let (_, client_final) = run_to_final(&RFC7677, "pencil2");
        assert_ne!(client_final, RFC7677.client_final.as_bytes());
    }

    #[test]
    fn success_without_signature_is_refused() {
        let (mut c, _) = run_to_final(&RFC7677, "pencil");
        assert_eq!(
            c.finish(None),
            Err(SaslError::PrematureSuccess {
                mechanism: Mechanism::ScramSha256
            })
        );
        let mut c = client(&RFC7677, "pencil");
        c.initial();
        assert!(matches!(
            c.finish(None),
            Err(SaslError::PrematureSuccess { .. })
        ));
    }

    fn server_first_error(server_first: &str) -> SaslError {
        let mut c = client(&RFC5802, "pencil");
        c.initial();
        c.step(server_first.as_bytes()).unwrap_err()
    }

    #[test]
    fn server_nonce_must_extend_ours() {
        for nonce in [
            "fyko+d2lbbFgONRv9qkxdawL",     // adds nothing
            "XXXX+d2lbbFgONRv9qkxdawL3rfc", // does not start with ours
            "3rfcNHYJY1ZVvWVs7j",           // only the server part
        ] {
            let err = server_first_error(&format!("r={nonce},s=QSXCR+Q6sek8bf92,i=4096"));
            assert!(
                matches!(err, SaslError::NonceNotExtended { .. }),
                "{nonce}: {err}"
            );
        }
        let err = server_first_error("r=fyko+d2lbbFgONRv9qkxdawL a,s=QSXCR+Q6sek8bf92,i=4096");
        assert!(matches!(err, SaslError::Malformed { .. }), "{err}");
    }

    #[test]
    fn iteration_bounds() {
        let r = "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92";
        assert_eq!(
            server_first_error(&format!("{r},i=4095")),
            SaslError::IterationsTooLow {
                mechanism: Mechanism::ScramSha1,
                iterations: 4095,
                minimum: 4096
            }
        );
        assert_eq!(
            server_first_error(&format!("{r},i=600001")),
            SaslError::IterationsTooHigh {
                mechanism: Mechanism::ScramSha1,
                iterations: 600_001,
                maximum: 600_000
            }
        );
        assert!(matches!(
            server_first_error(&format!("{r},i=123456789012345")),
            SaslError::IterationsTooHigh {
                iterations: u32::MAX,
                ..
            }
        ));
        assert!(matches!(
            server_first_error(&format!("{r},i=0")),
            SaslError::IterationsTooLow { .. }
        ));
        assert!(matches!(
            server_first_error(&format!("{r},i=-1")),
            SaslError::Malformed { .. }
        ));
        assert!(matches!(
            server_first_error(&format!("{r},i=")),
            SaslError::Malformed { .. }
        ));
    }

    #[test]
    fn salt_checks() {
        let r = "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j";
        assert!(matches!(
            server_first_error(&format!("{r},s=,i=4096")),
            SaslError::InvalidSalt {
                reason: "empty",
                ..
            }
        ));
        assert!(matches!(
            server_first_error(&format!("{r},s=***,i=4096")),
            SaslError::InvalidSalt {
                reason: "not valid base64",
                ..
            }
        ));
    }

    #[test]
    fn mandatory_extension_and_syntax() {
        assert_eq!(
            server_first_error("m=future,r=fyko+d2lbbFgONRv9qkxdawL3rfc,s=QSXCR+Q6sek8bf92,i=4096"),
            SaslError::MandatoryExtension {
                mechanism: Mechanism::ScramSha1,
                extension: "future".into()
            }
        );
        for bad in [
            "",
            "garbage",
            "s=QSXCR+Q6sek8bf92,r=fyko+d2lbbFgONRv9qkxdawL3rfc,i=4096",
            "r=fyko+d2lbbFgONRv9qkxdawL3rfc,s=QSXCR+Q6sek8bf92",
        ] {
            assert!(
                matches!(server_first_error(bad), SaslError::Malformed { .. }),
                "{bad:?}"
            );
        }
        let mut c = client(&RFC5802, "pencil");
        c.initial();
        assert!(matches!(
            c.step(&[0xff, 0xfe]),
            Err(SaslError::Malformed { .. })
        ));
        // Unknown optional extensions after i= are ignored.
        let mut c = client(&RFC5802, "pencil");
        c.initial();
        let ext = format!("{},x=whatever", RFC5802.server_first);
        assert!(matches!(c.step(ext.as_bytes()), Ok(Step::Continue(_))));
    }

    #[test]
    fn server_error_is_surfaced() {
        let (mut c, _) = run_to_final(&RFC5802, "pencil");
        assert_eq!(
            c.step(b"e=invalid-proof"),
            Err(SaslError::ServerError {
                mechanism: Mechanism::ScramSha1,
                error: "invalid-proof".into()
            })
        );
        let (mut c, _) = run_to_final(&RFC5802, "pencil");
        assert!(matches!(c.step(b"x=1"), Err(SaslError::Malformed { .. })));
        let (mut c, _) = run_to_final(&RFC5802, "pencil");
        assert!(matches!(c.step(b"v=!!"), Err(SaslError::Malformed { .. })));
    }

    #[test]
    fn username_escaping() {
        let mut c = ScramClient::with_client_nonce(
            ScramHash::Sha256,
            "a,b=c",
            "p",
            ChannelBinding::None,
            None,
            "abc".into(),
        )
        .unwrap();
        assert_eq!(c.initial().unwrap(), b"n,,n=a=2Cb=3Dc,r=abc");
    }

    #[test]
    fn saslprep_of_password() {
        // The soft hyphen maps to nothing: "pen\u{AD}cil" is "pencil" (RFC 4013 §2.1).
        let (_, client_final) = run_to_final(&RFC5802, "pen\u{00AD}cil");
        assert_eq!(client_final, RFC5802.client_final.as_bytes());
        // U+2168 ROMAN NUMERAL NINE is NFKC'd to "IX" (RFC 4013 §2.2).
        let (_, a) = run_to_final(&RFC7677, "\u{2168}");
        let (_, b) = run_to_final(&RFC7677, "IX");
        assert_eq!(a, b);
        // Prohibited characters are refused before anything is sent.
        let err = ScramClient::new(
            ScramHash::Sha256,
            "user",
            "a\u{0000}b",
            ChannelBinding::None,
            None,
        );
        assert_eq!(err.err(), Some(SaslError::SaslPrep { field: "password" }));
        let err = ScramClient::new(
            ScramHash::Sha256,
            "us\u{0007}er",
            "p",
            ChannelBinding::None,
            None,
        );
        assert_eq!(err.err(), Some(SaslError::SaslPrep { field: "username" }));
    }

    #[test]
    fn gs2_flags_in_client_first_and_c() {
        let exporter = vec![7u8; 32];
        let mut c = ScramClient::with_client_nonce(
            ScramHash::Sha256,
            "user",
            "pencil",
            ChannelBinding::TlsExporter(exporter.clone()),
            None,
            "abc".into(),
        )
        .unwrap();
        assert_eq!(c.mechanism(), Mechanism::ScramSha256Plus);
        assert_eq!(c.initial().unwrap(), b"p=tls-exporter,,n=user,r=abc");
        let Step::Continue(fin) = c.step(b"r=abcdef,s=QSXCR+Q6sek8bf92,i=4096").unwrap() else {
            panic!()
        };
        let mut cbind = b"p=tls-exporter,,".to_vec();
        cbind.extend_from_slice(&exporter);
        assert!(fin.starts_with(format!("c={},r=abcdef,p=", b64(&cbind)).as_bytes()));

        let mut c = ScramClient::with_client_nonce(
            ScramHash::Sha1,
            "user",
            "pencil",
            ChannelBinding::ServerLacksSupport,
            None,
            "abc".into(),
        )
        .unwrap();
        assert_eq!(c.mechanism(), Mechanism::ScramSha1);
        assert_eq!(c.initial().unwrap(), b"y,,n=user,r=abc");
        let Step::Continue(fin) = c.step(b"r=abcdef,s=QSXCR+Q6sek8bf92,i=4096").unwrap() else {
            panic!()
        };
        assert!(
            fin.starts_with(b"c=eSws,r=abcdef,p="),
            "{}",
            String::from_utf8_lossy(&fin)
        );
    }

    #[test]
    fn salted_password_cache_skips_pbkdf2() {
        let cache = Arc::new(SaltedCache::default());
        for round in 0..3 {
            let mut c = ScramClient::with_client_nonce(
                RFC7677.hash,
                "user",
                "pencil",
                ChannelBinding::None,
                Some(Arc::clone(&cache)),
                RFC7677.client_nonce.into(),
            )
            .unwrap();
            c.initial();
            let Step::Continue(fin) = c.step(RFC7677.server_first.as_bytes()).unwrap() else {
                panic!()
            };
            assert_eq!(fin, RFC7677.client_final.as_bytes(), "round {round}");
            c.step(RFC7677.server_final.as_bytes()).unwrap();
        }
        // PBKDF2 ran once; the two later logins were hits.
        assert_eq!(
            cache.stats(),
            crate::sasl::CacheStats { hits: 2, misses: 1 }
        );
    }

    #[test]
    fn random_nonces_differ_and_debug_redacts() {
        let mut a = ScramClient::new(
            ScramHash::Sha256,
            "user",
            "hunter2",
            ChannelBinding::None,
            None,
        )
        .unwrap();
        let mut b = ScramClient::new(
            ScramHash::Sha256,
            "user",
            "hunter2",
            ChannelBinding::None,
            None,
        )
        .unwrap();
        assert_ne!(a.initial(), b.initial());
        let text = format!("{a:?}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("redacted"));
    }
}
