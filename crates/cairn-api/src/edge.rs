//! The edge: every request passes here. Classify (service, protocol, operation) →
//! authenticate (SigV4 against the directory) → dispatch to the service, which authorizes
//! through [`Ctx::authorize`] → record the request as an event, durably → answer.
//!
//! Handlers receive a [`Ctx`], which only exists for an authenticated [`Caller`]; an
//! unauthenticated request is answered (and recorded) here without reaching any handler.

use crate::wire::{self, ApiError, Protocol, Reply};
use crate::Api;
use bytes::Bytes;
use cairn_iam::identity::{Directory, KeyOwner, KeyStatus};
use cairn_iam::policy::{self, ConditionKeys, Decision, Policy, Principal, RequestContext};
use cairn_iam::sigv4::{self, AuthError};
use cairn_record::builder;
use cairn_record::record::TlsDetails;
use cairn_record::{EventRecord, Resource, UserIdentity};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::net::IpAddr;
use std::sync::Arc;

/// TLS facts of a connection, for `tlsDetails` and `aws:SecureTransport`.
#[derive(Debug, Clone)]
pub struct TlsInfo {
    pub version: String,
    pub cipher: String,
}

/// A request as received (headers lower-cased, body complete).
#[derive(Debug, Clone)]
pub struct HttpRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    pub peer: IpAddr,
    pub tls: Option<TlsInfo>,
    /// Set when a header could not be accepted (non-ASCII value, duplicated auth header).
    pub bad_header: Option<String>,
    /// Set when the body could not be read as sent (see [`BodyProblem`]).
    pub body_problem: Option<BodyProblem>,
    /// The body, not yet read, of a request the proxy streams to its upstream (`body` is
    /// empty then).
    pub body_stream: Option<BodyStream>,
    /// The body was left unread because the request cannot authenticate (see
    /// [`preauthenticate`]); `body` is empty.
    pub body_unread: bool,
    /// The listener verified the (S3) signature from the headers already.
    pub signature_checked: bool,
}

/// Why a request's body was not read whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyProblem {
    /// Fewer bytes than declared arrived, or the stream broke.
    Incomplete(String),
    /// Larger than the service's limit (reading stopped at the limit).
    TooLarge { limit: usize },
    /// The client sent nothing for too long.
    TimedOut,
    /// The server's budget for buffered bodies stayed full.
    Busy,
}

/// A request body left unread for streaming; taken once.
#[derive(Clone, Debug, Default)]
pub struct BodyStream(pub Arc<std::sync::Mutex<Option<hyper::body::Incoming>>>);

impl BodyStream {
    pub fn take(&self) -> Option<hyper::body::Incoming> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

impl HttpRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Query parameters, percent-decoded.
    pub fn query_params(&self) -> Vec<(String, String)> {
        form_urlencoded::parse(self.query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }

    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query_params()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }
}

/// The services cairn speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    CloudTrail,
    CloudTrailData,
    Iam,
    Sts,
    S3,
}

impl Service {
    pub fn protocol(self) -> Protocol {
        match self {
            Service::CloudTrail => Protocol::Json,
            Service::CloudTrailData => Protocol::RestJson,
            Service::Iam | Service::Sts => Protocol::Query,
            Service::S3 => Protocol::S3,
        }
    }

    pub fn event_source(self) -> &'static str {
        match self {
            Service::CloudTrail => "cloudtrail.amazonaws.com",
            Service::CloudTrailData => "cloudtrail-data.amazonaws.com",
            Service::Iam => "iam.amazonaws.com",
            Service::Sts => "sts.amazonaws.com",
            Service::S3 => "s3.amazonaws.com",
        }
    }

    pub fn signing_name(self) -> &'static str {
        match self {
            Service::CloudTrail => "cloudtrail",
            Service::CloudTrailData => "cloudtrail-data",
            Service::Iam => "iam",
            Service::Sts => "sts",
            Service::S3 => "s3",
        }
    }

    fn from_signing_name(s: &str) -> Option<Service> {
        Some(match s {
            "cloudtrail" => Service::CloudTrail,
            "cloudtrail-data" => Service::CloudTrailData,
            "iam" => Service::Iam,
            "sts" => Service::Sts,
            "s3" => Service::S3,
            _ => return None,
        })
    }
}

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

/// What a handler tells the edge about the event to record.
#[derive(Debug, Default)]
pub struct Audit {
    pub event_name: String,
    pub read_only: bool,
    pub request_parameters: Option<Value>,
    pub response_elements: Option<Value>,
    pub resources: Option<Vec<Resource>>,
    pub additional_event_data: Option<Value>,
    /// A data event built by the handler (S3 object calls); replaces the management event.
    pub data_event: Option<EventRecord>,
    /// The error of an answer passed through unchanged (a proxied upstream's error):
    /// `(errorCode, errorMessage)` for the record.
    pub error: Option<(String, String)>,
}

/// What a deferred change adds to the answer once made (headers; a body replacing the
/// prepared one).
#[derive(Default)]
pub struct Committed {
    pub headers: Vec<(String, String)>,
    pub body: Option<Bytes>,
}

/// Makes a prepared change visible.
pub type CommitFn = Box<dyn FnOnce() -> Result<Committed, ApiError> + Send + Sync>;
/// Forgets a prepared change.
pub type AbortFn = Box<dyn FnOnce() + Send + Sync>;

