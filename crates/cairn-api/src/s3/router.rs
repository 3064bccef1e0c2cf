//! The S3 router: a request's addressing (path or virtual-host style), its operation (by
//! method, bucket, key and sub-resource), and the operation's typed input, read once. Also,
//! in one place each, what follows from an operation's name: its IAM action, whether it reads
//! only, whether it is a data event, the sub-resource its record names.

use super::acl::CannedAcl;
use super::bucket::{CreateBucketInput, PolicyInput, VersioningInput};
use super::bucket_config::{AccountPabInput, ConfigDoc, LifecycleInput};
use super::copy::{CopyInput, CopySource};
use super::delete::DeleteObjectsInput;
use super::error::S3Error;
use super::get::GetInput;
use super::list::ListInput;
use super::lock::{LegalHoldInput, LockConfigInput, RetentionInput};
use super::multipart::{
    CompleteInput, CreateUploadInput, ListPartsInput, PartCopyInput, PartInput,
};
use super::proxy::Forward;
use super::put::{ObjectHeaders, PutInput};
use super::request::{S3Call, S3Request};
use super::restore::RestoreInput;
use super::tagging::TagSet;
use crate::edge::HttpRequest;
use crate::protocol::xml::{self, Element};
use crate::protocol::ApiError;
use crate::Api;
use bytes::Bytes;

crate::operations! {
    /// An S3 operation on an embedded bucket, with its typed input.
    pub enum S3Op {
        // bucket.rs
        ListBuckets,
        CreateBucket(CreateBucketInput),
        DeleteBucket,
        HeadBucket,
        GetBucketLocation,
        GetBucketVersioning,
        PutBucketVersioning(VersioningInput),
        GetBucketPolicy,
        PutBucketPolicy(PolicyInput),
        DeleteBucketPolicy,
        // bucket_config.rs
        GetBucketPublicAccessBlock,
        PutBucketPublicAccessBlock(ConfigDoc),
        DeleteBucketPublicAccessBlock,
        GetBucketTagging,
        PutBucketTagging(ConfigDoc),
        DeleteBucketTagging,
        GetBucketLifecycle,
        PutBucketLifecycle(LifecycleInput),
        DeleteBucketLifecycle,
        GetBucketEncryption,
        PutBucketEncryption(ConfigDoc),
        DeleteBucketEncryption,
        GetBucketCors,
        GetBucketWebsite,
        GetBucketAccelerateConfiguration,
        GetBucketRequestPayment,
        GetBucketLogging,
        GetBucketReplication,
        GetBucketNotification,
        GetBucketOwnershipControls,
        GetBucketPolicyStatus,
        GetPublicAccessBlock(AccountPabInput),
        PutPublicAccessBlock(AccountPabInput),
        DeletePublicAccessBlock(AccountPabInput),
        // acl.rs
        GetBucketAcl,
        PutBucketAcl(CannedAcl),
        GetObjectAcl,
        PutObjectAcl(CannedAcl),
        // lock.rs
        GetObjectLockConfiguration,
        PutObjectLockConfiguration(LockConfigInput),
        GetObjectRetention,
        PutObjectRetention(RetentionInput),
        GetObjectLegalHold,
        PutObjectLegalHold(LegalHoldInput),
        // list.rs
        ListObjects(ListInput),
        ListObjectsV2(ListInput),
        ListObjectVersions(ListInput),
        // get.rs
        GetObject(GetInput),
        HeadObject(GetInput),
        GetObjectAttributes(Vec<String>),
        // put.rs
        PutObject(PutInput),
        // copy.rs
        CopyObject(CopyInput),
        // delete.rs
        DeleteObject,
        DeleteObjects(DeleteObjectsInput),
        // tagging.rs
        GetObjectTagging,
        PutObjectTagging(TagSet),
        DeleteObjectTagging,
        // restore.rs
        RestoreObject(RestoreInput),
        // multipart.rs
        CreateMultipartUpload(CreateUploadInput),
        UploadPart(PartInput),
        UploadPartCopy(PartCopyInput),
        CompleteMultipartUpload(CompleteInput),
        AbortMultipartUpload(PartInput),
        ListParts(ListPartsInput),
        ListMultipartUploads(ListInput),
    }
}

