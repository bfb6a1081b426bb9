//! The spool's one writer thread: group commit, segment rolling, and what happens after
//! a write error.
//!
//! It takes every request waiting in its inbox (in the order they were made), writes them
//! with one `write`, calls `fdatasync` once, and only then answers them all. A new segment's directory entry is
//! fsynced before anything in it is acknowledged.
//!
//! Group commit is helped along: while submissions receiving their body are known to be
//! on their way ([`WriteIntent`]), the writer waits a moment (at most
//! [`COMMIT_DELAY`]) so that one `fdatasync` serves them all. When such a wait runs out,
//! the writer stops waiting for a while: a client that uploads slowly must not slow
//! everyone down. Requests nobody waits for (state updates and removals: losing one
//! in a crash costs an extra attempt, never a message) are written but not flushed on
//! their own; the next flush, or one after [`IDLE_SYNC`] of quiet, covers them. They do
//! not wake a writer that already has a timer set (they wait in the inbox for it, at
//! most [`IDLE_SYNC`]): under load they ride along with the next submission's batch, so
//! the writer wakes about once per flush, not per record.
//!
//! A failed write or flush poisons the segment: nothing is ever appended to it again.
//! The writer cuts it back to its last complete record (`ftruncate` + `fsync`); where even
//! that fails, it remembers a seal, which goes first into the next segment and tells
//! replay where the abandoned segment's acknowledged records end. Every request of the
//! failed batch gets an error (the submission answers `451`), and the writer rolls to a
//! new segment at once. While it cannot, every request gets an error, the spool reports
//! itself degraded, and the roll is retried on each new request and once a second.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::fs::{SegmentFile, SpoolFs};
use super::record::{self, Encoded, Seal};
use super::{segment_path, BodyRef, SegmentTable};
use crate::model::now_ms;

/// Size at which the writer starts a new segment.
pub const SEGMENT_LIMIT: u64 = 64 << 20;
/// Most bytes one group commit writes before flushing.
const BATCH_BYTES: usize = 16 << 20;
/// How a degraded reason starts while no segment can be written.
const NO_SEGMENT: &str = "no writable segment";
/// How often a writer without a segment tries to start one when nothing else asks.
const RETRY_ROLL_EVERY: Duration = Duration::from_secs(1);
/// Longest a durable request waits for announced siblings to join its flush.
pub const COMMIT_DELAY: Duration = Duration::from_millis(1);
/// After a wait for siblings ran out, how long the writer flushes without waiting.
pub const DELAY_BACKOFF: Duration = Duration::from_millis(50);
/// Longest unflushed (non-durable) records stay unflushed while nothing else comes.
pub const IDLE_SYNC: Duration = Duration::from_millis(50);

/// Why records were not stored.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    #[error("write to spool segment {segment} failed: {reason}")]
    Failed { segment: u64, reason: String },
    #[error("the spool has no writable segment: {reason}")]
    NoSegment { reason: String },
}

pub(super) type Reply = Result<Vec<Option<BodyRef>>, WriteError>;

pub(super) struct WriteRequest {
    pub records: Vec<Encoded>,
    pub reply: oneshot::Sender<Reply>,
    /// The caller waits until the records are flushed (`false`: written, flushed later).
    pub durable: bool,
}

/// Whether the spool can store new records, as `/healthz` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpoolHealth {
    /// Why the spool is degraded (`None`: healthy).
    pub degraded: Option<String>,
    /// When it became degraded (Unix ms).
    pub since_ms: Option<i64>,
}

/// State the writer shares with the [`super::Spool`] handle.
/// How the writer sleeps, which decides who wakes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum Sleep {
    /// Working (or about to look at the inbox again).
    #[default]
    Awake,
    /// Until a timer (a pending or unflushed record, a segment to retry): only a
    /// durable request wakes it earlier.
    Timed,
    /// Nothing pending: any request wakes it.
    Untimed,
}

/// Requests waiting for the writer, in the order they were made.
#[derive(Default)]
pub(super) struct Inbox {
    pub reqs: VecDeque<WriteRequest>,
    /// How many of them someone waits for.
    pub durable: usize,
    pub sleep: Sleep,
    /// The spool is closing: the writer stores what is left, flushes and stops.
    pub closed: bool,
}

