use cairn_journal::*;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

fn read_all(j: &Journal, from: u64) -> Vec<(u64, Vec<u8>)> {
    let mut r = j.reader(from).unwrap();
    let mut out = vec![];
    while let Some(x) = r.next_record().unwrap() {
        out.push(x);
    }
    out
}

/// The journal's one segment file in `dir`.
fn only_segment(dir: &std::path::Path) -> std::path::PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "log"))
        .unwrap()
}

/// Opens and closes the journal in `dir`: recovery cuts the active segment back to its
/// records (the writer fills ahead with zeros), so a test sees the records alone.
fn settle(dir: &std::path::Path) {
    drop(Journal::open(dir, JournalOptions::default()).unwrap());
}

#[test]
fn appended_records_read_back_in_order_after_reopen() {
    let d = tempfile::tempdir().unwrap();
    {
        let j = Journal::open(d.path(), JournalOptions::default()).unwrap();
        for i in 0..100u32 {
            assert_eq!(j.append(format!("rec {i}").as_bytes()).unwrap(), i as u64);
        }
    }
    let j = Journal::open(d.path(), JournalOptions::default()).unwrap();
    let recs = read_all(&j, 0);
    assert_eq!(recs.len(), 100);
    assert_eq!(recs[42], (42, b"rec 42".to_vec()));
    assert_eq!(j.next_seq(), 100);
}

