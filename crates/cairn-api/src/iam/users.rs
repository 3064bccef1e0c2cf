//! Users: CreateUser, GetUser, ListUsers, DeleteUser.

use super::{defer_iam, entity_arn, iam_error, iso, new_arn, nothing, result, NewEntity};
use crate::edge::Ctx;
use crate::protocol::xml::Members;
use crate::protocol::{ApiError, Reply};
use cairn_iam::identity::{Holder, KeyOwner, User};
use serde::Serialize;
use serde_json::json;

/// A user as IAM answers it.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct UserXml {
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_name: Option<String>,
    user_id: String,
    arn: String,
    create_date: String,
}

impl UserXml {
    fn of(account: &str, u: &User) -> UserXml {
        UserXml {
            path: Some(u.path.clone()),
            user_name: Some(u.name.clone()),
            user_id: u.user_id.clone(),
            arn: u.arn(account),
            create_date: iso(u.created),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct OneUser {
    user: UserXml,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct UserList {
    users: Members<UserXml>,
    is_truncated: bool,
}

pub(super) async fn create(
    ctx: &mut Ctx<'_>,
    action: &str,
    e: NewEntity,
) -> Result<Reply, ApiError> {
    let arn = new_arn(ctx, "user", &e.name, e.path.as_deref())?;
    ctx.authorize(action, &arn)?;
    // The check and the insert it allows are one step under the control lock.
    let guard = ctx.api.control.clone().lock_owned().await;
    let u = ctx
        .api
        .iam
        .prepare_user(&e.name, e.path.as_deref(), ctx.now)
        .map_err(iam_error)?;
    let account = &ctx.api.opts.account;
    let xml = UserXml::of(account, &u);
    ctx.audit.response_elements = Some(json!({"user": {
        "path": u.path, "userName": u.name, "userId": u.user_id,
        "arn": xml.arn, "createDate": xml.create_date}}));
    defer_iam(ctx, move |d| d.insert_user(&u));
    ctx.hold_until_made(guard);
    Ok(result(ctx, &OneUser { user: xml }))
}

pub(super) fn get(
    ctx: &mut Ctx<'_>,
    action: &str,
    name: Option<String>,
) -> Result<Reply, ApiError> {
    let account = ctx.api.opts.account.clone();
    let name = match (name, &ctx.caller.owner) {
        (Some(u), _) => u,
        (None, KeyOwner::User(u)) => u.clone(),
        (None, KeyOwner::Root) => {
            // The root user is answered as itself (no path, no name).
            let arn = cairn_record::Arn::iam(&account, "root").to_string();
            ctx.authorize(action, &arn)?;
            let user = UserXml {
                path: None,
                user_name: None,
                user_id: account,
                arn,
                create_date: iso(ctx.now),
            };
            return Ok(result(ctx, &OneUser { user }));
        }
        (None, _) => {
            ctx.no_authorization_needed();
            return Err(ApiError::client(
                "ValidationError",
                "Must specify userName when calling with non-User credentials",
            ));
        }
    };
    ctx.authorize(action, &entity_arn(ctx, "user", &name))?;
    let u = ctx.api.iam.get_user(&name).map_err(iam_error)?;
    let user = UserXml::of(&account, &u);
    Ok(result(ctx, &OneUser { user }))
}

pub(super) fn list(ctx: &mut Ctx<'_>, action: &str) -> Result<Reply, ApiError> {
    let account = ctx.api.opts.account.clone();
    ctx.authorize(
        action,
        &cairn_record::Arn::iam(&account, "user/").to_string(),
    )?;
    let users = ctx.api.iam.list_users();
    let list = UserList {
        users: Members::of(users.iter().map(|u| UserXml::of(&account, u)).collect()),
        is_truncated: false,
    };
    Ok(result(ctx, &list))
}

pub(super) fn delete(ctx: &mut Ctx<'_>, action: &str, name: String) -> Result<Reply, ApiError> {
    ctx.authorize(action, &entity_arn(ctx, "user", &name))?;
    ctx.api
        .iam
        .check_delete(Holder::User, &name)
        .map_err(iam_error)?;
    defer_iam(ctx, move |d| d.delete_user(&name));
    Ok(nothing(ctx))
}
