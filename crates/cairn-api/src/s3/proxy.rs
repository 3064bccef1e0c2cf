//! The proxy backend: a bucket declared in `cairn.toml` with an upstream S3-compatible
//! endpoint. cairn authenticates and authorizes the client itself (SigV4, IAM policies),
//! records the same events as for an embedded bucket, re-signs the request with the
//! upstream's credentials and passes it on. Object bodies stream both ways: a PutObject or
//! UploadPart body goes to the upstream as it arrives (its declared SHA-256 is forwarded, so
//! the upstream verifies it), and a GetObject body comes back as the upstream sends it. The
//! upstream's answer — status, headers, body, errors — reaches the client unchanged (only the
//! bucket name is mapped when the upstream bucket has another name).

use super::delete::Failure;
use super::router::{action, data_event};
use super::{S3Error, S3Request};
use crate::edge::{BodyStream, Ctx, EffectOutcome, HttpRequest};
use crate::protocol::{ApiError, BoxError, Reply, StreamBody, Streamed};
use bytes::Bytes;
use cairn_record::Arn;
use http_body_util::{BodyExt, Full, Limited};

/// Where a proxied bucket lives.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyTarget {
    /// `http://host:port` or `https://host` (no trailing slash).
    pub endpoint: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// The bucket's name upstream.
    pub bucket: String,
    /// How long the upstream may take to begin its answer (the request body's upload
    /// included); past it the client gets 503 and the record says the outcome is unknown.
    pub timeout: std::time::Duration,
}

/// The shared HTTP(S) client for upstreams.
pub type Upstream = crate::http::UpstreamClient;

fn upstream(api: &crate::Api) -> Result<Upstream, ApiError> {
    if let Some(u) = api.upstream.get() {
        return Ok(u.clone());
    }
    let client = crate::http::upstream_client(None).map_err(service_unavailable)?;
    Ok(api.upstream.get_or_init(|| client).clone())
}

/// Hop-by-hop headers and the ones cairn replaces when it re-signs.
const NOT_FORWARDED: &[&str] = &[
    "host",
    "authorization",
    "x-amz-date",
    "x-amz-security-token",
    "x-amz-content-sha256",
    "x-amz-decoded-content-length",
    "x-amz-trailer",
    "connection",
    "keep-alive",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "expect",
    "content-length",
];

/// Response headers not passed back (hop-by-hop, and the request ids cairn sets itself so the
/// client's request id is the one in the event).
const NOT_RETURNED: &[&str] = &[
    "connection",
    "keep-alive",
    "transfer-encoding",
    "x-amz-request-id",
    "x-amz-id-2",
    "x-amzn-requestid",
    "server",
    "date",
];

fn service_unavailable(what: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        "ServiceUnavailable",
        503,
        format!("The upstream S3 service could not be reached: {what}"),
    )
}

/// The path under the bucket, raw (still percent-encoded as the client sent it): `""` for a
/// bucket-level request, else `/key…`.
fn raw_rest(req: &HttpRequest, virtual_host: bool) -> String {
    if virtual_host {
        return if req.path == "/" {
            String::new()
        } else {
            req.path.clone()
        };
    }
    let p = req.path.strip_prefix('/').unwrap_or(&req.path);
    let rest = match p.split_once('/') {
        Some((_, r)) => format!("/{r}"),
        None => String::new(),
    };
    if rest == "/" {
        String::new()
    } else {
        rest
    }
}

/// A child of an upstream's `<Error>` document.
fn error_field(body: &[u8], name: &str) -> Option<String> {
    crate::protocol::xml::parse(body)?
        .child_text(name)
        .map(str::to_string)
}

/// Characters escaped in a forwarded copy source's key (everything but unreserved and `/`).
const COPY_SOURCE_KEY: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

/// `<Error>` entries of a DeleteResult for keys refused by cairn.
fn refused_entries(keys: &[(String, Option<String>)]) -> String {
    keys.iter()
        .map(|(k, v)| {
            crate::protocol::xml::to_xml(
                "Error",
                &Failure {
                    key: k.clone(),
                    version_id: v.clone(),
                    code: "AccessDenied".into(),
                    message: "Access Denied".into(),
                },
            )
        })
        .collect()
}

