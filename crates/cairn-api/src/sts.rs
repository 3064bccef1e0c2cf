//! STS (query protocol, recorded in us-east-1): GetCallerIdentity and AssumeRole.

use crate::edge::{access_denied, Ctx};
use crate::iam_api::{iam_error, query_reply, Params};
use crate::wire::{xml_escape, ApiError, Reply, STS_XMLNS};
use cairn_iam::identity::KeyOwner;
use cairn_iam::policy::{self, Decision, Policy, RequestContext};
use serde_json::json;

pub const OPERATIONS: &[&str] = &["GetCallerIdentity", "AssumeRole"];

fn el(name: &str, v: &str) -> String {
    format!("<{name}>{}</{name}>", xml_escape(v))
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

pub async fn handle(ctx: &mut Ctx<'_>, op: &str) -> Result<Reply, ApiError> {
    ctx.region = "us-east-1".into();
    let p = Params::of(ctx);
    ctx.audit.request_parameters = p.logged();
    let account = ctx.api.opts.account.clone();
    let inner = match op {
        "GetCallerIdentity" => {
            // AWS answers GetCallerIdentity for every valid caller, whatever its policies.
            ctx.no_authorization_needed();
            ctx.audit.read_only = true;
            let user_id = match &ctx.caller.owner {
                KeyOwner::Root => account.clone(),
                KeyOwner::User(u) => ctx
                    .api
                    .iam
                    .get_user(u)
                    .map(|x| x.user_id)
                    .unwrap_or_default(),
                KeyOwner::Session(s) => format!("{}:{}", s.role_id, s.session_name),
            };
            format!(
                "{}{}{}",
                el("Arn", &ctx.caller.principal.arn),
                el("UserId", &user_id),
                el("Account", &account)
            )
        }
        "AssumeRole" => {
            let role_arn = p.need("RoleArn")?.to_string();
            let session = p.need("RoleSessionName")?.to_string();
            let session_ok = (2..=64).contains(&session.len())
                && session
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c));
            if !session_ok {
                ctx.no_authorization_needed();
                return Err(ApiError::client(
                    "ValidationError",
                    format!("1 validation error detected: Value '{session}' at 'roleSessionName' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\w+=,.@-]*"),
                ));
            }
            if !(20..=2048).contains(&role_arn.len()) {
                ctx.no_authorization_needed();
                return Err(ApiError::client(
                    "ValidationError",
                    format!("1 validation error detected: Value '{role_arn}' at 'roleArn' failed to satisfy constraint: Member must have length greater than or equal to 20"),
                ));
            }
            let duration = match p.get("DurationSeconds") {
                Some(s) => s.parse::<i64>().map_err(|_| {
                    ApiError::client("ValidationError", "DurationSeconds must be an integer")
                })?,
                None => 3600,
            };
            let deny = || {
                access_denied(
                    &ctx.caller.principal.arn,
                    "sts:AssumeRole",
                    &role_arn,
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
            // The ARN must name an existing role exactly: this partition and account, the
            // role's own path and name. Anything else names no role (AccessDenied, as STS).
            let Some(role) = named_role(ctx, &role_arn) else {
                ctx.no_authorization_needed();
                return Err(deny());
            };
            let role_arn = role.arn(&account);
            // The role's trust policy must name the caller; if it names only the account,
            // the caller's own policies must also allow sts:AssumeRole.
            let trust = Policy::parse(&role.trust_policy).map_err(ApiError::internal)?;
            ctx.keys.set("sts:RoleSessionName", session.clone());
            if let Some(x) = p.get("ExternalId") {
                ctx.keys.set("sts:ExternalId", x);
            }
            if let Some(x) = p.get("SourceIdentity") {
                ctx.keys.set("sts:SourceIdentity", x);
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
                    return Err(deny());
                }
                Some(true) => {
                    // Named directly; still subject to explicit denies in the caller's policies.
                    ctx.no_authorization_needed();
                    if policy::evaluate(&ctx.caller.policies, &rc) == Decision::ExplicitDeny {
                        return Err(deny());
                    }
                }
                Some(false) => ctx.authorize("sts:AssumeRole", &role_arn)?,
            }
            let s = ctx
                .api
                .iam
                .issue_session(&role.name, &session, duration, ctx.now)
                .map_err(iam_error)?;
            let assumed_arn = format!(
                "arn:aws:sts::{account}:assumed-role/{}/{session}",
                role.name
            );
            let assumed_id = format!("{}:{session}", role.role_id);
            let expiration = cairn_record::time::iso(s.expiration);
            // Logged without the secret or the session token.
            ctx.audit.response_elements = Some(json!({
                "credentials": {"accessKeyId": s.access_key_id, "expiration": expiration},
                "assumedRoleUser": {"assumedRoleId": assumed_id, "arn": assumed_arn}
            }));
            ctx.audit.resources = Some(vec![cairn_record::Resource {
                account_id: Some(account.clone()),
                resource_type: "AWS::IAM::Role".into(),
                arn: Some(role_arn.clone()),
                arn_prefix: None,
            }]);
            format!(
                "<Credentials>{}{}{}{}</Credentials><AssumedRoleUser>{}{}</AssumedRoleUser>",
                el("AccessKeyId", &s.access_key_id),
                el("SecretAccessKey", &s.secret_access_key),
                el("SessionToken", &s.session_token),
                el("Expiration", &expiration),
                el("AssumedRoleId", &assumed_id),
                el("Arn", &assumed_arn)
            )
        }
        other => {
            ctx.no_authorization_needed();
            return Err(ApiError::client(
                "InvalidAction",
                format!("Could not find operation {other} for version 2011-06-15"),
            ));
        }
    };
    Ok(query_reply(op, STS_XMLNS, &inner, &ctx.request_id))
}
