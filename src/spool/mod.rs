//! The durable spool: an append-only log of segment files under `data_dir/spool/`.
//!
//! Every change to the queue is a record appended to the current segment (see
//! [`record`]): a new message (envelope and body), a recipient's new state, operator
//! overrides, a removal. One writer thread owns the files ([`writer`]): group commit,
//! segment rolls, and the rule that a failed write poisons its segment. A submission is
//! acknowledged (`250`) only after its record's flush has returned.
//!
//! On start, all segments are replayed in order ([`replay`]); only a torn tail of the
//! newest segment, or bytes past a seal, may fail to decode: anything else stops the
//! start with the segment and offset (`relaygate spool check` / `spool salvage`).
//!
//! The spool owns its bookkeeping: it counts, per segment, the live messages whose body
//! is there, through the methods the queue calls ([`Spool::add_message`],
//! [`Spool::remove`], [`Spool::commit_relocation`]). Old segments are deleted oldest
//! first once no live message has its body there; a long-lived message blocking that is
//! relocated (its current state and body written again at the head) by the queue's
//! housekeeping.

pub mod fs;
pub mod record;
pub mod replay;
pub mod writer;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::future::Future;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::model::{MsgId, StoredMessage};
use fs::{DiskFs, SpoolFs};
use record::{Encoded, RecordError};
pub use replay::{CheckReport, Finding};
use writer::{Shared, WriteRequest, Writer};
pub use writer::{SpoolHealth, WriteError, WriteIntent, SEGMENT_LIMIT};

/// Where a message body lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyRef {
    pub segment: u64,
    pub offset: u64,
    pub len: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {path}: {op}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("spool segment {path} is damaged at offset {offset}: {reason}; acknowledged records may follow it, so the gateway does not start: run `relaygate spool check` to see every problem and `relaygate spool salvage` to keep every intact record")]
    Damaged {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("spool writer stopped; the spool is read-only")]
    WriterGone,
}

fn io_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(io::Error) -> SpoolError + 'a {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        op,
        source,
    }
}

/// What is still live in one segment.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Live {
    /// Messages whose current body is there.
    messages: usize,
    /// Their body bytes.
    body_bytes: u64,
}

/// A blocked segment is relocated only when what is live there is small, so relocation
/// rewrites at most a quarter of a segment at a time, never the whole backlog.
const RELOCATE_BELOW: u64 = SEGMENT_LIMIT / 4;

/// Live message counts per segment, for deciding which segments can go.
#[derive(Debug, Default)]
pub(crate) struct SegmentTable {
    /// segment number → what is live there.
    live: BTreeMap<u64, Live>,
    /// The segment the writer appends to.
    current: u64,
}

/// Handle to the spool; cheap to share behind an `Arc`.
pub struct Spool {
    dir: PathBuf,
    shared: Arc<Shared>,
    files: Mutex<HashMap<u64, Arc<File>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// The messages found on disk at start-up, by id (handed to the queue as they are: no
/// copy, no sort, so replay does not cost the queue's memory twice).
pub type RecoveredMessages = HashMap<MsgId, Recovered>;

/// A message found on disk at start-up.
pub struct Recovered {
    pub message: StoredMessage,
    pub body: BodyRef,
}

fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("seg-{n:016}.log"))
}

