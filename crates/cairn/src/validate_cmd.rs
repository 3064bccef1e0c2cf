//! `cairn validate-logs`: the flags, output and exit codes of `aws cloudtrail validate-logs`,
//! reading a data directory offline or any S3 endpoint, plus `--strict`.

use crate::aws_env::{AwsEnv, AwsGlobals};
use crate::client::Client;
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
    /// Print valid files too.
    #[arg(long)]
    pub verbose: bool,
    /// Read a cairn data directory directly (offline): files, trail and public keys.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Read the files from this S3 endpoint (default: as the `aws` CLI finds S3 —
    /// AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, the profile's, else AWS).
    #[arg(long, env = "CAIRN_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// Public keys as printed by `aws cloudtrail list-public-keys` (default: the data
    /// directory's, or ListPublicKeys from the CloudTrail endpoint).
    #[arg(long)]
    pub public_keys: Option<PathBuf>,
    /// As the `aws` CLI: `--endpoint-url` (CloudTrail only), `--profile`, `--region` (the
    /// client's region and the region whose digests are validated), `--ca-bundle`.
    #[command(flatten)]
    pub aws: AwsGlobals,
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

/// A CloudTrail endpoint's ListPublicKeys, as the CLI calls it (every page).
struct ServerKeys(Client);
impl PublicKeySource for ServerKeys {
    fn list(
        &self,
        _region: &str,
        s: DateTime<Utc>,
        e: DateTime<Utc>,
    ) -> Result<Vec<PublicKey>, String> {
        use base64::Engine as _;
        let mut out = vec![];
        let mut token: Option<String> = None;
        loop {
            let mut body =
                serde_json::json!({"StartTime": s.timestamp(), "EndTime": e.timestamp()});
            if let Some(t) = &token {
                body["NextToken"] = t.clone().into();
            }
            let v = self
                .0
                .cloudtrail("ListPublicKeys", &body)
                .map_err(|e| format!("{e:#}"))?;
            for k in v["PublicKeyList"].as_array().into_iter().flatten() {
                let time = |f: &str| {
                    k[f].as_f64()
                        .and_then(|t| DateTime::from_timestamp(t as i64, 0))
                        .ok_or_else(|| format!("ListPublicKeys: bad {f}"))
                };
                out.push(PublicKey {
                    der: base64::engine::general_purpose::STANDARD
                        .decode(k["Value"].as_str().unwrap_or_default())
                        .map_err(|e| format!("ListPublicKeys: bad key value: {e}"))?,
                    fingerprint: k["Fingerprint"].as_str().unwrap_or_default().to_string(),
                    valid_from: time("ValidityStartTime")?,
                    valid_to: time("ValidityEndTime")?,
                });
            }
            token = v["NextToken"].as_str().map(str::to_string);
            if token.is_none() {
                return Ok(out);
            }
        }
    }
}

/// The trail's bucket and prefix, from DescribeTrails as the CLI finds them.
fn trail_location(ct: &Client, arn: &str) -> Result<(String, Option<String>)> {
    let v = ct.cloudtrail("DescribeTrails", &serde_json::json!({}))?;
    let t = v["trailList"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["TrailARN"].as_str() == Some(arn))
        .ok_or_else(|| anyhow::anyhow!("A trail could not be found for {arn}"))?;
    if t["IsOrganizationTrail"].as_bool() == Some(true) {
        anyhow::bail!(
            "{arn} is an organization trail: cairn validate-logs does not read organization \
             trails' files yet; give --s3-bucket and --s3-prefix of the account's files"
        );
    }
    Ok((
        t["S3BucketName"].as_str().unwrap_or_default().to_string(),
        t["S3KeyPrefix"].as_str().map(str::to_string),
    ))
}

/// A bucket's region, from GetBucketLocation (as the CLI asks it, in the client's region).
fn bucket_region(s3: &Client, bucket: &str) -> Result<String> {
    let a = s3.s3_get(&format!("/{bucket}"), "location=")?;
    let text = String::from_utf8_lossy(&a.body);
    if a.status != 200 {
        anyhow::bail!(
            "An error occurred when calling the GetBucketLocation operation ({}): {}",
            a.status,
            text.trim()
        );
    }
    let region = text
        .split_once("LocationConstraint")
        .and_then(|(_, r)| r.split_once('>'))
        .and_then(|(_, r)| r.split_once('<'))
        .map(|(v, _)| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "us-east-1".into());
    Ok(if region == "EU" {
        "eu-west-1".into()
    } else {
        region
    })
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

fn key_file(p: &std::path::Path) -> Result<PublicKeyFile> {
    PublicKeyFile::parse(&std::fs::read(p)?).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))
}

