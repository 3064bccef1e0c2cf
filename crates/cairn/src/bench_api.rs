//! `cairn bench api`: authenticated requests per second through a real `cairn serve` (every
//! request SigV4-verified and journaled durably before its answer), against the same
//! server's unauthenticated static endpoint as the same-run baseline.
//!
//! `cairn bench lookup`: LookupEvents pages over an index of N management events.

use anyhow::{bail, Context, Result};
use cairn_api::cloudtrail::history::{History, Query, ATTRIBUTE_KEYS};
use cairn_journal::{Journal, JournalOptions};
use cairn_record::builder;
use chrono::{Duration, Utc};
use clap::Args;
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Args, Debug)]
pub struct ApiBenchArgs {
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Seconds per phase.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Data directory for the server (default: a temporary one).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Load-generator threads.
    #[arg(long, default_value_t = 1)]
    pub client_threads: usize,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct LookupBenchArgs {
    /// Management events in the index.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: usize,
    /// Pages to fetch (a mix of query kinds).
    #[arg(long, default_value_t = 2000)]
    pub pages: usize,
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

pub(crate) struct Phase {
    pub(crate) requests: usize,
    pub(crate) errors: usize,
    seconds: f64,
    latencies_us: Vec<u32>,
}

impl Phase {
    pub(crate) fn rps(&self) -> f64 {
        self.requests as f64 / self.seconds
    }
    pub(crate) fn pct(&self, p: f64) -> f64 {
        pct(&self.latencies_us, p) / 1000.0
    }
}

fn pct(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64
}

/// Reads one HTTP/1.1 response (Content-Length bodies) from `buf`/`s`; returns its status,
/// its body's length, and whether the server closes the connection after it (both
/// benchmarks' clients read with this).
pub(crate) async fn read_response(
    s: &mut tokio::net::TcpStream,
    buf: &mut Vec<u8>,
) -> Result<(u16, u64, bool)> {
    read_response_into(s, buf, None).await
}

/// What [`read_response_into`] keeps of an answer.
#[derive(Default)]
pub(crate) struct Captured {
    pub(crate) body: Vec<u8>,
    /// `x-amzn-RequestId` or `x-amz-request-id`.
    pub(crate) request_id: String,
}

/// [`read_response`], keeping the body and the request id in `keep` when given.
pub(crate) async fn read_response_into(
    s: &mut tokio::net::TcpStream,
    buf: &mut Vec<u8>,
    mut keep: Option<&mut Captured>,
) -> Result<(u16, u64, bool)> {
    // Reads go straight into `buf`'s spare room: zeroing a chunk per call was ~4% of the
    // load generator's time under `bench soak`.
    const READ: usize = 16384;
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end]).context("response head")?;
            let status: u16 = head
                .split_whitespace()
                .nth(1)
                .and_then(|x| x.parse().ok())
                .context("status")?;
            let mut len = 0usize;
            let mut close = head.starts_with("HTTP/1.0");
            if let Some(c) = keep.as_deref_mut() {
                c.request_id.clear();
            }
            for l in head.lines().skip(1) {
                if let Some((k, v)) = l.split_once(':') {
                    if k.eq_ignore_ascii_case("x-amzn-requestid")
                        || k.eq_ignore_ascii_case("x-amz-request-id")
                    {
                        if let Some(c) = keep.as_deref_mut() {
                            c.request_id = v.trim().to_string();
                        }
                    }
                    if k.eq_ignore_ascii_case("content-length") {
                        len = v.trim().parse().unwrap_or(0);
                    } else if k.eq_ignore_ascii_case("connection") {
                        close = v.trim().eq_ignore_ascii_case("close");
                    } else if k.eq_ignore_ascii_case("transfer-encoding") {
                        bail!("chunked responses are not expected here");
                    }
                }
            }
            let total = end + 4 + len;
            while buf.len() < total {
                buf.reserve(READ.max(total - buf.len()));
                if s.read_buf(buf).await? == 0 {
                    bail!("connection closed mid-response");
                }
            }
            if let Some(c) = keep.as_deref_mut() {
                c.body.clear();
                c.body.extend_from_slice(&buf[end + 4..total]);
            }
            buf.drain(..total);
            return Ok((status, len as u64, close));
        }
        buf.reserve(READ);
        if s.read_buf(buf).await? == 0 {
            bail!("connection closed");
        }
    }
}

