//! AWS Signature Version 4 verification (trust-and-testing §4.1).
//!
//! Flow for a server: [`parse`] the request's authorization (header or query) → look up the
//! secret of [`Authorization::access_key_id`] → [`verify`]. Errors carry what the client did
//! wrong; [`AuthError::code`] maps them to the error code and HTTP status of the protocol.

use aws_lc_rs::hmac;
use chrono::{DateTime, Duration, TimeZone, Utc};
use sha2::{Digest, Sha256};

pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
pub const X_AMZ_DATE: &str = "x-amz-date";
pub const X_AMZ_CONTENT_SHA256: &str = "x-amz-content-sha256";
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
/// Largest accepted difference between the request's time and ours.
pub const MAX_SKEW: Duration = Duration::minutes(15);
/// Longest presigned URL lifetime (the signing key is valid for 7 days).
pub const MAX_PRESIGN_SECONDS: i64 = 604_800;

/// The parts of an HTTP request that signing covers, as received.
pub struct Request<'a> {
    pub method: &'a str,
    /// Raw path, percent-encoded as sent (without the query).
    pub path: &'a str,
    /// Raw query string, without `?`.
    pub query: &'a str,
    /// Header names in any case; repeated names allowed.
    pub headers: &'a [(String, String)],
    /// Hex SHA-256 of the body.
    pub body_sha256: &'a str,
    /// S3 rules: the path is used as sent, and `x-amz-content-sha256` gives the payload hash.
    pub s3: bool,
}

impl Request<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The parsed authorization of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub access_key_id: String,
    pub date: String,
    pub region: String,
    pub service: String,
    pub signed_headers: Vec<String>,
    pub signature: String,
    /// `X-Amz-Date` (header or query).
    pub amz_date: String,
    /// Presigned: lifetime in seconds.
    pub expires: Option<i64>,
}

impl Authorization {
    pub fn scope(&self) -> String {
        format!(
            "{}/{}/{}/aws4_request",
            self.date, self.region, self.service
        )
    }
    pub fn presigned(&self) -> bool {
        self.expires.is_some()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("Request is missing Authentication Token")]
    Missing,
    #[error("{0}")]
    Malformed(String),
    /// The credential scope names the wrong service or terminator.
    #[error("{0}")]
    BadScope(String),
    /// The credential scope names a region this server does not serve.
    #[error("Credential should be scoped to a valid region, not '{0}'.")]
    BadRegion(String),
    #[error("The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.")]
    SignatureMismatch,
    #[error("Signature expired: {request} is now earlier than {limit} ({now} - 15 min.)")]
    Skewed {
        request: String,
        limit: String,
        now: String,
    },
    #[error("Request has expired")]
    PresignExpired,
    #[error("Request is not yet valid")]
    PresignNotYetValid,
    #[error("X-Amz-Expires must be between 1 and 604800 seconds")]
    BadExpires,
    #[error("There were headers present in the request which were not signed: {0}")]
    UnsignedHeader(String),
    #[error("Missing required header for this request: x-amz-content-sha256")]
    MissingContentSha256,
    #[error("The provided 'x-amz-content-sha256' header does not match what was computed.")]
    ContentSha256Mismatch,
}

/// Wire protocol families, which name the same failures differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// awsJson 1.1 (CloudTrail, KMS, DynamoDB).
    Json,
    /// REST-XML (S3).
    S3,
    /// Query (IAM, STS).
    Query,
}

