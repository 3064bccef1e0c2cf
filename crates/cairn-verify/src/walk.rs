use crate::{
    PinnedDigest, PublicKey, PublicKeySource, Report, Stream, StrictState, ValidateError,
    ValidateOptions,
};
use aws_lc_rs::signature::{UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256};
use cairn_record::time::{parse_iso, DIGEST_NAME_SECONDS, ISO_SECONDS};
use cairn_store::{ObjectStore, StoreError};
use chrono::{DateTime, Duration, NaiveDateTime, TimeZone, Utc};
use rayon::prelude::*;
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use std::collections::{HashMap, HashSet};
use std::io::Read;

fn disp(t: DateTime<Utc>) -> String {
    t.format(ISO_SECONDS).to_string()
}

fn key_date(key: &str) -> Option<DateTime<Utc>> {
    let s = key.strip_suffix(".json.gz")?;
    let s = s.strip_suffix("_backfill").unwrap_or(s);
    let ts = s.get(s.len().checked_sub(16)?..)?;
    NaiveDateTime::parse_from_str(ts, DIGEST_NAME_SECONDS)
        .ok()
        .map(|n| Utc.from_utc_datetime(&n))
}

fn log_name_date(key: &str) -> Option<DateTime<Utc>> {
    let n = key.len();
    let ts = key.get(n.checked_sub(39)?..n - 25)?;
    NaiveDateTime::parse_from_str(ts, "%Y%m%dT%H%MZ")
        .ok()
        .map(|n| Utc.from_utc_datetime(&n))
}

struct Names {
    prefix: Option<String>,
    account: String,
    src: String,
    trail: String,
    home: String,
}

impl Names {
    fn with_prefix(&self, rest: String) -> String {
        match &self.prefix {
            Some(p) if !p.is_empty() => format!("{p}/{rest}"),
            _ => rest,
        }
    }
    fn digest_key(&self, t: DateTime<Utc>) -> String {
        let (a, s) = (&self.account, &self.src);
        self.with_prefix(format!(
            "AWSLogs/{a}/CloudTrail-Digest/{s}/{}/{a}_CloudTrail-Digest_{s}_{}_{}_{}.json.gz",
            t.format("%Y/%m/%d"),
            self.trail,
            self.home,
            t.format(DIGEST_NAME_SECONDS)
        ))
    }
    fn digest_prefix(&self) -> String {
        self.with_prefix(format!(
            "AWSLogs/{}/CloudTrail-Digest/{}",
            self.account, self.src
        ))
    }
    fn digest_regex(&self) -> regex::Regex {
        let p = self
            .prefix
            .as_ref()
            .filter(|p| !p.is_empty())
            .map(|p| format!("{}/", regex::escape(p)))
            .unwrap_or_default();
        let (a, s) = (regex::escape(&self.account), regex::escape(&self.src));
        let re = format!(
            r"^{p}AWSLogs/{a}/CloudTrail-Digest/{s}/\d+/\d+/\d+/{a}_CloudTrail-Digest_{s}_{}_{}_.+\.json\.gz$",
            regex::escape(&self.trail),
            regex::escape(&self.home)
        );
        regex::Regex::new(&re).unwrap_or_else(|_| regex::Regex::new("^$").expect("literal regex"))
    }
    fn log_day_prefix(&self, day: DateTime<Utc>) -> String {
        self.with_prefix(format!(
            "AWSLogs/{}/CloudTrail/{}/{}/",
            self.account,
            self.src,
            day.format("%Y/%m/%d")
        ))
    }
}

struct LogRef {
    bucket: String,
    key: String,
    hash: String,
}

enum Step {
    Status(String, bool),
    Digest {
        bucket: String,
        key: String,
        logs: Vec<LogRef>,
    },
}

enum DigestFail {
    NotFound,
    /// A complete status line.
    Invalid(String),
}

struct Loaded {
    data: serde_json::Map<String, Value>,
    sha256: String,
    signature: String,
}

fn store_abort(e: StoreError) -> ValidateError {
    ValidateError::CannotVerify(e.to_string())
}

