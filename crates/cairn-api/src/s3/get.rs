//! Reading objects: GetObject, HeadObject (conditional requests, a byte range, stored
//! checksums) and GetObjectAttributes.

use super::tagging::{head_version, with_version};
use super::{document, http_date, store_error, transfer, with_store, S3Error, S3Request};
use crate::edge::Ctx;
use crate::protocol::{ApiError, Reply};
use cairn_record::Arn;
use cairn_store::ObjectInfo;
use serde::Serialize;
use std::future::Future as _;

/// GetObject's and HeadObject's input: the conditions, the range, whether the stored
/// checksum is wanted.
#[derive(Debug, Clone, Default)]
pub struct GetInput {
    pub if_match: Option<String>,
    pub if_none_match: Option<String>,
    pub range: Option<String>,
    /// `x-amz-checksum-mode: ENABLED`.
    pub checksum_mode: bool,
}

impl GetInput {
    pub(super) fn of(req: &S3Request) -> GetInput {
        let h = |n: &str| req.header(n).map(str::to_string);
        GetInput {
            if_match: h("if-match"),
            if_none_match: h("if-none-match"),
            range: h("range"),
            checksum_mode: req
                .header("x-amz-checksum-mode")
                .is_some_and(|m| m.eq_ignore_ascii_case("ENABLED")),
        }
    }
}

/// Whether an object sits in an archive storage class without a finished restore: GetObject
/// refuses it with InvalidObjectState until RestoreObject has run.
pub fn archived(info: &ObjectInfo) -> bool {
    let cold = matches!(
        info.system.get("storage-class").map(String::as_str),
        Some("GLACIER" | "DEEP_ARCHIVE")
    );
    let restored = info
        .system
        .get("restore")
        .is_some_and(|r| r.contains("ongoing-request=\"false\""));
    cold && !restored
}

/// The refusal of a read of an archived object.
pub(super) fn archived_error(info: &ObjectInfo) -> ApiError {
    S3Error::InvalidObjectState {
        message: "The operation is not valid for the object's storage class",
        storage_class: info.system.get("storage-class").cloned(),
    }
    .into()
}

/// Whether an `If-Match`/`If-None-Match` value names `etag` (or is `*`).
pub(super) fn etag_matches(header: &str, etag: &str) -> bool {
    header.split(',').map(str::trim).any(|v| {
        v == "*" || v == etag || v.trim_start_matches("W/") == etag || format!("\"{v}\"") == etag
    })
}

