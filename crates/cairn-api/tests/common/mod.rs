//! An in-process `Api` on a temporary directory (journal, embedded store, trail engine,
//! directory with a root key, metadata, history), shared by the integration tests and the
//! fuzz target (`fuzz/fuzz_targets/s3_request.rs` includes this file).
#![allow(dead_code)]

use cairn_api::cloudtrail::history::History;
use cairn_api::meta::Meta;
use cairn_api::{Api, ApiOptions};
use cairn_iam::identity::{Directory, Sealer};
use cairn_journal::{FaultInjector, Journal, JournalOptions};
use cairn_record::Clock;
use cairn_store::{EmbeddedStore, ObjectStore};
use cairn_trail::{EngineOptions, RootKey, TrailEngine};
use std::sync::Arc;

pub const ACCOUNT: &str = "123456789012";

/// Secrets kept as they are (tests only).
pub struct Plain;
impl Sealer for Plain {
    fn seal(&self, p: &[u8], _: &[u8]) -> Result<Vec<u8>, String> {
        Ok(p.to_vec())
    }
    fn open(&self, s: &[u8], _: &[u8]) -> Result<Vec<u8>, String> {
        Ok(s.to_vec())
    }
}

pub struct Testbed {
    pub dir: tempfile::TempDir,
    pub api: Arc<Api>,
    pub store: Arc<EmbeddedStore>,
    /// The account root's access key.
    pub key: String,
    pub secret: String,
}

/// Builds the API on `clock`, its journal failing through `faults` when given; `tune`
/// adjusts the options (the multipart directory is inside the temporary directory).
pub fn testbed(
    clock: Arc<dyn Clock>,
    faults: Option<Arc<dyn FaultInjector>>,
    tune: impl FnOnce(&mut ApiOptions),
) -> Testbed {
    testbed_wrapped(clock, faults, tune, |s| s)
}

/// [`testbed`], with the store requests see wrapped by `wrap` (a fault injector).
pub fn testbed_wrapped(
    clock: Arc<dyn Clock>,
    faults: Option<Arc<dyn FaultInjector>>,
    tune: impl FnOnce(&mut ApiOptions),
    wrap: impl FnOnce(Arc<EmbeddedStore>) -> Arc<dyn ObjectStore>,
) -> Testbed {
    let dir = tempfile::tempdir().unwrap();
    let journal = Arc::new(
        Journal::open(
            dir.path().join("journal"),
            JournalOptions {
                faults,
                ..Default::default()
            },
        )
        .unwrap(),
    );
    let store = Arc::new(EmbeddedStore::open(dir.path().join("store")).unwrap());
    let engine = Arc::new(
        TrailEngine::open(
            &dir.path().join("trail"),
            journal.clone(),
            store.clone(),
            clock.clone(),
            RootKey::from_bytes(&[7u8; 32]).unwrap(),
            EngineOptions::new(ACCOUNT),
        )
        .unwrap(),
    );
    let iam =
        Arc::new(Directory::open(&dir.path().join("iam.redb"), ACCOUNT, Arc::new(Plain)).unwrap());
    let k = iam.add_root_key(None, clock.now()).unwrap();
    let meta = Arc::new(Meta::open(&dir.path().join("meta.redb")).unwrap());
    let history = History::open(&dir.path().join("history.redb"), journal).unwrap();
    let mut opts = ApiOptions::new(ACCOUNT);
    opts.multipart_dir = dir.path().join("multipart");
    std::fs::create_dir_all(&opts.multipart_dir).unwrap();
    tune(&mut opts);
    let s: Arc<dyn ObjectStore> = wrap(store.clone());
    let kms =
        Arc::new(cairn_kms::Kms::open(&dir.path().join("kms.redb"), &[7u8; 32], ACCOUNT).unwrap());
    let logs =
        Arc::new(cairn_logs::LogStore::open(&dir.path().join("logs.redb"), &[7u8; 32]).unwrap());
    let api = Api::new(
        opts,
        engine,
        s.clone(),
        s,
        iam,
        kms,
        logs,
        meta,
        history,
        clock,
    );
    Testbed {
        dir,
        api,
        store,
        key: k.id,
        secret: k.secret,
    }
}

/// The calls a stand-in upstream received: `(operation, body)`.
pub type UpstreamCalls = Arc<std::sync::Mutex<Vec<(String, String)>>>;

