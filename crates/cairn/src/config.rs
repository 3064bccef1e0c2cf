//! `cairn.toml`: every key, documented where it is declared. Command-line flags override the
//! file; the file overrides the defaults.
//!
//! ```toml
//! listen = "127.0.0.1:4566"        # address of the one HTTP(S) listener
//! account_id = "123456789012"      # used when the data directory is first initialised
//! regions = ["us-east-1", "us-east-2", "us-west-2", "eu-west-1"]
//! default_region = "us-east-1"     # for requests whose signature names no region
//! delivery_interval = "5m"         # how often log files are delivered
//! digest_interval = "1h"           # digest window length
//! log_gzip_level = 4               # gzip level of delivered log files, 1–9 (6: ~11%
//!                                  # smaller files, more CPU per event delivered)
//! lifecycle_interval = "1m"        # how often S3 lifecycle rules are applied
//! dev = false                      # accept the well-known test/test credentials as root
//! history_days = 90                # LookupEvents retention
//! lookup_extensions = false        # LookupEvents: AND of several attributes, data events
//! max_body_bytes = 16777216        # largest request body read whole
//! max_object_bytes = 5368709120    # largest PutObject/UploadPart body (streamed to disk)
//! multipart_expiry_days = 7        # incomplete multipart uploads are aborted after this
//! disk_reserve = "default"         # free space kept on the data directory's filesystems
//!                                  # ("512MiB", "2%", "0" = off; default: the larger of
//!                                  # 1% and 512 MiB); below it, requests that would grow
//!                                  # the data get 503 SlowDown / ServiceUnavailable
//!                                  # (a bucket's AbortIncompleteMultipartUpload rule wins)
//! memory_limit = "512MiB"          # the memory budget, split among every cache and buffer
//!                                  # by fixed shares (src/memory.rs; /_cairn/metrics
//!                                  # reports them); RSS stays under it plus 128 MiB
//! max_api_body_bytes = 2097152     # largest body of a JSON/query API call
//! max_buffered_body_bytes = 107374180  # request bodies buffered at once, all connections
//!                                  # (default: memory_limit's request_bodies share, 20%)
//! max_buffered_body_bytes_per_client = 67108864  # … of which one client address may hold
//! max_connections = 1310           # connections served at once (more wait in the backlog;
//!                                  # default: the connections share / 64 KiB, at most 4096)
//! header_timeout = "20s"           # to send request headers (also closes idle keep-alives)
//! body_timeout = "20s"             # a body may go this long without a byte (20× in all)
//! tls_handshake_timeout = "10s"
//! metrics_listen = "127.0.0.1:9464"  # serve /metrics unauthenticated on this address only
//! metrics_public = false           # serve /_cairn/metrics on the API listener to anyone
//!                                  # (otherwise it needs Authorization: Bearer
//!                                  # $CAIRN_METRICS_TOKEN)
//!
//! [tls]                            # optional; serve HTTPS instead of HTTP
//! cert = "cert.pem"
//! key = "key.pem"
//!
//! [[bucket]]                       # buckets created at start if missing
//! name = "acme-cloudtrail-logs"
//! region = "us-east-1"
//!
//! [[bucket]]                       # a bucket served by an upstream S3 (the proxy backend)
//! name = "acme-artifacts"
//! [bucket.proxy]
//! endpoint = "http://minio.internal:9000"
//! region = "us-east-1"             # the upstream's signing region
//! bucket = "artifacts"             # its name upstream (default: the same name)
//! access_key_id = "AKIA…"
//! secret_access_key_env = "ARTIFACTS_SECRET"  # env var with the secret (or secret_access_key)
//! timeout = "300s"                 # how long the upstream may take to begin answering
//!                                  # (the upload included); then 503, outcome unknown
//!
//! [dynamodb]                       # DynamoDB calls go to a DynamoDB-compatible database
//! upstream = "http://127.0.0.1:8000"  # DynamoDB Local, Alternator, dynalite, or AWS
//!                                  # (or --dynamodb-upstream; without one, DynamoDB calls
//!                                  # are answered 501 with how to set it)
//! region = "us-east-1"             # the cairn region its tables belong to (default:
//!                                  # default_region); calls signed for others are refused
//! signing_region = "us-east-1"     # the upstream's signing region (default: region)
//! access_key_id = "AKIA…"          # upstream credentials; without them, the environment's
//! secret_access_key_env = "DDB_SECRET"  # CAIRN_DYNAMODB_ACCESS_KEY_ID / _SECRET_ACCESS_KEY
//!                                  # (/ _SESSION_TOKEN), else AWS_ACCESS_KEY_ID / …
//! timeout = "30s"                  # how long an upstream answer may take
//! ca_file = "upstream-ca.pem"      # extra CA certificates for an https upstream
//! account_id = "000000000000"      # the upstream's account (default: learned from its ARNs)
//!
//! [[trail]]                        # trails applied idempotently at start
//! name = "acme-audit-trail"
//! bucket = "acme-cloudtrail-logs"
//! home_region = "us-east-1"
//! prefix = ""                      # S3 key prefix
//! multi_region = true
//! include_global_service_events = true
//! log_file_validation = true
//! logging = true                   # StartLogging / StopLogging to reach this state
//! # event_selectors / advanced_event_selectors: the JSON shapes of PutEventSelectors
//! event_selectors = '[{"ReadWriteType":"All","IncludeManagementEvents":true}]'
//! ```

