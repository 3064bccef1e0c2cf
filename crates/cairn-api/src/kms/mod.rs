//! KMS, JSON 1.1 (`TrentService.*`). The router ([`route`]) reads the target and the body once
//! into a [`KmsOp`] with its typed input; the families are `keys` (create, describe, list,
//! state, deletion, description), `policy` (key policies, rotation), `crypto` (encrypt,
//! decrypt, data keys, re-encrypt, random), `aliases`, `grants` and `tags`.
//!
//! Keys live in `cairn-kms` ([`cairn_kms::Kms`]); every call on a key is authorized by
//! [`authorize_key`] (the key policy, the caller's IAM policies, grants). Changes are
//! prepared here and stored only once the request's event is durable. Plaintext and
//! ciphertext never reach the record: KMS logs neither.

mod aliases;
mod crypto;
mod grants;
mod keys;
pub mod on_behalf;
mod policy;
mod tags;

use crate::edge::{Committed, Ctx, HttpRequest};
use crate::protocol::json;
use crate::protocol::{ApiError, Protocol, Reply};
use crate::service::{BoxFuture, Service};
use base64::Engine;
use cairn_kms::access::{self, Asker};
use cairn_kms::{Context, KeyRecord, KmsError};
use cairn_record::Resource;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};
use std::sync::Arc;

/// The prefix of KMS's `X-Amz-Target`.
pub const TARGET_PREFIX: &str = "TrentService.";

/// The KMS service (signing name `kms`).
pub struct Kms;

crate::operations! {
    /// A KMS operation with its typed input, as the router read it.
    pub enum KmsOp {
        CreateKey(keys::CreateKeyInput),
        DescribeKey(KeyArg),
        ListKeys(Page),
        EnableKey(KeyArg),
        DisableKey(KeyArg),
        ScheduleKeyDeletion(keys::ScheduleInput),
        CancelKeyDeletion(KeyArg),
        UpdateKeyDescription(keys::DescriptionInput),
        GetKeyPolicy(KeyArg),
        PutKeyPolicy(policy::PutPolicyInput),
        ListKeyPolicies(KeyArg),
        EnableKeyRotation(policy::RotationInput),
        DisableKeyRotation(KeyArg),
        GetKeyRotationStatus(KeyArg),
        RotateKeyOnDemand(KeyArg),
        ListKeyRotations(KeyArg),
        Encrypt(crypto::EncryptInput),
        Decrypt(crypto::DecryptInput),
        GenerateDataKey(crypto::DataKeyInput),
        GenerateDataKeyWithoutPlaintext(crypto::DataKeyInput),
        ReEncrypt(crypto::ReEncryptInput),
        GenerateRandom(crypto::RandomInput),
        CreateAlias(aliases::AliasInput),
        UpdateAlias(aliases::AliasInput),
        DeleteAlias(aliases::AliasName),
        ListAliases(aliases::ListAliasesInput),
        TagResource(tags::TagInput),
        UntagResource(tags::UntagInput),
        ListResourceTags(KeyArg),
        CreateGrant(grants::CreateGrantInput),
        ListGrants(grants::ListGrantsInput),
        RetireGrant(grants::RetireInput),
        RevokeGrant(grants::RevokeInput),
    }
}

impl KmsOp {
    /// Whether operation `name` changes state. Cryptographic calls change nothing (KMS
    /// records them as read-only).
    pub fn mutates(name: &str) -> bool {
        !([
            "Describe",
            "Get",
            "List",
            "Encrypt",
            "Decrypt",
            "Generate",
            "ReEncrypt",
        ]
        .iter()
        .any(|p| name.starts_with(p)))
    }
}

/// A key named by a request (`KeyId`: an id, an ARN, an alias name or an alias ARN).
#[derive(Debug, Clone, Deserialize)]
pub struct KeyArg {
    #[serde(rename = "KeyId")]
    pub key_id: KeyName,
    #[serde(rename = "Limit", default)]
    pub limit: Option<i64>,
    #[serde(rename = "Marker", default)]
    pub marker: Option<String>,
}

/// A non-empty key name of at most 2048 characters.
#[derive(Debug, Clone)]
pub struct KeyName(pub String);

