//! The mixed load of `cairn crash-test --serve`. Beside the PutAuditEvents senders, workers
//! put, delete and multipart-upload objects in an embedded bucket (and in a proxied one when
//! an upstream S3 is given), create users and put their policies, and create, start and stop
//! side trails — signed, through the real API — while the harness SIGKILLs `cairn serve`.
//!
//! Every request's outcome goes to the ledger: **acknowledged** (a 2xx answer, with its
//! request id), **refused** (any other answer) or **unknown** (no answer: the connection was
//! cut by a kill). The checks: every acknowledged request's effect is there and its event is
//! delivered exactly once, without an `errorCode`; a refused request left no effect and no
//! success event; an unknown request's effect is whole or absent, never partial; no request id
//! is delivered twice; multipart uploads whose steps a kill interrupted are finished after the
//! restart (a step without an answer is sent again); and LookupEvents, asked the same question
//! before a kill and after the restart, never forgets an event it answered before.

use crate::client::{self, Answer, Client};
use anyhow::{bail, Context, Result};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The embedded bucket the S3 workers write.
pub const DATA_BUCKET: &str = "crash-data";
/// The bucket served by the upstream S3 (only with `--s3-upstream`).
pub const PROXY_BUCKET: &str = "crash-proxied";
/// Side trails the trail worker creates before it only starts and stops them (AWS allows five
/// trails per region; the main trail is one).
const SIDE_TRAILS: usize = 3;
const PART: usize = 5 << 20;
/// Worker threads of the mixed load, at most (three S3, IAM, trails).
const WORKERS_MAX: u64 = 5;
/// How long after a restart an unanswered request still counts as cut by the kill before it.
const NEAR_KILL: Duration = Duration::from_secs(2);
/// Longer in flight than a kill cycle takes: the server held the request (it hangs).
const HELD_TOO_LONG: Duration = Duration::from_secs(10);
/// Objects a worker keeps before it only deletes.
const LIVE_OBJECTS: usize = 48;

/// What became of one request.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Answered 2xx; the request id it named.
    Acked(String),
    /// Answered otherwise: (status, request id).
    Refused(u16, String),
    /// No answer: the server was killed before it sent one.
    Unknown,
    /// Never sent: the load stopped while the server was down.
    NotSent,
    /// Known only from a later request: a CompleteMultipartUpload without an answer whose
    /// resend found the upload gone (nothing else ends an upload here): it completed.
    Inferred,
}

/// The effect a request has if it succeeds.
#[derive(Debug, Clone)]
pub enum Effect {
    /// Nothing the checks read back (its event is still checked).
    None,
    /// The object exists with this SHA-256 (PutObject, CompleteMultipartUpload).
    Object {
        bucket: String,
        key: String,
        sha: String,
    },
    /// The object no longer exists.
    Deleted {
        bucket: String,
        key: String,
    },
    User(String),
    UserPolicy {
        user: String,
        doc: String,
    },
    Trail(String),
    Logging {
        trail: String,
        on: bool,
    },
}

pub struct Entry {
    pub op: String,
    pub outcome: Outcome,
    pub effect: Effect,
}

#[derive(Default)]
pub struct Ledger {
    entries: Mutex<Vec<Entry>>,
    /// Multipart uploads one of whose steps a kill left without an answer, finished later.
    pub interrupted_uploads_finished: AtomicU64,
    /// Set from just before a SIGKILL until the server is back (the harness's kill loop).
    pub restarting: AtomicBool,
    /// When the server was last back, in ms since the epoch.
    pub restarted_ms: AtomicU64,
    /// Unanswered requests no kill explains: neither under way nor just over, or held for
    /// longer than a kill cycle takes.
    unexplained: Mutex<Vec<String>>,
}

