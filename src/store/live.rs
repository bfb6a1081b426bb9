//! The Redis store inside a running gateway: the first load at start-up, then a task
//! that keeps the snapshot in step with Redis.
//!
//! - Start ([`start`]): load from Redis; if Redis cannot be reached (or holds data that
//!   is refused), start from the snapshot persisted under `data_dir`; with neither,
//!   refuse to start and say why.
//! - Follow ([`Runner::spawn`]): a subscriber task on `{prefix}changed` wakes the loader
//!   on every message (and once after each (re)subscription, since messages sent while
//!   it was away are lost); the loader also reads `{prefix}version` every
//!   `store.check_interval` and reloads when it moved, and reloads in full every
//!   [`FULL_RELOAD_EVERY`] checks whatever the version says.
//! - Each load is decoded, validated as a whole and built into a snapshot; anything
//!   wrong refuses the whole load (logged once per distinct problem, counted in
//!   `relaygate_store_reloads_total{result="invalid"}`) and the snapshot in force stays.
//!   An accepted one replaces the snapshot and is persisted.
//! - Errors: the connection is dropped and made again after a capped, jittered backoff
//!   ([`Backoff`]); the state (up / degraded) is logged on change only.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::runtime::Runtime;
use redis::PushKind;
use tokio::sync::{watch, Notify};

use super::data::{format_problems, Problem, StoreData};
use super::persist::{self, Persisted};
use super::redis::{Conn, RedisStore};
use super::status::StoreStatus;
use super::StoreError;
use crate::config::Config;
use crate::snapshot::{Snapshot, SnapshotCell};

/// A full reload happens every this many version checks, even when the version did
/// not move (it catches edits made without `INCR`).
pub const FULL_RELOAD_EVERY: u32 = 30;
/// How often the subscription connection is pinged.
const PING_EVERY: Duration = Duration::from_secs(10);

/// Reconnection delays: from 200 ms, doubling, at most 5 s, with ±20 % jitter.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    pub const MIN: Duration = Duration::from_millis(200);
    pub const MAX: Duration = Duration::from_secs(5);

    pub fn new() -> Backoff {
        Backoff { next: Self::MIN }
    }

    pub fn reset(&mut self) {
        self.next = Self::MIN;
    }

    /// The delay before the next try.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        let jitter = 0.8 + 0.4 * rand::random::<f64>();
        base.mul_f64(jitter)
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

fn count(result: &'static str) {
    metrics::counter!("relaygate_store_reloads_total", "result" => result).increment(1);
}

/// Validates and builds a snapshot from store data.
pub fn build(data: &StoreData, config: &Config, rt: &Runtime) -> Result<Snapshot, Vec<Problem>> {
    data.validate()?;
    crate::runtime::build(data, config, rt).map_err(|e| vec![Problem::new("snapshot", e)])
}

/// A store whose version counter vanished was reset (flushed, or restarted without
/// persistence): taking its (likely empty) content would reroute the whole fleet, so it
/// is refused like invalid data. Any write through the CLI sets the counter again.
fn reset_problem(store: &RedisStore, known: u64) -> Problem {
    Problem::new(
        store.keys().version(),
        format!(
            "missing while version {known} was loaded before: the store looks reset \
             (flushed, or Redis restarted without persistence); write it again \
             (e.g. `relaygate routes import`) to have it taken"
        ),
    )
}

/// What the gateway runs on, and how it got it.
struct Applied {
    version: u64,
    data: StoreData,
    /// The data's JSON, to tell a real change from a reload of the same content.
    fingerprint: Vec<u8>,
}

impl Applied {
    fn new(version: u64, data: StoreData) -> Applied {
        let fingerprint = serde_json::to_vec(&data).unwrap_or_default();
        Applied {
            version,
            data,
            fingerprint,
        }
    }
}

/// The result of [`start`]: the first snapshot, the status, and the task to run.
pub struct Started {
    pub snapshot: Snapshot,
    pub status: StoreStatus,
    pub runner: Runner,
}

