//! The durable spool: an append-only log of segment files under `data_dir/spool/`.
//!
//! Every change to the queue is a record appended to the current segment (see
//! [`record`]): a new message (envelope and body), a recipient's new state, operator
//! overrides, a removal. One writer thread owns the file. It takes every request waiting
//! in its channel, writes them with one `write`, calls `fdatasync` once, and only then
//! answers them all: that is the group commit that lets many concurrent submissions
//! share one disk flush. A submission is acknowledged (`250`) only after its record's
//! flush has returned.
//!
//! Segments roll over at [`SEGMENT_LIMIT`]; a new segment's directory entry is fsynced
//! before anything in it is acknowledged. On start, all segments are replayed in order
//! (later records win); a torn or corrupt tail of the newest segment is cut off, since it
//! was never acknowledged. Old segments are deleted oldest first once no live message
//! has its body there; a long-lived message blocking that is relocated (its current
//! state and body written again at the head) by the queue's housekeeping.

pub mod record;

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};

use tokio::sync::oneshot;

use crate::model::{MsgId, StoredMessage};
use record::{DecodeStop, Decoded, Encoded};

/// Size at which the writer starts a new segment.
pub const SEGMENT_LIMIT: u64 = 64 << 20;
/// Most bytes one group commit writes before flushing.
const BATCH_BYTES: usize = 16 << 20;

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
    #[error("spool writer stopped after an earlier error; the spool is read-only")]
    WriterGone,
}

fn io_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(io::Error) -> SpoolError + 'a {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        op,
        source,
    }
}

struct WriteRequest {
    records: Vec<Encoded>,
    reply: oneshot::Sender<Result<Vec<Option<BodyRef>>, String>>,
}

/// Live message counts per segment, for deciding which segments can go.
#[derive(Debug, Default)]
struct SegmentTable {
    /// segment number → live messages whose body is there.
    live: BTreeMap<u64, usize>,
    /// The segment the writer appends to.
    current: u64,
}

/// Handle to the spool; cheap to share behind an `Arc`.
pub struct Spool {
    dir: PathBuf,
    tx: Mutex<Option<mpsc::Sender<WriteRequest>>>,
    segments: Arc<Mutex<SegmentTable>>,
    files: Mutex<HashMap<u64, Arc<File>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

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
    for entry in fs::read_dir(dir).map_err(io_err(dir, "list"))? {
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
            let _ = fs::remove_file(entry.path());
        }
    }
    out.sort_unstable();
    Ok(out)
}

fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir, "fsync directory"))
}

