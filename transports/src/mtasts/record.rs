//! The `_mta-sts.<domain>` TXT record (RFC 8461 §3.1): `v=STSv1; id=<1-32 alphanumerics>`.
//!
//! The record only says that a policy exists and which version (`id`) it has; the policy
//! itself comes over HTTPS. The lookup goes to the recipient domain as given, never to the
//! target of the domain's CNAME (RFC 8461 §4); a CNAME at `_mta-sts.<domain>` itself is
//! followed by the resolver like for any TXT query.

use crate::dns::{normalize_name, DnsError, ErrorClass, Resolver};

/// A valid MTA-STS TXT record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StsRecord {
    /// The policy id: changes whenever the policy does.
    pub id: String,
}

/// Why the domain has no usable MTA-STS record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// No TXT record starting with `v=STSv1` (or no TXT records at all).
    #[error("no MTA-STS TXT record at {name}")]
    Absent {
        /// The name looked up.
        name: String,
    },
    /// More than one MTA-STS record: treated as none (RFC 8461 §3.1).
    #[error("{count} MTA-STS TXT records at {name}: treated as none")]
    Multiple {
        /// The name looked up.
        name: String,
        /// How many.
        count: usize,
    },
    /// The one MTA-STS record is malformed: treated as none (RFC 8461 §3.1).
    #[error("invalid MTA-STS TXT record at {name}: {reason}")]
    Invalid {
        /// The name looked up.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The lookup failed without a definite answer (SERVFAIL, timeout, ...).
    #[error("MTA-STS TXT lookup: {0}")]
    Dns(#[source] DnsError),
}

impl RecordError {
    /// Only a failed lookup is worth retrying; the other cases mean "no MTA-STS record".
    pub fn is_temporary(&self) -> bool {
        match self {
            RecordError::Dns(_) => true,
            RecordError::Absent { .. }
            | RecordError::Multiple { .. }
            | RecordError::Invalid { .. } => false,
        }
    }
}

/// The owner name of the record: `_mta-sts.<domain>`.
pub fn record_name(domain: &str) -> String {
    format!("_mta-sts.{}", normalize_name(domain))
}

/// Whether a TXT string is an MTA-STS record at all (RFC 8461 §3.1: others are discarded).
pub fn is_sts_record(txt: &str) -> bool {
    match txt.strip_prefix("v=STSv1") {
        Some(rest) => rest.is_empty() || rest.starts_with([';', ' ', '\t']),
        None => false,
    }
}

/// Parses one MTA-STS record (`is_sts_record` must hold).
pub fn parse_record(txt: &str) -> Result<StsRecord, String> {
    let Some(rest) = txt.strip_prefix("v=STSv1") else {
        return Err("does not start with v=STSv1".into());
    };
    let mut id = None;
    let mut fields = rest.split(';').map(|f| f.trim_matches([' ', '\t']));
    // What precedes the first ";" is only whitespace after "v=STSv1".
    if fields.next().is_some_and(|f| !f.is_empty()) {
        return Err("expected \";\" after v=STSv1".into());
    }
    let fields: Vec<&str> = fields.collect();
    let last = fields.len().saturating_sub(1);
    for (index, field) in fields.iter().enumerate() {
        if field.is_empty() {
            if index == last {
                // A trailing delimiter is allowed.
                continue;
            }
            return Err("empty field".into());
        }
        let Some((key, value)) = field.split_once('=') else {
            return Err(format!("field {field:?} is not key=value"));
        };
        match key {
            "id" => {
                // sts-id = "id=" 1*32(ALPHA / DIGIT)
                if value.is_empty()
                    || value.len() > 32
                    || !value.bytes().all(|b| b.is_ascii_alphanumeric())
                {
                    return Err(format!("invalid id {value:?}"));
                }
                id.get_or_insert_with(|| value.to_string());
            }
            _ => {
                if !valid_extension(key, value) {
                    return Err(format!("invalid field {field:?}"));
                }
            }
        }
    }
    match id {
        Some(id) => Ok(StsRecord { id }),
        None => Err("no id".into()),
    }
}

/// sts-ext-name "=" sts-ext-value (RFC 8461 §3.1).
fn valid_extension(key: &str, value: &str) -> bool {
    let key_ok = match key.as_bytes().split_first() {
        Some((first, rest)) => {
            first.is_ascii_alphanumeric()
                && rest.len() <= 31
                && rest
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        }
        None => false,
    };
    let value_ok = !value.is_empty()
        && value
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b'=' && b != b';');
    key_ok && value_ok
}