pub(super) struct Shared {
    pub table: Mutex<SegmentTable>,
    pub inbox: Mutex<Inbox>,
    pub health: Mutex<SpoolHealth>,
    /// Durable writes announced and not yet sent ([`WriteIntent`]s alive).
    pub expected: AtomicUsize,
    /// [`COMMIT_DELAY`] and [`DELAY_BACKOFF`], in µs (tests change them).
    pub commit_delay_us: AtomicU64,
    pub backoff_us: AtomicU64,
    /// True while the writer holds a batch back for announced writes (tests watch it).
    pub holding: AtomicBool,
    /// The writer thread, unparked when the last announced write arrives.
    pub writer: OnceLock<std::thread::Thread>,
}

impl Default for Shared {
    fn default() -> Shared {
        Shared {
            table: Mutex::default(),
            inbox: Mutex::default(),
            health: Mutex::default(),
            expected: AtomicUsize::new(0),
            commit_delay_us: AtomicU64::new(COMMIT_DELAY.as_micros() as u64),
            backoff_us: AtomicU64::new(DELAY_BACKOFF.as_micros() as u64),
            holding: AtomicBool::new(false),
            writer: OnceLock::new(),
        }
    }
}

/// An announcement that a durable write is coming soon (a submission receiving its body):
/// while one is alive, the writer may hold a flush back briefly for it. Dropping it
/// withdraws the announcement ([`super::Spool::add_message`] drops it right after its
/// request is sent); dropping the last one wakes a holding writer.
pub struct WriteIntent {
    shared: Arc<Shared>,
}

impl WriteIntent {
    pub(super) fn new(shared: &Arc<Shared>) -> WriteIntent {
        shared.expected.fetch_add(1, Ordering::AcqRel);
        WriteIntent {
            shared: Arc::clone(shared),
        }
    }
}

impl Drop for WriteIntent {
    fn drop(&mut self) {
        // SeqCst pairs with the writer's store of `holding` and load of `expected`:
        // either it sees the count at zero or this sees it holding (and an unpark
        // before its park is kept).
        let last = self.shared.expected.fetch_sub(1, Ordering::SeqCst) == 1;
        if last && self.shared.holding.load(Ordering::SeqCst) {
            if let Some(t) = self.shared.writer.get() {
                t.unpark();
            }
        }
    }
}

impl std::fmt::Debug for WriteIntent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WriteIntent")
    }
}

impl Shared {
    pub fn table(&self) -> std::sync::MutexGuard<'_, SegmentTable> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn health(&self) -> std::sync::MutexGuard<'_, SpoolHealth> {
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn inbox(&self) -> std::sync::MutexGuard<'_, Inbox> {
        self.inbox.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a request; wakes the writer when it sleeps and this request cannot wait
    /// for its timer. Returns `false` (the request dropped) once the spool is closed.
    pub fn push(&self, req: WriteRequest) -> bool {
        let wake = {
            let mut inbox = self.inbox();
            if inbox.closed {
                return false;
            }
            let wake = match inbox.sleep {
                Sleep::Awake => false,
                Sleep::Timed => req.durable,
                Sleep::Untimed => true,
            };
            if wake {
                inbox.sleep = Sleep::Awake;
            }
            inbox.durable += usize::from(req.durable);
            inbox.reqs.push_back(req);
            wake
        };
        if wake {
            self.wake_writer();
        }
        true
    }

    /// Tells the writer to store what is left and stop.
    pub fn close(&self) {
        self.inbox().closed = true;
        self.wake_writer();
    }

    fn wake_writer(&self) {
        if let Some(t) = self.writer.get() {
            t.unpark();
        }
    }

    /// Takes requests from the front, up to [`BATCH_BYTES`] (at least one).
    fn take_batch(&self) -> Vec<WriteRequest> {
        let mut inbox = self.inbox();
        let mut batch = Vec::new();
        let mut bytes = 0usize;
        while bytes < BATCH_BYTES {
            let Some(req) = inbox.reqs.pop_front() else {
                break;
            };
            inbox.durable -= usize::from(req.durable);
            bytes += req.records.iter().map(|r| r.bytes.len()).sum::<usize>();
            batch.push(req);
        }
        batch
    }

    /// The longest wait for announced writes, and the pause in waiting after one ran out.
    pub fn group_commit(&self) -> (Duration, Duration) {
        (
            Duration::from_micros(self.commit_delay_us.load(Ordering::Relaxed)),
            Duration::from_micros(self.backoff_us.load(Ordering::Relaxed)),
        )
    }
}

pub(super) struct Writer {
    dir: PathBuf,
    fs: Arc<dyn SpoolFs>,
    /// Number of the segment appended to (or the last one tried, when `file` is `None`).
    segment: u64,
    /// `None`: no writable segment (poisoned, or a roll failed).
    file: Option<Box<dyn SegmentFile>>,
    /// Bytes of complete records written to the current segment (the append offset).
    size: u64,
    /// Of those, the bytes known flushed: a failure cuts the segment back to here.
    synced: u64,
    /// No waiting for siblings before this instant (after a wait ran out).
    no_delay_until: Option<Instant>,
    /// Abandoned segments whose torn tail could not be cut: written at the head of the
    /// next segment.
    seals: Vec<Seal>,
    /// A segment this writer abandoned and cut back to nothing: deleted once the next
    /// one is started, so repeated failures do not leave a trail of empty files. (Only
    /// one it emptied itself: a segment of an earlier run may hold removals and updates
    /// for older segments, and goes only through collection, oldest first.)
    emptied: Option<u64>,
    shared: Arc<Shared>,
    buf: Vec<u8>,
}

impl Writer {
    /// A writer that has no segment yet; `last` is the newest segment on disk (0: none).
    pub fn new(dir: &Path, fs: Arc<dyn SpoolFs>, last: u64, shared: Arc<Shared>) -> Writer {
        Writer {
            dir: dir.to_path_buf(),
            fs,
            segment: last,
            file: None,
            size: 0,
            synced: 0,
            no_delay_until: None,
            seals: Vec::new(),
            emptied: None,
            shared,
            buf: Vec::with_capacity(1 << 20),
        }
    }

