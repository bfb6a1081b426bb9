//! `relaygate sendmail` (also when the binary is invoked as `sendmail`): the classic
//! local submission interface. Reads a message on standard input and submits it to the
//! gateway (or the server in its own small config) over SMTP, with TLS and AUTH when
//! configured. Exit codes follow sysexits(3); a message that cannot be submitted is saved
//! to a file whose path is printed, so it is never lost.
//!
//! Accepted flags: `-t -f ADDR -F NAME -i -oi -odb -oem -bs -bp -q`, other `-o*` and a
//! few common no-op flags are ignored. A message that cannot be submitted is saved with
//! its envelope ([`unsent`]); `-bp` (or the binary invoked as `mailq`) lists them and
//! `-q` sends them. The manual: docs/sendmail.md.

pub mod unsent;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use relaygate_transports::sasl::Mechanism;
use relaygate_transports::smarthost::{
    SmarthostAuth, SmarthostConfig, SmarthostTls, SmarthostTransport, TlsClientConfigs,
};
use relaygate_transports::{
    OutboundMessage, OutboundRcpt, RcptOutcome, Secret, Severity, TcpConnector, Timeouts, TlsRoots,
};
use serde::Deserialize;

use crate::message::{field_value, header_section};

/// sysexits(3).
pub const EX_OK: u8 = 0;
pub const EX_USAGE: u8 = 64;
pub const EX_DATAERR: u8 = 65;
pub const EX_UNAVAILABLE: u8 = 69;
pub const EX_SOFTWARE: u8 = 70;
pub const EX_IOERR: u8 = 74;
pub const EX_TEMPFAIL: u8 = 75;
pub const EX_CONFIG: u8 = 78;

/// The sendmail config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendmailConfig {
    #[serde(default = "default_server")]
    pub server: String,
    #[serde(default = "default_port")]
    pub port: u16,
    /// "none", "starttls" or "implicit".
    #[serde(default = "default_tls")]
    pub tls: String,
    /// Extra trusted roots (PEM) for the server's certificate.
    #[serde(default)]
    pub ca_file: String,
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password_file: String,
    /// One SASL mechanism to use instead of the strongest offered.
    #[serde(default)]
    pub mechanism: String,
    /// The envelope sender when `-f` is not given (e.g. `cron@example.org`).
    #[serde(default)]
    pub from: String,
    /// Without `-f` and `from`: `USER@domain` (the login name at `domain`).
    #[serde(default)]
    pub auto_from: bool,
    /// The domain of `auto_from` addresses (default: the host name).
    #[serde(default)]
    pub domain: String,
}

fn default_server() -> String {
    "127.0.0.1".into()
}
fn default_port() -> u16 {
    2525
}
fn default_tls() -> String {
    "none".into()
}

impl Default for SendmailConfig {
    fn default() -> Self {
        SendmailConfig {
            server: default_server(),
            port: default_port(),
            tls: default_tls(),
            ca_file: String::new(),
            username: String::new(),
            password_file: String::new(),
            mechanism: String::new(),
            from: String::new(),
            auto_from: false,
            domain: String::new(),
        }
    }
}

/// Where the config comes from: `$RELAYGATE_SENDMAIL_CONFIG`, else
/// `~/.config/relaygate/sendmail.toml`, else `/etc/relaygate/sendmail.toml`, else defaults.
pub fn load_config() -> Result<SendmailConfig, String> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Ok(p) = std::env::var("RELAYGATE_SENDMAIL_CONFIG") {
        if !p.is_empty() {
            let path = PathBuf::from(p);
            // An explicitly named file must exist.
            let text =
                std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            return toml::from_str(&text)
                .map_err(|e| format!("{}: {}", path.display(), e.message()));
        }
    }
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(Path::new(&home).join(".config/relaygate/sendmail.toml"));
    }
    candidates.push(PathBuf::from("/etc/relaygate/sendmail.toml"));
    for path in candidates {
        if let Ok(text) = std::fs::read_to_string(&path) {
            return toml::from_str(&text)
                .map_err(|e| format!("{}: {}", path.display(), e.message()));
        }
    }
    Ok(SendmailConfig::default())
}

