//! `routes explain`: a dry run of route selection that says which route wins (which
//! list, which index), the transport, and why every route before it did not match.
//!
//! It walks the same lists in the same order as [`crate::routes::select`] and asks each
//! route [`crate::routes::Route::mismatch`], so the answer is the queue's answer.

use std::fmt::Write as _;

use super::data::{RouteList, RouteSpec, StoreData};
use crate::address::address_domain;
use crate::routes::{Mismatch, RouteLevel, RouteQuery};

/// One route looked at, in evaluation order.
#[derive(Debug, Clone)]
pub struct Step {
    pub list: RouteList,
    pub index: usize,
    pub route: RouteSpec,
    /// `None`: this route matched (it is the last step).
    pub mismatch: Option<Mismatch>,
}

/// The outcome of a dry run.
#[derive(Debug, Clone)]
pub struct Explanation {
    pub account: Option<String>,
    pub from_domain: String,
    pub to_domain: String,
    /// The attempt being evaluated (1 = the first).
    pub attempt: u32,
    /// Lists consulted, in order, with whether they exist.
    pub lists: Vec<(RouteList, usize)>,
    pub steps: Vec<Step>,
}

impl Explanation {
    /// The route that matched, if any.
    pub fn chosen(&self) -> Option<&Step> {
        self.steps.last().filter(|s| s.mismatch.is_none())
    }

    /// The transport used: the matching route's, or direct delivery.
    pub fn transport(&self) -> &str {
        match self.chosen() {
            Some(s) if !s.route.transport.is_empty() => &s.route.transport,
            _ => "direct",
        }
    }
}

fn list_for(level: RouteLevel, account: Option<&str>, from_domain: &str) -> RouteList {
    match level {
        RouteLevel::Account => RouteList::Account(account.unwrap_or_default().to_string()),
        RouteLevel::Domain => RouteList::Domain(from_domain.to_string()),
        RouteLevel::Global => RouteList::Global,
    }
}

/// Evaluates like the queue does for `attempt` (1-based: attempt N has N-1 done).
pub fn explain(
    data: &StoreData,
    account: Option<&str>,
    from: &str,
    to: &str,
    attempt: u32,
) -> Result<Explanation, crate::store::data::Problem> {
    let table = data.route_table()?;
    let from_domain = address_domain(from);
    let to_domain = address_domain(to);
    let q = RouteQuery {
        account,
        from_domain: &from_domain,
        to_domain: &to_domain,
        attempts: attempt.saturating_sub(1),
    };
    let mut out = Explanation {
        account: account.map(str::to_string),
        from_domain: from_domain.clone(),
        to_domain: to_domain.clone(),
        attempt,
        lists: Vec::new(),
        steps: Vec::new(),
    };
    if let Some(a) = account {
        out.lists.push((
            RouteList::Account(a.to_string()),
            data.list(&RouteList::Account(a.into())).len(),
        ));
    }
    if !from_domain.is_empty() {
        let list = RouteList::Domain(from_domain.clone());
        let n = data.list(&list).len();
        out.lists.push((list, n));
    }
    out.lists.push((RouteList::Global, data.global.len()));
    for (level, routes) in table.lists(&q) {
        let list = list_for(level, account, &from_domain);
        let specs = data.list(&list);
        for (index, route) in routes.iter().enumerate() {
            let mismatch = route.mismatch(&q);
            out.steps.push(Step {
                list: list.clone(),
                index,
                route: specs.get(index).cloned().unwrap_or_default(),
                mismatch,
            });
            if mismatch.is_none() {
                return Ok(out);
            }
        }
    }
    Ok(out)
}

fn why(step: &Step, e: &Explanation) -> String {
    match step.mismatch {
        None => "matches".into(),
        Some(Mismatch::FromDomain) => format!(
            "from_domain: sender domain {:?} is not in [{}]",
            e.from_domain,
            step.route.from_domain.join(", ")
        ),
        Some(Mismatch::ToDomain) => format!(
            "to_domain: recipient domain {:?} is not in [{}]",
            e.to_domain,
            step.route.to_domain.join(", ")
        ),
        Some(Mismatch::Attempts) => format!(
            "minimum_attempts {}: only {} attempt(s) done before attempt {}",
            step.route.minimum_attempts,
            e.attempt.saturating_sub(1),
            e.attempt
        ),
    }
}