fn full(b: Bytes) -> StreamBody {
    Full::new(b)
        .map_err(|never: std::convert::Infallible| -> BoxError { match never {} })
        .boxed_unsync()
}

/// Whether `req` should keep its body unread for streaming: a PUT to a proxied bucket.
pub fn streams_request(api: &crate::Api, req: &HttpRequest) -> bool {
    if req.method != "PUT" || api.opts.proxies.is_empty() {
        return false;
    }
    // aws-chunked bodies stream too, decoded on their way (SigV4a's are refused by
    // `prepare`).
    // Only an S3 request keeps its body unread (S3 signs a declared payload hash; the
    // upstream checks it): a request signed for another service never skips hashing.
    let signed_for_s3 = req.query.contains("AWSAccessKeyId=")
        || crate::edge::presented(req).is_ok_and(|a| a.service == "s3");
    let t = super::target(req);
    signed_for_s3
        && t.key.is_some()
        && t.bucket
            .as_ref()
            .is_some_and(|b| api.opts.proxies.contains_key(b))
}

/// What a request on a proxied bucket forwards: the operation it names (for authorization
/// and the record), the upstream, and the request's own path rest, query and body stream.
pub struct Forward {
    pub name: &'static str,
    pub target: ProxyTarget,
    method: String,
    /// The path under the bucket, still percent-encoded as the client sent it.
    rest: String,
    query: String,
    subresources: Vec<String>,
    body_stream: Option<BodyStream>,
}

impl Forward {
    pub(super) fn of(
        req: &HttpRequest,
        name: &'static str,
        target: ProxyTarget,
        virtual_host: bool,
    ) -> Forward {
        Forward {
            name,
            target,
            method: req.method.clone(),
            rest: raw_rest(req, virtual_host),
            query: req.query.clone(),
            subresources: super::router::subresources(req),
            body_stream: req.body_stream.clone(),
        }
    }
}

