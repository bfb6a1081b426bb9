//! SPF (RFC 7208) as receivers will see it: the sender domain's record evaluated as MAIL
//! FROM `postmaster@DOMAIN` from every egress IP, and each EHLO name's record evaluated as
//! HELO from the IPs that use it; for IPs that are not authorized, a suggested record.
//!
//! Evaluation is mail-auth's `check_host()` (ip4, ip6, a, mx, ptr, include, redirect,
//! exists, exp, macros, the 10-lookup limit), run on mail-auth's hickory resolver pointed
//! at `dns.nameservers`. The raw TXT records are read through our own resolver, for two
//! things mail-auth does not give: the record text (to build the suggestion) and the
//! count of SPF records, since mail-auth quietly uses the first parseable one where
//! RFC 7208 §4.5 makes several records a permerror.

use std::net::IpAddr;

use mail_auth::spf::verify::SpfParameters;
use mail_auth::{MessageAuthenticator, SpfResult};
use relaygate_transports::dns::{DnsError, Resolver};

use super::report::{ids, Check, Suggestion, Verdict};

/// One egress IP to evaluate as MAIL FROM.
#[derive(Debug, Clone)]
pub struct MailFromIp {
    /// The address.
    pub ip: IpAddr,
    /// The EHLO name used from it (for the `%{h}` macro).
    pub helo: String,
    /// Where it came from, for the report ("transport proxy", "--ip").
    pub label: String,
}

/// One (EHLO name, IP) pair to evaluate as HELO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeloPair {
    /// The EHLO name.
    pub name: String,
    /// An IP that says it.
    pub ip: IpAddr,
}

/// What to evaluate.
#[derive(Debug, Clone)]
pub struct SpfInputs<'a> {
    /// The sender domain.
    pub domain: &'a str,
    /// MAIL FROM evaluations.
    pub mail_from: &'a [MailFromIp],
    /// HELO evaluations.
    pub helo: &'a [HeloPair],
    /// Our own host name (the `%{r}` macro).
    pub receiver: &'a str,
}

/// The SPF records published at a name: RFC 7208 §4.5 keeps the TXT records that begin
/// with exactly `v=spf1` (then a space or the end).
pub fn is_spf_record(txt: &str) -> bool {
    let head = txt.as_bytes().get(..6);
    head.is_some_and(|h| h.eq_ignore_ascii_case(b"v=spf1"))
        && txt.as_bytes().get(6).is_none_or(|&b| b == b' ')
}

