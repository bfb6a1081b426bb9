//! Nothing acked is lost: kill -9 under load, restart, every message that got 250
//! reaches the sink (issue 2 acceptance); and a clean SIGTERM shutdown.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};
use tokio::task::JoinSet;

use crate::support::gateway::{Gateway, GatewayOptions};
use crate::support::sink::{Received, Sink};
use crate::support::smtp_client::{simple_message, submit, SmtpClient};
use crate::support::{deadline, wait_until};

const SENDER: &str = "sender@src.test";
const CLIENTS: usize = 20;
const PER_CLIENT: usize = 100;
/// Kill the gateway once this many submissions were acked.
const KILL_AFTER: usize = 500;

/// The marker of a durability message: its Message-ID without the angle
/// brackets and domain (`dur-C-N`).
fn marker(m: &Received) -> Option<String> {
    let id = m.header("Message-ID")?;
    let id = id.trim().trim_start_matches('<');
    let local = id.split('@').next()?;
    local.starts_with("dur-").then(|| local.to_string())
}

/// One client's submission loop: one session, up to PER_CLIENT messages, stops at
/// the first connection error (expected once the gateway is killed).
async fn client_loop(
    addr: std::net::SocketAddr,
    client: usize,
    acked: Arc<Mutex<Vec<String>>>,
    acked_count: Arc<AtomicUsize>,
    until: Instant,
) -> Result<usize> {
    let rcpt = format!("r{client}@dst{}.test", client % 4);
    let mut c = SmtpClient::connect(addr).await?;
    ensure!(c.greeting.code == 220, "greeting: {}", c.greeting);
    c.ehlo(&format!("client{client}.test")).await?;
    let mut refused = 0;
    for n in 0..PER_CLIENT {
        if Instant::now() >= until {
            break;
        }
        let id = format!("dur-{client}-{n}");
        let body = simple_message(SENDER, &rcpt, &format!("durability {id}"), &id);
        let reply = c.send_message(SENDER, &[&rcpt], &body).await?;
        if reply.code == 250 {
            acked.lock().unwrap().push(id);
            acked_count.fetch_add(1, Ordering::SeqCst);
        } else {
            // Not acked (e.g. a 4xx under load): allowed, just not counted.
            refused += 1;
        }
    }
    c.quit().await?;
    Ok(refused)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_under_load_loses_no_acked_message() -> Result<()> {
    let sink = Sink::start().await?;
    let mut gw = Gateway::start(GatewayOptions::relay_to(sink.port())).await?;
    let addr = gw.submission_addr();

    let acked = Arc::new(Mutex::new(Vec::new()));
    let acked_count = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    let load_until = Instant::now() + Duration::from_secs(120);
    let mut clients = JoinSet::new();
    for client in 0..CLIENTS {
        let (acked, acked_count, finished) = (acked.clone(), acked_count.clone(), finished.clone());
        clients.spawn(async move {
            let result = client_loop(addr, client, acked, acked_count, load_until).await;
            finished.fetch_add(1, Ordering::SeqCst);
            (client, result)
        });
    }

    wait_until(deadline(120), "500 acked submissions", || {
        acked_count.load(Ordering::SeqCst) >= KILL_AFTER
            || finished.load(Ordering::SeqCst) == CLIENTS
    })
    .await?;
    let clients_done_before_kill = finished.load(Ordering::SeqCst);
    gw.kill9()?;
    let acked_at_kill = acked_count.load(Ordering::SeqCst);

    // The clients now fail fast (connection reset/closed); bounded anyway.
    let mut client_errors = Vec::new();
    let join = async {
        while let Some(joined) = clients.join_next().await {
            if let Ok((client, Err(e))) = joined {
                client_errors.push(format!("client {client}: {e:#}"));
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(60), join)
        .await
        .is_err()
    {
        bail!("submission clients did not stop within 60 s of the kill");
    }
    ensure!(
        acked_at_kill >= KILL_AFTER,
        "only {acked_at_kill} submissions acked before the clients stopped: {client_errors:?}"
    );
    ensure!(
        clients_done_before_kill < CLIENTS,
        "the load finished before the kill; the test proved nothing"
    );
    let acked: Vec<String> = acked.lock().unwrap().clone();
    let want: HashSet<&str> = acked.iter().map(String::as_str).collect();
    ensure!(want.len() == acked.len(), "duplicate acks recorded");

    gw.restart().await?;

    let mut seen: HashSet<String> = HashSet::new();
    let mut cursor = 0;
    let waited = sink
        .wait_for(deadline(240), |msgs| {
            for m in &msgs[cursor..] {
                if let Some(id) = marker(m) {
                    seen.insert(id);
                }
            }
            cursor = msgs.len();
            want.iter().all(|id| seen.contains(*id))
        })
        .await;

    let msgs = sink.messages();
    let mut copies: HashMap<String, usize> = HashMap::new();
    for m in &msgs {
        if let Some(id) = marker(m) {
            *copies.entry(id).or_default() += 1;
        }
    }
    let mut missing: Vec<&str> = want
        .iter()
        .copied()
        .filter(|id| !copies.contains_key(*id))
        .collect();
    missing.sort();
    if waited.is_err() || !missing.is_empty() {
        bail!(
            "{} of {} acked messages never reached the sink (e.g. {:?}); {} distinct arrived",
            missing.len(),
            want.len(),
            &missing[..missing.len().min(10)],
            copies.len()
        );
    }
    let duplicates: usize = copies.values().map(|n| n - 1).sum();
    eprintln!(
        "durability: {} acked before kill -9, {} distinct delivered, {duplicates} duplicate deliveries",
        want.len(),
        copies.len()
    );
    Ok(())
}

/// SIGTERM: the gateway exits 0 within the deadline and removes ready.json.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_shuts_down_cleanly() -> Result<()> {
    let sink = Sink::start().await?;
    let mut gw = Gateway::start(GatewayOptions::relay_to(sink.port())).await?;
    let body = simple_message(SENDER, "rcpt@dst.test", "before stop", "stop-1");
    submit(gw.submission_addr(), SENDER, &["rcpt@dst.test"], &body).await?;
    sink.wait_for(deadline(60), |m| {
        m.iter().any(|m| m.has_rcpt("rcpt@dst.test"))
    })
    .await?;
    let ready = gw.data_dir().join("ready.json");
    assert!(ready.exists());
    let status = gw.stop().await?;
    assert!(status.success(), "exit status after SIGTERM: {status}");
    assert!(
        !ready.exists(),
        "ready.json left behind after a clean shutdown"
    );
    Ok(())
}
