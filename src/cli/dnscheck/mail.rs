//! The sender domain as a receiver of mail (bounces, replies) and its TLS signals: MX
//! records present and not a null MX, the `_mta-sts` TXT record (RFC 8461 §3.1), and
//! TLSA records at `_25._tcp.<MX host>` (RFC 7672 §2.2) with their DNSSEC status when
//! the resolver can tell it.

use relaygate_transports::dns::{
    normalize_name, resolve_host, AddressFamilies, DnsError, Host, Mx, Resolver,
};

use super::report::{ids, Check, Verdict};

/// At most this many MX hosts get a TLSA lookup.
const MAX_TLSA_HOSTS: usize = 10;

/// Runs the MX, MTA-STS and TLSA checks. `dnssec_known`: the resolver mode can mark
/// answers authentic (`trust_ad` or `validate`).
pub async fn check(resolver: &dyn Resolver, domain: &str, dnssec_known: bool) -> Vec<Check> {
    let mut checks = Vec::new();
    let (mx_check, hosts, mx_authentic) = mx(resolver, domain, dnssec_known).await;
    checks.push(mx_check);
    checks.push(mta_sts(resolver, domain).await);
    for host in hosts.iter().take(MAX_TLSA_HOSTS) {
        checks.push(tlsa(resolver, host, dnssec_known, mx_authentic).await);
    }
    checks
}

/// The MX check, the hosts to look for TLSA at, and whether the MX answer was authentic.
async fn mx(
    resolver: &dyn Resolver,
    domain: &str,
    dnssec_known: bool,
) -> (Check, Vec<String>, bool) {
    let check = |verdict, detail: String| Check::new(ids::MX, domain, verdict, detail);
    let answer = match resolver.lookup_mx(domain).await {
        Ok(answer) => answer,
        Err(e @ DnsError::NxDomain { .. }) => {
            let detail = format!("the domain does not exist ({e})");
            return (check(Verdict::Fail, detail), Vec::new(), false);
        }
        Err(e) if e.is_not_found() => return implicit_mx(resolver, domain).await,
        Err(e) => {
            let detail = format!("MX lookup failed: {e}");
            return (check(Verdict::Fail, detail), Vec::new(), false);
        }
    };
    let mut records: Vec<Mx> = answer.records;
    records.sort_by_key(|m| m.preference);
    if records.iter().any(|m| m.exchange.is_empty()) {
        // RFC 7505 §3: a null MX is the only MX record of a domain that accepts no mail.
        let detail = if records.len() == 1 {
            "null MX (RFC 7505): the domain accepts no mail, so bounces and replies to its senders are lost".to_string()
        } else {
            "a null MX mixed with other MX records (RFC 7505 §3 requires it to be alone)"
                .to_string()
        };
        return (check(Verdict::Fail, detail), Vec::new(), answer.authentic);
    }
    let list: Vec<String> = records
        .iter()
        .map(|m| format!("{} {}", m.preference, m.exchange))
        .collect();
    let mut detail = list.join(", ");
    if dnssec_known {
        detail.push_str(if answer.authentic {
            " (DNSSEC-authentic)"
        } else {
            " (not DNSSEC-authentic)"
        });
    }
    let mut hosts: Vec<String> = Vec::new();
    for m in &records {
        let name = normalize_name(&m.exchange);
        if !hosts.contains(&name) {
            hosts.push(name);
        }
    }
    (check(Verdict::Ok, detail), hosts, answer.authentic)
}

/// No MX records: the domain's own address is the implicit MX (RFC 5321 §5.1).
async fn implicit_mx(resolver: &dyn Resolver, domain: &str) -> (Check, Vec<String>, bool) {
    let host = Host::Name(normalize_name(domain));
    match resolve_host(resolver, &host, AddressFamilies::BOTH).await {
        Ok(addrs) => (
            Check::new(
                ids::MX,
                domain,
                Verdict::Warn,
                "no MX records: mail to the domain goes to its own address (implicit MX, RFC 5321 §5.1)",
            ),
            vec![normalize_name(domain)],
            addrs.authentic,
        ),
        Err(e) => (
            Check::new(
                ids::MX,
                domain,
                Verdict::Fail,
                format!("no MX records and no address: the domain cannot receive bounces ({e})"),
            ),
            Vec::new(),
            false,
        ),
    }
}