/// The SPF records at `name`: `Ok(vec![])` when there are none.
async fn spf_records(resolver: &dyn Resolver, name: &str) -> Result<Vec<String>, DnsError> {
    match resolver.lookup_txt(name).await {
        Ok(answer) => Ok(answer
            .records
            .into_iter()
            .filter(|t| is_spf_record(t))
            .collect()),
        Err(e) if e.is_not_found() => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// The record with `ip4:`/`ip6:` mechanisms for `missing` inserted before its `all` term
/// (or its `redirect=` modifier, or at the end); a new `-all` record when there is none.
pub fn suggest_record(existing: Option<&str>, missing: &[IpAddr]) -> String {
    let new_terms = missing.iter().map(|ip| match ip {
        IpAddr::V4(v4) => format!("ip4:{v4}"),
        IpAddr::V6(v6) => format!("ip6:{v6}"),
    });
    let Some(existing) = existing else {
        let mut terms = vec!["v=spf1".to_string()];
        terms.extend(new_terms);
        terms.push("-all".into());
        return terms.join(" ");
    };
    let mut terms: Vec<String> = existing.split_whitespace().map(str::to_string).collect();
    let is_all = |t: &String| {
        t.trim_start_matches(['+', '-', '~', '?'])
            .eq_ignore_ascii_case("all")
    };
    let is_redirect = |t: &String| {
        t.get(..9)
            .is_some_and(|p| p.eq_ignore_ascii_case("redirect="))
    };
    let at = terms
        .iter()
        .position(is_all)
        .or_else(|| terms.iter().position(is_redirect))
        .unwrap_or(terms.len());
    let fresh: Vec<String> = new_terms
        .filter(|n| !terms.iter().any(|t| t.eq_ignore_ascii_case(n)))
        .collect();
    terms.splice(at..at, fresh);
    terms.join(" ")
}

/// The result's name as RFC 7208 §2.6 spells it.
pub fn result_name(result: SpfResult) -> &'static str {
    match result {
        SpfResult::Pass => "pass",
        SpfResult::Fail => "fail",
        SpfResult::SoftFail => "softfail",
        SpfResult::Neutral => "neutral",
        SpfResult::TempError => "temperror",
        SpfResult::PermError => "permerror",
        SpfResult::None => "none",
    }
}

/// What a result means for mail from this IP, in a few words.
fn meaning(result: SpfResult) -> &'static str {
    match result {
        SpfResult::Pass => "authorized",
        SpfResult::Fail => "not authorized: receivers may reject the mail",
        SpfResult::SoftFail => "not authorized (~all): receivers may junk the mail",
        SpfResult::Neutral => "not authorized (the record makes no assertion about this IP)",
        SpfResult::None => "no SPF record",
        SpfResult::PermError => {
            "the record (or one it includes) is invalid, or needs more than 10 DNS lookups (RFC 7208 §4.6.4)"
        }
        SpfResult::TempError => "a DNS lookup failed during evaluation",
    }
}

/// MAIL FROM: only `pass` means the egress IP is covered.
pub fn mail_from_verdict(result: SpfResult) -> Verdict {
    match result {
        SpfResult::Pass => Verdict::Ok,
        SpfResult::Fail
        | SpfResult::SoftFail
        | SpfResult::Neutral
        | SpfResult::None
        | SpfResult::PermError
        | SpfResult::TempError => Verdict::Fail,
    }
}

/// HELO: `fail` can get the session rejected (RFC 7208 §2.3), an error means the name's
/// record is broken; a missing or non-committal record only weakens the sender.
pub fn helo_verdict(result: SpfResult) -> Verdict {
    match result {
        SpfResult::Pass => Verdict::Ok,
        SpfResult::None | SpfResult::Neutral | SpfResult::SoftFail => Verdict::Warn,
        SpfResult::Fail | SpfResult::PermError | SpfResult::TempError => Verdict::Fail,
    }
}

/// Whether inserting the IP into the record would fix this result.
fn fixable(result: SpfResult) -> bool {
    matches!(
        result,
        SpfResult::Fail | SpfResult::SoftFail | SpfResult::Neutral | SpfResult::None
    )
}

/// The records at one name, read once.
enum Published {
    /// Zero or one SPF record.
    Usable(Option<String>),
    /// More than one: RFC 7208 §4.5 permerror.
    Several(usize),
    /// The TXT lookup failed.
    Error(DnsError),
}

async fn published(resolver: &dyn Resolver, name: &str) -> Published {
    match spf_records(resolver, name).await {
        Ok(mut records) if records.len() <= 1 => Published::Usable(records.pop()),
        Ok(records) => Published::Several(records.len()),
        Err(e) => Published::Error(e),
    }
}

fn suggestion(name: &str, record: Option<&str>, missing: &[IpAddr], why: &str) -> Suggestion {
    let value = suggest_record(record, missing);
    let ips: Vec<String> = missing.iter().map(IpAddr::to_string).collect();
    let mut reason = format!("SPF of {name} {why} {}", ips.join(", "));
    if value.len() > 255 {
        // RFC 7208 §3.3: one TXT string holds at most 255 characters.
        reason.push_str("; longer than 255 characters: publish it as several strings");
    }
    Suggestion {
        name: name.to_string(),
        rtype: "TXT",
        value,
        reason,
    }
}

