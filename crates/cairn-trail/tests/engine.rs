//! The trail engine end to end on an embedded store, in simulated time.

use cairn_journal::{Journal, JournalOptions};
use cairn_record::selector::{DataResource, EventSelector, TrailSelectors};
use cairn_record::{builder, Clock, ManualClock};
use cairn_store::{
    EmbeddedStore, ListPage, Object, ObjectInfo, ObjectStore, PutOptions, StoreError,
};
use cairn_trail::{EngineOptions, RootKey, TrailCommand, TrailConfig, TrailEngine};
use chrono::{Duration, TimeZone, Utc};
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

const ACCOUNT: &str = "111122223333";
const BUCKET: &str = "trail-bucket";

/// An embedded store whose PUTs fail while `fail` is set (as a missing bucket), or while
/// `full` is set (as a full disk: ENOSPC).
struct Flaky {
    inner: EmbeddedStore,
    fail: AtomicBool,
    full: AtomicBool,
}

impl ObjectStore for Flaky {
    fn create_bucket(&self, b: &str) -> cairn_store::Result<()> {
        self.inner.create_bucket(b)
    }
    fn bucket_exists(&self, b: &str) -> cairn_store::Result<bool> {
        self.inner.bucket_exists(b)
    }
    fn put(
        &self,
        b: &str,
        k: &str,
        body: &[u8],
        o: &PutOptions,
    ) -> cairn_store::Result<ObjectInfo> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(StoreError::NoSuchBucket(b.into()));
        }
        if self.full.load(Ordering::SeqCst) {
            return Err(StoreError::Io(std::io::Error::from_raw_os_error(28)));
        }
        self.inner.put(b, k, body, o)
    }
    fn get(&self, b: &str, k: &str) -> cairn_store::Result<Object> {
        self.inner.get(b, k)
    }
    fn head(&self, b: &str, k: &str) -> cairn_store::Result<ObjectInfo> {
        self.inner.head(b, k)
    }
    fn delete(&self, b: &str, k: &str) -> cairn_store::Result<()> {
        self.inner.delete(b, k)
    }
    fn list(&self, b: &str, p: &str, m: Option<&str>, n: usize) -> cairn_store::Result<ListPage> {
        self.inner.list(b, p, m, n)
    }
}

struct Env {
    dir: tempfile::TempDir,
    store: Arc<Flaky>,
    clock: ManualClock,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Flaky {
            inner: EmbeddedStore::open(dir.path().join("store")).unwrap(),
            fail: AtomicBool::new(false),
            full: AtomicBool::new(false),
        });
        store.create_bucket(BUCKET).unwrap();
        let clock = ManualClock::new(Utc.with_ymd_and_hms(2025, 6, 1, 8, 3, 9).unwrap());
        Env { dir, store, clock }
    }
    fn engine(&self) -> TrailEngine {
        self.engine_with(EngineOptions::new(ACCOUNT))
    }
    fn engine_with(&self, opts: EngineOptions) -> TrailEngine {
        let journal = Arc::new(
            Journal::open(self.dir.path().join("journal"), JournalOptions::default()).unwrap(),
        );
        let root = RootKey::load_or_create(&self.dir.path().join("root.key")).unwrap();
        TrailEngine::open(
            &self.dir.path().join("trail"),
            journal,
            self.store.clone(),
            Arc::new(self.clock.clone()),
            root,
            opts,
        )
        .unwrap()
    }
    fn keys(&self, folder: &str) -> Vec<String> {
        cairn_store::list_all(
            self.store.as_ref(),
            BUCKET,
            &format!("AWSLogs/{ACCOUNT}/{folder}/"),
        )
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect()
    }
    fn records(&self) -> Vec<serde_json::Value> {
        let mut out = vec![];
        for k in self.keys("CloudTrail") {
            let body = self.store.get(BUCKET, &k).unwrap().body;
            let mut s = String::new();
            flate2::read::GzDecoder::new(&body[..])
                .read_to_string(&mut s)
                .unwrap();
            let v: serde_json::Value = serde_json::from_str(&s).unwrap();
            out.extend(v["Records"].as_array().unwrap().iter().cloned());
        }
        out
    }
}

