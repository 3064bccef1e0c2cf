//! Fuzzes S3 request parsing and routing: addressing (path and virtual host), operation
//! routing, SigV4 and SigV2 credential parsing, aws-chunked decoding, XML bodies, and the S3
//! handlers themselves (run as the account root against an embedded store with versioned and
//! plain buckets), and whatever else the registry routes (KMS JSON calls, SSE-KMS writes,
//! CloudWatch Logs, DynamoDB calls to a stand-in upstream, in the corpus). Invariants: no panic, no 5xx other than 501/503 for any input, and every
//! request — refused ones included — builds a record with the fields every record has (an
//! error answer's with its errorCode).
//!
//! Input: up to eight requests separated by `\n===\n`, run in order against the same store
//! (so sequences reach states single requests cannot: an upload then its parts, a policy
//! then the requests it governs, a lock then a delete). Each request is
//! `METHOD PATH[?QUERY]\n` then `name: value` header lines, a blank line, the body.
#![no_main]

#[path = "../../crates/cairn-api/tests/common/mod.rs"]
mod common;

use cairn_api::HttpRequest;
use cairn_record::{Clock, SystemClock};
use cairn_store::{ObjectStore, PutOptions, Versioning};
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, OnceLock};

struct World {
    bed: common::Testbed,
    rt: tokio::runtime::Runtime,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        // DynamoDB calls go to a stand-in upstream (answers `{}`; DescribeTable a schema).
        let (ddb, _) = common::fake_dynamodb();
        let bed = common::testbed(Arc::new(SystemClock), None, |o| {
            o.max_body_bytes = 1 << 20;
            o.dynamodb = Some(common::dynamodb_target(&ddb));
        });
        let store = &bed.store;
        for b in ["fuzz", "fuzzv"] {
            store.create_bucket(b).unwrap();
        }
        store.set_versioning("fuzzv", Versioning::Enabled).unwrap();
        for (b, k) in [
            ("fuzz", "a"),
            ("fuzz", "dir/b"),
            ("fuzzv", "a"),
            ("fuzzv", "a"),
        ] {
            store.put(b, k, b"seed", &PutOptions::default()).unwrap();
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        World { bed, rt }
    })
}

fn parse(data: &[u8]) -> Option<HttpRequest> {
    let split = data
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|p| (p, p + 2))
        .unwrap_or((data.len(), data.len()));
    let head = String::from_utf8_lossy(&data[..split.0]);
    let body = bytes::Bytes::copy_from_slice(&data[split.1..]);
    let mut lines = head.lines();
    let first = lines.next()?;
    let (method, target) = first.split_once(' ').unwrap_or((first, "/"));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut headers = vec![];
    let mut bad_header = None;
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            let v = v.trim();
            if !v.is_ascii() {
                bad_header = Some(format!(
                    "Header {k} contains characters that are not allowed"
                ));
                continue;
            }
            headers.push((k.trim().to_ascii_lowercase(), v.to_string()));
        }
    }
    if !headers.iter().any(|(k, _)| k == "host") {
        headers.push(("host".into(), "127.0.0.1:4566".into()));
    }
    Some(HttpRequest {
        method: method.to_ascii_uppercase(),
        path: if path.starts_with('/') {
            path.to_string()
        } else {
            format!("/{path}")
        },
        query: query.to_string(),
        headers,
        body,
        peer: "127.0.0.1".parse().unwrap(),
        tls: None,
        bad_header,
        body_problem: None,
        body_stream: None,
        body_unread: false,
        signature_checked: false,
        presented: None,
    })
}

/// Splits the input into the requests of a sequence.
fn requests(data: &[u8]) -> Vec<&[u8]> {
    const SEP: &[u8] = b"\n===\n";
    let mut out = Vec::new();
    let mut rest = data;
    while out.len() < 8 {
        match rest.windows(SEP.len()).position(|w| w == SEP) {
            Some(p) => {
                out.push(&rest[..p]);
                rest = &rest[p + SEP.len()..];
            }
            None => {
                out.push(rest);
                break;
            }
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    for one in requests(data) {
        run(one);
    }
});

fn run(data: &[u8]) {
    let Some(req) = parse(data) else { return };
    // Pure parsing and routing.
    let _ = cairn_api::s3::target(&req);
    let _ = cairn_api::s3::classify(&req);
    let sreq = cairn_iam::sigv4::Request {
        method: &req.method,
        path: &req.path,
        query: &req.query,
        headers: &req.headers,
        body_sha256: "",
        s3: true,
    };
    let _ = cairn_iam::sigv4::parse(&sreq);
    let q = req.query_params();
    if let Some(Ok(p)) = cairn_iam::sigv2::presigned(&q) {
        let _ = cairn_iam::sigv2::verify(
            &p,
            &req.method,
            &req.path,
            &q,
            &req.headers,
            "k",
            chrono_now(),
        );
    }
    let signer = cairn_api::s3::chunked::ChunkSigner {
        key: vec![1; 32],
        amz_date: "20260101T000000Z".into(),
        scope: "20260101/us-east-1/s3/aws4_request".into(),
        seed: "0".repeat(64),
    };
    let _ = cairn_api::s3::chunked::decode(&req.body, Some(&signer), data.first() == Some(&b'P'));
    let _ = cairn_api::s3::chunked::decode(&req.body, None, true);
    let _ = cairn_api::s3::chunked::verify(&req.headers, &req.body);
    let _ = cairn_api::protocol::xml::parse(&req.body);
    // The handlers.
    let w = world();
    let (reply, rec) =
        w.rt.block_on(cairn_api::edge::fuzz_as_root(&w.bed.api, req.clone()));
    assert!(
        reply.status < 500 || reply.status == 501 || reply.status == 503,
        "{} {}?{} answered {}: {}",
        req.method,
        req.path,
        req.query,
        reply.status,
        String::from_utf8_lossy(&reply.body)
    );
    // Every request is recorded, refused ones included, with the fields every record has.
    let v: serde_json::Value = serde_json::from_slice(&rec).expect("record is JSON");
    for f in ["eventVersion", "eventTime", "eventSource", "eventName", "awsRegion", "eventID"] {
        assert!(
            v.get(f).is_some_and(|x| x.as_str().is_some_and(|s| !s.is_empty())),
            "{} {}?{}: record without {f}: {v}",
            req.method,
            req.path,
            req.query
        );
    }
    if reply.status >= 400 {
        assert!(
            v.get("errorCode").is_some(),
            "{} {}?{} answered {} but its record has no errorCode: {v}",
            req.method,
            req.path,
            req.query,
            reply.status
        );
    }
}

fn chrono_now() -> chrono::DateTime<chrono::Utc> {
    SystemClock.now()
}
