//! S3 multipart uploads: create, upload part (and UploadPartCopy), complete, abort, list
//! parts, list uploads.
//!
//! Parts are files under `ApiOptions::multipart_dir/UPLOAD_ID/` (upload ids are random hex,
//! part files `NNNNN-RANDOM`: neither a key nor a bucket name ever becomes a path), directory
//! mode 0700, files 0600, sealed with `ApiOptions::part_cipher` (the store's SSE-S3 cipher,
//! the upload id and file name as associated data) and written with temp file + fsync +
//! rename. A part file is named by its record only once the request's event is durable: a
//! re-uploaded part gets a new file, and the old one goes when the new record is made.
//! Upload and part records live in `meta`. Completing assembles the parts into one object in
//! the store, whose ETag is S3's `md5(part md5s)-N`. Uploads left incomplete are aborted by the
//! lifecycle worker ([`expire_uploads`]): after the bucket's AbortIncompleteMultipartUpload
//! days, or `ApiOptions::multipart_expiry_days` when no rule says.

use crate::edge::Ctx;
use crate::wire::{xml_escape, ApiError, Reply};
use base64::Engine;
use md5::Digest as _;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;

/// Smallest part except the last (S3's rule).
pub const MIN_PART_BYTES: u64 = 5 << 20;
/// Largest object cairn assembles from parts (bodies are assembled in memory for now).
pub const MAX_ASSEMBLED_BYTES: u64 = 2 << 30;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Upload {
    bucket: String,
    key: String,
    initiated: chrono::DateTime<chrono::Utc>,
    content_type: Option<String>,
    content_encoding: Option<String>,
    metadata: BTreeMap<String, String>,
    /// `x-amz-checksum-algorithm` of CreateMultipartUpload (lower-case), if any.
    #[serde(default)]
    checksum_algorithm: Option<String>,
    /// System attributes fixed at creation (tags, ACL, storage class, object lock, SSE).
    #[serde(default)]
    system: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Part {
    etag: String,
    size: u64,
    modified: chrono::DateTime<chrono::Utc>,
    /// `(algorithm, base64 value)` verified when the part was uploaded.
    #[serde(default)]
    checksum: Option<(String, String)>,
    /// The part's file in the upload's directory (records written before part files had
    /// unique names use `NNNNN`).
    #[serde(default)]
    file: Option<String>,
}

impl Part {
    fn file_name(&self, n: u32) -> String {
        self.file.clone().unwrap_or_else(|| format!("{n:05}"))
    }
}

/// Where parts are written and how they are sealed.
#[derive(Clone)]
struct PartFiles {
    dir: std::path::PathBuf,
    cipher: Option<crate::PartCipher>,
}

impl PartFiles {
    fn of(api: &crate::Api) -> PartFiles {
        PartFiles {
            dir: api.opts.multipart_dir.clone(),
            cipher: api.opts.part_cipher.clone(),
        }
    }

    fn context(id: &str, file: &str) -> Vec<u8> {
        format!("multipart/{id}/{file}").into_bytes()
    }

    /// Creates an upload's directory, readable by this user only.
    fn create_dir(&self, id: &str) -> std::io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(self.dir.join(id))
    }

    /// Writes a part file durably (sealed, mode 0600).
    fn write(&self, id: &str, file: &str, body: &[u8]) -> Result<(), ApiError> {
        use std::os::unix::fs::OpenOptionsExt;
        let sealed;
        let data: &[u8] = match &self.cipher {
            Some(c) => {
                sealed = c
                    .seal(body, &Self::context(id, file))
                    .map_err(ApiError::internal)?;
                &sealed
            }
            None => body,
        };
        let path = self.dir.join(id).join(file);
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(ApiError::internal)?;
        f.write_all(data).map_err(ApiError::internal)?;
        f.sync_all().map_err(ApiError::internal)?;
        std::fs::rename(&tmp, &path).map_err(ApiError::internal)?;
        Ok(())
    }

    /// Reads a part file back (a file that does not open under its name is corruption).
    fn read(&self, id: &str, file: &str) -> Result<Vec<u8>, ApiError> {
        let raw = std::fs::read(self.dir.join(id).join(file)).map_err(ApiError::internal)?;
        match &self.cipher {
            Some(c) => c
                .open(&raw, &Self::context(id, file))
                .map_err(|e| ApiError::internal(format!("part file {id}/{file}: {e}"))),
            None => Ok(raw),
        }
    }

    fn remove(&self, id: &str, file: &str) {
        let _ = std::fs::remove_file(self.dir.join(id).join(file));
    }

    fn remove_upload(&self, id: &str) {
        let _ = std::fs::remove_dir_all(self.dir.join(id));
    }
}

