//! [`StoreData`]: the whole content of a store (transports, the three levels of routes,
//! accounts) as one immutable value, the same for the file and the Redis store, and its
//! validation as a whole.
//!
//! A route is a [`RouteSpec`], the JSON object of a Redis route list (and the shape of a
//! `[[routes]]` table). Validation reuses the config file's rules
//! ([`crate::config::transport_problems`], [`DomainPattern::parse`]) and names every
//! problem by where it is: `routes:domain:example.org[2]`, `transports[provider]`,
//! `accounts[app1]`.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::accounts::{read_secret, AccountRecord};
use crate::address::{normalize_domain, DomainError};
use crate::config::{transport_problems, Config, RouteConfig, TransportConfig};
use crate::routes::{DomainPattern, Route, RouteTable};

/// A route as stored: the JSON object of a route list entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// Sender domains; empty = any; a leading "." includes subdomains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_domain: Vec<String>,
    /// Recipient domains; same syntax.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to_domain: Vec<String>,
    /// Matches when at least this many attempts are already done.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub minimum_attempts: u32,
    /// Transport name; empty = direct delivery.
    #[serde(default)]
    pub transport: String,
    /// Transports tried in the same attempt when `transport` could not take the message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallback: Vec<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl RouteSpec {
    fn from_config(r: &RouteConfig) -> RouteSpec {
        RouteSpec {
            from_domain: r.from_domain.clone(),
            to_domain: r.to_domain.clone(),
            minimum_attempts: r.minimum_attempts,
            transport: r.transport.get_ref().clone(),
            fallback: r.fallback.clone(),
        }
    }

    /// The route ready for evaluation.
    pub fn to_route(&self) -> Result<Route, DomainError> {
        Ok(Route::new(
            &self.from_domain,
            &self.to_domain,
            self.minimum_attempts,
            &self.transport,
        )?
        .with_fallback(self.fallback.clone()))
    }

    /// One line for listings: `to_domain=[gmail.com] minimum_attempts=3 -> provider`.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if !self.from_domain.is_empty() {
            parts.push(format!("from_domain=[{}]", self.from_domain.join(", ")));
        }
        if !self.to_domain.is_empty() {
            parts.push(format!("to_domain=[{}]", self.to_domain.join(", ")));
        }
        if self.minimum_attempts > 0 {
            parts.push(format!("minimum_attempts={}", self.minimum_attempts));
        }
        if parts.is_empty() {
            parts.push("(any)".into());
        }
        let target = if self.transport.is_empty() {
            "(direct)"
        } else {
            &self.transport
        };
        if self.fallback.is_empty() {
            format!("{} -> {target}", parts.join(" "))
        } else {
            format!(
                "{} -> {target} (fallback {})",
                parts.join(" "),
                self.fallback.join(", ")
            )
        }
    }
}

/// Which route list: the names follow the Redis keys (`routes:global`, ...).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RouteList {
    Global,
    /// A sender domain (normalized: lowercase ASCII).
    Domain(String),
    /// An account (SASL identity).
    Account(String),
}

impl fmt::Display for RouteList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteList::Global => write!(f, "routes:global"),
            RouteList::Domain(d) => write!(f, "routes:domain:{d}"),
            RouteList::Account(a) => write!(f, "routes:account:{a}"),
        }
    }
}

/// One thing wrong with store data, and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `routes:global[1]`, `transports[provider]`, `accounts[app1]`, ...
    pub location: String,
    pub message: String,
}

impl Problem {
    pub fn new(location: impl Into<String>, message: impl fmt::Display) -> Problem {
        Problem {
            location: location.into(),
            message: message.to_string(),
        }
    }
}

impl std::error::Error for Problem {}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

