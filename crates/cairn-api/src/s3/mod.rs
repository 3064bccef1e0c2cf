//! S3 (restXml), path-style and virtual-host-style. The router ([`router`]) reads a request
//! once into an [`S3Op`] with its typed input (or, for a proxied bucket, what to forward);
//! this module records it (object calls are data events, spec §2.3), authorizes it (the
//! caller's policies, the bucket policy, the request's condition keys) and hands it to its
//! family: `bucket`, `bucket_config`, `acl`, `lock`, `list`, `get`, `put`, `copy`, `delete`,
//! `tagging`, `restore`, `multipart`; `proxy` forwards to an upstream.

pub mod access;
pub mod acl;
pub mod bucket;
pub mod bucket_config;
pub mod chunked;
pub mod copy;
pub mod delete;
pub mod delivery;
pub mod error;
pub mod get;
mod intake;
pub mod lifecycle;
pub mod list;
pub mod lock;
pub mod multipart;
pub mod proxy;
pub mod put;
pub mod request;
pub mod restore;
pub mod router;
pub mod sse;
pub mod tagging;
pub mod uploads;

pub use copy::CopySource;
pub use error::{store_error, S3Error};
pub use get::archived;
pub use request::{S3Call, S3Request};
pub use router::{classify, target, S3Op};

use crate::edge::{Ctx, HttpRequest};
use crate::protocol::{ApiError, Protocol, Reply};
use crate::service::{BoxFuture, Service, Signed};
use crate::Api;
use cairn_record::{builder, Arn, Resource};
use cairn_store::StoreError;
use serde_json::{json, Map, Value};

/// The S3 service (signing name `s3`); it takes every request no other service claims.
pub struct S3;

impl Service for S3 {
    type Op = S3Call;

    fn signing_name(&self) -> &'static str {
        "s3"
    }
    fn event_source(&self) -> &'static str {
        "s3.amazonaws.com"
    }
    fn protocol(&self) -> Protocol {
        Protocol::S3
    }
    fn claims_unsigned(&self, _req: &HttpRequest) -> bool {
        true
    }
    fn sigv2_resource(&self, req: &HttpRequest) -> Option<String> {
        let t = target(req);
        Some(if t.virtual_host {
            format!("/{}{}", t.bucket.unwrap_or_default(), req.path)
        } else {
            req.path.clone()
        })
    }
    fn resource_region(&self, api: &Api, req: &HttpRequest) -> Option<String> {
        target(req).bucket.and_then(|b| bucket::region_of(api, &b))
    }
    fn operation_name(&self, req: &HttpRequest) -> Result<String, ApiError> {
        Ok(classify(req).to_string())
    }
    fn operations(&self) -> &'static [&'static str] {
        S3Op::NAMES
    }
    fn mutates(&self, name: &str) -> bool {
        !router::read_only(name)
    }
    fn streams_body(&self, api: &Api, req: &HttpRequest) -> bool {
        proxy::streams_request(api, req) || streams_to_store(api, req)
    }
    fn prepare(&self, req: &mut HttpRequest, signed: Signed<'_>) -> Result<(), ApiError> {
        chunked::decode_request(req, signed.auth, signed.secret)
    }
    fn route(&self, api: &Api, req: &HttpRequest) -> Result<S3Call, ApiError> {
        router::route(api, req)
    }
    fn audit_unrouted(&self, ctx: &mut Ctx<'_>, req: &HttpRequest, name: &str) {
        // Recorded as it would have been had its inputs parsed (object calls as data events).
        let (r, _) = router::request_of(req, name);
        record(ctx, &r, name);
    }
    fn handle<'a>(
        &'a self,
        ctx: &'a mut Ctx<'_>,
        call: S3Call,
    ) -> BoxFuture<'a, Result<Reply, ApiError>> {
        Box::pin(handle(ctx, call))
    }
}

/// Whether `req` is a PutObject or UploadPart on an embedded bucket, whose body the handler
/// receives as it arrives ([`intake`]) rather than the edge reading it whole.
fn streams_to_store(api: &Api, req: &HttpRequest) -> bool {
    if req.method != "PUT" {
        return false;
    }
    // Only an S3 request (a request signed for another service never skips hashing).
    let signed_for_s3 = crate::service::service_for(req, Some("s3"))
        .is_ok_and(|s| s.signing_name() == "s3")
        && (req
            .query_params()
            .iter()
            .any(|(k, _)| k == "AWSAccessKeyId")
            || crate::edge::presented(req).is_ok_and(|a| a.service == "s3"));
    let t = target(req);
    signed_for_s3
        && t.key.is_some()
        && t.bucket
            .as_ref()
            .is_some_and(|b| !api.opts.proxies.contains_key(b))
        && matches!(router::classify(req), "PutObject" | "UploadPart")
}

