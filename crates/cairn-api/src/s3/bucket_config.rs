//! Bucket configuration: the documents kept as sent (public access block, tagging, lifecycle,
//! encryption: Get/Put/Delete), the configurations cairn cannot set yet (answered as AWS
//! answers a bucket without them), and the account's public access block (S3 Control).

use super::{document, empty, S3Error, S3Request};
use crate::edge::Ctx;
use crate::protocol::xml::{self, Element};
use crate::protocol::{ApiError, Reply};
use serde::Serialize;

/// A configuration document, checked (well-formed, the right root, S3's rules) and kept as
/// the client sent it.
#[derive(Debug, Clone)]
pub struct ConfigDoc {
    pub text: String,
    pub doc: Element,
}

#[derive(Debug, Clone)]
pub struct LifecycleInput {
    pub config: ConfigDoc,
    /// `x-amz-transition-default-minimum-object-size`.
    pub min_size: String,
}

/// A bucket configuration kept as a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Config {
    PublicAccessBlock,
    Tagging,
    Lifecycle,
    Encryption,
}

impl Config {
    fn param(self) -> &'static str {
        match self {
            Config::PublicAccessBlock => "publicAccessBlock",
            Config::Tagging => "tagging",
            Config::Lifecycle => "lifecycle",
            Config::Encryption => "encryption",
        }
    }

    /// The error a GET gets when nothing is stored (`None`: a default document instead).
    fn missing(self) -> Option<(&'static str, &'static str)> {
        match self {
            Config::PublicAccessBlock => Some((
                "NoSuchPublicAccessBlockConfiguration",
                "The public access block configuration was not found",
            )),
            Config::Tagging => Some(("NoSuchTagSet", "The TagSet does not exist")),
            Config::Lifecycle => Some((
                "NoSuchLifecycleConfiguration",
                "The lifecycle configuration does not exist",
            )),
            Config::Encryption => None,
        }
    }
}

/// Every configuration kept per bucket (with the lifecycle's transition minimum size).
pub const PARAMS: &[&str] = &[
    "publicAccessBlock",
    "tagging",
    "lifecycle",
    "encryption",
    "lifecycle-min-size",
];

/// Where a bucket's configuration document is kept.
pub fn config_key(param: &str, bucket: &str) -> String {
    format!("bucket-config/{param}/{bucket}")
}

pub const LIFECYCLE_MIN_SIZE: &str = "x-amz-transition-default-minimum-object-size";
const DEFAULT_MIN_SIZE: &str = "all_storage_classes_128K";

/// A lifecycle configuration: 1 to 1000 rules, each Enabled or Disabled, IDs of at most 255
/// characters; the transition minimum object size (S3's default since 2024 unless asked).
pub(super) fn lifecycle_input(
    config: ConfigDoc,
    min_size: Option<&str>,
) -> Result<LifecycleInput, ApiError> {
    let rules: Vec<_> = config.doc.children_named("Rule").collect();
    let ok = !rules.is_empty()
        && rules.len() <= 1000
        && rules.iter().all(|r| {
            matches!(
                r.child_text("Status").map(str::trim),
                Some("Enabled" | "Disabled")
            ) && r.child_text("ID").is_none_or(|id| id.len() <= 255)
        });
    if !ok {
        return Err(S3Error::MalformedXml.into());
    }
    let min_size = match min_size {
        None => DEFAULT_MIN_SIZE,
        Some(v @ ("varies_by_storage_class" | "all_storage_classes_128K")) => v,
        Some(v) => {
            return Err(S3Error::invalid_argument(
                "Invalid transition default minimum object size.",
                LIFECYCLE_MIN_SIZE,
                Some(v),
            ))
        }
    };
    Ok(LifecycleInput {
        config,
        min_size: min_size.to_string(),
    })
}

/// A bucket's tag set: at most 50 tags, keys 1–128 and values up to 256 characters, no key
/// twice.
pub(super) fn check_bucket_tags(doc: &Element) -> Result<(), ApiError> {
    let tags: Vec<_> = doc
        .child("TagSet")
        .map(|t| t.children_named("Tag").collect())
        .unwrap_or_default();
    let mut keys = std::collections::HashSet::new();
    for t in &tags {
        let k = t.child_text("Key").unwrap_or("");
        let v = t.child_text("Value").unwrap_or("");
        if k.is_empty() || k.len() > 128 || v.len() > 256 || !keys.insert(k) {
            return Err(S3Error::InvalidTag(
                "The TagSet does not satisfy the tag key and value constraints",
            )
            .into());
        }
    }
    if tags.len() > 50 {
        return Err(S3Error::InvalidTag("Object tags cannot be greater than 50").into());
    }
    Ok(())
}

