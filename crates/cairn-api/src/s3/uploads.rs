//! Where multipart uploads wait: upload and part records in the metadata store, part files
//! under `ApiOptions::multipart_dir/UPLOAD_ID/` (upload ids are random hex, part files
//! `NNNNN-RANDOM`: neither a key nor a bucket name ever becomes a path), directory mode 0700,
//! files 0600, sealed with `ApiOptions::part_cipher` (the store's SSE-S3 cipher, the upload id
//! and file name as associated data) and written with temp file + fsync + rename. Uploads left
//! incomplete are aborted by the lifecycle worker ([`expire_uploads`]).

use super::S3Error;
use crate::edge::Ctx;
use crate::protocol::ApiError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Upload {
    pub(super) bucket: String,
    pub(super) key: String,
    pub(super) initiated: chrono::DateTime<chrono::Utc>,
    pub(super) content_type: Option<String>,
    pub(super) content_encoding: Option<String>,
    pub(super) metadata: BTreeMap<String, String>,
    /// `x-amz-checksum-algorithm` of CreateMultipartUpload (lower-case), if any.
    #[serde(default)]
    pub(super) checksum_algorithm: Option<String>,
    /// System attributes fixed at creation (tags, ACL, storage class, object lock, SSE).
    #[serde(default)]
    pub(super) system: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Part {
    pub(super) etag: String,
    pub(super) size: u64,
    pub(super) modified: chrono::DateTime<chrono::Utc>,
    /// `(algorithm, base64 value)` verified when the part was uploaded.
    #[serde(default)]
    pub(super) checksum: Option<(String, String)>,
    /// The part's file in the upload's directory (records written before part files had
    /// unique names use `NNNNN`).
    #[serde(default)]
    pub(super) file: Option<String>,
}

impl Part {
    pub(super) fn file_name(&self, n: u16) -> String {
        self.file.clone().unwrap_or_else(|| format!("{n:05}"))
    }
}

/// Where parts are written and how they are sealed.
#[derive(Clone)]
pub(super) struct PartFiles {
    dir: std::path::PathBuf,
    cipher: Option<crate::PartCipher>,
}

impl PartFiles {
    pub(super) fn of(api: &crate::Api) -> PartFiles {
        PartFiles {
            dir: api.opts.multipart_dir.clone(),
            cipher: api.opts.part_cipher.clone(),
        }
    }

    fn context(id: &str, file: &str) -> Vec<u8> {
        format!("multipart/{id}/{file}").into_bytes()
    }

    /// Creates an upload's directory, readable by this user only.
    pub(super) fn create_dir(&self, id: &str) -> std::io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(self.dir.join(id))
    }

    /// A new part file, written as a stream (sealed in chunks, mode 0600) under a temp name
    /// until [`PartWriter::finish`].
    pub(super) fn writer(&self, id: &str, file: &str) -> Result<PartWriter, ApiError> {
        let path = self.dir.join(id).join(file);
        let tmp = path.with_extension("tmp");
        let writer = cairn_store::BodyWriter::create(
            &tmp,
            self.cipher.as_ref().map(|c| &*c.0),
            &Self::context(id, file),
            None,
        )
        .map_err(ApiError::internal)?;
        Ok(PartWriter {
            writer: Some(writer),
            tmp,
            path,
        })
    }

    /// Reads a part file of `size` bytes as a stream (a file that does not open under its
    /// name is corruption). Part files of the older whole-file format are opened whole.
    pub(super) fn reader(
        &self,
        id: &str,
        file: &str,
        size: u64,
    ) -> Result<cairn_store::BodyReader, ApiError> {
        let context = Self::context(id, file);
        let legacy = |raw: Vec<u8>| match &self.cipher {
            Some(c) => c
                .open(&raw, &context)
                .map_err(|e| cairn_store::StoreError::Corrupt {
                    bucket: String::new(),
                    key: String::new(),
                    reason: e,
                }),
            None => Ok(raw),
        };
        cairn_store::BodyReader::open(
            &self.dir.join(id).join(file),
            self.cipher.as_ref().map(|c| &*c.0),
            &context,
            size,
            None,
            None,
            &legacy,
        )
        .map_err(|e| ApiError::internal(format!("part file {id}/{file}: {e}")))
    }

    pub(super) fn remove(&self, id: &str, file: &str) {
        let _ = std::fs::remove_file(self.dir.join(id).join(file));
    }

    pub(super) fn remove_upload(&self, id: &str) {
        let _ = std::fs::remove_dir_all(self.dir.join(id));
    }

    /// Upload directories untouched for an hour: candidates for [`sweep_orphans`].
    fn idle_dirs(&self) -> Vec<String> {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        rd.filter_map(|e| e.ok())
            .filter(|e| {
                e.metadata().is_ok_and(|m| {
                    m.is_dir()
                        && m.modified()
                            .ok()
                            .and_then(|t| t.elapsed().ok())
                            .is_some_and(|age| age.as_secs() >= 3600)
                })
            })
            .filter_map(|e| e.file_name().into_string().ok())
            .collect()
    }
}

