//! S3 request bodies beyond a plain payload: `aws-chunked` framing (chunks signed one by one
//! with SigV4's `AWS4-HMAC-SHA256-PAYLOAD` chain, or unsigned), trailing headers (with their
//! `AWS4-HMAC-SHA256-TRAILER` signature when signed), and the flexible checksums
//! (CRC32, CRC32C, CRC64NVME, SHA-1, SHA-256) sent as a header or a trailer.
//!
//! The edge decodes the body once, right after authenticating the seed signature, so every S3
//! handler sees the decoded payload and the trailers as ordinary headers.

use super::S3Error;
use crate::edge::HttpRequest;
use crate::protocol::ApiError;
use base64::Engine;
use sha2::{Digest, Sha256};

/// Decodes an `aws-chunked` S3 body in place (the S3 service's `prepare`) (spec: SigV4 streaming): the chunk chain is
/// checked against the seed signature with the caller's signing key, trailers become
/// headers, `aws-chunked` leaves `Content-Encoding`, and the decoded length must be the
/// declared `x-amz-decoded-content-length`.
pub fn decode_request(
    req: &mut HttpRequest,
    auth: Option<&cairn_iam::sigv4::Authorization>,
    secret: &str,
) -> Result<(), ApiError> {
    let Some(mode) = req.header("x-amz-content-sha256").map(str::to_string) else {
        return Ok(());
    };
    let (signed, trailer) = match mode.as_str() {
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD" => (true, false),
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER" => (true, true),
        "STREAMING-UNSIGNED-PAYLOAD-TRAILER" => (false, true),
        m if m.starts_with("STREAMING-") => {
            return Err(S3Error::NotImplemented(format!(
                "{m} (SigV4a) is not implemented; sign with SigV4."
            ))
            .into())
        }
        _ => return Ok(()),
    };
    let signer = match (signed, auth) {
        (true, Some(a)) if !a.presigned() => Some(ChunkSigner {
            key: cairn_iam::sigv4::signing_key(secret, &a.date, &a.region, &a.service),
            amz_date: a.amz_date.clone(),
            scope: a.scope(),
            seed: a.signature.to_ascii_lowercase(),
        }),
        (true, _) => {
            return Err(S3Error::InvalidRequest(
                "Signed aws-chunked bodies need an Authorization header signature.".into(),
            )
            .into())
        }
        (false, _) => None,
    };
    let Some(declared) = req
        .header("x-amz-decoded-content-length")
        .map(|d| d.trim().parse::<u64>())
    else {
        return Err(S3Error::MissingContentLength.into());
    };
    let declared = declared.map_err(|_| {
        ApiError::client(
            "InvalidArgument",
            "x-amz-decoded-content-length is not a number",
        )
    })?;
    if let Some(stream) = &req.body_stream {
        // A streamed body is decoded as it is read (`Decoder`), with this signer.
        if let Some(s) = signer {
            stream.set_signing(s);
        }
    } else {
        let decoded = decode(&req.body, signer.as_ref(), trailer)?;
        check_decoded(
            &req.headers,
            declared,
            decoded.body.len() as u64,
            &decoded.trailers,
            trailer,
        )?;
        req.body = bytes::Bytes::from(decoded.body);
        for (k, v) in decoded.trailers {
            if req.header(&k).is_none() {
                req.headers.push((k, v));
            }
        }
    }
    if let Some(i) = req
        .headers
        .iter()
        .position(|(k, _)| k == "content-encoding")
    {
        let rest: Vec<&str> = req.headers[i]
            .1
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty() && !e.eq_ignore_ascii_case("aws-chunked"))
            .collect();
        if rest.is_empty() {
            req.headers.remove(i);
        } else {
            req.headers[i].1 = rest.join(", ");
        }
    }
    Ok(())
}

pub use crate::edge::ChunkSigning as ChunkSigner;

/// The body without framing, and the trailing headers (names lower-case).
#[derive(Debug)]
pub struct Decoded {
    pub body: Vec<u8>,
    pub trailers: Vec<(String, String)>,
}

