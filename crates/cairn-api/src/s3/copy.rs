//! Copies: CopyObject, and reading a copy source as a GetObject of it would (also for
//! UploadPartCopy).

use super::get::{archived, archived_error, etag_matches};
use super::put::{defer_commit, AnswerFn, ObjectHeaders};
use super::{access, s3_time, store_error, with_store, S3Error, S3Request};
use crate::edge::Ctx;
use crate::protocol::xml::document_in;
use crate::protocol::{ApiError, Reply, S3_XMLNS};
use cairn_record::Arn;
use cairn_store::{ObjectInfo, PutOptions, StoreError};
use serde::Serialize;

/// The source of a copy (`x-amz-copy-source: [/]bucket/key[?versionId=V]`, the path
/// percent-encoded; its key is opaque, `..` is just text), with the conditions on it.
#[derive(Debug, Clone)]
pub struct CopySource {
    pub bucket: String,
    pub key: String,
    pub version_id: Option<String>,
    pub if_match: Option<String>,
    pub if_none_match: Option<String>,
    /// `x-amz-copy-source-range` (UploadPartCopy).
    pub range: Option<String>,
}

impl CopySource {
    pub fn parse(raw: &str) -> Result<CopySource, ApiError> {
        let invalid = || {
            S3Error::invalid_argument(
                "Copy Source must mention the source bucket and key: sourcebucket/sourcekey",
                "x-amz-copy-source",
                None,
            )
        };
        let (path, query) = raw.split_once('?').unwrap_or((raw, ""));
        let decoded = percent_encoding::percent_decode_str(path.trim_start_matches('/'))
            .decode_utf8()
            .map_err(|_| invalid())?;
        let (bucket, key) = decoded
            .split_once('/')
            .filter(|(b, k)| !b.is_empty() && !k.is_empty())
            .ok_or_else(invalid)?;
        let mut version_id = None;
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            match k.as_ref() {
                "versionId" if !v.is_empty() => version_id = Some(v.into_owned()),
                _ => return Err(invalid()),
            }
        }
        Ok(CopySource {
            bucket: bucket.to_string(),
            key: key.to_string(),
            version_id,
            if_match: None,
            if_none_match: None,
            range: None,
        })
    }

    /// The copy source of a request, with its conditions.
    pub(super) fn of(req: &S3Request) -> Result<CopySource, ApiError> {
        let raw = req.header("x-amz-copy-source").ok_or_else(|| {
            S3Error::invalid_argument("A copy source is required.", "x-amz-copy-source", None)
        })?;
        let mut s = CopySource::parse(raw)?;
        let h = |n: &str| req.header(n).map(str::to_string);
        s.if_match = h("x-amz-copy-source-if-match");
        s.if_none_match = h("x-amz-copy-source-if-none-match");
        s.range = h("x-amz-copy-source-range");
        Ok(s)
    }

    pub fn arn(&self) -> String {
        Arn::s3_object(&self.bucket, &self.key).to_string()
    }
}

/// CopyObject's input.
#[derive(Debug, Clone)]
pub struct CopyInput {
    pub source: CopySource,
    /// `x-amz-metadata-directive: REPLACE` (else the source's metadata is copied).
    pub replace_metadata: bool,
    /// `x-amz-tagging-directive: REPLACE` (else the source's tags are copied).
    pub replace_tags: bool,
    pub headers: ObjectHeaders,
}

impl CopyInput {
    pub(super) fn of(req: &S3Request) -> Result<CopyInput, ApiError> {
        let directive = |h: &str| match req.header(h) {
            None | Some("COPY") => Ok(false),
            Some("REPLACE") => Ok(true),
            Some(_) => Err(ApiError::from(S3Error::InvalidArgument(format!(
                "Unknown {} directive.",
                h.trim_start_matches("x-amz-")
                    .trim_end_matches("-directive")
            )))),
        };
        Ok(CopyInput {
            source: CopySource::of(req)?,
            replace_metadata: directive("x-amz-metadata-directive")?,
            replace_tags: directive("x-amz-tagging-directive")?,
            headers: ObjectHeaders::of(req)?,
        })
    }
}

