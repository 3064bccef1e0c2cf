//! `cairn bench soak`: a long run of mixed signed traffic at a fixed rate against a real
//! `cairn serve`, sampling throughput, p99 latency, the server's RSS, its open files and its
//! data directory every few seconds. Writes `soak.csv`, `soak.svg` (all five over time, the
//! memory budget drawn on the RSS panel) and `summary.json` into `--out`, and ends with the
//! crash tests' ledger checks:
//! - every object's last acknowledged PUT reads back byte for byte, every acknowledged
//!   DELETE left it gone (each connection owns its keys, so per key the ledger is exact);
//! - every answered request of the mix is delivered in the trail's log files exactly as often
//!   as it was answered, with an `errorCode` exactly when its answer was an error: per
//!   operation the counts and a fingerprint of the request ids (a wrapping sum of their
//!   hashes, so one lost and one duplicated event do not cancel) agree; unanswered requests
//!   (a timeout, a cut connection) only bound the counts, and more than 0.5% of them fails
//!   the run;
//! - every acknowledged PutAuditEvents id is delivered exactly once, and no id whose call
//!   failed is delivered;
//! - the trail's log files and digests validate (strict).
//!
//! The mix: CloudTrail GetTrailStatus, DescribeTrails, LookupEvents; S3 GetObject, PutObject
//! (4 KiB), DeleteObject as data events; IAM GetUser, ListUsers; STS GetCallerIdentity;
//! PutAuditEvents of one event.
//!
//! Each connection keeps a schedule of one request per `connections / rate` seconds, with one
//! request out at a time: a request the schedule called for while the previous one was out
//! goes out as soon as the answer comes (so the offered rate holds while the server has the
//! capacity; how late requests went out is reported as the schedule's lag). After a request
//! goes unanswered (a timeout, a cut connection) the schedule restarts from then, and the
//! requests it called for meanwhile are counted as not sent. `--drop-late` restarts it after
//! every late answer instead. Latency is measured from a request's send to its answer.

use crate::bench_api::{bench_server, read_response_into, Captured};
use crate::client::{self, Client};
use anyhow::{bail, Context, Result};
use cairn_store::ObjectStore;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

const ACCOUNT: &str = "123456789012";
const LOGS: &str = "soak-logs";
const DATA: &str = "soak-data";
const TRAIL: &str = "soak";
const KEYS_PER_CONNECTION: usize = 64;
const OBJECT_BYTES: usize = 4096;

#[derive(clap::Args, Debug)]
pub struct SoakBenchArgs {
    /// Length of the run.
    #[arg(long, default_value_t = 30.0)]
    pub minutes: f64,
    /// Requests per second to offer (spread evenly over the connections).
    #[arg(long, default_value_t = 10_000.0)]
    pub rate: f64,
    /// Keep-alive connections.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Seconds between samples.
    #[arg(long, default_value_t = 5.0)]
    pub sample_seconds: f64,
    /// Where soak.csv, soak.svg and summary.json go.
    #[arg(long, default_value = "soak-out")]
    pub out: PathBuf,
    /// The server's data directory (default: a temporary one).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The server's memory_limit.
    #[arg(long, default_value = "512MiB")]
    pub memory_limit: String,
    /// Load-generator threads.
    #[arg(long, default_value_t = 1)]
    pub client_threads: usize,
    /// Restart a connection's schedule after every answer slower than its period: of the
    /// requests it called for meanwhile one goes out at once, the rest never (the rate
    /// offered then falls whenever answers are slow). By default they all go out as soon as
    /// the connection is free, so the offered rate holds while the server has the capacity
    /// (as wrk2 keeps its rate); how late they went out is reported as the schedule's lag.
    #[arg(long)]
    pub drop_late: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Op {
    GetTrailStatus,
    DescribeTrails,
    LookupEvents,
    GetObject,
    PutObject,
    DeleteObject,
    GetUser,
    ListUsers,
    GetCallerIdentity,
    PutAuditEvents,
}

/// (operation, weight): what a run's requests are made of.
/// Read-heavy, as API traffic is: one request in eight writes.
const MIX: &[(Op, u32)] = &[
    (Op::GetTrailStatus, 46),
    (Op::DescribeTrails, 5),
    (Op::LookupEvents, 1),
    (Op::GetObject, 16),
    (Op::PutObject, 6),
    (Op::DeleteObject, 2),
    (Op::GetUser, 6),
    (Op::ListUsers, 3),
    (Op::GetCallerIdentity, 9),
    (Op::PutAuditEvents, 6),
];

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::GetTrailStatus => "GetTrailStatus",
            Op::DescribeTrails => "DescribeTrails",
            Op::LookupEvents => "LookupEvents",
            Op::GetObject => "GetObject",
            Op::PutObject => "PutObject",
            Op::DeleteObject => "DeleteObject",
            Op::GetUser => "GetUser",
            Op::ListUsers => "ListUsers",
            Op::GetCallerIdentity => "GetCallerIdentity",
            Op::PutAuditEvents => "PutAuditEvents",
        }
    }

    /// Whether the trail records this call (PutAuditEvents' own data event is not selected:
    /// its events are checked by id instead).
    fn delivered(self) -> bool {
        self != Op::PutAuditEvents
    }

    fn pick(rng: &mut SmallRng) -> Op {
        let total: u32 = MIX.iter().map(|(_, w)| w).sum();
        let mut x = rng.gen_range(0..total);
        for (op, w) in MIX {
            if x < *w {
                return *op;
            }
            x -= w;
        }
        Op::GetTrailStatus
    }
}

/// What the ledger knows of one key.
#[derive(Clone, Copy, PartialEq, Eq)]
enum KeyState {
    Absent,
    Has([u8; 32]),
    /// A request on it went unanswered: its effect is unknown.
    Unknown,
}

/// Counts of one operation's answers, and the fingerprints of their request ids.
#[derive(Default, Clone, Copy)]
struct Counts {
    ok: u64,
    err: u64,
    unanswered: u64,
    fp_ok: u64,
    fp_err: u64,
}

/// Latencies of one operation's answered requests, in [`LATENCY_BUCKETS`] buckets of
/// [`LATENCY_BUCKET_US`] (other sizes with [`Latencies::with_buckets`]; the last bucket
/// holds everything slower, and the slowest is kept). Unanswered requests are counted in the
/// ledger, not here.
#[derive(Clone)]
struct Latencies {
    buckets: Vec<u64>,
    bucket_us: u64,
    max_us: u64,
    /// Every request's time, summed (for the mean, which bounds what the connections carry).
    sum_us: u64,
}

