//! S3 multipart uploads: CreateMultipartUpload, UploadPart (and UploadPartCopy),
//! CompleteMultipartUpload, AbortMultipartUpload, ListParts, ListMultipartUploads.
//!
//! A part file is named by its record only once the request's event is durable: a
//! re-uploaded part gets a new file, and the old one goes when the new record is made.
//! Completing assembles the parts into one object in the store, whose ETag is S3's
//! `md5(part md5s)-N`. Where uploads wait, and how they expire, is [`super::uploads`].
use super::copy::{read_copy_source, CopySource};
use super::list::ListInput;
use super::put::{content_md5_matches, ObjectHeaders};
use super::store_error;
use super::uploads::{
    discard_upload, load, part_key, parts_of, upload_key, uploads, Part, PartFiles, Upload,
};
use super::{access, document, empty, s3_time, transfer, S3Error, S3Request};
use crate::edge::{Committed, Ctx};
use crate::protocol::xml;
use crate::protocol::{ApiError, Reply};
use base64::Engine;
use md5::Digest as _;
use serde::Serialize;
use std::collections::BTreeMap;

/// Smallest part except the last (S3's rule).
pub const MIN_PART_BYTES: u64 = 5 << 20;
/// Largest object cairn assembles from parts (S3's object limit, 5 TiB).
pub const MAX_ASSEMBLED_BYTES: u64 = 5 << 40;

/// CreateMultipartUpload's input: the new object's headers and its checksum algorithm.
#[derive(Debug, Clone)]
pub struct CreateUploadInput {
    pub headers: ObjectHeaders,
    /// `x-amz-checksum-algorithm`, lower-cased and known.
    pub checksum_algorithm: Option<String>,
}

impl CreateUploadInput {
    pub(super) fn of(req: &S3Request) -> Result<CreateUploadInput, ApiError> {
        let checksum_algorithm = req
            .header("x-amz-checksum-algorithm")
            .map(str::to_ascii_lowercase);
        if let Some(a) = &checksum_algorithm {
            if !super::chunked::ALGORITHMS.contains(&a.as_str()) {
                return Err(S3Error::InvalidRequest(
                    "Checksum algorithm provided is unsupported. Please try again with any of the valid types: [CRC32, CRC32C, CRC64NVME, SHA1, SHA256]".into(),
                )
                .into());
            }
        }
        Ok(CreateUploadInput {
            headers: ObjectHeaders::of(req)?,
            checksum_algorithm,
        })
    }
}

/// An upload and a part of it (UploadPart, UploadPartCopy), or just the upload.
#[derive(Debug, Clone)]
pub struct PartInput {
    pub upload_id: String,
    /// 1 to 10,000 (0 when the operation names no part).
    pub part_number: u16,
}

impl PartInput {
    pub(super) fn of(req: &S3Request, with_number: bool) -> Result<PartInput, ApiError> {
        let upload_id = req
            .param("uploadId")
            .ok_or_else(|| S3Error::NoSuchUpload(String::new()))?
            .to_string();
        if !with_number {
            return Ok(PartInput {
                upload_id,
                part_number: 0,
            });
        }
        let number = req.param("partNumber");
        let part_number = number
            .and_then(|n| n.parse().ok())
            .filter(|n| (1..=10_000).contains(n))
            .ok_or_else(|| {
                S3Error::invalid_argument(
                    "Part number must be an integer between 1 and 10000, inclusive",
                    "partNumber",
                    number,
                )
            })?;
        Ok(PartInput {
            upload_id,
            part_number,
        })
    }
}

/// UploadPartCopy's input.
#[derive(Debug, Clone)]
pub struct PartCopyInput {
    pub part: PartInput,
    pub source: CopySource,
}

/// CompleteMultipartUpload's input: the parts, as (number, ETag).
#[derive(Debug, Clone)]
pub struct CompleteInput {
    pub upload_id: String,
    pub parts: Vec<(u16, String)>,
}

/// ListParts' input.
#[derive(Debug, Clone)]
pub struct ListPartsInput {
    pub upload_id: String,
    pub marker: u16,
    pub max: usize,
}

