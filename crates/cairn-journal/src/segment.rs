//! Segment files: naming, creation, and recovery scanning.

use crate::{frame_len, JournalError, Result, HEADER, MAGIC, MAGIC_WRITE, MAX_RECORD_BYTES, MORE};
use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};

pub(crate) fn name(first_seq: u64) -> String {
    format!("seg-{first_seq:020}.log")
}

pub(crate) fn parse_name(name: &str) -> Option<u64> {
    name.strip_prefix("seg-")?
        .strip_suffix(".log")?
        .parse()
        .ok()
}

/// Creates an empty segment whose first record will be `first_seq`, durably.
pub(crate) fn create(dir: &Path, first_seq: u64) -> Result<PathBuf> {
    let path = dir.join(name(first_seq));
    let f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&path)?;
    f.sync_all()?;
    File::open(dir)?.sync_all()?;
    Ok(path)
}

pub(crate) struct Recovered {
    pub segments: Vec<(u64, PathBuf)>,
    pub next_seq: u64,
}

/// Why a frame at some offset is not a valid record.
pub(crate) enum FrameCheck {
    /// `more`: further records of the same append batch follow this one; `write`: the first
    /// record of a write (group-commit batch).
    Ok {
        len: usize,
        more: bool,
        write: bool,
    },
    Bad(String),
}

/// Checks the frame at `off` in `data`, expecting sequence `expect` (or any when `None`).
pub(crate) fn check_frame(data: &[u8], off: usize, expect: Option<u64>) -> FrameCheck {
    if data.len() - off < HEADER {
        return FrameCheck::Bad("truncated header".into());
    }
    let h = &data[off..off + HEADER];
    let magic = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
    if magic != MAGIC && magic != MAGIC_WRITE {
        return FrameCheck::Bad("bad magic".into());
    }
    let field = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    let len = frame_len(field);
    if len > MAX_RECORD_BYTES {
        return FrameCheck::Bad(format!("implausible length {len}"));
    }
    if data.len() - off - HEADER < len {
        return FrameCheck::Bad("truncated payload".into());
    }
    let seq = u64::from_le_bytes(h[8..16].try_into().unwrap_or_default());
    let crc = u32::from_le_bytes([h[16], h[17], h[18], h[19]]);
    let mut c = crc32c::crc32c(&h[4..16]);
    c = crc32c::crc32c_append(c, &data[off + HEADER..off + HEADER + len]);
    if c != crc {
        return FrameCheck::Bad("checksum mismatch".into());
    }
    if let Some(e) = expect {
        if seq != e {
            return FrameCheck::Bad(format!("sequence {seq}, expected {e}"));
        }
    }
    FrameCheck::Ok {
        len,
        more: field & MORE != 0,
        write: magic == MAGIC_WRITE,
    }
}

