//! Cryptography with a key: Encrypt, Decrypt, GenerateDataKey(WithoutPlaintext), ReEncrypt,
//! GenerateRandom. The key must be enabled and the call authorized with the request's
//! encryption context; a blob opens only under its key, material version and context.

use super::{
    authorize_account, authorize_key, b64, check_context, kms_error, resolve, validation, Blob,
    KeyName,
};
use crate::edge::Ctx;
use crate::protocol::ApiError;
use cairn_kms::{blob, Context};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EncryptInput {
    pub key_id: KeyName,
    pub plaintext: Blob,
    pub encryption_context: Option<Context>,
    pub encryption_algorithm: Option<String>,
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DecryptInput {
    pub ciphertext_blob: Blob,
    pub encryption_context: Option<Context>,
    pub key_id: Option<KeyName>,
    pub encryption_algorithm: Option<String>,
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DataKeyInput {
    pub key_id: KeyName,
    pub encryption_context: Option<Context>,
    pub number_of_bytes: Option<i64>,
    pub key_spec: Option<String>,
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ReEncryptInput {
    pub ciphertext_blob: Blob,
    pub source_encryption_context: Option<Context>,
    pub source_key_id: Option<KeyName>,
    pub destination_key_id: KeyName,
    pub destination_encryption_context: Option<Context>,
    pub source_encryption_algorithm: Option<String>,
    pub destination_encryption_algorithm: Option<String>,
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RandomInput {
    pub number_of_bytes: Option<i64>,
}

fn algorithm(a: &Option<String>) -> Result<(), ApiError> {
    match a.as_deref() {
        None | Some("SYMMETRIC_DEFAULT") => Ok(()),
        Some(_) => Err(ApiError::client(
            "InvalidKeyUsageException",
            "The key's only encryption algorithm is SYMMETRIC_DEFAULT.",
        )),
    }
}

fn dry_run(d: bool) -> Result<(), ApiError> {
    if d {
        return Err(ApiError::client(
            "DryRunOperationException",
            "The request would have succeeded, but the DryRun flag is set.",
        ));
    }
    Ok(())
}

fn size(n: usize, what: &str, max: usize) -> Result<(), ApiError> {
    if n == 0 || n > max {
        return Err(validation(format!(
            "1 validation error detected: Value at '{what}' failed to satisfy constraint: Member must have length less than or equal to {max} and greater than or equal to 1"
        )));
    }
    Ok(())
}

pub(super) fn encrypt(ctx: &mut Ctx<'_>, action: &str, i: EncryptInput) -> Result<Value, ApiError> {
    size(i.plaintext.0.len(), "plaintext", 4096)?;
    algorithm(&i.encryption_algorithm)?;
    let context = check_context(&i.encryption_context)?;
    let key = resolve(ctx, &i.key_id)?;
    authorize_key(ctx, &key, action, &context)?;
    key.usable().map_err(kms_error)?;
    dry_run(i.dry_run)?;
    let ct = ctx
        .api
        .kms
        .encrypt(&key, &i.plaintext.0, &context)
        .map_err(kms_error)?;
    Ok(json!({
        "CiphertextBlob": b64(&ct),
        "KeyId": key.arn,
        "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
    }))
}

/// Opens a blob for the caller: the key it names (which must be `expected` when given),
/// authorized for `action`, enabled.
fn open(
    ctx: &mut Ctx<'_>,
    action: &str,
    ciphertext: &[u8],
    expected: Option<&KeyName>,
    context: &Context,
) -> Result<(std::sync::Arc<cairn_kms::KeyRecord>, Vec<u8>), ApiError> {
    size(ciphertext.len(), "ciphertextBlob", 6144)?;
    let key_id = blob::key_id(ciphertext).map_err(kms_error)?;
    let key = match ctx.api.kms.key(&key_id).map_err(kms_error)? {
        Some(k) if k.region == ctx.region => k,
        _ => {
            return Err(ApiError::client(
                "InvalidCiphertextException",
                "The ciphertext does not name a key of this account and Region.",
            ))
        }
    };
    if let Some(want) = expected {
        let named = resolve(ctx, want)?;
        if named.key_id != key.key_id {
            return Err(ApiError::client(
                "IncorrectKeyException",
                "The key ID in the request does not identify a KMS key that can perform this operation.",
            ));
        }
    }
    authorize_key(ctx, &key, action, context)?;
    key.usable().map_err(kms_error)?;
    let plain = ctx
        .api
        .kms
        .decrypt(&key, ciphertext, context)
        .map_err(kms_error)?;
    Ok((key, plain))
}

pub(super) fn decrypt(ctx: &mut Ctx<'_>, action: &str, i: DecryptInput) -> Result<Value, ApiError> {
    algorithm(&i.encryption_algorithm)?;
    let context = check_context(&i.encryption_context)?;
    let (key, plain) = open(
        ctx,
        action,
        &i.ciphertext_blob.0,
        i.key_id.as_ref(),
        &context,
    )?;
    dry_run(i.dry_run)?;
    Ok(json!({
        "KeyId": key.arn,
        "Plaintext": b64(&plain),
        "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
    }))
}

/// The length a data key request asks for: `NumberOfBytes` (1–1024) or `KeySpec`
/// (AES_256, AES_128), exactly one of them.
fn data_key_len(i: &DataKeyInput) -> Result<usize, ApiError> {
    match (i.number_of_bytes, i.key_spec.as_deref()) {
        (Some(_), Some(_)) => Err(validation(
            "Please specify either number of bytes or key spec.",
        )),
        (Some(n), None) if (1..=1024).contains(&n) => Ok(n as usize),
        (Some(n), None) => Err(validation(format!(
            "1 validation error detected: Value '{n}' at 'numberOfBytes' failed to satisfy constraint: Member must have value less than or equal to 1024 and greater than or equal to 1"
        ))),
        (None, Some("AES_256")) => Ok(32),
        (None, Some("AES_128")) => Ok(16),
        (None, Some(s)) => Err(validation(format!(
            "1 validation error detected: Value '{s}' at 'keySpec' failed to satisfy constraint: Member must satisfy enum value set: [AES_256, AES_128]"
        ))),
        (None, None) => Err(validation(
            "Please specify either number of bytes or key spec.",
        )),
    }
}

pub(super) fn data_key(
    ctx: &mut Ctx<'_>,
    action: &str,
    i: DataKeyInput,
    with_plaintext: bool,
) -> Result<Value, ApiError> {
    let n = data_key_len(&i)?;
    let context = check_context(&i.encryption_context)?;
    let key = resolve(ctx, &i.key_id)?;
    authorize_key(ctx, &key, action, &context)?;
    key.usable().map_err(kms_error)?;
    dry_run(i.dry_run)?;
    let (plain, ct) = ctx.api.kms.data_key(&key, n, &context).map_err(kms_error)?;
    let mut v = json!({ "CiphertextBlob": b64(&ct), "KeyId": key.arn });
    if with_plaintext {
        v["Plaintext"] = json!(b64(&plain));
    }
    Ok(v)
}

pub(super) fn re_encrypt(ctx: &mut Ctx<'_>, i: ReEncryptInput) -> Result<Value, ApiError> {
    algorithm(&i.source_encryption_algorithm)?;
    algorithm(&i.destination_encryption_algorithm)?;
    let source_context = check_context(&i.source_encryption_context)?;
    let dest_context = check_context(&i.destination_encryption_context)?;
    // KMS authorizes ReEncryptFrom on the source key and ReEncryptTo on the destination.
    let (source, plain) = open(
        ctx,
        "kms:ReEncryptFrom",
        &i.ciphertext_blob.0,
        i.source_key_id.as_ref(),
        &source_context,
    )?;
    let dest = resolve(ctx, &i.destination_key_id)?;
    authorize_key(ctx, &dest, "kms:ReEncryptTo", &dest_context)?;
    dest.usable().map_err(kms_error)?;
    dry_run(i.dry_run)?;
    let ct = ctx
        .api
        .kms
        .encrypt(&dest, &plain, &dest_context)
        .map_err(kms_error)?;
    ctx.audit.resources = Some(vec![
        super::key_resource(&source),
        super::key_resource(&dest),
    ]);
    Ok(json!({
        "CiphertextBlob": b64(&ct),
        "SourceKeyId": source.arn,
        "KeyId": dest.arn,
        "SourceEncryptionAlgorithm": "SYMMETRIC_DEFAULT",
        "DestinationEncryptionAlgorithm": "SYMMETRIC_DEFAULT",
    }))
}

pub(super) fn random(ctx: &mut Ctx<'_>, action: &str, i: RandomInput) -> Result<Value, ApiError> {
    let n = i.number_of_bytes.unwrap_or(0);
    if !(1..=1024).contains(&n) {
        return Err(validation(format!(
            "1 validation error detected: Value '{n}' at 'numberOfBytes' failed to satisfy constraint: Member must have value less than or equal to 1024 and greater than or equal to 1"
        )));
    }
    authorize_account(ctx, action)?;
    let bytes = cairn_kms::random_bytes(n as usize).map_err(kms_error)?;
    Ok(json!({ "Plaintext": b64(&bytes) }))
}
