//! `relaygate check-config [-c FILE]`: runs every check `serve` would, and reports every
//! problem at once: the file (parse and validation errors with file, line, key and
//! value), then the snapshot a gateway would build from it (secrets readable, transports
//! constructible, DKIM keys and OAuth2 files usable), then, with the Redis store, the
//! store's content. It prints OK only when there is nothing to report, and exits 1
//! otherwise.

use std::path::Path;
use std::process::ExitCode;

use crate::config::{Config, StoreKind};

/// Runs the checks; prints the report.
pub fn run(path: &Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("{}: {} error(s)", path.display(), errors.0.len());
            return ExitCode::FAILURE;
        }
    };
    let mut problems: Vec<String> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    // What serve builds from a file store: secrets, transports, accounts, DKIM keys.
    if config.store.kind == StoreKind::File {
        let built = crate::runtime::Runtime::for_check(&config)
            .map_err(|e| e.to_string())
            .and_then(|rt| crate::app::file_snapshot(&config, &rt));
        if let Err(e) = built {
            for p in e.split("; ") {
                problems.push(format!("{}: {p}", path.display()));
            }
        }
    }
    match super::routes::check_store(path, &config) {
        Ok(Some(line)) => notes.push(line),
        Ok(None) => {}
        Err(e) => problems.push(format!("{e:#}")),
    }
    for (name, a) in &config.accounts {
        if a.allowed_senders.is_empty() {
            notes.push(format!(
                "warning: accounts.{name} has no allowed_senders: it may use any sender address"
            ));
        }
    }
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("{p}");
        }
        for n in &notes {
            eprintln!("{n}");
        }
        eprintln!("{}: {} error(s)", path.display(), problems.len());
        return ExitCode::FAILURE;
    }
    let routes = config.routes.len()
        + config
            .domains
            .values()
            .map(|d| d.routes.len())
            .sum::<usize>()
        + config
            .accounts
            .values()
            .map(|a| a.routes.len())
            .sum::<usize>();
    outln!(
        "{}: OK ({} transports, {} routes, store {:?})",
        path.display(),
        config.transports.len(),
        routes,
        config.store.kind
    );
    for n in &notes {
        outln!("{n}");
    }
    ExitCode::SUCCESS
}
