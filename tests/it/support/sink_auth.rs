//! The sink's bearer-token AUTH (XOAUTH2 and OAUTHBEARER), written from the documents
//! and not from relaygate's client: it parses the initial response strictly, checks the
//! token against the ones the test accepts, and otherwise answers as the providers do —
//! a `334` challenge holding a JSON error (RFC 7628 §3.2.2), then, after the client's
//! dummy response (`%x01` for OAUTHBEARER per RFC 7628 §3.2.3, an empty line for
//! XOAUTH2), `535 5.7.8`.
//!
//! Turned on with [`super::sink::Sink::set_bearer_auth`]: the sink then offers
//! `AUTH OAUTHBEARER XOAUTH2` inside TLS only and refuses MAIL before a login.

use anyhow::Result;
use base64::{engine::general_purpose::STANDARD as B64, Engine as _};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};

/// What the sink accepts.
#[derive(Clone, Debug, Default)]
pub struct BearerAuth {
    /// The user name the tokens are for (`user=` / `a=`).
    pub user: String,
    /// Tokens that log in; any other gets the JSON error.
    pub accepted: Vec<String>,
    /// The scope named in the JSON error.
    pub scope: String,
}

/// One AUTH the sink saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Login {
    /// Connection number of the sink.
    pub session: u64,
    /// "XOAUTH2" or "OAUTHBEARER".
    pub mechanism: String,
    /// The user named in the message.
    pub user: String,
    /// The bearer token sent.
    pub token: String,
    /// OAUTHBEARER's `host=` and `port=`, when sent.
    pub host: Option<String>,
    pub port: Option<String>,
    /// Whether the connection was TLS.
    pub tls: bool,
    /// Logged in.
    pub accepted: bool,
    /// For a refused token: whether the client's answer to the error challenge was the
    /// one its mechanism prescribes.
    pub dummy_ok: Option<bool>,
}

/// A parsed initial response.
#[derive(Debug, PartialEq, Eq)]
struct Message {
    user: String,
    token: String,
    host: Option<String>,
    port: Option<String>,
}

/// Parses `user=U ^A auth=Bearer T ^A ^A` (XOAUTH2).
fn parse_xoauth2(raw: &[u8]) -> Option<Message> {
    let text = std::str::from_utf8(raw).ok()?;
    let body = text.strip_suffix("\x01\x01")?;
    let mut user = None;
    let mut token = None;
    for pair in body.split('\x01') {
        let (k, v) = pair.split_once('=')?;
        match k {
            "user" => user = Some(v.to_string()),
            "auth" => token = Some(v.strip_prefix("Bearer ")?.to_string()),
            _ => return None,
        }
    }
    Some(Message {
        user: user?,
        token: token?,
        host: None,
        port: None,
    })
}

/// Parses `n,a=U, ^A [host=H ^A] [port=P ^A] auth=Bearer T ^A ^A` (RFC 7628 §3.1).
fn parse_oauthbearer(raw: &[u8]) -> Option<Message> {
    let text = std::str::from_utf8(raw).ok()?;
    let (gs2, rest) = text.split_once('\x01')?;
    let authzid = gs2.strip_prefix("n,")?.strip_suffix(',')?;
    let user = match authzid {
        "" => String::new(),
        a => a
            .strip_prefix("a=")?
            .replace("=2C", ",")
            .replace("=3D", "="),
    };
    let body = rest.strip_suffix("\x01\x01")?;
    let (mut token, mut host, mut port) = (None, None, None);
    for pair in body.split('\x01') {
        let (k, v) = pair.split_once('=')?;
        match k {
            "auth" => token = Some(v.strip_prefix("Bearer ")?.to_string()),
            "host" => host = Some(v.to_string()),
            "port" => port = Some(v.to_string()),
            _ => {}
        }
    }
    Some(Message {
        user,
        token: token?,
        host,
        port,
    })
}

/// The JSON error challenge for `scope`.
fn error_challenge(scope: &str) -> String {
    let json = serde_json::json!({"status": "401", "schemes": "bearer", "scope": scope});
    format!("334 {}\r\n", B64.encode(json.to_string()))
}

