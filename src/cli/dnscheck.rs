//! `relaygate dnscheck DOMAIN [-c FILE] [--ip IP]... [--helo NAME] [--json]`: does the
//! sender domain's DNS line up with the IPs our mail leaves from?
//!
//! # What is checked
//!
//! The egress IPs are every `remote_ips` of every `socks` transport (each says EHLO with
//! its transport's `remote_hostname`, or `hostname`), plus the host's own public IPs
//! given with `--ip` (EHLO `--helo`, default `hostname`). Then:
//!
//! 1. **SPF** ([`spf`]): the domain's record, evaluated as MAIL FROM
//!    `postmaster@DOMAIN` from each egress IP, and each EHLO name's record as HELO from
//!    its IPs (RFC 7208). IPs that are not authorized get a suggested record.
//! 2. **Reverse DNS** ([`rdns`]): each IP's PTR names its EHLO host, and that host's
//!    addresses include the IP (forward-confirmed).
//! 3. **Mail DNS** ([`mail`]): MX present and not null, the `_mta-sts` TXT record, TLSA
//!    at `_25._tcp.<MX host>` with its DNSSEC status.
//! 4. **DKIM** ([`dkim`]): each `[[dkim.keys]]` selector signing for the domain is
//!    published and holds the key of its `key_file`.
//!
//! Lookups go to `dns.nameservers` (so a lab DNS works), with the `[dns]` DNSSEC mode.
//! Without `-c` the default config file is used when it exists; otherwise the system's
//! resolvers, and only the `--ip` addresses are checked.
//!
//! # Output
//!
//! A line per check with its verdict (ok / warn / fail) and why, then the suggested
//! records; or with `--json` the document described in [`report`]. Exit status 1 when
//! any check fails (or the command cannot run), 0 otherwise — warnings included.
//!
//! # Layout
//!
//! - [`report`] — checks, verdicts and their rendering.
//! - [`resolvers`] — our resolver and mail-auth's, both from `[dns]`.
//! - [`spf`], [`rdns`], [`mail`] — the checks.

pub mod dkim;
pub mod mail;
pub mod rdns;
pub mod report;
pub mod resolvers;
pub mod spf;

#[cfg(test)]
mod fake;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context};
use clap::Args;
use relaygate_transports::dns::DnssecMode;

use crate::config::{Config, DnsConfig, TransportKind, DEFAULT_CONFIG_PATH};
use rdns::PtrTarget;
use report::{ids, Check, EgressIp, Report, Verdict};
use spf::{HeloPair, MailFromIp, SpfInputs};

