//! The file operations the spool writer depends on, behind a small trait so tests can
//! make any of them fail the way a full disk, a quota, a file-descriptor limit or a dying
//! device does ([`FaultFs`]). The real implementation ([`DiskFs`]) is plain `std::fs`.
//!
//! Only the writing side goes through this layer: creating a segment, appending and
//! flushing, cutting a segment back, fsyncing the directory. Reads (replay, bodies) use
//! the files directly.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// A segment file open for appending.
pub trait SegmentFile: Send {
    /// Appends all of `buf` (a failure may leave part of it written).
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()>;
    /// Flushes the data written so far (`fdatasync`).
    fn sync_data(&mut self) -> io::Result<()>;
    /// Cuts the file back to `len` bytes and flushes that (`ftruncate` + `fsync`).
    fn truncate(&mut self, len: u64) -> io::Result<()>;
}

/// Creating segments and flushing directories.
pub trait SpoolFs: Send + Sync {
    /// Creates a new, empty segment file (fails if it exists).
    fn create(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>>;
    /// Flushes a directory, so the entries created in it survive a crash.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Deletes a file (an abandoned, empty segment).
    fn remove(&self, path: &Path) -> io::Result<()>;
}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct DiskFs;

struct DiskFile(File);

impl SegmentFile for DiskFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.write_all(buf)
    }
    fn sync_data(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.0.set_len(len)?;
        self.0.sync_all()
    }
}

impl SpoolFs for DiskFs {
    fn create(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>> {
        let f = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(path)?;
        Ok(Box::new(DiskFile(f)))
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
}

/// An operation [`FaultFs`] can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultOp {
    Create,
    Write,
    SyncData,
    Truncate,
    SyncDir,
}

/// One scripted failure: the next `op` fails with `errno`; a failing write first writes
/// `partial` bytes of its buffer (a torn record), as a filling disk does.
#[derive(Debug, Clone, Copy)]
pub struct Fault {
    pub op: FaultOp,
    pub errno: i32,
    pub partial: usize,
}

impl Fault {
    pub fn new(op: FaultOp, errno: i32) -> Fault {
        Fault {
            op,
            errno,
            partial: 0,
        }
    }

    /// A write that gets `partial` bytes out before failing.
    pub fn torn_write(errno: i32, partial: usize) -> Fault {
        Fault {
            op: FaultOp::Write,
            errno,
            partial,
        }
    }
}

#[derive(Debug, Default)]
struct Script {
    /// Failures still to happen, in order; each is used by the first matching call.
    queue: VecDeque<Fault>,
    /// Operations that fail every time until cleared (a full disk stays full).
    sticky: Vec<Fault>,
    /// Every operation seen, for assertions.
    seen: Vec<FaultOp>,
}

/// A fault-injecting [`SpoolFs`] over the real file system, for tests: failures are
/// scripted per operation with an errno (`ENOSPC`, `EDQUOT`, `EMFILE`, `EIO`, ...).
#[derive(Debug, Clone, Default)]
pub struct FaultFs {
    script: Arc<Mutex<Script>>,
}

impl FaultFs {
    pub fn new() -> FaultFs {
        FaultFs::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Script> {
        self.script.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next matching operation fails once.
    pub fn fail_once(&self, fault: Fault) {
        self.lock().queue.push_back(fault);
    }

    /// Every matching operation fails until [`FaultFs::heal`].
    pub fn fail_always(&self, fault: Fault) {
        self.lock().sticky.push(fault);
    }

    /// Stops every failure.
    pub fn heal(&self) {
        let mut s = self.lock();
        s.queue.clear();
        s.sticky.clear();
    }

    /// Operations seen so far.
    pub fn seen(&self) -> Vec<FaultOp> {
        self.lock().seen.clone()
    }

    fn check(&self, op: FaultOp) -> Option<Fault> {
        let mut s = self.lock();
        s.seen.push(op);
        if let Some(f) = s.sticky.iter().find(|f| f.op == op) {
            return Some(*f);
        }
        let i = s.queue.iter().position(|f| f.op == op)?;
        s.queue.remove(i)
    }
}

struct FaultFile {
    inner: File,
    fs: FaultFs,
}

fn errno(f: &Fault) -> io::Error {
    io::Error::from_raw_os_error(f.errno)
}

impl SegmentFile for FaultFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        if let Some(f) = self.fs.check(FaultOp::Write) {
            let n = f.partial.min(buf.len());
            self.inner.write_all(&buf[..n])?;
            return Err(errno(&f));
        }
        self.inner.write_all(buf)
    }
    fn sync_data(&mut self) -> io::Result<()> {
        match self.fs.check(FaultOp::SyncData) {
            Some(f) => Err(errno(&f)),
            None => self.inner.sync_data(),
        }
    }
    fn truncate(&mut self, len: u64) -> io::Result<()> {
        match self.fs.check(FaultOp::Truncate) {
            Some(f) => Err(errno(&f)),
            None => {
                self.inner.set_len(len)?;
                self.inner.sync_all()
            }
        }
    }
}

impl SpoolFs for FaultFs {
    fn create(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>> {
        if let Some(f) = self.check(FaultOp::Create) {
            return Err(errno(&f));
        }
        let inner = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(path)?;
        Ok(Box::new(FaultFile {
            inner,
            fs: self.clone(),
        }))
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        match self.check(FaultOp::SyncDir) {
            Some(f) => Err(errno(&f)),
            None => DiskFs.sync_dir(dir),
        }
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
}

/// `dir`'s parent, for fsyncing a newly created directory's entry.
pub fn parent_of(dir: &Path) -> PathBuf {
    match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}
