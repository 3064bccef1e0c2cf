//! Body files written and read as streams, in constant memory.
//!
//! The format (`CAIRN-SSE3`): the magic, the wrapped key's length (u32, big-endian, 0 when
//! none) and the wrapped key, then the body in chunks of [`CHUNK`] plaintext bytes, each
//! sealed on its own by a [`ChunkKey`] (AEAD: ciphertext then a [`TAG`]-byte tag). The nonce
//! of chunk `i` is its index with a flag on the last chunk, so chunks cannot be reordered,
//! dropped or the body cut short without a tag failing; an empty body is one empty last
//! chunk. A byte range needs only the chunks it covers.
//!
//! Without a cipher the file is the plain body. Files of the older whole-body formats are
//! read whole through a caller's `legacy` function (they were written at most
//! `max_body_bytes` large).

use crate::BodyCipher;
use md5::Digest;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Plaintext bytes per sealed chunk.
pub const CHUNK: usize = 64 * 1024;
/// Bytes an AEAD tag adds to each chunk.
pub const TAG: usize = 16;
/// First bytes of a chunked, sealed body file.
pub const STREAM_MAGIC: &[u8] = b"CAIRN-SSE3\0";

/// Seals and opens the chunks of one body file (a key of its own, derived from the file's
/// name: nonces need only be unique within the file).
pub trait ChunkKey: Send + Sync {
    /// Encrypts `buf` in place and appends the tag.
    fn seal(&self, index: u64, last: bool, buf: &mut Vec<u8>) -> Result<(), String>;
    /// Checks the tag, decrypts `buf` in place and truncates it to the plaintext.
    fn open(&self, index: u64, last: bool, buf: &mut Vec<u8>) -> Result<(), String>;
}

/// Writes one body file as a stream: sealed in chunks when a key is given, the plaintext's
/// MD5 and size kept on the way. [`BodyWriter::finish`] syncs it.
///
/// A writer made by [`BodyWriter::spillable`] keeps the body in memory until it outgrows a
/// limit (then it creates its file and goes on there): a small body can be stored with its
/// metadata, in the same bytes a file would hold ([`BodyWriter::finish_kept`]).
pub struct BodyWriter {
    out: Out,
    key: Option<Box<dyn ChunkKey>>,
    pending: Vec<u8>,
    index: u64,
    size: u64,
    md5: md5::Md5,
}

impl BodyWriter {
    /// Creates `path` (mode 0600) and writes the header. `context` names the file (the AEAD's
    /// associated data and the key derivation's input); `wrapped` is an SSE-KMS envelope
    /// the body key is derived from.
    pub fn create(
        path: &Path,
        cipher: Option<&dyn BodyCipher>,
        context: &[u8],
        wrapped: Option<&[u8]>,
    ) -> Result<BodyWriter, crate::StoreError> {
        let key = chunk_key(cipher, context, wrapped)?;
        let mut out = Out::Memory {
            buf: Vec::new(),
            path: path.to_path_buf(),
            limit: 0,
        };
        out.spill()?;
        Self::start(out, key, wrapped)
    }

    /// As [`BodyWriter::create`], but `path` is created only once the stored bytes would
    /// pass `limit`: until then the body is in memory.
    pub fn spillable(
        path: &Path,
        cipher: Option<&dyn BodyCipher>,
        context: &[u8],
        wrapped: Option<&[u8]>,
        limit: usize,
    ) -> Result<BodyWriter, crate::StoreError> {
        let key = chunk_key(cipher, context, wrapped)?;
        let out = Out::Memory {
            buf: Vec::new(),
            path: path.to_path_buf(),
            limit,
        };
        Self::start(out, key, wrapped)
    }

