//! Building one log file: `{"Records":[...]}`, compact, one gzip member, hashed uncompressed.
//!
//! Records are buffered uncompressed and compressed in one call when the file closes, so a
//! file rebuilt from the same records is byte-identical (same key, same bytes on retry) and
//! the files of one delivery epoch can be compressed on all cores at once. The buffer is
//! capped by the engine ([`crate::EngineOptions::max_file_bytes`]).

use sha2::{Digest as _, Sha256};

pub struct LogFileBuilder {
    raw: Vec<u8>,
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
        let mut raw = Vec::with_capacity(256 << 10);
        raw.extend_from_slice(HEAD);
        LogFileBuilder {
            raw,
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
        let mut out = vec![0u8; c.gzip_compress_bound(raw.len())];
        // The bound guarantees room, so this cannot fail.
        let n = c.gzip_compress(raw, &mut out).unwrap_or(0);
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
}