impl AuthError {
    /// The AWS error code and HTTP status for this failure in `p` (trust-and-testing §3.5).
    pub fn code(&self, p: Protocol) -> (&'static str, u16) {
        use AuthError::*;
        match (self, p) {
            (Missing, Protocol::S3) => ("AccessDenied", 403),
            (Missing, _) => ("MissingAuthenticationToken", 403),
            (Malformed(_), Protocol::S3) => ("AuthorizationHeaderMalformed", 400),
            (Malformed(_), _) => ("IncompleteSignature", 400),
            (BadScope(_), Protocol::S3) => ("AuthorizationHeaderMalformed", 400),
            (BadScope(_), Protocol::Json) => ("InvalidSignatureException", 400),
            (BadScope(_), Protocol::Query) => ("SignatureDoesNotMatch", 403),
            (BadRegion(_), Protocol::S3) => ("AuthorizationHeaderMalformed", 400),
            (BadRegion(_), Protocol::Json) => ("InvalidSignatureException", 400),
            (BadRegion(_), Protocol::Query) => ("SignatureDoesNotMatch", 403),
            (SignatureMismatch, Protocol::S3) => ("SignatureDoesNotMatch", 403),
            (SignatureMismatch, Protocol::Json) => ("InvalidSignatureException", 400),
            (SignatureMismatch, Protocol::Query) => ("SignatureDoesNotMatch", 403),
            (Skewed { .. }, Protocol::S3) => ("RequestTimeTooSkewed", 403),
            (Skewed { .. }, Protocol::Json) => ("InvalidSignatureException", 400),
            (Skewed { .. }, Protocol::Query) => ("RequestExpired", 400),
            (PresignExpired | PresignNotYetValid, _) => ("AccessDenied", 403),
            (BadExpires, Protocol::S3) => ("AuthorizationQueryParametersError", 400),
            (BadExpires, _) => ("IncompleteSignature", 400),
            (UnsignedHeader(_), Protocol::S3) => ("AccessDenied", 403),
            (UnsignedHeader(_), _) => ("IncompleteSignature", 400),
            (MissingContentSha256, _) => ("InvalidRequest", 400),
            (ContentSha256Mismatch, _) => ("XAmzContentSHA256Mismatch", 400),
        }
    }
}

fn malformed(m: impl Into<String>) -> AuthError {
    AuthError::Malformed(m.into())
}

fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (
                (b[i + 1] as char).to_digit(16),
                (b[i + 2] as char).to_digit(16),
            ) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// RFC 3986 encoding as SigV4 wants it: unreserved characters kept, everything else `%XX`
/// (uppercase), `/` kept when `keep_slash`.
fn uri_encode(bytes: &[u8], keep_slash: bool) -> String {
    let mut out = String::with_capacity(bytes.len() * 3);
    for &c in bytes {
        if c.is_ascii_alphanumeric()
            || matches!(c, b'-' | b'_' | b'.' | b'~')
            || (keep_slash && c == b'/')
        {
            out.push(c as char);
        } else {
            out.push_str(&format!("%{c:02X}"));
        }
    }
    out
}

/// RFC 3986 §5.2.4 dot-segment removal, also collapsing empty segments (what AWS services
/// other than S3 sign).
fn normalize_path(path: &str) -> String {
    if path.is_empty() {
        return "/".into();
    }
    let mut out: Vec<&str> = vec![];
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let first = if path.starts_with('/') { "/" } else { "" };
    let last = if path.ends_with('/') && !out.is_empty() {
        "/"
    } else {
        ""
    };
    format!("{first}{}{last}", out.join("/"))
}

fn canonical_uri(req: &Request) -> String {
    if req.s3 {
        if req.path.is_empty() {
            "/".into()
        } else {
            req.path.to_string()
        }
    } else {
        uri_encode(normalize_path(req.path).as_bytes(), true)
    }
}

fn canonical_query(query: &str, skip_signature: bool) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                uri_encode(&percent_decode(k), false),
                uri_encode(&percent_decode(v), false),
            )
        })
        .filter(|(k, _)| !(skip_signature && k == "X-Amz-Signature"))
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn query_param(query: &str, name: &str) -> Result<Option<String>, AuthError> {
    let mut found = None;
    for p in query.split('&') {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        if percent_decode(k) == name.as_bytes() {
            if found.is_some() {
                return Err(malformed(format!("duplicate query parameter {name}")));
            }
            found = Some(
                String::from_utf8(percent_decode(v))
                    .map_err(|_| malformed(format!("{name} is not UTF-8")))?,
            );
        }
    }
    Ok(found)
}

fn parse_credential(cred: &str) -> Result<(String, String, String, String), AuthError> {
    let parts: Vec<&str> = cred.split('/').collect();
    if parts.len() == 5 && parts[4] != "aws4_request" {
        return Err(AuthError::BadScope(format!(
            "Credential should be scoped with a valid terminator: 'aws4_request', not '{}'.",
            parts[4]
        )));
    }
    if parts.len() != 5 || parts.iter().any(|p| p.is_empty()) {
        return Err(malformed(format!(
            "Credential should be scoped with a valid terminator: 'aws4_request', not '{cred}'"
        )));
    }
    Ok((
        parts[0].into(),
        parts[1].into(),
        parts[2].into(),
        parts[3].into(),
    ))
}

