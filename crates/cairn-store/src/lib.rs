//! Object storage behind one trait, [`ObjectStore`].
//!
//! * [`EmbeddedStore`] — the default: object bodies in files named by random ids (keys are
//!   opaque strings and never become paths), written crash-safely (temp file, fsync, rename,
//!   directory fsync), metadata in an embedded database (redb), MD5 checked on every read.
//!   A small streamed body is kept in the database instead, committed with its metadata.
//! * [`RemoteStore`] — any S3-compatible service, through the `object_store` crate.
//!
//! Listing is by prefix and marker in byte-wise lexicographic order, as S3 ListObjects V1.

pub mod body;
mod embedded;
mod remote;

pub use body::{BodyReader, BodyWriter, ChunkKey};
pub use embedded::{EmbeddedStore, INLINE_MAX};
pub use remote::{RemoteConfig, RemoteStore};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Encrypts object bodies at rest (the embedded store's SSE-S3). `context` is the body's
/// file id, so a ciphertext only opens under the name it was written with.
pub trait BodyCipher: Send + Sync {
    fn seal(&self, plain: &[u8], context: &[u8]) -> std::result::Result<Vec<u8>, String>;
    fn open(&self, sealed: &[u8], context: &[u8]) -> std::result::Result<Vec<u8>, String>;
    /// Seals under a body key derived from a wrapped key (an SSE-KMS data key's envelope,
    /// see [`PutOptions::wrapped_key`]): the body opens only while its wrapping key can be
    /// used. Ciphers without a key service refuse.
    fn seal_wrapped(
        &self,
        _plain: &[u8],
        _context: &[u8],
        _wrapped: &[u8],
    ) -> std::result::Result<Vec<u8>, String> {
        Err("no key service: SSE-KMS bodies cannot be written".into())
    }
    fn open_wrapped(
        &self,
        _sealed: &[u8],
        _context: &[u8],
        _wrapped: &[u8],
    ) -> std::result::Result<Vec<u8>, String> {
        Err("no key service: SSE-KMS bodies cannot be read".into())
    }
    /// The key that seals the chunks of one streamed body file ([`body`]): derived from
    /// `context` (the file's name), and from `wrapped` (an SSE-KMS envelope) when given.
    fn chunk_key(
        &self,
        _context: &[u8],
        _wrapped: Option<&[u8]>,
    ) -> std::result::Result<Box<dyn ChunkKey>, String> {
        Err("this cipher cannot seal streamed bodies".into())
    }
}

/// Longest key S3 accepts, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("The specified bucket does not exist: {0}")]
    NoSuchBucket(String),
    #[error("The specified key does not exist: {bucket}/{key}")]
    NoSuchKey { bucket: String, key: String },
    #[error("At least one of the pre-conditions you specified did not hold")]
    PreconditionFailed,
    #[error("invalid key: {0}")]
    InvalidKey(String),
    #[error("invalid bucket name: {0}")]
    InvalidBucketName(String),
    #[error("stored object {bucket}/{key} is corrupt: {reason}")]
    Corrupt {
        bucket: String,
        key: String,
        reason: String,
    },
    #[error("storage I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("metadata database error: {0}")]
    Db(String),
    #[error("remote store error: {0}")]
    Remote(String),
    #[error("not supported by this store: {0}")]
    Unsupported(String),
    #[error("The bucket you tried to delete is not empty: {0}")]
    BucketNotEmpty(String),
    #[error("The specified version does not exist: {0}")]
    NoSuchVersion(String),
    #[error("Access Denied: {0}")]
    AccessDenied(String),
    /// The key a body is sealed under cannot be used now (an SSE-KMS key disabled or
    /// deleted).
    #[error("the object's encryption key cannot be used: {0}")]
    KeyUnavailable(String),
    /// A version id names a delete marker (GET/HEAD of it: 405).
    #[error("The specified method is not allowed against this resource.")]
    DeleteMarker(String),
}

/// Whether error text carries the operating system's "no space" (ENOSPC, EDQUOT): errors
/// from below (redb, the journal) reach their callers as text.
pub fn no_space_text(text: &str) -> bool {
    text.contains("(os error 28)") || text.contains("(os error 122)")
}

