//! The bodies of PutObject and UploadPart, received as they arrive and written as they are
//! received, in constant memory, up to S3's 5 GiB for one request.
//!
//! The edge leaves these bodies unread (`streams_body`); the handler sends each frame to a
//! blocking worker that decodes `aws-chunked` framing (checking every chunk's signature),
//! hashes (the signed payload hash, the flexible checksums) and writes the data to a sink (a
//! staged object or a part file). Nothing written becomes visible before every check has
//! passed at the end: a failed check drops the sink, which removes what it wrote.

use super::chunked::{self, Checksums, Decoder};
use super::{S3Error, S3Request};
use crate::edge::Ctx;
use crate::protocol::ApiError;
use bytes::Bytes;
use sha2::{Digest, Sha256};

/// The most one PutObject or UploadPart may carry (S3's single-PUT limit).
pub const MAX_PUT_BYTES: u64 = 5 << 30;

/// Bytes of a body handed to the blocking pool at a time.
const BATCH_BYTES: usize = 256 << 10;

/// Where a received body goes.
pub(super) trait Sink: Send + 'static {
    fn write(&mut self, data: &[u8]) -> Result<(), ApiError>;

    /// Whether `more` bytes can be written without any I/O (the sink keeps them in memory):
    /// a small body is then received on the request's own thread, with no hop to the
    /// blocking pool (each costs two thread switches, more than hashing a few KiB).
    fn takes_in_memory(&self, _more: usize) -> bool {
        false
    }
}

impl Sink for cairn_store::StagingWriter {
    fn write(&mut self, data: &[u8]) -> Result<(), ApiError> {
        cairn_store::StagingWriter::write(self, data).map_err(ApiError::internal)
    }

    fn takes_in_memory(&self, more: usize) -> bool {
        cairn_store::StagingWriter::takes_in_memory(self, more)
    }
}

/// The most raw body bytes received on the request's own thread (see
/// [`Sink::takes_in_memory`]); past it, or when the sink would write a file, the work goes
/// to the blocking pool.
const INLINE_INTAKE_BYTES: usize = 64 << 10;

/// A body received whole and checked.
pub(super) struct Received<S> {
    pub sink: S,
    /// The flexible checksum to keep: `(alg, base64 value)`.
    pub checksum: Option<(String, String)>,
}

/// The body's length as declared (the decoded length of an aws-chunked body), refused with
/// EntityTooLarge above `limit` (`ApiOptions::max_object_bytes`).
pub(super) fn declared_length(req: &S3Request, limit: u64) -> Result<Option<u64>, ApiError> {
    let h = if chunked::mode(req.header("x-amz-content-sha256")).is_some() {
        "x-amz-decoded-content-length"
    } else {
        "content-length"
    };
    let n = req.header(h).and_then(|v| v.trim().parse::<u64>().ok());
    if n.is_some_and(|n| n > limit.min(MAX_PUT_BYTES)) {
        return Err(S3Error::EntityTooLarge.into());
    }
    Ok(n)
}

/// What the worker checks as the body passes.
struct Intake {
    decoder: Option<Decoder>,
    /// The raw body's SHA-256, and the signed hash it must equal.
    sha: Option<(Sha256, String)>,
    checksums: Checksums,
    received: u64,
    trailer: bool,
    limit: u64,
}

impl Intake {
    fn feed(&mut self, raw: &[u8], sink: &mut dyn Sink) -> Result<(), ApiError> {
        if let Some((h, _)) = &mut self.sha {
            h.update(raw);
        }
        let (checksums, received, limit) = (&mut self.checksums, &mut self.received, self.limit);
        let mut out = |data: &[u8]| -> Result<(), ApiError> {
            *received += data.len() as u64;
            if *received > limit {
                return Err(S3Error::EntityTooLarge.into());
            }
            checksums.update(data);
            sink.write(data)
        };
        match &mut self.decoder {
            Some(d) => d.feed(raw, &mut out),
            None => out(raw),
        }
    }

    fn finish(self, headers: &[(String, String)]) -> Result<Option<(String, String)>, ApiError> {
        let mut all = headers.to_vec();
        if let Some(d) = self.decoder {
            let trailers = d.finish()?;
            let declared = headers
                .iter()
                .find(|(k, _)| k == "x-amz-decoded-content-length")
                .and_then(|(_, v)| v.trim().parse::<u64>().ok())
                .ok_or(S3Error::MissingContentLength)?;
            chunked::check_decoded(headers, declared, self.received, &trailers, self.trailer)?;
            for (k, v) in trailers {
                if !all.iter().any(|(n, _)| *n == k) {
                    all.push((k, v));
                }
            }
        }
        if let Some((h, declared)) = self.sha {
            let computed = hex::encode(h.finalize());
            if !computed.eq_ignore_ascii_case(&declared) {
                return Err(ApiError::client(
                    "XAmzContentSHA256Mismatch",
                    "The provided 'x-amz-content-sha256' header does not match what was computed.",
                )
                .with("ClientComputedContentSHA256", declared)
                .with("S3ComputedContentSHA256", computed));
            }
        }
        self.checksums.finish(&all)
    }
}