/// What the command line asked for.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Args {
    pub from_headers: bool,
    pub sender: Option<String>,
    pub full_name: Option<String>,
    /// `-i`/`-oi`: a line with a single "." does not end the message.
    pub ignore_dots: bool,
    pub smtp_on_stdio: bool,
    /// `-bp` (`mailq`): list the saved unsent messages.
    pub list_unsent: bool,
    /// `-q`: send the saved unsent messages.
    pub send_unsent: bool,
    /// `--help`.
    pub help: bool,
    pub rcpts: Vec<String>,
}

/// Parses sendmail-style arguments (without the program name).
pub fn parse_args(args: &[String]) -> Result<Args, String> {
    let mut a = Args::default();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        let mut value = |flag: &str| -> Result<String, String> {
            if arg.len() > flag.len() {
                Ok(arg[flag.len()..].to_string())
            } else {
                i += 1;
                args.get(i)
                    .cloned()
                    .ok_or_else(|| format!("{flag} needs a value"))
            }
        };
        if arg == "--" {
            a.rcpts.extend(args[i + 1..].iter().cloned());
            break;
        } else if arg == "-t" {
            a.from_headers = true;
        } else if arg.starts_with("-f") || arg.starts_with("-r") {
            a.sender = Some(value(&arg[..2])?);
        } else if arg.starts_with("-F") {
            a.full_name = Some(value("-F")?);
        } else if arg == "-i" || arg == "-oi" {
            a.ignore_dots = true;
        } else if arg == "-bs" {
            a.smtp_on_stdio = true;
        } else if arg == "-bp" {
            a.list_unsent = true;
        } else if arg == "-q"
            || (arg.starts_with("-q") && arg[2..].bytes().all(|b| b.is_ascii_alphanumeric()))
        {
            // `-q` or `-q30m` (an interval: this runs once).
            a.send_unsent = true;
        } else if arg == "--help" || arg == "-h" {
            a.help = true;
        } else if arg == "-bm"
            || arg == "-odb"
            || arg == "-odi"
            || arg == "-oem"
            || arg == "-oep"
            || arg == "-v"
            || arg == "-U"
        {
            // Accepted and ignored: delivery mode, error mode, verbosity.
        } else if arg.starts_with("-o")
            || arg.starts_with("-B")
            || arg.starts_with("-N")
            || arg.starts_with("-R")
            || arg.starts_with("-X")
            || arg.starts_with("-V")
        {
            // Unknown -o options are ignored (SPEC §1); the others take a value.
            if !arg.starts_with("-o") && arg.len() == 2 {
                i += 1;
            }
        } else if arg.starts_with('-') && arg.len() > 1 {
            return Err(format!("unknown option {arg}"));
        } else {
            a.rcpts.extend(
                arg.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty()),
            );
        }
        i += 1;
    }
    Ok(a)
}

/// Extracts the addresses of an address-list header value: `<a@b>` forms, or bare
/// `a@b` words (groups and comments are tolerated, not interpreted).
pub fn addresses(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    for part in split_top_level(value) {
        let part = part.trim();
        let addr = match (part.rfind('<'), part.rfind('>')) {
            (Some(s), Some(e)) if e > s => part[s + 1..e].trim().to_string(),
            _ => {
                let no_comment = part.split('(').next().unwrap_or("").trim();
                let after_group = no_comment
                    .rsplit(':')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .trim_end_matches(';');
                after_group.to_string()
            }
        };
        if addr.contains('@') {
            out.push(addr);
        }
    }
    out
}

