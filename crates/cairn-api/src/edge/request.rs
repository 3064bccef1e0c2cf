//! A request as the listener received it, and what handlers may know of its client.

use bytes::Bytes;
use std::net::IpAddr;
use std::sync::Arc;

/// TLS facts of a connection, for `tlsDetails` and `aws:SecureTransport`.
#[derive(Debug, Clone)]
pub struct TlsInfo {
    pub version: String,
    pub cipher: String,
}

/// A request as received (headers lower-cased, body complete).
#[derive(Debug, Clone)]
pub struct HttpRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    pub peer: IpAddr,
    pub tls: Option<TlsInfo>,
    /// Set when a header could not be accepted (non-ASCII value, duplicated auth header).
    pub bad_header: Option<String>,
    /// Set when the body could not be read as sent (see [`BodyProblem`]).
    pub body_problem: Option<BodyProblem>,
    /// The body, not yet read, of a request the proxy streams to its upstream (`body` is
    /// empty then).
    pub body_stream: Option<BodyStream>,
    /// The body was left unread because the request cannot authenticate (see
    /// [`super::preauthenticate`]); `body` is empty.
    pub body_unread: bool,
    /// The listener verified the (S3) signature from the headers already.
    pub signature_checked: bool,
    /// The SigV4 authorization the listener read from the headers ([`super::presented`]),
    /// kept for the edge so it is not parsed twice; `None` when nobody read it yet.
    pub presented: Option<Result<cairn_iam::sigv4::Authorization, cairn_iam::sigv4::AuthError>>,
}

/// Why a request's body was not read whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyProblem {
    /// Fewer bytes than declared arrived, or the stream broke.
    Incomplete(String),
    /// Larger than the service's limit (reading stopped at the limit).
    TooLarge { limit: usize },
    /// The client sent nothing for too long.
    TimedOut,
    /// The server's budget for buffered bodies stayed full.
    Busy,
}

/// A request body left unread for streaming; taken once.
#[derive(Clone, Debug, Default)]
pub struct BodyStream {
    body: Arc<std::sync::Mutex<Option<hyper::body::Incoming>>>,
    /// How an `aws-chunked` body's chunk signatures are checked, once the request's seed
    /// signature is verified (S3's `prepare` sets it).
    signing: Arc<std::sync::Mutex<Option<ChunkSigning>>>,
}

impl BodyStream {
    pub fn new(body: hyper::body::Incoming) -> BodyStream {
        BodyStream {
            body: Arc::new(std::sync::Mutex::new(Some(body))),
            signing: Default::default(),
        }
    }

    pub fn take(&self) -> Option<hyper::body::Incoming> {
        self.body.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    pub fn set_signing(&self, s: ChunkSigning) {
        *self.signing.lock().unwrap_or_else(|p| p.into_inner()) = Some(s);
    }

    pub fn signing(&self) -> Option<ChunkSigning> {
        self.signing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// What a signed chunk chain is checked against: the request's signing key, timestamp and
/// scope, and the seed (header) signature that starts the chain.
#[derive(Clone)]
pub struct ChunkSigning {
    pub key: Vec<u8>,
    pub amz_date: String,
    pub scope: String,
    pub seed: String,
}

impl std::fmt::Debug for ChunkSigning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChunkSigning")
    }
}

impl HttpRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Query parameters, percent-decoded.
    pub fn query_params(&self) -> Vec<(String, String)> {
        form_urlencoded::parse(self.query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }

    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query_params()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }
}

/// What the edge and handlers may know of the client behind a request: for condition keys
/// (`aws:SourceIp`, `aws:SecureTransport`, `aws:UserAgent`) and records. Handlers see this, never
/// the request itself.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub peer: IpAddr,
    pub tls: Option<TlsInfo>,
    pub user_agent: Option<String>,
    /// The `Host` header as sent.
    pub host: String,
}

impl ClientInfo {
    pub fn of(req: &HttpRequest) -> ClientInfo {
        ClientInfo {
            peer: req.peer,
            tls: req.tls.clone(),
            user_agent: req.header("user-agent").map(str::to_string),
            host: req.header("host").unwrap_or_default().to_string(),
        }
    }
}