pub(super) async fn get(
    ctx: &mut Ctx<'_>,
    req: &S3Request,
    i: GetInput,
    head: bool,
) -> Result<Reply, ApiError> {
    let (b, k, vid) = (
        req.bucket.clone(),
        req.object_key().to_string(),
        req.version_id.clone(),
    );
    // The attributes and the body come from one read of one version (a range of it: only
    // the chunks it covers are opened); bodies up to `INLINE_BYTES` are read here, longer
    // ones stream to the client from a reader of their own.
    let range_header = if head { None } else { i.range.clone() };
    let range = move |size: u64| match range_header.as_deref().map(|r| byte_range(r, size)) {
        Some(RangeAnswer::Part(a, b)) => Some((a, b + 1)),
        Some(RangeAnswer::Unsatisfiable) => Some((0, 0)),
        _ => None,
    };
    // A body kept with its metadata is read here, without a trip to the blocking pool.
    let held = if head {
        None
    } else {
        ctx.api.store.open_read_held(&b, &k, vid.as_deref(), &range)
    };
    let opened = match held {
        Some(opened) => opened
            .map_err(|e| store_error(e, &b, Some(&k)))
            .and_then(|(info, r)| read_body(info, r, &range, &b, &k)),
        None => {
            let (b, k, vid) = (b.clone(), k.clone(), vid.clone());
            with_store(ctx, move |store| {
                if head {
                    return match &vid {
                        Some(v) => store.version_info(&b, &k, v),
                        None => store.head(&b, &k),
                    }
                    .map(|i| (i, Body::Empty))
                    .map_err(|e| store_error(e, &b, Some(&k)));
                }
                let (info, r) = store
                    .open_read(&b, &k, vid.as_deref(), &range)
                    .map_err(|e| store_error(e, &b, Some(&k)))?;
                read_body(info, r, &range, &b, &k)
            })
            .await
        }
    };
    let (info, body) = match opened {
        // Opening an SSE-KMS body unwraps its key, which fails while the key is unusable:
        // the caller's kms:Decrypt is checked first, so a caller who may not use the key
        // learns nothing of its state (AccessDenied, not KMS.DisabledException).
        Err(e) if e.code.starts_with("KMS.") => {
            let info = with_store(ctx, move |s| Ok(s.head_version(&b, &k, vid.as_deref()))).await?;
            if let Ok(info) = info {
                super::sse::check_read(ctx, &info.system)?;
            }
            return Err(e);
        }
        opened => opened?,
    };
    let size = info.size;
    if !head && archived(&info) {
        return Err(archived_error(&info));
    }
    if !head {
        super::sse::check_read(ctx, &info.system)?;
    }
    // Conditional requests (RFC 9110): If-Match before If-None-Match.
    if let Some(m) = &i.if_match {
        if !etag_matches(m, &info.etag) {
            return Err(S3Error::PreconditionFailed("If-Match".into()).into());
        }
    }
    if let Some(m) = &i.if_none_match {
        if etag_matches(m, &info.etag) {
            return Ok(super::empty(304).header("etag", info.etag.clone()));
        }
    }
    let range = match &i.range {
        Some(r) if !head => match byte_range(r, size) {
            RangeAnswer::Whole => None,
            RangeAnswer::Part(a, b) => Some((a, b)),
            RangeAnswer::Unsatisfiable => {
                return Err(S3Error::InvalidRange {
                    requested: r.clone(),
                    size,
                }
                .into())
            }
        },
        _ => None,
    };
    let status = if range.is_some() { 206 } else { 200 };
    let sent = match range {
        _ if head => 0,
        Some((a, b)) => b - a + 1,
        None => size,
    };
    transfer(ctx, req, 0, sent);
    let mut r = object_headers(super::empty(status), &info);
    match body {
        Body::Empty => {}
        Body::Whole(b) => r.body = bytes::Bytes::from(b),
        Body::Stream(reader, len) => {
            r.stream = Some(crate::protocol::Streamed::new(stream_body(reader, len)));
        }
    }
    if let Some(v) = &info.version_id {
        r = r.header("x-amz-version-id", v.clone());
    }
    if let Some((a, b)) = range {
        r = r.header("content-range", format!("bytes {a}-{b}/{size}"));
    } else if i.checksum_mode {
        r = checksum_headers(r, &info);
    }
    if head {
        r.body = bytes::Bytes::new();
        r = r.header("content-length", size.to_string());
    }
    Ok(r)
}

/// Bodies at most this long are read whole before answering; longer ones stream.
const INLINE_BYTES: u64 = 1 << 20;

/// The body of an opened object (`range` of it): read whole when at most `INLINE_BYTES`,
/// else left to stream.
fn read_body(
    info: ObjectInfo,
    mut r: Box<dyn std::io::Read + Send>,
    range: &dyn Fn(u64) -> Option<(u64, u64)>,
    bucket: &str,
    key: &str,
) -> Result<(ObjectInfo, Body), ApiError> {
    let len = range(info.size).map_or(info.size, |(a, b)| b - a);
    if len > INLINE_BYTES {
        return Ok((info, Body::Stream(r, len)));
    }
    let mut body = Vec::with_capacity(len as usize);
    std::io::Read::read_to_end(&mut r, &mut body).map_err(|e| {
        store_error(
            cairn_store::StoreError::Corrupt {
                bucket: bucket.into(),
                key: key.into(),
                reason: e.to_string(),
            },
            bucket,
            Some(key),
        )
    })?;
    Ok((info, Body::Whole(body)))
}

