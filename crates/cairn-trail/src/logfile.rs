//! Building one log file: `{"Records":[...]}`, compact, one gzip member, hashed uncompressed.
//!
//! Records are buffered uncompressed and compressed in one call when the file closes, so a
//! file rebuilt from the same records is byte-identical (same key, same bytes on retry) and
//! the files of one delivery epoch can be compressed on all cores at once. The buffer is
//! capped by the engine ([`crate::EngineOptions::max_file_bytes`]).
//!
//! A finished file hands its buffer back to a [`BufferPool`] for a later file: a buffer grown
//! afresh for every file was copied at each doubling and every page of it faulted in again
//! (the allocator returns freed pages to the system at once), which cost the delivery thread
//! about half its time under a backlog.

use sha2::{Digest as _, Sha256};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A buffer's first capacity when no kept one is free.
const FIRST_CAPACITY: usize = 256 << 10;

/// What delivery holds, and the uncompressed buffers of finished files kept for the next
/// files. `cap` bounds the whole: the open epoch's records, the compressing epoch's, and the
/// capacity kept (a buffer is kept only where it fits beside the other two), so keeping
/// buffers never lets delivery hold more than it could without them. The engine ages the
/// pool whenever an epoch closes (a buffer no epoch took while one was open is freed), and
/// it is emptied after a few seconds unused. An epoch's buffers come back while the next
/// one is open (compression runs beside it) and serve the one after.
pub struct BufferPool {
    cap: usize,
    inner: Mutex<Kept>,
    /// Uncompressed bytes of the open epoch's files (set by the engine).
    pub open: AtomicUsize,
    /// Uncompressed bytes of the epoch being compressed (set by the engine when it closes;
    /// each of its buffers moves from here to the pool as its file is finished).
    pub compressing: AtomicUsize,
}

#[derive(Default)]
struct Kept {
    /// Each buffer, and whether an epoch has closed since it was given.
    bufs: Vec<(Vec<u8>, bool)>,
    bytes: usize,
    last_used: Option<Instant>,
}

