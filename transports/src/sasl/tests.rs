//! Cross-cutting tests: the RFC SCRAM vectors shared by the client and server tests,
//! and our client against our server for every mechanism, in memory.

use std::{
    collections::HashMap,
    sync::{Arc, OnceLock},
};

use super::*;

/// One SCRAM example exchange from an RFC.
pub(crate) struct ScramVector {
    pub hash: ScramHash,
    pub client_nonce: &'static str,
    pub server_nonce_suffix: &'static str,
    pub salt: &'static str,
    pub client_first: &'static str,
    pub server_first: &'static str,
    pub client_final: &'static str,
    pub server_final: &'static str,
}

/// RFC 5802 §5: SCRAM-SHA-1, user "user", password "pencil".
pub(crate) const RFC5802: ScramVector = ScramVector {
    hash: ScramHash::Sha1,
    client_nonce: "fyko+d2lbbFgONRv9qkxdawL",
    server_nonce_suffix: "3rfcNHYJY1ZVvWVs7j",
    salt: "QSXCR+Q6sek8bf92",
    client_first: "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL",
    server_first: "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
    client_final:
        "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
    server_final: "v=rmF9pqV8S7suAoZWja4dJRkFsKQ=",
};

/// RFC 7677 §3: SCRAM-SHA-256, user "user", password "pencil".
pub(crate) const RFC7677: ScramVector = ScramVector {
    hash: ScramHash::Sha256,
    client_nonce: "rOprNGfwEbeRWgbNEkqO",
    server_nonce_suffix: "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
    salt: "W22ZaJ0SNY7soEsUEjb6gQ==",
    client_first: "n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
    server_first: "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
    client_final: "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
    server_final: "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
};

/// How an in-memory exchange ended.
#[derive(Debug, PartialEq)]
enum Outcome {
    Success(Authenticated),
    ServerRefused(ServerFailure),
    ClientRefused(SaslError),
}

/// Drives a client against a server like the SMTP layers would, with or without the
/// initial response on the AUTH line.
fn exchange(
    client: &mut dyn ClientMechanism,
    server: &mut dyn ServerMechanism,
    send_initial: bool,
) -> Outcome {
    let initial = if send_initial { client.initial() } else { None };
    let mut reply = server.start(initial.as_deref());
    for _ in 0..10 {
        match reply {
            ServerStep::Challenge(challenge) => match client.step(&challenge) {
                Ok(step) => reply = server.step(step.response()),
                Err(e) => return Outcome::ClientRefused(e),
            },
            ServerStep::Success(account) => {
                return match client.finish(None) {
                    Ok(()) => Outcome::Success(account),
                    Err(e) => Outcome::ClientRefused(e),
                }
            }
            ServerStep::Failure(f) => return Outcome::ServerRefused(f),
        }
    }
    panic!("exchange did not end")
}

const EXPORTER: [u8; 32] = [0x42; 32];

/// The accounts, derived once (PBKDF2 is slow in debug builds).
fn store() -> Arc<dyn CredentialStore> {
    static STORE: OnceLock<Arc<HashMap<String, StoredCredentials>>> = OnceLock::new();
    let accounts = STORE.get_or_init(|| Arc::new(accounts()));
    Arc::clone(accounts) as Arc<dyn CredentialStore>
}

fn accounts() -> HashMap<String, StoredCredentials> {
    let mut accounts = HashMap::new();
    accounts.insert(
        "app1".to_string(),
        StoredCredentials::from_password("s3cret pass", 4096).unwrap(),
    );
    accounts.insert(
        "odd,name=x".to_string(),
        StoredCredentials::from_password("pw", 4096).unwrap(),
    );
    // Stored from the NFKC form; clients type the other forms.
    accounts.insert(
        "intl".to_string(),
        StoredCredentials::from_password("IX", 4096).unwrap(),
    );
    accounts
}

fn settings() -> Arc<ServerSettings> {
    Arc::new(ServerSettings::new("relay.example.org", [7; 32]))
}