impl<'de> Deserialize<'de> for KeyName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.is_empty() || s.len() > 2048 {
            return Err(serde::de::Error::custom(
                "KeyId must be between 1 and 2048 characters",
            ));
        }
        Ok(KeyName(s))
    }
}

/// `Limit` and `Marker` of a listing.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Page {
    #[serde(rename = "Limit", default)]
    pub limit: Option<i64>,
    #[serde(rename = "Marker", default)]
    pub marker: Option<String>,
}

impl Page {
    /// The page size (1–1000, default 100) and the index to start at.
    pub fn bounds(limit: Option<i64>, marker: Option<&str>) -> Result<(usize, usize), ApiError> {
        let limit = match limit {
            None => 100,
            Some(l) if (1..=1000).contains(&l) => l as usize,
            Some(l) => {
                return Err(validation(format!(
                    "1 validation error detected: Value '{l}' at 'limit' failed to satisfy constraint: Member must have value between 1 and 1000"
                )))
            }
        };
        let start = match marker {
            None => 0,
            Some(m) => m.parse::<usize>().map_err(|_| {
                ApiError::client("InvalidMarkerException", "The marker is not valid.")
            })?,
        };
        Ok((limit, start))
    }

    /// One page of `items` as KMS answers a listing: `{field: [...], "Truncated": …}` and
    /// `NextMarker` when there is more.
    pub fn answer(
        field: &str,
        items: &[Value],
        limit: Option<i64>,
        marker: Option<&str>,
    ) -> Result<Value, ApiError> {
        let (limit, start) = Self::bounds(limit, marker)?;
        let page: Vec<Value> = items.iter().skip(start).take(limit).cloned().collect();
        let end = start + page.len();
        let more = end < items.len();
        let mut v = Map::new();
        v.insert(field.into(), Value::Array(page));
        v.insert("Truncated".into(), Value::Bool(more));
        if more {
            v.insert("NextMarker".into(), Value::String(end.to_string()));
        }
        Ok(Value::Object(v))
    }
}

pub(crate) fn validation(message: impl Into<String>) -> ApiError {
    ApiError::client("ValidationException", message)
}

/// The KMS error for a key-store error.
pub(crate) fn kms_error(e: KmsError) -> ApiError {
    match e {
        KmsError::Internal(m) => ApiError::new("KMSInternalException", 500, m),
        e => ApiError::client(e.code(), e.to_string()),
    }
}

/// Base64 blobs of the JSON protocol.
pub(crate) fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A base64 blob member (`Plaintext`, `CiphertextBlob`) of 1 to `max` bytes.
#[derive(Debug, Clone)]
pub struct Blob(pub Vec<u8>);

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s.as_bytes())
            .map(Blob)
            .map_err(|_| serde::de::Error::custom("a blob member is not valid base64"))
    }
}

/// A routed KMS request: the operation and its parameters as KMS logs them.
pub struct KmsCall {
    pub op: KmsOp,
    pub logged: Option<Value>,
}

/// Members KMS never logs (secrets and blobs).
const UNLOGGED: &[&str] = &["Plaintext", "CiphertextBlob", "GrantTokens", "GrantToken"];

