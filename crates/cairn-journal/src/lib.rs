//! A segmented, append-only, checksummed write-ahead journal.
//!
//! * **Durable appends.** [`Journal::append`] returns only after the record is written and
//!   `fdatasync`ed. Concurrent appends are group-committed: a single writer thread takes every
//!   record queued since its last write, writes them with one `pwrite` and one `fdatasync`, then
//!   wakes all of their callers.
//! * **Bounded memory, back-pressure.** Queued bytes are capped ([`JournalOptions::max_pending_bytes`]);
//!   appenders block while the queue is full.
//! * **Fail-closed.** A failed write or sync fails every append of that batch with the I/O
//!   error; the partial batch is truncated away and the journal continues in a fresh segment,
//!   so it keeps working once space returns. A failed `fdatasync` is never retried and then
//!   acknowledged (fsyncgate).
//! * **Preallocated.** The active segment is filled with zeros ahead of its records, which
//!   overwrite them: a sync writes data without a file system journal commit for a new size.
//!   Readers stop at the durable end; a sealed segment is cut to its records.
//! * **Recovery.** On open every segment is checked. A torn tail is truncated: it was never
//!   acknowledged. That is a bad record in the newest segment with nothing valid after it,
//!   or with valid records after it that all belong to its own write: the first record of
//!   each write (group-commit batch) is marked, and only the last write can be unsynced at a
//!   crash (the disk may have kept any part of it, since it overwrites preallocated zeros).
//!   So are the whole records before it that belong to the same append batch: a batch (a
//!   request's event with the events it carries) is recovered whole or not at all. A bad
//!   record anywhere else is [`JournalError::Corrupt`]: reported, never skipped.
//! * **Consumers** keep durable cursors; a segment is deleted only once every registered
//!   consumer has passed it.
//!
//! Frame layout (little endian): `magic u32 | len u32 | seq u64 | crc32c u32 | payload`, the
//! CRC covering `len`, `seq` and the payload. The magic is `0xCA124A02` on the first record
//! of a write, `0xCA124A01` on the others (older journals have only the latter). The top bit
//! of `len` says more records of the same batch follow.

mod reader;
mod segment;

pub use reader::JournalReader;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

pub(crate) const MAGIC: u32 = 0xCA12_4A01;
/// The magic of the first frame of each write (group-commit batch): recovery tells the last
/// write, the only one a crash may leave unsynced, from the ones before it.
pub(crate) const MAGIC_WRITE: u32 = 0xCA12_4A02;
pub(crate) const HEADER: usize = 20;
/// Set in a frame's length field when more records of the same append batch follow it.
pub(crate) const MORE: u32 = 1 << 31;

