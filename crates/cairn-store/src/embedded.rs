//! The embedded store: bodies in files named by random ids, metadata in redb.

use crate::{
    check_bucket_name, check_key, etag_of, ListPage, Object, ObjectInfo, ObjectStore, PutItem,
    PutOptions, Result, StoreError,
};
use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

const BUCKETS: TableDefinition<&str, &[u8]> = TableDefinition::new("buckets");
const OBJECTS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("objects");

#[derive(Serialize, Deserialize)]
struct Stored {
    blob: String,
    info: ObjectInfo,
    /// The body's MD5 (quoted hex) when the reported ETag is not it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    md5: Option<String>,
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
    blobs: PathBuf,
    tmp: PathBuf,
}

fn db_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Db(e.to_string())
}

impl EmbeddedStore {
    /// Opens (creating) the store under `dir`; removes temp files and bodies no metadata
    /// names (left by a crash between writing a body and committing its metadata).
    pub fn open(dir: impl AsRef<Path>) -> Result<EmbeddedStore> {
        let dir = dir.as_ref();
        let blobs = dir.join("blobs");
        let tmp = dir.join("tmp");
        fs::create_dir_all(&blobs)?;
        fs::create_dir_all(&tmp)?;
        let db = Database::create(dir.join("meta.redb")).map_err(db_err)?;
        {
            let w = db.begin_write().map_err(db_err)?;
            w.open_table(BUCKETS).map_err(db_err)?;
            w.open_table(OBJECTS).map_err(db_err)?;
            w.commit().map_err(db_err)?;
        }
        let store = EmbeddedStore { db, blobs, tmp };
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
        for e in fs::read_dir(&self.blobs)? {
            let e = e?;
            if !live.contains(e.file_name().to_string_lossy().as_ref()) {
                tracing::info!(blob = %e.path().display(), "removing unreferenced object body");
                fs::remove_file(e.path())?;
            }
        }
        Ok(())
    }

