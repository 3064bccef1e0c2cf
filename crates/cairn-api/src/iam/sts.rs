//! STS (query protocol, recorded in us-east-1): GetCallerIdentity and AssumeRole. It shares
//! the query protocol and the identity directory with IAM.

use super::{audit_global, iam_error, is_form_post, query_operation_name};
use crate::edge::{access_denied, Committed, Ctx, HttpRequest};
use crate::protocol::query::{self, Params};
use crate::protocol::{ApiError, Protocol, Reply};
use crate::service::{BoxFuture, Service};
use cairn_iam::identity::KeyOwner;
use cairn_iam::policy::{self, Decision, Policy, RequestContext};
use serde::Serialize;
use serde_json::{json, Value};

/// The namespace of STS answers.
pub const STS_XMLNS: &str = "https://sts.amazonaws.com/doc/2011-06-15/";

/// The STS service (signing name `sts`).
pub struct Sts;

crate::operations! {
    /// An STS operation with its inputs.
    pub enum StsOp {
        GetCallerIdentity,
        AssumeRole(AssumeRoleInput),
    }
}

/// AssumeRole's inputs, validated as STS validates them.
#[derive(Debug, Clone)]
pub struct AssumeRoleInput {
    pub role_arn: String,
    pub session_name: String,
    pub duration_seconds: i64,
    pub external_id: Option<String>,
    pub source_identity: Option<String>,
}

/// A routed STS request: the operation and its parameters as CloudTrail logs them.
pub struct StsCall {
    pub op: StsOp,
    pub logged: Option<Value>,
}

pub fn route(req: &HttpRequest) -> Result<StsCall, ApiError> {
    let p = Params::of(req);
    let op = match p.get("Action").unwrap_or_default() {
        "GetCallerIdentity" => StsOp::GetCallerIdentity,
        "AssumeRole" => StsOp::AssumeRole(assume_role_input(&p)?),
        other => {
            return Err(ApiError::client(
                "InvalidAction",
                format!("Could not find operation {other} for version 2011-06-15"),
            ))
        }
    };
    Ok(StsCall {
        op,
        logged: p.logged(),
    })
}

fn assume_role_input(p: &Params) -> Result<AssumeRoleInput, ApiError> {
    let role_arn = p.need("RoleArn")?.to_string();
    let session_name = p.need("RoleSessionName")?.to_string();
    let session_ok = (2..=64).contains(&session_name.len())
        && session_name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c));
    if !session_ok {
        return Err(ApiError::client(
            "ValidationError",
            format!("1 validation error detected: Value '{session_name}' at 'roleSessionName' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\w+=,.@-]*"),
        ));
    }
    if !(20..=2048).contains(&role_arn.len()) {
        return Err(ApiError::client(
            "ValidationError",
            format!("1 validation error detected: Value '{role_arn}' at 'roleArn' failed to satisfy constraint: Member must have length greater than or equal to 20"),
        ));
    }
    let duration_seconds = p
        .int("DurationSeconds")
        .map_err(|_| ApiError::client("ValidationError", "DurationSeconds must be an integer"))?
        .unwrap_or(3600);
    Ok(AssumeRoleInput {
        role_arn,
        session_name,
        duration_seconds,
        external_id: p.get("ExternalId").map(str::to_string),
        source_identity: p.get("SourceIdentity").map(str::to_string),
    })
}

impl StsOp {
    /// Whether operation `name` changes state.
    pub fn mutates(name: &str) -> bool {
        name == "AssumeRole"
    }
}

impl Service for Sts {
    type Op = StsCall;

    fn signing_name(&self) -> &'static str {
        "sts"
    }
    fn event_source(&self) -> &'static str {
        "sts.amazonaws.com"
    }
    fn protocol(&self) -> Protocol {
        Protocol::Query
    }
    fn claims_unsigned(&self, req: &HttpRequest) -> bool {
        // A form naming an STS action in its body.
        is_form_post(req)
            && form_urlencoded::parse(&req.body)
                .any(|(k, v)| k == "Action" && StsOp::NAMES.contains(&v.as_ref()))
    }
    fn operation_name(&self, req: &HttpRequest) -> Result<String, ApiError> {
        query_operation_name(req)
    }
    fn operations(&self) -> &'static [&'static str] {
        StsOp::NAMES
    }
    fn mutates(&self, name: &str) -> bool {
        StsOp::mutates(name)
    }
    fn route(&self, _api: &crate::Api, req: &HttpRequest) -> Result<StsCall, ApiError> {
        route(req)
    }
    fn audit_unrouted(&self, ctx: &mut Ctx<'_>, req: &HttpRequest, _name: &str) {
        audit_global(ctx, Params::of(req).logged());
    }
    fn handle<'a>(
        &'a self,
        ctx: &'a mut Ctx<'_>,
        call: StsCall,
    ) -> BoxFuture<'a, Result<Reply, ApiError>> {
        Box::pin(handle(ctx, call))
    }
}

async fn handle(ctx: &mut Ctx<'_>, call: StsCall) -> Result<Reply, ApiError> {
    audit_global(ctx, call.logged);
    match call.op {
        StsOp::GetCallerIdentity => get_caller_identity(ctx),
        StsOp::AssumeRole(input) => assume_role(ctx, input).await,
    }
}

