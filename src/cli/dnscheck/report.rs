//! What `dnscheck` found, as data: one [`Check`] per thing looked at, each with a
//! [`Verdict`] and a one-line explanation, plus the records it suggests publishing.
//! Rendered as text for people ([`Report::human`]) or as a stable JSON document
//! ([`Report::json`]).
//!
//! The JSON shape (field names and check ids are a contract for scripts):
//!
//! ```json
//! {
//!   "domain": "example.org",
//!   "dnssec": "plain" | "trust_ad" | "validate",
//!   "egress_ips": [{"ip": "192.0.2.10", "sources": ["transport proxy"]}],
//!   "checks": [{"check": "spf.mail_from", "subject": "192.0.2.10", "verdict": "fail",
//!               "detail": "..."}],
//!   "suggested_records": [{"name": "example.org", "type": "TXT", "value": "v=spf1 ..."}],
//!   "summary": {"ok": 3, "warn": 1, "fail": 1},
//!   "verdict": "fail"
//! }
//! ```

use std::fmt::Write as _;

use serde::Serialize;

/// How one check came out. Ordered: `Ok < Warn < Fail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// As it should be.
    Ok,
    /// Works, but worth a look (optional feature missing, weaker setting).
    Warn,
    /// Mail from this setup is likely to be rejected or junked: exit status 1.
    Fail,
}

impl Verdict {
    fn label(self) -> &'static str {
        match self {
            Verdict::Ok => "OK",
            Verdict::Warn => "WARN",
            Verdict::Fail => "FAIL",
        }
    }
}

/// The check ids (the `check` field of the JSON document).
pub mod ids {
    /// The domain's SPF record itself (present, single, parseable).
    pub const SPF_RECORD: &str = "spf.record";
    /// SPF as MAIL FROM `postmaster@DOMAIN` from one egress IP.
    pub const SPF_MAIL_FROM: &str = "spf.mail_from";
    /// SPF of the HELO name from one of its IPs.
    pub const SPF_HELO: &str = "spf.helo";
    /// Reverse DNS of an egress IP, forward-confirmed against the EHLO name.
    pub const PTR: &str = "ptr";
    /// The domain's MX records.
    pub const MX: &str = "mx";
    /// The `_mta-sts` TXT record.
    pub const MTA_STS: &str = "mta_sts";
    /// TLSA records of one MX host.
    pub const TLSA: &str = "tlsa";
    /// A DKIM key record (`SELECTOR._domainkey.DOMAIN`) against `key_file`.
    pub const DKIM: &str = "dkim";
    /// Nothing to check (for example no egress IPs known).
    pub const EGRESS: &str = "egress";
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Which check (see [`ids`]).
    pub check: &'static str,
    /// What it was about: an IP, a name, "192.0.2.10 as out.example.org".
    pub subject: String,
    /// The outcome.
    pub verdict: Verdict,
    /// One line saying why.
    pub detail: String,
}

impl Check {
    /// A finding.
    pub fn new(
        check: &'static str,
        subject: impl Into<String>,
        verdict: Verdict,
        detail: impl Into<String>,
    ) -> Check {
        Check {
            check,
            subject: subject.into(),
            verdict,
            detail: detail.into(),
        }
    }
}

/// A DNS record the operator should publish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Suggestion {
    /// Owner name.
    pub name: String,
    /// Record type.
    #[serde(rename = "type")]
    pub rtype: &'static str,
    /// The record's text.
    pub value: String,
    /// Why.
    pub reason: String,
}

/// One egress IP and where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EgressIp {
    /// The address.
    pub ip: std::net::IpAddr,
    /// "transport proxy", "--ip".
    pub sources: Vec<String>,
}

/// Counts per verdict.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Checks that passed.
    pub ok: usize,
    /// Warnings.
    pub warn: usize,
    /// Failures.
    pub fail: usize,
}

/// Everything `dnscheck` found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The sender domain checked.
    pub domain: String,
    /// How DNSSEC status was obtained: "plain", "trust_ad" or "validate".
    pub dnssec: &'static str,
    /// The egress IPs checked.
    pub egress_ips: Vec<EgressIp>,
    /// The findings, in the order they were made.
    pub checks: Vec<Check>,
    /// Records to publish.
    pub suggested_records: Vec<Suggestion>,
}

