//! The embedded store: bodies in files named by random ids, metadata in redb.

use crate::{
    check_bucket_name, check_key, etag_of, DeleteOutcome, ListPage, Object, ObjectInfo,
    ObjectStore, PutItem, PutOptions, Result, Staged, StagedBody, StoreError, VersionEntry,
    Versioning,
};
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fs::{self, File};
use std::path::{Path, PathBuf};

const BUCKETS: TableDefinition<&str, &[u8]> = TableDefinition::new("buckets");
const OBJECTS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("objects");
/// Non-current versions and delete markers: (bucket, key, u64::MAX - seq) → StoredVersion,
/// so a key's versions iterate newest first. The current version stays in OBJECTS.
const VERSIONS: TableDefinition<(&str, &str, u64), &[u8]> = TableDefinition::new("versions");
const SEQ: TableDefinition<&str, u64> = TableDefinition::new("seq");
/// Small bodies kept with their metadata (a PUT then needs no file and no sync of its own,
/// only its share of a group commit): blob id → the bytes its body file would hold.
const INLINE: TableDefinition<&str, &[u8]> = TableDefinition::new("inline_bodies");
/// Records committed with the writes they describe ([`crate::Staged::outbox`]), by key,
/// until they are durable elsewhere ([`ObjectStore::outbox_release`]).
const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox");

/// Stored bytes up to which a streamed PUT's body is kept in [`INLINE`] rather than a file.
pub const INLINE_MAX: usize = 32 << 10;

type VersionsTable<'t> = redb::Table<'t, (&'static str, &'static str, u64), &'static [u8]>;

#[derive(Serialize, Deserialize)]
struct BucketRecord {
    created: String,
    #[serde(default)]
    versioning: Option<Versioning>,
}

/// A bucket's record; early stores kept only the creation time.
fn bucket_record(v: &[u8]) -> BucketRecord {
    serde_json::from_slice(v).unwrap_or_else(|_| BucketRecord {
        created: String::from_utf8_lossy(v).into_owned(),
        versioning: None,
    })
}

#[derive(Serialize, Deserialize, Clone)]
struct StoredVersion {
    blob: Option<String>,
    info: ObjectInfo,
    #[serde(default)]
    md5: Option<String>,
    #[serde(default)]
    delete_marker: bool,
}

fn new_version_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn vid_of(info: &ObjectInfo) -> String {
    info.version_id.clone().unwrap_or_else(|| "null".into())
}

fn next_seq(w: &redb::WriteTransaction) -> Result<u64> {
    let mut t = w.open_table(SEQ).map_err(db_err)?;
    let n = t
        .get("version")
        .map_err(db_err)?
        .map(|v| v.value())
        .unwrap_or(0)
        + 1;
    t.insert("version", n).map_err(db_err)?;
    Ok(n)
}

/// Forgets the inline bodies among `dead` (bodies no metadata names after `w`), in `w`
/// itself; body files among them are removed by the caller once `w` has committed.
fn drop_inline(w: &redb::WriteTransaction, dead: &[String]) -> Result<Vec<String>> {
    let mut t = w.open_table(INLINE).map_err(db_err)?;
    let mut files = Vec::new();
    for b in dead {
        if t.remove(b.as_str()).map_err(db_err)?.is_none() {
            files.push(b.clone());
        }
    }
    // The bodies that were files: the caller unlinks them once the commit is durable (an
    // inline body has no file, and an unlink of a missing one costs a path lookup).
    Ok(files)
}

/// Moves a current object into the version table.
fn archive(w: &redb::WriteTransaction, bucket: &str, key: &str, s: Stored) -> Result<()> {
    let seq = next_seq(w)?;
    let mut info = s.info;
    info.version_id = Some(vid_of(&info));
    let v = StoredVersion {
        blob: Some(s.blob),
        info,
        md5: s.md5,
        delete_marker: false,
    };
    let mut t = w.open_table(VERSIONS).map_err(db_err)?;
    t.insert(
        (bucket, key, u64::MAX - seq),
        serde_json::to_vec(&v).map_err(db_err)?.as_slice(),
    )
    .map_err(db_err)?;
    Ok(())
}

fn key_versions(t: &VersionsTable, bucket: &str, key: &str) -> Result<Vec<(u64, StoredVersion)>> {
    let mut out = Vec::new();
    for row in t
        .range((bucket, key, 0)..=(bucket, key, u64::MAX))
        .map_err(db_err)?
    {
        let (k, v) = row.map_err(db_err)?;
        out.push((
            k.value().2,
            serde_json::from_slice(v.value()).map_err(db_err)?,
        ));
    }
    Ok(out)
}

/// Removes a key's null versions (replaced when versioning is suspended); returns their blobs.
fn drop_null_versions(w: &redb::WriteTransaction, bucket: &str, key: &str) -> Result<Vec<String>> {
    let mut t = w.open_table(VERSIONS).map_err(db_err)?;
    let mut blobs = Vec::new();
    for (order, v) in key_versions(&t, bucket, key)? {
        if v.info.version_id.as_deref() == Some("null") {
            t.remove((bucket, key, order)).map_err(db_err)?;
            blobs.extend(v.blob);
        }
    }
    Ok(blobs)
}

/// After the current version went away: the newest remaining version becomes current unless
/// it is a delete marker.
fn promote(w: &redb::WriteTransaction, bucket: &str, key: &str) -> Result<()> {
    let mut vt = w.open_table(VERSIONS).map_err(db_err)?;
    let newest = key_versions(&vt, bucket, key)?.into_iter().next();
    if let Some((order, v)) = newest {
        if let (false, Some(blob)) = (v.delete_marker, v.blob) {
            vt.remove((bucket, key, order)).map_err(db_err)?;
            let mut ot = w.open_table(OBJECTS).map_err(db_err)?;
            let s = Stored {
                blob,
                info: v.info,
                md5: v.md5,
            };
            ot.insert(
                (bucket, key),
                serde_json::to_vec(&s).map_err(db_err)?.as_slice(),
            )
            .map_err(db_err)?;
        }
    }
    Ok(())
}

#[derive(Serialize, Deserialize, Clone)]
struct Stored {
    blob: String,
    info: ObjectInfo,
    /// The body's MD5 (quoted hex) when the reported ETag is not it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    md5: Option<String>,
}

/// One version's body id, attributes and body MD5 as `r` sees them (a delete marker is
/// [`StoreError::DeleteMarker`]).
fn find_version_in(
    r: &redb::ReadTransaction,
    bucket: &str,
    key: &str,
    version_id: &str,
) -> Result<(String, ObjectInfo, Option<String>)> {
    let ot = r.open_table(OBJECTS).map_err(db_err)?;
    let current = ot
        .get((bucket, key))
        .map_err(db_err)?
        .and_then(|v| serde_json::from_slice::<Stored>(v.value()).ok())
        .filter(|c| vid_of(&c.info) == version_id);
    if let Some(c) = current {
        return Ok((c.blob, c.info, c.md5));
    }
    let vt = r.open_table(VERSIONS).map_err(db_err)?;
    for row in vt
        .range((bucket, key, 0)..=(bucket, key, u64::MAX))
        .map_err(db_err)?
    {
        let (_, v) = row.map_err(db_err)?;
        let v: StoredVersion = serde_json::from_slice(v.value()).map_err(db_err)?;
        if vid_of(&v.info) == version_id {
            return match (v.delete_marker, v.blob) {
                (false, Some(b)) => Ok((b, v.info, v.md5)),
                _ => Err(StoreError::DeleteMarker(version_id.into())),
            };
        }
    }
    Err(StoreError::NoSuchVersion(version_id.into()))
}

/// The current version of `key` as `r` sees it.
fn stored_in(r: &redb::ReadTransaction, bucket: &str, key: &str) -> Result<Stored> {
    let t = r.open_table(OBJECTS).map_err(db_err)?;
    let v = t
        .get((bucket, key))
        .map_err(db_err)?
        .ok_or_else(|| StoreError::NoSuchKey {
            bucket: bucket.into(),
            key: key.into(),
        })?;
    serde_json::from_slice(v.value()).map_err(db_err)
}

/// A version found to be read: its body id, attributes, body MD5 and, when the body is kept
/// inline, its stored bytes.
struct Located {
    blob: String,
    info: ObjectInfo,
    md5: Option<String>,
    inline: Option<Vec<u8>>,
}

/// `NoSuchBucket` unless `bucket` exists, as seen by read transaction `r`.
fn require_bucket(r: &redb::ReadTransaction, bucket: &str) -> Result<()> {
    match r
        .open_table(BUCKETS)
        .map_err(db_err)?
        .get(bucket)
        .map_err(db_err)?
    {
        Some(_) => Ok(()),
        None => Err(StoreError::NoSuchBucket(bucket.into())),
    }
}

/// Object store on the local disk. Safe to share between threads.
pub struct EmbeddedStore {
    db: Database,
    /// Staged writes waiting to be committed together (`commit_grouped`).
    queue: std::sync::Mutex<CommitQueue>,
    blobs: PathBuf,
    tmp: PathBuf,
    /// Encrypts bodies written from now on; bodies written without it stay readable.
    cipher: Option<std::sync::Arc<dyn crate::BodyCipher>>,
    /// Outbox records durable elsewhere, dropped by the next commit of versions (a PUT, a
    /// copy, a completed upload) or at the next open; a commit that panics forgets them
    /// until then.
    released: std::sync::Mutex<Vec<u64>>,
}

