//! Command-line front ends. Each subcommand family lives in its own module with its clap
//! definitions and a `run` function; `main.rs` only dispatches.

/// `println!` for the CLI, without its panic when standard output fails (see [`out`]).
macro_rules! outln {
    () => {
        $crate::cli::out::write(format_args!(""), true)
    };
    ($($arg:tt)*) => {
        $crate::cli::out::write(format_args!($($arg)*), true)
    };
}

/// `print!` for the CLI, without its panic when standard output fails (see [`out`]).
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::out::write(format_args!($($arg)*), false)
    };
}

pub mod account_hash;
pub mod accounts;
pub mod admin_client;
pub mod auth_test;
pub mod check_config;
pub mod dkim;
pub mod dnscheck;
pub mod lockouts;
pub mod out;
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
            out!("{report}");
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