/// Runs `connections` keep-alive loops sending `request()` until `seconds` pass.
pub(crate) async fn drive(
    addr: String,
    connections: usize,
    seconds: f64,
    request: Arc<dyn Fn() -> Vec<u8> + Send + Sync>,
) -> Result<Phase> {
    let deadline = Instant::now() + std::time::Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let addr = addr.clone();
        let request = request.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0usize;
            let mut s = tokio::net::TcpStream::connect(&addr).await?;
            s.set_nodelay(true)?;
            let mut buf = Vec::new();
            let mut req = request();
            let mut signed_at = Instant::now();
            while Instant::now() < deadline {
                if signed_at.elapsed() > std::time::Duration::from_secs(60) {
                    req = request();
                    signed_at = Instant::now();
                }
                let t = Instant::now();
                s.write_all(&req).await?;
                let (status, _, _) = read_response(&mut s, &mut buf).await?;
                lat.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
                if status != 200 {
                    errors += 1;
                }
            }
            anyhow::Ok((lat, errors))
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (lat, e) = t.await??;
        all.extend(lat);
        errors += e;
    }
    let secs = started.elapsed().as_secs_f64();
    all.sort_unstable();
    Ok(Phase {
        requests: all.len(),
        errors,
        seconds: secs,
        latencies_us: all,
    })
}