/// Scans every segment. Truncates a torn tail of the newest one; any other bad frame is
/// [`JournalError::Corrupt`].
pub(crate) fn recover(dir: &Path) -> Result<Recovered> {
    let mut segments: Vec<(u64, PathBuf)> = vec![];
    for e in fs::read_dir(dir)? {
        let e = e?;
        if let Some(first) = parse_name(&e.file_name().to_string_lossy()) {
            segments.push((first, e.path()));
        }
    }
    segments.sort();
    let mut next_seq = segments.first().map(|s| s.0).unwrap_or(0);
    let count = segments.len();
    for (i, (first, path)) in segments.iter().enumerate() {
        let last = i + 1 == count;
        if *first != next_seq {
            return Err(JournalError::Corrupt {
                segment: path.clone(),
                offset: 0,
                reason: format!("segment starts at {first}, expected {next_seq}: records missing"),
            });
        }
        let mut data = Vec::new();
        File::open(path)?.read_to_end(&mut data)?;
        let mut off = 0usize;
        // Where the last complete batch ends (offset, next sequence).
        let mut whole = (0usize, next_seq);
        let mut torn = None;
        // Whether a write's first record was read: the segment marks its writes.
        let mut marked = false;
        while off < data.len() {
            match check_frame(&data, off, Some(next_seq)) {
                FrameCheck::Ok { len, more, write } => {
                    marked |= write;
                    off += HEADER + len;
                    next_seq += 1;
                    if !more {
                        whole = (off, next_seq);
                    }
                }
                FrameCheck::Bad(reason) => {
                    // The active segment's preallocated zeros: never written, nothing torn.
                    if last && data[off..].iter().all(|&b| b == 0) {
                        break;
                    }
                    // The bad frame itself may start a write: its header survived (its magic says
                    // so), or it is the segment's first frame in a file this version filled
                    // with zeros ahead (the older journal never ends a segment in zeros).
                    let starts_write = data.get(off..off + 4)
                        == Some(&MAGIC_WRITE.to_le_bytes()[..])
                        || (off == 0
                            && data.len() >= 512
                            && data[data.len() - 512..].iter().all(|&b| b == 0));
                    if !last || !torn_write(&data, off, marked || starts_write) {
                        tracing::error!(segment = %path.display(), offset = off, %reason, "journal corruption");
                        return Err(JournalError::Corrupt {
                            segment: path.clone(),
                            offset: off as u64,
                            reason,
                        });
                    }
                    torn = Some(reason);
                    break;
                }
            }
        }
        // The newest segment ends inside a batch (torn, or cut after a record that said more
        // follow): the batch was never acknowledged; drop all of it.
        if last && whole.0 < data.len() {
            if data[whole.0..].iter().all(|&b| b == 0) {
                // Only the writer's zeros follow the last batch: the file is cut back to its
                // records (the writer fills ahead again).
                tracing::debug!(segment = %path.display(), offset = whole.0, "unused preallocation");
            } else {
                let reason = torn.unwrap_or_else(|| "an append batch cut short".into());
                tracing::warn!(segment = %path.display(), offset = whole.0, %reason,
                    dropped = data.len() - whole.0, "truncating torn journal tail");
            }
            let f = OpenOptions::new().write(true).open(path)?;
            f.set_len(whole.0 as u64)?;
            f.sync_all()?;
            next_seq = whole.1;
        }
    }
    Ok(Recovered { segments, next_seq })
}

/// Whether the bad frame at `off` in the newest segment is what a crash leaves, rather than
/// damage to records already acknowledged. A crash can leave only the last write unsynced,
/// and each write's first record is marked (`MAGIC_WRITE`):
/// - nothing valid follows the bad frame (a write cut short at the end), or
/// - valid records follow, but none starts a write, and the segment marks its writes (so
///   they all belong to the write the bad frame is in: the last one, which the disk kept
///   only in part — the journal overwrites preallocated zeros, so any of its sectors may
///   have been lost).
///
/// A bad frame with the start of a later write after it was synced before that write: it is
/// corruption. (So is one in a segment from before writes were marked.)
fn torn_write(data: &[u8], off: usize, marked: bool) -> bool {
    match valid_frames_after(data, off + 1) {
        None => true,
        Some(later_write) => marked && !later_write,
    }
}

/// Whether a complete, checksum-valid frame starts at or after `from` (`None`: none does), and
/// if so whether one of them starts a write.
fn valid_frames_after(data: &[u8], from: usize) -> Option<bool> {
    let mut found = None;
    let mut i = from;
    while i + HEADER <= data.len() {
        let next = data[i..].windows(4).position(|w| {
            let m = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
            m == MAGIC || m == MAGIC_WRITE
        });
        match next {
            Some(p) => {
                if let FrameCheck::Ok { write, .. } = check_frame(data, i + p, None) {
                    if write {
                        return Some(true);
                    }
                    found = Some(false);
                }
                i += p + 1;
            }
            None => break,
        }
    }
    found
}
