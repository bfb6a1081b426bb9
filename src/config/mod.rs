//! The config file: its TOML shape (every key of the product spec, `deny_unknown_fields`),
//! defaults, and validation that reports errors with the file, line and key.
//!
//! Parsing yields [`Config`]; [`Config::validate`] checks what the types cannot (routes
//! naming missing transports, transport fields per kind, domain syntax). The runtime view
//! of routes and transports is built from a validated config by `crate::snapshot`.

pub mod diagnose;
pub mod dkim;
pub mod oauth2;
pub mod source;
pub mod units;
mod validate;

pub use dkim::{DkimConfig, DkimKeyConfig};
pub use oauth2::OAuth2Config;
pub use source::{ConfigSource, EMBEDDED_DEFAULT};
pub use validate::transport_problems;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use toml::Spanned;

/// The config embedded as the default: `config/relaygate.toml` of the source tree.
pub const DEFAULT_CONFIG_PATH: &str = "config/relaygate.toml";

/// A config problem, with where it is when that is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ": line {line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": key `{key}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// A list of errors found in one config file.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// A duration written as text ("7m30s").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        units::parse_duration(&text)
            .map(HumanDuration)
            .map_err(serde::de::Error::custom)
    }
}

/// A size written as text ("25MiB") or as a plain number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanSize(pub u64);

impl<'de> Deserialize<'de> for HumanSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) => Ok(HumanSize(n)),
            Raw::Text(t) => units::parse_size(&t)
                .map(HumanSize)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// One string or a list of strings (`address = "a"` or `address = ["a", "b"]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OneOrMany(pub Vec<String>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(String),
            Many(Vec<String>),
        }
        Ok(match Raw::deserialize(d)? {
            Raw::One(s) => OneOrMany(vec![s]),
            Raw::Many(v) => OneOrMany(v),
        })
    }
}

/// The whole config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// EHLO name, and the name in Received headers and DSNs.
    #[serde(default = "default_hostname")]
    pub hostname: String,
    /// Spool and local state. Relative paths are relative to the working directory.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Where applications submit.
    #[serde(default)]
    pub submission: SubmissionConfig,
    /// The admin HTTP listener (metrics, health, queue API).
    #[serde(default)]
    pub admin: AdminConfig,
    /// DNS resolution for direct delivery.
    #[serde(default)]
    pub dns: DnsConfig,
    /// Queue and retry schedule.
    #[serde(default)]
    pub queue: QueueConfig,
    /// Direct MX delivery.
    #[serde(default)]
    pub direct: DirectConfig,
    /// MTA-STS policy fetching.
    #[serde(default)]
    pub mtasts: MtaStsConfig,
    /// TLS trust shared by every PKIX check.
    #[serde(default)]
    pub tls: TlsConfig,
    /// Where routes, transports and accounts come from.
    #[serde(default)]
    pub store: StoreConfig,
    /// Named transports that routes refer to.
    #[serde(default)]
    pub transports: BTreeMap<String, TransportConfig>,
    /// Global routes, evaluated in order after account and sender-domain routes.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// SASL identities of submitting applications, with their own routes.
    #[serde(default)]
    pub accounts: BTreeMap<String, AccountConfig>,
    /// Sender-domain routes.
    #[serde(default)]
    pub domains: BTreeMap<String, DomainConfig>,
    /// DKIM signing keys.
    #[serde(default)]
    pub dkim: DkimConfig,
}