/// Reads the request's SigV4 authorization from the `Authorization` header or the query.
pub fn parse(req: &Request) -> Result<Authorization, AuthError> {
    if let Some(h) = req.header("authorization") {
        let rest = h
            .strip_prefix(ALGORITHM)
            .ok_or_else(|| malformed("Unsupported authorization algorithm"))?;
        let mut cred = None;
        let mut signed = None;
        let mut sig = None;
        for part in rest.split(',') {
            let part = part.trim();
            if let Some(v) = part.strip_prefix("Credential=") {
                cred = Some(v);
            } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
                signed = Some(v);
            } else if let Some(v) = part.strip_prefix("Signature=") {
                sig = Some(v);
            } else if !part.is_empty() {
                return Err(malformed(format!("Authorization header requires 'Credential', 'SignedHeaders' and 'Signature'; got '{part}'")));
            }
        }
        let (Some(cred), Some(signed), Some(sig)) = (cred, signed, sig) else {
            return Err(malformed("Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' parameters"));
        };
        let (ak, date, region, service) = parse_credential(cred)?;
        let amz_date = req
            .header(X_AMZ_DATE)
            .ok_or_else(|| malformed("Authorization requires the X-Amz-Date header"))?
            .to_string();
        return Ok(Authorization {
            access_key_id: ak,
            date,
            region,
            service,
            signed_headers: signed.split(';').map(str::to_string).collect(),
            signature: sig.to_string(),
            amz_date,
            expires: None,
        });
    }
    let Some(alg) = query_param(req.query, "X-Amz-Algorithm")? else {
        return Err(AuthError::Missing);
    };
    if alg != ALGORITHM {
        return Err(malformed(
            "X-Amz-Algorithm only supports \"AWS4-HMAC-SHA256\"",
        ));
    }
    let get = |n: &str| -> Result<String, AuthError> {
        query_param(req.query, n)?.ok_or_else(|| {
            malformed(format!(
                "Query-string authentication requires the {n} parameter"
            ))
        })
    };
    let (ak, date, region, service) = parse_credential(&get("X-Amz-Credential")?)?;
    let expires: i64 = get("X-Amz-Expires")?
        .parse()
        .map_err(|_| AuthError::BadExpires)?;
    if !(1..=MAX_PRESIGN_SECONDS).contains(&expires) {
        return Err(AuthError::BadExpires);
    }
    Ok(Authorization {
        access_key_id: ak,
        date,
        region,
        service,
        signed_headers: get("X-Amz-SignedHeaders")?
            .split(';')
            .map(str::to_string)
            .collect(),
        signature: get("X-Amz-Signature")?,
        amz_date: get("X-Amz-Date")?,
        expires: Some(expires),
    })
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data)
        .as_ref()
        .to_vec()
}

