//! The remote store against a real S3-compatible server (`moto_server` from PyPI) on loopback.
//! Skipped when `moto_server` is not installed, unless `CAIRN_REQUIRE_MOTO=1` (the test
//! command sets it after installing moto).

use cairn_store::*;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Moto(Child, u16);
impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn moto_bin() -> Option<String> {
    if let Ok(p) = std::env::var("CAIRN_MOTO_SERVER") {
        return Some(p);
    }
    let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/../../.venv/bin/moto_server");
    if std::path::Path::new(venv).exists() {
        return Some(venv.into());
    }
    Command::new("moto_server")
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .ok()
        .map(|_| "moto_server".into())
}

fn start_moto() -> Option<Moto> {
    let Some(bin) = moto_bin() else {
        assert!(
            std::env::var("CAIRN_REQUIRE_MOTO").is_err(),
            "moto_server is required but not installed"
        );
        eprintln!("moto_server not installed; skipping");
        return None;
    };
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(bin)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let m = Moto(child, port);
    let t0 = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "moto_server did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Some(m)
}

fn create_bucket(port: u16, bucket: &str) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
    let mut r = String::new();
    s.read_to_string(&mut r).unwrap();
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
}

#[test]
fn remote_store_against_moto_server() {
    let Some(m) = start_moto() else { return };
    create_bucket(m.1, "trail-bucket");
    let s = RemoteStore::new(RemoteConfig {
        endpoint: format!("http://127.0.0.1:{}", m.1),
        region: "us-east-1".into(),
        access_key_id: "testing".into(),
        secret_access_key: "testing".into(),
        virtual_hosted: false,
        session_token: None,
        ca_bundle: None,
    })
    .unwrap();
    assert!(s.bucket_exists("trail-bucket").unwrap());
    let mut md = BTreeMap::new();
    md.insert("signature".to_string(), "00ff".to_string());
    md.insert(
        "signature-algorithm".to_string(),
        "SHA256withRSA".to_string(),
    );
    let opts = PutOptions {
        content_type: Some("application/json".into()),
        content_encoding: Some("gzip".into()),
        metadata: md.clone(),
        if_none_match: false,
        ..Default::default()
    };
    s.put(
        "trail-bucket",
        "AWSLogs/1/CloudTrail-Digest/us-east-1/d.json.gz",
        b"digest",
        &opts,
    )
    .unwrap();
    let o = s
        .get(
            "trail-bucket",
            "AWSLogs/1/CloudTrail-Digest/us-east-1/d.json.gz",
        )
        .unwrap();
    assert_eq!(o.body, b"digest");
    assert_eq!(o.info.metadata, md);
    assert_eq!(o.info.content_type.as_deref(), Some("application/json"));
    let h = s
        .head(
            "trail-bucket",
            "AWSLogs/1/CloudTrail-Digest/us-east-1/d.json.gz",
        )
        .unwrap();
    assert_eq!(h.size, 6);
    assert_eq!(h.metadata, md);
    for k in [
        "AWSLogs/1/CloudTrail/us-east-1/a",
        "AWSLogs/1/CloudTrail/us-east-1/b",
        "AWSLogs/1/CloudTrail/us-east-1/c",
        "AWSLogs/1/CloudTrail/us-west-2/a",
    ] {
        s.put("trail-bucket", k, b"x", &PutOptions::default())
            .unwrap();
    }
    // String prefix (not a whole path segment), marker, paging.
    let keys = |p: ListPage| p.objects.into_iter().map(|o| o.key).collect::<Vec<_>>();
    let p = s
        .list(
            "trail-bucket",
            "AWSLogs/1/CloudTrail/us-e",
            Some("AWSLogs/1/CloudTrail/us-east-1/a"),
            1,
        )
        .unwrap();
    assert!(p.is_truncated);
    assert_eq!(keys(p), ["AWSLogs/1/CloudTrail/us-east-1/b"]);
    assert_eq!(
        list_all(&s, "trail-bucket", "AWSLogs/1/CloudTrail/")
            .unwrap()
            .len(),
        4
    );
    assert!(matches!(
        s.get("trail-bucket", "nope"),
        Err(StoreError::NoSuchKey { .. })
    ));
    s.delete("trail-bucket", "AWSLogs/1/CloudTrail/us-east-1/a")
        .unwrap();
    assert!(matches!(
        s.get("trail-bucket", "AWSLogs/1/CloudTrail/us-east-1/a"),
        Err(StoreError::NoSuchKey { .. })
    ));
    assert!(matches!(
        s.put("trail-bucket", "a/../b", b"", &PutOptions::default()),
        Err(StoreError::InvalidKey(_))
    ));
}
