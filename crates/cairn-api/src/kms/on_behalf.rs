//! KMS calls other services make: CloudTrail's data keys for a trail's log files, and S3's
//! for SSE-KMS objects. Each is authorized as AWS authorizes it (CloudTrail as the service
//! principal `cloudtrail.amazonaws.com` with `aws:SourceArn` = the trail; S3 as the caller,
//! with `kms:ViaService` = `s3.<region>.amazonaws.com`) and is itself a management event of
//! `kms.amazonaws.com`, `invokedBy` the service.

use super::{key_resource, kms_error};
use crate::edge::Ctx;
use crate::protocol::ApiError;
use cairn_iam::policy::{ConditionKeys, Principal};
use cairn_kms::access::{self, Asker};
use cairn_kms::{Context, KeyRecord, Kms, KmsError};
use cairn_record::record::UserIdentity;
use cairn_record::{builder, EventRecord};
use chrono::{DateTime, Utc};
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub const CLOUDTRAIL: &str = "cloudtrail.amazonaws.com";

/// An AWS service calling as itself.
fn service_principal(account: &str, service: &str) -> Principal {
    Principal {
        arn: service.into(),
        account: account.into(),
        role_arn: None,
        service: Some(service.into()),
    }
}

/// The condition keys of a call CloudTrail makes for trail `trail_arn`.
fn cloudtrail_keys(
    account: &str,
    trail_arn: &str,
    context: &Context,
    now: DateTime<Utc>,
) -> ConditionKeys {
    let mut k = ConditionKeys::new();
    k.set("aws:SourceArn", trail_arn);
    k.set("aws:SourceAccount", account);
    k.set("aws:PrincipalIsAWSService", "true");
    k.set("aws:PrincipalServiceName", CLOUDTRAIL);
    k.set("aws:CurrentTime", cairn_record::time::iso(now));
    k.set("aws:EpochTime", now.timestamp().to_string());
    access::context_keys(&mut k, account, context);
    k
}

/// Whether CloudTrail may use `key` for `action` on behalf of trail `trail_arn`.
fn cloudtrail_may(
    kms: &Kms,
    key: &KeyRecord,
    action: &str,
    trail_arn: &str,
    context: &Context,
    now: DateTime<Utc>,
) -> Result<(), KmsError> {
    let policy = kms.policy(key)?;
    let grants = kms.grants(&key.key_id)?;
    let who = service_principal(&key.account, CLOUDTRAIL);
    let keys = cloudtrail_keys(&key.account, trail_arn, context, now);
    access::decide(
        key,
        &policy,
        &grants,
        &Asker {
            principal: &who,
            identity_policies: None,
        },
        action,
        &keys,
        context,
    )
    .map_err(|d| KmsError::AccessDenied(d.0))
}

/// The region of an ARN (`arn:aws:svc:REGION:…`).
fn arn_region(arn: &str) -> &str {
    arn.split(':').nth(3).unwrap_or_default()
}

/// CreateTrail/UpdateTrail's check of a trail's `KmsKeyId`, with CloudTrail's errors: the key
/// exists in the trail's region, is enabled, and its policy lets CloudTrail generate data
/// keys for this trail. Returns the key's ARN (what the trail stores and answers).
pub fn check_trail_key(
    kms: &Kms,
    region: &str,
    key_id: &str,
    trail_arn: &str,
    now: DateTime<Utc>,
) -> Result<String, ApiError> {
    let key = kms.resolve(region, key_id).map_err(|e| match e {
        KmsError::NotFound(_) => ApiError::client(
            "KmsKeyNotFoundException",
            format!("KMS key {key_id} was not found in {region}."),
        ),
        e => kms_error(e),
    })?;
    if key.usable().is_err() {
        return Err(ApiError::client(
            "KmsKeyDisabledException",
            format!("KMS key {} is disabled or pending deletion.", key.arn),
        ));
    }
    let mut context = Context::new();
    context.insert("aws:cloudtrail:arn".into(), trail_arn.into());
    cloudtrail_may(kms, &key, "kms:GenerateDataKey", trail_arn, &context, now).map_err(|_| {
        ApiError::client(
            "InsufficientEncryptionPolicyException",
            format!(
                "Insufficient permissions to access S3 bucket or KMS key {}: its key policy must allow cloudtrail.amazonaws.com to call kms:GenerateDataKey for this trail.",
                key.arn
            ),
        )
    })?;
    Ok(key.arn.clone())
}