fn start(e: &TrailEngine, clock: &ManualClock, cfg: TrailConfig) {
    e.command(TrailCommand::Put {
        config: cfg.clone(),
        at: clock.now(),
    })
    .unwrap();
    e.command(TrailCommand::StartLogging {
        name: cfg.name,
        at: clock.now(),
    })
    .unwrap();
    e.pump().unwrap();
}

fn validating(name: &str) -> TrailConfig {
    let mut c = TrailConfig::new(name, ACCOUNT, "us-east-1", BUCKET);
    c.log_file_validation = true;
    c
}

fn mgmt(clock: &ManualClock, name: &str) -> cairn_record::EventRecord {
    builder::management(
        "ec2.amazonaws.com",
        name,
        "us-east-1",
        clock.now(),
        builder::root_identity(ACCOUNT, None),
        false,
    )
}

#[test]
fn a_full_disk_is_reported_by_get_trail_status_and_delivery_resumes_when_space_returns() {
    let env = Env::new();
    let e = env.engine();
    start(&e, &env.clock, validating("trl"));
    e.append_event(&mgmt(&env.clock, "A")).unwrap();
    e.pump().unwrap();
    env.store.full.store(true, Ordering::SeqCst);
    env.clock.advance(Duration::minutes(6));
    e.pump().unwrap();
    let st = e.trail("trl").unwrap();
    assert_eq!(
        st.latest_delivery_error.as_deref(),
        Some("InsufficientStorage")
    );
    assert!(env.keys("CloudTrail").is_empty());
    env.store.full.store(false, Ordering::SeqCst);
    env.clock.advance(Duration::minutes(1));
    e.pump().unwrap();
    let st = e.trail("trl").unwrap();
    assert!(st.latest_delivery_error.is_none());
    assert_eq!(env.keys("CloudTrail").len(), 1);
    let names: Vec<_> = env
        .records()
        .iter()
        .map(|r| r["eventName"].as_str().unwrap().to_string())
        .collect();
    assert!(names.contains(&"A".to_string()), "{names:?}");
}

#[test]
fn failed_delivery_is_reported_holds_back_digests_and_is_retried() {
    let env = Env::new();
    let e = env.engine();
    start(&e, &env.clock, validating("trl"));
    e.append_event(&mgmt(&env.clock, "A")).unwrap();
    e.pump().unwrap();
    env.store.fail.store(true, Ordering::SeqCst);
    env.clock.advance(Duration::minutes(6));
    e.pump().unwrap();
    let st = e.trail("trl").unwrap();
    assert_eq!(st.latest_delivery_error.as_deref(), Some("NoSuchBucket"));
    assert!(st.latest_delivery_time.is_none());
    assert!(env.keys("CloudTrail").is_empty());
    // The hour passes while the file is still undelivered: no digest may claim the window.
    env.clock.advance(Duration::hours(1));
    e.pump().unwrap();
    assert!(env.keys("CloudTrail-Digest").is_empty());
    env.store.fail.store(false, Ordering::SeqCst);
    e.pump().unwrap();
    let st = e.trail("trl").unwrap();
    assert!(st.latest_delivery_error.is_none());
    assert!(st.latest_delivery_time.is_some());
    assert_eq!(env.keys("CloudTrail").len(), 1);
    assert_eq!(env.keys("CloudTrail-Digest").len(), 1);
    assert!(st.latest_digest_delivery_time.is_some());
}

