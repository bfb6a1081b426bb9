//! `relaygate serve`: wires the parts together and runs them until a signal.
//!
//! Start-up order: config → data dir lock → spool replay → queue → transports snapshot →
//! scheduler → submission listeners → admin listener → `ready.json`. Shutdown (SIGTERM,
//! SIGINT) runs it backwards: stop accepting, let sessions and deliveries finish (bounded),
//! flush the spool. SIGHUP reloads routes and transports from the config file; a bad file
//! is refused and the running snapshot stays. With `store.kind = "redis"` the snapshot
//! comes from Redis instead (see `crate::store::live`): loaded before the listeners
//! open, then followed by a task of its own.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use relaygate_transports::sasl::ServerSettings;
use relaygate_transports::smarthost::TlsClientConfigs;
use relaygate_transports::TlsRoots;
use serde::{Deserialize, Serialize};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use crate::admin::{self, AdminState};
use crate::config::{Config, StoreKind};
use crate::queue::scheduler::{Limits, Scheduler};
use crate::queue::{Queue, QueueSettings};
use crate::snapshot::SnapshotCell;
use crate::spool::Spool;
use crate::store::StoreStatus;
use crate::submission::limits::SessionLimits;
use crate::submission::server::parse_networks;
use crate::submission::{SubmissionServer, SubmissionSettings};

/// What a running gateway publishes in `data_dir/ready.json` once it listens.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ready {
    pub pid: u32,
    pub submission: Vec<SocketAddr>,
    pub submission_tls: Vec<SocketAddr>,
    pub admin: Option<SocketAddr>,
}

pub fn ready_path(data_dir: &Path) -> PathBuf {
    data_dir.join("ready.json")
}

fn write_ready(data_dir: &Path, ready: &Ready) -> anyhow::Result<()> {
    let tmp = data_dir.join("ready.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(ready)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, ready_path(data_dir))
        .with_context(|| format!("publishing {}", ready_path(data_dir).display()))?;
    Ok(())
}

fn is_loopback(addr: &str) -> bool {
    addr.parse::<SocketAddr>()
        .map(|a| a.ip().is_loopback())
        .unwrap_or(false)
}

/// SASL server settings with a decoy secret kept in `data_dir/sasl-decoy.key`, so that
/// the fake salts shown for unknown users stay the same across restarts.
fn sasl_settings(hostname: &str, data_dir: &Path) -> anyhow::Result<ServerSettings> {
    let path = data_dir.join("sasl-decoy.key");
    let secret: [u8; 32] = match std::fs::read(&path) {
        Ok(bytes) if bytes.len() == 32 => {
            let mut s = [0u8; 32];
            s.copy_from_slice(&bytes);
            s
        }
        _ => {
            let s: [u8; 32] = rand::random();
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, s).with_context(|| format!("writing {}", tmp.display()))?;
            std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
            s
        }
    };
    let mut settings = ServerSettings::new(hostname, secret);
    settings.decoy_iterations = crate::accounts::ITERATIONS;
    Ok(settings)
}

/// Loads the TLS client configs shared by every transport.
pub fn tls_configs(config: &Config) -> anyhow::Result<TlsClientConfigs> {
    let extra =
        (!config.tls.extra_ca_file.is_empty()).then(|| Path::new(&config.tls.extra_ca_file));
    let roots = TlsRoots::load(extra).map_err(|e| anyhow!("tls.extra_ca_file: {e}"))?;
    Ok(TlsClientConfigs::new(&roots))
}

/// Creates `data_dir` if needed and takes its lock: one process at a time owns the
/// spool (the gateway, or an offline `spool salvage`).
pub fn lock_data_dir(data_dir: &Path) -> anyhow::Result<File> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating data_dir {}", data_dir.display()))?;
    let lock = File::create(data_dir.join("lock"))
        .with_context(|| format!("creating lock file in {}", data_dir.display()))?;
    if lock.try_lock().is_err() {
        bail!(
            "another relaygate is running with data_dir {}",
            data_dir.display()
        );
    }
    Ok(lock)
}

