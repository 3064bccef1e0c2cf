//! Server-side encryption of embedded objects. Every body is sealed at rest; SSE-S3 (`AES256`)
//! under a key derived from the root key, SSE-KMS (`aws:kms`) under a data key of the
//! caller's KMS key, generated for the caller through KMS (which must allow it, and records
//! it) and kept as an envelope beside the body. Reading an SSE-KMS object needs `kms:Decrypt`
//! on its key, and its key usable. The choice comes from the request's headers, else from
//! the bucket's default encryption.
//!
//! What the object keeps (system attributes): `sse` (`aws:kms`), `sse-kms-key-id` (the key
//! ARN), `sse-context` (base64 JSON of the encryption context), `sse-bucket-key`.

use super::{bucket_config, S3Error, S3Request};
use crate::edge::Ctx;
use crate::kms::on_behalf::{self, S3Use};
use crate::protocol::{xml, ApiError};
use base64::Engine;
use cairn_kms::Context;
use cairn_store::PutOptions;
use std::collections::BTreeMap;

/// System attributes of an object's encryption.
const ATTRS: &[&str] = &["sse", "sse-kms-key-id", "sse-context", "sse-bucket-key"];

/// What a write asks for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SseRequest {
    /// `aws:kms` (else AES256).
    pub kms: bool,
    pub key_id: Option<String>,
    /// The caller's encryption context (`x-amz-server-side-encryption-context`).
    pub context: Context,
    pub bucket_key: Option<bool>,
}

fn invalid(m: &str) -> ApiError {
    S3Error::InvalidArgument(m.into()).into()
}

impl SseRequest {
    /// From a write's headers; `None` when it names no encryption.
    pub fn of(req: &S3Request) -> Result<Option<SseRequest>, ApiError> {
        let alg = req.header("x-amz-server-side-encryption");
        let key_id = req
            .header("x-amz-server-side-encryption-aws-kms-key-id")
            .map(str::to_string);
        let context = req.header("x-amz-server-side-encryption-context");
        let bucket_key = req
            .header("x-amz-server-side-encryption-bucket-key-enabled")
            .map(|v| v.eq_ignore_ascii_case("true"));
        let kms =
            match alg {
                None if key_id.is_none() && context.is_none() && bucket_key.is_none() => {
                    return Ok(None)
                }
                None | Some("AES256") => false,
                Some("aws:kms") => true,
                Some("aws:kms:dsse") => return Err(S3Error::NotImplemented(
                    "Dual-layer SSE-KMS (aws:kms:dsse) is not implemented by cairn; use aws:kms."
                        .into(),
                )
                .into()),
                Some(_) => return Err(invalid("The encryption method specified is not supported")),
            };
        if !kms && (key_id.is_some() || context.is_some()) {
            return Err(invalid(
                "Server Side Encryption with AWS KMS managed key requires HTTP header x-amz-server-side-encryption : aws:kms",
            ));
        }
        let context: Context = match context {
            None => Context::new(),
            Some(c) => base64::engine::general_purpose::STANDARD
                .decode(c)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .ok_or_else(|| invalid("The header 'x-amz-server-side-encryption-context' shall be Base64-encoded UTF-8 string holding JSON which represents a string-string map"))?,
        };
        if context.contains_key("aws:s3:arn") {
            return Err(invalid(
                "Encryption context keys cannot include aws:s3:arn; S3 adds it.",
            ));
        }
        Ok(Some(SseRequest {
            kms,
            key_id,
            context,
            bucket_key,
        }))
    }
}

/// The bucket's default encryption, when it is SSE-KMS.
pub fn bucket_default(
    meta: &crate::meta::Meta,
    bucket: &str,
) -> Result<Option<SseRequest>, ApiError> {
    let Some(text) = meta.get::<String>(&bucket_config::config_key("encryption", bucket))? else {
        return Ok(None);
    };
    let Some(doc) = xml::parse(text.as_bytes()) else {
        return Ok(None);
    };
    let Some(rule) = doc.child("Rule") else {
        return Ok(None);
    };
    let d = rule.child("ApplyServerSideEncryptionByDefault");
    if d.and_then(|d| d.child_text("SSEAlgorithm")).map(str::trim) != Some("aws:kms") {
        return Ok(None);
    }
    Ok(Some(SseRequest {
        kms: true,
        key_id: d
            .and_then(|d| d.child_text("KMSMasterKeyID"))
            .map(|k| k.trim().to_string())
            .filter(|k| !k.is_empty()),
        context: Context::new(),
        bucket_key: rule
            .child_text("BucketKeyEnabled")
            .map(|v| v.trim().eq_ignore_ascii_case("true")),
    }))
}

