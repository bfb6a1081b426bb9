//! Hold rules: "keep mail for this recipient domain / this account in the queue until
//! released". A rule applies to mail already queued and to mail that arrives later.
//! Every field set in a rule must match (AND, never OR). Rules are kept in
//! `data_dir/holds.json`, written atomically.

use std::path::Path;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldRule {
    /// Recipient domain (normalized); `None` = any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Submitting account; `None` = any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
}

impl HoldRule {
    /// `domain=x.org`, `account=app`, or both: how views name the rule.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(d) = &self.domain {
            parts.push(format!("domain={d}"));
        }
        if let Some(a) = &self.account {
            parts.push(format!("account={a}"));
        }
        format!("rule {}", parts.join(" "))
    }

    /// Whether the rule holds a recipient at `rcpt_domain` of a message from `account`.
    pub fn matches(&self, account: Option<&str>, rcpt_domain: &str) -> bool {
        let domain_ok = self.domain.as_deref().is_none_or(|d| d == rcpt_domain);
        let account_ok = self.account.as_deref().is_none_or(|a| Some(a) == account);
        domain_ok && account_ok && (self.domain.is_some() || self.account.is_some())
    }
}

/// Reads the rules; a missing file means none.
pub fn load(path: &Path) -> Result<Vec<HoldRule>, String> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Writes the rules atomically (temp file, fsync, rename).
pub fn save(path: &Path, rules: &[HoldRule]) -> Result<(), String> {
    use std::io::Write;
    let tmp = path.with_extension("json.tmp");
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(rules).unwrap_or_default())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_match_by_and() {
        let both = HoldRule {
            domain: Some("x.org".into()),
            account: Some("app".into()),
        };
        assert!(both.matches(Some("app"), "x.org"));
        assert!(!both.matches(Some("other"), "x.org"));
        assert!(!both.matches(Some("app"), "y.org"));
        assert!(!both.matches(None, "x.org"));
        let domain = HoldRule {
            domain: Some("x.org".into()),
            account: None,
        };
        assert!(domain.matches(None, "x.org") && domain.matches(Some("a"), "x.org"));
        let empty = HoldRule {
            domain: None,
            account: None,
        };
        assert!(!empty.matches(None, "x.org"), "an empty rule holds nothing");
    }

    #[test]
    fn save_load_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("holds.json");
        assert!(load(&p).unwrap().is_empty());
        let rules = vec![HoldRule {
            domain: Some("x.org".into()),
            account: None,
        }];
        save(&p, &rules).unwrap();
        assert_eq!(load(&p).unwrap(), rules);
    }
}