fn epoch_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Ledger {
    /// The kill loop: a SIGKILL is about to be sent.
    pub fn killing(&self) {
        self.restarting.store(true, Ordering::Release);
    }

    /// The kill loop: the server accepts connections again.
    pub fn restarted(&self) {
        self.restarted_ms.store(epoch_ms(), Ordering::Release);
        self.restarting.store(false, Ordering::Release);
    }

    /// An attempt that got no answer after `in_flight`. A kill cuts the requests in flight
    /// (explained by the kill); any other is the server failing to answer.
    fn unanswered(&self, in_flight: Duration, e: &anyhow::Error) {
        let near_kill = self.restarting.load(Ordering::Acquire)
            || epoch_ms().saturating_sub(self.restarted_ms.load(Ordering::Acquire))
                < NEAR_KILL.as_millis() as u64;
        if !near_kill || in_flight > HELD_TOO_LONG {
            self.unexplained
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(format!("{e:#} after {in_flight:?} in flight"));
        }
    }

    fn push(&self, op: String, outcome: Outcome, effect: Effect) {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Entry {
                op,
                outcome,
                effect,
            });
    }
}

/// What the workers share.
pub struct Load {
    pub endpoint: String,
    pub creds: crate::aws_env::Credentials,
    pub ledger: Arc<Ledger>,
    pub stop: Arc<AtomicBool>,
    pub failure: Arc<Mutex<Option<String>>>,
}

impl Load {
    fn client(&self) -> Result<Client> {
        Client::new(&self.endpoint, "us-east-1".into(), self.creds.clone(), None)
    }

    fn fail(&self, why: String) {
        let mut f = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        if f.is_none() {
            *f = Some(why);
        }
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }
}

fn refused_connection(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
    })
}