impl StoreError {
    /// Whether the operating system refused the write for want of space (ENOSPC, EDQUOT).
    pub fn is_no_space(&self) -> bool {
        match self {
            StoreError::Io(e) => {
                matches!(e.raw_os_error(), Some(28) | Some(122))
                    || e.kind() == std::io::ErrorKind::StorageFull
                    || e.kind() == std::io::ErrorKind::QuotaExceeded
            }
            StoreError::Db(m) | StoreError::Remote(m) => no_space_text(m),
            _ => false,
        }
    }

    /// The S3 error code for this error.
    pub fn s3_code(&self) -> &'static str {
        match self {
            StoreError::NoSuchBucket(_) => "NoSuchBucket",
            StoreError::NoSuchKey { .. } => "NoSuchKey",
            StoreError::PreconditionFailed => "PreconditionFailed",
            StoreError::InvalidKey(_) => "KeyTooLongError",
            StoreError::InvalidBucketName(_) => "InvalidBucketName",
            StoreError::BucketNotEmpty(_) => "BucketNotEmpty",
            StoreError::NoSuchVersion(_) => "NoSuchVersion",
            StoreError::AccessDenied(_) => "AccessDenied",
            StoreError::DeleteMarker(_) => "MethodNotAllowed",
            StoreError::KeyUnavailable(_) => "KMS.DisabledException",
            // What a trail's LatestDeliveryError says when the store's disk is full.
            e if e.is_no_space() => "InsufficientStorage",
            _ => "InternalError",
        }
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// Options of a PUT.
#[derive(Debug, Clone, Default)]
pub struct PutOptions {
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    /// User metadata, names without the `x-amz-meta-` prefix (lowercase).
    pub metadata: BTreeMap<String, String>,
    /// Conditional create (`If-None-Match: *`): fail with [`StoreError::PreconditionFailed`]
    /// when the key exists.
    pub if_none_match: bool,
    /// The ETag to report instead of the body's MD5 (a multipart upload's `md5-of-md5s-N`).
    /// The body's own MD5 is still what reads are checked against.
    pub etag: Option<String>,
    /// Set when a service writes on its own behalf: the ARN of the resource it acts for (a
    /// trail). Stores that enforce bucket policies evaluate the write as that service.
    pub source_arn: Option<String>,
    /// System attributes to keep with the object (see [`ObjectInfo::system`]).
    pub system: BTreeMap<String, String>,
    /// An SSE-KMS envelope (opaque here): the body is sealed under a key the cipher derives
    /// from it ([`BodyCipher::seal_wrapped`]) and kept beside the body.
    pub wrapped_key: Option<Vec<u8>>,
}

/// What HEAD returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    /// Quoted hex MD5, as S3 sends it.
    pub etag: String,
    pub last_modified: DateTime<Utc>,
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub metadata: BTreeMap<String, String>,
    /// The version id when the bucket is (or was) versioned; `"null"` for the null version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
    /// System attributes S3 keeps with an object besides its user metadata: checksums
    /// (`checksum-crc32`, …), `storage-class`, `restore`, `tagging`, `retention-mode`,
    /// `retain-until`, `legal-hold`, `acl`. Opaque to the store.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub system: BTreeMap<String, String>,
}

/// A bucket's versioning state (`None` when it was never enabled).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Versioning {
    Enabled,
    Suspended,
}

/// One entry of ListObjectVersions.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionEntry {
    pub info: ObjectInfo,
    pub is_latest: bool,
    pub delete_marker: bool,
}

/// What a DeleteObject did.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DeleteOutcome {
    /// The version created (a delete marker) or removed.
    pub version_id: Option<String>,
    pub delete_marker: bool,
}

#[derive(Debug, Clone)]
pub struct Object {
    pub info: ObjectInfo,
    pub body: Vec<u8>,
}

/// One page of a listing.
#[derive(Debug, Clone, Default)]
pub struct ListPage {
    pub objects: Vec<ObjectInfo>,
    pub is_truncated: bool,
}

