//! The S3 read path (restXml): enough for validators and people to read the log bucket —
//! GetBucketLocation, ListObjects V1 and V2, GetObject, HeadObject, HeadBucket — with
//! path-style and virtual-host-style addressing. Object calls are data events (spec §2.3).

use crate::edge::{Ctx, HttpRequest};
use crate::wire::{xml_escape, ApiError, Reply, S3_XMLNS};
use base64::Engine;
use cairn_record::builder;
use cairn_store::{ObjectInfo, StoreError};

/// Bucket and key a request addresses.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub bucket: Option<String>,
    pub key: Option<String>,
    pub virtual_host: bool,
}

fn decode_path(p: &str) -> String {
    percent_encoding::percent_decode_str(p)
        .decode_utf8_lossy()
        .into_owned()
}

/// Virtual-host style when the Host is `BUCKET.s3…` or `BUCKET.localhost`; otherwise path style.
pub fn target(req: &HttpRequest) -> Target {
    let host = req.header("host").unwrap_or_default();
    let host = host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host);
    if let Some((first, rest)) = host.split_once('.') {
        let vhost = (rest.starts_with("s3") || rest == "localhost" || rest.ends_with(".localhost"))
            && host.parse::<std::net::IpAddr>().is_err()
            && cairn_store::check_bucket_name(first).is_ok();
        if vhost {
            let key = req.path.strip_prefix('/').unwrap_or(&req.path);
            return Target {
                bucket: Some(first.to_string()),
                key: (!key.is_empty()).then(|| decode_path(key)),
                virtual_host: true,
            };
        }
    }
    let p = req.path.strip_prefix('/').unwrap_or(&req.path);
    let (b, k) = match p.split_once('/') {
        Some((b, k)) => (b, Some(k)),
        None => (p, None),
    };
    Target {
        bucket: (!b.is_empty()).then(|| decode_path(b)),
        key: k.filter(|k| !k.is_empty()).map(decode_path),
        virtual_host: false,
    }
}

/// `SignatureVersion` of a data event's additionalEventData.
pub fn signature_version(req: &HttpRequest) -> &'static str {
    if has_param(req, "AWSAccessKeyId") {
        "SigV2"
    } else {
        "SigV4"
    }
}

/// `AuthenticationMethod` of a data event's additionalEventData.
pub fn authentication_method(req: &HttpRequest) -> &'static str {
    if req.header("authorization").is_some() {
        "AuthHeader"
    } else {
        "QueryString"
    }
}

fn has_param(req: &HttpRequest, name: &str) -> bool {
    req.query
        .split('&')
        .any(|kv| kv.split('=').next() == Some(name))
}

/// A bucket configuration kept as the document the client sent (after checking it is
/// well-formed with the right root element) and returned as is.
struct StoredConfig {
    param: &'static str,
    root: &'static str,
    put: &'static str,
    get: &'static str,
    delete: &'static str,
    /// The error a GET gets when nothing is stored (`None`: a default document instead).
    missing: Option<(&'static str, &'static str)>,
}

const STORED_CONFIGS: &[StoredConfig] = &[
    StoredConfig {
        param: "publicAccessBlock",
        root: "PublicAccessBlockConfiguration",
        put: "PutBucketPublicAccessBlock",
        get: "GetBucketPublicAccessBlock",
        delete: "DeleteBucketPublicAccessBlock",
        missing: Some((
            "NoSuchPublicAccessBlockConfiguration",
            "The public access block configuration was not found",
        )),
    },
    StoredConfig {
        param: "tagging",
        root: "Tagging",
        put: "PutBucketTagging",
        get: "GetBucketTagging",
        delete: "DeleteBucketTagging",
        missing: Some(("NoSuchTagSet", "The TagSet does not exist")),
    },
    StoredConfig {
        param: "lifecycle",
        root: "LifecycleConfiguration",
        put: "PutBucketLifecycle",
        get: "GetBucketLifecycle",
        delete: "DeleteBucketLifecycle",
        missing: Some((
            "NoSuchLifecycleConfiguration",
            "The lifecycle configuration does not exist",
        )),
    },
    StoredConfig {
        param: "encryption",
        root: "ServerSideEncryptionConfiguration",
        put: "PutBucketEncryption",
        get: "GetBucketEncryption",
        delete: "DeleteBucketEncryption",
        missing: None,
    },
];

fn config_key(param: &str, bucket: &str) -> String {
    format!("bucket-config/{param}/{bucket}")
}

/// Bucket sub-resources that cannot be configured yet, answered with AWS's "not configured" (or
/// default) reply, as the AWS provider for Terraform reads them for every bucket:
/// (query parameter, operation). Configurable ones are [`STORED_CONFIGS`] and the policy.
const BUCKET_CONFIG_READS: &[(&str, &str)] = &[
    ("cors", "GetBucketCors"),
    ("website", "GetBucketWebsite"),
    ("versioning", "GetBucketVersioning"),
    ("accelerate", "GetBucketAccelerateConfiguration"),
    ("requestPayment", "GetBucketRequestPayment"),
    ("logging", "GetBucketLogging"),
    ("replication", "GetBucketReplication"),
    ("notification", "GetBucketNotification"),
    ("ownershipControls", "GetBucketOwnershipControls"),
    ("policyStatus", "GetBucketPolicyStatus"),
];

/// Every name [`operation`] returns.
pub const OPERATIONS: &[&str] = &[
    "PutPublicAccessBlock",
    "GetPublicAccessBlock",
    "DeletePublicAccessBlock",
    "GetObjectTagging",
    "PutObjectTagging",
    "DeleteObjectTagging",
    "GetObjectRetention",
    "PutObjectRetention",
    "GetObjectLegalHold",
    "PutObjectLegalHold",
    "RestoreObject",
    "GetObjectAcl",
    "PutObjectAcl",
    "GetObjectAttributes",
    "PutObjectLockConfiguration",
    "PutBucketAcl",
    "GetBucketPolicy",
    "GetBucketCors",
    "GetBucketWebsite",
    "GetBucketVersioning",
    "GetBucketAccelerateConfiguration",
    "GetBucketRequestPayment",
    "GetBucketLogging",
    "GetBucketLifecycle",
    "GetBucketReplication",
    "GetBucketEncryption",
    "GetObjectLockConfiguration",
    "GetBucketTagging",
    "GetBucketAcl",
    "GetBucketPublicAccessBlock",
    "GetBucketNotification",
    "GetBucketOwnershipControls",
    "GetBucketPolicyStatus",
    "CreateMultipartUpload",
    "UploadPart",
    "UploadPartCopy",
    "CompleteMultipartUpload",
    "AbortMultipartUpload",
    "ListParts",
    "ListMultipartUploads",
    "DeleteObjects",
    "CopyObject",
    "PutBucketVersioning",
    "PutBucketPolicy",
    "DeleteBucketPolicy",
    "PutBucketPublicAccessBlock",
    "DeleteBucketPublicAccessBlock",
    "PutBucketTagging",
    "DeleteBucketTagging",
    "PutBucketLifecycle",
    "DeleteBucketLifecycle",
    "PutBucketEncryption",
    "DeleteBucketEncryption",
    "ListBuckets",
    "GetBucketLocation",
    "ListObjectVersions",
    "ListObjectsV2",
    "ListObjects",
    "HeadBucket",
    "GetObject",
    "HeadObject",
    "PutObject",
    "CreateBucket",
    "DeleteObject",
    "DeleteBucket",
    "PostObject",
    "UnsupportedS3Operation",
];

/// Where S3 Control serves the account's public access block.
const ACCOUNT_PAB_PATH: &str = "/v20180820/configuration/publicAccessBlock";

/// The operation name (also the event name) of an S3 request.
pub fn operation(req: &HttpRequest) -> String {
    let t = target(req);
    let m = req.method.as_str();
    if req.path == ACCOUNT_PAB_PATH && req.header("x-amz-account-id").is_some() {
        return match m {
            "PUT" => "PutPublicAccessBlock",
            "GET" => "GetPublicAccessBlock",
            "DELETE" => "DeletePublicAccessBlock",
            _ => "UnsupportedS3Operation",
        }
        .to_string();
    }
    if t.bucket.is_some() {
        let table = if t.key.is_some() {
            crate::s3_object_ext::OBJECT_OPS
        } else {
            crate::s3_object_ext::BUCKET_OPS
        };
        if let Some((_, _, op)) = table
            .iter()
            .find(|(method, param, _)| *method == m && has_param(req, param))
        {
            return op.to_string();
        }
    }
    match (m, &t.bucket, &t.key) {
        ("GET", None, _) => "ListBuckets",
        ("GET", Some(_), None) if has_param(req, "location") => "GetBucketLocation",
        ("GET", Some(_), None) if has_param(req, "policy") => "GetBucketPolicy",
        ("PUT", Some(_), None) if has_param(req, "policy") => "PutBucketPolicy",
        ("DELETE", Some(_), None) if has_param(req, "policy") => "DeleteBucketPolicy",
        (m, Some(_), None)
            if STORED_CONFIGS
                .iter()
                .any(|c| has_param(req, c.param) && matches!(m, "GET" | "PUT" | "DELETE")) =>
        {
            let c = STORED_CONFIGS
                .iter()
                .find(|c| has_param(req, c.param))
                .map(|c| match m {
                    "GET" => c.get,
                    "PUT" => c.put,
                    _ => c.delete,
                });
            c.unwrap_or("UnsupportedS3Operation")
        }
        ("GET", Some(_), None) if BUCKET_CONFIG_READS.iter().any(|(p, _)| has_param(req, p)) => {
            BUCKET_CONFIG_READS
                .iter()
                .find(|(p, _)| has_param(req, p))
                .map(|(_, op)| *op)
                .unwrap_or("UnsupportedS3Operation")
        }
        ("GET", Some(_), None) if has_param(req, "versions") => "ListObjectVersions",
        ("GET", Some(_), None) if has_param(req, "uploads") => "ListMultipartUploads",
        ("POST", Some(_), Some(_)) if has_param(req, "uploads") => "CreateMultipartUpload",
        ("POST", Some(_), Some(_)) if has_param(req, "uploadId") => "CompleteMultipartUpload",
        ("PUT", Some(_), Some(_))
            if has_param(req, "uploadId") && req.header("x-amz-copy-source").is_some() =>
        {
            "UploadPartCopy"
        }
        ("PUT", Some(_), Some(_)) if has_param(req, "uploadId") => "UploadPart",
        ("DELETE", Some(_), Some(_)) if has_param(req, "uploadId") => "AbortMultipartUpload",
        ("GET", Some(_), Some(_)) if has_param(req, "uploadId") => "ListParts",
        ("GET", Some(_), None) if req.query_param("list-type").as_deref() == Some("2") => {
            "ListObjectsV2"
        }
        ("GET", Some(_), None) if req.query.is_empty() || !has_subresource(req) => "ListObjects",
        ("HEAD", Some(_), None) => "HeadBucket",
        ("GET", Some(_), Some(_)) if !has_subresource(req) => "GetObject",
        ("HEAD", Some(_), Some(_)) => "HeadObject",
        ("PUT", Some(_), Some(_))
            if !has_subresource(req) && req.header("x-amz-copy-source").is_some() =>
        {
            "CopyObject"
        }
        ("PUT", Some(_), Some(_)) if !has_subresource(req) => "PutObject",
        ("POST", Some(_), None) if has_param(req, "delete") => "DeleteObjects",
        ("PUT", Some(_), None) if has_param(req, "versioning") => "PutBucketVersioning",
        ("PUT", Some(_), None) if req.query.is_empty() => "CreateBucket",
        ("DELETE", Some(_), Some(_)) if !has_subresource(req) => "DeleteObject",
        ("DELETE", Some(_), None) if req.query.is_empty() => "DeleteBucket",
        ("POST", _, _) => "PostObject",
        _ => "UnsupportedS3Operation",
    }
    .to_string()
}