/// Human-readable report.
pub fn render(e: &Explanation) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "query: account {}, sender domain {}, recipient domain {}, attempt {} ({} done)",
        e.account.as_deref().unwrap_or("(none)"),
        if e.from_domain.is_empty() {
            "(null sender)"
        } else {
            &e.from_domain
        },
        e.to_domain,
        e.attempt,
        e.attempt.saturating_sub(1)
    );
    let order: Vec<String> = e.lists.iter().map(|(l, n)| format!("{l} ({n})")).collect();
    let _ = writeln!(s, "lists, in order: {}", order.join(" -> "));
    for step in &e.steps {
        let mark = if step.mismatch.is_none() {
            "MATCH"
        } else {
            "skip "
        };
        let _ = writeln!(
            s,
            "  {mark} {}[{}] {}: {}",
            step.list,
            step.index,
            step.route.summary(),
            why(step, e)
        );
    }
    match e.chosen() {
        Some(c) => {
            let _ = writeln!(
                s,
                "chosen: {}[{}] -> transport {}",
                c.list,
                c.index,
                e.transport()
            );
            for (n, f) in c.route.fallback.iter().enumerate() {
                let before = if n == 0 {
                    e.transport()
                } else {
                    c.route.fallback[n - 1].as_str()
                };
                let _ = writeln!(
                    s,
                    "  then fallback {f}, in the same attempt, when {before} could not take the \
                     message (connect, greeting, TLS, auth, throttle or quota failure; never \
                     after a recipient was accepted or refused)"
                );
            }
        }
        None => {
            let _ = writeln!(s, "chosen: no route matches -> transport direct");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(to: &[&str], min: u32, t: &str) -> RouteSpec {
        RouteSpec {
            to_domain: to.iter().map(|s| s.to_string()).collect(),
            minimum_attempts: min,
            transport: t.into(),
            ..Default::default()
        }
    }

    fn data() -> StoreData {
        let mut d = StoreData::default();
        d.accounts_routes
            .insert("app".into(), vec![r(&["yahoo.com"], 0, "acct")]);
        d.domains
            .insert("example.org".into(), vec![r(&[], 3, "dom")]);
        d.global = vec![r(&[], 3, "B"), r(&[], 0, "A")];
        d
    }

    #[test]
    fn fallback_chain_is_explained() {
        let mut d = StoreData::default();
        d.global.push(RouteSpec {
            transport: "primary".into(),
            fallback: vec!["backup".into(), "last".into()],
            ..Default::default()
        });
        let e = explain(&d, None, "a@s.test", "b@d.test", 1).unwrap();
        let t = render(&e);
        assert!(
            t.contains("then fallback backup, in the same attempt, when primary"),
            "{t}"
        );
        assert!(
            t.contains("then fallback last, in the same attempt, when backup"),
            "{t}"
        );
    }

    #[test]
    fn failover_and_reasons() {
        let d = data();
        let e = explain(&d, None, "a@other.org", "b@gmail.com", 1).unwrap();
        assert_eq!(e.transport(), "A");
        let c = e.chosen().unwrap();
        assert_eq!((c.list.clone(), c.index), (RouteList::Global, 1));
        assert_eq!(e.steps[0].mismatch, Some(Mismatch::Attempts));
        let e = explain(&d, None, "a@other.org", "b@gmail.com", 4).unwrap();
        assert_eq!(e.transport(), "B");
        let text = render(&e);
        assert!(
            text.contains("chosen: routes:global[0] -> transport B"),
            "{text}"
        );
    }

    #[test]
    fn order_account_domain_global() {
        let d = data();
        let e = explain(&d, Some("app"), "a@Example.org", "b@yahoo.com", 4).unwrap();
        assert_eq!(e.transport(), "acct");
        let e = explain(&d, Some("app"), "a@example.org", "b@gmail.com", 4).unwrap();
        assert_eq!(e.transport(), "dom");
        let text = render(&e);
        assert!(
            text.contains("skip  routes:account:app[0]") && text.contains("to_domain"),
            "{text}"
        );
        let e = explain(&d, Some("app"), "a@example.org", "b@gmail.com", 2).unwrap();
        assert_eq!(e.transport(), "A");
        assert_eq!(e.steps.len(), 4);
    }

    #[test]
    fn no_match_is_direct() {
        let e = explain(&StoreData::default(), None, "", "b@x.org", 1).unwrap();
        assert!(e.chosen().is_none());
        assert_eq!(e.transport(), "direct");
        assert!(render(&e).contains("no route matches"));
    }
}