/// Object storage. Synchronous: the embedded store is file I/O; the remote store runs its
/// own runtime. Callers in async code use `spawn_blocking` (or the `_async` forms).
pub trait ObjectStore: Send + Sync + 'static {
    /// Creates a bucket; succeeds if it already exists.
    fn create_bucket(&self, bucket: &str) -> Result<()>;
    fn bucket_exists(&self, bucket: &str) -> Result<bool>;
    /// Every bucket with its creation time, by name.
    fn list_buckets(&self) -> Result<Vec<(String, DateTime<Utc>)>> {
        Err(StoreError::Unsupported("listing buckets".into()))
    }
    /// Deletes an empty bucket ([`StoreError::BucketNotEmpty`] otherwise).
    fn delete_bucket(&self, bucket: &str) -> Result<()> {
        Err(StoreError::Unsupported(format!("deleting bucket {bucket}")))
    }
    /// The bucket's versioning state.
    fn versioning(&self, bucket: &str) -> Result<Option<Versioning>> {
        let _ = bucket;
        Ok(None)
    }
    /// Enables or suspends versioning.
    fn set_versioning(&self, bucket: &str, state: Versioning) -> Result<()> {
        let _ = state;
        Err(StoreError::Unsupported(format!(
            "versioning bucket {bucket}"
        )))
    }
    /// DeleteObject: removes the object, or in a versioned bucket adds a delete marker.
    fn delete_object(&self, bucket: &str, key: &str) -> Result<DeleteOutcome> {
        self.delete(bucket, key).map(|_| DeleteOutcome::default())
    }
    /// Removes one version for good.
    fn delete_version(&self, bucket: &str, key: &str, version_id: &str) -> Result<DeleteOutcome> {
        let _ = (bucket, key);
        Err(StoreError::NoSuchVersion(version_id.into()))
    }
    /// One version of an object.
    fn get_version(&self, bucket: &str, key: &str, version_id: &str) -> Result<Object> {
        let _ = (bucket, key);
        Err(StoreError::NoSuchVersion(version_id.into()))
    }
    /// Every version and delete marker under `prefix`, by key then newest first, after the
    /// (key, version id) marker; at most `max`. Returns whether more remain.
    fn list_versions(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<(&str, Option<&str>)>,
        max: usize,
    ) -> Result<(Vec<VersionEntry>, bool)> {
        let _ = (bucket, prefix, after, max);
        Err(StoreError::Unsupported("listing versions".into()))
    }
    /// The attributes of one version (the current one when `version_id` is `None`), without
    /// reading its body.
    fn head_version(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
    ) -> Result<ObjectInfo> {
        match version_id {
            None => self.head(bucket, key),
            Some(v) => self.version_info(bucket, key, v),
        }
    }
    /// The attributes of one version, without reading its body where the store can.
    fn version_info(&self, bucket: &str, key: &str, version_id: &str) -> Result<ObjectInfo> {
        self.get_version(bucket, key, version_id).map(|o| o.info)
    }

    /// Changes the system attributes of one version (the current one when `version_id` is
    /// `None`) without touching its body: tags, retention, storage class, restore state.
    /// `change` returns an error to refuse the change (nothing is written then).
    fn update_system(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
        change: &mut dyn FnMut(&mut ObjectInfo) -> Result<()>,
    ) -> Result<ObjectInfo> {
        let _ = (bucket, key, version_id, change);
        Err(StoreError::Unsupported("update_system".into()))
    }

    fn put(&self, bucket: &str, key: &str, body: &[u8], opts: &PutOptions) -> Result<ObjectInfo>;

    /// A PUT whose body is written as it arrives ([`StagingWriter`]), staged when finished.
    /// Stores that cannot stream keep the body in memory.
    fn stage_writer(&self, bucket: &str, key: &str, opts: &PutOptions) -> Result<StagingWriter> {
        check_key(key)?;
        if !self.bucket_exists(bucket)? {
            return Err(StoreError::NoSuchBucket(bucket.into()));
        }
        Ok(StagingWriter {
            bucket: bucket.into(),
            key: key.into(),
            opts: opts.clone(),
            inner: Some(WriterInner::Memory(Vec::new())),
        })
    }

    /// [`ObjectStore::open_read`] when it needs no I/O beyond the metadata database's pages
    /// (async callers run it in place): the embedded store's answer for a body kept with its
    /// metadata (not sealed under a wrapped key), or for a missing object. `None` otherwise
    /// (then `open_read` on the blocking pool), and by default.
    fn open_read_held(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
        range: &dyn Fn(u64) -> Option<(u64, u64)>,
    ) -> Option<Result<(ObjectInfo, Box<dyn std::io::Read + Send>)>> {
        let _ = (bucket, key, version_id, range);
        None
    }

    /// One version (the current one when `version_id` is `None`) with a byte range of its
    /// body as a stream: `range` gets the body's size and gives `start..end` (the whole body
    /// when `None`), so the range is of the very version whose attributes are returned. The
    /// embedded store reads only what the range covers.
    fn open_read(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
        range: &dyn Fn(u64) -> Option<(u64, u64)>,
    ) -> Result<(ObjectInfo, Box<dyn std::io::Read + Send>)> {
        let o = match version_id {
            None => self.get(bucket, key)?,
            Some(v) => self.get_version(bucket, key, v)?,
        };
        let (a, b) = range(o.info.size).unwrap_or((0, o.body.len() as u64));
        let body = o
            .body
            .get(a as usize..b as usize)
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        Ok((o.info, Box::new(std::io::Cursor::new(body))))
    }

    /// Makes a staged PUT the object.
    fn commit_staged(&self, s: Staged) -> Result<ObjectInfo> {
        match s.body {
            StagedBody::Memory(b) => self.put(&s.bucket, &s.key, &b, &s.opts),
            StagedBody::Blob(_) | StagedBody::Inline { .. } => {
                Err(StoreError::Unsupported("staged by another store".into()))
            }
        }
    }

    /// Whether [`ObjectStore::stage_writer`] is cheap enough to call on an async runtime's
    /// thread: no network and no file I/O beyond reading already-open metadata (the
    /// embedded store; a remote store blocks on its own runtime and must not).
    fn stages_inline(&self) -> bool {
        false
    }

    /// [`ObjectStore::commit_staged`] for async callers (inside a tokio runtime): by default
    /// on the blocking pool; the embedded store queues the write for its group commit and
    /// the future waits for its outcome, so no thread waits for each write.
    fn commit_staged_async(
        self: std::sync::Arc<Self>,
        s: Staged,
    ) -> futures::future::BoxFuture<'static, Result<ObjectInfo>> {
        commit_on_blocking_pool(self, s)
    }

    /// [`ObjectStore::delete_object`] for async callers (inside a tokio runtime), keeping
    /// `outbox` (the request's outcome record, under its key) in the transaction that makes
    /// the deletion when the store [keeps outboxes](ObjectStore::keeps_outbox). By default on
    /// the blocking pool, `outbox` ignored; the embedded store queues the deletion for its
    /// group commit with the PUTs.
    fn delete_object_async(
        self: std::sync::Arc<Self>,
        bucket: String,
        key: String,
        outbox: Option<(u64, Vec<u8>)>,
    ) -> futures::future::BoxFuture<'static, Result<DeleteOutcome>> {
        let _ = outbox;
        Box::pin(async move {
            tokio::task::spawn_blocking(move || self.delete_object(&bucket, &key))
                .await
                .map_err(|e| StoreError::Io(std::io::Error::other(e.to_string())))?
        })
    }

    /// Forgets a staged PUT.
    fn discard_staged(&self, s: Staged) {
        let _ = s;
    }

    /// Whether [`ObjectStore::commit_staged`] keeps a staged write's [`Staged::outbox`]
    /// record in the transaction that makes the object (and
    /// [`ObjectStore::delete_object_async`] its record in the one that deletes it), so the
    /// record is durable exactly when the change is. Stores that cannot keep it say so and
    /// ignore it; the caller then journals the outcome before answering.
    fn keeps_outbox(&self) -> bool {
        false
    }

    /// The outbox record kept under `key` by a committed write, if still kept.
    fn outbox_record(&self, key: u64) -> Result<Option<Vec<u8>>> {
        let _ = key;
        Ok(None)
    }

    /// The record under `key` is durable elsewhere: it is dropped with a later commit.
    fn outbox_release(&self, key: u64) {
        let _ = key;
    }

    /// Drops every outbox record (at start, once each is durable elsewhere).
    fn outbox_clear(&self) -> Result<usize> {
        Ok(0)
    }
    fn get(&self, bucket: &str, key: &str) -> Result<Object>;
    fn head(&self, bucket: &str, key: &str) -> Result<ObjectInfo>;
    fn delete(&self, bucket: &str, key: &str) -> Result<()>;
    /// Keys starting with `prefix` and greater than `after`, ascending, at most `n`.
    fn list(&self, bucket: &str, prefix: &str, after: Option<&str>, n: usize) -> Result<ListPage>;

    /// Several PUTs; stores may make them durable together (one directory sync, one metadata
    /// commit). On error some may have been written: callers retry the whole set.
    fn put_many(&self, items: &[PutItem<'_>]) -> Result<Vec<ObjectInfo>> {
        items
            .iter()
            .map(|i| self.put(i.bucket, i.key, i.body, i.opts))
            .collect()
    }
}