/// How a client line reads: what the mechanism's dummy response must be.
fn dummy_ok(mechanism: &str, line: &str) -> bool {
    match mechanism {
        "OAUTHBEARER" => B64.decode(line.trim()).ok().as_deref() == Some(&[1u8][..]),
        _ => line.trim().is_empty(),
    }
}

async fn send(conn: &mut (impl AsyncWrite + Unpin), text: &str) -> Result<()> {
    conn.write_all(text.as_bytes()).await?;
    conn.flush().await?;
    Ok(())
}

/// One line without its line end; `None` at the end of the connection.
async fn line(conn: &mut (impl AsyncBufRead + Unpin)) -> Result<Option<String>> {
    let mut buf = Vec::new();
    if conn.read_until(b'\n', &mut buf).await? == 0 {
        return Ok(None);
    }
    let text = String::from_utf8_lossy(&buf);
    Ok(Some(text.trim_end_matches(['\r', '\n']).to_string()))
}

/// Runs one `AUTH <arg>` exchange; returns the final reply line to send and the login
/// (when the command named a bearer mechanism and carried a message).
pub async fn exchange(
    conn: &mut (impl AsyncBufRead + AsyncWrite + Unpin),
    auth: &BearerAuth,
    arg: &str,
    session: u64,
    tls: bool,
) -> Result<(String, Option<Login>)> {
    let mut words = arg.split_whitespace();
    let mechanism = words.next().unwrap_or_default().to_ascii_uppercase();
    if mechanism != "XOAUTH2" && mechanism != "OAUTHBEARER" {
        return Ok(("504 5.5.4 unrecognized authentication type".into(), None));
    }
    let ir = match words.next() {
        Some(ir) => ir.to_string(),
        None => {
            send(conn, "334 \r\n").await?;
            match line(conn).await? {
                Some(line) => line,
                None => return Ok(("421 4.4.2 gone".into(), None)),
            }
        }
    };
    let Ok(raw) = B64.decode(ir.trim()) else {
        return Ok(("501 5.5.2 cannot decode the response".into(), None));
    };
    let parsed = if mechanism == "XOAUTH2" {
        parse_xoauth2(&raw)
    } else {
        parse_oauthbearer(&raw)
    };
    let Some(m) = parsed else {
        return Ok(("501 5.5.2 malformed initial response".into(), None));
    };
    let mut login = Login {
        session,
        mechanism: mechanism.clone(),
        user: m.user.clone(),
        token: m.token.clone(),
        host: m.host,
        port: m.port,
        tls,
        accepted: false,
        dummy_ok: None,
    };
    if m.user == auth.user && auth.accepted.contains(&m.token) {
        login.accepted = true;
        return Ok(("235 2.7.0 Authentication successful".into(), Some(login)));
    }
    send(conn, &error_challenge(&auth.scope)).await?;
    let answer = line(conn).await?.unwrap_or_default();
    login.dummy_ok = Some(dummy_ok(&mechanism, &answer));
    Ok((
        "535 5.7.8 Username and Password not accepted".into(),
        Some(login),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_forms() {
        assert_eq!(
            parse_xoauth2(b"user=u@x\x01auth=Bearer t0k\x01\x01"),
            Some(Message {
                user: "u@x".into(),
                token: "t0k".into(),
                host: None,
                port: None
            })
        );
        assert_eq!(parse_xoauth2(b"user=u\x01auth=Bearer t\x01"), None);
        assert_eq!(parse_xoauth2(b"user=u\x01auth=Basic t\x01\x01"), None);
        let m = parse_oauthbearer(b"n,a=u=2Cv,\x01host=h\x01port=587\x01auth=Bearer t\x01\x01")
            .unwrap();
        assert_eq!((m.user.as_str(), m.token.as_str()), ("u,v", "t"));
        assert_eq!(
            (m.host.as_deref(), m.port.as_deref()),
            (Some("h"), Some("587"))
        );
        assert!(parse_oauthbearer(b"y,,\x01auth=Bearer t\x01\x01").is_none());
        assert!(dummy_ok("OAUTHBEARER", "AQ=="));
        assert!(dummy_ok("XOAUTH2", ""));
        assert!(!dummy_ok("XOAUTH2", "AQ=="));
    }
}
