//! `relaygate spool check` and `relaygate spool salvage`: the offline tools for a spool
//! that the gateway refuses to replay (SPEC §1).
//!
//! `check` reads every segment and lists every problem, changing nothing; it exits 1 when
//! something would stop the gateway. `salvage` (with the gateway stopped: it takes the
//! data dir lock) rewrites each segment with only its intact, acknowledged records and
//! moves the originals to `data_dir/spool-salvage-<unix time>/`, so nothing is thrown
//! away.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::anyhow;
use clap::Subcommand;

use crate::config::Config;
use crate::spool::{replay, CheckReport};

#[derive(Subcommand)]
pub enum SpoolAction {
    /// Verify every spool record; exit 1 when the spool is damaged.
    Check,
    /// Keep every intact record of a damaged spool (the gateway must be stopped); the
    /// original segments are kept in data_dir/spool-salvage-TIME/.
    Salvage,
}

fn report_text(what: &str, r: &CheckReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{what}: {} segments, {} intact records, {} messages queued",
        r.segments, r.records, r.messages
    );
    for f in &r.findings {
        let _ = writeln!(
            out,
            "  segment {} offset {}: {}{}",
            f.segment,
            f.offset,
            f.reason,
            if f.damage { "  [DAMAGE]" } else { "" }
        );
    }
    if r.skipped_bytes > 0 {
        let _ = writeln!(
            out,
            "  {} bytes not part of any intact record",
            r.skipped_bytes
        );
    }
    out
}

pub fn run(config_path: &Path, action: SpoolAction) -> anyhow::Result<bool> {
    let config = Config::load(config_path).map_err(|e| anyhow!("{e}"))?;
    let dir = config.data_dir.join("spool");
    if !dir.is_dir() {
        return Err(anyhow!("no spool at {}", dir.display()));
    }
    match action {
        SpoolAction::Check => {
            let r = replay::check(&dir).map_err(|e| anyhow!("{e}"))?;
            out!("{}", report_text(&dir.display().to_string(), &r));
            if r.damaged() {
                outln!("damaged: the gateway will not start on this spool; `relaygate spool salvage` keeps every intact record");
            } else {
                outln!("ok");
            }
            Ok(!r.damaged())
        }
        SpoolAction::Salvage => {
            let _lock = crate::app::lock_data_dir(&config.data_dir)?;
            let stamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let backup = config.data_dir.join(format!("spool-salvage-{stamp}"));
            let r = replay::salvage(&dir, &backup).map_err(|e| anyhow!("{e}"))?;
            out!("{}", report_text(&dir.display().to_string(), &r));
            outln!(
                "salvaged: {} intact records kept; the original segments are in {}",
                r.records,
                backup.display()
            );
            Ok(true)
        }
    }
}
