//! `cairn crash-test --serve`: the whole server under SIGKILL. Senders put audit events
//! through the real API (PutAuditEvents, signed) and retry every batch, with the same ids,
//! until it is answered — as an SDK retries on connection errors — while the harness kills
//! `cairn serve` at random points and restarts it. The ledger holds every acknowledged
//! (id, eventID). At the end: each acknowledged id is delivered exactly once, under the
//! eventID its answer named (idempotency across the crash that lost an answer), and the
//! trail's digest chain validates. Beside them runs the mixed load of `crash_mixed` (objects,
//! multipart uploads, users and policies, side trails; a proxied bucket with `--s3-upstream`),
//! whose every acknowledged effect and event is checked too, and around every kill LookupEvents
//! is asked the same question before and after the restart.

use crate::client::{self, Client};
use crate::crash::CrashTestArgs;
use crate::crash_mixed;
use anyhow::{bail, Context, Result};
use cairn_store::ObjectStore;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ACCOUNT: &str = "123456789012";
const BUCKET: &str = "crash-logs";
const TRAIL: &str = "crash";
const SENDERS: usize = 2;
const BATCH: usize = 10;

struct Server {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
    runs: u32,
}

impl Server {
    fn args(&self) -> Vec<String> {
        vec![
            "serve".into(),
            "--data-dir".into(),
            self.dir.join("data").display().to_string(),
            "--config".into(),
            self.dir.join("cairn.toml").display().to_string(),
            "--listen".into(),
            format!("127.0.0.1:{}", self.port),
            "--delivery-interval".into(),
            "1s".into(),
            "--digest-interval".into(),
            "3s".into(),
        ]
    }

    /// Starts `cairn serve` and waits until it accepts connections.
    fn start(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("serve.log"))?;
        let child = Command::new(&self.bin)
            .args(self.args())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        self.runs += 1;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            if let Some(c) = self.child.as_mut() {
                if let Some(st) = c.try_wait()? {
                    bail!(
                        "cairn serve exited at start ({st}); see {}/serve.log",
                        self.dir.display()
                    );
                }
            }
            if Instant::now() > deadline {
                bail!("cairn serve did not start in 60 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn kill(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            c.kill()?; // SIGKILL
            c.wait()?;
        }
        Ok(())
    }

    /// SIGTERM: the server finishes its requests, flushes and exits 0.
    fn stop(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let st = c.wait()?;
            if !st.success() {
                bail!("cairn serve exited {st} on SIGTERM");
            }
        }
        Ok(())
    }
}

/// What the harness signs the upstream S3's own requests with (moto takes any).
fn upstream_creds() -> crate::aws_env::Credentials {
    crate::aws_env::Credentials {
        key: "crash".into(),
        secret: "crash".into(),
        token: None,
    }
}

/// A harness that fails midway still stops the server it started.
impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// One PutAuditEvents call; `Ok(None)` when the server could not answer (retry).
fn put_audit_events(c: &Client, channel: &str, ids: &[String]) -> Result<Option<Value>> {
    let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S").to_string();
    let events: Vec<Value> = ids
        .iter()
        .map(|id| {
            let data = json!({
                "version": "1.0",
                "userIdentity": {"type": "CrashTest", "principalId": "sender"},
                "eventSource": "crash.cairn.example", "eventName": "Send",
                "eventTime": now, "UID": id, "recipientAccountId": ACCOUNT,
            });
            json!({"id": id, "eventData": data.to_string()})
        })
        .collect();
    let body = serde_json::to_vec(&json!({ "auditEvents": events }))?;
    let (host, creds, region) = c.signing();
    let msg = client::signed_request(
        host,
        creds,
        region,
        "cloudtrail-data",
        (
            "POST",
            "/PutAuditEvents",
            &format!("channelArn={}", enc(channel)),
        ),
        &[("content-type", "application/json")],
        &body,
        false,
    );
    let a = match c.exchange(&msg) {
        Ok(a) => a,
        Err(_) => return Ok(None), // connection refused or cut: the SDK retries
    };
    match a.status {
        200 => Ok(Some(serde_json::from_slice(&a.body)?)),
        500..=599 => Ok(None),
        s => bail!(
            "PutAuditEvents answered {s}: {}",
            String::from_utf8_lossy(&a.body)
        ),
    }
}

/// Creates the trail (management events, the load's S3 data events, ActivityAuditLog) and
/// the channel; returns its ARN.
fn set_up(c: &Client) -> Result<String> {
    trail_with_channel(
        c,
        (TRAIL, BUCKET),
        &[
            format!("arn:aws:s3:::{}/", crash_mixed::DATA_BUCKET),
            format!("arn:aws:s3:::{}/", crash_mixed::PROXY_BUCKET),
        ],
        "crash",
    )
}

