//! Tamper scenarios T1–T17 and T25 of trust-and-testing §3.3: a real engine writes a trail
//! over simulated hours, storage is changed, and the validator's verdict is checked in the
//! AWS CLI's mode (the "AWS CLI" column) and in strict mode (the "Ours" column).

use cairn_journal::{Journal, JournalOptions};
use cairn_record::{builder, time::iso, Clock, ManualClock};
use cairn_store::{EmbeddedStore, ObjectStore, PutOptions};
use cairn_trail::{EngineOptions, RootKey, TrailCommand, TrailConfig, TrailEngine};
use cairn_verify::{validate, PublicKey, PublicKeySource, Report, ValidateError, ValidateOptions};
use chrono::{DateTime, Duration, TimeZone, Utc};
use std::io::Write;
use std::sync::Arc;

const ACCOUNT: &str = "111122223333";
const BUCKET: &str = "trail-bucket";

struct Keys(Arc<TrailEngine>);
impl PublicKeySource for Keys {
    fn list(
        &self,
        region: &str,
        s: DateTime<Utc>,
        e: DateTime<Utc>,
    ) -> Result<Vec<PublicKey>, String> {
        Ok(self
            .0
            .public_keys(&cairn_trail::KeyWindow {
                region,
                start: s,
                end: e,
            })
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|k| PublicKey {
                der: k.value,
                fingerprint: k.fingerprint,
                valid_from: k.validity_start,
                valid_to: k.validity_end,
            })
            .collect())
    }
}

struct World {
    _dir: tempfile::TempDir,
    store: Arc<EmbeddedStore>,
    clock: ManualClock,
    engine: Arc<TrailEngine>,
    t0: DateTime<Utc>,
    state: std::path::PathBuf,
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 1, 1, 0, 17, 31).unwrap()
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let journal =
            Arc::new(Journal::open(dir.path().join("journal"), JournalOptions::default()).unwrap());
        let store = Arc::new(EmbeddedStore::open(dir.path().join("store")).unwrap());
        store.create_bucket(BUCKET).unwrap();
        let clock = ManualClock::new(t0());
        let root = RootKey::load_or_create(&dir.path().join("root.key")).unwrap();
        let engine = Arc::new(
            TrailEngine::open(
                &dir.path().join("trail"),
                journal,
                store.clone(),
                Arc::new(clock.clone()),
                root,
                EngineOptions::new(ACCOUNT),
            )
            .unwrap(),
        );
        let mut cfg = TrailConfig::new("audit", ACCOUNT, "us-east-1", BUCKET);
        cfg.log_file_validation = true;
        engine
            .command(TrailCommand::Put {
                config: cfg,
                at: t0(),
            })
            .unwrap();
        engine
            .command(TrailCommand::StartLogging {
                name: "audit".into(),
                at: t0(),
            })
            .unwrap();
        engine.pump().unwrap();
        let state = dir.path().join("verify-state.json");
        World {
            _dir: dir,
            store,
            clock,
            engine,
            t0: t0(),
            state,
        }
    }

    /// Events every 10 simulated minutes for `minutes`.
    fn run(&self, minutes: i64) {
        for _ in 0..minutes / 10 {
            for i in 0..3 {
                let id = builder::root_identity(ACCOUNT, None);
                let r = builder::management(
                    "ec2.amazonaws.com",
                    &format!("Op{i}"),
                    "us-east-1",
                    self.clock.now(),
                    id,
                    i % 2 == 0,
                );
                self.engine.append_event(&r).unwrap();
            }
            self.clock.advance(Duration::minutes(10));
            self.engine.pump().unwrap();
        }
    }

    fn idle(&self, minutes: i64) {
        for _ in 0..minutes / 10 {
            self.clock.advance(Duration::minutes(10));
            self.engine.pump().unwrap();
        }
    }

    fn stop_start(&self, gap_minutes: i64) {
        self.engine
            .command(TrailCommand::StopLogging {
                name: "audit".into(),
                at: self.clock.now(),
            })
            .unwrap();
        self.engine.pump().unwrap();
        self.idle(gap_minutes);
        self.engine
            .command(TrailCommand::StartLogging {
                name: "audit".into(),
                at: self.clock.now(),
            })
            .unwrap();
        self.engine.pump().unwrap();
    }

    fn opts(&self, strict: bool) -> ValidateOptions {
        let mut o = ValidateOptions::new(
            format!("arn:aws:cloudtrail:us-east-1:{ACCOUNT}:trail/audit"),
            BUCKET,
            self.t0,
            self.clock.now(),
        );
        o.verbose = true;
        o.strict = strict;
        o.state_file = Some(self.state.clone());
        o
    }

    fn aws(&self) -> Report {
        validate(
            self.store.as_ref(),
            &Keys(self.engine.clone()),
            &self.opts(false),
        )
        .unwrap()
    }

    fn strict(&self) -> Result<Report, ValidateError> {
        validate(
            self.store.as_ref(),
            &Keys(self.engine.clone()),
            &self.opts(true),
        )
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
    fn digests(&self) -> Vec<String> {
        self.keys("CloudTrail-Digest")
    }
    fn logs(&self) -> Vec<String> {
        self.keys("CloudTrail")
    }

    fn rewrite(&self, key: &str, f: impl FnOnce(Vec<u8>) -> Vec<u8>) {
        let o = self.store.get(BUCKET, key).unwrap();
        let opts = PutOptions {
            content_type: o.info.content_type.clone(),
            content_encoding: o.info.content_encoding.clone(),
            metadata: o.info.metadata.clone(),
            ..Default::default()
        };
        self.store.put(BUCKET, key, &f(o.body), &opts).unwrap();
    }

    /// Log files a digest lists.
    fn logs_of(&self, digest_key: &str) -> Vec<String> {
        let v: serde_json::Value =
            serde_json::from_slice(&gunzip(&self.store.get(BUCKET, digest_key).unwrap().body))
                .unwrap();
        v["logFiles"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["s3Object"].as_str().unwrap().to_string())
            .collect()
    }
}

