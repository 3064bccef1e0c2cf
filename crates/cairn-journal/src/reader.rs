//! Sequential reading of durable records.

use crate::segment::{check_frame, FrameCheck};
use crate::{lock, JournalError, Result, Shared, HEADER};
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;

/// Reads records in sequence order, never past the durable head. Each record's checksum is
/// verified; a bad one is [`JournalError::Corrupt`].
pub struct JournalReader {
    shared: Arc<Shared>,
    next: u64,
    file: Option<(u64, PathBuf, BufReader<Bounded>, u64)>,
    header: [u8; HEADER],
}

impl JournalReader {
    pub(crate) fn new(shared: Arc<Shared>, seq: u64) -> Result<JournalReader> {
        Ok(JournalReader {
            shared,
            next: seq,
            file: None,
            header: [0; HEADER],
        })
    }

    /// The sequence number of the record the next call returns.
    pub fn position(&self) -> u64 {
        self.next
    }

    /// The next durable record, or `None` when caught up.
    pub fn next_record(&mut self) -> Result<Option<(u64, Vec<u8>)>> {
        let (durable, seg) = {
            let st = lock(&self.shared.state);
            let seg = st.segments.iter().rev().find(|s| s.0 <= self.next).cloned();
            (st.next_seq, seg)
        };
        if self.next >= durable {
            return Ok(None);
        }
        let Some((first, path)) = seg else {
            return Err(JournalError::Corrupt {
                segment: self.shared.dir.clone(),
                offset: 0,
                reason: format!("record {} is no longer held (segment removed)", self.next),
            });
        };
        let reopen = match &self.file {
            Some((f, _, _, _)) => *f != first,
            None => true,
        };
        if reopen {
            let bounded = Bounded {
                shared: self.shared.clone(),
                first,
                file: File::open(&path)?,
                pos: 0,
            };
            let mut r = BufReader::with_capacity(1 << 20, bounded);
            let mut off = 0u64;
            let mut seq = first;
            // Skip to the wanted record by walking headers.
            while seq < self.next {
                r.read_exact(&mut self.header)?;
                let len = crate::frame_len(u32::from_le_bytes(
                    self.header[4..8].try_into().unwrap_or_default(),
                ));
                r.seek_relative(len as i64)?;
                off += (HEADER as u64) + len as u64;
                seq += 1;
            }
            self.file = Some((first, path.clone(), r, off));
        }
        let Some((_, path, r, off)) = self.file.as_mut() else {
            return Ok(None);
        };
        let mut frame = vec![0u8; HEADER];
        r.read_exact(&mut frame)?;
        let len = crate::frame_len(u32::from_le_bytes(
            frame[4..8].try_into().unwrap_or_default(),
        ));
        if len > crate::MAX_RECORD_BYTES {
            return Err(JournalError::Corrupt {
                segment: path.clone(),
                offset: *off,
                reason: format!("implausible length {len}"),
            });
        }
        frame.resize(HEADER + len, 0);
        r.read_exact(&mut frame[HEADER..])?;
        match check_frame(&frame, 0, Some(self.next)) {
            FrameCheck::Ok { .. } => {}
            FrameCheck::Bad(reason) => {
                return Err(JournalError::Corrupt {
                    segment: path.clone(),
                    offset: *off,
                    reason,
                })
            }
        }
        *off += frame.len() as u64;
        let seq = self.next;
        self.next += 1;
        // Crossing into the next segment: drop the handle so the next call reopens.
        let roll = {
            let st = lock(&self.shared.state);
            st.segments.iter().any(|s| s.0 == self.next)
        };
        if roll {
            self.file = None;
        }
        frame.drain(..HEADER);
        Ok(Some((seq, frame)))
    }
}

/// A segment file read no further than its durable end. The active segment's file runs on in
/// preallocated zeros (and a batch being written): a read-ahead must not buffer those and
/// serve them later as records. A sealed segment holds exactly its records.
pub(crate) struct Bounded {
    shared: Arc<Shared>,
    first: u64,
    file: File,
    pos: u64,
}

impl Read for Bounded {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let end = {
            let st = lock(&self.shared.state);
            if st.active_end.0 == self.first {
                st.active_end.1
            } else {
                u64::MAX
            }
        };
        let room = end.saturating_sub(self.pos).min(buf.len() as u64) as usize;
        if room == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..room], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for Bounded {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let pos = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            SeekFrom::End(_) => None,
        };
        self.pos = pos.ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "journal reader seek")
        })?;
        Ok(self.pos)
    }
}
