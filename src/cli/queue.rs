//! `relaygate queue ...`: queue administration through the running gateway's admin API.

use clap::Subcommand;

use super::admin_client::{bulk_body, call, queue_action, queue_list, queue_show, AdminTarget};

#[derive(Subcommand)]
pub enum QueueAction {
    /// List queued messages and the state of each recipient.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show one message with every attempt of every recipient.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Attempt delivery now.
    Retry {
        id: Option<String>,
        #[arg(long)]
        all: bool,
        #[arg(long)]
        domain: Option<String>,
    },
    /// Keep a message, or all mail for a recipient domain or an account (also mail
    /// arriving later), in the queue until released.
    Hold {
        id: Option<String>,
        #[arg(long)]
        domain: Option<String>,
        #[arg(long)]
        account: Option<String>,
    },
    /// List the hold rules in force (`queue hold --domain/--account` made them).
    Holds {
        #[arg(long)]
        json: bool,
    },
    /// Release held mail; it is attempted at once.
    Release {
        id: Option<String>,
        #[arg(long)]
        domain: Option<String>,
        #[arg(long)]
        account: Option<String>,
    },
    /// Delete a message from the queue.
    Drop {
        id: String,
        /// Send the sender a failure DSN for the recipients not yet delivered.
        #[arg(long)]
        dsn: bool,
    },
    /// Override REQUIRETLS for a message: yes, no or default.
    SetRequiretls { id: String, value: String },
    /// Force a transport for a message ("default" removes the override).
    SetTransport { id: String, name: String },
}

/// Runs one `queue` subcommand against the admin API.
pub fn run(target: &AdminTarget, action: QueueAction) -> anyhow::Result<()> {
    match action {
        QueueAction::List { json } => queue_list(target, json),
        QueueAction::Show { id, json } => queue_show(target, &id, json),
        QueueAction::Holds { json } => {
            let v = call(target, "GET", "/api/queue/holds", None)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            let rules = v["holds"].as_array().cloned().unwrap_or_default();
            if rules.is_empty() {
                println!("no hold rules");
            }
            for r in rules {
                let mut parts = Vec::new();
                if let Some(d) = r["domain"].as_str() {
                    parts.push(format!("domain={d}"));
                }
                if let Some(a) = r["account"].as_str() {
                    parts.push(format!("account={a}"));
                }
                println!("hold {}", parts.join(" "));
            }
            Ok(())
        }
        QueueAction::Retry { id, all, domain } => {
            let bulk = if id.is_none() {
                Some(bulk_body(all, domain.as_deref(), None)?)
            } else {
                None
            };
            queue_action(target, "retry", id.as_deref(), bulk)
        }
        QueueAction::Hold {
            id,
            domain,
            account,
        } => {
            let bulk = if id.is_none() {
                Some(bulk_body(false, domain.as_deref(), account.as_deref())?)
            } else {
                None
            };
            queue_action(target, "hold", id.as_deref(), bulk)
        }
        QueueAction::Release {
            id,
            domain,
            account,
        } => {
            let bulk = if id.is_none() {
                Some(bulk_body(false, domain.as_deref(), account.as_deref())?)
            } else {
                None
            };
            queue_action(target, "release", id.as_deref(), bulk)
        }
        QueueAction::Drop { id, dsn } => {
            let v = call(
                target,
                "POST",
                &format!("/api/queue/{id}/drop"),
                Some(&serde_json::json!({ "dsn": dsn })),
            )?;
            println!(
                "dropped {id} ({} recipient(s) not delivered{})",
                v["recipients"],
                if dsn { ", DSN sent" } else { "" }
            );
            Ok(())
        }
        QueueAction::SetRequiretls { id, value } => {
            call(
                target,
                "POST",
                &format!("/api/queue/{id}/requiretls"),
                Some(&serde_json::json!({ "value": value })),
            )?;
            println!("{id}: REQUIRETLS {value}");
            Ok(())
        }
        QueueAction::SetTransport { id, name } => {
            call(
                target,
                "POST",
                &format!("/api/queue/{id}/transport"),
                Some(&serde_json::json!({ "value": name })),
            )?;
            println!("{id}: transport {name}");
            Ok(())
        }
    }
}