/// Query parameters that select a sub-resource rather than filter a listing or an object.
fn has_subresource(req: &HttpRequest) -> bool {
    !non_listing_params(req).is_empty()
}

/// The names of the request's sub-resource parameters (`acl`, `policy`, `uploads`,
/// `uploadId`, …), without the paging parameters of the listings they select.
pub fn subresources(req: &HttpRequest) -> Vec<&str> {
    const PAGING: &[&str] = &[
        "key-marker",
        "version-id-marker",
        "upload-id-marker",
        "part-number-marker",
        "max-parts",
        "max-uploads",
    ];
    let mut out = non_listing_params(req);
    out.retain(|p| !PAGING.contains(p));
    out
}

fn non_listing_params(req: &HttpRequest) -> Vec<&str> {
    const LISTING: &[&str] = &[
        "prefix",
        "marker",
        "max-keys",
        "delimiter",
        "encoding-type",
        "list-type",
        "continuation-token",
        "start-after",
        "fetch-owner",
        "versionId",
        "partNumber",
        "response-content-type",
        "response-content-disposition",
        "response-cache-control",
        "response-content-encoding",
        "response-content-language",
        "response-expires",
        "X-Amz-Algorithm",
        "X-Amz-Credential",
        "X-Amz-Date",
        "X-Amz-Expires",
        "X-Amz-SignedHeaders",
        "X-Amz-Signature",
        "X-Amz-Security-Token",
        "x-id",
        "AWSAccessKeyId",
        "Signature",
        "Expires",
        "x-amz-security-token",
    ];
    let mut out: Vec<&str> = req
        .query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| kv.split('=').next().unwrap_or(""))
        .filter(|name| !LISTING.contains(name))
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

pub(crate) fn store_error(e: StoreError, bucket: &str, key: Option<&str>) -> ApiError {
    match e {
        StoreError::NoSuchBucket(_) => {
            ApiError::new("NoSuchBucket", 404, "The specified bucket does not exist")
                .with("BucketName", bucket)
        }
        StoreError::NoSuchKey { .. } => {
            ApiError::new("NoSuchKey", 404, "The specified key does not exist.")
                .with("Key", key.unwrap_or_default())
        }
        StoreError::NoSuchVersion(v) => ApiError::new(
            "NoSuchVersion",
            404,
            "The specified version does not exist.",
        )
        .with("Key", key.unwrap_or_default())
        .with("VersionId", v),
        StoreError::DeleteMarker(_) => ApiError::new(
            "MethodNotAllowed",
            405,
            "The specified method is not allowed against this resource.",
        )
        .with("Method", "GET")
        .with("ResourceType", "DeleteMarker"),
        StoreError::BucketNotEmpty(_) => ApiError::new(
            "BucketNotEmpty",
            409,
            "The bucket you tried to delete is not empty",
        )
        .with("BucketName", bucket),
        StoreError::InvalidKey(_) => ApiError::client("KeyTooLongError", "Your key is too long"),
        StoreError::InvalidBucketName(_) => {
            ApiError::client("InvalidBucketName", "The specified bucket is not valid.")
                .with("BucketName", bucket)
        }
        e => ApiError::internal(e),
    }
}