/// Names the router gives requests that name no operation cairn implements.
pub const UNIMPLEMENTED: &[&str] = &["PostObject", "UnsupportedS3Operation"];

/// Whether operation `name` only reads.
pub fn read_only(name: &str) -> bool {
    ["Get", "Head", "List"].iter().any(|p| name.starts_with(p))
}

/// Whether operation `name` is recorded as a data event (spec §2.3); the others are
/// management events.
pub fn data_event(name: &str) -> bool {
    matches!(
        name,
        "GetObject"
            | "HeadObject"
            | "PutObject"
            | "DeleteObject"
            | "DeleteObjects"
            | "CopyObject"
            | "CreateMultipartUpload"
            | "UploadPart"
            | "UploadPartCopy"
            | "CompleteMultipartUpload"
            | "AbortMultipartUpload"
            | "ListParts"
            | "ListMultipartUploads"
            | "ListObjects"
            | "ListObjectsV2"
            | "ListObjectVersions"
            | "HeadBucket"
            | "GetObjectTagging"
            | "PutObjectTagging"
            | "DeleteObjectTagging"
            | "GetObjectAcl"
            | "PutObjectAcl"
            | "GetObjectRetention"
            | "PutObjectRetention"
            | "GetObjectLegalHold"
            | "PutObjectLegalHold"
            | "RestoreObject"
            | "GetObjectAttributes"
    )
}

/// The IAM action operation `name` needs (`versioned`: the request names a version).
pub fn action(name: &str, versioned: bool) -> String {
    let v = if versioned { "Version" } else { "" };
    match name {
        "ListBuckets" => "s3:ListAllMyBuckets".into(),
        "ListObjects" | "ListObjectsV2" | "HeadBucket" => "s3:ListBucket".into(),
        "ListObjectVersions" => "s3:ListBucketVersions".into(),
        "GetObject" | "HeadObject" => format!("s3:GetObject{v}"),
        "GetObjectAttributes" | "GetObjectTagging" | "GetObjectAcl" => {
            format!(
                "s3:{}",
                name.replacen("GetObject", &format!("GetObject{v}"), 1)
            )
        }
        "PutObjectTagging" | "PutObjectAcl" => {
            format!(
                "s3:{}",
                name.replacen("PutObject", &format!("PutObject{v}"), 1)
            )
        }
        "DeleteObjectTagging" => format!("s3:DeleteObject{v}Tagging"),
        "DeleteObject" | "DeleteObjects" => format!("s3:DeleteObject{v}"),
        "CopyObject"
        | "CreateMultipartUpload"
        | "UploadPart"
        | "UploadPartCopy"
        | "CompleteMultipartUpload" => "s3:PutObject".into(),
        "ListParts" => "s3:ListMultipartUploadParts".into(),
        "ListMultipartUploads" => "s3:ListBucketMultipartUploads".into(),
        "GetBucketLifecycle" => "s3:GetLifecycleConfiguration".into(),
        "PutBucketLifecycle" | "DeleteBucketLifecycle" => "s3:PutLifecycleConfiguration".into(),
        "GetBucketEncryption" => "s3:GetEncryptionConfiguration".into(),
        "PutBucketEncryption" | "DeleteBucketEncryption" => "s3:PutEncryptionConfiguration".into(),
        "GetObjectLockConfiguration" => "s3:GetBucketObjectLockConfiguration".into(),
        "PutObjectLockConfiguration" => "s3:PutBucketObjectLockConfiguration".into(),
        "GetBucketCors" => "s3:GetBucketCORS".into(),
        "GetBucketReplication" => "s3:GetReplicationConfiguration".into(),
        "GetBucketAccelerateConfiguration" => "s3:GetAccelerateConfiguration".into(),
        "DeleteBucketTagging" => "s3:PutBucketTagging".into(),
        "DeleteBucketPublicAccessBlock" => "s3:PutBucketPublicAccessBlock".into(),
        "GetPublicAccessBlock" => "s3:GetAccountPublicAccessBlock".into(),
        "PutPublicAccessBlock" | "DeletePublicAccessBlock" => {
            "s3:PutAccountPublicAccessBlock".into()
        }
        o => format!("s3:{o}"),
    }
}