impl ListPartsInput {
    pub(super) fn of(req: &S3Request) -> Result<ListPartsInput, ApiError> {
        let number = |name: &str, default: usize| match req.param(name) {
            None => Ok(default),
            Some(v) => v
                .parse::<usize>()
                .map_err(|_| S3Error::invalid_argument(format!("Invalid {name}."), name, Some(v))),
        };
        Ok(ListPartsInput {
            upload_id: PartInput::of(req, false)?.upload_id,
            marker: number("part-number-marker", 0)?.min(10_000) as u16,
            max: number("max-parts", 1000)?.min(1000),
        })
    }
}

/// Where an SSE-KMS upload keeps its object's data key envelope until completion.
const ENVELOPE: &str = "sse-envelope";

/// POST /bucket/key?uploads
pub(super) async fn create(
    ctx: &mut Ctx<'_>,
    req: &S3Request,
    i: CreateUploadInput,
) -> Result<Reply, ApiError> {
    access::refuse_write_headers(ctx, req)?;
    let (bucket, key) = (req.bucket.as_str(), req.object_key());
    if key.len() > cairn_store::MAX_KEY_BYTES {
        return Err(S3Error::KeyTooLong.into());
    }
    let mut sys = cairn_store::PutOptions::default();
    i.headers.system(ctx, bucket, false, &mut sys)?;
    let sse = super::sse::apply(ctx, i.headers.sse.as_deref(), bucket, key, &mut sys).await?;
    if let Some(w) = sys.wrapped_key.take() {
        // The object's data key waits with the upload for CompleteMultipartUpload.
        sys.system.insert(
            ENVELOPE.into(),
            base64::engine::general_purpose::STANDARD.encode(w),
        );
    }
    let up = Upload {
        system: sys.system,
        bucket: bucket.into(),
        key: key.into(),
        initiated: ctx.now,
        content_type: i.headers.content_type.clone(),
        content_encoding: i.headers.content_encoding.clone(),
        metadata: i.headers.metadata.clone(),
        checksum_algorithm: i.checksum_algorithm,
    };
    let id = uuid::Uuid::new_v4().simple().to_string();
    // The upload exists (its directory, its record) only once the event is durable.
    let (files, meta, id2) = (PartFiles::of(ctx.api), ctx.api.meta.clone(), id.clone());
    ctx.defer(
        Box::new(move || {
            files.create_dir(&id2).map_err(ApiError::internal)?;
            meta.put(&upload_key(&id2), &up)?;
            Ok(Committed::default())
        }),
        None,
    );
    ctx.audit.response_elements = Some(serde_json::json!({"uploadId": id}));
    let mut r = document(
        "InitiateMultipartUploadResult",
        &Initiated {
            bucket: bucket.to_string(),
            key: key.to_string(),
            upload_id: id,
        },
    );
    for (h, v) in sse {
        r = r.header(&h, v);
    }
    Ok(r)
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Initiated {
    bucket: String,
    key: String,
    upload_id: String,
}

/// PUT /bucket/key?partNumber=N&uploadId=ID: the body received as it arrives into a new
/// part file ([`super::intake`]).
pub(super) async fn upload_part(
    ctx: &mut Ctx<'_>,
    req: &S3Request,
    i: PartInput,
) -> Result<Reply, ApiError> {
    let (id, n) = (i.upload_id.as_str(), i.part_number);
    let up = load(ctx, id, &req.bucket, req.object_key())?;
    super::intake::declared_length(req, ctx.api.opts.max_object_bytes)?;
    super::put::content_md5_well_formed(req.header("content-md5"))?;
    let file = format!("{n:05}-{}", uuid::Uuid::new_v4().simple());
    let writer = PartFiles::of(ctx.api).writer(id, &file)?;
    let got = super::intake::receive(ctx, req, writer).await?;
    let sink = got.sink;
    let (size, etag) = ctx.api.blocking(move || sink.finish()).await?;
    let files = PartFiles::of(ctx.api);
    let md5 = hex::decode(etag.trim_matches('"')).unwrap_or_default();
    if let Err(e) = content_md5_matches(req.header("content-md5"), &md5) {
        files.remove(id, &file);
        return Err(e);
    }
    let mut checksum = got.checksum;
    if checksum.is_none() {
        if let Some(a) = &up.checksum_algorithm {
            // Computed from the part file (the client asked for it at creation only).
            let (f2, id2, file2, a2) = (files.clone(), id.to_string(), file.clone(), a.clone());
            let v = ctx
                .api
                .blocking(move || {
                    let r = f2.reader(&id2, &file2, size)?;
                    let mut c = super::chunked::Checksums::for_request(&[(
                        "x-amz-checksum-algorithm".to_string(),
                        a2.clone(),
                    )]);
                    copy_to(r, &mut |d| {
                        c.update(d);
                        Ok(())
                    })?;
                    c.finish(&[("x-amz-checksum-algorithm".to_string(), a2)])
                })
                .await;
            match v {
                Ok(v) => checksum = v,
                Err(e) => {
                    files.remove(id, &file);
                    return Err(e);
                }
            }
        }
    }
    record_part(ctx, id, n, file, size, etag.clone(), checksum.clone())?;
    let mut r = empty(200).header("etag", etag);
    if let Some((alg, v)) = checksum {
        r = r.header(&format!("x-amz-checksum-{alg}"), v);
    }
    Ok(r)
}

/// Passes everything `r` reads to `out`, 256 KiB at a time.
pub(super) fn copy_to(
    mut r: impl std::io::Read,
    out: &mut dyn FnMut(&[u8]) -> Result<(), ApiError>,
) -> Result<u64, ApiError> {
    let mut buf = vec![0u8; 256 << 10];
    let mut total = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ApiError::internal(format!("stored body: {e}"))),
        };
        out(&buf[..n])?;
        total += n as u64;
    }
}