/// Formats a list of problems, one per line.
pub fn format_problems(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(Problem::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Everything a store holds. Immutable once loaded; a change builds a new value.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreData {
    #[serde(default)]
    pub transports: BTreeMap<String, TransportConfig>,
    /// Global routes, in evaluation order.
    #[serde(default)]
    pub global: Vec<RouteSpec>,
    /// Sender domain (normalized) → routes.
    #[serde(default)]
    pub domains: BTreeMap<String, Vec<RouteSpec>>,
    /// Account → routes.
    #[serde(default)]
    pub accounts_routes: BTreeMap<String, Vec<RouteSpec>>,
    /// Account → stored credentials (verifiers, never a plaintext password).
    #[serde(default)]
    pub accounts: BTreeMap<String, AccountRecord>,
    /// DKIM keys by the domain they sign for (as written in `domain`, `.` included);
    /// the key material is in the files they name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dkim: BTreeMap<String, Vec<crate::config::DkimKeyConfig>>,
}

impl StoreData {
    /// The routes of one list (empty when it does not exist).
    pub fn list(&self, list: &RouteList) -> &[RouteSpec] {
        let found = match list {
            RouteList::Global => Some(&self.global),
            RouteList::Domain(d) => self.domains.get(d),
            RouteList::Account(a) => self.accounts_routes.get(a),
        };
        found.map(Vec::as_slice).unwrap_or(&[])
    }

    /// The routes of one list, created empty when missing.
    pub fn list_mut(&mut self, list: &RouteList) -> &mut Vec<RouteSpec> {
        match list {
            RouteList::Global => &mut self.global,
            RouteList::Domain(d) => self.domains.entry(d.clone()).or_default(),
            RouteList::Account(a) => self.accounts_routes.entry(a.clone()).or_default(),
        }
    }

    /// Drops empty domain and account lists (an empty list is no list).
    pub fn prune_empty_lists(&mut self) {
        self.domains.retain(|_, l| !l.is_empty());
        self.accounts_routes.retain(|_, l| !l.is_empty());
    }

    /// Every non-empty list: accounts, then domains, then global.
    pub fn lists(&self) -> Vec<(RouteList, &[RouteSpec])> {
        let mut out: Vec<(RouteList, &[RouteSpec])> = Vec::new();
        for (a, l) in &self.accounts_routes {
            out.push((RouteList::Account(a.clone()), l));
        }
        for (d, l) in &self.domains {
            out.push((RouteList::Domain(d.clone()), l));
        }
        out.push((RouteList::Global, &self.global));
        out
    }

    /// How many routes there are over all lists.
    pub fn route_count(&self) -> usize {
        self.global.len()
            + self.domains.values().map(Vec::len).sum::<usize>()
            + self.accounts_routes.values().map(Vec::len).sum::<usize>()
    }

    /// Checks the data as a whole; every problem is reported, each with its location.
    pub fn validate(&self) -> Result<(), Vec<Problem>> {
        let mut problems = Vec::new();
        for (name, t) in &self.transports {
            let at = format!("transports[{name}]");
            if name.trim().is_empty() {
                problems.push(Problem::new(&at, "a transport name must not be empty"));
            }
            for p in transport_problems(name, t, &self.transports) {
                problems.push(Problem::new(&at, p));
            }
        }
        for domain in self.domains.keys() {
            match normalize_domain(domain) {
                Ok(n) if &n == domain => {}
                Ok(n) => problems.push(Problem::new(
                    RouteList::Domain(domain.clone()).to_string(),
                    format!("domain must be written in lowercase ASCII form: {n:?}"),
                )),
                Err(e) => problems.push(Problem::new(
                    RouteList::Domain(domain.clone()).to_string(),
                    e.to_string(),
                )),
            }
        }
        // DKIM entries: their form only (the key files are read where the gateway runs).
        for (domain, keys) in &self.dkim {
            for (i, k) in keys.iter().enumerate() {
                let at = format!("dkim:{domain}[{i}]");
                if k.domain != *domain {
                    problems.push(Problem::new(
                        &at,
                        format!("domain {:?} in a list for {domain:?}", k.domain),
                    ));
                }
                if let Err(e) = crate::dkim::check_entry(k) {
                    problems.push(Problem::new(&at, e.to_string()));
                }
            }
        }
        for account in self.accounts_routes.keys().chain(self.accounts.keys()) {
            if account.is_empty() {
                problems.push(Problem::new(
                    "accounts",
                    "an account name must not be empty",
                ));
            }
        }
        for (list, routes) in self.lists() {
            for (i, r) in routes.iter().enumerate() {
                let at = format!("{list}[{i}]");
                if !r.transport.is_empty() && !self.transports.contains_key(&r.transport) {
                    problems.push(Problem::new(
                        &at,
                        format!(
                            "route names transport {:?}, which is not defined",
                            r.transport
                        ),
                    ));
                }
                for f in &r.fallback {
                    if f != crate::snapshot::DIRECT && !self.transports.contains_key(f) {
                        problems.push(Problem::new(
                            &at,
                            format!("fallback names transport {f:?}, which is not defined"),
                        ));
                    }
                }
                for d in r.from_domain.iter().chain(&r.to_domain) {
                    if let Err(e) = DomainPattern::parse(d) {
                        problems.push(Problem::new(&at, e.to_string()));
                    }
                }
            }
        }
        for (name, record) in &self.accounts {
            let at = format!("accounts[{name}]");
            if *record == AccountRecord::default() {
                problems.push(Problem::new(&at, "no verifier is set"));
            } else if let Err(e) = record.credentials() {
                problems.push(Problem::new(&at, e));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// The route table the queue evaluates. Call on validated data.
    pub fn route_table(&self) -> Result<RouteTable, Problem> {
        let convert = |list: RouteList, routes: &[RouteSpec]| {
            routes
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    r.to_route()
                        .map_err(|e| Problem::new(format!("{list}[{i}]"), e))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let mut table = RouteTable {
            global: convert(RouteList::Global, &self.global)?,
            ..Default::default()
        };
        for (d, l) in &self.domains {
            let routes = convert(RouteList::Domain(d.clone()), l)?;
            let domain = normalize_domain(d)
                .map_err(|e| Problem::new(RouteList::Domain(d.clone()).to_string(), e))?;
            table.domains.insert(domain, routes);
        }
        for (a, l) in &self.accounts_routes {
            let routes = convert(RouteList::Account(a.clone()), l)?;
            table.accounts.insert(a.clone(), routes);
        }
        Ok(table)
    }

    /// The store content of a (validated) config file. With `with_accounts`, each
    /// account's verifiers are taken from the file or derived from its password (read
    /// from `password_file`/`password_env`); without, accounts are left out (routes of
    /// accounts are always kept).
    pub fn from_config(config: &Config, with_accounts: bool) -> Result<StoreData, Vec<Problem>> {
        let mut data = StoreData {
            transports: config.transports.clone(),
            global: config.routes.iter().map(RouteSpec::from_config).collect(),
            ..Default::default()
        };
        for k in &config.dkim.keys {
            data.dkim
                .entry(k.domain.clone())
                .or_default()
                .push(k.clone());
        }
        let mut problems = Vec::new();
        for (domain, d) in &config.domains {
            match normalize_domain(domain) {
                Ok(n) => {
                    data.domains
                        .entry(n)
                        .or_default()
                        .extend(d.routes.iter().map(RouteSpec::from_config));
                }
                Err(e) => problems.push(Problem::new(format!("domains.{domain:?}"), e.to_string())),
            }
        }
        for (name, a) in &config.accounts {
            if !a.routes.is_empty() {
                data.accounts_routes.insert(
                    name.clone(),
                    a.routes.iter().map(RouteSpec::from_config).collect(),
                );
            }
            if !with_accounts {
                continue;
            }
            let at = format!("accounts.{name}");
            let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_string());
            let given = AccountRecord {
                scram_sha256: non_empty(&a.scram_sha256),
                scram_sha1: non_empty(&a.scram_sha1),
                cram_md5: non_empty(&a.cram_md5),
                ..Default::default()
            };
            if given != AccountRecord::default() {
                let record = AccountRecord {
                    allowed_senders: a.allowed_senders.clone(),
                    rate_limit: a.rate_limit.clone(),
                    ..given
                };
                data.accounts.insert(name.clone(), record);
                continue;
            }
            match read_secret(&a.password_file, &a.password_env, &at) {
                Ok(Some(pw)) => match AccountRecord::from_password(&pw) {
                    Ok(mut r) => {
                        r.allowed_senders = a.allowed_senders.clone();
                        r.rate_limit = a.rate_limit.clone();
                        data.accounts.insert(name.clone(), r);
                    }
                    Err(e) => problems.push(Problem::new(&at, e)),
                },
                Ok(None) => problems.push(Problem::new(
                    &at,
                    "set password_file, password_env or verifiers",
                )),
                Err(e) => problems.push(Problem::new(&at, e)),
            }
        }
        if problems.is_empty() {
            Ok(data)
        } else {
            Err(problems)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TransportKind;

    fn smtp(host: &str) -> TransportConfig {
        serde_json::from_value(serde_json::json!({"kind": "smtp", "host": host})).unwrap()
    }

    fn route(t: &str) -> RouteSpec {
        RouteSpec {
            transport: t.into(),
            ..Default::default()
        }
    }

    #[test]
    fn route_json_is_compact_and_strict() {
        let r = RouteSpec {
            to_domain: vec!["gmail.com".into()],
            minimum_attempts: 3,
            transport: "B".into(),
            ..Default::default()
        };
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(
            json,
            r#"{"to_domain":["gmail.com"],"minimum_attempts":3,"transport":"B"}"#
        );
        assert_eq!(serde_json::from_str::<RouteSpec>(&json).unwrap(), r);
        assert!(serde_json::from_str::<RouteSpec>(r#"{"transprt":"B"}"#).is_err());
    }

    #[test]
    fn validation_names_the_route() {
        let mut d = StoreData::default();
        d.transports.insert("A".into(), smtp("a.example"));
        d.global = vec![route("A"), route("missing")];
        d.domains
            .insert("example.org".into(), vec![route(""), route("nope")]);
        let problems = d.validate().unwrap_err();
        let text = format_problems(&problems);
        assert!(
            text.contains("routes:global[1]: route names transport \"missing\""),
            "{text}"
        );
        assert!(text.contains("routes:domain:example.org[1]"), "{text}");
        assert_eq!(problems.len(), 2, "{text}");
    }

    #[test]
    fn validation_checks_transports_domains_accounts() {
        let mut d = StoreData::default();
        let mut bad = smtp("");
        bad.kind = TransportKind::Submission;
        d.transports.insert("s".into(), bad);
        d.domains.insert("Example.ORG".into(), vec![]);
        d.domains.insert("bad domain".into(), vec![]);
        d.global = vec![RouteSpec {
            to_domain: vec!["no spaces.org".into()],
            ..Default::default()
        }];
        d.accounts.insert("app".into(), AccountRecord::default());
        let text = format_problems(&d.validate().unwrap_err());
        for want in [
            "transports[s]",
            "routes:domain:Example.ORG",
            "routes:domain:bad domain",
            "routes:global[0]",
            "accounts[app]: no verifier",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
    }

    #[test]
    fn from_config_and_route_table() {
        let text = r#"
[transports.A]
kind = "smtp"
host = "a"
[[routes]]
minimum_attempts = 3
transport = "A"
[domains."Example.ORG"]
[[domains."Example.ORG".routes]]
to_domain = [".example.net"]
transport = "A"
[accounts.app]
scram_sha256 = "x"
[[accounts.app.routes]]
transport = ""
"#;
        let c = Config::parse(std::path::Path::new("t.toml"), text).unwrap();
        let d = StoreData::from_config(&c, false).unwrap();
        assert_eq!(d.global[0].minimum_attempts, 3);
        assert_eq!(d.domains["example.org"][0].to_domain, vec![".example.net"]);
        assert_eq!(d.accounts_routes["app"].len(), 1);
        assert!(d.accounts.is_empty());
        d.validate().unwrap();
        let t = d.route_table().unwrap();
        assert_eq!(t.global.len(), 1);
        assert!(t.domains.contains_key("example.org"));
        let json = serde_json::to_string(&d).unwrap();
        let back: StoreData = serde_json::from_str(&json).unwrap();
        assert_eq!(serde_json::to_string(&back).unwrap(), json);
    }
}