/// Sends `msg` once the server accepts connections (a refused connection sent nothing).
fn send(load: &Load, c: &Client, msg: &[u8]) -> (Outcome, Option<Answer>) {
    let (answer, began) = loop {
        // Nothing is sent while a kill is under way: the killed process's listening socket
        // takes connections while it is torn down and resets them, which says nothing of
        // the server (and would let one kill cut several requests of one worker).
        while load.ledger.restarting.load(Ordering::Acquire) && !load.stopped() {
            std::thread::sleep(Duration::from_millis(5));
        }
        let began = std::time::Instant::now();
        match c.exchange(msg) {
            Err(e) if refused_connection(&e) => {
                if load.stopped() {
                    return (Outcome::NotSent, None);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            other => break (other, began),
        }
    };
    match answer {
        Err(e) => {
            load.ledger.unanswered(began.elapsed(), &e);
            (Outcome::Unknown, None)
        }
        Ok(a) => {
            let id = a
                .header("x-amz-request-id")
                .or(a.header("x-amzn-requestid"))
                .unwrap_or_default()
                .to_string();
            let o = if (200..300).contains(&a.status) {
                Outcome::Acked(id)
            } else {
                Outcome::Refused(a.status, id)
            };
            (o, Some(a))
        }
    }
}

fn s3_msg(c: &Client, method: &str, path: &str, query: &str, body: &[u8]) -> Vec<u8> {
    let sha = hex::encode(Sha256::digest(body));
    let (host, creds, region) = c.signing();
    client::signed_request(
        host,
        creds,
        region,
        "s3",
        (method, path, query),
        &[("x-amz-content-sha256", &sha)],
        body,
        false,
    )
}

fn iam_msg(c: &Client, form: &str) -> Vec<u8> {
    let (host, creds, region) = c.signing();
    client::signed_form_request(host, creds, region, "iam", form)
}

fn cloudtrail_msg(c: &Client, op: &str, body: &Value) -> Vec<u8> {
    let (host, creds, region) = c.signing();
    client::signed_cloudtrail_request(host, creds, region, op, body.to_string().as_bytes(), false)
}

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// A body that names its object, `len` bytes (the tag repeated: `repeat` copies in doubling
/// runs, where a byte-at-a-time iterator was most of the harness's CPU in a debug build).
fn body(tag: &str, len: usize) -> Vec<u8> {
    let mut b = tag.as_bytes().repeat(len.div_ceil(tag.len().max(1)));
    b.truncate(len);
    b
}

fn sha_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn xml_field<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{tag}>"))? + start;
    Some(&xml[start..end])
}

/// Sends `msg` until it is answered (a kill cuts it: the server is back soon); each attempt
/// is in the ledger. Returns the answer, or `None` once the load stops.
fn until_answered(
    load: &Load,
    c: &Client,
    op: &str,
    effect: &Effect,
    msg: impl Fn() -> Vec<u8>,
    interrupted: &mut bool,
) -> Option<(Outcome, Answer)> {
    loop {
        let (o, a) = send(load, c, &msg());
        load.ledger.push(op.to_string(), o.clone(), effect.clone());
        if let Some(a) = a {
            return Some((o, a));
        }
        *interrupted = true;
        if load.stopped() {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Puts, deletes and multipart uploads in `bucket` until the load stops.
pub fn s3_worker(load: Arc<Load>, bucket: &'static str, wid: usize, seed: u64) {
    let Ok(c) = load.client() else {
        return load.fail("no client".into());
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut live: Vec<String> = Vec::new();
    let mut n = 0u64;
    while !load.stopped() {
        n += 1;
        // Deletes keep what the load stores bounded (a long run would fill the disk).
        if live.len() < LIVE_OBJECTS && n.is_multiple_of(12) {
            let key = format!("mp{wid}/{n}");
            match multipart(&load, &c, bucket, &key) {
                Ok(true) => live.push(key),
                Ok(false) => {}
                Err(e) => return load.fail(format!("multipart upload in {bucket}: {e:#}")),
            }
        } else if (n.is_multiple_of(4) || live.len() >= LIVE_OBJECTS) && !live.is_empty() {
            let key = live.swap_remove(rng.gen_range(0..live.len()));
            let effect = Effect::Deleted {
                bucket: bucket.into(),
                key: key.clone(),
            };
            let (o, _) = send(
                &load,
                &c,
                &s3_msg(&c, "DELETE", &format!("/{bucket}/{key}"), "", b""),
            );
            load.ledger
                .push(format!("DeleteObject {bucket}/{key}"), o, effect);
        } else {
            let key = format!("w{wid}/{n}");
            let b = body(&format!("{bucket}/{key};"), rng.gen_range(1..64 << 10));
            let effect = Effect::Object {
                bucket: bucket.into(),
                key: key.clone(),
                sha: sha_hex(&b),
            };
            let (o, _) = send(
                &load,
                &c,
                &s3_msg(&c, "PUT", &format!("/{bucket}/{key}"), "", &b),
            );
            if matches!(o, Outcome::Acked(_)) {
                live.push(key.clone());
            }
            load.ledger
                .push(format!("PutObject {bucket}/{key}"), o, effect);
        }
    }
}

/// One multipart upload (a 5 MiB part and a small one), every step sent again until it is
/// answered. Returns whether the object was made (false: the load stopped first).
fn multipart(load: &Load, c: &Client, bucket: &str, key: &str) -> Result<bool> {
    let path = format!("/{bucket}/{key}");
    let mut interrupted = false;
    let Some((o, a)) = until_answered(
        load,
        c,
        &format!("CreateMultipartUpload {bucket}/{key}"),
        &Effect::None,
        || s3_msg(c, "POST", &path, "uploads=", b""),
        &mut interrupted,
    ) else {
        return Ok(false);
    };
    if !matches!(o, Outcome::Acked(_)) {
        bail!("CreateMultipartUpload answered {}", a.status);
    }
    let xml = String::from_utf8_lossy(&a.body).to_string();
    let upload = xml_field(&xml, "UploadId")
        .context("no UploadId")?
        .to_string();
    let parts = [
        body(&format!("{key} part 1;"), PART),
        body(&format!("{key} part 2;"), 100 << 10),
    ];
    let mut etags = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        let query = format!("partNumber={}&uploadId={}", i + 1, enc(&upload));
        let Some((o, a)) = until_answered(
            load,
            c,
            &format!("UploadPart {bucket}/{key} #{}", i + 1),
            &Effect::None,
            || s3_msg(c, "PUT", &path, &query, p),
            &mut interrupted,
        ) else {
            return Ok(false);
        };
        if !matches!(o, Outcome::Acked(_)) {
            bail!(
                "UploadPart {} answered {}: {}",
                i + 1,
                a.status,
                String::from_utf8_lossy(&a.body)
            );
        }
        etags.push(
            a.header("etag")
                .context("UploadPart without ETag")?
                .to_string(),
        );
    }
    let whole: Vec<u8> = parts.concat();
    let effect = Effect::Object {
        bucket: bucket.into(),
        key: key.into(),
        sha: sha_hex(&whole),
    };
    let doc = format!(
        "<CompleteMultipartUpload>{}</CompleteMultipartUpload>",
        etags
            .iter()
            .enumerate()
            .map(|(i, e)| format!(
                "<Part><PartNumber>{}</PartNumber><ETag>{e}</ETag></Part>",
                i + 1
            ))
            .collect::<String>()
    );
    let query = format!("uploadId={}", enc(&upload));
    let mut complete_cut = false;
    loop {
        let (o, a) = send(load, c, &s3_msg(c, "POST", &path, &query, doc.as_bytes()));
        let op = format!("CompleteMultipartUpload {bucket}/{key}");
        match (&o, &a) {
            (Outcome::Unknown, _) => {
                load.ledger.push(op, o, effect.clone());
                interrupted = true;
                complete_cut = true;
                if load.stopped() {
                    return Ok(false);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (Outcome::Acked(_), Some(a))
                if String::from_utf8_lossy(&a.body).contains("<CompleteMultipartUploadResult") =>
            {
                load.ledger.push(op, o, effect);
                break;
            }
            (Outcome::Refused(404, _), Some(a))
                if complete_cut && String::from_utf8_lossy(&a.body).contains("NoSuchUpload") =>
            {
                // The unanswered attempt completed it.
                load.ledger.push(op.clone(), o, Effect::None);
                load.ledger.push(
                    format!("{op} (completed unanswered)"),
                    Outcome::Inferred,
                    effect,
                );
                break;
            }
            (_, a) => bail!(
                "CompleteMultipartUpload answered {:?}: {}",
                a.as_ref().map(|a| a.status),
                a.as_ref()
                    .map(|a| String::from_utf8_lossy(&a.body).to_string())
                    .unwrap_or_default()
            ),
        }
    }
    if interrupted {
        load.ledger
            .interrupted_uploads_finished
            .fetch_add(1, Ordering::Relaxed);
    }
    Ok(true)
}

/// CreateUser, then PutUserPolicy on each user created, until the load stops.
pub fn iam_worker(load: Arc<Load>) {
    let Ok(c) = load.client() else {
        return load.fail("no client".into());
    };
    let mut n = 0u64;
    while !load.stopped() {
        n += 1;
        let user = format!("crash-user-{n}");
        let (o, _) = send(
            &load,
            &c,
            &iam_msg(
                &c,
                &format!("Action=CreateUser&Version=2010-05-08&UserName={user}"),
            ),
        );
        let created = matches!(o, Outcome::Acked(_));
        load.ledger
            .push(format!("CreateUser {user}"), o, Effect::User(user.clone()));
        if !created {
            continue;
        }
        let doc = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
            "Action": "s3:GetObject", "Resource": format!("arn:aws:s3:::{DATA_BUCKET}/{user}/*")}]})
        .to_string();
        let (o, _) = send(
            &load,
            &c,
            &iam_msg(
                &c,
                &format!(
                    "Action=PutUserPolicy&Version=2010-05-08&UserName={user}&PolicyName=p&PolicyDocument={}",
                    enc(&doc)
                ),
            ),
        );
        load.ledger.push(
            format!("PutUserPolicy {user}"),
            o,
            Effect::UserPolicy { user, doc },
        );
    }
}

/// Creates side trails (into the log bucket, under their own prefix), then starts and stops
/// them, until the load stops.
pub fn trail_worker(load: Arc<Load>, bucket: &'static str, seed: u64) {
    let Ok(c) = load.client() else {
        return load.fail("no client".into());
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut trails: Vec<String> = Vec::new();
    let mut n = 0usize;
    while !load.stopped() {
        n += 1;
        if trails.len() < SIDE_TRAILS {
            let name = format!("side-{n}");
            let (o, a) = send(
                &load,
                &c,
                &cloudtrail_msg(
                    &c,
                    "CreateTrail",
                    &json!({"Name": name, "S3BucketName": bucket, "S3KeyPrefix": name}),
                ),
            );
            if matches!(o, Outcome::Acked(_)) {
                trails.push(name.clone());
            } else if let (Outcome::Refused(s, _), Some(a)) = (&o, a) {
                if *s != 503 {
                    load.fail(format!(
                        "CreateTrail {name} answered {s}: {}",
                        String::from_utf8_lossy(&a.body)
                    ));
                }
            }
            load.ledger
                .push(format!("CreateTrail {name}"), o, Effect::Trail(name));
        } else {
            let name = trails[rng.gen_range(0..trails.len())].clone();
            let on = rng.gen_bool(0.5);
            let op = if on { "StartLogging" } else { "StopLogging" };
            let (o, _) = send(&load, &c, &cloudtrail_msg(&c, op, &json!({ "Name": name })));
            load.ledger.push(
                format!("{op} {name}"),
                o,
                Effect::Logging { trail: name, on },
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// LookupEvents' event ids for CreateUser events in `[from, to]`, every page.
pub fn lookup_ids(c: &Client, from: i64, to: i64) -> Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    let mut token: Option<String> = None;
    loop {
        let mut q = json!({"LookupAttributes": [{"AttributeKey": "EventName", "AttributeValue": "CreateUser"}],
            "StartTime": from, "EndTime": to, "MaxResults": 50});
        if let Some(t) = &token {
            q["NextToken"] = json!(t);
        }
        let v = c.cloudtrail("LookupEvents", &q)?;
        for e in v["Events"].as_array().into_iter().flatten() {
            out.insert(e["EventId"].as_str().unwrap_or_default().to_string());
        }
        match v["NextToken"].as_str() {
            Some(t) => token = Some(t.to_string()),
            None => return Ok(out),
        }
    }
}

/// Every CreateUser event LookupEvents has, by request id (all pages).
fn lookup_request_ids(c: &Client, from: i64) -> Result<HashMap<String, usize>> {
    let mut out: HashMap<String, usize> = HashMap::new();
    let mut token: Option<String> = None;
    loop {
        let mut q = json!({"LookupAttributes": [{"AttributeKey": "EventName", "AttributeValue": "CreateUser"}],
            "StartTime": from, "MaxResults": 50});
        if let Some(t) = &token {
            q["NextToken"] = json!(t);
        }
        let v = c.cloudtrail("LookupEvents", &q)?;
        for e in v["Events"].as_array().into_iter().flatten() {
            let rec: Value = serde_json::from_str(e["CloudTrailEvent"].as_str().unwrap_or("{}"))?;
            *out.entry(rec["requestID"].as_str().unwrap_or_default().to_string())
                .or_default() += 1;
        }
        match v["NextToken"].as_str() {
            Some(t) => token = Some(t.to_string()),
            None => return Ok(out),
        }
    }
}

/// What the store must hold at the end, per object: folded over the ledger in order (each key
/// is written by one worker, one request at a time).
#[derive(Debug, Clone, PartialEq)]
enum Want {
    Present(String),
    Absent,
    /// Either absent or exactly this content.
    Maybe(String),
}

/// Reads back every effect through the running server. Returns the problems found and a
/// summary line per kind.
pub fn check_effects(
    c: &Client,
    ledger: &Ledger,
    started_ms: i64,
) -> Result<(Vec<String>, Finals)> {
    let entries = ledger.entries.lock().unwrap_or_else(|p| p.into_inner());
    let mut problems = Vec::new();
    let mut finals = Finals::default();
    let mut objects: BTreeMap<(String, String), Want> = BTreeMap::new();
    let mut users: BTreeMap<String, Want> = BTreeMap::new();
    let mut policies: BTreeMap<String, Want> = BTreeMap::new();
    let mut trails: BTreeMap<String, Want> = BTreeMap::new();
    // trail → the logging states it may be in
    let mut logging: BTreeMap<String, BTreeSet<bool>> = BTreeMap::new();
    for e in entries.iter() {
        let done = matches!(e.outcome, Outcome::Acked(_) | Outcome::Inferred);
        let unknown = matches!(e.outcome, Outcome::Unknown);
        match &e.effect {
            Effect::None => {}
            Effect::Object { bucket, key, sha } => {
                let w = objects
                    .entry((bucket.clone(), key.clone()))
                    .or_insert(Want::Absent);
                if done {
                    *w = Want::Present(sha.clone());
                } else if unknown && *w == Want::Absent {
                    *w = Want::Maybe(sha.clone());
                }
            }
            Effect::Deleted { bucket, key } => {
                let w = objects
                    .entry((bucket.clone(), key.clone()))
                    .or_insert(Want::Absent);
                if done {
                    *w = Want::Absent;
                } else if unknown {
                    if let Want::Present(s) = w.clone() {
                        *w = Want::Maybe(s);
                    }
                }
            }
            Effect::User(u) => {
                let w = users.entry(u.clone()).or_insert(Want::Absent);
                if done {
                    *w = Want::Present(String::new());
                } else if unknown {
                    *w = Want::Maybe(String::new());
                }
            }
            Effect::UserPolicy { user, doc } => {
                let w = policies.entry(user.clone()).or_insert(Want::Absent);
                if done {
                    *w = Want::Present(doc.clone());
                } else if unknown {
                    *w = Want::Maybe(doc.clone());
                }
            }
            Effect::Trail(t) => {
                let w = trails.entry(t.clone()).or_insert(Want::Absent);
                if done {
                    *w = Want::Present(String::new());
                } else if unknown {
                    *w = Want::Maybe(String::new());
                }
                logging.entry(t.clone()).or_insert_with(|| [false].into());
            }
            Effect::Logging { trail, on } => {
                let s = logging.entry(trail.clone()).or_default();
                if done {
                    *s = [*on].into();
                } else if unknown {
                    s.insert(*on);
                }
            }
        }
    }
    drop(entries);
    for ((bucket, key), want) in &objects {
        let got = c.s3_get(&format!("/{bucket}/{key}"), "")?;
        let have = match got.status {
            200 => Some(sha_hex(&got.body)),
            404 => None,
            s => bail!("GetObject {bucket}/{key} answered {s}"),
        };
        let ok = match (want, &have) {
            (Want::Present(w), Some(h)) | (Want::Maybe(w), Some(h)) => w == h,
            (Want::Absent | Want::Maybe(_), None) => true,
            _ => false,
        };
        if !ok {
            problems.push(format!(
                "object {bucket}/{key}: want {want:?}, have {}",
                have.as_deref().unwrap_or("nothing")
            ));
        }
        finals
            .present
            .insert(format!("{bucket}/{key}"), have.is_some());
    }
    for (user, want) in &users {
        let a = c.exchange(&iam_msg(
            c,
            &format!("Action=GetUser&Version=2010-05-08&UserName={user}"),
        ))?;
        let exists = match a.status {
            200 => true,
            404 => false,
            s => bail!("GetUser {user} answered {s}"),
        };
        if exists != matches!(want, Want::Present(_)) && !matches!(want, Want::Maybe(_)) {
            problems.push(format!("user {user}: want {want:?}, exists {exists}"));
        }
        finals.present.insert(format!("user {user}"), exists);
    }
    for (user, want) in &policies {
        let a = c.exchange(&iam_msg(
            c,
            &format!("Action=GetUserPolicy&Version=2010-05-08&UserName={user}&PolicyName=p"),
        ))?;
        let have = match a.status {
            200 => {
                let xml = String::from_utf8_lossy(&a.body).to_string();
                let doc = xml_field(&xml, "PolicyDocument").unwrap_or_default();
                Some(
                    percent_encoding::percent_decode_str(doc)
                        .decode_utf8_lossy()
                        .to_string(),
                )
            }
            404 => None,
            s => bail!("GetUserPolicy {user} answered {s}"),
        };
        let same = |w: &str, h: &str| {
            serde_json::from_str::<Value>(w).ok() == serde_json::from_str::<Value>(h).ok()
        };
        let ok = match (want, &have) {
            (Want::Present(w) | Want::Maybe(w), Some(h)) => same(w, h),
            (Want::Absent | Want::Maybe(_), None) => true,
            _ => false,
        };
        if !ok {
            problems.push(format!("policy of {user}: want {want:?}, have {have:?}"));
        }
        finals
            .present
            .insert(format!("policy {user}"), have.is_some());
    }
    for (trail, want) in &trails {
        let st = c.cloudtrail("GetTrailStatus", &json!({ "Name": trail }));
        let exists = match &st {
            Ok(_) => true,
            Err(e) if e.to_string().contains("(TrailNotFoundException)") => false,
            Err(e) => bail!("GetTrailStatus {trail}: {e:#}"),
        };
        if exists != matches!(want, Want::Present(_)) && !matches!(want, Want::Maybe(_)) {
            problems.push(format!("trail {trail}: want {want:?}, exists {exists}"));
        }
        if let (Ok(st), Some(allowed)) = (st, logging.get(trail)) {
            let on = st["IsLogging"].as_bool().unwrap_or(false);
            if !allowed.contains(&on) {
                problems.push(format!(
                    "trail {trail}: logging {on}, the ledger allows {allowed:?}"
                ));
            }
        }
    }
    // Every acknowledged CreateUser is in LookupEvents, once.
    let found = lookup_request_ids(c, started_ms / 1000)?;
    let entries = ledger.entries.lock().unwrap_or_else(|p| p.into_inner());
    for e in entries.iter() {
        if let (Outcome::Acked(id), Effect::User(_)) = (&e.outcome, &e.effect) {
            match found.get(id) {
                Some(1) => {}
                n => problems.push(format!(
                    "{} (request {id}): {} times in LookupEvents",
                    e.op,
                    n.copied().unwrap_or(0)
                )),
            }
        }
    }
    println!(
        "mixed load            {} requests: {} objects, {} users, {} side trails checked",
        entries.len(),
        objects.len(),
        users.len(),
        trails.len()
    );
    Ok((problems, finals))
}

/// What the end state holds, by what names it: `bucket/key`, `user NAME`, `policy NAME`.
#[derive(Default)]
pub struct Finals {
    pub present: BTreeMap<String, bool>,
}

/// What a delivered record of PutObject, DeleteObject, CompleteMultipartUpload, CreateUser
/// or PutUserPolicy names (as [`Finals`] does): (operation, what).
pub fn named(r: &Value) -> Option<(String, String)> {
    let name = r["eventName"].as_str()?;
    let p = &r["requestParameters"];
    let what = match name {
        "PutObject" | "DeleteObject" | "CompleteMultipartUpload" => {
            format!("{}/{}", p["bucketName"].as_str()?, p["key"].as_str()?)
        }
        "CreateUser" => format!("user {}", p["userName"].as_str()?),
        "PutUserPolicy" => format!("policy {}", p["userName"].as_str()?),
        _ => return None,
    };
    Some((name.to_string(), what))
}

/// Checks each ledger request against the delivered records (request id → the `errorCode` of
/// each record with that id), and every effect against its success records (`successes`:
/// (operation, what it names) → how many records say it succeeded): an effect that is there
/// has one (`unknowns`: records of requests cut by a crash whose outcome is unknown count
/// too), for unanswered requests as well; one that is not there has no success record.
pub fn check_events(
    ledger: &Ledger,
    delivered: &HashMap<String, Vec<Option<String>>>,
    successes: &HashMap<(String, String), usize>,
    unknowns: &HashMap<(String, String), usize>,
    finals: &Finals,
    kills: u32,
) -> Vec<String> {
    let entries = ledger.entries.lock().unwrap_or_else(|p| p.into_inner());
    let mut problems = Vec::new();
    // Per object: whether its put, its delete, its multipart completion was attempted.
    let mut attempted: BTreeMap<String, (bool, bool, bool)> = BTreeMap::new();
    for e in entries.iter() {
        if matches!(e.outcome, Outcome::NotSent) {
            continue;
        }
        let op = e.op.split(' ').next().unwrap_or_default();
        if let Effect::Object { bucket, key, .. } | Effect::Deleted { bucket, key } = &e.effect {
            let a = attempted.entry(format!("{bucket}/{key}")).or_default();
            match op {
                "PutObject" => a.0 = true,
                "DeleteObject" => a.1 = true,
                "CompleteMultipartUpload" => a.2 = true,
                _ => {}
            }
        }
    }
    let count = |op: &str, what: &str| {
        successes
            .get(&(op.to_string(), what.to_string()))
            .copied()
            .unwrap_or(0)
    };
    let maybe = |op: &str, what: &str| {
        unknowns
            .get(&(op.to_string(), what.to_string()))
            .copied()
            .unwrap_or(0)
    };
    // An effect that is there has its record: a success, or "outcome unknown" (a request a
    // crash cut between its intent and its outcome). A success on record for an effect that
    // is not there is what an audit trail must never say.
    let mut lies = Vec::new();
    for (what, (put, del, complete)) in &attempted {
        let present = finals.present.get(what).copied().unwrap_or(false);
        let (puts, dels, completes) = (
            count("PutObject", what),
            count("DeleteObject", what),
            count("CompleteMultipartUpload", what),
        );
        let made = puts + completes;
        let maybe_made = maybe("PutObject", what) + maybe("CompleteMultipartUpload", what);
        let maybe_del = maybe("DeleteObject", what);
        let attempted_ok =
            (*put || puts == 0) && (*complete || completes == 0) && (*del || dels == 0);
        if !attempted_ok || puts > 1 || dels > 1 {
            problems.push(format!(
                "{what}: success records PutObject {puts}, CompleteMultipartUpload {completes}, DeleteObject {dels} for what was sent"
            ));
        } else if present && made + maybe_made == 0 {
            problems.push(format!(
                "{what}: there, but no record of its making (DeleteObject {dels})"
            ));
        } else if (present && dels > 0) || (!present && made > 0 && dels == 0 && maybe_del == 0) {
            lies.push(what.clone());
        }
    }
    for (what, present) in &finals.present {
        let op = match what.split(' ').next() {
            Some("user") => "CreateUser",
            Some("policy") => "PutUserPolicy",
            _ => continue,
        };
        let n = count(op, what);
        if n > 1 || (*present && n + maybe(op, what) == 0) {
            problems.push(format!(
                "{what}: present {present}, {n} {op} success records"
            ));
        } else if !*present && n == 1 {
            lies.push(what.clone());
        }
    }
    println!(
        "recorded as done, not there  {} {:?}",
        lies.len(),
        lies.iter().take(5).collect::<Vec<_>>()
    );
    for what in &lies {
        problems.push(format!("{what}: a success on record for what is not there"));
    }
    let (mut acked, mut refused, mut unknown) = (0u64, 0u64, 0u64);
    for e in entries.iter() {
        match &e.outcome {
            Outcome::Acked(id) => {
                acked += 1;
                match delivered.get(id).map(Vec::as_slice) {
                    Some([None]) => {}
                    got => problems.push(format!(
                        "{} (request {id}) acknowledged; delivered as {got:?}",
                        e.op
                    )),
                }
            }
            Outcome::Refused(s, id) => {
                refused += 1;
                println!("  refused {s}: {} (request {id})", e.op);
                if let Some(got) = delivered.get(id) {
                    if got.len() > 1 || got.iter().any(Option::is_none) {
                        problems.push(format!(
                            "{} (request {id}) refused {s}; delivered as {got:?}",
                            e.op
                        ));
                    }
                }
            }
            Outcome::Unknown => unknown += 1,
            Outcome::Inferred | Outcome::NotSent => {}
        }
    }
    println!(
        "mixed requests        {acked} acknowledged, {refused} refused, {unknown} unanswered; {} interrupted multipart uploads finished",
        ledger.interrupted_uploads_finished.load(Ordering::Relaxed)
    );
    // A kill cuts at most one request of each worker (none is sent while a kill is under
    // way); more unanswered ones mean the server failed to answer without being killed.
    if unknown > u64::from(kills) * WORKERS_MAX {
        problems.push(format!(
            "{unknown} requests unanswered for {kills} kills: the server hangs or drops answers"
        ));
    }
    // And each unanswered one must lie at a kill: none away from one, none held too long.
    let unexplained = ledger
        .unexplained
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    println!(
        "unanswered, no kill   {} of {unknown} (for {kills} kills)",
        unexplained.len()
    );
    if !unexplained.is_empty() {
        problems.push(format!(
            "{} requests unanswered away from any kill or held too long: the server hangs or drops answers: {:?}",
            unexplained.len(),
            unexplained.iter().take(5).collect::<Vec<_>>()
        ));
    }
    if acked == 0 {
        problems.push("no request of the mixed load was acknowledged".into());
    }
    problems
}

/// The LookupEvents probe around each kill: the CreateUser events of the 8 seconds that
/// ended 3 seconds ago. After the restart, the same question must answer at least as much.
/// The index commits durably every 2 s (a kill loses what it indexed since; the restart
/// indexes it again from the journal), so what a kill puts at risk lies in the window's
/// newer end; its older end was durable several commits before. (20 s, as it was, made
/// the probes most of each kill's cycle in a debug build.)
pub fn lookup_window() -> (i64, i64) {
    let to = chrono::Utc::now().timestamp() - 3;
    (to - 8, to)
}
