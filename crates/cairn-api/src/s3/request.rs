//! What an S3 handler knows of its request ([`S3Request`]), and a routed request
//! ([`S3Call`]): an operation on an embedded bucket, or what to forward to a proxied one.

use super::proxy::Forward;
use super::router::{S3Op, Target};
use crate::edge::HttpRequest;
use bytes::Bytes;

/// What every S3 operation knows of its request, read once by the router: the bucket and
/// key, the facts condition keys and records need, and the body. Handlers read their inputs
/// from their operation's typed input; the header and query views here serve the condition
/// keys, checksums and the proxy.
#[derive(Debug, Clone)]
pub struct S3Request {
    /// Empty for operations on no bucket (ListBuckets, the account's public access block).
    pub bucket: String,
    /// Always present for object operations (a request without a key is a bucket's).
    pub key: Option<String>,
    pub virtual_host: bool,
    /// The `Host` header, as records name it.
    pub host: String,
    pub version_id: Option<String>,
    /// Headers, names lower-cased (for condition keys and checksums).
    pub headers: Vec<(String, String)>,
    /// Query parameters, decoded (for condition keys).
    pub query: Vec<(String, String)>,
    pub body: Bytes,
    /// The body left unread for a handler that streams it (PutObject, UploadPart; see
    /// `intake`), when `body` is empty.
    pub body_stream: Option<crate::edge::BodyStream>,
    /// Signed with Signature Version 2 (a presigned URL).
    pub sig_v2: bool,
    /// Signed in an `Authorization` header (else in the query).
    pub header_auth: bool,
    pub tls_version: Option<String>,
    /// `x-amz-bypass-governance-retention: true`.
    pub bypass_governance: bool,
}

impl S3Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The object key of an object operation.
    pub fn object_key(&self) -> &str {
        self.key.as_deref().unwrap_or("")
    }

    /// `SignatureVersion` of a data event's additionalEventData.
    pub fn signature_version(&self) -> &'static str {
        if self.sig_v2 {
            "SigV2"
        } else {
            "SigV4"
        }
    }

    /// `AuthenticationMethod` of a data event's additionalEventData.
    pub fn authentication_method(&self) -> &'static str {
        if self.header_auth {
            "AuthHeader"
        } else {
            "QueryString"
        }
    }

    pub(super) fn of(req: &HttpRequest, t: &Target) -> S3Request {
        S3Request {
            bucket: t.bucket.clone().unwrap_or_default(),
            key: t.key.clone(),
            virtual_host: t.virtual_host,
            host: req.header("host").unwrap_or_default().to_string(),
            version_id: req.query_param("versionId"),
            headers: req.headers.clone(),
            query: req.query_params(),
            body: req.body.clone(),
            body_stream: req.body_stream.clone(),
            sig_v2: req
                .query
                .split('&')
                .any(|kv| kv.split('=').next() == Some("AWSAccessKeyId")),
            header_auth: req.header("authorization").is_some(),
            tls_version: req.tls.as_ref().map(|t| t.version.clone()),
            bypass_governance: req
                .header("x-amz-bypass-governance-retention")
                .is_some_and(|v| v.eq_ignore_ascii_case("true")),
        }
    }
}

/// A routed S3 request.
pub enum S3Call {
    /// On an embedded bucket (or none): the typed operation.
    Embedded(S3Request, S3Op),
    /// On a proxied bucket: what to forward to its upstream.
    Proxied(S3Request, Forward),
}