fn result<T: Serialize>(ctx: &Ctx<'_>, r: &T) -> Reply {
    query::reply(&ctx.audit.event_name, STS_XMLNS, Some(r), &ctx.request_id)
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct CallerIdentity {
    arn: String,
    user_id: String,
    account: String,
}

fn get_caller_identity(ctx: &mut Ctx<'_>) -> Result<Reply, ApiError> {
    // AWS answers GetCallerIdentity for every valid caller, whatever its policies.
    ctx.no_authorization_needed();
    ctx.audit.read_only = true;
    let account = ctx.api.opts.account.clone();
    let user_id = match &ctx.caller.owner {
        KeyOwner::Root => account.clone(),
        // The caller authenticated with this user's key a moment ago; a user deleted since
        // is answered as gone.
        KeyOwner::User(u) => ctx.api.iam.get_user(u).map_err(iam_error)?.user_id,
        KeyOwner::Session(s) => format!("{}:{}", s.role_id, s.session_name),
    };
    let answer = CallerIdentity {
        arn: ctx.caller.principal.arn.clone(),
        user_id,
        account,
    };
    Ok(result(ctx, &answer))
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct AssumedRole {
    credentials: Credentials,
    assumed_role_user: AssumedRoleUser,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Credentials {
    access_key_id: String,
    secret_access_key: String,
    session_token: String,
    expiration: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct AssumedRoleUser {
    assumed_role_id: String,
    arn: String,
}

/// The role `arn` names exactly, if any: `arn:aws:iam::<account>:role<path><name>`.
fn named_role(ctx: &Ctx<'_>, arn: &str) -> Option<cairn_iam::identity::Role> {
    let a: cairn_record::Arn = arn.parse().ok()?;
    if a.partition != cairn_record::arn::PARTITION
        || a.service != "iam"
        || !a.region.is_empty()
        || a.account != ctx.api.opts.account
    {
        return None;
    }
    let rest = a.resource.strip_prefix("role/")?;
    let name = rest.rsplit('/').next()?;
    let role = ctx.api.iam.get_role(name).ok()?;
    (role.arn(&a.account) == arn).then_some(role)
}

async fn assume_role(ctx: &mut Ctx<'_>, input: AssumeRoleInput) -> Result<Reply, ApiError> {
    let account = ctx.api.opts.account.clone();
    let deny = |ctx: &Ctx<'_>, arn: &str| {
        access_denied(
            &ctx.caller.principal.arn,
            "sts:AssumeRole",
            arn,
            Decision::ImplicitDeny,
        )
    };
    if ctx.caller.is_root() {
        // AWS does not let the root user assume roles.
        ctx.no_authorization_needed();
        return Err(ApiError::new(
            "AccessDenied",
            403,
            "Roles may not be assumed by root accounts.",
        ));
    }
    // The ARN must name an existing role exactly: this partition and account, the role's own
    // path and name. Anything else names no role (AccessDenied, as STS).
    let Some(role) = named_role(ctx, &input.role_arn) else {
        ctx.no_authorization_needed();
        return Err(deny(ctx, &input.role_arn));
    };
    let role_arn = role.arn(&account);
    // The role's trust policy must name the caller; if it names only the account, the
    // caller's own policies must also allow sts:AssumeRole.
    let trust = Policy::parse(&role.trust_policy).map_err(ApiError::internal)?;
    let session = input.session_name;
    ctx.keys.set("sts:RoleSessionName", session.clone());
    if let Some(x) = &input.external_id {
        ctx.keys.set("sts:ExternalId", x.clone());
    }
    if let Some(x) = &input.source_identity {
        ctx.keys.set("sts:SourceIdentity", x.clone());
    }
    let keys = ctx.condition_keys();
    let rc = RequestContext {
        principal: &ctx.caller.principal,
        action: "sts:AssumeRole",
        resource: &role_arn,
        keys: &keys,
    };
    match trust.principal_allows(&rc) {
        None => {
            ctx.no_authorization_needed();
            return Err(deny(ctx, &role_arn));
        }
        Some(true) => {
            // Named directly; still subject to explicit denies in the caller's policies.
            ctx.no_authorization_needed();
            if policy::evaluate(&ctx.caller.policies, &rc) == Decision::ExplicitDeny {
                return Err(deny(ctx, &role_arn));
            }
        }
        Some(false) => ctx.authorize("sts:AssumeRole", &role_arn)?,
    }
    // The credentials become valid only once the event is durable (fail closed); the role
    // check and the insert are one step under the control lock.
    let guard = ctx.api.control.clone().lock_owned().await;
    let (s, key) = ctx
        .api
        .iam
        .prepare_session(&role.name, &session, input.duration_seconds, ctx.now)
        .map_err(iam_error)?;
    let assumed_arn =
        cairn_record::Arn::sts(&account, &format!("assumed-role/{}/{session}", role.name))
            .to_string();
    let assumed_id = format!("{}:{session}", role.role_id);
    let expiration = cairn_record::time::iso(s.expiration);
    // Logged without the secret or the session token.
    ctx.audit.response_elements = Some(json!({
        "credentials": {"accessKeyId": s.access_key_id, "expiration": expiration},
        "assumedRoleUser": {"assumedRoleId": assumed_id, "arn": assumed_arn}
    }));
    ctx.audit.resources = Some(vec![cairn_record::Resource {
        account_id: Some(account),
        resource_type: "AWS::IAM::Role".into(),
        arn: Some(role_arn),
        arn_prefix: None,
    }]);
    let answer = AssumedRole {
        credentials: Credentials {
            access_key_id: s.access_key_id,
            secret_access_key: s.secret_access_key,
            session_token: s.session_token,
            expiration,
        },
        assumed_role_user: AssumedRoleUser {
            assumed_role_id: assumed_id,
            arn: assumed_arn,
        },
    };
    let iam = ctx.api.iam.clone();
    let now = ctx.now;
    ctx.defer(
        Box::new(move || {
            iam.insert_session(&key, now).map_err(iam_error)?;
            Ok(Committed::default())
        }),
        None,
    );
    ctx.hold_until_made(guard);
    Ok(result(ctx, &answer))
}
