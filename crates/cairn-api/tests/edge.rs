//! The edge in-process: fail-closed recording, and the event history index.

mod common;
mod wire;

use cairn_api::cloudtrail::history::{History, Query};
use cairn_api::Api;
use cairn_journal::{FaultInjector, Journal, JournalOptions};
use cairn_record::{builder, Clock, SystemClock};
use cairn_store::ObjectStore;
use chrono::{Duration, Utc};
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Fails every fdatasync while armed.
struct Switch(Arc<AtomicBool>);
impl FaultInjector for Switch {
    fn before_sync(&self) -> std::io::Result<()> {
        if self.0.load(Ordering::SeqCst) {
            return Err(std::io::Error::other("injected EIO"));
        }
        Ok(())
    }
}

struct World {
    _bed: common::Testbed,
    api: Arc<Api>,
    key: String,
    secret: String,
    fail: Arc<AtomicBool>,
}

fn world() -> World {
    let fail = Arc::new(AtomicBool::new(false));
    let bed = common::testbed(
        Arc::new(SystemClock),
        Some(Arc::new(Switch(fail.clone()))),
        |_| {},
    );
    bed.store.create_bucket("logs").unwrap();
    World {
        api: bed.api.clone(),
        key: bed.key.clone(),
        secret: bed.secret.clone(),
        _bed: bed,
        fail,
    }
}

impl World {
    fn signer(&self) -> wire::Signer<'_> {
        wire::Signer {
            key: &self.key,
            secret: &self.secret,
        }
    }
}

fn call(addr: &str, w: &World, op: &str, body: &str) -> (u16, String) {
    wire::call(addr, &w.signer(), op, body)
}

fn s3_call(
    addr: &str,
    w: &World,
    method: &str,
    path: &str,
    query: &str,
    body: &str,
) -> (u16, String) {
    wire::s3_call(addr, &w.signer(), method, path, query, body)
}

fn iam_call(addr: &str, w: &World, form: &str) -> (u16, String) {
    wire::iam_call(addr, &w.signer(), form)
}