fn split_top_level(value: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let (mut quoted, mut angle) = (false, false);
    for c in value.chars() {
        match c {
            '"' => quoted = !quoted,
            '<' if !quoted => angle = true,
            '>' if !quoted => angle = false,
            ',' if !quoted && !angle => {
                parts.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    parts.push(cur);
    parts
}

/// Reads the message from standard input: LF or CRLF line ends (stored as CRLF); without
/// `-i`, a line with a single "." ends it.
pub fn read_message(mut input: impl Read, ignore_dots: bool) -> std::io::Result<Vec<u8>> {
    let mut raw = Vec::new();
    input.read_to_end(&mut raw)?;
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 32);
    for line in raw.split_inclusive(|&b| b == b'\n') {
        let content = line.strip_suffix(b"\n").unwrap_or(line);
        let content = content.strip_suffix(b"\r").unwrap_or(content);
        if !ignore_dots && content == b"." {
            break;
        }
        out.extend_from_slice(content);
        out.extend_from_slice(b"\r\n");
    }
    Ok(out)
}

/// Applies `-t` (recipients from To/Cc/Bcc, Bcc removed) and adds From when missing.
/// Returns the message to send and the recipients found in headers.
pub fn prepare(message: &[u8], args: &Args, sender: &str) -> (Vec<u8>, Vec<String>) {
    let headers = header_section(message);
    let body = &message[headers.len()..];
    let mut rcpts = Vec::new();
    if args.from_headers {
        for name in ["To", "Cc", "Bcc"] {
            for v in all_values(headers, name) {
                rcpts.extend(addresses(&v));
            }
        }
    }
    let mut out = Vec::with_capacity(message.len() + 64);
    if field_value(headers, "From").is_none() {
        let from = match &args.full_name {
            Some(name) => format!("From: \"{}\" <{sender}>\r\n", name.replace('"', "")),
            None => format!("From: <{sender}>\r\n"),
        };
        out.extend_from_slice(from.as_bytes());
    }
    // Drop Bcc fields (and their continuation lines) when recipients come from headers.
    let mut skipping = false;
    for line in headers.split_inclusive(|&b| b == b'\n') {
        let continuation = line.first().is_some_and(|&b| b == b' ' || b == b'\t');
        if !continuation {
            skipping =
                args.from_headers && line.len() >= 4 && line[..4].eq_ignore_ascii_case(b"bcc:");
        }
        if !skipping {
            out.extend_from_slice(line);
        }
    }
    out.extend_from_slice(body);
    (out, rcpts)
}

fn all_values(headers: &[u8], name: &str) -> Vec<String> {
    let text = String::from_utf8_lossy(headers);
    let mut values = Vec::new();
    let mut current: Option<String> = None;
    for line in text.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            if let Some(v) = current.as_mut() {
                v.push(' ');
                v.push_str(line.trim());
            }
            continue;
        }
        if let Some(v) = current.take() {
            values.push(v);
        }
        if let Some((field, value)) = line.split_once(':') {
            if field.trim_end().eq_ignore_ascii_case(name) {
                current = Some(value.trim().to_string());
            }
        }
    }
    values.extend(current);
    values
}

fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// The envelope sender: `-f`, else `from`, else `USER@domain` (with `auto_from`), else
/// `USER@hostname`. `-f` must be an address or `<>` (the null sender).
pub fn sender(args: &Args, config: &SendmailConfig) -> Result<String, String> {
    let user = || {
        std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .unwrap_or_else(|_| "root".into())
    };
    if let Some(f) = &args.sender {
        let f = f.trim();
        if f == "<>" || f.is_empty() {
            return Ok("<>".into());
        }
        let bare = f.trim_start_matches('<').trim_end_matches('>');
        if !bare.contains('@') || bare.starts_with('@') || bare.ends_with('@') || bare.contains(' ')
        {
            return Err(format!(
                "-f {f:?} is not an address (user@domain, or <> for none)"
            ));
        }
        return Ok(bare.to_string());
    }
    if !config.from.trim().is_empty() {
        return Ok(config.from.trim().to_string());
    }
    if config.auto_from {
        let domain = if config.domain.trim().is_empty() {
            host_name()
        } else {
            config.domain.trim().to_string()
        };
        return Ok(format!("{}@{domain}", user()));
    }
    Ok(format!("{}@{}", user(), host_name()))
}

/// `sendmail --help`.
pub const HELP: &str = "usage: sendmail [-t] [-i] [-f ADDR] [-F NAME] [RCPT ...]
       sendmail -bs | -bp | -q | --help
       mailq

