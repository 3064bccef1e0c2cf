//! A minimal signed client for cairn's own commands (`trail flush`, `status`,
//! `validate-logs`) against a running server or AWS: HTTP/1.1, or HTTPS trusting the
//! configured CA bundle or the system's roots; SigV4 with the credentials the `aws` CLI
//! would use ([`AwsEnv`]).

use crate::aws_env::{AwsEnv, Credentials};
use anyhow::{bail, Context, Result};
use cairn_record::{Clock, SystemClock};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;

/// A complete HTTP/1.1 request for CloudTrail operation `op`, signed now with SigV4
/// (`creds`: access key id, secret, optional session token). With `keep_alive` false the
/// server closes the connection after answering.
pub fn signed_cloudtrail_request(
    host: &str,
    creds: (&str, &str, Option<&str>),
    region: &str,
    op: &str,
    body: &[u8],
    keep_alive: bool,
) -> Vec<u8> {
    signed_json_request(
        host,
        creds,
        region,
        (
            "cloudtrail",
            &format!("com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.{op}"),
        ),
        body,
        keep_alive,
    )
}

/// A signed awsJson 1.1 request for `service` (its signing name) with `X-Amz-Target`
/// `target`.
pub fn signed_json_request(
    host: &str,
    creds: (&str, &str, Option<&str>),
    region: &str,
    (service, target): (&str, &str),
    body: &[u8],
    keep_alive: bool,
) -> Vec<u8> {
    signed_post(
        host,
        creds,
        region,
        service,
        &[
            ("x-amz-target", target),
            ("content-type", "application/x-amz-json-1.1"),
        ],
        body,
        keep_alive,
    )
}

/// A SigV4-signed `POST /` with `headers` and `body`, as raw HTTP/1.1.
pub(crate) fn signed_post(
    host: &str,
    creds: (&str, &str, Option<&str>),
    region: &str,
    service: &str,
    extra: &[(&str, &str)],
    body: &[u8],
    keep_alive: bool,
) -> Vec<u8> {
    signed_request(
        host,
        creds,
        region,
        service,
        ("POST", "/", ""),
        extra,
        body,
        keep_alive,
    )
}

/// A SigV4-signed `method path?query` with `headers` and `body`, as raw HTTP/1.1 (`path` and
/// `query` as they go on the wire, already encoded).
#[allow(clippy::too_many_arguments)]
pub(crate) fn signed_request(
    host: &str,
    creds: (&str, &str, Option<&str>),
    region: &str,
    service: &str,
    (method, path, query): (&str, &str, &str),
    extra: &[(&str, &str)],
    body: &[u8],
    keep_alive: bool,
) -> Vec<u8> {
    let sha = hex::encode(Sha256::digest(body));
    let mut headers = vec![("host".to_string(), host.to_string())];
    headers.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    if let Some(t) = creds.2 {
        headers.push(("x-amz-security-token".into(), t.to_string()));
    }
    let req = cairn_iam::sigv4::Request {
        method,
        path,
        query,
        headers: &headers,
        body_sha256: &sha,
        s3: false,
    };
    let added = cairn_iam::sigv4::sign(&req, creds.0, creds.1, region, service, SystemClock.now());
    let target = if query.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{query}")
    };
    let mut out = Vec::with_capacity(1024 + body.len());
    for part in [method, " ", &target, " HTTP/1.1\r\n"] {
        out.extend_from_slice(part.as_bytes());
    }
    for (k, v) in headers.iter().chain(added.iter()) {
        for part in [k.as_str(), ": ", v.as_str(), "\r\n"] {
            out.extend_from_slice(part.as_bytes());
        }
    }
    out.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

pub struct Client {
    host: String,
    tls: bool,
    region: String,
    creds: Credentials,
    ca_bundle: Option<PathBuf>,
}

