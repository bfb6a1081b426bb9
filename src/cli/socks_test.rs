//! `relaygate socks-test NAME [-c FILE] [--target HOST:PORT | --domain DOMAIN]`: do the
//! proxies of socks transport NAME accept our credentials and a CONNECT?
//!
//! The proxies and credentials are those delivery builds (`snapshot::socks_config`).
//! Every proxy address is tried on its own (delivery tries them in order and would hide
//! a dead one behind a live one): the SOCKS5 greeting, RFC 1929
//! username/password when the transport has a `username`, then CONNECT to the target.
//! The target is `--target` (its host resolved here, as delivery resolves locally and
//! hands the proxy an IP), else the first MX host of `--domain` on `direct.port`, else a
//! listener this command opens on 127.0.0.1 — so the test needs no network, and the
//! tunnel is checked end to end by reading a token the listener sends.
//!
//! With `--domain`, the test goes the whole way delivery goes: through each proxy to
//! the first MX, its greeting, and EHLO with the transport's `remote_hostname` (then
//! QUIT, no mail): an MX that refuses the proxy's egress (a `554` greeting, a refused
//! EHLO) fails the test with its reply.
//!
//! A line per proxy says ok or why not, with the SOCKS reason (RFC 1928 §6 reply code,
//! RFC 1929 status). Exit status 0 only when every proxy works, 1 otherwise.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::Args;
use relaygate_transports::direct::Dialer;
use relaygate_transports::dns::{gather_destinations, resolve_host, AddressFamilies, Host};
use relaygate_transports::socks::{SocksConfig, SocksDialer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::config::{Config, TransportConfig, TransportKind, DEFAULT_CONFIG_PATH};

/// `relaygate socks-test` arguments.
#[derive(Args, Debug)]
pub struct SocksTestArgs {
    /// The socks transport's name in the config.
    pub name: String,
    /// Config file: the transport, `[dns]` and `[direct]` (for --target and --domain).
    #[arg(short = 'c', long = "config", default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
    /// CONNECT to HOST:PORT (HOST is resolved here, with `[dns]`).
    #[arg(long, conflicts_with = "domain")]
    pub target: Option<String>,
    /// CONNECT to the first MX host of DOMAIN, on `direct.port`.
    #[arg(long)]
    pub domain: Option<String>,
    /// Seconds allowed for each proxy (connect, auth and CONNECT).
    #[arg(long, default_value_t = 10)]
    pub timeout: u64,
}

/// Where the CONNECTs go.
struct Target {
    addr: SocketAddr,
    /// How it was chosen, for the report.
    what: String,
    /// For the command's own listener: the token it sends on every connection.
    token: Option<Vec<u8>>,
    /// For an MX: the EHLO name to greet it with.
    ehlo: Option<String>,
}

/// How one proxy did.
struct ProxyResult {
    proxy: String,
    ok: bool,
    detail: String,
}

/// Runs the command: prints a line per proxy; exit 0 only when all work.
pub fn run(args: SocksTestArgs) -> ExitCode {
    super::run_report("socks-test", test(&args))
}

/// Tests every proxy of the transport; returns the report and whether all worked.
/// Setup problems (config, unknown transport, unreadable password, no target) are errors.
pub async fn test(args: &SocksTestArgs) -> anyhow::Result<(String, bool)> {
    let config = Config::load(&args.config).map_err(|e| anyhow!("{e}"))?;
    let t = socks_transport(&config, &args.config, &args.name)?;
    // The same proxies and credentials delivery builds, names resolved the same way.
    let delivery = crate::snapshot::socks_config(&args.name, t).map_err(|e| anyhow!(e))?;
    let resolver = crate::runtime::resolver(&config).map_err(|e| anyhow!(e))?;
    let credentials = delivery.credentials.clone();
    let timeout = Duration::from_secs(args.timeout.max(1));
    // The EHLO name delivery uses through this proxy.
    let ehlo_name = if t.remote_hostname.is_empty() {
        config.hostname.clone()
    } else {
        t.remote_hostname.clone()
    };
    let target = target(&config, args, &ehlo_name).await?;

    let mut results = Vec::new();
    for proxy in &delivery.proxies {
        let socks = SocksConfig {
            proxies: vec![proxy.clone()],
            credentials: credentials.clone(),
            timeout,
            resolver: Some(std::sync::Arc::clone(&resolver)),
        };
        results.push(try_proxy(&SocksDialer::new(socks), proxy, &target, timeout).await);
    }

    let mut out = String::new();
    let auth = match &credentials {
        Some((user, _)) => format!("username/password as {user:?}"),
        None => "no authentication".into(),
    };
    let _ = writeln!(
        out,
        "socks-test {}: {} proxies, {auth}, CONNECT to {} ({})",
        args.name,
        results.len(),
        target.addr,
        target.what
    );
    for r in &results {
        let label = if r.ok { "OK" } else { "FAIL" };
        let _ = writeln!(out, "{label:<4}  {}  {}", r.proxy, r.detail);
    }
    let failed: Vec<&str> = results
        .iter()
        .filter(|r| !r.ok)
        .map(|r| r.proxy.as_str())
        .collect();
    if failed.is_empty() {
        let _ = writeln!(out, "result: OK (all {} proxies work)", results.len());
    } else {
        let _ = writeln!(
            out,
            "result: FAIL ({} of {} proxies failed: {})",
            failed.len(),
            results.len(),
            failed.join(", ")
        );
    }
    Ok((out, failed.is_empty()))
}

fn socks_transport<'a>(
    config: &'a Config,
    path: &Path,
    name: &str,
) -> anyhow::Result<&'a TransportConfig> {
    let Some(t) = config.transports.get(name) else {
        let socks: Vec<&str> = config
            .transports
            .iter()
            .filter(|(_, t)| t.kind == TransportKind::Socks)
            .map(|(n, _)| n.as_str())
            .collect();
        bail!(
            "no transport {name:?} in {} (socks transports: {})",
            path.display(),
            if socks.is_empty() {
                "none".to_string()
            } else {
                socks.join(", ")
            }
        );
    };
    if t.kind != TransportKind::Socks {
        bail!(
            "transport {name:?} is of kind {:?}; socks-test works with socks transports",
            t.kind
        );
    }
    if t.address.is_empty() {
        bail!("transport {name:?} has no proxy address");
    }
    Ok(t)
}

