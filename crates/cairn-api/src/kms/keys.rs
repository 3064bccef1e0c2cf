//! Keys: CreateKey, DescribeKey, ListKeys, Enable/DisableKey, Schedule/CancelKeyDeletion,
//! UpdateKeyDescription.

use super::{
    authorize_account, authorize_key, commit_key, kms_error, lock, resolve, validation, KeyArg,
    KeyName, Page,
};
use crate::edge::Ctx;
use crate::protocol::{json, ApiError};
use cairn_kms::{access, default_policy, KeyRecord, KeyState, NewKey};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateKeyInput {
    pub policy: Option<String>,
    pub description: Option<String>,
    pub key_usage: Option<String>,
    pub customer_master_key_spec: Option<String>,
    pub key_spec: Option<String>,
    pub origin: Option<String>,
    pub custom_key_store_id: Option<String>,
    #[serde(default)]
    pub bypass_policy_lockout_safety_check: bool,
    pub tags: Option<Vec<super::tags::Tag>>,
    #[serde(default)]
    pub multi_region: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ScheduleInput {
    pub key_id: KeyName,
    pub pending_window_in_days: Option<i64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescriptionInput {
    pub key_id: KeyName,
    pub description: String,
}

/// KeyMetadata as KMS answers it.
pub(crate) fn metadata(k: &KeyRecord) -> Value {
    let mut m = json!({
        "AWSAccountId": k.account,
        "KeyId": k.key_id,
        "Arn": k.arn,
        "CreationDate": json::secs(k.created),
        "Enabled": k.state == KeyState::Enabled,
        "Description": k.description,
        "KeyUsage": "ENCRYPT_DECRYPT",
        "KeyState": k.state.as_str(),
        "Origin": "AWS_KMS",
        "KeyManager": if k.aws_managed { "AWS" } else { "CUSTOMER" },
        "CustomerMasterKeySpec": "SYMMETRIC_DEFAULT",
        "KeySpec": "SYMMETRIC_DEFAULT",
        "EncryptionAlgorithms": ["SYMMETRIC_DEFAULT"],
        "MultiRegion": false,
    });
    if let Some(d) = k.deletion_date {
        m["DeletionDate"] = json::secs(d);
    }
    if let Some(w) = k.pending_window_days {
        m["PendingDeletionWindowInDays"] = json!(w);
    }
    m
}

fn unsupported(what: &str) -> ApiError {
    ApiError::client(
        "UnsupportedOperationException",
        format!(
            "cairn supports only symmetric encryption keys with material it generates ({what})."
        ),
    )
}

pub(super) async fn create(
    ctx: &mut Ctx<'_>,
    action: &str,
    i: CreateKeyInput,
) -> Result<Value, ApiError> {
    authorize_account(ctx, action)?;
    if i.key_usage
        .as_deref()
        .is_some_and(|u| u != "ENCRYPT_DECRYPT")
    {
        return Err(unsupported("KeyUsage ENCRYPT_DECRYPT"));
    }
    for spec in [&i.key_spec, &i.customer_master_key_spec] {
        if spec.as_deref().is_some_and(|s| s != "SYMMETRIC_DEFAULT") {
            return Err(unsupported("KeySpec SYMMETRIC_DEFAULT"));
        }
    }
    if i.origin.as_deref().is_some_and(|o| o != "AWS_KMS") || i.custom_key_store_id.is_some() {
        return Err(unsupported("Origin AWS_KMS"));
    }
    if i.multi_region {
        return Err(unsupported("single-Region keys"));
    }
    let description = i.description.unwrap_or_default();
    if description.len() > 8192 {
        return Err(validation("Description must be at most 8192 characters."));
    }
    let tags = super::tags::checked(i.tags.unwrap_or_default(), &[])?;
    let account = ctx.api.opts.account.clone();
    let policy = match i.policy {
        Some(p) => {
            access::check_policy(&p)
                .map_err(|m| ApiError::client("MalformedPolicyDocumentException", m))?;
            p
        }
        None => default_policy(&account),
    };
    let key = ctx
        .api
        .kms
        .new_key(
            &ctx.region.clone(),
            NewKey {
                description,
                policy,
                tags,
            },
            ctx.now,
        )
        .map_err(kms_error)?;
    if !i.bypass_policy_lockout_safety_check {
        super::policy::lockout_check(ctx, &key)?;
    }
    super::note_key(ctx, &key);
    let meta = metadata(&key);
    ctx.audit.response_elements = Some(json!({ "keyMetadata": json::logged_answer(&meta) }));
    let guard = lock(ctx).await;
    commit_key(ctx, key, guard);
    Ok(json!({ "KeyMetadata": meta }))
}

pub(super) fn describe(ctx: &mut Ctx<'_>, action: &str, k: KeyArg) -> Result<Value, ApiError> {
    let key = resolve(ctx, &k.key_id)?;
    authorize_key(ctx, &key, action, &Default::default())?;
    Ok(json!({ "KeyMetadata": metadata(&key) }))
}

pub(super) fn list(ctx: &mut Ctx<'_>, action: &str, p: Page) -> Result<Value, ApiError> {
    authorize_account(ctx, action)?;
    let keys: Vec<Value> = ctx
        .api
        .kms
        .keys()
        .map_err(kms_error)?
        .iter()
        .filter(|k| k.region == ctx.region)
        .map(|k| json!({"KeyId": k.key_id, "KeyArn": k.arn}))
        .collect();
    Page::answer("Keys", &keys, p.limit, p.marker.as_deref())
}

/// A key for a change: resolved, authorized, not pending deletion.
pub(super) async fn for_change(
    ctx: &mut Ctx<'_>,
    action: &str,
    id: &KeyName,
) -> Result<(KeyRecord, tokio::sync::OwnedMutexGuard<()>), ApiError> {
    let guard = lock(ctx).await;
    let key = resolve(ctx, id)?;
    authorize_key(ctx, &key, action, &Default::default())?;
    Ok(((*key).clone(), guard))
}

pub(super) async fn set_enabled(
    ctx: &mut Ctx<'_>,
    action: &str,
    k: KeyArg,
    enabled: bool,
) -> Result<Value, ApiError> {
    let (mut key, guard) = for_change(ctx, action, &k.key_id).await?;
    key.changeable().map_err(kms_error)?;
    key.state = if enabled {
        KeyState::Enabled
    } else {
        KeyState::Disabled
    };
    commit_key(ctx, key, guard);
    Ok(json!({}))
}

pub(super) async fn schedule_deletion(
    ctx: &mut Ctx<'_>,
    action: &str,
    i: ScheduleInput,
) -> Result<Value, ApiError> {
    let days = i.pending_window_in_days.unwrap_or(30);
    if !(7..=30).contains(&days) {
        return Err(validation(format!(
            "1 validation error detected: Value '{days}' at 'pendingWindowInDays' failed to satisfy constraint: Member must have value less than or equal to 30 and greater than or equal to 7"
        )));
    }
    let (mut key, guard) = for_change(ctx, action, &i.key_id).await?;
    key.changeable().map_err(kms_error)?;
    let when = ctx.now + chrono::Duration::days(days);
    key.state = KeyState::PendingDeletion;
    key.deletion_date = Some(when);
    key.pending_window_days = Some(days as u32);
    let answer = json!({
        "KeyId": key.arn,
        "DeletionDate": json::secs(when),
        "KeyState": "PendingDeletion",
        "PendingWindowInDays": days,
    });
    ctx.audit.response_elements = Some(json!({
        "keyId": key.arn,
        "deletionDate": cairn_record::time::iso(when),
        "keyState": "PendingDeletion",
        "pendingWindowInDays": days,
    }));
    commit_key(ctx, key, guard);
    Ok(answer)
}

pub(super) async fn cancel_deletion(
    ctx: &mut Ctx<'_>,
    action: &str,
    k: KeyArg,
) -> Result<Value, ApiError> {
    let (mut key, guard) = for_change(ctx, action, &k.key_id).await?;
    if key.state != KeyState::PendingDeletion {
        return Err(ApiError::client(
            "KMSInvalidStateException",
            format!("{} is not pending deletion.", key.arn),
        ));
    }
    // A key whose deletion is cancelled comes back disabled, as on AWS.
    key.state = KeyState::Disabled;
    key.deletion_date = None;
    key.pending_window_days = None;
    let arn = key.arn.clone();
    commit_key(ctx, key, guard);
    Ok(json!({ "KeyId": arn }))
}

pub(super) async fn update_description(
    ctx: &mut Ctx<'_>,
    action: &str,
    i: DescriptionInput,
) -> Result<Value, ApiError> {
    if i.description.len() > 8192 {
        return Err(validation("Description must be at most 8192 characters."));
    }
    let (mut key, guard) = for_change(ctx, action, &i.key_id).await?;
    key.changeable().map_err(kms_error)?;
    key.description = i.description;
    commit_key(ctx, key, guard);
    Ok(json!({}))
}
