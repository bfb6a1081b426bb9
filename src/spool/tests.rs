//! Spool tests: replay, bookkeeping, and every write failure through the fault-injecting
//! file layer (a full disk, a quota, descriptor limits, a dying device, a failed
//! directory fsync). Each message body carries its own id, so a body that lands on the
//! wrong message shows.

use std::io::Write;
use std::time::{Duration, Instant};

use super::fs::{Fault, FaultFs, FaultOp};
use super::*;
use record::RecipientUpdate;

const ENOSPC: i32 = 28;
const EDQUOT: i32 = 122;
const EMFILE: i32 = 24;
const ENFILE: i32 = 23;
const EIO: i32 = 5;

fn msg(id: MsgId) -> StoredMessage {
    StoredMessage::sample(id)
}

/// A body that names its message, padded to `len` bytes.
fn body(id: MsgId, len: usize) -> Vec<u8> {
    let mut b = format!("Message-Id: <{id}@test>\r\n\r\nbody of {id}\r\n").into_bytes();
    b.resize(len.max(b.len()), b'x');
    b
}

fn open_fault(dir: &Path, fs: &FaultFs) -> (Spool, Vec<Recovered>) {
    let (spool, rec) = Spool::open_with(dir, Arc::new(fs.clone())).unwrap();
    (spool, sorted(rec))
}

/// The recovered messages in id order.
fn sorted(rec: RecoveredMessages) -> Vec<Recovered> {
    let mut v: Vec<Recovered> = rec.into_values().collect();
    v.sort_by_key(|r| r.message.id);
    v
}

/// Opens the real spool in `dir`, recovered messages in id order.
fn open(dir: &Path) -> (Spool, Vec<Recovered>) {
    let (spool, rec) = Spool::open(dir).unwrap();
    (spool, sorted(rec))
}

/// Reopens the spool (a restart) and checks that exactly `ids` are there, each with its
/// own body.
async fn assert_recovers(dir: &Path, ids: &[MsgId], len: usize) {
    let (spool, rec) = open(dir);
    let got: Vec<MsgId> = rec.iter().map(|r| r.message.id).collect();
    assert_eq!(got, ids, "messages after restart");
    for r in &rec {
        assert_eq!(
            spool.read_body(r.body).await.unwrap(),
            body(r.message.id, len),
            "body of {}",
            r.message.id
        );
    }
    spool.close();
}

fn poll(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn replay_applies_updates_and_removals() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (spool, rec) = open(dir.path());
        assert!(rec.is_empty());
        let b1 = spool.add_message(&msg(1), b"body one", None).await.unwrap();
        let b2 = spool.add_message(&msg(2), b"body two", None).await.unwrap();
        let mut r = msg(1).rcpts[0].clone();
        r.attempts = 3;
        spool
            .write(vec![record::encode_recipient(&RecipientUpdate {
                id: 1,
                index: 0,
                rcpt: r,
            })])
            .await
            .unwrap();
        spool.remove(2, b2, Vec::new());
        assert_eq!(spool.read_body(b1).await.unwrap(), b"body one");
        spool.close();
    }
    let (spool, rec) = open(dir.path());
    assert_eq!(rec.len(), 1);
    assert_eq!(rec[0].message.rcpts[0].attempts, 3);
    assert_eq!(spool.read_body(rec[0].body).await.unwrap(), b"body one");
}

#[tokio::test]
async fn torn_tail_is_cut_and_earlier_records_survive() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (spool, _) = open(dir.path());
        spool.add_message(&msg(1), b"kept", None).await.unwrap();
        spool.close();
    }
    let seg = *list_segments(dir.path()).unwrap().last().unwrap();
    let path = segment_path(dir.path(), seg);
    let half = record::encode_message(&msg(2), b"torn").unwrap();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    f.write_all(&half.bytes[..half.bytes.len() / 2]).unwrap();
    drop(f);
    let (_spool, rec) = open(dir.path());
    assert_eq!(rec.len(), 1);
    assert_eq!(rec[0].message.id, 1);
    let len = std::fs::metadata(&path).unwrap().len() as usize;
    assert_eq!(
        len,
        record::encode_message(&msg(1), b"kept")
            .unwrap()
            .bytes
            .len(),
        "tail cut"
    );
}