/// The signing key for a scope: HMAC chain date → region → service → `aws4_request`.
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Vec<u8> {
    let k = hmac_sha256(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k = hmac_sha256(&k, region.as_bytes());
    let k = hmac_sha256(&k, service.as_bytes());
    hmac_sha256(&k, b"aws4_request")
}

/// Scopes whose signing key is kept: a key changes only with its secret or its day, and
/// deriving it is four HMACs per request. Past this many, the cache starts again empty.
const KEY_CACHE_ENTRIES: usize = 4096;

type KeyCache = std::collections::HashMap<(String, String), (Vec<u8>, hmac::Key)>;

/// The HMAC key of [`signing_key`] for `secret` under `auth`'s access key id and `scope`
/// (its [`Authorization::scope`]), derived once per (key, scope). An entry holds the secret
/// it was derived from and is used only when that equals (in constant time) the secret
/// given now: a rotated secret derives anew.
fn cached_signing_key(auth: &Authorization, scope: &str, secret: &str) -> hmac::Key {
    static CACHE: std::sync::OnceLock<std::sync::Mutex<KeyCache>> = std::sync::OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let id = (auth.access_key_id.clone(), scope.to_string());
    {
        let c = cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((held, key)) = c.get(&id) {
            if aws_lc_rs::constant_time::verify_slices_are_equal(held, secret.as_bytes()).is_ok() {
                return key.clone();
            }
        }
    }
    let key = hmac::Key::new(
        hmac::HMAC_SHA256,
        &signing_key(secret, &auth.date, &auth.region, &auth.service),
    );
    let mut c = cache.lock().unwrap_or_else(|e| e.into_inner());
    if c.len() >= KEY_CACHE_ENTRIES {
        c.clear();
    }
    c.insert(id, (secret.as_bytes().to_vec(), key.clone()));
    key
}

/// The canonical request of spec §4.1 for `auth`'s signed headers.
pub fn canonical_request(req: &Request, auth: &Authorization) -> Result<String, AuthError> {
    let payload = if req.s3 {
        match (req.header(X_AMZ_CONTENT_SHA256), auth.presigned()) {
            (Some(v), _) => v,
            (None, true) => UNSIGNED_PAYLOAD,
            (None, false) => return Err(AuthError::MissingContentSha256),
        }
    } else {
        // Other services sign the hash of the body as received: a declared hash is never
        // trusted in its place (an unsigned header naming another body's hash would let a
        // signed request carry any body).
        req.body_sha256
    };
    // Written into one buffer (this runs for every request).
    let mut out = String::with_capacity(512);
    out.push_str(&req.method.to_ascii_uppercase());
    out.push('\n');
    out.push_str(&canonical_uri(req));
    out.push('\n');
    out.push_str(&canonical_query(req.query, auth.presigned()));
    out.push('\n');
    for name in &auth.signed_headers {
        // `name:v1,v2\n`, each value's runs of whitespace as one space, trimmed.
        out.push_str(name);
        out.push(':');
        let mut values = 0;
        for (_, v) in req
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        {
            if values > 0 {
                out.push(',');
            }
            values += 1;
            for (i, word) in v.split_whitespace().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                out.push_str(word);
            }
        }
        if values == 0 {
            return Err(malformed(format!("signed header {name} is not present")));
        }
        out.push('\n');
    }
    out.push('\n');
    for (i, name) in auth.signed_headers.iter().enumerate() {
        if i > 0 {
            out.push(';');
        }
        out.push_str(name);
    }
    out.push('\n');
    out.push_str(payload);
    Ok(out)
}

/// Whether `s` is a hex SHA-256 (a declared payload hash, as opposed to a payload mode such
/// as `UNSIGNED-PAYLOAD`).
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `YYYYMMDDTHHMMSSZ` (ISO 8601 basic, UTC), exactly. Read by hand: chrono's format-string
/// parser was ~1% of a server's CPU, and every signed request has one.
fn parse_amz_date(s: &str) -> Result<DateTime<Utc>, AuthError> {
    let bad = || malformed(format!("invalid X-Amz-Date {s:?}"));
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| -> Result<u32, AuthError> {
        b[r].iter().try_fold(0u32, |n, &c| {
            c.is_ascii_digit()
                .then(|| n * 10 + u32::from(c - b'0'))
                .ok_or_else(bad)
        })
    };
    let date = chrono::NaiveDate::from_ymd_opt(num(0..4)? as i32, num(4..6)?, num(6..8)?)
        .ok_or_else(bad)?;
    let t = date
        .and_hms_opt(num(9..11)?, num(11..13)?, num(13..15)?)
        .ok_or_else(bad)?;
    Ok(Utc.from_utc_datetime(&t))
}

/// Checks the request's signature with `secret` at time `now`: the scope, the required
/// signed headers, the clock (±15 min, or the presigned lifetime), the signature itself
/// (compared in constant time), then the payload hash against the body received.
pub fn verify(
    req: &Request,
    auth: &Authorization,
    secret: &str,
    now: DateTime<Utc>,
) -> Result<(), AuthError> {
    check_headers(req, auth, now)?;
    check_signature(req, auth, secret)?;
    check_payload(req, auth)
}

/// What can be checked without the secret or the body: the scope date, the headers that
/// must be signed, the clock.
pub fn check_headers(
    req: &Request,
    auth: &Authorization,
    now: DateTime<Utc>,
) -> Result<(), AuthError> {
    let t = parse_amz_date(&auth.amz_date)?;
    if auth.amz_date.get(..8) != Some(auth.date.as_str()) {
        return Err(AuthError::SignatureMismatch);
    }
    // `host` must always be signed; `x-amz-date` too, unless it travels in a presigned query.
    for required in ["host", X_AMZ_DATE] {
        let needed = !auth.presigned() || required == "host";
        if needed && !auth.signed_headers.iter().any(|h| h == required) {
            return Err(AuthError::UnsignedHeader(required.into()));
        }
    }
    if req.s3 {
        // Every x-amz-* header sent must be signed (an unsigned copy source or tagging header
        // would change the request's meaning).
        for (k, _) in req.headers {
            let k = k.to_ascii_lowercase();
            if k.starts_with("x-amz-")
                && !auth.signed_headers.contains(&k)
                && !(auth.presigned() && k == X_AMZ_CONTENT_SHA256)
            {
                return Err(AuthError::UnsignedHeader(k));
            }
        }
    }
    match auth.expires {
        Some(exp) => {
            if now + MAX_SKEW < t {
                return Err(AuthError::PresignNotYetValid);
            }
            if now > t + Duration::seconds(exp) {
                return Err(AuthError::PresignExpired);
            }
        }
        None => {
            if (now - t).abs() > MAX_SKEW {
                let f = |d: DateTime<Utc>| d.format("%Y%m%dT%H%M%SZ").to_string();
                return Err(AuthError::Skewed {
                    request: f(t),
                    limit: f(now - MAX_SKEW),
                    now: f(now),
                });
            }
        }
    }
    Ok(())
}

