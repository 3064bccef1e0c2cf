//! CloudWatch Logs in process: retention on a manual clock (events older than a group's
//! retention are deleted by the worker's pass, newer ones and groups without retention are
//! kept), and the data points metric filters make of the events put through the API.

mod common;
mod wire;

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

#[test]
fn metric_filters_turn_matching_events_into_data_points() {
    let bed = common::testbed(Arc::new(cairn_record::SystemClock), None, |_| {});
    let api = bed.api.clone();
    let (rt, server, addr) = common::serve(&api);
    let root = wire::Signer {
        key: &bed.key,
        secret: &bed.secret,
    };
    let call = |op: &str, body: String| {
        let (st, out) = wire::logs_call(&addr, &root, op, &body);
        assert_eq!(st, 200, "{op}: {out}");
    };
    call("CreateLogGroup", r#"{"logGroupName":"/mf"}"#.into());
    call(
        "CreateLogStream",
        r#"{"logGroupName":"/mf","logStreamName":"s"}"#.into(),
    );
    // A count of denied calls by user, and a sum of bytes with a default when nothing matches.
    call(
        "PutMetricFilter",
        r#"{"logGroupName":"/mf","filterName":"denied","filterPattern":"{ $.errorCode = \"AccessDenied\" }","metricTransformations":[{"metricName":"Denied","metricNamespace":"CIS","metricValue":"1","dimensions":{"User":"$.user"}}]}"#.into(),
    );
    call(
        "PutMetricFilter",
        r#"{"logGroupName":"/mf","filterName":"bytes","filterPattern":"{ $.bytes > 0 }","metricTransformations":[{"metricName":"Bytes","metricNamespace":"App","metricValue":"$.bytes","defaultValue":0}]}"#.into(),
    );
    let minute = Utc::now().timestamp_millis() / 60_000 * 60_000;
    let events = serde_json::json!([
        {"timestamp": minute, "message": r#"{"errorCode":"AccessDenied","user":"ann","bytes":10}"#},
        {"timestamp": minute + 1, "message": r#"{"errorCode":"AccessDenied","user":"ann"}"#},
        {"timestamp": minute + 2, "message": r#"{"errorCode":"AccessDenied","user":"bob","bytes":5}"#},
        {"timestamp": minute + 3, "message": r#"{"eventName":"GetObject"}"#},
    ]);
    call(
        "PutLogEvents",
        serde_json::json!({"logGroupName": "/mf", "logStreamName": "s", "logEvents": events})
            .to_string(),
    );
    let m = minute / 60_000;
    let dims = |u: &str| std::collections::BTreeMap::from([("User".to_string(), u.to_string())]);
    let at = |series: String| api.logs.points(&series, m, m).unwrap();
    let ann = at(cairn_api::logs::series(
        "us-east-1",
        "CIS",
        "Denied",
        &dims("ann"),
    ));
    assert_eq!((ann[0].1.count, ann[0].1.sum), (2, 2.0));
    let bob = at(cairn_api::logs::series(
        "us-east-1",
        "CIS",
        "Denied",
        &dims("bob"),
    ));
    assert_eq!((bob[0].1.count, bob[0].1.sum), (1, 1.0));
    let bytes = at(cairn_api::logs::series(
        "us-east-1",
        "App",
        "Bytes",
        &Default::default(),
    ));
    assert_eq!(
        (
            bytes[0].1.count,
            bytes[0].1.sum,
            bytes[0].1.min,
            bytes[0].1.max
        ),
        (2, 15.0, 5.0, 10.0)
    );
    // A batch where nothing matches emits the default value once.
    call(
        "PutLogEvents",
        serde_json::json!({"logGroupName": "/mf", "logStreamName": "s",
            "logEvents": [{"timestamp": minute + 4, "message": "plain text"}]})
        .to_string(),
    );
    let bytes = at(cairn_api::logs::series(
        "us-east-1",
        "App",
        "Bytes",
        &Default::default(),
    ));
    assert_eq!((bytes[0].1.count, bytes[0].1.sum), (3, 15.0));
    rt.block_on(server.shutdown(std::time::Duration::from_secs(5)));
}

fn form(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The trail delivery to CloudWatch Logs never judges a record with trail state older than
/// the record: a StartLogging journaled but not yet applied by the engine holds back the
/// events after it instead of letting them be read as "not logging" and skipped for good
/// (a flaky compat test found this race).
#[test]
fn events_after_a_start_logging_the_engine_has_not_applied_yet_wait_for_it() {
    let bed = common::testbed(Arc::new(cairn_record::SystemClock), None, |_| {});
    let api = bed.api.clone();
    let (rt, server, addr) = common::serve(&api);
    let root = wire::Signer {
        key: &bed.key,
        secret: &bed.secret,
    };
    let logs = |op: &str, body: &str| wire::logs_call(&addr, &root, op, body);
    let acct = common::ACCOUNT;
    let garn = format!("arn:aws:logs:us-east-1:{acct}:log-group:/ct");
    let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"cloudtrail.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
    let allow = format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":["logs:CreateLogStream","logs:PutLogEvents"],"Resource":"{garn}:*"}}]}}"#
    );
    for f in [
        format!(
            "Action=CreateRole&Version=2010-05-08&RoleName=ct&AssumeRolePolicyDocument={}",
            form(trust)
        ),
        format!(
            "Action=PutRolePolicy&Version=2010-05-08&RoleName=ct&PolicyName=cw&PolicyDocument={}",
            form(&allow)
        ),
    ] {
        let (st, out) = wire::iam_call(&addr, &root, &f);
        assert_eq!(st, 200, "{out}");
    }
    let (st, out) = logs("CreateLogGroup", r#"{"logGroupName":"/ct"}"#);
    assert_eq!(st, 200, "{out}");
    let (st, out) = wire::s3_call(&addr, &root, "PUT", "/ct-bucket", "", "");
    assert_eq!(st, 200, "{out}");
    let (st, out) = wire::call(
        &addr,
        &root,
        "CreateTrail",
        &format!(
            r#"{{"Name":"cw-trail","S3BucketName":"ct-bucket","CloudWatchLogsLogGroupArn":"{garn}:*","CloudWatchLogsRoleArn":"arn:aws:iam::{acct}:role/ct"}}"#
        ),
    );
    assert_eq!(st, 200, "{out}");
    let cw = cairn_api::logs::deliver::CwDelivery::new(api.clone());
    cw.step().unwrap();
    // The command is durable, the engine has not read it yet; a call follows it.
    api.engine
        .command(cairn_trail::TrailCommand::StartLogging {
            name: "cw-trail".into(),
            at: Utc::now(),
        })
        .unwrap();
    let (st, out) = wire::call(&addr, &root, "DescribeTrails", "{}");
    assert_eq!(st, 200, "{out}");
    cw.step().unwrap();
    while api.engine.pump().unwrap().more {}
    cw.step().unwrap();
    let (st, out) = logs("FilterLogEvents", r#"{"logGroupName":"/ct"}"#);
    assert_eq!(st, 200, "{out}");
    assert!(
        out.contains(r#"\"eventName\":\"DescribeTrails\""#),
        "the DescribeTrails after StartLogging was not delivered: {out}"
    );
    rt.block_on(server.shutdown(std::time::Duration::from_secs(5)));
}