#[derive(Default)]
struct CommitQueue {
    pending: Vec<Queued>,
    /// A writer is committing a group (the others wait on their slots).
    leading: bool,
    /// Tests: called by the leader after each group is committed, before its writes are
    /// answered (so a test that waits for an answer sees the call), outside the lock.
    #[cfg(test)]
    after_group: Option<Box<dyn FnMut() + Send>>,
}

/// A change waiting in the group commit queue.
struct Queued {
    change: Change,
    slot: std::sync::Arc<Slot>,
    /// A task's write holds the store, so whoever leads can hand the lead on to a new
    /// blocking-pool leader ([`spawn_leader`]) rather than lead on for it.
    owner: Option<std::sync::Arc<EmbeddedStore>>,
}

/// Where one queued write learns its outcome, or that it leads the next group: each waiter
/// is woken once, by name (no wake-up convoy on a shared condition variable). A thread
/// waits on the condition variable; a task (`ObjectStore::commit_staged_async`) registers
/// its waker and is never asked to lead (it has no thread to block).
#[derive(Default)]
struct Slot {
    state: std::sync::Mutex<(SlotState, Option<std::task::Waker>)>,
    cv: std::sync::Condvar,
}

/// What a group commit makes: a staged PUT's new version, or a DeleteObject (the current
/// object removed, or a delete marker added), each with the request's outcome record when
/// the caller gives one ([`crate::Staged::outbox`]).
enum Change {
    Put {
        item: Box<Staged>,
        blob: String,
        inline: Option<Vec<u8>>,
    },
    Delete {
        bucket: String,
        key: String,
        outbox: Option<(u64, Vec<u8>)>,
    },
}

impl Change {
    /// A staged PUT as a change for the group commit; given back when its body is still in
    /// memory (not staged by this store: written with [`EmbeddedStore::put_kept`]).
    fn of_staged(mut s: Box<Staged>) -> std::result::Result<Change, Box<Staged>> {
        match std::mem::replace(&mut s.body, StagedBody::Memory(Vec::new())) {
            StagedBody::Blob(blob) => Ok(Change::Put {
                item: s,
                blob,
                inline: None,
            }),
            StagedBody::Inline { blob, stored } => Ok(Change::Put {
                item: s,
                blob,
                inline: Some(stored),
            }),
            body => {
                s.body = body;
                Err(s)
            }
        }
    }
}

/// What a committed [`Change`] made.
#[derive(Debug)]
enum Made {
    Put(ObjectInfo),
    Delete(DeleteOutcome),
}

fn made_put(r: Result<Made>) -> Result<ObjectInfo> {
    match r? {
        Made::Put(info) => Ok(info),
        Made::Delete(_) => Err(mixed_up()),
    }
}

fn made_delete(r: Result<Made>) -> Result<DeleteOutcome> {
    match r? {
        Made::Delete(d) => Ok(d),
        Made::Put(_) => Err(mixed_up()),
    }
}

/// A slot answered with another kind of change than its own (never: each slot is answered
/// with the outcome of the change queued with it).
fn mixed_up() -> StoreError {
    StoreError::Io(std::io::Error::other(
        "the group commit answered a change with another's outcome",
    ))
}

#[derive(Default)]
enum SlotState {
    #[default]
    Waiting,
    Lead,
    Done(Result<Made>),
}

impl Slot {
    fn set(&self, state: SlotState) {
        let waker = {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            st.0 = state;
            st.1.take()
        };
        self.cv.notify_one();
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Waits until the write is done (`Some`) or its writer is to lead (`None`).
    fn wait(&self) -> Option<Result<Made>> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            match std::mem::take(&mut st.0) {
                SlotState::Done(r) => return Some(r),
                SlotState::Lead => return None,
                SlotState::Waiting => st = self.cv.wait(st).unwrap_or_else(|p| p.into_inner()),
            }
        }
    }
}

/// Starts a leader of `store`'s group commit on the blocking pool (on a thread of its own
/// outside a runtime). A pool that drops the job unrun (its runtime shutting down) or
/// cannot take it starts a thread to lead instead, and where no thread can be started the
/// caller leads: the queue, marked as led, is not left led by nobody.
fn spawn_leader(store: std::sync::Arc<EmbeddedStore>) {
    struct Leader(Option<std::sync::Arc<EmbeddedStore>>);
    impl Leader {
        fn run(mut self) {
            if let Some(store) = self.0.take() {
                store.lead(None);
            }
        }
    }
    impl Drop for Leader {
        fn drop(&mut self) {
            if let Some(store) = self.0.take() {
                let s = store.clone();
                if std::thread::Builder::new()
                    .name("store-commit".into())
                    .spawn(move || {
                        s.lead(None);
                    })
                    .is_err()
                {
                    store.lead(None);
                }
            }
        }
    }
    let leader = Leader(Some(store));
    match tokio::runtime::Handle::try_current() {
        // A pool that cannot start a thread panics; the job, dropped on the way, leads.
        Ok(h) => drop(std::panic::catch_unwind(std::panic::AssertUnwindSafe(
            move || h.spawn_blocking(move || leader.run()),
        ))),
        // Outside a runtime the job's own drop starts its thread.
        Err(_) => drop(leader),
    }
}

/// The outcome of a write queued by a task (see [`Slot`]).
struct SlotFuture(std::sync::Arc<Slot>);

impl std::future::Future for SlotFuture {
    type Output = Result<Made>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let mut st = self.0.state.lock().unwrap_or_else(|p| p.into_inner());
        match std::mem::take(&mut st.0) {
            SlotState::Done(r) => std::task::Poll::Ready(r),
            // Never handed to a task's slot; were it ever, the write would wait forever.
            SlotState::Lead => std::task::Poll::Ready(Err(StoreError::Io(std::io::Error::other(
                "a queued write was asked to lead",
            )))),
            SlotState::Waiting => {
                st.1 = Some(cx.waker().clone());
                std::task::Poll::Pending
            }
        }
    }
}

/// First bytes of an encrypted body file.
const SEALED_MAGIC: &[u8] = b"CAIRN-SSE1\0";
/// First bytes of a body sealed under a wrapped (SSE-KMS) key: then the wrapped key's length
/// (u32, big-endian), the wrapped key, the sealed body.
const WRAPPED_MAGIC: &[u8] = b"CAIRN-SSE2\0";

/// Whether stored body bytes are sealed under a wrapped key (SSE-KMS), which reading them
/// unwraps through the caller's cipher.
fn names_wrapped_key(stored: &[u8]) -> bool {
    if let Some(rest) = stored.strip_prefix(crate::body::STREAM_MAGIC) {
        return rest
            .get(..4)
            .is_some_and(|l| u32::from_be_bytes([l[0], l[1], l[2], l[3]]) > 0);
    }
    stored.starts_with(WRAPPED_MAGIC)
}

fn db_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Db(e.to_string())
}

impl EmbeddedStore {
    /// Opens (creating) the store under `dir`; removes temp files and bodies no metadata
    /// names (left by a crash between writing a body and committing its metadata).
    pub fn open(dir: impl AsRef<Path>) -> Result<EmbeddedStore> {
        Self::open_with_cipher(dir, None)
    }

    /// As [`EmbeddedStore::open`], encrypting every body written with `cipher` (and reading
    /// encrypted ones with it).
    pub fn open_with_cipher(
        dir: impl AsRef<Path>,
        cipher: Option<std::sync::Arc<dyn crate::BodyCipher>>,
    ) -> Result<EmbeddedStore> {
        let dir = dir.as_ref();
        let blobs = dir.join("blobs");
        let tmp = dir.join("tmp");
        fs::create_dir_all(&blobs)?;
        fs::create_dir_all(&tmp)?;
        let db = cairn_db::create(&dir.join("meta.redb")).map_err(db_err)?;
        {
            let w = db.begin_write().map_err(db_err)?;
            w.open_table(BUCKETS).map_err(db_err)?;
            w.open_table(OBJECTS).map_err(db_err)?;
            w.open_table(VERSIONS).map_err(db_err)?;
            w.open_table(SEQ).map_err(db_err)?;
            w.open_table(INLINE).map_err(db_err)?;
            w.open_table(OUTBOX).map_err(db_err)?;
            w.commit().map_err(db_err)?;
        }
        let store = EmbeddedStore {
            db,
            queue: Default::default(),
            blobs,
            tmp,
            cipher,
            released: Default::default(),
        };
        store.sweep()?;
        Ok(store)
    }