/// Checks a decoded body against what its headers declared: the decoded length, and
/// trailers that are declared checksums (any other header must be sent, and signed, as one).
pub fn check_decoded(
    headers: &[(String, String)],
    declared_len: u64,
    len: u64,
    trailers: &[(String, String)],
    trailer: bool,
) -> Result<(), ApiError> {
    if declared_len != len {
        return Err(ApiError::client(
            "IncompleteBody",
            "You did not provide the number of bytes specified by the Content-Length HTTP header",
        ));
    }
    if trailer {
        let declared: Vec<String> = headers
            .iter()
            .filter(|(k, _)| k == "x-amz-trailer")
            .flat_map(|(_, t)| t.split(','))
            .map(|s| s.trim().to_ascii_lowercase())
            .filter(|s| !s.is_empty())
            .collect();
        for (name, _) in trailers {
            if !declared.contains(name) || !name.starts_with("x-amz-checksum-") {
                return Err(malformed_trailer());
            }
        }
    }
    Ok(())
}

/// The aws-chunked mode an `x-amz-content-sha256` value names: `(signed, trailer)`.
pub fn mode(content_sha256: Option<&str>) -> Option<(bool, bool)> {
    match content_sha256? {
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD" => Some((true, false)),
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER" => Some((true, true)),
        "STREAMING-UNSIGNED-PAYLOAD-TRAILER" => Some((false, true)),
        _ => None,
    }
}

/// Smallest size of a chunk that is not the last one carrying data.
const MIN_CHUNK: usize = 8192;

const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

fn incomplete() -> ApiError {
    ApiError::client("IncompleteBody", "The request body terminated unexpectedly")
}

fn malformed_chunk(what: &str) -> ApiError {
    ApiError::client(
        "InvalidRequest",
        format!("The aws-chunked request body is malformed: {what}"),
    )
}

fn malformed_trailer() -> ApiError {
    ApiError::client(
        "MalformedTrailerError",
        "The request contained trailing data that was not well-formed or did not conform to our published schema.",
    )
}

fn chunk_mismatch() -> ApiError {
    ApiError::new(
        "SignatureDoesNotMatch",
        403,
        "The request signature we calculated does not match the signature you provided. Check your key and signing method.",
    )
}

fn hmac_hex(key: &[u8], msg: &str) -> String {
    let k = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key);
    hex::encode(aws_lc_rs::hmac::sign(&k, msg.as_bytes()).as_ref())
}

fn same(a: &str, b: &str) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(
        a.to_ascii_lowercase().as_bytes(),
        b.to_ascii_lowercase().as_bytes(),
    )
    .is_ok()
}

/// The longest chunk header or trailer line accepted.
const MAX_LINE: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    /// Reading a chunk header line.
    Header,
    /// Inside a chunk's data: bytes left.
    Data(usize),
    /// After a chunk's data: CRLF bytes seen.
    DataEnd(u8),
    /// Reading trailer lines.
    Trailer,
    /// The empty line after the trailers was read.
    Done,
}

/// Decodes an aws-chunked body as it arrives, in constant memory: [`Decoder::feed`] passes
/// each chunk's data on (before the chunk's signature is known: a consumer keeps what it is
/// given invisible until [`Decoder::finish`] succeeds), checks each signature at the chunk's
/// end, and collects the trailers.
pub struct Decoder {
    signer: Option<ChunkSigner>,
    trailer: bool,
    state: State,
    line: Vec<u8>,
    prev: String,
    given: Option<String>,
    hash: Sha256,
    chunk_no: usize,
    short_chunk: Option<(usize, usize)>,
    decoded: u64,
    trailers: Vec<(String, String)>,
    trailer_sig: Option<String>,
    trailer_lines: usize,
    canonical: String,
}