    fn stored(&self, bucket: &str, key: &str) -> Result<Stored> {
        let r = self.db.begin_read().map_err(db_err)?;
        require_bucket(&r, bucket)?;
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

    fn sync_dir(p: &Path) -> Result<()> {
        File::open(p)?.sync_all()?;
        Ok(())
    }
}

impl ObjectStore for EmbeddedStore {
    fn create_bucket(&self, bucket: &str) -> Result<()> {
        check_bucket_name(bucket)?;
        let w = self.db.begin_write().map_err(db_err)?;
        {
            let mut t = w.open_table(BUCKETS).map_err(db_err)?;
            if t.get(bucket).map_err(db_err)?.is_none() {
                let created = chrono::Utc::now().to_rfc3339();
                t.insert(bucket, created.as_bytes()).map_err(db_err)?;
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
            let created = std::str::from_utf8(v.value())
                .ok()
                .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
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
        for i in items {
            check_key(i.key)?;
            if !self.bucket_exists(i.bucket)? {
                return Err(StoreError::NoSuchBucket(i.bucket.into()));
            }
        }
        let blobs: Vec<String> = items
            .iter()
            .map(|_| uuid::Uuid::new_v4().simple().to_string())
            .collect();
        let write = |blob: &str, body: &[u8]| -> Result<()> {
            let mut f = File::create(self.tmp.join(blob))?;
            f.write_all(body)?;
            f.sync_data()?;
            Ok(())
        };
        // Bodies are written and synced concurrently, at most SYNC_WIDTH at a time.
        const SYNC_WIDTH: usize = 8;
        let mut written: Vec<Result<()>> = Vec::with_capacity(items.len());
        for (chunk, chunk_blobs) in items.chunks(SYNC_WIDTH).zip(blobs.chunks(SYNC_WIDTH)) {
            if chunk.len() == 1 {
                written.push(write(&chunk_blobs[0], chunk[0].body));
                continue;
            }
            std::thread::scope(|s| {
                let hs: Vec<_> = chunk
                    .iter()
                    .zip(chunk_blobs)
                    .map(|(i, b)| s.spawn(move || write(b, i.body)))
                    .collect();
                for h in hs {
                    written.push(h.join().unwrap_or_else(|_| {
                        Err(StoreError::Io(std::io::Error::other("writer panicked")))
                    }));
                }
            });
        }
        let cleanup = |blobs: &[String]| {
            for b in blobs {
                let _ = fs::remove_file(self.tmp.join(b));
                let _ = fs::remove_file(self.blobs.join(b));
            }
        };
        if let Some(Err(e)) = written.into_iter().find(|r| r.is_err()) {
            cleanup(&blobs);
            return Err(e);
        }
        for b in &blobs {
            if let Err(e) = fs::rename(self.tmp.join(b), self.blobs.join(b)) {
                cleanup(&blobs);
                return Err(e.into());
            }
        }
        if let Err(e) = Self::sync_dir(&self.blobs) {
            cleanup(&blobs);
            return Err(e);
        }
        let now = chrono::Utc::now();
        let infos: Vec<ObjectInfo> = items
            .iter()
            .map(|i| ObjectInfo {
                key: i.key.into(),
                size: i.body.len() as u64,
                etag: i.opts.etag.clone().unwrap_or_else(|| etag_of(i.body)),
                last_modified: now,
                content_type: i.opts.content_type.clone(),
                content_encoding: i.opts.content_encoding.clone(),
                metadata: i.opts.metadata.clone(),
            })
            .collect();
        let result = (|| -> Result<Vec<String>> {
            let w = self.db.begin_write().map_err(db_err)?;
            let mut old_blobs = vec![];
            {
                let mut t = w.open_table(OBJECTS).map_err(db_err)?;
                for ((i, blob), info) in items.iter().zip(&blobs).zip(&infos) {
                    let old = t
                        .get((i.bucket, i.key))
                        .map_err(db_err)?
                        .and_then(|v| serde_json::from_slice::<Stored>(v.value()).ok())
                        .map(|s| s.blob);
                    if old.is_some() && i.opts.if_none_match {
                        return Err(StoreError::PreconditionFailed);
                    }
                    let value = serde_json::to_vec(&Stored {
                        blob: blob.clone(),
                        info: info.clone(),
                        md5: i.opts.etag.as_ref().map(|_| etag_of(i.body)),
                    })
                    .map_err(db_err)?;
                    t.insert((i.bucket, i.key), value.as_slice())
                        .map_err(db_err)?;
                    old_blobs.extend(old);
                }
            }
            w.commit().map_err(db_err)?;
            Ok(old_blobs)
        })();
        match result {
            Ok(old) => {
                for b in old {
                    let _ = fs::remove_file(self.blobs.join(b));
                }
                Ok(infos)
            }
            Err(e) => {
                cleanup(&blobs);
                Err(e)
            }
        }
    }

    fn get(&self, bucket: &str, key: &str) -> Result<Object> {
        let s = self.stored(bucket, key)?;
        let body = fs::read(self.blobs.join(&s.blob))?;
        let md5 = s.md5.as_ref().unwrap_or(&s.info.etag);
        if body.len() as u64 != s.info.size || &etag_of(&body) != md5 {
            return Err(StoreError::Corrupt {
                bucket: bucket.into(),
                key: key.into(),
                reason: "body does not match its recorded size and MD5".into(),
            });
        }
        Ok(Object { info: s.info, body })
    }

    fn head(&self, bucket: &str, key: &str) -> Result<ObjectInfo> {
        Ok(self.stored(bucket, key)?.info)
    }

    fn delete(&self, bucket: &str, key: &str) -> Result<()> {
        if !self.bucket_exists(bucket)? {
            return Err(StoreError::NoSuchBucket(bucket.into()));
        }
        let w = self.db.begin_write().map_err(db_err)?;
        let old = {
            let mut t = w.open_table(OBJECTS).map_err(db_err)?;
            let old = t
                .remove((bucket, key))
                .map_err(db_err)?
                .and_then(|v| serde_json::from_slice::<Stored>(v.value()).ok());
            old
        };
        w.commit().map_err(db_err)?;
        if let Some(old) = old {
            let _ = fs::remove_file(self.blobs.join(old.blob));
        }
        Ok(())
    }

    fn list(
        &self,
        bucket: &str,
        prefix: &str,
        marker: Option<&str>,
        max_keys: usize,
    ) -> Result<ListPage> {
        let r = self.db.begin_read().map_err(db_err)?;
        require_bucket(&r, bucket)?;
        let t = r.open_table(OBJECTS).map_err(db_err)?;
        let start = match marker {
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
            if marker.is_some_and(|m| key <= m) {
                continue;
            }
            if page.objects.len() == max_keys {
                page.is_truncated = true;
                break;
            }
            let s: Stored = serde_json::from_slice(v.value()).map_err(db_err)?;
            page.objects.push(s.info);
        }
        Ok(page)
    }
}
