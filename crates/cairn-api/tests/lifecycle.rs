//! The lifecycle worker on a manual clock: transitions after N days (respecting the minimum
//! object size), expiration, noncurrent-version expiration kept back by object lock, expired
//! delete markers, and restores that finish after the tier's delay and end when they expire.

mod common;

use cairn_api::s3::lifecycle::run_once;
use cairn_api::Api;
use cairn_record::ManualClock;
use cairn_store::{EmbeddedStore, ObjectStore, PutOptions, Versioning};
use chrono::{Duration, Utc};
use std::sync::Arc;

fn world(clock: ManualClock) -> (common::Testbed, Arc<Api>, Arc<EmbeddedStore>) {
    let bed = common::testbed(Arc::new(clock), None, |_| {});
    let (api, store) = (bed.api.clone(), bed.store.clone());
    (bed, api, store)
}

fn class(store: &EmbeddedStore, b: &str, k: &str) -> Option<String> {
    store
        .head(b, k)
        .unwrap()
        .system
        .get("storage-class")
        .cloned()
}

const SEED_RULE: &str = r#"<LifecycleConfiguration><Rule><ID>archive</ID><Filter><Prefix>AWSLogs/</Prefix></Filter><Status>Enabled</Status><Transition><Days>90</Days><StorageClass>GLACIER</StorageClass></Transition><Transition><Days>180</Days><StorageClass>DEEP_ARCHIVE</StorageClass></Transition><NoncurrentVersionExpiration><NoncurrentDays>30</NoncurrentDays></NoncurrentVersionExpiration></Rule><Rule><ID>tmp</ID><Filter><Prefix>tmp/</Prefix></Filter><Status>Enabled</Status><Expiration><Days>7</Days></Expiration></Rule><Rule><ID>markers</ID><Filter><Prefix>gone/</Prefix></Filter><Status>Enabled</Status><Expiration><ExpiredObjectDeleteMarker>true</ExpiredObjectDeleteMarker></Expiration></Rule></LifecycleConfiguration>"#;

