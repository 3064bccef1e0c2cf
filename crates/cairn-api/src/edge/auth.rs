//! Authentication: the SigV4 (or, for S3, presigned SigV2) signature of a request, by a known
//! and active key, checked in constant time; the [`Caller`] it stands for; and the judgement
//! from headers alone that lets the listener refuse a request without reading its body.

use crate::protocol::{ApiError, Protocol};
use crate::service::{service_for, Registered};
use crate::Api;
use cairn_iam::identity::{Directory, KeyOwner, KeyStatus};
use cairn_iam::policy::{Policy, Principal};
use cairn_iam::sigv4::{self, AuthError};
use cairn_record::{builder, UserIdentity};
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::sync::Arc;

use super::HttpRequest;

/// The verified caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub access_key_id: String,
    pub owner: KeyOwner,
    pub identity: UserIdentity,
    pub principal: Principal,
    pub policies: Arc<Vec<Policy>>,
}

impl Caller {
    pub fn is_root(&self) -> bool {
        self.owner == KeyOwner::Root
    }

    /// What LookupEvents reports as `Username`.
    pub fn lookup_username(&self) -> String {
        match &self.owner {
            KeyOwner::Root => "root".into(),
            KeyOwner::User(u) => u.clone(),
            KeyOwner::Session(s) => s.session_name.clone(),
        }
    }
}

/// What the headers alone say about a request's authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preauth {
    /// It certainly cannot authenticate.
    Refused,
    /// Its signature covers the body, which must be read first (JSON and query protocols).
    NeedsBody,
    /// Its signature is valid (S3 signs the declared payload hash, not the body).
    SignatureValid,
}

/// Whether the request could still authenticate, judged from its headers alone: `Refused`
/// when it certainly cannot — no credentials, an unknown or inactive key, a wrong scope,
/// region or clock, or (S3, whose signature covers the declared payload hash, not the body) a
/// wrong signature. The listener then answers without reading the body, so nobody without a
/// valid key (and, for S3, a valid signature) can make cairn buffer one.
/// `presented` is [`presented`]`(req)`, read once by the caller.
pub fn preauthenticate(
    api: &Api,
    req: &HttpRequest,
    presented: &Result<sigv4::Authorization, AuthError>,
) -> Preauth {
    match preauth(api, req, presented) {
        None => Preauth::Refused,
        Some(true) => Preauth::SignatureValid,
        Some(false) => Preauth::NeedsBody,
    }
}

fn preauth(
    api: &Api,
    req: &HttpRequest,
    presented: &Result<sigv4::Authorization, AuthError>,
) -> Option<bool> {
    let now = api.clock.now();
    let scope = presented.as_ref().ok().map(|a| a.service.as_str());
    let service = service_for(req, scope).ok()?;
    if let Some(v2) = sigv2(service, req) {
        return authenticate_v2(api, req, v2, now).ok().map(|_| false);
    }
    let parse_req = signed_view(req);
    let auth = presented.as_ref().ok()?;
    if auth.service != service.signing_name() || !api.opts.regions.contains(&auth.region) {
        return None;
    }
    let protocol = service.protocol();
    let (secret, _) = key_of(api, req, &auth.access_key_id, protocol, now).ok()?;
    let sreq = sigv4::Request {
        s3: protocol == Protocol::S3,
        ..parse_req
    };
    sigv4::check_headers(&sreq, auth, now).ok()?;
    if sigv4::signature_needs_body(&sreq) {
        return Some(false);
    }
    sigv4::check_signature(&sreq, auth, &secret).ok()?;
    Some(true)
}

/// The largest body a request to this service may have: S3 objects up to `max_body_bytes`,
/// API calls (JSON, query, REST-JSON) up to `max_api_body_bytes`.
/// `scope` is the service of the request's presented credential, if it has one.
pub fn body_limit(api: &Api, req: &HttpRequest, scope: Option<&str>) -> usize {
    let protocol = service_for(req, scope).map(|s| s.protocol()).ok();
    protocol_body_limit(api, protocol)
}

/// [`body_limit`] once the request's protocol is known (`None`: no service claims it).
pub fn protocol_body_limit(api: &Api, protocol: Option<Protocol>) -> usize {
    match protocol {
        Some(Protocol::S3) => api.opts.max_body_bytes,
        // DynamoDB takes up to 16 MB in one call (BatchWriteItem).
        Some(Protocol::Json10) => (16 << 20) + (64 << 10),
        _ => api.opts.max_api_body_bytes.min(api.opts.max_body_bytes),
    }
}