/// The event of a KMS call a service made, `invokedBy` it.
#[allow(clippy::too_many_arguments)]
fn service_call_event(
    identity: UserIdentity,
    service: &str,
    event_name: &str,
    key: &KeyRecord,
    context: &Context,
    now: DateTime<Utc>,
    error: Option<&KmsError>,
    with_key_spec: bool,
) -> EventRecord {
    let mut rec = builder::management(
        "kms.amazonaws.com",
        event_name,
        &key.region,
        now,
        identity,
        true,
    );
    rec.source_ip_address = Some(service.into());
    rec.user_agent = Some(service.into());
    let mut params = json!({ "keyId": key.arn, "encryptionContext": context });
    if with_key_spec {
        params["keySpec"] = json!("AES_256");
    } else {
        params["encryptionAlgorithm"] = json!("SYMMETRIC_DEFAULT");
    }
    rec.request_parameters = Some(params);
    rec.resources = Some(vec![key_resource(key)]);
    rec.recipient_account_id = Some(key.account.clone());
    if let Some(e) = error {
        rec.error_code = Some(e.code().into());
        rec.error_message = Some(e.to_string());
    }
    rec
}

/// Data keys for trails' log files ([`cairn_trail::LogKeys`]): generated as CloudTrail,
/// recorded in the journal before the key is used.
pub struct TrailKeys {
    pub kms: Arc<Kms>,
    pub journal: Arc<cairn_journal::Journal>,
    /// The last refusal recorded per trail, so a key that stays unusable is recorded once
    /// every few minutes, not at every delivery retry.
    refused: Mutex<HashMap<String, (String, std::time::Instant)>>,
}

impl TrailKeys {
    pub fn new(kms: Arc<Kms>, journal: Arc<cairn_journal::Journal>) -> TrailKeys {
        TrailKeys {
            kms,
            journal,
            refused: Mutex::new(HashMap::new()),
        }
    }

    fn record(&self, rec: &EventRecord) -> Result<(), String> {
        self.journal
            .append(&cairn_trail::entry::encode_event(rec))
            .map(|_| ())
            .map_err(|e| format!("ServiceUnavailable: the journal refused the key's record: {e}"))
    }
}

impl cairn_trail::LogKeys for TrailKeys {
    fn envelope(
        &self,
        key_id: &str,
        trail_arn: &str,
        bucket: &str,
        object: &str,
    ) -> Result<cairn_trail::LogKey, String> {
        let now = Utc::now();
        let region = if key_id.starts_with("arn:") {
            arn_region(key_id)
        } else {
            arn_region(trail_arn)
        };
        let key = self
            .kms
            .resolve(region, key_id)
            .map_err(|e| format!("KMS.{}: {e}", e.code()))?;
        let mut context = Context::new();
        context.insert("aws:cloudtrail:arn".into(), trail_arn.into());
        context.insert(
            "aws:s3:arn".into(),
            format!("arn:aws:s3:::{bucket}/{object}"),
        );
        let identity = UserIdentity {
            identity_type: "AWSService".into(),
            invoked_by: Some(CLOUDTRAIL.into()),
            ..Default::default()
        };
        let made = cloudtrail_may(
            &self.kms,
            &key,
            "kms:GenerateDataKey",
            trail_arn,
            &context,
            now,
        )
        .and_then(|_| self.kms.new_envelope(&key, &context));
        // A success is always recorded (durable before its key encrypts anything); a refusal
        // once per reason and five minutes, not at every delivery retry.
        let recorded = match &made {
            Ok(_) => {
                self.refused
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(trail_arn);
                true
            }
            Err(e) => {
                let why = format!("KMS.{}: {e}", e.code());
                let mut r = self.refused.lock().unwrap_or_else(|p| p.into_inner());
                let due = r.get(trail_arn).is_none_or(|(last, at)| {
                    *last != why || at.elapsed() > std::time::Duration::from_secs(300)
                });
                if due {
                    r.insert(trail_arn.into(), (why, std::time::Instant::now()));
                }
                due
            }
        };
        if recorded {
            self.record(&service_call_event(
                identity,
                CLOUDTRAIL,
                "GenerateDataKey",
                &key,
                &context,
                now,
                made.as_ref().err(),
                true,
            ))?;
        }
        match made {
            Ok(env) => Ok(cairn_trail::LogKey {
                wrapped: env.to_bytes(),
                system: crate::s3::sse::kms_attributes(&key.arn, &context, false),
            }),
            Err(e) => Err(format!("KMS.{}: {e}", e.code())),
        }
    }
}