const LATENCY_BUCKET_US: u64 = 100;
const LATENCY_BUCKETS: usize = 2_000;
/// The schedule's lag is kept in 1 ms buckets up to 30 s (a request's own timeout: after
/// one the schedule restarts), so its p99 is a bucket's edge, not the maximum, in any run.
const LAG_BUCKET_US: u64 = 1_000;
const LAG_BUCKETS: usize = 30_000;

impl Default for Latencies {
    fn default() -> Self {
        Latencies::with_buckets(LATENCY_BUCKET_US, LATENCY_BUCKETS)
    }
}

impl Latencies {
    fn with_buckets(bucket_us: u64, buckets: usize) -> Latencies {
        Latencies {
            buckets: vec![0; buckets.max(1)],
            bucket_us: bucket_us.max(1),
            max_us: 0,
            sum_us: 0,
        }
    }

    fn add(&mut self, us: u64) {
        let b = ((us / self.bucket_us) as usize).min(self.buckets.len() - 1);
        self.buckets[b] += 1;
        self.max_us = self.max_us.max(us);
        self.sum_us = self.sum_us.saturating_add(us);
    }

    fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// The latency (ms, its bucket's upper edge; in the last bucket, the slowest request's)
    /// at or below which `q` of the requests fell.
    fn quantile_ms(&self, q: f64) -> f64 {
        let n = self.count();
        let want = ((n as f64 * q).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.buckets.iter().enumerate() {
            seen += c;
            if seen >= want {
                let edge = if i + 1 == self.buckets.len() {
                    self.max_us
                } else {
                    (i as u64 + 1) * self.bucket_us
                };
                return edge as f64 / 1000.0;
            }
        }
        0.0
    }

    /// The share of requests that took longer than `period` (the requests their connection's
    /// schedule called for meanwhile went out late). Counted from the bucket after
    /// the one `period` falls in, so a request at most one bucket slower may be missed (a
    /// period past the buckets counts everything in the last one).
    fn share_over(&self, period: Duration) -> f64 {
        let n = self.count();
        let from = ((period.as_micros() as u64).div_ceil(self.bucket_us) as usize)
            .min(self.buckets.len() - 1);
        let over: u64 = self.buckets.iter().skip(from).sum();
        if n == 0 {
            0.0
        } else {
            over as f64 / n as f64
        }
    }
}

/// What `connections` closed-loop connections (one request out each) can carry at most when
/// an answer takes `mean_answer_ms` on average (Little's law); `None` before any answer.
fn connections_carry(connections: usize, mean_answer_ms: f64) -> Option<f64> {
    (mean_answer_ms > 0.0).then(|| connections as f64 * 1000.0 / mean_answer_ms)
}

/// A request id's share of a fingerprint (a wrapping sum over a multiset of ids).
fn fingerprint(request_id: &str) -> u64 {
    let d = Sha256::digest(request_id.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_be_bytes(b)
}

/// What the connections share with the sampler and the final check.
struct Shared {
    latencies: Mutex<Vec<u32>>,
    done: AtomicU64,
    counts: Mutex<Tallies>,
    audit_acked: Mutex<HashSet<String>>,
    /// Ids whose call was answered with a failure (they must not be delivered).
    audit_failed: Mutex<HashSet<String>>,
    audit_sent: AtomicU64,
    problems: Mutex<Vec<String>>,
    stop: AtomicBool,
    /// Objects an acknowledged PUT made and no acknowledged DELETE removed since: their
    /// bodies are counted as bodies wherever the store keeps them.
    live_objects: AtomicI64,
}

/// Per operation, what was answered and (for the load's requests) how fast.
#[derive(Clone)]
struct Tallies {
    counts: HashMap<Op, Counts>,
    latencies: HashMap<Op, Latencies>,
    /// How long after its scheduled moment each load request went out.
    lag: Latencies,
}

impl Default for Tallies {
    fn default() -> Self {
        Tallies {
            counts: HashMap::new(),
            latencies: HashMap::new(),
            lag: Latencies::with_buckets(LAG_BUCKET_US, LAG_BUCKETS),
        }
    }
}

impl Shared {
    /// Counts an answer to `op` (or its absence); for a load request, `load` is (how late
    /// it went out against its schedule, its latency — kept when it was answered), in µs.
    fn count(&self, op: Op, status: Option<u16>, request_id: &str, load: Option<(u64, u64)>) {
        let mut t = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((lag, took)) = load {
            t.lag.add(lag);
            if status.is_some() {
                t.latencies.entry(op).or_default().add(took);
            }
        }
        let e = t.counts.entry(op).or_default();
        match status {
            Some(200..=299) => {
                e.ok += 1;
                e.fp_ok = e.fp_ok.wrapping_add(fingerprint(request_id));
            }
            Some(_) => {
                e.err += 1;
                e.fp_err = e.fp_err.wrapping_add(fingerprint(request_id));
            }
            None => e.unanswered += 1,
        }
    }

    fn problem(&self, p: String) {
        let mut v = self.problems.lock().unwrap_or_else(|e| e.into_inner());
        if v.len() < 50 {
            v.push(p);
        }
    }
}

/// Signs the mix's requests for one server.
#[derive(Clone)]
struct Signer {
    host: String,
    key: String,
    secret: String,
    channel: String,
}

impl Signer {
    fn creds(&self) -> (&str, &str, Option<&str>) {
        (&self.key, &self.secret, None)
    }

    fn cloudtrail(&self, op: &str, body: &Value) -> Vec<u8> {
        client::signed_cloudtrail_request(
            &self.host,
            self.creds(),
            "us-east-1",
            op,
            body.to_string().as_bytes(),
            true,
        )
    }

    fn form(&self, service: &str, form: &str) -> Vec<u8> {
        client::signed_post(
            &self.host,
            self.creds(),
            "us-east-1",
            service,
            &[(
                "content-type",
                "application/x-www-form-urlencoded; charset=utf-8",
            )],
            form.as_bytes(),
            true,
        )
    }

    fn s3(&self, method: &str, key: &str, body: &[u8]) -> Vec<u8> {
        self.s3_with(method, key, body, true)
    }

    fn s3_with(&self, method: &str, key: &str, body: &[u8], keep_alive: bool) -> Vec<u8> {
        let sha = hex::encode(Sha256::digest(body));
        client::signed_request(
            &self.host,
            self.creds(),
            "us-east-1",
            "s3",
            (method, &format!("/{DATA}/{key}"), ""),
            &[("x-amz-content-sha256", &sha)],
            body,
            keep_alive,
        )
    }

    fn audit(&self, id: &str) -> Vec<u8> {
        let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
        let data = json!({
            "version": "1.0",
            "userIdentity": {"type": "Soak", "principalId": "soak"},
            "eventSource": "soak.cairn.example", "eventName": "Send",
            "eventTime": now, "UID": id, "recipientAccountId": ACCOUNT,
        });
        let body = json!({"auditEvents": [{"id": id, "eventData": data.to_string()}]});
        client::signed_request(
            &self.host,
            self.creds(),
            "us-east-1",
            "cloudtrail-data",
            (
                "POST",
                "/PutAuditEvents",
                &format!(
                    "channelArn={}",
                    percent_encoding::utf8_percent_encode(
                        &self.channel,
                        percent_encoding::NON_ALPHANUMERIC
                    )
                ),
            ),
            &[("content-type", "application/json")],
            body.to_string().as_bytes(),
            true,
        )
    }
}

fn object_body(conn: usize, key: usize, n: u64) -> Vec<u8> {
    let seed = format!("{conn}/{key}/{n}/");
    seed.bytes().cycle().take(OBJECT_BYTES).collect()
}

/// One keep-alive connection offering `period`-spaced requests until told to stop.
async fn connection(
    (id, connections): (usize, usize),
    addr: String,
    signer: Signer,
    (period, drop_late): (Duration, bool),
    shared: Arc<Shared>,
) -> Vec<KeyState> {
    let mut keys = vec![KeyState::Absent; KEYS_PER_CONNECTION];
    // Whether `live_objects` counts the key: an unanswered request leaves it as it was (an
    // overcount of bodies at worst, which understates what lies beyond them).
    let mut counted = [false; KEYS_PER_CONNECTION];
    let mut rng = SmallRng::seed_from_u64(id as u64 * 7919 + 1);
    // The connections' schedules are spread over one period, not all in step.
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + period.mul_f64(id as f64 / connections as f64),
        period,
    );
    tick.set_missed_tick_behavior(if drop_late {
        tokio::time::MissedTickBehavior::Delay
    } else {
        tokio::time::MissedTickBehavior::Burst
    });
    let mut stream: Option<tokio::net::TcpStream> = None;
    let mut last_used = Instant::now();
    let mut buf = Vec::new();
    let mut answer = Captured::default();
    let mut n = 0u64;
    while !shared.stop.load(Ordering::Acquire) {
        let due = tick.tick().await;
        n += 1;
        let op = Op::pick(&mut rng);
        let k = rng.gen_range(0..KEYS_PER_CONNECTION);
        let key = format!("c{id}-k{k}");
        let mut put_sha = None;
        let mut audit_id = None;
        let msg = match op {
            Op::GetTrailStatus => signer.cloudtrail("GetTrailStatus", &json!({"Name": TRAIL})),
            Op::DescribeTrails => signer.cloudtrail("DescribeTrails", &json!({})),
            Op::LookupEvents => signer.cloudtrail(
                "LookupEvents",
                &json!({"LookupAttributes": [{"AttributeKey": "EventName", "AttributeValue": "ListUsers"}],
                    "StartTime": chrono::Utc::now().timestamp() - 60, "MaxResults": 10}),
            ),
            Op::GetObject => signer.s3("GET", &key, b""),
            Op::PutObject => {
                let b = object_body(id, k, n);
                put_sha = Some(<[u8; 32]>::from(Sha256::digest(&b)));
                signer.s3("PUT", &key, &b)
            }
            Op::DeleteObject => signer.s3("DELETE", &key, b""),
            Op::GetUser => signer.form("iam", "Action=GetUser&UserName=soak-user&Version=2010-05-08"),
            Op::ListUsers => signer.form("iam", "Action=ListUsers&Version=2010-05-08"),
            Op::GetCallerIdentity => {
                signer.form("sts", "Action=GetCallerIdentity&Version=2011-06-15")
            }
            Op::PutAuditEvents => {
                let a = format!("soak-{id}-{n}");
                shared.audit_sent.fetch_add(1, Ordering::Relaxed);
                let m = signer.audit(&a);
                audit_id = Some(a);
                m
            }
        };
        // The server closes keep-alive connections idle past its header timeout (20 s):
        // a slow pace reconnects rather than write into a closed one.
        if last_used.elapsed() > Duration::from_secs(10) {
            stream = None;
        }
        let t = Instant::now();
        let lag = due.elapsed().as_micros() as u64;
        let got = tokio::time::timeout(
            Duration::from_secs(30),
            exchange(&addr, &mut stream, &mut buf, &msg, &mut answer),
        )
        .await;
        last_used = Instant::now();
        let status = match got {
            Ok(Ok(s)) => Some(s),
            _ => {
                stream = None;
                buf.clear();
                None
            }
        };
        let body = &answer.body;
        let took = t.elapsed().as_micros().min(u32::MAX as u128) as u32;
        shared
            .latencies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(took);
        shared.done.fetch_add(1, Ordering::Relaxed);
        shared.count(op, status, &answer.request_id, Some((lag, took as u64)));
        if status.is_none() {
            // The connection was cut or timed out: the schedule restarts from now, and what
            // it called for meanwhile is not sent (a 30 s timeout would otherwise owe ~4,700
            // requests at once, and every later one would report their lag).
            tick.reset();
        }
        match (op, status) {
            (Op::PutObject, Some(200)) => {
                keys[k] = KeyState::Has(put_sha.unwrap_or_default());
                if !std::mem::replace(&mut counted[k], true) {
                    shared.live_objects.fetch_add(1, Ordering::Relaxed);
                }
            }
            (Op::DeleteObject, Some(204)) => {
                keys[k] = KeyState::Absent;
                if std::mem::replace(&mut counted[k], false) {
                    shared.live_objects.fetch_sub(1, Ordering::Relaxed);
                }
            }
            (Op::PutObject | Op::DeleteObject, None) => keys[k] = KeyState::Unknown,
            (Op::GetObject, Some(s)) => match keys[k] {
                KeyState::Has(sha) if s != 200 || <[u8; 32]>::from(Sha256::digest(body)) != sha => {
                    shared.problem(format!(
                        "GET {key} answered {s} or other bytes than its last acknowledged PUT"
                    ))
                }
                KeyState::Absent if s != 404 => shared.problem(format!(
                    "GET {key} answered {s}; it was deleted or never written"
                )),
                _ => {}
            },
            (Op::PutAuditEvents, Some(status)) => {
                let v: Value = serde_json::from_slice(body).unwrap_or_default();
                let ok = status == 200
                    && v["successful"]
                        .as_array()
                        .is_some_and(|a| a.iter().any(|e| e["id"].as_str() == audit_id.as_deref()));
                if status == 200 && !ok {
                    shared.problem(format!(
                        "PutAuditEvents answered 200 without its id among the successful: {v}"
                    ));
                }
                if let Some(a) = audit_id {
                    let set = if ok {
                        &shared.audit_acked
                    } else {
                        &shared.audit_failed
                    };
                    set.lock().unwrap_or_else(|e| e.into_inner()).insert(a);
                }
                if status >= 500 {
                    shared.problem(format!("PutAuditEvents answered {status}"));
                }
            }
            (_, Some(s)) if s >= 500 => {
                shared.problem(format!("{} answered {s}", op.name()));
            }
            _ => {}
        }
    }
    keys
}

/// Sends `msg` on the connection (opening it if needed) and reads the answer.
async fn exchange(
    addr: &str,
    stream: &mut Option<tokio::net::TcpStream>,
    buf: &mut Vec<u8>,
    msg: &[u8],
    keep: &mut Captured,
) -> Result<u16> {
    if stream.is_none() {
        let s = tokio::net::TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        *stream = Some(s);
        buf.clear();
    }
    let Some(s) = stream.as_mut() else {
        bail!("no connection");
    };
    s.write_all(msg).await?;
    let (status, _, close) = read_response_into(s, buf, Some(keep)).await?;
    if close {
        *stream = None;
    }
    Ok(status)
}

/// One sample of the run.
#[derive(Clone, Copy, Debug)]
struct Sample {
    minutes: f64,
    req_per_s: f64,
    p99_ms: f64,
    rss_mib: f64,
    open_fds: f64,
    data_mib: f64,
    /// Bytes of the data directory beyond object bodies and delivered files, per event.
    bytes_per_event: f64,
    /// Those bytes, and the events so far (for the marginal cost per event).
    beyond: f64,
    events: f64,
}

fn dir_bytes(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    for e in rd.flatten() {
        let Ok(m) = e.metadata() else { continue };
        if m.is_dir() {
            total += dir_bytes(&e.path());
        } else {
            total += m.blocks() * 512;
        }
    }
    total
}

/// The server's RSS (MiB) and open files.
fn proc_usage(pid: u32) -> (f64, f64) {
    let (rss, fds) = cairn_api::metrics::process_usage_of(&pid.to_string());
    (rss as f64 / (1 << 20) as f64, fds as f64)
}

/// CPU seconds (user and system) a process has used so far; 0 when unreadable.
pub(crate) fn cpu_seconds(pid: &str) -> f64 {
    // SAFETY: sysconf reads a constant of the system; no pointers involved.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the command name (which may hold spaces): utime is the 12th.
            let rest = s.get(s.rfind(')')? + 2..)?;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?)
        })
        .map_or(0.0, |t| t / ticks)
}