/// RFC 8461 §3.1: the record starts with `v=STSv1` (case-sensitive), then `;` or space.
pub fn is_sts_record(txt: &str) -> bool {
    txt.strip_prefix("v=STSv1")
        .is_some_and(|rest| rest.starts_with([';', ' ', '\t']))
}

/// The `id` field of an STS record, when present and valid (1 to 32 letters and digits).
pub fn sts_id(txt: &str) -> Option<&str> {
    txt.split(';')
        .filter_map(|field| field.trim().split_once('='))
        .find(|(key, _)| *key == "id")
        .map(|(_, value)| value)
        .filter(|id| (1..=32).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric()))
}

async fn mta_sts(resolver: &dyn Resolver, domain: &str) -> Check {
    let name = format!("_mta-sts.{}", normalize_name(domain));
    let check = |verdict, detail: String| Check::new(ids::MTA_STS, name.clone(), verdict, detail);
    let records: Vec<String> = match resolver.lookup_txt(&name).await {
        Ok(answer) => answer
            .records
            .into_iter()
            .filter(|t| is_sts_record(t))
            .collect(),
        Err(e) if e.is_not_found() => Vec::new(),
        Err(e) => return check(Verdict::Warn, format!("lookup failed: {e}")),
    };
    match records.as_slice() {
        [] => check(
            Verdict::Warn,
            "no MTA-STS record (optional: RFC 8461 lets receivers require TLS from senders)".into(),
        ),
        [record] => match sts_id(record) {
            Some(id) => check(
                Verdict::Ok,
                format!("v=STSv1; id={id} (the policy file itself is not fetched)"),
            ),
            None => check(
                Verdict::Warn,
                format!("{record:?} has no valid id (1-32 letters and digits): senders ignore it (RFC 8461 §3.1)"),
            ),
        },
        several => check(
            Verdict::Warn,
            format!(
                "{} MTA-STS records: senders ignore them all (RFC 8461 §3.1 requires exactly one)",
                several.len()
            ),
        ),
    }
}

async fn tlsa(
    resolver: &dyn Resolver,
    host: &str,
    dnssec_known: bool,
    mx_authentic: bool,
) -> Check {
    let name = format!("_25._tcp.{host}");
    let check = |verdict, detail: String| Check::new(ids::TLSA, name.clone(), verdict, detail);
    let answer = match resolver.lookup_tlsa(&name).await {
        Ok(answer) => answer,
        Err(e) if e.is_not_found() => {
            return check(Verdict::Warn, "no TLSA records (DANE not published)".into())
        }
        Err(e) => {
            // RFC 7672 §2.2: a failed TLSA lookup makes DANE senders defer mail to the host.
            return check(
                Verdict::Fail,
                format!("lookup failed ({e}): DANE senders defer mail to this host"),
            );
        }
    };
    let n = answer.records.len();
    // RFC 7672 §3.1.3: only DANE-TA(2) and DANE-EE(3) are usable for SMTP.
    let usable = answer
        .records
        .iter()
        .filter(|t| matches!(t.usage, 2 | 3))
        .count();
    if usable == 0 {
        return check(
            Verdict::Warn,
            format!("{n} TLSA records, none usable for SMTP (RFC 7672 §3.1.3: only DANE-TA(2) and DANE-EE(3))"),
        );
    }
    if !dnssec_known {
        return check(
            Verdict::Ok,
            format!("{n} TLSA records ({usable} usable); DNSSEC status unknown (set dns.trust_ad or dns.validate)"),
        );
    }
    if !answer.authentic {
        return check(
            Verdict::Warn,
            format!("{n} TLSA records, but not DNSSEC-authentic: DANE senders ignore them (RFC 7672 §2.2)"),
        );
    }
    if !mx_authentic {
        return check(
            Verdict::Warn,
            format!("{n} TLSA records, DNSSEC-authentic, but the MX records are not: DANE senders do not use them (RFC 7672 §2.2.1)"),
        );
    }
    check(
        Verdict::Ok,
        format!("{n} TLSA records ({usable} usable), DNSSEC-authentic"),
    )
}

#[cfg(test)]
mod tests {
    use super::super::fake::{block_on, FakeDns};
    use super::*;
    use relaygate_transports::dns::{QueryType, Record};

