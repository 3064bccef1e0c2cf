//! Log groups: Create/Delete/DescribeLogGroups, Put/DeleteRetentionPolicy.

use super::invalid;
use crate::edge::Ctx;
use crate::protocol::ApiError;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// The retention periods CloudWatch Logs accepts, in days.
pub const RETENTION_DAYS: &[u32] = &[
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
];

/// A stored log group.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogGroup {
    pub name: String,
    pub region: String,
    /// Milliseconds since the epoch.
    pub created: i64,
    pub retention_days: Option<u32>,
    pub kms_key_id: Option<String>,
    pub tags: BTreeMap<String, String>,
    /// The KMS data keys the group's events were sealed under: (slot, key ARN, envelope).
    /// Slot 0 (cairn's own key) is implicit.
    #[serde(default)]
    pub key_slots: Vec<(u32, String, Vec<u8>)>,
    /// The slot new events are sealed in (0 when no KMS key is associated).
    #[serde(default)]
    pub current_slot: u32,
}

impl LogGroup {
    /// The group's key in the log event store.
    pub fn store_key(&self) -> String {
        store_key(&self.region, &self.name)
    }
}

/// A group's key in the log event store: `region\0name`.
pub(super) fn store_key(region: &str, name: &str) -> String {
    format!("{region}\u{0}{name}")
}

/// Checks a group's name and authorizes `action` on it (`…:log-group:NAME:*`).
pub(super) fn authorize_group(ctx: &mut Ctx<'_>, action: &str, name: &str) -> Result<(), ApiError> {
    check_name(name)?;
    ctx.authorize(action, &format!("{}:*", group_arn(ctx, name)))
}

/// The group `name`, under the control lock (held until the request's change is made).
pub(super) async fn lock_existing(
    ctx: &Ctx<'_>,
    name: &str,
) -> Result<(LogGroup, tokio::sync::OwnedMutexGuard<()>), ApiError> {
    let guard = ctx.api.control.clone().lock_owned().await;
    Ok((existing(ctx, name)?, guard))
}