fn events_so_far(shared: &Shared) -> u64 {
    let t = shared.counts.lock().unwrap_or_else(|e| e.into_inner());
    let answered: u64 = t.counts.values().map(|c| c.ok + c.err).sum();
    answered
        + shared
            .audit_acked
            .lock()
            .map(|a| a.len() as u64)
            .unwrap_or(0)
}

/// Least-squares slope of `y` over `x`.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if sxx == 0.0 {
        0.0
    } else {
        sxy / sxx
    }
}

fn plot(path: &Path, samples: &[Sample], budget_mib: f64) -> Result<()> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (1000, 1300)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((5, 1));
    type Field = fn(&Sample) -> f64;
    let series: [(&str, Field, Option<f64>); 5] = [
        ("requests per second", |s| s.req_per_s, None),
        ("p99 latency (ms)", |s| s.p99_ms, None),
        (
            "server RSS (MiB); red: memory_limit plus the fixed overhead",
            |s| s.rss_mib,
            Some(budget_mib),
        ),
        ("server open files", |s| s.open_fds, None),
        ("data directory (MiB)", |s| s.data_mib, None),
    ];
    let xmax = samples.last().map(|s| s.minutes).unwrap_or(1.0).max(0.1);
    for (area, (title, f, line)) in panels.iter().zip(series) {
        let top = samples
            .iter()
            .map(f)
            .fold(line.unwrap_or(0.0), f64::max)
            .max(1.0)
            * 1.1;
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 18))
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(64)
            .build_cartesian_2d(0f64..xmax, 0f64..top)?;
        chart.configure_mesh().x_desc("minutes").draw()?;
        chart.draw_series(LineSeries::new(
            samples.iter().map(|s| (s.minutes, f(s))),
            &BLUE,
        ))?;
        if let Some(l) = line {
            chart.draw_series(LineSeries::new(vec![(0.0, l), (xmax, l)], &RED))?;
        }
    }
    root.present()?;
    Ok(())
}

