//! Crash testing: a worker process ingests and delivers with acknowledgements written to a
//! ledger; the harness kills it with SIGKILL at random points, restarts it, and at the end
//! checks that no acknowledged event is lost, none is delivered twice, and the digest chain
//! validates.

use crate::install::Installation;
use anyhow::{Context, Result};
use cairn_record::{builder, Clock, SystemClock};
use cairn_store::ObjectStore;
use cairn_trail::{StateReader, TrailCommand, TrailConfig};
use chrono::Duration;
use clap::Args;
use rand::{Rng, SeedableRng};
use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

const ACCOUNT: &str = "123456789012";
const BUCKET: &str = "crash-logs";
const TRAIL: &str = "crash";

#[derive(Args, Debug)]
pub struct CrashTestArgs {
    /// Where to run (default: a new temporary directory, removed on success).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// SIGKILLs to deliver.
    #[arg(long, default_value_t = 200)]
    pub kills: u32,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Shortest and longest life of a worker before it is killed, in milliseconds.
    #[arg(long, default_value_t = 40)]
    pub min_ms: u64,
    #[arg(long, default_value_t = 400)]
    pub max_ms: u64,
    /// Kill `cairn serve` itself while senders put audit events through the API with
    /// retries (see `crash_serve`); give lives of a few hundred ms (e.g. --min-ms 150
    /// --max-ms 1200) so each server answers some requests.
    #[arg(long)]
    pub serve: bool,
    /// With --serve: an upstream S3 (e.g. a moto_server) for a proxied bucket the mixed load
    /// also writes (any credentials are sent to it).
    #[arg(long)]
    pub s3_upstream: Option<String>,
}

#[derive(Args, Debug)]
pub struct CrashWorkerArgs {
    #[arg(long)]
    pub data_dir: PathBuf,
    #[arg(long)]
    pub ledger: PathBuf,
    #[arg(long)]
    pub run: u32,
    /// Deliver everything, stop logging (final digests) and exit.
    #[arg(long)]
    pub drain: bool,
}

fn open(dir: &Path) -> Result<Installation> {
    Installation::open(dir, Some(ACCOUNT), Arc::new(SystemClock), |o| {
        o.delivery_interval = Duration::milliseconds(40);
        o.digest_interval = Duration::seconds(1);
        o.regions = vec!["us-east-1".into()];
        // Small epochs and pumps: a worker lives 30–300 ms, and must make progress in that time.
        o.max_epoch_records = 2_000;
        o.max_records_per_pump = 2_000;
    })
}