pub(crate) fn http_date(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

fn s3_time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

fn object_headers(mut r: Reply, info: &ObjectInfo) -> Reply {
    r.headers.retain(|(k, _)| k != "content-type");
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
    if let Some(sc) = info.system.get("storage-class") {
        r = r.header("x-amz-storage-class", sc.clone());
    }
    if let Some(restore) = info.system.get("restore") {
        r = r.header("x-amz-restore", restore.clone());
    }
    // The embedded store encrypts every body at rest (SSE-S3), as S3 does by default.
    r = r.header("x-amz-server-side-encryption", "AES256");
    if let Some(tags) = info.system.get("tagging") {
        let n = form_urlencoded::parse(tags.as_bytes()).count();
        if n > 0 {
            r = r.header("x-amz-tagging-count", n.to_string());
        }
    }
    if let Some(mode) = info.system.get("retention-mode") {
        r = r.header("x-amz-object-lock-mode", mode.clone());
    }
    if let Some(until) = info.system.get("retain-until") {
        r = r.header("x-amz-object-lock-retain-until-date", until.clone());
    }
    if let Some(hold) = info.system.get("legal-hold") {
        r = r.header("x-amz-object-lock-legal-hold", hold.clone());
    }
    r
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

/// The stored checksum header(s) of an object, sent when the client asks with
/// `x-amz-checksum-mode: ENABLED` (and the whole object is read).
fn checksum_headers(mut r: Reply, info: &ObjectInfo) -> Reply {
    for (k, v) in &info.system {
        if let Some(alg) = k.strip_prefix("checksum-") {
            r = r.header(&format!("x-amz-checksum-{alg}"), v.clone());
            let kind = if v.contains('-') {
                "COMPOSITE"
            } else {
                "FULL_OBJECT"
            };
            r = r.header("x-amz-checksum-type", kind);
        }
    }
    r
}

fn url_enc(s: &str) -> String {
    // What S3 applies with encoding-type=url: everything but unreserved characters and '/'.
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~')
        .remove(b'/');
    percent_encoding::utf8_percent_encode(s, SET).to_string()
}

pub async fn handle(ctx: &mut Ctx<'_>, op: &str) -> Result<Reply, ApiError> {
    if matches!(
        op,
        "PutPublicAccessBlock" | "GetPublicAccessBlock" | "DeletePublicAccessBlock"
    ) {
        return crate::s3_object_ext::account_public_access_block(ctx, op).await;
    }
    let t = target(ctx.req);
    let account = ctx.api.opts.account.clone();
    let host = ctx.req.header("host").unwrap_or_default().to_string();
    let bucket = t.bucket.clone().unwrap_or_default();
    // Keys are UTF-8: a path that does not decode to UTF-8 would otherwise be mapped (lossily)
    // onto another key.
    if percent_encoding::percent_decode_str(&ctx.req.path)
        .decode_utf8()
        .is_err()
    {
        ctx.no_authorization_needed();
        return Err(ApiError::client(
            "InvalidURI",
            "Couldn't parse the specified URI.",
        ));
    }
    // A proxied bucket: everything on it goes to its upstream.
    if let Some(target) = ctx.api.opts.proxies.get(&bucket).cloned() {
        if !ctx.caller.is_root() {
            ctx.keys = crate::s3_access::request_keys(ctx, op);
        }
        return crate::s3_proxy::forward(ctx, op, &bucket, &target).await;
    }
    if let Err(e) = crate::s3_access::refuse_sse_c(ctx.req) {
        ctx.no_authorization_needed();
        return Err(e);
    }
    // The bucket policy takes part in every authorization of a request on the bucket — but
    // the account root can always read, replace or remove it (as in S3: a policy cannot lock
    // the owner out of its own bucket).
    let policy_op = matches!(
        op,
        "GetBucketPolicy" | "PutBucketPolicy" | "DeleteBucketPolicy"
    );
    let root_on_policy = policy_op && ctx.caller.is_root();
    if !bucket.is_empty() && !root_on_policy {
        ctx.resource_policies = crate::s3_access::bucket_policies(ctx, &bucket)?;
    }
    // Condition keys matter only where a policy is evaluated (the root without a bucket
    // policy is allowed everything).
    if !ctx.caller.is_root() || !ctx.resource_policies.is_empty() {
        ctx.keys = crate::s3_access::request_keys(ctx, op);
    }
    if let Some(key) = &t.key {
        crate::s3_access::add_existing_object_tags(ctx, op, &bucket, key).await?;
    }
    match op {
        op if crate::s3_object_ext::OBJECT_OPS
            .iter()
            .any(|(_, _, o)| *o == op) =>
        {
            let key = t.key.clone().unwrap_or_default();
            crate::s3_object_ext::handle_object(ctx, op, &bucket, &key).await
        }
        op if crate::s3_object_ext::BUCKET_OPS
            .iter()
            .any(|(_, _, o)| *o == op) =>
        {
            crate::s3_object_ext::handle_bucket(ctx, op, &bucket, &host).await
        }
        "PutBucketPolicy" | "GetBucketPolicy" | "DeleteBucketPolicy" => {
            bucket_policy(ctx, op, &bucket, &host).await
        }
        op if STORED_CONFIGS
            .iter()
            .any(|c| c.put == op || c.get == op || c.delete == op) =>
        {
            stored_config(ctx, op, &bucket, &host).await
        }
        "GetBucketLocation" => {
            ctx.audit.read_only = true;
            ctx.audit.request_parameters =
                Some(serde_json::json!({"bucketName": bucket, "Host": host, "location": ""}));
            ctx.authorize("s3:GetBucketLocation", &format!("arn:aws:s3:::{bucket}"))?;
            bucket_must_exist(ctx, &bucket)?;
            let region = ctx.api.bucket_region(&bucket);
            let body = match region.as_deref() {
                None | Some("us-east-1") => format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<LocationConstraint xmlns=\"{S3_XMLNS}\"/>"
                ),
                Some(r) => format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<LocationConstraint xmlns=\"{S3_XMLNS}\">{}</LocationConstraint>",
                    xml_escape(r)
                ),
            };
            Ok(Reply::s3_xml(200, body))
        }
        "ListObjects" | "ListObjectsV2" => list(ctx, &bucket, op == "ListObjectsV2", &host).await,
        "ListBuckets" => {
            ctx.audit.read_only = true;
            ctx.audit.request_parameters = Some(serde_json::json!({"Host": host}));
            ctx.authorize("s3:ListAllMyBuckets", "*")?;
            let store = ctx.api.store.clone();
            let mut buckets = ctx
                .api
                .blocking(move || store.list_buckets().map_err(ApiError::internal))
                .await?;
            for name in ctx.api.opts.proxies.keys() {
                if !buckets.iter().any(|(b, _)| b == name) {
                    buckets.push((name.clone(), ctx.api.started));
                }
            }
            buckets.sort();
            let mut x = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListAllMyBucketsResult xmlns=\"{S3_XMLNS}\"><Owner><ID>{account}</ID><DisplayName>{account}</DisplayName></Owner><Buckets>"
            );
            for (name, created) in buckets {
                x.push_str(&format!(
                    "<Bucket><Name>{}</Name><CreationDate>{}</CreationDate></Bucket>",
                    xml_escape(&name),
                    s3_time(created)
                ));
            }
            x.push_str("</Buckets></ListAllMyBucketsResult>");
            Ok(Reply::s3_xml(200, x))
        }
        "CreateBucket" => create_bucket(ctx, &bucket, &host).await,
        "DeleteBucket" => {
            ctx.audit.request_parameters =
                Some(serde_json::json!({"bucketName": bucket, "Host": host}));
            ctx.authorize("s3:DeleteBucket", &format!("arn:aws:s3:::{bucket}"))?;
            // Checked now, done once the event is durable.
            let store = ctx.api.store.clone();
            let b2 = bucket.clone();
            ctx.api
                .blocking(move || {
                    if !store
                        .bucket_exists(&b2)
                        .map_err(|e| store_error(e, &b2, None))?
                    {
                        return Err(store_error(StoreError::NoSuchBucket(b2.clone()), &b2, None));
                    }
                    let empty = match store.list_versions(&b2, "", None, 1) {
                        Ok((v, _)) => v.is_empty(),
                        Err(StoreError::Unsupported(_)) => store
                            .list(&b2, "", None, 1)
                            .map_err(|e| store_error(e, &b2, None))?
                            .objects
                            .is_empty(),
                        Err(e) => return Err(store_error(e, &b2, None)),
                    };
                    if !empty {
                        return Err(store_error(
                            StoreError::BucketNotEmpty(b2.clone()),
                            &b2,
                            None,
                        ));
                    }
                    Ok(())
                })
                .await?;
            let (store, meta, b2) = (ctx.api.store.clone(), ctx.api.meta.clone(), bucket.clone());
            ctx.defer(
                Box::new(move || {
                    store
                        .delete_bucket(&b2)
                        .map_err(|e| store_error(e, &b2, None))?;
                    for k in [
                        format!("bucket-region/{b2}"),
                        format!("bucket-config/object-lock/{b2}"),
                        format!("bucket-acl/{b2}"),
                    ] {
                        let _ = meta.delete(&k);
                    }
                    Ok(crate::edge::Committed::default())
                }),
                None,
            );
            Ok(Reply {
                status: 204,
                headers: vec![],
                body: bytes::Bytes::new(),
                stream: None,
            })
        }
        op if BUCKET_CONFIG_READS.iter().any(|(_, o)| *o == op) => {
            bucket_config_read(ctx, op, &bucket, &host)
        }
        "HeadBucket" => {
            ctx.audit.data_event = Some({
                let mut r = builder::base(
                    "s3.amazonaws.com",
                    "HeadBucket",
                    &ctx.region,
                    ctx.now,
                    cairn_record::record::category::DATA,
                );
                r.read_only = Some(true);
                r.management_event = Some(false);
                r.request_parameters =
                    Some(serde_json::json!({"bucketName": bucket, "Host": host}));
                r.resources = Some(vec![cairn_record::Resource {
                    account_id: Some(account.clone()),
                    resource_type: "AWS::S3::Bucket".into(),
                    arn: Some(format!("arn:aws:s3:::{bucket}")),
                    arn_prefix: None,
                }]);
                r
            });
            ctx.authorize("s3:ListBucket", &format!("arn:aws:s3:::{bucket}"))?;
            bucket_must_exist(ctx, &bucket)?;
            let region = ctx
                .api
                .bucket_region(&bucket)
                .unwrap_or_else(|| "us-east-1".into());
            Ok(Reply::s3_xml(200, String::new()).header("x-amz-bucket-region", region))
        }
        "GetObject" | "HeadObject" => {
            let key = t.key.clone().unwrap_or_default();
            ctx.audit.data_event = Some(ctx.s3_object_event(op, &bucket, &key));
            let vid = ctx.req.query_param("versionId");
            ctx.authorize(
                if vid.is_some() {
                    "s3:GetObjectVersion"
                } else {
                    "s3:GetObject"
                },
                &format!("arn:aws:s3:::{bucket}/{key}"),
            )?;
            if let (Some(v), Some(serde_json::Value::Object(m))) = (
                &vid,
                ctx.audit
                    .data_event
                    .as_mut()
                    .and_then(|r| r.request_parameters.as_mut()),
            ) {
                m.insert("versionId".into(), serde_json::json!(v));
            }
            let store = ctx.api.store.clone();
            let (b2, k2) = (bucket.clone(), key.clone());
            let head = op == "HeadObject";
            let got = ctx
                .api
                .blocking(move || {
                    match (&vid, head) {
                        (Some(v), _) => store
                            .get_version(&b2, &k2, v)
                            .map(|o| (o.info, if head { Vec::new() } else { o.body })),
                        (None, true) => store.head(&b2, &k2).map(|i| (i, Vec::new())),
                        (None, false) => store.get(&b2, &k2).map(|o| (o.info, o.body)),
                    }
                    .map_err(|e| store_error(e, &b2, Some(&k2)))
                })
                .await?;
            let (info, body) = got;
            let size = info.size;
            if !head && archived(&info) {
                return Err(ApiError::new(
                    "InvalidObjectState",
                    403,
                    "The operation is not valid for the object's storage class",
                )
                .with(
                    "StorageClass",
                    info.system
                        .get("storage-class")
                        .cloned()
                        .unwrap_or_default(),
                ));
            }
            // Conditional requests (RFC 9110): If-Match before If-None-Match.
            if let Some(m) = ctx.req.header("if-match") {
                if !etag_matches(m, &info.etag) {
                    return Err(ApiError::new(
                        "PreconditionFailed",
                        412,
                        "At least one of the pre-conditions you specified did not hold",
                    )
                    .with("Condition", "If-Match"));
                }
            }
            if let Some(m) = ctx.req.header("if-none-match") {
                if etag_matches(m, &info.etag) {
                    return Ok(Reply {
                        status: 304,
                        headers: vec![("etag".into(), info.etag.clone())],
                        body: bytes::Bytes::new(),
                        stream: None,
                    });
                }
            }
            let range = match ctx.req.header("range") {
                Some(r) if !head => match byte_range(r, size) {
                    RangeAnswer::Whole => None,
                    RangeAnswer::Part(a, b) => Some((a, b)),
                    RangeAnswer::Unsatisfiable => {
                        return Err(ApiError::new(
                            "InvalidRange",
                            416,
                            "The requested range is not satisfiable",
                        )
                        .with("RangeRequested", r)
                        .with("ActualObjectSize", size.to_string()));
                    }
                },
                _ => None,
            };
            let (status, body) = match range {
                Some((a, b)) => (206, body[a as usize..=b as usize].to_vec()),
                None => (200, body),
            };
            let sent = if head { 0 } else { body.len() as u64 };
            ctx.audit.additional_event_data = Some(serde_json::json!({
                "SignatureVersion": crate::s3::signature_version(ctx.req),
                "AuthenticationMethod": crate::s3::authentication_method(ctx.req),
                "bytesTransferredIn": 0,
                "bytesTransferredOut": sent,
                "x-amz-id-2": ctx.request_id,
            }));
            let r = Reply {
                status,
                headers: vec![],
                body: bytes::Bytes::from(body),
                stream: None,
            };
            let mut r = object_headers(r, &info);
            if let Some(v) = &info.version_id {
                r = r.header("x-amz-version-id", v.clone());
            }
            if let Some((a, b)) = range {
                r = r.header("content-range", format!("bytes {a}-{b}/{size}"));
            } else if ctx
                .req
                .header("x-amz-checksum-mode")
                .is_some_and(|m| m.eq_ignore_ascii_case("ENABLED"))
            {
                r = checksum_headers(r, &info);
            }
            if head {
                r.body = bytes::Bytes::new();
                r = r.header("content-length", size.to_string());
            }
            Ok(r)
        }
        "CreateMultipartUpload"
        | "UploadPart"
        | "UploadPartCopy"
        | "CompleteMultipartUpload"
        | "AbortMultipartUpload"
        | "ListParts" => {
            let key = t.key.clone().unwrap_or_default();
            ctx.audit.data_event = Some(ctx.s3_object_event(op, &bucket, &key));
            let action = match op {
                "AbortMultipartUpload" => "s3:AbortMultipartUpload",
                "ListParts" => "s3:ListMultipartUploadParts",
                _ => "s3:PutObject",
            };
            let arn = format!("arn:aws:s3:::{bucket}/{key}");
            ctx.authorize(action, &arn)?;
            if op == "CreateMultipartUpload" {
                crate::s3_access::authorize_header_actions(ctx, &arn)?;
            }
            bucket_must_exist(ctx, &bucket)?;
            if op == "CreateMultipartUpload" {
                crate::s3_access::refuse_public_acl(ctx, &bucket)?;
            }
            let id = ctx.req.query_param("uploadId").unwrap_or_default();
            if let (Some(rec), false) = (ctx.audit.data_event.as_mut(), id.is_empty()) {
                if let Some(serde_json::Value::Object(m)) = rec.request_parameters.as_mut() {
                    m.insert("uploadId".into(), serde_json::json!(id));
                }
            }
            match op {
                "CreateMultipartUpload" => crate::s3_multipart::create(ctx, &bucket, &key).await,
                "UploadPart" => {
                    let n = ctx.req.query_param("partNumber").unwrap_or_default();
                    crate::s3_multipart::upload_part(ctx, &bucket, &key, &id, &n).await
                }
                "UploadPartCopy" => {
                    let n = ctx.req.query_param("partNumber").unwrap_or_default();
                    crate::s3_multipart::upload_part_copy(ctx, &bucket, &key, &id, &n).await
                }
                "CompleteMultipartUpload" => {
                    crate::s3_multipart::complete(ctx, &bucket, &key, &id).await
                }
                "AbortMultipartUpload" => crate::s3_multipart::abort(ctx, &bucket, &key, &id).await,
                _ => crate::s3_multipart::list_parts(ctx, &bucket, &key, &id).await,
            }
        }
        "ListMultipartUploads" => {
            let mut rec = ctx.s3_object_event(op, &bucket, "");
            rec.read_only = Some(true);
            ctx.audit.data_event = Some(rec);
            ctx.authorize(
                "s3:ListBucketMultipartUploads",
                &format!("arn:aws:s3:::{bucket}"),
            )?;
            bucket_must_exist(ctx, &bucket)?;
            crate::s3_multipart::list_uploads(ctx, &bucket).await
        }
        "DeleteObjects" => delete_objects(ctx, &bucket, &host).await,
        "PutBucketVersioning" => put_bucket_versioning(ctx, &bucket, &host).await,
        "ListObjectVersions" => list_versions(ctx, &bucket, &host).await,
        "CopyObject" => copy_object(ctx, &bucket, t.key.as_deref().unwrap_or("")).await,
        "PutObject" | "DeleteObject" => {
            let key = t.key.clone().unwrap_or_default();
            ctx.audit.data_event = Some(ctx.s3_object_event(op, &bucket, &key));
            let arn = format!("arn:aws:s3:::{bucket}/{key}");
            let action = match op {
                // Removing a version for good is its own permission.
                "DeleteObject" if ctx.req.query_param("versionId").is_some() => {
                    "s3:DeleteObjectVersion".to_string()
                }
                _ => format!("s3:{op}"),
            };
            ctx.authorize(&action, &arn)?;
            if op == "PutObject" {
                crate::s3_access::authorize_header_actions(ctx, &arn)?;
            }
            bucket_must_exist(ctx, &bucket)?;
            if op == "PutObject" {
                crate::s3_access::refuse_public_acl(ctx, &bucket)?;
            }
            if op == "DeleteObject" {
                let store = ctx.api.store.clone();
                let vid = ctx.req.query_param("versionId");
                // A version id is checked now (it must exist; object lock may protect it);
                // the delete itself happens once the event is durable.
                if let Some(v) = &vid {
                    let (s2, b3, k3, v3) = (store.clone(), bucket.clone(), key.clone(), v.clone());
                    let probe = ctx
                        .api
                        .blocking(move || Ok(s2.head_version(&b3, &k3, Some(&v3))))
                        .await?;
                    match probe {
                        Ok(info) => {
                            if crate::s3_object_ext::lock_enabled(ctx, &bucket)? {
                                crate::s3_object_ext::check_removable(ctx, &bucket, &info)?;
                            }
                        }
                        Err(StoreError::DeleteMarker(_)) | Err(StoreError::NoSuchKey { .. }) => {}
                        Err(e) => return Err(store_error(e, &bucket, Some(&key))),
                    }
                } else {
                    bucket_must_exist(ctx, &bucket)?;
                }
                let (b2, k2) = (bucket.clone(), key.clone());
                ctx.defer(
                    Box::new(move || {
                        let outcome = match &vid {
                            Some(v) => store.delete_version(&b2, &k2, v),
                            None => store.delete_object(&b2, &k2),
                        }
                        .or_else(|e| match e {
                            StoreError::NoSuchKey { .. } => Ok(Default::default()),
                            e => Err(e),
                        })
                        .map_err(|e| store_error(e, &b2, Some(&k2)))?;
                        let mut headers = vec![];
                        if let Some(v) = outcome.version_id {
                            headers.push(("x-amz-version-id".to_string(), v));
                        }
                        if outcome.delete_marker {
                            headers.push(("x-amz-delete-marker".to_string(), "true".to_string()));
                        }
                        Ok(crate::edge::Committed {
                            headers,
                            body: None,
                        })
                    }),
                    None,
                );
                return Ok(Reply {
                    status: 204,
                    headers: vec![],
                    body: bytes::Bytes::new(),
                    stream: None,
                });
            }
            put_object(ctx, &bucket, &key).await
        }
        _ => {
            ctx.no_authorization_needed();
            Err(ApiError::new(
                "NotImplemented",
                501,
                "A header or query you provided implies functionality that is not implemented.",
            ))
        }
    }
}