/// Reads a request into its operation.
pub fn route(req: &HttpRequest) -> Result<KmsCall, ApiError> {
    json::check_content_type(req)?;
    let name = json::target_op(req, &[TARGET_PREFIX]).unwrap_or_default();
    let body = json::object(&req.body)?;
    use KmsOp as Op;
    macro_rules! i {
        () => {
            json::input(&body)
        };
    }
    let op = match name {
        "CreateKey" => Op::CreateKey(i!()?),
        "DescribeKey" => Op::DescribeKey(i!()?),
        "ListKeys" => Op::ListKeys(i!()?),
        "EnableKey" => Op::EnableKey(i!()?),
        "DisableKey" => Op::DisableKey(i!()?),
        "ScheduleKeyDeletion" => Op::ScheduleKeyDeletion(i!()?),
        "CancelKeyDeletion" => Op::CancelKeyDeletion(i!()?),
        "UpdateKeyDescription" => Op::UpdateKeyDescription(i!()?),
        "GetKeyPolicy" => Op::GetKeyPolicy(i!()?),
        "PutKeyPolicy" => Op::PutKeyPolicy(i!()?),
        "ListKeyPolicies" => Op::ListKeyPolicies(i!()?),
        "EnableKeyRotation" => Op::EnableKeyRotation(i!()?),
        "DisableKeyRotation" => Op::DisableKeyRotation(i!()?),
        "GetKeyRotationStatus" => Op::GetKeyRotationStatus(i!()?),
        "RotateKeyOnDemand" => Op::RotateKeyOnDemand(i!()?),
        "ListKeyRotations" => Op::ListKeyRotations(i!()?),
        "Encrypt" => Op::Encrypt(i!()?),
        "Decrypt" => Op::Decrypt(i!()?),
        "GenerateDataKey" => Op::GenerateDataKey(i!()?),
        "GenerateDataKeyWithoutPlaintext" => Op::GenerateDataKeyWithoutPlaintext(i!()?),
        "ReEncrypt" => Op::ReEncrypt(i!()?),
        "GenerateRandom" => Op::GenerateRandom(i!()?),
        "CreateAlias" => Op::CreateAlias(i!()?),
        "UpdateAlias" => Op::UpdateAlias(i!()?),
        "DeleteAlias" => Op::DeleteAlias(i!()?),
        "ListAliases" => Op::ListAliases(i!()?),
        "TagResource" => Op::TagResource(i!()?),
        "UntagResource" => Op::UntagResource(i!()?),
        "ListResourceTags" => Op::ListResourceTags(i!()?),
        "CreateGrant" => Op::CreateGrant(i!()?),
        "ListGrants" => Op::ListGrants(i!()?),
        "RetireGrant" => Op::RetireGrant(i!()?),
        "RevokeGrant" => Op::RevokeGrant(i!()?),
        op if UNSUPPORTED.contains(&op) => {
            return Err(ApiError::client(
                "UnsupportedOperationException",
                format!("cairn does not support {op}: its keys are symmetric AES-256-GCM keys with material it generates."),
            ))
        }
        op => {
            return Err(ApiError::client(
                "UnknownOperationException",
                format!("Unknown operation {op}"),
            ))
        }
    };
    Ok(KmsCall {
        op,
        logged: logged(&body),
    })
}

/// Operations of the model cairn does not implement (asymmetric keys, HMAC, imported
/// material, custom key stores, multi-Region keys).
pub const UNSUPPORTED: &[&str] = &[
    "ConnectCustomKeyStore",
    "CreateCustomKeyStore",
    "Decapsulate",
    "DeleteCustomKeyStore",
    "DeleteImportedKeyMaterial",
    "DeriveSharedSecret",
    "DescribeCustomKeyStores",
    "DisconnectCustomKeyStore",
    "Encapsulate",
    "GenerateDataKeyPair",
    "GenerateDataKeyPairWithoutPlaintext",
    "GenerateMac",
    "GetKeyLastUsage",
    "GetParametersForImport",
    "GetPublicKey",
    "ImportKeyMaterial",
    "ListRetirableGrants",
    "ReplicateKey",
    "Sign",
    "UpdateCustomKeyStore",
    "UpdatePrimaryRegion",
    "Verify",
    "VerifyMac",
];

/// `requestParameters` as KMS logs them: the request without plaintext, ciphertext or
/// grant tokens.
fn logged(body: &Map<String, Value>) -> Option<Value> {
    let kept: Map<String, Value> = body
        .iter()
        .filter(|(k, _)| !UNLOGGED.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    json::logged(&kept)
}

impl Service for Kms {
    type Op = KmsCall;

    fn signing_name(&self) -> &'static str {
        "kms"
    }
    fn event_source(&self) -> &'static str {
        "kms.amazonaws.com"
    }
    fn protocol(&self) -> Protocol {
        Protocol::Json
    }
    fn claims(&self, req: &HttpRequest) -> bool {
        json::target_op(req, &[TARGET_PREFIX]).is_some()
    }
    fn operation_name(&self, req: &HttpRequest) -> Result<String, ApiError> {
        json::target_name(req, &[TARGET_PREFIX])
    }
    fn operations(&self) -> &'static [&'static str] {
        KmsOp::NAMES
    }
    fn mutates(&self, name: &str) -> bool {
        KmsOp::mutates(name)
    }
    fn route(&self, _api: &crate::Api, req: &HttpRequest) -> Result<KmsCall, ApiError> {
        route(req)
    }
    fn audit_unrouted(&self, ctx: &mut Ctx<'_>, req: &HttpRequest, _name: &str) {
        ctx.audit.request_parameters = json::object(&req.body).ok().and_then(|b| logged(&b));
    }
    fn handle<'a>(
        &'a self,
        ctx: &'a mut Ctx<'_>,
        call: KmsCall,
    ) -> BoxFuture<'a, Result<Reply, ApiError>> {
        Box::pin(handle(ctx, call))
    }
}

