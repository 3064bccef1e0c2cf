//! Log file integrity validation.
//!
//! [`validate`] follows `aws cloudtrail validate-logs` (awscli v1) step for step — digest
//! listing by marker, newest-first chain walk, the same messages on the same streams, the
//! same summary and exit codes — so its default output can be compared line for line with
//! the real CLI's. With `strict` it also reports what the CLI misses
//! (`shared/spec/trust-and-testing.md` §2.9): trailing data after a digest's gzip stream,
//! every missing digest rather than the first, broken `previousDigestHashValue` /
//! signature links, chain restarts that no signed link explains, log files no digest lists,
//! truncation against a pinned newest digest, and unpinned keys. It never writes to the
//! store; the only file it writes is its own state file (strict mode).

mod walk;

pub use walk::{check_trail_arn, validate};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;

/// A public key as ListPublicKeys returns it.
#[derive(Debug, Clone)]
pub struct PublicKey {
    /// DER PKCS#1 RSAPublicKey.
    pub der: Vec<u8>,
    pub fingerprint: String,
    pub valid_from: DateTime<Utc>,
    pub valid_to: DateTime<Utc>,
}

/// Where public keys come from: the CloudTrail API, a data directory, or a file.
pub trait PublicKeySource: Send + Sync {
    fn list(
        &self,
        region: &str,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<Vec<PublicKey>, String>;
}

/// Keys given as the JSON output of `aws cloudtrail list-public-keys`.
pub struct PublicKeyFile(pub Vec<PublicKey>);

impl PublicKeyFile {
    pub fn parse(json: &[u8]) -> Result<PublicKeyFile, String> {
        use base64::Engine;
        let v: serde_json::Value = serde_json::from_slice(json).map_err(|e| e.to_string())?;
        let list = v
            .get("PublicKeyList")
            .and_then(|l| l.as_array())
            .ok_or("no PublicKeyList")?;
        let time = |x: Option<&serde_json::Value>| -> Result<DateTime<Utc>, String> {
            match x {
                Some(serde_json::Value::Number(n)) => {
                    DateTime::from_timestamp(n.as_f64().unwrap_or(0.0) as i64, 0)
                        .ok_or("bad time".into())
                }
                Some(serde_json::Value::String(s)) => {
                    cairn_record::time::parse_iso(s).ok_or(format!("bad time {s}"))
                }
                _ => Err("missing time".into()),
            }
        };
        let mut out = vec![];
        for k in list {
            let value = k
                .get("Value")
                .and_then(|x| x.as_str())
                .ok_or("missing Value")?;
            out.push(PublicKey {
                der: base64::engine::general_purpose::STANDARD
                    .decode(value)
                    .map_err(|e| e.to_string())?,
                fingerprint: k
                    .get("Fingerprint")
                    .and_then(|x| x.as_str())
                    .ok_or("missing Fingerprint")?
                    .to_string(),
                valid_from: time(k.get("ValidityStartTime"))?,
                valid_to: time(k.get("ValidityEndTime"))?,
            });
        }
        Ok(PublicKeyFile(out))
    }
}

impl PublicKeySource for PublicKeyFile {
    fn list(
        &self,
        _region: &str,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<Vec<PublicKey>, String> {
        Ok(self
            .0
            .iter()
            .filter(|k| k.valid_from <= end && start <= k.valid_to)
            .cloned()
            .collect())
    }
}

/// Progress of a run: log files checked so far and known so far.
pub type ProgressFn = Arc<dyn Fn(u64, u64) + Send + Sync>;

/// What to validate.
#[derive(Clone)]
pub struct ValidateOptions {
    pub trail_arn: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub bucket: String,
    pub prefix: Option<String>,
    /// Defaults to the ARN's account.
    pub account: Option<String>,
    /// The region whose digests are validated (`--region`); defaults to the home region.
    pub source_region: Option<String>,
    pub verbose: bool,
    pub strict: bool,
    /// Strict: a digest key that must still be present (the newest one seen before).
    pub since_digest: Option<String>,
    /// Strict: where the newest verified digest is remembered between runs.
    pub state_file: Option<PathBuf>,
    /// Strict: the only key fingerprints accepted (empty: any key ListPublicKeys returns).
    pub pinned_fingerprints: Vec<String>,
    pub progress: Option<ProgressFn>,
}

impl ValidateOptions {
    /// AWS-CLI mode over `[start, end]` for a trail whose files are in `bucket`; every other
    /// option at its default (no prefix, the ARN's account and home region, not verbose).
    pub fn new(
        trail_arn: impl Into<String>,
        bucket: impl Into<String>,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> ValidateOptions {
        ValidateOptions {
            trail_arn: trail_arn.into(),
            start,
            end,
            bucket: bucket.into(),
            prefix: None,
            account: None,
            source_region: None,
            verbose: false,
            strict: false,
            since_digest: None,
            state_file: None,
            pinned_fingerprints: vec![],
            progress: None,
        }
    }
}

/// Which stream a line goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Out,
    Err,
}

/// The outcome: lines in order, counts, and the exit code.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub lines: Vec<(Stream, String)>,
    pub valid_digests: u64,
    pub invalid_digests: u64,
    pub valid_logs: u64,
    pub invalid_logs: u64,
    pub exit_code: i32,
}

impl Report {
    pub fn stdout(&self) -> String {
        self.lines
            .iter()
            .filter(|l| l.0 == Stream::Out)
            .map(|l| l.1.as_str())
            .collect()
    }
    pub fn stderr(&self) -> String {
        self.lines
            .iter()
            .filter(|l| l.0 == Stream::Err)
            .map(|l| l.1.as_str())
            .collect()
    }
}

/// Errors raised out of the command: the AWS CLI exits 255 on these; strict mode exits 2
/// ("cannot verify").
#[derive(Debug, thiserror::Error)]
pub enum ValidateError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    CannotVerify(String),
}

/// The strict validator's memory of what it verified before.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct StrictState {
    /// `trail ARN|region` → newest verified digest.
    pub newest: std::collections::BTreeMap<String, PinnedDigest>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PinnedDigest {
    pub bucket: String,
    pub key: String,
    pub end_time: String,
    pub sha256: String,
}