/// Handles a request on a proxied bucket (already recorded): authorizes it, forwards it.
pub async fn forward(ctx: &mut Ctx<'_>, req: &S3Request, fwd: Forward) -> Result<Reply, ApiError> {
    let op = fwd.name;
    let target = &fwd.target;
    let bucket = req.bucket.as_str();
    let key = req.object_key();
    let vid = req.version_id.clone();
    // What cairn authorizes must be what the upstream does: a request naming two
    // sub-resources (`?acl&policy`) could be one operation here and another there.
    if fwd.subresources.len() > 1 {
        ctx.no_authorization_needed();
        return Err(S3Error::InvalidRequest(format!(
            "A request may name one sub-resource; this one names {}.",
            fwd.subresources.join(", ")
        ))
        .into());
    }
    let resource = if req.key.is_some() && op != "DeleteObjects" {
        Arn::s3_object(bucket, key).to_string()
    } else {
        Arn::s3_bucket(bucket).to_string()
    };
    if op == "DeleteObjects" {
        // Authorized key by key (and version by version), below.
        ctx.no_authorization_needed();
    } else {
        ctx.authorize(&action(op, vid.is_some()), &resource)?;
    }
    // Reading an object's attributes reads the object (as the embedded handler checks).
    if op == "GetObjectAttributes" {
        ctx.authorize(&action("GetObject", vid.is_some()), &resource)?;
    }
    // The headers of a write that need permissions of their own (an ACL, tags, object lock).
    if matches!(op, "PutObject" | "CopyObject" | "CreateMultipartUpload") {
        super::access::authorize_header_actions(ctx, req, &resource)?;
    }
    if op == "CreateBucket" {
        super::access::authorize_create_bucket_headers(ctx, req)?;
    }
    let bypass = req.bypass_governance;
    if bypass && op != "DeleteObjects" {
        ctx.authorize("s3:BypassGovernanceRetention", &resource)?;
    }
    // DeleteObjects: each key is authorized as its own DeleteObject[Version]; the upstream
    // sees only the keys allowed, the refused ones are answered as S3 answers them.
    let mut refused_keys: Vec<(String, Option<String>)> = Vec::new();
    let mut rewritten_body: Option<Bytes> = None;
    if op == "DeleteObjects" {
        let input = super::delete::objects_input(req)?;
        let mut allowed = Vec::new();
        for (k, v) in input.objects {
            let arn = Arn::s3_object(bucket, &k).to_string();
            let mut ok = ctx
                .authorize(&action("DeleteObject", v.is_some()), &arn)
                .is_ok();
            if ok && bypass {
                ok = ctx.authorize("s3:BypassGovernanceRetention", &arn).is_ok();
            }
            if ok {
                allowed.push((k, v));
            } else {
                refused_keys.push((k, v));
            }
        }
        if allowed.is_empty() {
            // Nothing to forward: every key was refused here.
            return Ok(super::document("DeleteResult", &RefusedAll(refused_keys)));
        }
        // The upstream always gets the body cairn read and authorized, rebuilt, never the
        // client's text (another parser could read other keys from it).
        rewritten_body = Some(Bytes::from(crate::protocol::xml::to_xml(
            "Delete",
            &DeleteBody {
                quiet: input.quiet.then_some(true),
                object: allowed
                    .into_iter()
                    .map(|(key, version_id)| DeleteObject { key, version_id })
                    .collect(),
            },
        )));
    }

    // Headers to pass on; a copy source is authorized and mapped to its upstream bucket.
    let mut headers: Vec<(String, String)> = Vec::new();
    for (k, v) in &req.headers {
        if NOT_FORWARDED.contains(&k.as_str()) {
            continue;
        }
        if k == "content-encoding" && v.trim().is_empty() {
            continue;
        }
        headers.push((k.clone(), v.clone()));
    }
    if let Some(raw_src) = req.header("x-amz-copy-source") {
        // Parsed once, authorized as parsed, and forwarded re-encoded from what was parsed:
        // the upstream reads exactly the object cairn authorized.
        let src = super::CopySource::parse(raw_src)?;
        let (sb, sk) = (src.bucket.as_str(), src.key.as_str());
        let src_target = ctx.api.opts.proxies.get(sb).cloned().ok_or_else(|| {
            ApiError::new(
                "NotImplemented",
                501,
                "Copying between a proxied bucket and a bucket of another backend is not supported.",
            )
        })?;
        if src_target.endpoint != target.endpoint {
            return Err(ApiError::new(
                "NotImplemented",
                501,
                "Copying between buckets of different upstreams is not supported.",
            ));
        }
        let read = if src.version_id.is_some() {
            "s3:GetObjectVersion"
        } else {
            "s3:GetObject"
        };
        ctx.authorize(read, &src.arn())?;
        let mut forwarded = format!(
            "/{}/{}",
            src_target.bucket,
            percent_encoding::utf8_percent_encode(sk, COPY_SOURCE_KEY)
        );
        if let Some(v) = &src.version_id {
            forwarded.push_str(&format!(
                "?versionId={}",
                percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC)
            ));
        }
        for h in headers.iter_mut().filter(|(k, _)| k == "x-amz-copy-source") {
            h.1 = forwarded.clone();
        }
    }
    if let Some(body) = &rewritten_body {
        use base64::Engine as _;
        use md5::Digest as _;
        // The body changed: its checksums are cairn's now.
        headers.retain(|(k, _)| {
            !(k.starts_with("x-amz-checksum-")
                || k == "x-amz-sdk-checksum-algorithm"
                || k == "content-md5")
        });
        headers.push((
            "content-md5".into(),
            base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(body)),
        ));
    }

    // A read body's checksums (headers, or trailers of an aws-chunked body) are checked here:
    // for an unsigned trailer they are the only integrity check, whatever the upstream does.
    if fwd.body_stream.is_none() && matches!(op, "PutObject" | "UploadPart") {
        super::chunked::verify(&req.headers, &req.body)?;
    }
    // The body: streamed when the edge left it unread, else what was received (decoded).
    let declared = req.header("x-amz-content-sha256").unwrap_or("");
    let streamed = fwd.body_stream.as_ref().and_then(|s| s.take());
    let signing = fwd.body_stream.as_ref().and_then(|s| s.signing());
    let body_error: BodyError = Default::default();
    let chunked_mode = super::chunked::mode(Some(declared));
    let (payload_hash, length, body): (String, Option<String>, StreamBody) = match streamed {
        // An aws-chunked body is decoded on its way: chunk signatures and trailing checksums
        // are cairn's to check, and the upstream gets the plain body, its last piece held
        // back until every check has passed (a failed one cuts the body short, so the
        // upstream stores nothing).
        Some(incoming) if chunked_mode.is_some() => {
            let (signed, trailer) = chunked_mode.unwrap_or_default();
            if signed && signing.is_none() {
                return Err(S3Error::InvalidRequest(
                    "Signed aws-chunked bodies need an Authorization header signature.".into(),
                )
                .into());
            }
            let len = req
                .header("x-amz-decoded-content-length")
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or(S3Error::MissingContentLength)?;
            if len
                > ctx
                    .api
                    .opts
                    .max_object_bytes
                    .min(super::intake::MAX_PUT_BYTES)
            {
                return Err(S3Error::EntityTooLarge.into());
            }
            // A trailing checksum goes on to the upstream as a trailer of a re-encoded
            // (unsigned) aws-chunked body, so the upstream keeps it with the object.
            let rechunk = trailer.then(|| trailer_checksum(&req.headers)).flatten();
            let (hash, length) = match &rechunk {
                Some((alg, value_len)) => {
                    match headers.iter_mut().find(|(k, _)| k == "content-encoding") {
                        Some((_, v)) => *v = format!("aws-chunked, {v}"),
                        None => headers.push(("content-encoding".into(), "aws-chunked".into())),
                    }
                    headers.push(("x-amz-decoded-content-length".into(), len.to_string()));
                    headers.push(("x-amz-trailer".into(), format!("x-amz-checksum-{alg}")));
                    let encoded = rechunked_length(len, alg, *value_len);
                    (
                        "STREAMING-UNSIGNED-PAYLOAD-TRAILER".to_string(),
                        encoded.to_string(),
                    )
                }
                None => {
                    headers.retain(|(k, _)| k != "x-amz-sdk-checksum-algorithm");
                    ("UNSIGNED-PAYLOAD".to_string(), len.to_string())
                }
            };
            let b = Decoding {
                inner: incoming,
                decoder: Some(super::chunked::Decoder::new(signing, trailer)),
                checksums: Some(super::chunked::Checksums::for_request(&req.headers)),
                headers: req.headers.clone(),
                declared: len,
                trailer,
                rechunk: rechunk.map(|(alg, _)| alg),
                pending: bytes::BytesMut::new(),
                passed: 0,
                held: None,
                ready: std::collections::VecDeque::new(),
                done: false,
                error: body_error.clone(),
            }
            .boxed_unsync();
            if len == 0 {
                // Nothing to hold back: an empty body is checked whole (its framing is all
                // there is) before anything is sent.
                let mut b = b;
                let mut whole = bytes::BytesMut::new();
                let mut broken = false;
                while let Some(f) = b.frame().await {
                    match f.map(|f| f.into_data()) {
                        Ok(Ok(d)) => whole.extend_from_slice(&d),
                        Ok(Err(_)) => {}
                        Err(_) => {
                            broken = true;
                            break;
                        }
                    }
                    if whole.len() > 64 << 10 {
                        broken = true;
                        break;
                    }
                }
                let cut = body_error.lock().unwrap_or_else(|p| p.into_inner()).take();
                match (broken, cut) {
                    (_, Some(e)) => return Err(e),
                    (true, None) => {
                        return Err(ApiError::client(
                            "InvalidRequest",
                            "The aws-chunked request body is malformed",
                        ))
                    }
                    (false, None) => {}
                }
                (hash, Some(length), full(whole.freeze()))
            } else {
                (hash, Some(length), b)
            }
        }
        Some(incoming) => {
            let hash = if cairn_iam::sigv4::is_sha256_hex(declared) {
                declared.to_ascii_lowercase()
            } else {
                "UNSIGNED-PAYLOAD".to_string()
            };
            let len = req.header("content-length").map(str::to_string);
            let b = incoming
                .map_err(|e| -> BoxError { Box::new(e) })
                .boxed_unsync();
            (hash, len, b)
        }
        None => {
            let body = rewritten_body.clone().unwrap_or_else(|| req.body.clone());
            let hash = if declared == "UNSIGNED-PAYLOAD" && rewritten_body.is_none() {
                declared.to_string()
            } else {
                cairn_iam::sigv4::sha256_hex(&body)
            };
            (hash, Some(body.len().to_string()), full(body))
        }
    };
    let bytes_in: u64 = length.as_deref().and_then(|l| l.parse().ok()).unwrap_or(0);

    // The upstream request, signed with the upstream's credentials.
    let endpoint = target.endpoint.trim_end_matches('/');
    let upstream_host = endpoint
        .split_once("://")
        .map(|(_, h)| h)
        .unwrap_or(endpoint)
        .to_string();
    let path = format!("/{}{}", target.bucket, fwd.rest);
    let query: String = fwd
        .query
        .split('&')
        .filter(|kv| {
            let name = kv.split('=').next().unwrap_or("");
            !kv.is_empty()
                && !name.starts_with("X-Amz-")
                && !matches!(
                    name,
                    "AWSAccessKeyId" | "Signature" | "Expires" | "x-amz-security-token"
                )
        })
        .collect::<Vec<_>>()
        .join("&");
    let mut signed: Vec<(String, String)> = vec![("host".into(), upstream_host)];
    signed.extend(
        headers
            .iter()
            .filter(|(k, _)| k.starts_with("x-amz-") || k == "content-md5" || k == "content-type")
            .cloned(),
    );
    let sreq = cairn_iam::sigv4::Request {
        method: &fwd.method,
        path: &path,
        query: &query,
        headers: &signed,
        body_sha256: &payload_hash,
        s3: true,
    };
    let auth = cairn_iam::sigv4::sign(
        &sreq,
        &target.access_key_id,
        &target.secret_access_key,
        &target.region,
        "s3",
        chrono::Utc::now(),
    );
    let uri = if query.is_empty() {
        format!("{endpoint}{path}")
    } else {
        format!("{endpoint}{path}?{query}")
    };
    let mut builder = hyper::Request::builder()
        .method(fwd.method.as_str())
        .uri(&uri);
    for (k, v) in headers.iter().chain(auth.iter()) {
        builder = builder.header(k.as_str(), v.as_str());
    }
    if let Some(l) = &length {
        builder = builder.header("content-length", l.as_str());
    }
    let up_req = builder
        .body(body)
        .map_err(|e| ApiError::client("InvalidRequest", format!("cannot forward request: {e}")))?;
    let exchange = Exchange {
        timeout: target.timeout,
        client: upstream(ctx.api)?,
        request: up_req,
        op: op.to_string(),
        bucket: bucket.to_string(),
        upstream_bucket: target.bucket.clone(),
        refused_keys,
        head: fwd.method == "HEAD",
        object: req.key.is_some(),
        data_event: data_event(op),
        signature_version: req.signature_version(),
        authentication_method: req.authentication_method(),
        bytes_in,
        request_id: ctx.request_id.clone(),
        body_error,
    };
    // A write reaches the upstream only once its record is durable (as pending; the outcome
    // completes it). A read changes nothing upstream and is recorded with its answer.
    if matches!(fwd.method.as_str(), "PUT" | "POST" | "DELETE") {
        ctx.defer_effect(Box::new(move || Box::pin(exchange.run())));
        return Ok(Reply::s3_xml(200, String::new()));
    }
    let out = exchange.run().await;
    ctx.audit.error = out.error;
    if out.additional_event_data.is_some() {
        ctx.audit.additional_event_data = out.additional_event_data;
    }
    out.reply
}