/// Minimal DER check that `der` is SEQUENCE { INTEGER, INTEGER } (a PKCS#1 RSAPublicKey).
fn is_pkcs1_rsa_public_key(der: &[u8]) -> bool {
    fn tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let tag = *b.first()?;
        let l0 = *b.get(1)? as usize;
        let (len, hdr) = if l0 < 0x80 {
            (l0, 2)
        } else {
            let n = l0 & 0x7f;
            if n == 0 || n > 4 {
                return None;
            }
            let mut len = 0usize;
            for i in 0..n {
                len = (len << 8) | *b.get(2 + i)? as usize;
            }
            (len, 2 + n)
        };
        let body = b.get(hdr..hdr + len)?;
        Some((tag, body, &b[hdr + len..]))
    }
    let Some((0x30, body, rest)) = tlv(der) else {
        return false;
    };
    if !rest.is_empty() {
        return false;
    }
    let Some((0x02, _, rest)) = tlv(body) else {
        return false;
    };
    let Some((0x02, _, rest)) = tlv(rest) else {
        return false;
    };
    rest.is_empty()
}

fn gunzip_one_member(body: &[u8]) -> std::io::Result<(Vec<u8>, bool)> {
    let mut cur = std::io::Cursor::new(body);
    let mut out = Vec::new();
    {
        let mut d = flate2::bufread::GzDecoder::new(&mut cur);
        d.read_to_end(&mut out)?;
    }
    let trailing = (cur.position() as usize) < body.len();
    Ok((out, trailing))
}

fn load_digest(
    store: &dyn ObjectStore,
    bucket: &str,
    key: &str,
    keys: &HashMap<String, PublicKey>,
    home: &str,
    strict: bool,
    pins: &[String],
) -> Result<Result<Loaded, DigestFail>, ValidateError> {
    let line =
        |m: &str| DigestFail::Invalid(format!("Digest file\ts3://{bucket}/{key}\tINVALID: {m}"));
    let obj = match store.get(bucket, key) {
        Ok(o) => o,
        Err(StoreError::NoSuchKey { .. }) => return Ok(Err(DigestFail::NotFound)),
        Err(StoreError::Corrupt { .. }) => return Ok(Err(line("invalid format"))),
        Err(e) => return Err(store_abort(e)),
    };
    let Ok((raw, trailing)) = gunzip_one_member(&obj.body) else {
        return Ok(Err(line("invalid format")));
    };
    let Ok(Value::Object(data)) = serde_json::from_slice::<Value>(&raw) else {
        return Ok(Err(line("invalid format")));
    };
    let (Some(sig), Some(_)) = (
        obj.info.metadata.get("signature"),
        obj.info.metadata.get("signature-algorithm"),
    ) else {
        return Ok(Err(line("signature verification failed")));
    };
    for k in [
        "digestPublicKeyFingerprint",
        "digestS3Bucket",
        "digestS3Object",
        "previousDigestSignature",
        "digestEndTime",
        "digestStartTime",
    ] {
        if !data.contains_key(k) {
            return Ok(Err(line("invalid format")));
        }
    }
    if data["digestS3Bucket"].as_str() != Some(bucket)
        || data["digestS3Object"].as_str() != Some(key)
    {
        return Ok(Err(line("has been moved from its original location")));
    }
    let fp = data["digestPublicKeyFingerprint"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let Some(pk) = keys.get(&fp) else {
        return Ok(Err(line(&format!(
            "public key not found in region {home} for fingerprint {fp}"
        ))));
    };
    if !is_pkcs1_rsa_public_key(&pk.der) {
        return Ok(Err(line(&format!(
            "Unable to load PKCS #1 key with fingerprint {fp}"
        ))));
    }
    let sig_bytes = match hex::decode(sig) {
        Ok(b) => b,
        Err(hex::FromHexError::OddLength) => return Ok(Err(line("Odd-length string"))),
        Err(_) => return Ok(Err(line("Non-hexadecimal digit found"))),
    };
    let sha = hex::encode(Sha256::digest(&raw));
    let prev_sig = match &data["previousDigestSignature"] {
        Value::Null => "null".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let end = match &data["digestEndTime"] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let sts = format!("{end}\n{bucket}/{key}\n{sha}\n{prev_sig}");
    if UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &pk.der)
        .verify(sts.as_bytes(), &sig_bytes)
        .is_err()
    {
        return Ok(Err(line("signature verification failed")));
    }
    if data["digestStartTime"]
        .as_str()
        .and_then(parse_iso)
        .is_none()
        || parse_iso(&end).is_none()
    {
        return Ok(Err(line("invalid format")));
    }
    if !data.get("logFiles").is_some_and(Value::is_array) {
        return Ok(Err(line("invalid format")));
    }
    if strict && trailing {
        return Ok(Err(line("unexpected data after end of compressed stream")));
    }
    if strict && !pins.is_empty() && !pins.contains(&fp) {
        return Ok(Err(line(&format!(
            "public key fingerprint {fp} is not pinned"
        ))));
    }
    Ok(Ok(Loaded {
        data,
        sha256: sha,
        signature: sig.clone(),
    }))
}

enum LogOutcome {
    Valid,
    Line(String),
    Abort(String),
}

fn check_log(store: &dyn ObjectStore, l: &LogRef) -> LogOutcome {
    let line = |m: &str| {
        LogOutcome::Line(format!(
            "Log file\ts3://{}/{}\tINVALID: {m}",
            l.bucket, l.key
        ))
    };
    let obj = match store.get(&l.bucket, &l.key) {
        Ok(o) => o,
        Err(StoreError::NoSuchKey { .. }) => return line("not found"),
        Err(StoreError::Corrupt { .. }) => return line("invalid format"),
        Err(e) => return LogOutcome::Abort(e.to_string()),
    };
    let mut cur = std::io::Cursor::new(&obj.body[..]);
    let mut sha = Sha256::new();
    {
        let mut d = flate2::bufread::GzDecoder::new(&mut cur);
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match d.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => sha.update(&buf[..n]),
                Err(_) => return line("invalid format"),
            }
        }
    }
    if (cur.position() as usize) < obj.body.len() {
        return line("unexpected data after end of compressed stream");
    }
    if hex::encode(sha.finalize()) != l.hash {
        return line("hash value doesn't match");
    }
    LogOutcome::Valid
}