    fn start(
        mut out: Out,
        key: Option<Box<dyn ChunkKey>>,
        wrapped: Option<&[u8]>,
    ) -> Result<BodyWriter, crate::StoreError> {
        if key.is_some() {
            let w = wrapped.unwrap_or_default();
            out.write_all(STREAM_MAGIC)?;
            out.write_all(&(w.len() as u32).to_be_bytes())?;
            out.write_all(w)?;
        }
        Ok(BodyWriter {
            out,
            key,
            pending: Vec::with_capacity(CHUNK + TAG),
            index: 0,
            size: 0,
            md5: md5::Md5::new(),
        })
    }

    /// Plaintext bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether finishing the body now keeps it in memory (no file, no I/O): what it holds,
    /// with the unsealed last chunk and its tag, stays within its limit.
    pub fn in_memory(&self) -> bool {
        match &self.out {
            Out::Memory { buf, limit, .. } => {
                let tag = if self.key.is_some() { TAG } else { 0 };
                buf.len() + self.pending.len() + tag <= *limit
            }
            Out::File(_) => false,
        }
    }

    /// Whether the body's file has been created (a spillable writer creates it only once
    /// the body outgrows memory).
    pub fn spilled(&self) -> bool {
        matches!(self.out, Out::File(_))
    }

    /// Whether writing `more` plaintext bytes, and then finishing, keeps the body in memory
    /// (no file created, no I/O): [`BodyWriter::in_memory`] after the write.
    pub fn takes_in_memory(&self, more: usize) -> bool {
        match &self.out {
            Out::Memory { buf, limit, .. } => {
                // Every chunk sealed on the way adds a tag; the last one is sealed at finish.
                let tags = if self.key.is_some() {
                    TAG * ((self.pending.len() + more) / CHUNK + 1)
                } else {
                    0
                };
                buf.len()
                    .saturating_add(self.pending.len())
                    .saturating_add(more)
                    .saturating_add(tags)
                    <= *limit
            }
            Out::File(_) => false,
        }
    }

    fn seal_pending(&mut self, last: bool) -> io::Result<()> {
        if let Some(k) = &self.key {
            k.seal(self.index, last, &mut self.pending)
                .map_err(io::Error::other)?;
            self.index += 1;
        }
        self.out.write_all(&self.pending)?;
        self.pending.clear();
        Ok(())
    }

    /// Appends `data` to the body.
    pub fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        self.md5.update(data);
        self.size += data.len() as u64;
        while !data.is_empty() {
            // A full chunk is sealed only once more data follows: the last one is flagged.
            if self.pending.len() == CHUNK {
                self.seal_pending(false)?;
            }
            let n = (CHUNK - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..n]);
            data = &data[n..];
        }
        Ok(())
    }

    /// Seals the last chunk and syncs the file: `(size, quoted hex MD5)`. A body still in
    /// memory is written to its file first.
    pub fn finish(self) -> io::Result<(u64, String)> {
        let (size, md5, kept) = self.finish_kept()?;
        if let Some((bytes, path)) = kept {
            let mut out = Out::Memory {
                buf: bytes,
                path,
                limit: 0,
            };
            out.spill()?;
            out.sync()?;
        }
        Ok((size, md5))
    }

    /// Seals the last chunk: `(size, quoted hex MD5, the stored bytes and the path they were
    /// never written to)` for a body still in memory, else its file synced and `None`.
    #[allow(clippy::type_complexity)]
    pub fn finish_kept(mut self) -> io::Result<(u64, String, Option<(Vec<u8>, PathBuf)>)> {
        if self.key.is_some() || !self.pending.is_empty() {
            self.seal_pending(true)?;
        }
        let md5 = format!("\"{}\"", hex::encode(self.md5.finalize()));
        match self.out {
            Out::Memory { buf, path, .. } => Ok((self.size, md5, Some((buf, path)))),
            out => {
                out.sync()?;
                Ok((self.size, md5, None))
            }
        }
    }
}