impl Decoder {
    /// `signer` is present for the signed forms (every chunk, and the trailer when `trailer`
    /// is set, must carry a valid chained signature); `trailer` says a trailer section is
    /// declared (`x-amz-trailer`).
    pub fn new(signer: Option<ChunkSigner>, trailer: bool) -> Decoder {
        let prev = signer.as_ref().map(|s| s.seed.clone()).unwrap_or_default();
        Decoder {
            signer,
            trailer,
            state: State::Header,
            line: Vec::new(),
            prev,
            given: None,
            hash: Sha256::new(),
            chunk_no: 0,
            short_chunk: None,
            decoded: 0,
            trailers: Vec::new(),
            trailer_sig: None,
            trailer_lines: 0,
            canonical: String::new(),
        }
    }

    /// Decoded bytes passed on so far.
    pub fn decoded(&self) -> u64 {
        self.decoded
    }

    /// Takes the next piece of the encoded body; decoded data goes to `out`.
    pub fn feed(
        &mut self,
        mut input: &[u8],
        out: &mut dyn FnMut(&[u8]) -> Result<(), ApiError>,
    ) -> Result<(), ApiError> {
        while !input.is_empty() {
            match self.state {
                State::Header | State::Trailer => {
                    let Some(nl) = input.iter().position(|b| *b == b'\n') else {
                        self.line.extend_from_slice(input);
                        if self.line.len() > MAX_LINE {
                            return Err(malformed_chunk("line too long"));
                        }
                        return Ok(());
                    };
                    self.line.extend_from_slice(&input[..nl]);
                    input = &input[nl + 1..];
                    let mut l = std::mem::take(&mut self.line);
                    if l.pop() != Some(b'\r') || l.len() > MAX_LINE {
                        return Err(malformed_chunk("line not ended by CRLF"));
                    }
                    if self.state == State::Header {
                        self.chunk_header(&l)?;
                    } else {
                        self.trailer_line(&l)?;
                    }
                }
                State::Data(left) => {
                    let n = left.min(input.len());
                    let (data, rest) = input.split_at(n);
                    if self.signer.is_some() {
                        self.hash.update(data);
                    }
                    out(data)?;
                    self.decoded += n as u64;
                    input = rest;
                    if left == n {
                        self.end_chunk()?;
                        self.state = State::DataEnd(0);
                    } else {
                        self.state = State::Data(left - n);
                    }
                }
                State::DataEnd(k) => {
                    if input[0] != b"\r\n"[k as usize] {
                        return Err(malformed_chunk("chunk data is not followed by CRLF"));
                    }
                    input = &input[1..];
                    self.state = if k == 1 {
                        State::Header
                    } else {
                        State::DataEnd(1)
                    };
                }
                State::Done => return Err(malformed_chunk("data after the final chunk")),
            }
        }
        Ok(())
    }

    fn chunk_header(&mut self, header: &[u8]) -> Result<(), ApiError> {
        let header = std::str::from_utf8(header).map_err(|_| malformed_chunk("chunk header"))?;
        let (size, ext) = match header.split_once(';') {
            Some((s, e)) => (s, Some(e)),
            None => (header, None),
        };
        let size = usize::from_str_radix(size.trim(), 16)
            .ok()
            .filter(|n| *n <= 1 << 40)
            .ok_or_else(|| malformed_chunk("chunk size"))?;
        if self.signer.is_some() {
            let given = ext
                .and_then(|e| e.trim().strip_prefix("chunk-signature="))
                .ok_or_else(chunk_mismatch)?;
            self.given = Some(given.to_string());
            self.hash = Sha256::new();
        }
        if size == 0 {
            self.end_chunk()?;
            self.state = State::Trailer;
            return Ok(());
        }
        // Only the last chunk with data may be smaller than 8 KiB (B10).
        if let Some((n, small)) = self.short_chunk.take() {
            return Err(ApiError::client(
                "InvalidChunkSizeError",
                "Only the last chunk is allowed to have a size less than 8192 bytes",
            )
            .with("Chunk", n.to_string())
            .with("BadChunkSize", small.to_string()));
        }
        self.chunk_no += 1;
        if size < MIN_CHUNK {
            self.short_chunk = Some((self.chunk_no, size));
        }
        self.state = State::Data(size);
        Ok(())
    }