Reads a message on standard input and hands it to the relaygate gateway over SMTP.

  -t         take recipients from the To, Cc and Bcc fields (Bcc is removed)
  -i, -oi    a line with a single dot does not end the message
  -f ADDR    envelope sender (<> for none); default: `from` in the config, else
             USER@domain with `auto_from`, else USER@hostname
  -F NAME    full name for the From field added when the message has none
  -bs        speak SMTP on standard input and output (relayed to the gateway)
  -bp        list messages saved while the gateway was unreachable (also: mailq)
  -q         send the saved messages now (remove each one that goes)
  --help     this text
  -odb -odi -oem -oep -v and other -o options are accepted and ignored.

Config: $RELAYGATE_SENDMAIL_CONFIG, else ~/.config/relaygate/sendmail.toml, else
/etc/relaygate/sendmail.toml, else defaults (server 127.0.0.1, port 2525, no TLS).
Keys: server, port, tls (none|starttls|implicit), ca_file, username, password_file,
mechanism, from, auto_from, domain.

A message that cannot be submitted is saved (~/.local/state/relaygate/unsent) and the
exit status says why (sysexits: 75 try again later, 69 refused, 78 config, 64 usage).
Manual: docs/sendmail.md.
";

fn transport(config: &SendmailConfig) -> Result<SmarthostTransport, String> {
    let tls = match config.tls.as_str() {
        "none" => SmarthostTls::None,
        "starttls" => SmarthostTls::StartTls { required: true },
        "implicit" => SmarthostTls::Implicit,
        other => return Err(format!("tls = {other:?}: use none, starttls or implicit")),
    };
    let extra = (!config.ca_file.is_empty()).then(|| Path::new(&config.ca_file));
    let roots = TlsRoots::load(extra).map_err(|e| e.to_string())?;
    let auth = if config.username.is_empty() {
        None
    } else {
        let password = crate::accounts::read_secret(&config.password_file, "", "sendmail")?
            .ok_or_else(|| "username is set but password_file is not".to_string())?;
        let mechanisms = if config.mechanism.is_empty() {
            Vec::new()
        } else {
            vec![Mechanism::from_wire(&config.mechanism)
                .ok_or_else(|| format!("unknown mechanism {:?}", config.mechanism))?]
        };
        Some(SmarthostAuth {
            username: config.username.clone(),
            password: Secret::new(password),
            mechanisms,
        })
    };
    Ok(SmarthostTransport::new(
        SmarthostConfig {
            name: "sendmail".into(),
            host: config.server.clone(),
            port: config.port,
            more_hosts: Vec::new(),
            reply_rules: Default::default(),
            tls,
            verify_certificates: true,
            ehlo_name: host_name(),
            timeouts: Timeouts::uniform(Duration::from_secs(60)),
            max_idle: 0,
            idle_timeout: Duration::from_secs(1),
            auth,
            auth_failure_holddown: Duration::ZERO,
        },
        &TlsClientConfigs::new(&roots),
        Arc::new(TcpConnector::new(Duration::from_secs(30))),
    ))
}

/// Writes to standard output: `EX_OK`, or `EX_IOERR` when it fails (said on stderr
/// unless the reader has gone).
fn print(text: std::fmt::Arguments<'_>) -> u8 {
    match crate::cli::out::try_write(text, false) {
        Ok(()) => EX_OK,
        Err(e) => {
            if e.kind() != std::io::ErrorKind::BrokenPipe {
                eprintln!("sendmail: cannot write to standard output: {e}");
            }
            EX_IOERR
        }
    }
}

