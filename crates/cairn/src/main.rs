//! The `cairn` binary: wires the crates together; holds no logic another crate should own.

mod aws_env;
mod bench;
mod bench_api;
mod bench_ddb;
mod bench_kms;
mod bench_logs;
mod bench_s3;
mod bench_soak;
mod client;
mod config;
mod crash;
mod crash_mixed;
mod crash_serve;
mod install;
mod memory;
mod serve;
mod sse;
mod synth;
mod validate_cmd;

use clap::{Parser, Subcommand};

/// mimalloc: the server allocates per request (records, JSON, headers) from many threads;
/// measured ~10–15% more requests per second than the system allocator here.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc 3's `mi_option_purge_delay`: its position in the C enum, which the Rust
/// bindings (written for mimalloc 2's numbering) do not name.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long freed pages stay with mimalloc before going back to the OS. Its default (a
/// second) is, at a few thousand requests per second, half the heap. Measured at
/// `memory_limit` 128 MiB under `bench soak` (10k req/s offered), and `bench api`:
///
/// | delay     | soak RSS  | soak peak | `bench api` req/s |
/// |-----------|-----------|-----------|-------------------|
/// | 1000 ms   | ~245 MiB  | 290 MiB   | 18.2k, 18.5k      |
/// | 100 ms    | ~175 MiB  | 209 MiB   | 18.9k, 18.8k      |
/// | 0 (none)  | ~130 MiB  | 158 MiB   | 15.9k, 15.9k      |
///
/// 0 it is, though it costs `bench api` 14%: it is the only setting with a clean 30-minute
/// soak at the default budget (flat at ~200 MiB). At 100 ms a 30-minute soak ran flat at
/// ~250 MiB for 12 minutes, then RSS climbed ~100 MiB a minute (to 700 MiB at minute 15;
/// all of it in mimalloc's arena, none in a share cairn counts): not understood yet.
pub const PURGE_DELAY_MS: std::ffi::c_long = 0;

/// Sets mimalloc's purge delay to [`PURGE_DELAY_MS`] unless `MIMALLOC_PURGE_DELAY` says
/// otherwise. Only applied when the linked library is mimalloc 3 and the option still
/// holds its default, so a different numbering can never set something else. Returns
/// whether the delay now is ours.
fn purge_freed_memory_sooner() -> bool {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return false;
    }
    // SAFETY: plain calls into the allocator's option table; no pointers involved.
    unsafe {
        if libmimalloc_sys::mi_version() / 10000 != 3 {
            return false;
        }
        let now = libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY);
        if now != 1000 && now != PURGE_DELAY_MS {
            return false;
        }
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS);
        libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) == PURGE_DELAY_MS
    }
}
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "cairn",
    version,
    about = "A self-hosted audit trail that behaves like AWS CloudTrail"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Validate log files and digests like `aws cloudtrail validate-logs` (and more with --strict).
    ValidateLogs(Box<validate_cmd::ValidateArgs>),
    /// Print a data directory's digest public keys as ListPublicKeys does.
    ListPublicKeys(validate_cmd::ListKeysArgs),
    /// Run the server: the AWS APIs on one listener, trail delivery, event history.
    Serve(serve::ServeArgs),
    /// Initialise a data directory: account, root key, root access key (printed once).
    Init(serve::InitArgs),
    /// Trail operations against a running server.
    #[command(subcommand)]
    Trail(TrailCmd),
    /// Trails and their status: from a running server (signed with AWS_ACCESS_KEY_ID /
    /// AWS_SECRET_ACCESS_KEY), or from the data directory when no server runs.
    Status {
        #[arg(long, default_value = "./cairn-data")]
        data_dir: PathBuf,
        #[command(flatten)]
        aws: aws_env::AwsGlobals,
        #[arg(long)]
        json: bool,
    },
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCmd),
    /// Kill a worker with SIGKILL at random points and check nothing acknowledged is lost.
    CrashTest(crash::CrashTestArgs),
    #[command(hide = true)]
    CrashWorker(crash::CrashWorkerArgs),
    /// Appends records to a journal and reports each outcome, or reads them back (`--read`):
    /// for fault-injection tests that need a process of their own (libfiu).
    #[command(hide = true)]
    JournalProbe {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 1)]
        count: u32,
        #[arg(long, default_value = "probe")]
        label: String,
        #[arg(long)]
        read: bool,
    },
}