async fn handle(ctx: &mut Ctx<'_>, call: S3Call) -> Result<Reply, ApiError> {
    match call {
        S3Call::Proxied(req, fwd) => {
            record(ctx, &req, fwd.name);
            ctx.writes_elsewhere();
            if !ctx.caller.is_root() {
                ctx.keys = access::request_keys(ctx, &req, fwd.name);
            }
            proxy::forward(ctx, &req, fwd).await
        }
        S3Call::Embedded(req, op) => {
            let name = op.name();
            // The bucket policy takes part in every authorization of a request on the bucket
            // — but the account root can always read, replace or remove it (as in S3: a policy
            // cannot lock the owner out of its own bucket).
            let policy_op = matches!(
                name,
                "GetBucketPolicy" | "PutBucketPolicy" | "DeleteBucketPolicy"
            );
            let owner_on_policy = policy_op && ctx.caller.is_root();
            if !req.bucket.is_empty() && !owner_on_policy {
                ctx.resource_policies = access::bucket_policies(ctx, &req.bucket)?;
            }
            // Condition keys matter only where a policy is evaluated (the root without a
            // bucket policy is allowed everything).
            if !ctx.caller.is_root() || !ctx.resource_policies.is_empty() {
                ctx.keys = access::request_keys(ctx, &req, name);
                access::add_body_keys(ctx, &op);
            }
            if req.key.is_some() {
                access::add_existing_object_tags(ctx, name, &req).await?;
            }
            record(ctx, &req, name);
            // DeleteObjects authorizes key by key.
            if !matches!(op, S3Op::DeleteObjects(_)) {
                let action = router::action(name, req.version_id.is_some());
                let resource = resource(&req, name);
                ctx.authorize(&action, &resource)?;
                // The headers of a write that need permissions of their own (an ACL, tags,
                // object lock).
                match name {
                    "PutObject" | "CopyObject" | "CreateMultipartUpload" => {
                        access::authorize_header_actions(ctx, &req, &resource)?
                    }
                    "CreateBucket" => access::authorize_create_bucket_headers(ctx, &req)?,
                    _ => {}
                }
            }
            access::check_expected_owner(ctx, &req)?;
            if needs_bucket(name) {
                bucket_must_exist(ctx, &req.bucket)?;
            }
            // Every check passed: a write that would grow the data meets the disk reserve
            // before its body is read.
            ctx.check_reserve()?;
            dispatch(ctx, &req, op).await
        }
    }
}

/// The resource an operation is authorized on.
pub fn resource(req: &S3Request, name: &str) -> String {
    match (&req.key, name) {
        (
            _,
            "ListBuckets"
            | "GetPublicAccessBlock"
            | "PutPublicAccessBlock"
            | "DeletePublicAccessBlock",
        ) => "*".into(),
        (Some(k), _) => Arn::s3_object(&req.bucket, k).to_string(),
        (None, _) => Arn::s3_bucket(&req.bucket).to_string(),
    }
}

/// Whether the operation first checks that its bucket exists (the others do themselves, or
/// name no bucket, or find out from the store).
fn needs_bucket(name: &str) -> bool {
    !matches!(
        name,
        "ListBuckets"
            | "CreateBucket"
            | "DeleteBucket"
            | "GetObject"
            | "HeadObject"
            | "GetPublicAccessBlock"
            | "PutPublicAccessBlock"
            | "DeletePublicAccessBlock"
    )
}

