//! `relaygate transports list | set NAME | remove NAME`: transports in the store named
//! by `-c FILE`.
//!
//! `set` takes the transport as JSON (`--json '{"kind":"smtp","host":"h"}'`, the fields
//! of a TOML `[transports.NAME]` table) and/or as flags, which override the JSON's
//! fields. Like every change it is validated with the whole store first: removing a
//! transport that a route still names is refused, and the error names the route.

use std::path::Path;

use anyhow::{anyhow, bail, Context};
use clap::{Args, Subcommand};
use serde_json::{Map, Value};

use super::routes::{apply, block_on, header, load, open, report, warn_problems};
use crate::config::TransportConfig;
use crate::store::mutate::Mutation;
use crate::store::raw::transport_json;

// Parsed once per run: the size of `Set` does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum TransportsAction {
    /// Each transport's health in the running gateway (up / down until T, why), through
    /// its admin API.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Admin API base URL (default: from the config / the running gateway).
        #[arg(long)]
        admin: Option<String>,
    },
    /// Every transport, with the routes that use it.
    List {
        /// Print JSON (name → transport object).
        #[arg(long)]
        json: bool,
    },
    /// Create or replace a transport.
    Set {
        /// Transport name.
        name: String,
        /// The transport as a JSON object (the fields of a TOML transport).
        #[arg(long)]
        json: Option<String>,
        #[command(flatten)]
        fields: TransportFlags,
    },
    /// Remove a transport (refused while a route names it, unless --force), also one
    /// that does not decode.
    Remove {
        /// Transport name.
        name: String,
        /// Write even if the store then has problems it did not have before.
        #[arg(long)]
        force: bool,
    },
}

/// Transport fields as flags; each one set overrides `--json`.
#[derive(Args, Debug, Default)]
pub struct TransportFlags {
    /// direct | smtp | submission | submissions | socks
    #[arg(long)]
    pub kind: Option<String>,
    /// Smarthost name or address.
    #[arg(long)]
    pub host: Option<String>,
    /// Smarthost port (default by kind: 25 / 587 / 465).
    #[arg(long)]
    pub port: Option<u16>,
    /// SASL user name.
    #[arg(long)]
    pub username: Option<String>,
    /// File holding the password (on each gateway host).
    #[arg(long = "password-file")]
    pub password_file: Option<String>,
    /// Environment variable holding the password (on each gateway host).
    #[arg(long = "password-env")]
    pub password_env: Option<String>,
    /// SASL mechanisms in preference order (repeat, or separate with commas).
    #[arg(long = "mechanism", value_delimiter = ',')]
    pub mechanisms: Vec<String>,
    /// Accept any certificate.
    #[arg(long = "tls-insecure-skip-verify")]
    pub tls_insecure_skip_verify: bool,
    /// Do not use STARTTLS.
    #[arg(long = "no-starttls")]
    pub no_starttls: bool,
    /// Reach the smarthost through this socks transport's proxy.
    #[arg(long = "socks-proxy")]
    pub socks_proxy: Option<String>,
    /// SOCKS5 proxy address (repeat for several, tried in order).
    #[arg(long)]
    pub address: Vec<String>,
    /// The proxy's egress IPs (repeat).
    #[arg(long = "remote-ip")]
    pub remote_ips: Vec<String>,
    /// EHLO name used through the proxy.
    #[arg(long = "remote-hostname")]
    pub remote_hostname: Option<String>,
}

impl TransportFlags {
    /// Merges the flags that are set over `base`.
    fn merge_into(self, base: &mut Map<String, Value>) {
        let mut set = |k: &str, v: Value| {
            base.insert(k.to_string(), v);
        };
        let strings = |v: Vec<String>| Value::Array(v.into_iter().map(Value::String).collect());
        if let Some(v) = self.kind {
            set("kind", Value::String(v));
        }
        if let Some(v) = self.host {
            set("host", Value::String(v));
        }
        if let Some(v) = self.port {
            set("port", Value::from(v));
        }
        if let Some(v) = self.username {
            set("username", Value::String(v));
        }
        if let Some(v) = self.password_file {
            set("password_file", Value::String(v));
        }
        if let Some(v) = self.password_env {
            set("password_env", Value::String(v));
        }
        if !self.mechanisms.is_empty() {
            set("mechanisms", strings(self.mechanisms));
        }
        if self.tls_insecure_skip_verify {
            set("tls_insecure_skip_verify", Value::Bool(true));
        }
        if self.no_starttls {
            set("no_starttls", Value::Bool(true));
        }
        if let Some(v) = self.socks_proxy {
            set("socks_proxy", Value::String(v));
        }
        if !self.address.is_empty() {
            set("address", strings(self.address));
        }
        if !self.remote_ips.is_empty() {
            set("remote_ips", strings(self.remote_ips));
        }
        if let Some(v) = self.remote_hostname {
            set("remote_hostname", Value::String(v));
        }
    }
}

