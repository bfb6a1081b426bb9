//! Group commit tests: announced writes share one flush, an idle announcement costs one
//! bounded wait, and records nobody waits for ride on the next flush (or the quiet one).

use std::time::{Duration, Instant};

use super::fs::{FaultFs, FaultOp};
use super::*;

fn msg(id: MsgId) -> StoredMessage {
    StoredMessage::sample(id)
}

fn count(fs: &FaultFs, op: FaultOp) -> usize {
    fs.seen().iter().filter(|&&o| o == op).count()
}

/// The operations after the first `skip`, as letters: W(rite), S(ync data).
fn ops_after(fs: &FaultFs, skip: usize) -> String {
    fs.seen()[skip..]
        .iter()
        .filter_map(|o| match o {
            FaultOp::Write => Some('W'),
            FaultOp::SyncData => Some('S'),
            _ => None,
        })
        .collect()
}

async fn poll(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn announced_writes_share_one_flush() {
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultFs::new();
    let (spool, _) = Spool::open_with(dir.path(), Arc::new(fs.clone())).unwrap();
    // Long enough that only the second request can end the wait.
    spool.set_group_commit(Duration::from_secs(30), Duration::from_secs(30));
    let spool = Arc::new(spool);
    let before = fs.seen().len();
    let (a, b) = (spool.intent(), spool.intent());
    let first = tokio::spawn({
        let spool = Arc::clone(&spool);
        async move { spool.add_message(&msg(1), b"one", Some(a)).await }
    });
    // The writer holds the first request for the second, announced one.
    poll("the writer to hold the first request", || {
        spool
            .shared
            .holding
            .load(std::sync::atomic::Ordering::Acquire)
    })
    .await;
    let second = spool.add_message(&msg(2), b"two", Some(b)).await.unwrap();
    let first = first.await.unwrap().unwrap();
    assert_eq!(
        ops_after(&fs, before),
        "WS",
        "one write, one flush for both"
    );
    assert_eq!(spool.read_body(first).await.unwrap(), b"one");
    assert_eq!(spool.read_body(second).await.unwrap(), b"two");
    spool.close();
}

#[tokio::test]
async fn an_idle_announcement_costs_one_bounded_wait() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(dir.path()).unwrap();
    let delay = Duration::from_secs(2);
    spool.set_group_commit(delay, Duration::from_secs(600));
    // A client that opened a transaction and went quiet.
    let _idle = spool.intent();
    let t = Instant::now();
    spool.add_message(&msg(1), b"one", None).await.unwrap();
    assert!(t.elapsed() >= delay, "waited for the announced write");
    // The wait ran out: the writer stops waiting, and the next write is flushed at once.
    let t = Instant::now();
    spool.add_message(&msg(2), b"two", None).await.unwrap();
    assert!(t.elapsed() < delay, "no second wait: {:?}", t.elapsed());
    spool.close();
}

#[tokio::test]
async fn records_nobody_waits_for_ride_on_the_next_flush() {
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultFs::new();
    let (spool, _) = Spool::open_with(dir.path(), Arc::new(fs.clone())).unwrap();
    let b1 = spool.add_message(&msg(1), b"one", None).await.unwrap();
    let b2 = spool.add_message(&msg(2), b"two", None).await.unwrap();
    let before = fs.seen().len();
    // Two removals in two batches: each is written, neither is flushed on its own.
    spool.remove(1, b1, Vec::new());
    poll("the first removal written", || {
        count(&fs, FaultOp::Write) >= 3
    })
    .await;
    spool.remove(2, b2, Vec::new());
    poll("the second removal written", || {
        count(&fs, FaultOp::Write) >= 4
    })
    .await;
    // Quiet: one flush covers both.
    poll("the quiet flush", || ops_after(&fs, before).len() >= 3).await;
    assert_eq!(ops_after(&fs, before), "WWS");
    spool.close();
    let (_spool, rec) = Spool::open(dir.path()).unwrap();
    assert!(rec.is_empty(), "both removals survive a restart");
}

#[tokio::test]
async fn a_durable_write_flushes_what_was_written_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultFs::new();
    let (spool, _) = Spool::open_with(dir.path(), Arc::new(fs.clone())).unwrap();
    let b1 = spool.add_message(&msg(1), b"one", None).await.unwrap();
    let before = fs.seen().len();
    spool.remove(1, b1, Vec::new());
    spool.add_message(&msg(2), b"two", None).await.unwrap();
    let ops = ops_after(&fs, before);
    assert!(ops == "WWS" || ops == "WS", "one flush: {ops}");
    spool.close();
    let (_spool, rec) = Spool::open(dir.path()).unwrap();
    let ids: Vec<MsgId> = rec.keys().copied().collect();
    assert_eq!(ids, vec![2]);
}