/// One object of [`ObjectStore::put_many`].
pub struct PutItem<'a> {
    pub bucket: &'a str,
    pub key: &'a str,
    pub body: &'a [u8],
    pub opts: &'a PutOptions,
}

/// A PUT whose body is written (durably in its own file, or held to be committed with its
/// metadata when small) but is not visible yet: [`ObjectStore::commit_staged`]
/// makes it the object, [`ObjectStore::discard_staged`] forgets it. The API stages a write,
/// records the request's event, and commits only once the event is durable.
pub struct Staged {
    pub bucket: String,
    pub key: String,
    pub opts: PutOptions,
    pub size: u64,
    /// Quoted hex MD5 of the body.
    pub md5: String,
    /// A record to keep, under its key, in the transaction that makes the object (see
    /// [`ObjectStore::keeps_outbox`]): the request's outcome, so a crash after the commit
    /// cannot leave the object without its event.
    pub outbox: Option<(u64, Vec<u8>)>,
    pub(crate) body: StagedBody,
}

/// [`ObjectStore::commit_staged`] on the blocking pool, as a future (the default
/// [`ObjectStore::commit_staged_async`], and the embedded store's for a body it did not stage).
pub(crate) fn commit_on_blocking_pool<S: ObjectStore + ?Sized>(
    store: std::sync::Arc<S>,
    s: Staged,
) -> futures::future::BoxFuture<'static, Result<ObjectInfo>> {
    Box::pin(async move {
        tokio::task::spawn_blocking(move || store.commit_staged(s))
            .await
            .map_err(|e| StoreError::Io(std::io::Error::other(e.to_string())))?
    })
}