impl Report {
    /// The counts per verdict.
    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        for c in &self.checks {
            match c.verdict {
                Verdict::Ok => s.ok += 1,
                Verdict::Warn => s.warn += 1,
                Verdict::Fail => s.fail += 1,
            }
        }
        s
    }

    /// The worst verdict (`Ok` for no checks).
    pub fn verdict(&self) -> Verdict {
        self.checks
            .iter()
            .map(|c| c.verdict)
            .max()
            .unwrap_or(Verdict::Ok)
    }

    /// The text for people: a line per check, then the suggestions and the result.
    pub fn human(&self) -> String {
        let mut out = String::new();
        let ips: Vec<String> = self
            .egress_ips
            .iter()
            .map(|e| format!("{} [{}]", e.ip, e.sources.join(", ")))
            .collect();
        let _ = writeln!(out, "dnscheck {} (DNSSEC: {})", self.domain, self.dnssec);
        let _ = writeln!(
            out,
            "egress IPs: {}",
            if ips.is_empty() {
                "none".to_string()
            } else {
                ips.join(", ")
            }
        );
        let width = self.checks.iter().map(|c| c.check.len()).max().unwrap_or(0);
        for c in &self.checks {
            let _ = writeln!(
                out,
                "{:<4}  {:<width$}  {}: {}",
                c.verdict.label(),
                c.check,
                c.subject,
                c.detail
            );
        }
        for s in &self.suggested_records {
            let _ = writeln!(out, "\nsuggested record ({}):", s.reason);
            let _ = writeln!(out, "  {}. IN {} \"{}\"", s.name, s.rtype, s.value);
        }
        let sum = self.summary();
        let _ = writeln!(
            out,
            "\nresult: {} ({} ok, {} warnings, {} failed)",
            self.verdict().label(),
            sum.ok,
            sum.warn,
            sum.fail
        );
        out
    }

    /// The JSON document (see the module docs).
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "domain": self.domain,
            "dnssec": self.dnssec,
            "egress_ips": self.egress_ips,
            "checks": self.checks,
            "suggested_records": self.suggested_records,
            "summary": self.summary(),
            "verdict": self.verdict(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(verdicts: &[Verdict]) -> Report {
        Report {
            domain: "example.org".into(),
            dnssec: "plain",
            egress_ips: vec![EgressIp {
                ip: "192.0.2.10".parse().unwrap(),
                sources: vec!["transport proxy".into()],
            }],
            checks: verdicts
                .iter()
                .map(|v| Check::new(ids::MX, "example.org", *v, "x"))
                .collect(),
            suggested_records: vec![],
        }
    }

    #[test]
    fn worst_verdict_wins() {
        let table: &[(&[Verdict], Verdict)] = &[
            (&[], Verdict::Ok),
            (&[Verdict::Ok, Verdict::Ok], Verdict::Ok),
            (&[Verdict::Ok, Verdict::Warn], Verdict::Warn),
            (&[Verdict::Fail, Verdict::Warn, Verdict::Ok], Verdict::Fail),
        ];
        for (verdicts, want) in table {
            assert_eq!(report(verdicts).verdict(), *want, "{verdicts:?}");
        }
    }

    #[test]
    fn json_shape() {
        let mut r = report(&[Verdict::Ok, Verdict::Fail]);
        r.suggested_records.push(Suggestion {
            name: "example.org".into(),
            rtype: "TXT",
            value: "v=spf1 -all".into(),
            reason: "r".into(),
        });
        let v = r.json();
        assert_eq!(v["verdict"], "fail");
        assert_eq!(v["summary"]["fail"], 1);
        assert_eq!(v["summary"]["ok"], 1);
        assert_eq!(v["checks"][0]["check"], "mx");
        assert_eq!(v["checks"][1]["verdict"], "fail");
        assert_eq!(v["egress_ips"][0]["ip"], "192.0.2.10");
        assert_eq!(v["suggested_records"][0]["type"], "TXT");
        let text = r.human();
        assert!(text.contains("FAIL  mx  example.org: x"), "{text}");
        assert!(
            text.contains("example.org. IN TXT \"v=spf1 -all\""),
            "{text}"
        );
        assert!(text.contains("result: FAIL"), "{text}");
    }
}
