//! The DynamoDB-compatible database behind cairn: where it is, how cairn signs for it, and one
//! exchange with it. cairn re-signs every request with the upstream's credentials and sends
//! the body it authorized (re-serialized from what it parsed, so the upstream reads exactly
//! what was checked). Answers come back as the upstream sent them: a successful item call's
//! body streams through untouched (its `x-amz-crc32` stays right); other bodies are read
//! (bounded) so the record can carry the error, and the upstream's own ARNs in control-plane
//! answers are replaced by cairn's (account and region), with the CRC32 recomputed.

use super::State;
use crate::edge::EffectOutcome;
use crate::protocol::{ApiError, BoxError, Reply, StreamBody, Streamed};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use serde_json::{Map, Value};
use std::time::Duration;

/// Where the DynamoDB-compatible upstream is and how to sign for it.
#[derive(Clone, PartialEq)]
pub struct Target {
    /// `http://host:port` or `https://host` (no trailing slash).
    pub endpoint: String,
    /// The upstream's signing region.
    pub signing_region: String,
    /// The cairn region whose tables live there (requests signed for another region are
    /// refused: one upstream is one region's table namespace).
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
    /// How long an answer may take (headers and any body cairn reads).
    pub timeout: Duration,
    /// PEM file of extra trusted CA certificates for an `https` upstream.
    pub ca_file: Option<std::path::PathBuf>,
    /// The upstream's account id when known in advance (otherwise learned from its ARNs).
    pub account: Option<String>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("endpoint", &self.endpoint)
            .field("signing_region", &self.signing_region)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

pub type HttpClient = crate::http::UpstreamClient;

/// The HTTP(S) client for the upstream (built on first use; an extra CA when configured).
pub(super) fn client(state: &State, target: &Target) -> Result<HttpClient, ApiError> {
    if let Some(c) = state.client.get() {
        return Ok(c.clone());
    }
    let c = crate::http::upstream_client(target.ca_file.as_deref()).map_err(unavailable)?;
    Ok(state.client.get_or_init(|| c).clone())
}

pub(super) fn unavailable(what: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        "ServiceUnavailable",
        503,
        format!("The DynamoDB upstream could not be reached: {what}"),
    )
}

/// A signed request to the upstream: `X-Amz-Target: DynamoDB_20120810.<op>` and `body`.
pub(super) fn request(
    target: &Target,
    op: &str,
    body: Bytes,
) -> Result<hyper::Request<StreamBody>, ApiError> {
    let host = target
        .endpoint
        .split_once("://")
        .map(|(_, h)| h)
        .unwrap_or(&target.endpoint)
        .to_string();
    let amz_target = format!("{}{op}", super::TARGET_PREFIX);
    let mut signed: Vec<(String, String)> = vec![
        ("host".into(), host),
        ("content-type".into(), crate::protocol::AMZ_JSON_1_0.into()),
        ("x-amz-target".into(), amz_target),
    ];
    if let Some(t) = &target.session_token {
        signed.push(("x-amz-security-token".into(), t.clone()));
    }
    let hash = cairn_iam::sigv4::sha256_hex(&body);
    let sreq = cairn_iam::sigv4::Request {
        method: "POST",
        path: "/",
        query: "",
        headers: &signed,
        body_sha256: &hash,
        s3: false,
    };
    let auth = cairn_iam::sigv4::sign(
        &sreq,
        &target.access_key_id,
        &target.secret_access_key,
        &target.signing_region,
        "dynamodb",
        chrono::Utc::now(),
    );
    let mut b = hyper::Request::builder()
        .method("POST")
        .uri(format!("{}/", target.endpoint));
    for (k, v) in signed.iter().skip(1).chain(auth.iter()) {
        b = b.header(k.as_str(), v.as_str());
    }
    b.header("content-length", body.len().to_string())
        .body(
            Full::new(body)
                .map_err(|e| -> BoxError { match e {} })
                .boxed_unsync(),
        )
        .map_err(|e| ApiError::internal(format!("cannot build the upstream request: {e}")))
}

/// Response headers not passed back: hop-by-hop ones, and the upstream's request id (the
/// client's request id is cairn's, the one in the event).
const NOT_RETURNED: &[&str] = &[
    "connection",
    "keep-alive",
    "transfer-encoding",
    "x-amzn-requestid",
    "server",
    "date",
];

/// What cairn does with an upstream's answer.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Answer {
    /// An item call: a successful body streams back untouched.
    Stream,
    /// A control-plane call: the body is read, its ARNs become cairn's.
    MapArns,
}

/// How the upstream's ARNs in an answer become cairn's.
pub(super) struct ArnMap {
    pub state: std::sync::Arc<State>,
    /// The upstream's prefix when configured (else learned from table descriptions).
    pub configured: Option<String>,
    /// cairn's prefix in the request's region.
    pub ours: String,
}

/// One exchange with the upstream; its answer for the client and for the record.
pub(super) struct Exchange {
    pub client: HttpClient,
    pub request: hyper::Request<StreamBody>,
    pub answer: Answer,
    pub timeout: Duration,
    /// For control-plane answers: the upstream's ARNs become cairn's.
    pub arns: Option<ArnMap>,
    /// Keeps the answer's response elements (control-plane writes).
    pub keep_response: bool,
}