/// The signature over the canonical request, compared in constant time. For S3 the payload
/// hash signed is the declared one, so this needs no body; elsewhere it is the body's.
pub fn check_signature(req: &Request, auth: &Authorization, secret: &str) -> Result<(), AuthError> {
    if req.s3 && !auth.presigned() && req.header(X_AMZ_CONTENT_SHA256).is_none() {
        return Err(AuthError::MissingContentSha256);
    }
    let cr = canonical_request(req, auth)?;
    let scope = auth.scope();
    let sts = string_to_sign(&auth.amz_date, &scope, &cr);
    let key = cached_signing_key(auth, &scope, secret);
    let tag = hmac::sign(&key, sts.as_bytes());
    let expected = hex32(
        tag.as_ref()
            .try_into()
            .map_err(|_| AuthError::SignatureMismatch)?,
    );
    // The signature as given, lowercased on the stack: any other length is refused here (the
    // length is no secret).
    let provided: &[u8; 64] = auth
        .signature
        .as_bytes()
        .try_into()
        .map_err(|_| AuthError::SignatureMismatch)?;
    let provided = provided.to_ascii_lowercase();
    aws_lc_rs::constant_time::verify_slices_are_equal(&expected, &provided)
        .map_err(|_| AuthError::SignatureMismatch)
}

/// Lowercase hex of the SHA-256 of `data` (signed bodies' hashes, session tokens' digests:
/// `hex::encode` goes through an iterator of chars, several times slower).
pub fn sha256_hex(data: &[u8]) -> String {
    // Hex digits are ASCII: never the empty fallback.
    String::from_utf8(hex32(&Sha256::digest(data).into()).to_vec()).unwrap_or_default()
}

/// Lowercase hex of a 32-byte value (a SHA-256 digest, an HMAC-SHA256 tag), on the stack:
/// this runs twice per request. (Not `hex::encode_to_slice`: its error path, unreachable
/// for these sizes, would still have to produce some bytes a signature is compared with.)
fn hex32(d: &[u8; 32]) -> [u8; 64] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 64];
    for (i, b) in d.iter().enumerate() {
        out[2 * i] = DIGITS[(b >> 4) as usize];
        out[2 * i + 1] = DIGITS[(b & 0x0f) as usize];
    }
    out
}

/// The string to sign of spec §4.1: algorithm, request time, scope, hash of the canonical
/// request.
fn string_to_sign(amz_date: &str, scope: &str, canonical: &str) -> String {
    let hash = hex32(&Sha256::digest(canonical.as_bytes()).into());
    let mut sts =
        String::with_capacity(ALGORITHM.len() + amz_date.len() + scope.len() + hash.len() + 3);
    for part in [ALGORITHM, "\n", amz_date, "\n", scope, "\n"] {
        sts.push_str(part);
    }
    // Hex digits are ASCII.
    sts.extend(hash.iter().map(|&b| b as char));
    sts
}

/// Whether [`check_signature`] can run before the body is read: S3 signs the declared
/// payload hash (or a payload mode), other services sign the body's own hash.
pub fn signature_needs_body(req: &Request) -> bool {
    !req.s3
}