#[test]
fn concurrent_appends_share_fsyncs_and_get_unique_sequence_numbers() {
    let d = tempfile::tempdir().unwrap();
    let j = Arc::new(Journal::open(d.path(), JournalOptions::default()).unwrap());
    let syncs = Arc::new(AtomicUsize::new(0));
    struct Count(Arc<AtomicUsize>);
    impl FaultInjector for Count {
        fn before_sync(&self) -> io::Result<()> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }
    drop(j);
    let j = Arc::new(
        Journal::open(
            d.path(),
            JournalOptions {
                faults: Some(Arc::new(Count(syncs.clone()))),
                ..Default::default()
            },
        )
        .unwrap(),
    );
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let j = j.clone();
            std::thread::spawn(move || {
                (0..200)
                    .map(|i| j.append(format!("{t}:{i}").as_bytes()).unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut seqs: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    seqs.sort();
    assert_eq!(seqs, (0..3200).collect::<Vec<_>>());
    let n = syncs.load(Ordering::SeqCst);
    assert!(
        n < 3200,
        "group commit must share fsyncs: {n} syncs for 3200 appends"
    );
}

/// Eight threads, started together, append `each` records of `size` bytes each; returns
/// when all are durable.
fn eight_callers_append(j: &Arc<Journal>, size: usize, each: usize) {
    let start = Arc::new(std::sync::Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|k| {
            let (j, start) = (j.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                for i in 0..each {
                    let mut rec = format!("{k}:{i}:").into_bytes();
                    rec.resize(size, b'.');
                    j.append(&rec).unwrap();
                }
            })
        })
        .collect();
    for th in threads {
        th.join().unwrap();
    }
}

/// Records each batch: when its sync started and the bytes it wrote.
struct SyncLog(Syncs);
impl FaultInjector for SyncLog {
    fn before_write(&self, bytes: usize) -> io::Result<()> {
        self.0
            .lock()
            .unwrap()
            .push((std::time::Instant::now(), bytes));
        Ok(())
    }
    fn before_sync(&self) -> io::Result<()> {
        if let Some(last) = self.0.lock().unwrap().last_mut() {
            last.0 = std::time::Instant::now();
        }
        Ok(())
    }
}

/// The log of each batch's sync.
type Syncs = Arc<std::sync::Mutex<Vec<(std::time::Instant, usize)>>>;

/// A journal in `dir` paced at `interval` whether or not the process is busy (a test's
/// threads mostly wait), with its batches logged.
fn paced_and_logged(dir: &std::path::Path, interval: std::time::Duration) -> (Arc<Journal>, Syncs) {
    let log: Syncs = Default::default();
    let opts = JournalOptions {
        sync_interval: interval,
        busy_cpu_share: 0.0,
        faults: Some(Arc::new(SyncLog(log.clone()))),
        ..Default::default()
    };
    (Arc::new(Journal::open(dir, opts).unwrap()), log)
}

/// Counts the writer's syncs.
struct SyncCount(Arc<AtomicUsize>);
impl FaultInjector for SyncCount {
    fn before_sync(&self) -> io::Result<()> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[test]
fn concurrent_appends_are_synced_at_the_pace_and_a_lone_caller_never_waits_for_it() {
    // A lone caller: every batch is one append, so none waits for the pace (3 s here).
    let d = tempfile::tempdir().unwrap();
    let syncs = Arc::new(AtomicUsize::new(0));
    let opts = JournalOptions {
        sync_interval: std::time::Duration::from_secs(3),
        // Paced whether or not the process is busy (a test's threads mostly wait).
        busy_cpu_share: 0.0,
        faults: Some(Arc::new(SyncCount(syncs.clone()))),
        ..Default::default()
    };
    let j = Journal::open(d.path(), opts).unwrap();
    let t = std::time::Instant::now();
    for i in 0..4u32 {
        j.append(&i.to_le_bytes()).unwrap();
    }
    assert!(
        t.elapsed() < std::time::Duration::from_millis(2500),
        "four appends one after another took {:?}: a lone caller waited for the pace",
        t.elapsed()
    );
    assert_eq!(syncs.load(Ordering::SeqCst), 4);
    drop(j);

    // Eight callers at once, each append 100 bytes: after every batch of more than one
    // append, the next sync starts no sooner than 100 ms after that batch's did.
    let d = tempfile::tempdir().unwrap();
    let (j, log) = paced_and_logged(d.path(), std::time::Duration::from_millis(100));
    eight_callers_append(&j, 100, 10);
    let log = log.lock().unwrap().clone();
    let frame = 100 + 20;
    let mut paced = 0;
    for w in log.windows(2) {
        let ((t0, bytes), (t1, _)) = (w[0], w[1]);
        if bytes / frame > 1 {
            paced += 1;
            assert!(
                t1.duration_since(t0) >= std::time::Duration::from_millis(95),
                "a sync {:?} after one of {} appends: not paced at 100 ms",
                t1.duration_since(t0),
                bytes / frame
            );
        }
    }
    assert!(
        paced > 0,
        "no batch of more than one append: nothing was tested"
    );
    assert_eq!(log.iter().map(|(_, b)| b / frame).sum::<usize>(), 80);
    assert_eq!(read_all(&j, 0).len(), 80);
}

#[test]
fn a_full_queue_wakes_a_writer_lingering_for_the_pace() {
    // A pace of 3 s, always applied: after a batch of more than one append the writer
    // lingers, and only an append that fills the queue to LINGER_MAX_BYTES cuts that short.
    let d = tempfile::tempdir().unwrap();
    let (j, log) = paced_and_logged(d.path(), std::time::Duration::from_secs(3));
    // Eight callers at once until the last batch synced carried more than one append
    // (each round's first append usually syncs alone, the other seven queue behind it).
    let frame = 100 + 20;
    let mut rounds = 0;
    loop {
        rounds += 1;
        assert!(
            rounds <= 20,
            "no batch of more than one append in 20 rounds"
        );
        eight_callers_append(&j, 100, 1);
        if log
            .lock()
            .unwrap()
            .last()
            .is_some_and(|(_, b)| b / frame > 1)
        {
            break;
        }
    }
    // A small append now lingers for the pace; a large one arriving meanwhile fills the
    // queue and wakes the writer: both are synced long before the 3 s are out.
    let t = std::time::Instant::now();
    let small = {
        let j = j.clone();
        std::thread::spawn(move || {
            j.append(b"small").unwrap();
            t.elapsed()
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    j.append(&vec![b'L'; LINGER_MAX_BYTES]).unwrap();
    let large = t.elapsed();
    let small = small.join().unwrap();
    assert!(
        small >= std::time::Duration::from_millis(250),
        "the small append was synced after {small:?}: the writer did not linger, nothing was tested"
    );
    assert!(
        large < std::time::Duration::from_millis(2000) && small < large + std::time::Duration::from_millis(500),
        "synced after {small:?} (small) and {large:?} (large): the full queue did not wake the lingering writer"
    );
    let n = read_all(&j, 0).len();
    assert_eq!(n, 8 * rounds + 2);
}

#[test]
fn concurrent_appends_do_not_wait_for_the_pace_while_the_process_is_not_busy() {
    // Pacing only while the process uses 1000 times the machine's cores: never.
    let d = tempfile::tempdir().unwrap();
    let j = Arc::new(
        Journal::open(
            d.path(),
            JournalOptions {
                sync_interval: std::time::Duration::from_secs(3),
                busy_cpu_share: 1000.0,
                ..Default::default()
            },
        )
        .unwrap(),
    );
    let t = std::time::Instant::now();
    eight_callers_append(&j, 100, 10);
    assert!(
        t.elapsed() < std::time::Duration::from_millis(2500),
        "80 appends took {:?}: they waited for the pace of an idle process",
        t.elapsed()
    );
}

#[test]
fn torn_tail_is_truncated_and_acknowledged_records_survive() {
    let d = tempfile::tempdir().unwrap();
    {
        let j = Journal::open(d.path(), JournalOptions::default()).unwrap();
        for i in 0..10u32 {
            j.append(&i.to_le_bytes()).unwrap();
        }
    }
    settle(d.path());
    let seg = only_segment(d.path());
    // A half-written record at the end, as a crash mid-write leaves it.
    let mut data = std::fs::read(&seg).unwrap();
    let full = data.len();
    data.extend_from_slice(&0xCA12_4A01u32.to_le_bytes());
    data.extend_from_slice(&100u32.to_le_bytes());
    data.extend_from_slice(&[7u8; 30]);
    std::fs::write(&seg, &data).unwrap();
    let j = Journal::open(d.path(), JournalOptions::default()).unwrap();
    assert_eq!(read_all(&j, 0).len(), 10);
    assert_eq!(std::fs::metadata(&seg).unwrap().len() as usize, full);
    assert_eq!(j.append(b"after").unwrap(), 10);
}

#[test]
fn a_batch_cut_by_a_crash_is_dropped_whole() {
    let d = tempfile::tempdir().unwrap();
    {
        let j = Journal::open(d.path(), JournalOptions::default()).unwrap();
        j.append(b"alone").unwrap();
    }
    settle(d.path());
    let one = only_segment(d.path());
    let batch_at = std::fs::metadata(&one).unwrap().len() as usize;
    {
        let j = Journal::open(d.path(), JournalOptions::default()).unwrap();
        j.append_batch(&[b"first of three", b"second of three", b"third of three"])
            .unwrap();
    }
    settle(d.path());
    let whole = std::fs::read(&one).unwrap();
    // A crash after two whole records of the batch, or in its last one: the batch was never
    // acknowledged, and none of it may survive (a request's event without what it carries).
    for cut in [whole.len() - 5, batch_at + 2 * (20 + 15) + 1] {
        std::fs::write(&one, &whole[..cut]).unwrap();
        let j = Journal::open(d.path(), JournalOptions::default()).unwrap();
        assert_eq!(
            read_all(&j, 0),
            vec![(0, b"alone".to_vec())],
            "cut at {cut}"
        );
        assert_eq!(std::fs::metadata(&one).unwrap().len() as usize, batch_at);
        assert_eq!(j.append(b"next").unwrap(), 1);
    }
    // Written whole, it reads back whole.
    std::fs::write(&one, &whole).unwrap();
    let j = Journal::open(d.path(), JournalOptions::default()).unwrap();
    assert_eq!(read_all(&j, 0).len(), 4);
}

#[test]
fn corruption_in_the_middle_is_reported_not_skipped() {
    let d = tempfile::tempdir().unwrap();
    {
        let j = Journal::open(d.path(), JournalOptions::default()).unwrap();
        for i in 0..10u32 {
            j.append(format!("record number {i}").as_bytes()).unwrap();
        }
    }
    let seg = only_segment(d.path());
    let mut data = std::fs::read(&seg).unwrap();
    data[20 + 3] ^= 0xff; // inside record 0's payload
    std::fs::write(&seg, &data).unwrap();
    match Journal::open(d.path(), JournalOptions::default()) {
        Err(JournalError::Corrupt { offset, reason, .. }) => {
            assert_eq!(offset, 0);
            assert!(reason.contains("checksum"), "{reason}");
        }
        Ok(_) => panic!("mid-log corruption must not open"),
        Err(e) => panic!("wrong error {e}"),
    }
}

#[test]
fn corrupt_last_record_of_older_segment_is_reported() {
    let d = tempfile::tempdir().unwrap();
    {
        let j = Journal::open(
            d.path(),
            JournalOptions {
                segment_bytes: 200,
                ..Default::default()
            },
        )
        .unwrap();
        for i in 0..20u32 {
            j.append(format!("record number {i}").as_bytes()).unwrap();
        }
        assert!(j.segment_count() > 2);
    }
    let mut segs: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    segs.sort();
    let mut data = std::fs::read(&segs[0]).unwrap();
    let n = data.len();
    data[n - 1] ^= 1;
    std::fs::write(&segs[0], &data).unwrap();
    assert!(matches!(
        Journal::open(d.path(), JournalOptions::default()),
        Err(JournalError::Corrupt { .. })
    ));
}

#[test]
fn segments_are_removed_only_after_every_consumer_passed_them() {
    let d = tempfile::tempdir().unwrap();
    let j = Journal::open(
        d.path(),
        JournalOptions {
            segment_bytes: 256,
            ..Default::default()
        },
    )
    .unwrap();
    j.register_consumer("a").unwrap();
    j.register_consumer("b").unwrap();
    for i in 0..50u32 {
        j.append(format!("record number {i:04}").as_bytes())
            .unwrap();
    }
    let before = j.segment_count();
    assert!(before > 3);
    j.commit_cursor("a", 50).unwrap();
    assert_eq!(j.segment_count(), before, "b has not moved: nothing may go");
    j.commit_cursor("b", 30).unwrap();
    let after = j.segment_count();
    assert!(after < before);
    // Everything b still needs is readable.
    let recs = read_all(&j, 30);
    assert_eq!(recs.len(), 20);
    assert_eq!(recs[0].0, 30);
    drop(j);
    let j = Journal::open(d.path(), JournalOptions::default()).unwrap();
    assert_eq!(j.cursor("b").unwrap(), Some(30));
    assert_eq!(read_all(&j, 30).len(), 20);
}

struct FailSyncs(AtomicUsize);
impl FaultInjector for FailSyncs {
    fn before_sync(&self) -> io::Result<()> {
        if self.0.load(Ordering::SeqCst) > 0 {
            self.0.fetch_sub(1, Ordering::SeqCst);
            return Err(io::Error::other("injected EIO"));
        }
        Ok(())
    }
}

#[test]
fn fsync_failure_fails_the_append_and_the_journal_recovers() {
    let d = tempfile::tempdir().unwrap();
    let faults = Arc::new(FailSyncs(AtomicUsize::new(0)));
    let j = Journal::open(
        d.path(),
        JournalOptions {
            faults: Some(faults.clone()),
            ..Default::default()
        },
    )
    .unwrap();
    j.append(b"one").unwrap();
    faults.0.store(2, Ordering::SeqCst);
    assert!(matches!(j.append(b"lost-a"), Err(JournalError::Io(_))));
    assert!(matches!(j.append(b"lost-b"), Err(JournalError::Io(_))));
    assert_eq!(j.append(b"two").unwrap(), 1);
    drop(j);
    let j = Journal::open(d.path(), JournalOptions::default()).unwrap();
    let recs: Vec<Vec<u8>> = read_all(&j, 0).into_iter().map(|r| r.1).collect();
    assert_eq!(
        recs,
        vec![b"one".to_vec(), b"two".to_vec()],
        "failed appends must not appear"
    );
}

/// Slows every write so appenders pile up behind the writer.
struct SlowWriter;
impl FaultInjector for SlowWriter {
    fn before_write(&self, _bytes: usize) -> io::Result<()> {
        std::thread::sleep(std::time::Duration::from_millis(2));
        Ok(())
    }
}

#[test]
fn back_pressure_bounds_pending_bytes() {
    let d = tempfile::tempdir().unwrap();
    let max = 4096;
    let j = Arc::new(
        Journal::open(
            d.path(),
            JournalOptions {
                max_pending_bytes: max,
                faults: Some(Arc::new(SlowWriter)),
                ..Default::default()
            },
        )
        .unwrap(),
    );
    // 8 appenders of 1,020-byte frames would queue 8,160 bytes behind a slow writer without
    // back-pressure.
    let payload = vec![1u8; 1000];
    let hs: Vec<_> = (0..8)
        .map(|_| {
            let j = j.clone();
            let p = payload.clone();
            std::thread::spawn(move || {
                for _ in 0..25 {
                    j.append(&p).unwrap();
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    assert_eq!(j.next_seq(), 200);
    let peak = j.peak_pending_bytes();
    assert!(
        peak >= 2 * 1020,
        "appenders never queued together ({peak} bytes): the test proves nothing"
    );
    assert!(
        peak <= max,
        "{peak} bytes queued, above the {max}-byte bound"
    );
}

#[test]
fn oversized_records_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let j = Journal::open(d.path(), JournalOptions::default()).unwrap();
    assert!(matches!(
        j.append(&vec![0u8; MAX_RECORD_BYTES + 1]),
        Err(JournalError::TooLarge(_))
    ));
}

#[test]
fn async_appends_resolve_once_durable_with_their_own_sequence_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path(), JournalOptions::default()).unwrap();
    let futs: Vec<_> = (0..100u32)
        .map(|i| {
            let p = i.to_le_bytes();
            j.try_append_async(&[&p[..]])
                .unwrap()
                .expect("queue has room")
        })
        .collect();
    let seqs: Vec<u64> = futures::executor::block_on(futures::future::join_all(futs))
        .into_iter()
        .map(|r| r.unwrap().start)
        .collect();
    assert_eq!(seqs, (0..100).collect::<Vec<_>>());
    let back = read_all(&j, 0);
    for (i, (seq, payload)) in back.iter().enumerate() {
        assert_eq!(*seq, i as u64);
        assert_eq!(payload, &(i as u32).to_le_bytes().to_vec());
    }
}

#[test]
fn async_append_reports_full_queue_instead_of_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(
        dir.path(),
        JournalOptions {
            max_pending_bytes: 64,
            ..JournalOptions::default()
        },
    )
    .unwrap();
    // Fill the queue faster than the writer can drain it; at some point try_append_async must
    // say "full" rather than block or exceed the bound.
    let mut saw_full = false;
    let mut futs = Vec::new();
    for _ in 0..10_000 {
        match j.try_append_async(&[&[7u8; 40][..]]).unwrap() {
            Some(f) => futs.push(f),
            None => {
                saw_full = true;
                break;
            }
        }
    }
    assert!(
        saw_full,
        "a 64-byte bound must refuse a burst of 60-byte records"
    );
    assert!(j.peak_pending_bytes() <= 64 + 60);
    for r in futures::executor::block_on(futures::future::join_all(futs)) {
        r.unwrap();
    }
}

/// Holds the writer before its sync until released, and says when it got there.
struct Gate {
    state: std::sync::Mutex<(bool, bool)>,
    cv: std::sync::Condvar,
}
impl Gate {
    fn open(&self) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).1 = true;
        self.cv.notify_all();
    }
}
/// Opens the gate when dropped, so a failed assertion does not leave the writer held (and
/// the journal's drop waiting for it).
struct OpenOnDrop(Arc<Gate>);
impl Drop for OpenOnDrop {
    fn drop(&mut self) {
        self.0.open();
    }
}
impl FaultInjector for Gate {
    fn before_sync(&self) -> io::Result<()> {
        let mut st = self.state.lock().unwrap();
        st.0 = true;
        self.cv.notify_all();
        while !st.1 {
            st = self.cv.wait(st).unwrap();
        }
        Ok(())
    }
}

/// `queued_end` counts every record queued, the batch being written included: what a reader
/// that must see everything recorded so far (LookupEvents) waits for.
#[test]
fn queued_end_counts_the_batch_being_written_and_the_queue_behind_it() {
    let d = tempfile::tempdir().unwrap();
    let gate = Arc::new(Gate {
        state: std::sync::Mutex::new((false, false)),
        cv: std::sync::Condvar::new(),
    });
    let j = Journal::open(
        d.path(),
        JournalOptions {
            faults: Some(gate.clone()),
            ..Default::default()
        },
    )
    .unwrap();
    let _open = OpenOnDrop(gate.clone());
    let first = j.try_append_async(&[b"one", b"two"]).unwrap().unwrap();
    {
        let mut st = gate.state.lock().unwrap();
        while !st.0 {
            st = gate.cv.wait(st).unwrap();
        }
    }
    // The writer holds the first batch (taken from the queue, not durable).
    assert_eq!(j.next_seq(), 0);
    assert_eq!(j.queued_end(), 2);
    let second = j.try_append_async(&[b"three"]).unwrap().unwrap();
    assert_eq!(j.queued_end(), 3);
    gate.open();
    assert_eq!(futures::executor::block_on(first).unwrap(), 0..2);
    assert_eq!(futures::executor::block_on(second).unwrap(), 2..3);
    assert_eq!(j.next_seq(), 3);
    assert_eq!(j.queued_end(), 3);
}

fn kilobyte_record(i: u32) -> Vec<u8> {
    format!("{{\"record\":{i},\"pad\":\"{}\"}}", "x".repeat(1000)).into_bytes()
}

#[test]
fn the_active_segment_is_filled_ahead_and_readers_never_take_its_zeros_for_records() {
    let d = tempfile::tempdir().unwrap();
    let j = Arc::new(Journal::open(d.path(), JournalOptions::default()).unwrap());
    // A reader that follows the writer: its read-ahead must stop where durable records end.
    let follower = {
        let j = j.clone();
        std::thread::spawn(move || {
            let mut r = j.reader(0).unwrap();
            let mut got = 0u32;
            while got < 300 {
                match r.next_record().unwrap() {
                    Some((seq, p)) => {
                        assert_eq!(seq, got as u64);
                        assert_eq!(p, kilobyte_record(got));
                        got += 1;
                    }
                    None => std::thread::yield_now(),
                }
            }
        })
    };
    for i in 0..300u32 {
        j.append(&kilobyte_record(i)).unwrap();
    }
    follower.join().unwrap();
    let seg = only_segment(d.path());
    let len = std::fs::metadata(&seg).unwrap().len();
    assert_eq!(len, PREALLOCATE, "zeros ahead of the records");
    drop(j);
    // Reopened: every record, and the file cut back to them (the zeros were never written).
    let j = Journal::open(d.path(), JournalOptions::default()).unwrap();
    assert_eq!(read_all(&j, 0).len(), 300);
    assert!(std::fs::metadata(&seg).unwrap().len() < len);
    assert_eq!(j.append(b"next").unwrap(), 300);
}

/// Appends `singles` records of about a kilobyte one by one (a write each), then `batch` more
/// in one write, and returns the segment's bytes (records, then the zeros the writer filled
/// ahead) and where each record starts.
fn kilobyte_log(
    dir: &std::path::Path,
    singles: u32,
    batch: u32,
) -> (std::path::PathBuf, Vec<u8>, Vec<usize>) {
    let mut starts = vec![];
    let mut at = 0;
    {
        let j = Journal::open(dir, JournalOptions::default()).unwrap();
        for i in 0..singles + batch {
            starts.push(at);
            at += 20 + kilobyte_record(i).len();
            if i < singles {
                j.append(&kilobyte_record(i)).unwrap();
            }
        }
        let rest: Vec<Vec<u8>> = (singles..singles + batch).map(kilobyte_record).collect();
        let refs: Vec<&[u8]> = rest.iter().map(|r| r.as_slice()).collect();
        if !refs.is_empty() {
            j.append_batch(&refs).unwrap();
        }
    }
    let seg = only_segment(dir);
    let data = std::fs::read(&seg).unwrap();
    (seg, data, starts)
}

#[test]
fn a_write_torn_over_preallocated_zeros_is_a_torn_tail() {
    let d = tempfile::tempdir().unwrap();
    let (seg, mut data, starts) = kilobyte_log(d.path(), 250, 50);
    // A crash kept one sector of the last write from disk; sectors after it got there.
    let hole = (starts[262] + 600).div_ceil(512) * 512;
    data[hole..hole + 512].fill(0);
    std::fs::write(&seg, &data).unwrap();
    let j = Journal::open(d.path(), JournalOptions::default()).unwrap();
    // That write was never acknowledged: all of it goes, everything before it stays.
    let recs = read_all(&j, 0);
    assert_eq!(recs.len(), 250);
    assert_eq!(recs[249].1, kilobyte_record(249));
    assert_eq!(j.append(b"next").unwrap(), 250);
}

#[test]
fn a_segment_first_write_torn_at_its_first_record_is_a_torn_tail() {
    // Its first record's header lost, or only its payload: either way the write it starts
    // was never acknowledged.
    for hole in [0usize, 512] {
        let d = tempfile::tempdir().unwrap();
        let (seg, mut data, _) = kilobyte_log(d.path(), 0, 50);
        data[hole..hole + 512].fill(0);
        std::fs::write(&seg, &data).unwrap();
        let j = Journal::open(d.path(), JournalOptions::default()).unwrap();
        assert!(read_all(&j, 0).is_empty(), "hole at {hole}");
        assert_eq!(j.append(b"next").unwrap(), 0);
    }
}

/// A [`kilobyte_log`] changed by `damage` does not open: it is reported as corruption.
fn opens_corrupt(singles: u32, batch: u32, damage: impl FnOnce(&mut Vec<u8>, &[usize])) {
    let d = tempfile::tempdir().unwrap();
    let (seg, mut data, starts) = kilobyte_log(d.path(), singles, batch);
    damage(&mut data, &starts);
    std::fs::write(&seg, &data).unwrap();
    assert!(matches!(
        Journal::open(d.path(), JournalOptions::default()),
        Err(JournalError::Corrupt { .. })
    ));
}

#[test]
fn damage_under_records_synced_since_is_corruption() {
    // Zeros, as a lost sector leaves, under a record with later writes after it: that record
    // was synced before them, so it was acknowledged.
    opens_corrupt(300, 0, |data, starts| {
        let hole = (starts[280] + 600).div_ceil(512) * 512;
        data[hole..hole + 512].fill(0);
    });
    // A changed byte in the length of a record near the end (pointing it into the zeros
    // after the records): corruption too.
    opens_corrupt(300, 0, |data, starts| data[starts[298] + 6] ^= 0x10);
    // A segment from before writes were marked: damage with anything valid after it is
    // corruption, as it always was.
    opens_corrupt(0, 300, |data, starts| {
        for &s in starts {
            data[s..s + 4].copy_from_slice(&0xCA12_4A01u32.to_le_bytes());
        }
        let hole = (starts[280] + 600).div_ceil(512) * 512;
        data[hole..hole + 512].fill(0);
    });
}