#[derive(Subcommand)]
enum TrailCmd {
    /// Deliver what is pending and close every open digest window now.
    Flush {
        name: String,
        #[command(flatten)]
        aws: aws_env::AwsGlobals,
    },
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Synthetic events through journal and delivery into the embedded store.
    Ingest(bench::IngestArgs),
    /// validate-logs over a data directory against a same-run gunzip + SHA-256 bound.
    Validate(bench::ValidateBenchArgs),
    /// Authenticated, journaled requests per second through `cairn serve`, against the same
    /// server's unauthenticated static endpoint.
    Api(bench_api::ApiBenchArgs),
    /// LookupEvents page latency over an index of N management events.
    Lookup(bench_api::LookupBenchArgs),
    /// S3 PutObject/GetObject: embedded with data events on and off, proxy vs direct
    /// upstream, and peers (moto_server, s3rver).
    S3(bench_s3::S3BenchArgs),
    /// KMS calls through the API (GenerateDataKey, Encrypt/Decrypt 4 KiB) against
    /// GetTrailStatus on the same server.
    Kms(bench_kms::KmsBenchArgs),
    /// CloudWatch Logs: PutLogEvents in 1 MiB batches vs the journal, FilterLogEvents and an
    /// Insights query over 1M events, trail → log group latency at a fixed rate.
    Logs(bench_logs::LogsBenchArgs),
    /// DynamoDB: GetItem and PutItem of 1 KiB items with 16 clients through cairn vs the
    /// upstream (dynalite) directly, interleaved.
    Dynamodb(bench_ddb::DdbBenchArgs),
    /// Mixed signed traffic at a fixed rate for minutes: throughput, p99, RSS, open files and
    /// disk sampled into a CSV and an SVG plot, then the ledger checks.
    Soak(bench_soak::SoakBenchArgs),
    /// A plain TCP relay (`bench dynamodb`'s one-more-hop ceiling); runs until killed.
    #[command(hide = true)]
    Relay {
        #[arg(long)]
        listen: String,
        #[arg(long)]
        to: String,
    },
}

/// One line of `cairn status`.
#[derive(serde::Serialize)]
#[serde(rename_all = "PascalCase")]
struct StatusRow {
    name: String,
    #[serde(rename = "TrailARN")]
    trail_arn: String,
    s3_bucket_name: String,
    is_multi_region_trail: bool,
    log_file_validation_enabled: bool,
    is_logging: bool,
    start_logging_time: Option<String>,
    stop_logging_time: Option<String>,
    latest_delivery_time: Option<String>,
    latest_delivery_error: Option<String>,
    latest_digest_delivery_time: Option<String>,
    latest_digest_delivery_error: Option<String>,
}

fn rows_offline(dir: &std::path::Path) -> anyhow::Result<Vec<StatusRow>> {
    let r = cairn_trail::StateReader::open(&dir.join("trail"))?;
    let iso = |x: Option<chrono::DateTime<chrono::Utc>>| x.map(cairn_record::time::iso);
    Ok(r.trails()?
        .into_iter()
        .map(|t| StatusRow {
            name: t.config.name.clone(),
            trail_arn: t.config.arn(),
            s3_bucket_name: t.config.s3_bucket.clone(),
            is_multi_region_trail: t.config.multi_region,
            log_file_validation_enabled: t.config.log_file_validation,
            is_logging: t.logging,
            start_logging_time: iso(t.start_logging_time),
            stop_logging_time: iso(t.stop_logging_time),
            latest_delivery_time: iso(t.latest_delivery_time),
            latest_delivery_error: t.latest_delivery_error,
            latest_digest_delivery_time: iso(t.latest_digest_delivery_time),
            latest_digest_delivery_error: t.latest_digest_delivery_error,
        })
        .collect())
}