/// The lean view of a delivered record the check needs.
#[derive(serde::Deserialize)]
struct Lean {
    #[serde(rename = "eventName", default)]
    name: String,
    #[serde(rename = "eventCategory", default)]
    category: String,
    #[serde(rename = "errorCode", default)]
    error: Option<String>,
    #[serde(rename = "requestID", default)]
    request_id: String,
    #[serde(rename = "eventData", default)]
    data: Option<LeanData>,
}

#[derive(serde::Deserialize)]
struct LeanData {
    #[serde(rename = "UID", default)]
    uid: Option<String>,
}

#[derive(serde::Deserialize)]
struct LeanFile {
    #[serde(rename = "Records")]
    records: Vec<Lean>,
}

/// Delivered records: per event name the counts and fingerprints of successes and errors,
/// and per audit id how often.
type Delivered = (HashMap<String, Counts>, HashMap<String, u32>);

fn delivered(dir: &Path) -> Result<Delivered> {
    use rayon::prelude::*;
    let store = crate::install::open_store(dir)?;
    let logs = cairn_store::list_all(&store, LOGS, &format!("AWSLogs/{ACCOUNT}/CloudTrail/"))?;
    let per_file: Vec<Result<Delivered>> = logs
        .par_iter()
        .map(|o| {
            let body = store.get(LOGS, &o.key)?.body;
            let mut raw = Vec::new();
            flate2::read::GzDecoder::new(&body[..]).read_to_end(&mut raw)?;
            let f: LeanFile = serde_json::from_slice(&raw).with_context(|| o.key.clone())?;
            let mut names: HashMap<String, Counts> = HashMap::new();
            let mut ids: HashMap<String, u32> = HashMap::new();
            for r in f.records {
                if r.category == "ActivityAuditLog" {
                    if let Some(uid) = r.data.and_then(|d| d.uid) {
                        *ids.entry(uid).or_default() += 1;
                    }
                    continue;
                }
                let e = names.entry(r.name).or_default();
                if r.error.is_some() {
                    e.err += 1;
                    e.fp_err = e.fp_err.wrapping_add(fingerprint(&r.request_id));
                } else {
                    e.ok += 1;
                    e.fp_ok = e.fp_ok.wrapping_add(fingerprint(&r.request_id));
                }
            }
            Ok((names, ids))
        })
        .collect();
    let mut names: HashMap<String, Counts> = HashMap::new();
    let mut ids: HashMap<String, u32> = HashMap::new();
    for r in per_file {
        let (n, i) = r?;
        for (k, c) in n {
            let e = names.entry(k).or_default();
            e.ok += c.ok;
            e.err += c.err;
            e.fp_ok = e.fp_ok.wrapping_add(c.fp_ok);
            e.fp_err = e.fp_err.wrapping_add(c.fp_err);
        }
        for (k, c) in i {
            *ids.entry(k).or_default() += c;
        }
    }
    Ok((names, ids))
}

