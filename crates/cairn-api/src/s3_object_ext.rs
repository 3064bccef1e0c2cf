//! Object sub-resources and object lock: tagging, retention and legal hold, RestoreObject,
//! canned ACLs (objects and buckets), GetObjectAttributes, and the bucket's object-lock
//! configuration. Everything is kept in the object's system attributes
//! ([`cairn_store::ObjectInfo::system`]) or, for buckets, in the metadata store.

use crate::edge::{Ctx, HttpRequest};
use crate::wire::{xml_escape, ApiError, Reply};
use cairn_store::{ObjectInfo, PutOptions, StoreError};
use chrono::{DateTime, Utc};

/// (method, query parameter, operation) of the object sub-resources handled here.
pub const OBJECT_OPS: &[(&str, &str, &str)] = &[
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

/// (method, query parameter, operation) of the bucket sub-resources handled here.
pub const BUCKET_OPS: &[(&str, &str, &str)] = &[
    ("GET", "object-lock", "GetObjectLockConfiguration"),
    ("PUT", "object-lock", "PutObjectLockConfiguration"),
    ("GET", "acl", "GetBucketAcl"),
    ("PUT", "acl", "PutBucketAcl"),
];

const CANNED_ACLS: &[&str] = &[
    "private",
    "public-read",
    "public-read-write",
    "authenticated-read",
    "aws-exec-read",
    "bucket-owner-read",
    "bucket-owner-full-control",
    "log-delivery-write",
];

fn el(name: &str, v: &str) -> String {
    format!("<{name}>{}</{name}>", xml_escape(v))
}

fn lock_key(bucket: &str) -> String {
    format!("bucket-config/object-lock/{bucket}")
}

fn acl_key(bucket: &str) -> String {
    format!("bucket-acl/{bucket}")
}

fn malformed_xml() -> ApiError {
    ApiError::client(
        "MalformedXML",
        "The XML you provided was not well-formed or did not validate against our published schema",
    )
}

fn locked() -> ApiError {
    ApiError::new(
        "AccessDenied",
        403,
        "Access Denied because object protected by object lock.",
    )
}

fn no_lock_config() -> ApiError {
    ApiError::client(
        "InvalidRequest",
        "Bucket is missing Object Lock Configuration",
    )
}

fn iso(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// The bucket's object-lock configuration document, when object lock is enabled.
pub fn lock_config(ctx: &Ctx<'_>, bucket: &str) -> Result<Option<crate::xml::Element>, ApiError> {
    Ok(ctx
        .api
        .meta
        .get::<String>(&lock_key(bucket))?
        .and_then(|t| crate::xml::parse(t.as_bytes())))
}

/// Whether object lock is enabled on `bucket`.
pub fn lock_enabled(ctx: &Ctx<'_>, bucket: &str) -> Result<bool, ApiError> {
    Ok(lock_config(ctx, bucket)?.is_some())
}

/// Enables object lock on a new bucket (`x-amz-bucket-object-lock-enabled: true`), once the
/// request's event is durable.
pub fn enable_lock_at_creation(ctx: &mut Ctx<'_>, bucket: &str) {
    ctx.defer_meta_put(
        lock_key(bucket),
        "<ObjectLockConfiguration><ObjectLockEnabled>Enabled</ObjectLockEnabled></ObjectLockConfiguration>".to_string(),
    );
}

fn parse_until(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s.trim())
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

fn tag_set_from_query(q: &str) -> Result<Vec<(String, String)>, ApiError> {
    let tags: Vec<(String, String)> = form_urlencoded::parse(q.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    check_tags(&tags)?;
    Ok(tags)
}

fn check_tags(tags: &[(String, String)]) -> Result<(), ApiError> {
    if tags.len() > 10 {
        return Err(ApiError::client(
            "BadRequest",
            "Object tags cannot be greater than 10",
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for (k, v) in tags {
        if k.is_empty() || k.chars().count() > 128 || v.chars().count() > 256 {
            return Err(ApiError::client(
                "InvalidTag",
                "The TagKey you have provided is invalid",
            ));
        }
        if !seen.insert(k) {
            return Err(ApiError::client(
                "InvalidTag",
                "Cannot provide multiple Tags with the same key",
            ));
        }
    }
    Ok(())
}

fn tags_to_query(tags: &[(String, String)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in tags {
        s.append_pair(k, v);
    }
    s.finish()
}

/// What PutObject, CopyObject and CompleteMultipartUpload add to a new object's system
/// attributes from the request and the bucket: tags (`x-amz-tagging`), a canned ACL, object
/// lock (explicit headers or the bucket's default retention) and default encryption.
pub fn new_object_system(
    ctx: &Ctx<'_>,
    bucket: &str,
    req: &HttpRequest,
    opts: &mut PutOptions,
) -> Result<(), ApiError> {
    if let Some(t) = req.header("x-amz-tagging") {
        let tags = tag_set_from_query(t)?;
        if !tags.is_empty() {
            opts.system.insert("tagging".into(), tags_to_query(&tags));
        }
    }
    if let Some(acl) = req.header("x-amz-acl") {
        if !CANNED_ACLS.contains(&acl) {
            return Err(ApiError::client("InvalidArgument", "").with("ArgumentName", "x-amz-acl"));
        }
        opts.system.insert("acl".into(), acl.into());
    }
    if let Some(sc) = req.header("x-amz-storage-class") {
        const CLASSES: &[&str] = &[
            "STANDARD",
            "REDUCED_REDUNDANCY",
            "STANDARD_IA",
            "ONEZONE_IA",
            "INTELLIGENT_TIERING",
            "GLACIER",
            "DEEP_ARCHIVE",
            "GLACIER_IR",
        ];
        if !CLASSES.contains(&sc) {
            return Err(ApiError::client(
                "InvalidStorageClass",
                "The storage class you specified is not valid",
            )
            .with("StorageClassRequested", sc));
        }
        if sc != "STANDARD" {
            opts.system.insert("storage-class".into(), sc.into());
        }
    }
    let lock = lock_config(ctx, bucket)?;
    let mode = req.header("x-amz-object-lock-mode");
    let until = req.header("x-amz-object-lock-retain-until-date");
    let hold = req.header("x-amz-object-lock-legal-hold");
    if mode.is_some() || until.is_some() || hold.is_some() {
        let Some(_) = &lock else {
            return Err(no_lock_config());
        };
        if req.header("content-md5").is_none()
            && !req
                .headers
                .iter()
                .any(|(k, _)| k.starts_with("x-amz-checksum-") && k != "x-amz-checksum-mode")
            && req.header("x-amz-sdk-checksum-algorithm").is_none()
            && req.method == "PUT"
            && req.header("x-amz-copy-source").is_none()
        {
            return Err(ApiError::client(
                "InvalidRequest",
                "Content-MD5 OR x-amz-checksum- HTTP header is required for Put Object requests with Object Lock parameters",
            ));
        }
    }
    match (mode, until) {
        (Some(m), Some(u)) => {
            if !matches!(m, "GOVERNANCE" | "COMPLIANCE") {
                return Err(ApiError::client(
                    "InvalidArgument",
                    "Unknown wormMode directive.",
                ));
            }
            let u = parse_until(u).ok_or_else(|| {
                ApiError::client(
                    "InvalidArgument",
                    "The retain until date must be provided in ISO 8601 format",
                )
            })?;
            if u <= ctx.now {
                return Err(ApiError::client(
                    "InvalidArgument",
                    "The retain until date must be in the future!",
                ));
            }
            opts.system.insert("retention-mode".into(), m.into());
            opts.system.insert("retain-until".into(), iso(u));
        }
        (None, None) => {
            if let Some(d) = lock
                .as_ref()
                .and_then(|l| l.child("Rule"))
                .and_then(|r| r.child("DefaultRetention"))
            {
                let mode = d.child_text("Mode").unwrap_or("GOVERNANCE").trim();
                let days = d
                    .child_text("Days")
                    .and_then(|v| v.trim().parse::<i64>().ok())
                    .or_else(|| {
                        d.child_text("Years")
                            .and_then(|v| v.trim().parse::<i64>().ok())
                            .map(|y| y * 365)
                    })
                    .unwrap_or(0);
                if days > 0 {
                    opts.system.insert("retention-mode".into(), mode.into());
                    opts.system.insert(
                        "retain-until".into(),
                        iso(ctx.now + chrono::Duration::days(days)),
                    );
                }
            }
        }
        _ => return Err(ApiError::client(
            "InvalidArgument",
            "x-amz-object-lock-retain-until-date and x-amz-object-lock-mode must both be supplied",
        )),
    }
    if let Some(h) = hold {
        if !matches!(h, "ON" | "OFF") {
            return Err(ApiError::client(
                "InvalidArgument",
                "Legal Hold must be either of 'ON' or 'OFF'",
            ));
        }
        opts.system.insert("legal-hold".into(), h.into());
    }
    // Every body is encrypted at rest with SSE-S3 (AES256); KMS needs the key service.
    if req
        .header("x-amz-server-side-encryption")
        .is_some_and(|s| s != "AES256")
    {
        return Err(ApiError::new(
            "NotImplemented",
            501,
            "Server-side encryption with KMS keys is not available yet; use AES256 (SSE-S3).",
        ));
    }
    Ok(())
}

/// Refuses to remove a version that object lock protects: a legal hold, COMPLIANCE retention
/// in force, or GOVERNANCE retention in force unless the request bypasses it (header and
/// `s3:BypassGovernanceRetention`).
pub fn check_removable(ctx: &mut Ctx<'_>, bucket: &str, info: &ObjectInfo) -> Result<(), ApiError> {
    if info.system.get("legal-hold").map(String::as_str) == Some("ON") {
        return Err(locked());
    }
    let until = info.system.get("retain-until").and_then(|u| parse_until(u));
    if until.is_some_and(|u| u > ctx.now) {
        match info.system.get("retention-mode").map(String::as_str) {
            Some("GOVERNANCE") if bypass(ctx) => {
                ctx.authorize(
                    "s3:BypassGovernanceRetention",
                    &format!("arn:aws:s3:::{bucket}/{}", info.key),
                )?;
            }
            _ => return Err(locked()),
        }
    }
    Ok(())
}

fn bypass(ctx: &Ctx<'_>) -> bool {
    ctx.req
        .header("x-amz-bypass-governance-retention")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// Looks at one version's attributes (the current one without `version_id`).
async fn head_version(
    ctx: &Ctx<'_>,
    bucket: &str,
    key: &str,
    version_id: Option<String>,
) -> Result<ObjectInfo, ApiError> {
    let store = ctx.api.store.clone();
    let (b, k) = (bucket.to_string(), key.to_string());
    ctx.api
        .blocking(move || {
            store
                .head_version(&b, &k, version_id.as_deref())
                .map_err(|e| crate::s3::store_error(e, &b, Some(&k)))
        })
        .await
}

/// Applies `change` to one version's system attributes: checked now against the version as
/// it is (a refusal is the request's error), made once the request's event is durable.
/// Returns the attributes as they will be.
async fn change_version(
    ctx: &mut Ctx<'_>,
    bucket: &str,
    key: &str,
    version_id: Option<String>,
    change: impl FnMut(&mut ObjectInfo) -> Result<(), ApiError> + Send + Sync + 'static,
) -> Result<ObjectInfo, ApiError> {
    let mut change = change;
    let mut info = head_version(ctx, bucket, key, version_id.clone()).await?;
    change(&mut info)?;
    let store = ctx.api.store.clone();
    let (b, k) = (bucket.to_string(), key.to_string());
    ctx.defer(
        Box::new(move || {
            let refusal = std::sync::Mutex::new(None);
            let done = store.update_system(&b, &k, version_id.as_deref(), &mut |i| {
                change(i).map_err(|e| {
                    *refusal.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                    StoreError::AccessDenied("refused".into())
                })
            });
            if let Some(e) = refusal.lock().unwrap_or_else(|p| p.into_inner()).take() {
                return Err(e);
            }
            done.map_err(|e| crate::s3::store_error(e, &b, Some(&k)))?;
            Ok(crate::edge::Committed::default())
        }),
        None,
    );
    Ok(info)
}

fn with_version(mut r: Reply, info: &ObjectInfo) -> Reply {
    if let Some(v) = &info.version_id {
        r = r.header("x-amz-version-id", v.clone());
    }
    r
}

fn acl_document(owner: &str, canned: &str) -> String {
    let grant = |grantee: &str, perm: &str| {
        format!("<Grant>{grantee}<Permission>{perm}</Permission></Grant>")
    };
    let me = format!(
        "<Grantee xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" xsi:type=\"CanonicalUser\"><ID>{owner}</ID><DisplayName>{owner}</DisplayName></Grantee>"
    );
    let group = |uri: &str| {
        format!(
            "<Grantee xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" xsi:type=\"Group\"><URI>{uri}</URI></Grantee>"
        )
    };
    const ALL: &str = "http://acs.amazonaws.com/groups/global/AllUsers";
    const AUTH: &str = "http://acs.amazonaws.com/groups/global/AuthenticatedUsers";
    const LOG: &str = "http://acs.amazonaws.com/groups/s3/LogDelivery";
    let mut grants = grant(&me, "FULL_CONTROL");
    match canned {
        "public-read" => grants += &grant(&group(ALL), "READ"),
        "public-read-write" => {
            grants += &grant(&group(ALL), "READ");
            grants += &grant(&group(ALL), "WRITE");
        }
        "authenticated-read" => grants += &grant(&group(AUTH), "READ"),
        "log-delivery-write" => {
            grants += &grant(&group(LOG), "WRITE");
            grants += &grant(&group(LOG), "READ_ACP");
        }
        _ => {}
    }
    format!(
        "<Owner><ID>{owner}</ID><DisplayName>{owner}</DisplayName></Owner><AccessControlList>{grants}</AccessControlList>"
    )
}

/// The canned ACL a Put*Acl request asks for (header, or a body that only grants the owner).
fn requested_acl(req: &HttpRequest) -> Result<String, ApiError> {
    if let Some(acl) = req.header("x-amz-acl") {
        if !CANNED_ACLS.contains(&acl) {
            return Err(ApiError::client("InvalidArgument", "").with("ArgumentName", "x-amz-acl"));
        }
        return Ok(acl.into());
    }
    if req.body.is_empty() {
        return Err(ApiError::client(
            "MissingSecurityHeader",
            "Your request was missing a required header",
        )
        .with("MissingHeaderName", "x-amz-acl"));
    }
    let doc = crate::xml::parse(&req.body)
        .filter(|d| d.name == "AccessControlPolicy")
        .ok_or_else(malformed_xml)?;
    // Grants in a body: the owner alone is "private"; AllUsers READ makes it public-read.
    let text = String::from_utf8_lossy(&req.body);
    let _ = doc;
    Ok(if text.contains("global/AllUsers") {
        if text.contains(">WRITE<") {
            "public-read-write".into()
        } else {
            "public-read".into()
        }
    } else if text.contains("global/AuthenticatedUsers") {
        "authenticated-read".into()
    } else {
        "private".into()
    })
}

/// Meta key of the account-level public access block (s3control).
pub const ACCOUNT_PAB_KEY: &str = "account-config/publicAccessBlock";

/// Whether `setting` (`BlockPublicAcls`, `BlockPublicPolicy`, …) is on for `bucket`, in the
/// bucket's public access block or the account's (either one is enough, as in S3).
pub fn public_access_setting(ctx: &Ctx<'_>, bucket: &str, setting: &str) -> Result<bool, ApiError> {
    for key in [
        format!("bucket-config/publicAccessBlock/{bucket}"),
        ACCOUNT_PAB_KEY.to_string(),
    ] {
        let on = ctx
            .api
            .meta
            .get::<String>(&key)?
            .and_then(|t| crate::xml::parse(t.as_bytes()))
            .and_then(|d| d.child_text(setting).map(|v| v.trim() == "true"))
            .unwrap_or(false);
        if on {
            return Ok(true);
        }
    }
    Ok(false)
}

fn blocks_public_acls(ctx: &Ctx<'_>, bucket: &str) -> Result<bool, ApiError> {
    public_access_setting(ctx, bucket, "BlockPublicAcls")
}

/// The account-level public access block (S3 Control: `/v20180820/configuration/
/// publicAccessBlock` with `x-amz-account-id`): Put, Get, Delete. Management events.
pub async fn account_public_access_block(ctx: &mut Ctx<'_>, op: &str) -> Result<Reply, ApiError> {
    let account = ctx.api.opts.account.clone();
    let asked = ctx
        .req
        .header("x-amz-account-id")
        .unwrap_or_default()
        .to_string();
    ctx.audit.read_only = op == "GetPublicAccessBlock";
    ctx.audit.request_parameters = Some(serde_json::json!({"accountId": asked}));
    let action = if op == "GetPublicAccessBlock" {
        "s3:GetAccountPublicAccessBlock"
    } else {
        "s3:PutAccountPublicAccessBlock"
    };
    ctx.authorize(action, "*")?;
    if asked != account {
        return Err(ApiError::new("AccessDenied", 403, "Access Denied"));
    }
    const NS: &str = "http://awss3control.amazonaws.com/doc/2018-08-20/";
    match op {
        "PutPublicAccessBlock" => {
            let doc = crate::xml::parse(&ctx.req.body)
                .filter(|d| d.name == "PublicAccessBlockConfiguration")
                .ok_or_else(malformed_xml)?;
            let mut inner = String::new();
            for f in [
                "BlockPublicAcls",
                "IgnorePublicAcls",
                "BlockPublicPolicy",
                "RestrictPublicBuckets",
            ] {
                let v = doc.child_text(f).map(str::trim).unwrap_or("false");
                if v != "true" && v != "false" {
                    return Err(malformed_xml());
                }
                inner += &el(f, v);
            }
            ctx.defer_meta_put(
                ACCOUNT_PAB_KEY.to_string(),
                format!("<PublicAccessBlockConfiguration xmlns=\"{NS}\">{inner}</PublicAccessBlockConfiguration>"),
            );
            Ok(Reply::s3_xml(200, String::new()))
        }
        "GetPublicAccessBlock" => match ctx.api.meta.get::<String>(ACCOUNT_PAB_KEY)? {
            Some(t) => Ok(Reply::s3_xml(
                200,
                format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{t}"),
            )),
            None => Err(ApiError::new(
                "NoSuchPublicAccessBlockConfiguration",
                404,
                "The public access block configuration was not found",
            )
            .with("AccountId", account)),
        },
        _ => {
            ctx.defer_meta_delete(ACCOUNT_PAB_KEY.to_string());
            Ok(Reply::s3_xml(200, String::new()))
        }
    }
}

/// The bucket sub-resources of [`BUCKET_OPS`].
pub async fn handle_bucket(
    ctx: &mut Ctx<'_>,
    op: &str,
    bucket: &str,
    host: &str,
) -> Result<Reply, ApiError> {
    let param = BUCKET_OPS
        .iter()
        .find(|(_, _, o)| *o == op)
        .map(|(_, p, _)| *p)
        .unwrap_or("");
    ctx.audit.read_only = op.starts_with("Get");
    ctx.audit.request_parameters =
        Some(serde_json::json!({"bucketName": bucket, "Host": host, param: ""}));
    let action = match op {
        "GetObjectLockConfiguration" => "s3:GetBucketObjectLockConfiguration",
        "PutObjectLockConfiguration" => "s3:PutBucketObjectLockConfiguration",
        "GetBucketAcl" => "s3:GetBucketAcl",
        _ => "s3:PutBucketAcl",
    };
    ctx.authorize(action, &format!("arn:aws:s3:::{bucket}"))?;
    crate::s3::bucket_must_exist(ctx, bucket)?;
    let account = ctx.api.opts.account.clone();
    match op {
        "GetObjectLockConfiguration" => match ctx.api.meta.get::<String>(&lock_key(bucket))? {
            Some(text) => Ok(Reply::s3_xml(
                200,
                format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{text}"),
            )),
            None => Err(ApiError::new(
                "ObjectLockConfigurationNotFoundError",
                404,
                "Object Lock configuration does not exist for this bucket",
            )
            .with("BucketName", bucket)),
        },
        "PutObjectLockConfiguration" => {
            let doc = crate::xml::parse(&ctx.req.body)
                .filter(|d| d.name == "ObjectLockConfiguration")
                .ok_or_else(malformed_xml)?;
            if doc.child_text("ObjectLockEnabled").map(str::trim) != Some("Enabled") {
                return Err(malformed_xml());
            }
            let mut inner = el("ObjectLockEnabled", "Enabled");
            if let Some(rule) = doc.child("Rule") {
                let d = rule.child("DefaultRetention").ok_or_else(malformed_xml)?;
                let mode = d.child_text("Mode").map(str::trim).unwrap_or("");
                if !matches!(mode, "GOVERNANCE" | "COMPLIANCE") {
                    return Err(malformed_xml());
                }
                let days = d.child_text("Days").map(str::trim);
                let years = d.child_text("Years").map(str::trim);
                let period = match (days, years) {
                    (Some(n), None) => ("Days", n),
                    (None, Some(n)) => ("Years", n),
                    _ => return Err(malformed_xml()),
                };
                if period.1.parse::<u32>().ok().filter(|n| *n > 0).is_none() {
                    return Err(ApiError::client(
                        "InvalidArgument",
                        "Default retention period must be a positive integer value",
                    ));
                }
                inner += &format!(
                    "<Rule><DefaultRetention>{}{}</DefaultRetention></Rule>",
                    el("Mode", mode),
                    el(period.0, period.1)
                );
            }
            let store = ctx.api.store.clone();
            let b = bucket.to_string();
            let versioning = ctx
                .api
                .blocking(move || store.versioning(&b).map_err(ApiError::internal))
                .await?;
            if versioning != Some(cairn_store::Versioning::Enabled) {
                return Err(ApiError::new(
                    "InvalidBucketState",
                    409,
                    "Versioning must be 'Enabled' on the bucket to apply a Object Lock configuration",
                ));
            }
            let doc = format!(
                "<ObjectLockConfiguration xmlns=\"{}\">{inner}</ObjectLockConfiguration>",
                crate::wire::S3_XMLNS
            );
            ctx.defer_meta_put(lock_key(bucket), doc);
            Ok(Reply::s3_xml(200, String::new()))
        }
        "GetBucketAcl" => {
            let canned = ctx
                .api
                .meta
                .get::<String>(&acl_key(bucket))?
                .unwrap_or_else(|| "private".into());
            Ok(Reply::s3_document(
                "AccessControlPolicy",
                &acl_document(&account, &canned),
            ))
        }
        _ => {
            let acl = requested_acl(ctx.req)?;
            if crate::s3_access::is_public_canned_acl(&acl) && blocks_public_acls(ctx, bucket)? {
                return Err(ApiError::new("AccessDenied", 403, "Access Denied"));
            }
            ctx.defer_meta_put(acl_key(bucket), acl);
            Ok(Reply::s3_xml(200, String::new()))
        }
    }
}

/// The object sub-resources of [`OBJECT_OPS`] (data events).
pub async fn handle_object(
    ctx: &mut Ctx<'_>,
    op: &str,
    bucket: &str,
    key: &str,
) -> Result<Reply, ApiError> {
    let account = ctx.api.opts.account.clone();
    let mut rec = ctx.s3_object_event(op, bucket, key);
    let vid = ctx.req.query_param("versionId");
    if let Some(serde_json::Value::Object(m)) = rec.request_parameters.as_mut() {
        let param = OBJECT_OPS
            .iter()
            .find(|(_, _, o)| *o == op)
            .map(|(_, p, _)| *p)
            .unwrap_or("");
        m.insert(param.into(), serde_json::json!(""));
        if let Some(v) = &vid {
            m.insert("versionId".into(), serde_json::json!(v));
        }
    }
    rec.read_only = Some(op.starts_with("Get"));
    ctx.audit.data_event = Some(rec);
    let versioned = if vid.is_some() { "Version" } else { "" };
    let action = match op {
        "GetObjectTagging" => format!("s3:GetObject{versioned}Tagging"),
        "PutObjectTagging" => format!("s3:PutObject{versioned}Tagging"),
        "DeleteObjectTagging" => format!("s3:DeleteObject{versioned}Tagging"),
        "GetObjectAcl" => format!("s3:GetObject{versioned}Acl"),
        "PutObjectAcl" => format!("s3:PutObject{versioned}Acl"),
        "GetObjectAttributes" => format!("s3:GetObject{versioned}Attributes"),
        "RestoreObject" => "s3:RestoreObject".into(),
        o => format!("s3:{o}"),
    };
    let arn = format!("arn:aws:s3:::{bucket}/{key}");
    crate::s3_access::add_body_keys(ctx, op);
    ctx.authorize(&action, &arn)?;
    crate::s3::bucket_must_exist(ctx, bucket)?;
    match op {
        "GetObjectTagging" => {
            let info = head_version(ctx, bucket, key, vid).await?;
            let tags = info.system.get("tagging").cloned().unwrap_or_default();
            let mut set = String::new();
            for (k, v) in form_urlencoded::parse(tags.as_bytes()) {
                set += &format!("<Tag>{}{}</Tag>", el("Key", &k), el("Value", &v));
            }
            Ok(with_version(
                Reply::s3_document("Tagging", &format!("<TagSet>{set}</TagSet>")),
                &info,
            ))
        }
        "PutObjectTagging" | "DeleteObjectTagging" => {
            let value = if op == "PutObjectTagging" {
                let doc = crate::xml::parse(&ctx.req.body)
                    .filter(|d| d.name == "Tagging")
                    .ok_or_else(malformed_xml)?;
                let set = doc.child("TagSet").ok_or_else(malformed_xml)?;
                let tags: Vec<(String, String)> = set
                    .children_named("Tag")
                    .map(|t| {
                        (
                            t.child_text("Key").unwrap_or_default().to_string(),
                            t.child_text("Value").unwrap_or_default().to_string(),
                        )
                    })
                    .collect();
                check_tags(&tags)?;
                tags_to_query(&tags)
            } else {
                String::new()
            };
            let info = change_version(ctx, bucket, key, vid, move |i| {
                if value.is_empty() {
                    i.system.remove("tagging");
                } else {
                    i.system.insert("tagging".into(), value.clone());
                }
                Ok(())
            })
            .await?;
            let status = if op == "DeleteObjectTagging" {
                204
            } else {
                200
            };
            Ok(with_version(Reply::s3_xml(status, String::new()), &info))
        }
        "GetObjectRetention" | "GetObjectLegalHold" => {
            if !lock_enabled(ctx, bucket)? {
                return Err(no_lock_config());
            }
            let info = head_version(ctx, bucket, key, vid).await?;
            let none = || {
                ApiError::new(
                    "NoSuchObjectLockConfiguration",
                    404,
                    "The specified object does not have a ObjectLock configuration",
                )
            };
            if op == "GetObjectRetention" {
                let (Some(m), Some(u)) = (
                    info.system.get("retention-mode"),
                    info.system.get("retain-until"),
                ) else {
                    return Err(none());
                };
                Ok(Reply::s3_document(
                    "Retention",
                    &format!("{}{}", el("Mode", m), el("RetainUntilDate", u)),
                ))
            } else {
                let h = info.system.get("legal-hold").ok_or_else(none)?;
                Ok(Reply::s3_document("LegalHold", &el("Status", h)))
            }
        }
        "PutObjectRetention" => {
            if !lock_enabled(ctx, bucket)? {
                return Err(no_lock_config());
            }
            let doc = crate::xml::parse(&ctx.req.body)
                .filter(|d| d.name == "Retention")
                .ok_or_else(malformed_xml)?;
            let mode = doc.child_text("Mode").map(|m| m.trim().to_string());
            let until = doc
                .child_text("RetainUntilDate")
                .map(|u| u.trim().to_string());
            let (mode, until) = match (mode, until) {
                (Some(m), Some(u)) if matches!(m.as_str(), "GOVERNANCE" | "COMPLIANCE") => {
                    let u = parse_until(&u).ok_or_else(malformed_xml)?;
                    if u <= ctx.now {
                        return Err(ApiError::client(
                            "InvalidArgument",
                            "The retain until date must be in the future!",
                        ));
                    }
                    (Some(m), Some(u))
                }
                (None, None) => (None, None),
                _ => return Err(malformed_xml()),
            };
            // Changes that weaken retention in force: never for COMPLIANCE; for GOVERNANCE
            // only with the bypass header and permission.
            let current = head_version(ctx, bucket, key, vid.clone()).await?;
            let cur_until = current
                .system
                .get("retain-until")
                .and_then(|u| parse_until(u))
                .filter(|u| *u > ctx.now);
            let cur_mode = current.system.get("retention-mode").cloned();
            if let Some(cu) = cur_until {
                let weakens = until.is_none_or(|u| u < cu) || mode != cur_mode;
                if weakens {
                    match cur_mode.as_deref() {
                        Some("GOVERNANCE") if bypass(ctx) => {
                            ctx.authorize("s3:BypassGovernanceRetention", &arn)?;
                        }
                        _ => return Err(locked()),
                    }
                }
            }
            let info = change_version(ctx, bucket, key, vid, move |i| {
                match (&mode, until) {
                    (Some(m), Some(u)) => {
                        i.system.insert("retention-mode".into(), m.clone());
                        i.system.insert("retain-until".into(), iso(u));
                    }
                    _ => {
                        i.system.remove("retention-mode");
                        i.system.remove("retain-until");
                    }
                }
                Ok(())
            })
            .await?;
            Ok(with_version(Reply::s3_xml(200, String::new()), &info))
        }
        "PutObjectLegalHold" => {
            if !lock_enabled(ctx, bucket)? {
                return Err(no_lock_config());
            }
            let doc = crate::xml::parse(&ctx.req.body)
                .filter(|d| d.name == "LegalHold")
                .ok_or_else(malformed_xml)?;
            let status = doc
                .child_text("Status")
                .map(|s| s.trim().to_string())
                .filter(|s| s == "ON" || s == "OFF")
                .ok_or_else(malformed_xml)?;
            let info = change_version(ctx, bucket, key, vid, move |i| {
                i.system.insert("legal-hold".into(), status.clone());
                Ok(())
            })
            .await?;
            Ok(with_version(Reply::s3_xml(200, String::new()), &info))
        }
        "RestoreObject" => {
            let doc = if ctx.req.body.is_empty() {
                None
            } else {
                Some(
                    crate::xml::parse(&ctx.req.body)
                        .filter(|d| d.name == "RestoreRequest")
                        .ok_or_else(malformed_xml)?,
                )
            };
            let days: i64 = doc
                .as_ref()
                .and_then(|d| d.child_text("Days"))
                .map(|d| d.trim().parse().map_err(|_| malformed_xml()))
                .transpose()?
                .unwrap_or(1);
            if days < 1 {
                return Err(malformed_xml());
            }
            let tier = doc
                .as_ref()
                .and_then(|d| d.child("GlacierJobParameters"))
                .and_then(|g| g.child_text("Tier"))
                .map(|t| t.trim().to_string())
                .unwrap_or_else(|| "Standard".into());
            if !matches!(tier.as_str(), "Expedited" | "Standard" | "Bulk") {
                return Err(malformed_xml());
            }
            let now = ctx.now;
            let outcome = std::sync::Arc::new(std::sync::Mutex::new(202u16));
            let o2 = outcome.clone();
            let info = change_version(ctx, bucket, key, vid, move |i| {
                let class = i.system.get("storage-class").cloned().unwrap_or_default();
                if !matches!(class.as_str(), "GLACIER" | "DEEP_ARCHIVE") {
                    return Err(ApiError::new(
                        "InvalidObjectState",
                        403,
                        "Restore is not allowed for the object's current storage class",
                    ));
                }
                let current = i.system.get("restore").cloned().unwrap_or_default();
                if current.contains("ongoing-request=\"true\"") {
                    return Err(ApiError::new(
                        "RestoreAlreadyInProgress",
                        409,
                        "Object restore is already in progress",
                    ));
                }
                if current.contains("ongoing-request=\"false\"") {
                    // Already restored: the copy's lifetime is extended.
                    *o2.lock().unwrap_or_else(|p| p.into_inner()) = 200;
                    let expiry = crate::lifecycle::restore_expiry(now, days);
                    i.system.insert(
                        "restore".into(),
                        format!(
                            "ongoing-request=\"false\", expiry-date=\"{}\"",
                            crate::s3::http_date(expiry)
                        ),
                    );
                } else {
                    i.system
                        .insert("restore".into(), "ongoing-request=\"true\"".into());
                    i.system.insert(
                        "restore-request".into(),
                        format!("{}|{days}|{tier}", iso(now)),
                    );
                }
                Ok(())
            })
            .await?;
            let status = *outcome.lock().unwrap_or_else(|p| p.into_inner());
            Ok(with_version(Reply::s3_xml(status, String::new()), &info))
        }
        "GetObjectAcl" => {
            let info = head_version(ctx, bucket, key, vid).await?;
            let canned = info
                .system
                .get("acl")
                .cloned()
                .unwrap_or_else(|| "private".into());
            Ok(with_version(
                Reply::s3_document("AccessControlPolicy", &acl_document(&account, &canned)),
                &info,
            ))
        }
        "PutObjectAcl" => {
            let acl = requested_acl(ctx.req)?;
            if crate::s3_access::is_public_canned_acl(&acl) && blocks_public_acls(ctx, bucket)? {
                return Err(ApiError::new("AccessDenied", 403, "Access Denied"));
            }
            let info = change_version(ctx, bucket, key, vid, move |i| {
                i.system.insert("acl".into(), acl.clone());
                Ok(())
            })
            .await?;
            Ok(with_version(Reply::s3_xml(200, String::new()), &info))
        }
        _ => {
            // GetObjectAttributes
            ctx.authorize(
                if vid.is_some() {
                    "s3:GetObjectVersion"
                } else {
                    "s3:GetObject"
                },
                &arn,
            )?;
            let wanted: Vec<String> = ctx
                .req
                .header("x-amz-object-attributes")
                .unwrap_or_default()
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
            const KNOWN: &[&str] = &[
                "ETag",
                "Checksum",
                "ObjectParts",
                "StorageClass",
                "ObjectSize",
            ];
            if wanted.is_empty() || wanted.iter().any(|w| !KNOWN.contains(&w.as_str())) {
                return Err(ApiError::client(
                    "InvalidArgument",
                    "Invalid attribute name specified.",
                )
                .with("ArgumentName", "x-amz-object-attributes"));
            }
            let info = head_version(ctx, bucket, key, vid).await?;
            let mut x = String::new();
            for w in &wanted {
                match w.as_str() {
                    "ETag" => x += &el("ETag", info.etag.trim_matches('"')),
                    "Checksum" => {
                        let mut c = String::new();
                        for (k, v) in &info.system {
                            if let Some(alg) = k.strip_prefix("checksum-") {
                                c += &el(&format!("Checksum{}", alg.to_ascii_uppercase()), v);
                                c += &el(
                                    "ChecksumType",
                                    if v.contains('-') {
                                        "COMPOSITE"
                                    } else {
                                        "FULL_OBJECT"
                                    },
                                );
                            }
                        }
                        if !c.is_empty() {
                            x += &format!("<Checksum>{c}</Checksum>");
                        }
                    }
                    "ObjectParts" => {
                        if let Some(n) = info
                            .etag
                            .trim_matches('"')
                            .rsplit_once('-')
                            .and_then(|(_, n)| n.parse::<u32>().ok())
                        {
                            x += &format!(
                                "<ObjectParts>{}</ObjectParts>",
                                el("PartsCount", &n.to_string())
                            );
                        }
                    }
                    "StorageClass" => {
                        x += &el(
                            "StorageClass",
                            info.system
                                .get("storage-class")
                                .map(String::as_str)
                                .unwrap_or("STANDARD"),
                        )
                    }
                    _ => x += &el("ObjectSize", &info.size.to_string()),
                }
            }
            let r = Reply::s3_document("GetObjectAttributesResponse", &x)
                .header("last-modified", crate::s3::http_date(info.last_modified));
            Ok(with_version(r, &info))
        }
    }
}