    fn sweep(&self) -> Result<()> {
        for e in fs::read_dir(&self.tmp)? {
            fs::remove_file(e?.path())?;
        }
        let r = self.db.begin_read().map_err(db_err)?;
        let t = r.open_table(OBJECTS).map_err(db_err)?;
        let mut live = HashSet::new();
        for item in t.iter().map_err(db_err)? {
            let (_, v) = item.map_err(db_err)?;
            if let Ok(s) = serde_json::from_slice::<Stored>(v.value()) {
                live.insert(s.blob);
            }
        }
        let vt = r.open_table(VERSIONS).map_err(db_err)?;
        for item in vt.iter().map_err(db_err)? {
            let (_, v) = item.map_err(db_err)?;
            if let Ok(StoredVersion { blob: Some(b), .. }) = serde_json::from_slice(v.value()) {
                live.insert(b);
            }
        }
        for e in fs::read_dir(&self.blobs)? {
            let e = e?;
            if !live.contains(e.file_name().to_string_lossy().as_ref()) {
                tracing::info!(blob = %e.path().display(), "removing unreferenced object body");
                fs::remove_file(e.path())?;
            }
        }
        // Inline bodies come and go in their metadata's transactions; none should be left
        // unnamed, but one that is goes too.
        let mut dead = Vec::new();
        for item in r
            .open_table(INLINE)
            .map_err(db_err)?
            .iter()
            .map_err(db_err)?
        {
            let (k, _) = item.map_err(db_err)?;
            if !live.contains(k.value()) {
                dead.push(k.value().to_string());
            }
        }
        drop(r);
        if !dead.is_empty() {
            tracing::info!(bodies = dead.len(), "removing unreferenced inline bodies");
            let w = self.db.begin_write().map_err(db_err)?;
            drop_inline(&w, &dead)?;
            w.commit().map_err(db_err)?;
        }
        Ok(())
    }

    fn stored(&self, bucket: &str, key: &str) -> Result<Stored> {
        let r = self.db.begin_read().map_err(db_err)?;
        require_bucket(&r, bucket)?;
        stored_in(&r, bucket, key)
    }

    /// One version (the current one when `version_id` is `None`) with, for a body kept
    /// inline, its stored bytes — read in the same transaction as the metadata naming them,
    /// so a concurrent overwrite cannot take the body away in between.
    fn locate(&self, bucket: &str, key: &str, version_id: Option<&str>) -> Result<Located> {
        let r = self.db.begin_read().map_err(db_err)?;
        require_bucket(&r, bucket)?;
        let (blob, info, md5) = match version_id {
            None => {
                let s = stored_in(&r, bucket, key)?;
                (s.blob, s.info, s.md5)
            }
            Some(v) => find_version_in(&r, bucket, key, v)?,
        };
        let inline = r
            .open_table(INLINE)
            .map_err(db_err)?
            .get(blob.as_str())
            .map_err(db_err)?
            .map(|v| v.value().to_vec());
        Ok(Located {
            blob,
            info,
            md5,
            inline,
        })
    }

    /// One version's body file, attributes and body MD5 (a read transaction; a delete marker
    /// is [`StoreError::DeleteMarker`]).
    fn find_version(
        &self,
        bucket: &str,
        key: &str,
        version_id: &str,
    ) -> Result<(String, ObjectInfo, Option<String>)> {
        let r = self.db.begin_read().map_err(db_err)?;
        require_bucket(&r, bucket)?;
        find_version_in(&r, bucket, key, version_id)
    }

    /// A body of an older whole-file format: decrypted when it was sealed (a failed tag is
    /// corruption).
    fn open_legacy(&self, raw: Vec<u8>, blob: &str, bucket: &str, key: &str) -> Result<Vec<u8>> {
        let corrupt = |reason: String| StoreError::Corrupt {
            bucket: bucket.into(),
            key: key.into(),
            reason,
        };
        if let Some(rest) = raw.strip_prefix(WRAPPED_MAGIC) {
            let c = self
                .cipher
                .as_ref()
                .ok_or_else(|| corrupt("the body is encrypted and no key was given".into()))?;
            let n = rest
                .get(..4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
                .ok_or_else(|| corrupt("truncated wrapped key".into()))?;
            let wrapped = rest
                .get(4..4 + n)
                .ok_or_else(|| corrupt("truncated wrapped key".into()))?;
            return c
                .open_wrapped(&rest[4 + n..], blob.as_bytes(), wrapped)
                .map_err(StoreError::KeyUnavailable);
        }
        let Some(sealed) = raw.strip_prefix(SEALED_MAGIC) else {
            return Ok(raw);
        };
        let c = self
            .cipher
            .as_ref()
            .ok_or_else(|| corrupt("the body is encrypted and no key was given".into()))?;
        c.open(sealed, blob.as_bytes())
            .map_err(|e| corrupt(format!("the encrypted body does not authenticate: {e}")))
    }

    /// A stream of one body file (see [`crate::body`]).
    fn reader(
        &self,
        at: Located,
        bucket: &str,
        key: &str,
        range: Option<(u64, u64)>,
    ) -> Result<crate::BodyReader> {
        let Located {
            blob,
            info,
            md5,
            inline,
        } = at;
        let blob = blob.as_str();
        let legacy = |raw: Vec<u8>| self.open_legacy(raw, blob, bucket, key);
        let (cipher, md5) = (
            self.cipher.as_deref(),
            Some(md5.as_deref().unwrap_or(&info.etag)),
        );
        match inline {
            Some(stored) => crate::BodyReader::from_bytes(
                stored,
                cipher,
                blob.as_bytes(),
                info.size,
                range,
                md5,
                &legacy,
            ),
            None => crate::BodyReader::open(
                &self.blobs.join(blob),
                cipher,
                blob.as_bytes(),
                info.size,
                range,
                md5,
                &legacy,
            ),
        }
        .map_err(|e| match e {
            StoreError::Corrupt { reason, .. } => StoreError::Corrupt {
                bucket: bucket.into(),
                key: key.into(),
                reason,
            },
            e => e,
        })
    }

    /// A whole body read into memory (checked: tags, or size and MD5).
    fn read_whole(&self, at: Located, bucket: &str, key: &str) -> Result<Object> {
        use std::io::Read;
        let info = at.info.clone();
        let mut r = self.reader(at, bucket, key, None)?;
        let mut body = Vec::with_capacity(info.size.min(64 << 20) as usize);
        r.read_to_end(&mut body).map_err(|e| StoreError::Corrupt {
            bucket: bucket.into(),
            key: key.into(),
            reason: format!("body does not read back as written: {e}"),
        })?;
        Ok(Object { info, body })
    }

    /// How many bodies are kept with their metadata (see [`INLINE_MAX`]).
    pub fn inline_bodies(&self) -> Result<usize> {
        let r = self.db.begin_read().map_err(db_err)?;
        let n = r
            .open_table(INLINE)
            .map_err(db_err)?
            .len()
            .map_err(db_err)?;
        Ok(n as usize)
    }

    fn sync_dir(p: &Path) -> Result<()> {
        File::open(p)?.sync_all()?;
        Ok(())
    }
}

/// The metadata of a new current version whose body file is already in place.
#[derive(Clone)]
struct NewVersion<'a> {
    bucket: &'a str,
    key: &'a str,
    opts: &'a PutOptions,
    size: u64,
    /// Quoted hex MD5 of the body.
    md5: String,
    blob: String,
    /// The body's stored bytes when it is kept in [`INLINE`], not in a file.
    inline: Option<&'a [u8]>,
    /// A record committed with the version, under its key ([`OUTBOX`]).
    outbox: Option<(u64, &'a [u8])>,
}

impl EmbeddedStore {
    /// Writes bodies to temp files (synced concurrently, at most 8 at a time, encrypted when
    /// a cipher is set), then renames them into `blobs/` with one directory sync. They stay
    /// invisible until metadata names them (and are swept at open if none ever does).
    fn write_blobs(&self, bodies: &[(&[u8], Option<&[u8]>)]) -> Result<Vec<String>> {
        let blobs: Vec<String> = bodies
            .iter()
            .map(|_| uuid::Uuid::new_v4().simple().to_string())
            .collect();
        let write = |blob: &str, (body, wrapped): (&[u8], Option<&[u8]>)| -> Result<()> {
            let mut w = crate::BodyWriter::create(
                &self.tmp.join(blob),
                self.cipher.as_deref(),
                blob.as_bytes(),
                wrapped,
            )?;
            w.write(body)?;
            w.finish()?;
            Ok(())
        };
        const SYNC_WIDTH: usize = 8;
        let mut written: Vec<Result<()>> = Vec::with_capacity(bodies.len());
        for (chunk, chunk_blobs) in bodies.chunks(SYNC_WIDTH).zip(blobs.chunks(SYNC_WIDTH)) {
            if chunk.len() == 1 {
                written.push(write(&chunk_blobs[0], chunk[0]));
                continue;
            }
            std::thread::scope(|s| {
                let hs: Vec<_> = chunk
                    .iter()
                    .zip(chunk_blobs)
                    .map(|(body, b)| s.spawn(move || write(b, *body)))
                    .collect();
                for h in hs {
                    written.push(h.join().unwrap_or_else(|_| {
                        Err(StoreError::Io(std::io::Error::other("writer panicked")))
                    }));
                }
            });
        }
        if let Some(Err(e)) = written.into_iter().find(|r| r.is_err()) {
            self.remove_blobs(&blobs);
            return Err(e);
        }
        for b in &blobs {
            if let Err(e) = fs::rename(self.tmp.join(b), self.blobs.join(b)) {
                self.remove_blobs(&blobs);
                return Err(e.into());
            }
        }
        if let Err(e) = Self::sync_dir(&self.blobs) {
            self.remove_blobs(&blobs);
            return Err(e);
        }
        Ok(blobs)
    }

