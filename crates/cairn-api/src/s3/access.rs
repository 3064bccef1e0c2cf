//! Access control for S3 requests beyond the action and resource: bucket policies (loaded,
//! and checked when put), the S3 condition keys of a request, the extra permissions request
//! headers need (an ACL, tags or object lock on a PutObject), public ACLs under a public
//! access block, and headers asking for what cairn does not do (SSE-C).

use super::{S3Error, S3Op, S3Request};
use crate::edge::Ctx;
use crate::protocol::ApiError;
use cairn_iam::policy::{ConditionKeys, Policy};
use cairn_record::Arn;

/// The meta key of a bucket's policy document.
pub fn policy_key(bucket: &str) -> String {
    format!("bucket-policy/{bucket}")
}

/// The policy of `bucket`, parsed (empty when it has none). A stored policy that no longer
/// parses fails the request: dropping it could drop a Deny.
pub fn bucket_policies(ctx: &Ctx<'_>, bucket: &str) -> Result<Vec<Policy>, ApiError> {
    match ctx.api.meta.get::<String>(&policy_key(bucket))? {
        None => Ok(Vec::new()),
        Some(text) => Policy::parse(&text).map(|p| vec![p]).map_err(|e| {
            tracing::error!(bucket, error = %e, "a stored bucket policy does not parse");
            ApiError::internal(format!("the policy of bucket {bucket} cannot be read: {e}"))
        }),
    }
}

/// S3's checks on a bucket policy beyond IAM's: a principal in every statement, S3 actions
/// only, and resources that are the bucket or its objects (a policy cannot grant anything
/// on another bucket).
pub fn check_bucket_policy(bucket: &str, policy: &Policy) -> Result<(), ApiError> {
    let bucket_arn = Arn::s3_bucket(bucket).to_string();
    let objects = format!("{bucket_arn}/");
    policy
        .check_resource_policy(
            |r| r == bucket_arn || r.starts_with(&objects),
            |a| a == "*" || a.get(..3).is_some_and(|p| p.eq_ignore_ascii_case("s3:")),
        )
        .map_err(|e| S3Error::MalformedPolicy(e.0).into())
}

/// The canned ACLs that grant access beyond the owner.
pub fn is_public_canned_acl(acl: &str) -> bool {
    matches!(
        acl,
        "public-read" | "public-read-write" | "authenticated-read"
    )
}

const GRANT_HEADERS: &[&str] = &[
    "x-amz-grant-read",
    "x-amz-grant-write",
    "x-amz-grant-read-acp",
    "x-amz-grant-write-acp",
    "x-amz-grant-full-control",
];

/// Whether the request's ACL headers (`x-amz-acl`, `x-amz-grant-*`) grant everyone or every
/// authenticated AWS user something.
pub fn requests_public_acl(req: &S3Request) -> bool {
    req.header("x-amz-acl").is_some_and(is_public_canned_acl)
        || GRANT_HEADERS.iter().any(|h| {
            req.header(h).is_some_and(|v| {
                v.contains("acs.amazonaws.com/groups/global/AllUsers")
                    || v.contains("acs.amazonaws.com/groups/global/AuthenticatedUsers")
            })
        })
}

/// Whether the request sets an ACL at all.
pub fn sets_acl(req: &S3Request) -> bool {
    req.header("x-amz-acl").is_some() || GRANT_HEADERS.iter().any(|h| req.header(h).is_some())
}

/// Refuses a public ACL in a request's headers when the bucket's or the account's public
/// access block has BlockPublicAcls (S3 answers AccessDenied), then the write headers cairn
/// does not implement: grants to other grantees (`x-amz-grant-*`; canned ACLs are kept) and
/// website redirects. They are refused, never silently dropped.
pub fn refuse_write_headers(ctx: &Ctx<'_>, req: &S3Request) -> Result<(), ApiError> {
    if requests_public_acl(req)
        && super::bucket_config::public_access_setting(ctx, &req.bucket, "BlockPublicAcls")?
    {
        return Err(S3Error::AccessDenied.into());
    }
    let unsupported = GRANT_HEADERS
        .iter()
        .chain(&["x-amz-website-redirect-location"])
        .find(|h| req.header(h).is_some());
    if let Some(h) = unsupported {
        return Err(S3Error::NotImplemented(format!(
            "{h} is not implemented by cairn (canned ACLs, x-amz-acl, are)."
        ))
        .into_api()
        .with("Header", *h));
    }
    Ok(())
}