/// The declared payload hash against the body received.
pub fn check_payload(req: &Request, auth: &Authorization) -> Result<(), AuthError> {
    if req.s3 {
        let declared = match (req.header(X_AMZ_CONTENT_SHA256), auth.presigned()) {
            (Some(d), _) => d,
            (None, true) => UNSIGNED_PAYLOAD,
            (None, false) => return Err(AuthError::MissingContentSha256),
        };
        if is_sha256_hex(declared) && !declared.eq_ignore_ascii_case(req.body_sha256) {
            return Err(AuthError::ContentSha256Mismatch);
        }
    } else if let Some(declared) = req.header(X_AMZ_CONTENT_SHA256) {
        // A declared hash must be the received body's (clients that send one sign it).
        if !declared.eq_ignore_ascii_case(req.body_sha256) {
            return Err(AuthError::SignatureMismatch);
        }
    }
    Ok(())
}

/// Signs a request (header form) for clients cairn itself runs (`cairn trail flush`,
/// `cairn status`, the load generator): returns the headers to add — `x-amz-date`,
/// `x-amz-content-sha256` for S3, and `authorization`. `req.headers` must already hold `host`.
pub fn sign(
    req: &Request,
    access_key_id: &str,
    secret: &str,
    region: &str,
    service: &str,
    now: DateTime<Utc>,
) -> Vec<(String, String)> {
    let amz_date = amz_date_of(now);
    let mut headers: Vec<(String, String)> = Vec::with_capacity(req.headers.len() + 2);
    headers.extend_from_slice(req.headers);
    headers.push((X_AMZ_DATE.into(), amz_date.clone()));
    let mut added = vec![(X_AMZ_DATE.to_string(), amz_date.clone())];
    if req.s3 {
        headers.push((X_AMZ_CONTENT_SHA256.into(), req.body_sha256.into()));
        added.push((X_AMZ_CONTENT_SHA256.into(), req.body_sha256.into()));
    }
    let mut names: Vec<String> = headers
        .iter()
        .map(|(k, _)| k.to_ascii_lowercase())
        .collect();
    names.sort();
    names.dedup();
    let auth = Authorization {
        access_key_id: access_key_id.into(),
        date: amz_date[..8].into(),
        region: region.into(),
        service: service.into(),
        signed_headers: names,
        signature: String::new(),
        amz_date,
        expires: None,
    };
    let signed_req = Request {
        headers: &headers,
        ..*req
    };
    let cr = canonical_request(&signed_req, &auth).unwrap_or_default();
    let scope = auth.scope();
    let sts = string_to_sign(&auth.amz_date, &scope, &cr);
    let key = cached_signing_key(&auth, &scope, secret);
    let tag = hmac::sign(&key, sts.as_bytes());
    let sig = hex32(tag.as_ref().try_into().unwrap_or(&[0u8; 32]));
    let mut value = String::with_capacity(256);
    for part in [
        ALGORITHM,
        " Credential=",
        access_key_id,
        "/",
        &scope,
        ", SignedHeaders=",
    ] {
        value.push_str(part);
    }
    for (i, name) in auth.signed_headers.iter().enumerate() {
        if i > 0 {
            value.push(';');
        }
        value.push_str(name);
    }
    value.push_str(", Signature=");
    value.extend(sig.iter().map(|&b| b as char));
    added.push(("authorization".into(), value));
    added
}

/// `YYYYMMDDTHHMMSSZ` (ISO 8601 basic, UTC) of `now`, written by hand: chrono's format
/// string parser was most of a signing client's formatting.
fn amz_date_of(now: DateTime<Utc>) -> String {
    use chrono::{Datelike, Timelike};
    fn digits(s: &mut String, n: u32, width: u32) {
        for p in (0..width).rev() {
            s.push(char::from(b'0' + (n / 10u32.pow(p) % 10) as u8));
        }
    }
    let mut s = String::with_capacity(16);
    digits(&mut s, now.year().clamp(0, 9999) as u32, 4);
    digits(&mut s, now.month(), 2);
    digits(&mut s, now.day(), 2);
    s.push('T');
    digits(&mut s, now.hour(), 2);
    digits(&mut s, now.minute(), 2);
    digits(&mut s, now.second(), 2);
    s.push('Z');
    s
}

#[cfg(test)]
mod sign_tests {
    use super::*;

