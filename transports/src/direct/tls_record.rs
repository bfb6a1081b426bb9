//! What the last session with each recipient domain offered: STARTTLS and REQUIRETLS,
//! and the TLS actually used. Where records go is a [`TlsStatusSink`]: here the file
//! writer [`TlsStatusStore`], one small JSON file per domain under a directory
//! (`data_dir/tls-status/<domain>.json`), so a record replaces only its own file; the
//! gateway has a Redis sink for fleets (`{prefix}tlsstatus:{domain}`).
//!
//! Deliveries never wait for it: a [`CoalescingSink`] (shared by every backend) puts the
//! record in a pending map and wakes one writer task, which hands batches to its
//! [`TlsStatusBackend`]; the file backend writes each file to a temporary name and
//! renames it into place. A failed write is logged and dropped. It never aborts or delays a
//! delivery (the reference design failed the delivery when this write failed; SPEC §5).

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

/// One record: what the last session with a recipient domain showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsStatus {
    /// The MX host of that session.
    pub host: String,
    /// The address connected to.
    pub ip: Option<IpAddr>,
    /// The server announced STARTTLS (in its first EHLO reply).
    pub starttls: bool,
    /// The server announced REQUIRETLS (in its last EHLO reply).
    pub requiretls: bool,
    /// TLS of the session that carried the mail: "none", "unverified" or "verified".
    pub tls: &'static str,
    /// A TLS failure seen on the way (then `tls` is "none": plaintext fallback).
    pub tls_error: Option<String>,
    /// When it was seen, seconds since the Unix epoch.
    pub updated_at: u64,
}

/// The JSON shape of a record, in field order.
#[derive(serde::Serialize)]
struct Record<'a> {
    domain: &'a str,
    host: &'a str,
    ip: Option<String>,
    starttls: bool,
    requiretls: bool,
    tls: &'a str,
    tls_error: Option<&'a str>,
    updated_at: u64,
}

impl TlsStatus {
    /// The file content for `domain`: one JSON object and a newline.
    pub fn to_json(&self, domain: &str) -> String {
        let record = Record {
            domain,
            host: &self.host,
            ip: self.ip.map(|ip| ip.to_string()),
            starttls: self.starttls,
            requiretls: self.requiretls,
            tls: self.tls,
            tls_error: self.tls_error.as_deref(),
            updated_at: self.updated_at,
        };
        // Strings, numbers and booleans only: serialising cannot fail.
        let mut text = serde_json::to_string(&record).unwrap_or_default();
        text.push('\n');
        text
    }
}

/// Where TLS status records go. [`TlsStatusSink::record`] must return at once and never
/// fail: a record that cannot be kept is dropped (and logged) by the sink, the delivery
/// goes on.
pub trait TlsStatusSink: Send + Sync + std::fmt::Debug {
    /// Keeps `status` as the record of `domain` (replacing the previous one).
    fn record(&self, domain: &str, status: TlsStatus);
}

/// Whether a domain gets a record at all: a lowercase ASCII host name, nothing else
/// (address literals and anything odd are not recorded). Usable as a file name.
pub fn is_recordable(domain: &str) -> bool {
    !domain.is_empty()
        && domain.len() <= 253
        && !domain.starts_with('.')
        && !domain.contains("..")
        && domain.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.' || b == b'_'
        })
}

/// The file name of a recordable domain.
fn file_name_of(domain: &str) -> Option<String> {
    is_recordable(domain).then(|| format!("{domain}.json"))
}

/// Where a backend puts a batch of records (files, Redis). Called by the one writer task
/// of a [`CoalescingSink`]; it logs and drops what it cannot keep.
pub trait TlsStatusBackend: Send + Sync + 'static {
    /// Writes the records (domain → status) of one batch.
    fn write_batch(
        &self,
        batch: BTreeMap<String, TlsStatus>,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

struct Shared<B> {
    backend: B,
    pending: Mutex<BTreeMap<String, TlsStatus>>,
    wake: Notify,
    writer_started: AtomicBool,
    closed: AtomicBool,
}

impl<B> Shared<B> {
    fn pending(&self) -> MutexGuard<'_, BTreeMap<String, TlsStatus>> {
        // Plain data: a panic elsewhere cannot leave it inconsistent.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The sink every backend shares: records go into a pending map (a newer record of a
/// domain replaces an unwritten older one) and one background task hands them to the
/// backend in batches. Dropping the sink lets the task finish what is pending and stop.
pub struct CoalescingSink<B: TlsStatusBackend> {
    shared: Arc<Shared<B>>,
}

impl<B: TlsStatusBackend> Drop for CoalescingSink<B> {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        self.shared.wake.notify_one();
    }
}

impl<B: TlsStatusBackend> CoalescingSink<B> {
    pub fn new(backend: B) -> Self {
        CoalescingSink {
            shared: Arc::new(Shared {
                backend,
                pending: Mutex::new(BTreeMap::new()),
                wake: Notify::new(),
                writer_started: AtomicBool::new(false),
                closed: AtomicBool::new(false),
            }),
        }
    }

    /// Whether the writer task has been started.
    pub fn writer_running(&self) -> bool {
        self.shared.writer_started.load(Ordering::SeqCst)
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.shared.backend
    }

    /// Queues `status` as the domain's record; returns at once. The writer task starts
    /// on the first call (it needs a tokio runtime; without one nothing is written).
    pub fn record(&self, domain: &str, status: TlsStatus) {
        if !is_recordable(domain) {
            tracing::debug!(domain, "TLS status: domain not recordable, skipped");
            return;
        }
        self.shared.pending().insert(domain.to_string(), status);
        if !self.shared.writer_started.swap(true, Ordering::SeqCst) {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    runtime.spawn(writer(Arc::clone(&self.shared)));
                }
                Err(_) => {
                    self.shared.writer_started.store(false, Ordering::SeqCst);
                    tracing::warn!("TLS status: no async runtime, record not written");
                    return;
                }
            }
        }
        self.shared.wake.notify_one();
    }
}