/// Removes the part directories of uploads that no longer exist (a crash between an upload's
/// discard and the removal of its files, or between its directory and its record). Only
/// directories idle for an hour are considered, and they are listed before the uploads, so
/// an upload being created or written is never touched. Returns how many went.
fn sweep_orphans(meta: &crate::meta::Meta, files: &PartFiles) -> Result<usize, ApiError> {
    let idle = files.idle_dirs();
    if idle.is_empty() {
        return Ok(0);
    }
    // Every upload record counts, even one that no longer parses.
    let live: std::collections::HashSet<String> = meta
        .scan::<serde_json::Value>("upload/")?
        .into_iter()
        .filter_map(|(k, _)| k["upload/".len()..].split('/').next().map(str::to_string))
        .collect();
    let mut n = 0;
    for d in idle.iter().filter(|d| valid_id(d) && !live.contains(*d)) {
        tracing::info!(upload = %d, "removing the part files of an upload that no longer exists");
        files.remove_upload(d);
        n += 1;
    }
    Ok(n)
}

/// A part file being written; dropped unfinished, it is removed.
pub(super) struct PartWriter {
    writer: Option<cairn_store::BodyWriter>,
    tmp: std::path::PathBuf,
    path: std::path::PathBuf,
}

impl PartWriter {
    /// Syncs the part file and puts it in place: `(size, quoted hex MD5)`.
    pub(super) fn finish(mut self) -> Result<(u64, String), ApiError> {
        let w = self
            .writer
            .take()
            .ok_or_else(|| ApiError::internal("part written twice"))?;
        let done = (|| -> std::io::Result<(u64, String)> {
            let (size, md5) = w.finish()?;
            std::fs::rename(&self.tmp, &self.path)?;
            if let Some(dir) = self.path.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok((size, md5))
        })();
        done.map_err(|e| {
            let _ = std::fs::remove_file(&self.tmp);
            let _ = std::fs::remove_file(&self.path);
            ApiError::internal(e)
        })
    }
}

impl super::intake::Sink for PartWriter {
    fn write(&mut self, data: &[u8]) -> Result<(), ApiError> {
        match &mut self.writer {
            Some(w) => w.write(data).map_err(ApiError::internal),
            None => Err(ApiError::internal("part already finished")),
        }
    }
}