/// The SigV4 authorization a request presents (header or query), read without a secret.
pub fn presented(req: &HttpRequest) -> Result<sigv4::Authorization, AuthError> {
    sigv4::parse(&signed_view(req))
}

/// What SigV4 reads of a request before its body or its service is known.
fn signed_view(req: &HttpRequest) -> sigv4::Request<'_> {
    sigv4::Request {
        method: &req.method,
        path: &req.path,
        query: &req.query,
        headers: &req.headers,
        body_sha256: "",
        s3: false,
    }
}

/// A request presigned with Signature Version 2, for a service that accepts those: its
/// credentials (or why they are malformed) and the resource its signature covers.
pub(super) struct SigV2 {
    presigned: Result<cairn_iam::sigv2::Presigned, cairn_iam::sigv2::V2Error>,
    query: Vec<(String, String)>,
    resource: String,
}

pub(super) fn sigv2(service: &dyn Registered, req: &HttpRequest) -> Option<SigV2> {
    if !req.query.contains("AWSAccessKeyId=") {
        return None;
    }
    let resource = service.sigv2_resource(req)?;
    let query = req.query_params();
    let presigned = cairn_iam::sigv2::presigned(&query)?;
    Some(SigV2 {
        presigned,
        query,
        resource,
    })
}

/// The region a request is recorded in: the one it was signed for when cairn serves it, else
/// the default (an invented region never reaches a record, where it would make single-region
/// trails drop the event).
pub(super) fn region_of(auth: Option<&sigv4::Authorization>, api: &Api) -> String {
    auth.map(|a| a.region.clone())
        .filter(|r| api.opts.regions.contains(r))
        .unwrap_or_else(|| api.opts.default_region.clone())
}

fn unknown_key_error(protocol: Protocol) -> ApiError {
    match protocol {
        Protocol::S3 => ApiError::new(
            "InvalidAccessKeyId",
            403,
            "The AWS Access Key Id you provided does not exist in our records.",
        ),
        Protocol::Query => ApiError::new(
            "InvalidClientTokenId",
            403,
            "The security token included in the request is invalid.",
        ),
        _ => ApiError::client(
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        ),
    }
}

fn bad_token_error(protocol: Protocol) -> ApiError {
    match protocol {
        Protocol::S3 => ApiError::client(
            "InvalidToken",
            "The provided token is malformed or otherwise invalid.",
        ),
        p => unknown_key_error(p),
    }
}

