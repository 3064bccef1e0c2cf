//! Building one log file: `{"Records":[...]}`, compact, one gzip member, hashed uncompressed.

use flate2::write::GzEncoder;
use flate2::{Compression, GzBuilder};
use sha2::{Digest as _, Sha256};
use std::io::Write;

/// A log file being filled. The exact sequence of writes is part of the contract: rebuilding
/// a file from the same events must give the same bytes (same key, same bytes on retry).
pub struct LogFileBuilder {
    gz: GzEncoder<Vec<u8>>,
    sha: Sha256,
    count: u64,
    raw_len: u64,
    pub oldest: i64,
    pub newest: i64,
}

/// A finished log file.
pub struct LogFile {
    pub gz: Vec<u8>,
    /// Lowercase hex SHA-256 of the uncompressed JSON.
    pub sha256: String,
    pub count: u64,
    pub raw_len: u64,
    pub oldest: i64,
    pub newest: i64,
}

const HEAD: &[u8] = b"{\"Records\":[";
const TAIL: &[u8] = b"]}";

impl LogFileBuilder {
    pub fn new(level: u32) -> LogFileBuilder {
        // mtime 0 and no file name: the gzip header carries nothing that varies between runs.
        let gz = GzBuilder::new()
            .mtime(0)
            .write(Vec::with_capacity(64 << 10), Compression::new(level));
        let mut b = LogFileBuilder {
            gz,
            sha: Sha256::new(),
            count: 0,
            raw_len: 0,
            oldest: i64::MAX,
            newest: i64::MIN,
        };
        b.write(HEAD);
        b
    }

    fn write(&mut self, bytes: &[u8]) {
        // Writing into a Vec cannot fail.
        let _ = self.gz.write_all(bytes);
        self.sha.update(bytes);
        self.raw_len += bytes.len() as u64;
    }

    /// Adds one record (compact JSON) with its event time (epoch seconds).
    pub fn push(&mut self, json: &[u8], event_time: i64) {
        if self.count > 0 {
            self.write(b",");
        }
        self.write(json);
        self.count += 1;
        self.oldest = self.oldest.min(event_time);
        self.newest = self.newest.max(event_time);
    }

    /// Compressed bytes produced so far (a lower bound of the final size).
    pub fn compressed_len(&self) -> usize {
        self.gz.get_ref().len()
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn finish(mut self) -> LogFile {
        self.write(TAIL);
        let gz = self.gz.finish().unwrap_or_default();
        LogFile {
            gz,
            sha256: hex::encode(self.sha.finalize()),
            count: self.count,
            raw_len: self.raw_len,
            oldest: self.oldest,
            newest: self.newest,
        }
    }
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
        assert_eq!(a.sha256, b.sha256);
        assert_eq!((a.oldest, a.newest, a.count), (0, 999, 1000));
    }
}