/// A sub-resource's operations by method: (query parameter, GET, PUT, DELETE).
type SubResource = (
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
    Option<&'static str>,
);

/// A bucket's sub-resources, in the order a request naming several is judged by.
const BUCKET_SUBRESOURCES: &[SubResource] = &[
    (
        "object-lock",
        Some("GetObjectLockConfiguration"),
        Some("PutObjectLockConfiguration"),
        None,
    ),
    ("acl", Some("GetBucketAcl"), Some("PutBucketAcl"), None),
    ("location", Some("GetBucketLocation"), None, None),
    (
        "policy",
        Some("GetBucketPolicy"),
        Some("PutBucketPolicy"),
        Some("DeleteBucketPolicy"),
    ),
    (
        "publicAccessBlock",
        Some("GetBucketPublicAccessBlock"),
        Some("PutBucketPublicAccessBlock"),
        Some("DeleteBucketPublicAccessBlock"),
    ),
    (
        "tagging",
        Some("GetBucketTagging"),
        Some("PutBucketTagging"),
        Some("DeleteBucketTagging"),
    ),
    (
        "lifecycle",
        Some("GetBucketLifecycle"),
        Some("PutBucketLifecycle"),
        Some("DeleteBucketLifecycle"),
    ),
    (
        "encryption",
        Some("GetBucketEncryption"),
        Some("PutBucketEncryption"),
        Some("DeleteBucketEncryption"),
    ),
    ("cors", Some("GetBucketCors"), None, None),
    ("website", Some("GetBucketWebsite"), None, None),
    (
        "versioning",
        Some("GetBucketVersioning"),
        Some("PutBucketVersioning"),
        None,
    ),
    (
        "accelerate",
        Some("GetBucketAccelerateConfiguration"),
        None,
        None,
    ),
    (
        "requestPayment",
        Some("GetBucketRequestPayment"),
        None,
        None,
    ),
    ("logging", Some("GetBucketLogging"), None, None),
    ("replication", Some("GetBucketReplication"), None, None),
    ("notification", Some("GetBucketNotification"), None, None),
    (
        "ownershipControls",
        Some("GetBucketOwnershipControls"),
        None,
        None,
    ),
    ("policyStatus", Some("GetBucketPolicyStatus"), None, None),
    ("versions", Some("ListObjectVersions"), None, None),
    ("uploads", Some("ListMultipartUploads"), None, None),
];

/// An object's sub-resources: (method, query parameter, operation).
const OBJECT_SUBRESOURCES: &[(&str, &str, &str)] = &[
    ("GET", "tagging", "GetObjectTagging"),
    ("PUT", "tagging", "PutObjectTagging"),
    ("DELETE", "tagging", "DeleteObjectTagging"),
    ("GET", "retention", "GetObjectRetention"),
    ("PUT", "retention", "PutObjectRetention"),
    ("GET", "legal-hold", "GetObjectLegalHold"),
    ("PUT", "legal-hold", "PutObjectLegalHold"),
    ("POST", "restore", "RestoreObject"),
    ("GET", "acl", "GetObjectAcl"),
    ("PUT", "acl", "PutObjectAcl"),
    ("GET", "attributes", "GetObjectAttributes"),
];

/// The query parameter a management event's `requestParameters` names for operation `name`
/// (`{"location": ""}` for GetBucketLocation), or an object event's sub-resource.
pub fn event_subresource(name: &str) -> Option<&'static str> {
    BUCKET_SUBRESOURCES
        .iter()
        .find(|(_, g, p, d)| [g, p, d].iter().any(|o| **o == Some(name)))
        .map(|(q, ..)| *q)
        .or_else(|| {
            OBJECT_SUBRESOURCES
                .iter()
                .find(|(_, _, o)| *o == name)
                .map(|(_, q, _)| *q)
        })
}