    /// Starts the first segment of this run (a spool that cannot is degraded, and the
    /// writer keeps trying).
    pub fn start(&mut self) {
        if let Err(e) = self.roll() {
            tracing::error!(error = %e, "spool: cannot start a segment; submissions get 451 until one can be started");
        }
    }

    pub fn run(mut self) {
        // When the current timer fires (set on going to sleep with something pending).
        let mut deadline: Option<Instant> = None;
        loop {
            let mut inbox = self.shared.inbox();
            inbox.sleep = Sleep::Awake;
            let now = Instant::now();
            let due = deadline.is_some_and(|d| now >= d);
            // Records nobody waits for are written at once when no timer is set (the
            // first after a flush); later ones wait for the timer or the next flush.
            let lazy_now = deadline.is_none() && !inbox.reqs.is_empty();
            if inbox.durable == 0 && !inbox.closed && !due && !lazy_now {
                let timer = if self.file.is_none() {
                    Some(RETRY_ROLL_EVERY)
                } else if !inbox.reqs.is_empty() || self.size > self.synced {
                    Some(IDLE_SYNC)
                } else {
                    None
                };
                if deadline.is_none() {
                    deadline = timer.map(|t| now + t);
                }
                inbox.sleep = if deadline.is_some() {
                    Sleep::Timed
                } else {
                    Sleep::Untimed
                };
                drop(inbox);
                // An unpark that came before this park is kept: no wake is lost.
                match deadline {
                    Some(d) => std::thread::park_timeout(d.saturating_duration_since(now)),
                    None => std::thread::park(),
                }
                continue;
            }
            deadline = None;
            let (durable, closed, empty) = (inbox.durable > 0, inbox.closed, inbox.reqs.is_empty());
            drop(inbox);
            if empty {
                // The timer (or the close) with nothing queued.
                if self.file.is_none() && !closed {
                    let _ = self.roll();
                } else {
                    self.flush_quiet();
                }
                if closed {
                    break;
                }
                continue;
            }
            if durable {
                self.wait_for_siblings();
            }
            let batch = self.shared.take_batch();
            self.handle(batch);
            if due || closed {
                // Records that waited their time (or a closing spool): flushed now.
                self.flush_quiet();
            }
        }
    }