/// Decides a new object's encryption (the request's, else the bucket's default) and, for
/// SSE-KMS, generates its data key for the caller. Sets `opts` and returns the answer's
/// headers.
pub async fn apply(
    ctx: &mut Ctx<'_>,
    asked: Option<&SseRequest>,
    bucket: &str,
    key: &str,
    opts: &mut PutOptions,
) -> Result<Vec<(String, String)>, ApiError> {
    opts.system.retain(|k, _| !ATTRS.contains(&k.as_str()));
    opts.wrapped_key = None;
    let chosen = match asked {
        Some(a) => Some(a.clone()),
        None => bucket_default(&ctx.api.meta, bucket)?,
    };
    let Some(sse) = chosen.filter(|s| s.kms) else {
        return Ok(vec![(
            "x-amz-server-side-encryption".into(),
            "AES256".into(),
        )]);
    };
    // Without a key named, S3 uses the account's AWS managed key for S3 (`aws/s3`).
    let key_id = match sse.key_id.clone() {
        Some(k) => k,
        None => on_behalf::managed_key(ctx, "s3").await?,
    };
    let u = S3Use {
        bucket,
        key,
        user_context: sse.context.clone(),
        bucket_key: sse.bucket_key == Some(true),
    };
    let (wrapped, key_arn) = on_behalf::s3_generate(ctx, &key_id, &u)?;
    opts.wrapped_key = Some(wrapped);
    opts.system.extend(kms_attributes(
        &key_arn,
        &on_behalf::s3_context(&u),
        sse.bucket_key == Some(true),
    ));
    Ok(headers(&opts.system))
}

/// The system attributes of an SSE-KMS object: algorithm, key ARN, the encryption context
/// its data key was generated with (what every read is authorized with), bucket key.
pub fn kms_attributes(key_arn: &str, context: &Context, bucket_key: bool) -> Vec<(String, String)> {
    let mut out = vec![
        ("sse".to_string(), "aws:kms".to_string()),
        ("sse-kms-key-id".to_string(), key_arn.to_string()),
        (
            "sse-context".to_string(),
            base64::engine::general_purpose::STANDARD
                .encode(serde_json::to_vec(context).unwrap_or_else(|_| b"{}".to_vec())),
        ),
    ];
    if bucket_key {
        out.push(("sse-bucket-key".into(), "true".into()));
    }
    out
}

/// The SSE headers an object is answered with.
pub fn headers(system: &BTreeMap<String, String>) -> Vec<(String, String)> {
    match system.get("sse").map(String::as_str) {
        Some("aws:kms") => {
            let mut h = vec![(
                "x-amz-server-side-encryption".to_string(),
                "aws:kms".to_string(),
            )];
            if let Some(k) = system.get("sse-kms-key-id") {
                h.push((
                    "x-amz-server-side-encryption-aws-kms-key-id".into(),
                    k.clone(),
                ));
            }
            if system.get("sse-bucket-key").is_some() {
                h.push((
                    "x-amz-server-side-encryption-bucket-key-enabled".into(),
                    "true".into(),
                ));
            }
            h
        }
        // The embedded store encrypts every other body with SSE-S3, as S3 does by default.
        _ => vec![(
            "x-amz-server-side-encryption".to_string(),
            "AES256".to_string(),
        )],
    }
}

/// Before an object's body is answered: an SSE-KMS object needs `kms:Decrypt` on its key for
/// the caller (through S3), and the key usable.
pub fn check_read(ctx: &mut Ctx<'_>, system: &BTreeMap<String, String>) -> Result<(), ApiError> {
    if system.get("sse").map(String::as_str) != Some("aws:kms") {
        return Ok(());
    }
    let key_arn = system
        .get("sse-kms-key-id")
        .ok_or_else(|| ApiError::internal("an SSE-KMS object without its key"))?;
    // Without its context a read cannot be authorized as KMS would: refuse it.
    let context: Context = system
        .get("sse-context")
        .and_then(|c| base64::engine::general_purpose::STANDARD.decode(c).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| ApiError::internal("an SSE-KMS object without its encryption context"))?;
    on_behalf::s3_decrypt(
        ctx,
        key_arn,
        &context,
        system.contains_key("sse-bucket-key"),
    )
}