/// Loads the first snapshot: from Redis, else from the persisted one.
pub async fn start(config: &Config, rt: &Runtime) -> Result<Started, StoreError> {
    let store = Arc::new(RedisStore::open(&config.store, &config.tls)?);
    for result in ["ok", "unchanged", "invalid", "error"] {
        metrics::counter!("relaygate_store_reloads_total", "result" => result).increment(0);
    }
    let source = format!("{} {}", store.display(), store.keys().prefix());
    let status = StoreStatus::redis(&source);
    let data_dir = config.data_dir.clone();

    let mut conn = None;
    let fresh: Result<(u64, StoreData, Snapshot), StoreError> = async {
        let mut c = store.connect().await?;
        let raw = store.load(&mut c).await;
        conn = Some(c);
        let raw = raw?;
        if raw.version == 0 {
            if let Ok(Some(p)) = persist::load(&data_dir) {
                if p.version > 0 {
                    return Err(StoreError::Invalid(vec![reset_problem(&store, p.version)]));
                }
            }
        }
        let data = raw.decode().map_err(StoreError::Invalid)?;
        let snap = build(&data, config, rt).map_err(StoreError::Invalid)?;
        Ok((raw.version, data, snap))
    }
    .await;

    let (applied, snapshot, from_persisted) = match fresh {
        Ok((version, data, snap)) => {
            status.set_data(true, None);
            let applied = Applied::new(version, data);
            save(&data_dir, &source, &applied).await;
            tracing::info!(store = %source, version, routes = applied.data.route_count(), transports = applied.data.transports.len(), "store: loaded from Redis");
            (applied, snap, false)
        }
        Err(cause) => {
            if cause.is_connection() {
                conn = None;
                status.set_data(false, Some(&cause));
            } else {
                status.set_data(true, None);
                status.set_rejected(Some(cause.to_string()));
                count("invalid");
            }
            let path = persist::path(&data_dir);
            let persisted = match persist::load(&data_dir)? {
                Some(p) => p,
                None => {
                    return Err(StoreError::Unavailable {
                        cause: Box::new(cause),
                        path,
                    })
                }
            };
            let snap =
                build(&persisted.data, config, rt).map_err(|problems| StoreError::Persisted {
                    path: path.clone(),
                    message: format_problems(&problems),
                })?;
            tracing::warn!(
                store = %source,
                error = %cause,
                version = persisted.version,
                saved_at = %crate::model::rfc3339(persisted.saved_at_ms),
                "store: starting on the persisted snapshot"
            );
            (Applied::new(persisted.version, persisted.data), snap, true)
        }
    };
    status.loaded(applied.version, from_persisted);
    Ok(Started {
        snapshot,
        status: status.clone(),
        runner: Runner {
            store,
            status,
            conn,
            seen_version: applied.version,
            applied,
            data_dir,
            source,
            config: Arc::new(config.clone()),
            rt: rt.clone(),
            snap: None,
            backoff: Backoff::new(),
            delay: None,
            check_interval: config.store.check_interval.0,
        },
    })
}

async fn save(data_dir: &std::path::Path, source: &str, applied: &Applied) {
    let dir = data_dir.to_path_buf();
    let snapshot = Persisted::new(applied.version, source, applied.data.clone());
    let result = tokio::task::spawn_blocking(move || persist::save(&dir, &snapshot)).await;
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "store: cannot persist the snapshot"),
        Err(e) => tracing::warn!(error = %e, "store: cannot persist the snapshot"),
    }
}

/// A config re-read on SIGHUP, with its TLS client configs.
type ConfigUpdate = Option<(Arc<Config>, Runtime)>;

/// Asks a running store task to rebuild with a new config (SIGHUP).
#[derive(Clone)]
pub struct StoreHandle {
    config_tx: Arc<watch::Sender<ConfigUpdate>>,
}

impl StoreHandle {
    /// Rebuilds the snapshot from the store data in force with this config (new
    /// hostname, TLS roots, ...), and reloads from Redis.
    pub fn reconfigure(&self, config: Config, rt: Runtime) {
        let _ = self.config_tx.send(Some((Arc::new(config), rt)));
    }
}