/// Runs `sendmail` with its arguments (without the program name); returns the exit code.
pub fn run(args: &[String]) -> u8 {
    let args = match parse_args(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("sendmail: {e}");
            return EX_USAGE;
        }
    };
    let config = match load_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sendmail: config: {e}");
            return EX_CONFIG;
        }
    };
    if args.help {
        return print(format_args!("{HELP}"));
    }
    if args.list_unsent {
        return match unsent::list() {
            Ok(saved) => print(format_args!("{}", unsent::render(&saved))),
            Err(e) => {
                eprintln!("sendmail -bp: {e}");
                EX_SOFTWARE
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sendmail: {e}");
            return EX_SOFTWARE;
        }
    };
    if args.smtp_on_stdio {
        return runtime.block_on(proxy_stdio(&config));
    }
    if args.send_unsent {
        return runtime.block_on(send_unsent(&config));
    }
    let message = match read_message(std::io::stdin().lock(), args.ignore_dots) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("sendmail: reading the message: {e}");
            return EX_DATAERR;
        }
    };
    let sender = match sender(&args, &config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sendmail: {e}");
            return EX_USAGE;
        }
    };
    let (message, header_rcpts) = prepare(&message, &args, &sender);
    let mut rcpts = args.rcpts.clone();
    rcpts.extend(header_rcpts);
    rcpts.dedup();
    if rcpts.is_empty() {
        eprintln!("sendmail: no recipients (give addresses or -t)");
        return EX_USAGE;
    }
    let (code, reason) = runtime.block_on(submit(&config, &sender, &rcpts, &message));
    // A temporary failure keeps the message for `sendmail -q`; a refusal or a config
    // error is the caller's to fix, and the message is saved all the same (never lost).
    if code != EX_OK {
        let envelope = unsent::Envelope {
            from: if sender == "<>" {
                String::new()
            } else {
                sender.clone()
            },
            rcpts: rcpts.clone(),
            saved_at: crate::model::now_ms(),
            reason,
        };
        match unsent::save(&message, &envelope) {
            Ok(path) => eprintln!(
                "sendmail: message saved to {} (`sendmail -q` sends it, `sendmail -bp` lists it)",
                path.display()
            ),
            Err(e) => {
                eprintln!("sendmail: could not save the message either: {e}");
                return EX_SOFTWARE;
            }
        }
    }
    code
}

/// `-q`: sends every saved message; each one that is accepted is removed. The exit
/// status is the worst of them (0 when all went, or there were none).
async fn send_unsent(config: &SendmailConfig) -> u8 {
    let saved = match unsent::list() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sendmail -q: {e}");
            return EX_SOFTWARE;
        }
    };
    let mut worst = EX_OK;
    let mut sent = 0;
    for s in &saved {
        let message = match std::fs::read(&s.message) {
            Ok(m) => m,
            Err(e) => {
                eprintln!("sendmail -q: {}: {e}", s.message.display());
                worst = EX_SOFTWARE;
                continue;
            }
        };
        let from = if s.envelope.from.is_empty() {
            "<>".to_string()
        } else {
            s.envelope.from.clone()
        };
        let (code, reason) = submit(config, &from, &s.envelope.rcpts, &message).await;
        if code == EX_OK {
            if let Err(e) = unsent::remove(s) {
                eprintln!("sendmail -q: sent {}, but: {e}", s.id);
            }
            sent += 1;
        } else {
            eprintln!("sendmail -q: {} stays saved: {reason}", s.id);
            if worst == EX_OK || code == EX_TEMPFAIL {
                worst = code;
            }
        }
    }
    eprintln!(
        "sendmail -q: {sent} of {} saved message(s) sent",
        saved.len()
    );
    worst
}

