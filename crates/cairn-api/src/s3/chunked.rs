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
    let decoded = decode(&req.body, signer.as_ref(), trailer)?;
    if let Some(declared) = req.header("x-amz-decoded-content-length") {
        if declared.trim().parse::<usize>().ok() != Some(decoded.body.len()) {
            return Err(ApiError::client(
                "IncompleteBody",
                "You did not provide the number of bytes specified by the Content-Length HTTP header",
            ));
        }
    } else {
        return Err(S3Error::MissingContentLength.into());
    }
    if trailer {
        let declared: Vec<String> = req
            .header("x-amz-trailer")
            .into_iter()
            .flat_map(|t| t.split(','))
            .map(|s| s.trim().to_ascii_lowercase())
            .filter(|s| !s.is_empty())
            .collect();
        for (name, _) in &decoded.trailers {
            // Trailers carry checksums; any other header must be sent (and signed) as one.
            if !declared.contains(name) || !name.starts_with("x-amz-checksum-") {
                return Err(ApiError::client(
                    "MalformedTrailerError",
                    "The request contained trailing data that was not well-formed or did not conform to our published schema.",
                ));
            }
        }
    }
    req.body = bytes::Bytes::from(decoded.body);
    for (k, v) in decoded.trailers {
        if req.header(&k).is_none() {
            req.headers.push((k, v));
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

/// What a signed chunk chain is checked against: the request's signing key, timestamp and
/// scope, and the seed (header) signature that starts the chain.
pub struct ChunkSigner {
    pub key: Vec<u8>,
    pub amz_date: String,
    pub scope: String,
    pub seed: String,
}

/// The body without framing, and the trailing headers (names lower-case).
#[derive(Debug)]
pub struct Decoded {
    pub body: Vec<u8>,
    pub trailers: Vec<(String, String)>,
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

/// Reads one CRLF-terminated line starting at `*pos`.
fn line<'a>(body: &'a [u8], pos: &mut usize) -> Result<&'a [u8], ApiError> {
    let rest = &body[*pos..];
    let end = rest
        .windows(2)
        .position(|w| w == b"\r\n")
        .ok_or_else(incomplete)?;
    *pos += end + 2;
    Ok(&rest[..end])
}

/// Decodes an aws-chunked body. `signer` is present for the signed forms (every chunk, and the
/// trailer when `trailer` is set, must carry a valid chained signature); `trailer` says a
/// trailer section is declared (`x-amz-trailer`).
pub fn decode(
    body: &[u8],
    signer: Option<&ChunkSigner>,
    trailer: bool,
) -> Result<Decoded, ApiError> {
    let mut pos = 0;
    let mut out = Vec::with_capacity(body.len());
    let mut prev = signer.map(|s| s.seed.clone()).unwrap_or_default();
    let mut chunk_no = 0usize;
    let mut short_chunk: Option<(usize, usize)> = None;
    loop {
        let header = line(body, &mut pos)?;
        let header = std::str::from_utf8(header).map_err(|_| malformed_chunk("chunk header"))?;
        let (size, ext) = match header.split_once(';') {
            Some((s, e)) => (s, Some(e)),
            None => (header, None),
        };
        let size = usize::from_str_radix(size.trim(), 16)
            .ok()
            .filter(|n| *n <= 1 << 40)
            .ok_or_else(|| malformed_chunk("chunk size"))?;
        let data = body.get(pos..pos + size).ok_or_else(incomplete)?;
        pos += size;
        if let Some(s) = signer {
            let given = ext
                .and_then(|e| e.trim().strip_prefix("chunk-signature="))
                .ok_or_else(chunk_mismatch)?;
            let sts = format!(
                "AWS4-HMAC-SHA256-PAYLOAD\n{}\n{}\n{}\n{}\n{}",
                s.amz_date,
                s.scope,
                prev,
                EMPTY_SHA256,
                hex::encode(Sha256::digest(data))
            );
            let expected = hmac_hex(&s.key, &sts);
            if !same(&expected, given) {
                return Err(chunk_mismatch());
            }
            prev = expected;
        }
        out.extend_from_slice(data);
        if size == 0 {
            break;
        }
        // Only the last chunk with data may be smaller than 8 KiB (B10).
        if let Some((n, small)) = short_chunk.take() {
            return Err(ApiError::client(
                "InvalidChunkSizeError",
                "Only the last chunk is allowed to have a size less than 8192 bytes",
            )
            .with("Chunk", n.to_string())
            .with("BadChunkSize", small.to_string()));
        }
        chunk_no += 1;
        if size < MIN_CHUNK {
            short_chunk = Some((chunk_no, size));
        }
        if body.get(pos..pos + 2) != Some(b"\r\n") {
            return Err(if pos + 2 > body.len() {
                incomplete()
            } else {
                malformed_chunk("chunk data is not followed by CRLF")
            });
        }
        pos += 2;
    }
    let mut trailers = Vec::new();
    let mut trailer_sig = None;
    let mut canonical = String::new();
    loop {
        if pos >= body.len() {
            // A body may end right after the last chunk's header when nothing trails.
            if trailer {
                return Err(incomplete());
            }
            break;
        }
        let l = line(body, &mut pos)?;
        if l.is_empty() {
            break;
        }
        let l = std::str::from_utf8(l).map_err(|_| malformed_trailer())?;
        let (name, value) = l.split_once(':').ok_or_else(malformed_trailer)?;
        let name = name.trim().to_ascii_lowercase();
        let value = value.trim().to_string();
        if name == "x-amz-trailer-signature" {
            trailer_sig = Some(value);
            continue;
        }
        canonical.push_str(&format!("{name}:{value}\n"));
        trailers.push((name, value));
    }
    if pos != body.len() {
        return Err(malformed_chunk("data after the final chunk"));
    }
    if trailer && trailers.is_empty() {
        return Err(malformed_trailer());
    }
    if let (Some(s), true) = (signer, trailer) {
        let given = trailer_sig.ok_or_else(chunk_mismatch)?;
        let sts = format!(
            "AWS4-HMAC-SHA256-TRAILER\n{}\n{}\n{}\n{}",
            s.amz_date,
            s.scope,
            prev,
            hex::encode(Sha256::digest(canonical.as_bytes()))
        );
        if !same(&hmac_hex(&s.key, &sts), &given) {
            return Err(chunk_mismatch());
        }
    }
    Ok(Decoded {
        body: out,
        trailers,
    })
}

/// The checksum algorithms S3 accepts, by their header suffix.
pub const ALGORITHMS: &[&str] = &["crc32", "crc32c", "crc64nvme", "sha1", "sha256"];

const CRC64_NVME: crc::Crc<u64> = crc::Crc::<u64>::new(&crc::CRC_64_NVME);

/// The raw checksum of `data` under `alg` (one of [`ALGORITHMS`]).
pub fn checksum(alg: &str, data: &[u8]) -> Vec<u8> {
    match alg {
        "crc32" => crc32fast::hash(data).to_be_bytes().to_vec(),
        "crc32c" => crc32c::crc32c(data).to_be_bytes().to_vec(),
        "crc64nvme" => CRC64_NVME.checksum(data).to_be_bytes().to_vec(),
        "sha1" => {
            use sha1::Digest as _;
            sha1::Sha1::digest(data).to_vec()
        }
        _ => Sha256::digest(data).to_vec(),
    }
}

/// The base64 checksum of `data` under `alg`.
pub fn checksum_b64(alg: &str, data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(checksum(alg, data))
}

fn upper(alg: &str) -> String {
    alg.to_ascii_uppercase()
}

/// Checks every `x-amz-checksum-*` value the request carries (as a header or, after decoding,
/// a trailer) against `body`, and returns the one to keep with the object, if any: `(alg,
/// base64 value)`. A requested algorithm (`x-amz-sdk-checksum-algorithm` /
/// `x-amz-checksum-algorithm`) without a value is computed here.
pub fn verify(
    headers: &[(String, String)],
    body: &[u8],
) -> Result<Option<(String, String)>, ApiError> {
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
        let raw = checksum(alg, body);
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
            .find(|(k, _)| k == "x-amz-sdk-checksum-algorithm" || k == "x-amz-checksum-algorithm")
            .map(|(_, v)| v.to_ascii_lowercase());
        if let Some(alg) = asked {
            if !ALGORITHMS.contains(&alg.as_str()) {
                return Err(ApiError::client(
                    "InvalidRequest",
                    "Checksum algorithm provided is unsupported. Please try again with any of the valid types: [CRC32, CRC32C, CRC64NVME, SHA1, SHA256]",
                ));
            }
            let value = checksum_b64(&alg, body);
            kept = Some((alg, value));
        }
    }
    Ok(kept)
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
