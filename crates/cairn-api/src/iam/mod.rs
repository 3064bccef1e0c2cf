//! IAM (query protocol; a global service, its events recorded in us-east-1): users, access
//! keys, inline user and role policies, roles with trust policies. STS lives beside it
//! ([`sts`]), sharing the query protocol and the identity directory.
//!
//! The router ([`route`]) turns a request into an [`IamOp`] carrying its typed inputs; the
//! families are `users`, `access_keys`, `policies`, `roles`. Every change is checked or
//! prepared first and made only once the request's event is durable.

mod access_keys;
mod policies;
mod roles;
pub mod sts;
mod users;

use policies::PolicyCall;

use crate::edge::{Committed, Ctx, HttpRequest};
use crate::protocol::query::{self, Params};
use crate::protocol::{ApiError, Protocol, Reply, IAM_XMLNS};
use crate::service::{BoxFuture, Service};
use cairn_iam::identity::{Directory, Holder, IamError, KeyStatus};
use serde_json::Value;

/// The IAM service (signing name `iam`).
pub struct Iam;

crate::operations! {
    /// An IAM operation with its inputs, as the router read them.
    pub enum IamOp {
        CreateUser(NewEntity),
        GetUser(Option<String>),
        ListUsers,
        DeleteUser(String),
        CreateAccessKey(Option<String>),
        ListAccessKeys(Option<String>),
        UpdateAccessKey(KeyStatusChange),
        DeleteAccessKey(KeyRef),
        PutUserPolicy(PolicyPut),
        GetUserPolicy(PolicyRef),
        DeleteUserPolicy(PolicyRef),
        ListUserPolicies(String),
        CreateRole(NewRole),
        GetRole(String),
        ListRoles,
        DeleteRole(String),
        PutRolePolicy(PolicyPut),
        GetRolePolicy(PolicyRef),
        DeleteRolePolicy(PolicyRef),
        ListRolePolicies(String),
        ListAttachedRolePolicies(String),
        ListInstanceProfilesForRole(String),
    }
}

impl IamOp {
    /// Reads change nothing: `Get*` and `List*`.
    pub fn read_only(&self) -> bool {
        !IamOp::mutates(self.name())
    }

    /// The IAM action that authorizes it.
    pub fn action(&self) -> String {
        format!("iam:{}", self.name())
    }
}

/// A user or role to create.
#[derive(Debug, Clone)]
pub struct NewEntity {
    pub name: String,
    pub path: Option<String>,
}

/// A role to create.
#[derive(Debug, Clone)]
pub struct NewRole {
    pub entity: NewEntity,
    pub trust_policy: String,
    pub description: Option<String>,
    pub max_session_duration: Option<i64>,
}

/// An access key of a user (the caller's own when no user is named).
#[derive(Debug, Clone)]
pub struct KeyRef {
    pub user: Option<String>,
    pub key_id: String,
}

#[derive(Debug, Clone)]
pub struct KeyStatusChange {
    pub key: KeyRef,
    pub status: KeyStatus,
}

/// An inline policy of a user or role.
#[derive(Debug, Clone)]
pub struct PolicyRef {
    pub owner: String,
    pub name: String,
}

#[derive(Debug, Clone)]
pub struct PolicyPut {
    pub policy: PolicyRef,
    pub document: String,
}

/// A routed IAM request: the operation and its parameters as CloudTrail logs them.
pub struct IamCall {
    pub op: IamOp,
    pub logged: Option<Value>,
}