/// Splits `HOST:PORT` (`[v6]:PORT` too).
fn split_host_port(text: &str) -> anyhow::Result<(String, u16)> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok((addr.ip().to_string(), addr.port()));
    }
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| anyhow!("--target {text:?}: expected HOST:PORT"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| anyhow!("--target {text:?}: {port:?} is not a port"))?;
    if host.is_empty() || host.contains(':') {
        bail!("--target {text:?}: expected HOST:PORT");
    }
    Ok((host.to_string(), port))
}

/// The first address of `host`, resolved with `[dns]` (or the host itself, an IP).
async fn resolve_one(
    resolver: &dyn relaygate_transports::dns::Resolver,
    host: &Host,
) -> anyhow::Result<IpAddr> {
    let addrs = resolve_host(resolver, host, AddressFamilies::BOTH)
        .await
        .with_context(|| format!("resolving {host}"))?;
    addrs
        .ips
        .first()
        .copied()
        .ok_or_else(|| anyhow!("{host} has no addresses"))
}

async fn target(config: &Config, args: &SocksTestArgs, ehlo_name: &str) -> anyhow::Result<Target> {
    if let Some(text) = &args.target {
        let (host, port) = split_host_port(text)?;
        let ip = match host.parse::<IpAddr>() {
            Ok(ip) => ip,
            Err(_) => {
                let resolver = crate::cli::dnscheck::resolvers::hickory(&config.dns)?;
                resolve_one(&resolver, &Host::Name(host.clone())).await?
            }
        };
        return Ok(Target {
            addr: SocketAddr::new(ip, port),
            what: format!("--target {text}"),
            token: None,
            ehlo: None,
        });
    }
    if let Some(domain) = &args.domain {
        let resolver = crate::cli::dnscheck::resolvers::hickory(&config.dns)?;
        let destinations = gather_destinations(&resolver, domain)
            .await
            .with_context(|| format!("finding the MX hosts of {domain}"))?;
        let Some(first) = destinations.hosts.first() else {
            bail!("{domain} has no MX hosts");
        };
        let ip = resolve_one(&resolver, &first.host).await?;
        let port = match &first.host {
            Host::Name(name) => config
                .direct
                .port_overrides
                .iter()
                .find(|(h, _)| h.trim_end_matches('.').eq_ignore_ascii_case(name))
                .map(|(_, p)| *p)
                .unwrap_or(config.direct.port),
            Host::Ip(_) => config.direct.port,
        };
        return Ok(Target {
            addr: SocketAddr::new(ip, port),
            what: format!("first MX host {} of {domain}", first.host),
            token: None,
            ehlo: Some(ehlo_name.to_string()),
        });
    }
    loopback_target().await
}

/// A listener on 127.0.0.1 that greets every connection with a random token; it lives
/// as long as the command's runtime.
async fn loopback_target() -> anyhow::Result<Target> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("opening a loopback listener as the CONNECT target")?;
    let addr = listener.local_addr().context("loopback listener address")?;
    let token = format!("relaygate-socks-test {:016x}\r\n", rand::random::<u64>()).into_bytes();
    let greeting = token.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let greeting = greeting.clone();
            tokio::spawn(async move {
                // The reading side reports a missing greeting; nothing to do here.
                let _ = stream.write_all(&greeting).await;
            });
        }
    });
    Ok(Target {
        addr,
        what: "a listener opened by this command on loopback".into(),
        token: Some(token),
        ehlo: None,
    })
}

