//! RestoreObject: an archived (GLACIER, DEEP_ARCHIVE) version becomes readable once the
//! lifecycle worker finishes its restore; a restored copy's lifetime is extended.

use super::tagging::{change_version, with_version};
use super::{http_date, S3Error, S3Request};
use crate::edge::Ctx;
use crate::protocol::xml;
use crate::protocol::{ApiError, Reply};
use cairn_record::time::iso_millis;

/// RestoreObject's input: days the restored copy lives, the retrieval tier.
#[derive(Debug, Clone)]
pub struct RestoreInput {
    pub days: i64,
    pub tier: String,
}

/// Reads a RestoreRequest (an empty body restores for one day at the Standard tier).
pub(super) fn input(body: &[u8]) -> Result<RestoreInput, ApiError> {
    let doc = if body.is_empty() {
        None
    } else {
        Some(
            xml::parse(body)
                .filter(|d| d.name == "RestoreRequest")
                .ok_or(S3Error::MalformedXml)?,
        )
    };
    let days: i64 = match doc.as_ref().and_then(|d| d.child_text("Days")) {
        Some(d) => d.trim().parse().map_err(|_| S3Error::MalformedXml)?,
        None => 1,
    };
    if !(1..=36_500).contains(&days) {
        return Err(S3Error::MalformedXml.into());
    }
    let tier = doc
        .as_ref()
        .and_then(|d| d.child("GlacierJobParameters"))
        .and_then(|g| g.child_text("Tier"))
        .map(|t| t.trim().to_string())
        .unwrap_or_else(|| "Standard".into());
    if !matches!(tier.as_str(), "Expedited" | "Standard" | "Bulk") {
        return Err(S3Error::MalformedXml.into());
    }
    Ok(RestoreInput { days, tier })
}

pub(super) async fn restore(
    ctx: &mut Ctx<'_>,
    req: &S3Request,
    i: RestoreInput,
) -> Result<Reply, ApiError> {
    let now = ctx.now;
    let outcome = std::sync::Arc::new(std::sync::Mutex::new(202u16));
    let o2 = outcome.clone();
    let info = change_version(ctx, req, move |v| {
        let class = v.system.get("storage-class").map(String::as_str);
        if !matches!(class, Some("GLACIER" | "DEEP_ARCHIVE")) {
            return Err(S3Error::InvalidObjectState {
                message: "Restore is not allowed for the object's current storage class",
                storage_class: None,
            }
            .into());
        }
        let current = v.system.get("restore").cloned().unwrap_or_default();
        if current.contains("ongoing-request=\"true\"") {
            return Err(S3Error::RestoreAlreadyInProgress.into());
        }
        if current.contains("ongoing-request=\"false\"") {
            // Already restored: the copy's lifetime is extended.
            *o2.lock().unwrap_or_else(|p| p.into_inner()) = 200;
            let expiry = super::lifecycle::restore_expiry(now, i.days);
            v.system.insert(
                "restore".into(),
                format!(
                    "ongoing-request=\"false\", expiry-date=\"{}\"",
                    http_date(expiry)
                ),
            );
        } else {
            v.system
                .insert("restore".into(), "ongoing-request=\"true\"".into());
            v.system.insert(
                "restore-request".into(),
                format!("{}|{}|{}", iso_millis(now), i.days, i.tier),
            );
        }
        Ok(())
    })
    .await?;
    let status = *outcome.lock().unwrap_or_else(|p| p.into_inner());
    Ok(with_version(Reply::s3_xml(status, String::new()), &info))
}
