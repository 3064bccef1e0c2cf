//! The `cairn` binary: wires the crates together; holds no logic another crate should own.

mod bench;
mod crash;
mod install;
mod synth;
mod validate_cmd;

use clap::{Parser, Subcommand};
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
    /// Trails of a data directory and their status.
    Status {
        #[arg(long, default_value = "./cairn-data")]
        data_dir: PathBuf,
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
enum BenchCmd {
    /// Synthetic events through journal and delivery into the embedded store.
    Ingest(bench::IngestArgs),
    /// validate-logs over a data directory against a same-run gunzip + SHA-256 bound.
    Validate(bench::ValidateBenchArgs),
}

fn status(dir: PathBuf, json: bool) -> anyhow::Result<()> {
    let r = cairn_trail::StateReader::open(&dir.join("trail"))?;
    let trails = r.trails()?;
    if json {
        let v: Vec<_> = trails.iter().map(|t| serde_json::json!({
            "Name": t.config.name, "TrailARN": t.config.arn(), "S3BucketName": t.config.s3_bucket,
            "IsMultiRegionTrail": t.config.multi_region, "LogFileValidationEnabled": t.config.log_file_validation,
            "IsLogging": t.logging,
            "StartLoggingTime": t.start_logging_time.map(cairn_record::time::iso),
            "StopLoggingTime": t.stop_logging_time.map(cairn_record::time::iso),
            "LatestDeliveryTime": t.latest_delivery_time.map(cairn_record::time::iso),
            "LatestDeliveryError": t.latest_delivery_error,
            "LatestDigestDeliveryTime": t.latest_digest_delivery_time.map(cairn_record::time::iso),
            "LatestDigestDeliveryError": t.latest_digest_delivery_error,
        })).collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "{:<24} {:<8} {:<24} {:<22} {:<22} ERROR",
        "NAME", "LOGGING", "BUCKET", "LATEST DELIVERY", "LATEST DIGEST"
    );
    for t in trails {
        let f = |x: Option<chrono::DateTime<chrono::Utc>>| {
            x.map(cairn_record::time::iso).unwrap_or_else(|| "-".into())
        };
        println!(
            "{:<24} {:<8} {:<24} {:<22} {:<22} {}",
            t.config.name,
            t.logging,
            t.config.s3_bucket,
            f(t.latest_delivery_time),
            f(t.latest_digest_delivery_time),
            t.latest_delivery_error
                .or(t.latest_digest_delivery_error)
                .unwrap_or_default()
        );
    }
    Ok(())
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CAIRN_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let code = match cli.cmd {
        Cmd::ValidateLogs(a) => validate_cmd::run(*a),
        Cmd::ListPublicKeys(a) => report(validate_cmd::list_public_keys(a)),
        Cmd::Status { data_dir, json } => report(status(data_dir, json)),
        Cmd::Bench(BenchCmd::Ingest(a)) => report(bench::ingest(a)),
        Cmd::Bench(BenchCmd::Validate(a)) => report(bench::validate(a)),
        Cmd::CrashTest(a) => match crash::harness(a) {
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
