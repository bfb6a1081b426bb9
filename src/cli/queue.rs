//! `relaygate queue ...`: queue administration through the running gateway's admin API.

use clap::Subcommand;

use super::admin_client::{bulk_body, call, queue_action, queue_list, queue_show, AdminTarget};

#[derive(Subcommand)]
pub enum QueueAction {
    /// List queued messages and the state of each recipient (filters combine with AND).
    List {
        /// Print the admin API's JSON.
        #[arg(long)]
        json: bool,
        /// Only messages with a recipient at this domain.
        #[arg(long)]
        domain: Option<String>,
        /// Only messages whose latest attempt (or forced transport) is this transport.
        #[arg(long)]
        transport: Option<String>,
        /// Only messages with a recipient in this state: pending, held, delivered, failed.
        #[arg(long)]
        status: Option<String>,
        /// Only messages received longer ago than this (e.g. 1h, 30m).
        #[arg(long)]
        older_than: Option<String>,
        /// Only messages submitted by this account.
        #[arg(long)]
        account: Option<String>,
        /// Only messages from this sender (an address, or @domain).
        #[arg(long)]
        sender: Option<String>,
        /// At most this many messages (default 100).
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Skip this many (paging).
        #[arg(long, default_value_t = 0)]
        offset: usize,
    },
    /// Show one message with every attempt of every recipient.
    Show {
        /// Queue id, as `queue list` shows it.
        id: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Attempt delivery now.
    Retry {
        /// Queue id, as `queue list` shows it.
        id: Option<String>,
        /// Every queued message.
        #[arg(long)]
        all: bool,
        /// Recipient domain.
        #[arg(long)]
        domain: Option<String>,
    },
    /// Keep a message, or all mail for a recipient domain or an account (also mail
    /// arriving later), in the queue until released.
    Hold {
        /// Queue id, as `queue list` shows it.
        id: Option<String>,
        /// Recipient domain.
        #[arg(long)]
        domain: Option<String>,
        /// Submitting account.
        #[arg(long)]
        account: Option<String>,
    },
    /// List the hold rules in force (`queue hold --domain/--account` made them).
    Holds {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Release held mail; it is attempted at once.
    Release {
        /// Queue id, as `queue list` shows it.
        id: Option<String>,
        /// Recipient domain.
        #[arg(long)]
        domain: Option<String>,
        /// Submitting account.
        #[arg(long)]
        account: Option<String>,
    },
    /// Delete a message from the queue.
    Drop {
        /// Queue id, as `queue list` shows it.
        id: String,
        /// Send the sender a failure DSN for the recipients not yet delivered.
        #[arg(long)]
        dsn: bool,
    },
    /// Override REQUIRETLS for a message: yes, no or default.
    SetRequiretls {
        /// Queue id, as `queue list` shows it.
        id: String,
        /// yes, no, or default (as the message asked).
        value: String,
    },
    /// Force a transport for a message ("default" removes the override).
    SetTransport {
        /// Queue id, as `queue list` shows it.
        id: String,
        /// Transport name ("default" removes the override).
        name: String,
    },
}

/// Runs one `queue` subcommand against the admin API.
pub fn run(target: &AdminTarget, action: QueueAction) -> anyhow::Result<()> {
    match action {
        QueueAction::List {
            json,
            domain,
            transport,
            status,
            older_than,
            account,
            sender,
            limit,
            offset,
        } => {
            let mut query = vec![format!("limit={limit}"), format!("offset={offset}")];
            for (key, value) in [
                ("domain", domain),
                ("transport", transport),
                ("status", status),
                ("older_than", older_than),
                ("account", account),
                ("sender", sender),
            ] {
                if let Some(v) = value {
                    query.push(format!("{key}={}", super::admin_client::query_escape(&v)));
                }
            }
            queue_list(target, json, &query.join("&"))
        }
        QueueAction::Show { id, json } => queue_show(target, &id, json),
        QueueAction::Holds { json } => {
            let v = call(target, "GET", "/api/queue/holds", None)?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            let rules = v["holds"].as_array().cloned().unwrap_or_default();
            if rules.is_empty() {
                outln!("no hold rules");
            }
            for r in rules {
                let mut parts = Vec::new();
                if let Some(d) = r["domain"].as_str() {
                    parts.push(format!("domain={d}"));
                }
                if let Some(a) = r["account"].as_str() {
                    parts.push(format!("account={a}"));
                }
                outln!("hold {}", parts.join(" "));
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
            outln!(
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
            outln!("{id}: REQUIRETLS {value}");
            Ok(())
        }
        QueueAction::SetTransport { id, name } => {
            call(
                target,
                "POST",
                &format!("/api/queue/{id}/transport"),
                Some(&serde_json::json!({ "value": name })),
            )?;
            outln!("{id}: transport {name}");
            Ok(())
        }
    }
}