/// Pops from the listing (newest last) the newest key older than `before` (or the newest).
fn get_last(stack: &mut Vec<String>, before: Option<&str>) -> Option<(String, DateTime<Utc>)> {
    let before_date = before.and_then(key_date);
    while let Some(k) = stack.pop() {
        let d = key_date(&k)?;
        match before_date {
            None => return Some((k, d)),
            Some(b) if d < b => return Some((k, d)),
            _ => {}
        }
    }
    None
}

fn list_digests(
    store: &dyn ObjectStore,
    bucket: &str,
    names: &Names,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<Vec<String>, ValidateError> {
    let marker = names.digest_key(start - Duration::minutes(1));
    let prefix = names.digest_prefix();
    let re = names.digest_regex();
    let target_start = start.format(DIGEST_NAME_SECONDS).to_string();
    let target_end = (end + Duration::hours(1))
        .format(DIGEST_NAME_SECONDS)
        .to_string();
    let mut out = vec![];
    let mut m = Some(marker);
    'pages: loop {
        let page = store
            .list(bucket, &prefix, m.as_deref(), 1000)
            .map_err(store_abort)?;
        for o in &page.objects {
            if !re.is_match(&o.key) || o.key.ends_with("_backfill.json.gz") {
                continue;
            }
            let d = &o.key[o.key.len() - 24..o.key.len() - 8];
            if d > target_end.as_str() {
                break 'pages;
            }
            if d >= target_start.as_str() {
                out.push(o.key.clone());
            }
        }
        if !page.is_truncated {
            break;
        }
        m = page.objects.last().map(|o| o.key.clone());
        if m.is_none() {
            break;
        }
    }
    Ok(out)
}

/// Runs the validation. `Err` is what the AWS CLI reports by exiting 255 (strict: exit 2).
/// The CLI's check of `--trail-arn`, made before anything is read.
pub fn check_trail_arn(arn: &str) -> Result<(), ValidateError> {
    let arn_ok = regex::Regex::new(r"^arn:.+:cloudtrail:.+:\d{12}:trail/.+$")
        .map(|r| r.is_match(arn))
        .unwrap_or(false);
    if !arn_ok {
        return Err(ValidateError::Usage(format!(
            "Invalid trail ARN provided: {arn}"
        )));
    }
    Ok(())
}

