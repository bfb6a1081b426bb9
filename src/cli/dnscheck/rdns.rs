//! Reverse DNS of the egress IPs against the name each one says in EHLO,
//! forward-confirmed: the IP's PTR must name the EHLO host, and that host's A/AAAA
//! records must include the IP (the "iprev" check of RFC 8601 §3; many receivers refuse
//! or junk mail from IPs that fail it).

use std::net::IpAddr;

use relaygate_transports::dns::{normalize_name, resolve_host, AddressFamilies, Host, Resolver};

use super::report::{ids, Check, Verdict};

/// One IP and the EHLO name mail from it uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PtrTarget {
    /// The egress IP.
    pub ip: IpAddr,
    /// The EHLO name (a socks transport's `remote_hostname`, or `hostname`).
    pub expected: String,
    /// Where the pair came from, for the report.
    pub label: String,
}

/// Checks every target.
pub async fn check(resolver: &dyn Resolver, targets: &[PtrTarget]) -> Vec<Check> {
    let mut checks = Vec::new();
    for t in targets {
        let (verdict, detail) = check_one(resolver, t).await;
        checks.push(Check::new(
            ids::PTR,
            format!("{} ({})", t.ip, t.label),
            verdict,
            detail,
        ));
    }
    checks
}

async fn check_one(resolver: &dyn Resolver, t: &PtrTarget) -> (Verdict, String) {
    let expected = normalize_name(&t.expected);
    let names = match resolver.lookup_ptr(t.ip).await {
        Ok(answer) => answer.records,
        Err(e) if e.is_not_found() => {
            return (
                Verdict::Fail,
                format!("no PTR record; it should name {expected}"),
            )
        }
        Err(e) => return (Verdict::Fail, format!("PTR lookup failed: {e}")),
    };
    if !names.iter().any(|n| normalize_name(n) == expected) {
        return (
            Verdict::Fail,
            format!("PTR is {}, not the EHLO name {expected}", names.join(", ")),
        );
    }
    let host = Host::Name(expected.clone());
    match resolve_host(resolver, &host, AddressFamilies::BOTH).await {
        Ok(addrs) if addrs.ips.contains(&t.ip) => (
            Verdict::Ok,
            format!(
                "PTR {expected}, forward-confirmed (its addresses include {})",
                t.ip
            ),
        ),
        Ok(addrs) => {
            let list: Vec<String> = addrs.ips.iter().map(IpAddr::to_string).collect();
            (
                Verdict::Fail,
                format!(
                    "PTR {expected}, but {expected} resolves to {}, not {}: not forward-confirmed",
                    list.join(", "),
                    t.ip
                ),
            )
        }
        Err(e) => (
            Verdict::Fail,
            format!("PTR {expected}, but its addresses cannot be resolved: {e}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::super::fake::{block_on, FakeDns};
    use super::*;
    use relaygate_transports::dns::{reverse_name, QueryType};

    fn target() -> PtrTarget {
        PtrTarget {
            ip: "192.0.2.10".parse().unwrap(),
            expected: "Out.Example.org.".into(),
            label: "transport proxy".into(),
        }
    }

    #[test]
    fn ptr_table() {
        type Setup = fn(&mut FakeDns);
        let table: &[(&str, Setup, Verdict, &str)] = &[
            (
                "matching and forward-confirmed",
                |d| {
                    d.ptr("192.0.2.10", "out.example.org")
                        .a("out.example.org", "192.0.2.10");
                },
                Verdict::Ok,
                "forward-confirmed",
            ),
            (
                "one of several PTR names matches",
                |d| {
                    d.ptr("192.0.2.10", "other.example.net")
                        .ptr("192.0.2.10", "out.example.org")
                        .a("out.example.org", "192.0.2.10");
                },
                Verdict::Ok,
                "forward-confirmed",
            ),
            (
                "no PTR",
                |_| {},
                Verdict::Fail,
                "no PTR record; it should name out.example.org",
            ),
            (
                "another name",
                |d| {
                    d.ptr("192.0.2.10", "host-10.isp.example.net")
                        .a("out.example.org", "192.0.2.10");
                },
                Verdict::Fail,
                "PTR is host-10.isp.example.net, not the EHLO name out.example.org",
            ),
            (
                "forward lookup lacks the IP",
                |d| {
                    d.ptr("192.0.2.10", "out.example.org")
                        .a("out.example.org", "192.0.2.99");
                },
                Verdict::Fail,
                "resolves to 192.0.2.99, not 192.0.2.10: not forward-confirmed",
            ),
            (
                "forward name does not exist",
                |d| {
                    d.ptr("192.0.2.10", "out.example.org");
                },
                Verdict::Fail,
                "cannot be resolved",
            ),
            (
                "PTR lookup fails",
                |d| {
                    d.fail(&reverse_name("192.0.2.10".parse().unwrap()), QueryType::Ptr);
                },
                Verdict::Fail,
                "PTR lookup failed",
            ),
        ];
        for (what, setup, verdict, detail) in table {
            let mut dns = FakeDns::default();
            setup(&mut dns);
            let checks = block_on(check(&dns, &[target()]));
            assert_eq!(checks.len(), 1);
            assert_eq!(checks[0].verdict, *verdict, "{what}: {:?}", checks[0]);
            assert!(
                checks[0].detail.contains(detail),
                "{what}: {:?}",
                checks[0].detail
            );
            assert_eq!(checks[0].subject, "192.0.2.10 (transport proxy)");
        }
    }
}
