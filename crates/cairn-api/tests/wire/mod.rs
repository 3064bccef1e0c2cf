//! Signed requests over a real socket to an in-process server, for the integration tests.
#![allow(dead_code)]

use chrono::Utc;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};

/// Whose credentials sign a request.
pub struct Signer<'a> {
    pub key: &'a str,
    pub secret: &'a str,
}

/// Sends one SigV4-signed request (`path` and `query` as sent) to `service`; returns
/// (status, body).
#[allow(clippy::too_many_arguments)]
pub fn signed(
    addr: &str,
    w: &Signer,
    method: &str,
    path: &str,
    query: &str,
    service: &str,
    extra: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let (status, _, body) = signed_full(addr, w, method, path, query, service, extra, body);
    (status, body)
}

/// [`signed`], with the answer's headers (names lowercased).
#[allow(clippy::too_many_arguments)]
pub fn signed_full(
    addr: &str,
    w: &Signer,
    method: &str,
    path: &str,
    query: &str,
    service: &str,
    extra: &[(&str, &str)],
    body: &str,
) -> (u16, Vec<(String, String)>, String) {
    let sha = hex::encode(Sha256::digest(body.as_bytes()));
    let mut headers = vec![("host".to_string(), addr.to_string())];
    headers.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let req = cairn_iam::sigv4::Request {
        method,
        path,
        query,
        headers: &headers,
        body_sha256: &sha,
        s3: service == "s3",
    };
    let added = cairn_iam::sigv4::sign(&req, w.key, w.secret, "us-east-1", service, Utc::now());
    let target = if query.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{query}")
    };
    let mut m = format!("{method} {target} HTTP/1.1\r\n");
    for (k, v) in headers.iter().chain(added.iter()) {
        m.push_str(&format!("{k}: {v}\r\n"));
    }
    m.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    ));
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(m.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|x| x.parse().ok())
        .unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let headers = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body.to_string())
}

/// A CloudTrail (awsJson) call.
pub fn call(addr: &str, w: &Signer, op: &str, body: &str) -> (u16, String) {
    let target = format!("com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.{op}");
    let extra = [
        ("x-amz-target", target.as_str()),
        ("content-type", "application/x-amz-json-1.1"),
    ];
    signed(addr, w, "POST", "/", "", "cloudtrail", &extra, body)
}

/// A CloudWatch Logs (awsJson 1.1) call.
pub fn logs_call(addr: &str, w: &Signer, op: &str, body: &str) -> (u16, String) {
    let target = format!("Logs_20140328.{op}");
    let extra = [
        ("x-amz-target", target.as_str()),
        ("content-type", "application/x-amz-json-1.1"),
    ];
    signed(addr, w, "POST", "/", "", "logs", &extra, body)
}

/// An S3 call.
pub fn s3_call(
    addr: &str,
    w: &Signer,
    method: &str,
    path: &str,
    query: &str,
    body: &str,
) -> (u16, String) {
    signed(addr, w, method, path, query, "s3", &[], body)
}

/// An IAM (query protocol) call.
pub fn iam_call(addr: &str, w: &Signer, form: &str) -> (u16, String) {
    let extra = [(
        "content-type",
        "application/x-www-form-urlencoded; charset=utf-8",
    )];
    signed(addr, w, "POST", "/", "", "iam", &extra, form)
}