fn gunzip(b: &[u8]) -> Vec<u8> {
    let mut out = vec![];
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(b), &mut out).unwrap();
    out
}

fn gzip(b: &[u8], level: u32) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(vec![], flate2::Compression::new(level));
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

fn six_hours() -> World {
    let w = World::new();
    w.run(6 * 60);
    w
}

#[test]
fn t1_baseline_all_valid_including_empty_hours() {
    let w = World::new();
    w.run(3 * 60);
    w.idle(2 * 60);
    w.run(60);
    let r = w.aws();
    assert_eq!(r.exit_code, 0, "{}{}", r.stdout(), r.stderr());
    assert_eq!(r.invalid_digests + r.invalid_logs, 0);
    assert!(r.valid_digests >= 6, "{}", r.stdout());
    let listed: usize = w.digests().iter().map(|d| w.logs_of(d).len()).sum();
    assert_eq!(
        r.valid_logs as usize, listed,
        "every file a digest lists is checked"
    );
    assert!(
        listed + 1 >= w.logs().len(),
        "at most the newest file awaits its digest"
    );
    assert!(r
        .stdout()
        .contains(&format!("/{} digest files valid", r.valid_digests)));
    // Empty hours are attested by digests with no log files.
    let empty = w
        .digests()
        .iter()
        .filter(|d| w.logs_of(d).is_empty())
        .count();
    assert!(empty >= 1);
    let s = w.strict().unwrap();
    assert_eq!(s.exit_code, 0, "{}", s.stderr());
    // Windows are contiguous and phase-locked to the chain start (minute:second kept).
    for d in w.digests() {
        assert!(d.ends_with("1731Z.json.gz"), "{d}");
    }
}

#[test]
fn t2_edited_log_content_is_a_hash_mismatch() {
    let w = six_hours();
    let victim = w.logs()[3].clone();
    w.rewrite(&victim, |b| {
        let mut j = gunzip(&b);
        let i = j.iter().position(|&c| c == b'O').unwrap();
        j[i] = b'X';
        gzip(&j, 6)
    });
    let r = w.aws();
    assert_eq!(r.exit_code, 1);
    assert!(
        r.stderr().contains(&format!(
            "Log file\ts3://{BUCKET}/{victim}\tINVALID: hash value doesn't match"
        )),
        "{}",
        r.stderr()
    );
    assert_eq!(w.strict().unwrap().exit_code, 1);
}

