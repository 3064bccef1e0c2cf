//! The DynamoDB upstream's errors come back as it sent them (issue 13): the status, the body
//! byte for byte and the `x-amz-crc32` the SDK checks, for throttling (400
//! ProvisionedThroughputExceededException), a server error (500) and unavailability (503),
//! on reads and on writes. Each call's record carries the upstream's error code, never an
//! item value; a write's record is resolved with the error (never a success).

mod common;
mod wire;

use cairn_record::SystemClock;
use cairn_trail::entry::{decode, Entry};
use std::sync::Arc;
use wire::Signer;

fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// One call straight to the upstream (which checks no signature).
fn direct(endpoint: &str, op: &str, body: &str) -> (u16, Vec<(String, String)>, String) {
    let addr = endpoint.trim_start_matches("http://");
    let w = Signer {
        key: "upstream",
        secret: "upstream-secret",
    };
    let target = format!("DynamoDB_20120810.{op}");
    let extra = [
        ("x-amz-target", target.as_str()),
        ("content-type", "application/x-amz-json-1.0"),
    ];
    wire::signed_full(addr, &w, "POST", "/", "", "dynamodb", &extra, body)
}

/// Every delivered-kind record in the journal (events and resolved outcomes), and whether
/// each is a resolved write.
fn journal_records(api: &cairn_api::Api) -> Vec<(bool, serde_json::Value)> {
    let journal = api.engine.journal();
    let mut r = journal.reader(0).unwrap();
    let mut out = Vec::new();
    while let Some((_, bytes)) = r.next_record().unwrap() {
        match decode(&bytes).unwrap() {
            Entry::Event { json, .. } => out.push((false, serde_json::from_slice(&json).unwrap())),
            Entry::Resolved { json, .. } => {
                out.push((true, serde_json::from_slice(&json).unwrap()))
            }
            _ => {}
        }
    }
    out
}

/// A served testbed whose DynamoDB upstream is the stand-in (`common::fake_dynamodb`): the
/// upstream's endpoint and calls, the testbed, its runtime, server and address.
fn served_with_fake_upstream() -> (
    String,
    common::UpstreamCalls,
    common::Testbed,
    tokio::runtime::Runtime,
    cairn_api::Server,
    String,
) {
    let (endpoint, calls) = common::fake_dynamodb();
    let bed = common::testbed(Arc::new(SystemClock), None, |o| {
        o.dynamodb = Some(common::dynamodb_target(&endpoint))
    });
    let (rt, server, addr) = common::serve(&bed.api);
    (endpoint, calls, bed, rt, server, addr)
}