    /// Holds a durable batch back while announced writes are on their way, at most the
    /// commit delay; one that runs out turns waiting off for the backoff. The writer
    /// sleeps through the hold: arrivals do not wake it, the last announcement's end
    /// does, and everything that arrived meanwhile joins the batch.
    fn wait_for_siblings(&mut self) {
        let start = Instant::now();
        if self.file.is_none() || self.no_delay_until.is_some_and(|t| start < t) {
            return;
        }
        let (delay, backoff) = self.shared.group_commit();
        let deadline = start + delay;
        self.shared.holding.store(true, Ordering::SeqCst);
        while self.shared.expected.load(Ordering::SeqCst) > 0 {
            let now = Instant::now();
            if now >= deadline {
                self.no_delay_until = Some(now + backoff);
                break;
            }
            std::thread::park_timeout(deadline - now);
        }
        self.shared.holding.store(false, Ordering::SeqCst);
    }

    /// Flushes records written without a flush (quiet channel, or shutting down).
    fn flush_quiet(&mut self) {
        if self.size <= self.synced {
            return;
        }
        let Some(file) = self.file.as_mut() else {
            return;
        };
        match file.sync_data() {
            Ok(()) => self.synced = self.size,
            Err(e) => {
                let reason = format!("{e}");
                tracing::error!(error = %e, segment = self.segment, "spool: flush failed; the segment is abandoned");
                self.poison();
                self.degrade(&format!("write failed: {reason}"));
                if let Err(e) = self.roll() {
                    tracing::error!(error = %e, "spool: cannot start a new segment; submissions get 451 until one can be started");
                }
            }
        }
    }

    fn handle(&mut self, batch: Vec<WriteRequest>) {
        if self.file.is_some() && self.size >= SEGMENT_LIMIT {
            // Only the newest segment may end torn (replay): the one left behind is
            // flushed whole first.
            self.flush_quiet();
        }
        let mut roll_error = None;
        if self.file.is_none() || self.size >= SEGMENT_LIMIT {
            if let Err(reason) = self.roll() {
                if self.file.is_some() {
                    tracing::warn!(error = %reason, segment = self.segment,
                        "spool: cannot start a new segment; the current one grows past its limit");
                }
                roll_error = Some(reason);
            }
        }
        let Some(file) = self.file.as_mut() else {
            let err = WriteError::NoSegment {
                reason: roll_error.unwrap_or_else(|| "no segment is open".into()),
            };
            for req in batch {
                let _ = req.reply.send(Err(err.clone()));
            }
            return;
        };
        self.buf.clear();
        let mut answers = Vec::with_capacity(batch.len());
        for req in &batch {
            let mut refs = Vec::with_capacity(req.records.len());
            for rec in &req.records {
                let start = self.size + self.buf.len() as u64;
                refs.push(rec.body_offset.map(|off| BodyRef {
                    segment: self.segment,
                    offset: start + off as u64,
                    len: (rec.bytes.len() - off) as u64,
                }));
                self.buf.extend_from_slice(&rec.bytes);
            }
            answers.push(refs);
        }
        if self.buf.capacity() > 4 * BATCH_BYTES {
            // One huge message must not pin its size in memory for the process's life.
            self.buf.shrink_to(1 << 20);
        }
        // Only a batch someone waits for is flushed now (it also covers every record
        // written before it); the others are flushed by the next one, or when quiet.
        let durable = batch.iter().any(|r| r.durable);
        let written = file.write_all(&self.buf);
        match written.and_then(|_| if durable { file.sync_data() } else { Ok(()) }) {
            Ok(()) => {
                self.size += self.buf.len() as u64;
                if durable {
                    self.synced = self.size;
                }
                self.recover();
                for (req, refs) in batch.into_iter().zip(answers) {
                    let _ = req.reply.send(Ok(refs));
                }
            }
            Err(e) => {
                let reason = format!("{e}");
                tracing::error!(error = %e, segment = self.segment, "spool: write failed; the segment is abandoned");
                // Cut back (or seal) before answering: once a client hears 451, no
                // replay may bring its message back.
                self.poison();
                self.degrade(&format!("write failed: {reason}"));
                let err = WriteError::Failed {
                    segment: self.segment,
                    reason,
                };
                for req in batch {
                    let _ = req.reply.send(Err(err.clone()));
                }
                if let Err(e) = self.roll() {
                    tracing::error!(error = %e, "spool: cannot start a new segment; submissions get 451 until one can be started");
                }
            }
        }
    }

