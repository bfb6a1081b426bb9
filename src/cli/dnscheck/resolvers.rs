//! The two resolvers `dnscheck` uses, both built from `[dns]` so the command works
//! against a lab DNS as well as the real one:
//!
//! - our [`HickoryResolver`] (through the [`Resolver`](relaygate_transports::dns::Resolver)
//!   trait) for PTR, MX, MTA-STS, TLSA and the raw SPF TXT records, with the DNSSEC mode
//!   of `[dns]` so TLSA answers can say whether they were authentic;
//! - mail-auth's `MessageAuthenticator` for SPF evaluation. It runs on hickory-resolver
//!   (the same hickory 0.26 family as ours), pointed at the same nameservers.
//!
//! Without a config file both use the system's resolvers (`/etc/resolv.conf`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Context};
use mail_auth::hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use mail_auth::MessageAuthenticator;
use relaygate_transports::dns::{DnssecMode, HickoryConfig, HickoryResolver};

use crate::config::DnsConfig;

/// Bound on one lookup.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// `dns.nameservers` as socket addresses.
pub fn nameservers(dns: &DnsConfig) -> anyhow::Result<Vec<SocketAddr>> {
    dns.nameservers
        .iter()
        .map(|n| {
            n.parse::<SocketAddr>()
                .map_err(|_| anyhow!("dns.nameservers: {n:?} is not an IP:PORT address"))
        })
        .collect()
}

/// The DNSSEC mode `[dns]` asks for (in-process validation wins over `trust_ad`).
pub fn dnssec_mode(dns: &DnsConfig) -> DnssecMode {
    if dns.validate {
        let anchor = &dns.trust_anchor_file;
        DnssecMode::Validate {
            trust_anchor: (!anchor.is_empty()).then(|| PathBuf::from(anchor)),
        }
    } else if dns.trust_ad {
        DnssecMode::TrustAd
    } else {
        DnssecMode::Plain
    }
}

/// The mode's name in reports.
pub fn mode_name(mode: &DnssecMode) -> &'static str {
    match mode {
        DnssecMode::Plain => "plain",
        DnssecMode::TrustAd => "trust_ad",
        DnssecMode::Validate { .. } => "validate",
    }
}

/// Our resolver, as delivery builds it (no cache: every answer is fresh).
pub fn hickory(dns: &DnsConfig) -> anyhow::Result<HickoryResolver> {
    HickoryResolver::new(HickoryConfig {
        nameservers: nameservers(dns)?,
        mode: dnssec_mode(dns),
        timeout: LOOKUP_TIMEOUT,
        cache_size: 0,
    })
    .context("setting up DNS (set dns.nameservers to choose resolvers)")
}

/// mail-auth's resolver on the same nameservers (UDP, and TCP for truncated answers).
pub fn spf_evaluator(dns: &DnsConfig) -> anyhow::Result<MessageAuthenticator> {
    let servers = nameservers(dns)?;
    if servers.is_empty() {
        return MessageAuthenticator::new_system_conf()
            .context("setting up the SPF resolver from /etc/resolv.conf");
    }
    let name_servers = servers
        .iter()
        .map(|addr| {
            let mut udp = ConnectionConfig::udp();
            udp.port = addr.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = addr.port();
            NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
        })
        .collect();
    let config = ResolverConfig::from_parts(None, Vec::new(), name_servers);
    let mut opts = ResolverOpts::default();
    opts.timeout = LOOKUP_TIMEOUT;
    opts.attempts = 1;
    // Only DNS answers count for SPF, never /etc/hosts.
    opts.use_hosts_file = ResolveHosts::Never;
    MessageAuthenticator::new(config, opts).context("setting up the SPF resolver")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_and_nameservers() {
        let mut dns = DnsConfig::default();
        assert_eq!(mode_name(&dnssec_mode(&dns)), "plain");
        dns.trust_ad = true;
        assert_eq!(mode_name(&dnssec_mode(&dns)), "trust_ad");
        dns.validate = true;
        assert_eq!(mode_name(&dnssec_mode(&dns)), "validate");
        dns.nameservers = vec!["127.0.0.1:5353".into()];
        assert_eq!(nameservers(&dns).unwrap()[0].port(), 5353);
        dns.nameservers = vec!["localhost".into()];
        let e = nameservers(&dns).unwrap_err().to_string();
        assert!(e.contains("IP:PORT"), "{e}");
    }
}