/// One request to the upstream and how its answer reaches the client and the record.
struct Exchange {
    timeout: std::time::Duration,
    client: Upstream,
    request: hyper::Request<StreamBody>,
    op: String,
    bucket: String,
    upstream_bucket: String,
    refused_keys: Vec<(String, Option<String>)>,
    head: bool,
    object: bool,
    data_event: bool,
    signature_version: &'static str,
    authentication_method: &'static str,
    bytes_in: u64,
    request_id: String,
    /// Why cairn cut the forwarded body short, if it did.
    body_error: BodyError,
}

type BodyError = std::sync::Arc<std::sync::Mutex<Option<ApiError>>>;

/// Data bytes per chunk of a re-encoded body.
const RECHUNK: usize = 64 * 1024;

/// The one checksum a request's `x-amz-trailer` declares: its algorithm and the length of
/// its base64 value.
fn trailer_checksum(headers: &[(String, String)]) -> Option<(String, usize)> {
    let t = headers
        .iter()
        .find(|(k, _)| k == "x-amz-trailer")
        .map(|(_, v)| v.trim().to_ascii_lowercase())?;
    let alg = t.strip_prefix("x-amz-checksum-")?;
    let raw: usize = match alg {
        "crc32" | "crc32c" => 4,
        "crc64nvme" => 8,
        "sha1" => 20,
        "sha256" => 32,
        _ => return None,
    };
    Some((alg.to_string(), raw.div_ceil(3) * 4))
}