/// What an SSE-KMS write or read asks of KMS, as S3 asks it for the caller.
pub struct S3Use<'a> {
    pub bucket: &'a str,
    pub key: &'a str,
    /// The caller's own encryption context (`x-amz-server-side-encryption-context`).
    pub user_context: Context,
    /// An S3 Bucket Key: the data key is the bucket's (context: the bucket's ARN), reused.
    pub bucket_key: bool,
}

/// S3's encryption context of an object: the caller's pairs plus `aws:s3:arn` — the
/// object's ARN, or the bucket's with a bucket key (as S3 does).
pub fn s3_context(u: &S3Use<'_>) -> Context {
    let mut c = u.user_context.clone();
    let arn = if u.bucket_key {
        format!("arn:aws:s3:::{}", u.bucket)
    } else {
        format!("arn:aws:s3:::{}/{}", u.bucket, u.key)
    };
    c.insert("aws:s3:arn".into(), arn);
    c
}

/// How long S3 reuses a bucket key (AWS: "time-limited"), and remembers a bucket key's
/// Decrypt, before asking KMS again.
const BUCKET_KEY_TTL: std::time::Duration = std::time::Duration::from_secs(300);

/// S3 Bucket Keys: per (bucket, KMS key, context) one data key envelope reused for new objects
/// for a while, and the bucket keys S3 decrypted lately. Every request is still authorized
/// against the key; only the calls to KMS — and so their events — are fewer, as on AWS.
#[derive(Default)]
pub struct BucketKeys {
    generated: Mutex<HashMap<CacheId, (Vec<u8>, std::time::Instant)>>,
    decrypted: Mutex<HashMap<CacheId, std::time::Instant>>,
}

/// A bucket key's identity: the KMS key ARN and the encryption context's JSON.
type CacheId = (String, String);

impl BucketKeys {
    fn fresh_envelope(&self, id: &(String, String)) -> Option<Vec<u8>> {
        let g = self.generated.lock().unwrap_or_else(|p| p.into_inner());
        g.get(id)
            .filter(|(_, at)| at.elapsed() < BUCKET_KEY_TTL)
            .map(|(e, _)| e.clone())
    }

    fn keep_envelope(&self, id: (String, String), env: Vec<u8>) {
        let mut g = self.generated.lock().unwrap_or_else(|p| p.into_inner());
        if g.len() > 10_000 {
            g.retain(|_, (_, at)| at.elapsed() < BUCKET_KEY_TTL);
        }
        g.insert(id, (env, std::time::Instant::now()));
    }

    /// Whether S3 decrypted this bucket key lately (no KMS call now); notes it otherwise.
    fn decrypted_lately(&self, id: (String, String)) -> bool {
        let mut d = self.decrypted.lock().unwrap_or_else(|p| p.into_inner());
        if d.get(&id).is_some_and(|at| at.elapsed() < BUCKET_KEY_TTL) {
            return true;
        }
        if d.len() > 10_000 {
            d.retain(|_, at| at.elapsed() < BUCKET_KEY_TTL);
        }
        d.insert(id, std::time::Instant::now());
        false
    }
}