#[test]
fn a_delivery_interrupted_by_a_crash_is_finished_on_reopen_with_the_same_key_and_bytes() {
    let env = Env::new();
    {
        let e = env.engine();
        start(&e, &env.clock, validating("trl"));
        for i in 0..50 {
            e.append_event(&mgmt(&env.clock, &format!("Op{i}")))
                .unwrap();
        }
        e.pump().unwrap();
        env.store.fail.store(true, Ordering::SeqCst);
        env.clock.advance(Duration::minutes(6));
        e.pump().unwrap();
        assert!(env.keys("CloudTrail").is_empty());
        // Dropped with the intent pending: as if the process died here.
    }
    env.store.fail.store(false, Ordering::SeqCst);
    let e = env.engine();
    assert_eq!(e.recovered_deliveries(), 1);
    let keys = env.keys("CloudTrail");
    assert_eq!(keys.len(), 1);
    // Written at delivery time 08:09 (the epoch's close), not at reopen time.
    assert!(keys[0].contains("_20250601T0809Z_"), "{}", keys[0]);
    let recs = env.records();
    assert_eq!(recs.len(), 50);
    let names: Vec<&str> = recs
        .iter()
        .map(|r| r["eventName"].as_str().unwrap())
        .collect();
    assert_eq!(names[0], "Op0");
    assert_eq!(names[49], "Op49");
    // Nothing is delivered twice afterwards.
    env.clock.advance(Duration::hours(2));
    e.pump().unwrap();
    assert_eq!(env.records().len(), 50);
}

#[test]
fn the_seed_selectors_record_data_events_only_for_the_artifacts_bucket() {
    let env = Env::new();
    let e = env.engine();
    let mut cfg = validating("acme-audit-trail");
    cfg.multi_region = true;
    cfg.selectors = TrailSelectors::Basic(vec![
        EventSelector {
            data_resources: vec![DataResource {
                resource_type: "AWS::S3::Object".into(),
                values: vec!["arn:aws:s3:::artifacts/*".into()],
            }],
            ..Default::default()
        },
        EventSelector {
            data_resources: vec![DataResource {
                resource_type: "AWS::DynamoDB::Table".into(),
                values: vec![format!("arn:aws:dynamodb:us-east-1:{ACCOUNT}:table/orders")],
            }],
            ..Default::default()
        },
    ]);
    start(&e, &env.clock, cfg);
    let id = builder::root_identity(ACCOUNT, None);
    let now = env.clock.now();
    for (bucket, name) in [
        ("artifacts", "PutObject"),
        ("artifacts", "GetObject"),
        ("other", "GetObject"),
        ("artifacts", "DeleteObject"),
    ] {
        e.append_event(&builder::s3_object(
            name,
            "us-east-1",
            now,
            id.clone(),
            ACCOUNT,
            bucket,
            "pkg/x.tgz",
            "h",
        ))
        .unwrap();
    }
    e.append_event(&builder::s3_list(
        "us-east-1",
        now,
        id.clone(),
        ACCOUNT,
        "artifacts",
        "",
        true,
        "h",
    ))
    .unwrap();
    e.append_event(&builder::dynamodb(
        "PutItem",
        "us-east-1",
        now,
        id.clone(),
        ACCOUNT,
        "orders",
        serde_json::json!({"tableName": "orders"}),
    ))
    .unwrap();
    e.append_event(&builder::dynamodb(
        "GetItem",
        "us-east-1",
        now,
        id.clone(),
        ACCOUNT,
        "sessions",
        serde_json::json!({"tableName": "sessions"}),
    ))
    .unwrap();
    e.append_event(&builder::management(
        "iam.amazonaws.com",
        "CreateUser",
        "eu-west-1",
        now,
        id.clone(),
        false,
    ))
    .unwrap();
    e.append_event(&mgmt(&env.clock, "RunInstances")).unwrap();
    e.pump().unwrap();
    env.clock.advance(Duration::minutes(6));
    e.pump().unwrap();
    let recs = env.records();
    let got: Vec<String> = recs
        .iter()
        .map(|r| {
            format!(
                "{}:{}",
                r["eventName"].as_str().unwrap(),
                r["requestParameters"]["bucketName"]
                    .as_str()
                    .or(r["requestParameters"]["tableName"].as_str())
                    .unwrap_or("-")
            )
        })
        .collect();
    let mut got = got;
    got.sort();
    assert_eq!(
        got,
        [
            "CreateUser:-",
            "DeleteObject:artifacts",
            "GetObject:artifacts",
            "ListObjects:artifacts",
            "PutItem:orders",
            "PutObject:artifacts",
            "RunInstances:-"
        ]
    );
    // The global IAM event sits in us-east-1's folder.
    assert!(recs.iter().all(|r| r["awsRegion"] == "us-east-1"));
}