#[test]
fn a_request_whose_event_cannot_be_made_durable_fails_closed_and_changes_nothing() {
    let w = world();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let server = rt
        .block_on(cairn_api::serve(w.api.clone(), listener, None))
        .unwrap();
    let addr = server.local_addr.to_string();
    let (st, _) = call(&addr, &w, "ListTrails", "{}");
    assert_eq!(st, 200);

    w.fail.store(true, Ordering::SeqCst);
    let (st, body) = call(
        &addr,
        &w,
        "CreateTrail",
        r#"{"Name":"t1","S3BucketName":"logs"}"#,
    );
    assert_eq!(st, 503, "{body}");
    assert!(body.contains("ServiceUnavailable"), "{body}");
    let (st, body) = call(&addr, &w, "ListTrails", "{}");
    assert_eq!(
        st, 503,
        "a read is refused too: its event cannot be recorded: {body}"
    );

    w.fail.store(false, Ordering::SeqCst);
    assert!(
        w.api.engine.trail("t1").is_none(),
        "the refused CreateTrail was never acknowledged and never applied"
    );
    let (st, body) = call(&addr, &w, "ListTrails", "{}");
    assert_eq!(st, 200, "{body}");
    assert_eq!(body, r#"{"Trails":[]}"#);
    rt.block_on(server.shutdown(std::time::Duration::from_secs(5)));
}

/// S3 writes are prepared, then made only once their event is durable: with the journal
/// failing, every write gets 503 and nothing changes — no object, no deletion, no bucket,
/// no policy, no tags — and once it recovers the same requests succeed.
#[test]
fn s3_writes_whose_event_cannot_be_made_durable_change_nothing() {
    let w = world();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let server = rt
        .block_on(cairn_api::serve(w.api.clone(), listener, None))
        .unwrap();
    let addr = server.local_addr.to_string();
    assert_eq!(
        s3_call(&addr, &w, "PUT", "/logs/kept", "", "original").0,
        200
    );
    let files = |w: &World| {
        let store = w.api.store.clone();
        cairn_store::list_all(store.as_ref(), "logs", "").unwrap()
    };
    let before = files(&w);

    w.fail.store(true, Ordering::SeqCst);
    let policy = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Principal":"*","Action":"s3:*","Resource":"arn:aws:s3:::logs/*"}]}"#;
    let tagging = "<Tagging><TagSet><Tag><Key>k</Key><Value>v</Value></Tag></TagSet></Tagging>";
    for (method, path, query, body) in [
        ("PUT", "/logs/new", "", "fresh"),
        ("PUT", "/logs/kept", "", "overwritten"),
        ("DELETE", "/logs/kept", "", ""),
        ("PUT", "/newbucket", "", ""),
        ("PUT", "/logs", "policy", policy),
        ("PUT", "/logs/kept", "tagging", tagging),
        (
            "POST",
            "/logs",
            "delete",
            "<Delete><Object><Key>kept</Key></Object></Delete>",
        ),
    ] {
        let (st, b) = s3_call(&addr, &w, method, path, query, body);
        assert_eq!(st, 503, "{method} {path}?{query}: {b}");
        assert!(b.contains("ServiceUnavailable"), "{b}");
    }
    w.fail.store(false, Ordering::SeqCst);

    assert_eq!(files(&w), before, "no object appeared, changed or went");
    let obj = w.api.store.get("logs", "kept").unwrap();
    assert_eq!(obj.body, b"original");
    assert!(!obj.info.system.contains_key("tagging"), "no tags were set");
    assert!(!w.api.store.bucket_exists("newbucket").unwrap());
    assert!(w
        .api
        .meta
        .get::<String>("bucket-policy/logs")
        .unwrap()
        .is_none());
    // The same writes succeed once events can be recorded again.
    assert_eq!(s3_call(&addr, &w, "PUT", "/logs/new", "", "fresh").0, 200);
    assert_eq!(w.api.store.get("logs", "new").unwrap().body, b"fresh");
    assert_eq!(s3_call(&addr, &w, "DELETE", "/logs/kept", "", "").0, 204);
    assert!(w.api.store.get("logs", "kept").is_err());
    rt.block_on(server.shutdown(std::time::Duration::from_secs(5)));
}

/// IAM changes that need no generated value (policies, deletions, key status) are made only
/// once their event is durable: with the journal failing, nothing changes.
#[test]
fn iam_changes_whose_event_cannot_be_made_durable_change_nothing() {
    let w = world();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let server = rt
        .block_on(cairn_api::serve(w.api.clone(), listener, None))
        .unwrap();
    let addr = server.local_addr.to_string();
    w.api.iam.create_user("alice", None, Utc::now()).unwrap();
    let doc = "%7B%22Statement%22%3A%5B%7B%22Effect%22%3A%22Allow%22%2C%22Action%22%3A%22*%22%2C%22Resource%22%3A%22*%22%7D%5D%7D";
    let put = format!("Action=PutUserPolicy&Version=2010-05-08&UserName=alice&PolicyName=admin&PolicyDocument={doc}");
    w.fail.store(true, Ordering::SeqCst);
    let (st, body) = iam_call(&addr, &w, &put);
    assert_eq!(st, 503, "{body}");
    let (st, _) = iam_call(
        &addr,
        &w,
        "Action=DeleteUser&Version=2010-05-08&UserName=alice",
    );
    assert_eq!(st, 503);
    w.fail.store(false, Ordering::SeqCst);
    assert!(
        w.api
            .iam
            .list_policies(cairn_iam::identity::Holder::User, "alice")
            .unwrap()
            .is_empty(),
        "an unrecorded PutUserPolicy must not grant anything"
    );
    assert!(
        w.api.iam.get_user("alice").is_ok(),
        "the user was not deleted"
    );
    let (st, body) = iam_call(&addr, &w, &put);
    assert_eq!(st, 200, "{body}");
    assert_eq!(
        w.api
            .iam
            .list_policies(cairn_iam::identity::Holder::User, "alice")
            .unwrap(),
        vec!["admin"]
    );
    rt.block_on(server.shutdown(std::time::Duration::from_secs(5)));
}

/// Trail changes, channels and multipart parts are made only once their own event is
/// durable: with the journal failing nothing changes, and a StopLogging, once recorded, is
/// delivered by the very trail it stops.
#[test]
fn trail_channel_and_part_changes_whose_event_cannot_be_made_durable_change_nothing() {
    let w = world();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let server = rt
        .block_on(cairn_api::serve(w.api.clone(), listener, None))
        .unwrap();
    let addr = server.local_addr.to_string();
    let ok = |r: (u16, String)| {
        assert_eq!(r.0, 200, "{}", r.1);
        r.1
    };
    ok(call(
        &addr,
        &w,
        "CreateTrail",
        r#"{"Name":"tr1","S3BucketName":"logs"}"#,
    ));
    ok(call(&addr, &w, "StartLogging", r#"{"Name":"tr1"}"#));
    let ch = ok(call(
        &addr,
        &w,
        "CreateChannel",
        r#"{"Name":"chan-one","Source":"Custom","Destinations":[{"Type":"EVENT_DATA_STORE","Location":"x-y-z"}]}"#,
    ));
    let channel: serde_json::Value = serde_json::from_str(&ch).unwrap();
    let channel_arn = channel["ChannelArn"].as_str().unwrap().to_string();
    let up = ok(s3_call(&addr, &w, "POST", "/logs/big", "uploads", ""));
    let id = up
        .split("<UploadId>")
        .nth(1)
        .and_then(|x| x.split("</UploadId>").next())
        .unwrap()
        .to_string();
    let part = format!("partNumber=1&uploadId={id}");
    ok(s3_call(&addr, &w, "PUT", "/logs/big", &part, "first"));

    w.fail.store(true, Ordering::SeqCst);
    let arn = format!("arn:aws:cloudtrail:us-east-1:{}:trail/tr1", common::ACCOUNT);
    for (op, body) in [
        ("StopLogging", r#"{"Name":"tr1"}"#.to_string()),
        ("DeleteTrail", r#"{"Name":"tr1"}"#.to_string()),
        (
            "PutEventSelectors",
            r#"{"TrailName":"tr1","EventSelectors":[{"ReadWriteType":"ReadOnly","IncludeManagementEvents":true}]}"#
                .to_string(),
        ),
        (
            "UpdateTrail",
            r#"{"Name":"tr1","EnableLogFileValidation":true}"#.to_string(),
        ),
        (
            "AddTags",
            format!(r#"{{"ResourceId":"{arn}","TagsList":[{{"Key":"k","Value":"v"}}]}}"#),
        ),
        (
            "CreateChannel",
            r#"{"Name":"chan-two","Source":"Custom","Destinations":[{"Type":"EVENT_DATA_STORE","Location":"x-y-z"}]}"#
                .to_string(),
        ),
        ("DeleteChannel", format!(r#"{{"Channel":"{channel_arn}"}}"#)),
    ] {
        let (st, b) = call(&addr, &w, op, &body);
        assert_eq!(st, 503, "{op}: {b}");
    }
    let (st, b) = s3_call(&addr, &w, "PUT", "/logs/big", &part, "second");
    assert_eq!(st, 503, "{b}");
    w.fail.store(false, Ordering::SeqCst);

    let t = w
        .api
        .engine
        .trail("tr1")
        .expect("the trail was not deleted");
    assert!(t.logging, "the trail was not stopped");
    assert!(!t.config.log_file_validation, "the trail was not updated");
    assert!(
        w.api
            .meta
            .get::<Vec<(String, String)>>(&format!("tags/{arn}"))
            .unwrap()
            .unwrap_or_default()
            .is_empty(),
        "no tags were added"
    );
    let channels = ok(call(&addr, &w, "ListChannels", "{}"));
    assert!(
        channels.contains("chan-one") && !channels.contains("chan-two"),
        "{channels}"
    );
    let parts = ok(s3_call(
        &addr,
        &w,
        "GET",
        "/logs/big",
        &format!("uploadId={id}"),
        "",
    ));
    let first_etag = hex::encode(<md5::Md5 as md5::Digest>::digest(b"first"));
    assert!(
        parts.contains(&first_etag),
        "part 1 is still the first upload: {parts}"
    );
    let complete = format!(
        "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>\"{first_etag}\"</ETag></Part></CompleteMultipartUpload>"
    );
    ok(s3_call(
        &addr,
        &w,
        "POST",
        "/logs/big",
        &format!("uploadId={id}"),
        &complete,
    ));
    assert_eq!(w.api.store.get("logs", "big").unwrap().body, b"first");

    // Recorded now: the StopLogging event precedes the stop, so the trail delivers it.
    ok(call(&addr, &w, "StopLogging", r#"{"Name":"tr1"}"#));
    assert!(!w.api.engine.trail("tr1").unwrap().logging);
    w.api.engine.flush().unwrap();
    let mut names = Vec::new();
    for info in cairn_store::list_all(w.api.store.as_ref(), "logs", "AWSLogs/")
        .unwrap()
        .iter()
        .filter(|i| i.key.contains("/CloudTrail/"))
    {
        let gz = w.api.store.get("logs", &info.key).unwrap().body;
        let mut text = String::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_string(&mut text)
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        for r in v["Records"].as_array().unwrap() {
            names.push(r["eventName"].as_str().unwrap_or("").to_string());
        }
    }
    assert!(
        names.iter().any(|n| n == "StopLogging"),
        "the trail delivered its own StopLogging: {names:?}"
    );
    rt.block_on(server.shutdown(std::time::Duration::from_secs(5)));
}

/// A toy part cipher: enough to see parts are handed to the cipher with their name, never
/// written as they came (the real one, SSE-S3, is tested in the `cairn` crate).
struct Marked;
impl cairn_store::BodyCipher for Marked {
    fn seal(&self, plain: &[u8], context: &[u8]) -> Result<Vec<u8>, String> {
        let mut out = context.to_vec();
        out.push(0);
        out.extend(plain.iter().map(|b| b ^ 0x5a));
        Ok(out)
    }
    fn open(&self, sealed: &[u8], context: &[u8]) -> Result<Vec<u8>, String> {
        let body = sealed
            .strip_prefix(context)
            .and_then(|r| r.strip_prefix(&[0u8]))
            .ok_or("wrong context")?;
        Ok(body.iter().map(|b| b ^ 0x5a).collect())
    }
    fn chunk_key(
        &self,
        context: &[u8],
        _wrapped: Option<&[u8]>,
    ) -> Result<Box<dyn cairn_store::ChunkKey>, String> {
        Ok(Box::new(MarkedChunks(context.to_vec())))
    }
}

/// Chunks of the toy cipher: XOR, and a "tag" that is the context's first bytes.
struct MarkedChunks(Vec<u8>);
impl MarkedChunks {
    fn tag(&self) -> [u8; 16] {
        let mut t = [0u8; 16];
        for (i, b) in self.0.iter().take(16).enumerate() {
            t[i] = *b;
        }
        t
    }
}
impl cairn_store::ChunkKey for MarkedChunks {
    fn seal(&self, _index: u64, _last: bool, buf: &mut Vec<u8>) -> Result<(), String> {
        buf.iter_mut().for_each(|b| *b ^= 0x5a);
        buf.extend_from_slice(&self.tag());
        Ok(())
    }
    fn open(&self, _index: u64, _last: bool, buf: &mut Vec<u8>) -> Result<(), String> {
        let n = buf.len().checked_sub(16).ok_or("short chunk")?;
        if buf[n..] != self.tag() {
            return Err("wrong context".into());
        }
        buf.truncate(n);
        buf.iter_mut().for_each(|b| *b ^= 0x5a);
        Ok(())
    }
}

/// Multipart parts wait under the data directory readable by cairn's user only, sealed, and
/// an upload nobody completes is aborted: after its bucket's AbortIncompleteMultipartUpload
/// days, or after the default expiry.
#[test]
fn multipart_parts_are_private_sealed_and_expire() {
    use std::os::unix::fs::PermissionsExt;
    let clock = cairn_record::ManualClock::new(Utc::now());
    let bed = common::testbed(Arc::new(clock.clone()), None, |o| {
        o.part_cipher = Some(cairn_api::PartCipher(Arc::new(Marked)));
    });
    bed.store.create_bucket("logs").unwrap();
    bed.store.create_bucket("other").unwrap();
    let w = World {
        api: bed.api.clone(),
        key: bed.key.clone(),
        secret: bed.secret.clone(),
        fail: Arc::new(AtomicBool::new(false)),
        _bed: bed,
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let server = rt
        .block_on(cairn_api::serve(w.api.clone(), listener, None))
        .unwrap();
    let addr = server.local_addr.to_string();
    let upload = |bucket: &str, key: &str| {
        let (st, body) = s3_call(
            &addr,
            &w,
            "POST",
            &format!("/{bucket}/{key}"),
            "uploads",
            "",
        );
        assert_eq!(st, 200, "{body}");
        body.split("<UploadId>")
            .nth(1)
            .and_then(|x| x.split("</UploadId>").next())
            .unwrap()
            .to_string()
    };
    let id = upload("logs", "done");
    let part = format!("partNumber=1&uploadId={id}");
    assert_eq!(
        s3_call(&addr, &w, "PUT", "/logs/done", &part, "hello part").0,
        200
    );
    let dir = w.api.opts.multipart_dir.join(&id);
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&files[0]), 0o600);
    let raw = std::fs::read(&files[0]).unwrap();
    assert!(
        !raw.windows(10).any(|x| x == b"hello part"),
        "a part is never written as it came"
    );
    let etag = hex::encode(<md5::Md5 as md5::Digest>::digest(b"hello part"));
    let complete = format!(
        "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>\"{etag}\"</ETag></Part></CompleteMultipartUpload>"
    );
    let (st, body) = s3_call(
        &addr,
        &w,
        "POST",
        "/logs/done",
        &format!("uploadId={id}"),
        &complete,
    );
    assert_eq!(st, 200, "{body}");
    assert_eq!(w.api.store.get("logs", "done").unwrap().body, b"hello part");
    assert!(!dir.exists(), "a completed upload leaves no part behind");

    // Two uploads nobody completes: one under a bucket rule (1 day), one under the default.
    let rule = "<LifecycleConfiguration><Rule><ID>abort</ID><Filter><Prefix></Prefix></Filter><Status>Enabled</Status><AbortIncompleteMultipartUpload><DaysAfterInitiation>1</DaysAfterInitiation></AbortIncompleteMultipartUpload></Rule></LifecycleConfiguration>";
    assert_eq!(s3_call(&addr, &w, "PUT", "/logs", "lifecycle", rule).0, 200);
    let ruled = upload("logs", "stale");
    let defaulted = upload("other", "stale");
    for (b, id) in [("logs", &ruled), ("other", &defaulted)] {
        let q = format!("partNumber=1&uploadId={id}");
        assert_eq!(
            s3_call(&addr, &w, "PUT", &format!("/{b}/stale"), &q, "left").0,
            200
        );
    }
    rt.block_on(server.shutdown(std::time::Duration::from_secs(5)));
    let pending = |w: &World, id: &str| {
        w.api
            .meta
            .get::<serde_json::Value>(&format!("upload/{id}"))
            .unwrap()
            .is_some()
    };
    assert_eq!(
        cairn_api::s3::lifecycle::run_once(&w.api)
            .unwrap()
            .uploads_aborted,
        0
    );
    clock.advance(Duration::days(2));
    assert_eq!(
        cairn_api::s3::lifecycle::run_once(&w.api)
            .unwrap()
            .uploads_aborted,
        1
    );
    assert!(!pending(&w, &ruled) && pending(&w, &defaulted));
    assert!(!w.api.opts.multipart_dir.join(&ruled).exists());
    clock.advance(Duration::days(6));
    assert_eq!(
        cairn_api::s3::lifecycle::run_once(&w.api)
            .unwrap()
            .uploads_aborted,
        1
    );
    assert!(!pending(&w, &defaulted));
    assert!(!w.api.opts.multipart_dir.join(&defaulted).exists());
}

#[test]
fn history_pages_newest_first_filters_and_prunes() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Arc::new(Journal::open(dir.path().join("j"), JournalOptions::default()).unwrap());
    let h = History::open(&dir.path().join("h.redb"), journal.clone()).unwrap();
    let now = Utc::now();
    for i in 0..120i64 {
        let id = builder::iam_user_identity(
            "123456789012",
            if i % 3 == 0 { "alice" } else { "bob" },
            "AIDA1",
            "AKIA1",
        );
        let name = if i % 2 == 0 {
            "GetTrail"
        } else {
            "StopLogging"
        };
        let at = now - Duration::minutes(200 - i);
        let rec = builder::management(
            "cloudtrail.amazonaws.com",
            name,
            if i % 10 == 0 {
                "eu-west-1"
            } else {
                "us-east-1"
            },
            at,
            id,
            i % 2 == 0,
        );
        journal
            .append(&cairn_trail::entry::encode_event(&rec))
            .unwrap();
    }
    // A data event goes to its own partition.
    let data = builder::s3_object(
        "GetObject",
        "us-east-1",
        now,
        builder::root_identity("123456789012", None),
        "123456789012",
        "b",
        "k",
        "h",
    );
    journal
        .append(&cairn_trail::entry::encode_event(&data))
        .unwrap();
    while h.step(1000).unwrap() > 0 {}

    let q = |attrs: Vec<(u8, &str)>, max: usize| Query {
        region: "us-east-1".into(),
        attributes: attrs.into_iter().map(|(k, v)| (k, v.to_string())).collect(),
        start: now - Duration::days(1),
        end: now,
        max_results: max,
        data_events: false,
        after: None,
    };
    let mut all = Vec::new();
    let mut query = q(vec![], 7);
    loop {
        let (page, next) = h.lookup(&query).unwrap();
        assert!(page.len() <= 7);
        all.extend(page);
        match next {
            Some(n) => query.after = Some(n),
            None => break,
        }
    }
    assert_eq!(all.len(), 108, "us-east-1 management events only");
    let times: Vec<i64> = all
        .iter()
        .map(|e| e["EventTime"].as_i64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "newest first");

    let (stops, _) = h.lookup(&q(vec![(1, "StopLogging")], 50)).unwrap();
    assert_eq!(stops.len(), 50);
    assert!(stops.iter().all(|e| e["EventName"] == "StopLogging"));
    let (ro, _) = h.lookup(&q(vec![(2, "true")], 50)).unwrap();
    assert!(!ro.is_empty() && ro.iter().all(|e| e["ReadOnly"] == "true"));
    let (alice_stops, _) = h
        .lookup(&q(vec![(3, "alice"), (1, "StopLogging")], 50))
        .unwrap();
    assert!(alice_stops
        .iter()
        .all(|e| e["Username"] == "alice" && e["EventName"] == "StopLogging"));
    assert!(!alice_stops.is_empty());
    let mut dq = q(vec![], 50);
    dq.data_events = true;
    let (d, _) = h.lookup(&dq).unwrap();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0]["EventName"], "GetObject");

    let pruned = h
        .prune(
            &["us-east-1".into(), "eu-west-1".into()],
            now - Duration::minutes(100),
        )
        .unwrap();
    assert!(pruned > 0);
    let (after_prune, _) = h.lookup(&q(vec![(1, "StopLogging")], 50)).unwrap();
    assert!(after_prune
        .iter()
        .all(|e| e["EventTime"].as_i64().unwrap() >= (now - Duration::minutes(100)).timestamp()));
    let _ = SystemClock.now();
}

/// A later LookupEvents page waits for the index only as far as its first page did: what
/// was recorded after the first page (nothing indexes it here: no indexer thread runs, the
/// test steps the index) does not hold it up, while a first page still waits for every
/// event recorded before it (read-your-writes).
#[test]
fn a_later_lookup_page_waits_only_as_far_as_its_first_page() {
    let w = world();
    let (rt, server, addr) = common::serve(&w.api);
    for _ in 0..3 {
        assert_eq!(call(&addr, &w, "DescribeTrails", "{}").0, 200);
    }
    while w.api.history.step(1000).unwrap() > 0 {}
    let page = |token: Option<&str>, max: u32| {
        let mut q = serde_json::json!({"MaxResults": max, "LookupAttributes":
            [{"AttributeKey": "EventName", "AttributeValue": "DescribeTrails"}]});
        if let Some(t) = token {
            q["NextToken"] = serde_json::json!(t);
        }
        let at = std::time::Instant::now();
        let (status, body) = call(&addr, &w, "LookupEvents", &q.to_string());
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let ids: Vec<String> = v["Events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["EventId"].as_str().unwrap().to_string())
            .collect();
        let next = v["NextToken"].as_str().map(str::to_string);
        (ids, next, at.elapsed())
    };
    // Each page's own LookupEvents event is recorded after it and never indexed here: a
    // page that waited for the journal's end would wait out its 5 s limit.
    let (first, mut token, took) = page(None, 1);
    assert!(took < std::time::Duration::from_secs(2), "{took:?}");
    let mut seen = first;
    while let Some(t) = token {
        let (ids, next, took) = page(Some(&t), 1);
        assert!(
            took < std::time::Duration::from_secs(2),
            "a later page waited for events recorded after the first: {took:?}"
        );
        seen.extend(ids);
        token = next;
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 3, "every event once across the pages: {seen:?}");

    // A token whose position was tampered with (the client holds it) waits no longer than a
    // first page, never past what is recorded, and answers the same page.
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let (_, token, _) = page(None, 1);
    let token = token.unwrap();
    let mut raw: serde_json::Value = serde_json::from_slice(&b64.decode(&token).unwrap()).unwrap();
    assert!(raw["w"].is_u64(), "{raw}");
    raw["w"] = serde_json::json!(u64::MAX);
    let forged = b64.encode(raw.to_string());
    let (honest_ids, _, _) = page(Some(&token), 1);
    let (forged_ids, _, took) = page(Some(&forged), 1);
    assert_eq!(forged_ids, honest_ids);
    assert!(took < std::time::Duration::from_secs(7), "{took:?}");

    // A first page waits for what was recorded before it, and answers with it.
    assert_eq!(call(&addr, &w, "DescribeTrails", "{}").0, 200);
    let api = w.api.clone();
    let stepper = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        while api.history.step(1000).unwrap() > 0 {}
    });
    let (ids, _, took) = page(None, 50);
    stepper.join().unwrap();
    assert_eq!(ids.len(), 4, "{ids:?}");
    assert!(took >= std::time::Duration::from_millis(250), "{took:?}");
    rt.block_on(server.shutdown(std::time::Duration::from_secs(5)));
}