/// Makes the written part file `file` part `n` of upload `id` once the request's event is
/// durable; then the file it replaces goes. A refused event removes the file and leaves the
/// upload as it was.
fn record_part(
    ctx: &mut Ctx<'_>,
    id: &str,
    n: u16,
    file: String,
    size: u64,
    etag: String,
    checksum: Option<(String, String)>,
) -> Result<(), ApiError> {
    let files = PartFiles::of(ctx.api);
    let old: Option<Part> = match ctx.api.meta.get(&part_key(id, n)) {
        Ok(o) => o,
        Err(e) => {
            files.remove(id, &file);
            return Err(e);
        }
    };
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
            Ok(Committed::default())
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
        S3Error::invalid_argument(
            "The x-amz-copy-source-range value must be of the form bytes=first-last where first and last are the zero-based offsets of the first and last bytes to copy",
            "x-amz-copy-source-range",
            Some(h),
        )
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
        return Err(S3Error::InvalidRange {
            requested: h.to_string(),
            size,
        }
        .into());
    }
    Ok(Some((a, b)))
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct CopyPartResult {
    last_modified: String,
    #[serde(rename = "ETag")]
    etag: String,
}

/// PUT /bucket/key?partNumber=N&uploadId=ID with `x-amz-copy-source` (UploadPartCopy): the
/// source is read as a GetObject of it would be (its own bucket's policy, its version, an
/// archived object refused), optionally a byte range of it.
pub(super) async fn upload_part_copy(
    ctx: &mut Ctx<'_>,
    req: &S3Request,
    i: PartCopyInput,
) -> Result<Reply, ApiError> {
    let (id, n) = (i.part.upload_id.as_str(), i.part.part_number);
    load(ctx, id, &req.bucket, req.object_key())?;
    let info = read_copy_source(ctx, req, &i.source).await?;
    let range = copy_range(i.source.range.as_deref(), info.size)?;
    let limit = ctx
        .api
        .opts
        .max_object_bytes
        .min(super::intake::MAX_PUT_BYTES);
    let copied = range.map_or(info.size, |(a, b)| b - a + 1);
    if copied > limit {
        return Err(S3Error::EntityTooLarge.into());
    }
    ctx.check_reserve_for(copied)?;
    let file = format!("{n:05}-{}", uuid::Uuid::new_v4().simple());
    let mut writer = PartFiles::of(ctx.api).writer(id, &file)?;
    let (source, checked) = (i.source.clone(), info.clone());
    let (size, etag) = super::with_store(ctx, move |store| {
        let body = super::copy::open_copy_source(
            store,
            &source,
            &checked,
            range.map(|(a, b)| (a, b + 1)),
        )?;
        super::multipart::copy_to(body, &mut |d| super::intake::Sink::write(&mut writer, d))?;
        writer.finish()
    })
    .await?;
    transfer(ctx, req, 0, 0);
    record_part(ctx, id, n, file, size, etag.clone(), None)?;
    let mut r = document(
        "CopyPartResult",
        &CopyPartResult {
            last_modified: s3_time(ctx.now),
            etag,
        },
    );
    if let Some(v) = &info.version_id {
        r = r.header("x-amz-copy-source-version-id", v.clone());
    }
    Ok(r)
}

