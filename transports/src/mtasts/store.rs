//! Where cached policies live: the [`PolicyStore`] trait, an in-memory store for tests,
//! and [`JsonFileStore`], one JSON file under `data_dir` rewritten atomically (temp file,
//! fsync, rename, fsync of the directory). The gateway's Redis store for fleets
//! (`RedisPolicyStore`, `{prefix}fleet:mtasts:{domain}`) implements the same trait.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use super::policy::Policy;

/// One domain's cache entry: a policy, or the memory of a failed fetch (back-off).
///
/// Times are Unix seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedPolicy {
    /// The recipient domain (lowercase, no trailing dot).
    pub domain: String,
    /// The TXT record id the policy belongs to ("" when unknown).
    pub record_id: String,
    /// The policy; `None` for a back-off entry (treated as "no MTA-STS" until `expires`).
    pub policy: Option<Policy>,
    /// When the policy was last fetched or confirmed unchanged.
    pub updated: u64,
    /// When the entry stops being valid.
    pub expires: u64,
    /// When a delivery last asked for it.
    pub last_use: u64,
    /// Consecutive failed fetches (the back-off grows with it).
    pub failures: u32,
    /// No new fetch before this time (after a failure).
    pub retry_after: u64,
}

impl CachedPolicy {
    /// Still valid at `now`.
    pub fn is_valid(&self, now: u64) -> bool {
        now < self.expires
    }

    /// A back-off entry, not a policy.
    pub fn is_backoff(&self) -> bool {
        self.policy.is_none()
    }
}

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing the cache file.
    #[error("MTA-STS cache {path}: {source}", path = path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: io::Error,
    },
    /// The cache file is not what we write.
    #[error("MTA-STS cache {path}: not a valid cache file: {reason}", path = path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What serde said.
        reason: String,
    },
    /// Another backend's failure (Redis, ...).
    #[error("MTA-STS cache: {0}")]
    Backend(String),
}

/// A boxed store future.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Persistent storage of cache entries, one per domain.
pub trait PolicyStore: Send + Sync {
    /// The entry of a domain.
    fn get<'a>(&'a self, domain: &'a str) -> StoreFuture<'a, Option<CachedPolicy>>;
    /// Inserts or replaces the entry of `entry.domain`.
    fn put(&self, entry: CachedPolicy) -> StoreFuture<'_, ()>;
    /// Forgets a domain.
    fn remove<'a>(&'a self, domain: &'a str) -> StoreFuture<'a, ()>;
    /// Every entry (for refresh and pruning).
    fn list(&self) -> StoreFuture<'_, Vec<CachedPolicy>>;
}

/// Entries in memory only (tests, or no `data_dir`).
#[derive(Debug, Default)]
pub struct MemoryStore {
    entries: Mutex<BTreeMap<String, CachedPolicy>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn entries(&self) -> MutexGuard<'_, BTreeMap<String, CachedPolicy>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl PolicyStore for MemoryStore {
    fn get<'a>(&'a self, domain: &'a str) -> StoreFuture<'a, Option<CachedPolicy>> {
        let entry = self.entries().get(domain).cloned();
        Box::pin(async move { Ok(entry) })
    }

    fn put(&self, entry: CachedPolicy) -> StoreFuture<'_, ()> {
        self.entries().insert(entry.domain.clone(), entry);
        Box::pin(async { Ok(()) })
    }

    fn remove<'a>(&'a self, domain: &'a str) -> StoreFuture<'a, ()> {
        self.entries().remove(domain);
        Box::pin(async { Ok(()) })
    }

    fn list(&self) -> StoreFuture<'_, Vec<CachedPolicy>> {
        let entries = self.entries().values().cloned().collect();
        Box::pin(async move { Ok(entries) })
    }
}

/// The file format.
#[derive(Serialize, Deserialize)]
struct CacheFile {
    version: u32,
    policies: Vec<CachedPolicy>,
}

const FILE_VERSION: u32 = 1;

/// Entries kept in memory and written to one JSON file after every change.
#[derive(Debug)]
pub struct JsonFileStore {
    path: PathBuf,
    entries: Mutex<BTreeMap<String, CachedPolicy>>,
    /// Held while a snapshot is taken and written, so the file always ends up with the
    /// newest state whatever order concurrent writers finish in.
    writer: tokio::sync::Mutex<()>,
}