/// PutObject (the edge has already decoded an aws-chunked body): Content-MD5 and the
/// flexible checksums checked, user metadata and the checksum kept.
async fn put_object(ctx: &mut Ctx<'_>, bucket: &str, key: &str) -> Result<Reply, ApiError> {
    let req = ctx.req;
    if req.header("content-length").is_none() && req.header("transfer-encoding").is_none() {
        return Err(ApiError::new(
            "MissingContentLength",
            411,
            "You must provide the Content-Length HTTP header.",
        ));
    }
    if key.len() > cairn_store::MAX_KEY_BYTES {
        return Err(ApiError::client("KeyTooLongError", "Your key is too long"));
    }
    let body = req.body.clone();
    check_content_md5(req)?;
    let checksum = crate::s3_chunked::verify(&req.headers, &body)?;
    let mut opts = cairn_store::PutOptions {
        content_type: req.header("content-type").map(str::to_string),
        content_encoding: req.header("content-encoding").map(str::to_string),
        ..Default::default()
    };
    if let Some((alg, v)) = &checksum {
        opts.system.insert(format!("checksum-{alg}"), v.clone());
    }
    crate::s3_object_ext::new_object_system(ctx, bucket, req, &mut opts)?;
    for (k, v) in &req.headers {
        if let Some(name) = k.strip_prefix("x-amz-meta-") {
            opts.metadata.insert(name.to_string(), v.clone());
        }
    }
    let size = body.len();
    let etag = stage_put(ctx, bucket, key, body, opts, None).await?;
    ctx.audit.additional_event_data = Some(serde_json::json!({
        "SignatureVersion": crate::s3::signature_version(ctx.req),
        "AuthenticationMethod": crate::s3::authentication_method(ctx.req),
        "bytesTransferredIn": size,
        "bytesTransferredOut": 0,
        "x-amz-id-2": ctx.request_id,
    }));
    let mut headers = vec![("etag".into(), etag)];
    if let Some((alg, v)) = checksum {
        headers.push((format!("x-amz-checksum-{alg}"), v));
        headers.push(("x-amz-checksum-type".into(), "FULL_OBJECT".into()));
    }
    Ok(Reply {
        status: 200,
        headers,
        body: bytes::Bytes::new(),
        stream: None,
    })
}

/// Builds a reply body from the object a deferred write made (CopyObjectResult).
pub(crate) type AnswerFn = Box<dyn FnOnce(&ObjectInfo) -> bytes::Bytes + Send + Sync>;

/// Stages a PUT (the body written durably, invisibly) and defers making it the object until
/// the request's event is durable. Returns the staged write's ETag; the commit adds
/// `x-amz-version-id` and, through `answer`, may replace the reply's body.
pub(crate) async fn stage_put(
    ctx: &mut Ctx<'_>,
    bucket: &str,
    key: &str,
    body: bytes::Bytes,
    opts: cairn_store::PutOptions,
    answer: Option<AnswerFn>,
) -> Result<String, ApiError> {
    let store = ctx.api.store.clone();
    let (b2, k2) = (bucket.to_string(), key.to_string());
    let staged = ctx
        .api
        .blocking(move || {
            store
                .stage(&b2, &k2, &body, &opts)
                .map_err(|e| store_error(e, &b2, Some(&k2)))
        })
        .await?;
    let etag = staged
        .opts
        .etag
        .clone()
        .unwrap_or_else(|| staged.md5.clone());
    let slot = std::sync::Arc::new(std::sync::Mutex::new(Some(staged)));
    let (s1, s2) = (slot.clone(), slot);
    let (st1, st2) = (ctx.api.store.clone(), ctx.api.store.clone());
    let (b3, k3) = (bucket.to_string(), key.to_string());
    ctx.defer(
        Box::new(move || {
            let s = s1
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
                .ok_or_else(|| ApiError::internal("a staged write was used twice"))?;
            let info = st1
                .commit_staged(s)
                .map_err(|e| store_error(e, &b3, Some(&k3)))?;
            Ok(crate::edge::Committed {
                headers: info
                    .version_id
                    .clone()
                    .map(|v| vec![("x-amz-version-id".to_string(), v)])
                    .unwrap_or_default(),
                body: answer.map(|f| f(&info)),
            })
        }),
        Some(Box::new(move || {
            if let Some(s) = s2.lock().unwrap_or_else(|p| p.into_inner()).take() {
                st2.discard_staged(s);
            }
        })),
    );
    Ok(etag)
}

/// Checks `Content-MD5` when sent: BadDigest on mismatch, InvalidDigest when not base64 of
/// 16 bytes (B19).
fn check_content_md5(req: &HttpRequest) -> Result<(), ApiError> {
    use md5::Digest as _;
    if req.header("content-md5").is_none() {
        return Ok(());
    }
    content_md5_matches(req, &md5::Md5::digest(&req.body))
}

/// Checks a sent `Content-MD5` against the body's MD5 `digest` (already computed).
pub(crate) fn content_md5_matches(req: &HttpRequest, digest: &[u8]) -> Result<(), ApiError> {
    let Some(given) = req.header("content-md5") else {
        return Ok(());
    };
    let given = base64::engine::general_purpose::STANDARD
        .decode(given)
        .ok()
        .filter(|b| b.len() == 16)
        .ok_or_else(|| {
            ApiError::client(
                "InvalidDigest",
                "The Content-MD5 you specified was invalid.",
            )
        })?;
    if given.as_slice() != digest {
        return Err(ApiError::client(
            "BadDigest",
            "The Content-MD5 you specified did not match what we received.",
        ));
    }
    Ok(())
}

/// PutBucketVersioning: `Status` Enabled or Suspended (MFA Delete is not supported).
async fn put_bucket_versioning(
    ctx: &mut Ctx<'_>,
    bucket: &str,
    host: &str,
) -> Result<Reply, ApiError> {
    let doc = crate::xml::parse(&ctx.req.body).filter(|d| d.name == "VersioningConfiguration");
    let status = doc
        .as_ref()
        .and_then(|d| d.child_text("Status"))
        .map(str::trim)
        .map(str::to_string);
    ctx.audit.request_parameters = Some(serde_json::json!({
        "bucketName": bucket, "Host": host, "versioning": "",
        "VersioningConfiguration": {"Status": status}
    }));
    ctx.authorize("s3:PutBucketVersioning", &format!("arn:aws:s3:::{bucket}"))?;
    let Some(doc) = doc else {
        return Err(malformed_xml());
    };
    if doc.child_text("MfaDelete").map(str::trim) == Some("Enabled") {
        return Err(ApiError::new(
            "NotImplemented",
            501,
            "MFA Delete is not supported by cairn.",
        ));
    }
    let state = match status.as_deref() {
        Some("Enabled") => cairn_store::Versioning::Enabled,
        Some("Suspended") => cairn_store::Versioning::Suspended,
        _ => return Err(malformed_xml()),
    };
    bucket_must_exist(ctx, bucket)?;
    if state == cairn_store::Versioning::Suspended
        && crate::s3_object_ext::lock_enabled(ctx, bucket)?
    {
        return Err(ApiError::new(
            "InvalidBucketState",
            409,
            "An Object Lock configuration is present on this bucket, so the versioning state cannot be changed.",
        ));
    }
    let store = ctx.api.store.clone();
    let b2 = bucket.to_string();
    ctx.defer(
        Box::new(move || {
            store
                .set_versioning(&b2, state)
                .map_err(|e| store_error(e, &b2, None))?;
            Ok(crate::edge::Committed::default())
        }),
        None,
    );
    Ok(Reply {
        status: 200,
        headers: vec![],
        body: bytes::Bytes::new(),
        stream: None,
    })
}

