//! Command-line front ends. Each subcommand family lives in its own module with its clap
//! definitions and a `run` function; `main.rs` only dispatches.

pub mod account_hash;
pub mod accounts;
pub mod admin_client;
pub mod auth_test;
pub mod check_config;
pub mod dkim;
pub mod dnscheck;
pub mod lockouts;
pub mod queue;
pub mod routes;
pub mod sendmail;
pub mod socks_test;
pub mod spool;
pub mod transports;

pub use admin_client::{admin_target, call, http, AdminTarget};

/// Runs a command's future on a small runtime.
pub fn block_on<T>(fut: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the runtime: {e}"))?
        .block_on(fut)
}

/// Runs a check that yields a printed report and a verdict: exit 0 when it passed.
pub fn run_report(
    what: &str,
    fut: impl std::future::Future<Output = anyhow::Result<(String, bool)>>,
) -> std::process::ExitCode {
    match block_on(fut) {
        Ok((report, passed)) => {
            print!("{report}");
            if passed {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("relaygate: {what}: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