    #[test]
    fn sts_records() {
        let table = [
            ("v=STSv1; id=20240101T000000", true, Some("20240101T000000")),
            ("v=STSv1;id=abc", true, Some("abc")),
            ("v=STSv1; id=", true, None),
            ("v=STSv1; id=has-dash", true, None),
            ("v=STSv1; id=123456789012345678901234567890123", true, None),
            ("v=STSv1", false, None),
            ("v=stsv1; id=abc", false, Some("abc")),
            ("v=STSv10; id=abc", false, Some("abc")),
        ];
        for (txt, is_record, id) in table {
            assert_eq!(is_sts_record(txt), is_record, "{txt}");
            assert_eq!(sts_id(txt), id, "{txt}");
        }
    }

    fn verdicts(dns: &FakeDns, dnssec_known: bool) -> Vec<(&'static str, Verdict, String)> {
        block_on(check(dns, "example.org", dnssec_known))
            .into_iter()
            .map(|c| (c.check, c.verdict, c.detail))
            .collect()
    }

    #[test]
    fn mx_table() {
        let mut dns = FakeDns::default();
        dns.mx("example.org", 20, "mx2.example.org")
            .mx("example.org", 10, "mx1.example.org")
            .txt("_mta-sts.example.org", "v=STSv1; id=1")
            .tlsa("_25._tcp.mx1.example.org", false);
        let got = verdicts(&dns, false);
        assert_eq!(got[0].0, ids::MX);
        assert_eq!(got[0].1, Verdict::Ok);
        assert_eq!(got[0].2, "10 mx1.example.org, 20 mx2.example.org");
        assert_eq!((got[1].0, got[1].1), (ids::MTA_STS, Verdict::Ok));
        assert_eq!((got[2].0, got[2].1), (ids::TLSA, Verdict::Ok));
        assert!(got[2].2.contains("status unknown"), "{}", got[2].2);
        assert_eq!((got[3].0, got[3].1), (ids::TLSA, Verdict::Warn));
        assert_eq!(got.len(), 4);

        let mut null = FakeDns::default();
        null.mx("example.org", 0, "");
        let got = verdicts(&null, false);
        assert_eq!(got[0].1, Verdict::Fail);
        assert!(got[0].2.contains("null MX"), "{}", got[0].2);
        assert_eq!(got.len(), 2, "no TLSA lookups for a null MX");

        let mut implicit = FakeDns::default();
        implicit.a("example.org", "192.0.2.1");
        let got = verdicts(&implicit, false);
        assert_eq!(got[0].1, Verdict::Warn);
        assert!(got[0].2.contains("implicit MX"), "{}", got[0].2);
        assert_eq!(got.len(), 3, "TLSA at the domain itself");

        let empty = FakeDns::default();
        let got = verdicts(&empty, false);
        assert_eq!(got[0].1, Verdict::Fail);

        let mut broken = FakeDns::default();
        broken
            .mx("example.org", 10, "mx.example.org")
            .fail("_25._tcp.mx.example.org", QueryType::Tlsa);
        let got = verdicts(&broken, false);
        assert_eq!(got[2].1, Verdict::Fail);
        assert!(got[2].2.contains("defer"), "{}", got[2].2);
    }

    #[test]
    fn tlsa_authenticity() {
        let mut dns = FakeDns::default();
        dns.add(
            "example.org",
            Record::Mx(Mx {
                preference: 10,
                exchange: "mx.example.org".into(),
            }),
            true,
        )
        .tlsa("_25._tcp.mx.example.org", true);
        let got = verdicts(&dns, true);
        assert!(got[0].2.ends_with("(DNSSEC-authentic)"), "{}", got[0].2);
        assert_eq!(got[2].1, Verdict::Ok);
        assert!(got[2].2.contains("DNSSEC-authentic"), "{}", got[2].2);

        let mut insecure = FakeDns::default();
        insecure
            .mx("example.org", 10, "mx.example.org")
            .tlsa("_25._tcp.mx.example.org", false);
        let got = verdicts(&insecure, true);
        assert_eq!(got[2].1, Verdict::Warn);
        assert!(got[2].2.contains("not DNSSEC-authentic"), "{}", got[2].2);

        let mut several = FakeDns::default();
        several
            .mx("example.org", 10, "mx.example.org")
            .txt("_mta-sts.example.org", "v=STSv1; id=1")
            .txt("_mta-sts.example.org", "v=STSv1; id=2");
        let got = verdicts(&several, false);
        assert_eq!(got[1].1, Verdict::Warn);
        assert!(got[1].2.contains("2 MTA-STS records"), "{}", got[1].2);
    }
}