/// ListObjectVersions: versions and delete markers, by key then newest first.
async fn list_versions(ctx: &mut Ctx<'_>, bucket: &str, host: &str) -> Result<Reply, ApiError> {
    let account = ctx.api.opts.account.clone();
    let q = |k: &str| ctx.req.query_param(k);
    let prefix = q("prefix").unwrap_or_default();
    let key_marker = q("key-marker").filter(|m| !m.is_empty());
    let vid_marker = q("version-id-marker").filter(|m| !m.is_empty());
    let url = q("encoding-type").as_deref() == Some("url");
    let max: usize = q("max-keys")
        .and_then(|m| m.parse().ok())
        .unwrap_or(1000)
        .min(1000);
    let mut rec = builder::s3_list(
        &ctx.region,
        ctx.now,
        ctx.caller.identity.clone(),
        &account,
        bucket,
        &prefix,
        false,
        host,
    );
    rec.event_name = "ListObjectVersions".into();
    ctx.audit.data_event = Some(rec);
    ctx.authorize("s3:ListBucketVersions", &format!("arn:aws:s3:::{bucket}"))?;
    bucket_must_exist(ctx, bucket)?;
    let store = ctx.api.store.clone();
    let (b2, p2, km, vm) = (
        bucket.to_string(),
        prefix.clone(),
        key_marker.clone(),
        vid_marker.clone(),
    );
    let (entries, truncated) = ctx
        .api
        .blocking(move || {
            let after = km.as_deref().map(|k| (k, vm.as_deref()));
            store
                .list_versions(&b2, &p2, after, max)
                .map_err(|e| store_error(e, &b2, None))
        })
        .await?;
    let enc = |s: &str| if url { url_enc(s) } else { s.to_string() };
    let owner = format!("<Owner><ID>{account}</ID><DisplayName>{account}</DisplayName></Owner>");
    let mut x = format!(
        "<Name>{}</Name><Prefix>{}</Prefix><KeyMarker>{}</KeyMarker><VersionIdMarker>{}</VersionIdMarker><MaxKeys>{max}</MaxKeys>",
        xml_escape(bucket),
        xml_escape(&enc(&prefix)),
        xml_escape(&enc(key_marker.as_deref().unwrap_or(""))),
        xml_escape(vid_marker.as_deref().unwrap_or(""))
    );
    if url {
        x.push_str("<EncodingType>url</EncodingType>");
    }
    x.push_str(&format!("<IsTruncated>{truncated}</IsTruncated>"));
    if truncated {
        if let Some(last) = entries.last() {
            x.push_str(&format!(
                "<NextKeyMarker>{}</NextKeyMarker><NextVersionIdMarker>{}</NextVersionIdMarker>",
                xml_escape(&enc(&last.info.key)),
                xml_escape(last.info.version_id.as_deref().unwrap_or("null"))
            ));
        }
    }
    for e in &entries {
        let common = format!(
            "<Key>{}</Key><VersionId>{}</VersionId><IsLatest>{}</IsLatest><LastModified>{}</LastModified>",
            xml_escape(&enc(&e.info.key)),
            xml_escape(e.info.version_id.as_deref().unwrap_or("null")),
            e.is_latest,
            s3_time(e.info.last_modified)
        );
        if e.delete_marker {
            x.push_str(&format!("<DeleteMarker>{common}{owner}</DeleteMarker>"));
        } else {
            x.push_str(&format!(
                "<Version>{common}<ETag>{}</ETag><Size>{}</Size>{owner}<StorageClass>STANDARD</StorageClass></Version>",
                xml_escape(&e.info.etag),
                e.info.size
            ));
        }
    }
    Ok(Reply::s3_document("ListVersionsResult", &x))
}

/// Put/Get/DeleteBucketPolicy. A policy is checked as IAM would (MalformedPolicy), and refused
/// when it grants the public access the bucket's public access block forbids.
async fn bucket_policy(
    ctx: &mut Ctx<'_>,
    op: &str,
    bucket: &str,
    host: &str,
) -> Result<Reply, ApiError> {
    ctx.audit.read_only = op == "GetBucketPolicy";
    ctx.audit.request_parameters =
        Some(serde_json::json!({"bucketName": bucket, "Host": host, "policy": ""}));
    ctx.authorize(&format!("s3:{op}"), &format!("arn:aws:s3:::{bucket}"))?;
    bucket_must_exist(ctx, bucket)?;
    let key = crate::s3_access::policy_key(bucket);
    match op {
        "PutBucketPolicy" => {
            let text = String::from_utf8_lossy(&ctx.req.body).to_string();
            let policy = cairn_iam::policy::Policy::parse(&text)
                .map_err(|e| ApiError::client("MalformedPolicy", e.0))?;
            crate::s3_access::check_bucket_policy(bucket, &policy)?;
            if let Some(obj) = ctx.audit.request_parameters.as_mut() {
                obj["bucketPolicy"] = serde_json::from_str(&text).unwrap_or_default();
            }
            let blocks_public =
                crate::s3_object_ext::public_access_setting(ctx, bucket, "BlockPublicPolicy")?;
            if blocks_public && policy.grants_public_allow() {
                return Err(ApiError::new("AccessDenied", 403, "Access Denied"));
            }
            ctx.defer_meta_put(key.clone(), text);
            Ok(Reply {
                status: 204,
                headers: vec![],
                body: bytes::Bytes::new(),
                stream: None,
            })
        }
        "GetBucketPolicy" => match ctx.api.meta.get::<String>(&key)? {
            Some(text) => Ok(Reply {
                status: 200,
                headers: vec![("content-type".into(), "application/json".into())],
                body: bytes::Bytes::from(text),
                stream: None,
            }),
            None => Err(ApiError::new(
                "NoSuchBucketPolicy",
                404,
                "The bucket policy does not exist",
            )
            .with("BucketName", bucket)),
        },
        _ => {
            ctx.defer_meta_delete(key.clone());
            Ok(Reply {
                status: 204,
                headers: vec![],
                body: bytes::Bytes::new(),
                stream: None,
            })
        }
    }
}

const LIFECYCLE_MIN_SIZE: &str = "x-amz-transition-default-minimum-object-size";

/// The lifecycle's transition minimum object size (S3's default since 2024).
fn lifecycle_min_size(req: &HttpRequest) -> String {
    match req.header(LIFECYCLE_MIN_SIZE) {
        Some(v @ ("varies_by_storage_class" | "all_storage_classes_128K")) => v.to_string(),
        _ => "all_storage_classes_128K".to_string(),
    }
}

/// The checks S3 makes on a configuration document before accepting it.
fn validate_config(param: &str, doc: &crate::xml::Element) -> Result<(), ApiError> {
    match param {
        "lifecycle" => {
            let rules: Vec<_> = doc.children_named("Rule").collect();
            let ok = !rules.is_empty()
                && rules.len() <= 1000
                && rules.iter().all(|r| {
                    matches!(
                        r.child_text("Status").map(str::trim),
                        Some("Enabled" | "Disabled")
                    ) && r.child_text("ID").is_none_or(|id| id.len() <= 255)
                });
            if !ok {
                return Err(malformed_xml());
            }
        }
        "tagging" => {
            let tags: Vec<_> = doc
                .child("TagSet")
                .map(|t| t.children_named("Tag").collect())
                .unwrap_or_default();
            let mut keys = std::collections::HashSet::new();
            for t in &tags {
                let k = t.child_text("Key").unwrap_or("");
                let v = t.child_text("Value").unwrap_or("");
                if k.is_empty() || k.len() > 128 || v.len() > 256 || !keys.insert(k) {
                    return Err(ApiError::client(
                        "InvalidTag",
                        "The TagSet does not satisfy the tag key and value constraints",
                    ));
                }
            }
            if tags.len() > 50 {
                return Err(ApiError::client(
                    "InvalidTag",
                    "Object tags cannot be greater than 50",
                ));
            }
        }
        "encryption" => {
            let ok = doc.children_named("Rule").all(|r| {
                r.child("ApplyServerSideEncryptionByDefault")
                    .and_then(|d| d.child_text("SSEAlgorithm"))
                    .is_some_and(|a| matches!(a.trim(), "AES256" | "aws:kms" | "aws:kms:dsse"))
            }) && doc.child("Rule").is_some();
            if !ok {
                return Err(malformed_xml());
            }
        }
        _ => {}
    }
    Ok(())
}

/// Put/Get/Delete of a [`StoredConfig`] sub-resource.
async fn stored_config(
    ctx: &mut Ctx<'_>,
    op: &str,
    bucket: &str,
    host: &str,
) -> Result<Reply, ApiError> {
    let Some(c) = STORED_CONFIGS
        .iter()
        .find(|c| c.put == op || c.get == op || c.delete == op)
    else {
        ctx.no_authorization_needed();
        return Err(ApiError::internal("unrouted configuration operation"));
    };
    ctx.audit.read_only = op == c.get;
    ctx.audit.request_parameters =
        Some(serde_json::json!({"bucketName": bucket, "Host": host, c.param: ""}));
    let action = match op {
        "PutBucketLifecycle" | "DeleteBucketLifecycle" => "s3:PutLifecycleConfiguration".into(),
        "GetBucketLifecycle" => "s3:GetLifecycleConfiguration".into(),
        "PutBucketEncryption" | "DeleteBucketEncryption" => "s3:PutEncryptionConfiguration".into(),
        "GetBucketEncryption" => "s3:GetEncryptionConfiguration".into(),
        "DeleteBucketTagging" => "s3:PutBucketTagging".into(),
        "DeleteBucketPublicAccessBlock" => "s3:PutBucketPublicAccessBlock".into(),
        o => format!("s3:{o}"),
    };
    ctx.authorize(&action, &format!("arn:aws:s3:::{bucket}"))?;
    bucket_must_exist(ctx, bucket)?;
    let key = config_key(c.param, bucket);
    if op == c.put {
        let Some(doc) = crate::xml::parse(&ctx.req.body).filter(|d| d.name == c.root) else {
            return Err(malformed_xml());
        };
        validate_config(c.param, &doc)?;
        let text = String::from_utf8_lossy(&ctx.req.body).to_string();
        ctx.defer_meta_put(key.clone(), text);
        let mut headers = vec![];
        if c.param == "lifecycle" {
            let size = lifecycle_min_size(ctx.req);
            ctx.defer_meta_put(config_key("lifecycle-min-size", bucket), size.clone());
            headers.push((LIFECYCLE_MIN_SIZE.to_string(), size));
        }
        return Ok(Reply {
            status: 200,
            headers,
            body: bytes::Bytes::new(),
            stream: None,
        });
    }
    if op == c.delete {
        ctx.defer_meta_delete(key.clone());
        return Ok(Reply {
            status: 204,
            headers: vec![],
            body: bytes::Bytes::new(),
            stream: None,
        });
    }
    match (ctx.api.meta.get::<String>(&key)?, c.missing) {
        (Some(text), _) => {
            let mut r = Reply::s3_xml(200, text);
            if c.param == "lifecycle" {
                let size = ctx
                    .api
                    .meta
                    .get::<String>(&config_key("lifecycle-min-size", bucket))?
                    .unwrap_or_else(|| "all_storage_classes_128K".into());
                r = r.header(LIFECYCLE_MIN_SIZE, size);
            }
            Ok(r)
        }
        (None, Some((code, msg))) => {
            Err(ApiError::new(code, 404, msg).with("BucketName", bucket))
        }
        // Every bucket is encrypted with SSE-S3 by default, as on AWS since 2023.
        (None, None) => Ok(Reply::s3_xml(
            200,
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ServerSideEncryptionConfiguration xmlns=\"{S3_XMLNS}\"><Rule><ApplyServerSideEncryptionByDefault><SSEAlgorithm>AES256</SSEAlgorithm></ApplyServerSideEncryptionByDefault><BucketKeyEnabled>false</BucketKeyEnabled></Rule></ServerSideEncryptionConfiguration>"
            ),
        )),
    }
}