fn default_hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("data")
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmissionConfig {
    /// Plain listeners (STARTTLS offered when a certificate is set).
    #[serde(default = "default_submission_listen")]
    pub listen: Vec<String>,
    /// Implicit-TLS listeners.
    #[serde(default)]
    pub listen_tls: Vec<String>,
    /// PEM certificate chain for STARTTLS and implicit TLS.
    #[serde(default)]
    pub tls_cert: String,
    /// PEM private key for `tls_cert`.
    #[serde(default)]
    pub tls_key: String,
    /// Networks that may submit without AUTH.
    #[serde(default = "default_trusted_networks")]
    pub trusted_networks: Vec<String>,
    /// Largest message accepted (SIZE, enforced with 552).
    #[serde(default = "default_max_message_size")]
    pub max_message_size: HumanSize,
    /// Most simultaneous client connections; further ones get 421.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Most recipients in one transaction.
    #[serde(default = "default_max_recipients")]
    pub max_recipients: usize,
    /// MAIL FROM allowed without AUTH (clients in `trusted_networks`): `"addr"`,
    /// `"@domain"`, `".domain"`; empty allows any.
    #[serde(default)]
    pub trusted_senders: Vec<String>,
    /// Most simultaneous connections from one client address outside
    /// `trusted_networks`; further ones get 421.
    #[serde(default = "default_max_connections_per_ip")]
    pub max_connections_per_ip: usize,
    /// Idle time waiting for a command line (also: for a client to read our replies).
    #[serde(default = "default_command_timeout")]
    pub command_timeout: HumanDuration,
    /// The whole DATA phase.
    #[serde(default = "default_data_timeout")]
    pub data_timeout: HumanDuration,
    /// The whole connection.
    #[serde(default = "default_session_timeout")]
    pub session_timeout: HumanDuration,
    /// NOOP, RSET, VRFY, HELP and refused RCPT commands tolerated before 421.
    #[serde(default = "default_max_junk_commands")]
    pub max_junk_commands: u32,
    /// Syntax and protocol errors tolerated before 421.
    #[serde(default = "default_max_errors")]
    pub max_errors: u32,
    /// Failed logins for one account from one client address before that pair is
    /// locked out for `auth_lockout`.
    #[serde(default = "default_auth_max_failures")]
    pub auth_max_failures: u32,
    /// Failed logins from one client address (any account; IPv6 per /64) before the
    /// address is locked out; not applied to `trusted_networks`.
    #[serde(default = "default_auth_max_failures_per_ip")]
    pub auth_max_failures_per_ip: u32,
    /// How long a lockout lasts (`relaygate lockouts clear` ends it sooner).
    #[serde(default = "default_auth_lockout")]
    pub auth_lockout: HumanDuration,
}

impl Default for SubmissionConfig {
    fn default() -> Self {
        SubmissionConfig {
            listen: default_submission_listen(),
            listen_tls: Vec::new(),
            tls_cert: String::new(),
            tls_key: String::new(),
            trusted_networks: default_trusted_networks(),
            max_message_size: default_max_message_size(),
            max_connections: default_max_connections(),
            max_recipients: default_max_recipients(),
            trusted_senders: Vec::new(),
            max_connections_per_ip: default_max_connections_per_ip(),
            command_timeout: default_command_timeout(),
            data_timeout: default_data_timeout(),
            session_timeout: default_session_timeout(),
            max_junk_commands: default_max_junk_commands(),
            max_errors: default_max_errors(),
            auth_max_failures: default_auth_max_failures(),
            auth_max_failures_per_ip: default_auth_max_failures_per_ip(),
            auth_lockout: default_auth_lockout(),
        }
    }
}

fn default_submission_listen() -> Vec<String> {
    vec!["127.0.0.1:2525".into()]
}
fn default_trusted_networks() -> Vec<String> {
    vec!["127.0.0.0/8".into(), "::1/128".into()]
}
fn default_max_message_size() -> HumanSize {
    HumanSize(25 << 20)
}
fn default_max_connections() -> usize {
    1000
}
fn default_max_recipients() -> usize {
    1000
}
fn default_max_connections_per_ip() -> usize {
    50
}
fn default_command_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(300))
}
fn default_data_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(600))
}
fn default_session_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(1800))
}
fn default_max_junk_commands() -> u32 {
    100
}
fn default_max_errors() -> u32 {
    20
}
fn default_auth_max_failures() -> u32 {
    10
}
fn default_auth_max_failures_per_ip() -> u32 {
    30
}
fn default_auth_lockout() -> HumanDuration {
    HumanDuration(Duration::from_secs(900))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of the admin HTTP listener; empty disables it.
    #[serde(default = "default_admin_listen")]
    pub listen: String,
    /// File holding the bearer token; required when `listen` is not loopback.
    #[serde(default)]
    pub token_file: String,
    /// Host header names served besides the listen address and `localhost` (requests
    /// naming any other host are refused: DNS rebinding).
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: default_admin_listen(),
            token_file: String::new(),
            allowed_hosts: Vec::new(),
        }
    }
}