/// A stand-in DynamoDB upstream on loopback: every call is answered `{}` (200), except
/// DescribeTable, which describes the named table with partition key `pk` (as a real
/// upstream would, in its own account `000000000000`), and other calls on the tables
/// `throttled` (400 ProvisionedThroughputExceededException), `broken` (500) and
/// `unavailable` (503), answered as DynamoDB does (with `x-amz-crc32`). Returns its endpoint and every call
/// it received as `(operation, body)`, DescribeTable included.
#[allow(dead_code)]
pub fn fake_dynamodb() -> (String, UpstreamCalls) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let seen: UpstreamCalls = Default::default();
    let calls = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let calls = calls.clone();
            std::thread::spawn(move || {
                let mut w = conn.try_clone().unwrap();
                let mut r = BufReader::new(conn);
                loop {
                    let mut target = String::new();
                    let mut len = 0usize;
                    let mut close = false;
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    loop {
                        line.clear();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let l = line.trim_end();
                        if l.is_empty() {
                            break;
                        }
                        if let Some((k, v)) = l.split_once(':') {
                            match k.to_ascii_lowercase().as_str() {
                                "content-length" => len = v.trim().parse().unwrap_or(0),
                                "connection" => close = v.trim().eq_ignore_ascii_case("close"),
                                "x-amz-target" => {
                                    target =
                                        v.trim().trim_start_matches("DynamoDB_20120810.").into()
                                }
                                _ => {}
                            }
                        }
                    }
                    let mut body = vec![0; len];
                    if r.read_exact(&mut body).is_err() {
                        return;
                    }
                    let body = String::from_utf8_lossy(&body).into_owned();
                    // Item calls on these tables fail upstream as DynamoDB's do.
                    let failing = [
                        ("throttled", "400 Bad Request", "ProvisionedThroughputExceededException", "The level of configured provisioned throughput for the table was exceeded. Consider increasing your provisioning level with the UpdateTable API."),
                        ("broken", "500 Internal Server Error", "InternalServerError", "Internal server error"),
                        ("unavailable", "503 Service Unavailable", "ServiceUnavailable", "The service is unavailable"),
                    ];
                    let table = serde_json::from_str::<serde_json::Value>(&body)
                        .ok()
                        .and_then(|v| v["TableName"].as_str().map(str::to_string))
                        .unwrap_or_default();
                    let failure = failing
                        .iter()
                        .find(|f| f.0 == table && target != "DescribeTable");
                    let status = failure.map_or("200 OK", |f| f.1);
                    let answer = if let Some(f) = failure {
                        format!(
                            r#"{{"__type":"com.amazonaws.dynamodb.v20120810#{}","message":"{}"}}"#,
                            f.2, f.3
                        )
                    } else if target == "DescribeTable" {
                        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                        let t = v["TableName"].as_str().unwrap_or("t").to_string();
                        serde_json::json!({"Table": {
                            "TableName": t,
                            "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
                            "TableArn": format!("arn:aws:dynamodb:us-east-1:000000000000:table/{t}")
                        }})
                        .to_string()
                    } else {
                        "{}".to_string()
                    };
                    calls.lock().unwrap().push((target, body));
                    let head = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/x-amz-json-1.0\r\nx-amz-crc32: {}\r\nx-amzn-requestid: UPSTREAMREQUESTID\r\ncontent-length: {}\r\n\r\n",
                        crc32fast::hash(answer.as_bytes()),
                        answer.len()
                    );
                    if w.write_all(head.as_bytes()).is_err()
                        || w.write_all(answer.as_bytes()).is_err()
                        || close
                    {
                        return;
                    }
                }
            });
        }
    });
    (endpoint, seen)
}

/// A DynamoDB upstream target for `fake_dynamodb`'s endpoint.
#[allow(dead_code)]
pub fn dynamodb_target(endpoint: &str) -> cairn_api::dynamodb::Target {
    cairn_api::dynamodb::Target {
        endpoint: endpoint.to_string(),
        signing_region: "us-east-1".into(),
        region: "us-east-1".into(),
        access_key_id: "upstream".into(),
        secret_access_key: "upstream-secret".into(),
        session_token: None,
        timeout: std::time::Duration::from_secs(10),
        ca_file: None,
        account: None,
    }
}

/// Serves `api` over HTTP on a free loopback port: the runtime it runs on, the server and
/// its address.
pub fn serve(api: &Arc<cairn_api::Api>) -> (tokio::runtime::Runtime, cairn_api::Server, String) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let server = rt
        .block_on(cairn_api::serve(api.clone(), listener, None))
        .unwrap();
    let addr = server.local_addr.to_string();
    (rt, server, addr)
}