#[tokio::test]
async fn dead_segments_are_collected_in_order() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (spool, _) = open(dir.path());
        spool.add_message(&msg(1), b"x", None).await.unwrap();
        spool.close();
    }
    // Second run: message 1 lives in segment 1, segment 2 is current.
    let (spool, rec) = open(dir.path());
    // Segment 1 is blocked by its one message, but with only two segments it is not
    // worth relocating.
    assert_eq!(spool.collect(), None);
    assert_eq!(list_segments(dir.path()).unwrap(), vec![1, 2]);
    spool.remove(1, rec[0].body, Vec::new());
    spool.write(Vec::new()).await.unwrap();
    assert_eq!(spool.collect(), None);
    assert_eq!(list_segments(dir.path()).unwrap(), vec![2]);
}

#[tokio::test]
async fn bookkeeping_follows_add_remove_and_relocation() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = open(dir.path());
    let b1 = spool
        .add_message(&msg(1), &body(1, 100), None)
        .await
        .unwrap();
    let b2 = spool
        .add_message(&msg(2), &body(2, 100), None)
        .await
        .unwrap();
    assert_eq!(spool.live_counts().get(&b1.segment), Some(&2));
    let moved = spool.relocate(&msg(1), &body(1, 100)).await.unwrap();
    assert_eq!(
        spool.live_counts().get(&b1.segment),
        Some(&2),
        "not live before commit"
    );
    spool.commit_relocation(b1, moved);
    spool.remove(2, b2, Vec::new());
    spool.write(Vec::new()).await.unwrap();
    let counts = spool.live_counts();
    assert_eq!(counts.values().sum::<usize>(), 1);
    assert_eq!(spool.read_body(moved).await.unwrap(), body(1, 100));
    spool.close();
    assert_recovers(dir.path(), &[1], 100).await;
}

/// A write that fails part-way (the disk fills in the middle of a record): the writer
/// cuts the segment back, answers an error, and moves to a new segment. Later messages
/// keep their own bodies, before and after a restart; the refused one is absent.
#[tokio::test]
async fn failed_write_cuts_back_and_rolls() {
    for errno in [ENOSPC, EDQUOT, EIO] {
        let dir = tempfile::tempdir().unwrap();
        let fs = FaultFs::new();
        let (spool, _) = open_fault(dir.path(), &fs);
        spool
            .add_message(&msg(1), &body(1, 3000), None)
            .await
            .unwrap();
        let seg_before = spool.current_segment();
        fs.fail_once(Fault::torn_write(errno, 1500));
        let err = spool.add_message(&msg(2), &body(2, 3000), None).await;
        assert!(err.is_err(), "errno {errno}: the torn write is refused");
        assert!(
            spool.health().degraded.is_some(),
            "degraded after a failure"
        );
        let c = spool
            .add_message(&msg(3), &body(3, 3000), None)
            .await
            .unwrap();
        let d = spool
            .add_message(&msg(4), &body(4, 3000), None)
            .await
            .unwrap();
        assert!(
            c.segment > seg_before,
            "no record follows the failure in its segment"
        );
        assert_eq!(spool.read_body(c).await.unwrap(), body(3, 3000));
        assert_eq!(spool.read_body(d).await.unwrap(), body(4, 3000));
        assert_eq!(spool.health(), SpoolHealth::default(), "healthy again");
        spool.close();
        // The abandoned segment was cut back to its last complete record.
        let len = std::fs::metadata(segment_path(dir.path(), seg_before))
            .unwrap()
            .len();
        assert_eq!(
            len,
            record::encode_message(&msg(1), &body(1, 3000))
                .unwrap()
                .bytes
                .len() as u64
        );
        assert_recovers(dir.path(), &[1, 3, 4], 3000).await;
    }
}

