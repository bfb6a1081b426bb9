//! What the gateways of a fleet share about transports and accounts, in Redis under
//! `{prefix}fleet:` (SPEC §1); a route load never reads it.
//!
//! - **Health** (`{prefix}fleet:health:{transport}`): every change of a transport's
//!   circuit breaker made by one gateway (down until T, or up again after a probe) is
//!   written as one JSON record with an expiry ([`sync_health`]); every gateway reads
//!   the records of its breaker transports every [`HEALTH_POLL`] and applies those newer
//!   than what it knows ([`Health::apply_fleet`]). So once one gateway has found a
//!   transport down, the others stop using it within a poll, without a connection of
//!   their own; queued mail that last went through it is made due at once, as for a
//!   local discovery.
//! - **Rate limits** (`{prefix}fleet:rate:{key}:{rate}`): one GCRA state per limit, taken
//!   with one atomic script per message ([`RedisRates`]) on Redis's clock, so a limit
//!   holds for the sum of every gateway.
//!
//! Neither stops delivery when Redis is away: health stays local until Redis answers
//! again, and rate limits are counted by each gateway alone (a throttled warning says so).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};

use super::fleet::FleetRedis;
use crate::queue::health::{FleetRecord, Health, HealthEvent};
use crate::queue::rate::{Decision, FleetRates, Rate};
use crate::snapshot::SnapshotCell;

/// How often a gateway reads the fleet's health records.
pub const HEALTH_POLL: Duration = Duration::from_millis(500);
/// How long an "up again" record is kept.
const UP_RECORD_TTL: Duration = Duration::from_secs(600);
/// How long a "down" record outlives its hold-down.
const DOWN_RECORD_GRACE: Duration = Duration::from_secs(60);

