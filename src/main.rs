//! The `relaygate` command: parses arguments, sets up logging, runs a subcommand.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use relaygate::config::{Config, DEFAULT_CONFIG_PATH};

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
        #[arg(short = 'c', long = "config", default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
    /// Validate a config file; exit 0 when it is good, 1 with the errors otherwise.
    CheckConfig {
        #[arg(short = 'c', long = "config", default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
    /// Queue administration through the running gateway's admin API.
    Queue {
        #[arg(short = 'c', long = "config", default_value = DEFAULT_CONFIG_PATH, global = true)]
        config: PathBuf,
        /// Admin API base URL (default: from the config / the running gateway).
        #[arg(long, global = true)]
        admin: Option<String>,
        #[command(subcommand)]
        action: QueueAction,
    },
}

#[derive(Subcommand)]
enum QueueAction {
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

fn queue_command(target: &relaygate::cli::AdminTarget, action: QueueAction) -> anyhow::Result<()> {
    use relaygate::cli::{bulk_body, call, queue_action};
    match action {
        QueueAction::List { json } => relaygate::cli::queue_list(target, json),
        QueueAction::Show { id, json } => relaygate::cli::queue_show(target, &id, json),
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { config } => match Config::load(&config) {
            Ok(c) => {
                let routes = c.routes.len()
                    + c.domains.values().map(|d| d.routes.len()).sum::<usize>()
                    + c.accounts.values().map(|a| a.routes.len()).sum::<usize>();
                println!(
                    "{}: OK ({} transports, {} routes, store {:?})",
                    config.display(),
                    c.transports.len(),
                    routes,
                    c.store.kind
                );
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{errors}");
                ExitCode::FAILURE
            }
        },
        Command::Serve { config } => {
            init_logging(cli.log_format);
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("relaygate: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(relaygate::app::serve(&config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("relaygate: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Queue {
            config,
            admin,
            action,
        } => {
            let result = relaygate::cli::admin_target(&config, admin.as_deref())
                .and_then(|target| queue_command(&target, action));
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