/// An HTTP answer: status, headers (names lowercased) and body.
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    /// The first header named `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Client {
    /// A client of `service` (its SDK id: `CloudTrail`, `S3`) found as the `aws` CLI finds
    /// it (see [`AwsEnv`]); `fallback_region` when no region is configured.
    pub fn for_service(
        env: &AwsEnv,
        (service, host_prefix): (&str, &str),
        fallback_region: &str,
    ) -> Result<Client> {
        let region = env.region().unwrap_or_else(|| fallback_region.to_string());
        let endpoint = env.endpoint(service, host_prefix, &region);
        Client::new(&endpoint, region, env.credentials()?, env.ca_bundle())
    }

    /// The signing inputs of this client's requests: host, credentials, region.
    pub fn signing(&self) -> (&str, (&str, &str, Option<&str>), &str) {
        (
            &self.host,
            (
                &self.creds.key,
                &self.creds.secret,
                self.creds.token.as_deref(),
            ),
            &self.region,
        )
    }

    pub fn new(
        endpoint: &str,
        region: String,
        creds: Credentials,
        ca_bundle: Option<PathBuf>,
    ) -> Result<Client> {
        let (tls, rest) = match (
            endpoint.strip_prefix("https://"),
            endpoint.strip_prefix("http://"),
        ) {
            (Some(r), _) => (true, r),
            (None, Some(r)) => (false, r),
            _ => bail!("endpoint {endpoint} must be http://HOST[:PORT] or https://HOST[:PORT]"),
        };
        let host = rest.trim_end_matches('/').to_string();
        if host.is_empty() || host.contains('/') {
            bail!("endpoint {endpoint} must be http://HOST[:PORT] or https://HOST[:PORT]");
        }
        Ok(Client {
            host,
            tls,
            region,
            creds,
            ca_bundle,
        })
    }

    /// Calls a CloudTrail operation; returns the JSON response or the AWS error.
    pub fn cloudtrail(&self, op: &str, body: &Value) -> Result<Value> {
        let body = serde_json::to_vec(body)?;
        let msg = signed_cloudtrail_request(
            &self.host,
            (
                &self.creds.key,
                &self.creds.secret,
                self.creds.token.as_deref(),
            ),
            &self.region,
            op,
            &body,
            false,
        );
        let a = self.exchange(&msg)?;
        let v: Value = serde_json::from_slice(&a.body).unwrap_or(Value::Null);
        if a.status != 200 {
            bail!(
                "An error occurred ({}) when calling the {op} operation: {}",
                v["__type"]
                    .as_str()
                    .map(|t| t.rsplit('#').next().unwrap_or(t))
                    .unwrap_or("error"),
                v["message"]
                    .as_str()
                    .or(v["Message"].as_str())
                    .map(str::to_string)
                    .unwrap_or_else(|| String::from_utf8_lossy(&a.body).into_owned())
            );
        }
        Ok(v)
    }

    /// A signed S3 `GET path?query` (path-style), as the answer's status and body.
    pub fn s3_get(&self, path: &str, query: &str) -> Result<Answer> {
        // An empty body's hash, signed as S3 wants it; the path is a bucket name, which needs
        // no S3-specific escaping.
        let empty = hex::encode(Sha256::digest(b""));
        let (host, creds, region) = self.signing();
        let msg = signed_request(
            host,
            creds,
            region,
            "s3",
            ("GET", path, query),
            &[("x-amz-content-sha256", &empty)],
            b"",
            false,
        );
        self.exchange(&msg)
    }

    /// Sends one request on a new connection the server closes after answering.
    pub fn exchange(&self, msg: &[u8]) -> Result<Answer> {
        let mut s = TcpStream::connect(self.authority())
            .with_context(|| format!("connecting to {}", self.host))?;
        s.set_read_timeout(Some(std::time::Duration::from_secs(60)))?;
        let mut resp = Vec::new();
        if self.tls {
            let mut t = self.tls_stream(s)?;
            t.write_all(msg)?;
            // The server closes after answering (connection: close); a missing TLS
            // close_notify at that point is not an error for a complete response.
            if let Err(e) = t.read_to_end(&mut resp) {
                if e.kind() != std::io::ErrorKind::UnexpectedEof || resp.is_empty() {
                    return Err(e.into());
                }
            }
        } else {
            s.write_all(msg)?;
            s.read_to_end(&mut resp)?;
        }
        let split = resp
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .context("malformed HTTP response")?;
        let head = String::from_utf8_lossy(&resp[..split]);
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .context("malformed HTTP status line")?;
        let mut body = resp[split + 4..].to_vec();
        if head
            .lines()
            .any(|l| l.to_ascii_lowercase().replace(' ', "") == "transfer-encoding:chunked")
        {
            body = dechunk(&body)?;
        }
        let headers = head
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    /// `host:port`, with the scheme's default port when the endpoint names none.
    fn authority(&self) -> String {
        let has_port = match self.host.strip_prefix('[') {
            Some(v6) => v6.contains("]:"),
            None => self.host.contains(':'),
        };
        if has_port {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, if self.tls { 443 } else { 80 })
        }
    }

    fn tls_stream(
        &self,
        tcp: TcpStream,
    ) -> Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
        let mut roots = rustls::RootCertStore::empty();
        match &self.ca_bundle {
            Some(bundle) => {
                let mut rd = std::io::BufReader::new(
                    std::fs::File::open(bundle)
                        .with_context(|| format!("opening {}", bundle.display()))?,
                );
                for c in rustls_pemfile::certs(&mut rd) {
                    roots.add(c?)?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                for c in found.certs {
                    // A system certificate rustls cannot use is skipped, as the CLI does.
                    let _ = roots.add(c);
                }
                if roots.is_empty() {
                    bail!("no system CA certificates found; set AWS_CA_BUNDLE");
                }
            }
        }
        let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let name = match self.host.rsplit_once(':') {
            Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => &self.host,
        }
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
        let server = rustls::pki_types::ServerName::try_from(name)?;
        let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), server)?;
        Ok(rustls::StreamOwned::new(conn, tcp))
    }
}

/// The body of a `Transfer-Encoding: chunked` answer.
fn dechunk(mut b: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("malformed chunked body")?;
        let size_text = String::from_utf8_lossy(&b[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .context("malformed chunk size")?;
        b = &b[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if b.len() < size + 2 {
            bail!("truncated chunked body");
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

/// A SigV4-signed query-protocol (form) request to `/` (IAM, STS), as raw HTTP/1.1.
pub fn signed_form_request(
    host: &str,
    creds: (&str, &str, Option<&str>),
    region: &str,
    service: &str,
    body: &str,
) -> Vec<u8> {
    signed_post(
        host,
        creds,
        region,
        service,
        &[(
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8",
        )],
        body.as_bytes(),
        false,
    )
}