/// What an effect outside cairn (a write forwarded to an upstream) came to: the answer for the
/// client, and what the record must say about it.
pub struct EffectOutcome {
    pub reply: Result<Reply, ApiError>,
    /// The error of an answer passed through (an upstream's error): `(code, message)`.
    pub error: Option<(String, String)>,
    pub additional_event_data: Option<Value>,
}

impl Default for EffectOutcome {
    fn default() -> Self {
        EffectOutcome {
            reply: Err(ApiError::internal("the effect gave no answer")),
            error: None,
            additional_event_data: None,
        }
    }
}

/// An effect run after the request's record is durable as pending; its outcome completes
/// the record (see `cairn_trail::entry::Entry::Pending`).
pub type EffectFn = Box<
    dyn FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = EffectOutcome> + Send>>
        + Send,
>;

/// A change a handler prepared but did not make visible: the edge makes it only after the
/// request's event is durable, and forgets it when the journal refuses the event (the
/// client then gets 503 and nothing changed — fail closed).
pub struct Deferred {
    pub commit: CommitFn,
    pub abort: Option<AbortFn>,
}

/// A handler's view of one authenticated request.
pub struct Ctx<'a> {
    pub api: &'a Arc<Api>,
    pub caller: &'a Caller,
    pub region: String,
    pub req: &'a HttpRequest,
    pub now: DateTime<Utc>,
    pub request_id: String,
    pub audit: Audit,
    /// Resource policies that apply to this request (an S3 bucket policy), evaluated with the
    /// caller's own by every [`Ctx::authorize`].
    pub resource_policies: Vec<Policy>,
    /// Service condition keys of this request (`s3:prefix`, `sts:ExternalId`, …), set by the
    /// handler before it authorizes.
    pub keys: ConditionKeys,
    authorized: bool,
    /// Changes to make once the event is durable, in order.
    pub deferred: Vec<Deferred>,
    /// An effect outside cairn, run once the record is durable as pending; its outcome
    /// becomes the answer and completes the record. (In a mutex only so `Ctx` stays `Sync`.)
    effect: Option<std::sync::Mutex<EffectFn>>,
}

impl Ctx<'_> {
    /// An S3 data event for `op` on `bucket`/`key` by this caller (spec §2.4 shape).
    pub fn s3_object_event(&self, op: &str, bucket: &str, key: &str) -> EventRecord {
        builder::s3_object(
            op,
            &self.region,
            self.now,
            self.caller.identity.clone(),
            &self.api.opts.account,
            bucket,
            key,
            self.req.header("host").unwrap_or_default(),
        )
    }

    /// Defers a change until the request's event is durable (see [`Deferred`]).
    pub fn defer(&mut self, commit: CommitFn, abort: Option<AbortFn>) {
        self.deferred.push(Deferred { commit, abort });
    }

    /// Registers an effect outside cairn (a write to an upstream): the request's record is
    /// journaled as pending first, then the effect runs, then the record is completed with its
    /// outcome. Nothing reaches the upstream unless its record is durable, and the trail never
    /// says it succeeded unless it did.
    pub fn defer_effect(&mut self, effect: EffectFn) {
        self.effect = Some(std::sync::Mutex::new(effect));
    }

    /// Keeps `guard` (the control-plane lock) until the changes deferred so far are made or
    /// forgotten, so a check and the change it allows stay one step.
    pub fn hold_until_made(&mut self, guard: tokio::sync::OwnedMutexGuard<()>) {
        self.defer(
            Box::new(move || {
                drop(guard);
                Ok(Committed::default())
            }),
            None,
        );
    }

    /// Defers a trail command (StartLogging, StopLogging, a configuration change, DeleteTrail)
    /// until the request's own event is durable, so the event precedes the change in the
    /// journal: a StopLogging or DeleteTrail is delivered by the trail it ends. The commit
    /// waits until the engine applied it (callers read their own writes).
    pub fn defer_trail_command(&mut self, cmd: cairn_trail::TrailCommand) {
        let engine = self.api.engine.clone();
        self.defer(
            Box::new(move || {
                let seq = engine
                    .command(cmd)
                    .map_err(crate::cloudtrail::map_trail_error)?;
                engine.apply_through(seq).map_err(ApiError::internal)?;
                Ok(Committed::default())
            }),
            None,
        );
    }

    /// Defers a write of the control metadata.
    pub fn defer_meta_put<T: serde::Serialize + Send + Sync + 'static>(
        &mut self,
        key: String,
        value: T,
    ) {
        let meta = self.api.meta.clone();
        self.defer(
            Box::new(move || {
                meta.put(&key, &value)?;
                Ok(Committed::default())
            }),
            None,
        );
    }

    /// Defers a removal from the control metadata.
    pub fn defer_meta_delete(&mut self, key: String) {
        let meta = self.api.meta.clone();
        self.defer(
            Box::new(move || {
                meta.delete(&key)?;
                Ok(Committed::default())
            }),
            None,
        );
    }

    /// The global condition keys of this request (AWS's `aws:*` keys cairn can know), plus the
    /// service keys the handler set in [`Ctx::keys`]. Keys cairn cannot know (VPC endpoints,
    /// organizations, MFA for long-term keys) are absent, as AWS leaves them.
    pub fn condition_keys(&self) -> ConditionKeys {
        let mut k = ConditionKeys::new();
        k.set("aws:SecureTransport", self.req.tls.is_some().to_string());
        k.set("aws:SourceIp", self.req.peer.to_string());
        if let Some(ua) = self.req.header("user-agent") {
            k.set("aws:UserAgent", ua);
        }
        k.set("aws:CurrentTime", cairn_record::time::iso(self.now));
        k.set("aws:EpochTime", self.now.timestamp().to_string());
        k.set("aws:RequestedRegion", self.region.clone());
        k.set("aws:PrincipalIsAWSService", "false");
        k.set("aws:ViaAWSService", "false");
        let account = &self.api.opts.account;
        match &self.caller.owner {
            KeyOwner::Root => {
                k.set("aws:PrincipalType", "Account");
                k.set("aws:userid", account.clone());
            }
            KeyOwner::User(u) => {
                k.set("aws:PrincipalType", "User");
                k.set("aws:username", u.clone());
                if let Some(id) = &self.caller.identity.principal_id {
                    k.set("aws:userid", id.clone());
                }
            }
            KeyOwner::Session(s) => {
                k.set("aws:PrincipalType", "AssumedRole");
                k.set("aws:userid", format!("{}:{}", s.role_id, s.session_name));
                k.set("aws:TokenIssueTime", cairn_record::time::iso(s.created));
                // Temporary credentials say whether MFA was used; cairn issues none with it.
                k.set("aws:MultiFactorAuthPresent", "false");
            }
        }
        k.extend(&self.keys);
        k
    }

    /// Authorizes `action` on `resource` for the caller: the account root may do everything;
    /// anyone else needs an Allow from their identity policies and no Deny (plus `extra`
    /// resource policies, e.g. a bucket policy).
    pub fn authorize_with(
        &mut self,
        action: &str,
        resource: &str,
        resource_policies: &[Policy],
    ) -> Result<(), ApiError> {
        self.authorized = true;
        if self.caller.is_root() && resource_policies.is_empty() {
            return Ok(());
        }
        let keys = self.condition_keys();
        let rc = RequestContext {
            principal: &self.caller.principal,
            action,
            resource,
            keys: &keys,
        };
        let decision = if self.caller.is_root() {
            // Root is subject only to explicit denies in resource policies.
            match policy::evaluate(resource_policies, &rc) {
                Decision::ExplicitDeny => Decision::ExplicitDeny,
                _ => Decision::Allow,
            }
        } else {
            policy::evaluate_sets(&[self.caller.policies.as_slice(), resource_policies], &rc)
        };
        match decision {
            Decision::Allow => Ok(()),
            d => Err(access_denied(
                &self.caller.principal.arn,
                action,
                resource,
                d,
            )),
        }
    }

    pub fn authorize(&mut self, action: &str, resource: &str) -> Result<(), ApiError> {
        let policies = std::mem::take(&mut self.resource_policies);
        let r = self.authorize_with(action, resource, &policies);
        self.resource_policies = policies;
        r
    }

    /// Marks a request that needs no authorization (e.g. GetCallerIdentity, which AWS allows
    /// to everyone).
    pub fn no_authorization_needed(&mut self) {
        self.authorized = true;
    }
}

