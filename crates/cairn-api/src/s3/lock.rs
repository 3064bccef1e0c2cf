//! Object lock: the bucket's configuration (Get/PutObjectLockConfiguration), a version's
//! retention and legal hold (Get/PutObjectRetention, Get/PutObjectLegalHold), and what they
//! forbid (removing a protected version, weakening retention in force).

use super::tagging::{change_version, head_version, with_version};
use super::{document, with_store, S3Error, S3Request};
use crate::edge::Ctx;
use crate::protocol::xml::{self, Element};
use crate::protocol::{ApiError, Reply, S3_XMLNS};
use cairn_record::time::iso_millis;
use cairn_record::Arn;
use cairn_store::{ObjectInfo, Versioning};
use chrono::{DateTime, Utc};
use serde::Serialize;

/// Where a bucket's object-lock configuration is kept.
pub fn config_key(bucket: &str) -> String {
    format!("bucket-config/object-lock/{bucket}")
}

fn no_config() -> ApiError {
    S3Error::InvalidRequest("Bucket is missing Object Lock Configuration".into()).into()
}

/// The bucket's object-lock configuration document, when object lock is enabled.
pub fn config(ctx: &Ctx<'_>, bucket: &str) -> Result<Option<Element>, ApiError> {
    Ok(ctx
        .api
        .meta
        .get::<String>(&config_key(bucket))?
        .and_then(|t| xml::parse(t.as_bytes())))
}

/// Whether object lock is enabled on `bucket`.
pub fn enabled(ctx: &Ctx<'_>, bucket: &str) -> Result<bool, ApiError> {
    Ok(config(ctx, bucket)?.is_some())
}