/// A frame's payload length, without the batch flag.
pub(crate) fn frame_len(field: u32) -> usize {
    (field & !MORE) as usize
}
/// Largest payload accepted (CloudTrail events are at most 256 KB).
pub const MAX_RECORD_BYTES: usize = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal I/O error: {0}")]
    Io(#[from] io::Error),
    #[error("journal corrupt in {segment} at offset {offset}: {reason}")]
    Corrupt {
        segment: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("record of {0} bytes exceeds the {MAX_RECORD_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("journal is closed")]
    Closed,
    #[error("invalid consumer name {0:?}")]
    BadConsumer(String),
}

impl JournalError {
    fn clone_for_waiter(&self) -> JournalError {
        match self {
            JournalError::Io(e) => JournalError::Io(match e.raw_os_error() {
                Some(code) => io::Error::from_raw_os_error(code),
                None => io::Error::new(e.kind(), e.to_string()),
            }),
            JournalError::Corrupt {
                segment,
                offset,
                reason,
            } => JournalError::Corrupt {
                segment: segment.clone(),
                offset: *offset,
                reason: reason.clone(),
            },
            JournalError::TooLarge(n) => JournalError::TooLarge(*n),
            JournalError::Closed => JournalError::Closed,
            JournalError::BadConsumer(s) => JournalError::BadConsumer(s.clone()),
        }
    }
}

pub type Result<T> = std::result::Result<T, JournalError>;

/// Injects I/O failures into the writer, for tests of the fail-closed paths.
pub trait FaultInjector: Send + Sync {
    /// Called before each batch write; an error is treated as the write failing.
    fn before_write(&self, _bytes: usize) -> io::Result<()> {
        Ok(())
    }
    /// Called before each `fdatasync`; an error is treated as the sync failing.
    fn before_sync(&self) -> io::Result<()> {
        Ok(())
    }
}

#[derive(Clone)]
pub struct JournalOptions {
    /// A segment is closed once it holds this many bytes.
    pub segment_bytes: u64,
    /// Appenders block while this many bytes are queued and not yet durable.
    pub max_pending_bytes: usize,
    /// Group commit's pace when the process keeps the machine busy: after a batch of more
    /// than one append, the writer starts the next sync no sooner than this after that one
    /// started (or once [`LINGER_MAX_BYTES`] are queued), so that one sync carries the
    /// appends that arrive meanwhile. Each sync costs CPU whatever it carries (the block
    /// layer, the device's doorbell, waking its callers): when CPU is what runs out, fewer
    /// syncs serve more requests. Otherwise a sync starts as soon as anything is queued
    /// (the lowest latency). An append waits for the pace at most once, at most this long;
    /// one after a batch of a single append (a lone caller's) never does. Zero: never wait.
    pub sync_interval: std::time::Duration,
    /// The share of the machine's cores (`available_parallelism`) this process must have
    /// used since the writer last measured, at least [`BUSY_WINDOW`] before, for the pace
    /// to apply (0: always, e.g. in tests). On a machine with many more cores than cairn's
    /// threads can use, the pace never applies.
    pub busy_cpu_share: f64,
    pub faults: Option<Arc<dyn FaultInjector>>,
}

/// How often the writer measures the process's CPU use (see
/// [`JournalOptions::busy_cpu_share`]).
pub const BUSY_WINDOW: std::time::Duration = std::time::Duration::from_millis(20);

/// Queued bytes past which the writer stops waiting for [`JournalOptions::sync_interval`].
pub const LINGER_MAX_BYTES: usize = 256 << 10;

impl Default for JournalOptions {
    fn default() -> Self {
        JournalOptions {
            segment_bytes: 64 << 20,
            max_pending_bytes: 64 << 20,
            sync_interval: std::time::Duration::from_millis(1),
            busy_cpu_share: 0.5,
            faults: None,
        }
    }
}

/// What happened to one group-commit batch.
#[derive(Debug)]
enum BatchOutcome {
    Durable { first_seq: u64 },
    Failed(JournalError),
}

/// Where the callers of one batch wait for its outcome. Each batch has its own, so waking a
/// batch's callers never contends with the writer or with new appends.
#[derive(Default)]
struct BatchSlot {
    outcome: Mutex<Option<BatchOutcome>>,
    done: Condvar,
    /// Async appenders waiting on this batch ([`Append`]).
    wakers: Mutex<Vec<std::task::Waker>>,
}

impl BatchSlot {
    fn result(&self, outcome: &BatchOutcome, index: u64, n: u64) -> Result<std::ops::Range<u64>> {
        match outcome {
            BatchOutcome::Durable { first_seq } => Ok(first_seq + index..first_seq + index + n),
            BatchOutcome::Failed(e) => Err(e.clone_for_waiter()),
        }
    }
}

/// A queued append, resolved once its batch is durable (or failed). Returned by
/// [`Journal::try_append_async`]; lets an async server wait without holding an OS thread.
pub struct Append {
    slot: Arc<BatchSlot>,
    index: u64,
    n: u64,
}

impl std::future::Future for Append {
    type Output = Result<std::ops::Range<u64>>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let check = |slot: &BatchSlot| {
            let o = slot.outcome.lock().unwrap_or_else(|e| e.into_inner());
            o.as_ref().map(|o| slot.result(o, self.index, self.n))
        };
        if let Some(r) = check(&self.slot) {
            return std::task::Poll::Ready(r);
        }
        self.slot
            .wakers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(cx.waker().clone());
        // The writer may have finished between the check and the registration.
        match check(&self.slot) {
            Some(r) => std::task::Poll::Ready(r),
            None => std::task::Poll::Pending,
        }
    }
}

struct State {
    /// Framed records (seq and CRC not yet stamped) waiting for the writer.
    buf: Vec<u8>,
    offsets: Vec<usize>,
    /// The last batch's buffers, emptied, for the next batch (see [`SPARE_MAX`]).
    spare: Vec<u8>,
    spare_offsets: Vec<usize>,
    /// The slot of the batch being filled.
    filling: Arc<BatchSlot>,
    /// True while the writer sleeps waiting for work.
    writer_idle: bool,
    /// Appends (calls, not records) queued in the batch being filled.
    filling_appends: usize,
    /// True while the writer waits for the pace: an append that brings the queue to
    /// [`LINGER_MAX_BYTES`] wakes it.
    lingering: bool,
    pending_bytes: usize,
    /// Highest `pending_bytes` ever reached (the back-pressure bound is observable).
    peak_pending_bytes: usize,
    /// Next sequence number to assign; all below are durable.
    next_seq: u64,
    /// Records of the batch being written (taken out of `offsets`, not yet durable).
    writing: u64,
    segments: Vec<(u64, PathBuf)>,
    /// The active segment (its first seq) and where its durable records end. Its file runs
    /// on past that in preallocated zeros, which readers must not take for records.
    active_end: (u64, u64),
    closed: bool,
}

struct Shared {
    dir: PathBuf,
    opts: JournalOptions,
    state: Mutex<State>,
    wake_writer: Condvar,
    space: Condvar,
}

/// The journal. Cheap to share behind an `Arc`; `append` may be called from many threads.
pub struct Journal {
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic while holding the lock cannot leave State inconsistent in a way that matters
    // more than refusing service would, so recover the guard.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Journal {
    /// Opens (creating if needed) the journal in `dir`, recovering as described above.
    pub fn open(dir: impl AsRef<Path>, opts: JournalOptions) -> Result<Journal> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(dir.join("cursors"))?;
        let recovered = segment::recover(&dir)?;
        let mut segments = recovered.segments;
        let next_seq = recovered.next_seq;
        if segments.is_empty() {
            let path = segment::create(&dir, next_seq)?;
            segments.push((next_seq, path));
        }
        let (active_first, active_path) = segments.last().cloned().unwrap_or_default();
        let active = OpenOptions::new().write(true).open(&active_path)?;
        // Recovery leaves the active segment at its last whole batch: no zeros after it.
        let active_len = active.metadata()?.len();
        let shared = Arc::new(Shared {
            dir,
            opts,
            state: Mutex::new(State {
                buf: Vec::new(),
                offsets: Vec::new(),
                spare: Vec::new(),
                spare_offsets: Vec::new(),
                filling: Arc::new(BatchSlot::default()),
                writer_idle: false,
                filling_appends: 0,
                lingering: false,
                pending_bytes: 0,
                peak_pending_bytes: 0,
                next_seq,
                writing: 0,
                segments,
                active_end: (active_first, active_len),
                closed: false,
            }),
            wake_writer: Condvar::new(),
            space: Condvar::new(),
        });
        let s2 = shared.clone();
        let writer = std::thread::Builder::new()
            .name("journal-writer".into())
            .spawn(move || writer_loop(s2, active, active_len))?;
        Ok(Journal {
            shared,
            writer: Mutex::new(Some(writer)),
        })
    }

    /// Appends one record; returns its sequence number once it is durable.
    pub fn append(&self, payload: &[u8]) -> Result<u64> {
        self.append_batch(&[payload]).map(|r| r.start)
    }

    /// Appends several records atomically with respect to ordering (they get consecutive
    /// sequence numbers) and returns their range once all are durable.
    pub fn append_batch(&self, payloads: &[&[u8]]) -> Result<std::ops::Range<u64>> {
        let Some(pending) = self.enqueue(payloads, true)? else {
            return Err(JournalError::Closed);
        };
        let slot = pending.slot;
        let mut outcome = slot.outcome.lock().unwrap_or_else(|e| e.into_inner());
        while outcome.is_none() {
            outcome = slot.done.wait(outcome).unwrap_or_else(|e| e.into_inner());
        }
        match outcome.as_ref() {
            Some(o) => slot.result(o, pending.index, pending.n),
            None => Err(JournalError::Closed),
        }
    }

    /// Queues `payloads` without blocking and returns a future that resolves once they are
    /// durable, or `Ok(None)` when the queue is full (back-pressure: the caller should wait,
    /// e.g. with a blocking [`Journal::append_batch`] on a blocking thread).
    pub fn try_append_async(&self, payloads: &[&[u8]]) -> Result<Option<Append>> {
        self.enqueue(payloads, false)
    }

    fn enqueue(&self, payloads: &[&[u8]], wait_for_room: bool) -> Result<Option<Append>> {
        let bytes: usize = payloads.iter().map(|p| p.len() + HEADER).sum();
        if let Some(p) = payloads.iter().find(|p| p.len() > MAX_RECORD_BYTES) {
            return Err(JournalError::TooLarge(p.len()));
        }
        let sh = &self.shared;
        let mut st = lock(&sh.state);
        // Back-pressure: wait for room, unless the queue is empty (a huge batch still goes).
        while !st.closed
            && st.pending_bytes > 0
            && st.pending_bytes + bytes > sh.opts.max_pending_bytes
        {
            if !wait_for_room {
                return Ok(None);
            }
            st = sh.space.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        if st.closed {
            return Err(JournalError::Closed);
        }
        let slot = st.filling.clone();
        let index = st.offsets.len() as u64;
        for (i, p) in payloads.iter().enumerate() {
            let off = st.buf.len();
            st.offsets.push(off);
            st.buf.extend_from_slice(&MAGIC.to_le_bytes());
            // Every record of a batch but its last says more follow: recovery keeps a batch
            // whole or drops it whole.
            let more = if i + 1 < payloads.len() { MORE } else { 0 };
            st.buf
                .extend_from_slice(&((p.len() as u32) | more).to_le_bytes());
            st.buf.extend_from_slice(&[0u8; 12]);
            st.buf.extend_from_slice(p);
        }
        st.pending_bytes += bytes;
        st.filling_appends += 1;
        st.peak_pending_bytes = st.peak_pending_bytes.max(st.pending_bytes);
        if st.writer_idle {
            st.writer_idle = false;
            sh.wake_writer.notify_one();
        } else if st.lingering && st.buf.len() >= LINGER_MAX_BYTES {
            st.lingering = false;
            sh.wake_writer.notify_one();
        }
        drop(st);
        Ok(Some(Append {
            slot,
            index,
            n: payloads.len() as u64,
        }))
    }

    /// The sequence number the next durable record will get; every lower one is durable.
    pub fn next_seq(&self) -> u64 {
        lock(&self.shared.state).next_seq
    }

    /// The position after every record queued so far, durable or not: what
    /// [`Journal::next_seq`] reaches once they are (unless a batch of them fails).
    pub fn queued_end(&self) -> u64 {
        let st = lock(&self.shared.state);
        st.next_seq + st.writing + st.offsets.len() as u64
    }

    /// A reader positioned at `seq` (which may equal [`Journal::next_seq`]).
    pub fn reader(&self, seq: u64) -> Result<JournalReader> {
        JournalReader::new(self.shared.clone(), seq)
    }

    /// Registers a consumer (its cursor starts at the oldest record still held) if unknown,
    /// and returns its cursor.
    pub fn register_consumer(&self, name: &str) -> Result<u64> {
        if let Some(c) = self.cursor(name)? {
            return Ok(c);
        }
        let oldest = lock(&self.shared.state)
            .segments
            .first()
            .map(|s| s.0)
            .unwrap_or(0);
        self.commit_cursor(name, oldest)?;
        Ok(oldest)
    }

    /// A consumer's durable cursor: the next sequence number it needs.
    pub fn cursor(&self, name: &str) -> Result<Option<u64>> {
        let path = self.cursor_path(name)?;
        match fs::read(&path) {
            Ok(b) if b.len() == 12 => {
                let v = u64::from_le_bytes(b[0..8].try_into().unwrap_or_default());
                let crc = u32::from_le_bytes(b[8..12].try_into().unwrap_or_default());
                if crc32c::crc32c(&b[0..8]) != crc {
                    return Err(JournalError::Corrupt {
                        segment: path,
                        offset: 0,
                        reason: "cursor checksum mismatch".into(),
                    });
                }
                Ok(Some(v))
            }
            Ok(_) => Err(JournalError::Corrupt {
                segment: path,
                offset: 0,
                reason: "cursor file has the wrong length".into(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Durably moves a consumer's cursor, then deletes segments every consumer has passed.
    pub fn commit_cursor(&self, name: &str, seq: u64) -> Result<()> {
        let path = self.cursor_path(name)?;
        let mut b = seq.to_le_bytes().to_vec();
        b.extend_from_slice(&crc32c::crc32c(&b).to_le_bytes());
        let tmp = path.with_extension("tmp");
        {
            let mut f = File::create(&tmp)?;
            f.write_all(&b)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, &path)?;
        File::open(path.parent().unwrap_or(Path::new(".")))?.sync_all()?;
        self.remove_consumed_segments()
    }

    fn cursor_path(&self, name: &str) -> Result<PathBuf> {
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(JournalError::BadConsumer(name.into()));
        }
        Ok(self.shared.dir.join("cursors").join(name))
    }

    fn remove_consumed_segments(&self) -> Result<()> {
        let mut min: Option<u64> = None;
        for e in fs::read_dir(self.shared.dir.join("cursors"))? {
            let e = e?;
            let name = e.file_name().to_string_lossy().to_string();
            if name.ends_with(".tmp") {
                continue;
            }
            if let Some(c) = self.cursor(&name)? {
                min = Some(min.map_or(c, |m| m.min(c)));
            }
        }
        let Some(min) = min else { return Ok(()) };
        let doomed: Vec<PathBuf> = {
            let mut st = lock(&self.shared.state);
            let mut out = vec![];
            // Segment i holds [first_i, first_{i+1}); removable when first_{i+1} <= min.
            while st.segments.len() > 1 && st.segments[1].0 <= min {
                out.push(st.segments.remove(0).1);
            }
            out
        };
        for p in &doomed {
            fs::remove_file(p)?;
            tracing::debug!(segment = %p.display(), "removed consumed journal segment");
        }
        if !doomed.is_empty() {
            File::open(&self.shared.dir)?.sync_all()?;
        }
        Ok(())
    }

    /// Whether a cursor at `seq` would let the oldest segment go.
    pub fn would_free_segments(&self, seq: u64) -> bool {
        let st = lock(&self.shared.state);
        st.segments.len() > 1 && st.segments[1].0 <= seq
    }

    /// Bytes queued and not yet durable now.
    pub fn pending_bytes(&self) -> usize {
        lock(&self.shared.state).pending_bytes
    }

    /// The most bytes ever queued and not yet durable at once.
    pub fn peak_pending_bytes(&self) -> usize {
        lock(&self.shared.state).peak_pending_bytes
    }

    /// Number of segment files currently held.
    pub fn segment_count(&self) -> usize {
        lock(&self.shared.state).segments.len()
    }

    /// Stops the writer after it has finished every queued batch.
    pub fn close(&self) {
        lock(&self.shared.state).closed = true;
        self.shared.wake_writer.notify_all();
        self.shared.space.notify_all();
        if let Some(h) = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = h.join();
        }
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.close();
    }
}

/// Largest batch buffer kept for the next batch (a burst's larger one is freed).
const SPARE_MAX: usize = 4 << 20;

/// The active segment is filled with zeros this far ahead of its records (in steps of this
/// size). A batch then overwrites blocks the file already has, and its `fdatasync` writes
/// data only; appending grew the file at every batch, and each sync also committed the
/// file system's journal for the new size and blocks (measured here: ~25–35% of a sync's
/// time, ~20% of its CPU, before the file system journal thread's own share). 1 MiB: the
/// commit it still costs comes once a MiB (against about a thousand syncs a second under
/// load), while the zeros a running journal holds unused, and the fill one batch's sync
/// carries, stay small (4 MiB took a disk-reserve test's whole margin).
pub const PREALLOCATE: u64 = 1 << 20;

/// Fills `file` with zeros from `from` up to `to`.
fn zero_fill(file: &File, from: u64, to: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
    let mut at = from;
    while at < to {
        let n = (to - at).min(ZEROS.len() as u64) as usize;
        file.write_all_at(&ZEROS[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

/// Whether this process has used at least a share of the machine's cores, as measured over
/// the last [`BUSY_WINDOW`] (process CPU time against wall time).
struct Busy {
    threshold: f64,
    since: std::time::Instant,
    /// The process's CPU time at `since` (`None`: it could not be read).
    cpu_since: Option<std::time::Duration>,
    busy: bool,
}

impl Busy {
    fn new(share: f64) -> Busy {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        Busy {
            threshold: share * cores,
            since: std::time::Instant::now(),
            cpu_since: process_cpu(),
            busy: share <= 0.0,
        }
    }

    fn now(&mut self) -> bool {
        if self.threshold <= 0.0 {
            return true;
        }
        let wall = self.since.elapsed();
        if wall >= BUSY_WINDOW {
            let cpu = process_cpu();
            // A reading that failed (either end) says nothing: not busy.
            self.busy = match (self.cpu_since, cpu) {
                (Some(a), Some(b)) => {
                    b.saturating_sub(a).as_secs_f64() >= self.threshold * wall.as_secs_f64()
                }
                _ => false,
            };
            self.since = std::time::Instant::now();
            self.cpu_since = cpu;
        }
        self.busy
    }
}

/// CPU time this process has used, all threads (`None`: the clock could not be read).
fn process_cpu() -> Option<std::time::Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call's duration.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return None;
    }
    Some(std::time::Duration::new(
        ts.tv_sec.max(0) as u64,
        ts.tv_nsec.clamp(0, 999_999_999) as u32,
    ))
}

fn writer_loop(sh: Arc<Shared>, mut active: File, mut active_len: u64) {
    use std::os::unix::fs::FileExt;
    let mut active_first = lock(&sh.state).active_end.0;
    // How far the active segment's file runs (records, then zeros).
    let mut allocated = active_len;
    // When the last sync started, and how many appends its batch carried.
    let mut last_sync = std::time::Instant::now();
    let mut last_appends = 0usize;
    let mut busy = Busy::new(sh.opts.busy_cpu_share);
    loop {
        let (mut buf, mut offsets, slot, mut seq) = {
            let mut st = lock(&sh.state);
            while st.buf.is_empty() && !st.closed {
                st.writer_idle = true;
                st = sh.wake_writer.wait(st).unwrap_or_else(|e| e.into_inner());
            }
            st.writer_idle = false;
            // Others are appending too: let this batch gather until the pace allows a sync.
            // (Appenders wake a lingering writer only for a full queue: it sleeps the rest
            // out.)
            // (An interval past what an Instant can hold means no pace.)
            let due = last_sync.checked_add(sh.opts.sync_interval);
            if let Some(due) = due.filter(|_| last_appends > 1 && busy.now()) {
                while !st.closed && st.buf.len() < LINGER_MAX_BYTES {
                    let now = std::time::Instant::now();
                    if now >= due {
                        break;
                    }
                    st.lingering = true;
                    st = sh
                        .wake_writer
                        .wait_timeout(st, due - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                st.lingering = false;
            }
            last_appends = std::mem::take(&mut st.filling_appends);
            if st.buf.is_empty() && st.closed {
                return;
            }
            // The next batch fills the last one's buffers: no allocation, and no pages the
            // allocator gave back to be faulted in again at every batch.
            let spare = std::mem::take(&mut st.spare);
            let buf = std::mem::replace(&mut st.buf, spare);
            let spare = std::mem::take(&mut st.spare_offsets);
            let offsets = std::mem::replace(&mut st.offsets, spare);
            let slot = std::mem::replace(&mut st.filling, Arc::new(BatchSlot::default()));
            st.writing = offsets.len() as u64;
            (buf, offsets, slot, st.next_seq)
        };
        let first_seq = seq;
        if let Some(&off) = offsets.first() {
            buf[off..off + 4].copy_from_slice(&MAGIC_WRITE.to_le_bytes());
        }
        for &off in &offsets {
            let len = frame_len(u32::from_le_bytes(
                buf[off + 4..off + 8].try_into().unwrap_or_default(),
            ));
            buf[off + 8..off + 16].copy_from_slice(&seq.to_le_bytes());
            let mut crc = crc32c::crc32c(&buf[off + 4..off + 16]);
            crc = crc32c::crc32c_append(crc, &buf[off + HEADER..off + HEADER + len]);
            buf[off + 16..off + 20].copy_from_slice(&crc.to_le_bytes());
            seq += 1;
        }
        let n = offsets.len() as u64;
        let mut new_segment = None;
        let outcome = (|| -> Result<()> {
            if active_len > 0 && active_len + buf.len() as u64 > sh.opts.segment_bytes {
                // A sealed segment holds exactly its records: its zeros go first.
                active.set_len(active_len)?;
                active.sync_all()?;
                let path = segment::create(&sh.dir, first_seq)?;
                active = OpenOptions::new().write(true).open(&path)?;
                active_len = 0;
                allocated = 0;
                new_segment = Some((first_seq, path));
            }
            if let Some(f) = &sh.opts.faults {
                f.before_write(buf.len())?;
            }
            let end = active_len + buf.len() as u64;
            if end > allocated {
                // Never past the segment's size (it is closed there), and best effort: on a
                // full disk the zeros written are cut off again and the records go in as
                // appends, as before.
                let to =
                    (end.div_ceil(PREALLOCATE) * PREALLOCATE).min(end.max(sh.opts.segment_bytes));
                match zero_fill(&active, end, to) {
                    Ok(()) => allocated = to,
                    Err(_) => {
                        // Only zeros go: never below the records (`allocated` covers them).
                        let _ = active.set_len(allocated);
                    }
                }
            }
            active.write_all_at(&buf, active_len)?;
            if let Some(f) = &sh.opts.faults {
                f.before_sync()?;
            }
            last_sync = std::time::Instant::now();
            active.sync_data()?;
            Ok(())
        })();
        let outcome = match outcome {
            Ok(()) => {
                active_len += buf.len() as u64;
                // Records written where no zeros were (the fill failed) extend the file too.
                allocated = allocated.max(active_len);
                BatchOutcome::Durable { first_seq }
            }
            Err(e) => {
                tracing::error!(error = %e, "journal batch failed; its appends are refused");
                // Drop whatever part of the batch reached the file, then move to a fresh
                // segment so no later acknowledgement depends on pages a failed sync touched.
                let healed = active
                    .set_len(active_len)
                    .and_then(|_| active.sync_all())
                    .map_err(JournalError::from)
                    .and_then(|_| {
                        let path = segment::create(&sh.dir, first_seq)?;
                        let f = OpenOptions::new().write(true).open(&path)?;
                        Ok((f, path))
                    });
                match healed {
                    Ok((f, path)) => {
                        // An empty segment left behind by a failed roll is harmless; replace it.
                        if let Some((s, p)) = new_segment.take() {
                            if p != path {
                                let _ = fs::remove_file(&p);
                            }
                            let _ = s;
                        }
                        active = f;
                        active_len = 0;
                        allocated = 0;
                        new_segment = Some((first_seq, path));
                    }
                    Err(e2) => {
                        tracing::error!(error = %e2, "journal cannot recover from a failed write; closing");
                        lock(&sh.state).closed = true;
                    }
                }
                BatchOutcome::Failed(e)
            }
        };
        let mut st = lock(&sh.state);
        if let Some((s, p)) = new_segment {
            if st.segments.last().map(|x| x.0) == Some(s) {
                st.segments.pop();
            }
            st.segments.push((s, p));
            active_first = s;
        }
        // Readers see the new end no later than the records below it.
        st.active_end = (active_first, active_len);
        if matches!(outcome, BatchOutcome::Durable { .. }) {
            st.next_seq = first_seq + n;
        }
        st.writing = 0;
        st.pending_bytes = st.pending_bytes.saturating_sub(buf.len());
        if buf.capacity() <= SPARE_MAX {
            buf.clear();
            offsets.clear();
            st.spare = buf;
            st.spare_offsets = offsets;
        }
        drop(st);
        sh.space.notify_all();
        *slot.outcome.lock().unwrap_or_else(|e| e.into_inner()) = Some(outcome);
        slot.done.notify_all();
        for w in std::mem::take(&mut *slot.wakers.lock().unwrap_or_else(|e| e.into_inner())) {
            w.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_process_reads_busy_while_a_thread_spins() {
        // A quarter of the machine's cores: one spinning thread is more than that on up to
        // three cores; beyond, the threshold is scaled to one core's worth.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let mut b = Busy::new((0.25 * cores).min(0.5) / cores);
        assert!(!b.now(), "busy before any window was measured");
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let spin = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut x = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            })
        };
        std::thread::sleep(BUSY_WINDOW * 3);
        let busy = b.now();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        spin.join().unwrap();
        assert!(busy, "a spinning thread for 60 ms did not read as busy");
        assert!(process_cpu().is_some());
    }
}
