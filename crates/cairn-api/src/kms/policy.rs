//! Key policies (Get/Put/ListKeyPolicies, the lockout safety check) and rotation
//! (Enable/Disable/GetKeyRotationStatus, RotateKeyOnDemand, ListKeyRotations).

use super::keys::for_change;
use super::{authorize_key, commit_key, kms_error, resolve, validation, KeyArg, KeyName, Page};
use crate::edge::Ctx;
use crate::protocol::{json, ApiError};
use cairn_kms::access::{self, Asker};
use cairn_kms::KeyRecord;
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PutPolicyInput {
    pub key_id: KeyName,
    pub policy_name: Option<String>,
    pub policy: String,
    #[serde(default)]
    pub bypass_policy_lockout_safety_check: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RotationInput {
    pub key_id: KeyName,
    pub rotation_period_in_days: Option<i64>,
}

fn policy_name(name: Option<&str>) -> Result<(), ApiError> {
    match name {
        None | Some("default") => Ok(()),
        Some(_) => Err(ApiError::client(
            "NotFoundException",
            "The only valid policy name is 'default'.",
        )),
    }
}

/// KMS refuses a policy that would lock the caller out of the key (no later PutKeyPolicy
/// possible), unless the caller bypasses the check.
pub(super) fn lockout_check(ctx: &Ctx<'_>, key: &KeyRecord) -> Result<(), ApiError> {
    let policy = access::check_policy(&key.policy)
        .map_err(|m| ApiError::client("MalformedPolicyDocumentException", m))?;
    let mut keys = ctx.condition_keys();
    access::context_keys(&mut keys, &ctx.api.opts.account, &Default::default());
    let asker = Asker {
        principal: &ctx.caller.principal,
        identity_policies: (!ctx.caller.is_root()).then_some(ctx.caller.policies.as_slice()),
    };
    access::decide(
        key,
        &policy,
        &[],
        &asker,
        "kms:PutKeyPolicy",
        &keys,
        &Default::default(),
    )
    .map_err(|_| {
        ApiError::client(
            "MalformedPolicyDocumentException",
            "The new key policy will not allow you to update the key policy in the future.",
        )
    })
}

pub(super) fn get(ctx: &mut Ctx<'_>, action: &str, k: KeyArg) -> Result<Value, ApiError> {
    let key = resolve(ctx, &k.key_id)?;
    authorize_key(ctx, &key, action, &Default::default())?;
    Ok(json!({ "Policy": key.policy, "PolicyName": "default" }))
}

pub(super) async fn put(
    ctx: &mut Ctx<'_>,
    action: &str,
    i: PutPolicyInput,
) -> Result<Value, ApiError> {
    policy_name(i.policy_name.as_deref())?;
    access::check_policy(&i.policy)
        .map_err(|m| ApiError::client("MalformedPolicyDocumentException", m))?;
    let (mut key, guard) = for_change(ctx, action, &i.key_id).await?;
    key.changeable().map_err(kms_error)?;
    key.policy = i.policy;
    if !i.bypass_policy_lockout_safety_check {
        lockout_check(ctx, &key)?;
    }
    commit_key(ctx, key, guard);
    Ok(json!({}))
}

pub(super) fn list(ctx: &mut Ctx<'_>, action: &str, k: KeyArg) -> Result<Value, ApiError> {
    let key = resolve(ctx, &k.key_id)?;
    authorize_key(ctx, &key, action, &Default::default())?;
    Page::bounds(k.limit, k.marker.as_deref())?;
    Ok(json!({ "PolicyNames": ["default"], "Truncated": false }))
}

pub(super) async fn enable_rotation(
    ctx: &mut Ctx<'_>,
    action: &str,
    i: RotationInput,
) -> Result<Value, ApiError> {
    let days = i.rotation_period_in_days.unwrap_or(365);
    if !(90..=2560).contains(&days) {
        return Err(validation(format!(
            "1 validation error detected: Value '{days}' at 'rotationPeriodInDays' failed to satisfy constraint: Member must have value less than or equal to 2560 and greater than or equal to 90"
        )));
    }
    let (mut key, guard) = for_change(ctx, action, &i.key_id).await?;
    key.usable().map_err(kms_error)?;
    key.rotation_enabled = true;
    key.rotation_period_days = Some(days as u32);
    key.next_rotation = Some(ctx.now + chrono::Duration::days(days));
    commit_key(ctx, key, guard);
    Ok(json!({}))
}

pub(super) async fn disable_rotation(
    ctx: &mut Ctx<'_>,
    action: &str,
    k: KeyArg,
) -> Result<Value, ApiError> {
    let (mut key, guard) = for_change(ctx, action, &k.key_id).await?;
    key.usable().map_err(kms_error)?;
    key.rotation_enabled = false;
    key.next_rotation = None;
    commit_key(ctx, key, guard);
    Ok(json!({}))
}

pub(super) fn rotation_status(
    ctx: &mut Ctx<'_>,
    action: &str,
    k: KeyArg,
) -> Result<Value, ApiError> {
    let key = resolve(ctx, &k.key_id)?;
    authorize_key(ctx, &key, action, &Default::default())?;
    key.changeable().map_err(kms_error)?;
    let mut v = json!({ "KeyRotationEnabled": key.rotation_enabled, "KeyId": key.arn });
    if key.rotation_enabled {
        v["RotationPeriodInDays"] = json!(key.rotation_period_days.unwrap_or(365));
        if let Some(n) = key.next_rotation {
            v["NextRotationDate"] = json::secs(n);
        }
    }
    if let Some(d) = key.on_demand_rotation {
        v["OnDemandRotationStartDate"] = json::secs(d);
    }
    Ok(v)
}

pub(super) async fn rotate_now(
    ctx: &mut Ctx<'_>,
    action: &str,
    k: KeyArg,
) -> Result<Value, ApiError> {
    let (key, guard) = for_change(ctx, action, &k.key_id).await?;
    key.usable().map_err(kms_error)?;
    // AWS allows ten on-demand rotations per key.
    if key.materials.len() > 10 {
        return Err(ApiError::client(
            "LimitExceededException",
            "The key has reached the limit of on-demand rotations.",
        ));
    }
    let mut rotated = ctx.api.kms.rotated(&key, ctx.now).map_err(kms_error)?;
    rotated.on_demand_rotation = Some(ctx.now);
    let arn = rotated.arn.clone();
    commit_key(ctx, rotated, guard);
    Ok(json!({ "KeyId": arn }))
}

pub(super) fn list_rotations(
    ctx: &mut Ctx<'_>,
    action: &str,
    k: KeyArg,
) -> Result<Value, ApiError> {
    let key = resolve(ctx, &k.key_id)?;
    authorize_key(ctx, &key, action, &Default::default())?;
    let rotations: Vec<Value> = key
        .materials
        .iter()
        .filter(|m| m.version > 1)
        .map(|m| {
            json!({
                "KeyId": key.arn,
                "RotationDate": json::secs(m.created),
                "RotationType": if key.on_demand_rotation == Some(m.created) { "ON_DEMAND" } else { "AUTOMATIC" },
            })
        })
        .collect();
    Page::answer("Rotations", &rotations, k.limit, k.marker.as_deref())
}