#[test]
fn t3_gzip_that_no_longer_inflates_is_invalid_format() {
    let w = six_hours();
    let victim = w.logs()[2].clone();
    w.rewrite(&victim, |mut b| {
        let n = b.len();
        for x in &mut b[12..n - 8] {
            *x ^= 0x55;
        }
        b
    });
    let r = w.aws();
    assert_eq!(r.exit_code, 1);
    assert!(
        r.stderr()
            .contains(&format!("{victim}\tINVALID: invalid format")),
        "{}",
        r.stderr()
    );
}

#[test]
fn t4_deleted_log_is_not_found() {
    let w = six_hours();
    let victim = w.logs()[5].clone();
    w.store.delete(BUCKET, &victim).unwrap();
    let r = w.aws();
    assert_eq!(r.exit_code, 1);
    assert!(r.stderr().contains(&format!(
        "Log file\ts3://{BUCKET}/{victim}\tINVALID: not found"
    )));
    assert_eq!(w.strict().unwrap().exit_code, 1);
}

#[test]
fn t5_recompressed_log_with_same_content_is_valid() {
    let w = six_hours();
    let victim = w.logs()[1].clone();
    w.rewrite(&victim, |b| gzip(&gunzip(&b), 9));
    assert_eq!(w.aws().exit_code, 0);
    assert_eq!(w.strict().unwrap().exit_code, 0);
}

#[test]
fn t6_second_gzip_member_after_a_log_is_invalid() {
    let w = six_hours();
    let victim = w.logs()[0].clone();
    w.rewrite(&victim, |mut b| {
        b.extend(gzip(b"{\"Records\":[]}", 6));
        b
    });
    let r = w.aws();
    assert_eq!(r.exit_code, 1);
    assert!(r
        .stderr()
        .contains("INVALID: unexpected data after end of compressed stream"));
}

#[test]
fn t7_junk_after_a_digest_passes_aws_but_not_strict() {
    let w = six_hours();
    let victim = w.digests()[2].clone();
    w.rewrite(&victim, |mut b| {
        b.extend_from_slice(b"junk");
        b
    });
    assert_eq!(w.aws().exit_code, 0);
    let s = w.strict().unwrap();
    assert_eq!(s.exit_code, 1);
    assert!(s.stderr().contains(&format!("Digest file\ts3://{BUCKET}/{victim}\tINVALID: unexpected data after end of compressed stream")));
}

#[test]
fn t8_edited_digest_json_fails_its_signature() {
    let w = six_hours();
    let victim = w.digests()[3].clone();
    w.rewrite(&victim, |b| {
        let mut v: serde_json::Value = serde_json::from_slice(&gunzip(&b)).unwrap();
        v["logFiles"].as_array_mut().unwrap().pop();
        gzip(&serde_json::to_vec(&v).unwrap(), 6)
    });
    let r = w.aws();
    assert_eq!(r.exit_code, 1);
    assert!(r.stderr().contains(&format!(
        "Digest file\ts3://{BUCKET}/{victim}\tINVALID: signature verification failed"
    )));
}

#[test]
fn t9_altered_or_stripped_signature_metadata_fails() {
    let w = six_hours();
    let (a, b) = (w.digests()[1].clone(), w.digests()[4].clone());
    for (k, strip) in [(&a, false), (&b, true)] {
        let o = w.store.get(BUCKET, k).unwrap();
        let mut md = o.info.metadata.clone();
        if strip {
            md.remove("signature");
        } else {
            let s = md.get_mut("signature").unwrap();
            let flipped = if s.starts_with('0') { "1" } else { "0" };
            s.replace_range(0..1, flipped);
        }
        w.store
            .put(
                BUCKET,
                k,
                &o.body,
                &PutOptions {
                    metadata: md,
                    ..Default::default()
                },
            )
            .unwrap();
    }
    let r = w.aws();
    assert_eq!(r.exit_code, 1);
    for k in [&a, &b] {
        assert!(
            r.stderr().contains(&format!(
                "Digest file\ts3://{BUCKET}/{k}\tINVALID: signature verification failed"
            )),
            "{}",
            r.stderr()
        );
    }
}