pub async fn serve(source: &crate::config::ConfigSource) -> anyhow::Result<()> {
    tracing::info!(config = %source.describe(), "relaygate starting");
    let config = source.load().map_err(|e| anyhow!("{e}"))?;
    let data_dir = config.data_dir.clone();
    let lock = lock_data_dir(&data_dir)?;

    let admin_token = if config.admin.token_file.is_empty() {
        if !config.admin.listen.is_empty() && !is_loopback(&config.admin.listen) {
            bail!(
                "admin.listen {} is not a loopback address: set admin.token_file to protect the admin API",
                config.admin.listen
            );
        }
        None
    } else {
        let t = std::fs::read_to_string(&config.admin.token_file)
            .with_context(|| format!("admin.token_file {}", config.admin.token_file))?;
        let t = t.trim().to_string();
        if t.is_empty() {
            bail!("admin.token_file {} is empty", config.admin.token_file);
        }
        Some(Arc::new(t))
    };

    let tls_server = if config.submission.tls_cert.is_empty() {
        None
    } else {
        Some(
            crate::submission::tls::server_config(
                Path::new(&config.submission.tls_cert),
                Path::new(&config.submission.tls_key),
            )
            .map_err(|e| anyhow!("submission TLS: {e}"))?,
        )
    };

    let (spool, recovered) = Spool::open(&data_dir.join("spool")).map_err(|e| anyhow!("{e}"))?;
    let spool = Arc::new(spool);
    let queue = Arc::new(Queue::new(
        Arc::clone(&spool),
        recovered,
        QueueSettings {
            hostname: config.hostname.clone(),
            max_attempts: config.queue.max_attempts,
            retry: if config.queue.retry_schedule.is_empty() {
                crate::queue::retry::RetrySchedule::Doubling(config.queue.first_retry.0)
            } else {
                crate::queue::retry::RetrySchedule::Explicit(
                    config.queue.retry_schedule.iter().map(|d| d.0).collect(),
                )
            },
            delayed_dsn_after: config.queue.delayed_dsn_after,
            holds_file: Some(data_dir.join("holds.json")),
        },
    ));
    // Everything snapshot builds use from outside (stores, resolver, roots), opened once.
    let runtime = crate::runtime::Runtime::open(&config).map_err(|e| anyhow!("{e}"))?;
    let metrics_handle = crate::metrics::install();
    crate::metrics::register_known();
    let (snap, store_status, store_runner) = match config.store.kind {
        StoreKind::File => (
            SnapshotCell::new(file_snapshot(&config, &runtime).map_err(|e| anyhow!("{e}"))?),
            StoreStatus::file(),
            None,
        ),
        StoreKind::Redis => {
            let started = crate::store::live::start(&config, &runtime)
                .await
                .map_err(|e| anyhow!("{e}"))?;
            (
                SnapshotCell::new(started.snapshot),
                started.status,
                Some(started.runner),
            )
        }
    };

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    // Transport health and rate limits: local, or shared by the fleet through Redis.
    let (health, rates, health_events) = match &runtime.fleet {
        Some(redis) => {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            (
                Arc::new(crate::queue::health::Health::with_events(
                    &config.hostname,
                    tx,
                )),
                Arc::new(crate::queue::rate::Limiter::fleet(Arc::new(
                    crate::store::fleet_state::RedisRates::new(Arc::clone(redis)),
                ))),
                Some((Arc::clone(redis), rx)),
            )
        }
        None => (
            Arc::new(crate::queue::health::Health::default()),
            Arc::new(crate::queue::rate::Limiter::default()),
            None,
        ),
    };
    let health_sync = health_events.map(|(redis, rx)| {
        let queue = Arc::clone(&queue);
        tokio::spawn(crate::store::fleet_state::sync_health(
            redis,
            Arc::clone(&health),
            rx,
            snap.clone(),
            Box::new(move |name: &str| {
                let _ = queue.retry_now(&crate::queue::Selector::LastTransport(name.to_string()));
            }),
            shutdown_rx.clone(),
        ))
    });
    let store_handle = store_runner.map(|r| r.spawn(snap.clone(), shutdown_rx.clone()));
    let scheduler = Scheduler::new(
        Arc::clone(&queue),
        snap.clone(),
        Limits {
            global: config.queue.max_concurrency,
            per_transport: config
                .queue
                .max_per_transport
                .unwrap_or(config.queue.max_concurrency),
            per_destination: config.queue.max_per_destination,
        },
        Arc::clone(&health),
        Arc::clone(&rates),
    );
    let scheduler_task = tokio::spawn(scheduler.run(shutdown_rx.clone()));

    let auth_guard = Arc::new(crate::submission::auth_guard::AuthGuard::new(
        crate::submission::auth_guard::AuthPolicy {
            max_failures: config.submission.auth_max_failures,
            max_failures_per_ip: config.submission.auth_max_failures_per_ip,
            lockout: config.submission.auth_lockout.0,
        },
    ));
    let submission = SubmissionServer::new(
        SubmissionSettings {
            hostname: config.hostname.clone(),
            max_message_size: config.submission.max_message_size.0,
            max_recipients: config.submission.max_recipients,

            trusted_networks: parse_networks(&config.submission.trusted_networks)
                .map_err(|e| anyhow!(e))?,
            tls: tls_server,
            trusted_senders: crate::accounts::SenderPolicy::parse(
                &config.submission.trusted_senders,
            )
            .map_err(|e| anyhow!("submission.trusted_senders: {e}"))?,
            limits: SessionLimits {
                command_timeout: config.submission.command_timeout.0,
                data_timeout: config.submission.data_timeout.0,
                session_timeout: config.submission.session_timeout.0,
                max_junk_commands: config.submission.max_junk_commands,
                max_errors: config.submission.max_errors,
                max_connections: config.submission.max_connections,
                max_connections_per_ip: config.submission.max_connections_per_ip,
            },
            snapshot: snap.clone(),
            sasl: Arc::new(sasl_settings(&config.hostname, &data_dir)?),
            auth_guard: Arc::clone(&auth_guard),
            rates: Arc::clone(&rates),
        },
        Arc::clone(&queue),
    );
    let (plain, implicit) = submission
        .start(
            &config.submission.listen,
            &config.submission.listen_tls,
            shutdown_rx.clone(),
        )
        .await
        .map_err(|e| anyhow!(e))?;

    let admin_addr = if config.admin.listen.is_empty() {
        None
    } else {
        let state = AdminState {
            queue: Arc::clone(&queue),
            metrics: metrics_handle.clone(),
            token: admin_token,
            snapshot: snap.clone(),
            store: store_status.clone(),
            allowed_hosts: Arc::new(config.admin.allowed_hosts.clone()),
            auth_guard: Arc::clone(&auth_guard),
            health: Arc::clone(&health),
            rates: Arc::clone(&rates),
        };
        Some(
            admin::start(&config.admin.listen, state, shutdown_rx.clone())
                .await
                .map_err(|e| anyhow!(e))?,
        )
    };

    spawn_mtasts_refresh(snap.clone(), shutdown_rx.clone());

    // Housekeeping: spool segments, metric upkeep.
    {
        let queue = Arc::clone(&queue);
        let handle = metrics_handle.clone();
        let mut shutdown = shutdown_rx.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = shutdown.changed() => return,
                }
                queue.housekeeping().await;
                if let Some(h) = &handle {
                    h.run_upkeep();
                }
            }
        });
    }

    write_ready(
        &data_dir,
        &Ready {
            pid: std::process::id(),
            submission: plain,
            submission_tls: implicit,
            admin: admin_addr,
        },
    )?;
    tracing::info!(config = %source.describe(), hostname = %config.hostname, "relaygate ready");

    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => reload(source, &config, &runtime, &snap, store_handle.as_ref()),
        }
    }

    tracing::info!("shutting down: no new connections; finishing sessions and deliveries");
    let _ = shutdown_tx.send(true);
    if !submission.drain(Duration::from_secs(30)).await {
        tracing::warn!("submission sessions still open after 30s; closing");
    }
    let _ = tokio::time::timeout(Duration::from_secs(35), scheduler_task).await;
    if let Some(sync) = health_sync {
        let _ = tokio::time::timeout(Duration::from_secs(2), sync).await;
    }
    spool.close();
    let _ = std::fs::remove_file(ready_path(&data_dir));
    drop(lock);
    tracing::info!("stopped");
    Ok(())
}

