//! `cairn validate-logs`: the flags, output and exit codes of `aws cloudtrail validate-logs`,
//! reading a data directory offline or any S3 endpoint, plus `--strict`.

use crate::install::install_config;
use anyhow::Result;
use cairn_store::{ObjectStore, RemoteConfig, RemoteStore};
use cairn_trail::StateReader;
use cairn_verify::{
    validate, PublicKey, PublicKeyFile, PublicKeySource, Stream, ValidateError, ValidateOptions,
};
use chrono::{DateTime, Utc};
use clap::Args;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Args, Debug)]
pub struct ValidateArgs {
    /// ARN of the trail to validate (arn:aws:cloudtrail:REGION:ACCOUNT:trail/NAME).
    #[arg(long)]
    pub trail_arn: String,
    /// Start of the range (ISO 8601; an offset is dropped, as the AWS CLI does).
    #[arg(long)]
    pub start_time: String,
    /// End of the range (default: now).
    #[arg(long)]
    pub end_time: Option<String>,
    /// Bucket holding the files (default: the trail's, from the data directory).
    #[arg(long)]
    pub s3_bucket: Option<String>,
    /// Key prefix of the files (default: the trail's).
    #[arg(long)]
    pub s3_prefix: Option<String>,
    /// Account whose files to validate (default: the ARN's).
    #[arg(long)]
    pub account_id: Option<String>,
    /// Region whose digests to validate (default: the trail's home region).
    #[arg(long)]
    pub region: Option<String>,
    /// Print valid files too.
    #[arg(long)]
    pub verbose: bool,
    /// Read a cairn data directory directly (offline): files, trail and public keys.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Read files from this S3-compatible endpoint instead (credentials from AWS_ACCESS_KEY_ID
    /// and AWS_SECRET_ACCESS_KEY).
    #[arg(long, env = "CAIRN_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// Public keys as printed by `aws cloudtrail list-public-keys` (default: the data directory's).
    #[arg(long)]
    pub public_keys: Option<PathBuf>,
    /// Also report what the AWS CLI misses; exit 0 verified, 1 tampering found, 2 cannot verify.
    #[arg(long)]
    pub strict: bool,
    /// Strict: this digest key must still be reached (the newest one seen before).
    #[arg(long)]
    pub since_digest: Option<String>,
    /// Strict: remembers the newest verified digest between runs
    /// (default: ~/.local/state/cairn/validate-logs.json).
    #[arg(long)]
    pub state_file: Option<PathBuf>,
    /// Strict: accept only digests signed by keys with these fingerprints (repeatable).
    #[arg(long = "pin-fingerprint")]
    pub pin_fingerprints: Vec<String>,
}

/// A data directory's digest public keys, for the validator.
pub struct DataDirKeys(pub StateReader);
impl PublicKeySource for DataDirKeys {
    fn list(
        &self,
        region: &str,
        s: DateTime<Utc>,
        e: DateTime<Utc>,
    ) -> Result<Vec<PublicKey>, String> {
        Ok(self
            .0
            .public_keys(&cairn_trail::KeyWindow {
                region,
                start: s,
                end: e,
            })
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|k| PublicKey {
                der: k.value,
                fingerprint: k.fingerprint,
                valid_from: k.validity_start,
                valid_to: k.validity_end,
            })
            .collect())
    }
}

fn default_state_file() -> PathBuf {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| ".".into()))
                .join(".local/state")
        });
    base.join("cairn").join("validate-logs.json")
}

/// Runs the command; returns the process exit code.
pub fn run(a: ValidateArgs) -> i32 {
    let fail_code = if a.strict { 2 } else { 255 };
    match run_inner(a) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("\n{e:#}");
            fail_code
        }
    }
}