fn el(name: &str, v: &str) -> String {
    format!("<{name}>{}</{name}>", xml_escape(v))
}

fn no_such_upload(id: &str) -> ApiError {
    ApiError::new(
        "NoSuchUpload",
        404,
        "The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.",
    )
    .with("UploadId", id)
}

fn upload_key(id: &str) -> String {
    format!("upload/{id}")
}

fn part_key(id: &str, n: u32) -> String {
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

fn load(ctx: &Ctx<'_>, id: &str, bucket: &str, key: &str) -> Result<Upload, ApiError> {
    if !valid_id(id) {
        return Err(no_such_upload(id));
    }
    let up: Option<Upload> = ctx.api.meta.get(&upload_key(id))?;
    match up {
        Some(u) if u.bucket == bucket && u.key == key => Ok(u),
        _ => Err(no_such_upload(id)),
    }
}

fn parts_of(ctx: &Ctx<'_>, id: &str) -> Result<Vec<(u32, Part)>, ApiError> {
    let rows: Vec<(String, Part)> = ctx.api.meta.scan(&format!("upload/{id}/part/"))?;
    Ok(rows
        .into_iter()
        .filter_map(|(k, p)| k.rsplit('/').next()?.parse().ok().map(|n| (n, p)))
        .collect())
}

/// Every upload record (`upload/ID`; part records, `upload/ID/part/N`, share the prefix).
fn uploads(meta: &crate::meta::Meta) -> Result<Vec<(String, Upload)>, ApiError> {
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

/// POST /bucket/key?uploads
pub async fn create(ctx: &mut Ctx<'_>, bucket: &str, key: &str) -> Result<Reply, ApiError> {
    if key.len() > cairn_store::MAX_KEY_BYTES {
        return Err(ApiError::client("KeyTooLongError", "Your key is too long"));
    }
    let mut metadata = BTreeMap::new();
    for (k, v) in &ctx.req.headers {
        if let Some(name) = k.strip_prefix("x-amz-meta-") {
            metadata.insert(name.to_string(), v.clone());
        }
    }
    let mut sys = cairn_store::PutOptions::default();
    crate::s3_object_ext::new_object_system(ctx, bucket, ctx.req, &mut sys)?;
    let up = Upload {
        system: sys.system,
        bucket: bucket.into(),
        key: key.into(),
        initiated: ctx.now,
        content_type: ctx.req.header("content-type").map(str::to_string),
        content_encoding: ctx.req.header("content-encoding").map(str::to_string),
        metadata,
        checksum_algorithm: ctx
            .req
            .header("x-amz-checksum-algorithm")
            .map(str::to_ascii_lowercase),
    };
    if let Some(a) = &up.checksum_algorithm {
        if !crate::s3_chunked::ALGORITHMS.contains(&a.as_str()) {
            return Err(ApiError::client(
                "InvalidRequest",
                "Checksum algorithm provided is unsupported. Please try again with any of the valid types: [CRC32, CRC32C, CRC64NVME, SHA1, SHA256]",
            ));
        }
    }
    let id = uuid::Uuid::new_v4().simple().to_string();
    PartFiles::of(ctx.api)
        .create_dir(&id)
        .map_err(ApiError::internal)?;
    ctx.defer_meta_put(upload_key(&id), up);
    ctx.audit.response_elements = Some(serde_json::json!({"uploadId": id}));
    Ok(Reply::s3_document(
        "InitiateMultipartUploadResult",
        &format!(
            "{}{}{}",
            el("Bucket", bucket),
            el("Key", key),
            el("UploadId", &id)
        ),
    ))
}

fn part_number(number: &str) -> Result<u32, ApiError> {
    number
        .parse()
        .ok()
        .filter(|n| (1..=10_000).contains(n))
        .ok_or_else(|| {
            ApiError::client(
                "InvalidArgument",
                "Part number must be an integer between 1 and 10000, inclusive",
            )
            .with("ArgumentName", "partNumber")
            .with("ArgumentValue", number)
        })
}

/// PUT /bucket/key?partNumber=N&uploadId=ID
pub async fn upload_part(
    ctx: &mut Ctx<'_>,
    bucket: &str,
    key: &str,
    id: &str,
    number: &str,
) -> Result<Reply, ApiError> {
    let n = part_number(number)?;
    let up = load(ctx, id, bucket, key)?;
    let body = ctx.req.body.clone();
    let mut checksum = crate::s3_chunked::verify(&ctx.req.headers, &body)?;
    if checksum.is_none() {
        if let Some(a) = &up.checksum_algorithm {
            checksum = Some((a.clone(), crate::s3_chunked::checksum_b64(a, &body)));
        }
    }
    let md5 = md5::Md5::digest(&body);
    crate::s3::content_md5_matches(ctx.req, &md5)?;
    let etag = format!("\"{}\"", hex::encode(md5));
    stage_part(ctx, id, n, body, etag.clone(), checksum.clone()).await?;
    let mut headers = vec![("etag".into(), etag)];
    if let Some((alg, v)) = checksum {
        headers.push((format!("x-amz-checksum-{alg}"), v));
    }
    Ok(Reply {
        status: 200,
        headers,
        body: bytes::Bytes::new(),
        stream: None,
    })
}

/// Writes part `n` of upload `id` to a new file, invisible until the request's event is
/// durable; then its record names it and the file it replaces goes. A refused event leaves
/// the upload as it was.
async fn stage_part(
    ctx: &mut Ctx<'_>,
    id: &str,
    n: u32,
    body: bytes::Bytes,
    etag: String,
    checksum: Option<(String, String)>,
) -> Result<(), ApiError> {
    let files = PartFiles::of(ctx.api);
    let file = format!("{n:05}-{}", uuid::Uuid::new_v4().simple());
    let size = body.len() as u64;
    {
        let (files, id, file) = (files.clone(), id.to_string(), file.clone());
        ctx.api
            .blocking(move || files.write(&id, &file, &body))
            .await?;
    }
    let old: Option<Part> = ctx.api.meta.get(&part_key(id, n))?;
    let record = Part {
        etag,
        size,
        modified: ctx.now,
        checksum,
        file: Some(file.clone()),
    };
    let (meta, f2, id2, file2) = (
        ctx.api.meta.clone(),
        files.clone(),
        id.to_string(),
        file.clone(),
    );
    let (f3, id3) = (files, id.to_string());
    ctx.defer(
        Box::new(move || {
            meta.put(&part_key(&id2, n), &record)?;
            if let Some(old) = old {
                let old_file = old.file_name(n);
                if old_file != file2 {
                    f2.remove(&id2, &old_file);
                }
            }
            Ok(crate::edge::Committed::default())
        }),
        Some(Box::new(move || f3.remove(&id3, &file))),
    );
    Ok(())
}

/// `x-amz-copy-source-range: bytes=FIRST-LAST` over an object of `size` bytes.
fn copy_range(header: Option<&str>, size: u64) -> Result<Option<(u64, u64)>, ApiError> {
    let Some(h) = header else {
        return Ok(None);
    };
    let invalid = || {
        ApiError::client(
            "InvalidArgument",
            "The x-amz-copy-source-range value must be of the form bytes=first-last where first and last are the zero-based offsets of the first and last bytes to copy",
        )
        .with("ArgumentName", "x-amz-copy-source-range")
        .with("ArgumentValue", h)
    };
    let (a, b) = h
        .trim()
        .strip_prefix("bytes=")
        .and_then(|r| r.split_once('-'))
        .ok_or_else(invalid)?;
    let (a, b): (u64, u64) = (
        a.trim().parse().map_err(|_| invalid())?,
        b.trim().parse().map_err(|_| invalid())?,
    );
    if a > b {
        return Err(invalid());
    }
    if b >= size {
        return Err(ApiError::new(
            "InvalidRange",
            416,
            "The requested range is not satisfiable",
        )
        .with("RangeRequested", h)
        .with("ActualObjectSize", size.to_string()));
    }
    Ok(Some((a, b)))
}

/// PUT /bucket/key?partNumber=N&uploadId=ID with `x-amz-copy-source` (UploadPartCopy): the
/// source is read as a GetObject of it would be (its own bucket's policy, its version, an
/// archived object refused), optionally a byte range of it.
pub async fn upload_part_copy(
    ctx: &mut Ctx<'_>,
    bucket: &str,
    key: &str,
    id: &str,
    number: &str,
) -> Result<Reply, ApiError> {
    let n = part_number(number)?;
    load(ctx, id, bucket, key)?;
    let raw = ctx
        .req
        .header("x-amz-copy-source")
        .unwrap_or_default()
        .to_string();
    let src = crate::s3::CopySource::parse(&raw)?;
    if let Some(serde_json::Value::Object(m)) = ctx
        .audit
        .data_event
        .as_mut()
        .and_then(|r| r.request_parameters.as_mut())
    {
        m.insert("x-amz-copy-source".into(), serde_json::json!(raw));
    }
    let obj = crate::s3::read_copy_source(ctx, &src).await?;
    let range = copy_range(ctx.req.header("x-amz-copy-source-range"), obj.info.size)?;
    let body = match range {
        Some((a, b)) => bytes::Bytes::copy_from_slice(&obj.body[a as usize..=b as usize]),
        None => bytes::Bytes::from(obj.body),
    };
    let etag = format!("\"{}\"", hex::encode(md5::Md5::digest(&body)));
    ctx.audit.additional_event_data = Some(serde_json::json!({
        "SignatureVersion": crate::s3::signature_version(ctx.req),
        "AuthenticationMethod": crate::s3::authentication_method(ctx.req),
        "bytesTransferredIn": 0,
        "bytesTransferredOut": 0,
        "x-amz-id-2": ctx.request_id,
    }));
    stage_part(ctx, id, n, body, etag.clone(), None).await?;
    let mut r = Reply::s3_document(
        "CopyPartResult",
        &format!(
            "{}{}",
            el(
                "LastModified",
                &ctx.now.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
            ),
            el("ETag", &etag)
        ),
    );
    if let Some(v) = &obj.info.version_id {
        r = r.header("x-amz-copy-source-version-id", v.clone());
    }
    Ok(r)
}

/// The (PartNumber, ETag) list of a CompleteMultipartUpload body.
fn requested_parts(body: &str) -> Result<Vec<(u32, String)>, ApiError> {
    let malformed = || {
        ApiError::client(
            "MalformedXML",
            "The XML you provided was not well-formed or did not validate against our published schema.",
        )
    };
    if !body.contains("CompleteMultipartUpload") {
        return Err(malformed());
    }
    let mut out = Vec::new();
    for chunk in body.split("<Part>").skip(1) {
        let part = chunk.split("</Part>").next().ok_or_else(malformed)?;
        let field = |name: &str| {
            part.split(&format!("<{name}>"))
                .nth(1)
                .and_then(|r| r.split(&format!("</{name}>")).next())
                .map(|v| v.trim().replace("&quot;", "\"").replace("&#34;", "\""))
        };
        let n: u32 = field("PartNumber")
            .and_then(|v| v.parse().ok())
            .ok_or_else(malformed)?;
        let etag = field("ETag").ok_or_else(malformed)?;
        let etag = if etag.starts_with('"') {
            etag
        } else {
            format!("\"{etag}\"")
        };
        out.push((n, etag));
    }
    if out.is_empty() {
        return Err(malformed());
    }
    Ok(out)
}

/// POST /bucket/key?uploadId=ID
pub async fn complete(
    ctx: &mut Ctx<'_>,
    bucket: &str,
    key: &str,
    id: &str,
) -> Result<Reply, ApiError> {
    let up = load(ctx, id, bucket, key)?;
    let wanted = requested_parts(&String::from_utf8_lossy(&ctx.req.body))?;
    if wanted.windows(2).any(|w| w[0].0 >= w[1].0) {
        return Err(ApiError::client(
            "InvalidPartOrder",
            "The list of parts was not in ascending order. The parts list must be specified in order by part number.",
        ));
    }
    let have: BTreeMap<u32, Part> = parts_of(ctx, id)?.into_iter().collect();
    let mut total = 0u64;
    let mut sizes = Vec::with_capacity(wanted.len());
    for (n, etag) in &wanted {
        let p = have.get(n).filter(|p| &p.etag == etag).ok_or_else(|| {
            ApiError::client(
                "InvalidPart",
                "One or more of the specified parts could not be found. The part may not have been uploaded, or the specified entity tag may not match the part's entity tag.",
            )
            .with("PartNumber", n.to_string())
            .with("ETag", etag.clone())
        })?;
        sizes.push((*n, p.size));
        total += p.size;
    }
    // Every part but the last must be at least 5 MiB (checked once all parts are known).
    if let Some((n, _)) = sizes[..sizes.len() - 1]
        .iter()
        .find(|(_, size)| *size < MIN_PART_BYTES)
    {
        return Err(ApiError::client(
            "EntityTooSmall",
            "Your proposed upload is smaller than the minimum allowed object size.",
        )
        .with("PartNumber", n.to_string()));
    }
    if total > MAX_ASSEMBLED_BYTES {
        return Err(ApiError::client(
            "EntityTooLarge",
            "Your proposed upload exceeds the maximum allowed object size.",
        ));
    }
    let mut md5s = Vec::new();
    for (n, _) in &wanted {
        md5s.extend(hex::decode(have[n].etag.trim_matches('"')).unwrap_or_default());
    }
    let etag = format!(
        "\"{}-{}\"",
        hex::encode(md5::Md5::digest(&md5s)),
        wanted.len()
    );
    // S3's composite checksum: the checksum of the parts' checksums, with the part count.
    let composite = {
        let algs: Vec<_> = wanted
            .iter()
            .map(|(n, _)| have[n].checksum.as_ref().map(|c| c.0.clone()))
            .collect();
        match algs.first() {
            Some(Some(alg)) if algs.iter().all(|a| a.as_deref() == Some(alg)) => {
                let mut raw = Vec::new();
                for (n, _) in &wanted {
                    if let Some((_, v)) = &have[n].checksum {
                        raw.extend(
                            base64::engine::general_purpose::STANDARD
                                .decode(v)
                                .unwrap_or_default(),
                        );
                    }
                }
                Some((
                    alg.clone(),
                    format!(
                        "{}-{}",
                        crate::s3_chunked::checksum_b64(alg, &raw),
                        wanted.len()
                    ),
                ))
            }
            _ => None,
        }
    };
    let files: Vec<String> = wanted.iter().map(|(n, _)| have[n].file_name(*n)).collect();
    let part_files = PartFiles::of(ctx.api);
    let upload_id = id.to_string();
    let mut opts = cairn_store::PutOptions {
        content_type: up.content_type.clone(),
        content_encoding: up.content_encoding.clone(),
        metadata: up.metadata.clone(),
        etag: Some(etag.clone()),
        system: up.system.clone(),
        ..Default::default()
    };
    if let Some((alg, v)) = &composite {
        opts.system.insert(format!("checksum-{alg}"), v.clone());
    }
    let body = ctx
        .api
        .blocking(move || {
            let mut body = Vec::with_capacity(total as usize);
            for f in &files {
                body.extend(part_files.read(&upload_id, f)?);
            }
            Ok(bytes::Bytes::from(body))
        })
        .await?;
    crate::s3::stage_put(ctx, bucket, key, body, opts, None).await?;
    // The parts go once the object is made (a refused event leaves the upload to retry).
    defer_discard(ctx, id, &have);
    ctx.audit.additional_event_data = Some(serde_json::json!({
        "bytesTransferredIn": ctx.req.body.len(), "bytesTransferredOut": 0,
        "SignatureVersion": crate::s3::signature_version(ctx.req), "AuthenticationMethod": crate::s3::authentication_method(ctx.req)
    }));
    let host = ctx.req.header("host").unwrap_or_default().to_string();
    Ok(Reply::s3_document(
        "CompleteMultipartUploadResult",
        &format!(
            "{}{}{}{}{}",
            el("Location", &format!("http://{host}/{bucket}/{key}")),
            el("Bucket", bucket),
            el("Key", key),
            el("ETag", &etag),
            composite
                .map(|(alg, v)| el(&format!("Checksum{}", alg.to_ascii_uppercase()), &v))
                .unwrap_or_default()
        ),
    ))
}

/// Defers removing an upload's records and part files until the event is durable.
fn defer_discard(ctx: &mut Ctx<'_>, id: &str, parts: &BTreeMap<u32, Part>) {
    let (meta, files, id) = (ctx.api.meta.clone(), PartFiles::of(ctx.api), id.to_string());
    let numbers: Vec<u32> = parts.keys().copied().collect();
    ctx.defer(
        Box::new(move || {
            discard_upload(&meta, &files, &id, &numbers)?;
            Ok(crate::edge::Committed::default())
        }),
        None,
    );
}

fn discard_upload(
    meta: &crate::meta::Meta,
    files: &PartFiles,
    id: &str,
    numbers: &[u32],
) -> Result<(), ApiError> {
    for n in numbers {
        meta.delete(&part_key(id, *n))?;
    }
    meta.delete(&upload_key(id))?;
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
        if crate::lifecycle::due(up.initiated, days) <= now {
            let numbers: Vec<u32> = api
                .meta
                .scan::<serde_json::Value>(&format!("upload/{id}/part/"))?
                .into_iter()
                .filter_map(|(k, _)| k.rsplit('/').next()?.parse().ok())
                .collect();
            discard_upload(&api.meta, &files, &id, &numbers)?;
            n += 1;
        }
    }
    Ok(n)
}

/// DELETE /bucket/key?uploadId=ID
pub async fn abort(
    ctx: &mut Ctx<'_>,
    bucket: &str,
    key: &str,
    id: &str,
) -> Result<Reply, ApiError> {
    load(ctx, id, bucket, key)?;
    let parts: BTreeMap<u32, Part> = parts_of(ctx, id)?.into_iter().collect();
    defer_discard(ctx, id, &parts);
    Ok(Reply {
        status: 204,
        headers: vec![],
        body: bytes::Bytes::new(),
        stream: None,
    })
}

/// GET /bucket/key?uploadId=ID
pub async fn list_parts(
    ctx: &mut Ctx<'_>,
    bucket: &str,
    key: &str,
    id: &str,
) -> Result<Reply, ApiError> {
    load(ctx, id, bucket, key)?;
    let marker: u32 = ctx
        .req
        .query_param("part-number-marker")
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    let max: usize = ctx
        .req
        .query_param("max-parts")
        .and_then(|m| m.parse().ok())
        .unwrap_or(1000)
        .min(1000);
    let parts: Vec<(u32, Part)> = parts_of(ctx, id)?
        .into_iter()
        .filter(|(n, _)| *n > marker)
        .collect();
    let truncated = parts.len() > max;
    let shown = &parts[..parts.len().min(max)];
    let mut x = format!(
        "{}{}{}{}",
        el("Bucket", bucket),
        el("Key", key),
        el("UploadId", id),
        el("PartNumberMarker", &marker.to_string())
    );
    if let Some((n, _)) = shown.last() {
        x.push_str(&el("NextPartNumberMarker", &n.to_string()));
    }
    x.push_str(&format!(
        "<MaxParts>{max}</MaxParts><IsTruncated>{truncated}</IsTruncated><StorageClass>STANDARD</StorageClass>"
    ));
    for (n, p) in shown {
        x.push_str(&format!(
            "<Part>{}{}{}{}</Part>",
            el("PartNumber", &n.to_string()),
            el(
                "LastModified",
                &p.modified.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
            ),
            el("ETag", &p.etag),
            el("Size", &p.size.to_string())
        ));
    }
    Ok(Reply::s3_document("ListPartsResult", &x))
}

/// GET /bucket?uploads
pub async fn list_uploads(ctx: &mut Ctx<'_>, bucket: &str) -> Result<Reply, ApiError> {
    let all = uploads(&ctx.api.meta)?;
    let prefix = ctx.req.query_param("prefix").unwrap_or_default();
    let mut x = format!(
        "{}<KeyMarker></KeyMarker><UploadIdMarker></UploadIdMarker>{}<MaxUploads>1000</MaxUploads><IsTruncated>false</IsTruncated>",
        el("Bucket", bucket),
        el("Prefix", &prefix)
    );
    let mut mine: Vec<(String, Upload)> = all
        .into_iter()
        .filter(|(_, u)| u.bucket == bucket && u.key.starts_with(&prefix))
        .collect();
    mine.sort_by(|a, b| (&a.1.key, a.1.initiated).cmp(&(&b.1.key, b.1.initiated)));
    for (id, u) in mine {
        x.push_str(&format!(
            "<Upload>{}{}{}<StorageClass>STANDARD</StorageClass></Upload>",
            el("Key", &u.key),
            el("UploadId", &id),
            el(
                "Initiated",
                &u.initiated.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
            )
        ));
    }
    Ok(Reply::s3_document("ListMultipartUploadsResult", &x))
}