/// Runs `mechanism` end to end. `tls` gives both sides the same exporter value, and the
/// server advertises -PLUS exactly when it has one.
fn login(
    mechanism: Mechanism,
    user: &str,
    password: &str,
    tls: bool,
    send_initial: bool,
) -> Outcome {
    let channel = ServerChannel {
        tls_exporter: tls.then(|| EXPORTER.to_vec()),
        plus_advertised: tls,
    };
    let offered: Vec<String> = Mechanism::ALL
        .iter()
        .filter(|m| tls || !m.is_plus())
        .map(|m| m.as_str().to_string())
        .collect();
    let exporter = tls.then_some(&EXPORTER[..]);
    let binding =
        ChannelBinding::negotiate(mechanism, DEFAULT_CLIENT_PREFERENCE, &offered, exporter);
    let mut client = new_client(mechanism, user, password, binding, None).unwrap();
    let mut server = new_server(mechanism, store(), settings(), &channel);
    exchange(&mut *client, &mut *server, send_initial)
}

#[test]
fn every_mechanism_with_and_without_tls() {
    for mechanism in Mechanism::ALL {
        for tls in [false, true] {
            if mechanism.is_plus() && !tls {
                continue;
            }
            for send_initial in [true, false] {
                let ctx = format!("{mechanism} tls={tls} ir={send_initial}");
                assert_eq!(
                    login(mechanism, "app1", "s3cret pass", tls, send_initial),
                    Outcome::Success(Authenticated {
                        username: "app1".into(),
                        mechanism
                    }),
                    "{ctx}"
                );
                let wrong = login(mechanism, "app1", "wrong", tls, send_initial);
                assert!(
                    matches!(&wrong, Outcome::ServerRefused(f) if f.is_bad_credentials()),
                    "{ctx}: {wrong:?}"
                );
                let unknown = login(mechanism, "nobody", "s3cret pass", tls, send_initial);
                assert!(
                    matches!(
                        &unknown,
                        Outcome::ServerRefused(ServerFailure::UnknownUser { .. })
                    ),
                    "{ctx}: {unknown:?}"
                );
            }
        }
    }
}

#[test]
fn username_with_comma_and_equals_round_trips() {
    for mechanism in Mechanism::ALL {
        let tls = mechanism.is_plus();
        let outcome = login(mechanism, "odd,name=x", "pw", tls, true);
        assert_eq!(
            outcome,
            Outcome::Success(Authenticated {
                username: "odd,name=x".into(),
                mechanism
            }),
            "{mechanism}"
        );
    }
}

#[test]
fn non_ascii_passwords_are_saslprepped_on_both_sides() {
    // U+2168 ROMAN NUMERAL NINE is "IX" after NFKC; the soft hyphen U+00AD is removed.
    // CRAM-MD5 and LOGIN-as-typed are not SASLprep'd by the client, but the LOGIN server
    // prepares what it receives; CRAM-MD5 compares raw bytes (RFC 2195).
    for mechanism in Mechanism::ALL {
        if mechanism == Mechanism::CramMd5 {
            continue;
        }
        for typed in ["\u{2168}", "I\u{00AD}X", "IX"] {
            let outcome = login(mechanism, "intl", typed, mechanism.is_plus(), true);
            assert!(
                matches!(outcome, Outcome::Success(_)),
                "{mechanism} {typed:?}: {outcome:?}"
            );
        }
    }
    assert!(matches!(
        login(Mechanism::CramMd5, "intl", "\u{2168}", false, true),
        Outcome::ServerRefused(ServerFailure::InvalidCredentials { .. })
    ));
}