/// `cairn init` of a fresh data directory for a benchmark's server: the root key and secret.
pub(crate) fn init_data_dir(
    exe: &std::path::Path,
    dir: &std::path::Path,
) -> Result<(String, String)> {
    let init = std::process::Command::new(exe)
        .args([
            "init",
            "--json",
            "--account-id",
            "123456789012",
            "--data-dir",
        ])
        .arg(dir)
        .output()?;
    anyhow::ensure!(init.status.success(), "cairn init failed");
    let creds: serde_json::Value = serde_json::from_slice(&init.stdout)?;
    let key = creds["AccessKeyId"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let secret = creds["SecretAccessKey"]
        .as_str()
        .context("the data directory was already initialised; use a fresh one")?
        .to_string();
    Ok((key, secret))
}

/// A `cairn serve` for a benchmark: a fresh data directory (or `data_dir`), `config`, a free
/// loopback port; waits until it listens. Returns the process, its address and root
/// credentials.
pub(crate) fn bench_server(
    tmp: &std::path::Path,
    data_dir: Option<PathBuf>,
    config: &str,
) -> Result<(std::process::Child, String, String, String)> {
    let dir = data_dir.unwrap_or_else(|| tmp.join("data"));
    let exe = std::env::current_exe()?;
    let (key, secret) = init_data_dir(&exe, &dir)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr = format!("127.0.0.1:{port}");
    let cfg = tmp.join("cairn.toml");
    std::fs::write(&cfg, config)?;
    let mut server = std::process::Command::new(&exe)
        .args([
            "serve",
            "--listen",
            &addr,
            "--delivery-interval",
            "5s",
            "--config",
        ])
        .arg(&cfg)
        .arg("--data-dir")
        .arg(&dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let t0 = Instant::now();
    while std::net::TcpStream::connect(&addr).is_err() {
        if t0.elapsed().as_secs() > 30 || server.try_wait()?.is_some() {
            let _ = server.kill();
            anyhow::bail!("server did not start");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Ok((server, addr, key, secret))
}

/// The trail every API benchmark's server has.
pub(crate) const BENCH_CONFIG: &str = "[[bucket]]\nname = \"bench-logs\"\n[[trail]]\nname = \"bench-trail\"\nbucket = \"bench-logs\"\nmulti_region = true\nlog_file_validation = true\n";

pub fn api(a: ApiBenchArgs) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (mut server, addr, key, secret) =
        bench_server(tmp.path(), a.data_dir.clone(), BENCH_CONFIG)?;
    let pid = server.id().to_string();
    // CPU per answered request of each phase, the server's and this load generator's (the
    // same two cores serve both: the rate alone does not say which got cheaper).
    let cpu_per_request = |before: (f64, f64), p: &Phase| -> (f64, f64) {
        let n = p.requests.max(1) as f64;
        (
            (crate::bench_soak::cpu_seconds(&pid) - before.0) * 1e6 / n,
            (crate::bench_soak::cpu_seconds("self") - before.1) * 1e6 / n,
        )
    };
    let cpu_now = || {
        (
            crate::bench_soak::cpu_seconds(&pid),
            crate::bench_soak::cpu_seconds("self"),
        )
    };
    let mut cpu = ((0.0, 0.0), (0.0, 0.0));
    let result = (|| -> Result<(Phase, Phase)> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(a.client_threads)
            .enable_all()
            .build()?;
        let host = addr.clone();
        let baseline: Arc<dyn Fn() -> Vec<u8> + Send + Sync> = Arc::new(move || {
            format!("GET /_cairn/health HTTP/1.1\r\nhost: {host}\r\n\r\n").into_bytes()
        });
        let host = addr.clone();
        let authed: Arc<dyn Fn() -> Vec<u8> + Send + Sync> = Arc::new(move || {
            crate::client::signed_cloudtrail_request(
                &host,
                (&key, &secret, None),
                "us-east-1",
                "GetTrailStatus",
                br#"{"Name":"bench-trail"}"#,
                true,
            )
        });
        // Warm up both paths, then measure baseline and authenticated back to back.
        rt.block_on(drive(addr.clone(), a.connections, 1.0, authed.clone()))?;
        let at = cpu_now();
        let base = rt.block_on(drive(addr.clone(), a.connections, a.seconds, baseline))?;
        cpu.0 = cpu_per_request(at, &base);
        let at = cpu_now();
        let auth = rt.block_on(drive(addr.clone(), a.connections, a.seconds, authed))?;
        cpu.1 = cpu_per_request(at, &auth);
        Ok((base, auth))
    })();
    unsafe {
        libc::kill(server.id() as i32, libc::SIGTERM);
    }
    let _ = server.wait();
    let (base, auth) = result?;
    let out = json!({
        "connections": a.connections,
        "seconds_per_phase": a.seconds,
        "baseline_static": {"requests": base.requests, "errors": base.errors, "req_per_s": base.rps(), "p50_ms": base.pct(0.5), "p99_ms": base.pct(0.99),
            "server_cpu_us_per_request": cpu.0.0, "generator_cpu_us_per_request": cpu.0.1},
        "authenticated_journaled_GetTrailStatus": {"requests": auth.requests, "errors": auth.errors, "req_per_s": auth.rps(), "p50_ms": auth.pct(0.5), "p99_ms": auth.pct(0.99),
            "server_cpu_us_per_request": cpu.1.0, "generator_cpu_us_per_request": cpu.1.1},
        "ratio": auth.rps() / base.rps(),
    });
    if a.json {
        println!("{out}");
    } else {
        println!(
            "baseline (unauthenticated static): {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms ({} errors); CPU per request {:.1} µs server, {:.1} µs load generator",
            base.rps(),
            base.pct(0.5),
            base.pct(0.99),
            base.errors,
            cpu.0 .0,
            cpu.0 .1
        );
        println!(
            "authenticated + journaled GetTrailStatus: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms ({} errors); CPU per request {:.1} µs server, {:.1} µs load generator",
            auth.rps(),
            auth.pct(0.5),
            auth.pct(0.99),
            auth.errors,
            cpu.1 .0,
            cpu.1 .1
        );
        println!("ratio: {:.2}", auth.rps() / base.rps());
    }
    anyhow::ensure!(auth.errors == 0 && base.errors == 0, "some requests failed");
    Ok(())
}

const NAMES: &[&str] = &[
    "CreateTrail",
    "GetTrailStatus",
    "DescribeTrails",
    "StartLogging",
    "StopLogging",
    "PutEventSelectors",
    "CreateUser",
    "GetUser",
    "ListUsers",
    "CreateAccessKey",
    "AssumeRole",
    "GetCallerIdentity",
    "CreateBucket",
    "PutBucketPolicy",
    "GetBucketAcl",
    "ConsoleLogin",
    "RunInstances",
    "TerminateInstances",
    "DescribeInstances",
    "CreateKey",
];

pub fn lookup(a: LookupBenchArgs) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = a
        .data_dir
        .clone()
        .unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir)?;
    let journal = Arc::new(Journal::open(
        dir.join("journal"),
        JournalOptions::default(),
    )?);
    let history = History::open(&dir.join("history.redb"), journal.clone())
        .map_err(|e| anyhow::anyhow!(e))?;
    let now = Utc::now();
    let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
    let bar = indicatif::ProgressBar::new(a.events as u64);
    bar.set_style(indicatif::ProgressStyle::with_template(
        "{msg} {bar:40} {pos}/{len} ({per_sec})",
    )?);
    bar.set_message("journaling");
    let t = Instant::now();
    let span = 30 * 86_400i64;
    let mut batch = Vec::with_capacity(1000);
    for i in 0..a.events {
        let name = NAMES[rng.gen_range(0..NAMES.len())];
        let user = format!("user{}", rng.gen_range(0..200));
        let at = now - Duration::seconds(span - (i as i64 * span / a.events as i64));
        let id = builder::iam_user_identity("123456789012", &user, "AIDAEXAMPLE", "AKIAEXAMPLE");
        let mut rec = builder::management(
            "cloudtrail.amazonaws.com",
            name,
            "us-east-1",
            at,
            id,
            name.starts_with("Get") || name.starts_with("Describe") || name.starts_with("List"),
        );
        rec.source_ip_address = Some("10.0.0.1".into());
        rec.user_agent = Some("aws-cli/1.46.3".into());
        rec.request_parameters = Some(json!({"name": "trail"}));
        batch.push(cairn_trail::entry::encode_event(&rec));
        if batch.len() == 1000 || i + 1 == a.events {
            let refs: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
            journal.append_batch(&refs)?;
            bar.inc(batch.len() as u64);
            batch.clear();
        }
    }
    let journal_secs = t.elapsed().as_secs_f64();
    bar.set_position(0);
    bar.set_message("indexing ");
    let t = Instant::now();
    loop {
        let n = history.step(20_000).map_err(|e| anyhow::anyhow!(e))?;
        if n == 0 {
            break;
        }
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
    let index_secs = t.elapsed().as_secs_f64();
    // Query mix: newest page, EventName page, Username with NextToken continuation (5 pages
    // deep), EventName within a one-day range, ReadOnly=true.
    let mut lat: Vec<u32> = Vec::with_capacity(a.pages);
    let mut results = 0usize;
    let mut i = 0;
    while lat.len() < a.pages {
        let kind = i % 5;
        i += 1;
        let (attributes, start, end) = match kind {
            0 => (vec![], now - Duration::days(90), now),
            1 => (
                vec![(1u8, NAMES[rng.gen_range(0..NAMES.len())].to_string())],
                now - Duration::days(90),
                now,
            ),
            2 => (
                vec![(3u8, format!("user{}", rng.gen_range(0..200)))],
                now - Duration::days(90),
                now,
            ),
            // ReadOnly is answered by filtering the time index.
            4 => (
                vec![(2u8, "true".to_string())],
                now - Duration::days(90),
                now,
            ),
            _ => {
                let d = rng.gen_range(1..29);
                (
                    vec![(1u8, NAMES[rng.gen_range(0..NAMES.len())].to_string())],
                    now - Duration::days(d + 1),
                    now - Duration::days(d),
                )
            }
        };
        let mut q = Query {
            region: "us-east-1".into(),
            attributes,
            start,
            end,
            max_results: 50,
            data_events: false,
            after: None,
        };
        for _ in 0..if kind == 2 { 5 } else { 1 } {
            let t = Instant::now();
            let (events, next) = history.lookup(&q).map_err(|e| anyhow::anyhow!(e.message))?;
            lat.push(t.elapsed().as_micros() as u32);
            results += events.len();
            match next {
                Some(n) => q.after = Some(n),
                None => break,
            }
        }
    }
    lat.sort_unstable();
    let out = json!({
        "events": a.events,
        "journal_events_per_s": a.events as f64 / journal_secs,
        "index_events_per_s": a.events as f64 / index_secs,
        "pages": lat.len(),
        "events_returned": results,
        "page_p50_ms": pct(&lat, 0.5) / 1000.0,
        "page_p99_ms": pct(&lat, 0.99) / 1000.0,
        "page_max_ms": pct(&lat, 1.0) / 1000.0,
        "attribute_keys": ATTRIBUTE_KEYS.len(),
    });
    if a.json {
        println!("{out}");
    } else {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    history.stop();
    journal.close();
    Ok(())
}