/// The flush fails after the whole record was written: it is cut back, so the message
/// that got an error never comes back at replay.
#[tokio::test]
async fn failed_fsync_leaves_no_refused_message() {
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultFs::new();
    let (spool, _) = open_fault(dir.path(), &fs);
    spool
        .add_message(&msg(1), &body(1, 500), None)
        .await
        .unwrap();
    fs.fail_once(Fault::new(FaultOp::SyncData, EIO));
    assert!(spool
        .add_message(&msg(2), &body(2, 500), None)
        .await
        .is_err());
    spool
        .add_message(&msg(3), &body(3, 500), None)
        .await
        .unwrap();
    spool.close();
    assert_recovers(dir.path(), &[1, 3], 500).await;
}

/// The failed segment cannot even be cut back (the device errors on truncate too): the
/// next segment starts with a seal, and replay ignores everything past it, including a
/// complete record of the refused batch.
#[tokio::test]
async fn uncuttable_segment_is_sealed() {
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultFs::new();
    let (spool, _) = open_fault(dir.path(), &fs);
    spool
        .add_message(&msg(1), &body(1, 800), None)
        .await
        .unwrap();
    let sealed = spool.current_segment();
    // Message 2's record is written whole, then the flush fails and so does the cut.
    fs.fail_once(Fault::new(FaultOp::SyncData, EIO));
    fs.fail_once(Fault::new(FaultOp::Truncate, EIO));
    assert!(spool
        .add_message(&msg(2), &body(2, 800), None)
        .await
        .is_err());
    let c = spool
        .add_message(&msg(3), &body(3, 800), None)
        .await
        .unwrap();
    assert!(c.segment > sealed);
    spool.close();
    // The junk is still in the abandoned segment, and it is not the newest.
    let rec1 = record::encode_message(&msg(1), &body(1, 800))
        .unwrap()
        .bytes
        .len() as u64;
    assert!(
        std::fs::metadata(segment_path(dir.path(), sealed))
            .unwrap()
            .len()
            > rec1
    );
    assert_recovers(dir.path(), &[1, 3], 800).await;
    let report = replay::check(dir.path()).unwrap();
    assert!(!report.damaged(), "{report:?}");
    assert!(report
        .findings
        .iter()
        .any(|f| f.segment == sealed && f.offset == rec1 && !f.damage));
}

/// No new segment can be made (no inodes, no descriptors): every write gets an error
/// (never a false success), health says why, and once the cause is gone the timer and the
/// next submission bring the spool back.
#[tokio::test]
async fn cannot_roll_degrades_until_it_can() {
    for errno in [ENOSPC, EMFILE, ENFILE] {
        let dir = tempfile::tempdir().unwrap();
        let fs = FaultFs::new();
        let (spool, _) = open_fault(dir.path(), &fs);
        spool
            .add_message(&msg(1), &body(1, 100), None)
            .await
            .unwrap();
        fs.fail_always(Fault::new(FaultOp::Create, errno));
        fs.fail_once(Fault::torn_write(errno, 10));
        assert!(spool
            .add_message(&msg(2), &body(2, 100), None)
            .await
            .is_err());
        for id in 3..6 {
            let e = spool.add_message(&msg(id), &body(id, 100), None).await;
            assert!(
                matches!(e, Err(SpoolError::Write(WriteError::NoSegment { .. }))),
                "{e:?}"
            );
        }
        let h = spool.health();
        assert!(
            h.degraded
                .as_deref()
                .unwrap()
                .contains("no writable segment"),
            "{h:?}"
        );
        assert!(h.since_ms.is_some());
        // Each refused submission retried the roll.
        let creates = fs
            .seen()
            .iter()
            .filter(|op| **op == FaultOp::Create)
            .count();
        assert!(creates >= 4, "roll retried per submission: {creates}");
        fs.heal();
        // The writer's timer starts a segment without any submission.
        poll("the timer to start a segment", || {
            spool.health().degraded.is_none()
        });
        spool
            .add_message(&msg(6), &body(6, 100), None)
            .await
            .unwrap();
        spool.close();
        assert_recovers(dir.path(), &[1, 6], 100).await;
    }
}