#[test]
fn events_while_logging_is_stopped_are_not_delivered_and_restart_begins_a_new_chain() {
    let env = Env::new();
    let e = env.engine();
    start(&e, &env.clock, validating("trl"));
    e.append_event(&mgmt(&env.clock, "Before")).unwrap();
    e.pump().unwrap();
    env.clock.advance(Duration::minutes(6));
    e.command(TrailCommand::StopLogging {
        name: "trl".into(),
        at: env.clock.now(),
    })
    .unwrap();
    e.append_event(&mgmt(&env.clock, "WhileStopped")).unwrap();
    e.pump().unwrap();
    assert!(!e.trail("trl").unwrap().logging);
    let finals = env.keys("CloudTrail-Digest");
    assert_eq!(finals.len(), 1, "a final digest on stop");
    env.clock.advance(Duration::minutes(30));
    e.command(TrailCommand::StartLogging {
        name: "trl".into(),
        at: env.clock.now(),
    })
    .unwrap();
    e.append_event(&mgmt(&env.clock, "After")).unwrap();
    e.pump().unwrap();
    env.clock.advance(Duration::minutes(61));
    e.pump().unwrap();
    e.pump().unwrap();
    let names: Vec<String> = env
        .records()
        .iter()
        .map(|r| r["eventName"].as_str().unwrap().to_string())
        .collect();
    assert!(names.contains(&"Before".to_string()) && names.contains(&"After".to_string()));
    assert!(!names.contains(&"WhileStopped".to_string()));
    let digests = env.keys("CloudTrail-Digest");
    assert_eq!(digests.len(), 2);
    let second = env.store.get(BUCKET, &digests[1]).unwrap().body;
    let mut s = String::new();
    flate2::read::GzDecoder::new(&second[..])
        .read_to_string(&mut s)
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&s).unwrap();
    for f in [
        "previousDigestS3Bucket",
        "previousDigestS3Object",
        "previousDigestHashValue",
        "previousDigestHashAlgorithm",
        "previousDigestSignature",
    ] {
        assert!(v[f].is_null(), "{f} must be null in a starting digest");
    }
    assert_eq!(
        v["cairnPreviousChainDigestS3Object"],
        serde_json::Value::String(finals[0].clone())
    );
}

#[test]
fn invalid_trail_names_and_selectors_are_refused_before_reaching_the_journal() {
    let env = Env::new();
    let e = env.engine();
    let before = e.journal().next_seq();
    assert!(e
        .command(TrailCommand::Put {
            config: TrailConfig::new("ab", ACCOUNT, "us-east-1", BUCKET),
            at: env.clock.now()
        })
        .is_err());
    let mut bad = TrailConfig::new("good-name", ACCOUNT, "us-east-1", BUCKET);
    bad.selectors = TrailSelectors::Basic(vec![EventSelector::default(); 6]);
    assert!(e
        .command(TrailCommand::Put {
            config: bad,
            at: env.clock.now()
        })
        .is_err());
    assert_eq!(e.journal().next_seq(), before, "nothing was recorded");
}