async fn handle(ctx: &mut Ctx<'_>, call: KmsCall) -> Result<Reply, ApiError> {
    let name = call.op.name();
    ctx.audit.read_only = !KmsOp::mutates(name);
    ctx.audit.request_parameters = call.logged;
    let action = format!("kms:{name}");
    let action = action.as_str();
    use KmsOp as Op;
    let out = match call.op {
        Op::CreateKey(i) => keys::create(ctx, action, i).await?,
        Op::DescribeKey(k) => keys::describe(ctx, action, k)?,
        Op::ListKeys(p) => keys::list(ctx, action, p)?,
        Op::EnableKey(k) => keys::set_enabled(ctx, action, k, true).await?,
        Op::DisableKey(k) => keys::set_enabled(ctx, action, k, false).await?,
        Op::ScheduleKeyDeletion(i) => keys::schedule_deletion(ctx, action, i).await?,
        Op::CancelKeyDeletion(k) => keys::cancel_deletion(ctx, action, k).await?,
        Op::UpdateKeyDescription(i) => keys::update_description(ctx, action, i).await?,
        Op::GetKeyPolicy(k) => policy::get(ctx, action, k)?,
        Op::PutKeyPolicy(i) => policy::put(ctx, action, i).await?,
        Op::ListKeyPolicies(k) => policy::list(ctx, action, k)?,
        Op::EnableKeyRotation(i) => policy::enable_rotation(ctx, action, i).await?,
        Op::DisableKeyRotation(k) => policy::disable_rotation(ctx, action, k).await?,
        Op::GetKeyRotationStatus(k) => policy::rotation_status(ctx, action, k)?,
        Op::RotateKeyOnDemand(k) => policy::rotate_now(ctx, action, k).await?,
        Op::ListKeyRotations(k) => policy::list_rotations(ctx, action, k)?,
        Op::Encrypt(i) => crypto::encrypt(ctx, action, i)?,
        Op::Decrypt(i) => crypto::decrypt(ctx, action, i)?,
        Op::GenerateDataKey(i) => crypto::data_key(ctx, action, i, true)?,
        Op::GenerateDataKeyWithoutPlaintext(i) => crypto::data_key(ctx, action, i, false)?,
        Op::ReEncrypt(i) => crypto::re_encrypt(ctx, i)?,
        Op::GenerateRandom(i) => crypto::random(ctx, action, i)?,
        Op::CreateAlias(i) => aliases::create(ctx, action, i).await?,
        Op::UpdateAlias(i) => aliases::update(ctx, action, i).await?,
        Op::DeleteAlias(a) => aliases::delete(ctx, action, a).await?,
        Op::ListAliases(i) => aliases::list(ctx, action, i)?,
        Op::TagResource(i) => tags::tag(ctx, action, i).await?,
        Op::UntagResource(i) => tags::untag(ctx, action, i).await?,
        Op::ListResourceTags(k) => tags::list(ctx, action, k)?,
        Op::CreateGrant(i) => grants::create(ctx, action, i).await?,
        Op::ListGrants(i) => grants::list(ctx, action, i)?,
        Op::RetireGrant(i) => grants::retire(ctx, action, i).await?,
        Op::RevokeGrant(i) => grants::revoke(ctx, action, i).await?,
    };
    Ok(json::reply(&out))
}