impl Drop for PartWriter {
    fn drop(&mut self) {
        if self.writer.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

fn no_such_upload(id: &str) -> ApiError {
    S3Error::NoSuchUpload(id.to_string()).into()
}

pub(super) fn upload_key(id: &str) -> String {
    format!("upload/{id}")
}

pub(super) fn part_key(id: &str, n: u16) -> String {
    format!("upload/{id}/part/{n:05}")
}

/// Upload ids are 32 lowercase hex characters; anything else cannot name an upload (and so
/// never reaches a path).
fn valid_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

pub(super) fn load(ctx: &Ctx<'_>, id: &str, bucket: &str, key: &str) -> Result<Upload, ApiError> {
    if !valid_id(id) {
        return Err(no_such_upload(id));
    }
    let up: Option<Upload> = ctx.api.meta.get(&upload_key(id))?;
    match up {
        Some(u) if u.bucket == bucket && u.key == key => Ok(u),
        _ => Err(no_such_upload(id)),
    }
}

pub(super) fn parts_of(ctx: &Ctx<'_>, id: &str) -> Result<Vec<(u16, Part)>, ApiError> {
    let rows: Vec<(String, Part)> = ctx.api.meta.scan(&format!("upload/{id}/part/"))?;
    Ok(rows
        .into_iter()
        .filter_map(|(k, p)| k.rsplit('/').next()?.parse().ok().map(|n| (n, p)))
        .collect())
}

/// Every upload record (`upload/ID`; part records, `upload/ID/part/N`, share the prefix).
pub(super) fn uploads(meta: &crate::meta::Meta) -> Result<Vec<(String, Upload)>, ApiError> {
    let rows: Vec<(String, serde_json::Value)> = meta.scan("upload/")?;
    Ok(rows
        .into_iter()
        .filter(|(k, _)| k.matches('/').count() == 1)
        .filter_map(|(k, v)| {
            let id = k["upload/".len()..].to_string();
            serde_json::from_value(v).ok().map(|u| (id, u))
        })
        .collect())
}

pub(super) fn discard_upload(
    meta: &crate::meta::Meta,
    files: &PartFiles,
    id: &str,
) -> Result<(), ApiError> {
    // One transaction, with every part record there is then (a part uploaded meanwhile
    // too): a crash must not leave the upload with some of its parts gone (a resent
    // CompleteMultipartUpload would then answer InvalidPart for a finished upload; the crash
    // test of `cairn serve` found it).
    meta.delete_all_under(&[&upload_key(id)], &format!("upload/{id}/part/"))?;
    files.remove_upload(id);
    Ok(())
}

/// Aborts the uploads that have waited too long: past their bucket's
/// AbortIncompleteMultipartUpload days (`rules`: bucket → (prefix, days)), or past
/// `ApiOptions::multipart_expiry_days`. Returns how many went.
pub fn expire_uploads(
    api: &crate::Api,
    now: chrono::DateTime<chrono::Utc>,
    rules: &BTreeMap<String, Vec<(String, i64)>>,
) -> Result<u64, ApiError> {
    let files = PartFiles::of(api);
    sweep_orphans(&api.meta, &files)?;
    let mut n = 0;
    for (id, up) in uploads(&api.meta)? {
        let days = rules
            .get(&up.bucket)
            .into_iter()
            .flatten()
            .filter(|(prefix, _)| up.key.starts_with(prefix.as_str()))
            .map(|(_, d)| *d)
            .min()
            .unwrap_or(api.opts.multipart_expiry_days);
        if crate::s3::lifecycle::due(up.initiated, days) <= now {
            discard_upload(&api.meta, &files, &id)?;
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIVE: &str = "00000000000000000000000000000001";
    const DONE: &str = "00000000000000000000000000000002";
    const OLD_LIVE: &str = "00000000000000000000000000000003";
    const ORPHAN: &str = "00000000000000000000000000000004";
    const FRESH: &str = "00000000000000000000000000000005";

    fn age(dir: &std::path::Path, secs: u64) {
        let t = std::time::SystemTime::now() - std::time::Duration::from_secs(secs);
        std::fs::File::open(dir).unwrap().set_modified(t).unwrap();
    }

    #[test]
    fn discarding_an_upload_is_one_transaction_and_orphaned_part_files_are_swept() {
        let d = tempfile::tempdir().unwrap();
        let meta = crate::meta::Meta::open(&d.path().join("meta.redb")).unwrap();
        let files = PartFiles {
            dir: d.path().join("multipart"),
            cipher: None,
        };
        let up = Upload {
            bucket: "b".into(),
            key: "k".into(),
            initiated: chrono::Utc::now(),
            content_type: None,
            content_encoding: None,
            metadata: BTreeMap::new(),
            checksum_algorithm: None,
            system: BTreeMap::new(),
        };
        for id in [LIVE, DONE, OLD_LIVE] {
            files.create_dir(id).unwrap();
            meta.put(&upload_key(id), &up).unwrap();
            meta.put(&part_key(id, 1), &serde_json::json!({})).unwrap();
        }
        files.create_dir(ORPHAN).unwrap();
        files.create_dir(FRESH).unwrap();
        // Not an upload id: never swept, however old.
        files.create_dir("not-an-upload").unwrap();
        age(&files.dir.join("not-an-upload"), 7200);
        meta.put(&part_key(DONE, 2), &serde_json::json!({}))
            .unwrap(); // uploaded meanwhile
        discard_upload(&meta, &files, DONE).unwrap();
        assert!(meta
            .get::<serde_json::Value>(&upload_key(DONE))
            .unwrap()
            .is_none());
        assert!(meta
            .get::<serde_json::Value>(&part_key(DONE, 1))
            .unwrap()
            .is_none());
        for id in [ORPHAN, OLD_LIVE] {
            age(&files.dir.join(id), 7200);
        }
        // Only an orphan idle for an hour goes: not a live upload, not a fresh directory
        // (an upload whose record is being committed).
        assert_eq!(sweep_orphans(&meta, &files).unwrap(), 1);
        assert!(!files.dir.join(ORPHAN).exists());
        for id in [LIVE, OLD_LIVE, FRESH, "not-an-upload"] {
            assert!(files.dir.join(id).exists(), "{id}");
        }
    }
}
