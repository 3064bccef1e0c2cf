//! CloudWatch Logs retention on a manual clock: events older than a group's retention are
//! deleted by the worker's pass, newer ones and groups without retention are kept.

mod common;

use cairn_api::logs::{expire_retained, LogGroup};
use cairn_logs::{KeyRing, NewEvent};
use cairn_record::ManualClock;
use chrono::{Duration, Utc};
use std::sync::Arc;

fn group(name: &str, retention: Option<u32>) -> LogGroup {
    LogGroup {
        name: name.into(),
        region: "us-east-1".into(),
        created: 0,
        retention_days: retention,
        kms_key_id: None,
        tags: Default::default(),
        key_slots: Vec::new(),
        current_slot: 0,
    }
}

#[test]
fn retention_deletes_only_what_is_older_than_the_group_keeps() {
    let start = Utc::now();
    let clock = ManualClock::new(start);
    let bed = common::testbed(Arc::new(clock.clone()), None, |_| {});
    let api = bed.api.clone();
    let ring = KeyRing::default_only();
    let day = 86_400_000i64;
    let t0 = start.timestamp_millis();
    for (name, retention) in [("/kept-90", Some(90)), ("/forever", None)] {
        let g = group(name, retention);
        api.meta
            .put(&format!("logs/group/us-east-1/{name}"), &g)
            .unwrap();
        let events: Vec<NewEvent> = (0..100)
            .map(|d| NewEvent {
                timestamp: t0 - d * day,
                message: format!("day -{d}"),
            })
            .collect();
        api.logs
            .put(&g.store_key(), "s", &events, t0, &ring, &[])
            .unwrap();
    }
    let count = |name: &str| {
        let (n, _) = api
            .logs
            .scan(
                &group(name, None).store_key(),
                None,
                None,
                None,
                &ring,
                |_| true,
            )
            .unwrap();
        n
    };
    // Today: events from days -91 … -99 are past 90 days.
    assert_eq!(expire_retained(&api).unwrap(), 9);
    assert_eq!((count("/kept-90"), count("/forever")), (91, 100));
    // Ten days on: ten more.
    clock.advance(Duration::days(10));
    assert_eq!(expire_retained(&api).unwrap(), 10);
    assert_eq!(count("/kept-90"), 81);
    let st = api
        .logs
        .stream_stats(&group("/kept-90", None).store_key(), "s")
        .unwrap()
        .unwrap();
    assert_eq!(st.events, 81);
    assert_eq!(st.first_event, Some(t0 - 80 * day));
    assert_eq!(
        expire_retained(&api).unwrap(),
        0,
        "a second pass finds nothing"
    );
}