/// A PUT's body being written as it arrives (see [`ObjectStore::stage_writer`]):
/// [`StagingWriter::finish`] makes it a [`Staged`] write; dropped unfinished, it leaves
/// nothing behind.
pub struct StagingWriter {
    pub(crate) bucket: String,
    pub(crate) key: String,
    pub(crate) opts: PutOptions,
    pub(crate) inner: Option<WriterInner>,
}

pub(crate) enum WriterInner {
    Memory(Vec<u8>),
    Blob {
        writer: Box<BodyWriter>,
        blob: String,
        tmp: std::path::PathBuf,
        dir: std::path::PathBuf,
    },
}

impl StagingWriter {
    /// Appends to the body.
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        match &mut self.inner {
            Some(WriterInner::Memory(b)) => b.extend_from_slice(data),
            Some(WriterInner::Blob { writer, .. }) => writer.write(data)?,
            None => {}
        }
        Ok(())
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        match &self.inner {
            Some(WriterInner::Memory(b)) => b.len() as u64,
            Some(WriterInner::Blob { writer, .. }) => writer.size(),
            None => 0,
        }
    }

    /// Whether the body so far is small and held in memory: [`StagingWriter::finish`] then
    /// does no I/O and little work (it may run where blocking is not allowed).
    pub fn in_memory(&self) -> bool {
        match &self.inner {
            Some(WriterInner::Memory(b)) => b.len() <= INLINE_MAX,
            Some(WriterInner::Blob { writer, .. }) => writer.in_memory(),
            None => true,
        }
    }

    /// Whether `more` bytes can be written and the body finished without any I/O (see
    /// [`StagingWriter::in_memory`]).
    pub fn takes_in_memory(&self, more: usize) -> bool {
        match &self.inner {
            Some(WriterInner::Memory(b)) => b.len().saturating_add(more) <= INLINE_MAX,
            Some(WriterInner::Blob { writer, .. }) => writer.takes_in_memory(more),
            None => true,
        }
    }

    /// The body is complete: synced and in place, named by no metadata yet — or, small
    /// enough, held in memory to be committed with its metadata (durable only then).
    pub fn finish(mut self) -> Result<Staged> {
        let inner = self
            .inner
            .take()
            .ok_or_else(|| StoreError::Io(std::io::Error::other("writer already finished")))?;
        let (size, md5, body) = match inner {
            WriterInner::Memory(b) => (b.len() as u64, etag_of(&b), StagedBody::Memory(b)),
            WriterInner::Blob {
                writer,
                blob,
                tmp,
                dir,
            } => {
                // A body small enough to stay in memory is stored with its metadata, in
                // the commit's own transaction. A file is synced here; the directory is
                // synced when the write is committed (once per group of commits), before
                // any metadata names the file.
                let placed = dir.join(&blob);
                let done = (|| -> Result<(u64, String, StagedBody)> {
                    let (size, md5, kept) = writer.finish_kept()?;
                    if let Some((stored, _)) = kept {
                        return Ok((size, md5, StagedBody::Inline { blob, stored }));
                    }
                    std::fs::rename(&tmp, &placed)?;
                    Ok((size, md5, StagedBody::Blob(blob)))
                })();
                match done {
                    Ok(done) => done,
                    Err(e) => {
                        let _ = std::fs::remove_file(&tmp);
                        let _ = std::fs::remove_file(&placed);
                        return Err(e);
                    }
                }
            }
        };
        Ok(Staged {
            bucket: std::mem::take(&mut self.bucket),
            key: std::mem::take(&mut self.key),
            opts: std::mem::take(&mut self.opts),
            size,
            md5,
            outbox: None,
            body,
        })
    }
}

