//! Writing objects: PutObject, and what every write shares — the headers that shape a new
//! object ([`ObjectHeaders`]), Content-MD5, and staging a body so it becomes the object only
//! once the request's event is durable ([`stage_put`]).

use super::acl::CannedAcl;
use super::tagging::TagSet;
use super::{access, lock, store_error, transfer, S3Error, S3Request};
use crate::edge::{Committed, Ctx};
use crate::protocol::{ApiError, Reply};
use base64::Engine;
use cairn_store::{ObjectInfo, PutOptions};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;

/// The storage classes S3 accepts.
const STORAGE_CLASSES: &[&str] = &[
    "STANDARD",
    "REDUCED_REDUNDANCY",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER",
    "DEEP_ARCHIVE",
    "GLACIER_IR",
];

/// The headers of a write (PutObject, CopyObject, CreateMultipartUpload) that shape the new
/// object, checked.
#[derive(Debug, Clone, Default)]
pub struct ObjectHeaders {
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    /// `x-amz-meta-*`, without the prefix.
    pub metadata: BTreeMap<String, String>,
    pub tagging: Option<TagSet>,
    pub acl: Option<CannedAcl>,
    /// A storage class other than STANDARD.
    pub storage_class: Option<String>,
    /// `x-amz-object-lock-mode` with `x-amz-object-lock-retain-until-date`.
    pub retention: Option<(String, DateTime<Utc>)>,
    pub legal_hold: Option<String>,
    /// Content-MD5 or a flexible checksum was sent (object lock on a PUT needs one).
    pub integrity: bool,
    pub content_md5: Option<String>,
    /// Server-side encryption asked for (`x-amz-server-side-encryption*`).
    pub sse: Option<Box<super::sse::SseRequest>>,
}

impl ObjectHeaders {
    pub(super) fn of(req: &S3Request) -> Result<ObjectHeaders, ApiError> {
        let h = |n: &str| req.header(n).map(str::to_string);
        let mut out = ObjectHeaders {
            content_type: h("content-type"),
            content_encoding: h("content-encoding"),
            content_md5: h("content-md5"),
            ..Default::default()
        };
        for (k, v) in &req.headers {
            if let Some(name) = k.strip_prefix("x-amz-meta-") {
                out.metadata.insert(name.to_string(), v.clone());
            }
        }
        if let Some(t) = req.header("x-amz-tagging") {
            out.tagging = Some(TagSet::of_query(t)?).filter(|t| !t.0.is_empty());
        }
        if let Some(acl) = req.header("x-amz-acl") {
            out.acl = Some(CannedAcl::of_header(acl)?);
        }
        if let Some(sc) = req.header("x-amz-storage-class") {
            if !STORAGE_CLASSES.contains(&sc) {
                return Err(S3Error::InvalidStorageClass(sc.into()).into());
            }
            out.storage_class = (sc != "STANDARD").then(|| sc.to_string());
        }
        out.retention = match (
            req.header("x-amz-object-lock-mode"),
            req.header("x-amz-object-lock-retain-until-date"),
        ) {
            (Some(m), Some(u)) => {
                if !matches!(m, "GOVERNANCE" | "COMPLIANCE") {
                    return Err(S3Error::InvalidArgument("Unknown wormMode directive.".into()).into());
                }
                let u = lock::parse_until(u).ok_or_else(|| {
                    S3Error::InvalidArgument(
                        "The retain until date must be provided in ISO 8601 format".into(),
                    )
                })?;
                Some((m.to_string(), u))
            }
            (None, None) => None,
            _ => return Err(S3Error::InvalidArgument(
                "x-amz-object-lock-retain-until-date and x-amz-object-lock-mode must both be supplied".into(),
            )
            .into()),
        };
        if let Some(hold) = req.header("x-amz-object-lock-legal-hold") {
            if !matches!(hold, "ON" | "OFF") {
                return Err(S3Error::InvalidArgument(
                    "Legal Hold must be either of 'ON' or 'OFF'".into(),
                )
                .into());
            }
            out.legal_hold = Some(hold.to_string());
        }
        out.sse = super::sse::SseRequest::of(req)?.map(Box::new);
        out.integrity = out.content_md5.is_some()
            || req
                .headers
                .iter()
                .any(|(k, _)| k.starts_with("x-amz-checksum-") && k != "x-amz-checksum-mode")
            || req.header("x-amz-sdk-checksum-algorithm").is_some();
        Ok(out)
    }

