//! Aliases: Create/Update/DeleteAlias, ListAliases. An alias is a name in one Region for one
//! key; `alias/aws/…` names are AWS's own.

use super::{authorize_account, authorize_key, kms_error, lock, resolve, KeyName, Page};
use crate::edge::{Committed, Ctx};
use crate::protocol::{json, ApiError};
use cairn_kms::{alias_arn_of, Alias};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AliasInput {
    pub alias_name: String,
    pub target_key_id: KeyName,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AliasName {
    pub alias_name: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListAliasesInput {
    pub key_id: Option<KeyName>,
    pub limit: Option<i64>,
    pub marker: Option<String>,
}

fn check_name(name: &str) -> Result<(), ApiError> {
    let rest = name.strip_prefix("alias/").unwrap_or_default();
    let ok = !rest.is_empty()
        && name.len() <= 256
        && rest
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/_-".contains(c));
    if !ok {
        return Err(super::validation(format!(
            "1 validation error detected: Value '{name}' at 'aliasName' failed to satisfy constraint: Member must satisfy regular expression pattern: ^alias/[a-zA-Z0-9/_-]+$"
        )));
    }
    if rest.starts_with("aws/") {
        return Err(ApiError::client(
            "NotAuthorizedException",
            "Aliases beginning with alias/aws/ are reserved for AWS managed keys.",
        ));
    }
    Ok(())
}

/// The key an alias is to point at: a key (never another alias), authorized for `action`,
/// not pending deletion.
fn target(
    ctx: &mut Ctx<'_>,
    id: &KeyName,
    action: &str,
) -> Result<std::sync::Arc<cairn_kms::KeyRecord>, ApiError> {
    if id.0.starts_with("alias/") || id.0.contains(":alias/") {
        return Err(super::validation(
            "Provided TargetKeyId is an alias; an alias must point at a key id or key ARN.",
        ));
    }
    let key = resolve(ctx, id)?;
    authorize_key(ctx, &key, action, &Default::default())?;
    key.changeable().map_err(kms_error)?;
    Ok(key)
}

pub(super) async fn create(
    ctx: &mut Ctx<'_>,
    action: &str,
    i: AliasInput,
) -> Result<Value, ApiError> {
    check_name(&i.alias_name)?;
    let guard = lock(ctx).await;
    let key = target(ctx, &i.target_key_id, action)?;
    if ctx
        .api
        .kms
        .alias(&ctx.region, &i.alias_name)
        .map_err(kms_error)?
        .is_some()
    {
        return Err(ApiError::client(
            "AlreadyExistsException",
            format!(
                "An alias with the name {} already exists",
                alias_arn_of(&ctx.region, &ctx.api.opts.account, &i.alias_name)
            ),
        ));
    }
    defer_put(
        ctx,
        Alias {
            name: i.alias_name,
            region: ctx.region.clone(),
            target_key_id: key.key_id.clone(),
            created: ctx.now,
            updated: ctx.now,
        },
    );
    ctx.hold_until_made(guard);
    Ok(json!({}))
}

fn existing(ctx: &Ctx<'_>, name: &str) -> Result<Alias, ApiError> {
    ctx.api
        .kms
        .alias(&ctx.region, name)
        .map_err(kms_error)?
        .ok_or_else(|| {
            ApiError::client(
                "NotFoundException",
                format!(
                    "Alias {} is not found.",
                    alias_arn_of(&ctx.region, &ctx.api.opts.account, name)
                ),
            )
        })
}

pub(super) async fn update(
    ctx: &mut Ctx<'_>,
    action: &str,
    i: AliasInput,
) -> Result<Value, ApiError> {
    check_name(&i.alias_name)?;
    let guard = lock(ctx).await;
    let mut alias = existing(ctx, &i.alias_name)?;
    // Both keys must allow the change.
    if let Some(old) = ctx.api.kms.key(&alias.target_key_id).map_err(kms_error)? {
        authorize_key(ctx, &old, action, &Default::default())?;
    }
    let key = target(ctx, &i.target_key_id, action)?;
    alias.target_key_id = key.key_id.clone();
    alias.updated = ctx.now;
    defer_put(ctx, alias);
    ctx.hold_until_made(guard);
    Ok(json!({}))
}

pub(super) async fn delete(
    ctx: &mut Ctx<'_>,
    action: &str,
    a: AliasName,
) -> Result<Value, ApiError> {
    check_name(&a.alias_name)?;
    let guard = lock(ctx).await;
    let alias = existing(ctx, &a.alias_name)?;
    match ctx.api.kms.key(&alias.target_key_id).map_err(kms_error)? {
        Some(k) => authorize_key(ctx, &k, action, &Default::default())?,
        None => authorize_account(ctx, action)?,
    }
    let kms = ctx.api.kms.clone();
    let region = ctx.region.clone();
    ctx.defer(
        Box::new(move || {
            kms.delete_alias(&region, &alias.name).map_err(kms_error)?;
            Ok(Committed::default())
        }),
        None,
    );
    ctx.hold_until_made(guard);
    Ok(json!({}))
}

fn defer_put(ctx: &mut Ctx<'_>, alias: Alias) {
    let kms = ctx.api.kms.clone();
    ctx.defer(
        Box::new(move || {
            kms.put_alias(&alias).map_err(kms_error)?;
            Ok(Committed::default())
        }),
        None,
    );
}

pub(super) fn list(
    ctx: &mut Ctx<'_>,
    action: &str,
    i: ListAliasesInput,
) -> Result<Value, ApiError> {
    let only = match &i.key_id {
        Some(k) => {
            let key = resolve(ctx, k)?;
            authorize_key(ctx, &key, action, &Default::default())?;
            Some(key.key_id.clone())
        }
        None => {
            authorize_account(ctx, action)?;
            None
        }
    };
    let account = ctx.api.opts.account.clone();
    let all: Vec<Value> = ctx
        .api
        .kms
        .aliases(&ctx.region)
        .map_err(kms_error)?
        .into_iter()
        .filter(|a| only.as_ref().is_none_or(|k| &a.target_key_id == k))
        .map(|a| {
            json!({
                "AliasName": a.name,
                "AliasArn": alias_arn_of(&ctx.region, &account, &a.name),
                "TargetKeyId": a.target_key_id,
                "CreationDate": json::secs(a.created),
                "LastUpdatedDate": json::secs(a.updated),
            })
        })
        .collect();
    Page::answer("Aliases", &all, i.limit, i.marker.as_deref())
}