/// Where S3 Control serves the account's public access block.
pub const ACCOUNT_PAB_PATH: &str = "/v20180820/configuration/publicAccessBlock";

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

/// Virtual-host style when the Host is `BUCKET.s3…` or `BUCKET.localhost`; otherwise path
/// style.
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

fn has_param(req: &HttpRequest, name: &str) -> bool {
    req.query
        .split('&')
        .any(|kv| kv.split('=').next() == Some(name))
}

/// The operation (also the event name) of an S3 request.
pub fn classify(req: &HttpRequest) -> &'static str {
    let t = target(req);
    let m = req.method.as_str();
    if req.path == ACCOUNT_PAB_PATH && req.header("x-amz-account-id").is_some() {
        return match m {
            "PUT" => "PutPublicAccessBlock",
            "GET" => "GetPublicAccessBlock",
            "DELETE" => "DeletePublicAccessBlock",
            _ => "UnsupportedS3Operation",
        };
    }
    let copy = req.header("x-amz-copy-source").is_some();
    match (&t.bucket, &t.key) {
        (None, _) if m == "GET" => "ListBuckets",
        (Some(_), Some(_)) => {
            if let Some((_, _, op)) = OBJECT_SUBRESOURCES
                .iter()
                .find(|(method, param, _)| *method == m && has_param(req, param))
            {
                return op;
            }
            let upload = has_param(req, "uploadId");
            match m {
                "POST" if has_param(req, "uploads") => "CreateMultipartUpload",
                "POST" if upload => "CompleteMultipartUpload",
                "PUT" if upload && copy => "UploadPartCopy",
                "PUT" if upload => "UploadPart",
                "DELETE" if upload => "AbortMultipartUpload",
                "GET" if upload => "ListParts",
                "GET" if !has_subresource(req) => "GetObject",
                "HEAD" => "HeadObject",
                "PUT" if !has_subresource(req) && copy => "CopyObject",
                "PUT" if !has_subresource(req) => "PutObject",
                "DELETE" if !has_subresource(req) => "DeleteObject",
                "POST" => "PostObject",
                _ => "UnsupportedS3Operation",
            }
        }
        (Some(_), None) => {
            for (param, get, put, delete) in BUCKET_SUBRESOURCES {
                if !has_param(req, param) {
                    continue;
                }
                let op = match m {
                    "GET" => *get,
                    "PUT" => *put,
                    "DELETE" => *delete,
                    _ => None,
                };
                if let Some(op) = op {
                    return op;
                }
            }
            match m {
                "GET" if req.query_param("list-type").as_deref() == Some("2") => "ListObjectsV2",
                "GET" if req.query.is_empty() || !has_subresource(req) => "ListObjects",
                "HEAD" => "HeadBucket",
                "POST" if has_param(req, "delete") => "DeleteObjects",
                "PUT" if req.query.is_empty() => "CreateBucket",
                "DELETE" if req.query.is_empty() => "DeleteBucket",
                "POST" => "PostObject",
                _ => "UnsupportedS3Operation",
            }
        }
        (None, _) if m == "POST" => "PostObject",
        (None, _) => "UnsupportedS3Operation",
    }
}

/// Query parameters that select a sub-resource rather than filter a listing or an object.
fn has_subresource(req: &HttpRequest) -> bool {
    !subresources(req).is_empty()
}

/// Whether query parameter `name` only filters or pages a listing, names a version or part
/// of an object, overrides a response header, or authenticates: not a sub-resource.
fn filters(name: &str) -> bool {
    cairn_iam::sigv2::LISTING_PARAMS.contains(&name)
        || cairn_iam::sigv2::AUTH_PARAMS.contains(&name)
        || crate::protocol::is_auth_param(name)
        || matches!(name, "versionId" | "partNumber")
        || name.starts_with("response-")
}

