//! Buckets: ListBuckets, CreateBucket, DeleteBucket, HeadBucket, GetBucketLocation,
//! Get/PutBucketVersioning, and the bucket policy (Get/Put/DeleteBucketPolicy). A bucket's
//! region and canned ACL live in the metadata store beside it.

use super::{
    access, bucket_config, document, empty, lock, s3_time, store_error, with_store, Owner, S3Error,
    S3Request,
};
use crate::edge::{Committed, Ctx};
use crate::meta::Meta;
use crate::protocol::xml::Element;
use crate::protocol::{ApiError, Reply};
use crate::Api;
use cairn_iam::policy::Policy;
use cairn_store::{StoreError, Versioning};
use serde::Serialize;
use serde_json::json;

fn region_key(bucket: &str) -> String {
    format!("bucket-region/{bucket}")
}

/// The region `bucket` was created in (`None`: us-east-1).
pub fn region_of(api: &Api, bucket: &str) -> Option<String> {
    api.meta.get::<String>(&region_key(bucket)).ok().flatten()
}

/// Declares the region of `bucket` (a bucket declared in cairn.toml).
pub fn set_region(meta: &Meta, bucket: &str, region: &str) -> Result<(), ApiError> {
    meta.put(&region_key(bucket), &region.to_string())
}

/// What a bucket call's record says of its body, as CloudTrail logs it (whether or not the
/// call then succeeds): the location constraint, the versioning status, the policy.
pub(super) fn body_params(
    name: &str,
    req: &S3Request,
    params: &mut serde_json::Map<String, serde_json::Value>,
) {
    let doc = || crate::protocol::xml::parse(&req.body);
    let text = |d: &Element, child: &str| d.child_text(child).map(|t| t.trim().to_string());
    match name {
        "CreateBucket" => {
            if let Some(c) = doc().and_then(|d| text(&d, "LocationConstraint")) {
                params.insert(
                    "CreateBucketConfiguration".into(),
                    json!({ "LocationConstraint": c }),
                );
            }
        }
        "PutBucketVersioning" => {
            let status = doc().and_then(|d| text(&d, "Status"));
            params.insert(
                "VersioningConfiguration".into(),
                json!({ "Status": status }),
            );
        }
        "PutBucketPolicy" => {
            if let Ok(p) = serde_json::from_slice::<serde_json::Value>(&req.body) {
                params.insert("bucketPolicy".into(), p);
            }
        }
        _ => {}
    }
}

/// Meta keys a bucket owns beside its objects, removed with it (a new bucket of the same
/// name inherits none of them).
fn owned_keys(bucket: &str) -> Vec<String> {
    let mut keys = vec![
        region_key(bucket),
        lock::config_key(bucket),
        super::acl::bucket_key(bucket),
        access::policy_key(bucket),
    ];
    for param in bucket_config::PARAMS {
        keys.push(bucket_config::config_key(param, bucket));
    }
    keys
}

#[derive(Debug, Clone)]
pub struct CreateBucketInput {
    /// `CreateBucketConfiguration/LocationConstraint` (none: us-east-1).
    pub constraint: Option<String>,
    /// `x-amz-bucket-object-lock-enabled: true`.
    pub object_lock: bool,
    /// A canned ACL other than `private` (`x-amz-acl`).
    pub acl: Option<String>,
}

