//! A small SMTP client for submission tests: it writes exactly the bytes it is
//! given and reads replies (multi-line aware), so tests can pipeline, send bare LF
//! and assert exact reply codes. [`submit`] is the one-call convenience.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::Io;

/// How long the client waits for one reply.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// One (possibly multi-line) SMTP reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// The text of each line, after `NNN-` / `NNN `.
    pub lines: Vec<String>,
}

impl Reply {
    /// The enhanced status code (`5.7.1`) at the start of the first line, if any.
    pub fn enhanced(&self) -> Option<&str> {
        let first = self.lines.first()?.split(' ').next()?;
        let parts: Vec<&str> = first.split('.').collect();
        let ok = parts.len() == 3
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
        ok.then_some(first)
    }

    /// All lines joined with `\n`.
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }

    /// Whether an EHLO reply lists `keyword` (case-insensitive, first word of a line).
    pub fn has_capability(&self, keyword: &str) -> bool {
        self.capability(keyword).is_some()
    }

    /// The line of an EHLO reply whose first word is `keyword`.
    pub fn capability(&self, keyword: &str) -> Option<&str> {
        self.lines.iter().skip(1).map(String::as_str).find(|l| {
            l.split(' ')
                .next()
                .is_some_and(|w| w.eq_ignore_ascii_case(keyword))
        })
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code, self.lines.join(" / "))
    }
}

/// A client connection. Every read has a timeout, so a test never hangs on it.
pub struct SmtpClient {
    conn: BufReader<Box<dyn Io>>,
    /// The server's greeting.
    pub greeting: Reply,
}

impl SmtpClient {
    /// Connects and reads the greeting (any code).
    pub async fn connect(addr: SocketAddr) -> Result<SmtpClient> {
        let stream = tokio::time::timeout(REPLY_TIMEOUT, TcpStream::connect(addr))
            .await
            .context("connect timed out")?
            .with_context(|| format!("connecting to {addr}"))?;
        let mut conn: BufReader<Box<dyn Io>> = BufReader::new(Box::new(stream));
        let greeting = read_reply(&mut conn)
            .await
            .context("reading the greeting")?;
        Ok(SmtpClient { conn, greeting })
    }

    /// Connects from the local address `source` (e.g. 127.0.0.2, another client on
    /// loopback) and reads the greeting.
    pub async fn connect_from(addr: SocketAddr, source: std::net::IpAddr) -> Result<SmtpClient> {
        let socket = match source {
            std::net::IpAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            std::net::IpAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.bind(SocketAddr::new(source, 0))?;
        let stream = tokio::time::timeout(REPLY_TIMEOUT, socket.connect(addr))
            .await
            .context("connect timed out")?
            .with_context(|| format!("connecting to {addr} from {source}"))?;
        let mut conn: BufReader<Box<dyn Io>> = BufReader::new(Box::new(stream));
        let greeting = read_reply(&mut conn)
            .await
            .context("reading the greeting")?;
        Ok(SmtpClient { conn, greeting })
    }

    /// Writes `bytes` as they are.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<()> {
        let w = self.conn.get_mut();
        w.write_all(bytes).await?;
        w.flush().await?;
        Ok(())
    }

    /// Reads one reply.
    pub async fn read_reply(&mut self) -> Result<Reply> {
        read_reply(&mut self.conn).await
    }

    /// Sends `line` + CRLF and reads the reply.
    pub async fn cmd(&mut self, line: &str) -> Result<Reply> {
        self.send_raw(format!("{line}\r\n").as_bytes()).await?;
        self.read_reply()
            .await
            .with_context(|| format!("reply to {line:?}"))
    }

    /// Sends `line` and fails unless the reply has `code`.
    pub async fn expect(&mut self, line: &str, code: u16) -> Result<Reply> {
        let reply = self.cmd(line).await?;
        ensure!(reply.code == code, "{line:?}: expected {code}, got {reply}");
        Ok(reply)
    }

    /// EHLO; fails unless 250. Returns the reply (capabilities).
    pub async fn ehlo(&mut self, name: &str) -> Result<Reply> {
        self.expect(&format!("EHLO {name}"), 250).await
    }

    /// STARTTLS (expects 220), then the TLS handshake; the caller must EHLO again.
    pub async fn starttls(&mut self, config: std::sync::Arc<rustls::ClientConfig>) -> Result<()> {
        self.expect("STARTTLS", 220).await?;
        ensure!(
            self.conn.buffer().is_empty(),
            "server sent data after 220 to STARTTLS"
        );
        let placeholder: BufReader<Box<dyn Io>> = BufReader::new(Box::new(tokio::io::empty()));
        let plain = std::mem::replace(&mut self.conn, placeholder).into_inner();
        let tls = TlsConnector::from(config)
            .connect(super::pki::Pki::server_name(), plain)
            .await
            .context("TLS handshake")?;
        self.conn = BufReader::new(Box::new(tls));
        Ok(())
    }