impl Exchange {
    pub async fn run(self) -> EffectOutcome {
        let mut out = EffectOutcome::default();
        let resp = match tokio::time::timeout(self.timeout, self.client.request(self.request)).await
        {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                out.reply = Err(unavailable(e));
                return out;
            }
            Err(_) => {
                out.reply = Err(unavailable(format!(
                    "no answer within {} s; the call's outcome upstream is unknown",
                    self.timeout.as_secs()
                )));
                return out;
            }
        };
        let status = resp.status().as_u16();
        let mut headers: Vec<(String, String)> = resp
            .headers()
            .iter()
            .filter(|(k, _)| !NOT_RETURNED.contains(&k.as_str()))
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect();
        if self.answer == Answer::Stream && (200..300).contains(&status) {
            let b = resp
                .into_body()
                .map_err(|e| -> BoxError { Box::new(e) })
                .boxed_unsync();
            out.reply = Ok(Reply {
                status,
                headers,
                body: Bytes::new(),
                stream: Some(Streamed::new(b)),
            });
            return out;
        }
        let body = match tokio::time::timeout(
            self.timeout,
            Limited::new(resp.into_body(), 64 << 20).collect(),
        )
        .await
        {
            Ok(Ok(b)) => b.to_bytes(),
            Ok(Err(e)) => {
                out.reply = Err(unavailable(e));
                return out;
            }
            Err(_) => {
                out.reply = Err(unavailable("the answer's body did not arrive in time"));
                return out;
            }
        };
        let encoded = headers
            .iter()
            .any(|(k, v)| k == "content-encoding" && !v.eq_ignore_ascii_case("identity"));
        if !(200..300).contains(&status) {
            let (code, mut message) = error_of(status, &body, encoded);
            if self.answer == Answer::Stream {
                // An item call's error message may quote the item's values after a colon
                // ("…: <value>"); the record keeps the sentence before it.
                if let Some((before, _)) = message.split_once(':') {
                    message = before.trim_end().to_string();
                }
            }
            out.error = Some((code, message));
        }
        let mut body = body;
        if (200..300).contains(&status) && !encoded {
            if let Some(map) = &self.arns {
                learn_account(&map.state, &body);
                let from = map
                    .configured
                    .clone()
                    .or_else(|| map.state.upstream_arn_prefix())
                    .filter(|f| *f != map.ours);
                let mapped =
                    from.and_then(|f| replace_bytes(&body, f.as_bytes(), map.ours.as_bytes()));
                if let Some(mapped) = mapped {
                    body = Bytes::from(mapped);
                    for (k, v) in headers.iter_mut() {
                        if k == "content-length" {
                            *v = body.len().to_string();
                        } else if k == "x-amz-crc32" {
                            *v = crc32fast::hash(&body).to_string();
                        }
                    }
                }
            }
            if self.keep_response {
                out.response_elements = serde_json::from_slice::<Value>(&body)
                    .ok()
                    .filter(|v| v.as_object().is_some_and(|m| !m.is_empty()))
                    .map(|v| super::records::lower_camel_deep(&v));
            }
        }
        out.reply = Ok(Reply {
            status,
            headers,
            body,
            stream: None,
        });
        out
    }
}

/// `(errorCode, errorMessage)` of an upstream's error answer: `__type` after its namespace,
/// and `message` (or `Message`).
fn error_of(status: u16, body: &[u8], encoded: bool) -> (String, String) {
    let parsed = if encoded {
        None
    } else {
        serde_json::from_slice::<Map<String, Value>>(body).ok()
    };
    let code = parsed
        .as_ref()
        .and_then(|m| m.get("__type"))
        .and_then(Value::as_str)
        .map(|t| t.rsplit('#').next().unwrap_or(t).to_string())
        .unwrap_or_else(|| {
            if status >= 500 {
                "InternalServerError".into()
            } else {
                "ValidationException".into()
            }
        });
    let message = parsed
        .as_ref()
        .and_then(|m| m.get("message").or_else(|| m.get("Message")))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    (code, message)
}

/// The upstream's account, from the `TableArn` of a table description (never from other
/// fields, which callers fill).
fn learn_account(state: &State, body: &[u8]) {
    if state.upstream_arn_prefix().is_some() {
        return;
    }
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return;
    };
    let arn = v
        .pointer("/TableDescription/TableArn")
        .or_else(|| v.pointer("/Table/TableArn"))
        .and_then(Value::as_str);
    if let Some(arn) = arn {
        if let Some((prefix, _)) = arn.split_once(":table/") {
            state.set_upstream_arn_prefix(format!("{prefix}:"));
        }
    }
}

/// `hay` with every `from` replaced by `to`; `None` when `from` does not occur.
fn replace_bytes(hay: &[u8], from: &[u8], to: &[u8]) -> Option<Vec<u8>> {
    if from.is_empty() || !hay.windows(from.len()).any(|w| w == from) {
        return None;
    }
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    while i < hay.len() {
        if hay[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_code_after_the_namespace() {
        let (c, m) = error_of(
            400,
            br#"{"__type":"com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException","message":"The conditional request failed"}"#,
            false,
        );
        assert_eq!(c, "ConditionalCheckFailedException");
        assert_eq!(m, "The conditional request failed");
        assert_eq!(error_of(500, b"oops", false).0, "InternalServerError");
    }

    #[test]
    fn arns_are_replaced_everywhere() {
        let b = br#"{"TableArn":"arn:aws:dynamodb:us-east-1:000000000000:table/t","IndexArn":"arn:aws:dynamodb:us-east-1:000000000000:table/t/index/i"}"#;
        let out = replace_bytes(
            b,
            b"arn:aws:dynamodb:us-east-1:000000000000:",
            b"arn:aws:dynamodb:eu-west-1:123456789012:",
        )
        .unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(!s.contains("000000000000"));
        assert_eq!(s.matches("eu-west-1:123456789012:table/t").count(), 2);
        assert!(replace_bytes(b"abc", b"x", b"y").is_none());
    }
}