fn default_admin_listen() -> String {
    "127.0.0.1:9025".into()
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsConfig {
    /// Resolvers as "IP:PORT"; empty means /etc/resolv.conf.
    #[serde(default)]
    pub nameservers: Vec<String>,
    /// Trust the AD bit of the configured (validating) resolvers.
    #[serde(default)]
    pub trust_ad: bool,
    /// Validate DNSSEC in process.
    #[serde(default)]
    pub validate: bool,
    /// DS/DNSKEY trust anchors for `validate` (default: the root's).
    #[serde(default)]
    pub trust_anchor_file: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// Attempts before a recipient fails with a DSN.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Delay after the first failed attempt; each later delay doubles.
    #[serde(default = "default_first_retry")]
    pub first_retry: HumanDuration,
    /// Explicit delays after the 1st, 2nd, ... failure (the last repeats); when set,
    /// it replaces `first_retry`'s doubling.
    #[serde(default)]
    pub retry_schedule: Vec<HumanDuration>,
    /// Deliveries in flight at once, over all destinations.
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: usize,
    /// Deliveries in flight at once to one destination (transport and domain).
    #[serde(default = "default_max_per_destination")]
    pub max_per_destination: usize,
    /// Deliveries in flight at once through one transport (default: `max_concurrency`).
    #[serde(default)]
    pub max_per_transport: Option<usize>,
    /// The attempt after which a delayed DSN is sent (0 disables it).
    #[serde(default = "default_delay_dsn_after")]
    pub delayed_dsn_after: u32,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            max_attempts: default_max_attempts(),
            first_retry: default_first_retry(),
            retry_schedule: Vec::new(),
            max_concurrency: default_max_concurrency(),
            max_per_destination: default_max_per_destination(),
            max_per_transport: None,
            delayed_dsn_after: default_delay_dsn_after(),
        }
    }
}

fn default_max_attempts() -> u32 {
    8
}
fn default_first_retry() -> HumanDuration {
    HumanDuration(Duration::from_secs(450))
}
fn default_max_concurrency() -> usize {
    100
}
fn default_max_per_destination() -> usize {
    20
}
fn default_delay_dsn_after() -> u32 {
    5
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectConfig {
    /// Remote SMTP port; change only for labs and tests.
    #[serde(default = "default_direct_port")]
    pub port: u16,
    /// MX host name → port; labs and tests only.
    #[serde(default)]
    pub port_overrides: BTreeMap<String, u16>,
    /// Never dial IPv4 addresses.
    #[serde(default)]
    pub disable_ipv4: bool,
    /// Never dial IPv6 addresses.
    #[serde(default)]
    pub disable_ipv6: bool,
}

impl Default for DirectConfig {
    fn default() -> Self {
        DirectConfig {
            port: default_direct_port(),
            port_overrides: BTreeMap::new(),
            disable_ipv4: false,
            disable_ipv6: false,
        }
    }
}

fn default_direct_port() -> u16 {
    25
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MtaStsConfig {
    /// HTTPS port for policy fetches; change only for labs and tests.
    #[serde(default = "default_https_port")]
    pub https_port: u16,
}

impl Default for MtaStsConfig {
    fn default() -> Self {
        MtaStsConfig {
            https_port: default_https_port(),
        }
    }
}

fn default_https_port() -> u16 {
    443
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Extra trusted roots (PEM) for every PKIX check.
    #[serde(default)]
    pub extra_ca_file: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    File,
    Redis,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// "file" (routes from this file) or "redis".
    #[serde(default = "default_store_kind")]
    pub kind: StoreKind,
    /// Redis URL when `kind = "redis"`.
    #[serde(default = "default_redis_url")]
    pub redis_url: String,
    /// Prefix of every Redis key; wrapped in a hash tag (`{relaygate:}`) unless it has
    /// one, so that all keys of a prefix share one Redis Cluster slot.
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    /// `redis_url` names Redis Cluster seed nodes (one URL, or several separated by
    /// commas); a `redis-cluster://host:port,host:port` URL implies it.
    #[serde(default)]
    pub cluster: bool,
    /// How often the gateway reads the store's version counter, to catch a change
    /// whose announcement it missed.
    #[serde(default = "default_check_interval")]
    pub check_interval: HumanDuration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            kind: default_store_kind(),
            redis_url: default_redis_url(),
            key_prefix: default_key_prefix(),
            cluster: false,
            check_interval: default_check_interval(),
        }
    }
}

fn default_check_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}

fn default_store_kind() -> StoreKind {
    StoreKind::File
}
fn default_redis_url() -> String {
    "redis://127.0.0.1:6379/0".into()
}
fn default_key_prefix() -> String {
    "relaygate:".into()
}

/// The kinds of transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    Direct,
    Smtp,
    Submission,
    Submissions,
    Socks,
}