/// An authorization refusal, in the JSON protocol's shape; [`fix_denied_protocol`] gives it
/// the shape of the request's protocol.
pub fn access_denied(who: &str, action: &str, resource: &str, d: Decision) -> ApiError {
    let why = match d {
        Decision::ExplicitDeny => "with an explicit deny in an identity-based policy".to_string(),
        _ => format!("because no identity-based policy allows the {action} action"),
    };
    ApiError::client(
        "AccessDeniedException",
        format!("User: {who} is not authorized to perform: {action} on resource: {resource} {why}"),
    )
}

/// How the request was classified before authentication.
#[derive(Debug, Clone)]
pub struct Route {
    pub service: Service,
    pub op: String,
}

fn classify(req: &HttpRequest, scope_service: Option<&str>) -> Result<Route, (Protocol, ApiError)> {
    let target = req.header(wire::X_AMZ_TARGET);
    let service = service_of(req, scope_service)?;
    let op = match service {
        Service::CloudTrail => {
            let t = target.unwrap_or_default();
            match wire::cloudtrail_operation(t) {
                Some(op) => op.to_string(),
                _ => {
                    return Err((
                        Protocol::Json,
                        ApiError::client(
                            "UnknownOperationException",
                            format!("Unknown operation: {t}"),
                        ),
                    ))
                }
            }
        }
        Service::Iam | Service::Sts => {
            let mut action = form_param(&req.body, "Action");
            if action.is_none() {
                action = req.query_param("Action");
            }
            match action {
                Some(a) if !a.is_empty() => a,
                // A body left unread (the request cannot authenticate, or could not be read)
                // names no action; the request then fails for that reason, not this one.
                _ if req.body_unread || req.body_problem.is_some() => {
                    "UnknownOperation".to_string()
                }
                _ => {
                    return Err((
                        Protocol::Query,
                        ApiError::client("MissingAction", "Missing Action"),
                    ))
                }
            }
        }
        Service::CloudTrailData => crate::cloudtrail_data::operation(req),
        Service::S3 => crate::s3::operation(req),
    };
    Ok(Route { service, op })
}