pub(super) fn create_input(req: &S3Request) -> Result<CreateBucketInput, ApiError> {
    let doc = if req.body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        match crate::protocol::xml::parse(&req.body) {
            Some(d) if d.name == "CreateBucketConfiguration" => Some(d),
            _ => return Err(S3Error::MalformedXml.into()),
        }
    };
    Ok(CreateBucketInput {
        constraint: doc
            .as_ref()
            .and_then(|d| d.child_text("LocationConstraint"))
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_string),
        object_lock: req
            .header("x-amz-bucket-object-lock-enabled")
            .is_some_and(|v| v.eq_ignore_ascii_case("true")),
        acl: req
            .header("x-amz-acl")
            .filter(|a| *a != "private")
            .map(str::to_string),
    })
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct BucketEntry {
    name: String,
    creation_date: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Buckets {
    owner: Owner,
    buckets: BucketList,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct BucketList {
    bucket: Vec<BucketEntry>,
}

pub(super) async fn list_buckets(ctx: &mut Ctx<'_>) -> Result<Reply, ApiError> {
    let mut buckets = with_store(ctx, |s| s.list_buckets().map_err(ApiError::internal)).await?;
    for name in ctx.api.opts.proxies.keys() {
        if !buckets.iter().any(|(b, _)| b == name) {
            buckets.push((name.clone(), ctx.api.started));
        }
    }
    buckets.sort();
    let answer = Buckets {
        owner: Owner::of(ctx),
        buckets: BucketList {
            bucket: buckets
                .into_iter()
                .map(|(name, created)| BucketEntry {
                    name,
                    creation_date: s3_time(created),
                })
                .collect(),
        },
    };
    Ok(document("ListAllMyBucketsResult", &answer))
}

/// CreateBucket: the location constraint must name the region the request was signed for
/// (none means us-east-1), as AWS requires.
pub(super) async fn create(
    ctx: &mut Ctx<'_>,
    req: &S3Request,
    i: CreateBucketInput,
) -> Result<Reply, ApiError> {
    let bucket = req.bucket.clone();
    // A public ACL on a new bucket is refused under the account's BlockPublicAcls.
    access::refuse_write_headers(ctx, req)?;
    if cairn_store::check_bucket_name(&bucket).is_err() {
        return Err(S3Error::InvalidBucketName(bucket).into());
    }
    let region = i.constraint.clone().unwrap_or_else(|| "us-east-1".into());
    if region != ctx.region {
        return Err(S3Error::IllegalLocationConstraint(match &i.constraint {
            None => "The unspecified location constraint is incompatible for the region specific endpoint this request was sent to.".to_string(),
            Some(_) => format!(
                "The {region} location constraint is incompatible for the region specific endpoint this request was sent to."
            ),
        })
        .into());
    }
    let b2 = bucket.clone();
    let existed = with_store(ctx, move |s| {
        s.bucket_exists(&b2).map_err(|e| store_error(e, &b2, None))
    })
    .await?;
    // us-east-1 answers 200 to the owner re-creating a bucket; other regions refuse.
    if existed && region != "us-east-1" {
        return Err(S3Error::BucketAlreadyOwnedByYou(bucket).into());
    }
    if !existed {
        let (store, b2, lock) = (ctx.api.store.clone(), bucket.clone(), i.object_lock);
        ctx.defer(
            Box::new(move || {
                store
                    .create_bucket(&b2)
                    .map_err(|e| store_error(e, &b2, None))?;
                if lock {
                    store
                        .set_versioning(&b2, Versioning::Enabled)
                        .map_err(|e| store_error(e, &b2, None))?;
                }
                Ok(Committed::default())
            }),
            None,
        );
        if region != "us-east-1" {
            ctx.defer_meta_put(region_key(&bucket), region);
        }
        if i.object_lock {
            lock::enable_at_creation(ctx, &bucket);
        }
        if let Some(acl) = i.acl {
            ctx.defer_meta_put(super::acl::bucket_key(&bucket), acl);
        }
    }
    Ok(empty(200).header("location", format!("/{bucket}")))
}

pub(super) async fn delete(ctx: &mut Ctx<'_>, req: &S3Request) -> Result<Reply, ApiError> {
    let b2 = req.bucket.clone();
    // Checked now, done once the event is durable.
    with_store(ctx, move |store| {
        if !store
            .bucket_exists(&b2)
            .map_err(|e| store_error(e, &b2, None))?
        {
            return Err(S3Error::NoSuchBucket(b2).into());
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
            return Err(S3Error::BucketNotEmpty(b2).into());
        }
        Ok(())
    })
    .await?;
    let (store, meta, b2) = (
        ctx.api.store.clone(),
        ctx.api.meta.clone(),
        req.bucket.clone(),
    );
    ctx.defer(
        Box::new(move || {
            store
                .delete_bucket(&b2)
                .map_err(|e| store_error(e, &b2, None))?;
            // The bucket is gone: what it owned goes too (a failure here leaves an orphan
            // entry that a new bucket of the same name would not inherit unseen: logged).
            for k in owned_keys(&b2) {
                if let Err(e) = meta.delete(&k) {
                    tracing::warn!(key = %k, error = %e.message, "could not remove a deleted bucket's metadata");
                }
            }
            Ok(Committed::default())
        }),
        None,
    );
    Ok(empty(204))
}

pub(super) fn head(ctx: &mut Ctx<'_>, req: &S3Request) -> Result<Reply, ApiError> {
    let region = region_of(ctx.api, &req.bucket).unwrap_or_else(|| "us-east-1".into());
    Ok(Reply::s3_xml(200, String::new()).header("x-amz-bucket-region", region))
}

#[derive(Serialize)]
struct Location {
    #[serde(rename = "$text", skip_serializing_if = "Option::is_none")]
    region: Option<String>,
}

pub(super) fn location(ctx: &mut Ctx<'_>, req: &S3Request) -> Result<Reply, ApiError> {
    // us-east-1 is answered as no constraint at all, as S3 does.
    let region = region_of(ctx.api, &req.bucket).filter(|r| r != "us-east-1");
    Ok(document("LocationConstraint", &Location { region }))
}

/// PutBucketVersioning's input: `Status` Enabled or Suspended (MFA Delete is not supported).
#[derive(Debug, Clone)]
pub struct VersioningInput {
    pub state: Versioning,
    pub status: String,
}

pub(super) fn versioning_input(doc: Option<Element>) -> Result<VersioningInput, ApiError> {
    let doc = doc
        .filter(|d| d.name == "VersioningConfiguration")
        .ok_or(S3Error::MalformedXml)?;
    if doc.child_text("MfaDelete").map(str::trim) == Some("Enabled") {
        return Err(S3Error::NotImplemented("MFA Delete is not supported by cairn.".into()).into());
    }
    let (state, status) = match doc.child_text("Status").map(str::trim) {
        Some(s @ "Enabled") => (Versioning::Enabled, s),
        Some(s @ "Suspended") => (Versioning::Suspended, s),
        _ => return Err(S3Error::MalformedXml.into()),
    };
    Ok(VersioningInput {
        state,
        status: status.to_string(),
    })
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct VersioningConfiguration {
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'static str>,
}

pub(super) fn get_versioning(ctx: &mut Ctx<'_>, req: &S3Request) -> Result<Reply, ApiError> {
    let state = ctx
        .api
        .store
        .versioning(&req.bucket)
        .map_err(|e| store_error(e, &req.bucket, None))?;
    let status = state.map(|s| match s {
        Versioning::Enabled => "Enabled",
        Versioning::Suspended => "Suspended",
    });
    Ok(document(
        "VersioningConfiguration",
        &VersioningConfiguration { status },
    ))
}

pub(super) fn put_versioning(
    ctx: &mut Ctx<'_>,
    req: &S3Request,
    i: VersioningInput,
) -> Result<Reply, ApiError> {
    if i.state == Versioning::Suspended && lock::enabled(ctx, &req.bucket)? {
        return Err(S3Error::InvalidBucketState(
            "An Object Lock configuration is present on this bucket, so the versioning state cannot be changed.".into(),
        )
        .into());
    }
    let (store, b2, state) = (ctx.api.store.clone(), req.bucket.clone(), i.state);
    ctx.defer(
        Box::new(move || {
            store
                .set_versioning(&b2, state)
                .map_err(|e| store_error(e, &b2, None))?;
            Ok(Committed::default())
        }),
        None,
    );
    Ok(empty(200))
}

/// PutBucketPolicy's input: the document as sent, and as parsed.
#[derive(Debug, Clone)]
pub struct PolicyInput {
    pub text: String,
    pub policy: Policy,
}

/// A policy is checked as IAM would (MalformedPolicy), and as S3 does for a bucket's.
pub(super) fn policy_input(req: &S3Request) -> Result<PolicyInput, ApiError> {
    let text = std::str::from_utf8(&req.body)
        .map_err(|_| S3Error::MalformedPolicy("Policies must be valid UTF-8.".into()))?
        .to_string();
    let policy = Policy::parse(&text).map_err(|e| S3Error::MalformedPolicy(e.0))?;
    access::check_bucket_policy(&req.bucket, &policy)?;
    Ok(PolicyInput { text, policy })
}

pub(super) fn get_policy(ctx: &mut Ctx<'_>, req: &S3Request) -> Result<Reply, ApiError> {
    match ctx
        .api
        .meta
        .get::<String>(&access::policy_key(&req.bucket))?
    {
        Some(text) => Ok(Reply {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body: bytes::Bytes::from(text),
            stream: None,
        }),
        None => Err(S3Error::NoSuchBucketPolicy(req.bucket.clone()).into()),
    }
}

/// A policy granting the public access the bucket's public access block forbids is refused.
pub(super) fn put_policy(
    ctx: &mut Ctx<'_>,
    req: &S3Request,
    i: PolicyInput,
) -> Result<Reply, ApiError> {
    let blocks_public =
        bucket_config::public_access_setting(ctx, &req.bucket, "BlockPublicPolicy")?;
    if blocks_public && i.policy.grants_public_allow() {
        return Err(S3Error::AccessDenied.into());
    }
    ctx.defer_meta_put(access::policy_key(&req.bucket), i.text);
    Ok(empty(204))
}

pub(super) fn delete_policy(ctx: &mut Ctx<'_>, req: &S3Request) -> Result<Reply, ApiError> {
    ctx.defer_meta_delete(access::policy_key(&req.bucket));
    Ok(empty(204))
}