use anyhow::{bail, Context, Result};
use cairn_record::selector::{AdvancedEventSelector, EventSelector, TrailSelectors};
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<String>,
    pub account_id: Option<String>,
    pub regions: Option<Vec<String>>,
    pub default_region: Option<String>,
    pub delivery_interval: Option<String>,
    pub lifecycle_interval: Option<String>,
    pub digest_interval: Option<String>,
    pub log_gzip_level: Option<u32>,
    pub dev: Option<bool>,
    pub history_days: Option<i64>,
    pub lookup_extensions: Option<bool>,
    pub max_body_bytes: Option<usize>,
    pub max_object_bytes: Option<u64>,
    pub multipart_expiry_days: Option<i64>,
    pub disk_reserve: Option<String>,
    pub memory_limit: Option<String>,
    pub max_api_body_bytes: Option<usize>,
    pub max_buffered_body_bytes: Option<usize>,
    pub max_buffered_body_bytes_per_client: Option<usize>,
    pub max_connections: Option<usize>,
    pub header_timeout: Option<String>,
    pub body_timeout: Option<String>,
    pub tls_handshake_timeout: Option<String>,
    pub metrics_listen: Option<String>,
    pub metrics_public: Option<bool>,
    pub tls: Option<TlsConfig>,
    #[serde(default, rename = "bucket")]
    pub buckets: Vec<BucketConfig>,
    #[serde(default, rename = "trail")]
    pub trails: Vec<TrailDecl>,
    pub dynamodb: Option<DynamoConfig>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DynamoConfig {
    pub upstream: Option<String>,
    pub region: Option<String>,
    pub signing_region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub secret_access_key_env: Option<String>,
    pub timeout: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub account_id: Option<String>,
}

