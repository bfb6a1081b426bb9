//! Reading the spool back: replay at start, and the offline `spool check` / `spool
//! salvage` tools.
//!
//! Replay applies every record in order (later records win). It never drops a record
//! that was acknowledged: a record that does not decode is accepted only
//! - at the tail of the newest segment, when no intact record follows it (the write
//!   that was in flight when the process died, never acknowledged), which is cut off;
//! - past the valid length that a seal gives for a segment abandoned after a write
//!   error (those bytes were never acknowledged either).
//!
//! Anywhere else the spool is damaged, and replay refuses with the segment and offset:
//! `spool check` reports every problem, `spool salvage` keeps every intact record.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use super::record::{self, DecodeStop, Decoded};
use super::{io_err, list_segments, segment_path, BodyRef, Recovered, SpoolError};
use crate::model::MsgId;

/// Bytes read from the head of each segment to find its seal records.
const SEAL_SCAN: u64 = 64 << 10;

/// What replay found.
pub(super) struct Replayed {
    pub messages: HashMap<MsgId, Recovered>,
    /// Every segment on disk, oldest first.
    pub segments: Vec<u64>,
}

/// Reads a whole segment into `buf` (reused from segment to segment).
fn read_into(path: &Path, buf: &mut Vec<u8>) -> Result<(), SpoolError> {
    buf.clear();
    File::open(path)
        .and_then(|mut f| f.read_to_end(buf))
        .map_err(io_err(path, "read"))?;
    Ok(())
}

/// One read buffer for every segment of a replay, at least a full segment large. Reusing
/// it avoids an allocation per segment, and its size (above the allocator's largest
/// dynamic mmap threshold, 32 MiB in glibc) keeps it out of the heap: a smaller,
/// short-lived buffer would leave the heap fragmented after replay and the gateway's
/// RSS a good deal above what its queue needs.
fn segment_buffer() -> Vec<u8> {
    Vec::with_capacity(super::SEGMENT_LIMIT as usize)
}

/// The seals written at the head of each segment: segment → valid length.
fn seals(dir: &Path, segments: &[u64]) -> Result<BTreeMap<u64, u64>, SpoolError> {
    let mut out: BTreeMap<u64, u64> = BTreeMap::new();
    for &n in segments {
        let path = segment_path(dir, n);
        let mut head = Vec::new();
        File::open(&path)
            .and_then(|f| f.take(SEAL_SCAN).read_to_end(&mut head))
            .map_err(io_err(&path, "read"))?;
        let mut pos = 0;
        while let Ok((Decoded::Seal(seal), len)) = record::decode(&head[pos..]) {
            if seal.segment < n {
                let v = out.entry(seal.segment).or_insert(seal.valid_len);
                *v = (*v).min(seal.valid_len);
            }
            pos += len;
        }
    }
    Ok(out)
}

/// The first offset after `from` where an intact record starts, if any.
fn next_intact(data: &[u8], from: usize) -> Option<usize> {
    (from + 1..data.len())
        .filter(|&p| data[p] == record::MAGIC)
        .find(|&p| record::decode(&data[p..]).is_ok())
}

fn stop_reason(stop: DecodeStop) -> String {
    match stop {
        DecodeStop::Incomplete => "incomplete record".to_string(),
        DecodeStop::Corrupt(why) => why,
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
        Decoded::Seal(_) => {}
    }
}

/// Replays the spool in `dir`, cutting the torn tail of the newest segment; refuses a
/// damaged spool with the segment and offset.
pub(super) fn replay(dir: &Path) -> Result<Replayed, SpoolError> {
    let segments = list_segments(dir)?;
    let seals = seals(dir, &segments)?;
    let newest = segments.last().copied();
    let mut messages: HashMap<MsgId, Recovered> = HashMap::new();
    let mut data = segment_buffer();
    for &n in &segments {
        let path = segment_path(dir, n);
        read_into(&path, &mut data)?;
        let sealed = seals.get(&n).copied();
        let limit = sealed.map_or(data.len(), |v| (v as usize).min(data.len()));
        let mut pos = 0usize;
        while pos < limit {
            match record::decode(&data[pos..limit]) {
                Ok((rec, len)) => {
                    apply(&mut messages, n, pos, rec);
                    pos += len;
                }
                Err(stop) => {
                    let reason = stop_reason(stop);
                    let torn_tail =
                        sealed.is_none() && Some(n) == newest && next_intact(&data, pos).is_none();
                    if !torn_tail {
                        return Err(SpoolError::Damaged {
                            path,
                            offset: pos as u64,
                            reason,
                        });
                    }
                    tracing::warn!(segment = %path.display(), offset = pos, reason = %reason,
                        "spool: cutting the unacknowledged tail");
                    let f = OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .map_err(io_err(&path, "open"))?;
                    f.set_len(pos as u64).map_err(io_err(&path, "truncate"))?;
                    f.sync_all().map_err(io_err(&path, "fsync"))?;
                    break;
                }
            }
        }
        if let Some(v) = sealed {
            if (data.len() as u64) < v {
                return Err(SpoolError::Damaged {
                    path,
                    offset: data.len() as u64,
                    reason: format!("segment is shorter than its sealed length {v}"),
                });
            }
        }
    }
    Ok(Replayed { messages, segments })
}

