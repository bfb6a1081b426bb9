//! Route selection: which transport carries a recipient on a given attempt.
//!
//! Pure code, no I/O. A [`RouteTable`] is an immutable snapshot (built from the config file
//! or, later, a Redis store). [`select`] walks the account's routes, then the sender
//! domain's, then the global ones, and returns the first route whose every set criterion
//! matches; no match means direct delivery. It runs again at every attempt, so
//! `minimum_attempts` can move a recipient to another transport after failures.

use std::collections::HashMap;

use crate::address::{normalize_domain, DomainError};

/// One entry of `from_domain`/`to_domain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainPattern {
    /// Exactly this domain.
    Exact(String),
    /// This domain and every subdomain (written with a leading ".").
    WithSubdomains(String),
}

impl DomainPattern {
    pub fn parse(text: &str) -> Result<DomainPattern, DomainError> {
        match text.strip_prefix('.') {
            Some(rest) => Ok(DomainPattern::WithSubdomains(normalize_domain(rest)?)),
            None => Ok(DomainPattern::Exact(normalize_domain(text)?)),
        }
    }

    /// `domain` must already be normalized.
    pub fn matches(&self, domain: &str) -> bool {
        match self {
            DomainPattern::Exact(d) => d == domain,
            DomainPattern::WithSubdomains(d) => {
                domain == d
                    || (domain.len() > d.len()
                        && domain.ends_with(d.as_str())
                        && domain.as_bytes()[domain.len() - d.len() - 1] == b'.')
            }
        }
    }

    pub fn to_text(&self) -> String {
        match self {
            DomainPattern::Exact(d) => d.clone(),
            DomainPattern::WithSubdomains(d) => format!(".{d}"),
        }
    }
}

/// A route ready for evaluation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub from_domain: Vec<DomainPattern>,
    pub to_domain: Vec<DomainPattern>,
    pub minimum_attempts: u32,
    /// Transport name; empty means direct delivery.
    pub transport: String,
    /// Transports tried in the same attempt when `transport` cannot take the message.
    pub fallback: Vec<String>,
}

impl Route {
    pub fn new(
        from_domain: &[String],
        to_domain: &[String],
        minimum_attempts: u32,
        transport: &str,
    ) -> Result<Route, DomainError> {
        let parse_all = |list: &[String]| {
            list.iter()
                .map(|d| DomainPattern::parse(d))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Route {
            from_domain: parse_all(from_domain)?,
            to_domain: parse_all(to_domain)?,
            minimum_attempts,
            transport: transport.to_string(),
            fallback: Vec::new(),
        })
    }

    /// The same route with a fallback chain.
    pub fn with_fallback(mut self, fallback: Vec<String>) -> Route {
        self.fallback = fallback;
        self
    }

    /// Why this route does not match, or `None` when it does.
    pub fn mismatch(&self, q: &RouteQuery<'_>) -> Option<Mismatch> {
        if !self.from_domain.is_empty()
            && !self.from_domain.iter().any(|p| p.matches(q.from_domain))
        {
            return Some(Mismatch::FromDomain);
        }
        if !self.to_domain.is_empty() && !self.to_domain.iter().any(|p| p.matches(q.to_domain)) {
            return Some(Mismatch::ToDomain);
        }
        if q.attempts < self.minimum_attempts {
            return Some(Mismatch::Attempts);
        }
        None
    }
}

/// The criterion that made a route not match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mismatch {
    FromDomain,
    ToDomain,
    Attempts,
}

/// Which list a route came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteLevel {
    Account,
    Domain,
    Global,
}

impl RouteLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            RouteLevel::Account => "account",
            RouteLevel::Domain => "domain",
            RouteLevel::Global => "global",
        }
    }
}

/// All routes of a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteTable {
    pub global: Vec<Route>,
    /// Sender domain (normalized) → routes.
    pub domains: HashMap<String, Vec<Route>>,
    /// Account name → routes.
    pub accounts: HashMap<String, Vec<Route>>,
}

/// What a recipient's delivery is evaluated against.
#[derive(Debug, Clone, Copy)]
pub struct RouteQuery<'a> {
    /// The SASL identity that submitted, if any.
    pub account: Option<&'a str>,
    /// Envelope sender domain, normalized (empty for the null sender).
    pub from_domain: &'a str,
    /// Recipient domain, normalized.
    pub to_domain: &'a str,
    /// Attempts already completed for this recipient.
    pub attempts: u32,
}

/// The route that matched and where it was found.
#[derive(Debug, Clone, Copy)]
pub struct Selection<'a> {
    pub level: RouteLevel,
    pub index: usize,
    pub route: &'a Route,
}

