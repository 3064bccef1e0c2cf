//! IAM (query protocol; a global service, its events recorded in us-east-1): users, access
//! keys, inline user and role policies, roles with trust policies.

use crate::edge::Ctx;
use crate::wire::{xml_escape, ApiError, Reply, IAM_XMLNS};
use cairn_iam::identity::{AccessKey, IamError, KeyOwner, KeyStatus, Role, User};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// The parameters of a query-protocol request: the form body merged with the query string.
pub struct Params(pub BTreeMap<String, String>);

impl Params {
    pub fn of(ctx: &Ctx<'_>) -> Params {
        let mut m = BTreeMap::new();
        for (k, v) in ctx.req.query_params() {
            m.insert(k, v);
        }
        for (k, v) in form_urlencoded::parse(&ctx.req.body) {
            m.insert(k.into_owned(), v.into_owned());
        }
        Params(m)
    }

    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }

    /// A required parameter; missing → ValidationError as IAM words it.
    pub fn need(&self, k: &str) -> Result<&str, ApiError> {
        self.get(k).ok_or_else(|| {
            ApiError::client(
                "ValidationError",
                format!(
                    "1 validation error detected: Value null at '{}' failed to satisfy constraint: Member must not be null",
                    lower_first(k)
                ),
            )
        })
    }

    /// requestParameters as CloudTrail logs query APIs: lowerCamelCase keys, without the
    /// protocol's own fields.
    pub fn logged(&self) -> Option<Value> {
        let m: Map<String, Value> = self
            .0
            .iter()
            .filter(|(k, _)| {
                k.as_str() != "Action" && k.as_str() != "Version" && !crate::wire::is_auth_param(k)
            })
            .map(|(k, v)| (lower_first(k), json!(v)))
            .collect();
        (!m.is_empty()).then_some(Value::Object(m))
    }
}