impl Spool {
    /// Opens (creating if needed) the spool in `dir`, replays it, and starts the writer on
    /// a fresh segment.
    pub fn open(dir: &Path) -> Result<(Spool, Vec<Recovered>), SpoolError> {
        fs::create_dir_all(dir).map_err(io_err(dir, "create"))?;
        let segments = list_segments(dir)?;
        let mut messages: HashMap<MsgId, Recovered> = HashMap::new();
        let last = segments.last().copied();
        for &n in &segments {
            let path = segment_path(dir, n);
            let mut data = Vec::new();
            File::open(&path)
                .and_then(|mut f| f.read_to_end(&mut data))
                .map_err(io_err(&path, "read"))?;
            let mut pos = 0usize;
            loop {
                match record::decode(&data[pos..]) {
                    Ok((rec, len)) => {
                        apply(&mut messages, n, pos, rec);
                        pos += len;
                    }
                    Err(stop) => {
                        if pos < data.len() {
                            let why = match stop {
                                DecodeStop::Incomplete => "incomplete record".to_string(),
                                DecodeStop::Corrupt(why) => why,
                            };
                            tracing::warn!(
                                segment = %path.display(), offset = pos, reason = %why,
                                "spool: cutting unacknowledged tail"
                            );
                            if Some(n) == last {
                                let f = OpenOptions::new()
                                    .write(true)
                                    .open(&path)
                                    .map_err(io_err(&path, "open"))?;
                                f.set_len(pos as u64).map_err(io_err(&path, "truncate"))?;
                                f.sync_all().map_err(io_err(&path, "fsync"))?;
                            }
                        }
                        break;
                    }
                }
            }
        }
        let mut table = SegmentTable::default();
        for &n in &segments {
            table.live.insert(n, 0);
        }
        for r in messages.values() {
            *table.live.entry(r.body.segment).or_insert(0) += 1;
        }
        let current = last.map_or(1, |n| n + 1);
        let path = segment_path(dir, current);
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path, "create segment"))?;
        sync_dir(dir)?;
        table.current = current;
        table.live.insert(current, 0);
        let segments_shared = Arc::new(Mutex::new(table));
        let (tx, rx) = mpsc::channel::<WriteRequest>();
        let writer_dir = dir.to_path_buf();
        let writer_segments = Arc::clone(&segments_shared);
        let writer = std::thread::Builder::new()
            .name("spool-writer".into())
            .spawn(move || writer_loop(writer_dir, current, file, rx, writer_segments))
            .map_err(io_err(dir, "start writer thread"))?;
        let spool = Spool {
            dir: dir.to_path_buf(),
            tx: Mutex::new(Some(tx)),
            segments: segments_shared,
            files: Mutex::new(HashMap::new()),
            writer: Mutex::new(Some(writer)),
        };
        let mut recovered: Vec<Recovered> = messages.into_values().collect();
        recovered.sort_by_key(|r| r.message.id);
        Ok((spool, recovered))
    }

    /// Queues records for the writer; the receiver resolves once they are on disk.
    pub fn submit(
        &self,
        records: Vec<Encoded>,
    ) -> oneshot::Receiver<Result<Vec<Option<BodyRef>>, String>> {
        let (reply, rx) = oneshot::channel();
        let guard = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = guard.as_ref() {
            // If the writer is gone the request is dropped with its reply sender, and the
            // receiver reports that.
            let _ = tx.send(WriteRequest { records, reply });
        }
        rx
    }

    /// Appends records and waits until they are durable.
    pub async fn write(&self, records: Vec<Encoded>) -> Result<Vec<Option<BodyRef>>, SpoolError> {
        match self.submit(records).await {
            Ok(Ok(refs)) => Ok(refs),
            Ok(Err(message)) => Err(SpoolError::Io {
                path: self.dir.clone(),
                op: "append",
                source: io::Error::other(message),
            }),
            Err(_) => Err(SpoolError::WriterGone),
        }
    }

    /// Stores a new message durably and counts it live in its segment.
    pub async fn add_message(
        &self,
        meta: &StoredMessage,
        body: &[u8],
    ) -> Result<BodyRef, SpoolError> {
        let refs = self.write(vec![record::encode_message(meta, body)]).await?;
        let body_ref = refs
            .into_iter()
            .next()
            .flatten()
            .ok_or(SpoolError::WriterGone)?;
        self.count_live(body_ref.segment, 1);
        Ok(body_ref)
    }

    /// Notes that a message with its body in `segment` is gone (+1/-1 live messages).
    pub fn count_live(&self, segment: u64, delta: isize) {
        let mut t = self.segments.lock().unwrap_or_else(|p| p.into_inner());
        let entry = t.live.entry(segment).or_insert(0);
        *entry = entry.saturating_add_signed(delta);
    }

    /// Reads a message body.
    pub async fn read_body(&self, body: BodyRef) -> Result<Vec<u8>, SpoolError> {
        let file = self.segment_file(body.segment)?;
        let path = segment_path(&self.dir, body.segment);
        tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; body.len as usize];
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
    /// segment that is still live (a relocation candidate), if any, with its live count.
    pub fn collect(&self) -> Option<(u64, usize)> {
        let mut doomed = Vec::new();
        let blocked = {
            let mut t = self.segments.lock().unwrap_or_else(|p| p.into_inner());
            let current = t.current;
            let mut blocked = None;
            while let Some((&n, &live)) = t.live.iter().next() {
                if n >= current {
                    break;
                }
                if live == 0 {
                    t.live.remove(&n);
                    doomed.push(n);
                } else {
                    blocked = Some((n, live));
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
            match fs::remove_file(&path) {
                Ok(()) => tracing::debug!(segment = %path.display(), "spool: segment deleted"),
                Err(e) => {
                    tracing::warn!(segment = %path.display(), error = %e, "spool: cannot delete segment")
                }
            }
        }
        blocked
    }

    /// Number of segment files in use.
    pub fn segment_count(&self) -> usize {
        self.segments
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .live
            .len()
    }

    /// The segment currently appended to.
    pub fn current_segment(&self) -> u64 {
        self.segments
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .current
    }

    /// Stops the writer after it has flushed what it was given.
    pub fn close(&self) {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(handle) = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = handle.join();
        }
    }
}