fn malformed_xml() -> ApiError {
    ApiError::client(
        "MalformedXML",
        "The XML you provided was not well-formed or did not validate against our published schema.",
    )
}

/// DeleteObjects (POST /bucket?delete): up to 1000 keys, each authorized as s3:DeleteObject;
/// per-key failures are reported in the answer, as S3 does. One data event for the call.
async fn delete_objects(ctx: &mut Ctx<'_>, bucket: &str, host: &str) -> Result<Reply, ApiError> {
    let account = ctx.api.opts.account.clone();
    let mut rec = ctx.s3_object_event("DeleteObjects", bucket, "");
    rec.read_only = Some(false);
    rec.request_parameters =
        Some(serde_json::json!({"bucketName": bucket, "Host": host, "delete": ""}));
    rec.resources = Some(vec![cairn_record::Resource {
        account_id: Some(account.clone()),
        resource_type: "AWS::S3::Bucket".into(),
        arn: Some(format!("arn:aws:s3:::{bucket}")),
        arn_prefix: None,
    }]);
    ctx.audit.data_event = Some(rec);
    if let Err(e) = check_content_md5(ctx.req) {
        ctx.no_authorization_needed();
        return Err(e);
    }
    let doc = crate::xml::parse(&ctx.req.body).filter(|d| d.name == "Delete");
    let Some(doc) = doc else {
        ctx.no_authorization_needed();
        return Err(malformed_xml());
    };
    let keys: Vec<(String, Option<String>)> = doc
        .children_named("Object")
        .map(|o| {
            (
                o.child_text("Key").unwrap_or("").to_string(),
                o.child_text("VersionId")
                    .filter(|v| !v.is_empty())
                    .map(str::to_string),
            )
        })
        .collect();
    if keys.is_empty() || keys.len() > 1000 {
        ctx.no_authorization_needed();
        return Err(malformed_xml());
    }
    let quiet = doc.child_text("Quiet").map(str::trim) == Some("true");
    if let Err(e) = bucket_must_exist(ctx, bucket) {
        ctx.no_authorization_needed();
        return Err(e);
    }
    // Authorization and object lock are checked now, per key; the deletions happen once the
    // event is durable, and the answer lists what they did.
    let lock = crate::s3_object_ext::lock_enabled(ctx, bucket)?;
    let mut todo = Vec::new();
    let mut refused = Vec::new();
    for (key, vid) in keys {
        let action = if vid.is_some() {
            "s3:DeleteObjectVersion"
        } else {
            "s3:DeleteObject"
        };
        if ctx
            .authorize(action, &format!("arn:aws:s3:::{bucket}/{key}"))
            .is_err()
        {
            refused.push((key, "AccessDenied".to_string(), "Access Denied".to_string()));
            continue;
        }
        if let (true, Some(v)) = (lock, &vid) {
            let store = ctx.api.store.clone();
            let (b3, k3, v3) = (bucket.to_string(), key.clone(), v.clone());
            let probe = ctx
                .api
                .blocking(move || Ok(store.head_version(&b3, &k3, Some(&v3))))
                .await?;
            if let Ok(info) = probe {
                if let Err(e) = crate::s3_object_ext::check_removable(ctx, bucket, &info) {
                    refused.push((key, e.code, e.message));
                    continue;
                }
            }
        }
        todo.push((key, vid));
    }
    ctx.audit.additional_event_data = Some(serde_json::json!({
        "deleted": todo.len(), "errors": refused.len(),
        "SignatureVersion": crate::s3::signature_version(ctx.req), "AuthenticationMethod": crate::s3::authentication_method(ctx.req)
    }));
    let store = ctx.api.store.clone();
    let b2 = bucket.to_string();
    ctx.defer(
        Box::new(move || {
            let mut deleted = Vec::new();
            let mut errors = refused;
            for (key, vid) in todo {
                let r = match &vid {
                    Some(v) => store.delete_version(&b2, &key, v),
                    None => store.delete_object(&b2, &key),
                }
                .or_else(|e| match e {
                    StoreError::NoSuchKey { .. } => Ok(Default::default()),
                    e => Err(e),
                })
                .map_err(|e| store_error(e, &b2, Some(&key)));
                match r {
                    Ok(o) => deleted.push((key, vid, o)),
                    Err(e) => errors.push((key, e.code, e.message)),
                }
            }
            let mut x = String::new();
            if !quiet {
                for (k, asked, o) in &deleted {
                    let mut d = format!("<Key>{}</Key>", xml_escape(k));
                    if let Some(v) = asked {
                        d.push_str(&format!("<VersionId>{}</VersionId>", xml_escape(v)));
                    }
                    if o.delete_marker {
                        d.push_str("<DeleteMarker>true</DeleteMarker>");
                        if let (None, Some(v)) = (asked, &o.version_id) {
                            d.push_str(&format!(
                                "<DeleteMarkerVersionId>{}</DeleteMarkerVersionId>",
                                xml_escape(v)
                            ));
                        }
                    }
                    x.push_str(&format!("<Deleted>{d}</Deleted>"));
                }
            }
            for (k, c, m) in &errors {
                x.push_str(&format!(
                    "<Error><Key>{}</Key><Code>{}</Code><Message>{}</Message></Error>",
                    xml_escape(k),
                    xml_escape(c),
                    xml_escape(m)
                ));
            }
            Ok(crate::edge::Committed {
                headers: vec![],
                body: Some(Reply::s3_document("DeleteResult", &x).body),
            })
        }),
        None,
    );
    Ok(Reply::s3_document("DeleteResult", ""))
}

/// The source of a copy (`x-amz-copy-source: [/]bucket/key[?versionId=V]`, the path
/// percent-encoded); its key is opaque (`..` is just text).
pub(crate) struct CopySource {
    pub bucket: String,
    pub key: String,
    pub version_id: Option<String>,
}

impl CopySource {
    pub fn parse(raw: &str) -> Result<CopySource, ApiError> {
        let invalid = || {
            ApiError::client(
                "InvalidArgument",
                "Copy Source must mention the source bucket and key: sourcebucket/sourcekey",
            )
            .with("ArgumentName", "x-amz-copy-source")
        };
        let (path, query) = raw.split_once('?').unwrap_or((raw, ""));
        let decoded = percent_encoding::percent_decode_str(path.trim_start_matches('/'))
            .decode_utf8()
            .map_err(|_| invalid())?;
        let (bucket, key) = decoded
            .split_once('/')
            .filter(|(b, k)| !b.is_empty() && !k.is_empty())
            .ok_or_else(invalid)?;
        let mut version_id = None;
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            match k.as_ref() {
                "versionId" if !v.is_empty() => version_id = Some(v.into_owned()),
                _ => return Err(invalid()),
            }
        }
        Ok(CopySource {
            bucket: bucket.to_string(),
            key: key.to_string(),
            version_id,
        })
    }

    pub fn arn(&self) -> String {
        format!("arn:aws:s3:::{}/{}", self.bucket, self.key)
    }
}

/// Reads a copy source as a GetObject of it would: authorized with the caller's policies and
/// the *source* bucket's policy (whose Deny binds even the root), the version asked for, the
/// copy-source conditions, and an archived object refused until restored.
pub(crate) async fn read_copy_source(
    ctx: &mut Ctx<'_>,
    src: &CopySource,
) -> Result<cairn_store::Object, ApiError> {
    if ctx.api.opts.proxies.contains_key(&src.bucket) {
        ctx.no_authorization_needed();
        return Err(ApiError::new(
            "NotImplemented",
            501,
            "Copying from a proxied bucket into a bucket of another backend is not supported.",
        ));
    }
    let policies = crate::s3_access::bucket_policies(ctx, &src.bucket)?;
    let action = if src.version_id.is_some() {
        "s3:GetObjectVersion"
    } else {
        "s3:GetObject"
    };
    // The source is authorized with its own keys: its tags (`s3:ExistingObjectTag/*`) and
    // version, as a GetObject of it would see them.
    let source_keys = {
        let store = ctx.api.store.clone();
        let (b, k, v) = (src.bucket.clone(), src.key.clone(), src.version_id.clone());
        let info = ctx
            .api
            .blocking(move || Ok(store.head_version(&b, &k, v.as_deref()).ok()))
            .await?;
        // The request's own keys may not have been needed for the destination (the root
        // without a bucket policy there); the source's policy needs them.
        let base = if ctx.keys.is_empty() && !policies.is_empty() {
            crate::s3_access::request_keys(ctx, "CopyObject")
        } else {
            ctx.keys.clone()
        };
        crate::s3_access::source_keys(&base, info.as_ref(), src.version_id.as_deref())
    };
    let request_keys = std::mem::replace(&mut ctx.keys, source_keys);
    let authorized = ctx.authorize_with(action, &src.arn(), &policies);
    ctx.keys = request_keys;
    authorized?;
    let store = ctx.api.store.clone();
    let (sb, sk, sv) = (src.bucket.clone(), src.key.clone(), src.version_id.clone());
    let got = ctx
        .api
        .blocking(move || {
            Ok(match &sv {
                Some(v) => store.get_version(&sb, &sk, v),
                None => store.get(&sb, &sk),
            })
        })
        .await?;
    let obj = match got {
        Ok(o) => o,
        Err(StoreError::DeleteMarker(_)) if src.version_id.is_some() => {
            return Err(ApiError::client(
                "InvalidRequest",
                "The source of a copy request may not specifically refer to a delete marker by version id.",
            ))
        }
        Err(StoreError::DeleteMarker(_)) => {
            return Err(store_error(
                StoreError::NoSuchKey {
                    bucket: src.bucket.clone(),
                    key: src.key.clone(),
                },
                &src.bucket,
                Some(&src.key),
            ))
        }
        Err(e) => return Err(store_error(e, &src.bucket, Some(&src.key))),
    };
    if archived(&obj.info) {
        return Err(ApiError::new(
            "InvalidObjectState",
            403,
            "The operation is not valid for the object's storage class",
        )
        .with(
            "StorageClass",
            obj.info
                .system
                .get("storage-class")
                .cloned()
                .unwrap_or_default(),
        ));
    }
    let failed = |h: &str| {
        ApiError::new(
            "PreconditionFailed",
            412,
            "At least one of the pre-conditions you specified did not hold",
        )
        .with("Condition", h.to_string())
    };
    if let Some(m) = ctx.req.header("x-amz-copy-source-if-match") {
        if !etag_matches(m, &obj.info.etag) {
            return Err(failed("x-amz-copy-source-If-Match"));
        }
    }
    if let Some(m) = ctx.req.header("x-amz-copy-source-if-none-match") {
        if etag_matches(m, &obj.info.etag) {
            return Err(failed("x-amz-copy-source-If-None-Match"));
        }
    }
    Ok(obj)
}

