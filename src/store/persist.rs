//! The last good store snapshot on disk (`data_dir/store-snapshot.json`), so that a
//! gateway can start while Redis is down.
//!
//! Written after every snapshot the gateway accepted: to a temporary file (mode 0600:
//! it holds account verifiers), fsynced, renamed over the old one, and the directory
//! fsynced, so a crash leaves either the old or the new file, never a torn one.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::data::StoreData;
use super::StoreError;

/// The file name under `data_dir`.
pub const FILE_NAME: &str = "store-snapshot.json";

const FORMAT: u32 = 1;

/// The path of the persisted snapshot for a data dir.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE_NAME)
}

/// What the file holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Persisted {
    pub format: u32,
    /// The store version the data was loaded at.
    pub version: u64,
    /// When it was saved (milliseconds since the Unix epoch).
    pub saved_at_ms: i64,
    /// Where it came from (address without password, and key prefix).
    pub source: String,
    pub data: StoreData,
}

impl Persisted {
    pub fn new(version: u64, source: &str, data: StoreData) -> Persisted {
        Persisted {
            format: FORMAT,
            version,
            saved_at_ms: crate::model::now_ms(),
            source: source.to_string(),
            data,
        }
    }
}

fn io_err<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |e| StoreError::Io {
        what,
        path: path.to_path_buf(),
        source: e,
    }
}

/// Saves atomically (write temp, fsync, rename, fsync the directory).
pub fn save(data_dir: &Path, snapshot: &Persisted) -> Result<(), StoreError> {
    let target = path(data_dir);
    let tmp = data_dir.join(format!("{FILE_NAME}.tmp"));
    let bytes = serde_json::to_vec(snapshot).map_err(|e| StoreError::Persisted {
        path: target.clone(),
        message: e.to_string(),
    })?;
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options
        .open(&tmp)
        .map_err(io_err("creating the store snapshot", &tmp))?;
    f.write_all(&bytes)
        .and_then(|()| f.sync_all())
        .map_err(io_err("writing the store snapshot", &tmp))?;
    drop(f);
    std::fs::rename(&tmp, &target).map_err(io_err("renaming the store snapshot", &target))?;
    File::open(data_dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("syncing the data dir", data_dir))?;
    Ok(())
}

/// Reads the persisted snapshot; `Ok(None)` when there is none.
pub fn load(data_dir: &Path) -> Result<Option<Persisted>, StoreError> {
    let p = path(data_dir);
    let bytes = match std::fs::read(&p) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("reading the store snapshot", &p)(e)),
    };
    let snapshot: Persisted =
        serde_json::from_slice(&bytes).map_err(|e| StoreError::Persisted {
            path: p.clone(),
            message: e.to_string(),
        })?;
    if snapshot.format != FORMAT {
        return Err(StoreError::Persisted {
            path: p,
            message: format!("unknown format {}", snapshot.format),
        });
    }
    Ok(Some(snapshot))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::data::RouteSpec;

    #[test]
    fn save_then_load() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).unwrap().is_none());
        let mut data = StoreData::default();
        data.global.push(RouteSpec::default());
        save(dir.path(), &Persisted::new(7, "redis://h {p:}", data)).unwrap();
        let back = load(dir.path()).unwrap().unwrap();
        assert_eq!(back.version, 7);
        assert_eq!(back.data.global.len(), 1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path(dir.path()))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(path(dir.path()), b"{").unwrap();
        assert!(load(dir.path()).is_err());
    }
}