/// One finding of `spool check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub segment: u64,
    pub offset: u64,
    pub reason: String,
    /// `false` for what replay accepts (the newest segment's torn tail, a sealed
    /// segment's abandoned bytes); `true` for damage that stops the gateway.
    pub damage: bool,
}

/// What `spool check` or `spool salvage` found.
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    pub segments: usize,
    pub records: usize,
    /// Messages still queued (not removed) according to the intact records.
    pub messages: usize,
    pub findings: Vec<Finding>,
    /// Bytes skipped (damaged or unacknowledged).
    pub skipped_bytes: u64,
}

impl CheckReport {
    pub fn damaged(&self) -> bool {
        self.findings.iter().any(|f| f.damage)
    }
}

/// Every intact record of one segment as (offset, length), honouring its seal, and the
/// findings on the way.
fn scan_segment(
    n: u64,
    data: &[u8],
    sealed: Option<u64>,
    newest: bool,
    report: &mut CheckReport,
) -> Vec<(usize, usize)> {
    let limit = sealed.map_or(data.len(), |v| (v as usize).min(data.len()));
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos < limit {
        match record::decode(&data[pos..limit]) {
            Ok((_, len)) => {
                out.push((pos, len));
                pos += len;
            }
            Err(stop) => {
                let reason = stop_reason(stop);
                let next = next_intact(&data[..limit], pos);
                let damage = !(sealed.is_none() && newest && next.is_none());
                let resume = next.unwrap_or(limit);
                report.skipped_bytes += (resume - pos) as u64;
                report.findings.push(Finding {
                    segment: n,
                    offset: pos as u64,
                    reason: if damage {
                        reason
                    } else {
                        format!("{reason} (unacknowledged tail of the newest segment)")
                    },
                    damage,
                });
                pos = resume;
            }
        }
    }
    if let Some(v) = sealed {
        if (data.len() as u64) > v {
            report.skipped_bytes += data.len() as u64 - v;
            report.findings.push(Finding {
                segment: n,
                offset: v,
                reason: "bytes past the seal of a segment abandoned after a write error".into(),
                damage: false,
            });
        } else if (data.len() as u64) < v {
            report.findings.push(Finding {
                segment: n,
                offset: data.len() as u64,
                reason: format!("segment is shorter than its sealed length {v}"),
                damage: true,
            });
        }
    }
    out
}

/// Reads every segment and reports every problem; changes nothing.
pub fn check(dir: &Path) -> Result<CheckReport, SpoolError> {
    walk(dir, |_, _, _| Ok(()))
}

fn walk(
    dir: &Path,
    mut each: impl FnMut(u64, &[u8], &[(usize, usize)]) -> Result<(), SpoolError>,
) -> Result<CheckReport, SpoolError> {
    let segments = list_segments(dir)?;
    let seals = seals(dir, &segments)?;
    let newest = segments.last().copied();
    let mut report = CheckReport {
        segments: segments.len(),
        ..Default::default()
    };
    let mut messages: HashMap<MsgId, Recovered> = HashMap::new();
    let mut data = segment_buffer();
    for &n in &segments {
        read_into(&segment_path(dir, n), &mut data)?;
        let intact = scan_segment(
            n,
            &data,
            seals.get(&n).copied(),
            Some(n) == newest,
            &mut report,
        );
        report.records += intact.len();
        for &(pos, len) in &intact {
            if let Ok((rec, _)) = record::decode(&data[pos..pos + len]) {
                apply(&mut messages, n, pos, rec);
            }
        }
        each(n, &data, &intact)?;
    }
    report.messages = messages.len();
    Ok(report)
}

/// Rewrites every segment with only its intact, acknowledged records (seals are no
/// longer needed after that). The original segments are kept, moved to `backup`.
pub fn salvage(dir: &Path, backup: &Path) -> Result<CheckReport, SpoolError> {
    fs::create_dir_all(backup).map_err(io_err(backup, "create"))?;
    walk(dir, |n, data, intact| {
        let path = segment_path(dir, n);
        let tmp = path.with_extension("salvage.tmp");
        let write = || -> io::Result<()> {
            let mut f = OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .open(&tmp)?;
            for &(pos, len) in intact {
                if !matches!(
                    record::decode(&data[pos..pos + len]),
                    Ok((Decoded::Seal(_), _))
                ) {
                    f.write_all(&data[pos..pos + len])?;
                }
            }
            f.sync_all()
        };
        write().map_err(io_err(&tmp, "write salvaged segment"))?;
        let keep: PathBuf = backup.join(path.file_name().unwrap_or_default());
        fs::rename(&path, &keep).map_err(io_err(&path, "move to the backup"))?;
        fs::rename(&tmp, &path).map_err(io_err(&tmp, "rename"))?;
        Ok(())
    })
    .and_then(|report| {
        for d in [dir, backup] {
            File::open(d)
                .and_then(|f| f.sync_all())
                .map_err(io_err(d, "fsync directory"))?;
        }
        Ok(report)
    })
}