/// The names of the request's sub-resource parameters (`acl`, `policy`, `uploads`,
/// `uploadId`, …), sorted.
pub fn subresources(req: &HttpRequest) -> Vec<String> {
    let mut out: Vec<String> = req
        .query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| kv.split('=').next().unwrap_or("").to_string())
        .filter(|name| !filters(name))
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// Reads a request into its operation. Inputs that do not parse are answered here, before
/// any handler, with S3's error for them.
pub fn route(api: &Api, req: &HttpRequest) -> Result<S3Call, ApiError> {
    // Keys are UTF-8: a path that does not decode to UTF-8 would otherwise be mapped (lossily)
    // onto another key.
    if percent_encoding::percent_decode_str(&req.path)
        .decode_utf8()
        .is_err()
    {
        return Err(S3Error::InvalidUri.into());
    }
    let name = classify(req);
    let (common, t) = request_of(req, name);
    if let Some(upstream) = t.bucket.as_ref().and_then(|b| api.opts.proxies.get(b)) {
        if UNIMPLEMENTED.contains(&name) {
            return Err(not_implemented());
        }
        let fwd = Forward::of(req, name, upstream.clone(), t.virtual_host);
        return Ok(S3Call::Proxied(common, fwd));
    }
    super::access::refuse_sse_c(&req.headers)?;
    let op = parse(name, req, &common)?;
    Ok(S3Call::Embedded(common, op))
}

/// Whether operation `name` is on the account (S3 Control), not on a bucket.
pub fn account_level(name: &str) -> bool {
    matches!(
        name,
        "GetPublicAccessBlock" | "PutPublicAccessBlock" | "DeletePublicAccessBlock"
    )
}

/// What operation `name` knows of its request. An account-level operation names no bucket,
/// whatever its Host says: no bucket's policy or upstream has a say in it.
pub(super) fn request_of(req: &HttpRequest, name: &str) -> (S3Request, Target) {
    let t = if account_level(name) {
        Target {
            bucket: None,
            key: None,
            virtual_host: false,
        }
    } else {
        target(req)
    };
    (S3Request::of(req, &t), t)
}

fn not_implemented() -> ApiError {
    S3Error::NotImplemented(
        "A header or query you provided implies functionality that is not implemented.".into(),
    )
    .into()
}

/// The request's body as a document with root `root`.
fn document(body: &[u8], root: &str) -> Result<Element, ApiError> {
    xml::parse(body)
        .filter(|d| d.name == root)
        .ok_or_else(|| S3Error::MalformedXml.into())
}

fn config(body: &Bytes, root: &str) -> Result<ConfigDoc, ApiError> {
    let doc = document(body, root)?;
    Ok(ConfigDoc {
        text: String::from_utf8_lossy(body).into_owned(),
        doc,
    })
}

