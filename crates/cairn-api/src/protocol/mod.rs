//! Wire constants, the request/response types handlers see, and AWS error rendering — one
//! place per protocol.

pub mod json;
pub mod query;
pub mod xml;

use bytes::Bytes;

pub const X_AMZ_TARGET: &str = "x-amz-target";
pub const CLOUDTRAIL_TARGET_PREFIX: &str =
    "com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.";
/// The short form the AWS SDK for Go v2 (and so Terraform) sends.
pub const CLOUDTRAIL_TARGET_SHORT_PREFIX: &str = "CloudTrail_20131101.";

/// The CloudTrail operation named by an `X-Amz-Target`, in either form.
pub fn cloudtrail_operation(target: &str) -> Option<&str> {
    target
        .strip_prefix(CLOUDTRAIL_TARGET_PREFIX)
        .or_else(|| target.strip_prefix(CLOUDTRAIL_TARGET_SHORT_PREFIX))
        .filter(|op| !op.is_empty())
}
pub const AMZ_JSON_1_1: &str = "application/x-amz-json-1.1";
pub const AMZ_JSON_1_0: &str = "application/x-amz-json-1.0";
pub const S3_XMLNS: &str = "http://s3.amazonaws.com/doc/2006-03-01/";
/// IAM's namespace: its answers', and every query-protocol error's (STS's too, as before).
pub const IAM_XMLNS: &str = "https://iam.amazonaws.com/doc/2010-05-08/";

/// Wire protocol of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// awsJson 1.1 (CloudTrail).
    Json,
    /// awsJson 1.0 (DynamoDB): errors name their namespace and answers carry `x-amz-crc32`.
    Json10,
    /// restJson (CloudTrail Data).
    RestJson,
    /// query (IAM, STS).
    Query,
    /// restXml (S3).
    S3,
}

impl Protocol {
    pub fn auth_protocol(self) -> cairn_iam::sigv4::Protocol {
        match self {
            Protocol::Json | Protocol::Json10 | Protocol::RestJson => {
                cairn_iam::sigv4::Protocol::Json
            }
            Protocol::Query => cairn_iam::sigv4::Protocol::Query,
            Protocol::S3 => cairn_iam::sigv4::Protocol::S3,
        }
    }
}

/// An AWS error: code, message, HTTP status, plus extra XML elements for S3.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub code: String,
    pub message: String,
    pub status: u16,
    pub extra: Vec<(String, String)>,
}

impl ApiError {
    pub fn new(code: &str, status: u16, message: impl Into<String>) -> ApiError {
        ApiError {
            code: code.into(),
            message: message.into(),
            status,
            extra: Vec::new(),
        }
    }

    /// A 400 client error (every modelled CloudTrail exception).
    pub fn client(code: &str, message: impl Into<String>) -> ApiError {
        ApiError::new(code, 400, message)
    }

    pub fn with(mut self, k: &str, v: impl Into<String>) -> ApiError {
        self.extra.push((k.into(), v.into()));
        self
    }

    pub fn internal(e: impl std::fmt::Display) -> ApiError {
        let text = e.to_string();
        if cairn_store::no_space_text(&text) {
            // Not the client's fault and not a bug: a retryable answer (issue 16).
            tracing::error!(error = %text, "a write failed for want of disk space");
            return ApiError::new(
                "ServiceUnavailable",
                503,
                "cairn's data volume is full; nothing was done. Retry once space is freed.",
            );
        }
        tracing::error!(error = %text, "internal error");
        ApiError::new(
            "InternalFailure",
            500,
            "The request processing has failed because of an unknown error, exception or failure.",
        )
    }

    /// The journal refused the request's event: fail closed.
    pub fn unavailable(e: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %e, "journal refused an event; failing the request");
        ApiError::new(
            "ServiceUnavailable",
            503,
            "The audit journal cannot record this request right now; nothing was done. Try again later.",
        )
    }

    pub fn serialization(message: impl Into<String>) -> ApiError {
        ApiError::client("SerializationException", message)
    }
}

/// A response as handlers produce it.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// A body streamed to the client instead of `body` (a proxied object).
    pub stream: Option<Streamed>,
}

/// Errors of a streamed body.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A streamed response body.
pub type StreamBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// A streamed body that can be taken once (kept behind a lock so [`Reply`] stays `Clone`).
#[derive(Clone)]
pub struct Streamed(pub std::sync::Arc<std::sync::Mutex<Option<StreamBody>>>);

impl Streamed {
    pub fn new(b: StreamBody) -> Streamed {
        Streamed(std::sync::Arc::new(std::sync::Mutex::new(Some(b))))
    }

    pub fn take(&self) -> Option<StreamBody> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

impl std::fmt::Debug for Streamed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Streamed")
    }
}

impl Reply {
    pub fn xml(status: u16, body: String) -> Reply {
        Reply {
            status,
            headers: vec![("content-type".into(), "text/xml".into())],
            body: Bytes::from(body),
            stream: None,
        }
    }