/// CopyObject: the source is read as [`read_copy_source`] says; the destination needs
/// `s3:PutObject` (and the header permissions of a write) under its own bucket's policy.
async fn copy_object(ctx: &mut Ctx<'_>, bucket: &str, key: &str) -> Result<Reply, ApiError> {
    ctx.audit.data_event = Some(ctx.s3_object_event("CopyObject", bucket, key));
    let raw = ctx
        .req
        .header("x-amz-copy-source")
        .unwrap_or_default()
        .to_string();
    let src = match CopySource::parse(&raw) {
        Ok(s) => s,
        Err(e) => {
            ctx.no_authorization_needed();
            return Err(e);
        }
    };
    if let Some(serde_json::Value::Object(m)) = ctx
        .audit
        .data_event
        .as_mut()
        .and_then(|r| r.request_parameters.as_mut())
    {
        m.insert("x-amz-copy-source".into(), serde_json::json!(raw));
    }
    let dest = format!("arn:aws:s3:::{bucket}/{key}");
    ctx.authorize("s3:PutObject", &dest)?;
    crate::s3_access::authorize_header_actions(ctx, &dest)?;
    bucket_must_exist(ctx, bucket)?;
    crate::s3_access::refuse_public_acl(ctx, bucket)?;
    let replace = match ctx.req.header("x-amz-metadata-directive") {
        None | Some("COPY") => false,
        Some("REPLACE") => true,
        Some(_) => {
            return Err(ApiError::client(
                "InvalidArgument",
                "Unknown metadata directive.",
            ))
        }
    };
    if !replace && src.bucket == bucket && src.key == key && src.version_id.is_none() {
        return Err(ApiError::client(
            "InvalidRequest",
            "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes.",
        ));
    }
    let src = read_copy_source(ctx, &src).await?;
    let mut opts = cairn_store::PutOptions {
        content_type: src.info.content_type.clone(),
        content_encoding: src.info.content_encoding.clone(),
        metadata: src.info.metadata.clone(),
        ..Default::default()
    };
    if replace {
        opts.content_type = ctx.req.header("content-type").map(str::to_string);
        opts.content_encoding = ctx.req.header("content-encoding").map(str::to_string);
        opts.metadata = ctx
            .req
            .headers
            .iter()
            .filter_map(|(k, v)| {
                k.strip_prefix("x-amz-meta-")
                    .map(|n| (n.to_string(), v.clone()))
            })
            .collect();
    }
    crate::s3_object_ext::new_object_system(ctx, bucket, ctx.req, &mut opts)?;
    // Tags travel with the copy unless the request replaces them.
    if ctx.req.header("x-amz-tagging-directive") != Some("REPLACE") {
        match src.info.system.get("tagging") {
            Some(t) => opts.system.insert("tagging".into(), t.clone()),
            None => opts.system.remove("tagging"),
        };
    }
    let answer: Box<dyn FnOnce(&ObjectInfo) -> bytes::Bytes + Send + Sync> = Box::new(
        |info: &ObjectInfo| {
            bytes::Bytes::from(format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<CopyObjectResult xmlns=\"{S3_XMLNS}\"><LastModified>{}</LastModified><ETag>{}</ETag></CopyObjectResult>",
                s3_time(info.last_modified),
                xml_escape(&info.etag)
            ))
        },
    );
    let body = bytes::Bytes::from(src.body);
    stage_put(ctx, bucket, key, body, opts, Some(answer)).await?;
    let mut r = Reply::s3_xml(200, String::new());
    if let Some(v) = &src.info.version_id {
        r = r.header("x-amz-copy-source-version-id", v.clone());
    }
    Ok(r)
}

/// CreateBucket: the location constraint must name the region the request was signed for
/// (none means us-east-1), as AWS requires.
async fn create_bucket(ctx: &mut Ctx<'_>, bucket: &str, host: &str) -> Result<Reply, ApiError> {
    let body = ctx.req.body.clone();
    let doc = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        match crate::xml::parse(&body) {
            Some(d) if d.name == "CreateBucketConfiguration" => Some(d),
            _ => {
                ctx.no_authorization_needed();
                return Err(malformed_xml());
            }
        }
    };
    let constraint = doc
        .as_ref()
        .and_then(|d| d.child_text("LocationConstraint"))
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_string);
    let mut params = serde_json::json!({"bucketName": bucket, "Host": host});
    if let Some(c) = &constraint {
        params["CreateBucketConfiguration"] = serde_json::json!({"LocationConstraint": c});
    }
    ctx.audit.request_parameters = Some(params);
    ctx.authorize("s3:CreateBucket", &format!("arn:aws:s3:::{bucket}"))?;
    crate::s3_access::authorize_create_bucket_headers(ctx, bucket)?;
    // A public ACL on a new bucket is refused under the account's BlockPublicAcls.
    crate::s3_access::refuse_public_acl(ctx, bucket)?;
    if cairn_store::check_bucket_name(bucket).is_err() {
        return Err(
            ApiError::client("InvalidBucketName", "The specified bucket is not valid.")
                .with("BucketName", bucket),
        );
    }
    let region = constraint.clone().unwrap_or_else(|| "us-east-1".into());
    if region != ctx.region {
        return Err(ApiError::client(
            "IllegalLocationConstraintException",
            if constraint.is_none() {
                "The unspecified location constraint is incompatible for the region specific endpoint this request was sent to.".to_string()
            } else {
                format!(
                    "The {region} location constraint is incompatible for the region specific endpoint this request was sent to."
                )
            },
        ));
    }
    let store = ctx.api.store.clone();
    let b2 = bucket.to_string();
    let existed = ctx
        .api
        .blocking(move || {
            cairn_store::check_bucket_name(&b2).map_err(|e| store_error(e, &b2, None))?;
            store
                .bucket_exists(&b2)
                .map_err(|e| store_error(e, &b2, None))
        })
        .await?;
    // us-east-1 answers 200 to the owner re-creating a bucket; other regions refuse.
    if existed && region != "us-east-1" {
        return Err(ApiError::new(
            "BucketAlreadyOwnedByYou",
            409,
            "Your previous request to create the named bucket succeeded and you already own it.",
        )
        .with("BucketName", bucket));
    }
    if !existed {
        let lock = ctx
            .req
            .header("x-amz-bucket-object-lock-enabled")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let store = ctx.api.store.clone();
        let b2 = bucket.to_string();
        ctx.defer(
            Box::new(move || {
                store
                    .create_bucket(&b2)
                    .map_err(|e| store_error(e, &b2, None))?;
                if lock {
                    store
                        .set_versioning(&b2, cairn_store::Versioning::Enabled)
                        .map_err(|e| store_error(e, &b2, None))?;
                }
                Ok(crate::edge::Committed::default())
            }),
            None,
        );
        if region != "us-east-1" {
            ctx.defer_meta_put(format!("bucket-region/{bucket}"), region.clone());
        }
        if lock {
            crate::s3_object_ext::enable_lock_at_creation(ctx, bucket);
        }
        if let Some(acl) = ctx.req.header("x-amz-acl").map(str::to_string) {
            if acl != "private" {
                ctx.defer_meta_put(format!("bucket-acl/{bucket}"), acl);
            }
        }
    }
    Ok(Reply {
        status: 200,
        headers: vec![("location".into(), format!("/{bucket}"))],
        body: bytes::Bytes::new(),
        stream: None,
    })
}

/// The bucket configuration reads for which nothing can be configured yet: AWS's answer for
/// a bucket without that configuration (or its default).
fn bucket_config_read(
    ctx: &mut Ctx<'_>,
    op: &str,
    bucket: &str,
    host: &str,
) -> Result<Reply, ApiError> {
    ctx.audit.read_only = true;
    let sub = BUCKET_CONFIG_READS
        .iter()
        .find(|(_, o)| *o == op)
        .map(|(p, _)| *p)
        .unwrap_or("");
    ctx.audit.request_parameters =
        Some(serde_json::json!({"bucketName": bucket, "Host": host, sub: ""}));
    let action = match op {
        "GetBucketReplication" => "s3:GetReplicationConfiguration".to_string(),
        "GetBucketCors" => "s3:GetBucketCORS".to_string(),
        "GetBucketAccelerateConfiguration" => "s3:GetAccelerateConfiguration".to_string(),
        o => format!("s3:{o}"),
    };
    ctx.authorize(&action, &format!("arn:aws:s3:::{bucket}"))?;
    bucket_must_exist(ctx, bucket)?;
    let missing =
        |code: &str, msg: &str| Err(ApiError::new(code, 404, msg).with("BucketName", bucket));
    let ok = |inner: &str, root: &str| Ok(Reply::s3_document(root, inner));
    match op {
        "GetBucketPolicyStatus" => {
            missing("NoSuchBucketPolicy", "The bucket policy does not exist")
        }
        "GetBucketCors" => missing(
            "NoSuchCORSConfiguration",
            "The CORS configuration does not exist",
        ),
        "GetBucketWebsite" => missing(
            "NoSuchWebsiteConfiguration",
            "The specified bucket does not have a website configuration",
        ),
        "GetBucketReplication" => missing(
            "ReplicationConfigurationNotFoundError",
            "The replication configuration was not found",
        ),
        "GetBucketOwnershipControls" => missing(
            "OwnershipControlsNotFoundError",
            "The bucket ownership controls were not found",
        ),
        "GetBucketVersioning" => {
            let state = ctx
                .api
                .store
                .versioning(bucket)
                .map_err(|e| store_error(e, bucket, None))?;
            let inner = match state {
                None => String::new(),
                Some(cairn_store::Versioning::Enabled) => "<Status>Enabled</Status>".into(),
                Some(cairn_store::Versioning::Suspended) => "<Status>Suspended</Status>".into(),
            };
            ok(&inner, "VersioningConfiguration")
        }
        "GetBucketAccelerateConfiguration" => ok("", "AccelerateConfiguration"),
        "GetBucketRequestPayment" => {
            ok("<Payer>BucketOwner</Payer>", "RequestPaymentConfiguration")
        }
        "GetBucketLogging" => ok("", "BucketLoggingStatus"),
        "GetBucketNotification" => ok("", "NotificationConfiguration"),
        _ => Err(ApiError::new(
            "NotImplemented",
            501,
            "A header or query you provided implies functionality that is not implemented.",
        )),
    }
}