fn parse(name: &str, req: &HttpRequest, common: &S3Request) -> Result<S3Op, ApiError> {
    use S3Op as Op;
    let body = &req.body;
    let op = match name {
        "ListBuckets" => Op::ListBuckets,
        "CreateBucket" => Op::CreateBucket(super::bucket::create_input(common)?),
        "DeleteBucket" => Op::DeleteBucket,
        "HeadBucket" => Op::HeadBucket,
        "GetBucketLocation" => Op::GetBucketLocation,
        "GetBucketVersioning" => Op::GetBucketVersioning,
        "PutBucketVersioning" => {
            Op::PutBucketVersioning(super::bucket::versioning_input(xml::parse(body))?)
        }
        "GetBucketPolicy" => Op::GetBucketPolicy,
        "PutBucketPolicy" => Op::PutBucketPolicy(super::bucket::policy_input(common)?),
        "DeleteBucketPolicy" => Op::DeleteBucketPolicy,
        "GetBucketPublicAccessBlock" => Op::GetBucketPublicAccessBlock,
        "PutBucketPublicAccessBlock" => {
            Op::PutBucketPublicAccessBlock(config(body, "PublicAccessBlockConfiguration")?)
        }
        "DeleteBucketPublicAccessBlock" => Op::DeleteBucketPublicAccessBlock,
        "GetBucketTagging" => Op::GetBucketTagging,
        "PutBucketTagging" => {
            let c = config(body, "Tagging")?;
            super::bucket_config::check_bucket_tags(&c.doc)?;
            Op::PutBucketTagging(c)
        }
        "DeleteBucketTagging" => Op::DeleteBucketTagging,
        "GetBucketLifecycle" => Op::GetBucketLifecycle,
        "PutBucketLifecycle" => Op::PutBucketLifecycle(super::bucket_config::lifecycle_input(
            config(body, "LifecycleConfiguration")?,
            common.header(super::bucket_config::LIFECYCLE_MIN_SIZE),
        )?),
        "DeleteBucketLifecycle" => Op::DeleteBucketLifecycle,
        "GetBucketEncryption" => Op::GetBucketEncryption,
        "PutBucketEncryption" => {
            let c = config(body, "ServerSideEncryptionConfiguration")?;
            super::bucket_config::check_encryption(&c.doc)?;
            Op::PutBucketEncryption(c)
        }
        "DeleteBucketEncryption" => Op::DeleteBucketEncryption,
        "GetBucketCors" => Op::GetBucketCors,
        "GetBucketWebsite" => Op::GetBucketWebsite,
        "GetBucketAccelerateConfiguration" => Op::GetBucketAccelerateConfiguration,
        "GetBucketRequestPayment" => Op::GetBucketRequestPayment,
        "GetBucketLogging" => Op::GetBucketLogging,
        "GetBucketReplication" => Op::GetBucketReplication,
        "GetBucketNotification" => Op::GetBucketNotification,
        "GetBucketOwnershipControls" => Op::GetBucketOwnershipControls,
        "GetBucketPolicyStatus" => Op::GetBucketPolicyStatus,
        "GetPublicAccessBlock" => Op::GetPublicAccessBlock(AccountPabInput::of(common, None)),
        "PutPublicAccessBlock" => Op::PutPublicAccessBlock(AccountPabInput::of(
            common,
            Some(super::bucket_config::account_pab_doc(&document(
                body,
                "PublicAccessBlockConfiguration",
            )?)?),
        )),
        "DeletePublicAccessBlock" => Op::DeletePublicAccessBlock(AccountPabInput::of(common, None)),
        "GetBucketAcl" => Op::GetBucketAcl,
        "PutBucketAcl" => Op::PutBucketAcl(super::acl::requested(common)?),
        "GetObjectAcl" => Op::GetObjectAcl,
        "PutObjectAcl" => Op::PutObjectAcl(super::acl::requested(common)?),
        "GetObjectLockConfiguration" => Op::GetObjectLockConfiguration,
        "PutObjectLockConfiguration" => Op::PutObjectLockConfiguration(super::lock::config_input(
            &document(body, "ObjectLockConfiguration")?,
        )?),
        "GetObjectRetention" => Op::GetObjectRetention,
        "PutObjectRetention" => {
            Op::PutObjectRetention(super::lock::retention_input(&document(body, "Retention")?)?)
        }
        "GetObjectLegalHold" => Op::GetObjectLegalHold,
        "PutObjectLegalHold" => Op::PutObjectLegalHold(super::lock::legal_hold_input(&document(
            body,
            "LegalHold",
        )?)?),
        "ListObjects" => Op::ListObjects(ListInput::objects(common, false)?),
        "ListObjectsV2" => Op::ListObjectsV2(ListInput::objects(common, true)?),
        "ListObjectVersions" => Op::ListObjectVersions(ListInput::versions(common)?),
        "ListMultipartUploads" => Op::ListMultipartUploads(ListInput::uploads(common)?),
        "GetObject" => Op::GetObject(GetInput::of(common)),
        "HeadObject" => Op::HeadObject(GetInput::of(common)),
        "GetObjectAttributes" => Op::GetObjectAttributes(super::get::attributes_input(common)?),
        "PutObject" => Op::PutObject(PutInput {
            headers: ObjectHeaders::of(common)?,
            has_length: common.header("content-length").is_some()
                || common.header("transfer-encoding").is_some(),
        }),
        "CopyObject" => Op::CopyObject(CopyInput::of(common)?),
        "DeleteObject" => Op::DeleteObject,
        "DeleteObjects" => Op::DeleteObjects(super::delete::objects_input(common)?),
        "GetObjectTagging" => Op::GetObjectTagging,
        "PutObjectTagging" => {
            Op::PutObjectTagging(super::tagging::body_tags(&document(body, "Tagging")?)?)
        }
        "DeleteObjectTagging" => Op::DeleteObjectTagging,
        "RestoreObject" => Op::RestoreObject(super::restore::input(body)?),
        "CreateMultipartUpload" => Op::CreateMultipartUpload(CreateUploadInput::of(common)?),
        "UploadPart" => Op::UploadPart(PartInput::of(common, true)?),
        "UploadPartCopy" => Op::UploadPartCopy(PartCopyInput {
            part: PartInput::of(common, true)?,
            source: CopySource::of(common)?,
        }),
        "CompleteMultipartUpload" => Op::CompleteMultipartUpload(CompleteInput {
            upload_id: PartInput::of(common, false)?.upload_id,
            parts: super::multipart::requested_parts(body)?,
        }),
        "AbortMultipartUpload" => Op::AbortMultipartUpload(PartInput::of(common, false)?),
        "ListParts" => Op::ListParts(ListPartsInput::of(common)?),
        _ => return Err(not_implemented()),
    };
    Ok(op)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn req(method: &str, host: &str, path: &str, query: &str) -> HttpRequest {
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
            presented: None,
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
        let op = |m: &str, p: &str, q: &str| classify(&req(m, "h", p, q));
        assert_eq!(op("GET", "/b", "location"), "GetBucketLocation");
        assert_eq!(op("GET", "/b", "list-type=2&prefix=a"), "ListObjectsV2");
        assert_eq!(op("GET", "/b", "marker=x&encoding-type=url"), "ListObjects");
        assert_eq!(op("GET", "/b/k", ""), "GetObject");
        assert_eq!(op("HEAD", "/b/k", ""), "HeadObject");
        assert_eq!(op("GET", "/b/k", "acl"), "GetObjectAcl");
        assert_eq!(op("POST", "/b/k", "restore"), "RestoreObject");
        assert_eq!(op("GET", "/b/k", "torrent"), "UnsupportedS3Operation");
        assert_eq!(op("PUT", "/b", "versioning"), "PutBucketVersioning");
        assert_eq!(op("GET", "/b", "versioning"), "GetBucketVersioning");
        assert_eq!(op("GET", "/", ""), "ListBuckets");
    }

    #[test]
    fn every_name_the_router_gives_is_an_operation() {
        for (m, p, q) in [
            ("GET", "/b", ""),
            ("PUT", "/b", ""),
            ("DELETE", "/b", ""),
            ("HEAD", "/b", ""),
            ("POST", "/b", "delete"),
            ("PUT", "/b/k", ""),
            ("DELETE", "/b/k", ""),
            ("POST", "/b/k", "uploads"),
            ("POST", "/b/k", "uploadId=x"),
            ("PUT", "/b/k", "uploadId=x&partNumber=1"),
            ("DELETE", "/b/k", "uploadId=x"),
            ("GET", "/b/k", "uploadId=x"),
        ] {
            let n = classify(&req(m, "h", p, q));
            assert!(S3Op::NAMES.contains(&n), "{m} {p}?{q} → {n}");
        }
        for (_, g, p, d) in BUCKET_SUBRESOURCES {
            for n in [g, p, d].into_iter().flatten() {
                assert!(S3Op::NAMES.contains(n), "{n}");
            }
        }
        for (_, _, n) in OBJECT_SUBRESOURCES {
            assert!(S3Op::NAMES.contains(n), "{n}");
        }
    }
}