#[test]
fn client_picks_plus_when_offered_and_binding_available() {
    let offered: Vec<String> = ["SCRAM-SHA-256", "SCRAM-SHA-256-PLUS", "CRAM-MD5"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let chosen = choose(DEFAULT_CLIENT_PREFERENCE, &offered, true).unwrap();
    assert_eq!(chosen, Mechanism::ScramSha256Plus);
    let binding =
        ChannelBinding::negotiate(chosen, DEFAULT_CLIENT_PREFERENCE, &offered, Some(&EXPORTER));
    assert_eq!(binding, ChannelBinding::TlsExporter(EXPORTER.to_vec()));
    let mut client = new_client(chosen, "app1", "s3cret pass", binding, None).unwrap();
    let channel = ServerChannel {
        tls_exporter: Some(EXPORTER.to_vec()),
        plus_advertised: true,
    };
    let mut server = new_server(chosen, store(), settings(), &channel);
    assert!(matches!(
        exchange(&mut *client, &mut *server, true),
        Outcome::Success(_)
    ));
}

#[test]
fn stripped_plus_is_detected_as_downgrade() {
    // A man in the middle removed SCRAM-SHA-256-PLUS from the EHLO reply the client saw.
    let seen: Vec<String> = vec!["SCRAM-SHA-256".into()];
    let chosen = choose(DEFAULT_CLIENT_PREFERENCE, &seen, true).unwrap();
    assert_eq!(chosen, Mechanism::ScramSha256);
    let binding =
        ChannelBinding::negotiate(chosen, DEFAULT_CLIENT_PREFERENCE, &seen, Some(&EXPORTER));
    assert_eq!(binding, ChannelBinding::ServerLacksSupport);
    let mut client = new_client(chosen, "app1", "s3cret pass", binding.clone(), None).unwrap();
    // The real server did advertise -PLUS.
    let channel = ServerChannel {
        tls_exporter: Some(EXPORTER.to_vec()),
        plus_advertised: true,
    };
    let mut server = new_server(chosen, store(), settings(), &channel);
    assert_eq!(
        exchange(&mut *client, &mut *server, true),
        Outcome::ServerRefused(ServerFailure::Downgrade {
            mechanism: Mechanism::ScramSha256
        })
    );
    // A server that really lacks -PLUS accepts the same client.
    let mut client = new_client(chosen, "app1", "s3cret pass", binding, None).unwrap();
    let channel = ServerChannel {
        tls_exporter: Some(EXPORTER.to_vec()),
        plus_advertised: false,
    };
    let mut server = new_server(chosen, store(), settings(), &channel);
    assert!(matches!(
        exchange(&mut *client, &mut *server, true),
        Outcome::Success(_)
    ));
}

#[test]
fn channel_binding_mismatch_is_refused() {
    // Client and server see different TLS connections: a relayed (MITM'd) session.
    for mechanism in [Mechanism::ScramSha256Plus, Mechanism::ScramSha1Plus] {
        let binding = ChannelBinding::TlsExporter(vec![0x01; 32]);
        let mut client = new_client(mechanism, "app1", "s3cret pass", binding, None).unwrap();
        let channel = ServerChannel {
            tls_exporter: Some(vec![0x02; 32]),
            plus_advertised: true,
        };
        let mut server = new_server(mechanism, store(), settings(), &channel);
        assert_eq!(
            exchange(&mut *client, &mut *server, true),
            Outcome::ServerRefused(ServerFailure::ChannelBindingMismatch { mechanism })
        );
    }
}

#[test]
fn client_refuses_a_server_without_the_password() {
    // A server holding another password's verifier for this user answers with a
    // signature the client must reject, even though it "accepts" the login.
    struct Impostor;
    impl ServerMechanism for Impostor {
        fn mechanism(&self) -> Mechanism {
            Mechanism::ScramSha256
        }
        fn start(&mut self, initial: Option<&[u8]>) -> ServerStep {
            let first = String::from_utf8(initial.unwrap_or_default().to_vec()).unwrap();
            let nonce = first.rsplit_once("r=").unwrap().1;
            ServerStep::Challenge(format!("r={nonce}xyz,s=c2FsdHNhbHQ=,i=4096").into_bytes())
        }
        fn step(&mut self, response: &[u8]) -> ServerStep {
            if response.is_empty() {
                ServerStep::Success(Authenticated {
                    username: "app1".into(),
                    mechanism: Mechanism::ScramSha256,
                })
            } else {
                ServerStep::Challenge(format!("v={}", "A".repeat(43) + "=").into_bytes())
            }
        }
    }
    let mut client = new_client(
        Mechanism::ScramSha256,
        "app1",
        "s3cret pass",
        ChannelBinding::None,
        None,
    )
    .unwrap();
    assert_eq!(
        exchange(&mut *client, &mut Impostor, true),
        Outcome::ClientRefused(SaslError::BadServerSignature {
            mechanism: Mechanism::ScramSha256
        })
    );
}

#[test]
fn repeated_client_logins_hit_the_cache() {
    let cache = Arc::new(SaltedCache::default());
    let channel = ServerChannel::default();
    for _ in 0..3 {
        let mut client = new_client(
            Mechanism::ScramSha256,
            "app1",
            "s3cret pass",
            ChannelBinding::None,
            Some(Arc::clone(&cache)),
        )
        .unwrap();
        let mut server = new_server(Mechanism::ScramSha256, store(), settings(), &channel);
        assert!(matches!(
            exchange(&mut *client, &mut *server, true),
            Outcome::Success(_)
        ));
    }
    assert_eq!(cache.stats(), CacheStats { hits: 2, misses: 1 });
}