#[test]
fn transitions_expirations_and_restores_follow_the_clock() {
    let clock = ManualClock::new(Utc::now());
    let (_dir, api, store) = world(clock.clone());
    store.create_bucket("logs").unwrap();
    store.set_versioning("logs", Versioning::Enabled).unwrap();
    api.meta
        .put("bucket-config/lifecycle/logs", &SEED_RULE.to_string())
        .unwrap();
    let big = vec![7u8; 200 * 1024];
    let o = PutOptions::default();
    store.put("logs", "AWSLogs/a.json.gz", &big, &o).unwrap();
    store
        .put("logs", "AWSLogs/small.json.gz", b"tiny", &o)
        .unwrap();
    store.put("logs", "other/b", &big, &o).unwrap();
    store.put("logs", "tmp/scratch", b"x", &o).unwrap();
    // A noncurrent version (overwritten now) and a lonely delete marker.
    store.put("logs", "AWSLogs/c.json.gz", &big, &o).unwrap();
    store.put("logs", "AWSLogs/c.json.gz", &big, &o).unwrap();
    store.put("logs", "gone/x", b"x", &o).unwrap();
    let v = store.head("logs", "gone/x").unwrap().version_id.unwrap();
    store.delete_object("logs", "gone/x").unwrap();
    store.delete_version("logs", "gone/x", &v).unwrap();

    // Day 0: nothing is due except the lonely delete marker.
    let p = run_once(&api).unwrap();
    assert_eq!(p.transitioned, 0);
    assert_eq!(p.markers_removed, 1);
    assert!(store
        .list_versions("logs", "gone/", None, 10)
        .unwrap()
        .0
        .is_empty());

    // Day 8: tmp/ expired (a delete marker in this versioned bucket); logs still STANDARD.
    clock.advance(Duration::days(8));
    let p = run_once(&api).unwrap();
    assert_eq!(p.expired, 1);
    assert!(store.head("logs", "tmp/scratch").is_err());
    assert_eq!(class(&store, "logs", "AWSLogs/a.json.gz"), None);

    // Day 31: the overwritten version of c has been noncurrent for 30 days: gone.
    clock.advance(Duration::days(23));
    let p = run_once(&api).unwrap();
    assert_eq!(p.noncurrent_expired, 1);
    let (vs, _) = store.list_versions("logs", "AWSLogs/c", None, 10).unwrap();
    assert_eq!(vs.len(), 1);

    // Day 92: GLACIER for the big log files; the small one stays (128 KiB minimum); other/
    // is outside the rule's prefix.
    clock.advance(Duration::days(61));
    let p = run_once(&api).unwrap();
    assert_eq!(p.transitioned, 2, "{p:?}");
    assert_eq!(
        class(&store, "logs", "AWSLogs/a.json.gz").as_deref(),
        Some("GLACIER")
    );
    assert_eq!(class(&store, "logs", "AWSLogs/small.json.gz"), None);
    assert_eq!(class(&store, "logs", "other/b"), None);
    let info = store.head("logs", "AWSLogs/a.json.gz").unwrap();
    assert!(cairn_api::s3::archived(&info));

    // A Standard restore started now finishes three hours later and ends after its days.
    let started = api.clock.now();
    store
        .update_system("logs", "AWSLogs/a.json.gz", None, &mut |i| {
            i.system
                .insert("restore".into(), "ongoing-request=\"true\"".into());
            i.system.insert(
                "restore-request".into(),
                format!("{}|2|Standard", started.to_rfc3339()),
            );
            Ok(())
        })
        .unwrap();
    clock.advance(Duration::hours(1));
    assert_eq!(run_once(&api).unwrap().restores_finished, 0);
    clock.advance(Duration::hours(3));
    assert_eq!(run_once(&api).unwrap().restores_finished, 1);
    let info = store.head("logs", "AWSLogs/a.json.gz").unwrap();
    assert!(!cairn_api::s3::archived(&info), "{:?}", info.system);
    clock.advance(Duration::days(3));
    assert_eq!(run_once(&api).unwrap().restores_ended, 1);
    assert!(cairn_api::s3::archived(
        &store.head("logs", "AWSLogs/a.json.gz").unwrap()
    ));

    // Day 181+: DEEP_ARCHIVE.
    clock.advance(Duration::days(90));
    run_once(&api).unwrap();
    assert_eq!(
        class(&store, "logs", "AWSLogs/a.json.gz").as_deref(),
        Some("DEEP_ARCHIVE")
    );
}

#[test]
fn object_lock_keeps_a_noncurrent_version_past_its_expiration() {
    let clock = ManualClock::new(Utc::now());
    let (_dir, api, store) = world(clock.clone());
    store.create_bucket("locked").unwrap();
    store.set_versioning("locked", Versioning::Enabled).unwrap();
    api.meta
        .put(
            "bucket-config/lifecycle/locked",
            &"<LifecycleConfiguration><Rule><Filter><Prefix></Prefix></Filter><Status>Enabled</Status><NoncurrentVersionExpiration><NoncurrentDays>1</NoncurrentDays></NoncurrentVersionExpiration></Rule></LifecycleConfiguration>".to_string(),
        )
        .unwrap();
    let mut o = PutOptions::default();
    o.system
        .insert("retention-mode".into(), "COMPLIANCE".into());
    o.system.insert(
        "retain-until".into(),
        (Utc::now() + Duration::days(10)).to_rfc3339(),
    );
    store.put("locked", "k", b"v1", &o).unwrap();
    store
        .put("locked", "k", b"v2", &PutOptions::default())
        .unwrap();
    clock.advance(Duration::days(3));
    let p = run_once(&api).unwrap();
    assert_eq!((p.noncurrent_expired, p.kept_by_lock), (0, 1));
    clock.advance(Duration::days(10));
    let p = run_once(&api).unwrap();
    assert_eq!(p.noncurrent_expired, 1);
}
