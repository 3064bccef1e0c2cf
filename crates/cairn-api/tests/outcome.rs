//! Events tell the outcome (issue 16, item 1), deterministically: the embedded store's commit
//! fails after the request's event is durable. The client gets a server error; the object
//! does not exist; the request is on record once, with the error (journaled as an intent,
//! resolved with the outcome), never as a success. Once the store recovers, the same request
//! succeeds and is on record as a success.

mod common;
mod wire;

use cairn_record::SystemClock;
use cairn_store::{
    DeleteOutcome, EmbeddedStore, ListPage, Object, ObjectInfo, ObjectStore, PutOptions, Result,
    StagingWriter, StoreError, VersionEntry, Versioning,
};
use cairn_trail::entry::{decode, Entry};
use chrono::{DateTime, Utc};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use wire::Signer;

/// The embedded store, whose commits fail while `fail` is set.
struct CommitFails {
    inner: Arc<EmbeddedStore>,
    fail: Arc<AtomicBool>,
}

impl CommitFails {
    fn check(&self) -> Result<()> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(StoreError::Io(std::io::Error::other(
                "injected commit failure",
            )));
        }
        Ok(())
    }
}

impl ObjectStore for CommitFails {
    fn create_bucket(&self, b: &str) -> Result<()> {
        self.inner.create_bucket(b)
    }
    fn bucket_exists(&self, b: &str) -> Result<bool> {
        self.inner.bucket_exists(b)
    }
    fn list_buckets(&self) -> Result<Vec<(String, DateTime<Utc>)>> {
        self.inner.list_buckets()
    }
    fn delete_bucket(&self, b: &str) -> Result<()> {
        self.inner.delete_bucket(b)
    }
    fn versioning(&self, b: &str) -> Result<Option<Versioning>> {
        self.inner.versioning(b)
    }
    fn set_versioning(&self, b: &str, s: Versioning) -> Result<()> {
        self.inner.set_versioning(b, s)
    }
    fn delete_object(&self, b: &str, k: &str) -> Result<DeleteOutcome> {
        self.check()?;
        self.inner.delete_object(b, k)
    }
    fn delete_version(&self, b: &str, k: &str, v: &str) -> Result<DeleteOutcome> {
        self.check()?;
        self.inner.delete_version(b, k, v)
    }
    fn get_version(&self, b: &str, k: &str, v: &str) -> Result<Object> {
        self.inner.get_version(b, k, v)
    }
    fn list_versions(
        &self,
        b: &str,
        p: &str,
        after: Option<(&str, Option<&str>)>,
        max: usize,
    ) -> Result<(Vec<VersionEntry>, bool)> {
        self.inner.list_versions(b, p, after, max)
    }
    fn head_version(&self, b: &str, k: &str, v: Option<&str>) -> Result<ObjectInfo> {
        self.inner.head_version(b, k, v)
    }
    fn version_info(&self, b: &str, k: &str, v: &str) -> Result<ObjectInfo> {
        self.inner.version_info(b, k, v)
    }
    fn update_system(
        &self,
        b: &str,
        k: &str,
        v: Option<&str>,
        change: &mut dyn FnMut(&mut ObjectInfo) -> Result<()>,
    ) -> Result<ObjectInfo> {
        self.check()?;
        self.inner.update_system(b, k, v, change)
    }
    fn put(&self, b: &str, k: &str, body: &[u8], o: &PutOptions) -> Result<ObjectInfo> {
        self.check()?;
        self.inner.put(b, k, body, o)
    }
    fn stage_writer(&self, b: &str, k: &str, o: &PutOptions) -> Result<StagingWriter> {
        self.inner.stage_writer(b, k, o)
    }
    fn open_read(
        &self,
        b: &str,
        k: &str,
        v: Option<&str>,
        range: &dyn Fn(u64) -> Option<(u64, u64)>,
    ) -> Result<(ObjectInfo, Box<dyn std::io::Read + Send>)> {
        self.inner.open_read(b, k, v, range)
    }
    fn commit_staged(&self, s: cairn_store::Staged) -> Result<ObjectInfo> {
        if let Err(e) = self.check() {
            self.inner.discard_staged(s);
            return Err(e);
        }
        self.inner.commit_staged(s)
    }
    fn discard_staged(&self, s: cairn_store::Staged) {
        self.inner.discard_staged(s)
    }
    fn get(&self, b: &str, k: &str) -> Result<Object> {
        self.inner.get(b, k)
    }
    fn head(&self, b: &str, k: &str) -> Result<ObjectInfo> {
        self.inner.head(b, k)
    }
    fn delete(&self, b: &str, k: &str) -> Result<()> {
        self.check()?;
        self.inner.delete(b, k)
    }
    fn list(&self, b: &str, p: &str, after: Option<&str>, n: usize) -> Result<ListPage> {
        self.inner.list(b, p, after, n)
    }
}