    /// Checks the signature of the chunk just read.
    fn end_chunk(&mut self) -> Result<(), ApiError> {
        let Some(s) = &self.signer else {
            return Ok(());
        };
        let given = self.given.take().ok_or_else(chunk_mismatch)?;
        let data_hash = std::mem::take(&mut self.hash).finalize();
        let sts = format!(
            "AWS4-HMAC-SHA256-PAYLOAD\n{}\n{}\n{}\n{}\n{}",
            s.amz_date,
            s.scope,
            self.prev,
            EMPTY_SHA256,
            hex::encode(data_hash)
        );
        let expected = hmac_hex(&s.key, &sts);
        if !same(&expected, &given) {
            return Err(chunk_mismatch());
        }
        self.prev = expected;
        Ok(())
    }

    fn trailer_line(&mut self, l: &[u8]) -> Result<(), ApiError> {
        if l.is_empty() {
            self.state = State::Done;
            return Ok(());
        }
        // Nothing may trail a body that declared no trailer (nothing would sign it), and a
        // trailer has a few lines at most.
        self.trailer_lines += 1;
        if !self.trailer || self.trailer_lines > 16 {
            return Err(malformed_trailer());
        }
        let l = std::str::from_utf8(l).map_err(|_| malformed_trailer())?;
        let (name, value) = l.split_once(':').ok_or_else(malformed_trailer)?;
        let name = name.trim().to_ascii_lowercase();
        let value = value.trim().to_string();
        if name == "x-amz-trailer-signature" {
            self.trailer_sig = Some(value);
            return Ok(());
        }
        self.canonical.push_str(&format!("{name}:{value}\n"));
        self.trailers.push((name, value));
        Ok(())
    }

    /// The body ended: checks it ended where it may, and the trailer's signature. Returns
    /// the trailers (names lower-case).
    pub fn finish(self) -> Result<Vec<(String, String)>, ApiError> {
        match self.state {
            State::Done => {}
            // A body may end right after the last chunk's header when nothing trails.
            State::Trailer if self.line.is_empty() && self.trailers.is_empty() => {
                if self.trailer {
                    return Err(incomplete());
                }
            }
            _ => return Err(incomplete()),
        }
        if self.trailer && self.trailers.is_empty() {
            return Err(malformed_trailer());
        }
        if let (Some(s), true) = (&self.signer, self.trailer) {
            let given = self.trailer_sig.ok_or_else(chunk_mismatch)?;
            let sts = format!(
                "AWS4-HMAC-SHA256-TRAILER\n{}\n{}\n{}\n{}",
                s.amz_date,
                s.scope,
                self.prev,
                cairn_iam::sigv4::sha256_hex(self.canonical.as_bytes())
            );
            if !same(&hmac_hex(&s.key, &sts), &given) {
                return Err(chunk_mismatch());
            }
        }
        Ok(self.trailers)
    }
}

/// Decodes a whole aws-chunked body (see [`Decoder`]).
pub fn decode(
    body: &[u8],
    signer: Option<&ChunkSigner>,
    trailer: bool,
) -> Result<Decoded, ApiError> {
    let mut d = Decoder::new(signer.cloned(), trailer);
    let mut out = Vec::with_capacity(body.len());
    d.feed(body, &mut |data| {
        out.extend_from_slice(data);
        Ok(())
    })?;
    let trailers = d.finish()?;
    Ok(Decoded {
        body: out,
        trailers,
    })
}

/// The checksum algorithms S3 accepts, by their header suffix.
pub const ALGORITHMS: &[&str] = &["crc32", "crc32c", "crc64nvme", "sha1", "sha256"];

static CRC64_NVME: crc::Crc<u64> = crc::Crc::<u64>::new(&crc::CRC_64_NVME);