impl Drop for StagingWriter {
    fn drop(&mut self) {
        // A body that never left memory has no file to remove (and a refused small PUT
        // makes no system call on the request's thread).
        if let Some(WriterInner::Blob { tmp, writer, .. }) = self.inner.take() {
            if writer.spilled() {
                let _ = std::fs::remove_file(tmp);
            }
        }
    }
}

pub(crate) enum StagedBody {
    /// Stores without staging keep the body until commit.
    Memory(Vec<u8>),
    /// The embedded store's body file (durable, named by no metadata yet).
    Blob(String),
    /// A small body's stored bytes (the body file's format), written with its metadata.
    Inline { blob: String, stored: Vec<u8> },
}

/// Lists every key under `prefix` (following pages).
pub fn list_all(store: &dyn ObjectStore, bucket: &str, prefix: &str) -> Result<Vec<ObjectInfo>> {
    let mut out = vec![];
    let mut marker: Option<String> = None;
    loop {
        let page = store.list(bucket, prefix, marker.as_deref(), 1000)?;
        marker = page.objects.last().map(|o| o.key.clone());
        out.extend(page.objects);
        if !page.is_truncated || marker.is_none() {
            return Ok(out);
        }
    }
}

pub(crate) fn check_key(key: &str) -> Result<()> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(StoreError::InvalidKey(format!(
            "key must be 1 to {MAX_KEY_BYTES} bytes, got {}",
            key.len()
        )));
    }
    Ok(())
}

/// S3 bucket naming rules (3–63 chars, lowercase letters, digits, `.` and `-`, starting and
/// ending with a letter or digit, not an IP address).
pub fn check_bucket_name(b: &str) -> Result<()> {
    let ok = (3..=63).contains(&b.len())
        && b.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
        && b.as_bytes()[0].is_ascii_alphanumeric()
        && b.as_bytes()[b.len() - 1].is_ascii_alphanumeric()
        && !b.contains("..")
        && b.parse::<std::net::Ipv4Addr>().is_err();
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidBucketName(b.to_string()))
    }
}

pub(crate) fn etag_of(body: &[u8]) -> String {
    use md5::Digest;
    format!("\"{}\"", hex::encode(md5::Md5::digest(body)))
}