    /// An S3 (restXml) answer: `application/xml`.
    pub fn s3_xml(status: u16, body: String) -> Reply {
        Reply {
            status,
            headers: vec![("content-type".into(), "application/xml".into())],
            body: Bytes::from(body),
            stream: None,
        }
    }

    /// A 200 S3 answer whose document is `<root xmlns=S3>inner</root>`.
    pub fn s3_document(root: &str, inner: &str) -> Reply {
        Reply::s3_xml(
            200,
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<{root} xmlns=\"{S3_XMLNS}\">{inner}</{root}>"
            ),
        )
    }

    pub fn header(mut self, k: &str, v: impl Into<String>) -> Reply {
        self.headers.push((k.into(), v.into()));
        self
    }
}

/// An answer that could not be serialized: only a type that cannot be XML or JSON fails (a
/// programming error), so it is logged loudly — and under fuzzing it is a panic the fuzzer
/// reports.
pub(crate) fn unserializable(what: &str, e: &dyn std::fmt::Display) {
    tracing::error!(what, error = %e, "an answer could not be serialized");
    #[cfg(feature = "fuzzing")]
    panic!("an answer ({what}) could not be serialized: {e}");
}

/// The answer when an answer could not be serialized: an internal error, never a 200 with a
/// broken body.
pub(crate) fn unserialized(protocol: Protocol) -> Reply {
    let e = ApiError::internal("the answer could not be serialized");
    error_reply(protocol, &e, "", false)
}

/// `UserName` → `userName`: how CloudTrail names request parameters and response elements.
pub fn lower_first(k: &str) -> String {
    let mut c = k.chars();
    match c.next() {
        Some(f) => f.to_lowercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

/// XML text escaping (element content and attribute values).
pub fn xml_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => {
                o.push_str(&format!("&#x{:x};", c as u32))
            }
            c => o.push(c),
        }
    }
    o
}

/// Renders `e` in `protocol`'s error shape.
pub fn error_reply(protocol: Protocol, e: &ApiError, request_id: &str, head: bool) -> Reply {
    let reply = error_body_reply(protocol, e, request_id, head);
    // A 503 is always worth retrying (a busy or full server): say when.
    if e.status == 503 {
        reply.header("retry-after", "1")
    } else {
        reply
    }
}

fn error_body_reply(protocol: Protocol, e: &ApiError, request_id: &str, head: bool) -> Reply {
    match protocol {
        Protocol::Json => Reply {
            status: e.status,
            headers: vec![("content-type".into(), AMZ_JSON_1_1.into())],
            body: json::error_body(e),
            stream: None,
        },
        Protocol::Json10 => json::json10_error(e),
        Protocol::RestJson => Reply {
            status: e.status,
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("x-amzn-errortype".into(), e.code.clone()),
            ],
            body: json::error_body(e),
            stream: None,
        },
        Protocol::Query => {
            let kind = if e.status >= 500 {
                "Receiver"
            } else {
                "Sender"
            };
            Reply::xml(
                e.status,
                format!(
                    "<ErrorResponse xmlns=\"{IAM_XMLNS}\"><Error><Type>{kind}</Type><Code>{}</Code><Message>{}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>",
                    xml_escape(&e.code),
                    xml_escape(&e.message)
                ),
            )
        }
        Protocol::S3 => {
            let mut extra = String::new();
            for (k, v) in &e.extra {
                extra.push_str(&format!("<{k}>{}</{k}>", xml_escape(v)));
            }
            let body = if head {
                String::new()
            } else {
                format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{}</Code><Message>{}</Message>{extra}<RequestId>{request_id}</RequestId><HostId>{request_id}</HostId></Error>",
                    xml_escape(&e.code),
                    xml_escape(&e.message)
                )
            };
            Reply::s3_xml(e.status, body)
        }
    }
}

/// Query parameters that carry a request's credentials or signature (SigV4 and SigV2
/// presigned forms). They never reach a record: a presigned request read from the trail could
/// be replayed until it expires.
pub const AUTH_PARAMS: &[&str] = &[
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
    "X-Amz-Security-Token",
    "AWSAccessKeyId",
    "Signature",
    "SignatureMethod",
    "SignatureVersion",
    "SecurityToken",
];

/// Whether `name` is one of [`AUTH_PARAMS`] (in any case).
pub fn is_auth_param(name: &str) -> bool {
    AUTH_PARAMS.iter().any(|p| p.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_escape_neutralises_markup_and_control_characters() {
        assert_eq!(
            xml_escape("a<b>&\"c'\u{1}"),
            "a&lt;b&gt;&amp;&quot;c&apos;&#x1;"
        );
    }

    #[test]
    fn json_errors_use_type_and_message() {
        let r = error_reply(
            Protocol::Json,
            &ApiError::client("TrailNotFoundException", "Unknown trail: x"),
            "rid",
            false,
        );
        assert_eq!(r.status, 400);
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["__type"], "TrailNotFoundException");
        assert_eq!(v["message"], "Unknown trail: x");
    }
}