/// The one MTA-STS record among a name's TXT strings (RFC 8461 §3.1).
pub fn select_record(name: &str, txts: &[String]) -> Result<StsRecord, RecordError> {
    let sts: Vec<&String> = txts.iter().filter(|t| is_sts_record(t)).collect();
    match sts.as_slice() {
        [] => Err(RecordError::Absent {
            name: name.to_string(),
        }),
        [one] => parse_record(one).map_err(|reason| RecordError::Invalid {
            name: name.to_string(),
            reason,
        }),
        more => Err(RecordError::Multiple {
            name: name.to_string(),
            count: more.len(),
        }),
    }
}

/// Looks up `_mta-sts.<domain>` and picks its MTA-STS record.
pub async fn lookup_record(
    resolver: &dyn Resolver,
    domain: &str,
) -> Result<StsRecord, RecordError> {
    let name = record_name(domain);
    match resolver.lookup_txt(&name).await {
        Ok(answer) => select_record(&name, &answer.records),
        Err(error) => match error.class() {
            ErrorClass::NotFound => Err(RecordError::Absent { name }),
            ErrorClass::Temporary => Err(RecordError::Dns(error)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mtasts_record_parses() {
        let table = [
            ("v=STSv1; id=20160831085700Z;", Some("20160831085700Z")),
            ("v=STSv1;id=abc", Some("abc")),
            ("v=STSv1 ;  id=abc  ;", Some("abc")),
            ("v=STSv1; id=abc; ext=value", Some("abc")),
            ("v=STSv1; ext=value; id=abc", Some("abc")),
            ("v=STSv1; id=first; id=second", Some("first")),
            (
                "v=STSv1; id=12345678901234567890123456789012",
                Some("12345678901234567890123456789012"),
            ),
            ("v=STSv1", None),
            ("v=STSv1;", None),
            ("v=STSv1; id=", None),
            ("v=STSv1; id=abc-def", None),
            ("v=STSv1; id=123456789012345678901234567890123", None),
            ("v=STSv1; id=abc;; ext=1", None),
            ("v=STSv1; id=abc; ext", None),
            ("v=STSv1; id=abc; ext=a=b", None),
            ("v=STSv1 id=abc", None),
        ];
        for (txt, id) in table {
            assert!(is_sts_record(txt), "{txt}");
            assert_eq!(
                parse_record(txt).ok().map(|r| r.id),
                id.map(String::from),
                "{txt}"
            );
        }
        for other in [
            "v=spf1 -all",
            "v=STSv10; id=1",
            "V=STSv1; id=1",
            " v=STSv1; id=1",
        ] {
            assert!(!is_sts_record(other), "{other}");
        }
    }

    #[test]
    fn mtasts_record_selection() {
        let name = "_mta-sts.example.com";
        let txts = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            select_record(name, &txts(&["v=spf1 -all", "v=STSv1; id=one"])).unwrap(),
            StsRecord { id: "one".into() }
        );
        assert!(matches!(
            select_record(name, &txts(&["v=spf1 -all"])),
            Err(RecordError::Absent { .. })
        ));
        // RFC 8461 §3.1: several records (even an invalid one among them) mean none.
        assert!(matches!(
            select_record(name, &txts(&["v=STSv1; id=one", "v=STSv1; id=two"])),
            Err(RecordError::Multiple { count: 2, .. })
        ));
        assert!(matches!(
            select_record(name, &txts(&["v=STSv1; id=one", "v=STSv1; bad"])),
            Err(RecordError::Multiple { .. })
        ));
        let err = select_record(name, &txts(&["v=STSv1; id=a_b"])).unwrap_err();
        assert!(matches!(err, RecordError::Invalid { .. }), "{err}");
        assert!(!err.is_temporary());
        assert_eq!(record_name("Example.COM."), "_mta-sts.example.com");
    }
}