/// The (PartNumber, ETag) list of a CompleteMultipartUpload body.
pub(super) fn requested_parts(body: &[u8]) -> Result<Vec<(u16, String)>, ApiError> {
    let doc = xml::parse(body)
        .filter(|d| d.name == "CompleteMultipartUpload")
        .ok_or(S3Error::MalformedXml)?;
    let mut out = Vec::new();
    for part in doc.children_named("Part") {
        let n: u16 = part
            .child_text("PartNumber")
            .and_then(|v| v.trim().parse().ok())
            .ok_or(S3Error::MalformedXml)?;
        let etag = part
            .child_text("ETag")
            .map(str::trim)
            .ok_or(S3Error::MalformedXml)?;
        let etag = if etag.starts_with('"') {
            etag.to_string()
        } else {
            format!("\"{etag}\"")
        };
        out.push((n, etag));
    }
    if out.is_empty() {
        return Err(S3Error::MalformedXml.into());
    }
    Ok(out)
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Completed {
    location: String,
    bucket: String,
    key: String,
    #[serde(rename = "ETag")]
    etag: String,
    #[serde(flatten)]
    checksum: super::get::ChecksumFields,
}

/// POST /bucket/key?uploadId=ID
pub(super) async fn complete(
    ctx: &mut Ctx<'_>,
    req: &S3Request,
    i: CompleteInput,
) -> Result<Reply, ApiError> {
    let (bucket, key, id) = (req.bucket.as_str(), req.object_key(), i.upload_id.as_str());
    let up = load(ctx, id, bucket, key)?;
    // An SSE-KMS upload is completed through KMS: S3 decrypts the data key to assemble the
    // object, so the caller needs kms:Decrypt on the upload's key (as on AWS).
    super::sse::check_read(ctx, &up.system)?;
    let wanted = i.parts;
    if wanted.windows(2).any(|w| w[0].0 >= w[1].0) {
        return Err(S3Error::InvalidPartOrder.into());
    }
    let have: BTreeMap<u16, Part> = parts_of(ctx, id)?.into_iter().collect();
    let mut total = 0u64;
    let mut sizes = Vec::with_capacity(wanted.len());
    for (n, etag) in &wanted {
        let p = have
            .get(n)
            .filter(|p| &p.etag == etag)
            .ok_or_else(|| S3Error::InvalidPart {
                part: *n,
                etag: etag.clone(),
            })?;
        sizes.push((*n, p.size));
        total += p.size;
    }
    // Every part but the last must be at least 5 MiB (checked once all parts are known).
    if let Some((n, _)) = sizes[..sizes.len() - 1]
        .iter()
        .find(|(_, size)| *size < MIN_PART_BYTES)
    {
        return Err(S3Error::EntityTooSmall { part: *n }.into());
    }
    if total > MAX_ASSEMBLED_BYTES {
        return Err(S3Error::EntityTooLarge.into());
    }
    // The object is a copy of the parts until they are deleted.
    ctx.check_reserve_for(total)?;
    let mut md5s = Vec::new();
    for (n, _) in &wanted {
        let raw = hex::decode(have[n].etag.trim_matches('"'))
            .map_err(|_| ApiError::internal(format!("part {n} of upload {id} has a bad ETag")))?;
        md5s.extend(raw);
    }
    let etag = format!(
        "\"{}-{}\"",
        hex::encode(md5::Md5::digest(&md5s)),
        wanted.len()
    );
    let composite = composite_checksum(&wanted, &have)?;
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
    if let Some(e) = opts.system.remove(ENVELOPE) {
        opts.wrapped_key = Some(
            base64::engine::general_purpose::STANDARD
                .decode(e)
                .map_err(|_| ApiError::internal("an upload's key envelope is not base64"))?,
        );
    }
    // The object is written from the part files as a stream (constant memory), then made the
    // object once the request's event is durable.
    let sizes: Vec<u64> = wanted.iter().map(|(n, _)| have[n].size).collect();
    let (b2, k2) = (bucket.to_string(), key.to_string());
    let staged = super::with_store(ctx, move |store| {
        let mut w = store
            .stage_writer(&b2, &k2, &opts)
            .map_err(|e| store_error(e, &b2, Some(&k2)))?;
        for (f, size) in files.iter().zip(sizes) {
            let r = part_files.reader(&upload_id, f, size)?;
            copy_to(r, &mut |d| w.write(d).map_err(ApiError::internal))?;
        }
        w.finish().map_err(|e| store_error(e, &b2, Some(&k2)))
    })
    .await?;
    super::put::defer_commit(ctx, staged, None);
    // The parts go once the object is made (a refused event leaves the upload to retry).
    defer_discard(ctx, id);
    transfer(ctx, req, req.body.len() as u64, 0);
    let answer = Completed {
        location: format!("http://{}/{bucket}/{key}", req.host),
        bucket: bucket.to_string(),
        key: key.to_string(),
        etag,
        checksum: super::get::ChecksumFields::of(composite.iter().cloned()),
    };
    Ok(document("CompleteMultipartUploadResult", &answer))
}

/// S3's composite checksum: the checksum of the parts' checksums, with the part count (when
/// every part has one, of the same algorithm).
fn composite_checksum(
    wanted: &[(u16, String)],
    have: &BTreeMap<u16, Part>,
) -> Result<Option<(String, String)>, ApiError> {
    let algs: Vec<_> = wanted
        .iter()
        .map(|(n, _)| have[n].checksum.as_ref().map(|c| c.0.clone()))
        .collect();
    let Some(Some(alg)) = algs.first() else {
        return Ok(None);
    };
    if !algs.iter().all(|a| a.as_deref() == Some(alg)) {
        return Ok(None);
    }
    let mut raw = Vec::new();
    for (n, _) in wanted {
        if let Some((_, v)) = &have[n].checksum {
            raw.extend(
                base64::engine::general_purpose::STANDARD
                    .decode(v)
                    .map_err(|_| ApiError::internal(format!("part {n} has a bad checksum")))?,
            );
        }
    }
    Ok(Some((
        alg.clone(),
        format!(
            "{}-{}",
            super::chunked::checksum_b64(alg, &raw),
            wanted.len()
        ),
    )))
}

/// Defers removing an upload's records and part files until the event is durable.
fn defer_discard(ctx: &mut Ctx<'_>, id: &str) {
    let (meta, files, id) = (ctx.api.meta.clone(), PartFiles::of(ctx.api), id.to_string());
    ctx.defer(
        Box::new(move || {
            discard_upload(&meta, &files, &id)?;
            Ok(Committed::default())
        }),
        None,
    );
}

/// DELETE /bucket/key?uploadId=ID
pub(super) fn abort(ctx: &mut Ctx<'_>, req: &S3Request, i: PartInput) -> Result<Reply, ApiError> {
    load(ctx, &i.upload_id, &req.bucket, req.object_key())?;
    defer_discard(ctx, &i.upload_id);
    Ok(empty(204))
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct PartsList {
    bucket: String,
    key: String,
    upload_id: String,
    part_number_marker: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_part_number_marker: Option<u16>,
    max_parts: usize,
    is_truncated: bool,
    storage_class: &'static str,
    part: Vec<PartXml>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct PartXml {
    part_number: u16,
    last_modified: String,
    #[serde(rename = "ETag")]
    etag: String,
    size: u64,
}

/// GET /bucket/key?uploadId=ID
pub(super) fn list_parts(
    ctx: &mut Ctx<'_>,
    req: &S3Request,
    i: ListPartsInput,
) -> Result<Reply, ApiError> {
    load(ctx, &i.upload_id, &req.bucket, req.object_key())?;
    let parts: Vec<(u16, Part)> = parts_of(ctx, &i.upload_id)?
        .into_iter()
        .filter(|(n, _)| *n > i.marker)
        .collect();
    let truncated = parts.len() > i.max;
    let shown = &parts[..parts.len().min(i.max)];
    let answer = PartsList {
        bucket: req.bucket.clone(),
        key: req.object_key().to_string(),
        upload_id: i.upload_id,
        part_number_marker: i.marker,
        next_part_number_marker: shown.last().map(|(n, _)| *n),
        max_parts: i.max,
        is_truncated: truncated,
        storage_class: "STANDARD",
        part: shown
            .iter()
            .map(|(n, p)| PartXml {
                part_number: *n,
                last_modified: s3_time(p.modified),
                etag: p.etag.clone(),
                size: p.size,
            })
            .collect(),
    };
    Ok(document("ListPartsResult", &answer))
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct UploadsList {
    bucket: String,
    key_marker: String,
    upload_id_marker: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_key_marker: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_upload_id_marker: Option<String>,
    prefix: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    delimiter: Option<String>,
    max_uploads: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    encoding_type: Option<&'static str>,
    is_truncated: bool,
    upload: Vec<UploadXml>,
    common_prefixes: Vec<super::list::CommonPrefix>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct UploadXml {
    key: String,
    upload_id: String,
    initiated: String,
    storage_class: &'static str,
}

/// GET /bucket?uploads: uploads in key order, then by initiation, from after
/// `key-marker` (and, for that key, after `upload-id-marker`), keys sharing a prefix up to
/// the `delimiter` rolled into one common prefix, at most `max-uploads` entries a page.
pub(super) fn list_uploads(
    ctx: &mut Ctx<'_>,
    req: &S3Request,
    i: ListInput,
) -> Result<Reply, ApiError> {
    let mut mine: Vec<(String, Upload)> = uploads(&ctx.api.meta)?
        .into_iter()
        .filter(|(_, u)| u.bucket == req.bucket && u.key.starts_with(&i.prefix))
        .collect();
    mine.sort_by(|a, b| (&a.1.key, a.1.initiated, &a.0).cmp(&(&b.1.key, b.1.initiated, &b.0)));
    // Where the page starts.
    let start = match (&i.key_marker, &i.version_id_marker) {
        (Some(k), Some(id)) => {
            let same_key = |u: &Upload| u.key == *k;
            match mine.iter().position(|(uid, u)| same_key(u) && uid == id) {
                Some(p) => p + 1,
                None => mine.iter().take_while(|(_, u)| u.key <= *k).count(),
            }
        }
        (Some(k), None) => {
            // A marker that is a common prefix (what a page rolled up) skips its whole group.
            let group = i.delimiter.as_deref().is_some_and(|d| k.ends_with(d));
            mine.iter()
                .take_while(|(_, u)| u.key <= *k || (group && u.key.starts_with(k.as_str())))
                .count()
        }
        _ => 0,
    };
    let mut upload = Vec::new();
    let mut prefixes: Vec<super::list::CommonPrefix> = Vec::new();
    let mut last: Option<(String, Option<String>)> = None;
    let mut truncated = false;
    let mut rest = mine.into_iter().skip(start).peekable();
    while let Some((id, u)) = rest.next() {
        if upload.len() + prefixes.len() >= i.max_keys {
            truncated = true;
            break;
        }
        let rolled = i.delimiter.as_deref().and_then(|d| {
            u.key[i.prefix.len()..]
                .find(d)
                .map(|p| u.key[..i.prefix.len() + p + d.len()].to_string())
        });
        match rolled {
            Some(cp) => {
                // Every upload under this prefix is one entry.
                while rest.peek().is_some_and(|(_, n)| n.key.starts_with(&cp)) {
                    rest.next();
                }
                last = Some((cp.clone(), None));
                prefixes.push(super::list::CommonPrefix { prefix: i.enc(&cp) });
            }
            None => {
                last = Some((u.key.clone(), Some(id.clone())));
                upload.push(UploadXml {
                    key: i.enc(&u.key),
                    upload_id: id,
                    initiated: s3_time(u.initiated),
                    storage_class: "STANDARD",
                });
            }
        }
    }
    let (next_key_marker, next_upload_id_marker) = match (truncated, last) {
        (true, Some((k, id))) => (Some(i.enc(&k)), id),
        _ => (None, None),
    };
    let answer = UploadsList {
        bucket: req.bucket.clone(),
        key_marker: i
            .key_marker
            .as_deref()
            .map(|k| i.enc(k))
            .unwrap_or_default(),
        upload_id_marker: i.version_id_marker.clone().unwrap_or_default(),
        next_key_marker,
        next_upload_id_marker,
        prefix: i.enc(&i.prefix),
        delimiter: i.delimiter.as_deref().map(|d| i.enc(d)),
        max_uploads: i.max_keys,
        encoding_type: i.encoding_type(),
        is_truncated: truncated,
        upload,
        common_prefixes: prefixes,
    };
    Ok(document("ListMultipartUploadsResult", &answer))
}