/// The transport described by `--json` and the flags.
pub fn transport_from(
    json: Option<&str>,
    flags: TransportFlags,
) -> anyhow::Result<TransportConfig> {
    let mut object = match json {
        Some(text) => match serde_json::from_str::<Value>(text).context("--json")? {
            Value::Object(m) => m,
            _ => bail!("--json must be a JSON object"),
        },
        None => Map::new(),
    };
    flags.merge_into(&mut object);
    if !object.contains_key("kind") {
        bail!("say which kind of transport: --kind or \"kind\" in --json");
    }
    serde_json::from_value(Value::Object(object)).map_err(|e| anyhow!("transport: {e}"))
}

pub fn run(config_path: &Path, action: TransportsAction) -> anyhow::Result<()> {
    if let TransportsAction::Status { json, admin } = &action {
        let target = super::admin_target(config_path, admin.as_deref())?;
        let v = super::call(&target, "GET", "/api/transports", None)?;
        if *json {
            outln!("{}", serde_json::to_string_pretty(&v)?);
            return Ok(());
        }
        let rows = v["transports"].as_array().cloned().unwrap_or_default();
        if rows.is_empty() {
            outln!("no transport has been used yet: all up");
        }
        for r in rows {
            let state = r["state"].as_str().unwrap_or("?");
            if let Some(limits) = r["rate_limit"].as_array() {
                let limits: Vec<&str> = limits.iter().filter_map(Value::as_str).collect();
                let wait = r["rate_wait_ms"].as_u64().unwrap_or(0);
                let now = if wait == 0 {
                    "a message may go now".to_string()
                } else {
                    format!("the next message waits {wait} ms")
                };
                outln!(
                    "{:<20} rate limit {}: {now}",
                    r["transport"].as_str().unwrap_or("?"),
                    limits.join(", ")
                );
            }
            match state {
                "up" => outln!(
                    "{:<20} up ({} consecutive failures)",
                    r["transport"].as_str().unwrap_or("?"),
                    r["consecutive_failures"]
                ),
                _ => outln!(
                    "{:<20} {state} for {} s more, since {}: {}",
                    r["transport"].as_str().unwrap_or("?"),
                    r["down_for_secs"],
                    r["since"].as_str().unwrap_or("?"),
                    r["why"].as_str().unwrap_or("")
                ),
            }
        }
        return Ok(());
    }
    let (_config, store) = open(config_path)?;
    block_on(async move {
        match action {
            TransportsAction::List { json } => {
                let loaded = load(&store).await?;
                if json {
                    let map: Map<String, Value> = loaded
                        .data
                        .transports
                        .iter()
                        .map(|(k, t)| {
                            let v = serde_json::from_str(&transport_json(t)).unwrap_or(Value::Null);
                            (k.clone(), v)
                        })
                        .collect();
                    outln!("{}", serde_json::to_string_pretty(&Value::Object(map))?);
                } else {
                    outln!("{}", header(&store, &loaded));
                    for (name, t) in &loaded.data.transports {
                        let mut users: Vec<String> = loaded
                            .data
                            .lists()
                            .into_iter()
                            .flat_map(|(list, routes)| {
                                routes
                                    .iter()
                                    .enumerate()
                                    .filter(|(_, r)| {
                                        &r.transport == name || r.fallback.contains(name)
                                    })
                                    .map(move |(i, _)| format!("{list}[{i}]"))
                                    .collect::<Vec<_>>()
                            })
                            .collect();
                        // A socks transport is also used by the smarthosts that go
                        // through its proxy.
                        users.extend(
                            loaded
                                .data
                                .transports
                                .iter()
                                .filter(|(_, o)| &o.socks_proxy == name)
                                .map(|(other, _)| format!("transport {other} (socks_proxy)")),
                        );
                        let used = if users.is_empty() {
                            "no route".to_string()
                        } else {
                            users.join(", ")
                        };
                        outln!("{name} {} (used by: {used})", transport_json(t));
                    }
                }
                warn_problems(&loaded);
            }
            TransportsAction::Status { .. } => {}
            TransportsAction::Set { name, json, fields } => {
                if name.trim().is_empty() {
                    bail!("a transport name must not be empty");
                }
                let transport = transport_from(json.as_deref(), fields)?;
                let text = transport_json(&transport);
                let w = apply(
                    &store,
                    Mutation::SetTransport {
                        name: name.clone(),
                        transport: Box::new(transport),
                    },
                )
                .await?;
                report(w, &format!("transport {name} set to {text}"));
            }
            TransportsAction::Remove { name, force } => {
                let w = super::routes::apply_forced(
                    &store,
                    Mutation::RemoveTransport { name: name.clone() },
                    force,
                )
                .await?;
                report(w, &format!("transport {name} removed"));
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TransportKind;

    #[test]
    fn flags_override_json() {
        let t = transport_from(
            Some(r#"{"kind":"smtp","host":"a","port":25}"#),
            TransportFlags {
                host: Some("b".into()),
                kind: Some("submission".into()),
                mechanisms: vec!["PLAIN".into()],
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(t.kind, TransportKind::Submission);
        assert_eq!(t.host, "b");
        assert_eq!(t.port, Some(25));
        assert_eq!(t.mechanisms, vec!["PLAIN"]);
        assert!(transport_from(None, TransportFlags::default()).is_err());
        assert!(transport_from(
            Some(r#"{"kind":"smtp","bogus":1}"#),
            TransportFlags::default()
        )
        .is_err());
    }
}