    /// After a 354: sends `body` dot-stuffed and terminated, and reads the reply.
    pub async fn send_data(&mut self, body: &[u8]) -> Result<Reply> {
        let mut bytes = dot_stuff(body);
        bytes.extend_from_slice(b".\r\n");
        self.send_raw(&bytes).await?;
        self.read_reply().await.context("reply to the end of DATA")
    }

    /// One whole transaction (MAIL, RCPTs, DATA) without pipelining; returns the
    /// reply to the end of DATA. Errors if MAIL, a RCPT or DATA is refused.
    pub async fn send_message(&mut self, from: &str, rcpts: &[&str], body: &[u8]) -> Result<Reply> {
        self.expect(&format!("MAIL FROM:<{from}>"), 250).await?;
        for rcpt in rcpts {
            self.expect(&format!("RCPT TO:<{rcpt}>"), 250).await?;
        }
        self.expect("DATA", 354).await?;
        self.send_data(body).await
    }

    /// QUIT; expects 221, then the end of the connection: a clean one (over TLS, the
    /// server's close_notify first; without it the read fails), with nothing after 221.
    pub async fn quit(mut self) -> Result<()> {
        self.expect("QUIT", 221).await?;
        let mut rest = Vec::new();
        tokio::time::timeout(REPLY_TIMEOUT, self.conn.read_to_end(&mut rest))
            .await
            .context("the server did not close the connection after 221")?
            .context("the connection did not end cleanly after 221")?;
        ensure!(
            rest.is_empty(),
            "data after 221: {:?}",
            String::from_utf8_lossy(&rest)
        );
        Ok(())
    }
}

async fn read_reply(conn: &mut BufReader<Box<dyn Io>>) -> Result<Reply> {
    let mut code = None;
    let mut lines = Vec::new();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = tokio::time::timeout(REPLY_TIMEOUT, conn.read_until(b'\n', &mut buf))
            .await
            .context("timed out waiting for a reply")??;
        if n == 0 {
            bail!("connection closed while waiting for a reply (got {lines:?} so far)");
        }
        let line = String::from_utf8_lossy(&buf);
        let line = line.trim_end_matches(['\r', '\n']);
        ensure!(
            line.len() >= 3 && line.as_bytes()[..3].iter().all(u8::is_ascii_digit),
            "malformed reply line {line:?}"
        );
        let this: u16 = line[..3].parse()?;
        ensure!(
            code.is_none_or(|c| c == this),
            "reply code changed inside a multi-line reply: {line:?}"
        );
        code = Some(this);
        let sep = line.as_bytes().get(3).copied();
        lines.push(line.get(4..).unwrap_or("").to_string());
        match sep {
            Some(b'-') => {
                ensure!(lines.len() < 1000, "endless multi-line reply");
            }
            None | Some(b' ') => {
                return Ok(Reply { code: this, lines });
            }
            Some(_) => bail!("malformed reply line {line:?}"),
        }
    }
}

/// Dot-stuffs `body` (a line starting with `.` gets another) and makes sure it ends
/// with CRLF. Line ends are left as they are.
pub fn dot_stuff(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 16);
    let mut at_line_start = true;
    for &b in body {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Connects, EHLO, one transaction, QUIT. Ok only when the end of DATA got 250.
pub async fn submit(addr: SocketAddr, from: &str, rcpts: &[&str], body: &[u8]) -> Result<()> {
    let mut client = SmtpClient::connect(addr).await?;
    ensure!(client.greeting.code == 220, "greeting: {}", client.greeting);
    client.ehlo("client.test").await?;
    let reply = client.send_message(from, rcpts, body).await?;
    ensure!(reply.code == 250, "end of DATA: {reply}");
    client.quit().await?;
    Ok(())
}

/// A small RFC 5322 message with CRLF line ends and the given Message-ID local part.
pub fn simple_message(from: &str, to: &str, subject: &str, id: &str) -> Vec<u8> {
    format!(
        "From: <{from}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n\
         Date: Thu, 01 Jan 2026 00:00:00 +0000\r\nMessage-ID: <{id}@client.test>\r\n\
         \r\nHello from the relaygate tests.\r\n"
    )
    .into_bytes()
}
