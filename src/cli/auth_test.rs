//! `relaygate auth-test TRANSPORT [-c FILE]`: connect to a smarthost transport the way a
//! delivery would (same host, port, TLS mode, trust roots, credentials and mechanism
//! list), log in, and QUIT without sending a message.
//!
//! It prints what an operator needs to debug a provider login: the address reached,
//! the TLS version and whether the certificate was verified, the AUTH mechanisms the
//! server advertised after TLS, the mechanism chosen (and its channel binding), and
//! "authentication succeeded" or the server's reply. Exit status 0 on success, 1 on any
//! failure. The password is never printed.
//!
//! A transport with `[transports.NAME.oauth2]` gets its access token first (the token
//! step: from the token file or the token endpoint, with the token's remaining
//! lifetime when known, never the token itself); the report says whether the token
//! step or the AUTH step failed.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context};
use relaygate_transports::sasl::DEFAULT_CLIENT_PREFERENCE;
use relaygate_transports::smarthost::{AuthProbe, SmarthostTls, SmarthostTransport};
use relaygate_transports::{TlsInfo, TransportError};

use crate::config::Config;

/// Runs the command and prints its report; the exit code says whether AUTH succeeded.
pub fn run(config_path: &Path, transport: &str) -> ExitCode {
    super::run_report("auth-test", test(config_path, transport))
}

/// Builds the transport from the config, probes it, and returns the report and
/// whether AUTH succeeded. Setup problems (config, unknown transport, unreadable
/// secret) are errors.
pub async fn test(config_path: &Path, name: &str) -> anyhow::Result<(String, bool)> {
    let config = Config::load(config_path).map_err(|e| anyhow!("{e}"))?;
    let Some(t) = config.transports.get(name) else {
        let known: Vec<&str> = config.transports.keys().map(String::as_str).collect();
        bail!(
            "no transport {name:?} in {} (transports: {})",
            config_path.display(),
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        );
    };
    if !t.kind.is_smarthost() {
        bail!(
            "transport {name:?} is of kind {:?}; auth-test works with smtp, submission and submissions",
            t.kind
        );
    }
    let sh = crate::snapshot::smarthost_config(&config, name, t).map_err(|e| anyhow!(e))?;
    let tls = crate::app::tls_configs(&config).context("loading TLS trust roots")?;
    // The host resolves as delivery resolves it: through `[dns]`.
    let resolver = crate::runtime::resolver(&config).map_err(|e| anyhow!(e))?;
    // The same way delivery goes: through the transport's `socks_proxy` when it has one.
    let connector = crate::runtime::smarthost_connector(name, t, &config.transports, &resolver)
        .map_err(|e| anyhow!(e))?;
    let roots = crate::runtime::tls_roots(&config).map_err(|e| anyhow!(e))?;
    let transport = crate::oauth::attach(
        SmarthostTransport::new(sh, &tls, connector),
        name,
        t,
        resolver,
        &roots,
    )
    .map_err(|e| anyhow!(e))?;
    let probe = transport.probe_auth().await;
    let (text, ok) = report(name, &transport, &probe);
    if t.socks_proxy.is_empty() {
        return Ok((text, ok));
    }
    // Say which way it went: through the proxy, as delivery goes.
    let addresses = config
        .transports
        .get(&t.socks_proxy)
        .map(|p| p.address.join(", "))
        .unwrap_or_default();
    Ok((
        format!(
            "through the SOCKS proxy of transport {:?} ({addresses})\n{text}",
            t.socks_proxy
        ),
        ok,
    ))
}

/// The human-readable report of a probe, and whether it succeeded.
fn report(name: &str, transport: &SmarthostTransport, probe: &AuthProbe) -> (String, bool) {
    let cfg = transport.config();
    let mut out = String::new();
    if let Some(tokens) = transport.token_source() {
        let _ = writeln!(out, "token source: {}", tokens.describe());
        match (&probe.token, &probe.result) {
            (Some(token), _) => {
                let expiry = match token.valid_for {
                    Some(d) => format!("valid for {} s", d.as_secs()),
                    None => "expiry unknown".to_string(),
                };
                let _ = writeln!(
                    out,
                    "token step: OK, access token {} ({expiry})",
                    token.origin.as_str()
                );
            }
            (None, Err(e @ TransportError::Token { .. })) => {
                let _ = writeln!(out, "token step FAILED: {e}");
                let _ = writeln!(out, "AUTH step: not attempted (no access token)");
                return (out, false);
            }
            (None, _) => {}
        }
    }
    let mode = match cfg.tls {
        SmarthostTls::Implicit => "implicit TLS",
        SmarthostTls::StartTls { required: true } => "STARTTLS required",
        SmarthostTls::StartTls { required: false } => "STARTTLS if offered",
        SmarthostTls::None => "no TLS (no_starttls)",
    };
    let _ = writeln!(out, "transport {name}: {}:{} ({mode})", cfg.host, cfg.port);
    if let Some(addr) = probe.addr {
        let _ = writeln!(out, "connected to {addr}");
    }
    let tls = match &probe.tls {
        TlsInfo::None => "none".to_string(),
        TlsInfo::Verified { version } => format!("{version}, certificate verified"),
        TlsInfo::Unverified { version } => {
            format!("{version}, certificate NOT verified (tls_insecure_skip_verify)")
        }
    };
    if probe.addr.is_some() {
        let _ = writeln!(out, "TLS: {tls}");
    }
    if let Some(advertised) = &probe.advertised {
        let list = if advertised.is_empty() {
            "(none: AUTH not offered)".to_string()
        } else {
            advertised.join(" ")
        };
        let when = if probe.tls == TlsInfo::None {
            ""
        } else {
            " after TLS"
        };
        let _ = writeln!(out, "mechanisms advertised{when}: {list}");
    }
    let Some(auth) = &cfg.auth else {
        let _ = writeln!(
            out,
            "no credentials configured (username and password): nothing to authenticate"
        );
        return (out, false);
    };
    let ours: &[_] = if auth.mechanisms.is_empty() {
        DEFAULT_CLIENT_PREFERENCE
    } else {
        &auth.mechanisms
    };
    let ours: Vec<&str> = ours.iter().map(|m| m.as_str()).collect();
    let _ = writeln!(out, "our preference: {}", ours.join(" "));
    let _ = writeln!(out, "username: {}", auth.username);
    if let Some(plan) = &probe.plan {
        let _ = writeln!(
            out,
            "chosen mechanism: {} (channel binding: {})",
            plan.mechanism,
            plan.binding()
        );
    }
    // With a token step, the AUTH step is named as such.
    let step = if probe.token.is_some() {
        "AUTH step: "
    } else {
        ""
    };
    match &probe.result {
        Ok(()) => {
            let _ = writeln!(out, "{step}authentication succeeded");
            (out, true)
        }
        Err(e) => {
            if let Some(reply) = e.reply() {
                let _ = writeln!(out, "server reply: {reply}");
            }
            let _ = writeln!(out, "{step}authentication failed: {e}");
            (out, false)
        }
    }
}