pub fn validate(
    store: &dyn ObjectStore,
    key_source: &dyn PublicKeySource,
    o: &ValidateOptions,
) -> Result<Report, ValidateError> {
    check_trail_arn(&o.trail_arn)?;
    let parts: Vec<&str> = o.trail_arn.splitn(6, ':').collect();
    let home = parts[3].to_string();
    let names = Names {
        prefix: o.prefix.clone().filter(|p| !p.is_empty()),
        account: o.account.clone().unwrap_or_else(|| parts[4].to_string()),
        src: o.source_region.clone().unwrap_or_else(|| home.clone()),
        trail: o
            .trail_arn
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string(),
        home: home.clone(),
    };
    let (start, end) = (o.start, o.end);
    if start > end {
        return Err(ValidateError::Usage(
            "Invalid time range specified: start-time must occur before end-time".into(),
        ));
    }
    let mut steps: Vec<Step> = vec![];
    let mut digests = list_digests(store, &o.bucket, &names, start, end)?;
    let key_end = end + Duration::hours(2);
    let key_list = key_source
        .list(&names.src, start, key_end)
        .map_err(ValidateError::CannotVerify)?;
    if key_list.is_empty() {
        return Err(ValidateError::CannotVerify(format!(
            "No public keys found between {} and {}",
            disp(start),
            disp(key_end)
        )));
    }
    let keys: HashMap<String, PublicKey> = key_list
        .into_iter()
        .map(|k| (k.fingerprint.clone(), k))
        .collect();

    let mut valid_digests = 0u64;
    let mut invalid_digests = 0u64;
    let mut found_start: Option<DateTime<Utc>> = None;
    let mut found_end: Option<DateTime<Utc>> = None;
    let mut newest_valid: Option<PinnedDigest> = None;
    let mut visited: HashMap<String, String> = HashMap::new();
    let mut interval = Duration::hours(1);
    let mut bucket = o.bucket.clone();
    // Strict: what the next digest must hash and sign to, from the newer digest's link.
    let mut expect: Option<(String, String, String)> = None;

    let mut cur = get_last(&mut digests, None);
    let mut last_start = cur.as_ref().map(|c| c.1);
    while let (Some((key, _)), Some(ls)) = (cur.clone(), last_start) {
        if start > ls {
            break;
        }
        match load_digest(
            store,
            &bucket,
            &key,
            &keys,
            &home,
            o.strict,
            &o.pinned_fingerprints,
        )? {
            Ok(d) => {
                let mut link_error = None;
                if o.strict {
                    if let Some((from, h, s)) = expect.take() {
                        if d.sha256 != h {
                            link_error = Some(format!("Digest file\ts3://{bucket}/{key}\tINVALID: hash does not match previousDigestHashValue of {from}"));
                        } else if d.signature != s {
                            link_error = Some(format!("Digest file\ts3://{bucket}/{key}\tINVALID: signature does not match previousDigestSignature of {from}"));
                        }
                    }
                }
                let dstart = d.data["digestStartTime"]
                    .as_str()
                    .and_then(parse_iso)
                    .unwrap_or(ls);
                let dend = d.data["digestEndTime"]
                    .as_str()
                    .and_then(parse_iso)
                    .unwrap_or(ls);
                if dend > dstart {
                    interval = dend - dstart;
                }
                last_start = Some(dstart);
                if let Some(err) = link_error {
                    invalid_digests += 1;
                    steps.push(Step::Status(err, true));
                } else {
                    valid_digests += 1;
                    found_start = Some(if dstart > start { dstart } else { start });
                    if found_end.is_none() {
                        found_end = Some(dend.min(end));
                    }
                    if newest_valid.is_none() {
                        newest_valid = Some(PinnedDigest {
                            bucket: bucket.clone(),
                            key: key.clone(),
                            end_time: disp(dend),
                            sha256: d.sha256.clone(),
                        });
                    }
                    visited.insert(key.clone(), d.sha256.clone());
                    let logs = d.data["logFiles"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .map(|l| LogRef {
                                    bucket: l["s3Bucket"].as_str().unwrap_or_default().into(),
                                    key: l["s3Object"].as_str().unwrap_or_default().into(),
                                    hash: l["hashValue"].as_str().unwrap_or_default().into(),
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    steps.push(Step::Digest {
                        bucket: bucket.clone(),
                        key: key.clone(),
                        logs,
                    });
                }
                let from = format!("s3://{bucket}/{key}");
                match (
                    d.data.get("previousDigestS3Bucket").and_then(Value::as_str),
                    d.data.get("previousDigestS3Object").and_then(Value::as_str),
                ) {
                    (Some(pb), Some(pk)) => {
                        expect = Some((
                            from,
                            d.data["previousDigestHashValue"]
                                .as_str()
                                .unwrap_or_default()
                                .into(),
                            d.data["previousDigestSignature"]
                                .as_str()
                                .unwrap_or_default()
                                .into(),
                        ));
                        let pk = pk.to_string();
                        if pb != bucket {
                            bucket = pb.to_string();
                            digests = list_digests(store, &bucket, &names, start, end)?;
                        }
                        cur = Some((pk.clone(), key_date(&pk).unwrap_or(dstart)));
                    }
                    _ => {
                        let next = get_last(&mut digests, Some(&key));
                        if let Some((_, nd)) = &next {
                            steps.push(Step::Status(
                                format!(
                                    "No log files were delivered by CloudTrail between {} and {}",
                                    disp(*nd),
                                    disp(dstart)
                                ),
                                true,
                            ));
                        }
                        if o.strict {
                            let link = (
                                d.data
                                    .get("cairnPreviousChainDigestS3Bucket")
                                    .and_then(Value::as_str),
                                d.data
                                    .get("cairnPreviousChainDigestS3Object")
                                    .and_then(Value::as_str),
                            );
                            match link {
                                (Some(lb), Some(lk)) => {
                                    let lh = d
                                        .data
                                        .get("cairnPreviousChainDigestHashValue")
                                        .and_then(Value::as_str)
                                        .unwrap_or_default()
                                        .to_string();
                                    let ls2 = d
                                        .data
                                        .get("cairnPreviousChainDigestSignature")
                                        .and_then(Value::as_str)
                                        .unwrap_or_default()
                                        .to_string();
                                    let in_range = key_date(lk).is_some_and(|t| t >= start);
                                    if next.as_ref().is_some_and(|n| n.0 == lk) {
                                        expect = Some((from.clone(), lh, ls2));
                                    } else if in_range {
                                        // The digest that ended the previous chain is not where the listing continues.
                                        match store.get(lb, lk) {
                                            Err(StoreError::NoSuchKey { .. }) => {
                                                invalid_digests += 1;
                                                steps.push(Step::Status(format!("Digest file\ts3://{lb}/{lk}\tINVALID: not found (the last digest before the chain restart at {from})"), true));
                                            }
                                            Err(e) => return Err(store_abort(e)),
                                            Ok(o) => {
                                                let h = gunzip_one_member(&o.body)
                                                    .map(|(raw, _)| {
                                                        hex::encode(Sha256::digest(&raw))
                                                    })
                                                    .unwrap_or_default();
                                                if h != lh
                                                    || o.info.metadata.get("signature")
                                                        != Some(&ls2)
                                                {
                                                    invalid_digests += 1;
                                                    steps.push(Step::Status(format!("Digest file\ts3://{lb}/{lk}\tINVALID: does not match the signed link in {from}"), true));
                                                }
                                            }
                                        }
                                    }
                                }
                                _ => {
                                    if next.is_some() {
                                        invalid_digests += 1;
                                        steps.push(Step::Status(format!("Digest file\ts3://{bucket}/{key}\tINVALID: the chain restarts here with no signed link to the previous digest"), true));
                                    }
                                }
                            }
                        }
                        cur = next;
                    }
                }
            }
            Err(fail) => {
                expect = None;
                let next = get_last(&mut digests, Some(&key));
                match fail {
                    DigestFail::NotFound => {
                        invalid_digests += 1;
                        steps.push(Step::Status(
                            format!("Digest file\ts3://{bucket}/{key}\tINVALID: not found"),
                            true,
                        ));
                        if o.strict {
                            // Every missing window down to the next digest present, not only the first.
                            let floor = next.as_ref().map(|n| n.1).unwrap_or(start);
                            if let Some(kd) = key_date(&key) {
                                let mut t = kd - interval;
                                while t > floor + Duration::seconds(1) && t >= start {
                                    invalid_digests += 1;
                                    steps.push(Step::Status(
                                        format!(
                                            "Digest file\ts3://{bucket}/{}\tINVALID: not found",
                                            names.digest_key(t)
                                        ),
                                        true,
                                    ));
                                    t -= interval;
                                }
                            }
                        }
                    }
                    DigestFail::Invalid(line) => {
                        invalid_digests += 1;
                        steps.push(Step::Status(line, true));
                    }
                }
                cur = next;
            }
        }
    }

    // Log files: fetch and hash in parallel, report in walk order.
    let all_logs: Vec<&LogRef> = steps
        .iter()
        .flat_map(|s| match s {
            Step::Digest { logs, .. } => logs.iter().collect::<Vec<_>>(),
            _ => vec![],
        })
        .collect();
    let total = all_logs.len() as u64;
    let done = std::sync::atomic::AtomicU64::new(0);
    let outcomes: Vec<LogOutcome> = all_logs
        .par_iter()
        .map(|l| {
            let r = check_log(store, l);
            let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            if let Some(p) = &o.progress {
                p(n, total);
            }
            r
        })
        .collect();
    if let Some(LogOutcome::Abort(e)) = outcomes.iter().find(|r| matches!(r, LogOutcome::Abort(_)))
    {
        return Err(ValidateError::CannotVerify(e.clone()));
    }

    // Strict: log files that no digest lists, once their delivery window has passed.
    let mut extra: Vec<(String, bool)> = vec![];
    let mut extra_invalid_logs = 0u64;
    let mut extra_invalid_digests = 0u64;
    let state_key = format!("{}|{}", o.trail_arn, names.src);
    let mut state: StrictState = StrictState::default();
    if o.strict {
        if let (Some(fs), Some(newest)) = (found_start, newest_valid.as_ref()) {
            let newest_end = parse_iso(&newest.end_time).unwrap_or(end);
            let referenced: HashSet<&str> = all_logs.iter().map(|l| l.key.as_str()).collect();
            let mut day = fs.date_naive();
            while day <= newest_end.date_naive() {
                let d = Utc.from_utc_datetime(&day.and_hms_opt(0, 0, 0).unwrap_or_default());
                for obj in cairn_store::list_all(store, &o.bucket, &names.log_day_prefix(d))
                    .map_err(store_abort)?
                {
                    let Some(t) = log_name_date(&obj.key) else {
                        continue;
                    };
                    if t >= fs
                        && t + Duration::seconds(60) <= newest_end
                        && !referenced.contains(obj.key.as_str())
                    {
                        extra_invalid_logs += 1;
                        extra.push((
                            format!(
                                "Log file\ts3://{}/{}\tINVALID: not referenced by any digest",
                                o.bucket, obj.key
                            ),
                            true,
                        ));
                    }
                }
                day = day.succ_opt().unwrap_or(day);
                if day == newest_end.date_naive() && d.date_naive() == day {
                    break;
                }
            }
        }
        // Truncation: the newest digest seen before must still be reached.
        if let Some(path) = &o.state_file {
            if let Ok(b) = std::fs::read(path) {
                state = serde_json::from_slice(&b).map_err(|e| {
                    ValidateError::CannotVerify(format!("state file {}: {e}", path.display()))
                })?;
            }
        }
        let mut pins: Vec<PinnedDigest> =
            state.newest.get(&state_key).cloned().into_iter().collect();
        if let Some(k) = &o.since_digest {
            pins.push(PinnedDigest {
                bucket: o.bucket.clone(),
                key: k.clone(),
                end_time: key_date(k).map(disp).unwrap_or_default(),
                sha256: String::new(),
            });
        }
        for pin in &pins {
            let Some(pt) = key_date(&pin.key) else {
                continue;
            };
            if pt < start || pt > end + Duration::hours(1) {
                continue;
            }
            match visited.get(&pin.key) {
                Some(sha) if pin.sha256.is_empty() || *sha == pin.sha256 => {}
                Some(_) => {
                    extra_invalid_digests += 1;
                    extra.push((format!("Digest file\ts3://{}/{}\tINVALID: differs from the copy verified before (history rewritten)", pin.bucket, pin.key), true));
                }
                None => {
                    extra_invalid_digests += 1;
                    let newest = newest_valid
                        .as_ref()
                        .map(|n| n.end_time.clone())
                        .unwrap_or_else(|| "none".into());
                    extra.push((format!("Digest file\ts3://{}/{}\tINVALID: truncation: this digest was verified before and is no longer reached (newest digest now ends {newest})", pin.bucket, pin.key), true));
                }
            }
        }
        if pins.is_empty() && valid_digests == 0 && invalid_digests == 0 {
            return Err(ValidateError::CannotVerify("No digests found, and no earlier digest is pinned to prove there should be none (use --state-file or --since-digest)".into()));
        }
    }

    // Render, with the AWS CLI's spacing rules.
    let mut r = Report::default();
    // The startup text ends in a blank line: the CLI starts "double-spaced".
    let mut double = true;
    let mut out = |r: &mut Report, msg: String, err: bool| {
        if err {
            r.lines.push((
                Stream::Err,
                if double {
                    format!("{msg}\n\n")
                } else {
                    format!("\n{msg}\n\n")
                },
            ));
            double = true;
        } else if o.verbose {
            double = false;
            r.lines.push((Stream::Out, format!("{msg}\n")));
        }
    };
    r.lines.push((
        Stream::Out,
        format!(
            "Validating log files for trail {} between {} and {}\n\n",
            o.trail_arn,
            disp(start),
            disp(end)
        ),
    ));
    let mut valid_logs = 0;
    let mut invalid_logs = extra_invalid_logs;
    let mut oi = outcomes.into_iter();
    for s in steps {
        match s {
            Step::Status(m, e) => out(&mut r, m, e),
            Step::Digest { bucket, key, logs } => {
                out(
                    &mut r,
                    format!("Digest file\ts3://{bucket}/{key}\tvalid"),
                    false,
                );
                for l in logs {
                    match oi.next() {
                        Some(LogOutcome::Valid) => {
                            valid_logs += 1;
                            out(
                                &mut r,
                                format!("Log file\ts3://{}/{}\tvalid", l.bucket, l.key),
                                false,
                            );
                        }
                        Some(LogOutcome::Line(m)) => {
                            invalid_logs += 1;
                            out(&mut r, m, true);
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    for (m, e) in extra {
        out(&mut r, m, e);
    }
    let invalid_digests = invalid_digests + extra_invalid_digests;
    let mut summary = String::new();
    if !double {
        summary.push('\n');
    }
    summary.push_str(&format!(
        "Results requested for {} to {}\n",
        disp(start),
        disp(end)
    ));
    if valid_digests == 0 && invalid_digests == 0 {
        summary.push_str("No digests found\n");
    } else {
        match (found_start, found_end) {
            (Some(fs), Some(fe)) => summary.push_str(&format!(
                "Results found for {} to {}:\n",
                disp(fs),
                disp(fe)
            )),
            _ => summary.push_str("No valid digests found in range\n"),
        }
        let ratio = |s: &mut String, v: u64, i: u64, name: &str| {
            let t = v + i;
            if t > 0 {
                s.push_str(&format!("\n{v}/{t} {name} files valid"));
                if i > 0 {
                    s.push_str(&format!(", {i}/{t} {name} files INVALID"));
                }
            }
        };
        ratio(&mut summary, valid_digests, invalid_digests, "digest");
        ratio(&mut summary, valid_logs, invalid_logs, "log");
        summary.push('\n');
    }
    r.lines.push((Stream::Out, summary));
    r.valid_digests = valid_digests;
    r.invalid_digests = invalid_digests;
    r.valid_logs = valid_logs;
    r.invalid_logs = invalid_logs;
    r.exit_code = if invalid_digests > 0 || invalid_logs > 0 {
        1
    } else {
        0
    };
    if o.strict && r.exit_code == 0 {
        if let (Some(path), Some(newest)) = (&o.state_file, newest_valid) {
            let newer = state
                .newest
                .get(&state_key)
                .is_none_or(|p| key_date(&p.key) <= key_date(&newest.key));
            if newer {
                state.newest.insert(state_key, newest);
                let tmp = path.with_extension("tmp");
                let body = serde_json::to_vec_pretty(&state).unwrap_or_default();
                std::fs::write(&tmp, body)
                    .and_then(|_| std::fs::rename(&tmp, path))
                    .map_err(|e| {
                        ValidateError::CannotVerify(format!(
                            "cannot write state file {}: {e}",
                            path.display()
                        ))
                    })?;
            }
        }
    }
    Ok(r)
}
