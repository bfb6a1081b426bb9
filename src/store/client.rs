//! The store as the CLI sees it: read the current data, and change it safely.
//!
//! A change ([`Mutation`]) is applied to the data just loaded, the result is validated
//! as a whole, and only then are the changed keys written, by one script that checks
//! the version did not move meanwhile (optimistic concurrency; retried a few times),
//! bumps it and publishes it. With the file store, reading works and changes are
//! refused with a pointer to the file and SIGHUP.

use std::path::{Path, PathBuf};

use super::data::{Problem, StoreData};
use super::mutate::Mutation;
use super::raw::{diff, RawStore};
use super::redis::RedisStore;
use super::StoreError;
use crate::config::{Config, StoreKind};

/// How many times a change is recomputed when another writer got in first.
const WRITE_TRIES: u32 = 5;

/// A store opened from a config file.
pub enum StoreClient {
    /// Routes and transports of the config file itself.
    File {
        path: PathBuf,
        data: Box<StoreData>,
    },
    Redis(Box<RedisStore>),
}

/// The current content of a store.
pub struct Loaded {
    /// The Redis version counter; `None` for the file store.
    pub version: Option<u64>,
    pub data: StoreData,
    /// What validation says about it (empty when it is good).
    pub problems: Vec<Problem>,
    /// Entries that do not decode (left out of `data`), to show and remove.
    pub invalid: Vec<super::raw::Invalid>,
}

/// The result of a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// The version after the change (unchanged when nothing had to be written).
    pub version: u64,
    /// How many keys or fields were written.
    pub writes: usize,
}

impl StoreClient {
    /// Opens the store a config names (the Redis store is not contacted yet).
    pub fn open(config_path: &Path, config: &Config) -> Result<StoreClient, StoreError> {
        match config.store.kind {
            StoreKind::File => Ok(StoreClient::File {
                path: config_path.to_path_buf(),
                data: Box::new(StoreData::from_config(config, false).map_err(StoreError::Invalid)?),
            }),
            StoreKind::Redis => Ok(StoreClient::Redis(Box::new(RedisStore::open(
                &config.store,
                &config.tls,
            )?))),
        }
    }

    /// `file PATH` or `redis ADDRESS (prefix P)`, for messages.
    pub fn describe(&self) -> String {
        match self {
            StoreClient::File { path, .. } => format!("file {}", path.display()),
            StoreClient::Redis(r) => {
                format!("redis {} (key prefix {})", r.display(), r.keys().prefix())
            }
        }
    }

    /// Reads the current data. Bad JSON is an error; a validation failure is not (it
    /// is reported in [`Loaded::problems`], so `list` can show what is there).
    pub async fn load(&self) -> Result<Loaded, StoreError> {
        let (version, data, mut problems, invalid) = match self {
            StoreClient::File { data, .. } => (None, (**data).clone(), Vec::new(), Vec::new()),
            StoreClient::Redis(store) => {
                let mut conn = store.connect().await?;
                let raw = store.load(&mut conn).await?;
                // Whatever decodes, so that a bad entry can be listed and removed.
                let (data, problems, invalid) = raw.decode_lenient();
                (Some(raw.version), data, problems, invalid)
            }
        };
        if let Err(more) = data.validate() {
            problems.extend(more);
        }
        Ok(Loaded {
            version,
            data,
            problems,
            invalid,
        })
    }

    /// Applies a change: validate the whole result, write atomically, publish. A change
    /// may not add a problem to the store (`force`: write it anyway); removals work on
    /// the stored entries, so a store with entries that do not decode can be repaired.
    pub async fn apply(&self, change: &Mutation) -> Result<Written, StoreError> {
        self.apply_with(change, false).await
    }

    pub async fn apply_with(&self, change: &Mutation, force: bool) -> Result<Written, StoreError> {
        let store = match self {
            StoreClient::File { path, .. } => return Err(StoreError::ReadOnly(path.clone())),
            StoreClient::Redis(store) => store,
        };
        let mut conn = store.connect().await?;
        for _ in 0..WRITE_TRIES {
            let raw = store.load(&mut conn).await?;
            let new_raw = match change.raw_edit(&raw) {
                Some(edited) => edited.map_err(StoreError::Change)?,
                None => {
                    let current = if change.needs_current() {
                        raw.decode().map_err(StoreError::Invalid)?
                    } else {
                        StoreData::default()
                    };
                    RawStore::encode(&change.apply(&current).map_err(StoreError::Change)?)
                }
            };
            if !force {
                // Only problems the store already had may remain.
                let before: Vec<String> = problems_of(&raw).iter().map(|p| p.to_string()).collect();
                let new_problems: Vec<Problem> = problems_of(&new_raw)
                    .into_iter()
                    .filter(|p| !before.contains(&p.to_string()))
                    .collect();
                if !new_problems.is_empty() {
                    return Err(StoreError::Invalid(new_problems));
                }
            }
            let ops = diff(store.keys(), &raw, &new_raw);
            if ops.is_empty() {
                return Ok(Written {
                    version: raw.version,
                    writes: 0,
                });
            }
            if let Ok(version) = store.write(&mut conn, Some(raw.version), &ops).await? {
                return Ok(Written {
                    version,
                    writes: ops.len(),
                });
            }
        }
        Err(StoreError::Conflict(WRITE_TRIES))
    }
}

/// What a gateway would say about a stored form: entries that do not decode, then the
/// validation of what does.
fn problems_of(raw: &RawStore) -> Vec<Problem> {
    let (data, mut problems, _) = raw.decode_lenient();
    if let Err(more) = data.validate() {
        problems.extend(more);
    }
    problems
}