/// Reads a query request into its operation.
pub fn route(req: &HttpRequest) -> Result<IamCall, ApiError> {
    let p = Params::of(req);
    let action = p.get("Action").unwrap_or_default().to_string();
    let s = |k: &str| p.need(k).map(str::to_string);
    let o = |k: &str| p.get(k).map(str::to_string);
    let entity = |kind: &str| -> Result<NewEntity, ApiError> {
        Ok(NewEntity {
            name: p.need(kind)?.to_string(),
            path: o("Path"),
        })
    };
    let policy = |owner: &str| -> Result<PolicyRef, ApiError> {
        Ok(PolicyRef {
            owner: s(owner)?,
            name: s("PolicyName")?,
        })
    };
    let put = |owner: &str| -> Result<PolicyPut, ApiError> {
        Ok(PolicyPut {
            policy: policy(owner)?,
            document: s("PolicyDocument")?,
        })
    };
    let key = || -> Result<KeyRef, ApiError> {
        Ok(KeyRef {
            user: o("UserName"),
            key_id: s("AccessKeyId")?,
        })
    };
    let op = match action.as_str() {
        "CreateUser" => IamOp::CreateUser(entity("UserName")?),
        "GetUser" => IamOp::GetUser(o("UserName")),
        "ListUsers" => IamOp::ListUsers,
        "DeleteUser" => IamOp::DeleteUser(s("UserName")?),
        "CreateAccessKey" => IamOp::CreateAccessKey(o("UserName")),
        "ListAccessKeys" => IamOp::ListAccessKeys(o("UserName")),
        "UpdateAccessKey" => {
            let key = key()?;
            let status = match p.need("Status")? {
                "Active" => KeyStatus::Active,
                "Inactive" => KeyStatus::Inactive,
                v => return Err(ApiError::client(
                    "ValidationError",
                    format!("1 validation error detected: Value '{v}' at 'status' failed to satisfy constraint: Member must satisfy enum value set: [Active, Inactive]"),
                )),
            };
            IamOp::UpdateAccessKey(KeyStatusChange { key, status })
        }
        "DeleteAccessKey" => IamOp::DeleteAccessKey(key()?),
        "PutUserPolicy" => IamOp::PutUserPolicy(put("UserName")?),
        "GetUserPolicy" => IamOp::GetUserPolicy(policy("UserName")?),
        "DeleteUserPolicy" => IamOp::DeleteUserPolicy(policy("UserName")?),
        "ListUserPolicies" => IamOp::ListUserPolicies(s("UserName")?),
        "CreateRole" => IamOp::CreateRole(NewRole {
            entity: entity("RoleName")?,
            trust_policy: s("AssumeRolePolicyDocument")?,
            description: o("Description"),
            max_session_duration: p.int("MaxSessionDuration").map_err(|_| {
                ApiError::client("ValidationError", "MaxSessionDuration must be an integer")
            })?,
        }),
        "GetRole" => IamOp::GetRole(s("RoleName")?),
        "ListRoles" => IamOp::ListRoles,
        "DeleteRole" => IamOp::DeleteRole(s("RoleName")?),
        "PutRolePolicy" => IamOp::PutRolePolicy(put("RoleName")?),
        "GetRolePolicy" => IamOp::GetRolePolicy(policy("RoleName")?),
        "DeleteRolePolicy" => IamOp::DeleteRolePolicy(policy("RoleName")?),
        "ListRolePolicies" => IamOp::ListRolePolicies(s("RoleName")?),
        "ListAttachedRolePolicies" => IamOp::ListAttachedRolePolicies(s("RoleName")?),
        "ListInstanceProfilesForRole" => IamOp::ListInstanceProfilesForRole(s("RoleName")?),
        other => {
            return Err(ApiError::client(
                "InvalidAction",
                format!("Could not find operation {other} for version 2010-05-08"),
            ))
        }
    };
    Ok(IamCall {
        op,
        logged: p.logged(),
    })
}

/// The `Action` of a query request (form body first, then the query string).
pub(crate) fn action_of(req: &HttpRequest) -> Option<String> {
    Params::of(req).get("Action").map(str::to_string)
}

/// Whether a request looks like a query-protocol call (a form POST).
pub(crate) fn is_form_post(req: &HttpRequest) -> bool {
    req.method == "POST"
        && req
            .header("content-type")
            .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"))
}