/// The service a request is for: what its shape says (an X-Amz-Target, a path), else its
/// signature's scope, else what its form looks like.
fn service_of(
    req: &HttpRequest,
    scope_service: Option<&str>,
) -> Result<Service, (Protocol, ApiError)> {
    let target = req.header(wire::X_AMZ_TARGET);
    // The request's shape names its service when it can; the signature's scope must then agree
    // (checked by the caller), so a request signed for another service is an auth failure.
    let shaped = if target.is_some_and(|t| wire::cloudtrail_operation(t).is_some()) {
        Some(Service::CloudTrail)
    } else if req.path == "/PutAuditEvents" {
        Some(Service::CloudTrailData)
    } else {
        None
    };
    let service = match shaped.map(|s| s.signing_name()).or(scope_service) {
        Some(s) => match Service::from_signing_name(s) {
            Some(svc) => svc,
            None => {
                return Err((
                    if target.is_some() {
                        Protocol::Json
                    } else {
                        Protocol::Query
                    },
                    ApiError::client(
                        "UnknownOperationException",
                        format!("cairn does not serve the '{s}' service"),
                    ),
                ))
            }
        },
        None => {
            if target.is_some() {
                Service::CloudTrail
            } else if req.path.starts_with("/PutAuditEvents") || req.path.starts_with("/channels") {
                Service::CloudTrailData
            } else if req.method == "POST"
                && req
                    .header("content-type")
                    .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"))
            {
                let action = form_param(&req.body, "Action").unwrap_or_default();
                if crate::sts::OPERATIONS.contains(&action.as_str()) {
                    Service::Sts
                } else {
                    Service::Iam
                }
            } else {
                Service::S3
            }
        }
    };
    Ok(service)
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
pub fn preauthenticate(api: &Api, req: &HttpRequest) -> Preauth {
    match preauth(api, req) {
        None => Preauth::Refused,
        Some(true) => Preauth::SignatureValid,
        Some(false) => Preauth::NeedsBody,
    }
}

fn preauth(api: &Api, req: &HttpRequest) -> Option<bool> {
    let now = api.clock.now();
    if req.query.contains("AWSAccessKeyId=") {
        let q = req.query_params();
        if let Some(p) = cairn_iam::sigv2::presigned(&q) {
            return authenticate_v2(api, req, p, &q, now).ok().map(|_| false);
        }
        // The text appears but names no parameter: judged as SigV4 below, like `authenticate`.
    }
    let parse_req = sigv4::Request {
        method: &req.method,
        path: &req.path,
        query: &req.query,
        headers: &req.headers,
        body_sha256: "",
        s3: false,
    };
    let auth = sigv4::parse(&parse_req).ok()?;
    let service = service_of(req, Some(&auth.service)).ok()?;
    if auth.service != service.signing_name() || !api.opts.regions.contains(&auth.region) {
        return None;
    }
    let protocol = service.protocol();
    let (secret, _) = key_of(api, req, &auth.access_key_id, protocol, now).ok()?;
    let sreq = sigv4::Request {
        s3: protocol == Protocol::S3,
        ..parse_req
    };
    sigv4::check_headers(&sreq, &auth, now).ok()?;
    if sigv4::signature_needs_body(&sreq) {
        return Some(false);
    }
    sigv4::check_signature(&sreq, &auth, &secret).ok()?;
    Some(true)
}

/// The largest body a request to this service may have: S3 objects up to `max_body_bytes`,
/// API calls (JSON, query, REST-JSON) up to `max_api_body_bytes`.
pub fn body_limit(api: &Api, req: &HttpRequest) -> usize {
    let scope = sigv4::parse(&sigv4::Request {
        method: &req.method,
        path: &req.path,
        query: &req.query,
        headers: &req.headers,
        body_sha256: "",
        s3: false,
    })
    .ok()
    .map(|a| a.service);
    match service_of(req, scope.as_deref()) {
        Ok(Service::S3) => api.opts.max_body_bytes,
        _ => api.opts.max_api_body_bytes.min(api.opts.max_body_bytes),
    }
}

pub fn form_param(body: &[u8], name: &str) -> Option<String> {
    form_urlencoded::parse(body)
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// The region a request is recorded in: the one it was signed for when cairn serves it, else
/// the default (an invented region never reaches a record, where it would make single-region
/// trails drop the event).
fn region_of(auth: Option<&sigv4::Authorization>, api: &Api) -> String {
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
fn authenticate(
    api: &Api,
    req: &HttpRequest,
    auth: &Result<sigv4::Authorization, AuthError>,
    protocol: Protocol,
    now: DateTime<Utc>,
) -> Result<(Caller, String), ApiError> {
    if protocol == Protocol::S3 && req.query.contains("AWSAccessKeyId=") {
        let q = req.query_params();
        if let Some(p) = cairn_iam::sigv2::presigned(&q) {
            return authenticate_v2(api, req, p, &q, now);
        }
    }
    let auth = auth.as_ref().map_err(|e| match e {
        AuthError::BadRegion(r) => {
            let expected = (protocol == Protocol::S3)
                .then(|| crate::s3::target(req).bucket)
                .flatten()
                .and_then(|b| api.bucket_region(&b))
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
        hex::encode(Sha256::digest(&req.body))
    };
    let sreq = sigv4::Request {
        method: &req.method,
        path: &req.path,
        query: &req.query,
        headers: &req.headers,
        body_sha256: &body_sha,
        s3: protocol == Protocol::S3,
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
    p: Result<cairn_iam::sigv2::Presigned, cairn_iam::sigv2::V2Error>,
    query: &[(String, String)],
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
    let p = p.map_err(refused)?;
    let (secret, owner) = key_of(api, req, &p.access_key_id, Protocol::S3, now)?;
    let t = crate::s3::target(req);
    let resource = if t.virtual_host {
        format!("/{}{}", t.bucket.unwrap_or_default(), req.path)
    } else {
        req.path.clone()
    };
    cairn_iam::sigv2::verify(
        &p,
        &req.method,
        &resource,
        query,
        &req.headers,
        &secret,
        now,
    )
    .map_err(refused)?;
    Ok((caller_of(api, &p.access_key_id, owner), secret))
}

/// Decodes an `aws-chunked` S3 body in place (spec: SigV4 streaming): the chunk chain is
/// checked against the seed signature with the caller's signing key, trailers become
/// headers, `aws-chunked` leaves `Content-Encoding`, and the decoded length must be the
/// declared `x-amz-decoded-content-length`.
fn decode_s3_body(
    req: &mut HttpRequest,
    auth: Option<&sigv4::Authorization>,
    secret: &str,
) -> Result<(), ApiError> {
    use crate::s3_chunked::{decode, ChunkSigner};
    let Some(mode) = req.header("x-amz-content-sha256").map(str::to_string) else {
        return Ok(());
    };
    let (signed, trailer) = match mode.as_str() {
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD" => (true, false),
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER" => (true, true),
        "STREAMING-UNSIGNED-PAYLOAD-TRAILER" => (false, true),
        m if m.starts_with("STREAMING-") => {
            return Err(ApiError::new(
                "NotImplemented",
                501,
                format!("{m} (SigV4a) is not implemented; sign with SigV4."),
            ))
        }
        _ => return Ok(()),
    };
    let signer = match (signed, auth) {
        (true, Some(a)) if !a.presigned() => Some(ChunkSigner {
            key: sigv4::signing_key(secret, &a.date, &a.region, &a.service),
            amz_date: a.amz_date.clone(),
            scope: a.scope(),
            seed: a.signature.to_ascii_lowercase(),
        }),
        (true, _) => {
            return Err(ApiError::client(
                "InvalidRequest",
                "Signed aws-chunked bodies need an Authorization header signature.",
            ))
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
        return Err(ApiError::new(
            "MissingContentLength",
            411,
            "You must provide the Content-Length HTTP header.",
        ));
    }
    if trailer {
        let declared: Vec<String> = req
            .header("x-amz-trailer")
            .unwrap_or_default()
            .split(',')
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
    req.body = Bytes::from(decoded.body);
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

/// The identity recorded for a request that failed authentication.
fn unauthenticated_identity(api: &Api, claimed: Option<&str>) -> UserIdentity {
    UserIdentity {
        identity_type: "Unknown".into(),
        account_id: claimed.map(|_| api.opts.account.clone()),
        access_key_id: claimed.map(str::to_string),
        ..Default::default()
    }
}

/// Checks the request is acceptable before anything else reads it (B22, B17).
fn precheck(api: &Api, req: &HttpRequest, protocol: Protocol) -> Result<(), ApiError> {
    if let Some(h) = &req.bad_header {
        let code = match protocol {
            Protocol::S3 => "InvalidArgument",
            Protocol::Query => "InvalidParameterValue",
            _ => "SerializationException",
        };
        return Err(ApiError::client(code, h.clone()));
    }
    match &req.body_problem {
        None => {}
        Some(BodyProblem::Incomplete(b)) => {
            return Err(match protocol {
                Protocol::S3 => ApiError::client(
                    "IncompleteBody",
                    "You did not provide the number of bytes specified by the Content-Length HTTP header.",
                ),
                Protocol::Query => ApiError::client("MalformedInput", b.clone()),
                _ => ApiError::serialization(b.clone()),
            })
        }
        Some(BodyProblem::TooLarge { limit }) => {
            return Err(match protocol {
                Protocol::S3 => ApiError::client(
                    "EntityTooLarge",
                    "Your proposed upload exceeds the maximum allowed object size.",
                )
                .with("MaxSizeAllowed", limit.to_string()),
                _ => ApiError::new(
                    "RequestEntityTooLargeException",
                    413,
                    format!("Request body exceeds the limit of {limit} bytes"),
                ),
            })
        }
        Some(BodyProblem::TimedOut) => {
            return Err(match protocol {
                Protocol::S3 => ApiError::client(
                    "RequestTimeout",
                    "Your socket connection to the server was not read from or written to within the timeout period. Idle connections will be closed.",
                ),
                _ => ApiError::new(
                    "RequestTimeoutException",
                    408,
                    "The request body was not received within the timeout period.",
                ),
            })
        }
        Some(BodyProblem::Busy) => {
            return Err(match protocol {
                Protocol::S3 => ApiError::new("SlowDown", 503, "Please reduce your request rate."),
                _ => ApiError::new(
                    "ServiceUnavailable",
                    503,
                    "The server is busy receiving other request bodies; retry.",
                ),
            })
        }
    }
    // Bodies handed in whole (not through the listener) are held to the same limit.
    let limit = body_limit(api, req);
    if req.body.len() > limit {
        let mut r = req.clone();
        r.body = Bytes::new();
        r.body_problem = Some(BodyProblem::TooLarge { limit });
        return precheck(api, &r, protocol);
    }
    Ok(())
}

/// Handles one request end to end. Never panics on client input; errors are AWS-shaped.
pub async fn handle(api: &Arc<Api>, mut req: HttpRequest) -> Reply {
    let started = std::time::Instant::now();
    let now = api.clock.now();
    let request_id = builder::fast_uuid();
    let presented = {
        let sreq = sigv4::Request {
            method: &req.method,
            path: &req.path,
            query: &req.query,
            headers: &req.headers,
            body_sha256: "",
            s3: false,
        };
        sigv4::parse(&sreq)
    };
    let scope_service = presented.as_ref().ok().map(|a| a.service.clone());
    let route = match classify(&req, scope_service.as_deref()) {
        Ok(r) => r,
        Err((protocol, e)) => {
            // Unroutable: still recorded, as a CloudTrail-sourced failure.
            let region = region_of(presented.as_ref().ok(), api);
            let mut rec = builder::management(
                "cloudtrail.amazonaws.com",
                "UnknownOperation",
                &region,
                now,
                unauthenticated_identity(
                    api,
                    presented.as_ref().ok().map(|a| a.access_key_id.as_str()),
                ),
                false,
            );
            rec.error_code = Some(e.code.clone());
            rec.error_message = Some(e.message.clone());
            rec.recipient_account_id = Some(api.opts.account.clone());
            return finish(
                api,
                &req,
                rec,
                Err(e),
                protocol,
                &request_id,
                started,
                "unknown",
                Vec::new(),
            )
            .await;
        }
    };
    let protocol = route.service.protocol();
    let region = region_of(presented.as_ref().ok(), api);
    let presented = match presented {
        Ok(a) if a.service != route.service.signing_name() => Err(AuthError::BadScope(format!(
            "Credential should be scoped to correct service: '{}'.",
            route.service.signing_name()
        ))),
        Ok(a) if !api.opts.regions.contains(&a.region) => Err(AuthError::BadRegion(a.region)),
        other => other,
    };
    let pre = precheck(api, &req, protocol);
    let caller = pre
        .and_then(|_| authenticate(api, &req, &presented, protocol, now))
        .and_then(|(caller, secret)| {
            if protocol == Protocol::S3 {
                decode_s3_body(&mut req, presented.as_ref().ok(), &secret)?;
            }
            Ok(caller)
        });
    let caller = match caller {
        Ok(c) => c,
        Err(e) => {
            let claimed = presented.as_ref().ok().map(|a| a.access_key_id.clone());
            let mut rec = builder::management(
                route.service.event_source(),
                &route.op,
                &region,
                now,
                unauthenticated_identity(api, claimed.as_deref()),
                false,
            );
            rec.error_code = Some(e.code.clone());
            rec.error_message = Some(e.message.clone());
            rec.recipient_account_id = Some(api.opts.account.clone());
            rec.request_id = Some(request_id.clone());
            return finish(
                api,
                &req,
                rec,
                Err(e),
                protocol,
                &request_id,
                started,
                &route.op,
                Vec::new(),
            )
            .await;
        }
    };
    let mut ctx = Ctx {
        api,
        caller: &caller,
        region: region.clone(),
        req: &req,
        now,
        request_id: request_id.clone(),
        audit: Audit {
            event_name: route.op.clone(),
            ..Default::default()
        },
        resource_policies: Vec::new(),
        keys: ConditionKeys::new(),
        authorized: false,
        deferred: Vec::new(),
        effect: None,
    };
    let result = match route.service {
        Service::CloudTrail => crate::cloudtrail::handle(&mut ctx, &route.op).await,
        Service::CloudTrailData => crate::cloudtrail_data::handle(&mut ctx, &route.op).await,
        Service::Iam => crate::iam_api::handle(&mut ctx, &route.op).await,
        Service::Sts => crate::sts::handle(&mut ctx, &route.op).await,
        Service::S3 => crate::s3::handle(&mut ctx, &route.op).await,
    };
    let result = match result {
        Ok(_) if !ctx.authorized => Err(ApiError::internal(format!(
            "handler for {} returned without authorizing",
            route.op
        ))),
        r => r,
    };
    let result = result.map_err(|e| fix_denied_protocol(e, protocol));
    let rec = build_record(&ctx, route.service, &result);
    let deferred = std::mem::take(&mut ctx.deferred);
    let effect = ctx
        .effect
        .take()
        .map(|m| m.into_inner().unwrap_or_else(|p| p.into_inner()));
    drop(ctx);
    if let (Some(effect), Ok(_)) = (effect, &result) {
        return finish_effect(
            api,
            &req,
            rec,
            effect,
            protocol,
            &request_id,
            started,
            &route.op,
        )
        .await;
    }
    finish(
        api,
        &req,
        rec,
        result,
        protocol,
        &request_id,
        started,
        &route.op,
        deferred,
    )
    .await
}

/// Finishes a request whose effect happens outside cairn: the record is made durable as
/// pending, the effect runs, and its outcome completes the record (durably) before the answer.
#[allow(clippy::too_many_arguments)]
async fn finish_effect(
    api: &Arc<Api>,
    req: &HttpRequest,
    mut rec: EventRecord,
    effect: EffectFn,
    protocol: Protocol,
    request_id: &str,
    started: std::time::Instant,
    op: &str,
) -> Reply {
    stamp(&mut rec, req, request_id);
    let head = req.method == "HEAD";
    let reply = match api.record_pending(&rec).await {
        Err(e) => wire::error_reply(protocol, &e, request_id, head),
        Ok(pending) => {
            let out = effect().await;
            if let Some((code, message)) = out.error.clone() {
                rec.error_code = Some(code);
                rec.error_message = Some(message);
                rec.response_elements = None;
            }
            if let Err(e) = &out.reply {
                rec.error_code = Some(e.code.clone());
                rec.error_message = Some(e.message.clone());
                rec.response_elements = None;
            }
            if out.additional_event_data.is_some() {
                rec.additional_event_data = out.additional_event_data;
            }
            // The outcome came from outside (an upstream's message): bounded like the rest.
            bound_record(&mut rec);
            match (api.record_resolved(pending, &rec).await, out.reply) {
                (Ok(()), Ok(r)) => r,
                (Ok(()), Err(e)) => wire::error_reply(protocol, &e, request_id, head),
                // The outcome could not be journaled: the pending record stays unresolved and
                // is resolved as "outcome unknown" when cairn next starts.
                (Err(e), _) => wire::error_reply(protocol, &e, request_id, head),
            }
        }
    };
    answer(api, reply, protocol, request_id, started, op)
}

/// The fields every record of a request carries, from the request itself; then every field
/// a client can fill is bounded (see [`bound_record`]).
fn stamp(rec: &mut EventRecord, req: &HttpRequest, request_id: &str) {
    rec.request_id = Some(request_id.to_string());
    rec.source_ip_address = Some(req.peer.to_string());
    rec.user_agent = req.header("user-agent").map(str::to_string);
    if let Some(t) = &req.tls {
        rec.tls_details = Some(TlsDetails {
            tls_version: t.version.clone(),
            cipher_suite: t.cipher.clone(),
            client_provided_host_header: req.header("host").unwrap_or_default().to_string(),
        });
    }
    bound_record(rec);
}

/// CloudTrail's field limits (spec §2.1): `userAgent`, `errorCode`, `errorMessage` at most
/// 1 KB (truncated); `requestParameters` and `responseElements` at most 100 KB and
/// `additionalEventData` 28 KB (a larger one is dropped and the record says `omitted`). Names
/// and key ids a client chose are capped too. So no request, authenticated or not, can make
/// its record large.
pub fn bound_record(rec: &mut EventRecord) {
    fn cut(s: &mut String, max: usize) {
        if s.len() > max {
            let mut end = max;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s.truncate(end);
        }
    }
    for f in [
        &mut rec.user_agent,
        &mut rec.error_code,
        &mut rec.error_message,
    ]
    .into_iter()
    .flatten()
    {
        cut(f, 1024);
    }
    cut(&mut rec.event_name, 256);
    if let Some(id) = rec.user_identity.as_mut() {
        if let Some(k) = id.access_key_id.as_mut() {
            cut(k, 128);
        }
    }
    if let Some(t) = rec.tls_details.as_mut() {
        cut(&mut t.client_provided_host_header, 1024);
    }
    let mut omitted = false;
    for (field, max) in [
        (&mut rec.request_parameters, 100 * 1024),
        (&mut rec.response_elements, 100 * 1024),
        (&mut rec.additional_event_data, 28 * 1024),
    ] {
        if field.as_ref().is_some_and(|v| json_size(v) > max) {
            *field = None;
            omitted = true;
        }
    }
    if omitted {
        rec.extra.insert("omitted".into(), Value::Bool(true));
    }
}

/// About how many bytes `v` takes as JSON (escapes aside), without serializing it.
fn json_size(v: &Value) -> usize {
    match v {
        Value::Null | Value::Bool(_) => 5,
        Value::Number(_) => 24,
        Value::String(s) => s.len() + 2,
        Value::Array(a) => 2 + a.iter().map(|x| json_size(x) + 1).sum::<usize>(),
        Value::Object(m) => {
            2 + m
                .iter()
                .map(|(k, x)| k.len() + 4 + json_size(x))
                .sum::<usize>()
        }
    }
}

/// The request id headers and the metrics of an answer.
fn answer(
    api: &Arc<Api>,
    reply: Reply,
    protocol: Protocol,
    request_id: &str,
    started: std::time::Instant,
    op: &str,
) -> Reply {
    let reply = match protocol {
        Protocol::S3 => reply
            .header("x-amz-request-id", request_id)
            .header("x-amz-id-2", request_id),
        _ => reply.header("x-amzn-requestid", request_id),
    };
    api.metrics.observe(
        metric_label(op),
        reply.status,
        started.elapsed().as_secs_f64(),
    );
    reply
}

/// Makes the deferred changes of a request whose event is durable; on the first failure the
/// rest are forgotten and the request fails (its event already says it succeeded: logged).
async fn commit_deferred(
    deferred: Vec<Deferred>,
    result: Result<Reply, ApiError>,
    op: &str,
) -> Result<Reply, ApiError> {
    let mut result = result;
    let mut pending = deferred.into_iter();
    while let Some(d) = pending.next() {
        let outcome = tokio::task::spawn_blocking(d.commit)
            .await
            .unwrap_or_else(|e| Err(ApiError::internal(format!("commit task failed: {e}"))));
        match (outcome, &mut result) {
            (Ok(c), Ok(reply)) => {
                reply.headers.extend(c.headers);
                if let Some(b) = c.body {
                    reply.body = b;
                }
            }
            (Ok(_), Err(_)) => {}
            (Err(e), _) => {
                tracing::error!(op, error = %e.message, "a change whose event is recorded could not be made");
                for rest in pending.by_ref() {
                    if let Some(a) = rest.abort {
                        a();
                    }
                }
                result = Err(e);
            }
        }
    }
    result
}

/// Fuzzing only (feature `fuzzing`, never in the server): runs an S3 request through
/// precheck, body decoding and the S3 handler as the account root, without a signature and
/// without recording it, and builds the event record the edge would write (so record
/// construction is exercised too). Returns the reply and the record's JSON.
#[cfg(feature = "fuzzing")]
pub async fn fuzz_s3_as_root(api: &Arc<Api>, mut req: HttpRequest) -> (Reply, Option<Vec<u8>>) {
    let now = api.clock.now();
    if let Err(e) = precheck(api, &req, Protocol::S3) {
        return (wire::error_reply(Protocol::S3, &e, "fuzz", false), None);
    }
    if let Err(e) = decode_s3_body(&mut req, None, "") {
        return (wire::error_reply(Protocol::S3, &e, "fuzz", false), None);
    }
    let caller = caller_of(api, "AKIAFUZZ", KeyOwner::Root);
    let op = crate::s3::operation(&req);
    let mut ctx = Ctx {
        api,
        caller: &caller,
        region: api.opts.default_region.clone(),
        req: &req,
        now,
        request_id: "fuzz".into(),
        audit: Audit {
            event_name: op.clone(),
            ..Default::default()
        },
        resource_policies: Vec::new(),
        keys: ConditionKeys::new(),
        authorized: false,
        deferred: Vec::new(),
        effect: None,
    };
    let result = crate::s3::handle(&mut ctx, &op).await;
    let result = match result {
        Ok(_) if !ctx.authorized => Err(ApiError::internal(format!(
            "handler for {op} returned without authorizing"
        ))),
        r => r,
    };
    let rec = build_record(&ctx, Service::S3, &result).to_json();
    let deferred = std::mem::take(&mut ctx.deferred);
    drop(ctx);
    let result = match result {
        Ok(r) => commit_deferred(deferred, Ok(r), &op).await,
        Err(e) => Err(e),
    };
    let reply = match result {
        Ok(r) => r,
        Err(e) => wire::error_reply(Protocol::S3, &e, "fuzz", req.method == "HEAD"),
    };
    (reply, Some(rec))
}

/// The operation label of a request's metrics: a known operation name, else `unknown` (the
/// name comes from the client; unbounded labels would let anyone grow the metrics).
fn metric_label(op: &str) -> &str {
    let known = crate::cloudtrail::OPERATIONS.contains(&op)
        || crate::cloudtrail::UNSUPPORTED.contains(&op)
        || crate::iam_api::OPERATIONS.contains(&op)
        || crate::sts::OPERATIONS.contains(&op)
        || op == "PutAuditEvents"
        || crate::s3::OPERATIONS.contains(&op);
    if known {
        op
    } else {
        "unknown"
    }
}

/// Access-denied errors are built before the protocol is known to the helper; give them the
/// right shape here.
fn fix_denied_protocol(mut e: ApiError, protocol: Protocol) -> ApiError {
    if e.code == "AccessDeniedException" {
        match protocol {
            Protocol::Query => {
                e.code = "AccessDenied".into();
                e.status = 403;
            }
            Protocol::S3 => {
                e.code = "AccessDenied".into();
                e.status = 403;
                e.message = "Access Denied".into();
            }
            _ => {}
        }
    }
    e
}

fn build_record(ctx: &Ctx, service: Service, result: &Result<Reply, ApiError>) -> EventRecord {
    let a = &ctx.audit;
    let mut rec = match &a.data_event {
        Some(d) => d.clone(),
        None => {
            let mut r = builder::management(
                service.event_source(),
                &a.event_name,
                &ctx.region,
                ctx.now,
                ctx.caller.identity.clone(),
                a.read_only,
            );
            r.request_parameters = a.request_parameters.clone();
            r.resources = a.resources.clone();
            r
        }
    };
    rec.user_identity = Some(ctx.caller.identity.clone());
    if let Some(Value::Object(m)) = rec.request_parameters.as_mut() {
        m.retain(|k, _| !wire::is_auth_param(k));
    }
    rec.recipient_account_id = Some(ctx.api.opts.account.clone());
    rec.request_id = Some(ctx.request_id.clone());
    if a.additional_event_data.is_some() {
        rec.additional_event_data = a.additional_event_data.clone();
    }
    match result {
        Ok(_) if a.error.is_some() => {
            let (code, message) = a.error.clone().unwrap_or_default();
            rec.error_code = Some(code);
            rec.error_message = Some(message);
            rec.response_elements = None;
        }
        Ok(_) => rec.response_elements = a.response_elements.clone(),
        Err(e) => {
            rec.error_code = Some(e.code.clone());
            rec.error_message = Some(e.message.clone());
            rec.response_elements = None;
        }
    }
    rec
}

#[allow(clippy::too_many_arguments)]
async fn finish(
    api: &Arc<Api>,
    req: &HttpRequest,
    mut rec: EventRecord,
    result: Result<Reply, ApiError>,
    protocol: Protocol,
    request_id: &str,
    started: std::time::Instant,
    op: &str,
    deferred: Vec<Deferred>,
) -> Reply {
    stamp(&mut rec, req, request_id);
    let head = req.method == "HEAD";
    let recorded = api.record(&rec).await;
    let result = match (&recorded, result) {
        (Ok(()), Ok(r)) => commit_deferred(deferred, Ok(r), op).await,
        (_, r) => {
            // Nothing prepared becomes visible: the event is not durable (or the handler failed).
            for d in deferred {
                if let Some(a) = d.abort {
                    a();
                }
            }
            r
        }
    };
    let reply = match (recorded, result) {
        (Ok(()), Ok(r)) => r,
        (Ok(()), Err(e)) => wire::error_reply(protocol, &e, request_id, head),
        (Err(e), _) => wire::error_reply(protocol, &e, request_id, head),
    };
    answer(api, reply, protocol, request_id, started, op)
}