enum Body {
    Empty,
    Whole(Vec<u8>),
    /// A reader and the bytes it will give.
    Stream(Box<dyn std::io::Read + Send>, u64),
}

/// A response body fed by a blocking reader, 256 KiB at a time: each piece is read in the
/// blocking pool only when the client has taken the one before (no thread waits on a slow
/// client). A read error ends the body early (the client sees fewer bytes than declared).
pub(crate) fn stream_body(
    reader: Box<dyn std::io::Read + Send>,
    len: u64,
) -> crate::protocol::StreamBody {
    use http_body_util::BodyExt as _;
    ReaderBody {
        reader: Some(reader),
        reading: None,
        left: len,
    }
    .boxed_unsync()
}

type Piece = (Box<dyn std::io::Read + Send>, std::io::Result<Vec<u8>>);

struct ReaderBody {
    reader: Option<Box<dyn std::io::Read + Send>>,
    reading: Option<tokio::task::JoinHandle<Piece>>,
    left: u64,
}

impl hyper::body::Body for ReaderBody {
    type Data = bytes::Bytes;
    type Error = crate::protocol::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>> {
        use std::task::Poll;
        if self.left == 0 {
            return Poll::Ready(None);
        }
        if self.reading.is_none() {
            let Some(mut reader) = self.reader.take() else {
                return Poll::Ready(Some(Err("stored body failed".into())));
            };
            let want = (256u64 << 10).min(self.left) as usize;
            self.reading = Some(tokio::task::spawn_blocking(move || {
                let mut buf = vec![0u8; want];
                let mut n = 0;
                let got = loop {
                    match std::io::Read::read(&mut reader, &mut buf[n..]) {
                        Ok(0) => break Err(std::io::ErrorKind::UnexpectedEof.into()),
                        Ok(k) => {
                            n += k;
                            if n == want {
                                break Ok(buf);
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => break Err(e),
                    }
                };
                (reader, got)
            }));
        }
        let Some(h) = self.reading.as_mut() else {
            return Poll::Ready(None);
        };
        let (reader, got) = match std::pin::Pin::new(h).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(p)) => p,
            Poll::Ready(Err(e)) => {
                self.reading = None;
                return Poll::Ready(Some(Err(Box::new(e))));
            }
        };
        self.reading = None;
        match got {
            Ok(b) => {
                self.reader = Some(reader);
                self.left -= b.len() as u64;
                Poll::Ready(Some(Ok(hyper::body::Frame::data(bytes::Bytes::from(b)))))
            }
            Err(e) => {
                tracing::error!(error = %e, "a stored body failed while streaming");
                Poll::Ready(Some(Err(Box::new(e))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.left)
    }
}

fn object_headers(mut r: Reply, info: &ObjectInfo) -> Reply {
    r = r
        .header("etag", info.etag.clone())
        .header("last-modified", http_date(info.last_modified))
        .header("accept-ranges", "bytes")
        .header(
            "content-type",
            info.content_type
                .clone()
                .unwrap_or_else(|| "binary/octet-stream".into()),
        );
    if let Some(enc) = &info.content_encoding {
        r = r.header("content-encoding", enc.clone());
    }
    for (k, v) in &info.metadata {
        r = r.header(&format!("x-amz-meta-{k}"), v.clone());
    }
    let system = |k: &str| info.system.get(k).cloned();
    for (key, header) in [
        ("storage-class", "x-amz-storage-class"),
        ("restore", "x-amz-restore"),
    ] {
        if let Some(v) = system(key) {
            r = r.header(header, v);
        }
    }
    for (h, v) in super::sse::headers(&info.system) {
        r = r.header(&h, v);
    }
    if let Some(tags) = info.system.get("tagging") {
        let n = form_urlencoded::parse(tags.as_bytes()).count();
        if n > 0 {
            r = r.header("x-amz-tagging-count", n.to_string());
        }
    }
    for (key, header) in [
        ("retention-mode", "x-amz-object-lock-mode"),
        ("retain-until", "x-amz-object-lock-retain-until-date"),
        ("legal-hold", "x-amz-object-lock-legal-hold"),
    ] {
        if let Some(v) = system(key) {
            r = r.header(header, v);
        }
    }
    r
}

/// The kind of a stored checksum: composite (`…-N`, of parts) or of the whole object.
fn checksum_type(v: &str) -> &'static str {
    if v.contains('-') {
        "COMPOSITE"
    } else {
        "FULL_OBJECT"
    }
}

/// The stored checksum header(s) of an object, sent when the client asks with
/// `x-amz-checksum-mode: ENABLED` (and the whole object is read).
fn checksum_headers(mut r: Reply, info: &ObjectInfo) -> Reply {
    for (k, v) in &info.system {
        if let Some(alg) = k.strip_prefix("checksum-") {
            r = r.header(&format!("x-amz-checksum-{alg}"), v.clone());
            r = r.header("x-amz-checksum-type", checksum_type(v));
        }
    }
    r
}

enum RangeAnswer {
    Whole,
    Part(u64, u64),
    Unsatisfiable,
}

/// A single `bytes=` range against an object of `size` bytes. Syntax S3 does not understand
/// (several ranges, other units) means the whole object, as S3 answers.
fn byte_range(header: &str, size: u64) -> RangeAnswer {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return RangeAnswer::Whole;
    };
    if spec.contains(',') {
        return RangeAnswer::Whole;
    }
    let Some((a, b)) = spec.split_once('-') else {
        return RangeAnswer::Whole;
    };
    let (a, b) = (a.trim(), b.trim());
    match (a.parse::<u64>().ok(), b.parse::<u64>().ok()) {
        (None, Some(n)) if a.is_empty() => {
            if n == 0 || size == 0 {
                RangeAnswer::Unsatisfiable
            } else {
                RangeAnswer::Part(size - n.min(size), size - 1)
            }
        }
        (Some(start), None) if b.is_empty() => {
            if start >= size {
                RangeAnswer::Unsatisfiable
            } else {
                RangeAnswer::Part(start, size - 1)
            }
        }
        (Some(start), Some(end)) if start <= end => {
            if start >= size {
                RangeAnswer::Unsatisfiable
            } else {
                RangeAnswer::Part(start, end.min(size - 1))
            }
        }
        _ => RangeAnswer::Whole,
    }
}

const ATTRIBUTES: &[&str] = &[
    "ETag",
    "Checksum",
    "ObjectParts",
    "StorageClass",
    "ObjectSize",
];

/// GetObjectAttributes' `x-amz-object-attributes`: at least one, each one S3 knows.
pub(super) fn attributes_input(req: &S3Request) -> Result<Vec<String>, ApiError> {
    let wanted: Vec<String> = req
        .header("x-amz-object-attributes")
        .into_iter()
        .flat_map(|h| h.split(','))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if wanted.is_empty() || wanted.iter().any(|w| !ATTRIBUTES.contains(&w.as_str())) {
        return Err(S3Error::invalid_argument(
            "Invalid attribute name specified.",
            "x-amz-object-attributes",
            None,
        ));
    }
    Ok(wanted)
}

#[derive(Serialize, Default)]
#[serde(rename_all = "PascalCase")]
struct Attributes {
    #[serde(rename = "ETag", skip_serializing_if = "Option::is_none")]
    etag: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    checksum: Option<ChecksumFields>,
    #[serde(skip_serializing_if = "Option::is_none")]
    object_parts: Option<Parts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    storage_class: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    object_size: Option<u64>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Parts {
    parts_count: u32,
}

/// Checksums as S3 documents name them: one element per algorithm (`ChecksumCRC32`, …).
#[derive(Serialize, Default)]
pub(super) struct ChecksumFields {
    #[serde(rename = "ChecksumCRC32", skip_serializing_if = "Option::is_none")]
    crc32: Option<String>,
    #[serde(rename = "ChecksumCRC32C", skip_serializing_if = "Option::is_none")]
    crc32c: Option<String>,
    #[serde(rename = "ChecksumCRC64NVME", skip_serializing_if = "Option::is_none")]
    crc64nvme: Option<String>,
    #[serde(rename = "ChecksumSHA1", skip_serializing_if = "Option::is_none")]
    sha1: Option<String>,
    #[serde(rename = "ChecksumSHA256", skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
    #[serde(rename = "ChecksumType", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
}

impl ChecksumFields {
    /// From `(algorithm, value)` pairs (algorithm lower-case, as stored).
    pub(super) fn of(sums: impl IntoIterator<Item = (String, String)>) -> ChecksumFields {
        let mut f = ChecksumFields::default();
        for (alg, v) in sums {
            let slot = match alg.as_str() {
                "crc32" => &mut f.crc32,
                "crc32c" => &mut f.crc32c,
                "crc64nvme" => &mut f.crc64nvme,
                "sha1" => &mut f.sha1,
                "sha256" => &mut f.sha256,
                _ => continue,
            };
            *slot = Some(v);
        }
        f
    }