/// The group a request names by `logGroupName` or `logGroupIdentifier` (a name or an ARN of
/// this account and Region); exactly one of them.
pub(super) fn named(
    ctx: &Ctx<'_>,
    name: &Option<String>,
    identifier: &Option<String>,
) -> Result<String, ApiError> {
    let n = match (name, identifier) {
        (Some(n), None) => n.clone(),
        (None, Some(id)) if id.starts_with("arn:") => {
            let prefix = format!(
                "arn:aws:logs:{}:{}:log-group:",
                ctx.region, ctx.api.opts.account
            );
            id.strip_prefix(&prefix)
                .map(|n| n.trim_end_matches(":*").to_string())
                .ok_or_else(|| {
                    invalid(format!(
                        "The ARN {id} does not name a log group of this account and Region."
                    ))
                })?
        }
        (None, Some(id)) => id.clone(),
        (Some(_), Some(_)) => {
            return Err(invalid(
                "LogGroup name and LogGroup ARN are mutually exclusive parameters.",
            ))
        }
        (None, None) => {
            return Err(invalid(
                "Either logGroupName or logGroupIdentifier is required.",
            ))
        }
    };
    check_name(&n)?;
    Ok(n)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateGroupInput {
    pub log_group_name: String,
    pub kms_key_id: Option<String>,
    pub tags: Option<BTreeMap<String, String>>,
    pub log_group_class: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupName {
    pub log_group_name: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeGroupsInput {
    pub log_group_name_prefix: Option<String>,
    pub log_group_name_pattern: Option<String>,
    pub next_token: Option<String>,
    pub limit: Option<i64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssociateInput {
    pub log_group_name: Option<String>,
    pub kms_key_id: String,
    pub resource_identifier: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DisassociateInput {
    pub log_group_name: Option<String>,
    pub resource_identifier: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetentionInput {
    pub log_group_name: String,
    pub retention_in_days: i64,
}

pub(super) fn group_key(region: &str, name: &str) -> String {
    format!("logs/group/{region}/{name}")
}

/// `arn:aws:logs:REGION:ACCOUNT:log-group:NAME` (the `logGroupArn`; `arn` adds `:*`).
pub(super) fn group_arn(ctx: &Ctx<'_>, name: &str) -> String {
    format!(
        "arn:aws:logs:{}:{}:log-group:{name}",
        ctx.region, ctx.api.opts.account
    )
}

pub(super) fn check_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 512
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/#".contains(c));
    if !ok {
        return Err(invalid(format!(
            "1 validation error detected: Value '{name}' at 'logGroupName' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\.\\-_/#A-Za-z0-9]+"
        )));
    }
    Ok(())
}

/// The log group a request names (ResourceNotFoundException when there is none).
pub(super) fn existing(ctx: &Ctx<'_>, name: &str) -> Result<LogGroup, ApiError> {
    check_name(name)?;
    ctx.api
        .meta
        .get::<LogGroup>(&group_key(&ctx.region, name))?
        .ok_or_else(|| {
            ApiError::client(
                "ResourceNotFoundException",
                "The specified log group does not exist.",
            )
        })
}

pub(super) fn check_tags(tags: &BTreeMap<String, String>) -> Result<(), ApiError> {
    if tags.len() > 50 {
        return Err(ApiError::client(
            "TooManyTagsException",
            "A resource can have no more than 50 tags.",
        ));
    }
    for (k, v) in tags {
        if k.is_empty()
            || k.chars().count() > 128
            || v.chars().count() > 256
            || k.starts_with("aws:")
        {
            return Err(invalid(format!("The tag {k} is not valid.")));
        }
    }
    Ok(())
}

pub(super) async fn create(
    ctx: &mut Ctx<'_>,
    action: &str,
    i: CreateGroupInput,
) -> Result<Value, ApiError> {
    check_name(&i.log_group_name)?;
    let arn = group_arn(ctx, &i.log_group_name);
    ctx.authorize(action, &format!("{arn}:*"))?;
    if i.log_group_class
        .as_deref()
        .is_some_and(|c| c != "STANDARD")
    {
        return Err(invalid(
            "cairn keeps log groups of the STANDARD class only.",
        ));
    }
    let tags = i.tags.unwrap_or_default();
    check_tags(&tags)?;
    let (kms_key_id, key_slots, current_slot) = match &i.kms_key_id {
        Some(k) => {
            let (arn, env) = crate::kms::on_behalf::logs_data_key(ctx, k, &arn)?;
            (Some(arn.clone()), vec![(1, arn, env)], 1)
        }
        None => (None, Vec::new(), 0),
    };
    let guard = ctx.api.control.clone().lock_owned().await;
    let key = group_key(&ctx.region, &i.log_group_name);
    if ctx.api.meta.get::<LogGroup>(&key)?.is_some() {
        return Err(ApiError::client(
            "ResourceAlreadyExistsException",
            "The specified log group already exists",
        ));
    }
    let g = LogGroup {
        name: i.log_group_name,
        region: ctx.region.clone(),
        created: ctx.now.timestamp_millis(),
        retention_days: None,
        kms_key_id,
        tags,
        key_slots,
        current_slot,
    };
    let (group, generation) = (g.store_key(), g.created);
    ctx.defer_meta_put(key, g);
    super::defer_store(ctx, move |logs| logs.create_group(&group, generation));
    ctx.hold_until_made(guard);
    Ok(json!({}))
}

pub(super) async fn delete(
    ctx: &mut Ctx<'_>,
    action: &str,
    g: GroupName,
) -> Result<Value, ApiError> {
    authorize_group(ctx, action, &g.log_group_name)?;
    let (group, guard) = lock_existing(ctx, &g.log_group_name).await?;
    // The group, its streams, its metric filters and its events go together.
    for prefix in [
        super::streams::stream_prefix(&group.region, &group.name),
        super::metrics::filter_prefix(&group.region, &group.name),
    ] {
        for (k, _) in ctx.api.meta.scan::<Value>(&prefix)? {
            ctx.defer_meta_delete(k);
        }
    }
    ctx.defer_meta_delete(group_key(&group.region, &group.name));
    let key = group.store_key();
    super::defer_store(ctx, move |logs| logs.delete_group(&key));
    ctx.hold_until_made(guard);
    Ok(json!({}))
}

/// A page of `items` from `token` (an index): the page and the next token.
pub(super) fn page<T: Clone>(
    items: &[T],
    limit: Option<i64>,
    token: Option<&str>,
    max: i64,
) -> Result<(Vec<T>, Option<String>), ApiError> {
    let limit = match limit {
        None => max as usize,
        Some(l) if (1..=max).contains(&l) => l as usize,
        Some(l) => {
            return Err(invalid(format!(
                "1 validation error detected: Value '{l}' at 'limit' failed to satisfy constraint: Member must have value less than or equal to {max}"
            )))
        }
    };
    let start = match token {
        None => 0,
        Some(t) => t
            .parse::<usize>()
            .map_err(|_| invalid("The specified nextToken is not valid."))?,
    };
    let page: Vec<T> = items.iter().skip(start).take(limit).cloned().collect();
    let end = start + page.len();
    Ok((page, (end < items.len()).then(|| end.to_string())))
}

pub(super) fn describe(
    ctx: &mut Ctx<'_>,
    action: &str,
    i: DescribeGroupsInput,
) -> Result<Value, ApiError> {
    ctx.authorize(
        action,
        &format!(
            "arn:aws:logs:{}:{}:log-group:*",
            ctx.region, ctx.api.opts.account
        ),
    )?;
    if i.log_group_name_prefix.is_some() && i.log_group_name_pattern.is_some() {
        return Err(invalid(
            "LogGroup name prefix and LogGroup name pattern are mutually exclusive parameters.",
        ));
    }
    let prefix = format!(
        "{}{}",
        group_key(&ctx.region, ""),
        i.log_group_name_prefix.as_deref().unwrap_or_default()
    );
    let pattern = i.log_group_name_pattern.as_deref().map(str::to_lowercase);
    let all: Vec<Value> = ctx
        .api
        .meta
        .scan::<LogGroup>(&prefix)?
        .into_iter()
        .map(|(_, g)| g)
        .filter(|g| {
            pattern
                .as_ref()
                .is_none_or(|p| g.name.to_lowercase().contains(p))
        })
        .map(|g| view(ctx, &g))
        .collect::<Result<_, _>>()?;
    let (groups, next) = page(&all, i.limit, i.next_token.as_deref(), 50)?;
    let mut v = json!({ "logGroups": groups });
    if let Some(n) = next {
        v["nextToken"] = json!(n);
    }
    Ok(v)
}

fn view(ctx: &Ctx<'_>, g: &LogGroup) -> Result<Value, ApiError> {
    let arn = group_arn(ctx, &g.name);
    let stored: u64 = ctx
        .api
        .logs
        .all_stream_stats(&g.store_key())
        .map_err(super::events::store_error)?
        .values()
        .map(|s| s.stored_bytes)
        .sum();
    let mut v = json!({
        "logGroupName": g.name,
        "creationTime": g.created,
        "metricFilterCount": super::metrics::of_group(ctx.api, g)?.len(),
        "arn": format!("{arn}:*"),
        "logGroupArn": arn,
        "storedBytes": stored,
        "logGroupClass": "STANDARD",
    });
    if let Some(d) = g.retention_days {
        v["retentionInDays"] = json!(d);
    }
    if let Some(k) = &g.kms_key_id {
        v["kmsKeyId"] = json!(k);
    }
    Ok(v)
}

pub(super) async fn put_retention(
    ctx: &mut Ctx<'_>,
    action: &str,
    i: RetentionInput,
) -> Result<Value, ApiError> {
    authorize_group(ctx, action, &i.log_group_name)?;
    let days = u32::try_from(i.retention_in_days)
        .ok()
        .filter(|d| RETENTION_DAYS.contains(d))
        .ok_or_else(|| {
            invalid(format!(
                "1 validation error detected: Value '{}' at 'retentionInDays' failed to satisfy constraint: Member must satisfy enum value set: [{}]",
                i.retention_in_days,
                RETENTION_DAYS.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
            ))
        })?;
    let (mut g, guard) = lock_existing(ctx, &i.log_group_name).await?;
    g.retention_days = Some(days);
    ctx.defer_meta_put(group_key(&ctx.region, &g.name), g);
    ctx.hold_until_made(guard);
    Ok(json!({}))
}

pub(super) async fn delete_retention(
    ctx: &mut Ctx<'_>,
    action: &str,
    i: GroupName,
) -> Result<Value, ApiError> {
    authorize_group(ctx, action, &i.log_group_name)?;
    let (mut g, guard) = lock_existing(ctx, &i.log_group_name).await?;
    g.retention_days = None;
    ctx.defer_meta_put(group_key(&ctx.region, &g.name), g);
    ctx.hold_until_made(guard);
    Ok(json!({}))
}

/// The group an Associate/DisassociateKmsKey names (query-result keys are not kept: cairn
/// keeps query results in memory only).
fn kms_target(
    ctx: &Ctx<'_>,
    name: &Option<String>,
    resource: &Option<String>,
) -> Result<String, ApiError> {
    match (name, resource) {
        (Some(n), None) => {
            check_name(n)?;
            Ok(n.clone())
        }
        (None, Some(r)) if r.contains(":log-group:") => named(ctx, &None, &Some(r.clone())),
        (None, Some(_)) => Err(invalid(
            "cairn keeps query results in memory and does not encrypt them with a KMS key; name a log group.",
        )),
        _ => Err(invalid(
            "Specify either logGroupName or resourceIdentifier, but not both.",
        )),
    }
}

pub(super) async fn associate_key(
    ctx: &mut Ctx<'_>,
    action: &str,
    i: AssociateInput,
) -> Result<Value, ApiError> {
    let name = kms_target(ctx, &i.log_group_name, &i.resource_identifier)?;
    authorize_group(ctx, action, &name)?;
    let (mut g, guard) = lock_existing(ctx, &name).await?;
    let arn = group_arn(ctx, &name);
    let (key_arn, env) = crate::kms::on_behalf::logs_data_key(ctx, &i.kms_key_id, &arn)?;
    let slot = g.key_slots.iter().map(|(s, _, _)| *s).max().unwrap_or(0) + 1;
    g.key_slots.push((slot, key_arn.clone(), env));
    g.current_slot = slot;
    g.kms_key_id = Some(key_arn);
    ctx.defer_meta_put(group_key(&ctx.region, &g.name), g);
    ctx.hold_until_made(guard);
    Ok(json!({}))
}

pub(super) async fn disassociate_key(
    ctx: &mut Ctx<'_>,
    action: &str,
    i: DisassociateInput,
) -> Result<Value, ApiError> {
    let name = kms_target(ctx, &i.log_group_name, &i.resource_identifier)?;
    authorize_group(ctx, action, &name)?;
    let (mut g, guard) = lock_existing(ctx, &name).await?;
    if g.kms_key_id.is_none() {
        return Err(invalid("The log group is not associated with a KMS key."));
    }
    // Events already sealed under the key keep needing it (its slot stays).
    g.kms_key_id = None;
    g.current_slot = 0;
    ctx.defer_meta_put(group_key(&ctx.region, &g.name), g);
    ctx.hold_until_made(guard);
    Ok(json!({}))
}