/// `x-amz-expected-bucket-owner`: every bucket is this account's, so any other owner named
/// is refused (403), as S3 refuses a bucket owned by someone else.
pub fn check_expected_owner(ctx: &Ctx<'_>, req: &S3Request) -> Result<(), ApiError> {
    match req.header("x-amz-expected-bucket-owner") {
        Some(owner) if owner != ctx.api.opts.account => Err(S3Error::AccessDenied.into()),
        _ => Ok(()),
    }
}

/// The permissions a write's headers need besides `s3:PutObject`, as S3 requires them: an
/// ACL needs `s3:PutObjectAcl`, tags `s3:PutObjectTagging`, a retention
/// `s3:PutObjectRetention`, a legal hold `s3:PutObjectLegalHold`.
pub fn header_actions(req: &S3Request) -> Vec<&'static str> {
    let mut out = Vec::new();
    if sets_acl(req) {
        out.push("s3:PutObjectAcl");
    }
    if req.header("x-amz-tagging").is_some() {
        out.push("s3:PutObjectTagging");
    }
    if req.header("x-amz-object-lock-mode").is_some()
        || req.header("x-amz-object-lock-retain-until-date").is_some()
    {
        out.push("s3:PutObjectRetention");
    }
    if req.header("x-amz-object-lock-legal-hold").is_some() {
        out.push("s3:PutObjectLegalHold");
    }
    out
}

/// The permissions CreateBucket's headers need besides `s3:CreateBucket`: an ACL needs
/// `s3:PutBucketAcl`; object lock `s3:PutBucketObjectLockConfiguration` and
/// `s3:PutBucketVersioning`; an ownership setting `s3:PutBucketOwnershipControls`.
pub fn create_bucket_header_actions(req: &S3Request) -> Vec<&'static str> {
    let mut out = Vec::new();
    if sets_acl(req) {
        out.push("s3:PutBucketAcl");
    }
    if req
        .header("x-amz-bucket-object-lock-enabled")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    {
        out.push("s3:PutBucketObjectLockConfiguration");
        out.push("s3:PutBucketVersioning");
    }
    if req.header("x-amz-object-ownership").is_some() {
        out.push("s3:PutBucketOwnershipControls");
    }
    out
}

/// Authorizes CreateBucket's header permissions (see [`create_bucket_header_actions`]).
pub fn authorize_create_bucket_headers(ctx: &mut Ctx<'_>, req: &S3Request) -> Result<(), ApiError> {
    let arn = Arn::s3_bucket(&req.bucket).to_string();
    for a in create_bucket_header_actions(req) {
        ctx.authorize(a, &arn)?;
    }
    Ok(())
}

/// Authorizes a write's header permissions (see [`header_actions`]) on `resource`.
pub fn authorize_header_actions(
    ctx: &mut Ctx<'_>,
    req: &S3Request,
    resource: &str,
) -> Result<(), ApiError> {
    for a in header_actions(req) {
        ctx.authorize(a, resource)?;
    }
    Ok(())
}

/// SSE-C (customer-provided keys) is not implemented: a request asking for it is refused
/// rather than stored without the encryption the client believes it asked for.
pub fn refuse_sse_c(headers: &[(String, String)]) -> Result<(), ApiError> {
    let asked = headers.iter().find(|(k, _)| {
        k.starts_with("x-amz-server-side-encryption-customer-")
            || k.starts_with("x-amz-copy-source-server-side-encryption-customer-")
    });
    match asked {
        Some((k, _)) => Err(S3Error::NotImplemented(
            "A header you provided implies functionality that is not implemented".into(),
        )
        .into_api()
        .with("Header", k.clone())),
        None => Ok(()),
    }
}

