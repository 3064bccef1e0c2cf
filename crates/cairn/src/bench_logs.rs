//! `cairn bench logs`: CloudWatch Logs through the API of a running server.
//!
//! 1. PutLogEvents in 1 MiB batches, events/s, against the journal's own append rate of the
//!    same bytes in the same run (the baseline: a log event costs at least a journal append).
//! 2. FilterLogEvents and a Logs Insights `stats` query over `--events` CloudTrail-like
//!    records (default 1M): events scanned per second (the server scans on one thread).
//! 3. Trail → log group latency: signed requests at `--rate` per second (default 1,000) while
//!    the trail delivers to a log group; per event, the log event's ingestion time minus the
//!    moment the client sent the request; p50/p99.

use crate::bench_api::{bench_server, drive, BENCH_CONFIG};
use anyhow::{Context, Result};
use clap::Args;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct LogsBenchArgs {
    /// Concurrent connections for PutLogEvents.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Seconds of PutLogEvents (and of the journal baseline).
    #[arg(long, default_value_t = 8.0)]
    pub seconds: f64,
    /// Events loaded for the scan phases.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: usize,
    /// Requests per second in the latency phase.
    #[arg(long, default_value_t = 1000)]
    pub rate: u32,
    /// Seconds of the latency phase.
    #[arg(long, default_value_t = 10.0)]
    pub latency_seconds: f64,
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

type Creds = (String, String);

fn logs_req(addr: &str, c: &Creds, op: &str, body: &Value, keep_alive: bool) -> Vec<u8> {
    crate::client::signed_json_request(
        addr,
        (&c.0, &c.1, None),
        "us-east-1",
        ("logs", &format!("Logs_20140328.{op}")),
        body.to_string().as_bytes(),
        keep_alive,
    )
}

/// One call on its own connection; its status and JSON answer.
fn call_raw(addr: &str, raw: &[u8]) -> Result<(u16, Value)> {
    let mut s = std::net::TcpStream::connect(addr)?;
    s.write_all(raw)?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let start = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no answer")?;
    let status: u16 = String::from_utf8_lossy(&out[9..12]).parse().unwrap_or(0);
    let body = &out[start + 4..];
    Ok((status, serde_json::from_slice(body).unwrap_or(Value::Null)))
}

fn call(addr: &str, raw: &[u8]) -> Result<Value> {
    let (st, v) = call_raw(addr, raw)?;
    anyhow::ensure!(st == 200, "setup call failed ({st}): {v}");
    Ok(v)
}

fn logs_call(addr: &str, c: &Creds, op: &str, body: Value) -> Result<Value> {
    call(addr, &logs_req(addr, c, op, &body, false))
}

fn iam_call(addr: &str, c: &Creds, body: &str) -> Result<()> {
    let raw =
        crate::client::signed_form_request(addr, (&c.0, &c.1, None), "us-east-1", "iam", body);
    let (st, _) = call_raw(addr, &raw)?;
    anyhow::ensure!(st == 200, "IAM setup call failed ({st}): {body}");
    Ok(())
}

fn ct_call(addr: &str, c: &Creds, op: &str, body: Value) -> Result<Value> {
    let raw = crate::client::signed_cloudtrail_request(
        addr,
        (&c.0, &c.1, None),
        "us-east-1",
        op,
        body.to_string().as_bytes(),
        false,
    );
    call(addr, &raw)
}

const NAMES: [&str; 10] = [
    "GetObject",
    "PutObject",
    "ListBuckets",
    "AssumeRole",
    "ConsoleLogin",
    "DescribeInstances",
    "GetTrailStatus",
    "Decrypt",
    "CreateUser",
    "DeleteObject",
];

/// A CloudTrail-like record (about 900 bytes); 1 in 100 is AccessDenied.
fn record(i: usize, ts_ms: i64) -> String {
    let name = NAMES[i % NAMES.len()];
    let mut r = json!({
        "eventVersion": "1.11",
        "userIdentity": {"type": "IAMUser", "principalId": format!("AIDA{:016}", i % 97),
            "arn": format!("arn:aws:iam::123456789012:user/user-{}", i % 97), "accountId": "123456789012",
            "accessKeyId": format!("AKIA{:016}", i % 97), "userName": format!("user-{}", i % 97)},
        "eventTime": "2026-11-30T12:00:00Z", "eventSource": "s3.amazonaws.com", "eventName": name,
        "awsRegion": "us-east-1", "sourceIPAddress": format!("10.0.{}.{}", i % 200, i % 250),
        "userAgent": "aws-cli/1.36.0 Python/3.11.2 Linux/6.1.0 botocore/1.35.0",
        "requestParameters": {"bucketName": "acme-artifacts", "key": format!("packages/pkg-{i}.tgz"), "Host": "acme-artifacts.s3.amazonaws.com"},
        "responseElements": null,
        "additionalEventData": {"bytesTransferredIn": 0, "bytesTransferredOut": 4096, "x-amz-id-2": "Zm9vYmFyYmF6cXV1eA=="},
        "requestID": format!("{:016X}", i), "eventID": format!("{:08x}-0000-4000-8000-{:012x}", i, ts_ms),
        "readOnly": true, "resources": [{"type": "AWS::S3::Object", "ARN": format!("arn:aws:s3:::acme-artifacts/packages/pkg-{i}.tgz")}],
        "eventType": "AwsApiCall", "managementEvent": false, "recipientAccountId": "123456789012",
        "eventCategory": "Data", "tlsDetails": {"tlsVersion": "TLSv1.3", "cipherSuite": "TLS_AES_128_GCM_SHA256"}
    });
    if i.is_multiple_of(100) {
        r["errorCode"] = json!("AccessDenied");
        r["errorMessage"] = json!("Access Denied");
    }
    r.to_string()
}

/// The journal's own append rate of `batch` payloads of `size` bytes, `threads` at once.
fn journal_baseline(seconds: f64, threads: usize, batch: usize, size: usize) -> Result<f64> {
    let dir = tempfile::tempdir()?;
    let j = Arc::new(cairn_journal::Journal::open(
        dir.path(),
        cairn_journal::JournalOptions::default(),
    )?);
    let payload = vec![b'x'; size];
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..threads {
        let (j, p) = (j.clone(), payload.clone());
        handles.push(std::thread::spawn(move || -> Result<usize> {
            let items: Vec<&[u8]> = (0..batch).map(|_| p.as_slice()).collect();
            let mut n = 0;
            while Instant::now() < deadline {
                j.append_batch(&items)?;
                n += batch;
            }
            Ok(n)
        }));
    }
    let mut total = 0;
    for h in handles {
        total += h
            .join()
            .map_err(|_| anyhow::anyhow!("a journal thread panicked"))??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

/// Sends `rate` GetTrailStatus per second for `seconds`, each naming `lat-<send ms>` (so its
/// record carries when it was sent). Returns how many were sent.
fn paced(addr: &str, c: &Creds, rate: u32, seconds: f64) -> Result<usize> {
    let threads = 4usize;
    let per = (rate as f64 / threads as f64).max(1.0);
    let mut hs = Vec::new();
    for t in 0..threads {
        let (addr, c) = (addr.to_string(), c.clone());
        hs.push(std::thread::spawn(move || -> Result<usize> {
            let mut s = std::net::TcpStream::connect(&addr)?;
            s.set_nodelay(true)?;
            let start = Instant::now();
            let mut n = 0usize;
            let mut buf = vec![0u8; 65536];
            while start.elapsed().as_secs_f64() < seconds {
                let due =
                    start + Duration::from_secs_f64((n as f64 + t as f64 / threads as f64) / per);
                if let Some(w) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(w);
                }
                let ms = chrono::Utc::now().timestamp_millis();
                let raw = crate::client::signed_cloudtrail_request(
                    &addr,
                    (&c.0, &c.1, None),
                    "us-east-1",
                    "GetTrailStatus",
                    format!(r#"{{"Name":"lat-{ms}"}}"#).as_bytes(),
                    true,
                );
                s.write_all(&raw)?;
                // Read one answer (headers + Content-Length body).
                let mut got = Vec::new();
                loop {
                    let k = s.read(&mut buf)?;
                    anyhow::ensure!(k > 0, "connection closed");
                    got.extend_from_slice(&buf[..k]);
                    if let Some(h) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&got[..h]).to_ascii_lowercase();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        if got.len() >= h + 4 + len {
                            break;
                        }
                    }
                }
                n += 1;
            }
            Ok(n)
        }));
    }
    let mut total = 0;
    for h in hs {
        total += h
            .join()
            .map_err(|_| anyhow::anyhow!("a sender panicked"))??;
    }
    Ok(total)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

pub fn logs(a: LogsBenchArgs) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (mut server, addr, key, secret) =
        bench_server(tmp.path(), a.data_dir.clone(), BENCH_CONFIG)?;
    let c: Creds = (key, secret);
    let result = run(&a, &addr, &c);
    unsafe {
        libc::kill(server.id() as i32, libc::SIGTERM);
    }
    let _ = server.wait();
    let out = result?;
    if a.json {
        println!("{out}");
    } else {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(())
}

fn run(a: &LogsBenchArgs, addr: &str, c: &Creds) -> Result<Value> {
    let bar = indicatif::ProgressBar::new(5);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    // 1. PutLogEvents in 1 MiB batches vs the journal's append rate.
    bar.set_message("PutLogEvents 1 MiB batches");
    logs_call(
        addr,
        c,
        "CreateLogGroup",
        json!({"logGroupName": "/bench/put"}),
    )?;
    logs_call(
        addr,
        c,
        "CreateLogStream",
        json!({"logGroupName": "/bench/put", "logStreamName": "s"}),
    )?;
    let (per_batch, msg_len) = (4000usize, 1_048_576 / 4000 - 26);
    let now = chrono::Utc::now().timestamp_millis();
    let events: Vec<Value> = (0..per_batch)
        .map(|i| json!({"timestamp": now + i as i64 / 100, "message": "m".repeat(msg_len - 8) + &format!("{i:08}")}))
        .collect();
    let body = json!({"logGroupName": "/bench/put", "logStreamName": "s", "logEvents": events});
    let (h, c2) = (addr.to_string(), c.clone());
    let put: Arc<dyn Fn() -> Vec<u8> + Send + Sync> =
        Arc::new(move || logs_req(&h, &c2, "PutLogEvents", &body, true));
    let phase = rt.block_on(drive(addr.to_string(), a.connections, a.seconds, put))?;
    anyhow::ensure!(phase.errors == 0, "{} PutLogEvents failed", phase.errors);
    let put_eps = phase.rps() * per_batch as f64;
    let journal_eps = journal_baseline(a.seconds, a.connections, per_batch, msg_len)?;
    bar.inc(1);

    // 2. Load the scan group.
    bar.set_message(format!("loading {} events", a.events));
    logs_call(
        addr,
        c,
        "CreateLogGroup",
        json!({"logGroupName": "/bench/scan"}),
    )?;
    logs_call(
        addr,
        c,
        "CreateLogStream",
        json!({"logGroupName": "/bench/scan", "logStreamName": "s"}),
    )?;
    let t0 = chrono::Utc::now().timestamp_millis() - 3_600_000;
    let mut i = 0usize;
    let load_started = Instant::now();
    while i < a.events {
        let mut batch = Vec::new();
        let mut bytes = 0;
        while i < a.events && batch.len() < 10_000 {
            let m = record(i, t0 + i as i64);
            if bytes + m.len() + 26 > 1_048_576 {
                break;
            }
            bytes += m.len() + 26;
            batch.push(json!({"timestamp": t0 + (i as i64) / 1000, "message": m}));
            i += 1;
        }
        logs_call(
            addr,
            c,
            "PutLogEvents",
            json!({"logGroupName": "/bench/scan", "logStreamName": "s", "logEvents": batch}),
        )?;
    }
    let load_secs = load_started.elapsed().as_secs_f64();
    bar.inc(1);

    // 3. FilterLogEvents over all of it (following tokens).
    let filter = |pattern: &str| -> Result<(usize, f64)> {
        let started = Instant::now();
        let (mut matched, mut token) = (0usize, None::<String>);
        loop {
            let mut body =
                json!({"logGroupName": "/bench/scan", "filterPattern": pattern, "limit": 10000});
            if let Some(t) = &token {
                body["nextToken"] = json!(t);
            }
            let r = logs_call(addr, c, "FilterLogEvents", body)?;
            matched += r["events"].as_array().map_or(0, |e| e.len());
            token = r["nextToken"].as_str().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        Ok((matched, started.elapsed().as_secs_f64()))
    };
    bar.set_message("FilterLogEvents");
    let (json_matched, json_secs) = filter(r#"{ $.errorCode = "AccessDenied" }"#)?;
    let (term_matched, term_secs) = filter(r#""AccessDenied""#)?;
    bar.inc(1);

    // 4. Insights stats.
    bar.set_message("Insights stats");
    let q = logs_call(
        addr,
        c,
        "StartQuery",
        json!({"logGroupName": "/bench/scan",
        "startTime": t0 / 1000 - 60, "endTime": chrono::Utc::now().timestamp() + 60,
        "queryString": "stats count(*) by eventName"}),
    )?;
    let qid = q["queryId"].as_str().context("no queryId")?.to_string();
    let started = Instant::now();
    let res = loop {
        let r = logs_call(addr, c, "GetQueryResults", json!({"queryId": qid}))?;
        if r["status"] != "Running" && r["status"] != "Scheduled" {
            break r;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let q_secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        res["status"] == "Complete",
        "the query ended {}",
        res["status"]
    );
    let scanned = res["statistics"]["recordsScanned"].as_f64().unwrap_or(0.0);
    bar.inc(1);

    // 5. Trail → log group latency at a fixed rate.
    bar.set_message(format!("trail → log group at {}/s", a.rate));
    let group = "/bench/trail";
    logs_call(addr, c, "CreateLogGroup", json!({"logGroupName": group}))?;
    let garn = format!("arn:aws:logs:us-east-1:123456789012:log-group:{group}");
    let enc = |s: &str| {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    let trust = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Principal": {"Service": "cloudtrail.amazonaws.com"}, "Action": "sts:AssumeRole"}]});
    iam_call(
        addr,
        c,
        &format!(
            "Action=CreateRole&Version=2010-05-08&RoleName=cw&AssumeRolePolicyDocument={}",
            enc(&trust.to_string())
        ),
    )?;
    let pol = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Action": ["logs:CreateLogStream", "logs:PutLogEvents"], "Resource": format!("{garn}:*")}]});
    iam_call(
        addr,
        c,
        &format!(
            "Action=PutRolePolicy&Version=2010-05-08&RoleName=cw&PolicyName=p&PolicyDocument={}",
            enc(&pol.to_string())
        ),
    )?;
    ct_call(
        addr,
        c,
        "UpdateTrail",
        json!({"Name": "bench-trail", "CloudWatchLogsLogGroupArn": format!("{garn}:*"),
        "CloudWatchLogsRoleArn": "arn:aws:iam::123456789012:role/cw"}),
    )?;
    let sent = paced(addr, c, a.rate, a.latency_seconds)?;
    std::thread::sleep(Duration::from_secs(3));
    let mut lat = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut body = json!({"logGroupName": group, "filterPattern": "\"lat-\"", "limit": 10000});
        if let Some(t) = &token {
            body["nextToken"] = json!(t);
        }
        let r = logs_call(addr, c, "FilterLogEvents", body)?;
        for e in r["events"].as_array().into_iter().flatten() {
            let ingestion = e["ingestionTime"].as_i64().unwrap_or(0);
            let rec: Value = serde_json::from_str(e["message"].as_str().unwrap_or("{}"))?;
            if let Some(ms) = rec["requestParameters"]["name"]
                .as_str()
                .and_then(|n| n.strip_prefix("lat-"))
                .and_then(|m| m.parse::<i64>().ok())
            {
                lat.push((ingestion - ms) as f64 / 1000.0);
            }
        }
        token = r["nextToken"].as_str().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    lat.sort_by(|x, y| x.partial_cmp(y).unwrap_or(std::cmp::Ordering::Equal));
    bar.inc(1);
    bar.finish_and_clear();
    anyhow::ensure!(
        lat.len() == sent,
        "{} requests sent, {} delivered to the log group",
        sent,
        lat.len()
    );
    Ok(json!({
        "put_log_events": {"batch_events": per_batch, "batch_bytes": per_batch * (msg_len + 26),
            "connections": a.connections, "events_per_s": put_eps, "requests_per_s": phase.rps(),
            "p99_ms": phase.pct(0.99), "journal_append_events_per_s": journal_eps,
            "ratio_to_journal": put_eps / journal_eps},
        "load": {"events": a.events, "seconds": load_secs, "events_per_s": a.events as f64 / load_secs},
        "filter_log_events": {
            "json_pattern": {"matched": json_matched, "seconds": json_secs, "events_scanned_per_s": a.events as f64 / json_secs},
            "term_pattern": {"matched": term_matched, "seconds": term_secs, "events_scanned_per_s": a.events as f64 / term_secs}},
        "insights_stats_count_by_eventName": {"records_scanned": scanned, "seconds": q_secs,
            "events_scanned_per_s": scanned / q_secs, "groups": res["results"].as_array().map_or(0, |r| r.len())},
        "trail_to_log_group": {"rate_per_s": a.rate, "events": lat.len(), "p50_s": pct(&lat, 0.5),
            "p99_s": pct(&lat, 0.99), "max_s": lat.last().copied().unwrap_or(f64::NAN)},
    }))
}