impl TransportKind {
    pub fn default_port(self) -> u16 {
        match self {
            TransportKind::Direct | TransportKind::Smtp | TransportKind::Socks => 25,
            TransportKind::Submission => 587,
            TransportKind::Submissions => 465,
        }
    }

    pub fn is_smarthost(self) -> bool {
        match self {
            TransportKind::Smtp | TransportKind::Submission | TransportKind::Submissions => true,
            TransportKind::Direct | TransportKind::Socks => false,
        }
    }
}

/// A named transport. Which fields apply depends on `kind`; validation says which.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TransportConfig {
    pub kind: TransportKind,
    /// Smarthost name or address.
    #[serde(default)]
    pub host: String,
    /// Smarthost port; default by kind (25 / 587 / 465).
    #[serde(default)]
    pub port: Option<u16>,
    /// Several smarthost hosts (`"name:port"`, or `"name"` for the kind's port), tried in
    /// order within one attempt; instead of `host`/`port`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Extra reply classification, tried before the defaults (docs/replies.md):
    /// `{ "454 4.7.0" = "throttle" }`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub on_reply: BTreeMap<String, String>,
    /// Rate limit(s): `"14/s"`, `"1000/h"`, `"50000/d"`, or a list of them.
    #[serde(
        default,
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub rate_limit: Vec<String>,
    /// DKIM-sign mail sent through this transport (default true; false for a provider
    /// that signs itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dkim: Option<bool>,
    /// Most recipients per transaction (a provider's per-message limit, e.g. 50); the
    /// other recipients of a message go in further transactions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_recipients: Option<usize>,
    /// Consecutive transport-level failures before the transport is down (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub down_after: Option<u32>,
    /// First hold-down once down (default "1m"), doubling up to `down_for_max`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub down_for: Option<String>,
    /// Longest hold-down (default "30m").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub down_for_max: Option<String>,
    /// SASL user name for the smarthost.
    #[serde(default)]
    pub username: String,
    /// File holding the password (first line).
    #[serde(default)]
    pub password_file: String,
    /// Environment variable holding the password.
    #[serde(default)]
    pub password_env: String,
    /// The password itself (discouraged).
    #[serde(default)]
    pub password: String,
    /// SASL mechanisms in preference order.
    #[serde(default)]
    pub mechanisms: Vec<String>,
    /// Accept any certificate (still checks handshake signatures).
    #[serde(default)]
    pub tls_insecure_skip_verify: bool,
    /// Do not use STARTTLS (refused for `submissions`).
    #[serde(default)]
    pub no_starttls: bool,
    /// Reach this smarthost through the named socks transport's proxy.
    #[serde(default)]
    pub socks_proxy: String,
    /// SOCKS5 proxy address(es), tried in order.
    #[serde(
        default,
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub address: Vec<String>,
    /// The proxy's egress IPs (for dnscheck/SPF).
    #[serde(default)]
    pub remote_ips: Vec<String>,
    /// EHLO name used through this proxy.
    #[serde(default)]
    pub remote_hostname: String,
    /// OAuth2 access tokens for the XOAUTH2/OAUTHBEARER mechanisms (`[transports.NAME.oauth2]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth2: Option<OAuth2Config>,
}

/// `"name:port"`, `"[v6]:port"`, or a bare name or address with `default_port`.
pub fn parse_host_port(text: &str, default_port: u16) -> Result<(String, u16), String> {
    relaygate_transports::stream::parse_host_port(text, Some(default_port))
        .ok_or_else(|| format!("{text:?} is not HOST or HOST:PORT"))
}

impl TransportConfig {
    /// The rate limits of this transport (`rate_limit`).
    pub fn rate_limits(&self) -> Result<Vec<crate::queue::rate::Rate>, String> {
        self.rate_limit
            .iter()
            .map(|t| crate::queue::rate::Rate::parse(t).map_err(|e| format!("rate_limit: {e}")))
            .collect()
    }