fn apply(messages: &mut HashMap<MsgId, Recovered>, segment: u64, pos: usize, rec: Decoded) {
    match rec {
        Decoded::Message {
            meta,
            body_offset,
            body_len,
        } => {
            let body = BodyRef {
                segment,
                offset: (pos + body_offset) as u64,
                len: body_len as u64,
            };
            messages.insert(
                meta.id,
                Recovered {
                    message: *meta,
                    body,
                },
            );
        }
        Decoded::Recipient(u) => {
            if let Some(r) = messages.get_mut(&u.id) {
                if let Some(slot) = r.message.rcpts.get_mut(u.index) {
                    *slot = u.rcpt;
                }
            }
        }
        Decoded::Overrides(u) => {
            if let Some(r) = messages.get_mut(&u.id) {
                r.message.overrides = u.overrides;
            }
        }
        Decoded::Removed(r) => {
            messages.remove(&r.id);
        }
    }
}

fn writer_loop(
    dir: PathBuf,
    mut segment: u64,
    mut file: File,
    rx: mpsc::Receiver<WriteRequest>,
    segments: Arc<Mutex<SegmentTable>>,
) {
    let mut size: u64 = 0;
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
    while let Ok(first) = rx.recv() {
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
        if size >= SEGMENT_LIMIT {
            match roll(&dir, segment + 1) {
                Ok(f) => {
                    segment += 1;
                    file = f;
                    size = 0;
                    let mut t = segments.lock().unwrap_or_else(|p| p.into_inner());
                    t.current = segment;
                    t.live.entry(segment).or_insert(0);
                }
                Err(e) => {
                    tracing::error!(error = %e, "spool: cannot start a new segment; appending to the old one")
                }
            }
        }
        buf.clear();
        let mut answers = Vec::with_capacity(batch.len());
        for req in &batch {
            let mut refs = Vec::with_capacity(req.records.len());
            for rec in &req.records {
                let start = size + buf.len() as u64;
                refs.push(rec.body_offset.map(|off| BodyRef {
                    segment,
                    offset: start + off as u64,
                    len: (rec.bytes.len() - off) as u64,
                }));
                buf.extend_from_slice(&rec.bytes);
            }
            answers.push(refs);
        }
        let result = file.write_all(&buf).and_then(|_| file.sync_data());
        match result {
            Ok(()) => {
                size += buf.len() as u64;
                for (req, refs) in batch.into_iter().zip(answers) {
                    let _ = req.reply.send(Ok(refs));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, segment, "spool: write failed");
                // A partial write may have left a torn record; start a new segment so
                // later records are not appended behind it. Replay cuts the torn tail only
                // in the newest segment, so the torn one is simply never read past.
                let message = format!("write to spool segment {segment} failed: {e}");
                for req in batch {
                    let _ = req.reply.send(Err(message.clone()));
                }
                if let Ok(f) = roll(&dir, segment + 1) {
                    segment += 1;
                    file = f;
                    size = 0;
                    let mut t = segments.lock().unwrap_or_else(|p| p.into_inner());
                    t.current = segment;
                    t.live.entry(segment).or_insert(0);
                }
            }
        }
    }
}