/// The directory fsync after creating a segment fails: that segment is not used (its
/// entry might not survive a crash), the write gets an error, and a later roll works.
#[tokio::test]
async fn failed_directory_fsync_abandons_the_new_segment() {
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultFs::new();
    let (spool, _) = open_fault(dir.path(), &fs);
    spool
        .add_message(&msg(1), &body(1, 100), None)
        .await
        .unwrap();
    fs.fail_once(Fault::torn_write(ENOSPC, 0));
    fs.fail_once(Fault::new(FaultOp::SyncDir, EIO));
    assert!(spool
        .add_message(&msg(2), &body(2, 100), None)
        .await
        .is_err());
    let c = spool
        .add_message(&msg(3), &body(3, 100), None)
        .await
        .unwrap();
    assert_eq!(spool.read_body(c).await.unwrap(), body(3, 100));
    spool.close();
    assert_recovers(dir.path(), &[1, 3], 100).await;
}

/// Failing writes must not leave a trail of empty segments behind.
#[tokio::test]
async fn repeated_failures_do_not_pile_up_segments() {
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultFs::new();
    let (spool, _) = open_fault(dir.path(), &fs);
    fs.fail_always(Fault::torn_write(ENOSPC, 7));
    for id in 1..30 {
        assert!(spool
            .add_message(&msg(id), &body(id, 100), None)
            .await
            .is_err());
    }
    fs.heal();
    spool
        .add_message(&msg(30), &body(30, 100), None)
        .await
        .unwrap();
    spool.close();
    let n = list_segments(dir.path()).unwrap().len();
    assert!(n <= 2, "{n} segments left");
    assert_recovers(dir.path(), &[30], 100).await;
}

fn corrupt(path: &Path, offset: u64) {
    let mut data = std::fs::read(path).unwrap();
    data[offset as usize] ^= 0xff;
    std::fs::write(path, data).unwrap();
}

/// Damage in the middle of an older segment stops the start with the segment and
/// offset; `salvage` then keeps every intact record and the spool opens.
#[tokio::test]
async fn damage_in_an_older_segment_refuses_start_and_salvage_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("spool");
    let rec_len = record::encode_message(&msg(1), &body(1, 200))
        .unwrap()
        .bytes
        .len() as u64;
    {
        let (spool, _) = open(&spool_dir);
        for id in 1..=5 {
            spool
                .add_message(&msg(id), &body(id, 200), None)
                .await
                .unwrap();
        }
        spool.close();
    }
    {
        // A second run, so the damaged segment is not the newest.
        let (spool, _) = open(&spool_dir);
        spool
            .add_message(&msg(6), &body(6, 200), None)
            .await
            .unwrap();
        spool.close();
    }
    let first = list_segments(&spool_dir).unwrap()[0];
    let path = segment_path(&spool_dir, first);
    // Inside message 3's body.
    corrupt(&path, 2 * rec_len + rec_len - 20);
    let err = Spool::open(&spool_dir).err().expect("start refused");
    let text = err.to_string();
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(text.contains(&format!("offset {}", 2 * rec_len)), "{text}");
    assert!(text.contains("spool salvage"), "{text}");
    let report = replay::check(&spool_dir).unwrap();
    assert!(report.damaged());
    assert_eq!(report.findings.len(), 1, "{report:?}");
    assert_eq!(report.findings[0].offset, 2 * rec_len);
    let backup = dir.path().join("spool-backup");
    let salvaged = replay::salvage(&spool_dir, &backup).unwrap();
    assert_eq!(salvaged.messages, 5);
    assert!(backup.join(path.file_name().unwrap()).exists());
    assert_recovers(&spool_dir, &[1, 2, 4, 5, 6], 200).await;
}