/// How often cached MTA-STS policies are checked for a refresh.
const MTASTS_REFRESH_EVERY: Duration = Duration::from_secs(10 * 60);

/// Keeps the MTA-STS policies in use fresh (RFC 8461 §5.1: senders SHOULD refresh a
/// cached policy before it expires) and forgets domains no longer delivered to. Uses the
/// cache of the current snapshot's direct transport, so a reload's settings apply.
fn spawn_mtasts_refresh(snap: SnapshotCell, mut shutdown: watch::Receiver<bool>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(MTASTS_REFRESH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            let cache = snap.get().mtasts.clone();
            let Some(cache) = cache else { continue };
            let now = std::time::SystemTime::now();
            for (domain, outcome) in cache.refresh_all_due(now).await {
                tracing::info!(%domain, ?outcome, "MTA-STS policy refreshed");
            }
            let pruned = cache.prune(now).await;
            if pruned > 0 {
                tracing::info!(pruned, "MTA-STS cache: unused domains forgotten");
            }
        }
    });
}

/// The snapshot of the file store: the config's routes, transports and accounts as
/// store data, validated and built like the Redis store's.
pub fn file_snapshot(
    config: &Config,
    rt: &crate::runtime::Runtime,
) -> Result<crate::snapshot::Snapshot, String> {
    let join = |problems: Vec<crate::store::data::Problem>| {
        problems
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    };
    let data = crate::store::StoreData::from_config(config, true).map_err(join)?;
    data.validate().map_err(join)?;
    crate::runtime::build(&data, config, rt).map_err(|e| e.to_string())
}