impl BufferPool {
    pub fn new(cap: usize) -> Arc<BufferPool> {
        Arc::new(BufferPool {
            cap,
            inner: Mutex::new(Kept::default()),
            open: AtomicUsize::new(0),
            compressing: AtomicUsize::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The largest kept buffer (empty), or a new one.
    fn take(&self) -> Vec<u8> {
        let mut k = self.lock();
        k.last_used = Some(Instant::now());
        let largest = (0..k.bufs.len()).max_by_key(|&i| k.bufs[i].0.capacity());
        match largest {
            Some(i) => {
                let (b, _) = k.bufs.swap_remove(i);
                k.bytes -= b.capacity();
                b
            }
            None => Vec::with_capacity(FIRST_CAPACITY),
        }
    }

    /// Takes back a finished file's buffer (its bytes leave the compressing epoch) and keeps
    /// it if it fits under the cap beside what delivery holds.
    fn give(&self, mut b: Vec<u8>) {
        let len = b.len();
        let _ = self
            .compressing
            .fetch_update(Relaxed, Relaxed, |c| Some(c.saturating_sub(len)));
        b.clear();
        let mut k = self.lock();
        k.last_used = Some(Instant::now());
        let held = self.open.load(Relaxed) + self.compressing.load(Relaxed);
        if held + k.bytes + b.capacity() <= self.cap {
            k.bytes += b.capacity();
            k.bufs.push((b, false));
        }
    }

    /// Frees every kept buffer when none was taken or given for `idle`.
    pub fn trim_idle(&self, idle: Duration) {
        let mut k = self.lock();
        if k.last_used.is_some_and(|t| t.elapsed() >= idle) {
            let old = std::mem::take(&mut *k);
            drop(k);
            // Unmapped outside the lock.
            drop(old);
        }
    }

    /// An epoch closed: frees the buffers kept since before the last one closed (no epoch
    /// took them), and marks the others.
    pub fn age(&self) {
        let mut k = self.lock();
        let (stale, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut k.bufs)
            .into_iter()
            .partition(|(_, old)| *old);
        k.bytes -= stale.iter().map(|(b, _)| b.capacity()).sum::<usize>();
        k.bufs = kept.into_iter().map(|(b, _)| (b, true)).collect();
        drop(k);
        // Unmapped outside the lock.
        drop(stale);
    }

    /// Capacity kept, in bytes.
    pub fn kept_bytes(&self) -> usize {
        self.lock().bytes
    }

    /// What delivery holds: the open and the compressing epochs' records and the capacity
    /// kept (at most `cap`, but for a file grown past it before it was given back).
    pub fn held_bytes(&self) -> usize {
        self.open.load(Relaxed) + self.compressing.load(Relaxed) + self.kept_bytes()
    }
}

pub struct LogFileBuilder {
    raw: Vec<u8>,
    pool: Option<Arc<BufferPool>>,
    level: u32,
    count: u64,
    pub oldest: i64,
    pub newest: i64,
}

/// A finished log file.
pub struct LogFile {
    pub gz: Vec<u8>,
    /// Lowercase hex SHA-256 of the uncompressed JSON.
    pub sha256: String,
    pub count: u64,
    pub oldest: i64,
    pub newest: i64,
}

const HEAD: &[u8] = b"{\"Records\":[";
const TAIL: &[u8] = b"]}";

impl LogFileBuilder {
    pub fn new(level: u32) -> LogFileBuilder {
        Self::with_buffer(level, Vec::with_capacity(FIRST_CAPACITY), None)
    }

    /// A builder on a buffer from `pool`, given back to it when the file is finished.
    pub fn pooled(level: u32, pool: &Arc<BufferPool>) -> LogFileBuilder {
        Self::with_buffer(level, pool.take(), Some(pool.clone()))
    }

    fn with_buffer(level: u32, mut raw: Vec<u8>, pool: Option<Arc<BufferPool>>) -> LogFileBuilder {
        raw.clear();
        raw.extend_from_slice(HEAD);
        LogFileBuilder {
            raw,
            pool,
            level,
            count: 0,
            oldest: i64::MAX,
            newest: i64::MIN,
        }
    }

    /// Adds one record (compact JSON) with its event time (epoch seconds).
    pub fn push(&mut self, json: &[u8], event_time: i64) {
        if self.count > 0 {
            self.raw.push(b',');
        }
        self.raw.extend_from_slice(json);
        self.count += 1;
        self.oldest = self.oldest.min(event_time);
        self.newest = self.newest.max(event_time);
    }

    /// Uncompressed bytes so far.
    pub fn raw_len(&self) -> usize {
        self.raw.len()
    }

    /// Compresses (one gzip member, mtime 0, no name: nothing varies between runs) and hashes.
    pub fn finish(mut self) -> LogFile {
        self.raw.extend_from_slice(TAIL);
        let sha256 = hex::encode(Sha256::digest(&self.raw));
        let gz = gzip(&self.raw, self.level);
        if let Some(pool) = self.pool.take() {
            pool.give(std::mem::take(&mut self.raw));
        }
        LogFile {
            gz,
            sha256,
            count: self.count,
            oldest: self.oldest,
            newest: self.newest,
        }
    }
}

/// One gzip member of `raw`, with libdeflate (one-shot: the whole buffer at once, which is
/// what makes it both fast and deterministic).
///
/// Each thread keeps its compressor (most of a megabyte of tables): made afresh for every
/// file, it was allocated, faulted in and handed back to the system again and again.
pub fn gzip(raw: &[u8], level: u32) -> Vec<u8> {
    thread_local! {
        static COMPRESSOR: std::cell::RefCell<Option<(u32, libdeflater::Compressor)>> =
            const { std::cell::RefCell::new(None) };
    }
    let level = level.clamp(0, 12);
    COMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        let c = match &mut *cell {
            Some((l, c)) if *l == level => c,
            slot => {
                let lvl = libdeflater::CompressionLvl::new(level as i32).unwrap_or_default();
                &mut slot.insert((level, libdeflater::Compressor::new(lvl))).1
            }
        };
        // Records compress ~10×: an output a quarter of the input's size is zeroed first, and
        // the worst-case bound (larger than the input) only when that is not enough.
        let mut out = vec![0u8; raw.len() / 4 + 4096];
        let n = match c.gzip_compress(raw, &mut out) {
            Ok(n) => n,
            Err(_) => {
                out = vec![0u8; c.gzip_compress_bound(raw.len())];
                // The bound guarantees room, so this cannot fail.
                c.gzip_compress(raw, &mut out).unwrap_or(0)
            }
        };
        out.truncate(n);
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_hash_matches_the_spec_vector() {
        let f = LogFileBuilder::new(6).finish();
        assert_eq!(
            f.sha256,
            "26a792db36a3afba23b1dd277fcc9f15a7313c4a92e4e4cc0494846af345ecff"
        );
        let mut out = Vec::new();
        let mut d = flate2::read::GzDecoder::new(&f.gz[..]);
        std::io::Read::read_to_end(&mut d, &mut out).unwrap();
        assert_eq!(out, b"{\"Records\":[]}");
    }

    #[test]
    fn same_events_give_the_same_bytes() {
        let build = || {
            let mut b = LogFileBuilder::new(6);
            for i in 0..1000 {
                b.push(
                    format!("{{\"eventID\":\"{i}\",\"pad\":\"{}\"}}", "x".repeat(i % 97))
                        .as_bytes(),
                    i as i64,
                );
            }
            b.finish()
        };
        let (a, b) = (build(), build());
        assert_eq!(a.gz, b.gz);
        // The thread's kept compressor, used at another level in between and on another
        // thread (a fresh one), gives the same bytes.
        let _ = gzip(b"{\"Records\":[]}", 9);
        assert_eq!(build().gz, a.gz);
        assert_eq!(std::thread::spawn(build).join().unwrap().gz, a.gz);
        assert_eq!(a.sha256, b.sha256);
        assert_eq!((a.oldest, a.newest, a.count), (0, 999, 1000));
    }

    #[test]
    fn output_is_a_single_gzip_member() {
        let mut b = LogFileBuilder::new(6);
        b.push(b"{\"a\":1}", 0);
        let f = b.finish();
        let mut cur = std::io::Cursor::new(&f.gz[..]);
        let mut out = vec![];
        std::io::Read::read_to_end(&mut flate2::bufread::GzDecoder::new(&mut cur), &mut out)
            .unwrap();
        assert_eq!(
            cur.position() as usize,
            f.gz.len(),
            "nothing after the first member"
        );
    }

    fn gunzip(gz: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(gz), &mut out).unwrap();
        out
    }

    #[test]
    fn a_kept_buffer_is_reused_and_gives_the_same_bytes() {
        let pool = BufferPool::new(64 << 20);
        let fill = |mut b: LogFileBuilder| {
            for i in 0..20_000 {
                b.push(format!("{{\"eventID\":\"{i}\"}}").as_bytes(), i);
            }
            b
        };
        let fresh = fill(LogFileBuilder::new(6)).finish();
        let first = fill(LogFileBuilder::pooled(6, &pool)).finish();
        let kept = pool.kept_bytes();
        assert!(kept > FIRST_CAPACITY, "the grown buffer is kept: {kept}");
        // The next file starts on it (no growth from the first capacity), empty.
        let b = LogFileBuilder::pooled(6, &pool);
        assert_eq!(b.raw.capacity(), kept);
        assert_eq!(pool.kept_bytes(), 0);
        let second = fill(b).finish();
        assert_eq!(first.gz, fresh.gz);
        assert_eq!(second.gz, fresh.gz);
        assert_eq!(second.sha256, fresh.sha256);
        // A shorter file in the longer one's buffer holds nothing of it.
        let mut short = LogFileBuilder::pooled(6, &pool);
        short.push(b"{\"eventID\":\"x\"}", 0);
        let short = short.finish();
        assert_eq!(gunzip(&short.gz), b"{\"Records\":[{\"eventID\":\"x\"}]}");
        let mut alone = LogFileBuilder::new(6);
        alone.push(b"{\"eventID\":\"x\"}", 0);
        assert_eq!(short.gz, alone.finish().gz);
    }

    #[test]
    fn the_pool_keeps_no_more_than_its_cap_and_frees_when_idle() {
        let pool = BufferPool::new(1 << 20);
        pool.give(Vec::with_capacity(2 << 20));
        assert_eq!(pool.kept_bytes(), 0, "larger than the cap: not kept");
        pool.give(Vec::with_capacity(600 << 10));
        pool.give(Vec::with_capacity(600 << 10));
        assert_eq!(
            pool.kept_bytes(),
            600 << 10,
            "the second would pass the cap"
        );
        pool.trim_idle(Duration::from_secs(60));
        assert_eq!(pool.kept_bytes(), 600 << 10, "used just now: kept");
        pool.trim_idle(Duration::ZERO);
        assert_eq!(pool.kept_bytes(), 0);
    }

    #[test]
    fn a_buffer_is_kept_only_beside_what_delivery_holds() {
        let pool = BufferPool::new(1 << 20);
        // An open epoch of 600 KiB: a 600 KiB buffer does not fit beside it.
        pool.open.store(600 << 10, Relaxed);
        pool.give(Vec::with_capacity(600 << 10));
        assert_eq!(pool.kept_bytes(), 0);
        // A compressing epoch's buffer moves its bytes from the epoch to the pool.
        pool.open.store(0, Relaxed);
        pool.compressing.store(700 << 10, Relaxed);
        let mut b = Vec::with_capacity(800 << 10);
        b.resize(700 << 10, 1);
        pool.give(b);
        assert_eq!(pool.compressing.load(Relaxed), 0);
        assert_eq!(pool.kept_bytes(), 800 << 10);
        assert_eq!(pool.held_bytes(), 800 << 10);
    }

    #[test]
    fn a_buffer_no_epoch_took_is_freed_at_the_second_close() {
        let pool = BufferPool::new(64 << 20);
        pool.give(Vec::with_capacity(1 << 20));
        pool.age();
        // Given while one epoch was open, kept for the next one.
        assert_eq!(pool.kept_bytes(), 1 << 20);
        pool.give(Vec::with_capacity(2 << 20));
        pool.age();
        assert_eq!(
            pool.kept_bytes(),
            2 << 20,
            "the first went at the second close"
        );
        // An old buffer is still handed out (largest first).
        assert_eq!(pool.take().capacity(), 2 << 20);
        pool.age();
        assert_eq!(pool.kept_bytes(), 0);
    }

    #[test]
    fn incompressible_records_still_compress_whole() {
        // Bytes that do not compress: the first output guess is too small, the bound is used.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let noise: String = (0..200_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                char::from(b'!' + (x % 90) as u8)
            })
            .filter(|c| *c != '"' && *c != '\\')
            .collect();
        let rec = format!("{{\"n\":\"{noise}\"}}");
        let mut b = LogFileBuilder::new(6);
        b.push(rec.as_bytes(), 0);
        let f = b.finish();
        let raw = format!("{{\"Records\":[{rec}]}}").into_bytes();
        assert!(f.gz.len() > raw.len() / 4 + 4096, "the fallback path ran");
        assert_eq!(gunzip(&f.gz), raw);
        // The same bytes as one call with room for the worst case.
        let mut c = libdeflater::Compressor::new(libdeflater::CompressionLvl::new(6).unwrap());
        let mut whole = vec![0u8; c.gzip_compress_bound(raw.len())];
        let n = c.gzip_compress(&raw, &mut whole).unwrap();
        assert_eq!(f.gz, whole[..n]);
    }
}
