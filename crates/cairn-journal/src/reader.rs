//! Sequential reading of durable records.

use crate::segment::{check_frame, FrameCheck};
use crate::{lock, JournalError, Result, Shared, HEADER};
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::PathBuf;
use std::sync::Arc;

/// Reads records in sequence order, never past the durable head. Each record's checksum is
/// verified; a bad one is [`JournalError::Corrupt`].
pub struct JournalReader {
    shared: Arc<Shared>,
    next: u64,
    file: Option<(u64, PathBuf, BufReader<File>, u64)>,
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
            let mut r = BufReader::with_capacity(1 << 20, File::open(&path)?);
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