    /// The circuit breaker of this transport (`down_after`, `down_for`, `down_for_max`).
    pub fn breaker(&self) -> Result<crate::queue::health::Breaker, String> {
        let d = crate::queue::health::Breaker::default();
        let dur = |v: &Option<String>, key: &str, default| match v {
            None => Ok(default),
            Some(t) => units::parse_duration(t).map_err(|e| format!("{key}: {e}")),
        };
        let down_for = dur(&self.down_for, "down_for", d.down_for)?;
        let b = crate::queue::health::Breaker {
            down_after: self.down_after.unwrap_or(d.down_after),
            down_for,
            // Unset: 30 minutes, or down_for when that is longer.
            down_for_max: dur(
                &self.down_for_max,
                "down_for_max",
                d.down_for_max.max(down_for),
            )?,
        };
        if b.down_after == 0 || b.down_for.is_zero() || b.down_for_max < b.down_for {
            return Err(
                "down_after and down_for must be positive, down_for_max at least down_for".into(),
            );
        }
        Ok(b)
    }

    /// The reply rules of this transport: its `on_reply`, then the defaults.
    pub fn reply_rules(&self) -> Result<relaygate_transports::replies::ReplyRules, String> {
        let own = self
            .on_reply
            .iter()
            .map(|(pattern, kind)| {
                relaygate_transports::replies::ReplyRule::parse(pattern, kind)
                    .map_err(|e| format!("on_reply: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(relaygate_transports::replies::ReplyRules::with_overrides(
            own,
        ))
    }

    /// The smarthost's hosts in the order they are tried: `hosts`, else `host`/`port`.
    pub fn smarthost_hosts(&self) -> Result<Vec<(String, u16)>, String> {
        let default_port = self.port.unwrap_or(self.kind.default_port());
        if self.hosts.is_empty() {
            return Ok(vec![(self.host.clone(), default_port)]);
        }
        self.hosts
            .iter()
            .map(|h| parse_host_port(h, default_port).map_err(|e| format!("hosts: {e}")))
            .collect()
    }

    /// `mechanisms` as SASL mechanisms, in the operator's order; empty means the default
    /// preference (`sasl::DEFAULT_CLIENT_PREFERENCE`). An unknown name is an error.
    pub fn sasl_mechanisms(
        &self,
    ) -> Result<
        Vec<relaygate_transports::sasl::Mechanism>,
        relaygate_transports::sasl::UnknownMechanism,
    > {
        self.mechanisms.iter().map(|m| m.parse()).collect()
    }
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    OneOrMany::deserialize(d).map(|v| v.0)
}

/// A route as written in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Sender domains; empty = any; a leading "." includes subdomains.
    #[serde(default)]
    pub from_domain: Vec<String>,
    /// Recipient domains; same syntax.
    #[serde(default)]
    pub to_domain: Vec<String>,
    /// Matches when at least this many attempts are already done.
    #[serde(default)]
    pub minimum_attempts: u32,
    /// Transport name; empty = direct delivery.
    #[serde(default = "empty_spanned")]
    pub transport: Spanned<String>,
    /// Transports tried in the same attempt, in order, when `transport` could not take
    /// the message (connect, greeting, TLS, auth, throttle, quota failures).
    #[serde(default)]
    pub fallback: Vec<String>,
}

fn empty_spanned() -> Spanned<String> {
    Spanned::new(0..0, String::new())
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountConfig {
    /// File holding the account's password.
    #[serde(default)]
    pub password_file: String,
    /// Environment variable holding the account's password.
    #[serde(default)]
    pub password_env: String,
    /// A SCRAM-SHA-256 verifier (RFC 5803 form, from `relaygate account hash`) instead
    /// of a password.
    #[serde(default)]
    pub scram_sha256: String,
    /// A SCRAM-SHA-1 verifier (RFC 5803 form).
    #[serde(default)]
    pub scram_sha1: String,
    /// CRAM-MD5 HMAC state (`CRAM-MD5$inner:outer`).
    #[serde(default)]
    pub cram_md5: String,
    /// MAIL FROM this account may use: `"addr"`, `"@domain"`, `".domain"` (and
    /// subdomains); empty allows any (check-config warns).
    #[serde(default)]
    pub allowed_senders: Vec<String>,
    /// Submission rate limit(s) of this account (`"10/s"`, or a list): a MAIL over it is
    /// answered `452 4.7.0`.
    #[serde(default, deserialize_with = "one_or_many")]
    pub rate_limit: Vec<String>,
    /// Routes for mail this account submits.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainConfig {
    /// Routes for mail from this sender domain.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
}

/// Converts a byte offset in `text` into a 1-based line number.
pub fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Finds the key named in a serde message such as "unknown field `foo`, expected ...".
fn key_in_message(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(message[start..start + len].to_string())
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: path.to_path_buf(),
                line: None,
                key: None,
                message: format!("cannot read: {e}"),
            }])
        })?;
        Config::parse(path, &text)
    }

    /// Parses and validates config text; `path` is only used in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigErrors> {
        match toml::from_str::<Config>(text) {
            Ok(config) => {
                let errors = config.validate(path, text);
                if errors.is_empty() {
                    Ok(config)
                } else {
                    Err(ConfigErrors(errors))
                }
            }
            Err(_) => Err(ConfigErrors(diagnose::all_errors(path, text))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigErrors> {
        Config::parse(Path::new("test.toml"), text)
    }

    #[test]
    fn empty_file_gets_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.submission.listen, vec!["127.0.0.1:2525"]);
        assert_eq!(c.admin.listen, "127.0.0.1:9025");
        assert_eq!(c.queue.max_attempts, 8);
        assert_eq!(c.queue.first_retry.0, Duration::from_secs(450));
        assert_eq!(c.submission.max_message_size.0, 25 << 20);
        assert_eq!(c.store.kind, StoreKind::File);
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let e = parse("hostname = \"a\"\n\n[queue]\nmax_atempts = 3\n").unwrap_err();
        assert_eq!(e.0.len(), 1);
        assert_eq!(e.0[0].line, Some(4));
        assert_eq!(e.0[0].key.as_deref(), Some("queue.max_atempts"));
    }

    #[test]
    fn route_to_missing_transport_names_line() {
        let text = "[transports.a]\nkind = \"smtp\"\nhost = \"h\"\n\n[[routes]]\ntransport = \"a\"\n\n[[routes]]\nto_domain = [\"x.org\"]\ntransport = \"b\"\n";
        let e = parse(text).unwrap_err();
        assert_eq!(e.0.len(), 1, "{e}");
        assert_eq!(e.0[0].line, Some(10));
        assert!(e.to_string().contains("\"b\""), "{e}");
    }

    #[test]
    fn transport_kind_checks() {
        let e = parse("[transports.s]\nkind = \"submissions\"\nhost = \"h\"\nno_starttls = true\n")
            .unwrap_err();
        assert!(e.to_string().contains("no_starttls"), "{e}");
        let e = parse("[transports.p]\nkind = \"socks\"\n").unwrap_err();
        assert!(e.to_string().contains("address"), "{e}");
        let c = parse("[transports.p]\nkind = \"socks\"\naddress = \"127.0.0.1:1080\"\n").unwrap();
        assert_eq!(c.transports["p"].address, vec!["127.0.0.1:1080"]);
    }

    #[test]
    fn sasl_mechanism_names() {
        let base = "[transports.p]\nkind = \"submission\"\nhost = \"h\"\nusername = \"u\"\npassword_env = \"PW\"\n";
        let c = parse(&format!(
            "{base}mechanisms = [\"cram-md5\", \"SCRAM-SHA-256\"]\n"
        ))
        .unwrap();
        use relaygate_transports::sasl::Mechanism;
        assert_eq!(
            c.transports["p"].sasl_mechanisms().unwrap(),
            vec![Mechanism::CramMd5, Mechanism::ScramSha256]
        );
        let e = parse(&format!("{base}mechanisms = [\"XOAUTH2\"]\n")).unwrap_err();
        assert!(e.to_string().contains("XOAUTH2"), "{e}");
        assert_eq!(e.0[0].line, Some(1));
        let e = parse("[transports.p]\nkind = \"submission\"\nhost = \"h\"\nusername = \"u\"\n")
            .unwrap_err();
        assert!(e.to_string().contains("no password_file"), "{e}");
    }

    #[test]
    fn message_size_over_the_spool_limit_is_refused() {
        let e = parse("hostname = \"a\"\n[submission]\nmax_message_size = \"5GiB\"\n").unwrap_err();
        assert_eq!(e.0.len(), 1, "{e}");
        assert_eq!(e.0[0].line, Some(3));
        assert_eq!(e.0[0].key.as_deref(), Some("submission.max_message_size"));
        assert!(e.to_string().contains("5368709120"), "{e}");
        let c = parse("[submission]\nmax_message_size = \"1GiB\"\n").unwrap();
        assert_eq!(c.submission.max_message_size.0, 1 << 30);
    }

    #[test]
    fn bad_domain_in_route() {
        let e = parse("[[routes]]\nto_domain = [\"bad domain\"]\n").unwrap_err();
        assert!(e.to_string().contains("bad domain"), "{e}");
    }
}