/// Receives the request's body into `sink`: streamed when the edge left it unread, else the
/// body the edge read (already decoded and hash-checked). Any failed check is an error and
/// `sink` is dropped.
pub(super) async fn receive<S: Sink>(
    ctx: &Ctx<'_>,
    req: &S3Request,
    mut sink: S,
) -> Result<Received<S>, ApiError> {
    let headers = req.headers.clone();
    let limit = ctx.api.opts.max_object_bytes.min(MAX_PUT_BYTES);
    // A stream already taken is an error, never an empty body taken as checked.
    let streamed = match &req.body_stream {
        Some(s) => Some(
            s.take()
                .map(|b| (s.signing(), b))
                .ok_or_else(|| ApiError::internal("a streamed body was taken twice"))?,
        ),
        None => None,
    };
    let Some((signing, mut body)) = streamed else {
        let body = req.body.clone();
        let small = body.len() <= INLINE_INTAKE_BYTES && sink.takes_in_memory(body.len());
        let work = move || {
            let mut i = Intake {
                decoder: None,
                sha: None,
                checksums: Checksums::for_request(&headers),
                received: 0,
                trailer: false,
                limit,
            };
            i.feed(&body, &mut sink)?;
            let checksum = i.finish(&headers)?;
            Ok((sink, checksum))
        };
        let (sink, checksum) = if small {
            work()?
        } else {
            ctx.api.blocking(work).await?
        };
        return Ok(Received { sink, checksum });
    };
    let declared = req.header("x-amz-content-sha256").unwrap_or_default();
    let mode = chunked::mode(Some(declared));
    if mode.is_some_and(|(signed, _)| signed) && signing.is_none() {
        return Err(S3Error::InvalidRequest(
            "Signed aws-chunked bodies need an Authorization header signature.".into(),
        )
        .into());
    }
    let intake = Intake {
        decoder: mode.map(|(_, trailer)| Decoder::new(signing, trailer)),
        sha: cairn_iam::sigv4::is_sha256_hex(declared)
            .then(|| (Sha256::new(), declared.to_ascii_lowercase())),
        checksums: Checksums::for_request(&headers),
        received: 0,
        trailer: mode.is_some_and(|(_, t)| t),
        limit,
    };
    // The network is read here; the work (decoding, hashing, writing) runs in the blocking
    // pool one batch at a time, one batch in flight while the next is read: no thread waits
    // on a slow client.
    let idle = ctx.api.opts.body_timeout;
    let mut ready: Option<(Intake, S)> = Some((intake, sink));
    let mut inflight: Option<tokio::task::JoinHandle<Result<(Intake, S), ApiError>>> = None;
    let mut batch: Vec<Bytes> = Vec::new();
    let mut batched = 0usize;
    loop {
        use hyper::body::Body as _;
        let frame = std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx));
        let end = match tokio::time::timeout(idle, frame).await {
            Err(_) => {
                return Err(ApiError::client(
                    "RequestTimeout",
                    "Your socket connection to the server was not read from or written to within the timeout period. Idle connections will be closed.",
                ))
            }
            Ok(Some(Err(e))) => {
                return Err(ApiError::client(
                    "IncompleteBody",
                    format!("The request body terminated unexpectedly: {e}"),
                ))
            }
            Ok(Some(Ok(f))) => {
                if let Ok(d) = f.into_data() {
                    batched += d.len();
                    batch.push(d);
                }
                false
            }
            Ok(None) => true,
        };
        if batched >= BATCH_BYTES || (end && !batch.is_empty()) {
            // A body of undeclared or understated size, or one of many admitted at once,
            // stops at the disk reserve instead of eating it (its staged file is dropped).
            ctx.api
                .disk
                .room()
                .map_err(|s| s.error(crate::protocol::Protocol::S3))?;
            let (mut intake, mut sink) = match inflight.take() {
                Some(h) => h.await.map_err(ApiError::internal)??,
                None => ready
                    .take()
                    .ok_or_else(|| ApiError::internal("body intake lost"))?,
            };
            let work = std::mem::take(&mut batch);
            let here = end && batched <= INLINE_INTAKE_BYTES && sink.takes_in_memory(batched);
            let feed = move || {
                for piece in &work {
                    intake.feed(piece, &mut sink)?;
                }
                Ok((intake, sink))
            };
            // A small body whose sink keeps it in memory is fed here: no I/O, a few µs of
            // hashing (and sealing), no thread switch.
            if here {
                ready = Some(feed()?);
            } else {
                inflight = Some(tokio::task::spawn_blocking(feed));
            }
            batched = 0;
        }
        if end {
            break;
        }
    }
    let (intake, sink) = match inflight.take() {
        Some(h) => h.await.map_err(ApiError::internal)??,
        None => ready
            .take()
            .ok_or_else(|| ApiError::internal("body intake lost"))?,
    };
    // Finishing checks hashes and trailers; it touches no file (the sink is finished by its
    // owner), so it runs here.
    let checksum = intake.finish(&headers)?;
    Ok(Received { sink, checksum })
}