    fn remove_blobs(&self, blobs: &[String]) {
        for b in blobs {
            let _ = fs::remove_file(self.tmp.join(b));
            let _ = fs::remove_file(self.blobs.join(b));
        }
    }

    /// [`ObjectStore::put_many`], with `kept` committed as the outbox record of the last item
    /// (a staged write held in memory, [`ObjectStore::commit_staged`]).
    fn put_kept(
        &self,
        items: &[PutItem<'_>],
        kept: Option<(u64, &[u8])>,
    ) -> Result<Vec<ObjectInfo>> {
        for i in items {
            check_key(i.key)?;
            if !self.bucket_exists(i.bucket)? {
                return Err(StoreError::NoSuchBucket(i.bucket.into()));
            }
        }
        let bodies: Vec<(&[u8], Option<&[u8]>)> = items
            .iter()
            .map(|i| (i.body, i.opts.wrapped_key.as_deref()))
            .collect();
        let blobs = self.write_blobs(&bodies)?;
        let last = items.len().saturating_sub(1);
        let metas: Vec<NewVersion<'_>> = items
            .iter()
            .zip(&blobs)
            .enumerate()
            .map(|(n, (i, blob))| NewVersion {
                bucket: i.bucket,
                key: i.key,
                opts: i.opts,
                size: i.body.len() as u64,
                md5: etag_of(i.body),
                blob: blob.clone(),
                inline: None,
                outbox: if n == last { kept } else { None },
            })
            .collect();
        self.commit_versions(&metas)
    }

    /// Makes each body file the current version of its key, in one transaction (versioning
    /// rules: the old current version is archived, or dropped when unversioned or a null
    /// version is replaced). On failure the new body files are removed.
    fn commit_versions(&self, items: &[NewVersion<'_>]) -> Result<Vec<ObjectInfo>> {
        let ops: Vec<Op<'_>> = items.iter().map(|i| Op::Put(i.clone())).collect();
        match self.try_commit_ops(&ops) {
            Ok(made) => made.into_iter().map(|m| made_put(Ok(m))).collect(),
            Err(e) => {
                self.remove_blobs(&Op::blobs(&ops));
                Err(e)
            }
        }
    }

    /// Changes made together (group commit): concurrent `commit_staged` and
    /// `delete_object_async` calls queue here, and one of them (the leader) syncs the body
    /// directory once and commits everything queued in one transaction, in the order
    /// queued, then answers each through its own slot and hands the lead to the first
    /// change queued meanwhile. A batch that fails is committed one by one, so one change's
    /// failure (a precondition) is its own.
    fn commit_grouped(&self, change: Change) -> Result<Made> {
        let slot = std::sync::Arc::new(Slot::default());
        if !self.enqueue(change, &slot, None) {
            if let Some(r) = slot.wait() {
                return r;
            }
        }
        self.lead(Some(&slot)).unwrap_or_else(|| {
            Err(StoreError::Io(std::io::Error::other(
                "a write left the group commit unanswered",
            )))
        })
    }

    /// Queues a change for the group commit; whether its writer is to lead now.
    fn enqueue(
        &self,
        change: Change,
        slot: &std::sync::Arc<Slot>,
        owner: Option<std::sync::Arc<EmbeddedStore>>,
    ) -> bool {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        q.pending.push(Queued {
            change,
            slot: slot.clone(),
            owner,
        });
        !std::mem::replace(&mut q.leading, true)
    }

    /// [`EmbeddedStore::commit_grouped`] for a task: the change waits in the queue without
    /// a thread; when nobody leads, a blocking-pool thread is started to lead.
    fn commit_grouped_async(self: std::sync::Arc<Self>, change: Change) -> SlotFuture {
        let slot = std::sync::Arc::new(Slot::default());
        if self.enqueue(change, &slot, Some(self.clone())) {
            spawn_leader(self);
        }
        SlotFuture(slot)
    }

    /// Leading: commits everything queued (`mine` among it, when a caller's own write),
    /// answers each, and hands the lead to the first write queued meanwhile. When that
    /// write is a task's, a leader with no write of its own (`mine` is `None`) goes on
    /// leading, and a caller with its own outcome starts one ([`spawn_leader`], outside
    /// the queue's lock) and returns: it never leads for others' writes after its own.
    /// Returns `mine`'s outcome.
    fn lead(&self, mine: Option<&std::sync::Arc<Slot>>) -> Option<Result<Made>> {
        let mut outcome = None;
        loop {
            let batch =
                std::mem::take(&mut self.queue.lock().unwrap_or_else(|p| p.into_inner()).pending);
            // A panic below must not leave the queue led by nobody: its batch fails instead.
            let outcomes = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.commit_batch(&batch)
            }))
            .unwrap_or_else(|_| {
                batch
                    .iter()
                    .map(|_| {
                        Err(StoreError::Io(std::io::Error::other(
                            "the group commit failed unexpectedly",
                        )))
                    })
                    .collect()
            });
            #[cfg(test)]
            self.after_group();
            for (q, r) in batch.iter().zip(outcomes) {
                if mine.is_some_and(|m| std::sync::Arc::ptr_eq(&q.slot, m)) {
                    outcome = Some(r);
                } else {
                    q.slot.set(SlotState::Done(r));
                }
            }
            let handoff = {
                let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
                match q.pending.first() {
                    Some(next) => match &next.owner {
                        Some(_) if mine.is_none() => continue,
                        Some(store) => Some(store.clone()),
                        None => {
                            next.slot.set(SlotState::Lead);
                            None
                        }
                    },
                    None => {
                        q.leading = false;
                        None
                    }
                }
            };
            if let Some(store) = handoff {
                spawn_leader(store);
            }
            return outcome;
        }
    }

    #[cfg(test)]
    fn after_group(&self) {
        let hook = self.queue.lock().unwrap().after_group.take();
        if let Some(mut h) = hook {
            h();
            self.queue.lock().unwrap().after_group = Some(h);
        }
    }

    fn commit_batch(&self, batch: &[Queued]) -> Vec<Result<Made>> {
        let ops: Vec<Op<'_>> = batch
            .iter()
            .map(|q| match &q.change {
                Change::Put { item, blob, inline } => Op::Put(NewVersion {
                    bucket: &item.bucket,
                    key: &item.key,
                    opts: &item.opts,
                    size: item.size,
                    md5: item.md5.clone(),
                    blob: blob.clone(),
                    inline: inline.as_deref(),
                    outbox: item.outbox.as_ref().map(|(k, r)| (*k, r.as_slice())),
                }),
                Change::Delete {
                    bucket,
                    key,
                    outbox,
                } => Op::Delete {
                    bucket,
                    key,
                    outbox: outbox.as_ref().map(|(k, r)| (*k, r.as_slice())),
                },
            })
            .collect();
        // The staged files' names become durable with one directory sync for the batch
        // (inline bodies and deletions need none: they commit with their metadata). When it
        // fails, only the writes whose files it was for fail.
        let has_file = |o: &Op<'_>| matches!(o, Op::Put(i) if i.inline.is_none());
        let synced = if ops.iter().any(has_file) {
            Self::sync_dir(&self.blobs)
        } else {
            Ok(())
        };
        let Err(e) = synced else {
            return self.commit_in_order(&ops);
        };
        let msg = e.to_string();
        let (filed, rest): (Vec<Op<'_>>, Vec<Op<'_>>) = ops.iter().cloned().partition(has_file);
        self.remove_blobs(&Op::blobs(&filed));
        let mut made = self.commit_in_order(&rest).into_iter();
        ops.iter()
            .map(|o| {
                if has_file(o) {
                    Err(StoreError::Io(std::io::Error::other(msg.clone())))
                } else {
                    made.next().unwrap_or_else(|| Err(mixed_up()))
                }
            })
            .collect()
    }