/// The delivered-kind records of the journal with this request id: (resolved?, record).
fn records_of(api: &cairn_api::Api, request_id: &str) -> Vec<(bool, serde_json::Value)> {
    let mut r = api.engine.journal().reader(0).unwrap();
    let mut out = Vec::new();
    while let Some((_, bytes)) = r.next_record().unwrap() {
        let (resolved, json) = match decode(&bytes).unwrap() {
            Entry::Event { json, .. } => (false, json),
            Entry::Resolved { json, .. } => (true, json),
            _ => continue,
        };
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        if v["requestID"] == request_id {
            out.push((resolved, v));
        }
    }
    out
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> &'a str {
    h.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_default()
}

#[test]
fn a_commit_that_fails_after_the_event_is_recorded_as_failed_never_as_a_success() {
    let fail = Arc::new(AtomicBool::new(false));
    let f2 = fail.clone();
    let bed = common::testbed_wrapped(
        Arc::new(SystemClock),
        None,
        |_| {},
        move |inner| Arc::new(CommitFails { inner, fail: f2 }),
    );
    bed.store.create_bucket("data").unwrap();
    bed.store
        .put("data", "kept", b"kept", &PutOptions::default())
        .unwrap();
    let (rt, server, addr) = common::serve(&bed.api);
    let root = Signer {
        key: &bed.key,
        secret: &bed.secret,
    };
    let send = |method: &str, path: &str, body: &str| {
        wire::signed_full(&addr, &root, method, path, "", "s3", &[], body)
    };

    fail.store(true, Ordering::SeqCst);
    for (method, path, name) in [
        ("PUT", "/data/new", "PutObject"),
        ("DELETE", "/data/kept", "DeleteObject"),
    ] {
        let (st, headers, body) = send(method, path, "body");
        assert_eq!(st, 500, "{name}: {body}");
        assert!(
            body.contains("InternalError") || body.contains("InternalFailure"),
            "{body}"
        );
        let rid = header(&headers, "x-amz-request-id");
        let recs = records_of(&bed.api, rid);
        assert_eq!(recs.len(), 1, "{name}: {recs:?}");
        let (resolved, rec) = &recs[0];
        assert!(
            resolved,
            "{name}: journaled as an intent, resolved with the outcome"
        );
        assert_eq!(rec["eventName"], name);
        assert!(
            rec["errorCode"].as_str().is_some_and(|c| !c.is_empty()),
            "{name} on record as a success though its change was not made: {rec}"
        );
    }
    assert!(
        bed.store.head("data", "new").is_err(),
        "the failed PUT left an object"
    );
    assert!(
        bed.store.head("data", "kept").is_ok(),
        "the failed DELETE deleted"
    );

    fail.store(false, Ordering::SeqCst);
    let (st, headers, body) = send("PUT", "/data/new", "body");
    assert_eq!(st, 200, "{body}");
    let recs = records_of(&bed.api, header(&headers, "x-amz-request-id"));
    assert_eq!(recs.len(), 1);
    assert!(
        recs[0].1.get("errorCode").is_none_or(|c| c.is_null()),
        "{:?}",
        recs[0]
    );
    assert_eq!(bed.store.get("data", "new").unwrap().body, b"body");
    rt.block_on(server.shutdown(std::time::Duration::from_secs(5)));
}

/// Lets `armed` journal syncs through, fails the next one, then lets everything through.
struct FailOneSync(Arc<std::sync::atomic::AtomicI64>);
impl cairn_journal::FaultInjector for FailOneSync {
    fn before_sync(&self) -> std::io::Result<()> {
        if self.0.fetch_sub(1, Ordering::SeqCst) == 0 {
            return Err(std::io::Error::other("injected EIO"));
        }
        Ok(())
    }
}