/// One checksum computed as data arrives.
enum Hasher {
    Crc32(crc32fast::Hasher),
    Crc32c(u32),
    Crc64(crc::Digest<'static, u64>),
    Sha1(sha1::Sha1),
    Sha256(Sha256),
}

impl Hasher {
    fn of(alg: &str) -> Option<Hasher> {
        Some(match alg {
            "crc32" => Hasher::Crc32(crc32fast::Hasher::new()),
            "crc32c" => Hasher::Crc32c(0),
            "crc64nvme" => Hasher::Crc64(CRC64_NVME.digest()),
            "sha1" => Hasher::Sha1(<sha1::Sha1 as sha1::Digest>::new()),
            "sha256" => Hasher::Sha256(Sha256::new()),
            _ => return None,
        })
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Crc32(h) => h.update(data),
            Hasher::Crc32c(c) => *c = crc32c::crc32c_append(*c, data),
            Hasher::Crc64(d) => d.update(data),
            Hasher::Sha1(h) => sha1::Digest::update(h, data),
            Hasher::Sha256(h) => h.update(data),
        }
    }

    fn finish(self) -> Vec<u8> {
        match self {
            Hasher::Crc32(h) => h.finalize().to_be_bytes().to_vec(),
            Hasher::Crc32c(c) => c.to_be_bytes().to_vec(),
            Hasher::Crc64(d) => d.finalize().to_be_bytes().to_vec(),
            Hasher::Sha1(h) => sha1::Digest::finalize(h).to_vec(),
            Hasher::Sha256(h) => h.finalize().to_vec(),
        }
    }
}

/// The raw checksum of `data` under `alg` (one of [`ALGORITHMS`]; SHA-256 otherwise).
pub fn checksum(alg: &str, data: &[u8]) -> Vec<u8> {
    let mut h = Hasher::of(alg).unwrap_or(Hasher::Sha256(Sha256::new()));
    h.update(data);
    h.finish()
}

/// The base64 checksum of `data` under `alg`.
pub fn checksum_b64(alg: &str, data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(checksum(alg, data))
}

fn upper(alg: &str) -> String {
    alg.to_ascii_uppercase()
}

/// The flexible checksums a request's body is checked against, computed as it arrives:
/// every algorithm a `x-amz-checksum-*` header, a declared trailer (`x-amz-trailer`) or the
/// requested algorithm names.
pub struct Checksums {
    hashers: Vec<(String, Hasher)>,
}