/// The DynamoDB upstream from `[dynamodb]` and `--dynamodb-upstream` (which wins); `None`
/// when neither names one.
pub fn dynamodb_target(
    file: Option<&DynamoConfig>,
    flag: Option<&str>,
    default_region: &str,
) -> Result<Option<cairn_api::dynamodb::Target>> {
    let c = file.cloned().unwrap_or_default();
    let Some(endpoint) = flag.map(str::to_string).or(c.upstream.clone()) else {
        return Ok(None);
    };
    let endpoint = endpoint.trim_end_matches('/').to_string();
    if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
        bail!("[dynamodb] upstream must start with http:// or https://");
    }
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let (access_key_id, secret_access_key, session_token) = match &c.access_key_id {
        Some(id) => {
            let secret = match (&c.secret_access_key_env, &c.secret_access_key) {
                (Some(var), _) => env(var).ok_or_else(|| {
                    anyhow::anyhow!("[dynamodb]: environment variable {var} (the upstream secret key) is not set")
                })?,
                (None, Some(s)) => {
                    tracing::warn!("the DynamoDB upstream's secret key is stored in cairn.toml in plain text; prefer secret_access_key_env");
                    s.clone()
                }
                (None, None) => bail!("[dynamodb]: access_key_id needs secret_access_key_env (or secret_access_key)"),
            };
            (id.clone(), secret, None)
        }
        None => match (
            env("CAIRN_DYNAMODB_ACCESS_KEY_ID"),
            env("CAIRN_DYNAMODB_SECRET_ACCESS_KEY"),
        ) {
            (Some(id), Some(s)) => (id, s, env("CAIRN_DYNAMODB_SESSION_TOKEN")),
            _ => match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
                (Some(id), Some(s)) => (id, s, env("AWS_SESSION_TOKEN")),
                _ => bail!(
                    "[dynamodb]: no upstream credentials: set access_key_id and secret_access_key_env in [dynamodb], or CAIRN_DYNAMODB_ACCESS_KEY_ID and CAIRN_DYNAMODB_SECRET_ACCESS_KEY (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY) in the environment"
                ),
            },
        },
    };
    if let Some(a) = &c.account_id {
        if !cairn_record::arn::is_account_id(a) {
            bail!("[dynamodb] account_id must be 12 digits");
        }
    }
    let region = c
        .region
        .clone()
        .unwrap_or_else(|| default_region.to_string());
    let timeout = match &c.timeout {
        Some(t) => parse_duration(t)?
            .to_std()
            .map_err(|_| anyhow::anyhow!("[dynamodb] timeout must be positive"))?,
        None => std::time::Duration::from_secs(30),
    };
    Ok(Some(cairn_api::dynamodb::Target {
        endpoint,
        signing_region: c.signing_region.clone().unwrap_or_else(|| region.clone()),
        region,
        access_key_id,
        secret_access_key,
        session_token,
        timeout,
        ca_file: c.ca_file.clone(),
        account: c.account_id.clone(),
    }))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BucketConfig {
    pub name: String,
    pub region: Option<String>,
    /// Serve this bucket from an upstream S3-compatible service instead of the embedded store.
    pub proxy: Option<ProxyConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    /// `http://host:port` or `https://host`.
    pub endpoint: String,
    /// The upstream's signing region (default `us-east-1`).
    pub region: Option<String>,
    /// The bucket's name upstream (default: the same name).
    pub bucket: Option<String>,
    pub access_key_id: String,
    /// The upstream secret key in the file itself (prefer `secret_access_key_env`).
    pub secret_access_key: Option<String>,
    /// The environment variable holding the upstream secret key.
    pub secret_access_key_env: Option<String>,
    /// How long the upstream may take to begin answering, upload included (default 300 s).
    pub timeout: Option<String>,
}