/// Header-valued condition keys S3 defines (`s3:x-amz-acl`, …).
const HEADER_KEYS: &[&str] = &[
    "x-amz-acl",
    "x-amz-grant-read",
    "x-amz-grant-write",
    "x-amz-grant-read-acp",
    "x-amz-grant-write-acp",
    "x-amz-grant-full-control",
    "x-amz-copy-source",
    "x-amz-metadata-directive",
    "x-amz-server-side-encryption",
    "x-amz-server-side-encryption-aws-kms-key-id",
    "x-amz-storage-class",
    "x-amz-website-redirect-location",
    "x-amz-content-sha256",
];

/// Operations S3 evaluates `s3:prefix`, `s3:delimiter` and `s3:max-keys` for.
const LISTINGS: &[&str] = &["ListObjects", "ListObjectsV2", "ListObjectVersions"];

/// Operations on an existing object S3 evaluates `s3:ExistingObjectTag/<key>` for.
const EXISTING_TAG_OPS: &[&str] = &[
    "GetObject",
    "HeadObject",
    "GetObjectAcl",
    "PutObjectAcl",
    "GetObjectTagging",
    "PutObjectTagging",
    "DeleteObjectTagging",
    "GetObjectAttributes",
    "GetObjectRetention",
    "PutObjectRetention",
    "GetObjectLegalHold",
    "PutObjectLegalHold",
];

/// The S3 condition keys of a request (service keys; the global ones come from the edge).
pub fn request_keys(ctx: &Ctx<'_>, req: &S3Request, op: &str) -> ConditionKeys {
    let mut k = ConditionKeys::new();
    k.set("s3:ResourceAccount", ctx.api.opts.account.clone());
    k.set(
        "s3:signatureversion",
        if req.sig_v2 {
            "AWS"
        } else {
            "AWS4-HMAC-SHA256"
        },
    );
    k.set(
        "s3:authType",
        if req.header_auth {
            "REST-HEADER"
        } else {
            "REST-QUERY-STRING"
        },
    );
    let signed_at = req.header("x-amz-date").or_else(|| req.param("X-Amz-Date"));
    if let Some(t) = signed_at.and_then(|d| {
        chrono::NaiveDateTime::parse_from_str(d, "%Y%m%dT%H%M%SZ")
            .ok()
            .map(|n| n.and_utc())
    }) {
        let age = (ctx.now - t).num_milliseconds().max(0);
        k.set("s3:signatureAge", age.to_string());
    }
    if let Some(v) = &req.tls_version {
        k.set("s3:TlsVersion", v.trim_start_matches("TLSv").to_string());
    }
    for h in HEADER_KEYS {
        if let Some(v) = req.header(h) {
            k.set(&format!("s3:{h}"), v);
        }
    }
    if let Some(v) = &req.version_id {
        k.set("s3:VersionId", v.clone());
    }
    if let Some(m) = req.header("x-amz-object-lock-mode") {
        k.set("s3:object-lock-mode", m);
    }
    if let Some(u) = req.header("x-amz-object-lock-retain-until-date") {
        k.set("s3:object-lock-retain-until-date", u);
        if let Ok(t) = chrono::DateTime::parse_from_rfc3339(u) {
            let days = (t.with_timezone(&chrono::Utc) - ctx.now).num_days().max(0);
            k.set("s3:object-lock-remaining-retention-days", days.to_string());
        }
    }
    if let Some(h) = req.header("x-amz-object-lock-legal-hold") {
        k.set("s3:object-lock-legal-hold", h);
    }
    if let Some(t) = req.header("x-amz-tagging") {
        let tags: Vec<(String, String)> = form_urlencoded::parse(t.as_bytes())
            .map(|(a, b)| (a.into_owned(), b.into_owned()))
            .collect();
        for (tk, tv) in &tags {
            k.set(&format!("s3:RequestObjectTag/{tk}"), tv.clone());
        }
        k.set_many(
            "s3:RequestObjectTagKeys",
            tags.into_iter().map(|(a, _)| a).collect(),
        );
    }
    if LISTINGS.contains(&op) {
        for (param, key) in [
            ("prefix", "s3:prefix"),
            ("delimiter", "s3:delimiter"),
            ("max-keys", "s3:max-keys"),
        ] {
            if let Some(v) = req.param(param) {
                k.set(key, v);
            }
        }
    }
    k
}