#[test]
fn flush_delivers_pending_events_and_closes_the_digest_window_now() {
    let env = Env::new();
    let e = env.engine();
    start(&e, &env.clock, validating("trl"));
    for i in 0..5 {
        e.append_event(&mgmt(&env.clock, &format!("Op{i}")))
            .unwrap();
    }
    env.clock.advance(Duration::seconds(20));
    let r = e.flush().unwrap();
    assert_eq!(r.files, 1);
    assert_eq!(r.digests, 1);
    assert_eq!(env.records().len(), 5);
    let d = env.keys("CloudTrail-Digest");
    assert_eq!(d.len(), 1);
    // The window ended now (08:03:29), 20 s after the chain started, not an hour later.
    assert!(d[0].ends_with("_20250601T080329Z.json.gz"), "{}", d[0]);
    // The next window starts where this one ended: an hour later exactly one more digest.
    env.clock.advance(Duration::hours(1));
    e.pump().unwrap();
    let d = env.keys("CloudTrail-Digest");
    assert_eq!(d.len(), 2);
    assert!(d[1].ends_with("_20250601T090329Z.json.gz"), "{}", d[1]);
}

/// A journal whose events no trail delivers (no trail, or none logging) is still reclaimed:
/// delivery moves its cursor past what needs nothing, so segments go.
#[test]
fn events_no_trail_delivers_do_not_keep_the_journal() {
    let env = Env::new();
    let journal = Arc::new(
        Journal::open(
            env.dir.path().join("journal"),
            JournalOptions {
                segment_bytes: 64 << 10,
                ..JournalOptions::default()
            },
        )
        .unwrap(),
    );
    let root = RootKey::load_or_create(&env.dir.path().join("root.key")).unwrap();
    let e = TrailEngine::open(
        &env.dir.path().join("trail"),
        journal.clone(),
        env.store.clone(),
        Arc::new(env.clock.clone()),
        root,
        EngineOptions::new(ACCOUNT),
    )
    .unwrap();
    for _ in 0..2000 {
        e.append_event(&mgmt(&env.clock, "RunInstances")).unwrap();
    }
    assert!(journal.segment_count() > 4);
    while e.pump().unwrap().more {}
    e.pump().unwrap();
    assert!(
        journal.segment_count() <= 2,
        "{} segments kept",
        journal.segment_count()
    );
    // Reopened, it reads on from there, and a trail started now delivers what follows.
    drop(e);
    let e = env.engine();
    start(&e, &env.clock, validating("late"));
    e.append_event(&mgmt(&env.clock, "AfterIdle")).unwrap();
    e.pump().unwrap();
    env.clock.advance(Duration::minutes(6));
    e.pump().unwrap();
    let names: Vec<String> = env
        .records()
        .iter()
        .map(|r| r["eventName"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(names.contains(&"AfterIdle".to_string()), "{names:?}");
    assert!(!names.contains(&"RunInstances".to_string()));
}

#[test]
fn a_full_epochs_file_buffer_is_kept_for_the_next_epoch() {
    // One trail, one region: each epoch is one file, full at `max_epoch_bytes`. Its buffer
    // (grown by doubling past the bound) is kept for the next epoch's file, not freed.
    let env = Env::new();
    let mut opts = EngineOptions::new(ACCOUNT);
    opts.max_epoch_bytes = 200 << 10;
    let e = env.engine_with(opts);
    start(&e, &env.clock, validating("pooled"));
    let mut n = 0;
    while e.buffered_bytes() < 150 << 10 {
        e.append_event(&mgmt(&env.clock, &format!("Op{n}")))
            .unwrap();
        e.pump().unwrap();
        n += 1;
        assert!(n < 100_000, "the epoch never filled");
    }
    // Past the bound: the epoch closes and its file is delivered.
    for i in 0..n {
        e.append_event(&mgmt(&env.clock, &format!("More{i}")))
            .unwrap();
    }
    e.flush().unwrap();
    assert!(
        e.buffered_bytes() >= 200 << 10,
        "the delivered file's buffer is kept: {}",
        e.buffered_bytes()
    );
    assert_eq!(env.records().len(), 2 * n);
}