async fn dispatch(ctx: &mut Ctx<'_>, req: &S3Request, op: S3Op) -> Result<Reply, ApiError> {
    use bucket_config::Config;
    use S3Op::*;
    let name = op.name();
    match op {
        ListBuckets => bucket::list_buckets(ctx).await,
        CreateBucket(i) => bucket::create(ctx, req, i).await,
        DeleteBucket => bucket::delete(ctx, req).await,
        HeadBucket => bucket::head(ctx, req),
        GetBucketLocation => bucket::location(ctx, req),
        GetBucketVersioning => bucket::get_versioning(ctx, req),
        PutBucketVersioning(i) => bucket::put_versioning(ctx, req, i),
        GetBucketPolicy => bucket::get_policy(ctx, req),
        PutBucketPolicy(i) => bucket::put_policy(ctx, req, i),
        DeleteBucketPolicy => bucket::delete_policy(ctx, req),
        GetBucketPublicAccessBlock => bucket_config::get(ctx, req, Config::PublicAccessBlock),
        GetBucketTagging => bucket_config::get(ctx, req, Config::Tagging),
        GetBucketLifecycle => bucket_config::get(ctx, req, Config::Lifecycle),
        GetBucketEncryption => bucket_config::get(ctx, req, Config::Encryption),
        PutBucketPublicAccessBlock(c) => {
            bucket_config::put(ctx, req, Config::PublicAccessBlock, c, None)
        }
        PutBucketTagging(c) => bucket_config::put(ctx, req, Config::Tagging, c, None),
        PutBucketEncryption(c) => bucket_config::put(ctx, req, Config::Encryption, c, None),
        PutBucketLifecycle(i) => {
            bucket_config::put(ctx, req, Config::Lifecycle, i.config, Some(i.min_size))
        }
        DeleteBucketPublicAccessBlock => bucket_config::delete(ctx, req, Config::PublicAccessBlock),
        DeleteBucketTagging => bucket_config::delete(ctx, req, Config::Tagging),
        DeleteBucketLifecycle => bucket_config::delete(ctx, req, Config::Lifecycle),
        DeleteBucketEncryption => bucket_config::delete(ctx, req, Config::Encryption),
        GetBucketCors
        | GetBucketWebsite
        | GetBucketAccelerateConfiguration
        | GetBucketRequestPayment
        | GetBucketLogging
        | GetBucketReplication
        | GetBucketNotification
        | GetBucketOwnershipControls
        | GetBucketPolicyStatus => bucket_config::read_unconfigured(ctx, req, name),
        GetPublicAccessBlock(i) => bucket_config::get_account_pab(ctx, i),
        PutPublicAccessBlock(i) => bucket_config::put_account_pab(ctx, i),
        DeletePublicAccessBlock(i) => bucket_config::delete_account_pab(ctx, i),
        GetBucketAcl => acl::get_bucket(ctx, req),
        PutBucketAcl(a) => acl::put_bucket(ctx, req, a),
        GetObjectAcl => acl::get_object(ctx, req).await,
        PutObjectAcl(a) => acl::put_object(ctx, req, a).await,
        GetObjectLockConfiguration => lock::get_config(ctx, req),
        PutObjectLockConfiguration(i) => lock::put_config(ctx, req, i).await,
        GetObjectRetention => lock::get_retention(ctx, req).await,
        PutObjectRetention(i) => lock::put_retention(ctx, req, i).await,
        GetObjectLegalHold => lock::get_legal_hold(ctx, req).await,
        PutObjectLegalHold(i) => lock::put_legal_hold(ctx, req, i).await,
        ListObjects(i) | ListObjectsV2(i) => list::objects(ctx, req, i).await,
        ListObjectVersions(i) => list::versions(ctx, req, i).await,
        ListMultipartUploads(i) => multipart::list_uploads(ctx, req, i),
        GetObject(i) => get::get(ctx, req, i, false).await,
        HeadObject(i) => get::get(ctx, req, i, true).await,
        GetObjectAttributes(a) => get::attributes(ctx, req, a).await,
        PutObject(i) => put::put(ctx, req, i).await,
        CopyObject(i) => copy::copy(ctx, req, i).await,
        DeleteObject => delete::delete(ctx, req).await,
        DeleteObjects(i) => delete::delete_objects(ctx, req, i).await,
        GetObjectTagging => tagging::get(ctx, req).await,
        PutObjectTagging(t) => tagging::put(ctx, req, t).await,
        DeleteObjectTagging => tagging::delete(ctx, req).await,
        RestoreObject(i) => restore::restore(ctx, req, i).await,
        CreateMultipartUpload(i) => multipart::create(ctx, req, i).await,
        UploadPart(i) => multipart::upload_part(ctx, req, i).await,
        UploadPartCopy(i) => multipart::upload_part_copy(ctx, req, i).await,
        CompleteMultipartUpload(i) => multipart::complete(ctx, req, i).await,
        AbortMultipartUpload(i) => multipart::abort(ctx, req, i),
        ListParts(i) => multipart::list_parts(ctx, req, i),
    }
}