pub fn worker(a: CrashWorkerArgs) -> Result<()> {
    let t = Instant::now();
    let inst = open(&a.data_dir)?;
    tracing::info!(
        run = a.run,
        open_ms = t.elapsed().as_millis() as u64,
        recovered = inst.engine.recovered_deliveries(),
        "worker opened"
    );
    let engine = inst.engine.clone();
    if engine.recovered_deliveries() > 0 {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(a.data_dir.join("recoveries.txt"))?;
        f.write_all(format!("{} {}\n", a.run, engine.recovered_deliveries()).as_bytes())?;
    }
    inst.store.create_bucket(BUCKET)?;
    if engine.trail(TRAIL).is_none_or(|t| !t.logging) {
        let mut cfg = TrailConfig::new(TRAIL, ACCOUNT, "us-east-1", BUCKET);
        cfg.log_file_validation = true;
        engine.command(TrailCommand::Put {
            config: cfg,
            at: SystemClock.now(),
        })?;
        engine.command(TrailCommand::StartLogging {
            name: TRAIL.into(),
            at: SystemClock.now(),
        })?;
    }
    if a.drain {
        while engine.position() < inst.journal.next_seq() {
            engine.pump()?;
        }
        std::thread::sleep(std::time::Duration::from_millis(400));
        engine.pump()?;
        engine.command(TrailCommand::StopLogging {
            name: TRAIL.into(),
            at: SystemClock.now(),
        })?;
        while engine.position() < inst.journal.next_seq() {
            engine.pump()?;
        }
        return Ok(());
    }
    let stop = AtomicBool::new(false);
    let ledger = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&a.ledger)?;
    let deadline = Instant::now() + std::time::Duration::from_secs(20);
    std::thread::scope(|s| -> Result<()> {
        let pump = s.spawn(|| -> Result<()> {
            while !stop.load(Ordering::Acquire) {
                if let Err(e) = engine.pump() {
                    // Delivery is broken: fail the worker now, loudly, so the harness sees it.
                    eprintln!("delivery failed: {e}");
                    std::process::exit(3);
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Ok(())
        });
        let producers: Vec<_> = (0..2)
            .map(|t| {
                let (engine, ledger) = (&engine, &ledger);
                s.spawn(move || -> Result<()> {
                    let mut n = 0u64;
                    while Instant::now() < deadline {
                        let id = format!("r{}-t{t}-{n}", a.run);
                        let mut r = builder::management(
                            "ec2.amazonaws.com",
                            "RunInstances",
                            "us-east-1",
                            SystemClock.now(),
                            builder::root_identity(ACCOUNT, None),
                            false,
                        );
                        r.event_id = id.clone();
                        engine.append_event(&r)?;
                        // Acknowledged: record it. One write() per line keeps lines whole.
                        (&*ledger).write_all(format!("{id}\n").as_bytes())?;
                        n += 1;
                    }
                    Ok(())
                })
            })
            .collect();
        for p in producers {
            p.join()
                .map_err(|_| anyhow::anyhow!("producer panicked"))??;
        }
        stop.store(true, Ordering::Release);
        pump.join().map_err(|_| anyhow::anyhow!("pump panicked"))?
    })
}

pub fn harness(a: CrashTestArgs) -> Result<i32> {
    let tmp = tempfile_dir()?;
    let dir = a.data_dir.clone().unwrap_or_else(|| tmp.clone());
    std::fs::create_dir_all(&dir)?;
    let ledger = dir.join("ledger.txt");
    let exe = std::env::current_exe()?;
    let mut rng = rand::rngs::SmallRng::seed_from_u64(a.seed);
    let bar = indicatif::ProgressBar::new(a.kills as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} kills {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let log = |run: u32| dir.join(format!("worker-{run}.log"));
    // A worker process of run `run` on the shared data directory and ledger.
    let worker = |run: u32, extra: &[&str]| {
        let mut c = Command::new(&exe);
        c.arg("crash-worker")
            .args(extra)
            .arg("--data-dir")
            .arg(&dir)
            .arg("--ledger")
            .arg(&ledger)
            .args(["--run", &run.to_string()])
            .stdout(Stdio::null());
        c
    };
    let mut failpoint_crashes = 0u32;
    // Run workers until `kills` of them have died by SIGKILL; failpoint crashes come on top.
    let mut sigkills = 0u32;
    let mut run = 0u32;
    while sigkills < a.kills {
        let errf = std::fs::File::create(log(run))?;
        // A third of the runs also arm named crash points inside delivery and digests.
        let failpoints = if run % 3 == 2 {
            "after-intent=0.2,after-log-put=0.2,after-digest-put=0.2"
        } else {
            ""
        };
        let mut child = worker(run, &[])
            .env("CAIRN_FAILPOINTS", failpoints)
            .stderr(errf)
            .spawn()?;
        std::thread::sleep(std::time::Duration::from_millis(
            rng.gen_range(a.min_ms..=a.max_ms.max(a.min_ms)),
        ));
        if let Some(status) = child.try_wait()? {
            let mut msg = String::new();
            std::fs::File::open(log(run))?.read_to_string(&mut msg)?;
            if !msg.contains("failpoint ") {
                anyhow::bail!(
                    "worker {run} exited by itself ({status}) before it was killed:\n{msg}"
                );
            }
            failpoint_crashes += 1;
        } else {
            child.kill()?; // SIGKILL
            child.wait()?;
            sigkills += 1;
            bar.inc(1);
        }
        let _ = std::fs::remove_file(log(run));
        run += 1;
    }
    bar.finish_and_clear();
    let errf = std::fs::File::create(log(run))?;
    let status = worker(run, &["--drain"]).stderr(errf).status()?;
    if !status.success() {
        let msg = std::fs::read_to_string(log(run)).unwrap_or_default();
        anyhow::bail!("draining worker failed ({status}):\n{msg}");
    }
    println!("crashes at failpoints  {failpoint_crashes} (on top of {sigkills} SIGKILLs)");
    let verdict = check(&dir, &ledger, a.kills)?;
    if verdict == 0 && a.data_dir.is_none() {
        let _ = std::fs::remove_dir_all(&tmp);
    } else {
        println!("data kept in {}", dir.display());
    }
    Ok(verdict)
}

fn tempfile_dir() -> Result<PathBuf> {
    let p = std::env::temp_dir().join(format!("cairn-crash-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&p)?;
    Ok(p)
}

/// Compares the ledger with what was delivered, then validates the chain.
fn check(dir: &Path, ledger: &Path, kills: u32) -> Result<i32> {
    let acked: HashSet<String> = std::fs::read_to_string(ledger)?
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    let store = crate::install::open_store(dir)?;
    let mut seen: HashMap<String, u32> = HashMap::new();
    let logs = cairn_store::list_all(&store, BUCKET, &format!("AWSLogs/{ACCOUNT}/CloudTrail/"))?;
    for o in &logs {
        let body = store.get(BUCKET, &o.key)?.body;
        let mut json = Vec::new();
        flate2::read::GzDecoder::new(&body[..]).read_to_end(&mut json)?;
        let v: serde_json::Value = serde_json::from_slice(&json).with_context(|| o.key.clone())?;
        for r in v["Records"].as_array().into_iter().flatten() {
            *seen
                .entry(r["eventID"].as_str().unwrap_or_default().to_string())
                .or_default() += 1;
        }
    }
    let lost: Vec<&String> = acked.iter().filter(|id| !seen.contains_key(*id)).collect();
    let dups: Vec<(&String, &u32)> = seen.iter().filter(|(_, n)| **n > 1).collect();
    let reader = StateReader::open(&dir.join("trail"))?;
    let digests = cairn_store::list_all(
        &store,
        BUCKET,
        &format!("AWSLogs/{ACCOUNT}/CloudTrail-Digest/"),
    )?;
    let first = digests.first().map(|d| d.key.clone()).unwrap_or_default();
    let start = cairn_record::time::parse_cli_time(
        first
            .get(first.len().saturating_sub(24)..first.len().saturating_sub(8))
            .unwrap_or(""),
    )
    .map(|t| t - Duration::hours(2))
    .unwrap_or_else(chrono::Utc::now);
    let keys = crate::validate_cmd::DataDirKeys(reader);
    let mut opts = cairn_verify::ValidateOptions::new(
        format!("arn:aws:cloudtrail:us-east-1:{ACCOUNT}:trail/{TRAIL}"),
        BUCKET,
        start,
        chrono::Utc::now(),
    );
    let aws = cairn_verify::validate(&store, &keys, &opts).map_err(|e| anyhow::anyhow!("{e}"))?;
    opts.strict = true;
    let strict =
        cairn_verify::validate(&store, &keys, &opts).map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("kills                 {kills}");
    println!("acknowledged events   {}", acked.len());
    println!(
        "delivered events      {} in {} log files, {} digests",
        seen.len(),
        logs.len(),
        digests.len()
    );
    let recoveries = std::fs::read_to_string(dir.join("recoveries.txt"))
        .unwrap_or_default()
        .lines()
        .count();
    println!("interrupted deliveries finished on restart  {recoveries}");
    println!("lost (acked, absent)  {}", lost.len());
    println!("duplicated            {}", dups.len());
    println!(
        "validate (AWS mode)   exit {}: {} digests, {} log files valid, {} invalid",
        aws.exit_code,
        aws.valid_digests,
        aws.valid_logs,
        aws.invalid_digests + aws.invalid_logs
    );
    println!("validate (strict)     exit {}", strict.exit_code);
    for id in lost.iter().take(10) {
        println!("  lost {id}");
    }
    for (id, n) in dups.iter().take(10) {
        println!("  {id} delivered {n} times");
    }
    if strict.exit_code != 0 {
        print!("{}", strict.stderr());
    }
    let ok = lost.is_empty()
        && dups.is_empty()
        && aws.exit_code == 0
        && strict.exit_code == 0
        && aws.valid_digests > 0
        && !acked.is_empty();
    println!("{}", if ok { "PASS" } else { "FAIL" });
    Ok(if ok { 0 } else { 1 })
}