fn require(ctx: &Ctx<'_>, bucket: &str) -> Result<(), ApiError> {
    if !enabled(ctx, bucket)? {
        return Err(no_config());
    }
    Ok(())
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
struct LockConfiguration {
    #[serde(rename = "@xmlns", skip_serializing_if = "Option::is_none")]
    xmlns: Option<&'static str>,
    object_lock_enabled: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    rule: Option<LockRule>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct LockRule {
    default_retention: DefaultRetention,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
struct DefaultRetention {
    mode: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    days: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    years: Option<u32>,
}

/// Enables object lock on a new bucket (`x-amz-bucket-object-lock-enabled: true`), once the
/// request's event is durable.
pub fn enable_at_creation(ctx: &mut Ctx<'_>, bucket: &str) {
    let c = LockConfiguration {
        xmlns: None,
        object_lock_enabled: "Enabled",
        rule: None,
    };
    ctx.defer_meta_put(
        config_key(bucket),
        xml::to_xml("ObjectLockConfiguration", &c),
    );
}

/// PutObjectLockConfiguration's input: enabled, with an optional default retention.
#[derive(Debug, Clone)]
pub struct LockConfigInput {
    pub rule: Option<LockRule>,
}

pub(super) fn config_input(doc: &Element) -> Result<LockConfigInput, ApiError> {
    if doc.child_text("ObjectLockEnabled").map(str::trim) != Some("Enabled") {
        return Err(S3Error::MalformedXml.into());
    }
    let Some(rule) = doc.child("Rule") else {
        return Ok(LockConfigInput { rule: None });
    };
    let d = rule
        .child("DefaultRetention")
        .ok_or(S3Error::MalformedXml)?;
    let mode = d.child_text("Mode").map(str::trim).unwrap_or("");
    if !matches!(mode, "GOVERNANCE" | "COMPLIANCE") {
        return Err(S3Error::MalformedXml.into());
    }
    // S3's bounds: 1 to 36,500 days, or 1 to 100 years.
    let period = |v: &str, max: u32| {
        v.trim()
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| {
                ApiError::from(S3Error::InvalidArgument(format!(
                    "Default retention period must be a positive integer value of at most {max}"
                )))
            })
    };
    let (days, years) = match (d.child_text("Days"), d.child_text("Years")) {
        (Some(n), None) => (Some(period(n, 36_500)?), None),
        (None, Some(n)) => (None, Some(period(n, 100)?)),
        _ => return Err(S3Error::MalformedXml.into()),
    };
    Ok(LockConfigInput {
        rule: Some(LockRule {
            default_retention: DefaultRetention {
                mode: mode.to_string(),
                days,
                years,
            },
        }),
    })
}

pub(super) fn get_config(ctx: &mut Ctx<'_>, req: &S3Request) -> Result<Reply, ApiError> {
    match ctx.api.meta.get::<String>(&config_key(&req.bucket))? {
        Some(text) => Ok(Reply::s3_xml(
            200,
            format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{text}"),
        )),
        None => Err(S3Error::NoSuchConfiguration(
            "ObjectLockConfigurationNotFoundError",
            "Object Lock configuration does not exist for this bucket",
            req.bucket.clone(),
        )
        .into()),
    }
}

pub(super) async fn put_config(
    ctx: &mut Ctx<'_>,
    req: &S3Request,
    i: LockConfigInput,
) -> Result<Reply, ApiError> {
    let b = req.bucket.clone();
    let versioning = with_store(ctx, move |s| s.versioning(&b).map_err(ApiError::internal)).await?;
    if versioning != Some(Versioning::Enabled) {
        return Err(S3Error::InvalidBucketState(
            "Versioning must be 'Enabled' on the bucket to apply a Object Lock configuration"
                .into(),
        )
        .into());
    }
    let c = LockConfiguration {
        xmlns: Some(S3_XMLNS),
        object_lock_enabled: "Enabled",
        rule: i.rule,
    };
    ctx.defer_meta_put(
        config_key(&req.bucket),
        xml::to_xml("ObjectLockConfiguration", &c),
    );
    Ok(Reply::s3_xml(200, String::new()))
}

/// An RFC 3339 date (object lock's retain-until).
pub fn parse_until(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s.trim())
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

/// The retention a new object gets: explicit headers, else the bucket's default retention.
/// `(mode, retain-until)`.
pub(super) fn new_object_retention(
    ctx: &Ctx<'_>,
    lock: Option<&Element>,
    explicit: Option<(&str, DateTime<Utc>)>,
) -> Result<Option<(String, String)>, ApiError> {
    if let Some((mode, until)) = explicit {
        if until <= ctx.now {
            return Err(S3Error::InvalidArgument(
                "The retain until date must be in the future!".into(),
            )
            .into());
        }
        return Ok(Some((mode.to_string(), iso_millis(until))));
    }
    let Some(d) = lock
        .and_then(|l| l.child("Rule"))
        .and_then(|r| r.child("DefaultRetention"))
    else {
        return Ok(None);
    };
    let mode = d.child_text("Mode").unwrap_or("GOVERNANCE").trim();
    let days = d
        .child_text("Days")
        .and_then(|v| v.trim().parse::<i64>().ok())
        .or_else(|| {
            d.child_text("Years")
                .and_then(|v| v.trim().parse::<i64>().ok())
                .and_then(|y| y.checked_mul(365))
        })
        .unwrap_or(0);
    let until = chrono::Duration::try_days(days).and_then(|d| ctx.now.checked_add_signed(d));
    Ok(match until {
        Some(u) if days > 0 => Some((mode.to_string(), iso_millis(u))),
        _ => None,
    })
}

fn locked() -> ApiError {
    S3Error::ObjectLocked.into()
}

/// Refuses to remove a version that object lock protects: a legal hold, COMPLIANCE retention
/// in force, or GOVERNANCE retention in force unless the request bypasses it (header and
/// `s3:BypassGovernanceRetention`).
pub fn check_removable(
    ctx: &mut Ctx<'_>,
    req: &S3Request,
    info: &ObjectInfo,
) -> Result<(), ApiError> {
    if info.system.get("legal-hold").map(String::as_str) == Some("ON") {
        return Err(locked());
    }
    let until = info.system.get("retain-until").and_then(|u| parse_until(u));
    if until.is_some_and(|u| u > ctx.now) {
        match info.system.get("retention-mode").map(String::as_str) {
            Some("GOVERNANCE") if req.bypass_governance => {
                ctx.authorize(
                    "s3:BypassGovernanceRetention",
                    &Arn::s3_object(&req.bucket, &info.key).to_string(),
                )?;
            }
            _ => return Err(locked()),
        }
    }
    Ok(())
}

/// PutObjectRetention's input: a mode and a date, or neither (removing retention).
#[derive(Debug, Clone)]
pub struct RetentionInput {
    pub mode: Option<String>,
    pub until: Option<DateTime<Utc>>,
    /// The date as sent (the `s3:object-lock-retain-until-date` condition key).
    pub until_text: String,
}

pub(super) fn retention_input(doc: &Element) -> Result<RetentionInput, ApiError> {
    let mode = doc.child_text("Mode").map(|m| m.trim().to_string());
    let until_text = doc
        .child_text("RetainUntilDate")
        .map(|u| u.trim().to_string());
    match (mode, until_text) {
        (Some(m), Some(u)) if matches!(m.as_str(), "GOVERNANCE" | "COMPLIANCE") => {
            let until = parse_until(&u).ok_or(S3Error::MalformedXml)?;
            Ok(RetentionInput {
                mode: Some(m),
                until: Some(until),
                until_text: u,
            })
        }
        (None, None) => Ok(RetentionInput {
            mode: None,
            until: None,
            until_text: String::new(),
        }),
        _ => Err(S3Error::MalformedXml.into()),
    }
}

/// PutObjectLegalHold's input: `ON` or `OFF`.
#[derive(Debug, Clone)]
pub struct LegalHoldInput(pub String);

pub(super) fn legal_hold_input(doc: &Element) -> Result<LegalHoldInput, ApiError> {
    doc.child_text("Status")
        .map(|s| s.trim().to_string())
        .filter(|s| s == "ON" || s == "OFF")
        .map(LegalHoldInput)
        .ok_or_else(|| S3Error::MalformedXml.into())
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Retention {
    mode: String,
    retain_until_date: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct LegalHold {
    status: String,
}

pub(super) async fn get_retention(ctx: &mut Ctx<'_>, req: &S3Request) -> Result<Reply, ApiError> {
    require(ctx, &req.bucket)?;
    let info = head_version(ctx, req).await?;
    let (Some(m), Some(u)) = (
        info.system.get("retention-mode"),
        info.system.get("retain-until"),
    ) else {
        return Err(S3Error::NoSuchObjectLockConfiguration.into());
    };
    Ok(document(
        "Retention",
        &Retention {
            mode: m.clone(),
            retain_until_date: u.clone(),
        },
    ))
}

pub(super) async fn get_legal_hold(ctx: &mut Ctx<'_>, req: &S3Request) -> Result<Reply, ApiError> {
    require(ctx, &req.bucket)?;
    let info = head_version(ctx, req).await?;
    let h = info
        .system
        .get("legal-hold")
        .ok_or(S3Error::NoSuchObjectLockConfiguration)?;
    Ok(document("LegalHold", &LegalHold { status: h.clone() }))
}

pub(super) async fn put_retention(
    ctx: &mut Ctx<'_>,
    req: &S3Request,
    i: RetentionInput,
) -> Result<Reply, ApiError> {
    require(ctx, &req.bucket)?;
    if i.until.is_some_and(|u| u <= ctx.now) {
        return Err(S3Error::InvalidArgument(
            "The retain until date must be in the future!".into(),
        )
        .into());
    }
    // Changes that weaken retention in force: never for COMPLIANCE; for GOVERNANCE only with
    // the bypass header and permission.
    let current = head_version(ctx, req).await?;
    let cur_until = current
        .system
        .get("retain-until")
        .and_then(|u| parse_until(u))
        .filter(|u| *u > ctx.now);
    let cur_mode = current.system.get("retention-mode").cloned();
    if let Some(cu) = cur_until {
        let weakens = i.until.is_none_or(|u| u < cu) || i.mode != cur_mode;
        if weakens {
            match cur_mode.as_deref() {
                Some("GOVERNANCE") if req.bypass_governance => {
                    let arn = Arn::s3_object(&req.bucket, req.object_key()).to_string();
                    ctx.authorize("s3:BypassGovernanceRetention", &arn)?;
                }
                _ => return Err(locked()),
            }
        }
    }
    let (mode, until) = (i.mode, i.until);
    let info = change_version(ctx, req, move |v| {
        match (&mode, until) {
            (Some(m), Some(u)) => {
                v.system.insert("retention-mode".into(), m.clone());
                v.system.insert("retain-until".into(), iso_millis(u));
            }
            _ => {
                v.system.remove("retention-mode");
                v.system.remove("retain-until");
            }
        }
        Ok(())
    })
    .await?;
    Ok(with_version(Reply::s3_xml(200, String::new()), &info))
}

pub(super) async fn put_legal_hold(
    ctx: &mut Ctx<'_>,
    req: &S3Request,
    i: LegalHoldInput,
) -> Result<Reply, ApiError> {
    require(ctx, &req.bucket)?;
    let status = i.0;
    let info = change_version(ctx, req, move |v| {
        v.system.insert("legal-hold".into(), status.clone());
        Ok(())
    })
    .await?;
    Ok(with_version(Reply::s3_xml(200, String::new()), &info))
}