/// Reloads routes and transports; listeners, data_dir and the like need a restart.
/// With the Redis store, routes and transports stay those of Redis: the new config is
/// handed to the store task, which rebuilds the snapshot with it and reloads Redis.
fn reload(
    source: &crate::config::ConfigSource,
    running: &Config,
    runtime: &crate::runtime::Runtime,
    snap: &SnapshotCell,
    store: Option<&crate::store::live::StoreHandle>,
) {
    let fresh = match source.load() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(errors = %e, "reload refused: config invalid; the running config stays");
            return;
        }
    };
    if fresh.data_dir != running.data_dir || fresh.submission.listen != running.submission.listen {
        tracing::warn!("reload: data_dir and listener changes take effect at the next restart");
    }
    if let Some(store) = store {
        if fresh.store.kind != running.store.kind
            || fresh.store.redis_url != running.store.redis_url
            || fresh.store.key_prefix != running.store.key_prefix
        {
            tracing::warn!("reload: [store] changes take effect at the next restart");
        }
        match runtime.reconfigure(&fresh) {
            Ok(rt) => store.reconfigure(fresh, rt),
            Err(e) => tracing::error!(error = %e, "reload refused; the running config stays"),
        }
        return;
    }
    let built = runtime
        .reconfigure(&fresh)
        .map_err(|e| e.to_string())
        .and_then(|rt| file_snapshot(&fresh, &rt));
    match built {
        Ok(s) => {
            snap.set(s);
            tracing::info!("reload: routes and transports replaced");
        }
        Err(e) => tracing::error!(error = %e, "reload refused; the running config stays"),
    }
}
