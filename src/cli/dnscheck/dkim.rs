//! DKIM: for each `[[dkim.keys]]` entry signing for the domain, whether its key record
//! is published at `SELECTOR._domainkey.DOMAIN` and carries the same public key as
//! `key_file` (RFC 6376 §3.6.1 tags `v`, `k`, `p`).

use relaygate_transports::dns::Resolver;

use super::report::{ids, Check, Verdict};
use crate::dkim::Key;

/// The tags of a key record (`v=DKIM1; k=ed25519; p=...`), whitespace removed.
fn tags(record: &str) -> Vec<(String, String)> {
    record
        .split(';')
        .filter_map(|t| t.split_once('='))
        .map(|(k, v)| {
            (
                k.trim().to_ascii_lowercase(),
                v.chars().filter(|c| !c.is_whitespace()).collect(),
            )
        })
        .collect()
}

/// One check per key covering `domain`; a warning when none does.
pub async fn check(resolver: &dyn Resolver, domain: &str, keys: &[Key]) -> Vec<Check> {
    let covering: Vec<&Key> = keys.iter().filter(|k| k.signs_for(domain)).collect();
    if covering.is_empty() {
        return vec![Check::new(
            ids::DKIM,
            domain,
            Verdict::Warn,
            "no [[dkim.keys]] entry signs for this domain: its mail goes unsigned \
             (`relaygate dkim keygen` makes a key)",
        )];
    }
    let mut checks = Vec::new();
    for key in covering {
        let name = key.record_name();
        let check = |verdict, detail: String| Check::new(ids::DKIM, name.clone(), verdict, detail);
        let expected = key.public_b64();
        let records: Vec<String> = match resolver.lookup_txt(&name).await {
            Ok(answer) => answer.records,
            Err(e) if e.is_not_found() => Vec::new(),
            Err(e) => {
                checks.push(check(Verdict::Warn, format!("lookup failed: {e}")));
                continue;
            }
        };
        let dkim: Vec<Vec<(String, String)>> = records
            .iter()
            .map(|r| tags(r))
            .filter(|t| t.iter().all(|(k, v)| k != "v" || v == "DKIM1"))
            .filter(|t| t.iter().any(|(k, _)| k == "p"))
            .collect();
        let verdict = match dkim.as_slice() {
            [] => check(
                Verdict::Fail,
                format!(
                    "selector {} is not published: receivers cannot verify the {} signature; publish: {}",
                    key.selector,
                    key.algorithm.as_str(),
                    key.record()
                ),
            ),
            [t] => {
                let get = |name: &str| t.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
                let k = get("k").unwrap_or("rsa");
                match get("p") {
                    Some("") => check(Verdict::Fail, "the published key is revoked (empty p=)".into()),
                    Some(p) if p == expected && k.eq_ignore_ascii_case(key.algorithm.key_type()) => {
                        check(
                            Verdict::Ok,
                            format!("{} key published and matching key_file", key.algorithm.as_str()),
                        )
                    }
                    Some(_) => check(
                        Verdict::Fail,
                        format!(
                            "the published key does not match key_file (signatures will fail); publish: {}",
                            key.record()
                        ),
                    ),
                    None => check(Verdict::Fail, "no p= in the record".into()),
                }
            }
            _ => check(
                Verdict::Fail,
                "several key records: receivers cannot tell which one holds".into(),
            ),
        };
        checks.push(verdict);
    }
    checks
}