/// The key a request names, in the request's region.
pub(crate) fn resolve(ctx: &Ctx<'_>, id: &KeyName) -> Result<Arc<KeyRecord>, ApiError> {
    ctx.api.kms.resolve(&ctx.region, &id.0).map_err(kms_error)
}

/// Records the key as the event's resource.
pub(crate) fn note_key(ctx: &mut Ctx<'_>, key: &KeyRecord) {
    ctx.audit.resources = Some(vec![key_resource(key)]);
}

/// A key as an event's resource.
pub(crate) fn key_resource(key: &KeyRecord) -> Resource {
    Resource {
        account_id: Some(key.account.clone()),
        resource_type: "AWS::KMS::Key".into(),
        arn: Some(key.arn.clone()),
        arn_prefix: None,
    }
}

/// Authorizes `action` on `key` for the caller (key policy, IAM policies, grants), with the
/// request's encryption context as condition keys.
pub(crate) fn authorize_key(
    ctx: &mut Ctx<'_>,
    key: &KeyRecord,
    action: &str,
    context: &Context,
) -> Result<(), ApiError> {
    note_key(ctx, key);
    ctx.no_authorization_needed();
    decide(ctx, key, action, context, true)
        .map_err(|d| ApiError::client("AccessDeniedException", d.0))
}

/// Whether the key policy and the caller's IAM policies alone (no grant) allow `action`.
pub(crate) fn allowed_without_grants(
    ctx: &Ctx<'_>,
    key: &KeyRecord,
    action: &str,
    context: &Context,
) -> bool {
    decide(ctx, key, action, context, false).is_ok()
}

fn decide(
    ctx: &Ctx<'_>,
    key: &KeyRecord,
    action: &str,
    context: &Context,
    with_grants: bool,
) -> Result<(), access::Denied> {
    let policy = ctx
        .api
        .kms
        .policy(key)
        .map_err(|e| access::Denied(format!("the key's stored policy does not parse: {e}")))?;
    let grants = if with_grants {
        ctx.api
            .kms
            .grants(&key.key_id)
            .map_err(|e| access::Denied(e.to_string()))?
    } else {
        Default::default()
    };
    let mut keys = ctx.condition_keys();
    access::context_keys(&mut keys, &ctx.api.opts.account, context);
    let asker = Asker {
        principal: &ctx.caller.principal,
        identity_policies: (!ctx.caller.is_root()).then_some(ctx.caller.policies.as_slice()),
    };
    access::decide(key, &policy, &grants, &asker, action, &keys, context)
}

/// Authorizes an action that names no key (`CreateKey`, `ListKeys`, …): IAM policies alone.
pub(crate) fn authorize_account(ctx: &mut Ctx<'_>, action: &str) -> Result<(), ApiError> {
    ctx.authorize(action, "*")
}

/// Stores a key record once the request's event is durable.
pub(crate) fn defer_put_key(ctx: &mut Ctx<'_>, key: KeyRecord) {
    let kms = ctx.api.kms.clone();
    ctx.defer(
        Box::new(move || {
            kms.put_key(&key).map_err(kms_error)?;
            Ok(Committed::default())
        }),
        None,
    );
}

/// Takes the control lock; the handler gives it to [`Ctx::hold_until_made`] after deferring
/// its changes, so check-then-act on keys, aliases and grants stays one step.
pub(crate) async fn lock(ctx: &Ctx<'_>) -> tokio::sync::OwnedMutexGuard<()> {
    ctx.api.control.clone().lock_owned().await
}

/// Stores `key` once the event is durable, then releases `guard`.
pub(crate) fn commit_key(
    ctx: &mut Ctx<'_>,
    key: KeyRecord,
    guard: tokio::sync::OwnedMutexGuard<()>,
) {
    defer_put_key(ctx, key);
    ctx.hold_until_made(guard);
}

/// An encryption context member: at most 64 pairs; keys and values non-empty.
pub(crate) fn check_context(c: &Option<Context>) -> Result<Context, ApiError> {
    let c = c.clone().unwrap_or_default();
    if c.len() > 64 || c.keys().any(|k| k.is_empty()) {
        return Err(validation("The encryption context is not valid."));
    }
    Ok(c)
}