#[test]
fn t10_copied_digest_has_moved_from_its_original_location() {
    let w = six_hours();
    let newest = w.digests().last().unwrap().clone();
    let o = w.store.get(BUCKET, &newest).unwrap();
    let later = w.clock.now() + Duration::minutes(30);
    let moved = newest.replace(
        &newest[newest.len() - 24..newest.len() - 8],
        &later.format("%Y%m%dT%H%M%SZ").to_string(),
    );
    w.store
        .put(
            BUCKET,
            &moved,
            &o.body,
            &PutOptions {
                metadata: o.info.metadata.clone(),
                ..Default::default()
            },
        )
        .unwrap();
    let r = w.aws();
    assert_eq!(r.exit_code, 1);
    assert!(r.stderr().contains(&format!("Digest file\ts3://{BUCKET}/{moved}\tINVALID: has been moved from its original location")), "{}", r.stderr());
}

#[test]
fn t11_deleted_mid_chain_digest_is_not_found() {
    let w = six_hours();
    let victim = w.digests()[2].clone();
    w.store.delete(BUCKET, &victim).unwrap();
    let r = w.aws();
    assert_eq!(r.exit_code, 1);
    assert!(r.stderr().contains(&format!(
        "Digest file\ts3://{BUCKET}/{victim}\tINVALID: not found"
    )));
    assert_eq!(w.strict().unwrap().exit_code, 1);
}

#[test]
fn t12_consecutive_deleted_digests_one_reported_by_aws_all_by_strict() {
    let w = six_hours();
    let d = w.digests();
    let victims = [d[1].clone(), d[2].clone(), d[3].clone()];
    for v in &victims {
        w.store.delete(BUCKET, v).unwrap();
    }
    let r = w.aws();
    assert_eq!(r.exit_code, 1);
    assert_eq!(
        r.stderr().matches("INVALID: not found").count(),
        1,
        "{}",
        r.stderr()
    );
    let s = w.strict().unwrap();
    assert_eq!(s.exit_code, 1);
    for v in &victims {
        assert!(
            s.stderr().contains(&format!(
                "Digest file\ts3://{BUCKET}/{v}\tINVALID: not found"
            )),
            "missing {v} in\n{}",
            s.stderr()
        );
    }
}

#[test]
fn t13_truncated_newest_digests_pass_aws_but_strict_remembers() {
    let w = six_hours();
    assert_eq!(
        w.strict().unwrap().exit_code,
        0,
        "first strict run pins the newest digest"
    );
    let d = w.digests();
    for v in &d[d.len() - 2..] {
        for l in w.logs_of(v) {
            w.store.delete(BUCKET, &l).unwrap();
        }
        w.store.delete(BUCKET, v).unwrap();
    }
    let r = w.aws();
    assert_eq!(r.exit_code, 0, "the AWS CLI cannot see truncation");
    let s = w.strict().unwrap();
    assert_eq!(s.exit_code, 1);
    assert!(s.stderr().contains("truncation"), "{}", s.stderr());
    // --since-digest does the same without a state file.
    let mut o = w.opts(true);
    o.state_file = None;
    o.since_digest = Some(d.last().unwrap().clone());
    assert_eq!(
        validate(w.store.as_ref(), &Keys(w.engine.clone()), &o)
            .unwrap()
            .exit_code,
        1
    );
}

#[test]
fn t14_everything_deleted_is_no_digests_for_aws_and_failure_for_strict() {
    let w = six_hours();
    assert_eq!(w.strict().unwrap().exit_code, 0);
    for k in w.digests().into_iter().chain(w.logs()) {
        w.store.delete(BUCKET, &k).unwrap();
    }
    let r = w.aws();
    assert_eq!(r.exit_code, 0);
    assert!(r.stdout().contains("No digests found"));
    assert_eq!(w.strict().unwrap().exit_code, 1, "pinned digest is gone");
    std::fs::remove_file(&w.state).unwrap();
    assert!(
        matches!(w.strict(), Err(ValidateError::CannotVerify(_))),
        "no anchor: cannot verify (exit 2)"
    );
}

