//! Tags of log groups: TagResource/UntagResource/ListTagsForResource (by ARN) and the legacy
//! TagLogGroup/UntagLogGroup/ListTagsLogGroup (by name).

use super::groups::{authorize_group, check_tags, existing, group_arn, group_key, GroupName};
use super::invalid;
use crate::edge::Ctx;
use crate::protocol::ApiError;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceArn {
    pub resource_arn: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TagResourceInput {
    pub resource_arn: String,
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UntagResourceInput {
    pub resource_arn: String,
    pub tag_keys: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TagGroupInput {
    pub log_group_name: String,
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UntagGroupInput {
    pub log_group_name: String,
    pub tags: Vec<String>,
}

/// The log group an ARN names (this account and region; `:*` allowed).
fn group_of(ctx: &Ctx<'_>, arn: &str) -> Result<String, ApiError> {
    let prefix = format!(
        "arn:aws:logs:{}:{}:log-group:",
        ctx.region, ctx.api.opts.account
    );
    arn.strip_prefix(&prefix)
        .map(|n| n.trim_end_matches(":*").to_string())
        .filter(|n| !n.is_empty() && !n.contains(':'))
        .ok_or_else(|| {
            invalid(format!(
                "The ARN {arn} does not name a log group of this account and Region."
            ))
        })
}

async fn change(
    ctx: &mut Ctx<'_>,
    action: &str,
    group: &str,
    f: impl FnOnce(&mut BTreeMap<String, String>),
) -> Result<Value, ApiError> {
    authorize_group(ctx, action, group)?;
    let (mut g, guard) = super::groups::lock_existing(ctx, group).await?;
    f(&mut g.tags);
    check_tags(&g.tags)?;
    ctx.defer_meta_put(group_key(&ctx.region, &g.name), g);
    ctx.hold_until_made(guard);
    Ok(json!({}))
}

pub(super) async fn tag_resource(
    ctx: &mut Ctx<'_>,
    action: &str,
    i: TagResourceInput,
) -> Result<Value, ApiError> {
    let group = group_of(ctx, &i.resource_arn)?;
    change(ctx, action, &group, |t| t.extend(i.tags)).await
}

pub(super) async fn untag_resource(
    ctx: &mut Ctx<'_>,
    action: &str,
    i: UntagResourceInput,
) -> Result<Value, ApiError> {
    let group = group_of(ctx, &i.resource_arn)?;
    change(ctx, action, &group, |t| {
        t.retain(|k, _| !i.tag_keys.contains(k))
    })
    .await
}

pub(super) async fn tag_group(
    ctx: &mut Ctx<'_>,
    action: &str,
    i: TagGroupInput,
) -> Result<Value, ApiError> {
    change(ctx, action, &i.log_group_name, |t| t.extend(i.tags)).await
}

pub(super) async fn untag_group(
    ctx: &mut Ctx<'_>,
    action: &str,
    i: UntagGroupInput,
) -> Result<Value, ApiError> {
    change(ctx, action, &i.log_group_name, |t| {
        t.retain(|k, _| !i.tags.contains(k))
    })
    .await
}

fn list(ctx: &mut Ctx<'_>, action: &str, group: &str) -> Result<Value, ApiError> {
    ctx.authorize(action, &format!("{}:*", group_arn(ctx, group)))?;
    Ok(json!({ "tags": existing(ctx, group)?.tags }))
}

pub(super) fn list_for_resource(
    ctx: &mut Ctx<'_>,
    action: &str,
    r: ResourceArn,
) -> Result<Value, ApiError> {
    let group = group_of(ctx, &r.resource_arn)?;
    list(ctx, action, &group)
}

pub(super) fn list_group(ctx: &mut Ctx<'_>, action: &str, g: GroupName) -> Result<Value, ApiError> {
    list(ctx, action, &g.log_group_name)
}