#[test]
fn upstream_errors_pass_through_byte_for_byte_and_are_recorded_as_errors() {
    let (endpoint, calls, bed, rt, server, addr) = served_with_fake_upstream();
    let root = Signer {
        key: &bed.key,
        secret: &bed.secret,
    };
    let cases = [
        ("throttled", 400, "ProvisionedThroughputExceededException"),
        ("broken", 500, "InternalServerError"),
        ("unavailable", 503, "ServiceUnavailable"),
    ];
    for (table, status, code) in cases {
        for (op, body) in [
            (
                "PutItem",
                format!(
                    r#"{{"TableName":"{table}","Item":{{"pk":{{"S":"k1"}},"v":{{"S":"SENTINEL-VALUE-{table}"}}}}}}"#
                ),
            ),
            (
                "GetItem",
                format!(r#"{{"TableName":"{table}","Key":{{"pk":{{"S":"k1"}}}}}}"#),
            ),
        ] {
            let want = direct(&endpoint, op, &body);
            assert_eq!(want.0, status);
            let target = format!("DynamoDB_20120810.{op}");
            let extra = [
                ("x-amz-target", target.as_str()),
                ("content-type", "application/x-amz-json-1.0"),
            ];
            let got = wire::signed_full(&addr, &root, "POST", "/", "", "dynamodb", &extra, &body);
            assert_eq!(got.0, status, "{op} on {table}: {}", got.2);
            assert_eq!(got.2, want.2, "{op} on {table}: the body changed");
            let crc = header(&got.1, "x-amz-crc32").expect("x-amz-crc32 kept");
            assert_eq!(Some(crc), header(&want.1, "x-amz-crc32"));
            assert_eq!(crc, crc32fast::hash(got.2.as_bytes()).to_string());
            // The request id is cairn's (the one in the record), not the upstream's.
            let rid = header(&got.1, "x-amzn-requestid").expect("a request id");
            assert_ne!(rid, "UPSTREAMREQUESTID");
            let recs = journal_records(&bed.api);
            let mine: Vec<_> = recs.iter().filter(|(_, r)| r["requestID"] == rid).collect();
            assert_eq!(mine.len(), 1, "{op} on {table}: {mine:?}");
            let (resolved, rec) = mine[0];
            assert_eq!(rec["eventName"], op);
            assert_eq!(rec["errorCode"], code, "{rec}");
            assert!(rec.get("responseElements").is_none_or(|v| v.is_null()));
            // A write is journaled as an intent first and resolved with its outcome.
            assert_eq!(*resolved, op == "PutItem", "{op}");
            assert!(
                !rec.to_string().contains("SENTINEL"),
                "an item value reached the record: {rec}"
            );
        }
    }
    // Every call reached the upstream once (and the schema reads).
    let calls = calls.lock().unwrap();
    for op in ["PutItem", "GetItem"] {
        assert_eq!(calls.iter().filter(|(o, _)| o == op).count(), 6, "{op}");
    }
    rt.block_on(server.shutdown(std::time::Duration::from_secs(5)));
}

/// An item call refused before its table is known (a table name DynamoDB would refuse) is
/// still recorded as that call's data event, read-only as its kind is, with the error, and
/// reaches the upstream never.
#[test]
fn item_calls_refused_before_their_table_is_known_are_data_events() {
    let (_, calls, bed, rt, server, addr) = served_with_fake_upstream();
    let root = Signer {
        key: &bed.key,
        secret: &bed.secret,
    };
    for (op, body, read_only) in [
        (
            "PutItem",
            r#"{"TableName":"x!","Item":{"pk":{"S":"SENTINEL-VALUE"}}}"#,
            false,
        ),
        (
            "GetItem",
            r#"{"TableName":"ab","Key":{"pk":{"S":"SENTINEL-VALUE"}}}"#,
            true,
        ),
        (
            "BatchGetItem",
            r#"{"RequestItems":{"no/such":{"Keys":[{"pk":{"S":"SENTINEL-VALUE"}}]}}}"#,
            true,
        ),
        // A statement cairn cannot read: its table is never known (PartiQL calls count as
        // writes).
        (
            "ExecuteStatement",
            r#"{"Statement":"FROB 'SENTINEL-VALUE'"}"#,
            false,
        ),
    ] {
        let target = format!("DynamoDB_20120810.{op}");
        let extra = [
            ("x-amz-target", target.as_str()),
            ("content-type", "application/x-amz-json-1.0"),
        ];
        let got = wire::signed_full(&addr, &root, "POST", "/", "", "dynamodb", &extra, body);
        assert_eq!(got.0, 400, "{op}: {}", got.2);
        assert!(got.2.contains("ValidationException"), "{op}: {}", got.2);
        let rid = header(&got.1, "x-amzn-requestid").expect("a request id");
        let recs = journal_records(&bed.api);
        let mine: Vec<_> = recs.iter().filter(|(_, r)| r["requestID"] == rid).collect();
        assert_eq!(mine.len(), 1, "{op}: {mine:?}");
        let rec = &mine[0].1;
        assert_eq!(rec["eventName"], op);
        assert_eq!(rec["eventCategory"], "Data", "{rec}");
        assert_eq!(rec["managementEvent"], false, "{rec}");
        assert_eq!(rec["readOnly"], read_only, "{rec}");
        assert_eq!(rec["errorCode"], "ValidationException", "{rec}");
        // The placeholder names no table and keeps nothing of the body.
        assert!(rec["resources"].is_null(), "{rec}");
        assert_eq!(rec["requestParameters"], serde_json::json!({}), "{rec}");
        assert!(!rec.to_string().contains("SENTINEL"), "{rec}");
    }
    assert!(
        calls.lock().unwrap().is_empty(),
        "a refused call reached the upstream"
    );
    rt.block_on(server.shutdown(std::time::Duration::from_secs(5)));
}
