//! Roles: CreateRole, GetRole, ListRoles, DeleteRole. A role's trust policy is answered
//! URL-encoded, as IAM does.

use super::{
    defer_iam, entity_arn, iam_error, iso, new_arn, nothing, result, url_encoded, NewRole,
};
use crate::edge::Ctx;
use crate::protocol::xml::Members;
use crate::protocol::{ApiError, Reply};
use cairn_iam::identity::{Holder, Role};
use serde::Serialize;
use serde_json::json;

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct RoleXml {
    path: String,
    role_name: String,
    role_id: String,
    arn: String,
    create_date: String,
    assume_role_policy_document: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    max_session_duration: i64,
}

impl RoleXml {
    fn of(account: &str, r: &Role) -> RoleXml {
        RoleXml {
            path: r.path.clone(),
            role_name: r.name.clone(),
            role_id: r.role_id.clone(),
            arn: r.arn(account),
            create_date: iso(r.created),
            assume_role_policy_document: url_encoded(&r.trust_policy),
            description: r.description.clone(),
            max_session_duration: r.max_session_duration,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct OneRole {
    role: RoleXml,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct RoleList {
    roles: Members<RoleXml>,
    is_truncated: bool,
}

pub(super) async fn create(ctx: &mut Ctx<'_>, action: &str, n: NewRole) -> Result<Reply, ApiError> {
    let arn = new_arn(ctx, "role", &n.entity.name, n.entity.path.as_deref())?;
    ctx.authorize(action, &arn)?;
    // The check and the insert it allows are one step under the control lock.
    let guard = ctx.api.control.clone().lock_owned().await;
    let r = ctx
        .api
        .iam
        .prepare_role(
            &n.entity.name,
            n.entity.path.as_deref(),
            &n.trust_policy,
            n.description.as_deref(),
            n.max_session_duration,
            ctx.now,
        )
        .map_err(iam_error)?;
    let xml = RoleXml::of(&ctx.api.opts.account, &r);
    ctx.audit.response_elements = Some(json!({"role": {
        "path": xml.path, "roleName": xml.role_name, "roleId": xml.role_id,
        "arn": xml.arn, "createDate": xml.create_date,
        "assumeRolePolicyDocument": xml.assume_role_policy_document}}));
    defer_iam(ctx, move |d| d.insert_role(&r));
    ctx.hold_until_made(guard);
    Ok(result(ctx, &OneRole { role: xml }))
}

pub(super) fn get(ctx: &mut Ctx<'_>, action: &str, name: String) -> Result<Reply, ApiError> {
    ctx.authorize(action, &entity_arn(ctx, "role", &name))?;
    let r = ctx.api.iam.get_role(&name).map_err(iam_error)?;
    let role = RoleXml::of(&ctx.api.opts.account, &r);
    Ok(result(ctx, &OneRole { role }))
}

pub(super) fn list(ctx: &mut Ctx<'_>, action: &str) -> Result<Reply, ApiError> {
    let account = ctx.api.opts.account.clone();
    ctx.authorize(
        action,
        &cairn_record::Arn::iam(&account, "role/").to_string(),
    )?;
    let roles = ctx.api.iam.list_roles();
    let list = RoleList {
        roles: Members::of(roles.iter().map(|r| RoleXml::of(&account, r)).collect()),
        is_truncated: false,
    };
    Ok(result(ctx, &list))
}

pub(super) fn delete(ctx: &mut Ctx<'_>, action: &str, name: String) -> Result<Reply, ApiError> {
    ctx.authorize(action, &entity_arn(ctx, "role", &name))?;
    ctx.api
        .iam
        .check_delete(Holder::Role, &name)
        .map_err(iam_error)?;
    defer_iam(ctx, move |d| d.delete_role(&name));
    Ok(nothing(ctx))
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct AttachedPolicies {
    attached_policies: Members<String>,
    is_truncated: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct InstanceProfiles {
    instance_profiles: Members<String>,
    is_truncated: bool,
}

/// ListAttachedRolePolicies: cairn keeps inline policies only (no managed policies), so an
/// existing role has none attached; an unknown role is NoSuchEntity.
pub(super) fn attached(ctx: &mut Ctx<'_>, action: &str, name: String) -> Result<Reply, ApiError> {
    ctx.authorize(action, &entity_arn(ctx, "role", &name))?;
    ctx.api.iam.get_role(&name).map_err(iam_error)?;
    Ok(result(
        ctx,
        &AttachedPolicies {
            attached_policies: Members::of(Vec::new()),
            is_truncated: false,
        },
    ))
}

/// ListInstanceProfilesForRole: cairn has no instance profiles (no EC2), so none.
pub(super) fn instance_profiles(
    ctx: &mut Ctx<'_>,
    action: &str,
    name: String,
) -> Result<Reply, ApiError> {
    ctx.authorize(action, &entity_arn(ctx, "role", &name))?;
    ctx.api.iam.get_role(&name).map_err(iam_error)?;
    Ok(result(
        ctx,
        &InstanceProfiles {
            instance_profiles: Members::of(Vec::new()),
            is_truncated: false,
        },
    ))
}