/// Default encryption: at least one rule, each naming an algorithm S3 knows.
pub(super) fn check_encryption(doc: &Element) -> Result<(), ApiError> {
    let ok = doc.children_named("Rule").all(|r| {
        r.child("ApplyServerSideEncryptionByDefault")
            .and_then(|d| d.child_text("SSEAlgorithm"))
            .is_some_and(|a| matches!(a.trim(), "AES256" | "aws:kms" | "aws:kms:dsse"))
    }) && doc.child("Rule").is_some();
    if !ok {
        return Err(S3Error::MalformedXml.into());
    }
    Ok(())
}

pub(super) fn put(
    ctx: &mut Ctx<'_>,
    req: &S3Request,
    which: Config,
    c: ConfigDoc,
    min_size: Option<String>,
) -> Result<Reply, ApiError> {
    ctx.defer_meta_put(config_key(which.param(), &req.bucket), c.text);
    let mut r = empty(200);
    if let Some(size) = min_size {
        ctx.defer_meta_put(config_key("lifecycle-min-size", &req.bucket), size.clone());
        r = r.header(LIFECYCLE_MIN_SIZE, size);
    }
    Ok(r)
}

pub(super) fn delete(ctx: &mut Ctx<'_>, req: &S3Request, which: Config) -> Result<Reply, ApiError> {
    ctx.defer_meta_delete(config_key(which.param(), &req.bucket));
    Ok(empty(204))
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DefaultEncryption {
    rule: EncryptionRule,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct EncryptionRule {
    apply_server_side_encryption_by_default: SseDefault,
    bucket_key_enabled: bool,
}

#[derive(Serialize)]
struct SseDefault {
    #[serde(rename = "SSEAlgorithm")]
    algorithm: &'static str,
}

pub(super) fn get(ctx: &mut Ctx<'_>, req: &S3Request, which: Config) -> Result<Reply, ApiError> {
    let bucket = &req.bucket;
    match (
        ctx.api
            .meta
            .get::<String>(&config_key(which.param(), bucket))?,
        which.missing(),
    ) {
        (Some(text), _) => {
            let mut r = Reply::s3_xml(200, text);
            if which == Config::Lifecycle {
                let size = ctx
                    .api
                    .meta
                    .get::<String>(&config_key("lifecycle-min-size", bucket))?
                    .unwrap_or_else(|| DEFAULT_MIN_SIZE.into());
                r = r.header(LIFECYCLE_MIN_SIZE, size);
            }
            Ok(r)
        }
        (None, Some((code, msg))) => {
            Err(S3Error::NoSuchConfiguration(code, msg, bucket.clone()).into())
        }
        // Every bucket is encrypted with SSE-S3 by default, as on AWS since 2023.
        (None, None) => Ok(document(
            "ServerSideEncryptionConfiguration",
            &DefaultEncryption {
                rule: EncryptionRule {
                    apply_server_side_encryption_by_default: SseDefault {
                        algorithm: "AES256",
                    },
                    bucket_key_enabled: false,
                },
            },
        )),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct RequestPayment {
    payer: &'static str,
}

#[derive(Serialize)]
struct Nothing {}

/// The bucket configurations cairn cannot set yet: AWS's answer for a bucket without that
/// configuration (or its default).
pub(super) fn read_unconfigured(
    _ctx: &mut Ctx<'_>,
    req: &S3Request,
    name: &str,
) -> Result<Reply, ApiError> {
    let missing = |code: &'static str, msg: &'static str| {
        Err(S3Error::NoSuchConfiguration(code, msg, req.bucket.clone()).into())
    };
    match name {
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
        "GetBucketAccelerateConfiguration" => Ok(document("AccelerateConfiguration", &Nothing {})),
        "GetBucketRequestPayment" => Ok(document(
            "RequestPaymentConfiguration",
            &RequestPayment {
                payer: "BucketOwner",
            },
        )),
        "GetBucketLogging" => Ok(document("BucketLoggingStatus", &Nothing {})),
        "GetBucketNotification" => Ok(document("NotificationConfiguration", &Nothing {})),
        _ => Err(S3Error::NotImplemented(
            "A header or query you provided implies functionality that is not implemented.".into(),
        )
        .into()),
    }
}

/// Meta key of the account-level public access block (s3control).
pub const ACCOUNT_PAB_KEY: &str = "account-config/publicAccessBlock";
const S3_CONTROL_XMLNS: &str = "http://awss3control.amazonaws.com/doc/2018-08-20/";

/// Whether `setting` (`BlockPublicAcls`, `BlockPublicPolicy`, …) is on for `bucket`, in the
/// bucket's public access block or the account's (either one is enough, as in S3).
pub fn public_access_setting(ctx: &Ctx<'_>, bucket: &str, setting: &str) -> Result<bool, ApiError> {
    for key in [
        config_key("publicAccessBlock", bucket),
        ACCOUNT_PAB_KEY.to_string(),
    ] {
        let on = ctx
            .api
            .meta
            .get::<String>(&key)?
            .and_then(|t| xml::parse(t.as_bytes()))
            .and_then(|d| d.child_text(setting).map(|v| v.trim() == "true"))
            .unwrap_or(false);
        if on {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The account's public access block, as S3 Control keeps it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AccountPab {
    block_public_acls: bool,
    ignore_public_acls: bool,
    block_public_policy: bool,
    restrict_public_buckets: bool,
}

/// The account public access block operations' input: the account named, and for a Put the
/// settings (a setting not sent is `false`).
#[derive(Debug, Clone)]
pub struct AccountPabInput {
    pub account_id: String,
    pub settings: Option<AccountPab>,
}

impl AccountPabInput {
    pub(super) fn of(req: &S3Request, settings: Option<AccountPab>) -> AccountPabInput {
        AccountPabInput {
            account_id: req
                .header("x-amz-account-id")
                .unwrap_or_default()
                .to_string(),
            settings,
        }
    }
}

pub(super) fn account_pab_doc(doc: &Element) -> Result<AccountPab, ApiError> {
    let flag = |f: &str| match doc.child_text(f).map(str::trim) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(_) => Err(ApiError::from(S3Error::MalformedXml)),
    };
    Ok(AccountPab {
        block_public_acls: flag("BlockPublicAcls")?,
        ignore_public_acls: flag("IgnorePublicAcls")?,
        block_public_policy: flag("BlockPublicPolicy")?,
        restrict_public_buckets: flag("RestrictPublicBuckets")?,
    })
}

/// The account named must be this one (after authorization, as S3 Control answers).
fn own_account(ctx: &mut Ctx<'_>, i: &AccountPabInput) -> Result<(), ApiError> {
    if i.account_id != ctx.api.opts.account {
        return Err(S3Error::AccessDenied.into());
    }
    Ok(())
}

pub(super) fn put_account_pab(ctx: &mut Ctx<'_>, i: AccountPabInput) -> Result<Reply, ApiError> {
    own_account(ctx, &i)?;
    let settings = i.settings.ok_or(S3Error::MalformedXml)?;
    let text = xml::to_xml("PublicAccessBlockConfiguration", &settings);
    let text = text.replacen(
        "<PublicAccessBlockConfiguration>",
        &format!("<PublicAccessBlockConfiguration xmlns=\"{S3_CONTROL_XMLNS}\">"),
        1,
    );
    ctx.defer_meta_put(ACCOUNT_PAB_KEY.to_string(), text);
    Ok(Reply::s3_xml(200, String::new()))
}

pub(super) fn get_account_pab(ctx: &mut Ctx<'_>, i: AccountPabInput) -> Result<Reply, ApiError> {
    own_account(ctx, &i)?;
    match ctx.api.meta.get::<String>(ACCOUNT_PAB_KEY)? {
        Some(t) => Ok(Reply::s3_xml(
            200,
            format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{t}"),
        )),
        None => Err(S3Error::NoSuchAccountPublicAccessBlock(i.account_id).into()),
    }
}

pub(super) fn delete_account_pab(ctx: &mut Ctx<'_>, i: AccountPabInput) -> Result<Reply, ApiError> {
    own_account(ctx, &i)?;
    ctx.defer_meta_delete(ACCOUNT_PAB_KEY.to_string());
    Ok(Reply::s3_xml(200, String::new()))
}