async fn try_proxy(
    dialer: &SocksDialer,
    proxy: &relaygate_transports::socks::ProxyAddr,
    target: &Target,
    timeout: Duration,
) -> ProxyResult {
    let result = |ok, detail: String| ProxyResult {
        proxy: proxy.to_string(),
        ok,
        detail,
    };
    let mut io = match dialer.dial(target.addr).await {
        Ok(io) => io,
        Err(e) => {
            let mut detail = e.to_string();
            let local_proxy = match proxy {
                relaygate_transports::socks::ProxyAddr::Ip(a) => a.ip().is_loopback(),
                relaygate_transports::socks::ProxyAddr::Name { host, .. } => host == "localhost",
            };
            if target.token.is_some() && !local_proxy {
                detail.push_str(
                    " (the default target is on this machine's loopback, which a proxy elsewhere cannot reach: use --target or --domain)",
                );
            }
            return result(false, detail);
        }
    };
    if let Some(name) = &target.ehlo {
        return match tokio::time::timeout(timeout, smtp_hello(&mut io, name)).await {
            Ok(Ok(said)) => result(true, format!("CONNECT to {} accepted; {said}", target.addr)),
            Ok(Err(e)) => result(
                false,
                format!("CONNECT to {} accepted, but {e}", target.addr),
            ),
            Err(_) => result(
                false,
                format!(
                    "CONNECT to {} accepted, but the MX did not answer in time",
                    target.addr
                ),
            ),
        };
    }
    let Some(token) = &target.token else {
        return result(true, format!("CONNECT to {} accepted", target.addr));
    };
    let mut got = vec![0u8; token.len()];
    match tokio::time::timeout(timeout, io.read_exact(&mut got)).await {
        Ok(Ok(_)) if &got == token => result(
            true,
            format!(
                "CONNECT to {} accepted; data flows through the tunnel",
                target.addr
            ),
        ),
        Ok(Ok(_)) => result(
            false,
            "CONNECT accepted, but the tunnel delivered other bytes than our listener sent".into(),
        ),
        Ok(Err(e)) => result(
            false,
            format!("CONNECT accepted, but reading through the tunnel failed: {e}"),
        ),
        Err(_) => result(
            false,
            "CONNECT accepted, but nothing came through the tunnel in time".into(),
        ),
    }
}

/// One SMTP reply: its code and its last line.
async fn read_reply<R: tokio::io::AsyncRead + Unpin>(io: &mut R) -> Result<(u16, String), String> {
    let mut line = Vec::new();
    loop {
        line.clear();
        let mut byte = [0u8; 1];
        loop {
            match io.read(&mut byte).await {
                Ok(0) => return Err("the MX closed the connection".into()),
                Ok(_) => {
                    line.push(byte[0]);
                    if byte[0] == b'\n' || line.len() > 1000 {
                        break;
                    }
                }
                Err(e) => return Err(format!("reading from the MX failed: {e}")),
            }
        }
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        let code = text.get(..3).and_then(|c| c.parse::<u16>().ok());
        match (code, text.as_bytes().get(3)) {
            (Some(code), Some(b'-')) if code >= 200 => continue,
            (Some(code), _) => return Ok((code, text)),
            (None, _) => return Err(format!("the MX sent {text:?}, not an SMTP reply")),
        }
    }
}

/// Greeting, EHLO as `name`, QUIT (RFC 5321 §4.1.1.1): what the MX said, or why it
/// would not take mail from this egress.
async fn smtp_hello(
    io: &mut Box<dyn relaygate_transports::stream::Io>,
    name: &str,
) -> Result<String, String> {
    let (code, greeting) = read_reply(io).await?;
    if code != 220 {
        return Err(format!("the MX refused the session: {greeting}"));
    }
    io.write_all(format!("EHLO {name}\r\n").as_bytes())
        .await
        .map_err(|e| format!("writing EHLO failed: {e}"))?;
    let (code, ehlo) = read_reply(io).await?;
    let _ = io.write_all(b"QUIT\r\n").await;
    if code != 250 {
        return Err(format!("the MX refused EHLO {name}: {ehlo}"));
    }
    Ok(format!(
        "greeting {greeting:?}, EHLO {name} answered {ehlo:?}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port() {
        let table = [
            ("mx.example.org:25", Some(("mx.example.org", 25))),
            ("192.0.2.1:2525", Some(("192.0.2.1", 2525))),
            ("[2001:db8::1]:25", Some(("2001:db8::1", 25))),
            ("mx.example.org", None),
            ("mx.example.org:smtp", None),
            (":25", None),
            ("2001:db8::1:25", None),
        ];
        for (text, want) in table {
            let got = split_host_port(text).ok();
            assert_eq!(got.as_ref().map(|(h, p)| (h.as_str(), *p)), want, "{text}");
        }
    }
}