impl RouteTable {
    /// The lists consulted for a query, in evaluation order (no allocation: this runs
    /// for every recipient of every attempt).
    pub fn lists<'a>(
        &'a self,
        q: &RouteQuery<'_>,
    ) -> impl Iterator<Item = (RouteLevel, &'a [Route])> {
        let account = q
            .account
            .and_then(|a| self.accounts.get(a))
            .map(|r| (RouteLevel::Account, r.as_slice()));
        let domain = self
            .domains
            .get(q.from_domain)
            .map(|r| (RouteLevel::Domain, r.as_slice()));
        account.into_iter().chain(domain).chain(std::iter::once((
            RouteLevel::Global,
            self.global.as_slice(),
        )))
    }
}

/// The first matching route: account routes, then sender-domain routes, then global
/// routes. `None` means direct delivery.
/// Like [`select`], skipping routes whose transport `usable` refuses (a down transport).
pub fn select_usable<'a>(
    table: &'a RouteTable,
    q: &RouteQuery<'_>,
    usable: impl Fn(&str) -> bool,
) -> Option<Selection<'a>> {
    for (level, routes) in table.lists(q) {
        for (index, route) in routes.iter().enumerate() {
            if route.mismatch(q).is_none() && usable(&route.transport) {
                return Some(Selection {
                    level,
                    index,
                    route,
                });
            }
        }
    }
    None
}

pub fn select<'a>(table: &'a RouteTable, q: &RouteQuery<'_>) -> Option<Selection<'a>> {
    for (level, routes) in table.lists(q) {
        for (index, route) in routes.iter().enumerate() {
            if route.mismatch(q).is_none() {
                return Some(Selection {
                    level,
                    index,
                    route,
                });
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(from: &[&str], to: &[&str], min: u32, t: &str) -> Route {
        let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        Route::new(&v(from), &v(to), min, t).unwrap()
    }

    fn q<'a>(
        account: Option<&'a str>,
        from: &'a str,
        to: &'a str,
        attempts: u32,
    ) -> RouteQuery<'a> {
        RouteQuery {
            account,
            from_domain: from,
            to_domain: to,
            attempts,
        }
    }

    #[test]
    fn patterns() {
        let table = [
            ("example.org", "example.org", true),
            ("example.org", "a.example.org", false),
            (".example.org", "example.org", true),
            (".example.org", "a.b.example.org", true),
            (".example.org", "badexample.org", false),
            ("EXAMPLE.org", "example.org", true),
            ("bücher.de", "xn--bcher-kva.de", true),
        ];
        for (pattern, domain, want) in table {
            assert_eq!(
                DomainPattern::parse(pattern).unwrap().matches(domain),
                want,
                "{pattern} {domain}"
            );
        }
        assert!(DomainPattern::parse("bad domain").is_err());
        assert!(DomainPattern::parse("").is_err());
    }

    #[test]
    fn order_account_domain_global() {
        let mut t = RouteTable {
            global: vec![route(&[], &[], 0, "g")],
            ..Default::default()
        };
        t.domains
            .insert("example.org".into(), vec![route(&[], &[], 0, "d")]);
        t.accounts
            .insert("app".into(), vec![route(&[], &[], 0, "a")]);
        let pick =
            |acct, from| select(&t, &q(acct, from, "x.net", 0)).map(|s| s.route.transport.clone());
        assert_eq!(pick(Some("app"), "example.org").as_deref(), Some("a"));
        assert_eq!(pick(None, "example.org").as_deref(), Some("d"));
        assert_eq!(pick(Some("other"), "other.org").as_deref(), Some("g"));
    }

    #[test]
    fn minimum_attempts_failover() {
        let t = RouteTable {
            global: vec![route(&[], &[], 3, "B"), route(&[], &[], 0, "A")],
            ..Default::default()
        };
        let pick = |n| select(&t, &q(None, "s.org", "r.org", n)).map(|s| s.route.transport.clone());
        assert_eq!(pick(0).as_deref(), Some("A"));
        assert_eq!(pick(2).as_deref(), Some("A"));
        assert_eq!(pick(3).as_deref(), Some("B"));
        assert_eq!(pick(7).as_deref(), Some("B"));
    }

    #[test]
    fn every_set_criterion_must_match() {
        let t = RouteTable {
            global: vec![route(&["s.org"], &[".gmail.com"], 0, "p")],
            ..Default::default()
        };
        assert!(select(&t, &q(None, "s.org", "gmail.com", 0)).is_some());
        assert!(select(&t, &q(None, "s.org", "mx.gmail.com", 0)).is_some());
        assert!(select(&t, &q(None, "other.org", "gmail.com", 0)).is_none());
        assert!(select(&t, &q(None, "s.org", "yahoo.com", 0)).is_none());
        assert_eq!(
            t.global[0].mismatch(&q(None, "s.org", "yahoo.com", 0)),
            Some(Mismatch::ToDomain)
        );
    }

    #[test]
    fn normalization() {
        use crate::address::address_domain;
        assert_eq!(normalize_domain("Example.ORG.").unwrap(), "example.org");
        assert_eq!(address_domain("User@Example.Org"), "example.org");
        assert_eq!(address_domain(""), "");
        assert_eq!(normalize_domain("[127.0.0.1]").unwrap(), "[127.0.0.1]");
    }
}
