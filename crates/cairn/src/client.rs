//! A minimal signed CloudTrail client for cairn's own commands (`trail flush`, `status`)
//! against a running server: HTTP/1.1, or HTTPS trusting `AWS_CA_BUNDLE` (as the AWS CLI
//! does), SigV4 with the caller's credentials (`AWS_ACCESS_KEY_ID` /
//! `AWS_SECRET_ACCESS_KEY`, optionally `AWS_SESSION_TOKEN`).

use anyhow::{bail, Context, Result};
use cairn_record::{Clock, SystemClock};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::net::TcpStream;

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
    let sha = hex::encode(Sha256::digest(body));
    let mut headers = vec![("host".to_string(), host.to_string())];
    headers.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    if let Some(t) = creds.2 {
        headers.push(("x-amz-security-token".into(), t.to_string()));
    }
    let req = cairn_iam::sigv4::Request {
        method: "POST",
        path: "/",
        query: "",
        headers: &headers,
        body_sha256: &sha,
        s3: false,
    };
    let added = cairn_iam::sigv4::sign(&req, creds.0, creds.1, region, service, SystemClock.now());
    let mut msg = String::from("POST / HTTP/1.1\r\n");
    for (k, v) in headers.iter().chain(added.iter()) {
        msg.push_str(&format!("{k}: {v}\r\n"));
    }
    msg.push_str(&format!("content-length: {}\r\n", body.len()));
    if !keep_alive {
        msg.push_str("connection: close\r\n");
    }
    msg.push_str("\r\n");
    let mut out = msg.into_bytes();
    out.extend_from_slice(body);
    out
}

pub struct Client {
    host: String,
    tls: bool,
    region: String,
    key: String,
    secret: String,
    token: Option<String>,
}

impl Client {
    pub fn from_env(endpoint: &str, region: Option<&str>) -> Result<Client> {
        let (tls, rest) = match (
            endpoint.strip_prefix("https://"),
            endpoint.strip_prefix("http://"),
        ) {
            (Some(r), _) => (true, r),
            (None, Some(r)) => (false, r),
            _ => bail!("endpoint {endpoint} must be http://HOST:PORT or https://HOST:PORT"),
        };
        let host = rest.trim_end_matches('/').to_string();
        let key = std::env::var("AWS_ACCESS_KEY_ID").context("AWS_ACCESS_KEY_ID is not set")?;
        let secret =
            std::env::var("AWS_SECRET_ACCESS_KEY").context("AWS_SECRET_ACCESS_KEY is not set")?;
        let region = region
            .map(str::to_string)
            .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
            .or_else(|| std::env::var("AWS_REGION").ok())
            .unwrap_or_else(|| "us-east-1".into());
        Ok(Client {
            host,
            tls,
            region,
            key,
            secret,
            token: std::env::var("AWS_SESSION_TOKEN").ok(),
        })
    }

    /// Calls a CloudTrail operation; returns the JSON response or the AWS error.
    pub fn cloudtrail(&self, op: &str, body: &Value) -> Result<Value> {
        let body = serde_json::to_vec(body)?;
        let msg = signed_cloudtrail_request(
            &self.host,
            (&self.key, &self.secret, self.token.as_deref()),
            &self.region,
            op,
            &body,
            false,
        );
        let mut s = TcpStream::connect(&self.host)
            .with_context(|| format!("connecting to {}", self.host))?;
        let mut resp = Vec::new();
        if self.tls {
            let mut t = self.tls_stream(s)?;
            t.write_all(&msg)?;
            // The server closes after answering (connection: close); a missing TLS
            // close_notify at that point is not an error for a complete response.
            if let Err(e) = t.read_to_end(&mut resp) {
                if e.kind() != std::io::ErrorKind::UnexpectedEof || resp.is_empty() {
                    return Err(e.into());
                }
            }
        } else {
            s.write_all(&msg)?;
            s.read_to_end(&mut resp)?;
        }
        let text = String::from_utf8_lossy(&resp);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .context("malformed HTTP response")?;
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .context("malformed HTTP status line")?;
        let v: Value = serde_json::from_str(body.trim()).unwrap_or(Value::Null);
        if status != 200 {
            bail!(
                "{} ({}): {}",
                v["__type"].as_str().unwrap_or("error"),
                status,
                v["message"].as_str().unwrap_or(body)
            );
        }
        Ok(v)
    }

    fn tls_stream(
        &self,
        tcp: TcpStream,
    ) -> Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
        let mut roots = rustls::RootCertStore::empty();
        let bundle = std::env::var("AWS_CA_BUNDLE")
            .context("https endpoints need AWS_CA_BUNDLE (the CA or certificate to trust)")?;
        let mut rd = std::io::BufReader::new(
            std::fs::File::open(&bundle).with_context(|| format!("opening {bundle}"))?,
        );
        for c in rustls_pemfile::certs(&mut rd) {
            roots.add(c?)?;
        }
        let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let name = self
            .host
            .rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or(&self.host)
            .to_string();
        let server = rustls::pki_types::ServerName::try_from(name)?;
        let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), server)?;
        Ok(rustls::StreamOwned::new(conn, tcp))
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