/// The key that seals a body's chunks (`None`: the body is stored plain).
fn chunk_key(
    cipher: Option<&dyn BodyCipher>,
    context: &[u8],
    wrapped: Option<&[u8]>,
) -> Result<Option<Box<dyn ChunkKey>>, crate::StoreError> {
    match (cipher, wrapped) {
        (Some(c), w) => Ok(Some(
            c.chunk_key(context, w)
                .map_err(crate::StoreError::KeyUnavailable)?,
        )),
        (None, Some(_)) => Err(crate::StoreError::KeyUnavailable(
            "this store has no key service for SSE-KMS".into(),
        )),
        (None, None) => Ok(None),
    }
}

/// Where a writer's bytes go: its file, or memory until they pass `limit`.
enum Out {
    File(io::BufWriter<File>),
    Memory {
        buf: Vec<u8>,
        path: PathBuf,
        limit: usize,
    },
}

impl Out {
    /// Creates the file (mode 0600) and moves what memory holds into it.
    fn spill(&mut self) -> io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let Out::Memory { buf, path, .. } = self else {
            return Ok(());
        };
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&*path)?;
        let mut file = io::BufWriter::with_capacity(CHUNK + TAG + 64, f);
        let written = file.write_all(buf);
        // The file exists from here on, written or not: it counts as spilled, so a dropped
        // staging writer removes it (a writer that failed is never written to again).
        *self = Out::File(file);
        written
    }

    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        if let Out::Memory { buf, limit, .. } = self {
            if buf.len() + data.len() <= *limit {
                buf.extend_from_slice(data);
                return Ok(());
            }
            self.spill()?;
        }
        match self {
            Out::File(f) => f.write_all(data),
            Out::Memory { .. } => Err(io::Error::other("a body spilled to no file")),
        }
    }

    fn sync(self) -> io::Result<()> {
        if let Out::File(f) = self {
            f.into_inner().map_err(|e| e.into_error())?.sync_data()?;
        }
        Ok(())
    }
}

/// A body's stored bytes: its file, or bytes kept with its metadata.
enum Medium {
    File(File),
    Bytes(io::Cursor<Vec<u8>>),
}

impl Medium {
    fn len(&self) -> io::Result<u64> {
        match self {
            Medium::File(f) => Ok(f.metadata()?.len()),
            Medium::Bytes(b) => Ok(b.get_ref().len() as u64),
        }
    }
}

impl Read for Medium {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        match self {
            Medium::File(f) => f.read(out),
            Medium::Bytes(b) => b.read(out),
        }
    }
}

impl Seek for Medium {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        match self {
            Medium::File(f) => f.seek(to),
            Medium::Bytes(b) => b.seek(to),
        }
    }
}

enum Source {
    /// The plain body.
    Plain(Medium),
    /// Chunked and sealed; `data_at` is where chunk 0 starts.
    Sealed {
        file: Medium,
        key: Box<dyn ChunkKey>,
        data_at: u64,
    },
    /// An older whole-body file, opened in memory.
    Whole(Vec<u8>),
}

/// Reads a byte range of a body file as a stream, opening only the chunks it covers.
pub struct BodyReader {
    source: Source,
    size: u64,
    pos: u64,
    end: u64,
    chunk: Vec<u8>,
    chunk_at: usize,
    /// For a whole read of a plain body: its MD5 and the one it must have.
    check_md5: Option<(md5::Md5, String)>,
}

/// Chunks in a body of `size` bytes (an empty body has one).
fn chunks(size: u64) -> u64 {
    size.div_ceil(CHUNK as u64).max(1)
}

impl BodyReader {
    /// Opens `path`, a body of `size` plaintext bytes, for `range` (`start..end`; the whole
    /// body when `None`). `md5` is the body's quoted hex MD5, checked at the end of a whole
    /// read of a plain body (sealed chunks carry their own tags). Files in neither format go
    /// through `legacy` (raw file → body).
    pub fn open(
        path: &Path,
        cipher: Option<&dyn BodyCipher>,
        context: &[u8],
        size: u64,
        range: Option<(u64, u64)>,
        md5: Option<&str>,
        legacy: &dyn Fn(Vec<u8>) -> Result<Vec<u8>, crate::StoreError>,
    ) -> Result<BodyReader, crate::StoreError> {
        let file = Medium::File(File::open(path)?);
        Self::from_medium(file, cipher, context, size, range, md5, legacy)
    }