/// The name of a query request's operation; a missing `Action` is MissingAction. A body left
/// unread (a request that cannot authenticate, or could not be read) names no action: the
/// request then fails for that reason.
pub(crate) fn query_operation_name(req: &HttpRequest) -> Result<String, ApiError> {
    match action_of(req) {
        Some(a) if !a.is_empty() => Ok(a),
        _ if req.body_unread || req.body_problem.is_some() => Ok("UnknownOperation".into()),
        _ => Err(ApiError::client("MissingAction", "Missing Action")),
    }
}

impl IamOp {
    /// Whether operation `name` changes state.
    pub fn mutates(name: &str) -> bool {
        !(name.starts_with("Get") || name.starts_with("List"))
    }
}

impl Service for Iam {
    type Op = IamCall;

    fn signing_name(&self) -> &'static str {
        "iam"
    }
    fn event_source(&self) -> &'static str {
        "iam.amazonaws.com"
    }
    fn protocol(&self) -> Protocol {
        Protocol::Query
    }
    fn claims_unsigned(&self, req: &HttpRequest) -> bool {
        is_form_post(req)
    }
    fn operation_name(&self, req: &HttpRequest) -> Result<String, ApiError> {
        query_operation_name(req)
    }
    fn operations(&self) -> &'static [&'static str] {
        IamOp::NAMES
    }
    fn mutates(&self, name: &str) -> bool {
        IamOp::mutates(name)
    }
    fn route(&self, _api: &crate::Api, req: &HttpRequest) -> Result<IamCall, ApiError> {
        route(req)
    }
    fn audit_unrouted(&self, ctx: &mut Ctx<'_>, req: &HttpRequest, _name: &str) {
        audit_global(ctx, Params::of(req).logged());
    }
    fn handle<'a>(
        &'a self,
        ctx: &'a mut Ctx<'_>,
        call: IamCall,
    ) -> BoxFuture<'a, Result<Reply, ApiError>> {
        Box::pin(handle(ctx, call))
    }
}

async fn handle(ctx: &mut Ctx<'_>, call: IamCall) -> Result<Reply, ApiError> {
    audit_global(ctx, call.logged);
    ctx.audit.read_only = call.op.read_only();
    let op = call.op;
    let action = op.action();
    let action = action.as_str();
    match op {
        IamOp::CreateUser(e) => users::create(ctx, action, e).await,
        IamOp::GetUser(u) => users::get(ctx, action, u),
        IamOp::ListUsers => users::list(ctx, action),
        IamOp::DeleteUser(u) => users::delete(ctx, action, u),
        IamOp::CreateAccessKey(u) => access_keys::create(ctx, action, u).await,
        IamOp::ListAccessKeys(u) => access_keys::list(ctx, action, u),
        IamOp::UpdateAccessKey(c) => access_keys::update(ctx, action, c),
        IamOp::DeleteAccessKey(k) => access_keys::delete(ctx, action, k),
        IamOp::PutUserPolicy(p) => policies::run(ctx, action, Holder::User, PolicyCall::Put(p)),
        IamOp::GetUserPolicy(p) => policies::run(ctx, action, Holder::User, PolicyCall::Get(p)),
        IamOp::DeleteUserPolicy(p) => {
            policies::run(ctx, action, Holder::User, PolicyCall::Delete(p))
        }
        IamOp::ListUserPolicies(o) => policies::run(ctx, action, Holder::User, PolicyCall::List(o)),
        IamOp::CreateRole(r) => roles::create(ctx, action, r).await,
        IamOp::GetRole(r) => roles::get(ctx, action, r),
        IamOp::ListRoles => roles::list(ctx, action),
        IamOp::DeleteRole(r) => roles::delete(ctx, action, r),
        IamOp::PutRolePolicy(p) => policies::run(ctx, action, Holder::Role, PolicyCall::Put(p)),
        IamOp::GetRolePolicy(p) => policies::run(ctx, action, Holder::Role, PolicyCall::Get(p)),
        IamOp::DeleteRolePolicy(p) => {
            policies::run(ctx, action, Holder::Role, PolicyCall::Delete(p))
        }
        IamOp::ListRolePolicies(o) => policies::run(ctx, action, Holder::Role, PolicyCall::List(o)),
        IamOp::ListAttachedRolePolicies(r) => roles::attached(ctx, action, r),
        IamOp::ListInstanceProfilesForRole(r) => roles::instance_profiles(ctx, action, r),
    }
}