/// The length of `len` data bytes re-encoded in `RECHUNK`-byte chunks with one checksum
/// trailer.
fn rechunked_length(len: u64, alg: &str, value_len: usize) -> u64 {
    let frame = |n: u64| format!("{n:x}").len() as u64 + 2 + n + 2;
    let full = len / RECHUNK as u64;
    let rest = len % RECHUNK as u64;
    full * frame(RECHUNK as u64)
        + if rest > 0 { frame(rest) } else { 0 }
        + 3
        + format!("x-amz-checksum-{alg}:").len() as u64
        + value_len as u64
        + 4
}

/// A forwarded aws-chunked body, decoded as it passes (see `forward`), and re-encoded as
/// unsigned aws-chunked when a checksum trails it.
struct Decoding {
    inner: hyper::body::Incoming,
    decoder: Option<super::chunked::Decoder>,
    checksums: Option<super::chunked::Checksums>,
    headers: Vec<(String, String)>,
    declared: u64,
    trailer: bool,
    /// The trailing checksum's algorithm, when the body is re-encoded.
    rechunk: Option<String>,
    /// Decoded bytes not yet framed as a chunk (re-encoding).
    pending: bytes::BytesMut,
    /// Decoded bytes passed on so far (never more than `declared`: the upstream would take
    /// a prefix as the whole body).
    passed: u64,
    /// The last piece, sent only once the body checked out.
    held: Option<Bytes>,
    ready: std::collections::VecDeque<Bytes>,
    done: bool,
    error: BodyError,
}