    /// Makes `ops` in one transaction ([`EmbeddedStore::try_commit_ops`]); when that fails,
    /// one by one, so one change's failure (a precondition) is its own. A PUT that is not
    /// made has its new body file removed.
    fn commit_in_order(&self, ops: &[Op<'_>]) -> Vec<Result<Made>> {
        match self.try_commit_ops(ops) {
            Ok(made) => made.into_iter().map(Ok).collect(),
            Err(_) if ops.len() > 1 => ops
                .iter()
                .map(|o| {
                    let one = std::slice::from_ref(o);
                    let r = self.try_commit_ops(one).map(|mut m| m.remove(0));
                    if r.is_err() {
                        self.remove_blobs(&Op::blobs(one));
                    }
                    r
                })
                .collect(),
            Err(e) => {
                self.remove_blobs(&Op::blobs(ops));
                vec![Err(e)]
            }
        }
    }

    /// Makes `ops` in one transaction, in order: each PUT's body the current version of
    /// its key, each DeleteObject's removal or delete marker (see
    /// [`ObjectStore::delete_object`]), each op's outbox record kept with it.
    fn try_commit_ops(&self, ops: &[Op<'_>]) -> Result<Vec<Made>> {
        let now = chrono::Utc::now();
        let released =
            std::mem::take(&mut *self.released.lock().unwrap_or_else(|p| p.into_inner()));
        let result = (|| -> Result<(Vec<Made>, Vec<String>)> {
            let w = self.db.begin_write().map_err(db_err)?;
            let mut dead = vec![];
            let mut made = Vec::with_capacity(ops.len());
            for op in ops {
                let outbox = match op {
                    Op::Put(i) => {
                        made.push(Made::Put(put_in(&w, i, now, &mut dead)?));
                        i.outbox
                    }
                    Op::Delete {
                        bucket,
                        key,
                        outbox,
                    } => {
                        made.push(Made::Delete(delete_in(&w, bucket, key, now, &mut dead)?));
                        *outbox
                    }
                };
                if let Some((k, rec)) = outbox {
                    let mut ot = w.open_table(OUTBOX).map_err(db_err)?;
                    ot.insert(k, rec).map_err(db_err)?;
                }
            }
            let dead = drop_inline(&w, &dead)?;
            // Records durable elsewhere go with this commit (back in the list if it fails).
            let mut ot = w.open_table(OUTBOX).map_err(db_err)?;
            for k in &released {
                ot.remove(*k).map_err(db_err)?;
            }
            drop(ot);
            w.commit().map_err(db_err)?;
            Ok((made, dead))
        })();
        if result.is_err() && !released.is_empty() {
            self.released
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(released);
        }
        let (made, dead) = result?;
        for b in dead {
            let _ = fs::remove_file(self.blobs.join(b));
        }
        Ok(made)
    }
}

/// One change of a group commit, borrowed from its [`Change`] (or a caller's items).
#[derive(Clone)]
enum Op<'a> {
    Put(NewVersion<'a>),
    Delete {
        bucket: &'a str,
        key: &'a str,
        outbox: Option<(u64, &'a [u8])>,
    },
}

impl Op<'_> {
    /// The new body files of `ops` (removed when they are not committed).
    fn blobs(ops: &[Op<'_>]) -> Vec<String> {
        ops.iter()
            .filter_map(|o| match o {
                Op::Put(i) => Some(i.blob.clone()),
                Op::Delete { .. } => None,
            })
            .collect()
    }
}

/// A bucket's versioning state, read in `w` (NoSuchBucket when it has gone).
fn versioning_in(w: &redb::WriteTransaction, bucket: &str) -> Result<Option<Versioning>> {
    let bt = w.open_table(BUCKETS).map_err(db_err)?;
    let rec = bt.get(bucket).map_err(db_err)?;
    match rec {
        Some(v) => Ok(bucket_record(v.value()).versioning),
        None => Err(StoreError::NoSuchBucket(bucket.into())),
    }
}

/// Makes `i`'s body the current version of its key in `w` (the old current version
/// archived, or its body added to `dead` when unversioned or a null version is replaced).
fn put_in(
    w: &redb::WriteTransaction,
    i: &NewVersion<'_>,
    now: chrono::DateTime<chrono::Utc>,
    dead: &mut Vec<String>,
) -> Result<ObjectInfo> {
    let state = versioning_in(w, i.bucket)?;
    let old = {
        let t = w.open_table(OBJECTS).map_err(db_err)?;
        let old = t
            .get((i.bucket, i.key))
            .map_err(db_err)?
            .and_then(|v| serde_json::from_slice::<Stored>(v.value()).ok());
        old
    };
    if old.is_some() && i.opts.if_none_match {
        return Err(StoreError::PreconditionFailed);
    }
    let info = ObjectInfo {
        key: i.key.into(),
        size: i.size,
        etag: i.opts.etag.clone().unwrap_or_else(|| i.md5.clone()),
        last_modified: now,
        content_type: i.opts.content_type.clone(),
        content_encoding: i.opts.content_encoding.clone(),
        metadata: i.opts.metadata.clone(),
        version_id: match state {
            None => None,
            Some(Versioning::Enabled) => Some(new_version_id()),
            Some(Versioning::Suspended) => Some("null".into()),
        },
        system: i.opts.system.clone(),
    };
    // The previous current version: gone (unversioned, or a null version being
    // replaced), or kept as a non-current version.
    let old = match (state, old) {
        (None, Some(o)) => Some(o.blob),
        (Some(st), Some(o)) => {
            if st == Versioning::Suspended && vid_of(&o.info) == "null" {
                Some(o.blob)
            } else {
                archive(w, i.bucket, i.key, o)?;
                None
            }
        }
        (_, None) => None,
    };
    if state == Some(Versioning::Suspended) {
        dead.extend(drop_null_versions(w, i.bucket, i.key)?);
    }
    let mut t = w.open_table(OBJECTS).map_err(db_err)?;
    let value = serde_json::to_vec(&Stored {
        blob: i.blob.clone(),
        info: info.clone(),
        md5: i.opts.etag.as_ref().map(|_| i.md5.clone()),
    })
    .map_err(db_err)?;
    t.insert((i.bucket, i.key), value.as_slice())
        .map_err(db_err)?;
    if let Some(stored) = i.inline {
        let mut it = w.open_table(INLINE).map_err(db_err)?;
        it.insert(i.blob.as_str(), stored).map_err(db_err)?;
    }
    dead.extend(old);
    Ok(info)
}

/// DeleteObject in `w`: removes the current object (its body added to `dead`), or in a
/// versioned bucket archives it behind a new delete marker.
fn delete_in(
    w: &redb::WriteTransaction,
    bucket: &str,
    key: &str,
    now: chrono::DateTime<chrono::Utc>,
    dead: &mut Vec<String>,
) -> Result<DeleteOutcome> {
    let state = versioning_in(w, bucket)?;
    let old = {
        let mut t = w.open_table(OBJECTS).map_err(db_err)?;
        let old = t
            .remove((bucket, key))
            .map_err(db_err)?
            .and_then(|v| serde_json::from_slice::<Stored>(v.value()).ok());
        old
    };
    let Some(st) = state else {
        dead.extend(old.map(|o| o.blob));
        return Ok(DeleteOutcome::default());
    };
    if let Some(o) = old {
        if st == Versioning::Suspended && vid_of(&o.info) == "null" {
            dead.push(o.blob);
        } else {
            archive(w, bucket, key, o)?;
        }
    }
    if st == Versioning::Suspended {
        dead.extend(drop_null_versions(w, bucket, key)?);
    }
    let vid = match st {
        Versioning::Enabled => new_version_id(),
        Versioning::Suspended => "null".into(),
    };
    let marker = StoredVersion {
        blob: None,
        info: ObjectInfo {
            key: key.into(),
            size: 0,
            etag: String::new(),
            last_modified: now,
            content_type: None,
            content_encoding: None,
            metadata: Default::default(),
            version_id: Some(vid.clone()),
            system: Default::default(),
        },
        md5: None,
        delete_marker: true,
    };
    let seq = next_seq(w)?;
    let mut vt = w.open_table(VERSIONS).map_err(db_err)?;
    vt.insert(
        (bucket, key, u64::MAX - seq),
        serde_json::to_vec(&marker).map_err(db_err)?.as_slice(),
    )
    .map_err(db_err)?;
    Ok(DeleteOutcome {
        version_id: Some(vid),
        delete_marker: true,
    })
}

impl ObjectStore for EmbeddedStore {
    fn create_bucket(&self, bucket: &str) -> Result<()> {
        check_bucket_name(bucket)?;
        let w = self.db.begin_write().map_err(db_err)?;
        {
            let mut t = w.open_table(BUCKETS).map_err(db_err)?;
            if t.get(bucket).map_err(db_err)?.is_none() {
                let rec = BucketRecord {
                    created: chrono::Utc::now().to_rfc3339(),
                    versioning: None,
                };
                t.insert(bucket, serde_json::to_vec(&rec).map_err(db_err)?.as_slice())
                    .map_err(db_err)?;
            }
        }
        w.commit().map_err(db_err)
    }

    fn bucket_exists(&self, bucket: &str) -> Result<bool> {
        let r = self.db.begin_read().map_err(db_err)?;
        let t = r.open_table(BUCKETS).map_err(db_err)?;
        Ok(t.get(bucket).map_err(db_err)?.is_some())
    }

    fn list_buckets(&self) -> Result<Vec<(String, chrono::DateTime<chrono::Utc>)>> {
        let r = self.db.begin_read().map_err(db_err)?;
        let t = r.open_table(BUCKETS).map_err(db_err)?;
        let mut out = Vec::new();
        for row in t.iter().map_err(db_err)? {
            let (k, v) = row.map_err(db_err)?;
            let created = chrono::DateTime::parse_from_rfc3339(&bucket_record(v.value()).created)
                .ok()
                .map(|d| d.with_timezone(&chrono::Utc))
                .unwrap_or_default();
            out.push((k.value().to_string(), created));
        }
        Ok(out)
    }

    fn delete_bucket(&self, bucket: &str) -> Result<()> {
        let w = self.db.begin_write().map_err(db_err)?;
        {
            let objects = w.open_table(OBJECTS).map_err(db_err)?;
            let mut any = objects
                .range((bucket, "")..)
                .map_err(db_err)?
                .take(1)
                .filter_map(|r| r.ok())
                .filter(|(k, _)| k.value().0 == bucket);
            if any.next().is_some() {
                return Err(StoreError::BucketNotEmpty(bucket.into()));
            }
            drop(any);
            drop(objects);
            let versions = w.open_table(VERSIONS).map_err(db_err)?;
            let has_versions = versions
                .range((bucket, "", 0)..)
                .map_err(db_err)?
                .next()
                .and_then(|r| r.ok())
                .is_some_and(|(k, _)| k.value().0 == bucket);
            if has_versions {
                return Err(StoreError::BucketNotEmpty(bucket.into()));
            }
            drop(versions);
            let mut t = w.open_table(BUCKETS).map_err(db_err)?;
            if t.remove(bucket).map_err(db_err)?.is_none() {
                return Err(StoreError::NoSuchBucket(bucket.into()));
            }
        }
        w.commit().map_err(db_err)
    }

    fn put(&self, bucket: &str, key: &str, body: &[u8], opts: &PutOptions) -> Result<ObjectInfo> {
        let item = PutItem {
            bucket,
            key,
            body,
            opts,
        };
        Ok(self.put_many(std::slice::from_ref(&item))?.remove(0))
    }

    /// Writes every body to a temp file and syncs them concurrently, renames them into place
    /// with one directory sync, then commits all their metadata in one transaction.
    fn put_many(&self, items: &[PutItem<'_>]) -> Result<Vec<ObjectInfo>> {
        self.put_kept(items, None)
    }

    fn commit_staged(&self, s: Staged) -> Result<ObjectInfo> {
        match Change::of_staged(Box::new(s)) {
            Ok(change) => made_put(self.commit_grouped(change)),
            Err(s) => {
                let StagedBody::Memory(b) = &s.body else {
                    return Err(mixed_up());
                };
                let item = PutItem {
                    bucket: &s.bucket,
                    key: &s.key,
                    body: b,
                    opts: &s.opts,
                };
                let kept = s.outbox.as_ref().map(|(k, r)| (*k, r.as_slice()));
                Ok(self.put_kept(std::slice::from_ref(&item), kept)?.remove(0))
            }
        }
    }

    fn commit_staged_async(
        self: std::sync::Arc<Self>,
        s: Staged,
    ) -> futures::future::BoxFuture<'static, Result<ObjectInfo>> {
        match Change::of_staged(Box::new(s)) {
            Ok(change) => {
                let made = self.commit_grouped_async(change);
                Box::pin(async move { made_put(made.await) })
            }
            Err(s) => crate::commit_on_blocking_pool(self, *s),
        }
    }

    fn keeps_outbox(&self) -> bool {
        true
    }

    /// A staged body starts in memory (`BodyWriter::spillable`); the bucket and
    /// If-None-Match checks read the metadata database.
    fn stages_inline(&self) -> bool {
        true
    }

    fn outbox_record(&self, key: u64) -> Result<Option<Vec<u8>>> {
        let r = self.db.begin_read().map_err(db_err)?;
        let t = r.open_table(OUTBOX).map_err(db_err)?;
        Ok(t.get(key).map_err(db_err)?.map(|v| v.value().to_vec()))
    }

    fn outbox_release(&self, key: u64) {
        self.released
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(key);
    }

    fn outbox_clear(&self) -> Result<usize> {
        let w = self.db.begin_write().map_err(db_err)?;
        let n = {
            let mut t = w.open_table(OUTBOX).map_err(db_err)?;
            let n = t.len().map_err(db_err)? as usize;
            t.retain(|_, _| false).map_err(db_err)?;
            n
        };
        w.commit().map_err(db_err)?;
        self.released
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        Ok(n)
    }

    fn discard_staged(&self, s: Staged) {
        if let StagedBody::Blob(b) = s.body {
            let _ = fs::remove_file(self.blobs.join(b));
        }
    }

    fn get(&self, bucket: &str, key: &str) -> Result<Object> {
        let at = self.locate(bucket, key, None)?;
        self.read_whole(at, bucket, key)
    }

    fn stage_writer(
        &self,
        bucket: &str,
        key: &str,
        opts: &PutOptions,
    ) -> Result<crate::StagingWriter> {
        check_key(key)?;
        if !self.bucket_exists(bucket)? {
            return Err(StoreError::NoSuchBucket(bucket.into()));
        }
        if opts.if_none_match && self.stored(bucket, key).is_ok() {
            return Err(StoreError::PreconditionFailed);
        }
        let blob = uuid::Uuid::new_v4().simple().to_string();
        let tmp = self.tmp.join(&blob);
        let writer = crate::BodyWriter::spillable(
            &tmp,
            self.cipher.as_deref(),
            blob.as_bytes(),
            opts.wrapped_key.as_deref(),
            INLINE_MAX,
        )?;
        Ok(crate::StagingWriter {
            bucket: bucket.into(),
            key: key.into(),
            opts: opts.clone(),
            inner: Some(crate::WriterInner::Blob {
                writer: Box::new(writer),
                blob,
                tmp,
                dir: self.blobs.clone(),
            }),
        })
    }

    fn open_read(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
        range: &dyn Fn(u64) -> Option<(u64, u64)>,
    ) -> Result<(ObjectInfo, Box<dyn std::io::Read + Send>)> {
        let at = self.locate(bucket, key, version_id)?;
        let (info, range) = (at.info.clone(), range(at.info.size));
        let r = self.reader(at, bucket, key, range)?;
        Ok((info, Box::new(r)))
    }

    /// Reads the metadata database only (redb: its pages mostly in its cache, a miss a read
    /// from the page cache): the answer when the body is inline or the object is missing;
    /// `None` for a body file, and for an inline body sealed under a wrapped (SSE-KMS) key,
    /// whose unwrapping may read the key store. A body file's GET looks its metadata up
    /// again on the blocking pool (one redb lookup, against a file read of over 32 KiB).
    fn open_read_held(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
        range: &dyn Fn(u64) -> Option<(u64, u64)>,
    ) -> Option<Result<(ObjectInfo, Box<dyn std::io::Read + Send>)>> {
        let at = match self.locate(bucket, key, version_id) {
            Ok(at) if at.inline.as_deref().is_none_or(names_wrapped_key) => return None,
            Ok(at) => at,
            Err(e) => return Some(Err(e)),
        };
        let (info, range) = (at.info.clone(), range(at.info.size));
        Some(
            self.reader(at, bucket, key, range)
                .map(|r| (info, Box::new(r) as Box<dyn std::io::Read + Send>)),
        )
    }

    fn head(&self, bucket: &str, key: &str) -> Result<ObjectInfo> {
        Ok(self.stored(bucket, key)?.info)
    }

    fn delete(&self, bucket: &str, key: &str) -> Result<()> {
        self.delete_object(bucket, key).map(|_| ())
    }

    fn delete_object(&self, bucket: &str, key: &str) -> Result<DeleteOutcome> {
        made_delete(self.commit_grouped(Change::Delete {
            bucket: bucket.into(),
            key: key.into(),
            outbox: None,
        }))
    }

    fn delete_object_async(
        self: std::sync::Arc<Self>,
        bucket: String,
        key: String,
        outbox: Option<(u64, Vec<u8>)>,
    ) -> futures::future::BoxFuture<'static, Result<DeleteOutcome>> {
        let made = self.commit_grouped_async(Change::Delete {
            bucket,
            key,
            outbox,
        });
        Box::pin(async move { made_delete(made.await) })
    }

    fn versioning(&self, bucket: &str) -> Result<Option<Versioning>> {
        let r = self.db.begin_read().map_err(db_err)?;
        let t = r.open_table(BUCKETS).map_err(db_err)?;
        match t.get(bucket).map_err(db_err)? {
            Some(v) => Ok(bucket_record(v.value()).versioning),
            None => Err(StoreError::NoSuchBucket(bucket.into())),
        }
    }

    fn set_versioning(&self, bucket: &str, state: Versioning) -> Result<()> {
        let w = self.db.begin_write().map_err(db_err)?;
        {
            let mut t = w.open_table(BUCKETS).map_err(db_err)?;
            let mut rec = match t.get(bucket).map_err(db_err)? {
                Some(v) => bucket_record(v.value()),
                None => return Err(StoreError::NoSuchBucket(bucket.into())),
            };
            rec.versioning = Some(state);
            t.insert(bucket, serde_json::to_vec(&rec).map_err(db_err)?.as_slice())
                .map_err(db_err)?;
        }
        w.commit().map_err(db_err)
    }

    fn delete_version(&self, bucket: &str, key: &str, version_id: &str) -> Result<DeleteOutcome> {
        if !self.bucket_exists(bucket)? {
            return Err(StoreError::NoSuchBucket(bucket.into()));
        }
        let w = self.db.begin_write().map_err(db_err)?;
        let dead;
        let mut marker = false;
        {
            let mut ot = w.open_table(OBJECTS).map_err(db_err)?;
            let current = ot
                .get((bucket, key))
                .map_err(db_err)?
                .and_then(|v| serde_json::from_slice::<Stored>(v.value()).ok());
            match current {
                Some(c) if vid_of(&c.info) == version_id => {
                    ot.remove((bucket, key)).map_err(db_err)?;
                    dead = Some(c.blob);
                }
                _ => {
                    drop(ot);
                    let mut vt = w.open_table(VERSIONS).map_err(db_err)?;
                    let hit = key_versions(&vt, bucket, key)?
                        .into_iter()
                        .find(|(_, v)| vid_of(&v.info) == version_id);
                    let Some((order, v)) = hit else {
                        return Err(StoreError::NoSuchVersion(version_id.into()));
                    };
                    vt.remove((bucket, key, order)).map_err(db_err)?;
                    dead = v.blob;
                    marker = v.delete_marker;
                }
            }
        }
        let has_current = {
            let ot = w.open_table(OBJECTS).map_err(db_err)?;
            let present = ot.get((bucket, key)).map_err(db_err)?.is_some();
            present
        };
        if !has_current {
            promote(&w, bucket, key)?;
        }
        let dead = drop_inline(&w, dead.as_slice())?;
        w.commit().map_err(db_err)?;
        for b in dead {
            let _ = fs::remove_file(self.blobs.join(b));
        }
        Ok(DeleteOutcome {
            version_id: Some(version_id.into()),
            delete_marker: marker,
        })
    }

    fn update_system(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
        change: &mut dyn FnMut(&mut ObjectInfo) -> Result<()>,
    ) -> Result<ObjectInfo> {
        let w = self.db.begin_write().map_err(db_err)?;
        let info = {
            let mut ot = w.open_table(OBJECTS).map_err(db_err)?;
            let current = ot
                .get((bucket, key))
                .map_err(db_err)?
                .map(|v| serde_json::from_slice::<Stored>(v.value()))
                .transpose()
                .map_err(db_err)?;
            match current {
                Some(mut c) if version_id.is_none_or(|v| vid_of(&c.info) == v) => {
                    let before = c.info.clone();
                    change(&mut c.info)?;
                    if c.info == before {
                        return Ok(c.info);
                    }
                    let bytes = serde_json::to_vec(&c).map_err(db_err)?;
                    ot.insert((bucket, key), bytes.as_slice()).map_err(db_err)?;
                    c.info
                }
                current => {
                    let Some(vid) = version_id else {
                        let r = self.db.begin_read().map_err(db_err)?;
                        require_bucket(&r, bucket)?;
                        return Err(StoreError::NoSuchKey {
                            bucket: bucket.into(),
                            key: key.into(),
                        });
                    };
                    drop(current);
                    let mut vt = w.open_table(VERSIONS).map_err(db_err)?;
                    let mut found = None;
                    for row in vt
                        .range((bucket, key, 0)..=(bucket, key, u64::MAX))
                        .map_err(db_err)?
                    {
                        let (k, v) = row.map_err(db_err)?;
                        let v: StoredVersion = serde_json::from_slice(v.value()).map_err(db_err)?;
                        if vid_of(&v.info) == vid {
                            found = Some((k.value().2, v));
                            break;
                        }
                    }
                    let (seq, mut v) =
                        found.ok_or_else(|| StoreError::NoSuchVersion(vid.into()))?;
                    if v.delete_marker {
                        return Err(StoreError::DeleteMarker(vid.into()));
                    }
                    let before = v.info.clone();
                    change(&mut v.info)?;
                    if v.info == before {
                        return Ok(v.info);
                    }
                    let bytes = serde_json::to_vec(&v).map_err(db_err)?;
                    vt.insert((bucket, key, seq), bytes.as_slice())
                        .map_err(db_err)?;
                    v.info
                }
            }
        };
        w.commit().map_err(db_err)?;
        Ok(info)
    }

    fn version_info(&self, bucket: &str, key: &str, version_id: &str) -> Result<ObjectInfo> {
        self.find_version(bucket, key, version_id)
            .map(|(_, info, _)| info)
    }

    fn get_version(&self, bucket: &str, key: &str, version_id: &str) -> Result<Object> {
        let at = self.locate(bucket, key, Some(version_id))?;
        self.read_whole(at, bucket, key)
    }

    fn list_versions(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<(&str, Option<&str>)>,
        max: usize,
    ) -> Result<(Vec<VersionEntry>, bool)> {
        let r = self.db.begin_read().map_err(db_err)?;
        require_bucket(&r, bucket)?;
        let ot = r.open_table(OBJECTS).map_err(db_err)?;
        let vt = r.open_table(VERSIONS).map_err(db_err)?;
        // Keys in order, from the marker's key (or the prefix) on: the current version from
        // OBJECTS, then older ones from VERSIONS (stored newest first). Two range cursors are
        // merged by key, so a page costs what it returns, not the bucket's size.
        let start = match after {
            Some((mk, _)) if mk > prefix => mk,
            _ => prefix,
        };
        let mut cur = ot.range((bucket, start)..).map_err(db_err)?.peekable();
        let mut old = vt.range((bucket, start, 0)..).map_err(db_err)?.peekable();
        let mut out = Vec::new();
        // Within the marker's key: skip through the marker version (or the whole key).
        let mut skipping = after.map(|(k, v)| (k.to_string(), v.map(str::to_string)));
        loop {
            let next_cur = match cur.peek() {
                Some(Ok((k, _))) => {
                    let (b, key) = k.value();
                    (b == bucket && key.starts_with(prefix)).then(|| key.to_string())
                }
                Some(Err(_)) => return Err(StoreError::Db("reading objects".into())),
                None => None,
            };
            let next_old = match old.peek() {
                Some(Ok((k, _))) => {
                    let (b, key, _) = k.value();
                    (b == bucket && key.starts_with(prefix)).then(|| key.to_string())
                }
                Some(Err(_)) => return Err(StoreError::Db("reading versions".into())),
                None => None,
            };
            let key = match (&next_cur, &next_old) {
                (None, None) => break,
                (Some(a), None) => a.clone(),
                (None, Some(b)) => b.clone(),
                (Some(a), Some(b)) => a.min(b).clone(),
            };
            let mut entries = Vec::new();
            if next_cur.as_deref() == Some(key.as_str()) {
                if let Some(Ok((_, v))) = cur.next() {
                    let s: Stored = serde_json::from_slice(v.value()).map_err(db_err)?;
                    let mut info = s.info;
                    info.version_id = Some(vid_of(&info));
                    entries.push(VersionEntry {
                        info,
                        is_latest: true,
                        delete_marker: false,
                    });
                }
            }
            while let Some(Ok((k, _))) = old.peek() {
                let (b, kk, _) = k.value();
                if b != bucket || kk != key {
                    break;
                }
                if let Some(Ok((_, v))) = old.next() {
                    let sv: StoredVersion = serde_json::from_slice(v.value()).map_err(db_err)?;
                    let is_latest = entries.is_empty();
                    entries.push(VersionEntry {
                        info: sv.info,
                        is_latest,
                        delete_marker: sv.delete_marker,
                    });
                }
            }
            if let Some((mk, mv)) = &skipping {
                if key == *mk {
                    match mv {
                        Some(v) => {
                            match entries
                                .iter()
                                .position(|e| e.info.version_id.as_deref() == Some(v.as_str()))
                            {
                                Some(p) => {
                                    entries.drain(..=p);
                                }
                                None => entries.clear(),
                            }
                        }
                        None => entries.clear(),
                    }
                }
                if key.as_str() >= mk.as_str() {
                    skipping = None;
                }
            }
            for e in entries {
                if out.len() == max {
                    return Ok((out, true));
                }
                out.push(e);
            }
        }
        Ok((out, false))
    }

    fn list(&self, bucket: &str, prefix: &str, after: Option<&str>, n: usize) -> Result<ListPage> {
        let r = self.db.begin_read().map_err(db_err)?;
        require_bucket(&r, bucket)?;
        let t = r.open_table(OBJECTS).map_err(db_err)?;
        let start = match after {
            Some(m) if m >= prefix => m,
            _ => prefix,
        };
        let mut page = ListPage::default();
        for item in t.range((bucket, start)..).map_err(db_err)? {
            let (k, v) = item.map_err(db_err)?;
            let (b, key) = k.value();
            if b != bucket || !key.starts_with(prefix) {
                break;
            }
            if after.is_some_and(|m| key <= m) {
                continue;
            }
            if page.objects.len() == n {
                page.is_truncated = true;
                break;
            }
            let s: Stored = serde_json::from_slice(v.value()).map_err(db_err)?;
            page.objects.push(s.info);
        }
        Ok(page)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PUT of `body` to `bkt/key`, staged, as a change for the group commit.
    fn staged_put(s: &EmbeddedStore, key: &str, body: &[u8]) -> Change {
        let mut w = s.stage_writer("bkt", key, &PutOptions::default()).unwrap();
        w.write(body).unwrap();
        Change::of_staged(Box::new(w.finish().unwrap()))
            .ok()
            .unwrap()
    }

    /// Queues `changes` while nobody leads, then leads: the first queued leads the rest.
    fn one_group(s: &EmbeddedStore, changes: Vec<Change>) -> Vec<Result<Made>> {
        let slots: Vec<std::sync::Arc<Slot>> = changes.iter().map(|_| Default::default()).collect();
        let leads: Vec<bool> = changes
            .into_iter()
            .zip(&slots)
            .map(|(c, slot)| s.enqueue(c, slot, None))
            .collect();
        assert!(leads[0] && !leads[1..].iter().any(|l| *l), "{leads:?}");
        let mut made = vec![s.lead(Some(&slots[0])).unwrap()];
        made.extend(slots[1..].iter().map(|slot| slot.wait().unwrap()));
        made
    }

    /// Changes queued together are made in one transaction, in the order queued: a PUT
    /// then a DeleteObject of one key leave it absent, a DeleteObject then a PUT leave the
    /// new body; a deletion keeps its outbox record, and in a versioned bucket makes a
    /// delete marker.
    #[test]
    fn one_group_makes_puts_and_deletes_in_the_order_queued() {
        let dir = tempfile::tempdir().unwrap();
        let s = std::sync::Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        s.create_bucket("bkt").unwrap();
        s.create_bucket("ver").unwrap();
        s.set_versioning("ver", Versioning::Enabled).unwrap();
        let opts = PutOptions::default();
        s.put("bkt", "put-then-delete", b"old", &opts).unwrap();
        s.put("bkt", "delete-then-put", b"old", &opts).unwrap();
        s.put("ver", "kept", b"v1", &opts).unwrap();
        let put = |key: &str, body: &[u8]| staged_put(&s, key, body);
        let delete = |bucket: &str, key: &str, outbox: Option<(u64, Vec<u8>)>| Change::Delete {
            bucket: bucket.into(),
            key: key.into(),
            outbox,
        };
        let changes = vec![
            put("put-then-delete", b"new"),
            delete("bkt", "put-then-delete", Some((7, b"deleted".to_vec()))),
            delete("bkt", "delete-then-put", None),
            put("delete-then-put", b"new"),
            delete("ver", "kept", None),
        ];
        let groups = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        {
            let groups = groups.clone();
            s.queue.lock().unwrap().after_group = Some(Box::new(move || {
                groups.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }));
        }
        let made = one_group(&s, changes);
        assert_eq!(groups.load(std::sync::atomic::Ordering::SeqCst), 1);
        let made: Vec<Made> = made.into_iter().map(|m| m.unwrap()).collect();
        assert!(matches!(made[0], Made::Put(_)), "{made:?}");
        assert!(matches!(made[3], Made::Put(_)), "{made:?}");
        assert!(
            matches!(&made[4], Made::Delete(d) if d.delete_marker && d.version_id.is_some()),
            "{made:?}"
        );
        assert!(matches!(
            s.get("bkt", "put-then-delete"),
            Err(StoreError::NoSuchKey { .. })
        ));
        assert_eq!(s.get("bkt", "delete-then-put").unwrap().body, b"new");
        assert!(s.head("ver", "kept").is_err());
        assert_eq!(s.outbox_record(7).unwrap().unwrap(), b"deleted");
        s.queue.lock().unwrap().after_group = None;
    }

    /// Inline bodies sealed under a wrapped (SSE-KMS) key are left to the blocking pool:
    /// their header names a key, the older whole-body format says so by its magic.
    #[test]
    fn wrapped_keys_are_told_from_their_headers() {
        let sealed = |wlen: u32| {
            let mut b = crate::body::STREAM_MAGIC.to_vec();
            b.extend_from_slice(&wlen.to_be_bytes());
            b.extend(std::iter::repeat_n(1u8, wlen as usize + 20));
            b
        };
        assert!(!names_wrapped_key(&sealed(0)), "SSE-S3: no wrapped key");
        assert!(names_wrapped_key(&sealed(40)));
        assert!(names_wrapped_key(&[WRAPPED_MAGIC, b"rest"].concat()));
        assert!(!names_wrapped_key(&[SEALED_MAGIC, b"rest"].concat()));
        assert!(!names_wrapped_key(b"plain body"));
        assert!(
            !names_wrapped_key(crate::body::STREAM_MAGIC),
            "truncated header"
        );
    }

    /// A failed sync of the body directory fails only the writes whose files it was for: a
    /// deletion and a small PUT queued with them are made.
    #[test]
    fn a_failed_directory_sync_fails_only_the_writes_with_files() {
        let dir = tempfile::tempdir().unwrap();
        let s = std::sync::Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        s.create_bucket("bkt").unwrap();
        let opts = PutOptions::default();
        s.put("bkt", "doomed", b"old", &opts).unwrap();
        let put = |key: &str, body: &[u8]| staged_put(&s, key, body);
        let big = vec![7u8; INLINE_MAX * 2];
        let changes = vec![
            put("big", &big),
            Change::Delete {
                bucket: "bkt".into(),
                key: "doomed".into(),
                outbox: Some((9, b"deleted".to_vec())),
            },
            put("small", b"small"),
        ];
        // The body directory cannot be opened for its sync.
        let moved = dir.path().join("blobs-away");
        fs::rename(&s.blobs, &moved).unwrap();
        let made = one_group(&s, changes);
        fs::rename(&moved, &s.blobs).unwrap();
        assert!(made[0].is_err(), "{made:?}");
        assert!(matches!(made[1], Ok(Made::Delete(_))), "{made:?}");
        assert!(matches!(made[2], Ok(Made::Put(_))), "{made:?}");
        assert!(matches!(
            s.get("bkt", "big"),
            Err(StoreError::NoSuchKey { .. })
        ));
        assert!(matches!(
            s.get("bkt", "doomed"),
            Err(StoreError::NoSuchKey { .. })
        ));
        assert_eq!(s.get("bkt", "small").unwrap().body, b"small");
        assert_eq!(s.outbox_record(9).unwrap().unwrap(), b"deleted");
    }

    /// A body kept with its metadata is read without file I/O (the GET path runs it on an
    /// async thread), ranges included; a missing object is answered too; a body in a file
    /// is left to `open_read`.
    #[test]
    fn held_reads_answer_inline_bodies_and_leave_files_alone() {
        use std::io::Read as _;
        let dir = tempfile::tempdir().unwrap();
        let s = std::sync::Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        s.create_bucket("bkt").unwrap();
        let staged = |key: &str, body: &[u8]| {
            let mut w = s.stage_writer("bkt", key, &PutOptions::default()).unwrap();
            w.write(body).unwrap();
            s.commit_staged(w.finish().unwrap()).unwrap();
        };
        staged("small", b"0123456789");
        let big: Vec<u8> = (0..INLINE_MAX as u32 * 2).map(|i| i as u8).collect();
        staged("big", &big);
        let whole = |_: u64| None;
        let (info, mut r) = s
            .open_read_held("bkt", "small", None, &whole)
            .unwrap()
            .unwrap();
        assert_eq!(info.size, 10);
        let mut got = Vec::new();
        r.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"0123456789");
        let (_, mut r) = s
            .open_read_held("bkt", "small", None, &|_| Some((2, 5)))
            .unwrap()
            .unwrap();
        let mut got = Vec::new();
        r.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"234");
        assert!(matches!(
            s.open_read_held("bkt", "absent", None, &whole),
            Some(Err(StoreError::NoSuchKey { .. }))
        ));
        assert!(s.open_read_held("bkt", "big", None, &whole).is_none());
        let (_, mut r) = s.open_read("bkt", "big", None, &whole).unwrap();
        let mut got = Vec::new();
        r.read_to_end(&mut got).unwrap();
        assert_eq!(got, big);
    }

    /// A caller that leads its own write's group and then finds a task's write queued
    /// hands the lead on and returns: the task's group is committed on another thread.
    #[test]
    fn a_caller_hands_a_task_queue_to_another_leader() {
        let dir = tempfile::tempdir().unwrap();
        let s = std::sync::Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        s.create_bucket("bkt").unwrap();
        let staged = |s: &EmbeddedStore, key: &str| {
            let mut w = s.stage_writer("bkt", key, &PutOptions::default()).unwrap();
            w.write(key.as_bytes()).unwrap();
            w.finish().unwrap()
        };
        type Pending = futures::future::BoxFuture<'static, Result<ObjectInfo>>;
        let groups = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let task: std::sync::Arc<std::sync::Mutex<Option<Pending>>> = Default::default();
        {
            let (s2, groups, task) = (s.clone(), groups.clone(), task.clone());
            let mut queued = false;
            s.queue.lock().unwrap().after_group = Some(Box::new(move || {
                groups.lock().unwrap().push(std::thread::current().id());
                // After the first group, a task's write arrives.
                if !std::mem::replace(&mut queued, true) {
                    let fut = s2.clone().commit_staged_async(staged(&s2, "task"));
                    *task.lock().unwrap() = Some(fut);
                }
            }));
        }
        s.commit_staged(staged(&s, "thread")).unwrap();
        let fut = task
            .lock()
            .unwrap()
            .take()
            .expect("the hook queued a task's write");
        futures::executor::block_on(fut).unwrap();
        let groups = groups.lock().unwrap().clone();
        assert_eq!(groups.len(), 2, "{groups:?}");
        assert_eq!(groups[0], std::thread::current().id());
        assert_ne!(
            groups[1], groups[0],
            "the caller led the task's group itself"
        );
        s.queue.lock().unwrap().after_group = None;
        assert_eq!(s.get("bkt", "task").unwrap().body, b"task");
    }
}