    /// Closes the current segment after a failed write or flush: cut back to the last
    /// flushed record, or remember a seal where that fails too. (Records written since
    /// the last flush were acknowledged to nobody: losing them costs an extra attempt.)
    fn poison(&mut self) {
        self.size = self.synced;
        if let Some(mut f) = self.file.take() {
            match f.truncate(self.synced) {
                Ok(()) if self.synced == 0 => self.emptied = Some(self.segment),
                Ok(()) => {}
                Err(e) => {
                    tracing::error!(error = %e, segment = self.segment, valid_len = self.synced,
                        "spool: cannot cut the abandoned segment back; the next segment seals it");
                    self.seals.push(Seal {
                        segment: self.segment,
                        valid_len: self.synced,
                    });
                }
            }
        }
    }

    /// Starts the next segment; while there is none, the spool is degraded.
    fn roll(&mut self) -> Result<(), String> {
        self.try_roll().inspect_err(|reason| {
            if self.file.is_none() {
                self.degrade(&format!("{NO_SEGMENT}: {reason}"));
            }
        })
    }

    /// Starts the next segment (with the pending seals first). On success the old one is
    /// finished: an abandoned, empty one is deleted.
    fn try_roll(&mut self) -> Result<(), String> {
        let n = self.segment + 1;
        let path = segment_path(&self.dir, n);
        let mut f = self
            .fs
            .create(&path)
            .map_err(|e| format!("create {}: {e}", path.display()))?;
        let mut wrote_seals = false;
        let mut start = || -> Result<u64, String> {
            // The entry must survive a crash before anything in it is acknowledged.
            self.fs
                .sync_dir(&self.dir)
                .map_err(|e| format!("fsync {}: {e}", self.dir.display()))?;
            let mut len = 0u64;
            if !self.seals.is_empty() {
                let mut bytes = Vec::new();
                for seal in &self.seals {
                    bytes.extend_from_slice(&record::encode_seal(*seal).bytes);
                }
                wrote_seals = true;
                f.write_all(&bytes)
                    .and_then(|_| f.sync_data())
                    .map_err(|e| format!("write seal to {}: {e}", path.display()))?;
                len = bytes.len() as u64;
            }
            Ok(len)
        };
        match start() {
            Ok(len) => {
                let emptied = self.emptied.take();
                self.file = Some(f);
                self.segment = n;
                self.size = len;
                self.synced = len;
                if !self.seals.is_empty() {
                    tracing::warn!(segment = n, seals = ?self.seals, "spool: sealed abandoned segments");
                }
                self.seals.clear();
                {
                    let mut t = self.shared.table();
                    t.current = n;
                    t.live.entry(n).or_default();
                    if let Some(old) = emptied {
                        t.live.remove(&old);
                        let _ = self.fs.remove(&segment_path(&self.dir, old));
                    }
                }
                let mut h = self.shared.health();
                if h.degraded
                    .as_deref()
                    .is_some_and(|d| d.starts_with(NO_SEGMENT))
                {
                    *h = SpoolHealth::default();
                    tracing::info!(segment = n, "spool: writable again");
                }
                Ok(())
            }
            Err(reason) => {
                // Abandon the new file: delete it, or failing that skip its number (an
                // empty segment is harmless; one with a torn seal is sealed in turn).
                let torn = wrote_seals && f.truncate(0).is_err();
                drop(f);
                if self.fs.remove(&path).is_ok() {
                    let _ = self.fs.sync_dir(&self.dir);
                } else {
                    if torn {
                        self.seals.push(Seal {
                            segment: n,
                            valid_len: 0,
                        });
                    }
                    // A healthy old segment is complete as it stands; it is closed too,
                    // so that the newest segment on disk is always the one written last.
                    self.file = None;
                    self.segment = n;
                    self.size = 0;
                    self.synced = 0;
                    let mut t = self.shared.table();
                    t.current = n;
                    t.live.entry(n).or_default();
                }
                Err(reason)
            }
        }
    }

    fn degrade(&self, reason: &str) {
        let mut h = self.shared.health();
        if h.degraded.is_none() {
            h.since_ms = Some(now_ms());
        }
        h.degraded = Some(reason.to_string());
    }

    fn recover(&self) {
        let mut h = self.shared.health();
        if h.degraded.is_some() {
            tracing::info!(segment = self.segment, "spool: writes succeed again");
            *h = SpoolHealth::default();
        }
    }
}