fn roll(dir: &Path, n: u64) -> Result<File, SpoolError> {
    let path = segment_path(dir, n);
    let f = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&path)
        .map_err(io_err(&path, "create segment"))?;
    sync_dir(dir)?;
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{MailParams, Overrides, RcptState, Recipient};
    use record::RecipientUpdate;

    fn msg(id: MsgId) -> StoredMessage {
        StoredMessage {
            id,
            received_at: 1,
            mail_from: "a@b".into(),
            params: MailParams::default(),
            account: None,
            client: None,
            size: 5,
            overrides: Overrides::default(),
            rcpts: vec![Recipient {
                address: "c@d".into(),
                notify: None,
                orcpt: None,
                state: RcptState::Pending { next_attempt: 0 },
                attempts: 0,
                last: None,
                history: Vec::new(),
                delayed_dsn_sent: false,
            }],
        }
    }

    #[tokio::test]
    async fn replay_applies_updates_and_removals() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (spool, rec) = Spool::open(dir.path()).unwrap();
            assert!(rec.is_empty());
            let b1 = spool.add_message(&msg(1), b"body one").await.unwrap();
            spool.add_message(&msg(2), b"body two").await.unwrap();
            let mut r = msg(1).rcpts[0].clone();
            r.attempts = 3;
            spool
                .write(vec![
                    record::encode_recipient(&RecipientUpdate {
                        id: 1,
                        index: 0,
                        rcpt: r,
                    }),
                    record::encode_removal(2),
                ])
                .await
                .unwrap();
            assert_eq!(spool.read_body(b1).await.unwrap(), b"body one");
            spool.close();
        }
        let (spool, rec) = Spool::open(dir.path()).unwrap();
        assert_eq!(rec.len(), 1);
        assert_eq!(rec[0].message.rcpts[0].attempts, 3);
        assert_eq!(spool.read_body(rec[0].body).await.unwrap(), b"body one");
    }

    #[tokio::test]
    async fn torn_tail_is_cut_and_earlier_records_survive() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (spool, _) = Spool::open(dir.path()).unwrap();
            spool.add_message(&msg(1), b"kept").await.unwrap();
            spool.close();
        }
        let seg = list_segments(dir.path())
            .unwrap()
            .into_iter()
            .max()
            .unwrap();
        let path = segment_path(dir.path(), seg);
        let half = record::encode_message(&msg(2), b"torn");
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&half.bytes[..half.bytes.len() / 2]).unwrap();
        drop(f);
        let (_spool, rec) = Spool::open(dir.path()).unwrap();
        assert_eq!(rec.len(), 1);
        assert_eq!(rec[0].message.id, 1);
        let len = fs::metadata(&path).unwrap().len() as usize;
        assert_eq!(
            len,
            record::encode_message(&msg(1), b"kept").bytes.len(),
            "tail cut"
        );
    }

    #[tokio::test]
    async fn dead_segments_are_collected_in_order() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (spool, _) = Spool::open(dir.path()).unwrap();
            spool.add_message(&msg(1), b"x").await.unwrap();
            spool.close();
        }
        // Second run: message 1 lives in segment 1, segment 2 is current.
        let (spool, rec) = Spool::open(dir.path()).unwrap();
        assert_eq!(spool.collect(), Some((1, 1)));
        spool.write(vec![record::encode_removal(1)]).await.unwrap();
        spool.count_live(rec[0].body.segment, -1);
        assert_eq!(spool.collect(), None);
        assert_eq!(list_segments(dir.path()).unwrap(), vec![2]);
    }
}