/// A logging trail `name` into `bucket` recording management events, S3 object data events
/// under `objects` (ARN prefixes) and ActivityAuditLog events, and a channel `channel` for
/// PutAuditEvents; returns the channel's ARN (the crash test's and the soak's set-up).
pub(crate) fn trail_with_channel(
    c: &Client,
    (name, bucket): (&str, &str),
    objects: &[String],
    channel: &str,
) -> Result<String> {
    c.cloudtrail(
        "CreateTrail",
        &json!({"Name": name, "S3BucketName": bucket, "EnableLogFileValidation": true}),
    )?;
    c.cloudtrail(
        "PutEventSelectors",
        &json!({"TrailName": name, "AdvancedEventSelectors": [
            {"Name": "management", "FieldSelectors": [{"Field": "eventCategory", "Equals": ["Management"]}]},
            {"Name": "objects", "FieldSelectors": [
                {"Field": "eventCategory", "Equals": ["Data"]},
                {"Field": "resources.type", "Equals": ["AWS::S3::Object"]},
                {"Field": "resources.ARN", "StartsWith": objects}]},
            {"Name": "audit", "FieldSelectors": [{"Field": "eventCategory", "Equals": ["ActivityAuditLog"]}]}]}),
    )?;
    c.cloudtrail("StartLogging", &json!({"Name": name}))?;
    let ch = c.cloudtrail(
        "CreateChannel",
        &json!({"Name": channel, "Source": "Custom", "Destinations": [
            {"Type": "EVENT_DATA_STORE", "Location": format!("arn:aws:cloudtrail:us-east-1:{ACCOUNT}:eventdatastore/{channel}")}]}),
    )?;
    ch["ChannelArn"]
        .as_str()
        .map(str::to_string)
        .context("CreateChannel gave no ChannelArn")
}