/// Damage in the middle of the newest segment, with acknowledged records after it, is
/// not a torn tail.
#[tokio::test]
async fn damage_before_intact_records_of_the_newest_segment_refuses_start() {
    let dir = tempfile::tempdir().unwrap();
    let rec_len = record::encode_message(&msg(1), &body(1, 200))
        .unwrap()
        .bytes
        .len() as u64;
    {
        let (spool, _) = open(dir.path());
        for id in 1..=3 {
            spool
                .add_message(&msg(id), &body(id, 200), None)
                .await
                .unwrap();
        }
        spool.close();
    }
    let seg = *list_segments(dir.path()).unwrap().last().unwrap();
    // The writer started an empty segment after the three records; remove it so the
    // damaged one is the newest.
    let newest = segment_path(dir.path(), seg);
    if std::fs::metadata(&newest).unwrap().len() == 0 {
        std::fs::remove_file(&newest).unwrap();
    }
    let seg = *list_segments(dir.path()).unwrap().last().unwrap();
    corrupt(&segment_path(dir.path(), seg), rec_len + 3);
    let err = Spool::open(dir.path()).err().expect("start refused");
    assert!(
        err.to_string().contains(&format!("offset {rec_len}")),
        "{err}"
    );
}

#[test]
fn message_over_the_limit_is_an_error_not_a_cut() {
    let big = vec![0u8; record::MAX_PAYLOAD];
    assert!(matches!(
        record::encode_message(&msg(1), &big),
        Err(record::RecordError::TooLarge { .. })
    ));
}

/// A backlog that is still live is not rewritten over and over: only a segment with
/// little left alive (under a quarter of a segment) is offered for relocation.
#[tokio::test]
async fn only_a_mostly_dead_segment_is_relocated() {
    let dir = tempfile::tempdir().unwrap();
    let mb = 1 << 20;
    let mut refs = Vec::new();
    {
        let (spool, _) = open(dir.path());
        for id in 1..=20 {
            refs.push(
                spool
                    .add_message(&msg(id), &body(id, mb), None)
                    .await
                    .unwrap(),
            );
        }
        spool.close();
    }
    for run in 0..2 {
        let (spool, _) = open(dir.path());
        spool
            .add_message(&msg(100 + run), &body(100 + run, 10), None)
            .await
            .unwrap();
        spool.close();
    }
    let (spool, rec) = open(dir.path());
    assert!(spool.segment_count() >= 3);
    assert_eq!(spool.collect(), None, "20 MiB still live: left alone");
    for r in rec.iter().filter(|r| r.message.id <= 10) {
        spool.remove(r.message.id, r.body, Vec::new());
    }
    assert_eq!(
        spool.collect(),
        Some(refs[0].segment),
        "10 MiB live: relocate"
    );
}

/// A restart never deletes the previous run's newest segment: with no live body in it, it
/// may still hold the removal of a message stored in an older one.
#[tokio::test]
async fn removals_in_a_segment_without_bodies_survive_restarts() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (spool, _) = open(dir.path());
        spool
            .add_message(&msg(1), &body(1, 100), None)
            .await
            .unwrap();
        spool.close();
    }
    {
        let (spool, rec) = open(dir.path());
        assert_eq!(rec.len(), 1);
        spool.remove(1, rec[0].body, Vec::new());
        spool.write(Vec::new()).await.unwrap();
        spool.close();
    }
    for run in 0..3 {
        let (spool, rec) = open(dir.path());
        assert!(rec.is_empty(), "run {run}: a removed message came back");
        spool.close();
    }
}