/// Condition keys a request carries in its body, read before authorizing as S3 does: the
/// tags of PutObjectTagging (`s3:RequestObjectTag/*`, `s3:RequestObjectTagKeys`), the mode and
/// date of PutObjectRetention, the status of PutObjectLegalHold.
pub fn add_body_keys(ctx: &mut Ctx<'_>, op: &S3Op) {
    match op {
        S3Op::PutObjectTagging(tags) => {
            for (k, v) in &tags.0 {
                ctx.keys.set(&format!("s3:RequestObjectTag/{k}"), v.clone());
            }
            ctx.keys.set_many(
                "s3:RequestObjectTagKeys",
                tags.0.iter().map(|(k, _)| k.clone()).collect(),
            );
        }
        S3Op::PutObjectRetention(r) => {
            if let Some(m) = &r.mode {
                ctx.keys.set("s3:object-lock-mode", m.clone());
            }
            if let Some(u) = &r.until {
                ctx.keys
                    .set("s3:object-lock-retain-until-date", r.until_text.clone());
                let days = (*u - ctx.now).num_days().max(0);
                ctx.keys
                    .set("s3:object-lock-remaining-retention-days", days.to_string());
            }
        }
        S3Op::PutObjectLegalHold(h) => {
            ctx.keys.set("s3:object-lock-legal-hold", h.0.clone());
        }
        _ => {}
    }
}

/// The keys a copy's source is authorized with: the request's, but the object-specific ones
/// (`s3:ExistingObjectTag/*`, `s3:VersionId`) are the source object's.
pub fn source_keys(
    request: &ConditionKeys,
    source: Option<&cairn_store::ObjectInfo>,
    version_id: Option<&str>,
) -> ConditionKeys {
    let mut k = request.clone();
    k.remove_prefix("s3:ExistingObjectTag/");
    k.remove("s3:VersionId");
    if let Some(v) = version_id {
        k.set("s3:VersionId", v);
    }
    if let Some(tags) = source.and_then(|i| i.system.get("tagging")) {
        for (tk, tv) in form_urlencoded::parse(tags.as_bytes()) {
            k.set(&format!("s3:ExistingObjectTag/{tk}"), tv.into_owned());
        }
    }
    k
}

/// Adds `s3:ExistingObjectTag/<key>` for an operation on an existing object, when some policy
/// that applies reads it (the object's tags are looked up only then).
pub async fn add_existing_object_tags(
    ctx: &mut Ctx<'_>,
    op: &str,
    req: &S3Request,
) -> Result<(), ApiError> {
    let key = req.object_key();
    if !EXISTING_TAG_OPS.contains(&op) || key.is_empty() {
        return Ok(());
    }
    let wanted = ctx
        .caller
        .policies
        .iter()
        .chain(ctx.resource_policies.iter())
        .any(|p| p.mentions_key("s3:ExistingObjectTag/"));
    if !wanted {
        return Ok(());
    }
    let store = ctx.api.store.clone();
    let (b, k, v) = (req.bucket.clone(), key.to_string(), req.version_id.clone());
    let info = ctx
        .api
        .blocking(move || Ok(store.head_version(&b, &k, v.as_deref()).ok()))
        .await?;
    if let Some(tags) = info.as_ref().and_then(|i| i.system.get("tagging")) {
        for (tk, tv) in form_urlencoded::parse(tags.as_bytes()) {
            ctx.keys
                .set(&format!("s3:ExistingObjectTag/{tk}"), tv.into_owned());
        }
    }
    Ok(())
}
