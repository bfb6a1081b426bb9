//! The spool's one writer thread: group commit, segment rolling, and what happens after
//! a write error.
//!
//! It takes every request waiting in its channel, writes them with one `write`, calls
//! `fdatasync` once, and only then answers them all. A new segment's directory entry is
//! fsynced before anything in it is acknowledged.
//!
//! A failed write or flush poisons the segment: nothing is ever appended to it again.
//! The writer cuts it back to its last complete record (`ftruncate` + `fsync`); where even
//! that fails, it remembers a seal, which goes first into the next segment and tells
//! replay where the abandoned segment's acknowledged records end. Every request of the
//! failed batch gets an error (the submission answers `451`), and the writer rolls to a
//! new segment at once. While it cannot, every request gets an error, the spool reports
//! itself degraded, and the roll is retried on each new request and once a second.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
#[derive(Default)]
pub(super) struct Shared {
    pub table: Mutex<SegmentTable>,
    pub health: Mutex<SpoolHealth>,
}

impl Shared {
    pub fn table(&self) -> std::sync::MutexGuard<'_, SegmentTable> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn health(&self) -> std::sync::MutexGuard<'_, SpoolHealth> {
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub(super) struct Writer {
    dir: PathBuf,
    fs: Arc<dyn SpoolFs>,
    /// Number of the segment appended to (or the last one tried, when `file` is `None`).
    segment: u64,
    /// `None`: no writable segment (poisoned, or a roll failed).
    file: Option<Box<dyn SegmentFile>>,
    /// Bytes of complete, flushed records in the current segment.
    size: u64,
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

    pub fn run(mut self, rx: mpsc::Receiver<WriteRequest>) {
        loop {
            let first = if self.file.is_none() {
                match rx.recv_timeout(RETRY_ROLL_EVERY) {
                    Ok(req) => req,
                    Err(RecvTimeoutError::Timeout) => {
                        let _ = self.roll();
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            } else {
                match rx.recv() {
                    Ok(req) => req,
                    Err(_) => break,
                }
            };
            let mut batch = vec![first];
            let mut bytes: usize = batch[0].records.iter().map(|r| r.bytes.len()).sum();
            while bytes < BATCH_BYTES {
                match rx.try_recv() {
                    Ok(req) => {
                        bytes += req.records.iter().map(|r| r.bytes.len()).sum::<usize>();
                        batch.push(req);
                    }
                    Err(_) => break,
                }
            }
            self.handle(batch);
        }
    }

    fn handle(&mut self, batch: Vec<WriteRequest>) {
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
        match file.write_all(&self.buf).and_then(|_| file.sync_data()) {
            Ok(()) => {
                self.size += self.buf.len() as u64;
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

    /// Closes the current segment after a failed write: cut back to the last complete
    /// record, or remember a seal where that fails too.
    fn poison(&mut self) {
        if let Some(mut f) = self.file.take() {
            match f.truncate(self.size) {
                Ok(()) if self.size == 0 => self.emptied = Some(self.segment),
                Ok(()) => {}
                Err(e) => {
                    tracing::error!(error = %e, segment = self.segment, valid_len = self.size,
                        "spool: cannot cut the abandoned segment back; the next segment seals it");
                    self.seals.push(Seal {
                        segment: self.segment,
                        valid_len: self.size,
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