/// Reads a copy source as a GetObject of it would: authorized with the caller's policies and
/// the *source* bucket's policy (whose Deny binds even the root), the version asked for, the
/// copy-source conditions, and an archived object refused until restored.
pub(crate) async fn read_copy_source(
    ctx: &mut Ctx<'_>,
    req: &S3Request,
    src: &CopySource,
) -> Result<ObjectInfo, ApiError> {
    if ctx.api.opts.proxies.contains_key(&src.bucket) {
        ctx.no_authorization_needed();
        return Err(S3Error::NotImplemented(
            "Copying from a proxied bucket into a bucket of another backend is not supported."
                .into(),
        )
        .into());
    }
    let policies = access::bucket_policies(ctx, &src.bucket)?;
    let action = super::router::action("GetObject", src.version_id.is_some());
    // The source is authorized with its own keys: its tags (`s3:ExistingObjectTag/*`) and
    // version, as a GetObject of it would see them.
    let (b, k, v) = (src.bucket.clone(), src.key.clone(), src.version_id.clone());
    let info = with_store(ctx, move |s| Ok(s.head_version(&b, &k, v.as_deref()).ok())).await?;
    // The request's own keys may not have been needed for the destination (the root without
    // a bucket policy there); the source's policy needs them.
    let base = if ctx.keys.is_empty() && !policies.is_empty() {
        access::request_keys(ctx, req, "CopyObject")
    } else {
        ctx.keys.clone()
    };
    let source_keys = access::source_keys(&base, info.as_ref(), src.version_id.as_deref());
    let request_keys = std::mem::replace(&mut ctx.keys, source_keys);
    let authorized = ctx.authorize_with(&action, &src.arn(), &policies);
    ctx.keys = request_keys;
    authorized?;
    let (sb, sk, sv) = (src.bucket.clone(), src.key.clone(), src.version_id.clone());
    let got = with_store(ctx, move |store| {
        Ok(store.head_version(&sb, &sk, sv.as_deref()))
    })
    .await?;
    let info = match got {
        Ok(o) => o,
        Err(StoreError::DeleteMarker(_)) if src.version_id.is_some() => {
            return Err(S3Error::InvalidRequest(
                "The source of a copy request may not specifically refer to a delete marker by version id.".into(),
            )
            .into())
        }
        Err(StoreError::DeleteMarker(_)) => return Err(S3Error::NoSuchKey(src.key.clone()).into()),
        Err(e) => return Err(store_error(e, &src.bucket, Some(&src.key))),
    };
    if archived(&info) {
        return Err(archived_error(&info));
    }
    // An SSE-KMS source is read through KMS, as a GetObject would (every copy path: CopyObject
    // and UploadPartCopy).
    super::sse::check_read(ctx, &info.system)?;
    source_conditions(src, &info)?;
    Ok(info)
}

/// `x-amz-copy-source-If-Match` / `-If-None-Match` against the source's ETag.
fn source_conditions(src: &CopySource, info: &ObjectInfo) -> Result<(), ApiError> {
    if let Some(m) = &src.if_match {
        if !etag_matches(m, &info.etag) {
            return Err(S3Error::PreconditionFailed("x-amz-copy-source-If-Match".into()).into());
        }
    }
    if let Some(m) = &src.if_none_match {
        if etag_matches(m, &info.etag) {
            return Err(
                S3Error::PreconditionFailed("x-amz-copy-source-If-None-Match".into()).into(),
            );
        }
    }
    Ok(())
}

