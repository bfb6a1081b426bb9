//! `relaygate lockouts list | clear`: the submission listener's failed-login counts and
//! lockouts, through the running gateway's admin API.

use clap::Subcommand;
use serde_json::{json, Value};

use super::admin_client::{call, AdminTarget};

#[derive(Subcommand)]
pub enum LockoutsAction {
    /// Addresses and (account, address) pairs with failed logins; locked ones first.
    List {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// End lockouts and forget failure counts: for an address, an account, both, or
    /// all.
    Clear {
        /// Client address (an IPv6 address stands for its /64).
        #[arg(long)]
        address: Option<String>,
        /// Account name.
        #[arg(long)]
        account: Option<String>,
        /// Everything.
        #[arg(long)]
        all: bool,
    },
}

/// Runs one `lockouts` subcommand against the admin API.
pub fn run(target: &AdminTarget, action: LockoutsAction) -> anyhow::Result<()> {
    match action {
        LockoutsAction::List { json } => {
            let v = call(target, "GET", "/api/auth/lockouts", None)?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                out!("{}", table(&v));
            }
            Ok(())
        }
        LockoutsAction::Clear {
            address,
            account,
            all,
        } => {
            if address.is_none() && account.is_none() && !all {
                anyhow::bail!("name --address, --account (or both), or --all");
            }
            let v = call(
                target,
                "POST",
                "/api/auth/lockouts/clear",
                Some(&json!({ "address": address, "account": account, "all": all })),
            )?;
            outln!("cleared {} entr(y/ies)", v["cleared"]);
            Ok(())
        }
    }
}

/// One line per entry: state, address, account, failures, until / last failure.
fn table(v: &Value) -> String {
    let rows = v["lockouts"].as_array().cloned().unwrap_or_default();
    if rows.is_empty() {
        return "no failed logins counted\n".into();
    }
    let mut out = format!(
        "{:<8} {:<28} {:<24} {:>8}  {}\n",
        "STATE", "ADDRESS", "ACCOUNT", "FAILURES", "UNTIL / LAST FAILURE"
    );
    for r in rows {
        let locked = r["locked"].as_bool().unwrap_or(false);
        let when = if locked {
            r["locked_until"].as_str().unwrap_or("?").to_string()
        } else {
            format!("{} s ago", r["last_failure_secs_ago"])
        };
        out.push_str(&format!(
            "{:<8} {:<28} {:<24} {:>8}  {}\n",
            if locked { "locked" } else { "counting" },
            r["address"].as_str().unwrap_or("?"),
            r["account"].as_str().unwrap_or("(any)"),
            r["failures"],
            when
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_lines() {
        let v = json!({"lockouts": [
            {"address": "192.0.2.1", "account": "app", "failures": 10, "locked": true,
             "locked_until": "2026-12-06T22:15:00.000Z", "last_failure_secs_ago": 1},
            {"address": "192.0.2.1", "account": null, "failures": 3, "locked": false,
             "locked_until": null, "last_failure_secs_ago": 40}
        ]});
        let t = table(&v);
        assert!(t.contains("locked   192.0.2.1"), "{t}");
        assert!(t.contains("2026-12-06T22:15:00.000Z"), "{t}");
        assert!(t.contains("(any)") && t.contains("40 s ago"), "{t}");
        assert_eq!(
            table(&json!({"lockouts": []})),
            "no failed logins counted\n"
        );
    }
}