fn run_inner(a: ValidateArgs) -> Result<i32> {
    let start = cairn_record::time::parse_cli_time(&a.start_time)
        .ok_or_else(|| anyhow::anyhow!("Unable to parse --start-time {:?}", a.start_time))?;
    let end = match &a.end_time {
        Some(s) => cairn_record::time::parse_cli_time(s)
            .ok_or_else(|| anyhow::anyhow!("Unable to parse --end-time {s:?}"))?,
        None => Utc::now(),
    };
    let reader = match &a.data_dir {
        Some(d) => {
            install_config(d, None)?;
            Some(StateReader::open(&d.join("trail"))?)
        }
        None => None,
    };
    let (mut bucket, mut prefix) = (a.s3_bucket.clone(), a.s3_prefix.clone());
    if bucket.is_none() {
        let trails = reader
            .as_ref()
            .map(|r| r.trails())
            .transpose()?
            .unwrap_or_default();
        let t = trails
            .iter()
            .find(|t| t.config.arn() == a.trail_arn)
            .ok_or_else(|| anyhow::anyhow!("A trail could not be found for {}", a.trail_arn))?;
        bucket = Some(t.config.s3_bucket.clone());
        prefix = t.config.s3_key_prefix.clone();
    }
    let bucket = bucket.unwrap_or_default();
    let store: Arc<dyn ObjectStore> = match (&a.s3_endpoint, &a.data_dir) {
        (Some(ep), _) => Arc::new(RemoteStore::new(RemoteConfig {
            endpoint: ep.clone(),
            region: std::env::var("AWS_DEFAULT_REGION").unwrap_or_else(|_| "us-east-1".into()),
            access_key_id: std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_default(),
            secret_access_key: std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or_default(),
            virtual_hosted: false,
        })?),
        (None, Some(d)) => Arc::new(crate::install::open_store(d)?),
        (None, None) => anyhow::bail!("give --data-dir or --s3-endpoint"),
    };
    let keys: Box<dyn PublicKeySource> = match (&a.public_keys, reader) {
        (Some(p), _) => Box::new(
            PublicKeyFile::parse(&std::fs::read(p)?)
                .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?,
        ),
        (None, Some(r)) => Box::new(DataDirKeys(r)),
        (None, None) => anyhow::bail!("give --public-keys or --data-dir"),
    };
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} validating log files {pos}/{len} {per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let b2 = bar.clone();
    let opts = ValidateOptions {
        trail_arn: a.trail_arn.clone(),
        start,
        end,
        bucket,
        prefix,
        account: a.account_id.clone(),
        source_region: a.region.clone(),
        verbose: a.verbose,
        strict: a.strict,
        since_digest: a.since_digest.clone(),
        state_file: if a.strict {
            Some(a.state_file.clone().unwrap_or_else(default_state_file))
        } else {
            None
        },
        pinned_fingerprints: a.pin_fingerprints.clone(),
        progress: Some(Arc::new(move |done, total| {
            b2.set_length(total);
            b2.set_position(done);
        })),
    };
    if let Some(p) = opts.state_file.as_ref().and_then(|p| p.parent()) {
        std::fs::create_dir_all(p)?;
    }
    let result = validate(store.as_ref(), keys.as_ref(), &opts);
    bar.finish_and_clear();
    match result {
        Ok(report) => {
            let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
            for (s, line) in &report.lines {
                match s {
                    Stream::Out => out.write_all(line.as_bytes())?,
                    Stream::Err => {
                        out.flush()?;
                        err.write_all(line.as_bytes())?;
                        err.flush()?;
                    }
                }
            }
            out.flush()?;
            Ok(report.exit_code)
        }
        Err(ValidateError::Usage(m)) | Err(ValidateError::CannotVerify(m)) => {
            Err(anyhow::anyhow!(m))
        }
    }
}

#[derive(Args, Debug)]
pub struct ListKeysArgs {
    #[arg(long)]
    pub data_dir: PathBuf,
    #[arg(long, default_value = "us-east-1")]
    pub region: String,
    #[arg(long)]
    pub start_time: Option<String>,
    #[arg(long)]
    pub end_time: Option<String>,
}

/// `cairn list-public-keys`: the keys of a data directory in ListPublicKeys' JSON shape.
pub fn list_public_keys(a: ListKeysArgs) -> Result<()> {
    use base64::Engine as _;
    let r = StateReader::open(&a.data_dir.join("trail"))?;
    let now = Utc::now();
    let s = a
        .start_time
        .as_deref()
        .and_then(cairn_record::time::parse_cli_time)
        .unwrap_or(now);
    let e = a
        .end_time
        .as_deref()
        .and_then(cairn_record::time::parse_cli_time)
        .unwrap_or(now);
    let keys: Vec<_> = r
        .public_keys(&cairn_trail::KeyWindow {
            region: &a.region,
            start: s,
            end: e,
        })?
        .into_iter()
        .map(|k| {
            serde_json::json!({
                "Value": base64::engine::general_purpose::STANDARD.encode(&k.value),
                "ValidityStartTime": k.validity_start.timestamp(),
                "ValidityEndTime": k.validity_end.timestamp(),
                "Fingerprint": k.fingerprint,
            })
        })
        .collect();
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({"PublicKeyList": keys}))?
    );
    Ok(())
}