fn list_segments(dir: &Path) -> Result<Vec<u64>, SpoolError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err(dir, "list"))? {
        let entry = entry.map_err(io_err(dir, "list"))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(n) = name
            .strip_prefix("seg-")
            .and_then(|s| s.strip_suffix(".log"))
            .and_then(|s| s.parse::<u64>().ok())
        {
            out.push(n);
        } else if name.ends_with(".tmp") {
            // Left by an interrupted write of something else; never acknowledged.
            let _ = std::fs::remove_file(entry.path());
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Creates the spool directory (and its parents), fsyncing each new entry's parent.
fn create_dir(fs: &dyn SpoolFs, dir: &Path) -> Result<(), SpoolError> {
    if dir.is_dir() {
        return Ok(());
    }
    let parent = fs::parent_of(dir);
    create_dir(fs, &parent)?;
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(io_err(dir, "create")(e)),
    }
    fs.sync_dir(&parent)
        .map_err(io_err(&parent, "fsync directory"))
}

impl Spool {
    /// Opens (creating if needed) the spool in `dir`, replays it, and starts the writer on
    /// a fresh segment.
    pub fn open(dir: &Path) -> Result<(Spool, RecoveredMessages), SpoolError> {
        Spool::open_with(dir, Arc::new(DiskFs))
    }

    /// [`Spool::open`] over a given file layer (tests inject failures with
    /// [`fs::FaultFs`]). A spool that cannot start a segment still opens, degraded: what
    /// is queued can be delivered, and the writer keeps trying.
    pub fn open_with(
        dir: &Path,
        fs: Arc<dyn SpoolFs>,
    ) -> Result<(Spool, RecoveredMessages), SpoolError> {
        create_dir(fs.as_ref(), dir)?;
        let replayed = replay::replay(dir)?;
        let shared = Arc::new(Shared::default());
        {
            let mut t = shared.table();
            for &n in &replayed.segments {
                t.live.insert(n, Live::default());
            }
            for r in replayed.messages.values() {
                let live = t.live.entry(r.body.segment).or_default();
                live.messages += 1;
                live.body_bytes += r.body.len;
            }
            t.current = replayed.segments.last().copied().unwrap_or(0);
        }
        let mut writer = Writer::new(dir, fs, shared.table().current, Arc::clone(&shared));
        writer.start();
        let handle = std::thread::Builder::new()
            .name("spool-writer".into())
            .spawn(move || writer.run())
            .map_err(io_err(dir, "start writer thread"))?;
        // Before anything can be submitted: submissions wake the writer through it.
        let _ = shared.writer.set(handle.thread().clone());
        let spool = Spool {
            dir: dir.to_path_buf(),
            shared,
            files: Mutex::new(HashMap::new()),
            writer: Mutex::new(Some(handle)),
        };
        Ok((spool, replayed.messages))
    }

    /// Queues records for the writer; the receiver resolves once they are written, and
    /// for a `durable` request flushed.
    fn submit(&self, records: Vec<Encoded>, durable: bool) -> oneshot::Receiver<writer::Reply> {
        let (reply, rx) = oneshot::channel();
        // Once the spool is closed the request is dropped with its reply sender, and the
        // receiver reports that.
        self.shared.push(WriteRequest {
            records,
            reply,
            durable,
        });
        rx
    }

    /// Announces a durable write coming soon (see [`WriteIntent`]).
    pub fn intent(&self) -> WriteIntent {
        WriteIntent::new(&self.shared)
    }

    /// Changes how long a flush may wait for announced writes, and how long waiting
    /// stops after such a wait ran out (defaults: [`writer::COMMIT_DELAY`],
    /// [`writer::DELAY_BACKOFF`]).
    pub fn set_group_commit(&self, delay: std::time::Duration, backoff: std::time::Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        let us = |d: std::time::Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.shared.commit_delay_us.store(us(delay), Relaxed);
        self.shared.backoff_us.store(us(backoff), Relaxed);
    }

    async fn wait(
        rx: oneshot::Receiver<writer::Reply>,
    ) -> Result<Vec<Option<BodyRef>>, SpoolError> {
        match rx.await {
            Ok(Ok(refs)) => Ok(refs),
            Ok(Err(e)) => Err(SpoolError::Write(e)),
            Err(_) => Err(SpoolError::WriterGone),
        }
    }

    /// Appends records and waits until they are durable.
    pub async fn write(&self, records: Vec<Encoded>) -> Result<Vec<Option<BodyRef>>, SpoolError> {
        Spool::wait(self.submit(records, true)).await
    }

    /// Stores a new message durably and counts it live in its segment. `intent`, the
    /// announcement of this write, is withdrawn once the request is out.
    pub async fn add_message(
        &self,
        meta: &StoredMessage,
        body: &[u8],
        intent: Option<WriteIntent>,
    ) -> Result<BodyRef, SpoolError> {
        let rec = record::encode_message(meta, body)?;
        let sent = self.submit(vec![rec], true);
        drop(intent);
        let refs = Spool::wait(sent).await?;
        let body_ref = refs
            .into_iter()
            .next()
            .flatten()
            .ok_or(SpoolError::WriterGone)?;
        self.count_live(body_ref, 1);
        Ok(body_ref)
    }

    /// Appends state changes of live messages (recipient states, overrides) without
    /// waiting: losing them in a crash means an extra attempt, never a lost message.
    pub fn update(&self, records: Vec<Encoded>) {
        drop(self.submit(records, false));
    }

    /// Appends `records` and the removal of message `id`, whose body is at `body`; from
    /// now on the message no longer keeps that segment alive.
    pub fn remove(&self, id: MsgId, body: BodyRef, mut records: Vec<Encoded>) {
        records.push(record::encode_removal(id));
        drop(self.submit(records, false));
        self.count_live(body, -1);
    }

    /// Writes a message again at the head (relocation). Call this while the caller's
    /// state is locked, so its records keep their order; the future resolves to the new
    /// body's place, which [`Spool::commit_relocation`] then makes the live one.
    pub fn relocate(
        &self,
        meta: &StoredMessage,
        body: &[u8],
    ) -> impl Future<Output = Result<BodyRef, SpoolError>> + use<> {
        let rx = record::encode_message(meta, body).map(|rec| self.submit(vec![rec], true));
        async move {
            Spool::wait(rx?)
                .await?
                .into_iter()
                .next()
                .flatten()
                .ok_or(SpoolError::WriterGone)
        }
    }

    /// The relocated copy at `new` replaces the body at `old` for a message still live.
    pub fn commit_relocation(&self, old: BodyRef, new: BodyRef) {
        self.count_live(new, 1);
        self.count_live(old, -1);
    }

    fn count_live(&self, body: BodyRef, delta: isize) {
        let mut t = self.shared.table();
        let live = t.live.entry(body.segment).or_default();
        live.messages = live.messages.saturating_add_signed(delta);
        live.body_bytes = if delta >= 0 {
            live.body_bytes.saturating_add(body.len)
        } else {
            live.body_bytes.saturating_sub(body.len)
        };
    }

    /// Whether new records can be stored now.
    pub fn health(&self) -> SpoolHealth {
        self.shared.health().clone()
    }

    /// Reads a message body.
    pub async fn read_body(&self, body: BodyRef) -> Result<Vec<u8>, SpoolError> {
        let file = self.segment_file(body.segment)?;
        let path = segment_path(&self.dir, body.segment);
        let len = usize::try_from(body.len).map_err(|_| SpoolError::Io {
            path: path.clone(),
            op: "read body",
            source: io::Error::other("body length does not fit in memory"),
        })?;
        tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; len];
            file.read_exact_at(&mut buf, body.offset)
                .map(|_| buf)
                .map_err(io_err(&path, "read body"))
        })
        .await
        .map_err(|e| SpoolError::Io {
            path: self.dir.clone(),
            op: "read body",
            source: io::Error::other(e.to_string()),
        })?
    }

    fn segment_file(&self, n: u64) -> Result<Arc<File>, SpoolError> {
        let mut files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = files.get(&n) {
            return Ok(Arc::clone(f));
        }
        let path = segment_path(&self.dir, n);
        let f = Arc::new(File::open(&path).map_err(io_err(&path, "open"))?);
        files.insert(n, Arc::clone(&f));
        Ok(f)
    }

    /// Deletes the oldest segments that hold no live message. Returns the oldest closed
    /// segment that is still live when it is worth relocating (little is live there and
    /// newer segments wait behind it).
    pub fn collect(&self) -> Option<u64> {
        let mut doomed = Vec::new();
        let blocked = {
            let mut t = self.shared.table();
            let current = t.current;
            let mut blocked = None;
            while let Some((&n, &live)) = t.live.iter().next() {
                if n >= current {
                    break;
                }
                if live.messages == 0 {
                    t.live.remove(&n);
                    doomed.push(n);
                } else {
                    if live.body_bytes < RELOCATE_BELOW && t.live.len() >= 3 {
                        blocked = Some(n);
                    }
                    break;
                }
            }
            blocked
        };
        for n in doomed {
            self.files
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&n);
            let path = segment_path(&self.dir, n);
            match std::fs::remove_file(&path) {
                Ok(()) => tracing::debug!(segment = %path.display(), "spool: segment deleted"),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(segment = %path.display(), error = %e, "spool: cannot delete segment")
                }
            }
        }
        blocked
    }

    /// Number of segment files in use.
    pub fn segment_count(&self) -> usize {
        self.shared.table().live.len()
    }

    /// The segment currently appended to.
    pub fn current_segment(&self) -> u64 {
        self.shared.table().current
    }

    /// Live messages counted in each segment (for tests and diagnostics).
    pub fn live_counts(&self) -> BTreeMap<u64, usize> {
        self.shared
            .table()
            .live
            .iter()
            .map(|(&n, l)| (n, l.messages))
            .collect()
    }

    /// Stops the writer after it has flushed what it was given.
    pub fn close(&self) {
        self.shared.close();
        if let Some(handle) = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = handle.join();
        }
    }
}

impl Drop for Spool {
    /// A spool dropped without [`Spool::close`] still has what it was given stored and
    /// flushed (the writer finishes on its own).
    fn drop(&mut self) {
        self.shared.close();
    }
}

#[cfg(test)]
mod group_commit_tests;
#[cfg(test)]
mod tests;