    /// Whether the write asks for object lock.
    fn locks(&self) -> bool {
        self.retention.is_some() || self.legal_hold.is_some()
    }

    /// The new object's system attributes from these headers and the bucket: tags, a canned
    /// ACL, the storage class, object lock (explicit or the bucket's default retention).
    /// `put`: a PUT of a body, which object lock requires an integrity header for.
    pub(super) fn system(
        &self,
        ctx: &Ctx<'_>,
        bucket: &str,
        put: bool,
        opts: &mut PutOptions,
    ) -> Result<(), ApiError> {
        if let Some(t) = &self.tagging {
            opts.system.insert("tagging".into(), t.to_query());
        }
        if let Some(acl) = &self.acl {
            opts.system.insert("acl".into(), acl.0.clone());
        }
        if let Some(sc) = &self.storage_class {
            opts.system.insert("storage-class".into(), sc.clone());
        }
        let lock = lock::config(ctx, bucket)?;
        if self.locks() {
            if lock.is_none() {
                return Err(S3Error::InvalidRequest(
                    "Bucket is missing Object Lock Configuration".into(),
                )
                .into());
            }
            if put && !self.integrity {
                return Err(S3Error::InvalidRequest(
                    "Content-MD5 OR x-amz-checksum- HTTP header is required for Put Object requests with Object Lock parameters".into(),
                )
                .into());
            }
        }
        let explicit = self.retention.as_ref().map(|(m, u)| (m.as_str(), *u));
        if let Some((mode, until)) = lock::new_object_retention(ctx, lock.as_ref(), explicit)? {
            opts.system.insert("retention-mode".into(), mode);
            opts.system.insert("retain-until".into(), until);
        }
        if let Some(h) = &self.legal_hold {
            opts.system.insert("legal-hold".into(), h.clone());
        }
        Ok(())
    }
}

/// PutObject's input.
#[derive(Debug, Clone)]
pub struct PutInput {
    pub headers: ObjectHeaders,
    /// A Content-Length (or chunked transfer) was sent.
    pub has_length: bool,
}

/// PutObject: the body received as it arrives into a staged object ([`super::intake`]),
/// Content-MD5, the signed payload hash and the flexible checksums checked on the way, user
/// metadata and the checksum kept.
pub(super) async fn put(
    ctx: &mut Ctx<'_>,
    req: &S3Request,
    i: PutInput,
) -> Result<Reply, ApiError> {
    let key = req.object_key();
    access::refuse_write_headers(ctx, req)?;
    if !i.has_length {
        return Err(S3Error::MissingContentLength.into());
    }
    if key.len() > cairn_store::MAX_KEY_BYTES {
        return Err(S3Error::KeyTooLong.into());
    }
    super::intake::declared_length(req, ctx.api.opts.max_object_bytes)?;
    content_md5_well_formed(i.headers.content_md5.as_deref())?;
    let mut opts = PutOptions {
        content_type: i.headers.content_type.clone(),
        content_encoding: i.headers.content_encoding.clone(),
        metadata: i.headers.metadata.clone(),
        ..Default::default()
    };
    i.headers.system(ctx, &req.bucket, true, &mut opts)?;
    let sse = super::sse::apply(ctx, i.headers.sse.as_deref(), &req.bucket, key, &mut opts).await?;
    let (b2, k2) = (req.bucket.clone(), key.to_string());
    let stage = move |store: &dyn cairn_store::ObjectStore| {
        store
            .stage_writer(&b2, &k2, &opts)
            .map_err(|e| store_error(e, &b2, Some(&k2)))
    };
    // The embedded store stages without I/O (the body starts in memory): no thread hop.
    let writer = if ctx.api.store.stages_inline() {
        stage(ctx.api.store.as_ref())?
    } else {
        super::with_store(ctx, stage).await?
    };
    let got = super::intake::receive(ctx, req, writer).await?;
    let (store, content_md5) = (ctx.api.store.clone(), i.headers.content_md5.clone());
    let (sink, checksum) = (got.sink, got.checksum);
    let in_memory = sink.in_memory();
    let kept = checksum.clone();
    let finish = move || {
        let mut staged = sink.finish().map_err(ApiError::internal)?;
        let md5 = hex::decode(staged.md5.trim_matches('"')).unwrap_or_default();
        if let Err(e) = content_md5_matches(content_md5.as_deref(), &md5) {
            store.discard_staged(staged);
            return Err(e);
        }
        if let Some((alg, v)) = &kept {
            staged
                .opts
                .system
                .insert(format!("checksum-{alg}"), v.clone());
        }
        Ok(staged)
    };
    // A body still in memory (small enough to be committed with its metadata) finishes
    // without I/O: no hop to a blocking thread for it.
    let staged = if in_memory {
        finish()?
    } else {
        ctx.api.blocking(finish).await?
    };
    let size = staged.size;
    let etag = defer_commit(ctx, staged, None);
    transfer(ctx, req, size, 0);
    let mut r = super::empty(200).header("etag", etag);
    for (h, v) in sse {
        r = r.header(&h, v);
    }
    if let Some((alg, v)) = checksum {
        r = r
            .header(&format!("x-amz-checksum-{alg}"), v)
            .header("x-amz-checksum-type", "FULL_OBJECT");
    }
    Ok(r)
}

