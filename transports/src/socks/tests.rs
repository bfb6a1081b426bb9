//! The tunnel against an in-process scripted proxy: the exact bytes we send, and what we
//! do with every kind of answer. The same dialer against a real proxy (microsocks) is
//! in `tests/socks.rs`.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::*;

/// One move of the scripted proxy.
enum Act {
    /// Read exactly this many bytes (fewer if the client closes).
    Read(usize),
    /// Send these bytes.
    Write(&'static [u8]),
    /// Read until the client closes: proves it sent nothing more.
    Drain,
    /// Send nothing and keep the connection open.
    Hang,
    /// Echo 5 bytes: the tunnel carries data.
    Echo,
}

/// A proxy that plays `script` on its first connection and returns all it read.
async fn proxy(script: Vec<Act>) -> (SocketAddr, JoinHandle<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut seen = Vec::new();
        for act in script {
            match act {
                Act::Read(n) => {
                    let mut buf = vec![0u8; n];
                    let mut got = 0;
                    while got < n {
                        match s.read(&mut buf[got..]).await {
                            Ok(0) | Err(_) => break,
                            Ok(k) => got += k,
                        }
                    }
                    seen.extend_from_slice(&buf[..got]);
                }
                Act::Write(bytes) => s.write_all(bytes).await.unwrap(),
                Act::Drain => {
                    let _ = s.read_to_end(&mut seen).await;
                }
                Act::Hang => tokio::time::sleep(Duration::from_secs(30)).await,
                Act::Echo => {
                    let mut buf = [0u8; 5];
                    s.read_exact(&mut buf).await.unwrap();
                    s.write_all(&buf).await.unwrap();
                }
            }
        }
        seen
    });
    (addr, task)
}

const TARGET_V4: &str = "192.0.2.1:25";
const GREETING_NONE: &[u8] = &[5, 1, 0];
const GREETING_USERPASS: &[u8] = &[5, 1, 2];
const LOGIN: &[u8] = b"\x01\x05relay\x04pa55";
const CONNECT_V4: &[u8] = &[5, 1, 0, 1, 192, 0, 2, 1, 0, 25];
const SUCCEEDED_V4: &[u8] = &[5, 0, 0, 1, 127, 0, 0, 2, 0x9c, 0x40];

fn creds() -> (String, Secret) {
    ("relay".to_string(), Secret::new("pa55"))
}

async fn run(
    addr: SocketAddr,
    target: &str,
    creds: Option<&(String, Secret)>,
) -> Result<TcpStream, SocksError> {
    tunnel(
        addr,
        target.parse().unwrap(),
        creds,
        Duration::from_secs(10),
    )
    .await
}

/// A tunnel that must fail; returns the failure and what the proxy read.
async fn refused(script: Vec<Act>, creds: Option<&(String, Secret)>) -> (SocksError, Vec<u8>) {
    let (addr, seen) = proxy(script).await;
    let e = run(addr, TARGET_V4, creds).await.unwrap_err();
    assert_eq!(e.proxy, addr);
    assert_eq!(e.target.to_string(), TARGET_V4);
    (e, seen.await.unwrap())
}

async fn echo(mut s: TcpStream) {
    s.write_all(b"hello").await.unwrap();
    let mut buf = [0u8; 5];
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"hello");
}

#[tokio::test]
async fn with_credentials_we_offer_username_password_only() {
    let (addr, seen) = proxy(vec![
        Act::Read(3),
        Act::Write(&[5, 2]),
        Act::Read(LOGIN.len()),
        Act::Write(&[1, 0]),
        Act::Read(CONNECT_V4.len()),
        Act::Write(SUCCEEDED_V4),
        Act::Echo,
    ])
    .await;
    let s = run(addr, TARGET_V4, Some(&creds())).await.unwrap();
    echo(s).await;
    assert_eq!(
        seen.await.unwrap(),
        [GREETING_USERPASS, LOGIN, CONNECT_V4].concat()
    );
}