/// The task that follows the Redis store.
pub struct Runner {
    store: Arc<RedisStore>,
    status: StoreStatus,
    conn: Option<Conn>,
    applied: Applied,
    /// The version of the last load, accepted or not.
    seen_version: u64,
    data_dir: PathBuf,
    source: String,
    config: Arc<Config>,
    rt: Runtime,
    snap: Option<SnapshotCell>,
    backoff: Backoff,
    /// Wait this long before the next connection attempt.
    delay: Option<Duration>,
    check_interval: Duration,
}

enum Wake {
    Shutdown,
    Message,
    Tick,
    Config,
}

impl Runner {
    /// Starts the subscriber and the loader; they stop when `shutdown` turns true.
    pub fn spawn(mut self, snap: SnapshotCell, shutdown: watch::Receiver<bool>) -> StoreHandle {
        let (config_tx, config_rx) = watch::channel(None);
        let notify = Arc::new(Notify::new());
        tokio::spawn(subscriber(
            Arc::clone(&self.store),
            Arc::clone(&notify),
            self.status.clone(),
            shutdown.clone(),
        ));
        self.snap = Some(snap);
        tokio::spawn(self.run(notify, shutdown, config_rx));
        StoreHandle {
            config_tx: Arc::new(config_tx),
        }
    }

    async fn run(
        mut self,
        notify: Arc<Notify>,
        mut shutdown: watch::Receiver<bool>,
        mut config_rx: watch::Receiver<ConfigUpdate>,
    ) {
        let mut tick = tokio::time::interval(self.check_interval.max(Duration::from_millis(100)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.reset();
        let mut checks = 0u32;
        let reconnect = self.conn.is_none();
        if reconnect {
            self.delay = Some(self.backoff.next_delay());
        }
        loop {
            if self.conn.is_none() {
                if let Some(delay) = self.delay.take() {
                    let wake = tokio::select! {
                        _ = shutdown.changed() => Wake::Shutdown,
                        _ = tokio::time::sleep(delay) => Wake::Tick,
                        r = config_rx.changed() => if r.is_ok() { Wake::Config } else { Wake::Tick },
                    };
                    match wake {
                        Wake::Shutdown => return,
                        Wake::Config => {
                            self.take_config(&mut config_rx);
                            self.delay = Some(Duration::ZERO);
                            continue;
                        }
                        Wake::Message | Wake::Tick => {}
                    }
                }
                match self.store.connect().await {
                    Ok(c) => self.conn = Some(c),
                    Err(e) => {
                        self.failed(e);
                        continue;
                    }
                }
                self.reload().await;
                continue;
            }
            let wake = tokio::select! {
                _ = shutdown.changed() => Wake::Shutdown,
                _ = notify.notified() => Wake::Message,
                _ = tick.tick() => Wake::Tick,
                r = config_rx.changed() => if r.is_ok() { Wake::Config } else { Wake::Tick },
            };
            match wake {
                Wake::Shutdown => return,
                Wake::Message => self.reload().await,
                Wake::Config => {
                    self.take_config(&mut config_rx);
                    self.reload().await;
                }
                Wake::Tick => {
                    checks += 1;
                    if checks.is_multiple_of(FULL_RELOAD_EVERY) {
                        self.reload().await;
                    } else {
                        self.check_version().await;
                    }
                }
            }
        }
    }

    /// Takes a new config and rebuilds the snapshot in force with it.
    fn take_config(&mut self, config_rx: &mut watch::Receiver<ConfigUpdate>) {
        let Some((config, rt)) = config_rx.borrow_and_update().clone() else {
            return;
        };
        self.config = config;
        self.rt = rt;
        match build(&self.applied.data, &self.config, &self.rt) {
            Ok(s) => {
                if let Some(cell) = &self.snap {
                    cell.set(s);
                }
                tracing::info!(
                    version = self.applied.version,
                    "store: snapshot rebuilt with the reloaded config"
                );
            }
            Err(problems) => tracing::error!(
                problems = %format_problems(&problems),
                "store: the reloaded config does not fit the store data; the running snapshot stays"
            ),
        }
    }

    /// A connection-level failure: drop the connection, retry after a backoff.
    fn failed(&mut self, e: StoreError) {
        if e.is_connection() {
            self.conn = None;
            self.status.set_data(false, Some(&e));
            self.delay = Some(self.backoff.next_delay());
            count("error");
        } else {
            self.reject(self.seen_version, e.to_string());
        }
    }

    fn reject(&mut self, version: u64, text: String) {
        count("invalid");
        if self.status.set_rejected(Some(text.clone())) {
            tracing::error!(
                version,
                in_force = self.applied.version,
                problems = %text,
                "store: snapshot refused; the previous one stays in force"
            );
        }
    }

    async fn check_version(&mut self) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        match self.store.version(conn).await {
            Ok(v) if v == self.seen_version => {}
            Ok(_) => self.reload().await,
            Err(e) => self.failed(e),
        }
    }

    async fn reload(&mut self) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let raw = match self.store.load(conn).await {
            Ok(raw) => raw,
            Err(e) => return self.failed(e),
        };
        self.status.set_data(true, None);
        self.backoff.reset();
        self.seen_version = raw.version;
        if raw.version == 0 && self.applied.version > 0 {
            let problem = reset_problem(&self.store, self.applied.version);
            return self.reject(0, problem.to_string());
        }
        let data = match raw.decode() {
            Ok(d) => d,
            Err(problems) => return self.reject(raw.version, format_problems(&problems)),
        };
        let next = Applied::new(raw.version, data);
        if next.fingerprint == self.applied.fingerprint {
            // Same content (a no-op write, or back to what is in force after a refused
            // version): nothing to rebuild, but the version in force moves on.
            self.status.set_rejected(None);
            count("unchanged");
            if next.version != self.applied.version {
                self.status.loaded(next.version, false);
                save(&self.data_dir, &self.source, &next).await;
                self.applied = next;
            }
            return;
        }
        let snap = match build(&next.data, &self.config, &self.rt) {
            Ok(s) => s,
            Err(problems) => return self.reject(raw.version, format_problems(&problems)),
        };
        if let Some(cell) = &self.snap {
            cell.set(snap);
        }
        self.status.set_rejected(None);
        self.status.loaded(next.version, false);
        count("ok");
        tracing::info!(
            version = next.version,
            routes = next.data.route_count(),
            transports = next.data.transports.len(),
            accounts = next.data.accounts.len(),
            "store: snapshot replaced"
        );
        save(&self.data_dir, &self.source, &next).await;
        self.applied = next;
    }
}