impl Checksums {
    pub fn for_request(headers: &[(String, String)]) -> Checksums {
        let mut algs: Vec<String> = Vec::new();
        for (k, v) in headers {
            let named: Vec<String> = if let Some(alg) = k.strip_prefix("x-amz-checksum-") {
                vec![alg.to_string()]
            } else if k == "x-amz-trailer" {
                v.split(',')
                    .filter_map(|t| {
                        t.trim()
                            .to_ascii_lowercase()
                            .strip_prefix("x-amz-checksum-")
                            .map(str::to_string)
                    })
                    .collect()
            } else if k == "x-amz-sdk-checksum-algorithm" || k == "x-amz-checksum-algorithm" {
                vec![v.to_ascii_lowercase()]
            } else {
                vec![]
            };
            for a in named {
                if ALGORITHMS.contains(&a.as_str()) && !algs.contains(&a) {
                    algs.push(a);
                }
            }
        }
        Checksums {
            hashers: algs
                .into_iter()
                .filter_map(|a| Hasher::of(&a).map(|h| (a, h)))
                .collect(),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        for (_, h) in &mut self.hashers {
            h.update(data);
        }
    }

    /// Checks every `x-amz-checksum-*` value of `headers` (headers and, after decoding,
    /// trailers) against the body seen, and returns the one to keep with the object, if
    /// any: `(alg, base64 value)`. A requested algorithm (`x-amz-sdk-checksum-algorithm` /
    /// `x-amz-checksum-algorithm`) without a value is the computed one.
    pub fn finish(
        self,
        headers: &[(String, String)],
    ) -> Result<Option<(String, String)>, ApiError> {
        let computed: Vec<(String, Vec<u8>)> = self
            .hashers
            .into_iter()
            .map(|(a, h)| (a, h.finish()))
            .collect();
        let value = |alg: &str| {
            computed
                .iter()
                .find(|(a, _)| a == alg)
                .map(|(_, v)| v.clone())
                .ok_or_else(|| ApiError::internal(format!("checksum {alg} was not computed")))
        };
        let mut kept = None;
        for (k, v) in headers {
            let Some(alg) = k.strip_prefix("x-amz-checksum-") else {
                continue;
            };
            if matches!(alg, "algorithm" | "mode" | "type") {
                continue;
            }
            if !ALGORITHMS.contains(&alg) {
                return Err(ApiError::client(
                    "InvalidRequest",
                    format!("Unsupported checksum header {k}"),
                ));
            }
            let raw = value(alg)?;
            let given = base64::engine::general_purpose::STANDARD
                .decode(v.trim())
                .ok()
                .filter(|g| g.len() == raw.len())
                .ok_or_else(|| {
                    ApiError::client(
                        "InvalidRequest",
                        format!("Value for x-amz-checksum-{alg} header is invalid."),
                    )
                })?;
            if given != raw {
                return Err(ApiError::client(
                    "BadDigest",
                    format!(
                        "The {} you specified did not match the calculated checksum.",
                        upper(alg)
                    ),
                ));
            }
            if kept.is_some() {
                return Err(ApiError::client(
                    "InvalidRequest",
                    "Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed.",
                ));
            }
            kept = Some((alg.to_string(), v.trim().to_string()));
        }
        if kept.is_none() {
            let asked = headers
                .iter()
                .find(|(k, _)| {
                    k == "x-amz-sdk-checksum-algorithm" || k == "x-amz-checksum-algorithm"
                })
                .map(|(_, v)| v.to_ascii_lowercase());
            if let Some(alg) = asked {
                if !ALGORITHMS.contains(&alg.as_str()) {
                    return Err(ApiError::client(
                        "InvalidRequest",
                        "Checksum algorithm provided is unsupported. Please try again with any of the valid types: [CRC32, CRC32C, CRC64NVME, SHA1, SHA256]",
                    ));
                }
                let v = base64::engine::general_purpose::STANDARD.encode(value(&alg)?);
                kept = Some((alg, v));
            }
        }
        Ok(kept)
    }
}

/// Checks every `x-amz-checksum-*` value the request carries against `body` (see
/// [`Checksums::finish`]).
pub fn verify(
    headers: &[(String, String)],
    body: &[u8],
) -> Result<Option<(String, String)>, ApiError> {
    let mut c = Checksums::for_request(headers);
    c.update(body);
    c.finish(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> ChunkSigner {
        // The example of AWS's "Signature Calculations for the Authorization Header:
        // Transferring Payload in Multiple Chunks" page.
        let key = cairn_iam::sigv4::signing_key(
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "20130524",
            "us-east-1",
            "s3",
        );
        ChunkSigner {
            key,
            amz_date: "20130524T000000Z".into(),
            scope: "20130524/us-east-1/s3/aws4_request".into(),
            seed: "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9".into(),
        }
    }

    fn aws_example_body() -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(b"10000;chunk-signature=ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648\r\n");
        b.extend(std::iter::repeat_n(b'a', 65536));
        b.extend_from_slice(b"\r\n400;chunk-signature=0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497\r\n");
        b.extend(std::iter::repeat_n(b'a', 1024));
        b.extend_from_slice(b"\r\n0;chunk-signature=b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9\r\n\r\n");
        b
    }

    #[test]
    fn aws_documented_chunk_chain_verifies() {
        let d = decode(&aws_example_body(), Some(&signer()), false).unwrap();
        assert_eq!(d.body.len(), 66560);
        assert!(d.body.iter().all(|b| *b == b'a'));
    }

    #[test]
    fn fed_in_any_pieces_the_decoder_gives_the_same_body() {
        let body = aws_example_body();
        for piece in [1, 2, 7, 4096, 65537] {
            let mut d = Decoder::new(Some(signer()), false);
            let mut out = Vec::new();
            for p in body.chunks(piece) {
                d.feed(p, &mut |data| {
                    out.extend_from_slice(data);
                    Ok(())
                })
                .unwrap();
            }
            assert_eq!(d.decoded(), 66560);
            d.finish().unwrap();
            assert_eq!(out.len(), 66560, "pieces of {piece}");
        }
    }

    #[test]
    fn a_changed_byte_or_a_reordered_chunk_breaks_the_chain() {
        let mut b = aws_example_body();
        b[200] = b'b';
        assert_eq!(
            decode(&b, Some(&signer()), false).unwrap_err().code,
            "SignatureDoesNotMatch"
        );
        let mut s = signer();
        s.seed = "0".repeat(64);
        assert_eq!(
            decode(&aws_example_body(), Some(&s), false)
                .unwrap_err()
                .code,
            "SignatureDoesNotMatch"
        );
    }

    #[test]
    fn truncated_bodies_are_incomplete() {
        let b = aws_example_body();
        for cut in [10, 100, 65600, b.len() - 3] {
            let e = decode(&b[..cut], Some(&signer()), false).unwrap_err();
            assert!(
                e.code == "IncompleteBody" || e.code == "SignatureDoesNotMatch",
                "{cut}: {}",
                e.code
            );
        }
    }

    #[test]
    fn only_the_last_data_chunk_may_be_small() {
        let e = decode(b"3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n", None, false).unwrap_err();
        assert_eq!(e.code, "InvalidChunkSizeError");
        assert_eq!(
            e.extra,
            vec![
                ("Chunk".to_string(), "1".to_string()),
                ("BadChunkSize".to_string(), "3".to_string())
            ]
        );
        let ok = decode(b"3\r\nabc\r\n0\r\n\r\n", None, false).unwrap();
        assert_eq!(ok.body, b"abc");
        // No final zero-length chunk.
        assert_eq!(
            decode(b"3\r\nabc\r\n", None, false).unwrap_err().code,
            "IncompleteBody"
        );
    }

    #[test]
    fn nothing_trails_a_body_that_declared_no_trailer() {
        // Unsigned lines after the last chunk would become headers nobody signed.
        let mut b = aws_example_body();
        b.truncate(b.len() - 2);
        b.extend_from_slice(b"x-amz-acl:public-read\r\n\r\n");
        assert_eq!(
            decode(&b, Some(&signer()), false).unwrap_err().code,
            "MalformedTrailerError"
        );
        let many = format!(
            "0\r\n{}\r\n",
            "x-amz-checksum-crc32:AAAAAA==\r\n".repeat(17)
        );
        assert!(decode(many.as_bytes(), None, true).is_err());
    }

    #[test]
    fn unsigned_trailer_as_botocore_sends_it() {
        let data = b"hello world";
        let crc = checksum_b64("crc32", data);
        let body = format!("b\r\nhello world\r\n0\r\nx-amz-checksum-crc32:{crc}\r\n\r\n");
        let d = decode(body.as_bytes(), None, true).unwrap();
        assert_eq!(d.body, data);
        assert_eq!(
            d.trailers,
            vec![("x-amz-checksum-crc32".into(), crc.clone())]
        );
        assert_eq!(
            verify(&d.trailers, &d.body).unwrap(),
            Some(("crc32".into(), crc))
        );
        assert_eq!(
            verify(&d.trailers, b"hello worle").unwrap_err().code,
            "BadDigest"
        );
        // A declared trailer that never comes.
        assert!(decode(b"b\r\nhello world\r\n0\r\n\r\n", None, true).is_err());
    }

    #[test]
    fn known_checksum_values() {
        // Values S3 documents / returns for "hello world".
        assert_eq!(checksum_b64("crc32", b"hello world"), "DUoRhQ==");
        assert_eq!(checksum_b64("crc32c", b"hello world"), "yZRlqg==");
        assert_eq!(
            checksum_b64("sha1", b"hello world"),
            "Kq5sNclPz7QV2+lfQIuc6R7oRu0="
        );
        assert_eq!(
            checksum_b64("sha256", b"hello world"),
            "uU0nuZNNPgilLlLX2n2r+sSE7+N6U4DukIj3rOLvzek="
        );
        assert_eq!(checksum_b64("crc64nvme", b"hello world"), "jSnVw/bqjr4=");
    }
}