fn cache_id(key_arn: &str, context: &Context) -> (String, String) {
    (
        key_arn.to_string(),
        serde_json::to_string(context).unwrap_or_default(),
    )
}

/// Authorizes `action` on `key` for the caller as S3 asks for it (`kms:ViaService`),
/// and builds the event of the call; the KMS error is S3's answer when refused.
fn s3_call(
    ctx: &mut Ctx<'_>,
    key: &KeyRecord,
    action: &str,
    context: &Context,
) -> Result<(), KmsError> {
    let policy = ctx.api.kms.policy(key)?;
    let grants = ctx.api.kms.grants(&key.key_id)?;
    let mut keys = ctx.condition_keys();
    keys.set("kms:ViaService", format!("s3.{}.amazonaws.com", ctx.region));
    keys.set("aws:ViaAWSService", "true");
    access::context_keys(&mut keys, &ctx.api.opts.account, context);
    let asker = Asker {
        principal: &ctx.caller.principal,
        identity_policies: (!ctx.caller.is_root()).then_some(ctx.caller.policies.as_slice()),
    };
    access::decide(key, &policy, &grants, &asker, action, &keys, context)
        .map_err(|d| KmsError::AccessDenied(d.0))?;
    key.usable()
}

/// The S3 error for a KMS refusal on an object call (S3 passes KMS's error on).
fn s3_error(e: &KmsError) -> ApiError {
    match e {
        KmsError::AccessDenied(m) => ApiError::new("AccessDenied", 403, m.clone()),
        KmsError::Disabled(m) => ApiError::new("KMS.DisabledException", 400, m.clone()),
        KmsError::InvalidState(m) => ApiError::new("KMS.KMSInvalidStateException", 400, m.clone()),
        KmsError::NotFound(m) => ApiError::new("KMS.NotFoundException", 400, m.clone()),
        e => ApiError::new("KMS.KMSInternalException", 500, e.to_string()),
    }
}

/// A new SSE-KMS object's data key, generated for the caller: the envelope for the store and
/// the key's ARN. The GenerateDataKey call is recorded with the request's own event; with a
/// bucket key, a fresh bucket key is reused (authorized, no KMS call, no event).
pub fn s3_generate(
    ctx: &mut Ctx<'_>,
    key_id: &str,
    u: &S3Use<'_>,
) -> Result<(Vec<u8>, String), ApiError> {
    let key = ctx
        .api
        .kms
        .resolve(&ctx.region, key_id)
        .map_err(|e| match e {
            KmsError::NotFound(_) => ApiError::new(
                "KMS.NotFoundException",
                400,
                format!("Invalid keyId {key_id}"),
            ),
            e => kms_error(e),
        })?;
    let context = s3_context(u);
    let authorized = s3_call(ctx, &key, "kms:GenerateDataKey", &context);
    let id = cache_id(&key.arn, &context);
    if u.bucket_key && authorized.is_ok() {
        if let Some(env) = ctx.api.bucket_keys.fresh_envelope(&id) {
            return Ok((env, key.arn.clone()));
        }
    }
    let outcome = authorized.and_then(|_| ctx.api.kms.new_envelope(&key, &context));
    let event = service_call_event(
        ctx.caller.identity.clone(),
        "s3.amazonaws.com",
        "GenerateDataKey",
        &key,
        &context,
        ctx.now,
        outcome.as_ref().err(),
        true,
    );
    ctx.audit
        .calls
        .push(with_invoker(event, "s3.amazonaws.com"));
    let env = outcome.map_err(|e| s3_error(&e))?.to_bytes();
    if u.bucket_key {
        ctx.api.bucket_keys.keep_envelope(id, env.clone());
    }
    Ok((env, key.arn.clone()))
}

