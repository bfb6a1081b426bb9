//! `relaygate routes list | add | remove | import FILE | explain`: routes in the store
//! named by `-c FILE` (Redis, or the config file itself).
//!
//! Changes go through [`StoreClient::apply`]: validated as a whole first, then written
//! atomically and published, so every running gateway picks them up within a second.
//! With the file store `list` and `explain` work and changes are refused with a pointer
//! to the file and SIGHUP. The helpers [`open`] and [`block_on`] are shared with the
//! `transports` and `accounts` commands.

use std::future::Future;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use clap::{Args, Subcommand};
use serde_json::json;

use crate::config::Config;
use crate::store::client::{Loaded, StoreClient, Written};
use crate::store::explain::{explain, render};
use crate::store::mutate::Mutation;
use crate::store::{format_problems, RouteList, RouteSpec, StoreData};

#[derive(Subcommand, Debug)]
pub enum RoutesAction {
    /// Every route, list by list, in evaluation order (accounts, domains, global).
    List {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Add a route (to the global list unless --account or --domain).
    Add {
        #[command(flatten)]
        list: ListChoice,
        /// Sender domain criterion (repeat, or separate with commas); ".d" = d and subdomains.
        #[arg(long = "from-domain", value_delimiter = ',')]
        from_domain: Vec<String>,
        /// Recipient domain criterion (repeat, or separate with commas).
        #[arg(long = "to-domain", value_delimiter = ',')]
        to_domain: Vec<String>,
        /// Match only when at least this many attempts are already done.
        #[arg(long = "minimum-attempts", default_value_t = 0)]
        minimum_attempts: u32,
        /// Transport name ("" = direct delivery).
        #[arg(long)]
        transport: String,
        /// Transports tried in the same attempt when this one cannot take the message
        /// (repeat, or separate with commas).
        #[arg(long, value_delimiter = ',')]
        fallback: Vec<String>,
        /// Position in the list (0 = first); default: the end.
        #[arg(long)]
        index: Option<usize>,
    },
    /// Remove the route at INDEX of a list (the global list unless --account or --domain),
    /// also an entry shown INVALID by `routes list`.
    Remove {
        #[command(flatten)]
        list: ListChoice,
        /// The position `routes list` shows.
        index: usize,
        /// Write even if the store then has problems it did not have before.
        #[arg(long)]
        force: bool,
    },
    /// Replace the store's routes, transports and accounts with those of a TOML config
    /// file (account passwords are turned into verifiers).
    Import {
        /// A TOML file with [transports.*], [[routes]], [domains.*], [accounts.*] and
        /// [[dkim.keys]].
        file: PathBuf,
    },
    /// Dry run: which route and transport an attempt would use, and why earlier routes
    /// did not match.
    Explain {
        /// The SASL identity that submitted (none for trusted-network submissions).
        #[arg(long)]
        account: Option<String>,
        /// Envelope sender address ("" for the null sender).
        #[arg(long)]
        from: String,
        /// Recipient address.
        #[arg(long)]
        to: String,
        /// The attempt to evaluate: 1 is the first, so attempt N has N-1 done.
        #[arg(long, default_value_t = 1)]
        attempt: u32,
    },
}

/// Which route list: `--account A`, `--domain D` or `--global` (the default).
#[derive(Args, Debug, Clone)]
pub struct ListChoice {
    /// An account's routes.
    #[arg(long, conflicts_with_all = ["domain", "global"])]
    pub account: Option<String>,
    /// A sender domain's routes.
    #[arg(long, conflicts_with = "global")]
    pub domain: Option<String>,
    /// The global routes (the default).
    #[arg(long)]
    pub global: bool,
}

impl ListChoice {
    pub fn list(&self) -> anyhow::Result<RouteList> {
        Ok(match (&self.account, &self.domain) {
            (Some(a), _) if a.is_empty() => bail!("--account must not be empty"),
            (Some(a), _) => RouteList::Account(a.clone()),
            (None, Some(d)) => RouteList::Domain(
                crate::address::normalize_domain(d).map_err(|e| anyhow!("--domain: {e}"))?,
            ),
            (None, None) => RouteList::Global,
        })
    }
}

/// Runs a future on a small runtime of its own.
pub fn block_on<T>(fut: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?
        .block_on(fut)
}

/// Loads the config and opens the store it names.
pub fn open(config_path: &Path) -> anyhow::Result<(Config, StoreClient)> {
    let config = Config::load(config_path).map_err(|e| anyhow!("{e}"))?;
    let store = StoreClient::open(config_path, &config).map_err(|e| anyhow!("{e}"))?;
    Ok((config, store))
}

/// Loads the store content, with a context naming the store.
pub async fn load(store: &StoreClient) -> anyhow::Result<Loaded> {
    store
        .load()
        .await
        .with_context(|| format!("reading the store ({})", store.describe()))
}

/// Applies a change and returns the result, with a context naming the store.
pub async fn apply(store: &StoreClient, change: Mutation) -> anyhow::Result<Written> {
    apply_forced(store, change, false).await
}

/// [`apply`], with `--force`: written even when the result has new problems.
pub async fn apply_forced(
    store: &StoreClient,
    change: Mutation,
    force: bool,
) -> anyhow::Result<Written> {
    store
        .apply_with(&change, force)
        .await
        .with_context(|| format!("changing the store ({})", store.describe()))
}

/// "store: ... version N" header line.
pub fn header(store: &StoreClient, loaded: &Loaded) -> String {
    match loaded.version {
        Some(v) => format!("store: {}, version {v}", store.describe()),
        None => format!("store: {}", store.describe()),
    }
}

/// Prints a warning when the loaded data would be refused by a gateway.
pub fn warn_problems(loaded: &Loaded) {
    if !loaded.problems.is_empty() {
        eprintln!(
            "warning: gateways refuse this store content (they keep their previous snapshot):\n{}",
            format_problems(&loaded.problems)
        );
    }
}

/// Reports a written change.
pub fn report(w: Written, what: &str) {
    if w.writes == 0 {
        outln!("{what}: nothing to change (version {})", w.version);
    } else {
        outln!("{what}; store version {} published", w.version);
    }
}

fn list_text(store: &StoreClient, loaded: &Loaded) -> String {
    let mut out = format!("{}\n", header(store, loaded));
    let mut lists: Vec<(RouteList, Vec<RouteSpec>)> = loaded
        .data
        .lists()
        .into_iter()
        .map(|(l, r)| (l, r.to_vec()))
        .collect();
    // Lists whose every entry is invalid are shown too.
    for bad in &loaded.invalid {
        if let Some((list, _)) = &bad.list {
            if !lists.iter().any(|(l, _)| l == list) {
                lists.push((list.clone(), Vec::new()));
            }
        }
    }
    for (list, routes) in &lists {
        out.push_str(&format!("{list}\n"));
        // Positions are those of the stored list, invalid entries included, so that
        // `routes remove INDEX` takes out what is shown at INDEX.
        let bad: Vec<(usize, &crate::store::raw::Invalid)> = loaded
            .invalid
            .iter()
            .filter_map(|b| match &b.list {
                Some((l, i)) if l == list => Some((*i, b)),
                _ => None,
            })
            .collect();
        let total = routes.len() + bad.len();
        if total == 0 {
            out.push_str("  (empty)\n");
        }
        let mut good = routes.iter();
        for i in 0..total {
            match bad.iter().find(|(j, _)| *j == i) {
                Some((_, b)) => out.push_str(&format!("  [{i}] INVALID {} ({})\n", b.raw, b.why)),
                None => {
                    if let Some(r) = good.next() {
                        out.push_str(&format!("  [{i}] {}\n", r.summary()));
                    }
                }
            }
        }
    }
    for b in loaded.invalid.iter().filter(|b| b.list.is_none()) {
        out.push_str(&format!("{} INVALID ({})\n", b.at, b.why));
    }
    out
}

fn list_json(loaded: &Loaded) -> serde_json::Value {
    json!({
        "version": loaded.version,
        "global": loaded.data.global,
        "domains": loaded.data.domains,
        "accounts": loaded.data.accounts_routes,
        "invalid": loaded.invalid.iter().map(|b| json!({
            "at": b.at, "stored": b.raw, "why": b.why,
        })).collect::<Vec<_>>(),
    })
}

fn transport_line(data: &StoreData, name: &str) -> String {
    match data.transports.get(name) {
        Some(t) => format!("{name} ({})", crate::store::raw::transport_json(t)),
        None if name == "direct" || name.is_empty() => "direct (MX delivery)".into(),
        None => format!("{name} (not defined!)"),
    }
}

/// For `check-config`: with the Redis store, reads and validates it as a gateway would
/// (`None` with the file store, which the config check already covers).
pub fn check_store(config_path: &Path, config: &Config) -> anyhow::Result<Option<String>> {
    if config.store.kind == crate::config::StoreKind::File {
        return Ok(None);
    }
    // Whatever went wrong, the report never quotes the Redis password.
    check_redis_store(config_path, config).map_err(|e| {
        anyhow!(
            "{}",
            crate::store::redis::scrub(&format!("{e:#}"), &config.store.redis_url)
        )
    })
}

fn check_redis_store(config_path: &Path, config: &Config) -> anyhow::Result<Option<String>> {
    let store = StoreClient::open(config_path, config).map_err(|e| anyhow!("{e}"))?;
    block_on(async {
        let loaded = load(&store).await?;
        if !loaded.problems.is_empty() {
            bail!(
                "{}: gateways would refuse this store content:\n{}",
                header(&store, &loaded),
                format_problems(&loaded.problems)
            );
        }
        Ok(Some(format!(
            "{}: OK ({} transports, {} routes, {} accounts)",
            header(&store, &loaded),
            loaded.data.transports.len(),
            loaded.data.route_count(),
            loaded.data.accounts.len()
        )))
    })
}

pub fn run(config_path: &Path, action: RoutesAction) -> anyhow::Result<()> {
    let (_config, store) = open(config_path)?;
    block_on(async move {
        match action {
            RoutesAction::List { json } => {
                let loaded = load(&store).await?;
                if json {
                    outln!("{}", serde_json::to_string_pretty(&list_json(&loaded))?);
                } else {
                    out!("{}", list_text(&store, &loaded));
                }
                warn_problems(&loaded);
            }
            RoutesAction::Add {
                list,
                from_domain,
                to_domain,
                minimum_attempts,
                transport,
                fallback,
                index,
            } => {
                let list = list.list()?;
                let route = RouteSpec {
                    from_domain,
                    to_domain,
                    minimum_attempts,
                    transport,
                    fallback,
                };
                let summary = route.summary();
                let at = index.map(|i| i.to_string()).unwrap_or_else(|| "end".into());
                let w = apply(
                    &store,
                    Mutation::AddRoute {
                        list: list.clone(),
                        index,
                        route,
                    },
                )
                .await?;
                report(w, &format!("added to {list} at {at}: {summary}"));
            }
            RoutesAction::Remove { list, index, force } => {
                let list = list.list()?;
                let w = apply_forced(
                    &store,
                    Mutation::RemoveRoute {
                        list: list.clone(),
                        index,
                    },
                    force,
                )
                .await?;
                report(w, &format!("removed {list}[{index}]"));
            }
            RoutesAction::Import { file } => {
                let source = Config::load(&file).map_err(|e| anyhow!("{e}"))?;
                let data = StoreData::from_config(&source, true)
                    .map_err(|p| anyhow!("{}: {}", file.display(), format_problems(&p)))?;
                let what = format!(
                    "imported {} transport(s), {} route(s), {} account(s), {} DKIM key(s) from {}",
                    data.transports.len(),
                    data.route_count(),
                    data.accounts.len(),
                    data.dkim.values().map(Vec::len).sum::<usize>(),
                    file.display()
                );
                let w = apply(&store, Mutation::Replace(Box::new(data))).await?;
                report(w, &what);
            }
            RoutesAction::Explain {
                account,
                from,
                to,
                attempt,
            } => {
                if attempt == 0 {
                    bail!("--attempt counts from 1 (the first attempt)");
                }
                // An address, or "" / "<>" for the null sender; anything else is a
                // mistake, not the null sender.
                let is_address = |a: &str| {
                    a.rsplit_once('@')
                        .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty())
                };
                let from = if from == "<>" { String::new() } else { from };
                if !from.is_empty() && !is_address(&from) {
                    bail!("--from {from:?} is not an address (user@domain, or \"<>\" for the null sender)");
                }
                if !is_address(&to) {
                    bail!("--to {to:?} is not an address (user@domain)");
                }
                let loaded = load(&store).await?;
                let e = explain(&loaded.data, account.as_deref(), &from, &to, attempt)
                    .map_err(|e| anyhow!("{e}"))?;
                outln!("{}", header(&store, &loaded));
                out!("{}", render(&e));
                outln!("transport: {}", transport_line(&loaded.data, e.transport()));
                warn_problems(&loaded);
            }
        }
        Ok(())
    })
}