pub fn harness(a: CrashTestArgs) -> Result<i32> {
    let bin = std::env::current_exe()?;
    let tmp = match &a.data_dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!(
            "cairn-crash-serve-{}",
            uuid::Uuid::new_v4().simple()
        )),
    };
    std::fs::create_dir_all(&tmp)?;
    let init = Command::new(&bin)
        .args(["init", "--data-dir"])
        .arg(tmp.join("data"))
        .args(["--account-id", ACCOUNT, "--json"])
        .output()?;
    if !init.status.success() {
        bail!("cairn init: {}", String::from_utf8_lossy(&init.stderr));
    }
    let creds: Value = serde_json::from_slice(&init.stdout)?;
    let creds = crate::aws_env::Credentials {
        key: creds["AccessKeyId"].as_str().unwrap_or_default().into(),
        secret: creds["SecretAccessKey"].as_str().unwrap_or_default().into(),
        token: None,
    };
    let mut config = format!(
        "[[bucket]]\nname = \"{BUCKET}\"\n[[bucket]]\nname = \"{}\"\n",
        crash_mixed::DATA_BUCKET
    );
    if let Some(up) = &a.s3_upstream {
        // The upstream's bucket, made there directly.
        let u = Client::new(up, "us-east-1".into(), upstream_creds(), None)?;
        let made = u.exchange(&client::signed_request(
            u.signing().0,
            u.signing().1,
            "us-east-1",
            "s3",
            ("PUT", &format!("/{}", crash_mixed::PROXY_BUCKET), ""),
            &[(
                "x-amz-content-sha256",
                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            )],
            b"",
            false,
        ))?;
        if !matches!(made.status, 200 | 409) {
            bail!("creating the upstream bucket answered {}", made.status);
        }
        config.push_str(&format!(
            "[[bucket]]\nname = \"{}\"\n[bucket.proxy]\nendpoint = \"{up}\"\nregion = \"us-east-1\"\naccess_key_id = \"crash\"\nsecret_access_key = \"crash\"\n",
            crash_mixed::PROXY_BUCKET
        ));
    }
    std::fs::write(tmp.join("cairn.toml"), config)?;
    let mut server = Server {
        bin,
        dir: tmp.clone(),
        port: free_port()?,
        child: None,
        runs: 0,
    };
    server.start()?;
    let endpoint = format!("http://127.0.0.1:{}", server.port);
    let c = Client::new(&endpoint, "us-east-1".into(), creds.clone(), None)?;
    let channel = set_up(&c)?;

    let ledger_path = tmp.join("ledger.txt");
    let ledger = Arc::new(Mutex::new(std::fs::File::create(&ledger_path)?));
    let stop = Arc::new(AtomicBool::new(false));
    let retries = Arc::new(AtomicU64::new(0));
    let failure: Arc<Mutex<Option<String>>> = Arc::default();
    let mut senders = vec![];
    for s in 0..SENDERS {
        let (ledger, stop, retries, failure) = (
            ledger.clone(),
            stop.clone(),
            retries.clone(),
            failure.clone(),
        );
        let c = Client::new(&endpoint, "us-east-1".into(), creds.clone(), None)?;
        let channel = channel.clone();
        senders.push(std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Acquire) {
                let ids: Vec<String> = (0..BATCH).map(|i| format!("s{s}-{n}-{i}")).collect();
                n += 1;
                // The same batch, the same ids, until it is answered.
                let answer = loop {
                    match put_audit_events(&c, &channel, &ids) {
                        Ok(Some(v)) => break v,
                        Ok(None) => {
                            retries.fetch_add(1, Ordering::Relaxed);
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        Err(e) => {
                            *failure.lock().unwrap_or_else(|p| p.into_inner()) =
                                Some(format!("{e:#}"));
                            return;
                        }
                    }
                };
                if answer["failed"].as_array().is_some_and(|f| !f.is_empty()) {
                    *failure.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some(format!("events refused: {}", answer["failed"]));
                    return;
                }
                let mut lines = String::new();
                for ok in answer["successful"].as_array().into_iter().flatten() {
                    lines.push_str(&format!(
                        "{} {}\n",
                        ok["id"].as_str().unwrap_or_default(),
                        ok["eventID"].as_str().unwrap_or_default()
                    ));
                }
                let mut f = ledger.lock().unwrap_or_else(|p| p.into_inner());
                let _ = f.write_all(lines.as_bytes());
            }
        }));
    }

    // The mixed load: objects (embedded, and proxied with an upstream), users, side trails.
    let started_ms = chrono::Utc::now().timestamp_millis();
    let mixed = Arc::new(crash_mixed::Load {
        endpoint: endpoint.clone(),
        creds: creds.clone(),
        ledger: Arc::default(),
        stop: stop.clone(),
        failure: failure.clone(),
    });
    let mut workers = vec![];
    {
        let mut buckets = vec![crash_mixed::DATA_BUCKET, crash_mixed::DATA_BUCKET];
        if a.s3_upstream.is_some() {
            buckets.push(crash_mixed::PROXY_BUCKET);
        }
        for (i, b) in buckets.into_iter().enumerate() {
            let (l, seed) = (
                mixed.clone(),
                a.seed.wrapping_mul(1000).wrapping_add(i as u64),
            );
            workers.push(std::thread::spawn(move || {
                crash_mixed::s3_worker(l, b, i, seed)
            }));
        }
        let l = mixed.clone();
        workers.push(std::thread::spawn(move || crash_mixed::iam_worker(l)));
        let (l, seed) = (mixed.clone(), a.seed);
        workers.push(std::thread::spawn(move || {
            crash_mixed::trail_worker(l, BUCKET, seed)
        }));
    }
    let mut lookup_checks = 0u64;
    let mut rng = rand::rngs::StdRng::seed_from_u64(a.seed);
    let bar = indicatif::ProgressBar::new(a.kills as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} SIGKILLs of cairn serve")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    for _ in 0..a.kills {
        std::thread::sleep(Duration::from_millis(
            rng.gen_range(a.min_ms..=a.max_ms.max(a.min_ms)),
        ));
        if let Some(e) = failure.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            bail!("a sender failed: {e}");
        }
        // LookupEvents, asked the same before the kill and after the restart, forgets nothing.
        let (from, to) = crash_mixed::lookup_window();
        let before = crash_mixed::lookup_ids(&c, from, to).ok();
        mixed.ledger.killing();
        server.kill()?;
        server.start()?;
        mixed.ledger.restarted();
        if let Some(before) = before {
            let after = crash_mixed::lookup_ids(&c, from, to)?;
            if !before.is_subset(&after) {
                bail!(
                    "LookupEvents forgot {} CreateUser events across a restart: {:?}",
                    before.difference(&after).count(),
                    before.difference(&after).take(5).collect::<Vec<_>>()
                );
            }
            lookup_checks += before.len() as u64;
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    // Let every sender finish its batch against a live server, then stop them.
    stop.store(true, Ordering::Release);
    for s in senders.into_iter().chain(workers) {
        let _ = s.join();
    }
    if let Some(e) = failure.lock().unwrap_or_else(|p| p.into_inner()).clone() {
        bail!("a sender failed: {e}");
    }
    // While the last server runs, a second after it started: every consumer has made its
    // progress durable (a server killed young must not leave a cursor that never moves).
    std::thread::sleep(Duration::from_secs(1));
    // The journal holds more records than events were acknowledged (each request adds its
    // own and a mark): a cursor below half of that count has not kept up.
    let acked_so_far = std::fs::read_to_string(&ledger_path)?.lines().count() as u64;
    let live_lag: Vec<String> = lagging_consumers(&tmp.join("data"), acked_so_far, 2)?
        .into_iter()
        .map(|l| format!("{l} (while running)"))
        .collect();
    c.cloudtrail("CairnFlushTrail", &json!({"Name": TRAIL}))?;
    let (mut problems, finals) = crash_mixed::check_effects(&c, &mixed.ledger, started_ms)?;
    println!(
        "LookupEvents probes    {lookup_checks} events answered before a kill, all again after it"
    );
    c.cloudtrail("StopLogging", &json!({"Name": TRAIL}))?;
    server.stop()?;
    let verdict = check(
        &tmp,
        &ledger_path,
        a.kills,
        retries.load(Ordering::Relaxed),
        &live_lag,
        &mixed.ledger,
        &finals,
        &mut problems,
    )?;
    if verdict == 0 && a.data_dir.is_none() {
        let _ = std::fs::remove_dir_all(&tmp);
    } else {
        println!("data kept in {}", tmp.display());
    }
    Ok(verdict)
}

