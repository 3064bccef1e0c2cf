//! `cairn bench ingest`: synthetic records through the journal and delivery into the
//! embedded store, over simulated hours (an injectable clock: no sleeping), with a same-run
//! bound (gzip + SHA-256 of the same bytes on one core) to compare against.

use crate::install::Installation;
use crate::synth::{Synth, REGIONS};
use anyhow::Result;
use cairn_record::selector::{DataResource, EventSelector, ReadWriteType, TrailSelectors};
use cairn_record::time::iso;
use cairn_record::ManualClock;
use cairn_store::ObjectStore;
use cairn_trail::{TrailCommand, TrailConfig};
use chrono::{DateTime, Duration, SubsecRound, Utc};
use clap::Args;
use rayon::prelude::*;
use serde_json::json;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

#[derive(Args, Debug)]
pub struct IngestArgs {
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Number of events to write.
    #[arg(long, default_value_t = 200_000)]
    pub events: usize,
    /// Target rate in events per second (default: as fast as possible).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Simulated hours the events are spread over (with an idle stretch and a stop/start gap
    /// when long enough).
    #[arg(long, default_value_t = 1.0)]
    pub hours: f64,
    /// Concurrent appenders (each append waits for its own durability): async tasks on one
    /// runtime thread, as the server's requests append (or OS threads with `--blocking`).
    /// The default models a server at 100k requests/s: with a few milliseconds per request,
    /// some hundreds are in flight (Little's law); one group commit takes at most this many.
    #[arg(long, default_value_t = 512)]
    pub producers: usize,
    /// Each appender is an OS thread blocked in `append_batch` (the pre-async baseline).
    #[arg(long)]
    pub blocking: bool,
    /// Events per append call (1: every event is its own durable append; more models a
    /// server coalescing concurrent requests). Latency is reported per call.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// gzip level of the delivered log files (and of the same-run bound).
    #[arg(long, default_value_t = cairn_trail::DEFAULT_GZIP_LEVEL)]
    pub gzip_level: u32,
    /// Regions the events happen in (1–4; global-service events always land in us-east-1).
    #[arg(long, default_value_t = 4)]
    pub regions: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print everything as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Deliver into this S3-compatible endpoint instead of the embedded store (credentials from
    /// AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY; the bucket must exist).
    #[arg(long)]
    pub s3_endpoint: Option<String>,
    /// Bucket the trail delivers to.
    #[arg(long, default_value = "cairn-bench-logs")]
    pub bucket: String,
    /// Only append to the journal (no delivery): a baseline for the journal's share.
    #[arg(long)]
    pub journal_only: bool,
    /// Encrypt the trail's log files with a KMS key (SSE-KMS, the seed's key policy).
    #[arg(long)]
    pub kms: bool,
}

/// A KiB figure (`VmRSS:`, `VmHWM:`) of `/proc/<proc>/status` (`self` or a pid).
pub(crate) fn status_kib(proc: &str, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{proc}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

struct Schedule {
    t0: DateTime<Utc>,
    span: f64,
    idle: Option<(f64, f64)>,
    stop: Option<(f64, f64)>,
    n: usize,
}

impl Schedule {
    fn time_of(&self, i: usize) -> DateTime<Utc> {
        let idle_len = self.idle.map(|(a, b)| b - a).unwrap_or(0.0);
        let mut x = (i as f64 / self.n.max(1) as f64) * (self.span - idle_len);
        if let Some((a, _)) = self.idle {
            if x >= a {
                x += idle_len;
            }
        }
        self.t0 + Duration::milliseconds((x * 1000.0) as i64)
    }
    fn index_at(&self, secs: f64) -> usize {
        (0..self.n)
            .find(|&i| self.time_of(i) >= self.t0 + Duration::milliseconds((secs * 1000.0) as i64))
            .unwrap_or(self.n)
    }
}

pub fn ingest(a: IngestArgs) -> Result<()> {
    anyhow::ensure!(
        a.events > 0 && a.producers > 0 && a.batch > 0,
        "--events, --producers and --batch must be positive"
    );
    let batch = a.batch;
    let hours = a.hours.max(0.05);
    let span = hours * 3600.0;
    let now = Utc::now().trunc_subsecs(0);
    let t0 = now - Duration::seconds((span + 7200.0) as i64);
    let clock = ManualClock::new(t0);
    let remote: Option<Arc<dyn ObjectStore>> = match &a.s3_endpoint {
        Some(ep) => Some(Arc::new(cairn_store::RemoteStore::new(
            cairn_store::RemoteConfig {
                endpoint: ep.clone(),
                region: "us-east-1".into(),
                access_key_id: std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_default(),
                secret_access_key: std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or_default(),
                virtual_hosted: false,
                session_token: None,
                ca_bundle: None,
            },
        )?)),
        None => None,
    };
    let inst = Installation::open_with(&a.data_dir, None, Arc::new(clock.clone()), remote, |o| {
        o.gzip_level = a.gzip_level;
        o.regions = REGIONS.iter().map(|s| s.to_string()).collect();
    })?;
    let account = inst.config.account_id.clone();
    let engine = inst.engine.clone();
    let bucket = a.bucket.as_str();
    inst.trail_store.create_bucket(bucket)?;
    let existing: Vec<String> = engine.trails().into_iter().map(|t| t.config.name).collect();
    let name = (1..)
        .map(|k| {
            if k == 1 {
                "bench".to_string()
            } else {
                format!("bench-{k}")
            }
        })
        .find(|n| !existing.contains(n))
        .unwrap_or_default();
    let mut cfg = TrailConfig::new(&name, &account, "us-east-1", bucket);
    cfg.multi_region = true;
    cfg.log_file_validation = true;
    cfg.selectors = TrailSelectors::Basic(vec![EventSelector {
        read_write_type: ReadWriteType::All,
        include_management_events: true,
        data_resources: vec![
            DataResource {
                resource_type: "AWS::S3::Object".into(),
                values: vec!["arn:aws:s3".into()],
            },
            DataResource {
                resource_type: "AWS::DynamoDB::Table".into(),
                values: vec!["arn:aws:dynamodb".into()],
            },
        ],
        exclude_management_event_sources: vec![],
    }]);
    let arn = cfg.arn();
    if a.kms {
        let policy = serde_json::json!({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": format!("arn:aws:iam::{account}:root")}, "Action": "kms:*", "Resource": "*"},
            {"Effect": "Allow", "Principal": {"Service": "cloudtrail.amazonaws.com"},
             "Action": ["kms:GenerateDataKey", "kms:Decrypt"], "Condition": {"StringEquals": {"AWS:SourceArn": arn}}}]});
        let key = inst.kms.new_key(
            "us-east-1",
            cairn_kms::NewKey {
                description: "bench".into(),
                policy: policy.to_string(),
                tags: vec![],
            },
            t0,
        )?;
        inst.kms.put_key(&key)?;
        cfg.kms_key_id = Some(key.arn.clone());
    }
    engine.command(TrailCommand::Put {
        config: cfg,
        at: t0,
    })?;
    engine.command(TrailCommand::StartLogging {
        name: name.clone(),
        at: t0,
    })?;
    engine.pump()?;

    let sched = Schedule {
        t0,
        span,
        idle: (hours >= 6.0).then_some((0.3 * span, 0.3 * span + 7200.0)),
        stop: (hours >= 8.0).then_some((0.6 * span, 0.6 * span + 5400.0)),
        n: a.events,
    };
    let (stop_i, start_i) = match sched.stop {
        Some((s, e)) => (sched.index_at(s), sched.index_at(e)),
        None => (usize::MAX, usize::MAX),
    };

    // Generate outside the timed section: the benchmark measures ingest, not JSON encoding.
    if !a.json {
        eprintln!("generating {} events…", a.events);
    }
    let chunk = 4096;
    let entries: Vec<(i64, Vec<u8>, usize)> = (0..a.events.div_ceil(chunk))
        .into_par_iter()
        .flat_map_iter(|c| {
            let mut s = Synth::new(
                &account,
                a.seed.wrapping_mul(1_000_003).wrapping_add(c as u64),
                a.regions,
            );
            let sched = &sched;
            (c * chunk..((c + 1) * chunk).min(a.events)).map(move |i| {
                let t = sched.time_of(i);
                let r = s.event(t);
                let json = r.to_json();
                (
                    t.timestamp_millis(),
                    cairn_trail::entry::encode_event_json(&r, &json),
                    json.len(),
                )
            })
        })
        .collect();
    let raw_bytes: usize = entries.iter().map(|e| e.2).sum();
    let rss_generated = status_kib("self", "VmRSS:");

    let next = AtomicUsize::new(0);
    let sim_now = AtomicI64::new(t0.timestamp_millis());
    // Event time of each journal record, so the delivery clock can follow the stream.
    let base_seq = inst.journal.next_seq();
    let times: Vec<AtomicI64> = (0..a.events + 8).map(|_| AtomicI64::new(0)).collect();
    let journal = inst.journal.clone();
    let done = AtomicBool::new(false);
    let latencies = Mutex::new(Vec::<u32>::with_capacity(a.events));
    let error: Mutex<Option<String>> = Mutex::new(None);
    let bar = if a.json {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(a.events as u64)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} events {per_sec}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let mark = |seq: u64, at: i64| {
        if let Some(t) = seq
            .checked_sub(base_seq)
            .and_then(|i| times.get(i as usize))
        {
            t.store(at, Ordering::Release);
        }
    };
    // What one appender does for events [i, end): commands due in the range, then the
    // append; returns the records' positions.
    let before = |i: usize, end: usize| {
        if let Some(rate) = a.rate {
            let due = started + std::time::Duration::from_secs_f64(i as f64 / rate);
            if let Some(d) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(d);
            }
        }
        for (k, is_stop) in [(stop_i, true), (start_i, false)] {
            if (i..end).contains(&k) {
                let at = sched.time_of(k);
                let cmd = if is_stop {
                    TrailCommand::StopLogging {
                        name: name.clone(),
                        at,
                    }
                } else {
                    TrailCommand::StartLogging {
                        name: name.clone(),
                        at,
                    }
                };
                if let Ok(seq) = engine.command(cmd) {
                    mark(seq, at.timestamp_millis());
                }
            }
        }
    };
    let after = |i: usize, end: usize, r: cairn_journal::Result<std::ops::Range<u64>>| match r {
        Ok(seqs) => {
            for (seq, e) in seqs.zip(&entries[i..end]) {
                mark(seq, e.0);
            }
            sim_now.fetch_max(entries[end - 1].0, Ordering::AcqRel);
            bar.inc((end - i) as u64);
            true
        }
        Err(e) => {
            *error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
            false
        }
    };
    let claim = || {
        let i = next.fetch_add(batch, Ordering::AcqRel);
        (i < a.events).then(|| (i, (i + batch).min(a.events)))
    };
    let payloads_of = |i: usize, end: usize| -> Vec<&[u8]> {
        entries[i..end].iter().map(|e| e.1.as_slice()).collect()
    };
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("bench-pump".into())
            .spawn_scoped(s, || {
                if a.journal_only {
                    return;
                }
                // Deliver in steps of at most STEP records, the clock set to the newest event
                // time among them: files close every delivery interval of *simulated* time.
                const STEP: u64 = 256;
                let mut clock_ms = t0.timestamp_millis();
                loop {
                    let pos = engine.position();
                    let durable = journal.next_seq();
                    if pos >= durable {
                        if done.load(Ordering::Acquire) {
                            return;
                        }
                        std::thread::sleep(std::time::Duration::from_micros(200));
                        continue;
                    }
                    let n = (durable - pos).min(STEP);
                    for seq in pos..pos + n {
                        if let Some(t) = seq
                            .checked_sub(base_seq)
                            .and_then(|i| times.get(i as usize))
                        {
                            clock_ms = clock_ms.max(t.load(Ordering::Acquire));
                        }
                    }
                    clock.set(DateTime::from_timestamp_millis(clock_ms).unwrap_or(t0));
                    if let Err(e) = engine.pump_limited(n as usize) {
                        *error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
                        return;
                    }
                }
            })
            .expect("spawn the delivery thread");
        if a.blocking {
            let producers: Vec<_> = (0..a.producers)
                .map(|_| {
                    s.spawn(|| {
                        let mut lat = Vec::with_capacity(a.events / a.producers + 1);
                        while let Some((i, end)) = claim() {
                            before(i, end);
                            let t1 = Instant::now();
                            let r = journal.append_batch(&payloads_of(i, end));
                            if !after(i, end, r) {
                                break;
                            }
                            lat.push(t1.elapsed().as_micros().min(u32::MAX as u128) as u32);
                        }
                        latencies
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .extend(lat);
                    })
                })
                .collect();
            for p in producers {
                let _ = p.join();
            }
        } else {
            // Tasks on one runtime thread, each awaiting its append's durability: the journal
            // wakes them, no thread parks per append.
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            rt.block_on(async {
                let tasks = (0..a.producers).map(|_| async {
                    let mut lat = Vec::with_capacity(a.events / a.producers + 1);
                    while let Some((i, end)) = claim() {
                        before(i, end);
                        let t1 = Instant::now();
                        let r = match journal.try_append_async(&payloads_of(i, end)) {
                            Ok(Some(fut)) => fut.await,
                            // The queue is full: wait for room as the server does.
                            Ok(None) => journal.append_batch(&payloads_of(i, end)),
                            Err(e) => Err(e),
                        };
                        if !after(i, end, r) {
                            break;
                        }
                        lat.push(t1.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    }
                    latencies
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .extend(lat);
                });
                futures::future::join_all(tasks).await;
            });
        }
        let appended = started.elapsed();
        done.store(true, Ordering::Release);
        appended
    });
    if let Some(e) = error.lock().unwrap_or_else(|e| e.into_inner()).take() {
        anyhow::bail!("ingest failed: {e}");
    }
    // Drain: deliver what is left and let the last digest windows close.
    while !a.journal_only && engine.position() < journal.next_seq() {
        engine.pump()?;
    }
    let last = DateTime::from_timestamp_millis(sim_now.load(Ordering::Acquire)).unwrap_or(t0);
    if !a.journal_only {
        clock.set(last + Duration::minutes(6));
        while engine.pump()?.more {}
        clock.set(t0 + Duration::seconds(span as i64) + Duration::minutes(118));
        while engine.pump()?.more {}
    }
    let elapsed = started.elapsed().as_secs_f64();
    // Before the bound below, which copies every record into one buffer.
    let peak_rss = status_kib("self", "VmHWM:");
    bar.finish_and_clear();

    let mut lat = latencies.into_inner().unwrap_or_default();
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    let objects = cairn_store::list_all(
        inst.trail_store.as_ref(),
        bucket,
        &format!("AWSLogs/{account}/"),
    )?;
    let is_digest = |k: &str| k.contains("/CloudTrail-Digest/");
    let log_bytes: u64 = objects
        .iter()
        .filter(|o| !is_digest(&o.key))
        .map(|o| o.size)
        .sum();
    let digest_bytes: u64 = objects
        .iter()
        .filter(|o| is_digest(&o.key))
        .map(|o| o.size)
        .sum();
    let log_files = objects.iter().filter(|o| !is_digest(&o.key)).count();
    let digests_home = objects
        .iter()
        .filter(|o| {
            o.key.contains("/CloudTrail-Digest/us-east-1/") && o.key.contains(&format!("_{name}_"))
        })
        .count();
    let digests = objects.iter().filter(|o| is_digest(&o.key)).count();
    let stopped = start_i.saturating_sub(stop_i);

    // Same-run bound: compress and hash the same record bytes on one core.
    let mut joined = Vec::with_capacity(raw_bytes + a.events);
    for (_, p, n) in &entries {
        joined.extend_from_slice(&p[p.len() - n..]);
        joined.push(b',');
    }
    let tb = Instant::now();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(a.gzip_level));
    for c in joined.chunks(1 << 20) {
        gz.write_all(c)?;
    }
    let compressed = gz.finish()?.len();
    let _ = <sha2::Sha256 as sha2::Digest>::digest(&joined);
    let bound_secs = tb.elapsed().as_secs_f64();
    let bound_eps = a.events as f64 / bound_secs;
    let eps = a.events as f64 / elapsed;
    let start_time = iso(t0);
    let out = json!({
        "events": a.events,
        "events_while_stopped": stopped,
        "producers": a.producers,
        "appenders": if a.blocking { "threads" } else { "async tasks" },
        "batch": a.batch,
        "rate_target": a.rate,
        "simulated_hours": hours,
        "record_bytes": raw_bytes,
        "mean_record_bytes": raw_bytes / a.events,
        "elapsed_s": elapsed,
        "events_per_s": eps,
        "mb_per_s": raw_bytes as f64 / elapsed / 1e6,
        "append_p50_ms": pct(0.50),
        "append_p99_ms": pct(0.99),
        "append_max_ms": pct(1.0),
        "log_files": log_files,
        "digests": digests,
        "digests_home_region": digests_home,
        "stored_log_bytes": log_bytes,
        "stored_digest_bytes": digest_bytes,
        "stored_bytes_per_event": (log_bytes + digest_bytes) as f64 / a.events as f64,
        "peak_rss_mib": peak_rss as f64 / 1024.0,
        "rss_after_generation_mib": rss_generated as f64 / 1024.0,
        "bound_events_per_s": bound_eps,
        "bound_compressed_bytes": compressed,
        "ratio_to_bound": eps / bound_eps,
        "trail_arn": arn,
        "start_time": start_time,
    });
    if a.json {
        println!("{}", serde_json::to_string(&out)?);
    } else {
        println!(
            "events           {} ({} mean bytes; {} while logging was stopped)",
            a.events,
            raw_bytes / a.events,
            stopped
        );
        println!(
            "elapsed          {elapsed:.2} s (append, deliver, digest; {} producers as {}, {} events per append)",
            a.producers,
            if a.blocking { "threads" } else { "async tasks" },
            a.batch
        );
        println!(
            "throughput       {eps:.0} events/s, {:.1} MB/s of records",
            raw_bytes as f64 / elapsed / 1e6
        );
        println!(
            "append latency   p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (per append call)",
            pct(0.5),
            pct(0.99),
            pct(1.0)
        );
        println!("stored           {:.1} bytes/event ({log_files} log files, {digests} digests, {digests_home} in us-east-1)", (log_bytes + digest_bytes) as f64 / a.events as f64);
        println!(
            "peak RSS         {:.0} MiB ({:.0} MiB after generating the events)",
            peak_rss as f64 / 1024.0,
            rss_generated as f64 / 1024.0
        );
        println!("same-run bound   {bound_eps:.0} events/s (gzip-{} + SHA-256 of the same bytes, one core); ratio {:.2}", a.gzip_level, eps / bound_eps);
        eprintln!("validate with:   cairn validate-logs --data-dir {} --trail-arn {arn} --start-time {start_time}", a.data_dir.display());
        // The ARN and the start time come last, as the issue asks.
        println!("trail ARN        {arn}");
        println!("--start-time     {start_time}");
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct ValidateBenchArgs {
    #[arg(long)]
    pub data_dir: PathBuf,
    #[arg(long)]
    pub trail_arn: String,
    #[arg(long)]
    pub start_time: String,
    #[arg(long)]
    pub json: bool,
}

/// `cairn bench validate`: the validator over a data directory, against a same-run bound —
/// reading, gunzipping and hashing the same log files on every core.
pub fn validate(a: ValidateBenchArgs) -> Result<()> {
    let start = cairn_record::time::parse_cli_time(&a.start_time)
        .ok_or_else(|| anyhow::anyhow!("bad --start-time"))?;
    let reader = cairn_trail::StateReader::open(&a.data_dir.join("trail"))?;
    let trail = reader
        .trails()?
        .into_iter()
        .find(|t| t.config.arn() == a.trail_arn)
        .ok_or_else(|| anyhow::anyhow!("no trail {}", a.trail_arn))?;
    let store = crate::install::open_store(&a.data_dir)?;
    let mut opts = cairn_verify::ValidateOptions::new(
        &a.trail_arn,
        &trail.config.s3_bucket,
        start,
        Utc::now(),
    );
    opts.prefix = trail.config.s3_key_prefix.clone();
    let keys = crate::validate_cmd::DataDirKeys(reader);
    let t = Instant::now();
    let report =
        cairn_verify::validate(&store, &keys, &opts).map_err(|e| anyhow::anyhow!("{e}"))?;
    let secs = t.elapsed().as_secs_f64();
    anyhow::ensure!(
        report.exit_code == 0,
        "validation failed:\n{}{}",
        report.stdout(),
        report.stderr()
    );
    // Bound: the same log files, read from the store, gunzipped and hashed on all cores.
    let region_folder = cairn_trail::names::log_folder(
        trail.config.prefix(),
        &trail.config.account,
        &trail.config.home_region,
    );
    let files = cairn_store::list_all(&store, &opts.bucket, &region_folder)?;
    let tb = Instant::now();
    let raw: u64 = files
        .par_iter()
        .map(|o| {
            let body = store
                .get(&opts.bucket, &o.key)
                .map(|x| x.body)
                .unwrap_or_default();
            let mut d = flate2::read::GzDecoder::new(&body[..]);
            let mut h = <sha2::Sha256 as sha2::Digest>::new();
            let mut buf = vec![0u8; 64 << 10];
            let mut n = 0u64;
            while let Ok(k) = std::io::Read::read(&mut d, &mut buf) {
                if k == 0 {
                    break;
                }
                sha2::Digest::update(&mut h, &buf[..k]);
                n += k as u64;
            }
            let _ = sha2::Digest::finalize(h);
            n
        })
        .sum();
    let bound = tb.elapsed().as_secs_f64();
    let compressed: u64 = files.iter().map(|o| o.size).sum();
    let out = json!({
        "log_files": report.valid_logs,
        "digests": report.valid_digests,
        "log_bytes_uncompressed": raw,
        "log_bytes_compressed": compressed,
        "validate_s": secs,
        "validate_mb_per_s": raw as f64 / secs / 1e6,
        "bound_s": bound,
        "bound_mb_per_s": raw as f64 / bound / 1e6,
        "ratio_to_bound": bound / secs,
        "threads": rayon::current_num_threads(),
    });
    if a.json {
        println!("{}", serde_json::to_string(&out)?);
    } else {
        println!(
            "validated        {} digests, {} log files ({:.1} MB uncompressed, {:.1} MB stored)",
            report.valid_digests,
            report.valid_logs,
            raw as f64 / 1e6,
            compressed as f64 / 1e6
        );
        println!(
            "validate-logs    {secs:.2} s, {:.0} MB/s",
            raw as f64 / secs / 1e6
        );
        println!("same-run bound   {bound:.2} s, {:.0} MB/s (read + gunzip + SHA-256 of the same files, {} threads)", raw as f64 / bound / 1e6, rayon::current_num_threads());
        println!("ratio            {:.2}", bound / secs);
    }
    Ok(())
}