/// `relaygate dnscheck` arguments.
#[derive(Args, Debug)]
pub struct DnscheckArgs {
    /// The sender domain to check.
    pub domain: String,
    /// Config file: `[dns]` and the socks transports' `remote_ips` / `remote_hostname`
    /// (default: config/relaygate.toml when it exists).
    #[arg(short = 'c', long = "config")]
    pub config: Option<PathBuf>,
    /// A public IP this host sends from (repeat, or separate with commas).
    #[arg(long = "ip", value_delimiter = ',')]
    pub ips: Vec<IpAddr>,
    /// The EHLO name used from the --ip addresses (default: `hostname` of the config).
    #[arg(long)]
    pub helo: Option<String>,
    /// Print a JSON document instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs the command: prints the report, exit status 1 when a check failed.
pub fn run(args: DnscheckArgs) -> ExitCode {
    let report = match super::block_on(check(&args)) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("relaygate: dnscheck: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    if args.json {
        match serde_json::to_string_pretty(&report.json()) {
            Ok(text) => outln!("{text}"),
            Err(e) => {
                eprintln!("relaygate: dnscheck: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        out!("{}", report.human());
    }
    if report.verdict() == Verdict::Fail {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// The config named by `-c`, else the default file when it exists, else none.
fn load_config(path: Option<&Path>) -> anyhow::Result<Option<Config>> {
    let path = match path {
        Some(p) => p,
        None if Path::new(DEFAULT_CONFIG_PATH).exists() => Path::new(DEFAULT_CONFIG_PATH),
        None => return Ok(None),
    };
    Config::load(path).map(Some).map_err(|e| anyhow!("{e}"))
}

/// The domain as an A-label name, lowercase, without the trailing dot.
fn ascii_domain(domain: &str) -> anyhow::Result<String> {
    let trimmed = domain.trim().trim_end_matches('.');
    if trimmed.is_empty() || trimmed.contains(['@', '/', ' ']) {
        bail!("{domain:?} is not a domain name");
    }
    idna::domain_to_ascii(trimmed).map_err(|_| anyhow!("{domain:?} is not a valid domain name"))
}

/// Egress IPs with their sources and EHLO names, in config order then `--ip` order.
#[derive(Debug, Default)]
struct Egress {
    ips: Vec<EgressIp>,
    /// (IP, EHLO name, source label); the name is `None` when unknown.
    uses: Vec<(IpAddr, Option<String>, String)>,
    /// Warnings about the inputs (a socks transport without `remote_ips`).
    notes: Vec<Check>,
}

impl Egress {
    fn add(&mut self, ip: IpAddr, helo: Option<String>, label: String) {
        match self.ips.iter_mut().find(|e| e.ip == ip) {
            Some(e) => e.sources.push(label.clone()),
            None => self.ips.push(EgressIp {
                ip,
                sources: vec![label.clone()],
            }),
        }
        self.uses.push((ip, helo.map(|h| normalize(&h)), label));
    }
}

fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

fn gather_egress(config: Option<&Config>, args: &DnscheckArgs) -> anyhow::Result<Egress> {
    let mut egress = Egress::default();
    if let Some(config) = config {
        for (name, t) in &config.transports {
            if t.kind != TransportKind::Socks {
                continue;
            }
            if t.remote_ips.is_empty() {
                egress.notes.push(Check::new(
                    ids::EGRESS,
                    format!("transport {name}"),
                    Verdict::Warn,
                    "no remote_ips: the proxy's egress IP is not checked",
                ));
            }
            let helo = if t.remote_hostname.is_empty() {
                config.hostname.clone()
            } else {
                t.remote_hostname.clone()
            };
            for text in &t.remote_ips {
                let ip: IpAddr = text.trim().parse().with_context(|| {
                    format!("transport {name:?}: remote_ips: {text:?} is not an IP address")
                })?;
                egress.add(ip, Some(helo.clone()), format!("transport {name}"));
            }
        }
    }
    let helo = args
        .helo
        .clone()
        .or_else(|| config.map(|c| c.hostname.clone()));
    for ip in &args.ips {
        egress.add(*ip, helo.clone(), "--ip".into());
    }
    Ok(egress)
}

/// Loads the config, runs every check and returns the report.
pub async fn check(args: &DnscheckArgs) -> anyhow::Result<Report> {
    let domain = ascii_domain(&args.domain)?;
    let config = load_config(args.config.as_deref())?;
    let dns = config
        .as_ref()
        .map(|c| c.dns.clone())
        .unwrap_or_else(DnsConfig::default);
    let mode = resolvers::dnssec_mode(&dns);
    let resolver = resolvers::hickory(&dns)?;
    let auth = resolvers::spf_evaluator(&dns)?;
    let egress = gather_egress(config.as_ref(), args)?;

    let mut checks = egress.notes.clone();
    if egress.ips.is_empty() {
        checks.push(Check::new(
            ids::EGRESS,
            &domain,
            Verdict::Warn,
            "no egress IPs (set remote_ips on socks transports, or pass --ip): SPF and reverse DNS not checked for any IP",
        ));
    }

    let mut mail_from: Vec<MailFromIp> = Vec::new();
    let mut pairs: Vec<HeloPair> = Vec::new();
    let mut ptr_targets: Vec<PtrTarget> = Vec::new();
    for e in &egress.ips {
        let helo = egress
            .uses
            .iter()
            .find_map(|(ip, helo, _)| (*ip == e.ip).then(|| helo.clone()).flatten())
            .unwrap_or_else(|| domain.clone());
        mail_from.push(MailFromIp {
            ip: e.ip,
            helo,
            label: e.sources.join(", "),
        });
    }
    for (ip, helo, label) in &egress.uses {
        let Some(name) = helo else { continue };
        let pair = HeloPair {
            name: name.clone(),
            ip: *ip,
        };
        if !pairs.contains(&pair) {
            pairs.push(pair);
            ptr_targets.push(PtrTarget {
                ip: *ip,
                expected: name.clone(),
                label: label.clone(),
            });
        }
    }
    let receiver = config
        .as_ref()
        .map(|c| c.hostname.clone())
        .unwrap_or_else(|| "localhost".into());

    let inputs = SpfInputs {
        domain: &domain,
        mail_from: &mail_from,
        helo: &pairs,
        receiver: &receiver,
    };
    let (spf_checks, suggested_records) = spf::check(&resolver, &auth, &inputs).await;
    checks.extend(spf_checks);
    checks.extend(rdns::check(&resolver, &ptr_targets).await);
    let dnssec_known = mode != DnssecMode::Plain;
    checks.extend(mail::check(&resolver, &domain, dnssec_known).await);
    if let Some(config) = &config {
        let signer =
            crate::dkim::Signer::from_config(&config.dkim, None).map_err(|e| anyhow!("{e}"))?;
        checks.extend(dkim::check(&resolver, &domain, signer.keys()).await);
    }

    Ok(Report {
        domain,
        dnssec: resolvers::mode_name(&mode),
        egress_ips: egress.ips,
        checks,
        suggested_records,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(ips: &[&str], helo: Option<&str>) -> DnscheckArgs {
        DnscheckArgs {
            domain: "example.org".into(),
            config: None,
            ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
            helo: helo.map(str::to_string),
            json: false,
        }
    }

    #[test]
    fn domains() {
        assert_eq!(ascii_domain("Example.ORG.").unwrap(), "example.org");
        assert_eq!(
            ascii_domain("bücher.example").unwrap(),
            "xn--bcher-kva.example"
        );
        assert!(ascii_domain("user@example.org").is_err());
        assert!(ascii_domain("").is_err());
    }

    #[test]
    fn egress_from_config_and_flags() {
        let text = r#"
hostname = "relay.example.org"
[transports.proxy]
kind = "socks"
address = "127.0.0.1:1080"
remote_ips = ["192.0.2.10", "2001:db8::10"]
remote_hostname = "Out.Example.org."
[transports.bare]
kind = "socks"
address = "127.0.0.1:1081"
"#;
        let config = Config::parse(Path::new("t.toml"), text).unwrap();
        let e = gather_egress(Some(&config), &args(&["192.0.2.10", "198.51.100.7"], None)).unwrap();
        let ips: Vec<String> = e.ips.iter().map(|e| e.ip.to_string()).collect();
        assert_eq!(ips, ["192.0.2.10", "2001:db8::10", "198.51.100.7"]);
        assert_eq!(e.ips[0].sources, ["transport proxy", "--ip"]);
        assert_eq!(e.uses[0].1.as_deref(), Some("out.example.org"));
        assert_eq!(e.uses[3].1.as_deref(), Some("relay.example.org"));
        assert_eq!(
            e.notes.len(),
            1,
            "the transport without remote_ips is noted"
        );
        assert_eq!(e.notes[0].subject, "transport bare");

        let e = gather_egress(None, &args(&["198.51.100.7"], None)).unwrap();
        assert_eq!(e.uses[0].1, None, "no config, no --helo: EHLO name unknown");
        let e = gather_egress(None, &args(&["198.51.100.7"], Some("mail.example.org"))).unwrap();
        assert_eq!(e.uses[0].1.as_deref(), Some("mail.example.org"));

        // Built after parsing: config validation may refuse it first one day.
        let mut config = config;
        if let Some(t) = config.transports.get_mut("proxy") {
            t.remote_ips[1] = "not-an-ip".into();
        }
        let err = gather_egress(Some(&config), &args(&[], None)).unwrap_err();
        assert!(err.to_string().contains("not-an-ip"), "{err}");
    }
}
