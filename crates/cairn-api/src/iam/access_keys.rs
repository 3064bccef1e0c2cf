//! Access keys: CreateAccessKey, ListAccessKeys, UpdateAccessKey, DeleteAccessKey. An
//! operation that names no user applies to the calling user's own keys.

use super::{defer_iam, entity_arn, iam_error, iso, nothing, result, KeyRef, KeyStatusChange};
use crate::edge::Ctx;
use crate::protocol::xml::Members;
use crate::protocol::{ApiError, Reply};
use cairn_iam::identity::{AccessKey, KeyOwner};
use serde::Serialize;
use serde_json::json;

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct NewKey {
    access_key: NewKeyXml,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct NewKeyXml {
    user_name: String,
    access_key_id: String,
    status: &'static str,
    secret_access_key: String,
    create_date: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct KeyList {
    user_name: String,
    access_key_metadata: Members<KeyMetadata>,
    is_truncated: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct KeyMetadata {
    user_name: String,
    access_key_id: String,
    status: &'static str,
    create_date: String,
}

impl KeyMetadata {
    fn of(user: &str, k: &AccessKey) -> KeyMetadata {
        KeyMetadata {
            user_name: user.into(),
            access_key_id: k.id.clone(),
            status: k.status.as_str(),
            create_date: iso(k.created),
        }
    }
}

/// The user an operation applies to (the one named, else the calling user), authorized for
/// `action`.
fn authorized_user(
    ctx: &mut Ctx<'_>,
    action: &str,
    named: Option<String>,
) -> Result<String, ApiError> {
    let user = match (named, &ctx.caller.owner) {
        (Some(u), _) => u,
        (None, KeyOwner::User(u)) => u.clone(),
        (None, _) => {
            ctx.no_authorization_needed();
            return Err(ApiError::client(
                "ValidationError",
                "Must specify userName when calling with non-User credentials",
            ));
        }
    };
    ctx.authorize(action, &entity_arn(ctx, "user", &user))?;
    Ok(user)
}

pub(super) async fn create(
    ctx: &mut Ctx<'_>,
    action: &str,
    user: Option<String>,
) -> Result<Reply, ApiError> {
    let name = authorized_user(ctx, action, user)?;
    // The quota check and the insert it allows are one step under the control lock.
    let guard = ctx.api.control.clone().lock_owned().await;
    let k = ctx
        .api
        .iam
        .prepare_access_key(&name, ctx.now)
        .map_err(iam_error)?;
    // The secret is returned once and never logged.
    ctx.audit.response_elements = Some(json!({"accessKey": {
        "userName": name, "accessKeyId": k.id, "status": k.status.as_str(),
        "createDate": iso(k.created)}}));
    let answer = NewKey {
        access_key: NewKeyXml {
            user_name: name,
            access_key_id: k.id.clone(),
            status: k.status.as_str(),
            secret_access_key: k.secret.clone(),
            create_date: iso(k.created),
        },
    };
    defer_iam(ctx, move |d| d.insert_access_key(&k));
    ctx.hold_until_made(guard);
    Ok(result(ctx, &answer))
}

pub(super) fn list(
    ctx: &mut Ctx<'_>,
    action: &str,
    user: Option<String>,
) -> Result<Reply, ApiError> {
    let name = authorized_user(ctx, action, user)?;
    let keys = ctx.api.iam.list_access_keys(&name).map_err(iam_error)?;
    let list = KeyList {
        access_key_metadata: Members::of(keys.iter().map(|k| KeyMetadata::of(&name, k)).collect()),
        user_name: name,
        is_truncated: false,
    };
    Ok(result(ctx, &list))
}

pub(super) fn update(
    ctx: &mut Ctx<'_>,
    action: &str,
    c: KeyStatusChange,
) -> Result<Reply, ApiError> {
    let name = authorized_user(ctx, action, c.key.user)?;
    let id = c.key.key_id;
    ctx.api.iam.check_user_key(&name, &id).map_err(iam_error)?;
    let status = c.status;
    defer_iam(ctx, move |d| d.update_access_key(&name, &id, status));
    Ok(nothing(ctx))
}

pub(super) fn delete(ctx: &mut Ctx<'_>, action: &str, k: KeyRef) -> Result<Reply, ApiError> {
    let name = authorized_user(ctx, action, k.user)?;
    let id = k.key_id;
    ctx.api.iam.check_user_key(&name, &id).map_err(iam_error)?;
    defer_iam(ctx, move |d| d.delete_access_key(&name, &id));
    Ok(nothing(ctx))
}