    #[test]
    fn a_signed_request_verifies() {
        let body = b"{}";
        let body_sha = hex::encode(Sha256::digest(body));
        let headers = vec![
            ("host".to_string(), "127.0.0.1:4566".to_string()),
            ("x-amz-target".to_string(), "X.Y".to_string()),
        ];
        let now = Utc::now();
        let base = Request {
            method: "POST",
            path: "/",
            query: "",
            headers: &headers,
            body_sha256: &body_sha,
            s3: false,
        };
        let mut all = headers.clone();
        all.extend(sign(
            &base,
            "AKIDEXAMPLE",
            "secret",
            "us-east-1",
            "cloudtrail",
            now,
        ));
        let req = Request {
            headers: &all,
            ..base
        };
        let auth = parse(&req).unwrap();
        verify(&req, &auth, "secret", now).unwrap();
        // The signing key cached for this key id and scope is only used with its own
        // secret: a rotated (or guessed) secret never verifies through it, either way round.
        assert_eq!(
            verify(&req, &auth, "other", now),
            Err(AuthError::SignatureMismatch)
        );
        verify(&req, &auth, "secret", now).unwrap();
        assert_eq!(
            verify(&req, &auth, "secreT", now),
            Err(AuthError::SignatureMismatch)
        );
        // The signature is hex in either case, and nothing but its 64 digits matches.
        let with = |sig: String| Authorization {
            signature: sig,
            ..auth.clone()
        };
        verify(
            &req,
            &with(auth.signature.to_ascii_uppercase()),
            "secret",
            now,
        )
        .unwrap();
        for bad in [
            format!("{}0", auth.signature),
            auth.signature[..63].to_string(),
            String::new(),
            format!("{}g", &auth.signature[..63]),
        ] {
            assert_eq!(
                verify(&req, &with(bad), "secret", now),
                Err(AuthError::SignatureMismatch)
            );
        }
    }

    #[test]
    fn hex32_is_lowercase_hex() {
        let d: [u8; 32] = std::array::from_fn(|i| (i as u8).wrapping_mul(37));
        assert_eq!(&hex32(&d)[..], hex::encode(d).as_bytes());
        assert_eq!(&hex32(&[0xff; 32])[..], "f".repeat(64).as_bytes());
    }

    #[test]
    fn sha256_hex_is_the_hex_of_the_digest() {
        for body in [&b""[..], b"{\"Name\":\"t\"}", &[0xffu8; 1000][..]] {
            assert_eq!(sha256_hex(body), hex::encode(Sha256::digest(body)));
        }
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}

#[cfg(test)]
mod canonical_tests {
    use super::*;

    fn auth(signed: &[&str]) -> Authorization {
        Authorization {
            access_key_id: "AKIDEXAMPLE".into(),
            date: "20150830".into(),
            region: "us-east-1".into(),
            service: "iam".into(),
            signed_headers: signed.iter().map(|h| h.to_string()).collect(),
            signature: String::new(),
            amz_date: "20150830T123600Z".into(),
            expires: None,
        }
    }