#[test]
fn t15_stop_start_gap_is_a_note_and_strict_accepts_the_signed_link() {
    let w = World::new();
    w.run(3 * 60);
    w.stop_start(2 * 60);
    w.run(3 * 60);
    let r = w.aws();
    assert_eq!(r.exit_code, 0, "{}", r.stderr());
    assert!(r
        .stderr()
        .contains("No log files were delivered by CloudTrail between"));
    let s = w.strict().unwrap();
    assert_eq!(s.exit_code, 0, "{}", s.stderr());
}

#[test]
fn t16_deleting_the_final_pre_stop_digest_is_invisible_to_aws_but_not_to_strict() {
    let w = World::new();
    w.run(3 * 60);
    let before_stop = w.digests().len();
    w.stop_start(2 * 60);
    w.run(3 * 60);
    let digests = w.digests();
    let final_digest = digests[before_stop].clone();
    let v: serde_json::Value =
        serde_json::from_slice(&gunzip(&w.store.get(BUCKET, &final_digest).unwrap().body)).unwrap();
    assert_eq!(v["cairnChainEvent"], "StopLogging");
    for l in w.logs_of(&final_digest) {
        w.store.delete(BUCKET, &l).unwrap();
    }
    w.store.delete(BUCKET, &final_digest).unwrap();
    let r = w.aws();
    assert_eq!(r.exit_code, 0, "the AWS CLI sees only a wider gap");
    let s = w.strict().unwrap();
    assert_eq!(s.exit_code, 1, "{}", s.stderr());
    assert!(s.stderr().contains(&final_digest));
}

#[test]
fn t17_forged_unreferenced_log_file_is_caught_by_strict() {
    let w = six_hours();
    let real = w.logs()[4].clone();
    let forged = format!("{}XXXXXXXXXXXXXXXX.json.gz", &real[..real.len() - 24]);
    w.store
        .put(
            BUCKET,
            &forged,
            &gzip(b"{\"Records\":[]}", 6),
            &PutOptions::default(),
        )
        .unwrap();
    assert_eq!(
        w.aws().exit_code,
        0,
        "the AWS CLI ignores unreferenced files"
    );
    let s = w.strict().unwrap();
    assert_eq!(s.exit_code, 1);
    assert!(
        s.stderr().contains(&format!(
            "Log file\ts3://{BUCKET}/{forged}\tINVALID: not referenced by any digest"
        )),
        "{}",
        s.stderr()
    );
}

#[test]
fn t25_window_edges_and_key_rotation_inside_the_window() {
    let w = World::new();
    w.run(3 * 60);
    // Jump 29.5 days: hourly empty digests all the way, and the signing key rotates.
    w.clock.advance(Duration::hours(29 * 24 + 12));
    w.engine.pump().unwrap();
    w.run(3 * 60);
    let fps: std::collections::HashSet<String> = w
        .digests()
        .iter()
        .map(|d| {
            let v: serde_json::Value =
                serde_json::from_slice(&gunzip(&w.store.get(BUCKET, d).unwrap().body)).unwrap();
            v["digestPublicKeyFingerprint"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(fps.len(), 2, "the key rotated inside the window");
    let r = w.aws();
    assert_eq!(r.exit_code, 0, "{}", r.stderr());
    // Start and end exactly on digest boundaries.
    let d = w.digests();
    let end_of =
        |k: &str| cairn_record::time::parse_cli_time(&k[k.len() - 24..k.len() - 8]).unwrap();
    let mut o = w.opts(false);
    o.start = end_of(&d[1]);
    o.end = end_of(&d[d.len() - 2]);
    let r = validate(w.store.as_ref(), &Keys(w.engine.clone()), &o).unwrap();
    assert_eq!(r.exit_code, 0);
    assert!(r.stdout().contains(&format!(
        "Results requested for {} to {}",
        iso(o.start),
        iso(o.end)
    )));
    assert!(r.valid_digests as usize >= d.len() - 3, "{}", r.stdout());
}