/// Consumers (but delivery, which moves its journal cursor only when that frees a segment)
/// whose durable cursor is more than `1/part` of the journal behind `end`: a consumer that
/// never commits keeps the whole journal on disk.
fn lagging_consumers(dir: &Path, end: u64, part: u64) -> Result<Vec<String>> {
    let mut lagging = vec![];
    for e in std::fs::read_dir(dir.join("journal").join("cursors"))? {
        let e = e?;
        let name = e.file_name().to_string_lossy().to_string();
        let at = std::fs::read(e.path())?
            .get(..8)
            .and_then(|x| x.try_into().ok())
            .map(u64::from_le_bytes)
            .unwrap_or(0);
        if name != "delivery" && at < end - end / part {
            lagging.push(format!("{name} at {at} of {end}"));
        }
    }
    Ok(lagging)
}

#[allow(clippy::too_many_arguments)]
fn check(
    tmp: &Path,
    ledger: &Path,
    kills: u32,
    retries: u64,
    live_lag: &[String],
    mixed: &crash_mixed::Ledger,
    finals: &crash_mixed::Finals,
    problems: &mut Vec<String>,
) -> Result<i32> {
    let mut acked: HashMap<String, String> = HashMap::new();
    let mut answered_twice_differently = 0u64;
    for line in std::fs::read_to_string(ledger)?.lines() {
        if let Some((id, ev)) = line.split_once(' ') {
            if let Some(old) = acked.insert(id.to_string(), ev.to_string()) {
                if old != ev {
                    answered_twice_differently += 1;
                }
            }
        }
    }
    let dir = tmp.join("data");
    let store = crate::install::open_store(&dir)?;
    // uid → eventIDs delivered for it.
    let mut delivered: HashMap<String, Vec<String>> = HashMap::new();
    // requestID → the errorCode of each record with it (the mixed load's requests).
    let mut by_request: HashMap<String, Vec<Option<String>>> = HashMap::new();
    // (operation, what it names) → records saying it succeeded; how often each request id of
    // those operations was delivered.
    let mut successes: HashMap<(String, String), usize> = HashMap::new();
    let mut unknowns: HashMap<(String, String), usize> = HashMap::new();
    let mut load_ids: HashMap<String, usize> = HashMap::new();
    let logs = cairn_store::list_all(&store, BUCKET, &format!("AWSLogs/{ACCOUNT}/CloudTrail/"))?;
    for o in &logs {
        let body = store.get(BUCKET, &o.key)?.body;
        let mut json = Vec::new();
        flate2::read::GzDecoder::new(&body[..]).read_to_end(&mut json)?;
        let v: Value = serde_json::from_slice(&json).with_context(|| o.key.clone())?;
        for r in v["Records"].as_array().into_iter().flatten() {
            if r["eventCategory"] != "ActivityAuditLog" {
                if let Some(id) = r["requestID"].as_str() {
                    by_request
                        .entry(id.to_string())
                        .or_default()
                        .push(r["errorCode"].as_str().map(str::to_string));
                }
                if let Some(named) = crash_mixed::named(r) {
                    *load_ids
                        .entry(r["requestID"].as_str().unwrap_or_default().to_string())
                        .or_default() += 1;
                    if r["errorCode"].is_null() {
                        *successes.entry(named).or_default() += 1;
                    } else if r["errorMessage"].as_str().is_some_and(|m| {
                        m.starts_with("cairn stopped before this request's outcome was known")
                    }) {
                        *unknowns.entry(named).or_default() += 1;
                    }
                }
                continue;
            }
            delivered
                .entry(r["eventData"]["UID"].as_str().unwrap_or_default().into())
                .or_default()
                .push(r["eventID"].as_str().unwrap_or_default().into());
        }
    }
    let lost: Vec<&String> = acked
        .keys()
        .filter(|id| !delivered.contains_key(*id))
        .collect();
    let dups: Vec<(&String, &Vec<String>)> =
        delivered.iter().filter(|(_, v)| v.len() > 1).collect();
    let wrong_id: Vec<&String> = acked
        .iter()
        .filter(|(id, ev)| delivered.get(*id).is_some_and(|v| !v.contains(ev)))
        .map(|(id, _)| id)
        .collect();
    let reader = cairn_trail::StateReader::open(&dir.join("trail"))?;
    let keys = crate::validate_cmd::DataDirKeys(reader);
    let mut opts = cairn_verify::ValidateOptions::new(
        format!("arn:aws:cloudtrail:us-east-1:{ACCOUNT}:trail/{TRAIL}"),
        BUCKET,
        chrono::Utc::now() - chrono::Duration::hours(3),
        chrono::Utc::now(),
    );
    let aws = cairn_verify::validate(&store, &keys, &opts).map_err(|e| anyhow::anyhow!("{e}"))?;
    opts.strict = true;
    let strict =
        cairn_verify::validate(&store, &keys, &opts).map_err(|e| anyhow::anyhow!("{e}"))?;
    // Every consumer moved its cursor along: the journal kept only its tail.
    let segments = std::fs::read_dir(dir.join("journal"))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
        .count();
    let journal_bytes: u64 = std::fs::read_dir(dir.join("journal"))?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    let end = cairn_journal::Journal::open(dir.join("journal"), Default::default())?.next_seq();
    let mut lagging = lagging_consumers(&dir, end, 10)?;
    lagging.extend(live_lag.iter().cloned());
    println!("kills of cairn serve  {kills}");
    println!(
        "journal kept          {segments} segments, {} MiB; consumers behind: {lagging:?}",
        journal_bytes >> 20
    );
    println!("client retries        {retries}");
    println!("acknowledged events   {}", acked.len());
    println!(
        "delivered events      {} in {} log files",
        delivered.len(),
        logs.len()
    );
    println!("lost (acked, absent)  {}", lost.len());
    println!("duplicated            {}", dups.len());
    println!(
        "delivered under another eventID than acknowledged  {}",
        wrong_id.len()
    );
    println!("one id answered with two eventIDs                  {answered_twice_differently}");
    println!(
        "validate (AWS mode)   exit {}: {} digests, {} log files valid",
        aws.exit_code, aws.valid_digests, aws.valid_logs
    );
    println!("validate (strict)     exit {}", strict.exit_code);
    for id in lost.iter().take(10) {
        println!("  lost {id}");
    }
    for (id, evs) in dups.iter().take(10) {
        println!(
            "  {id} delivered {} times: {evs:?}, acknowledged {:?}",
            evs.len(),
            acked.get(*id)
        );
    }
    if strict.exit_code != 0 {
        print!("{}", strict.stderr());
    }
    problems.extend(crash_mixed::check_events(
        mixed,
        &by_request,
        &successes,
        &unknowns,
        finals,
        kills,
    ));
    for (id, n) in load_ids.iter().filter(|(_, n)| **n > 1) {
        problems.push(format!("request {id} delivered {n} times"));
    }
    println!("mixed load problems   {}", problems.len());
    for p in problems.iter().take(20) {
        println!("  {p}");
    }
    let ok = problems.is_empty()
        && lost.is_empty()
        && dups.is_empty()
        && segments <= 2
        && lagging.is_empty()
        && wrong_id.is_empty()
        && answered_twice_differently == 0
        && !acked.is_empty()
        && aws.exit_code == 0
        && strict.exit_code == 0;
    println!("{}", if ok { "PASS" } else { "FAIL" });
    Ok(if ok { 0 } else { 1 })
}