impl JsonFileStore {
    /// Loads `path` (a missing file is an empty cache). An unreadable or corrupt file is
    /// an error: the caller decides whether to start empty.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let path = path.into();
        let entries = match std::fs::read(&path) {
            Ok(bytes) => {
                let file: CacheFile =
                    serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                if file.version != FILE_VERSION {
                    return Err(StoreError::Corrupt {
                        path,
                        reason: format!("unknown version {}", file.version),
                    });
                }
                file.policies
                    .into_iter()
                    .map(|entry| (entry.domain.clone(), entry))
                    .collect()
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
            Err(source) => return Err(StoreError::Io { path, source }),
        };
        Ok(JsonFileStore {
            path,
            entries: Mutex::new(entries),
            writer: tokio::sync::Mutex::new(()),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn entries(&self) -> MutexGuard<'_, BTreeMap<String, CachedPolicy>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes the current entries.
    async fn persist(&self) -> Result<(), StoreError> {
        let _writing = self.writer.lock().await;
        let file = CacheFile {
            version: FILE_VERSION,
            policies: self.entries().values().cloned().collect(),
        };
        let bytes = serde_json::to_vec_pretty(&file).map_err(|e| StoreError::Io {
            path: self.path.clone(),
            source: io::Error::other(e),
        })?;
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            write_atomic(&path, &bytes).map_err(|source| StoreError::Io { path, source })
        })
        .await
        .map_err(|e| StoreError::Io {
            path: self.path.clone(),
            source: io::Error::other(e),
        })?
    }
}

impl PolicyStore for JsonFileStore {
    fn get<'a>(&'a self, domain: &'a str) -> StoreFuture<'a, Option<CachedPolicy>> {
        let entry = self.entries().get(domain).cloned();
        Box::pin(async move { Ok(entry) })
    }

    fn put(&self, entry: CachedPolicy) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            self.entries().insert(entry.domain.clone(), entry);
            self.persist().await
        })
    }

    fn remove<'a>(&'a self, domain: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let removed = self.entries().remove(domain).is_some();
            if removed {
                self.persist().await?;
            }
            Ok(())
        })
    }

    fn list(&self) -> StoreFuture<'_, Vec<CachedPolicy>> {
        let entries = self.entries().values().cloned().collect();
        Box::pin(async move { Ok(entries) })
    }
}

/// Temp file in the same directory, fsync, rename over `path`, fsync the directory.
fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)?;
    let mut name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "cache path has no file name"))?
        .to_os_string();
    name.push(".tmp");
    let temp = dir.join(name);
    let result = (|| {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&temp, path)?;
        // The rename is durable only once the directory is synced.
        std::fs::File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mtasts::policy::{Mode, MxPattern};

    fn entry(domain: &str) -> CachedPolicy {
        CachedPolicy {
            domain: domain.into(),
            record_id: "abc".into(),
            policy: Some(Policy {
                mode: Mode::Enforce,
                mx: vec![MxPattern::Wildcard("example.com".into())],
                max_age: 86400,
            }),
            updated: 100,
            expires: 86500,
            last_use: 100,
            failures: 0,
            retry_after: 0,
        }
    }

    #[tokio::test]
    async fn mtasts_file_store_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("mtasts.json");
        let store = JsonFileStore::open(&path).unwrap();
        assert!(store.list().await.unwrap().is_empty());
        store.put(entry("example.com")).await.unwrap();
        let mut backoff = entry("down.example");
        backoff.policy = None;
        store.put(backoff.clone()).await.unwrap();
        assert!(!dir.path().join("sub").join("mtasts.json.tmp").exists());

        let reopened = JsonFileStore::open(&path).unwrap();
        assert_eq!(
            reopened.get("example.com").await.unwrap(),
            Some(entry("example.com"))
        );
        assert_eq!(reopened.get("down.example").await.unwrap(), Some(backoff));
        reopened.remove("down.example").await.unwrap();
        let again = JsonFileStore::open(&path).unwrap();
        assert_eq!(again.list().await.unwrap().len(), 1);
    }

    #[test]
    fn mtasts_file_store_rejects_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mtasts.json");
        std::fs::write(&path, "{not json").unwrap();
        let err = JsonFileStore::open(&path).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("mtasts.json"), "{err}");
        std::fs::write(&path, r#"{"version":9,"policies":[]}"#).unwrap();
        assert!(JsonFileStore::open(&path).is_err());
    }

    #[tokio::test]
    async fn mtasts_memory_store() {
        let store = MemoryStore::new();
        store.put(entry("a.example")).await.unwrap();
        assert!(store.get("a.example").await.unwrap().is_some());
        store.remove("a.example").await.unwrap();
        assert!(store.get("a.example").await.unwrap().is_none());
    }
}