impl Decoding {
    fn fail(&mut self, e: ApiError) -> BoxError {
        // Nothing queued goes out after a failure.
        self.ready.clear();
        self.held = None;
        self.pending.clear();
        let msg = e.message.clone();
        *self.error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
        self.done = true;
        msg.into()
    }

    /// Passes decoded bytes on: as they are, or framed in `RECHUNK`-byte chunks. The last
    /// piece is held back.
    fn pass(&mut self, data: Bytes) {
        let mut out = Vec::new();
        if self.rechunk.is_some() {
            self.pending.extend_from_slice(&data);
            while self.pending.len() >= RECHUNK {
                let chunk = self.pending.split_to(RECHUNK);
                out.push(frame_chunk(&chunk));
            }
        } else if !data.is_empty() {
            out.push(data);
        }
        for piece in out {
            if let Some(prev) = self.held.replace(piece) {
                self.ready.push_back(prev);
            }
        }
    }

    /// The body ended: the decoder's end, the decoded length, the trailing checksums.
    fn finish(&mut self) -> Result<(), ApiError> {
        let d = self
            .decoder
            .take()
            .ok_or_else(|| ApiError::internal("body decoded twice"))?;
        let received = d.decoded();
        let trailers = d.finish()?;
        super::chunked::check_decoded(
            &self.headers,
            self.declared,
            received,
            &trailers,
            self.trailer,
        )?;
        let mut all = self.headers.clone();
        all.extend(trailers);
        let kept = match self.checksums.take() {
            Some(c) => c.finish(&all)?,
            None => None,
        };
        // Every check is done before anything held is released.
        let value = match &self.rechunk {
            Some(alg) => Some(
                kept.filter(|(a, _)| a == alg)
                    .map(|(_, v)| v)
                    .ok_or_else(malformed_trailer_error)?,
            ),
            None => None,
        };
        if let Some(held) = self.held.take() {
            self.ready.push_back(held);
        }
        if let (Some(alg), Some(value)) = (&self.rechunk, value) {
            if !self.pending.is_empty() {
                let rest = self.pending.split();
                self.ready.push_back(frame_chunk(&rest));
            }
            self.ready.push_back(Bytes::from(format!(
                "0\r\nx-amz-checksum-{alg}:{value}\r\n\r\n"
            )));
        }
        Ok(())
    }
}

