//! Grants: CreateGrant, ListGrants, RetireGrant, RevokeGrant. A grant lets its grantee use the
//! key for the operations it names, within its encryption-context constraints (see
//! `cairn_kms::access`). Its token is a secret shown once and never logged.

use super::{authorize_key, kms_error, lock, resolve, validation, KeyName, Page};
use crate::edge::{Committed, Ctx};
use crate::protocol::{json, ApiError};
use cairn_kms::{Context, Grant, GrantConstraints};
use serde::Deserialize;
use serde_json::{json, Value};

/// The operations a grant may name.
const GRANT_OPERATIONS: &[&str] = &[
    "Decrypt",
    "Encrypt",
    "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext",
    "ReEncryptFrom",
    "ReEncryptTo",
    "Sign",
    "Verify",
    "GetPublicKey",
    "CreateGrant",
    "RetireGrant",
    "DescribeKey",
    "GenerateDataKeyPair",
    "GenerateDataKeyPairWithoutPlaintext",
    "GenerateMac",
    "VerifyMac",
    "DeriveSharedSecret",
];

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Constraints {
    pub encryption_context_subset: Option<Context>,
    pub encryption_context_equals: Option<Context>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateGrantInput {
    pub key_id: KeyName,
    pub grantee_principal: Option<String>,
    pub retiring_principal: Option<String>,
    pub operations: Vec<String>,
    pub constraints: Option<Constraints>,
    pub name: Option<String>,
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListGrantsInput {
    pub key_id: KeyName,
    pub grant_id: Option<String>,
    pub grantee_principal: Option<String>,
    pub limit: Option<i64>,
    pub marker: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RetireInput {
    pub grant_token: Option<String>,
    pub key_id: Option<KeyName>,
    pub grant_id: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RevokeInput {
    pub key_id: KeyName,
    pub grant_id: String,
}

fn principal_ok(p: &str) -> bool {
    !p.is_empty() && p.len() <= 256 && (p.starts_with("arn:aws:") || p.ends_with(".amazonaws.com"))
}

pub(super) async fn create(
    ctx: &mut Ctx<'_>,
    action: &str,
    i: CreateGrantInput,
) -> Result<Value, ApiError> {
    let grantee = i
        .grantee_principal
        .clone()
        .ok_or_else(|| validation("GranteePrincipal is required."))?;
    if !principal_ok(&grantee)
        || i.retiring_principal
            .as_deref()
            .is_some_and(|r| !principal_ok(r))
    {
        return Err(ApiError::client(
            "InvalidArnException",
            "A grant principal must be an ARN or an AWS service principal.",
        ));
    }
    if i.operations.is_empty()
        || !i
            .operations
            .iter()
            .all(|o| GRANT_OPERATIONS.contains(&o.as_str()))
    {
        return Err(validation(
            "Operations must name one or more grant operations (Decrypt, Encrypt, GenerateDataKey, …).",
        ));
    }
    if i.name
        .as_deref()
        .is_some_and(|n| n.is_empty() || n.len() > 256)
    {
        return Err(validation("Name must be 1 to 256 characters."));
    }
    let constraints = i.constraints.as_ref().map(|c| GrantConstraints {
        encryption_context_subset: c.encryption_context_subset.clone(),
        encryption_context_equals: c.encryption_context_equals.clone(),
    });
    // The grant's own condition keys, for policies that limit what grants may say.
    ctx.keys
        .set_many("kms:GrantOperations", i.operations.clone());
    ctx.keys.set("kms:GranteePrincipal", grantee.clone());
    if let Some(r) = &i.retiring_principal {
        ctx.keys.set("kms:RetiringPrincipal", r.clone());
    }
    ctx.keys.set("kms:GrantIsForAWSResource", "false");
    let guard = lock(ctx).await;
    let key = resolve(ctx, &i.key_id)?;
    authorize_key(ctx, &key, action, &Default::default())?;
    key.usable().map_err(kms_error)?;
    // A principal allowed only through a grant may pass on no more than that grant gives:
    // the same or fewer operations, the same or stricter constraints (as KMS requires).
    if !super::allowed_without_grants(ctx, &key, action, &Default::default()) {
        let me = [
            Some(ctx.caller.principal.arn.as_str()),
            ctx.caller.principal.role_arn.as_deref(),
        ];
        let parents = ctx.api.kms.grants(&key.key_id).map_err(kms_error)?;
        let covered = parents.iter().any(|p| {
            me.contains(&Some(p.grantee.as_str()))
                && p.operations.iter().any(|o| o == "CreateGrant")
                && i.operations.iter().all(|o| p.operations.contains(o))
                && narrower(p.constraints.as_ref(), constraints.as_ref())
        });
        if !covered {
            return Err(ApiError::client(
                "AccessDeniedException",
                format!(
                    "User: {} may create grants only with the operations and constraints of the grant that allows it",
                    ctx.caller.principal.arn
                ),
            ));
        }
    }
    if i.dry_run {
        return Err(ApiError::client(
            "DryRunOperationException",
            "The request would have succeeded, but the DryRun flag is set.",
        ));
    }
    let grants = ctx.api.kms.grants(&key.key_id).map_err(kms_error)?;
    // A grant created again with the same name and fields is the same grant (KMS answers
    // the existing id).
    if let Some(g) = grants.iter().find(|g| {
        i.name.is_some()
            && g.name == i.name
            && g.grantee == grantee
            && g.operations == i.operations
            && g.constraints == constraints
            && g.retiring == i.retiring_principal
    }) {
        ctx.audit.response_elements = Some(json!({ "grantId": g.grant_id }));
        return Ok(json!({ "GrantToken": g.token, "GrantId": g.grant_id }));
    }
    if grants.len() >= 50_000 {
        return Err(ApiError::client(
            "LimitExceededException",
            "Too many grants on this key.",
        ));
    }
    let grant_id = hex::encode(cairn_kms::random_bytes(32).map_err(kms_error)?);
    let token = cairn_kms::blob::grant_token(&cairn_kms::random_bytes(48).map_err(kms_error)?);
    let g = Grant {
        grant_id: grant_id.clone(),
        key_id: key.key_id.clone(),
        name: i.name,
        created: ctx.now,
        grantee,
        retiring: i.retiring_principal,
        issuing_account: format!("arn:aws:iam::{}:root", ctx.api.opts.account),
        operations: i.operations,
        constraints,
        token: token.clone(),
    };
    let kms = ctx.api.kms.clone();
    ctx.defer(
        Box::new(move || {
            kms.put_grant(&g).map_err(kms_error)?;
            Ok(Committed::default())
        }),
        None,
    );
    ctx.hold_until_made(guard);
    ctx.audit.response_elements = Some(json!({ "grantId": grant_id }));
    Ok(json!({ "GrantToken": token, "GrantId": grant_id }))
}

/// Whether `child`'s constraints are at least as strict as `parent`'s.
fn narrower(parent: Option<&GrantConstraints>, child: Option<&GrantConstraints>) -> bool {
    let Some(p) = parent else {
        return true;
    };
    let Some(c) = child else {
        return p
            .encryption_context_subset
            .as_ref()
            .is_none_or(|s| s.is_empty())
            && p.encryption_context_equals.is_none();
    };
    let within = |need: &Context, have: &Context| need.iter().all(|(k, v)| have.get(k) == Some(v));
    if let Some(e) = &p.encryption_context_equals {
        if c.encryption_context_equals.as_ref() != Some(e) {
            return false;
        }
    }
    if let Some(s) = &p.encryption_context_subset {
        let ok = c
            .encryption_context_subset
            .as_ref()
            .is_some_and(|cs| within(s, cs))
            || c.encryption_context_equals
                .as_ref()
                .is_some_and(|ce| within(s, ce));
        if !ok {
            return false;
        }
    }
    true
}

fn entry(g: &Grant) -> Value {
    let mut v = json!({
        "KeyId": g.key_id,
        "GrantId": g.grant_id,
        "CreationDate": json::secs(g.created),
        "GranteePrincipal": g.grantee,
        "IssuingAccount": g.issuing_account,
        "Operations": g.operations,
    });
    if let Some(n) = &g.name {
        v["Name"] = json!(n);
    }
    if let Some(r) = &g.retiring {
        v["RetiringPrincipal"] = json!(r);
    }
    if let Some(c) = &g.constraints {
        let mut cv = json!({});
        if let Some(s) = &c.encryption_context_subset {
            cv["EncryptionContextSubset"] = json!(s);
        }
        if let Some(e) = &c.encryption_context_equals {
            cv["EncryptionContextEquals"] = json!(e);
        }
        v["Constraints"] = cv;
    }
    v
}

pub(super) fn list(ctx: &mut Ctx<'_>, action: &str, i: ListGrantsInput) -> Result<Value, ApiError> {
    let key = resolve(ctx, &i.key_id)?;
    authorize_key(ctx, &key, action, &Default::default())?;
    let all: Vec<Value> = ctx
        .api
        .kms
        .grants(&key.key_id)
        .map_err(kms_error)?
        .iter()
        .filter(|g| i.grant_id.as_ref().is_none_or(|id| &g.grant_id == id))
        .filter(|g| i.grantee_principal.as_ref().is_none_or(|p| &g.grantee == p))
        .map(entry)
        .collect();
    Page::answer("Grants", &all, i.limit, i.marker.as_deref())
}

pub(super) async fn retire(
    ctx: &mut Ctx<'_>,
    _action: &str,
    i: RetireInput,
) -> Result<Value, ApiError> {
    let guard = lock(ctx).await;
    let grant = match (&i.grant_token, &i.key_id, &i.grant_id) {
        (Some(t), _, _) => ctx
            .api
            .kms
            .all_grants()
            .map_err(kms_error)?
            .into_iter()
            .find(|g| {
                aws_lc_rs::constant_time::verify_slices_are_equal(g.token.as_bytes(), t.as_bytes())
                    .is_ok()
            })
            .ok_or_else(|| {
                ApiError::client(
                    "InvalidGrantTokenException",
                    "The grant token is not valid.",
                )
            })?,
        (None, Some(k), Some(id)) => {
            let key = resolve(ctx, k)?;
            ctx.api
                .kms
                .grants(&key.key_id)
                .map_err(kms_error)?
                .iter()
                .find(|g| &g.grant_id == id)
                .cloned()
                .ok_or_else(|| {
                    ApiError::client("InvalidGrantIdException", "The grant id is not valid.")
                })?
        }
        _ => {
            return Err(validation(
                "Either GrantToken or both KeyId and GrantId must be given.",
            ))
        }
    };
    // Who may retire: the grant's retiring principal, its grantee when the grant includes
    // RetireGrant, or the account that issued it.
    ctx.no_authorization_needed();
    let me = [
        Some(ctx.caller.principal.arn.as_str()),
        ctx.caller.principal.role_arn.as_deref(),
    ];
    let allowed = ctx.caller.is_root()
        || grant
            .retiring
            .as_deref()
            .is_some_and(|r| me.contains(&Some(r)))
        || (me.contains(&Some(grant.grantee.as_str()))
            && grant.operations.iter().any(|o| o == "RetireGrant"));
    if let Some(k) = ctx.api.kms.key(&grant.key_id).map_err(kms_error)? {
        super::note_key(ctx, &k);
    }
    if !allowed {
        return Err(ApiError::client(
            "AccessDeniedException",
            format!(
                "User: {} is not authorized to perform: kms:RetireGrant on this grant",
                ctx.caller.principal.arn
            ),
        ));
    }
    defer_delete(ctx, grant);
    ctx.hold_until_made(guard);
    Ok(json!({}))
}

pub(super) async fn revoke(
    ctx: &mut Ctx<'_>,
    action: &str,
    i: RevokeInput,
) -> Result<Value, ApiError> {
    let guard = lock(ctx).await;
    let key = resolve(ctx, &i.key_id)?;
    authorize_key(ctx, &key, action, &Default::default())?;
    let grant = ctx
        .api
        .kms
        .grants(&key.key_id)
        .map_err(kms_error)?
        .iter()
        .find(|g| g.grant_id == i.grant_id)
        .cloned()
        .ok_or_else(|| ApiError::client("InvalidGrantIdException", "The grant id is not valid."))?;
    defer_delete(ctx, grant);
    ctx.hold_until_made(guard);
    Ok(json!({}))
}

fn defer_delete(ctx: &mut Ctx<'_>, g: Grant) {
    let kms = ctx.api.kms.clone();
    ctx.defer(
        Box::new(move || {
            kms.delete_grant(&g.key_id, &g.grant_id)
                .map_err(kms_error)?;
            Ok(Committed::default())
        }),
        None,
    );
}