impl ProxyConfig {
    /// The upstream target of bucket `name`.
    pub fn target(&self, name: &str) -> Result<cairn_api::s3::proxy::ProxyTarget> {
        let secret = match (&self.secret_access_key_env, &self.secret_access_key) {
            (Some(var), _) => std::env::var(var).map_err(|_| {
                anyhow::anyhow!("bucket {name}: environment variable {var} (the upstream secret key) is not set")
            })?,
            (None, Some(s)) => {
                tracing::warn!(bucket = %name, "the upstream secret key is stored in cairn.toml in plain text; prefer secret_access_key_env");
                s.clone()
            }
            (None, None) => anyhow::bail!(
                "bucket {name}: the proxy needs secret_access_key_env (or secret_access_key)"
            ),
        };
        let endpoint = self.endpoint.trim_end_matches('/').to_string();
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            anyhow::bail!("bucket {name}: proxy endpoint must start with http:// or https://");
        }
        Ok(cairn_api::s3::proxy::ProxyTarget {
            endpoint,
            region: self.region.clone().unwrap_or_else(|| "us-east-1".into()),
            access_key_id: self.access_key_id.clone(),
            secret_access_key: secret,
            bucket: self.bucket.clone().unwrap_or_else(|| name.to_string()),
            timeout: match &self.timeout {
                Some(t) => parse_duration(t)?.to_std().map_err(|_| {
                    anyhow::anyhow!("bucket {name}: proxy timeout must be positive")
                })?,
                None => std::time::Duration::from_secs(300),
            },
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrailDecl {
    pub name: String,
    pub bucket: String,
    pub home_region: Option<String>,
    pub prefix: Option<String>,
    #[serde(default)]
    pub multi_region: bool,
    #[serde(default = "yes")]
    pub include_global_service_events: bool,
    #[serde(default)]
    pub log_file_validation: bool,
    #[serde(default = "yes")]
    pub logging: bool,
    pub kms_key_id: Option<String>,
    /// JSON text of PutEventSelectors' `EventSelectors`.
    pub event_selectors: Option<String>,
    /// JSON text of PutEventSelectors' `AdvancedEventSelectors`.
    pub advanced_event_selectors: Option<String>,
}

fn yes() -> bool {
    true
}

impl TrailDecl {
    pub fn selectors(&self) -> Result<TrailSelectors> {
        match (&self.event_selectors, &self.advanced_event_selectors) {
            (Some(_), Some(_)) => bail!(
                "trail {}: set event_selectors or advanced_event_selectors, not both",
                self.name
            ),
            (Some(b), None) => Ok(TrailSelectors::Basic(
                serde_json::from_str::<Vec<EventSelector>>(b)
                    .with_context(|| format!("trail {}: event_selectors", self.name))?,
            )),
            (None, Some(a)) => Ok(TrailSelectors::Advanced(
                serde_json::from_str::<Vec<AdvancedEventSelector>>(a)
                    .with_context(|| format!("trail {}: advanced_event_selectors", self.name))?,
            )),
            (None, None) => Ok(TrailSelectors::default()),
        }
    }
}

impl FileConfig {
    /// Reads `path`; a missing file is an empty configuration only when `required` is false.
    pub fn load(path: &Path, required: bool) -> Result<FileConfig> {
        match std::fs::read_to_string(path) {
            Ok(s) => toml::from_str(&s).with_context(|| format!("reading {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                Ok(FileConfig::default())
            }
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }
}

/// `500ms`, `30s`, `5m`, `1h`, `2d`.
pub fn parse_duration(s: &str) -> Result<chrono::Duration> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map(|i| s.split_at(i))
        .unwrap_or((s, "s"));
    let n: i64 = num
        .parse()
        .with_context(|| format!("invalid duration {s:?}"))?;
    let d = match unit {
        "ms" => chrono::Duration::milliseconds(n),
        "s" | "" => chrono::Duration::seconds(n),
        "m" => chrono::Duration::minutes(n),
        "h" => chrono::Duration::hours(n),
        "d" => chrono::Duration::days(n),
        _ => bail!("invalid duration {s:?}: use ms, s, m, h or d"),
    };
    if d <= chrono::Duration::zero() {
        bail!("duration {s:?} must be positive");
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5m").unwrap(), chrono::Duration::minutes(5));
        assert_eq!(
            parse_duration("250ms").unwrap(),
            chrono::Duration::milliseconds(250)
        );
        assert_eq!(parse_duration("10").unwrap(), chrono::Duration::seconds(10));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5 weeks").is_err());
    }

    #[test]
    fn the_documented_example_parses() {
        let doc = include_str!("config.rs");
        let example: String = doc
            .lines()
            .skip_while(|l| !l.starts_with("//! ```toml"))
            .skip(1)
            .take_while(|l| !l.starts_with("//! ```"))
            .map(|l| l.trim_start_matches("//!").trim_start_matches(' '))
            .collect::<Vec<_>>()
            .join("\n");
        let c: FileConfig = toml::from_str(&example).unwrap();
        assert_eq!(c.trails.len(), 1);
        assert_eq!(c.buckets[0].name, "acme-cloudtrail-logs");
        assert!(c.trails[0].selectors().is_ok());
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(toml::from_str::<FileConfig>("listen = \"x\"\nlisten_port = 1").is_err());
    }
}