fn frame_chunk(data: &[u8]) -> Bytes {
    let mut b = Vec::with_capacity(data.len() + 12);
    b.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
    b.extend_from_slice(data);
    b.extend_from_slice(b"\r\n");
    Bytes::from(b)
}

fn malformed_trailer_error() -> ApiError {
    ApiError::client(
        "MalformedTrailerError",
        "The request contained trailing data that was not well-formed or did not conform to our published schema.",
    )
}

impl hyper::body::Body for Decoding {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        use std::task::Poll;
        loop {
            if let Some(b) = self.ready.pop_front() {
                return Poll::Ready(Some(Ok(hyper::body::Frame::data(b))));
            }
            if self.done {
                return Poll::Ready(None);
            }
            let frame = match std::pin::Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(f) => f,
            };
            match frame {
                None => {
                    if let Err(e) = self.finish() {
                        return Poll::Ready(Some(Err(self.fail(e))));
                    }
                    self.done = true;
                }
                Some(Err(e)) => {
                    let e = ApiError::client(
                        "IncompleteBody",
                        format!("The request body terminated unexpectedly: {e}"),
                    );
                    return Poll::Ready(Some(Err(self.fail(e))));
                }
                Some(Ok(f)) => {
                    let Ok(data) = f.into_data() else { continue };
                    let mut out = bytes::BytesMut::new();
                    let this = &mut *self;
                    let (Some(d), Some(c)) = (&mut this.decoder, &mut this.checksums) else {
                        continue;
                    };
                    let (passed, declared) = (&mut this.passed, this.declared);
                    let fed = d.feed(&data, &mut |piece| {
                        *passed += piece.len() as u64;
                        if *passed > declared {
                            return Err(ApiError::client(
                                "IncompleteBody",
                                "The decoded body is longer than x-amz-decoded-content-length",
                            ));
                        }
                        c.update(piece);
                        out.extend_from_slice(piece);
                        Ok(())
                    });
                    if let Err(e) = fed {
                        return Poll::Ready(Some(Err(self.fail(e))));
                    }
                    if !out.is_empty() {
                        self.pass(out.freeze());
                    }
                }
            }
        }
    }
}