/// Builds a reply body from the object a deferred write made (CopyObjectResult).
pub(crate) type AnswerFn = Box<dyn FnOnce(&ObjectInfo) -> bytes::Bytes + Send + Sync>;

/// Defers making a staged write the object until the request's event is durable (a refused
/// event discards it). Returns its ETag.
pub(crate) fn defer_commit(
    ctx: &mut Ctx<'_>,
    staged: cairn_store::Staged,
    answer: Option<AnswerFn>,
) -> String {
    let etag = staged
        .opts
        .etag
        .clone()
        .unwrap_or_else(|| staged.md5.clone());
    let (b3, k3) = (staged.bucket.clone(), staged.key.clone());
    let slot = std::sync::Arc::new(std::sync::Mutex::new(Some(staged)));
    let (s1, s2) = (slot.clone(), slot);
    let (st1, st2) = (ctx.api.store.clone(), ctx.api.store.clone());
    let outbox: crate::edge::Outbox = Default::default();
    let o1 = outbox.clone();
    // Queued for the store's group commit; the request's task waits for its outcome
    // without holding a thread.
    let commit: crate::edge::AsyncCommitFn = Box::new(move || {
        Box::pin(async move {
            let mut s = s1
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
                .ok_or_else(|| ApiError::internal("a staged write was used twice"))?;
            s.outbox = o1.lock().unwrap_or_else(|p| p.into_inner()).take();
            let info = st1
                .commit_staged_async(s)
                .await
                .map_err(|e| store_error(e, &b3, Some(&k3)))?;
            Ok(Committed {
                headers: info
                    .version_id
                    .clone()
                    .map(|v| vec![("x-amz-version-id".to_string(), v)])
                    .unwrap_or_default(),
                body: answer.map(|f| f(&info)),
            })
        })
    });
    let abort: crate::edge::AbortFn = Box::new(move || {
        if let Some(s) = s2.lock().unwrap_or_else(|p| p.into_inner()).take() {
            st2.discard_staged(s);
        }
    });
    let cell = ctx.api.store.keeps_outbox().then_some(outbox);
    ctx.defer_async(commit, Some(abort), cell);
    etag
}

/// A sent `Content-MD5` must be base64 of 16 bytes (InvalidDigest), checked before a body
/// is read.
pub(crate) fn content_md5_well_formed(given: Option<&str>) -> Result<(), ApiError> {
    match given {
        Some(g) => content_md5_matches(Some(g), &[0u8; 16]).or_else(|e| {
            if e.code == "BadDigest" {
                Ok(())
            } else {
                Err(e)
            }
        }),
        None => Ok(()),
    }
}

/// Checks a sent `Content-MD5` against the body's MD5 `digest` (already computed):
/// InvalidDigest when not base64 of 16 bytes, BadDigest on mismatch (B19).
pub(crate) fn content_md5_matches(given: Option<&str>, digest: &[u8]) -> Result<(), ApiError> {
    let Some(given) = given else {
        return Ok(());
    };
    let given = base64::engine::general_purpose::STANDARD
        .decode(given)
        .ok()
        .filter(|b| b.len() == 16)
        .ok_or(S3Error::InvalidDigest)?;
    if given.as_slice() != digest {
        return Err(S3Error::BadDigest.into());
    }
    Ok(())
}