pub fn lower_first(k: &str) -> String {
    let mut c = k.chars();
    match c.next() {
        Some(f) => f.to_lowercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

pub fn iam_error(e: IamError) -> ApiError {
    let (code, status) = e.code();
    if status >= 500 {
        return ApiError::internal(e);
    }
    ApiError::new(code, status, e.to_string())
}

/// `<{Op}Response><{Op}Result>{inner}</{Op}Result><ResponseMetadata>…` in `xmlns`.
pub fn query_reply(op: &str, xmlns: &str, inner: &str, request_id: &str) -> Reply {
    let result = if inner.is_empty() {
        String::new()
    } else {
        format!("<{op}Result>{inner}</{op}Result>")
    };
    Reply::xml(
        200,
        format!(
            "<{op}Response xmlns=\"{xmlns}\">{result}<ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata></{op}Response>"
        ),
    )
}

fn el(name: &str, v: &str) -> String {
    format!("<{name}>{}</{name}>", xml_escape(v))
}

fn iso(t: chrono::DateTime<chrono::Utc>) -> String {
    cairn_record::time::iso(t)
}

fn user_xml(account: &str, u: &User) -> String {
    format!(
        "<User>{}{}{}{}{}</User>",
        el("Path", &u.path),
        el("UserName", &u.name),
        el("UserId", &u.user_id),
        el("Arn", &u.arn(account)),
        el("CreateDate", &iso(u.created))
    )
}

fn role_fields(account: &str, r: &Role) -> String {
    let doc: String =
        percent_encoding::utf8_percent_encode(&r.trust_policy, percent_encoding::NON_ALPHANUMERIC)
            .to_string();
    format!(
        "{}{}{}{}{}{}{}{}",
        el("Path", &r.path),
        el("RoleName", &r.name),
        el("RoleId", &r.role_id),
        el("Arn", &r.arn(account)),
        el("CreateDate", &iso(r.created)),
        el("AssumeRolePolicyDocument", &doc),
        r.description
            .as_deref()
            .map(|d| el("Description", d))
            .unwrap_or_default(),
        el("MaxSessionDuration", &r.max_session_duration.to_string())
    )
}

fn key_meta_xml(user: &str, k: &AccessKey) -> String {
    format!(
        "<member>{}{}{}{}</member>",
        el("UserName", user),
        el("AccessKeyId", &k.id),
        el("Status", k.status.as_str()),
        el("CreateDate", &iso(k.created))
    )
}

/// The IAM actions cairn implements.
pub const OPERATIONS: &[&str] = &[
    "CreateUser",
    "GetUser",
    "ListUsers",
    "DeleteUser",
    "CreateAccessKey",
    "ListAccessKeys",
    "UpdateAccessKey",
    "DeleteAccessKey",
    "PutUserPolicy",
    "GetUserPolicy",
    "DeleteUserPolicy",
    "ListUserPolicies",
    "CreateRole",
    "GetRole",
    "ListRoles",
    "DeleteRole",
    "PutRolePolicy",
    "GetRolePolicy",
    "DeleteRolePolicy",
    "ListRolePolicies",
];

const READ_ONLY: &[&str] = &[
    "GetUser",
    "ListUsers",
    "ListAccessKeys",
    "GetUserPolicy",
    "ListUserPolicies",
    "GetRole",
    "ListRoles",
    "GetRolePolicy",
    "ListRolePolicies",
];

fn url_encoded(doc: &str) -> String {
    percent_encoding::utf8_percent_encode(doc, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Defers a directory change until the request's event is durable (its refusals were
/// checked already; see `Directory::check_*`).
fn defer_iam(
    ctx: &mut Ctx<'_>,
    change: impl FnOnce(&cairn_iam::identity::Directory) -> Result<(), cairn_iam::identity::IamError>
        + Send
        + Sync
        + 'static,
) {
    let iam = ctx.api.iam.clone();
    ctx.defer(
        Box::new(move || {
            change(&iam).map_err(iam_error)?;
            Ok(crate::edge::Committed::default())
        }),
        None,
    );
}

pub async fn handle(ctx: &mut Ctx<'_>, op: &str) -> Result<Reply, ApiError> {
    // IAM is global: its events are recorded in us-east-1 whatever region was signed.
    ctx.region = "us-east-1".into();
    let p = Params::of(ctx);
    ctx.audit.read_only = READ_ONLY.contains(&op);
    ctx.audit.request_parameters = p.logged();
    let account = ctx.api.opts.account.clone();
    let iam = ctx.api.iam.clone();
    let now = ctx.now;
    // Policies see an entity's real ARN, path included; a name that does not exist yet is
    // authorized as a path-less ARN (the call then fails with NoSuchEntity).
    let user_arn = |n: &str| {
        iam.get_user(n)
            .map(|u| u.arn(&account))
            .unwrap_or_else(|_| format!("arn:aws:iam::{account}:user/{n}"))
    };
    let role_arn = |n: &str| {
        iam.get_role(n)
            .map(|r| r.arn(&account))
            .unwrap_or_else(|_| format!("arn:aws:iam::{account}:role/{n}"))
    };
    // The ARN an entity about to be created will have (its path validated first).
    let new_arn = |ctx: &mut Ctx<'_>, kind: &str, n: &str, path: Option<&str>| {
        let path = path.unwrap_or("/");
        cairn_iam::identity::validate_path(path).map_err(|e| {
            ctx.no_authorization_needed();
            iam_error(e)
        })?;
        Ok::<_, ApiError>(format!("arn:aws:iam::{account}:{kind}{path}{n}"))
    };
    // The user an operation with an optional UserName applies to.
    let target_user = |ctx: &Ctx<'_>, p: &Params| -> Result<String, ApiError> {
        match (p.get("UserName"), &ctx.caller.owner) {
            (Some(u), _) => Ok(u.to_string()),
            (None, KeyOwner::User(u)) => Ok(u.clone()),
            (None, _) => Err(ApiError::client(
                "ValidationError",
                "Must specify userName when calling with non-User credentials",
            )),
        }
    };
    let inner = match op {
        "CreateUser" => {
            let name = p.need("UserName")?.to_string();
            let arn = new_arn(ctx, "user", &name, p.get("Path"))?;
            ctx.authorize("iam:CreateUser", &arn)?;
            let u = iam
                .create_user(&name, p.get("Path"), now)
                .map_err(iam_error)?;
            ctx.audit.response_elements = Some(json!({"user": {
                "path": u.path, "userName": u.name, "userId": u.user_id,
                "arn": u.arn(&account), "createDate": iso(u.created)}}));
            user_xml(&account, &u)
        }
        "GetUser" => {
            let name = match (p.get("UserName"), &ctx.caller.owner) {
                (Some(u), _) => u.to_string(),
                (None, KeyOwner::User(u)) => u.clone(),
                (None, KeyOwner::Root) => {
                    ctx.authorize("iam:GetUser", &format!("arn:aws:iam::{account}:root"))?;
                    return Ok(query_reply(
                        "GetUser",
                        IAM_XMLNS,
                        &format!(
                            "<User>{}{}{}</User>",
                            el("UserId", &account),
                            el("Arn", &format!("arn:aws:iam::{account}:root")),
                            el("CreateDate", &iso(now))
                        ),
                        &ctx.request_id,
                    ));
                }
                (None, _) => {
                    ctx.no_authorization_needed();
                    return Err(ApiError::client(
                        "ValidationError",
                        "Must specify userName when calling with non-User credentials",
                    ));
                }
            };
            ctx.authorize("iam:GetUser", &user_arn(&name))?;
            user_xml(&account, &iam.get_user(&name).map_err(iam_error)?)
        }
        "ListUsers" => {
            ctx.authorize("iam:ListUsers", &format!("arn:aws:iam::{account}:user/"))?;
            let users: String = iam
                .list_users()
                .iter()
                .map(|u| {
                    user_xml(&account, u)
                        .replacen("<User>", "<member>", 1)
                        .replace("</User>", "</member>")
                })
                .collect();
            format!("<Users>{users}</Users><IsTruncated>false</IsTruncated>")
        }
        "DeleteUser" => {
            let name = p.need("UserName")?.to_string();
            ctx.authorize("iam:DeleteUser", &user_arn(&name))?;
            iam.check_delete_user(&name).map_err(iam_error)?;
            defer_iam(ctx, move |d| d.delete_user(&name));
            String::new()
        }
        "CreateAccessKey" => {
            let name = target_user(ctx, &p)?;
            ctx.authorize("iam:CreateAccessKey", &user_arn(&name))?;
            let k = iam.create_access_key(&name, now).map_err(iam_error)?;
            // The secret is returned once and never logged.
            ctx.audit.response_elements = Some(json!({"accessKey": {
                "userName": name, "accessKeyId": k.id, "status": k.status.as_str(),
                "createDate": iso(k.created)}}));
            format!(
                "<AccessKey>{}{}{}{}{}</AccessKey>",
                el("UserName", &name),
                el("AccessKeyId", &k.id),
                el("Status", k.status.as_str()),
                el("SecretAccessKey", &k.secret),
                el("CreateDate", &iso(k.created))
            )
        }
        "ListAccessKeys" => {
            let name = target_user(ctx, &p)?;
            ctx.authorize("iam:ListAccessKeys", &user_arn(&name))?;
            let keys = iam.list_access_keys(&name).map_err(iam_error)?;
            let members: String = keys.iter().map(|k| key_meta_xml(&name, k)).collect();
            format!(
                "<UserName>{}</UserName><AccessKeyMetadata>{members}</AccessKeyMetadata><IsTruncated>false</IsTruncated>",
                xml_escape(&name)
            )
        }
        "UpdateAccessKey" => {
            let name = target_user(ctx, &p)?;
            ctx.authorize("iam:UpdateAccessKey", &user_arn(&name))?;
            let id = p.need("AccessKeyId")?;
            let status = match p.need("Status")? {
                "Active" => KeyStatus::Active,
                "Inactive" => KeyStatus::Inactive,
                s => {
                    return Err(ApiError::client(
                        "ValidationError",
                        format!("1 validation error detected: Value '{s}' at 'status' failed to satisfy constraint: Member must satisfy enum value set: [Active, Inactive]"),
                    ))
                }
            };
            iam.check_user_key(&name, id).map_err(iam_error)?;
            let id = id.to_string();
            defer_iam(ctx, move |d| d.update_access_key(&name, &id, status));
            String::new()
        }
        "DeleteAccessKey" => {
            let name = target_user(ctx, &p)?;
            ctx.authorize("iam:DeleteAccessKey", &user_arn(&name))?;
            let id = p.need("AccessKeyId")?.to_string();
            iam.check_user_key(&name, &id).map_err(iam_error)?;
            defer_iam(ctx, move |d| d.delete_access_key(&name, &id));
            String::new()
        }
        "PutUserPolicy" | "GetUserPolicy" | "DeleteUserPolicy" | "ListUserPolicies" => {
            let name = p.need("UserName")?.to_string();
            ctx.authorize(&format!("iam:{op}"), &user_arn(&name))?;
            match op {
                "PutUserPolicy" => {
                    let (pn, doc) = (
                        p.need("PolicyName")?.to_string(),
                        p.need("PolicyDocument")?.to_string(),
                    );
                    iam.check_policy_change(false, &name, &pn, Some(&doc))
                        .map_err(iam_error)?;
                    defer_iam(ctx, move |d| d.put_user_policy(&name, &pn, &doc));
                    String::new()
                }
                "GetUserPolicy" => {
                    let pn = p.need("PolicyName")?;
                    let doc = iam.get_user_policy(&name, pn).map_err(iam_error)?;
                    format!(
                        "{}{}{}",
                        el("UserName", &name),
                        el("PolicyName", pn),
                        el("PolicyDocument", &url_encoded(&doc))
                    )
                }
                "DeleteUserPolicy" => {
                    let pn = p.need("PolicyName")?.to_string();
                    iam.check_policy_change(false, &name, &pn, None)
                        .map_err(iam_error)?;
                    defer_iam(ctx, move |d| d.delete_user_policy(&name, &pn));
                    String::new()
                }
                _ => {
                    let names: String = iam
                        .list_user_policies(&name)
                        .map_err(iam_error)?
                        .iter()
                        .map(|n| el("member", n))
                        .collect();
                    format!("<PolicyNames>{names}</PolicyNames><IsTruncated>false</IsTruncated>")
                }
            }
        }
        "CreateRole" => {
            let name = p.need("RoleName")?.to_string();
            let arn = new_arn(ctx, "role", &name, p.get("Path"))?;
            ctx.authorize("iam:CreateRole", &arn)?;
            let max = match p.get("MaxSessionDuration") {
                Some(s) => Some(s.parse::<i64>().map_err(|_| {
                    ApiError::client("ValidationError", "MaxSessionDuration must be an integer")
                })?),
                None => None,
            };
            let r = iam
                .create_role(
                    &name,
                    p.get("Path"),
                    p.need("AssumeRolePolicyDocument")?,
                    p.get("Description"),
                    max,
                    now,
                )
                .map_err(iam_error)?;
            ctx.audit.response_elements = Some(json!({"role": {
                "path": r.path, "roleName": r.name, "roleId": r.role_id,
                "arn": r.arn(&account), "createDate": iso(r.created),
                "assumeRolePolicyDocument": url_encoded(&r.trust_policy)}}));
            format!("<Role>{}</Role>", role_fields(&account, &r))
        }
        "GetRole" => {
            let name = p.need("RoleName")?.to_string();
            ctx.authorize("iam:GetRole", &role_arn(&name))?;
            let r = iam.get_role(&name).map_err(iam_error)?;
            format!("<Role>{}</Role>", role_fields(&account, &r))
        }
        "ListRoles" => {
            ctx.authorize("iam:ListRoles", &format!("arn:aws:iam::{account}:role/"))?;
            let roles: String = iam
                .list_roles()
                .iter()
                .map(|r| format!("<member>{}</member>", role_fields(&account, r)))
                .collect();
            format!("<Roles>{roles}</Roles><IsTruncated>false</IsTruncated>")
        }
        "DeleteRole" => {
            let name = p.need("RoleName")?.to_string();
            ctx.authorize("iam:DeleteRole", &role_arn(&name))?;
            iam.check_delete_role(&name).map_err(iam_error)?;
            defer_iam(ctx, move |d| d.delete_role(&name));
            String::new()
        }
        "PutRolePolicy" | "GetRolePolicy" | "DeleteRolePolicy" | "ListRolePolicies" => {
            let name = p.need("RoleName")?.to_string();
            ctx.authorize(&format!("iam:{op}"), &role_arn(&name))?;
            match op {
                "PutRolePolicy" => {
                    let (pn, doc) = (
                        p.need("PolicyName")?.to_string(),
                        p.need("PolicyDocument")?.to_string(),
                    );
                    iam.check_policy_change(true, &name, &pn, Some(&doc))
                        .map_err(iam_error)?;
                    defer_iam(ctx, move |d| d.put_role_policy(&name, &pn, &doc));
                    String::new()
                }
                "GetRolePolicy" => {
                    let pn = p.need("PolicyName")?;
                    let doc = iam.get_role_policy(&name, pn).map_err(iam_error)?;
                    format!(
                        "{}{}{}",
                        el("RoleName", &name),
                        el("PolicyName", pn),
                        el("PolicyDocument", &url_encoded(&doc))
                    )
                }
                "DeleteRolePolicy" => {
                    let pn = p.need("PolicyName")?.to_string();
                    iam.check_policy_change(true, &name, &pn, None)
                        .map_err(iam_error)?;
                    defer_iam(ctx, move |d| d.delete_role_policy(&name, &pn));
                    String::new()
                }
                _ => {
                    let names: String = iam
                        .list_role_policies(&name)
                        .map_err(iam_error)?
                        .iter()
                        .map(|n| el("member", n))
                        .collect();
                    format!("<PolicyNames>{names}</PolicyNames><IsTruncated>false</IsTruncated>")
                }
            }
        }
        other => {
            ctx.no_authorization_needed();
            return Err(ApiError::client(
                "InvalidAction",
                format!("Could not find operation {other} for version 2010-05-08"),
            ));
        }
    };
    Ok(query_reply(op, IAM_XMLNS, &inner, &ctx.request_id))
}