/// Runs every SPF check.
pub async fn check(
    resolver: &dyn Resolver,
    auth: &MessageAuthenticator,
    inputs: &SpfInputs<'_>,
) -> (Vec<Check>, Vec<Suggestion>) {
    let mut checks = Vec::new();
    let mut suggestions = Vec::new();
    let domain = inputs.domain;

    let record = match published(resolver, domain).await {
        Published::Usable(Some(r)) => {
            checks.push(Check::new(ids::SPF_RECORD, domain, Verdict::Ok, r.clone()));
            Some(r)
        }
        Published::Usable(None) => {
            checks.push(Check::new(
                ids::SPF_RECORD,
                domain,
                Verdict::Fail,
                "no SPF record (TXT \"v=spf1 ...\"): receivers get SPF none",
            ));
            None
        }
        Published::Several(n) => {
            checks.push(Check::new(
                ids::SPF_RECORD,
                domain,
                Verdict::Fail,
                format!(
                    "{n} SPF records: receivers get permerror (RFC 7208 §4.5); merge them into one"
                ),
            ));
            return (checks, suggestions);
        }
        Published::Error(e) => {
            checks.push(Check::new(
                ids::SPF_RECORD,
                domain,
                Verdict::Fail,
                format!("cannot read the SPF record: {e}"),
            ));
            return (checks, suggestions);
        }
    };

    let sender = format!("postmaster@{domain}");
    let mut missing = Vec::new();
    for from in inputs.mail_from {
        let output = auth
            .verify_spf(SpfParameters::verify_mail_from(
                from.ip,
                &from.helo,
                inputs.receiver,
                &sender,
            ))
            .await;
        let result = output.result();
        if fixable(result) && !missing.contains(&from.ip) {
            missing.push(from.ip);
        }
        checks.push(Check::new(
            ids::SPF_MAIL_FROM,
            format!("{} ({}) as {sender}", from.ip, from.label),
            mail_from_verdict(result),
            format!("{}: {}", result_name(result), meaning(result)),
        ));
    }
    if !missing.is_empty() {
        suggestions.push(suggestion(
            domain,
            record.as_deref(),
            &missing,
            "authorizing",
        ));
    }

    let mut names: Vec<&str> = Vec::new();
    for h in inputs.helo {
        if !names.contains(&h.name.as_str()) {
            names.push(&h.name);
        }
    }
    for name in names {
        helo_checks(resolver, auth, inputs, name, &mut checks, &mut suggestions).await;
    }
    (checks, suggestions)
}

