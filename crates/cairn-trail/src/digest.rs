//! Digest files (spec §3): the JSON, its key, the signing string and the signature.

use cairn_record::time::iso;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

/// A log file listed by a digest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveredFile {
    pub bucket: String,
    pub key: String,
    pub sha256: String,
    pub oldest: i64,
    pub newest: i64,
    pub delivered_at: DateTime<Utc>,
}

/// The previous digest of a chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DigestLink {
    pub bucket: String,
    pub key: String,
    pub sha256: String,
    pub signature: String,
}

/// Everything a digest says.
pub struct DigestInput<'a> {
    pub account: &'a str,
    pub bucket: &'a str,
    pub key: &'a str,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub fingerprint: &'a str,
    pub previous: Option<&'a DigestLink>,
    pub files: &'a [DeliveredFile],
    /// cairn extension, signed: the last digest of the chain before this one started.
    pub previous_chain: Option<&'a DigestLink>,
    /// cairn extension, signed: why this digest starts or ends a chain.
    pub chain_event: Option<&'a str>,
}

fn t(secs: i64) -> String {
    DateTime::<Utc>::from_timestamp(secs, 0)
        .map(iso)
        .unwrap_or_default()
}

/// The digest JSON, fields in the order AWS emits them; cairn's extra fields (accepted by the
/// AWS CLI) follow.
pub fn digest_json(d: &DigestInput) -> Vec<u8> {
    let newest = d.files.iter().map(|f| f.newest).max();
    let oldest = d.files.iter().map(|f| f.oldest).min();
    let p = d.previous;
    let mut v = json!({
        "awsAccountId": d.account,
        "digestStartTime": iso(d.start),
        "digestEndTime": iso(d.end),
        "digestS3Bucket": d.bucket,
        "digestS3Object": d.key,
        "digestPublicKeyFingerprint": d.fingerprint,
        "digestSignatureAlgorithm": "SHA256withRSA",
        "newestEventTime": newest.map(t),
        "oldestEventTime": oldest.map(t),
        "previousDigestS3Bucket": p.map(|p| p.bucket.clone()),
        "previousDigestS3Object": p.map(|p| p.key.clone()),
        "previousDigestHashValue": p.map(|p| p.sha256.clone()),
        "previousDigestHashAlgorithm": p.map(|_| "SHA-256"),
        "previousDigestSignature": p.map(|p| p.signature.clone()),
        "logFiles": d.files.iter().map(|f| json!({
            "s3Bucket": f.bucket,
            "s3Object": f.key,
            "hashValue": f.sha256,
            "hashAlgorithm": "SHA-256",
            "newestEventTime": t(f.newest),
            "oldestEventTime": t(f.oldest),
        })).collect::<Vec<_>>(),
    });
    if let Some(obj) = v.as_object_mut() {
        if let Some(pc) = d.previous_chain {
            obj.insert(
                "cairnPreviousChainDigestS3Bucket".into(),
                Value::from(pc.bucket.clone()),
            );
            obj.insert(
                "cairnPreviousChainDigestS3Object".into(),
                Value::from(pc.key.clone()),
            );
            obj.insert(
                "cairnPreviousChainDigestHashValue".into(),
                Value::from(pc.sha256.clone()),
            );
            obj.insert(
                "cairnPreviousChainDigestSignature".into(),
                Value::from(pc.signature.clone()),
            );
        }
        if let Some(e) = d.chain_event {
            obj.insert("cairnChainEvent".into(), Value::from(e));
        }
    }
    serde_json::to_vec(&v).unwrap_or_default()
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// The four-line signing string of spec §3.5.
pub fn signing_string(
    end_time: &str,
    bucket: &str,
    key: &str,
    digest_sha256: &str,
    previous_signature: Option<&str>,
) -> String {
    format!(
        "{end_time}\n{bucket}/{key}\n{digest_sha256}\n{}",
        previous_signature.unwrap_or("null")
    )
}