/// Records the request as S3 does: object (and object-listing) calls as data events, the
/// others as management events naming the bucket and the sub-resource.
fn record(ctx: &mut Ctx<'_>, req: &S3Request, name: &str) {
    let account = ctx.api.opts.account.clone();
    let sub = router::event_subresource(name);
    if !router::data_event(name) {
        ctx.audit.read_only = router::read_only(name);
        let mut params = Map::new();
        if router::account_level(name) {
            let account = req.header("x-amz-account-id").unwrap_or("");
            params.insert("accountId".into(), json!(account));
        } else {
            if !req.bucket.is_empty() {
                params.insert("bucketName".into(), json!(req.bucket));
            }
            params.insert("Host".into(), json!(req.host));
            if let Some(s) = sub {
                params.insert(s.into(), json!(""));
            }
            bucket::body_params(name, req, &mut params);
        }
        ctx.audit.request_parameters = Some(Value::Object(params));
        return;
    }
    let mut rec = match name {
        "ListObjects" | "ListObjectsV2" | "ListObjectVersions" => {
            let mut r = builder::s3_list(
                &ctx.region,
                ctx.now,
                ctx.caller.identity.clone(),
                &account,
                &req.bucket,
                req.param("prefix").unwrap_or_default(),
                name == "ListObjectsV2",
                &req.host,
            );
            if name == "ListObjectVersions" {
                r.event_name = name.into();
            }
            r
        }
        _ => {
            let mut r = builder::s3_object(
                name,
                &ctx.region,
                ctx.now,
                ctx.caller.identity.clone(),
                &account,
                &req.bucket,
                req.object_key(),
                &req.host,
            );
            if req.key.is_none() {
                // A call on the bucket itself (HeadBucket, DeleteObjects, ListMultipartUploads).
                r.request_parameters = Some(json!({"bucketName": req.bucket, "Host": req.host}));
                r.resources = Some(vec![Resource {
                    account_id: Some(account),
                    resource_type: "AWS::S3::Bucket".into(),
                    arn: Some(Arn::s3_bucket(&req.bucket).to_string()),
                    arn_prefix: None,
                }]);
            }
            r
        }
    };
    rec.read_only = Some(router::read_only(name));
    if let Some(Value::Object(m)) = rec.request_parameters.as_mut() {
        let mut add = |k: &str, v: &str| {
            m.insert(k.into(), json!(v));
        };
        if let Some(s) = sub.filter(|_| name != "ListObjectVersions") {
            add(s, "");
        }
        if name == "DeleteObjects" {
            add("delete", "");
        }
        if let Some(v) = &req.version_id {
            add("versionId", v);
        }
        if let Some(id) = req.param("uploadId") {
            add("uploadId", id);
        }
        if matches!(name, "CopyObject" | "UploadPartCopy") {
            if let Some(src) = req.header("x-amz-copy-source") {
                add("x-amz-copy-source", src);
            }
        }
    }
    ctx.audit.data_event = Some(rec);
}

/// `additionalEventData` of a data event moving `bytes_in` and `bytes_out` bytes.
pub(crate) fn transfer(ctx: &mut Ctx<'_>, req: &S3Request, bytes_in: u64, bytes_out: u64) {
    ctx.audit.additional_event_data = Some(json!({
        "SignatureVersion": req.signature_version(),
        "AuthenticationMethod": req.authentication_method(),
        "bytesTransferredIn": bytes_in,
        "bytesTransferredOut": bytes_out,
        "x-amz-id-2": ctx.request_id,
    }));
}

/// Refuses a request on a bucket that does not exist (or whose name is not valid).
pub(crate) fn bucket_must_exist(ctx: &Ctx<'_>, bucket: &str) -> Result<(), ApiError> {
    if cairn_store::check_bucket_name(bucket).is_err() {
        return Err(S3Error::InvalidBucketName(bucket.into()).into());
    }
    match ctx.api.store.bucket_exists(bucket) {
        Ok(true) => Ok(()),
        Ok(false) => Err(store_error(
            StoreError::NoSuchBucket(bucket.into()),
            bucket,
            None,
        )),
        Err(e) => Err(store_error(e, bucket, None)),
    }
}

/// An S3 answer with no body.
pub(crate) fn empty(status: u16) -> Reply {
    Reply {
        status,
        headers: vec![],
        body: bytes::Bytes::new(),
        stream: None,
    }
}

/// An S3 answer whose body is `value` as the document `root` in S3's namespace.
pub(crate) fn document<T: serde::Serialize>(root: &str, value: &T) -> Reply {
    match crate::protocol::xml::document_in(root, crate::protocol::S3_XMLNS, value) {
        body if body.is_empty() => crate::protocol::unserialized(Protocol::S3),
        body => Reply::s3_xml(200, body),
    }
}

/// The owner S3 names in listings and ACLs: the account.
#[derive(serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Owner {
    #[serde(rename = "ID")]
    pub id: String,
    pub display_name: String,
}

impl Owner {
    pub fn of(ctx: &Ctx<'_>) -> Owner {
        Owner {
            id: ctx.api.opts.account.clone(),
            display_name: ctx.api.opts.account.clone(),
        }
    }
}

/// S3's timestamps in documents: `2025-01-02T03:04:05.000Z`.
pub(crate) fn s3_time(t: chrono::DateTime<chrono::Utc>) -> String {
    cairn_record::time::iso_millis(t)
}

/// S3's timestamps in headers (RFC 7231).
pub(crate) fn http_date(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

/// Runs `f` on the blocking pool with the store.
pub(crate) async fn with_store<T: Send + 'static>(
    ctx: &Ctx<'_>,
    f: impl FnOnce(&dyn cairn_store::ObjectStore) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let store = ctx.api.store.clone();
    ctx.api.blocking(move || f(store.as_ref())).await
}