fn rows_online(c: &client::Client) -> anyhow::Result<Vec<StatusRow>> {
    let trails = c.cloudtrail("DescribeTrails", &serde_json::json!({}))?;
    let mut rows = Vec::new();
    for t in trails["trailList"].as_array().into_iter().flatten() {
        let arn = t["TrailARN"].as_str().unwrap_or_default().to_string();
        let s = c.cloudtrail("GetTrailStatus", &serde_json::json!({"Name": arn}))?;
        let time = |k: &str| {
            s[k].as_f64().map(|x| {
                cairn_record::time::iso(cairn_api::cloudtrail::history::from_epoch(x as i64))
            })
        };
        let text = |k: &str| s[k].as_str().map(str::to_string);
        rows.push(StatusRow {
            name: t["Name"].as_str().unwrap_or_default().into(),
            trail_arn: arn,
            s3_bucket_name: t["S3BucketName"].as_str().unwrap_or_default().into(),
            is_multi_region_trail: t["IsMultiRegionTrail"].as_bool().unwrap_or(false),
            log_file_validation_enabled: t["LogFileValidationEnabled"].as_bool().unwrap_or(false),
            is_logging: s["IsLogging"].as_bool().unwrap_or(false),
            start_logging_time: time("StartLoggingTime"),
            stop_logging_time: time("StopLoggingTime"),
            latest_delivery_time: time("LatestDeliveryTime"),
            latest_delivery_error: text("LatestDeliveryError"),
            latest_digest_delivery_time: time("LatestDigestDeliveryTime"),
            latest_digest_delivery_error: text("LatestDigestDeliveryError"),
        });
    }
    Ok(rows)
}

/// A CloudTrail client of a running cairn, found as the `aws` CLI finds one; cairn's own
/// operations have no AWS endpoint, so without one configured it is the default listener.
fn cairn_client(g: &aws_env::AwsGlobals) -> anyhow::Result<client::Client> {
    let env = aws_env::AwsEnv::load(g)?;
    let region = env.region().unwrap_or_else(|| "us-east-1".into());
    let endpoint = env
        .configured_endpoint("CloudTrail")
        .unwrap_or_else(|| "http://127.0.0.1:4566".into());
    client::Client::new(&endpoint, region, env.credentials()?, env.ca_bundle())
}

fn status(dir: PathBuf, g: &aws_env::AwsGlobals, json: bool) -> anyhow::Result<()> {
    // A running server holds the data directory's databases; ask it. Otherwise read them.
    let rows = match rows_offline(&dir) {
        Ok(r) => r,
        Err(offline) => {
            let c = cairn_client(g)
                .map_err(|e| offline.context(format!("and no server to ask: {e:#}")))?;
            rows_online(&c)?
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:<24} {:<8} {:<24} {:<22} {:<22} ERROR",
        "NAME", "LOGGING", "BUCKET", "LATEST DELIVERY", "LATEST DIGEST"
    );
    for t in rows {
        let f = |x: &Option<String>| x.clone().unwrap_or_else(|| "-".into());
        println!(
            "{:<24} {:<8} {:<24} {:<22} {:<22} {}",
            t.name,
            t.is_logging,
            t.s3_bucket_name,
            f(&t.latest_delivery_time),
            f(&t.latest_digest_delivery_time),
            t.latest_delivery_error
                .or(t.latest_digest_delivery_error)
                .unwrap_or_default()
        );
    }
    Ok(())
}