    /// The example of AWS's "Create a canonical request" documentation, byte for byte.
    #[test]
    fn the_documented_canonical_request() {
        let headers = vec![
            (
                "Content-Type".to_string(),
                "application/x-www-form-urlencoded; charset=utf-8".to_string(),
            ),
            ("Host".to_string(), "iam.amazonaws.com".to_string()),
            ("X-Amz-Date".to_string(), "20150830T123600Z".to_string()),
        ];
        let empty = hex::encode(Sha256::digest(b""));
        let req = Request {
            method: "get",
            path: "/",
            query: "Version=2010-05-08&Action=ListUsers",
            headers: &headers,
            body_sha256: &empty,
            s3: false,
        };
        assert_eq!(
            canonical_request(&req, &auth(&["content-type", "host", "x-amz-date"])).unwrap(),
            "GET\n/\nAction=ListUsers&Version=2010-05-08\n\
             content-type:application/x-www-form-urlencoded; charset=utf-8\n\
             host:iam.amazonaws.com\nx-amz-date:20150830T123600Z\n\n\
             content-type;host;x-amz-date\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    /// As AWS's test suite (get-header-key-duplicate, get-header-value-trim): repeated
    /// headers joined by commas in the order sent, runs of whitespace as one space, trimmed;
    /// a signed header that is missing is refused.
    #[test]
    fn repeated_headers_and_whitespace() {
        let headers = vec![
            ("host".to_string(), "example.amazonaws.com".to_string()),
            ("My-Header1".to_string(), "value2".to_string()),
            ("my-header1".to_string(), "  value1 ".to_string()),
            ("My-Header2".to_string(), "\"a   b \t  c\"".to_string()),
            ("x-amz-date".to_string(), "20150830T123600Z".to_string()),
        ];
        let empty = hex::encode(Sha256::digest(b""));
        let req = Request {
            method: "GET",
            path: "/",
            query: "",
            headers: &headers,
            body_sha256: &empty,
            s3: false,
        };
        let signed = ["host", "my-header1", "my-header2", "x-amz-date"];
        assert_eq!(
            canonical_request(&req, &auth(&signed)).unwrap(),
            format!(
                "GET\n/\n\nhost:example.amazonaws.com\nmy-header1:value2,value1\n\
                 my-header2:\"a b c\"\nx-amz-date:20150830T123600Z\n\n{}\n{empty}",
                signed.join(";")
            )
        );
        assert!(matches!(
            canonical_request(&req, &auth(&["host", "my-header3"])),
            Err(AuthError::Malformed(_))
        ));
    }
}

#[cfg(test)]
mod body_tests {
    use super::*;

    /// A captured non-S3 request replayed with another body and an unsigned
    /// `x-amz-content-sha256` naming the original body's hash must not verify.
    #[test]
    fn a_declared_hash_never_stands_in_for_the_received_body_outside_s3() {
        let signed_body = b"Action=ListUsers&Version=2010-05-08";
        let sha = |b: &[u8]| hex::encode(Sha256::digest(b));
        let headers = vec![("host".to_string(), "127.0.0.1:4566".to_string())];
        let now = Utc::now();
        let orig_sha = sha(signed_body);
        let base = Request {
            method: "POST",
            path: "/",
            query: "",
            headers: &headers,
            body_sha256: &orig_sha,
            s3: false,
        };
        let mut all = headers.clone();
        all.extend(sign(
            &base,
            "AKIDEXAMPLE",
            "secret",
            "us-east-1",
            "iam",
            now,
        ));
        let auth = parse(&Request {
            headers: &all,
            ..base
        })
        .unwrap();
        // Replayed with the original hash declared in an (unsigned) header and another body.
        all.push((X_AMZ_CONTENT_SHA256.into(), orig_sha.clone()));
        let swapped_sha = sha(b"Action=CreateAccessKey&UserName=victim&Version=2010-05-08");
        let replay = Request {
            headers: &all,
            body_sha256: &swapped_sha,
            ..base
        };
        assert_eq!(
            verify(&replay, &auth, "secret", now),
            Err(AuthError::SignatureMismatch)
        );
        // The genuine body still verifies, with or without the declared hash.
        let genuine = Request {
            headers: &all,
            ..base
        };
        verify(&genuine, &auth, "secret", now).unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x_amz_date_is_read_exactly() {
        for (s, want) in [
            ("20150830T123600Z", "2015-08-30T12:36:00Z"),
            ("20240229T235959Z", "2024-02-29T23:59:59Z"),
            ("00010101T000000Z", "0001-01-01T00:00:00Z"),
        ] {
            let t = parse_amz_date(s).expect(s);
            assert_eq!(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true), want);
        }
        for s in [
            "",
            "20150830T123600",
            "20150830T123600Z0",
            "20150830t123600Z",
            "20150830T123600z",
            "2015083OT123600Z",
            "20151330T123600Z",
            "20230229T120000Z",
            "20150830T246000Z",
            "20150830T126000Z",
            "20150830T123660Z",
            "+2015830T123600Z",
            "2015-08-30T12:36:00Z",
            "20150830T1236\u{e9}Z",
            "2015083\u{e9}T12360Z",
        ] {
            assert!(parse_amz_date(s).is_err(), "{s:?} was accepted");
        }
    }

    #[test]
    fn signing_key_matches_the_aws_documentation_example() {
        let k = signing_key(
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            "20150830",
            "us-east-1",
            "iam",
        );
        assert_eq!(
            hex::encode(k),
            "c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9"
        );
    }

    #[test]
    fn paths_and_queries_canonicalize_like_botocore() {
        assert_eq!(normalize_path("/a/./b/../c//d/"), "/a/c/d/");
        assert_eq!(normalize_path(""), "/");
        assert_eq!(uri_encode(b"a b+c/~", true), "a%20b%2Bc/~");
        assert_eq!(canonical_query("b=2&a=1&a=0&c", false), "a=0&a=1&b=2&c=");
        assert_eq!(
            canonical_query("prefix=AWSLogs%2F&marker=x", false),
            "marker=x&prefix=AWSLogs%2F"
        );
        assert_eq!(canonical_query("X-Amz-Signature=abc&k=v", true), "k=v");
    }
}