/// The HELO evaluations of one EHLO name.
async fn helo_checks(
    resolver: &dyn Resolver,
    auth: &MessageAuthenticator,
    inputs: &SpfInputs<'_>,
    name: &str,
    checks: &mut Vec<Check>,
    suggestions: &mut Vec<Suggestion>,
) {
    let record = match published(resolver, name).await {
        Published::Usable(r) => r,
        Published::Several(n) => {
            checks.push(Check::new(
                ids::SPF_HELO,
                name,
                Verdict::Fail,
                format!(
                    "{n} SPF records: receivers get permerror (RFC 7208 §4.5); merge them into one"
                ),
            ));
            return;
        }
        Published::Error(e) => {
            checks.push(Check::new(
                ids::SPF_HELO,
                name,
                Verdict::Fail,
                format!("cannot read the SPF record: {e}"),
            ));
            return;
        }
    };
    let mut missing = Vec::new();
    for pair in inputs.helo.iter().filter(|h| h.name == name) {
        let output = auth
            .verify_spf(SpfParameters::verify_ehlo(
                pair.ip,
                &pair.name,
                inputs.receiver,
            ))
            .await;
        let result = output.result();
        if fixable(result) {
            missing.push(pair.ip);
        }
        let mut detail = format!("{}: {}", result_name(result), meaning(result));
        if result == SpfResult::None {
            detail.push_str(" for the HELO name (RFC 7208 §2.3 recommends one)");
        }
        checks.push(Check::new(
            ids::SPF_HELO,
            format!("{name} from {}", pair.ip),
            helo_verdict(result),
            detail,
        ));
    }
    if !missing.is_empty() {
        suggestions.push(suggestion(
            name,
            record.as_deref(),
            &missing,
            "(HELO name) authorizing",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn spf_record_selection() {
        let table = [
            ("v=spf1 -all", true),
            ("v=spf1", true),
            ("V=SPF1 ip4:192.0.2.1 ~all", true),
            ("v=spf10 -all", false),
            ("v=spf1-all", false),
            ("spf1 -all", false),
            ("google-site-verification=abc", false),
            ("", false),
        ];
        for (txt, want) in table {
            assert_eq!(is_spf_record(txt), want, "{txt:?}");
        }
    }

    #[test]
    fn suggestions() {
        let table: &[(Option<&str>, &[&str], &str)] = &[
            (None, &["192.0.2.10"], "v=spf1 ip4:192.0.2.10 -all"),
            (
                None,
                &["192.0.2.10", "2001:db8::5"],
                "v=spf1 ip4:192.0.2.10 ip6:2001:db8::5 -all",
            ),
            (
                Some("v=spf1 mx -all"),
                &["192.0.2.10"],
                "v=spf1 mx ip4:192.0.2.10 -all",
            ),
            (
                Some("v=spf1 include:_spf.example.net ~all"),
                &["2001:db8::5"],
                "v=spf1 include:_spf.example.net ip6:2001:db8::5 ~all",
            ),
            (
                Some("v=spf1 a ?ALL exp=explain.example.org"),
                &["192.0.2.10"],
                "v=spf1 a ip4:192.0.2.10 ?ALL exp=explain.example.org",
            ),
            // No `all`: before the redirect (mechanisms are tried before it anyway).
            (
                Some("v=spf1 a redirect=_spf.example.org"),
                &["192.0.2.10"],
                "v=spf1 a ip4:192.0.2.10 redirect=_spf.example.org",
            ),
            // No `all`, no redirect: at the end.
            (
                Some("v=spf1   mx"),
                &["192.0.2.10"],
                "v=spf1 mx ip4:192.0.2.10",
            ),
            // An IP already listed (after `all`, where it never matches) is not repeated.
            (
                Some("v=spf1 -all ip4:192.0.2.10"),
                &["192.0.2.10"],
                "v=spf1 -all ip4:192.0.2.10",
            ),
        ];
        for (existing, missing, want) in table {
            assert_eq!(
                suggest_record(*existing, &ips(missing)),
                *want,
                "{existing:?} + {missing:?}"
            );
        }
    }

    #[test]
    fn verdicts() {
        let table = [
            (SpfResult::Pass, Verdict::Ok, Verdict::Ok),
            (SpfResult::Fail, Verdict::Fail, Verdict::Fail),
            (SpfResult::SoftFail, Verdict::Fail, Verdict::Warn),
            (SpfResult::Neutral, Verdict::Fail, Verdict::Warn),
            (SpfResult::None, Verdict::Fail, Verdict::Warn),
            (SpfResult::PermError, Verdict::Fail, Verdict::Fail),
            (SpfResult::TempError, Verdict::Fail, Verdict::Fail),
        ];
        for (result, mail_from, helo) in table {
            assert_eq!(mail_from_verdict(result), mail_from, "{result:?}");
            assert_eq!(helo_verdict(result), helo, "{result:?}");
        }
        assert!(fixable(SpfResult::SoftFail) && !fixable(SpfResult::PermError));
    }

    #[test]
    fn long_suggestion_is_flagged() {
        let many: Vec<IpAddr> = (1..=20u8)
            .map(|i| IpAddr::from([198, 51, 100, i]))
            .collect();
        let s = suggestion("example.org", Some("v=spf1 -all"), &many, "authorizing");
        assert!(s.value.len() > 255);
        assert!(s.reason.contains("several strings"), "{}", s.reason);
    }
}