/// Submits one message; the exit status and, when it failed, why.
async fn submit(
    config: &SendmailConfig,
    sender: &str,
    rcpts: &[String],
    message: &[u8],
) -> (u8, String) {
    let transport = match transport(config) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("sendmail: config: {e}");
            return (EX_CONFIG, format!("config: {e}"));
        }
    };
    let eight_bit = message.iter().any(|&b| b >= 0x80);
    let outbound = OutboundMessage {
        mail_from: if sender == "<>" {
            String::new()
        } else {
            sender.to_string()
        },
        rcpts: rcpts.iter().map(OutboundRcpt::new).collect(),
        body: Arc::from(message.to_vec()),
        params: relaygate_transports::MailParams {
            eight_bit,
            smtputf8: !sender.is_ascii() || rcpts.iter().any(|r| !r.is_ascii()),
            ..Default::default()
        },
    };
    match transport.deliver(&outbound).await {
        Ok(d) => {
            let mut code = EX_OK;
            let mut reason = String::new();
            for (rcpt, outcome) in rcpts.iter().zip(&d.outcomes) {
                match outcome {
                    RcptOutcome::Delivered(_) => {}
                    RcptOutcome::Transient(r) => {
                        eprintln!("sendmail: <{rcpt}>: {r}");
                        reason = format!("<{rcpt}>: {r}");
                        code = EX_TEMPFAIL;
                    }
                    RcptOutcome::Permanent(r) => {
                        eprintln!("sendmail: <{rcpt}>: {r}");
                        reason = format!("<{rcpt}>: {r}");
                        if code == EX_OK {
                            code = EX_UNAVAILABLE;
                        }
                    }
                }
            }
            (code, reason)
        }
        Err(e) => {
            eprintln!("sendmail: {e}");
            let code = match e.severity() {
                Severity::Temporary => EX_TEMPFAIL,
                Severity::Permanent => EX_UNAVAILABLE,
            };
            (code, e.to_string())
        }
    }
}

/// `-bs`: relays SMTP between standard input/output and the server, byte for byte.
async fn proxy_stdio(config: &SendmailConfig) -> u8 {
    if config.tls != "none" {
        eprintln!(
            "sendmail -bs: only tls = \"none\" is supported; the client runs its own TLS and AUTH"
        );
        return EX_CONFIG;
    }
    let addr = format!("{}:{}", config.server, config.port);
    let stream = match tokio::net::TcpStream::connect(&addr).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sendmail -bs: {addr}: {e}");
            return EX_TEMPFAIL;
        }
    };
    let (mut rd, mut wr) = stream.into_split();
    let to_server = async {
        let _ = tokio::io::copy(&mut tokio::io::stdin(), &mut wr).await;
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut wr).await;
    };
    let to_client = async {
        let _ = tokio::io::copy(&mut rd, &mut tokio::io::stdout()).await;
    };
    tokio::join!(to_server, to_client);
    EX_OK
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn flags() {
        let a = parse_args(&s(&[
            "-t",
            "-i",
            "-f",
            "me@x.org",
            "-Fname",
            "-odb",
            "-oem",
            "-oXyz",
            "a@b.org,c@d.org",
        ]))
        .unwrap();
        assert!(a.from_headers && a.ignore_dots);
        assert_eq!(a.sender.as_deref(), Some("me@x.org"));
        assert_eq!(a.full_name.as_deref(), Some("name"));
        assert_eq!(a.rcpts, vec!["a@b.org", "c@d.org"]);
        assert!(parse_args(&s(&["-Q"])).is_err());
        assert!(parse_args(&s(&["-f"])).is_err());
    }

    #[test]
    fn headers_give_recipients_and_bcc_goes() {
        let msg = read_message(
            "To: A <a@b.org>, c@d.org\nBcc: e@f.org,\n g@h.org\nSubject: x\n\nhi\n.\nmore\n"
                .as_bytes(),
            false,
        )
        .unwrap();
        assert!(
            !String::from_utf8_lossy(&msg).contains("more"),
            "a lone dot ends input without -i"
        );
        let args = Args {
            from_headers: true,
            ..Default::default()
        };
        let (out, rcpts) = prepare(&msg, &args, "me@x.org");
        assert_eq!(rcpts, vec!["a@b.org", "c@d.org", "e@f.org", "g@h.org"]);
        let text = String::from_utf8(out).unwrap();
        assert!(
            !text.to_lowercase().contains("bcc") && !text.contains("g@h.org"),
            "{text}"
        );
        assert!(
            text.starts_with("From: <me@x.org>\r\nTo: A <a@b.org>"),
            "{text}"
        );
        assert!(text.ends_with("\r\n\r\nhi\r\n"), "{text:?}");
    }

    #[test]
    fn dots_kept_with_i() {
        let msg = read_message("a\n.\nb\n".as_bytes(), true).unwrap();
        assert_eq!(msg, b"a\r\n.\r\nb\r\n");
    }
}