fn set_up(c: &Client, addr: &str, signer: &Signer) -> Result<String> {
    let channel = crate::crash_serve::trail_with_channel(
        c,
        (TRAIL, LOGS),
        &[format!("arn:aws:s3:::{DATA}/")],
        "soak",
    )?;
    let (status, body) = crate::bench_s3::once_body(
        addr,
        &client::signed_form_request(
            &signer.host,
            signer.creds(),
            "us-east-1",
            "iam",
            "Action=CreateUser&UserName=soak-user&Version=2010-05-08",
        ),
    )?;
    if status != 200 {
        bail!(
            "CreateUser answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    Ok(channel)
}

pub fn soak(a: SoakBenchArgs) -> Result<()> {
    anyhow::ensure!(
        a.minutes > 0.0 && a.sample_seconds > 0.0 && a.rate > 0.0 && a.connections > 0,
        "--minutes, --sample-seconds, --rate and --connections must be positive"
    );
    let budget = crate::memory::Budget::parse(&a.memory_limit)?;
    std::fs::create_dir_all(&a.out)?;
    let tmp = tempfile::tempdir()?;
    let data_dir = a
        .data_dir
        .clone()
        .unwrap_or_else(|| tmp.path().join("data"));
    let config = format!(
        "metrics_public = true\nmemory_limit = \"{}\"\ndigest_interval = \"1m\"\n[[bucket]]\nname = \"{LOGS}\"\n[[bucket]]\nname = \"{DATA}\"\n",
        a.memory_limit
    );
    let (mut server, addr, key, secret) =
        bench_server(tmp.path(), Some(data_dir.clone()), &config)?;
    let pid = server.id();
    let endpoint = format!("http://{addr}");
    let creds = crate::aws_env::Credentials {
        key: key.clone(),
        secret: secret.clone(),
        token: None,
    };
    let result = (|| -> Result<Run> {
        let c = Client::new(&endpoint, "us-east-1".into(), creds, None)?;
        let mut signer = Signer {
            host: addr.clone(),
            key: key.clone(),
            secret: secret.clone(),
            channel: String::new(),
        };
        signer.channel = set_up(&c, &addr, &signer)?;
        let shared = Arc::new(Shared {
            latencies: Mutex::new(Vec::new()),
            done: AtomicU64::new(0),
            counts: Mutex::new(Tallies::default()),
            audit_acked: Mutex::new(HashSet::new()),
            audit_failed: Mutex::new(HashSet::new()),
            audit_sent: AtomicU64::new(0),
            problems: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            live_objects: AtomicI64::new(0),
        });
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(a.client_threads.max(1))
            .enable_all()
            .build()?;
        let period = Duration::from_secs_f64(a.connections as f64 / a.rate.max(1.0));
        let tasks: Vec<_> = (0..a.connections)
            .map(|i| {
                rt.spawn(connection(
                    (i, a.connections),
                    addr.clone(),
                    signer.clone(),
                    (period, a.drop_late),
                    shared.clone(),
                ))
            })
            .collect();

        let bar = indicatif::ProgressBar::new((a.minutes * 60.0) as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {pos}/{len} s  {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        let mut csv = std::fs::File::create(a.out.join("soak.csv"))?;
        writeln!(
            csv,
            "minutes,req_per_s,p99_ms,rss_mib,open_fds,data_dir_mib,bytes_per_event_beyond_bodies_and_logs"
        )?;
        let started = Instant::now();
        let end = started + Duration::from_secs_f64(a.minutes * 60.0);
        let cpu_at_start = (cpu_seconds(&pid.to_string()), cpu_seconds("self"));
        let done_at_start = shared.done.load(Ordering::Relaxed);
        let mut samples: Vec<Sample> = Vec::new();
        let mut last = (Instant::now(), 0u64);
        let sample = |last: &mut (Instant, u64)| -> Result<Sample> {
            let now = Instant::now();
            let done = shared.done.load(Ordering::Relaxed);
            let mut lat =
                std::mem::take(&mut *shared.latencies.lock().unwrap_or_else(|e| e.into_inner()));
            lat.sort_unstable();
            let p99 = lat
                .get(((lat.len() as f64 - 1.0) * 0.99).max(0.0) as usize)
                .copied()
                .unwrap_or(0) as f64
                / 1000.0;
            let (rss, fds) = proc_usage(pid);
            let total = dir_bytes(&data_dir);
            // Body files, and the bodies small enough to be kept in the store's database
            // (sealed: the stream header and one chunk's tag).
            let inline = shared.live_objects.load(Ordering::Relaxed).max(0) as u64
                * (OBJECT_BYTES
                    + cairn_store::body::STREAM_MAGIC.len()
                    + 4
                    + cairn_store::body::TAG) as u64;
            let bodies = dir_bytes(&data_dir.join("store").join("blobs"))
                + if OBJECT_BYTES <= cairn_store::INLINE_MAX {
                    inline
                } else {
                    0
                };
            let events = events_so_far(&shared).max(1);
            let s = Sample {
                minutes: started.elapsed().as_secs_f64() / 60.0,
                req_per_s: (done - last.1) as f64 / now.duration_since(last.0).as_secs_f64(),
                p99_ms: p99,
                rss_mib: rss,
                open_fds: fds,
                data_mib: total as f64 / (1 << 20) as f64,
                bytes_per_event: total.saturating_sub(bodies) as f64 / events as f64,
                beyond: total.saturating_sub(bodies) as f64,
                events: events as f64,
            };
            *last = (now, done);
            Ok(s)
        };
        while Instant::now() < end {
            std::thread::sleep(Duration::from_secs_f64(a.sample_seconds).min(end - Instant::now()));
            let s = sample(&mut last)?;
            samples.push(s);
            writeln!(
                csv,
                "{:.3},{:.0},{:.2},{:.1},{},{:.1},{:.0}",
                s.minutes,
                s.req_per_s,
                s.p99_ms,
                s.rss_mib,
                s.open_fds,
                s.data_mib,
                s.bytes_per_event
            )?;
            bar.set_position(started.elapsed().as_secs());
            bar.set_message(format!(
                "{:.0} req/s  p99 {:.1} ms  RSS {:.0} MiB  {} fds  {:.0} MiB on disk",
                s.req_per_s, s.p99_ms, s.rss_mib, s.open_fds, s.data_mib
            ));
        }
        // CPU per request over the load: the server's, and this load generator's (the same
        // two cores serve both).
        let load_done = shared
            .done
            .load(Ordering::Relaxed)
            .saturating_sub(done_at_start)
            .max(1) as f64;
        let cpu_us_per_request = (
            (cpu_seconds(&pid.to_string()) - cpu_at_start.0) * 1e6 / load_done,
            (cpu_seconds("self") - cpu_at_start.1) * 1e6 / load_done,
        );
        // What the schedules called for over the sampled time, and what went out.
        let scheduled = (a.rate * started.elapsed().as_secs_f64(), load_done);
        shared.stop.store(true, Ordering::Release);
        // Each connection ends after its request in flight (30 s at most); one that does not
        // is aborted and its keys are unknown.
        let mut keys: Vec<Vec<KeyState>> = Vec::new();
        for t in tasks {
            let abort = t.abort_handle();
            match rt.block_on(async { tokio::time::timeout(Duration::from_secs(60), t).await }) {
                Ok(Ok(k)) => keys.push(k),
                _ => {
                    abort.abort();
                    shared.problem("a connection did not stop".into());
                    keys.push(vec![KeyState::Unknown; KEYS_PER_CONNECTION]);
                }
            }
        }
        bar.finish_and_clear();
        // Let the consumers pass the journal's tail, then sample the settled footprint.
        std::thread::sleep(Duration::from_secs(8));
        let settled = sample(&mut last)?;
        plot(
            &a.out.join("soak.svg"),
            &samples,
            ((budget.limit + crate::memory::FIXED_OVERHEAD) >> 20) as f64,
        )?;

        // Ledger: each key's last acknowledged state, read through the API.
        let mut key_problems = 0u64;
        let mut checked = 0u64;
        for (i, ks) in keys.iter().enumerate() {
            for (k, st) in ks.iter().enumerate() {
                if *st == KeyState::Unknown {
                    continue;
                }
                let got = c.exchange(&signer.s3_with("GET", &format!("c{i}-k{k}"), b"", false))?;
                let rid = got
                    .header("x-amz-request-id")
                    .unwrap_or_default()
                    .to_string();
                shared.count(Op::GetObject, Some(got.status), &rid, None);
                checked += 1;
                let ok = match st {
                    KeyState::Has(sha) => {
                        got.status == 200 && <[u8; 32]>::from(Sha256::digest(&got.body)) == *sha
                    }
                    KeyState::Absent => got.status == 404,
                    KeyState::Unknown => true,
                };
                if !ok {
                    key_problems += 1;
                    shared.problem(format!(
                        "object c{i}-k{k}: answered {}, not its acknowledged state",
                        got.status
                    ));
                }
            }
        }
        if key_problems > 0 {
            shared.problem(format!(
                "{key_problems} objects do not hold their last acknowledged state"
            ));
        }
        let take = |m: &Mutex<HashSet<String>>| {
            std::mem::take(&mut *m.lock().unwrap_or_else(|e| e.into_inner()))
        };
        let Tallies {
            counts,
            latencies,
            lag,
        } = shared
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let problems = shared
            .problems
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        Ok(Run {
            samples,
            settled,
            checked,
            counts,
            latencies,
            lag,
            acked: take(&shared.audit_acked),
            failed: take(&shared.audit_failed),
            audit_sent: shared.audit_sent.load(Ordering::Relaxed),
            problems,
            // The kernel's high-water mark: the true peak, between samples too.
            hwm_mib: proc_hwm(pid),
            cpu_us_per_request,
            scheduled,
        })
    })();
    // Stop the server: it delivers everything it holds before it exits.
    unsafe {
        libc::kill(pid as i32, libc::SIGTERM);
    }
    let _ = server.wait();
    let run = result?;
    finish(&a, &data_dir, budget, run)
}

/// What the run hands to the final checks.
struct Run {
    samples: Vec<Sample>,
    settled: Sample,
    checked: u64,
    counts: HashMap<Op, Counts>,
    latencies: HashMap<Op, Latencies>,
    lag: Latencies,
    acked: HashSet<String>,
    failed: HashSet<String>,
    audit_sent: u64,
    problems: Vec<String>,
    hwm_mib: f64,
    /// CPU µs per answered request during the load: (server, load generator).
    cpu_us_per_request: (f64, f64),
    /// Over the sampled time: (requests the connections' schedules called for, requests
    /// sent).
    scheduled: (f64, f64),
}

fn proc_hwm(pid: u32) -> f64 {
    crate::bench::status_kib(&pid.to_string(), "VmHWM:") as f64 / 1024.0
}

/// The ledger checks over the delivered files, the summary and its report.
fn finish(
    a: &SoakBenchArgs,
    data_dir: &Path,
    budget: crate::memory::Budget,
    run: Run,
) -> Result<()> {
    let mut problems = run.problems.clone();
    let (names, ids) = delivered(data_dir)?;
    let mut per_op = BTreeMap::new();
    let mut latency = BTreeMap::new();
    let mut latency_rows = Vec::new();
    let period = Duration::from_secs_f64(a.connections as f64 / a.rate.max(1.0));
    let (mut answered, mut unanswered_all) = (0u64, 0u64);
    let (timed, time_us) = run.latencies.values().fold((0u64, 0u64), |(n, t), l| {
        (n + l.count(), t.saturating_add(l.sum_us))
    });
    let mean_answer_ms = if timed == 0 {
        0.0
    } else {
        time_us as f64 / timed as f64 / 1000.0
    };
    let carry = connections_carry(a.connections, mean_answer_ms);
    for (op, _) in MIX {
        let c = run.counts.get(op).copied().unwrap_or_default();
        let d = names.get(op.name()).copied().unwrap_or_default();
        answered += c.ok + c.err;
        unanswered_all += c.unanswered;
        if op.delivered() {
            let u = c.unanswered;
            let exact =
                u == 0 && (d.ok, d.err, d.fp_ok, d.fp_err) == (c.ok, c.err, c.fp_ok, c.fp_err);
            // An unanswered request may or may not have been recorded: it only bounds.
            let bounded = u > 0
                && (c.ok..=c.ok + u).contains(&d.ok)
                && (c.err..=c.err + u).contains(&d.err)
                && d.ok + d.err <= c.ok + c.err + u;
            if !exact && !bounded {
                problems.push(format!(
                    "{}: answered {} ok / {} errors ({u} unanswered), delivered {} / {}{}",
                    op.name(),
                    c.ok,
                    c.err,
                    d.ok,
                    d.err,
                    if u == 0 && (d.ok, d.err) == (c.ok, c.err) {
                        " with other request ids (one lost, another twice)"
                    } else {
                        ""
                    }
                ));
            }
        } else if d.ok + d.err > 0 {
            problems.push(format!("{}: delivered though not selected", op.name()));
        }
        per_op.insert(
            op.name(),
            json!({"ok": c.ok, "errors": c.err, "unanswered": c.unanswered,
                "delivered_ok": d.ok, "delivered_errors": d.err}),
        );
        let (p50, p99, over) = run.latencies.get(op).map_or((0.0, 0.0, 0.0), |l| {
            (
                l.quantile_ms(0.5),
                l.quantile_ms(0.99),
                l.share_over(period),
            )
        });
        latency.insert(
            op.name(),
            json!({"p50": p50, "p99": p99, "share_over_period": over}),
        );
        latency_rows.push((op.name(), p50, p99, over));
    }
    if answered == 0 || unanswered_all * 200 > answered + unanswered_all {
        problems.push(format!(
            "{unanswered_all} requests unanswered of {}: too many for the checks to mean much",
            answered + unanswered_all
        ));
    }
    let audit_ok = run
        .counts
        .get(&Op::PutAuditEvents)
        .map(|c| c.ok)
        .unwrap_or(0);
    if run.acked.len() as u64 != audit_ok {
        problems.push(format!(
            "PutAuditEvents: {audit_ok} answered 200, {} ids acknowledged",
            run.acked.len()
        ));
    }
    let lost = run.acked.iter().filter(|id| !ids.contains_key(*id)).count();
    let twice = ids.values().filter(|n| **n > 1).count();
    let failed_delivered = run.failed.iter().filter(|id| ids.contains_key(*id)).count();
    if lost > 0 || twice > 0 || failed_delivered > 0 {
        problems.push(format!(
            "PutAuditEvents: {lost} acknowledged ids not delivered, {twice} delivered more than once, {failed_delivered} refused ones delivered"
        ));
    }
    // The delivered files and digests validate.
    let store = crate::install::open_store(data_dir)?;
    let reader = cairn_trail::StateReader::open(&data_dir.join("trail"))?;
    let keys = crate::validate_cmd::DataDirKeys(reader);
    let mut opts = cairn_verify::ValidateOptions::new(
        format!("arn:aws:cloudtrail:us-east-1:{ACCOUNT}:trail/{TRAIL}"),
        LOGS,
        chrono::Utc::now() - chrono::Duration::minutes((a.minutes as i64) + 30),
        chrono::Utc::now(),
    );
    opts.strict = true;
    let v = cairn_verify::validate(&store, &keys, &opts).map_err(|e| anyhow::anyhow!("{e}"))?;
    let validation = format!(
        "exit {}: {} digests and {} log files valid, {} digests and {} log files invalid",
        v.exit_code, v.valid_digests, v.valid_logs, v.invalid_digests, v.invalid_logs
    );
    if v.exit_code != 0 || v.valid_logs == 0 {
        problems.push(format!(
            "validate-logs --strict: {validation}: {}",
            v.stderr()
        ));
    }

    let samples = &run.samples;
    let total_min = samples.last().map(|s| s.minutes).unwrap_or(0.0);
    // The trend over the last 20 minutes (or the last two thirds of a shorter run).
    let from = (total_min - 20.0).max(total_min / 3.0);
    let tail: Vec<(f64, f64)> = samples
        .iter()
        .filter(|s| s.minutes >= from)
        .map(|s| (s.minutes, s.rss_mib))
        .collect();
    let rss_slope = slope(&tail);
    // What each further event costs on disk over the same stretch (fixed costs, such as
    // the databases' initial sizes, fall out).
    let marginal = match (samples.iter().find(|s| s.minutes >= from), samples.last()) {
        (Some(a), Some(b)) if b.events > a.events => (b.beyond - a.beyond) / (b.events - a.events),
        _ => 0.0,
    };
    let sampled_peak = samples.iter().map(|s| s.rss_mib).fold(0.0, f64::max);
    let peak = sampled_peak.max(run.hwm_mib);
    let mean_rate = samples.iter().map(|s| s.req_per_s).sum::<f64>() / samples.len().max(1) as f64;
    let ceiling = ((budget.limit + crate::memory::FIXED_OVERHEAD) >> 20) as f64;
    if peak > ceiling {
        problems.push(format!(
            "peak RSS {peak:.0} MiB is above memory_limit plus the fixed overhead ({ceiling:.0} MiB)"
        ));
    }
    let summary = json!({
        "minutes": a.minutes,
        "offered_req_per_s": a.rate,
        "connections": a.connections,
        "mean_req_per_s": mean_rate,
        "server_cpu_us_per_request": run.cpu_us_per_request.0,
        "generator_cpu_us_per_request": run.cpu_us_per_request.1,
        "memory_limit_mib": budget.limit >> 20,
        "fixed_overhead_mib": crate::memory::FIXED_OVERHEAD >> 20,
        "peak_rss_mib": peak,
        "peak_rss_sampled_mib": sampled_peak,
        "rss_slope_mib_per_min_last_20_min": rss_slope,
        "marginal_bytes_per_event_last_20_min": marginal,
        "settled": {"rss_mib": run.settled.rss_mib, "data_dir_mib": run.settled.data_mib,
            "bytes_per_event_beyond_bodies_and_logs": run.settled.bytes_per_event},
        "operations": per_op,
        // Per operation, answered requests' latency (ms, 0.1 ms buckets) and the share
        // slower than a connection's period (the requests called for meanwhile went late).
        "latency_ms": latency,
        "connection_period_ms": period.as_secs_f64() * 1000.0,
        // How late requests went out against their connection's schedule (ms): small
        // while the server keeps up with the offered rate; and how many went out of those
        // the schedules called for over the sampled time.
        "schedule": {"late_requests_dropped": a.drop_late, "called_for": run.scheduled.0.round(),
            "sent": run.scheduled.1, "lag_p50_ms": run.lag.quantile_ms(0.5),
            "lag_p99_ms": run.lag.quantile_ms(0.99), "lag_max_ms": run.lag.max_us as f64 / 1000.0,
            "share_late_by_over_a_period": run.lag.share_over(period),
            // The mean answer, and what the connections can carry at it: near or under the
            // offered rate, the lag is the load generator's (raise --connections).
            "mean_answer_ms": mean_answer_ms, "connections_can_carry_req_per_s": carry},
        "audit_events": {"sent": run.audit_sent, "acknowledged": run.acked.len(),
            "refused": run.failed.len(), "lost": lost, "delivered_twice": twice},
        "objects_checked": run.checked,
        "validation": validation,
        "problems": problems,
    });
    std::fs::write(
        a.out.join("summary.json"),
        serde_json::to_vec_pretty(&summary)?,
    )?;
    println!(
        "soak: {total_min:.1} min at {:.0} req/s offered, {mean_rate:.0} mean; peak RSS {peak:.0} MiB (budget {} MiB + {} MiB fixed); RSS slope over the last 20 min {rss_slope:+.2} MiB/min; CPU per request {:.0} µs server, {:.0} µs load generator",
        a.rate,
        budget.limit >> 20,
        crate::memory::FIXED_OVERHEAD >> 20,
        run.cpu_us_per_request.0,
        run.cpu_us_per_request.1,
    );
    println!(
        "schedule{}: {:.0} of {:.0} requests called for sent ({:.2}%); lag p50 {:.1} / p99 {:.1} / max {:.1} ms; {:.2}% sent over a period late",
        if a.drop_late { " (restarted after each late answer)" } else { "" },
        run.scheduled.1,
        run.scheduled.0,
        100.0 * run.scheduled.1 / run.scheduled.0.max(1.0),
        run.lag.quantile_ms(0.5),
        run.lag.quantile_ms(0.99),
        run.lag.max_us as f64 / 1000.0,
        100.0 * run.lag.share_over(period),
    );
    if let Some(carry) = carry {
        println!(
            "connections: the mean answer took {mean_answer_ms:.2} ms, so {} connections carry at most {carry:.0} req/s, {:.2}x the rate offered (a backlog drains only at the surplus: near 1x, raise --connections before reading the lag as the server's)",
            a.connections,
            carry / a.rate.max(1.0),
        );
    }
    println!(
        "latency per operation (p50 / p99 ms, share slower than a connection's {:.1} ms period):",
        period.as_secs_f64() * 1000.0
    );
    for (name, p50, p99, over) in latency_rows {
        println!(
            "  {name:<18} {p50:>6.1} / {p99:>6.1}  {:>5.1}%",
            100.0 * over
        );
    }
    println!(
        "settled: {:.0} MiB on disk, {:.0} bytes per event beyond object bodies and delivered files ({marginal:.0} per further event over the last 20 min)",
        run.settled.data_mib, run.settled.bytes_per_event,
    );
    println!(
        "ledger: {} objects checked, {} requests answered, {} audit events acknowledged; wrote {}/soak.csv, soak.svg, summary.json",
        run.checked,
        answered,
        run.acked.len(),
        a.out.display()
    );
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("PROBLEM: {p}");
        }
        bail!("{} ledger problems", problems.len());
    }
    println!("ledger: PASS (nothing acknowledged lost, nothing delivered twice, logs validate)");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_give_quantiles_and_the_share_over_a_period() {
        let mut l = Latencies::default();
        // 90 requests at 1.05 ms, 9 at 7.5 ms, 1 far past the last bucket.
        for _ in 0..90 {
            l.add(1_050);
        }
        for _ in 0..9 {
            l.add(7_500);
        }
        l.add(10_000_000);
        assert_eq!(l.count(), 100);
        assert_eq!(l.sum_us, 90 * 1_050 + 9 * 7_500 + 10_000_000);
        // Each quantile is its bucket's upper edge.
        assert_eq!(l.quantile_ms(0.5), 1.1);
        assert_eq!(l.quantile_ms(0.9), 1.1);
        assert_eq!(l.quantile_ms(0.95), 7.6);
        assert_eq!(l.quantile_ms(0.99), 7.6);
        // The slowest is itself, past the last bucket's edge.
        assert_eq!(l.quantile_ms(1.0), 10_000.0);
        assert_eq!(l.share_over(Duration::from_micros(6_400)), 0.10);
        assert_eq!(l.share_over(Duration::from_millis(8)), 0.01);
        // A period past the buckets still counts what lies beyond them.
        assert_eq!(l.share_over(Duration::from_secs(1)), 0.01);
        assert_eq!(Latencies::default().quantile_ms(0.99), 0.0);
        assert_eq!(
            Latencies::default().share_over(Duration::from_millis(1)),
            0.0
        );
    }

    #[test]
    fn the_lag_keeps_its_p99_below_the_maximum_past_two_seconds() {
        // Under a standing backlog over 1% of requests can go out > 2 s late: the p99 is
        // still a bucket's edge, and only the slowest is the maximum.
        let mut l = Latencies::with_buckets(LAG_BUCKET_US, LAG_BUCKETS);
        for _ in 0..97 {
            l.add(300);
        }
        l.add(2_500_000);
        l.add(2_500_400);
        l.add(9_900_000);
        assert_eq!(l.quantile_ms(0.5), 1.0);
        assert_eq!(l.quantile_ms(0.99), 2_501.0);
        assert_eq!(l.quantile_ms(1.0), 9_901.0);
        assert_eq!(l.max_us, 9_900_000);
        // Past the last bucket (30 s), the slowest is kept.
        l.add(45_000_000);
        assert_eq!(l.quantile_ms(1.0), 45_000.0);
    }

    #[test]
    fn connections_carry_what_littles_law_allows() {
        // 64 connections answered in 6.4 ms on average carry 10k req/s; in 4 ms, 16k.
        assert_eq!(connections_carry(64, 6.4).map(f64::round), Some(10_000.0));
        assert_eq!(connections_carry(64, 4.0), Some(16_000.0));
        assert_eq!(connections_carry(128, 6.4).map(f64::round), Some(20_000.0));
        assert_eq!(connections_carry(64, 0.0), None);
    }
}