/// Follows `{prefix}changed`: wakes the loader on each message and after each
/// (re)subscription; reconnects with backoff.
async fn subscriber(
    store: Arc<RedisStore>,
    notify: Arc<Notify>,
    status: StoreStatus,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::new();
    loop {
        match store.subscribe().await {
            Ok(mut sub) => {
                backoff.reset();
                status.set_subscription(true, None);
                notify.notify_one();
                let mut ping = tokio::time::interval(PING_EVERY);
                ping.reset();
                let error = loop {
                    tokio::select! {
                        _ = shutdown.changed() => return,
                        m = sub.messages.recv() => match m {
                            Some(p) if p.kind == PushKind::Message => notify.notify_one(),
                            Some(p) if p.kind == PushKind::Disconnection => break None,
                            Some(_) => {}
                            None => break None,
                        },
                        _ = ping.tick() => {
                            if let Err(e) = store.ping(&mut sub.conn).await {
                                break Some(e);
                            }
                        }
                    }
                };
                let error = error.unwrap_or_else(|| StoreError::Shape {
                    target: store.display().to_string(),
                    message: "the subscription connection closed".into(),
                });
                status.set_subscription(false, Some(&error));
                // Same server: the data connection is probably gone too. It is marked
                // down until a load succeeds again, so that the gateway reports one
                // outage and one recovery, not a flap when the subscription returns
                // before the data connection has noticed.
                status.set_data(false, None);
            }
            Err(e) => status.set_subscription(false, Some(&e)),
        }
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_capped_and_resets() {
        let mut b = Backoff::new();
        let mut last = Duration::ZERO;
        for _ in 0..20 {
            last = b.next_delay();
            assert!(last <= Backoff::MAX.mul_f64(1.2));
        }
        assert!(last >= Backoff::MAX.mul_f64(0.8));
        b.reset();
        assert!(b.next_delay() <= Backoff::MIN.mul_f64(1.2));
    }
}