async fn writer<B: TlsStatusBackend>(shared: Arc<Shared<B>>) {
    loop {
        let batch = std::mem::take(&mut *shared.pending());
        if batch.is_empty() {
            if shared.closed.load(Ordering::SeqCst) {
                return;
            }
            shared.wake.notified().await;
            continue;
        }
        shared.backend.write_batch(batch).await;
    }
}

/// The file backend: one JSON file per domain under a directory.
#[derive(Debug)]
pub struct TlsStatusFiles {
    dir: PathBuf,
}

impl TlsStatusBackend for TlsStatusFiles {
    fn write_batch(
        &self,
        batch: BTreeMap<String, TlsStatus>,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            if let Err(e) = tokio::fs::create_dir_all(&self.dir).await {
                tracing::warn!(dir = %self.dir.display(), error = %e,
                    records = batch.len(), "TLS status: cannot create directory; records dropped");
                return;
            }
            for (domain, status) in batch {
                if let Err(e) = write_one(&self.dir, &domain, &status).await {
                    tracing::warn!(domain, dir = %self.dir.display(), error = %e,
                        "TLS status: write failed; record dropped");
                }
            }
        })
    }
}

/// The per-domain TLS status files (`<dir>/<domain>.json`).
pub struct TlsStatusStore {
    sink: CoalescingSink<TlsStatusFiles>,
}

impl std::fmt::Debug for TlsStatusStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsStatusStore")
            .field("dir", &self.sink.backend().dir)
            .finish()
    }
}

impl TlsStatusStore {
    /// A store writing into `dir` (created on the first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        TlsStatusStore {
            sink: CoalescingSink::new(TlsStatusFiles { dir: dir.into() }),
        }
    }

    /// The directory of the files.
    pub fn dir(&self) -> &Path {
        &self.sink.backend().dir
    }

    /// The file of a domain's record, if the domain can be recorded at all.
    pub fn path_of(&self, domain: &str) -> Option<PathBuf> {
        file_name_of(domain).map(|name| self.dir().join(name))
    }

    /// Queues `status` as the domain's record; returns at once.
    pub fn record(&self, domain: &str, status: TlsStatus) {
        self.sink.record(domain, status);
    }
}

impl TlsStatusSink for TlsStatusStore {
    fn record(&self, domain: &str, status: TlsStatus) {
        self.sink.record(domain, status);
    }
}

async fn write_one(dir: &Path, domain: &str, status: &TlsStatus) -> io::Result<()> {
    let name = file_name_of(domain)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "domain not recordable"))?;
    let path = dir.join(&name);
    let tmp = dir.join(format!(".{name}.{:016x}.tmp", rand::random::<u64>()));
    if let Err(e) = tokio::fs::write(&tmp, status.to_json(domain)).await {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(io::Error::new(e.kind(), format!("{}: {e}", tmp.display())));
    }
    if let Err(e) = tokio::fs::rename(&tmp, &path).await {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display())));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn status(host: &str) -> TlsStatus {
        TlsStatus {
            host: host.into(),
            ip: Some("192.0.2.1".parse().unwrap()),
            starttls: true,
            requiretls: false,
            tls: "none",
            tls_error: Some("bad \"record\"\n".into()),
            updated_at: 7,
        }
    }

    #[test]
    fn tls_status_json_and_names() {
        assert_eq!(
            status("mx.test").to_json("dst.test"),
            "{\"domain\":\"dst.test\",\"host\":\"mx.test\",\"ip\":\"192.0.2.1\",\
             \"starttls\":true,\"requiretls\":false,\"tls\":\"none\",\
             \"tls_error\":\"bad \\\"record\\\"\\n\",\"updated_at\":7}\n"
        );
        assert_eq!(file_name_of("dst.test").as_deref(), Some("dst.test.json"));
        for bad in [
            "",
            ".hidden",
            "a..b",
            "../x",
            "a/b",
            "[192.0.2.1]",
            "UPPER.test",
        ] {
            assert_eq!(file_name_of(bad), None, "{bad}");
        }
    }

    async fn wait_for_file(path: &Path, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(text) = std::fs::read_to_string(path) {
                if text.contains(needle) {
                    return text;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{} never contained {needle}",
                path.display()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn tls_status_written_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let store = TlsStatusStore::new(dir.path().join("tls-status"));
        store.record("dst.test", status("mx1.test"));
        let path = store.path_of("dst.test").unwrap();
        wait_for_file(&path, "mx1.test").await;
        store.record("dst.test", status("mx2.test"));
        let text = wait_for_file(&path, "mx2.test").await;
        assert!(!text.contains("mx1.test"));
        // Odd domains are skipped without error.
        store.record("[192.0.2.1]", status("x"));
    }

    #[tokio::test]
    async fn tls_status_write_failure_is_harmless() {
        let dir = tempfile::tempdir().unwrap();
        // A file where the directory should be: every write fails.
        let blocked = dir.path().join("blocked");
        std::fs::write(&blocked, b"not a dir").unwrap();
        let store = TlsStatusStore::new(&blocked);
        store.record("dst.test", status("mx.test"));
        store.record("other.test", status("mx.test"));
        // record() returned; nothing was written and nothing panicked.
        tokio::task::yield_now().await;
        assert!(blocked.is_file());
        drop(store);
    }
}