    /// As [`BodyReader::open`], for the stored bytes of a body kept in memory (what
    /// [`BodyWriter::finish_kept`] gave).
    pub fn from_bytes(
        stored: Vec<u8>,
        cipher: Option<&dyn BodyCipher>,
        context: &[u8],
        size: u64,
        range: Option<(u64, u64)>,
        md5: Option<&str>,
        legacy: &dyn Fn(Vec<u8>) -> Result<Vec<u8>, crate::StoreError>,
    ) -> Result<BodyReader, crate::StoreError> {
        let bytes = Medium::Bytes(io::Cursor::new(stored));
        Self::from_medium(bytes, cipher, context, size, range, md5, legacy)
    }

    fn from_medium(
        mut file: Medium,
        cipher: Option<&dyn BodyCipher>,
        context: &[u8],
        size: u64,
        range: Option<(u64, u64)>,
        md5: Option<&str>,
        legacy: &dyn Fn(Vec<u8>) -> Result<Vec<u8>, crate::StoreError>,
    ) -> Result<BodyReader, crate::StoreError> {
        let corrupt = |reason: String| crate::StoreError::Corrupt {
            bucket: String::new(),
            key: String::new(),
            reason,
        };
        let (start, end) = range.unwrap_or((0, size));
        if start > end || end > size {
            return Err(corrupt(format!(
                "range {start}..{end} outside {size} bytes"
            )));
        }
        let mut magic = [0u8; 11];
        let n = read_up_to(&mut file, &mut magic)?;
        let source = if n == STREAM_MAGIC.len() && magic == STREAM_MAGIC {
            let c = cipher
                .ok_or_else(|| corrupt("the body is encrypted and no key was given".into()))?;
            let mut len = [0u8; 4];
            file.read_exact(&mut len)
                .map_err(|_| corrupt("truncated header".into()))?;
            let wlen = u32::from_be_bytes(len) as usize;
            if wlen > 64 << 10 {
                return Err(corrupt("wrapped key too long".into()));
            }
            let mut wrapped = vec![0u8; wlen];
            file.read_exact(&mut wrapped)
                .map_err(|_| corrupt("truncated header".into()))?;
            let key = c
                .chunk_key(context, (wlen > 0).then_some(wrapped.as_slice()))
                .map_err(crate::StoreError::KeyUnavailable)?;
            let data_at = (STREAM_MAGIC.len() + 4 + wlen) as u64;
            // The file must be exactly the sealed chunks: nothing cut, nothing appended.
            let want = data_at + size + chunks(size) * TAG as u64;
            let have = file.len()?;
            if have != want {
                return Err(corrupt(format!(
                    "body file is {have} bytes, {want} expected"
                )));
            }
            Source::Sealed { file, key, data_at }
        } else if cipher.is_some() || magic[..n].starts_with(b"CAIRN-SSE") {
            let mut raw = magic[..n].to_vec();
            file.read_to_end(&mut raw)?;
            Source::Whole(legacy(raw)?)
        } else {
            file.seek(SeekFrom::Start(0))?;
            Source::Plain(file)
        };
        if let Source::Plain(f) = &source {
            if f.len()? != size {
                return Err(corrupt("body does not match its recorded size".into()));
            }
            // A plain body held in memory is checked whole, whatever range is read (a file's
            // is checked as a whole read streams through it).
            if let (Medium::Bytes(b), Some(m)) = (f, md5) {
                if format!("\"{}\"", hex::encode(md5::Md5::digest(b.get_ref()))) != m {
                    return Err(corrupt("body does not match its recorded MD5".into()));
                }
            }
        }
        if let Source::Whole(b) = &source {
            if b.len() as u64 != size {
                return Err(corrupt("body does not match its recorded size".into()));
            }
            // In memory already: checked whole, whatever range is read.
            if let Some(m) = md5 {
                if format!("\"{}\"", hex::encode(md5::Md5::digest(b))) != m {
                    return Err(corrupt("body does not match its recorded MD5".into()));
                }
            }
        }
        let check_md5 = match (&source, md5) {
            (Source::Plain(_), Some(m)) if range.is_none() => {
                Some((md5::Md5::new(), m.to_string()))
            }
            _ => None,
        };
        let mut r = BodyReader {
            source,
            size,
            pos: start,
            end,
            chunk: Vec::new(),
            chunk_at: 0,
            check_md5,
        };
        r.seek_to(start).map_err(|e| match e.kind() {
            io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof => {
                corrupt(format!("the encrypted body does not authenticate: {e}"))
            }
            _ => e.into(),
        })?;
        Ok(r)
    }