/// Opens the body of a copy source [`read_copy_source`] accepted (`range`: `start..end`),
/// in the worker that reads it. The version read is the one checked (a source replaced in
/// between is checked again).
pub(crate) fn open_copy_source(
    store: &dyn cairn_store::ObjectStore,
    src: &CopySource,
    checked: &ObjectInfo,
    range: Option<(u64, u64)>,
) -> Result<Box<dyn std::io::Read + Send>, ApiError> {
    let version = checked.version_id.as_deref().or(src.version_id.as_deref());
    let (info, r) = store
        .open_read(&src.bucket, &src.key, version, &|_| range)
        .map_err(|e| store_error(e, &src.bucket, Some(&src.key)))?;
    if info.etag != checked.etag || info.size != checked.size {
        source_conditions(src, &info)?;
        return Err(ApiError::new(
            "InternalError",
            500,
            "The copy source changed while it was read. Please try again.",
        ));
    }
    Ok(r)
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct CopyResult {
    last_modified: String,
    #[serde(rename = "ETag")]
    etag: String,
}

/// CopyObject: the source is read as [`read_copy_source`] says; the destination needs
/// `s3:PutObject` (and the header permissions of a write) under its own bucket's policy.
pub(super) async fn copy(
    ctx: &mut Ctx<'_>,
    req: &S3Request,
    i: CopyInput,
) -> Result<Reply, ApiError> {
    let (bucket, key) = (req.bucket.as_str(), req.object_key());
    access::refuse_write_headers(ctx, req)?;
    let src = &i.source;
    if !i.replace_metadata && src.bucket == bucket && src.key == key && src.version_id.is_none() {
        return Err(S3Error::InvalidRequest(
            "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes.".into(),
        )
        .into());
    }
    let source = src.clone();
    let info = read_copy_source(ctx, req, src).await?;
    if info.size > super::intake::MAX_PUT_BYTES {
        return Err(S3Error::InvalidRequest(format!(
            "The specified copy source is larger than the maximum allowable size for a copy source: {}",
            super::intake::MAX_PUT_BYTES
        ))
        .into());
    }
    ctx.check_reserve_for(info.size)?;
    let mut opts = PutOptions {
        content_type: info.content_type.clone(),
        content_encoding: info.content_encoding.clone(),
        metadata: info.metadata.clone(),
        ..Default::default()
    };
    if i.replace_metadata {
        opts.content_type = i.headers.content_type.clone();
        opts.content_encoding = i.headers.content_encoding.clone();
        opts.metadata = i.headers.metadata.clone();
    }
    i.headers.system(ctx, bucket, false, &mut opts)?;
    // Tags travel with the copy unless the request replaces them.
    if !i.replace_tags {
        match info.system.get("tagging") {
            Some(t) => opts.system.insert("tagging".into(), t.clone()),
            None => opts.system.remove("tagging"),
        };
    }
    let answer: AnswerFn = Box::new(|info: &ObjectInfo| {
        let doc = CopyResult {
            last_modified: s3_time(info.last_modified),
            etag: info.etag.clone(),
        };
        bytes::Bytes::from(document_in("CopyObjectResult", S3_XMLNS, &doc))
    });
    let sse = super::sse::apply(ctx, i.headers.sse.as_deref(), bucket, key, &mut opts).await?;
    let (b2, k2, checked) = (bucket.to_string(), key.to_string(), info.clone());
    let staged = with_store(ctx, move |store| {
        let body = open_copy_source(store, &source, &checked, None)?;
        let mut w = store
            .stage_writer(&b2, &k2, &opts)
            .map_err(|e| store_error(e, &b2, Some(&k2)))?;
        super::multipart::copy_to(body, &mut |d| w.write(d).map_err(ApiError::internal))?;
        w.finish().map_err(|e| store_error(e, &b2, Some(&k2)))
    })
    .await?;
    defer_commit(ctx, staged, Some(answer));
    let mut r = Reply::s3_xml(200, String::new());
    for (h, v) in sse {
        r = r.header(&h, v);
    }
    if let Some(v) = &info.version_id {
        r = r.header("x-amz-copy-source-version-id", v.clone());
    }
    Ok(r)
}