fn trail_flush(name: &str, g: &aws_env::AwsGlobals) -> anyhow::Result<()> {
    let c = cairn_client(g)?;
    let r = c.cloudtrail("CairnFlushTrail", &serde_json::json!({"Name": name}))?;
    println!("{}", serde_json::to_string_pretty(&r)?);
    Ok(())
}

fn main() {
    // No transparent huge pages for this process (and the servers it starts): mimalloc gives
    // memory back 4 KiB at a time, which a huge page cannot do. Measured under `bench soak`
    // at 10k req/s offered: peak RSS 964 MiB with them, 331 MiB without, same throughput.
    #[cfg(target_os = "linux")]
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
    let purged = purge_freed_memory_sooner();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CAIRN_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    if !purged && std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        tracing::warn!("the allocator is not mimalloc 3 as built: freed memory is returned late");
    }
    let cli = Cli::parse();
    let code = match cli.cmd {
        Cmd::ValidateLogs(a) => validate_cmd::run(*a),
        Cmd::ListPublicKeys(a) => report(validate_cmd::list_public_keys(a)),
        Cmd::Serve(a) => report(serve::serve(a)),
        Cmd::Init(a) => report(serve::init(a)),
        Cmd::Trail(TrailCmd::Flush { name, aws }) => report(trail_flush(&name, &aws)),
        Cmd::Status {
            data_dir,
            aws,
            json,
        } => report(status(data_dir, &aws, json)),
        Cmd::Bench(BenchCmd::Ingest(a)) => report(bench::ingest(a)),
        Cmd::Bench(BenchCmd::Validate(a)) => report(bench::validate(a)),
        Cmd::Bench(BenchCmd::Api(a)) => report(bench_api::api(a)),
        Cmd::Bench(BenchCmd::Lookup(a)) => report(bench_api::lookup(a)),
        Cmd::Bench(BenchCmd::S3(a)) => report(bench_s3::s3(a)),
        Cmd::Bench(BenchCmd::Kms(a)) => report(bench_kms::kms(a)),
        Cmd::Bench(BenchCmd::Logs(a)) => report(bench_logs::logs(a)),
        Cmd::Bench(BenchCmd::Dynamodb(a)) => report(bench_ddb::dynamodb(a)),
        Cmd::Bench(BenchCmd::Soak(a)) => report(bench_soak::soak(a)),
        Cmd::Bench(BenchCmd::Relay { listen, to }) => report(bench_ddb::relay(&listen, &to)),
        Cmd::CrashTest(a) => match if a.serve {
            crash_serve::harness(a)
        } else {
            crash::harness(a)
        } {
            Ok(c) => c,
            Err(e) => {
                eprintln!("crash test error: {e:#}");
                2
            }
        },
        Cmd::CrashWorker(a) => report(crash::worker(a)),
        Cmd::JournalProbe {
            dir,
            count,
            label,
            read,
        } => report(journal_probe(dir, count, &label, read)),
    };
    std::process::exit(code);
}

fn journal_probe(dir: PathBuf, count: u32, label: &str, read: bool) -> anyhow::Result<()> {
    let j = cairn_journal::Journal::open(&dir, cairn_journal::JournalOptions::default())?;
    if read {
        let mut r = j.reader(0)?;
        while let Some((seq, p)) = r.next_record()? {
            println!("{seq} {}", String::from_utf8_lossy(&p));
        }
        return Ok(());
    }
    for i in 0..count {
        match j.append(format!("{label}-{i}").as_bytes()) {
            Ok(seq) => println!("ok {seq}"),
            Err(e) => println!("err {e}"),
        }
    }
    Ok(())
}

fn report(r: anyhow::Result<()>) -> i32 {
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}

#[cfg(test)]
mod allocator_tests {
    #[test]
    fn freed_memory_is_purged_sooner() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        assert!(super::purge_freed_memory_sooner());
        // SAFETY: reads the allocator's option table.
        let now = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        assert_eq!(now, super::PURGE_DELAY_MS);
    }
}