#[test]
fn a_trail_command_is_durable_with_its_event_or_not_at_all() {
    // A journal sync that fails right after the event's: when the command was journaled on
    // its own after the event, StopLogging was on record as a success while the trail kept
    // logging. Now the event and the command are one batch: both or neither.
    let armed = Arc::new(std::sync::atomic::AtomicI64::new(i64::MAX));
    let bed = common::testbed(
        Arc::new(SystemClock),
        Some(Arc::new(FailOneSync(armed.clone()))),
        |_| {},
    );
    bed.store.create_bucket("logs").unwrap();
    let (rt, server, addr) = common::serve(&bed.api);
    let root = Signer {
        key: &bed.key,
        secret: &bed.secret,
    };
    let call = |op: &str, body: &str| wire::call(&addr, &root, op, body);
    let (st, body) = call("CreateTrail", r#"{"Name":"tr1","S3BucketName":"logs"}"#);
    assert_eq!(st, 200, "{body}");
    assert_eq!(call("StartLogging", r#"{"Name":"tr1"}"#).0, 200);
    assert!(bed.api.engine.trail("tr1").unwrap().logging);

    armed.store(1, Ordering::SeqCst);
    let (st, body) = call("StopLogging", r#"{"Name":"tr1"}"#);
    assert_eq!(st, 200, "{body}");
    assert!(!bed.api.engine.trail("tr1").unwrap().logging);
    // In the journal: the event, then its command, adjacent (one batch).
    let mut r = bed.api.engine.journal().reader(0).unwrap();
    let mut entries = Vec::new();
    while let Some((seq, bytes)) = r.next_record().unwrap() {
        entries.push((seq, decode(&bytes).unwrap()));
    }
    let stop_event = entries
        .iter()
        .position(|(_, e)| match e {
            Entry::Event { json, .. } => {
                serde_json::from_slice::<serde_json::Value>(json).unwrap()["eventName"]
                    == "StopLogging"
            }
            _ => false,
        })
        .expect("the StopLogging event");
    assert!(
        matches!(
            entries.get(stop_event + 1),
            Some((
                _,
                Entry::Command(cairn_trail::TrailCommand::StopLogging { .. })
            ))
        ),
        "the command does not follow its event"
    );

    // The batch itself failing: neither is durable, nothing changes, the client gets 503.
    armed.store(0, Ordering::SeqCst);
    let (st, body) = call("DeleteTrail", r#"{"Name":"tr1"}"#);
    assert_eq!(st, 503, "{body}");
    assert!(bed.api.engine.trail("tr1").is_some());
    rt.block_on(server.shutdown(std::time::Duration::from_secs(5)));
}

/// The resolved entry of `request_id`'s pending one, once journaled: (pending position, record).
fn resolved_of(api: &cairn_api::Api, request_id: &str) -> Option<(u64, serde_json::Value)> {
    let mut r = api.engine.journal().reader(0).unwrap();
    while let Some((_, bytes)) = r.next_record().unwrap() {
        if let Entry::Resolved { pending, json, .. } = decode(&bytes).unwrap() {
            let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
            if v["requestID"] == request_id {
                return Some((pending, v));
            }
        }
    }
    None
}

/// A PUT of `path` through the server at `addr`, answered 200, and its resolved entry once
/// journaled (within 5 s): (pending position, record).
fn put_resolved(
    api: &cairn_api::Api,
    addr: &str,
    root: &Signer<'_>,
    path: &str,
) -> (u64, serde_json::Value) {
    let (st, headers, body) = wire::signed_full(addr, root, "PUT", path, "", "s3", &[], "body");
    assert_eq!(st, 200, "{body}");
    put_resolved_wait(api, header(&headers, "x-amz-request-id"))
}

/// The resolved entry of `rid`, once journaled (within 15 s), journaled once.
fn put_resolved_wait(api: &cairn_api::Api, rid: &str) -> (u64, serde_json::Value) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        if let Some(found) = resolved_of(api, rid) {
            assert_eq!(records_of(api, rid).len(), 1, "journaled once");
            return found;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the outcome never reached the journal"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Lets `allowed` journal syncs through while `failing`, fails the rest; all pass otherwise.
struct FailAfter {
    allowed: std::sync::atomic::AtomicI64,
    failing: AtomicBool,
}
impl cairn_journal::FaultInjector for FailAfter {
    fn before_sync(&self) -> std::io::Result<()> {
        if self.failing.load(Ordering::SeqCst) && self.allowed.fetch_sub(1, Ordering::SeqCst) <= 0 {
            return Err(std::io::Error::other("injected EIO"));
        }
        Ok(())
    }
}

/// The journal position of `rid`'s pending entry, whose outcome is not journaled (the
/// journal is failing) but kept in the store: a success of `event`.
fn kept_success(bed: &common::Testbed, rid: &str, event: &str) -> u64 {
    let mut r = bed.api.engine.journal().reader(0).unwrap();
    let mut pending = None;
    while let Some((seq, bytes)) = r.next_record().unwrap() {
        if let Entry::Pending { json, .. } = decode(&bytes).unwrap() {
            let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
            if v["requestID"] == rid {
                pending = Some(seq);
            }
        }
    }
    let pending = pending.expect("the pending entry is durable");
    assert!(
        resolved_of(&bed.api, rid).is_none(),
        "the journal was failing"
    );
    let kept = bed
        .store
        .outbox_record(pending)
        .unwrap()
        .expect("the outcome is kept with the change");
    match decode(&kept).unwrap() {
        Entry::Resolved {
            pending: p, json, ..
        } => {
            assert_eq!(p, pending);
            let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
            assert_eq!(v["eventName"], event);
            assert!(v.get("errorCode").is_none_or(|c| c.is_null()), "{v}");
        }
        _ => panic!("the kept record is not the resolved entry"),
    }
    pending
}

/// A PUT to the embedded store keeps its outcome in the transaction that makes the object,
/// and is answered before the journal has synced it: with the journal failing after the
/// pending entry, the client still gets 200, the store holds the success record, and once
/// the journal recovers the outcome arrives, once, and the kept copy is dropped.
#[test]
fn a_put_keeps_its_outcome_with_the_object_until_the_journal_has_it() {
    let faults = Arc::new(FailAfter {
        allowed: std::sync::atomic::AtomicI64::new(1),
        failing: AtomicBool::new(true),
    });
    let bed = common::testbed(Arc::new(SystemClock), Some(faults.clone()), |_| {});
    bed.store.create_bucket("data").unwrap();
    let (rt, server, addr) = common::serve(&bed.api);
    let root = Signer {
        key: &bed.key,
        secret: &bed.secret,
    };
    let (st, headers, body) =
        wire::signed_full(&addr, &root, "PUT", "/data/first", "", "s3", &[], "body");
    assert_eq!(st, 200, "answered once the outcome was kept: {body}");
    let rid = header(&headers, "x-amz-request-id").to_string();
    // The pending entry (the one sync let through) names the request.
    let pending = kept_success(&bed, &rid, "PutObject");
    assert_eq!(bed.store.get("data", "first").unwrap().body, b"body");

    faults.failing.store(false, Ordering::SeqCst);
    let (_, rec) = put_resolved(&bed.api, &addr, &root, "/data/second");
    assert_eq!(rec["eventName"], "PutObject");
    let (p, rec) = put_resolved_wait(&bed.api, &rid);
    assert_eq!(p, pending);
    assert!(rec.get("errorCode").is_none_or(|c| c.is_null()), "{rec}");
    // Released once durable in the journal, dropped by a later commit.
    let mut n = 0;
    while bed.store.outbox_record(pending).unwrap().is_some() {
        n += 1;
        assert!(n < 200, "the kept outcome is never dropped");
        put_resolved(&bed.api, &addr, &root, &format!("/data/next-{n}"));
    }
    rt.block_on(server.shutdown(std::time::Duration::from_secs(5)));
}

/// A DeleteObject of the current object keeps its outcome in the transaction that deletes
/// it, as a PUT does: with the journal failing after the pending entry, the client still
/// gets 204, the object is gone, the store holds the success record, and once the journal
/// recovers the outcome arrives, once.
#[test]
fn a_delete_keeps_its_outcome_with_the_deletion_until_the_journal_has_it() {
    let faults = Arc::new(FailAfter {
        allowed: std::sync::atomic::AtomicI64::new(0),
        failing: AtomicBool::new(false),
    });
    let bed = common::testbed(Arc::new(SystemClock), Some(faults.clone()), |_| {});
    bed.store.create_bucket("data").unwrap();
    let (rt, server, addr) = common::serve(&bed.api);
    let root = Signer {
        key: &bed.key,
        secret: &bed.secret,
    };
    put_resolved(&bed.api, &addr, &root, "/data/doomed");
    faults.allowed.store(1, Ordering::SeqCst);
    faults.failing.store(true, Ordering::SeqCst);
    let (st, headers, body) =
        wire::signed_full(&addr, &root, "DELETE", "/data/doomed", "", "s3", &[], "");
    assert_eq!(st, 204, "answered once the outcome was kept: {body}");
    let rid = header(&headers, "x-amz-request-id").to_string();
    let pending = kept_success(&bed, &rid, "DeleteObject");
    assert!(matches!(
        bed.store.get("data", "doomed"),
        Err(StoreError::NoSuchKey { .. })
    ));

    faults.failing.store(false, Ordering::SeqCst);
    let (p, rec) = put_resolved_wait(&bed.api, &rid);
    assert_eq!(p, pending);
    assert_eq!(rec["eventName"], "DeleteObject");
    assert!(rec.get("errorCode").is_none_or(|c| c.is_null()), "{rec}");
    rt.block_on(server.shutdown(std::time::Duration::from_secs(5)));
}

/// A stop between a PUT's commit and its outcome's journaling: at the next start the kept
/// outcome is the request's record (a success: the object was made), not "outcome unknown";
/// a pending request whose write never committed is still resolved as unknown.
#[test]
fn a_stop_after_a_commit_resolves_the_request_with_the_outcome_kept_with_it() {
    let bed = common::testbed(Arc::new(SystemClock), None, |_| {});
    bed.store.create_bucket("data").unwrap();
    let (rt, server, addr) = common::serve(&bed.api);
    let root = Signer {
        key: &bed.key,
        secret: &bed.secret,
    };
    // A genuine PutObject record to replay as two requests a crash interrupted.
    let (_, template) = put_resolved(&bed.api, &addr, &root, "/data/seed");
    rt.block_on(server.shutdown(std::time::Duration::from_secs(5)));
    let record = |request_id: &str| {
        let mut v = template.clone();
        v["requestID"] = request_id.into();
        v["eventID"] = uuid::Uuid::new_v4().to_string().into();
        serde_json::from_value::<cairn_record::EventRecord>(v).unwrap()
    };
    let made = record("made-before-the-stop");
    let lost = record("never-committed");
    let seq = rt.block_on(bed.api.record_pending(&made)).unwrap();
    rt.block_on(bed.api.record_pending(&lost)).unwrap();
    let mut w = bed
        .store
        .stage_writer("data", "made", &PutOptions::default())
        .unwrap();
    w.write(b"made").unwrap();
    let mut staged = w.finish().unwrap();
    staged.outbox = Some((seq, cairn_trail::entry::encode_resolved(seq, &made)));
    bed.store.commit_staged(staged).unwrap();
    // Stopped here: neither outcome is journaled.
    assert!(resolved_of(&bed.api, "made-before-the-stop").is_none());

    let unknown = bed.api.resolve_orphans().unwrap();
    assert_eq!(
        unknown, 1,
        "only the request whose write never committed is unknown"
    );
    let (p, rec) = resolved_of(&bed.api, "made-before-the-stop").expect("resolved");
    assert_eq!(p, seq);
    assert!(
        rec.get("errorCode").is_none_or(|c| c.is_null()),
        "a made PUT resolved as anything but its success: {rec}"
    );
    assert_eq!(bed.store.get("data", "made").unwrap().body, b"made");
    let (_, rec) = resolved_of(&bed.api, "never-committed").expect("resolved");
    assert_eq!(rec["errorCode"], "ServiceUnavailable");
    assert!(
        bed.store.outbox_record(seq).unwrap().is_none(),
        "kept outcome left behind"
    );
}