fn s3_iso(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn auth_error(protocol: Protocol, e: &AuthError) -> ApiError {
    let (code, status) = e.code(protocol.auth_protocol());
    // DynamoDB names these two with the `Exception` suffix, and answers them 400.
    let (code, status) = match (protocol, code) {
        (Protocol::Json10, "MissingAuthenticationToken") => {
            ("MissingAuthenticationTokenException", 400)
        }
        (Protocol::Json10, "IncompleteSignature") => ("IncompleteSignatureException", status),
        _ => (code, status),
    };
    let mut err = ApiError::new(code, status, e.to_string());
    if let AuthError::UnsignedHeader(h) = e {
        if protocol == Protocol::S3 {
            err = err.with("HeadersNotSigned", h.clone());
        }
    }
    if matches!(e, AuthError::PresignExpired) && protocol == Protocol::S3 {
        err.message = "Request has expired".into();
    }
    err
}

/// A signature scoped to a region cairn does not serve, as S3 words it (the region expected).
fn bad_region_error(protocol: Protocol, region: &str, expected: &str, presigned: bool) -> ApiError {
    let e = AuthError::BadRegion(region.to_string());
    match protocol {
        Protocol::S3 if presigned => ApiError::client(
            "AuthorizationQueryParametersError",
            format!("Error parsing the X-Amz-Credential parameter; the region '{region}' is wrong; expecting '{expected}'"),
        )
        .with("Region", expected),
        Protocol::S3 => ApiError::client(
            "AuthorizationHeaderMalformed",
            format!("The authorization header is malformed; the region '{region}' is wrong; expecting '{expected}'"),
        )
        .with("Region", expected),
        p => auth_error(p, &e),
    }
}

/// Authenticates the request: SigV4 signature by a known, active key (and, for session keys,
/// the matching session token).
pub(super) fn authenticate(
    api: &Api,
    req: &HttpRequest,
    service: &dyn Registered,
    auth: &Result<sigv4::Authorization, AuthError>,
    now: DateTime<Utc>,
) -> Result<(Caller, String), ApiError> {
    let protocol = service.protocol();
    if let Some(v2) = sigv2(service, req) {
        return authenticate_v2(api, req, v2, now);
    }
    let auth = auth.as_ref().map_err(|e| match e {
        AuthError::BadRegion(r) => {
            let expected = service
                .resource_region(api, req)
                .unwrap_or_else(|| api.opts.default_region.clone());
            let presigned = req.header("authorization").is_none();
            bad_region_error(protocol, r, &expected, presigned)
        }
        e => auth_error(protocol, e),
    })?;
    let (key_secret, owner) = key_of(api, req, &auth.access_key_id, protocol, now)?;
    // The body is hashed only when the hash is compared: for S3, when the client declared
    // one (UNSIGNED-PAYLOAD and aws-chunked bodies are not hashed whole). A streamed body is
    // not here to hash: its declared hash goes to the upstream, which verifies it.
    let declared = req.header("x-amz-content-sha256").unwrap_or_default();
    let declared_hash = sigv4::is_sha256_hex(declared);
    let body_sha = if req.body_stream.is_some() || (protocol == Protocol::S3 && !declared_hash) {
        declared.to_string()
    } else {
        sigv4::sha256_hex(&req.body)
    };
    let sreq = sigv4::Request {
        body_sha256: &body_sha,
        s3: protocol == Protocol::S3,
        ..signed_view(req)
    };
    let verified = if req.signature_checked {
        // The listener already checked this (S3) signature from the headers, which have not
        // changed since: only the clock and the payload remain.
        sigv4::check_headers(&sreq, auth, now).and_then(|_| sigv4::check_payload(&sreq, auth))
    } else {
        sigv4::verify(&sreq, auth, &key_secret, now)
    };
    verified.map_err(|e| {
        let mut err = auth_error(protocol, &e);
        // B12: an expired presigned URL says when it expired and what time it is here.
        if matches!(e, AuthError::PresignExpired) && protocol == Protocol::S3 {
            let signed = chrono::NaiveDateTime::parse_from_str(&auth.amz_date, "%Y%m%dT%H%M%SZ")
                .map(|n| n.and_utc());
            if let (Ok(t), Some(secs)) = (signed, auth.expires) {
                err = err
                    .with("X-Amz-Expires", secs.to_string())
                    .with("Expires", s3_iso(t + chrono::Duration::seconds(secs)))
                    .with("ServerTime", s3_iso(now));
            }
        }
        err
    })?;
    Ok((caller_of(api, &auth.access_key_id, owner), key_secret))
}

/// The account root as a caller (fuzzing and tests of handlers).
#[cfg(feature = "fuzzing")]
pub(super) fn root_caller(api: &Api, akid: &str) -> Caller {
    caller_of(api, akid, KeyOwner::Root)
}

/// The caller a verified key stands for: identity for the record, principal for policies.
fn caller_of(api: &Api, akid: &str, owner: KeyOwner) -> Caller {
    let account = api.opts.account.clone();
    let akid = akid.to_string();
    let (identity, principal) = match &owner {
        KeyOwner::Root => (
            builder::root_identity(&account, Some(&akid)),
            Principal {
                arn: format!("arn:aws:iam::{account}:root"),
                account: account.clone(),
                role_arn: None,
                service: None,
            },
        ),
        KeyOwner::User(u) => {
            let user = api.iam.get_user(u).ok();
            let uid = user
                .as_ref()
                .map(|x| x.user_id.clone())
                .unwrap_or_else(|| u.clone());
            let arn = user
                .as_ref()
                .map(|x| x.arn(&account))
                .unwrap_or_else(|| format!("arn:aws:iam::{account}:user/{u}"));
            let mut identity = builder::iam_user_identity(&account, u, &uid, &akid);
            identity.arn = Some(arn.clone());
            (
                identity,
                Principal {
                    arn,
                    account: account.clone(),
                    role_arn: None,
                    service: None,
                },
            )
        }
        KeyOwner::Session(s) => {
            let role_arn = api
                .iam
                .get_role(&s.role)
                .map(|r| r.arn(&account))
                .unwrap_or_else(|_| format!("arn:aws:iam::{account}:role/{}", s.role));
            let mut identity = builder::assumed_role_identity(
                &account,
                &s.role,
                &s.role_id,
                &s.session_name,
                &akid,
                s.created,
            );
            if let Some(Value::Object(issuer)) = identity
                .session_context
                .as_mut()
                .and_then(|c| c.session_issuer.as_mut())
            {
                issuer.insert("arn".into(), Value::String(role_arn.clone()));
            }
            (
                identity,
                Principal {
                    arn: format!(
                        "arn:aws:sts::{account}:assumed-role/{}/{}",
                        s.role, s.session_name
                    ),
                    account: account.clone(),
                    role_arn: Some(role_arn),
                    service: None,
                },
            )
        }
    };
    let policies = api.iam.policies_of(&owner);
    Caller {
        access_key_id: akid,
        owner,
        identity,
        principal,
        policies,
    }
}

/// The secret and owner of access key `akid` (active; for session keys, the request must
/// carry the matching session token).
fn key_of(
    api: &Api,
    req: &HttpRequest,
    akid: &str,
    protocol: Protocol,
    now: DateTime<Utc>,
) -> Result<(String, KeyOwner), ApiError> {
    Ok(if api.opts.dev_credentials && akid == "test" {
        ("test".to_string(), KeyOwner::Root)
    } else {
        let k = api
            .iam
            .access_key(akid, now)
            .filter(|k| k.status == KeyStatus::Active)
            .ok_or_else(|| unknown_key_error(protocol))?;
        if let KeyOwner::Session(s) = &k.owner {
            // A session dies with its role: a role deleted (and perhaps re-created under the
            // same name) no longer vouches for it.
            let role_alive = api
                .iam
                .get_role(&s.role)
                .is_ok_and(|r| r.role_id == s.role_id);
            if !role_alive {
                return Err(bad_token_error(protocol));
            }
            let token = req
                .header("x-amz-security-token")
                .map(str::to_string)
                .or_else(|| req.query_param("X-Amz-Security-Token"));
            match token {
                Some(t) if Directory::session_token_matches(&k, &t) => {}
                _ => return Err(bad_token_error(protocol)),
            }
        }
        (k.secret, k.owner)
    })
}

/// Authenticates an S3 request presigned with Signature Version 2 (`aws s3 presign`).
fn authenticate_v2(
    api: &Api,
    req: &HttpRequest,
    v2: SigV2,
    now: DateTime<Utc>,
) -> Result<(Caller, String), ApiError> {
    use cairn_iam::sigv2::V2Error;
    let refused = |e: V2Error| {
        match e {
        V2Error::Expired => ApiError::new("AccessDenied", 403, "Request has expired"),
        V2Error::TooLong => ApiError::client(
            "AuthorizationQueryParametersError",
            "Expires must be less than a week (604800 seconds) in the future",
        ),
        V2Error::Unsigned(p) => ApiError::new(
            "AccessDenied",
            403,
            format!("There were query parameters present in the request which were not signed: {p}"),
        ),
        V2Error::Mismatch => ApiError::new(
            "SignatureDoesNotMatch",
            403,
            "The request signature we calculated does not match the signature you provided. Check your key and signing method.",
        ),
        V2Error::Malformed(m) => ApiError::new("AccessDenied", 403, m),
    }
    };
    let p = v2.presigned.map_err(refused)?;
    let (secret, owner) = key_of(api, req, &p.access_key_id, Protocol::S3, now)?;
    cairn_iam::sigv2::verify(
        &p,
        &req.method,
        &v2.resource,
        &v2.query,
        &req.headers,
        &secret,
        now,
    )
    .map_err(refused)?;
    Ok((caller_of(api, &p.access_key_id, owner), secret))
}

/// The identity recorded for a request that failed authentication.
pub(super) fn unauthenticated_identity(api: &Api, claimed: Option<&str>) -> UserIdentity {
    UserIdentity {
        identity_type: "Unknown".into(),
        account_id: claimed.map(|_| api.opts.account.clone()),
        access_key_id: claimed.map(str::to_string),
        ..Default::default()
    }
}