    fn with_type(mut self, v: &str) -> ChecksumFields {
        self.kind = Some(checksum_type(v));
        self
    }
}

pub(super) async fn attributes(
    ctx: &mut Ctx<'_>,
    req: &S3Request,
    wanted: Vec<String>,
) -> Result<Reply, ApiError> {
    // Reading attributes reads the object.
    let read = super::router::action("GetObject", req.version_id.is_some());
    ctx.authorize(
        &read,
        &Arn::s3_object(&req.bucket, req.object_key()).to_string(),
    )?;
    let info = head_version(ctx, req).await?;
    let want = |a: &str| wanted.iter().any(|w| w == a);
    let checksums: Vec<(String, String)> = info
        .system
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("checksum-")
                .map(|a| (a.to_string(), v.clone()))
        })
        .collect();
    let answer = Attributes {
        etag: want("ETag").then(|| info.etag.trim_matches('"').to_string()),
        checksum: match checksums.first() {
            Some((_, v)) if want("Checksum") => {
                let v = v.clone();
                Some(ChecksumFields::of(checksums).with_type(&v))
            }
            _ => None,
        },
        object_parts: if want("ObjectParts") {
            info.etag
                .trim_matches('"')
                .rsplit_once('-')
                .and_then(|(_, n)| n.parse::<u32>().ok())
                .map(|parts_count| Parts { parts_count })
        } else {
            None
        },
        storage_class: want("StorageClass").then(|| {
            info.system
                .get("storage-class")
                .cloned()
                .unwrap_or_else(|| "STANDARD".into())
        }),
        object_size: want("ObjectSize").then_some(info.size),
    };
    let r = document("GetObjectAttributesResponse", &answer)
        .header("last-modified", http_date(info.last_modified));
    Ok(with_version(r, &info))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_ranges() {
        let p = |h: &str, n: u64| match byte_range(h, n) {
            RangeAnswer::Whole => "whole".to_string(),
            RangeAnswer::Part(a, b) => format!("{a}-{b}"),
            RangeAnswer::Unsatisfiable => "416".to_string(),
        };
        assert_eq!(p("bytes=0-9", 100), "0-9");
        assert_eq!(p("bytes=90-200", 100), "90-99");
        assert_eq!(p("bytes=10-", 100), "10-99");
        assert_eq!(p("bytes=-10", 100), "90-99");
        assert_eq!(p("bytes=-500", 100), "0-99");
        assert_eq!(p("bytes=100-", 100), "416");
        assert_eq!(p("bytes=-0", 100), "416");
        assert_eq!(p("bytes=5-1", 100), "whole");
        assert_eq!(p("bytes=0-1,5-6", 100), "whole");
        assert_eq!(p("items=0-1", 100), "whole");
        assert_eq!(p("bytes=0-0", 0), "416");
    }
}
