//! S3 multipart uploads: create, upload part, complete, abort, list parts, list uploads.
//!
//! Parts are files under `ApiOptions::multipart_dir/UPLOAD_ID/` (upload ids are random hex,
//! part numbers integers: neither a key nor a bucket name ever becomes a path), written with
//! temp file + fsync + rename. Upload and part records live in `meta`. Completing assembles
//! the parts into one object in the store, whose ETag is S3's `md5(part md5s)-N`.

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

fn part_path(ctx: &Ctx<'_>, id: &str, n: u32) -> std::path::PathBuf {
    ctx.api.opts.multipart_dir.join(id).join(format!("{n:05}"))
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
    std::fs::create_dir_all(ctx.api.opts.multipart_dir.join(&id)).map_err(ApiError::internal)?;
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

/// PUT /bucket/key?partNumber=N&uploadId=ID
pub async fn upload_part(
    ctx: &mut Ctx<'_>,
    bucket: &str,
    key: &str,
    id: &str,
    number: &str,
) -> Result<Reply, ApiError> {
    let n: u32 = number
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
        })?;
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
    let path = part_path(ctx, id, n);
    ctx.api
        .blocking(move || {
            let tmp = path.with_extension("tmp");
            let mut f = std::fs::File::create(&tmp).map_err(ApiError::internal)?;
            f.write_all(&body).map_err(ApiError::internal)?;
            f.sync_all().map_err(ApiError::internal)?;
            std::fs::rename(&tmp, &path).map_err(ApiError::internal)?;
            Ok(())
        })
        .await?;
    ctx.defer_meta_put(
        part_key(id, n),
        Part {
            etag: etag.clone(),
            size: ctx.req.body.len() as u64,
            modified: ctx.now,
            checksum: checksum.clone(),
        },
    );
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
    let paths: Vec<_> = wanted.iter().map(|(n, _)| part_path(ctx, id, *n)).collect();
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
            for p in &paths {
                body.extend(std::fs::read(p).map_err(ApiError::internal)?);
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
    let (meta, dir, id) = (
        ctx.api.meta.clone(),
        ctx.api.opts.multipart_dir.clone(),
        id.to_string(),
    );
    let numbers: Vec<u32> = parts.keys().copied().collect();
    ctx.defer(
        Box::new(move || {
            for n in numbers {
                meta.delete(&part_key(&id, n))?;
            }
            meta.delete(&upload_key(&id))?;
            let _ = std::fs::remove_dir_all(dir.join(&id));
            Ok(crate::edge::Committed::default())
        }),
        None,
    );
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
    let all: Vec<(String, Upload)> = ctx.api.meta.scan("upload/")?;
    let prefix = ctx.req.query_param("prefix").unwrap_or_default();
    let mut x = format!(
        "{}<KeyMarker></KeyMarker><UploadIdMarker></UploadIdMarker>{}<MaxUploads>1000</MaxUploads><IsTruncated>false</IsTruncated>",
        el("Bucket", bucket),
        el("Prefix", &prefix)
    );
    let mut uploads: Vec<(String, Upload)> = all
        .into_iter()
        .filter(|(k, u)| {
            k.matches('/').count() == 1 && u.bucket == bucket && u.key.starts_with(&prefix)
        })
        .map(|(k, u)| (k["upload/".len()..].to_string(), u))
        .collect();
    uploads.sort_by(|a, b| (&a.1.key, a.1.initiated).cmp(&(&b.1.key, b.1.initiated)));
    for (id, u) in uploads {
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
