//! The `relaygate` command: parses arguments, sets up logging, runs a subcommand.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use relaygate::config::DEFAULT_CONFIG_PATH;

#[derive(Parser)]
#[command(
    name = "relaygate",
    version,
    about = "SMTP transport and SASL proxy gateway"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// Config file (default: config/relaygate.toml when it exists, else the default
        /// compiled into the binary).
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
    },
    /// The default config: `config print-default` writes the embedded one to stdout.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Validate a config file; exit 0 when it is good, 1 with the errors otherwise.
    CheckConfig {
        /// Config file (default: config/relaygate.toml).
        #[arg(short = 'c', long = "config", default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
    /// The spool on disk: `check` verifies every record, `salvage` keeps every intact
    /// record of a damaged spool (with the gateway stopped).
    Spool {
        /// Config file (default: config/relaygate.toml).
        #[arg(short = 'c', long = "config", default_value = DEFAULT_CONFIG_PATH, global = true)]
        config: PathBuf,
        #[command(subcommand)]
        action: relaygate::cli::spool::SpoolAction,
    },
    /// Account helpers: `account hash` prints the verifiers for a password.
    Account {
        #[command(subcommand)]
        action: AccountAction,
    },
    /// Queue administration through the running gateway's admin API.
    Queue {
        /// Config file (default: config/relaygate.toml).
        #[arg(short = 'c', long = "config", default_value = DEFAULT_CONFIG_PATH, global = true)]
        config: PathBuf,
        /// Admin API base URL (default: from the config / the running gateway).
        #[arg(long, global = true)]
        admin: Option<String>,
        #[command(subcommand)]
        action: relaygate::cli::queue::QueueAction,
    },
    /// Failed logins on the submission listener: list lockouts, clear them (through the
    /// running gateway's admin API).
    Lockouts {
        /// Config file (default: config/relaygate.toml).
        #[arg(short = 'c', long = "config", default_value = DEFAULT_CONFIG_PATH, global = true)]
        config: PathBuf,
        /// Admin API base URL (default: from the config / the running gateway).
        #[arg(long, global = true)]
        admin: Option<String>,
        #[command(subcommand)]
        action: relaygate::cli::lockouts::LockoutsAction,
    },
    /// Routes in the configured store (Redis, or the config file: list/explain only).
    Routes {
        /// Config file (default: config/relaygate.toml).
        #[arg(short = 'c', long = "config", default_value = DEFAULT_CONFIG_PATH, global = true)]
        config: PathBuf,
        #[command(subcommand)]
        action: relaygate::cli::routes::RoutesAction,
    },
    /// Transports in the configured store.
    Transports {
        /// Config file (default: config/relaygate.toml).
        #[arg(short = 'c', long = "config", default_value = DEFAULT_CONFIG_PATH, global = true)]
        config: PathBuf,
        #[command(subcommand)]
        action: relaygate::cli::transports::TransportsAction,
    },
    /// Accounts (SASL identities of submitting applications) in the configured store.
    Accounts {
        /// Config file (default: config/relaygate.toml).
        #[arg(short = 'c', long = "config", default_value = DEFAULT_CONFIG_PATH, global = true)]
        config: PathBuf,
        #[command(subcommand)]
        action: relaygate::cli::accounts::AccountsAction,
    },
    /// Connect to a smarthost transport and log in (no message is sent): prints the TLS
    /// version, the mechanisms offered and chosen, and whether AUTH succeeded.
    AuthTest {
        /// The transport's name in the config.
        transport: String,
        /// Config file (default: config/relaygate.toml).
        #[arg(short = 'c', long = "config", default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
    /// DKIM keys: `dkim keygen DOMAIN SELECTOR` writes a new key and prints its DNS record.
    Dkim {
        #[command(subcommand)]
        action: relaygate::cli::dkim::DkimAction,
    },
    /// Check a sender domain's DNS against the egress IPs: SPF (MAIL FROM and HELO),
    /// reverse DNS vs the EHLO name, MX, MTA-STS and TLSA; exit 1 when a check fails.
    Dnscheck(relaygate::cli::dnscheck::DnscheckArgs),
    /// Check that every proxy of a socks transport accepts our credentials and a
    /// CONNECT; exit 0 only when all of them work.
    SocksTest(relaygate::cli::socks_test::SocksTestArgs),
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Print the default config compiled into the binary.
    PrintDefault,
}

#[derive(Subcommand)]
enum AccountAction {
    /// Read a password (standard input, or --password-file) and print the verifiers to
    /// put in `[accounts.NAME]` instead of the password.
    Hash {
        /// Read the password from this file (default: standard input).
        #[arg(long)]
        password_file: Option<String>,
    },
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Prints a command's error (with its causes) and maps it to the exit status.
fn exit_code(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("relaygate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Async worker threads: one fewer than the CPUs (at least one), leaving a CPU for the
/// spool writer's flushes and the kernel's network work, which on a relay is most of the
/// CPU time (docs/benchmarks.md: on 2 CPUs, one worker costs 15 % less CPU per message
/// than two). `None` when the operator set `TOKIO_WORKER_THREADS`, which then applies.
fn worker_threads(operator_set: bool, cpus: usize) -> Option<usize> {
    (!operator_set).then(|| cpus.saturating_sub(1).max(1))
}

fn main() -> ExitCode {
    // Invoked as `sendmail` (a symlink), or as `relaygate sendmail ...`: sendmail's own
    // flags (-t -f -oi ...) are not clap's, so they are parsed by the sendmail module.
    let argv: Vec<String> = std::env::args().collect();
    let invoked_as = argv
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    if invoked_as == "sendmail" {
        return ExitCode::from(relaygate::cli::sendmail::run(&argv[1..]));
    }
    if invoked_as == "mailq" {
        return ExitCode::from(relaygate::cli::sendmail::run(&["-bp".to_string()]));
    }
    if argv.get(1).map(String::as_str) == Some("sendmail") {
        return ExitCode::from(relaygate::cli::sendmail::run(&argv[2..]));
    }
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { config } => relaygate::cli::check_config::run(&config),
        Command::Serve { config } => {
            init_logging(cli.log_format);
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            if let Some(n) = worker_threads(
                std::env::var_os("TOKIO_WORKER_THREADS").is_some(),
                std::thread::available_parallelism().map_or(1, |n| n.get()),
            ) {
                builder.worker_threads(n);
            }
            let runtime = match builder.enable_all().build() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("relaygate: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let source = relaygate::config::ConfigSource::resolve(config);
            match runtime.block_on(relaygate::app::serve(&source)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("relaygate: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Spool { config, action } => match relaygate::cli::spool::run(&config, action) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("relaygate: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Routes { config, action } => {
            exit_code(relaygate::cli::routes::run(&config, action))
        }
        Command::Transports { config, action } => {
            exit_code(relaygate::cli::transports::run(&config, action))
        }
        Command::Accounts { config, action } => {
            exit_code(relaygate::cli::accounts::run(&config, action))
        }
        Command::Account {
            action: AccountAction::Hash { password_file },
        } => exit_code(relaygate::cli::account_hash::run(password_file.as_deref())),
        Command::AuthTest { transport, config } => {
            relaygate::cli::auth_test::run(&config, &transport)
        }
        Command::Dnscheck(args) => relaygate::cli::dnscheck::run(args),
        Command::Config {
            action: ConfigAction::PrintDefault,
        } => {
            relaygate::cli::out::write(
                format_args!("{}", relaygate::config::EMBEDDED_DEFAULT),
                false,
            );
            ExitCode::SUCCESS
        }
        Command::Dkim { action } => exit_code(relaygate::cli::dkim::run(action)),
        Command::SocksTest(args) => relaygate::cli::socks_test::run(args),
        Command::Lockouts {
            config,
            admin,
            action,
        } => exit_code(
            relaygate::cli::admin_target(&config, admin.as_deref())
                .and_then(|target| relaygate::cli::lockouts::run(&target, action)),
        ),
        Command::Queue {
            config,
            admin,
            action,
        } => {
            let result = relaygate::cli::admin_target(&config, admin.as_deref())
                .and_then(|target| relaygate::cli::queue::run(&target, action));
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("relaygate: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn worker_threads_leave_a_cpu() {
        let w = |cpus| super::worker_threads(false, cpus);
        assert_eq!(
            [w(1), w(2), w(4), w(16)],
            [Some(1), Some(1), Some(3), Some(15)]
        );
        assert_eq!(super::worker_threads(true, 8), None);
    }

    /// Every argument of every command has help text (`relaygate CMD --help` explains
    /// each flag and positional argument).
    #[test]
    fn every_argument_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::Cli::command(), "relaygate", &mut missing);
        assert!(
            missing.is_empty(),
            "arguments without help:\n{}",
            missing.join("\n")
        );
    }
}