/// An S3 endpoint with the command's credentials and CA bundle.
fn remote_store(env: &AwsEnv, endpoint: &str, region: &str) -> Result<RemoteStore> {
    let c = env.credentials()?;
    Ok(RemoteStore::new(RemoteConfig {
        endpoint: endpoint.trim_end_matches('/').to_string(),
        region: region.to_string(),
        access_key_id: c.key,
        secret_access_key: c.secret,
        virtual_hosted: false,
        session_token: c.token,
        ca_bundle: env.ca_bundle(),
    })?)
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
    cairn_verify::check_trail_arn(&a.trail_arn).map_err(|e| match e {
        ValidateError::Usage(m) | ValidateError::CannotVerify(m) => anyhow::anyhow!(m),
    })?;
    let home = a
        .trail_arn
        .split(':')
        .nth(3)
        .unwrap_or("us-east-1")
        .to_string();
    let (store, keys, bucket, prefix): (Arc<dyn ObjectStore>, Box<dyn PublicKeySource>, _, _) =
        match &a.data_dir {
            // Offline: a data directory holds the files, the trails and the keys.
            Some(d) => {
                install_config(d, None)?;
                let reader = StateReader::open(&d.join("trail"))?;
                let (mut bucket, mut prefix) = (a.s3_bucket.clone(), a.s3_prefix.clone());
                if bucket.is_none() {
                    let trails = reader.trails()?;
                    let t = trails
                        .iter()
                        .find(|t| t.config.arn() == a.trail_arn)
                        .ok_or_else(|| {
                            anyhow::anyhow!("A trail could not be found for {}", a.trail_arn)
                        })?;
                    bucket = Some(t.config.s3_bucket.clone());
                    prefix = t.config.s3_key_prefix.clone();
                }
                let store: Arc<dyn ObjectStore> = match &a.s3_endpoint {
                    Some(ep) => Arc::new(remote_store(&AwsEnv::load(&a.aws)?, ep, &home)?),
                    None => Arc::new(crate::install::open_store(d)?),
                };
                let keys: Box<dyn PublicKeySource> = match &a.public_keys {
                    Some(p) => Box::new(key_file(p)?),
                    None => Box::new(DataDirKeys(reader)),
                };
                (store, keys, bucket.unwrap_or_default(), prefix)
            }
            // Online, as the AWS CLI: DescribeTrails and ListPublicKeys from CloudTrail, the
            // files from S3, each endpoint and the credentials found as the CLI finds them.
            None => {
                let env = AwsEnv::load(&a.aws)?;
                let ct = || Client::for_service(&env, ("CloudTrail", "cloudtrail"), &home);
                let (bucket, prefix) = match &a.s3_bucket {
                    Some(b) => (b.clone(), a.s3_prefix.clone()),
                    None => trail_location(&ct()?, &a.trail_arn)?,
                };
                let keys: Box<dyn PublicKeySource> = match &a.public_keys {
                    Some(p) => Box::new(key_file(p)?),
                    None => Box::new(ServerKeys(ct()?)),
                };
                let client_region = env.region().unwrap_or_else(|| home.clone());
                let s3_endpoint = a
                    .s3_endpoint
                    .clone()
                    .or_else(|| env.configured_endpoint_without_flag("S3"));
                let store = match s3_endpoint {
                    Some(ep) => remote_store(&env, &ep, &client_region)?,
                    None => {
                        // AWS itself: sign for the bucket's region.
                        let probe = Client::new(
                            &format!("https://s3.{client_region}.amazonaws.com"),
                            client_region.clone(),
                            env.credentials()?,
                            env.ca_bundle(),
                        )?;
                        let region = bucket_region(&probe, &bucket)?;
                        let ep = format!("https://s3.{region}.amazonaws.com");
                        remote_store(&env, &ep, &region)?
                    }
                };
                (
                    Arc::new(store) as Arc<dyn ObjectStore>,
                    keys,
                    bucket,
                    prefix,
                )
            }
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
        source_region: a.aws.region.clone(),
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