#[tokio::test]
async fn without_credentials_to_an_ipv6_target_with_a_named_bound_address() {
    let (addr, seen) = proxy(vec![
        Act::Read(3),
        Act::Write(&[5, 0]),
        Act::Read(22),
        // The bound address may be a name (ATYP 3); it is read and dropped.
        Act::Write(b"\x05\x00\x00\x03\x0dproxy.example\x04\x00"),
        Act::Echo,
    ])
    .await;
    let s = run(addr, "[2001:db8::25]:587", None).await.unwrap();
    echo(s).await;
    let mut want = vec![5, 1, 0];
    want.extend_from_slice(&[5, 1, 0, 4]);
    want.extend_from_slice(
        &"2001:db8::25"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    want.extend_from_slice(&587u16.to_be_bytes());
    assert_eq!(seen.await.unwrap(), want);
}

#[tokio::test]
async fn a_proxy_skipping_our_login_is_refused() {
    // RFC 1928 §3: we offered username/password only, so "no authentication" is not
    // a choice; nothing more is sent.
    let (e, seen) = refused(
        vec![Act::Read(3), Act::Write(&[5, 0]), Act::Drain],
        Some(&creds()),
    )
    .await;
    assert!(
        matches!(
            e.failure,
            SocksFailure::MethodNotOffered {
                chosen: 0,
                with_credentials: true
            }
        ),
        "{e:?}"
    );
    assert_eq!(e.step(), Step::Method);
    let text = e.to_string();
    assert!(
        text.contains("did not offer") && text.contains("username/password only"),
        "{text}"
    );
    assert_eq!(seen, GREETING_USERPASS);
}

#[tokio::test]
async fn a_proxy_asking_for_a_login_we_lack_is_refused() {
    // tokio-socks itself refuses this one (AuthorizationRequired); we keep the proof.
    let (e, seen) = refused(vec![Act::Read(3), Act::Write(&[5, 2]), Act::Drain], None).await;
    assert!(
        matches!(
            e.failure,
            SocksFailure::MethodNotOffered {
                chosen: 2,
                with_credentials: false
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("did not offer"), "{e}");
    assert_eq!(seen, GREETING_NONE);
}

#[tokio::test]
async fn a_method_nobody_offered_is_refused() {
    // GSSAPI (X'01') was offered in neither case.
    for creds in [None, Some(creds())] {
        let (e, _) = refused(
            vec![Act::Read(3), Act::Write(&[5, 1]), Act::Drain],
            creds.as_ref(),
        )
        .await;
        assert!(
            matches!(e.failure, SocksFailure::MethodNotOffered { chosen: 1, .. }),
            "{e:?}"
        );
    }
}

#[tokio::test]
async fn no_acceptable_method_and_not_socks5() {
    let (e, _) = refused(vec![Act::Read(3), Act::Write(&[5, 0xff]), Act::Drain], None).await;
    assert!(
        matches!(e.failure, SocksFailure::NoAcceptableMethod),
        "{e:?}"
    );
    assert!(
        e.to_string()
            .contains("accepts none of our authentication methods"),
        "{e}"
    );

    let (e, _) = refused(vec![Act::Read(3), Act::Write(&[4, 0]), Act::Drain], None).await;
    assert!(
        matches!(
            e.failure,
            SocksFailure::BadVersion {
                step: Step::Method,
                version: 4
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("not a SOCKS5 proxy"), "{e}");
}

#[tokio::test]
async fn a_refused_login_stops_before_connect() {
    let (e, seen) = refused(
        vec![
            Act::Read(3),
            Act::Write(&[5, 2]),
            Act::Read(LOGIN.len()),
            Act::Write(&[1, 1]),
            Act::Drain,
        ],
        Some(&creds()),
    )
    .await;
    assert!(matches!(e.failure, SocksFailure::AuthRefused(1)), "{e:?}");
    assert_eq!(e.step(), Step::Auth);
    assert!(
        e.to_string()
            .contains("proxy refused our username/password (status 1)"),
        "{e}"
    );
    assert_eq!(seen, [GREETING_USERPASS, LOGIN].concat());
}

#[tokio::test]
async fn connect_refusals_carry_the_reply_code() {
    for (reply, code, text) in [
        (
            &[5u8, 5, 0, 1, 0, 0, 0, 0, 0, 0][..],
            5,
            "connection refused",
        ),
        (
            &[5u8, 2, 0, 1, 0, 0, 0, 0, 0, 0][..],
            2,
            "not allowed by ruleset",
        ),
        // Unassigned: tokio-socks calls it UnknownAuthMethod; we keep the code.
        (
            &[5u8, 9, 0, 1, 0, 0, 0, 0, 0, 0][..],
            9,
            "unassigned reply code",
        ),
    ] {
        let (e, _) = refused(
            vec![
                Act::Read(3),
                Act::Write(&[5, 0]),
                Act::Read(CONNECT_V4.len()),
                Act::Write(reply),
                Act::Drain,
            ],
            None,
        )
        .await;
        assert!(
            matches!(e.failure, SocksFailure::Refused { code: c } if c == code),
            "{e:?}"
        );
        assert_eq!(e.step(), Step::Connect);
        let message = e.to_string();
        assert!(
            message.contains(&format!("proxy reply {code} (")) && message.contains(text),
            "{message}"
        );
    }
}

#[tokio::test]
async fn a_bad_address_type_in_the_reply() {
    let (e, _) = refused(
        vec![
            Act::Read(3),
            Act::Write(&[5, 0]),
            Act::Read(CONNECT_V4.len()),
            Act::Write(&[5, 0, 0, 7]),
            Act::Drain,
        ],
        None,
    )
    .await;
    assert!(e.to_string().contains("bad address type 7"), "{e}");
    assert_eq!(e.step(), Step::Connect);
}

#[tokio::test]
async fn a_proxy_hanging_up_or_going_silent_names_the_step() {
    // Closes after our greeting.
    let (e, _) = refused(vec![Act::Read(3)], None).await;
    assert!(
        matches!(
            e.failure,
            SocksFailure::Io {
                step: Step::Method,
                ..
            }
        ),
        "{e:?}"
    );
    // Closes after the CONNECT request.
    let (e, _) = refused(
        vec![
            Act::Read(3),
            Act::Write(&[5, 0]),
            Act::Read(CONNECT_V4.len()),
        ],
        None,
    )
    .await;
    assert_eq!(e.step(), Step::Connect, "{e:?}");
    assert!(e.to_string().starts_with("SOCKS5 proxy "), "{e}");

    // Never answers: the one deadline covers the handshake.
    let (addr, _seen) = proxy(vec![Act::Read(3), Act::Hang]).await;
    let target = TARGET_V4.parse().unwrap();
    let e = tunnel(addr, target, None, Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(
        matches!(e.failure, SocksFailure::Timeout(Step::Method)),
        "{e:?}"
    );
    assert!(e.to_string().contains("timeout"), "{e}");
}

#[tokio::test]
async fn credentials_too_long_for_rfc1929() {
    let long = ("u".repeat(256), Secret::new("pw"));
    let (addr, _seen) = proxy(vec![Act::Drain]).await;
    let e = run(addr, TARGET_V4, Some(&long)).await.unwrap_err();
    assert!(matches!(e.failure, SocksFailure::BadCredentials), "{e:?}");
    assert!(e.to_string().contains("1 to 255 bytes"), "{e}");
}

/// A port nothing listens on.
async fn dead_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

#[tokio::test]
async fn proxies_in_order_and_the_last_error_with_its_proxy() {
    let dead = dead_port().await;
    let (live, seen) = proxy(vec![
        Act::Read(3),
        Act::Write(&[5, 0]),
        Act::Read(CONNECT_V4.len()),
        Act::Write(SUCCEEDED_V4),
        Act::Echo,
    ])
    .await;
    let config = SocksConfig {
        proxies: vec![dead.into(), live.into()],
        credentials: None,
        timeout: Duration::from_secs(10),
        resolver: None,
    };
    let mut io = via_proxies(&config, TARGET_V4.parse().unwrap())
        .await
        .unwrap();
    io.write_all(b"hello").await.unwrap();
    let mut buf = [0u8; 5];
    io.read_exact(&mut buf).await.unwrap();
    assert_eq!(seen.await.unwrap(), [GREETING_NONE, CONNECT_V4].concat());

    // All dead: the error is the last proxy's, typed inside the io::Error.
    let other_dead = dead_port().await;
    let config = SocksConfig {
        proxies: vec![dead.into(), other_dead.into()],
        ..config
    };
    let Err(e) = via_proxies(&config, TARGET_V4.parse().unwrap()).await else {
        panic!("connected through dead proxies");
    };
    let socks = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<SocksError>())
        .expect("a SocksError inside");
    assert_eq!(socks.proxy, other_dead);
    assert_eq!(socks.step(), Step::Dial);
    assert!(e.to_string().contains("proxy unreachable"), "{e}");

    let none = SocksConfig {
        proxies: Vec::new(),
        ..config
    };
    let Err(e) = via_proxies(&none, TARGET_V4.parse().unwrap()).await else {
        panic!("connected without a proxy");
    };
    assert!(e.to_string().contains("no SOCKS5 proxy configured"), "{e}");
}

#[tokio::test]
async fn handshake_over_a_stream_that_takes_one_byte_at_a_time() {
    // A one-byte pipe: every write and read is partial, including our rewritten greeting.
    let (ours, mut theirs) = tokio::io::duplex(1);
    let proxy = async move {
        let mut seen = Vec::new();
        for (read, reply) in [
            (3, &[5u8, 2][..]),
            (LOGIN.len(), &[1, 0][..]),
            (CONNECT_V4.len(), SUCCEEDED_V4),
        ] {
            let mut buf = vec![0u8; read];
            theirs.read_exact(&mut buf).await.unwrap();
            seen.extend_from_slice(&buf);
            theirs.write_all(reply).await.unwrap();
        }
        (seen, theirs)
    };
    let creds = creds();
    let client = handshake(ours, TARGET_V4.parse().unwrap(), Some(&creds));
    let ((seen, mut theirs), result) = tokio::join!(proxy, client);
    let mut tunnel = result.unwrap();
    let write = tokio::spawn(async move { theirs.write_all(b"tunnel").await.unwrap() });
    let mut buf = [0u8; 6];
    tunnel.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"tunnel");
    write.await.unwrap();
    assert_eq!(seen, [GREETING_USERPASS, LOGIN, CONNECT_V4].concat());
}

#[test]
fn proxy_addresses_parse() {
    use super::ProxyAddr;
    assert_eq!(
        "127.0.0.1:1080".parse::<ProxyAddr>(),
        Ok(ProxyAddr::Ip("127.0.0.1:1080".parse().unwrap()))
    );
    assert_eq!(
        "[::1]:1080".parse::<ProxyAddr>(),
        Ok(ProxyAddr::Ip("[::1]:1080".parse().unwrap()))
    );
    assert_eq!(
        "proxy.example:1080".parse::<ProxyAddr>(),
        Ok(ProxyAddr::Name {
            host: "proxy.example".into(),
            port: 1080
        })
    );
    for bad in [
        "proxy.example",
        ":1080",
        "a b:1080",
        "h:0",
        "h:99999",
        "::1:1080",
    ] {
        assert!(bad.parse::<ProxyAddr>().is_err(), "{bad}");
    }
    assert_eq!(
        "proxy.example:1080"
            .parse::<ProxyAddr>()
            .unwrap()
            .to_string(),
        "proxy.example:1080"
    );
}