    /// Bytes left to read.
    pub fn remaining(&self) -> u64 {
        self.end - self.pos
    }

    fn seek_to(&mut self, at: u64) -> io::Result<()> {
        match &mut self.source {
            Source::Plain(f) => {
                f.seek(SeekFrom::Start(at))?;
            }
            Source::Sealed { .. } => {
                // Opens the chunk holding `at` now: a tampered first chunk fails the open.
                if at < self.end || self.size == 0 {
                    self.load_chunk(at / CHUNK as u64)?;
                    self.chunk_at = (at % CHUNK as u64) as usize;
                }
            }
            Source::Whole(_) => {}
        }
        Ok(())
    }

    fn load_chunk(&mut self, index: u64) -> io::Result<()> {
        let Source::Sealed { file, key, data_at } = &mut self.source else {
            return Ok(());
        };
        let n = chunks(self.size);
        let plain = (self.size - index * CHUNK as u64).min(CHUNK as u64) as usize;
        file.seek(SeekFrom::Start(*data_at + index * (CHUNK + TAG) as u64))?;
        self.chunk.resize(plain + TAG, 0);
        file.read_exact(&mut self.chunk)?;
        key.open(index, index + 1 == n, &mut self.chunk)
            .map_err(|e| {
                io::Error::new(io::ErrorKind::InvalidData, format!("chunk {index}: {e}"))
            })?;
        self.chunk_at = 0;
        Ok(())
    }
}

/// Reads until `buf` is full or the file ends; the bytes read.
fn read_up_to(f: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

impl Read for BodyReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let want = (self.end - self.pos).min(out.len() as u64) as usize;
        if want == 0 {
            if let Some((h, expected)) = self.check_md5.take() {
                let got = format!("\"{}\"", hex::encode(h.finalize()));
                if got != expected {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "body does not match its recorded MD5",
                    ));
                }
            }
            return Ok(0);
        }
        let n = match &mut self.source {
            Source::Plain(f) => {
                let n = f.read(&mut out[..want])?;
                if n == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                n
            }
            Source::Whole(b) => {
                let at = self.pos as usize;
                out[..want].copy_from_slice(&b[at..at + want]);
                want
            }
            Source::Sealed { .. } => {
                if self.chunk_at >= self.chunk.len() {
                    self.load_chunk(self.pos / CHUNK as u64)?;
                }
                let avail = self.chunk.len() - self.chunk_at;
                let n = avail.min(want);
                out[..n].copy_from_slice(&self.chunk[self.chunk_at..self.chunk_at + n]);
                self.chunk_at += n;
                n
            }
        };
        if let Some((h, _)) = &mut self.check_md5 {
            h.update(&out[..n]);
        }
        self.pos += n as u64;
        Ok(n)
    }
}