/// Whether an `If-Match`/`If-None-Match` value names `etag` (or is `*`).
fn etag_matches(header: &str, etag: &str) -> bool {
    header.split(',').map(str::trim).any(|v| {
        v == "*" || v == etag || v.trim_start_matches("W/") == etag || format!("\"{v}\"") == etag
    })
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

pub(crate) fn bucket_must_exist(ctx: &Ctx<'_>, bucket: &str) -> Result<(), ApiError> {
    if cairn_store::check_bucket_name(bucket).is_err() {
        return Err(
            ApiError::client("InvalidBucketName", "The specified bucket is not valid.")
                .with("BucketName", bucket),
        );
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

async fn list(ctx: &mut Ctx<'_>, bucket: &str, v2: bool, host: &str) -> Result<Reply, ApiError> {
    let account = ctx.api.opts.account.clone();
    let q = |k: &str| ctx.req.query_param(k);
    let prefix = q("prefix").unwrap_or_default();
    let delimiter = q("delimiter").filter(|d| !d.is_empty());
    let url = match q("encoding-type").as_deref() {
        None => false,
        Some("url") => true,
        Some(_) => {
            ctx.no_authorization_needed();
            return Err(ApiError::client(
                "InvalidArgument",
                "Invalid Encoding Method specified in Request",
            ));
        }
    };
    let max_keys = match q("max-keys") {
        None => 1000,
        Some(s) => match s.parse::<i64>() {
            Ok(n) if n >= 0 => n.min(1000) as usize,
            _ => {
                ctx.no_authorization_needed();
                return Err(ApiError::client(
                    "InvalidArgument",
                    "Provided max-keys not an integer or within integer range",
                ));
            }
        },
    };
    let (marker, cont_token) = if v2 {
        let token = q("continuation-token");
        let from_token = match &token {
            Some(t) => Some(
                base64::engine::general_purpose::STANDARD
                    .decode(t)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| {
                        ApiError::client(
                            "InvalidArgument",
                            "The continuation token provided is incorrect",
                        )
                    })?,
            ),
            None => None,
        };
        (from_token.or_else(|| q("start-after")), token)
    } else {
        (q("marker"), None)
    };
    ctx.audit.data_event = Some(builder::s3_list(
        &ctx.region,
        ctx.now,
        ctx.caller.identity.clone(),
        &account,
        bucket,
        &prefix,
        v2,
        host,
    ));
    ctx.authorize("s3:ListBucket", &format!("arn:aws:s3:::{bucket}"))?;
    bucket_must_exist(ctx, bucket)?;
    let store = ctx.api.store.clone();
    let (b2, p2, d2, m2) = (
        bucket.to_string(),
        prefix.clone(),
        delimiter.clone(),
        marker.clone(),
    );
    // Contents and common prefixes together count against max-keys, as in S3.
    let (contents, prefixes, truncated, last) = ctx
        .api
        .blocking(move || {
            let mut contents: Vec<ObjectInfo> = Vec::new();
            let mut prefixes: Vec<String> = Vec::new();
            let mut cursor = m2.clone();
            let mut last: Option<String> = None;
            loop {
                let page = store
                    .list(&b2, &p2, cursor.as_deref(), 1000)
                    .map_err(|e| store_error(e, &b2, None))?;
                let n = page.objects.len();
                for o in page.objects {
                    cursor = Some(o.key.clone());
                    let rolled = d2.as_ref().and_then(|d| {
                        o.key[p2.len()..]
                            .find(d.as_str())
                            .map(|i| o.key[..p2.len() + i + d.len()].to_string())
                    });
                    match rolled {
                        Some(cp) => {
                            if prefixes.last() == Some(&cp) {
                                continue;
                            }
                            if contents.len() + prefixes.len() == max_keys {
                                return Ok((contents, prefixes, true, last));
                            }
                            last = Some(cp.clone());
                            prefixes.push(cp);
                        }
                        None => {
                            if contents.len() + prefixes.len() == max_keys {
                                return Ok((contents, prefixes, true, last));
                            }
                            last = Some(o.key.clone());
                            contents.push(o);
                        }
                    }
                }
                if !page.is_truncated || n == 0 {
                    return Ok((contents, prefixes, false, last));
                }
            }
        })
        .await?;
    let enc = |s: &str| {
        if url {
            url_enc(s)
        } else {
            s.to_string()
        }
    };
    let mut x = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListBucketResult xmlns=\"{S3_XMLNS}\"><Name>{}</Name><Prefix>{}</Prefix>",
        xml_escape(bucket),
        xml_escape(&enc(&prefix))
    );
    if v2 {
        if let Some(t) = &cont_token {
            x.push_str(&format!(
                "<ContinuationToken>{}</ContinuationToken>",
                xml_escape(t)
            ));
        }
        if let Some(s) = q("start-after") {
            x.push_str(&format!(
                "<StartAfter>{}</StartAfter>",
                xml_escape(&enc(&s))
            ));
        }
        x.push_str(&format!(
            "<KeyCount>{}</KeyCount>",
            contents.len() + prefixes.len()
        ));
        if truncated {
            if let Some(l) = &last {
                let tok = base64::engine::general_purpose::STANDARD.encode(l.as_bytes());
                x.push_str(&format!(
                    "<NextContinuationToken>{tok}</NextContinuationToken>"
                ));
            }
        }
    } else {
        x.push_str(&format!(
            "<Marker>{}</Marker>",
            xml_escape(&enc(marker.as_deref().unwrap_or("")))
        ));
        if truncated && delimiter.is_some() {
            if let Some(l) = &last {
                x.push_str(&format!("<NextMarker>{}</NextMarker>", xml_escape(&enc(l))));
            }
        }
    }
    x.push_str(&format!("<MaxKeys>{max_keys}</MaxKeys>"));
    if let Some(d) = &delimiter {
        x.push_str(&format!("<Delimiter>{}</Delimiter>", xml_escape(&enc(d))));
    }
    if url {
        x.push_str("<EncodingType>url</EncodingType>");
    }
    x.push_str(&format!("<IsTruncated>{truncated}</IsTruncated>"));
    let owner = format!("<Owner><ID>{account}</ID><DisplayName>{account}</DisplayName></Owner>");
    let fetch_owner = !v2 || q("fetch-owner").as_deref() == Some("true");
    for o in &contents {
        x.push_str(&format!(
            "<Contents><Key>{}</Key><LastModified>{}</LastModified><ETag>{}</ETag><Size>{}</Size>{}<StorageClass>STANDARD</StorageClass></Contents>",
            xml_escape(&enc(&o.key)),
            s3_time(o.last_modified),
            xml_escape(&o.etag),
            o.size,
            if fetch_owner { owner.as_str() } else { "" }
        ));
    }
    for p in &prefixes {
        x.push_str(&format!(
            "<CommonPrefixes><Prefix>{}</Prefix></CommonPrefixes>",
            xml_escape(&enc(p))
        ));
    }
    x.push_str("</ListBucketResult>");
    Ok(Reply::s3_xml(200, x))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, host: &str, path: &str, query: &str) -> HttpRequest {
        HttpRequest {
            method: method.into(),
            path: path.into(),
            query: query.into(),
            headers: vec![("host".into(), host.into())],
            body: bytes::Bytes::new(),
            peer: "127.0.0.1".parse().unwrap(),
            tls: None,
            bad_header: None,
            body_problem: None,
            body_stream: None,
            body_unread: false,
            signature_checked: false,
        }
    }

    #[test]
    fn path_and_virtual_host_addressing() {
        let t = target(&req(
            "GET",
            "127.0.0.1:4566",
            "/logs/AWSLogs/1/a%20b.gz",
            "",
        ));
        assert_eq!(t.bucket.as_deref(), Some("logs"));
        assert_eq!(t.key.as_deref(), Some("AWSLogs/1/a b.gz"));
        let t = target(&req("GET", "logs.s3.localhost:4566", "/AWSLogs/x", ""));
        assert_eq!(t.bucket.as_deref(), Some("logs"));
        assert_eq!(t.key.as_deref(), Some("AWSLogs/x"));
        assert!(t.virtual_host);
        let t = target(&req("GET", "localhost:4566", "/logs", ""));
        assert_eq!(t.bucket.as_deref(), Some("logs"));
        assert_eq!(t.key, None);
        // `..` stays part of an opaque key.
        let t = target(&req("GET", "127.0.0.1", "/logs/a/../b", ""));
        assert_eq!(t.key.as_deref(), Some("a/../b"));
    }

    #[test]
    fn operations_by_method_and_subresource() {
        assert_eq!(
            operation(&req("GET", "h", "/b", "location")),
            "GetBucketLocation"
        );
        assert_eq!(
            operation(&req("GET", "h", "/b", "list-type=2&prefix=a")),
            "ListObjectsV2"
        );
        assert_eq!(
            operation(&req("GET", "h", "/b", "marker=x&encoding-type=url")),
            "ListObjects"
        );
        assert_eq!(operation(&req("GET", "h", "/b/k", "")), "GetObject");
        assert_eq!(operation(&req("HEAD", "h", "/b/k", "")), "HeadObject");
        assert_eq!(operation(&req("GET", "h", "/b/k", "acl")), "GetObjectAcl");
        assert_eq!(
            operation(&req("POST", "h", "/b/k", "restore")),
            "RestoreObject"
        );
        assert_eq!(
            operation(&req("GET", "h", "/b/k", "torrent")),
            "UnsupportedS3Operation"
        );
    }

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

    #[test]
    fn url_encoding_keeps_slashes_and_unreserved() {
        assert_eq!(url_enc("AWSLogs/1 2+3~é"), "AWSLogs/1%202%2B3~%C3%A9");
    }
}