/// The answer of the operation being handled, with its result document.
pub(crate) fn result<T: serde::Serialize>(ctx: &Ctx<'_>, r: &T) -> Reply {
    query::reply(&ctx.audit.event_name, IAM_XMLNS, Some(r), &ctx.request_id)
}

/// The answer of an operation that returns no result element.
pub(crate) fn nothing(ctx: &Ctx<'_>) -> Reply {
    query::reply::<()>(&ctx.audit.event_name, IAM_XMLNS, None, &ctx.request_id)
}

/// The ARN policies see for a user or role: its real one, path included. A name that does not
/// exist yet is authorized as a path-less ARN (the call then fails with NoSuchEntity).
pub(crate) fn entity_arn(ctx: &Ctx<'_>, kind: &str, name: &str) -> String {
    let account = &ctx.api.opts.account;
    let real = match kind {
        "user" => ctx.api.iam.get_user(name).map(|u| u.arn(account)).ok(),
        _ => ctx.api.iam.get_role(name).map(|r| r.arn(account)).ok(),
    };
    real.unwrap_or_else(|| cairn_record::Arn::iam(account, &format!("{kind}/{name}")).to_string())
}

/// The ARN an entity about to be created will have (its path validated first).
pub(crate) fn new_arn(
    ctx: &mut Ctx<'_>,
    kind: &str,
    name: &str,
    path: Option<&str>,
) -> Result<String, ApiError> {
    let path = path.unwrap_or("/");
    cairn_iam::identity::validate_path(path).map_err(|e| {
        ctx.no_authorization_needed();
        iam_error(e)
    })?;
    Ok(cairn_record::Arn::iam(&ctx.api.opts.account, &format!("{kind}{path}{name}")).to_string())
}

/// IAM and STS are global: their calls are recorded in us-east-1, whatever region was
/// signed, with their parameters as sent.
pub(crate) fn audit_global(ctx: &mut Ctx<'_>, logged: Option<serde_json::Value>) {
    ctx.region = "us-east-1".into();
    ctx.audit.request_parameters = logged;
}

/// IAM's error names and statuses (the directory's errors are IAM's own).
pub fn iam_error(e: IamError) -> ApiError {
    let (code, status) = e.code();
    if status >= 500 {
        return ApiError::internal(e);
    }
    ApiError::new(code, status, e.to_string())
}

/// A policy document as IAM returns it: URL-encoded.
pub(crate) fn url_encoded(doc: &str) -> String {
    percent_encoding::utf8_percent_encode(doc, percent_encoding::NON_ALPHANUMERIC).to_string()
}

pub(crate) fn iso(t: chrono::DateTime<chrono::Utc>) -> String {
    cairn_record::time::iso(t)
}

/// Defers a directory change until the request's event is durable (its refusals were
/// checked already; see `Directory::check_*` and `prepare_*`).
pub(crate) fn defer_iam(
    ctx: &mut Ctx<'_>,
    change: impl FnOnce(&Directory) -> Result<(), IamError> + Send + Sync + 'static,
) {
    let iam = ctx.api.iam.clone();
    ctx.defer(
        Box::new(move || {
            change(&iam).map_err(iam_error)?;
            Ok(Committed::default())
        }),
        None,
    );
}