/// Before an SSE-KMS object is read: the caller must be allowed `kms:Decrypt` on its key
/// (through S3) and the key usable. The Decrypt call is recorded with the request's event —
/// for a bucket key, only when S3 has not decrypted it lately (every read is authorized).
pub fn s3_decrypt(
    ctx: &mut Ctx<'_>,
    key_arn: &str,
    context: &Context,
    bucket_key: bool,
) -> Result<(), ApiError> {
    let key = match ctx.api.kms.resolve(arn_region(key_arn), key_arn) {
        Ok(k) => k,
        Err(e) => return Err(s3_error(&e)),
    };
    let outcome = s3_call(ctx, &key, "kms:Decrypt", context);
    if bucket_key
        && outcome.is_ok()
        && ctx
            .api
            .bucket_keys
            .decrypted_lately(cache_id(&key.arn, context))
    {
        return Ok(());
    }
    let event = service_call_event(
        ctx.caller.identity.clone(),
        "s3.amazonaws.com",
        "Decrypt",
        &key,
        context,
        ctx.now,
        outcome.as_ref().err(),
        false,
    );
    ctx.audit
        .calls
        .push(with_invoker(event, "s3.amazonaws.com"));
    outcome.map_err(|e| s3_error(&e))
}

/// The caller's identity, `invokedBy` the service that called KMS for it.
fn with_invoker(mut rec: EventRecord, service: &str) -> EventRecord {
    if let Some(id) = rec.user_identity.as_mut() {
        id.invoked_by = Some(service.into());
    }
    rec
}

/// The event of work KMS does by itself (a key deleted after its waiting period, an
/// automatic rotation): `DeleteKey` / `RotateKey`, invoked by `kms.amazonaws.com`.
pub fn housekeeping_event(due: &cairn_kms::Due, now: DateTime<Utc>) -> EventRecord {
    let (name, key): (&str, &KeyRecord) = match due {
        cairn_kms::Due::Delete(k) => ("DeleteKey", k),
        cairn_kms::Due::Rotate(k) => ("RotateKey", k),
    };
    let identity = UserIdentity {
        identity_type: "AWSService".into(),
        invoked_by: Some("kms.amazonaws.com".into()),
        account_id: Some(key.account.clone()),
        ..Default::default()
    };
    let mut rec = builder::management("kms.amazonaws.com", name, &key.region, now, identity, false);
    rec.source_ip_address = Some("kms.amazonaws.com".into());
    rec.user_agent = Some("kms.amazonaws.com".into());
    rec.resources = Some(vec![key_resource(key)]);
    rec.recipient_account_id = Some(key.account.clone());
    rec.event_type = "AwsServiceEvent".into();
    rec
}

/// The AWS managed key of `service` (`aws/s3`) in the request's region, made on first use as
/// AWS makes it: its creation is recorded (a `CreateKey` event invoked by the service) before
/// the key and its alias exist.
pub async fn managed_key(ctx: &Ctx<'_>, service: &str) -> Result<String, ApiError> {
    let alias = format!("alias/aws/{service}");
    if let Ok(k) = ctx.api.kms.resolve(&ctx.region, &alias) {
        return Ok(k.arn.clone());
    }
    let _serialized = ctx.api.control.lock().await;
    if let Ok(k) = ctx.api.kms.resolve(&ctx.region, &alias) {
        return Ok(k.arn.clone());
    }
    let (key, a) = ctx
        .api
        .kms
        .new_managed_key(&ctx.region, service, ctx.now)
        .map_err(kms_error)?;
    let invoker = format!("{service}.amazonaws.com");
    let identity = UserIdentity {
        identity_type: "AWSService".into(),
        invoked_by: Some(invoker.clone()),
        account_id: Some(key.account.clone()),
        ..Default::default()
    };
    let mut rec = builder::management(
        "kms.amazonaws.com",
        "CreateKey",
        &key.region,
        ctx.now,
        identity,
        false,
    );
    rec.source_ip_address = Some(invoker.clone());
    rec.user_agent = Some(invoker);
    rec.request_parameters = Some(
        json!({"description": key.description, "keyUsage": "ENCRYPT_DECRYPT", "keySpec": "SYMMETRIC_DEFAULT", "origin": "AWS_KMS"}),
    );
    rec.resources = Some(vec![key_resource(&key)]);
    rec.recipient_account_id = Some(key.account.clone());
    rec.event_type = "AwsServiceEvent".into();
    ctx.api.record(&rec).await?;
    ctx.api.kms.put_key(&key).map_err(kms_error)?;
    ctx.api.kms.put_alias(&a).map_err(kms_error)?;
    Ok(key.arn)
}