/// Writes this gateway's health changes to Redis and applies the fleet's, until
/// `shutdown`; `on_down` runs for each transport the fleet took down here (the queue
/// makes mail that last went through it due at once).
pub async fn sync_health(
    redis: Arc<FleetRedis>,
    health: Arc<Health>,
    mut events: mpsc::UnboundedReceiver<HealthEvent>,
    snapshot: SnapshotCell,
    on_down: Box<dyn Fn(&str) + Send + Sync>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(HEALTH_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut warned: Option<std::time::Instant> = None;
    let mut warn = |what: &str, e: &dyn std::fmt::Display| {
        if warned.is_none_or(|at| at.elapsed() > Duration::from_secs(60)) {
            warned = Some(std::time::Instant::now());
            tracing::warn!(error = %e, "transport health: Redis unavailable on {what}; this gateway's view stays local");
        }
    };
    loop {
        tokio::select! {
            ev = events.recv() => {
                let Some(ev) = ev else { break };
                if let Err(e) = write_record(&redis, &ev).await {
                    warn("write", &e);
                }
            }
            _ = tick.tick() => {
                let names: Vec<String> = snapshot.get().breakers.keys().cloned().collect();
                match read_records(&redis, &names).await {
                    Ok(records) => {
                        for (name, record) in records {
                            if health.apply_fleet(&name, &record) {
                                on_down(&name);
                            }
                        }
                    }
                    Err(e) => warn("read", &e),
                }
            }
            _ = shutdown.changed() => {
                if *shutdown.borrow() {
                    // What this gateway found last still reaches the fleet.
                    while let Ok(ev) = events.try_recv() {
                        if let Err(e) = write_record(&redis, &ev).await {
                            warn("write", &e);
                        }
                    }
                    break;
                }
            }
        }
    }
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

async fn write_record(redis: &FleetRedis, ev: &HealthEvent) -> Result<(), super::StoreError> {
    let key = redis.store().keys().fleet_health(&ev.transport);
    let ttl = match &ev.record {
        FleetRecord::Down { until_ms, .. } => {
            Duration::from_millis((until_ms - unix_ms()).max(0) as u64) + DOWN_RECORD_GRACE
        }
        FleetRecord::Up { .. } => UP_RECORD_TTL,
    };
    let json = serde_json::to_string(&ev.record).unwrap_or_default();
    redis
        .query::<()>(
            redis::cmd("SET")
                .arg(&key)
                .arg(json)
                .arg("PX")
                .arg(ttl.as_millis() as u64),
        )
        .await
}

/// The records of `names` that exist and decode (others' garbage is skipped, logged).
async fn read_records(
    redis: &FleetRedis,
    names: &[String],
) -> Result<Vec<(String, FleetRecord)>, super::StoreError> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let keys = redis.store().keys();
    let mut cmd = redis::cmd("MGET");
    for name in names {
        cmd.arg(keys.fleet_health(name));
    }
    let values: Vec<Option<String>> = redis.query(&cmd).await?;
    let mut bad = HashSet::new();
    let records = names
        .iter()
        .zip(values)
        .filter_map(|(name, v)| {
            let json = v?;
            match serde_json::from_str::<FleetRecord>(&json) {
                Ok(r) => Some((name.clone(), r)),
                Err(e) => {
                    if bad.insert(name.clone()) {
                        tracing::debug!(transport = name.as_str(), error = %e,
                            "transport health: not a fleet record; ignored");
                    }
                    None
                }
            }
        })
        .collect();
    Ok(records)
}

/// Takes one message under every limit of a key at once, on Redis's clock (µs).
/// KEYS: one per limit; ARGV[1]: the longest wait to take (µs; -1: take nothing, a
/// view); then per limit its interval and tolerance (µs). Returns {1, wait} when taken,
/// {0, wait} when not (nothing changed).
const GCRA_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local max_wait = tonumber(ARGV[1])
local wait = 0
local tats = {}
for i = 1, #KEYS do
  local v = redis.call('GET', KEYS[i])
  local tat = now
  if v then
    tat = tonumber(v) or now
    if tat < now then tat = now end
  end
  tats[i] = tat
  local w = tat - tonumber(ARGV[2 * i + 1]) - now
  if w > wait then wait = w end
end
if max_wait < 0 or wait > max_wait then
  return {0, math.floor(wait)}
end
for i = 1, #KEYS do
  local tat = tats[i] + tonumber(ARGV[2 * i])
  local ttl = math.floor((tat - now) / 1000) + 1000
  redis.call('SET', KEYS[i], string.format('%.0f', tat), 'PX', ttl)
end
return {1, math.floor(wait)}
"#;

/// Rate limits kept in Redis for the whole fleet.
pub struct RedisRates {
    redis: Arc<FleetRedis>,
    script: redis::Script,
}

impl RedisRates {
    pub fn new(redis: Arc<FleetRedis>) -> RedisRates {
        RedisRates {
            redis,
            script: redis::Script::new(GCRA_SCRIPT),
        }
    }
}

impl FleetRates for RedisRates {
    fn take<'a>(
        &'a self,
        key: &'a str,
        limits: &'a [Rate],
        max_sleep: Option<Duration>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Decision, String>> + Send + 'a>>
    {
        Box::pin(async move {
            let keys = self.redis.store().keys();
            let mut invocation = self.script.prepare_invoke();
            // -1: take nothing, only say the wait.
            invocation.arg(max_sleep.map_or(-1, |d| d.as_micros() as i64));
            for rate in limits {
                invocation
                    .key(keys.fleet_rate(key, &rate.to_string()))
                    .arg(rate.interval().as_micros() as u64)
                    .arg(rate.tolerance().as_micros() as u64);
            }
            let (taken, wait): (i64, i64) = self
                .redis
                .invoke(&invocation)
                .await
                .map_err(|e| e.to_string())?;
            let wait = Duration::from_micros(wait.max(0) as u64);
            Ok(match (taken, wait.is_zero()) {
                (0, true) => Decision::Now,
                (0, false) => Decision::Defer(wait),
                (_, true) => Decision::Now,
                (_, false) => Decision::After(wait),
            })
        })
    }
}