impl Exchange {
    /// Sends the request; the answer comes back unchanged but for hop-by-hop headers, the
    /// bucket name, and keys cairn refused itself.
    async fn run(self) -> EffectOutcome {
        let mut out = EffectOutcome::default();
        let resp = match tokio::time::timeout(self.timeout, self.client.request(self.request)).await
        {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                // A body cairn cut short says why; anything else is the upstream's failure.
                let cut = self
                    .body_error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take();
                out.reply = Err(cut.unwrap_or_else(|| service_unavailable(e)));
                return out;
            }
            Err(_) => {
                out.reply = Err(ApiError::new(
                    "ServiceUnavailable",
                    503,
                    format!(
                        "The upstream S3 service did not answer within {} s; the outcome upstream is unknown",
                        self.timeout.as_secs_f64()
                    ),
                ));
                return out;
            }
        };
        let (bucket, upstream_bucket) = (&self.bucket, &self.upstream_bucket);
        let status = resp.status().as_u16();
        let mut out_headers = Vec::new();
        for (k, v) in resp.headers() {
            if NOT_RETURNED.contains(&k.as_str()) {
                continue;
            }
            if let Ok(v) = v.to_str() {
                out_headers.push((k.as_str().to_string(), v.to_string()));
            }
        }
        let bytes_out: u64 = resp
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let stream_back = self.op == "GetObject" && (200..300).contains(&status);
        let reply = if stream_back {
            let b = resp
                .into_body()
                .map_err(|e| -> BoxError { Box::new(e) })
                .boxed_unsync();
            Reply {
                status,
                headers: out_headers,
                body: Bytes::new(),
                stream: Some(Streamed::new(b)),
            }
        } else {
            let body = match Limited::new(resp.into_body(), 64 << 20).collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => {
                    out.reply = Err(service_unavailable(e));
                    return out;
                }
            };
            let body = if upstream_bucket != bucket && !body.is_empty() {
                let text = String::from_utf8_lossy(&body)
                    .replace(
                        &format!("<Name>{upstream_bucket}</Name>"),
                        &format!("<Name>{bucket}</Name>"),
                    )
                    .replace(
                        &format!("<Bucket>{upstream_bucket}</Bucket>"),
                        &format!("<Bucket>{bucket}</Bucket>"),
                    )
                    .replace(
                        &format!("<BucketName>{upstream_bucket}</BucketName>"),
                        &format!("<BucketName>{bucket}</BucketName>"),
                    );
                if let Some(i) = out_headers.iter().position(|(k, _)| k == "content-length") {
                    out_headers[i].1 = text.len().to_string();
                }
                Bytes::from(text)
            } else {
                body
            };
            // Keys refused here join the upstream's answer as S3 reports them.
            let body = if !self.refused_keys.is_empty() && status == 200 {
                let text = String::from_utf8_lossy(&body);
                let merged = match text.rfind("</DeleteResult>") {
                    Some(i) => format!(
                        "{}{}{}",
                        &text[..i],
                        refused_entries(&self.refused_keys),
                        &text[i..]
                    ),
                    None => text.into_owned(),
                };
                if let Some(i) = out_headers.iter().position(|(k, _)| k == "content-length") {
                    out_headers[i].1 = merged.len().to_string();
                }
                Bytes::from(merged)
            } else {
                body
            };
            if status >= 300 && status != 304 {
                let code = error_field(&body, "Code").unwrap_or_else(|| {
                    match status {
                        404 if self.head && self.object => "NoSuchKey",
                        404 => "NotFound",
                        403 => "AccessDenied",
                        412 => "PreconditionFailed",
                        _ => "BadRequest",
                    }
                    .to_string()
                });
                let message = error_field(&body, "Message").unwrap_or_default();
                out.error = Some((code, message));
            }
            Reply {
                status,
                headers: out_headers,
                body,
                stream: None,
            }
        };
        if self.data_event {
            out.additional_event_data = Some(serde_json::json!({
                "SignatureVersion": self.signature_version,
                "AuthenticationMethod": self.authentication_method,
                "bytesTransferredIn": self.bytes_in,
                "bytesTransferredOut": if self.head { 0 } else { bytes_out },
                "x-amz-id-2": self.request_id,
            }));
        }
        out.reply = Ok(reply);
        out
    }
}

/// A DeleteResult listing every key as refused.
struct RefusedAll(Vec<(String, Option<String>)>);

impl serde::Serialize for RefusedAll {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let errors: Vec<Failure> = self
            .0
            .iter()
            .map(|(k, v)| Failure {
                key: k.clone(),
                version_id: v.clone(),
                code: "AccessDenied".into(),
                message: "Access Denied".into(),
            })
            .collect();
        let mut st = s.serialize_struct("DeleteResult", 1)?;
        st.serialize_field("Error", &errors)?;
        st.end()
    }
}

/// The `<Delete>` body forwarded upstream: the keys cairn authorized.
#[derive(serde::Serialize)]
#[serde(rename_all = "PascalCase")]
struct DeleteBody {
    #[serde(skip_serializing_if = "Option::is_none")]
    quiet: Option<bool>,
    object: Vec<DeleteObject>,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "PascalCase")]
struct DeleteObject {
    key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    version_id: Option<String>,
}