/// Whether AWS service `service` (`logs.us-east-1.amazonaws.com`) may use the key `key_id`
/// for a resource (`context`: the encryption context pair naming it), as a service
/// associating a key checks: the key exists here, is enabled, and its policy lets the
/// service generate data keys for that resource. Returns the key's ARN; errors are
/// InvalidParameterException, as CloudWatch Logs answers them.
pub fn check_service_key(
    kms: &Kms,
    region: &str,
    key_id: &str,
    service: &str,
    (context_key, context_value): (&str, &str),
    now: DateTime<Utc>,
) -> Result<String, ApiError> {
    let refused = || {
        ApiError::client(
            "InvalidParameterException",
            format!("The specified KMS key does not exist or is not allowed to be used with Arn '{context_value}'"),
        )
    };
    let key = kms.resolve(region, key_id).map_err(|_| refused())?;
    key.usable().map_err(|_| refused())?;
    let mut context = Context::new();
    context.insert(context_key.into(), context_value.into());
    let policy = kms.policy(&key).map_err(|_| refused())?;
    let grants = kms.grants(&key.key_id).map_err(|_| refused())?;
    let who = service_principal(&key.account, service);
    let mut keys = ConditionKeys::new();
    keys.set("aws:SourceAccount", key.account.clone());
    keys.set("aws:SourceArn", context_value);
    keys.set("aws:PrincipalIsAWSService", "true");
    keys.set("aws:CurrentTime", cairn_record::time::iso(now));
    access::context_keys(&mut keys, &key.account, &context);
    access::decide(
        &key,
        &policy,
        &grants,
        &Asker {
            principal: &who,
            identity_policies: None,
        },
        "kms:GenerateDataKey",
        &keys,
        &context,
    )
    .map_err(|_| refused())?;
    Ok(key.arn.clone())
}

/// A data key CloudWatch Logs generates under `key_id` for log group `group_arn` (on
/// CreateLogGroup with a key and AssociateKmsKey): the key policy must let
/// `logs.<region>.amazonaws.com` use it for that group. The GenerateDataKey call is recorded
/// with the request's event. Returns the key's ARN and the data key's envelope.
pub fn logs_data_key(
    ctx: &mut Ctx<'_>,
    key_id: &str,
    group_arn: &str,
) -> Result<(String, Vec<u8>), ApiError> {
    let service = format!("logs.{}.amazonaws.com", ctx.region);
    let arn = check_service_key(
        &ctx.api.kms,
        &ctx.region,
        key_id,
        &service,
        ("aws:logs:arn", group_arn),
        ctx.now,
    )?;
    let key = ctx.api.kms.resolve(&ctx.region, &arn).map_err(kms_error)?;
    let mut context = Context::new();
    context.insert("aws:logs:arn".into(), group_arn.into());
    let made = ctx.api.kms.new_envelope(&key, &context);
    let identity = UserIdentity {
        identity_type: "AWSService".into(),
        invoked_by: Some("logs.amazonaws.com".into()),
        ..Default::default()
    };
    ctx.audit.calls.push(service_call_event(
        identity,
        "logs.amazonaws.com",
        "GenerateDataKey",
        &key,
        &context,
        ctx.now,
        made.as_ref().err(),
        true,
    ));
    let env = made.map_err(kms_error)?;
    Ok((arn, env.to_bytes()))
}
