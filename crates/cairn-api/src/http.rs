//! The HTTP listener: HTTP/1.1 over TCP, optionally TLS (rustls), with graceful shutdown.

use crate::edge::{self, HttpRequest, TlsInfo};
use crate::wire::StreamBody;
use http_body_util::Either;

/// A response body: buffered (nearly every answer, no allocation for the body type) or
/// streamed (a proxied GetObject).
type Body = Either<Full<Bytes>, StreamBody>;
use crate::Api;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Certificate chain and private key (PEM files) for TLS.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn load_tls(files: &TlsFiles) -> anyhow_like::Result<tokio_rustls::TlsAcceptor> {
    use anyhow_like::Context;
    let certs: Vec<_> = rustls_pemfile::certs(&mut std::io::BufReader::new(
        std::fs::File::open(&files.cert).context("opening the TLS certificate")?,
    ))
    .collect::<Result<_, _>>()
    .context("reading the TLS certificate")?;
    let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(
        std::fs::File::open(&files.key).context("opening the TLS key")?,
    ))
    .context("reading the TLS key")?
    .ok_or_else(|| anyhow_like::msg("no private key in the TLS key file"))?;
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| anyhow_like::msg(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| anyhow_like::msg(format!("TLS certificate and key do not match: {e}")))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Minimal error plumbing so this crate does not need anyhow.
mod anyhow_like {
    #[derive(Debug)]
    pub struct Error(pub String);
    impl std::fmt::Display for Error {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.0)
        }
    }
    impl std::error::Error for Error {}
    pub type Result<T> = std::result::Result<T, Error>;
    pub fn msg(m: impl Into<String>) -> Error {
        Error(m.into())
    }
    pub trait Context<T> {
        fn context(self, m: &str) -> Result<T>;
    }
    impl<T, E: std::fmt::Display> Context<T> for std::result::Result<T, E> {
        fn context(self, m: &str) -> Result<T> {
            self.map_err(|e| Error(format!("{m}: {e}")))
        }
    }
}

pub use anyhow_like::Error as ServeError;

/// A running server: its address and a handle to stop it.
pub struct Server {
    pub local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Stops accepting, lets in-flight requests finish, and returns when all connections are
    /// closed (or `grace` has passed).
    pub async fn shutdown(self, grace: std::time::Duration) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(grace, self.task).await;
    }
}

fn header_problem(parts: &hyper::http::request::Parts) -> (Vec<(String, String)>, Option<String>) {
    let mut headers = Vec::with_capacity(parts.headers.len());
    let mut bad = None;
    for (k, v) in &parts.headers {
        match v.to_str() {
            Ok(s) => headers.push((k.as_str().to_string(), s.to_string())),
            Err(_) => {
                bad.get_or_insert_with(|| {
                    format!(
                        "Header {} contains characters that are not allowed",
                        k.as_str()
                    )
                });
            }
        }
    }
    for single in [
        "authorization",
        "x-amz-date",
        "x-amz-content-sha256",
        "host",
        "x-amz-target",
        "x-amz-security-token",
    ] {
        if parts.headers.get_all(single).iter().count() > 1 {
            bad.get_or_insert_with(|| format!("Header {single} must not be repeated"));
        }
    }
    (headers, bad)
}

async fn to_request(
    api: &Arc<Api>,
    req: hyper::Request<Incoming>,
    peer: SocketAddr,
    tls: Option<TlsInfo>,
) -> Result<HttpRequest, hyper::Response<Body>> {
    let (parts, body) = req.into_parts();
    let (headers, bad) = header_problem(&parts);
    let mut request = HttpRequest {
        method: parts.method.as_str().to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or("").to_string(),
        headers,
        body: Bytes::new(),
        peer: peer.ip(),
        tls,
        bad_header: bad,
        bad_body: None,
        body_stream: None,
    };
    // A body bound for a proxied bucket's upstream is streamed there, not read here.
    if crate::s3_proxy::streams_request(api, &request) {
        request.body_stream = Some(edge::BodyStream(Arc::new(std::sync::Mutex::new(Some(
            body,
        )))));
        return Ok(request);
    }
    // Read at most one byte over the limit: the edge then refuses the request with the
    // protocol's "too large" error instead of buffering an unbounded body.
    let limit = api.opts.max_body_bytes + 1;
    let mut bad_body = None;
    let body = match Limited::new(body, limit).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                Bytes::from(vec![0u8; limit])
            } else {
                bad_body = Some(format!("could not read the request body: {e}"));
                Bytes::new()
            }
        }
    };
    request.body = body;
    request.bad_body = bad_body;
    Ok(request)
}

fn full(b: Bytes) -> Body {
    Either::Left(Full::new(b))
}

async fn respond(
    api: Arc<Api>,
    req: hyper::Request<Incoming>,
    peer: SocketAddr,
    tls: Option<TlsInfo>,
) -> Result<hyper::Response<Body>, std::convert::Infallible> {
    // Unauthenticated operational endpoints. `_cairn` can never be a bucket name.
    match req.uri().path() {
        "/_cairn/health" => {
            return Ok(hyper::Response::new(full(Bytes::from_static(b"ok\n"))));
        }
        "/_cairn/metrics" => {
            let m = &api.metrics;
            m.journal_next_seq
                .set(api.engine.journal().next_seq() as i64);
            m.delivery_position.set(api.engine.position() as i64);
            m.history_position.set(api.history.position() as i64);
            let mut r = hyper::Response::new(full(Bytes::from(m.render())));
            r.headers_mut().insert(
                "content-type",
                hyper::header::HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            return Ok(r);
        }
        _ => {}
    }
    let request = match to_request(&api, req, peer, tls).await {
        Ok(r) => r,
        Err(resp) => return Ok(resp),
    };
    let head = request.method == "HEAD";
    let reply = edge::handle(&api, request).await;
    let streamed = reply.stream.as_ref().and_then(|s| s.take());
    let has_stream = streamed.is_some();
    let mut resp = hyper::Response::new(match (head, streamed) {
        (true, _) => full(Bytes::new()),
        (false, Some(s)) => Either::Right(s),
        (false, None) => full(reply.body.clone()),
    });
    *resp.status_mut() = hyper::StatusCode::from_u16(reply.status)
        .unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    for (k, v) in &reply.headers {
        if let (Ok(k), Ok(v)) = (
            hyper::header::HeaderName::from_bytes(k.as_bytes()),
            hyper::header::HeaderValue::from_str(v),
        ) {
            resp.headers_mut().append(k, v);
        }
    }
    // A HEAD answer declares the length its GET would have (handlers set it when they know).
    if head && !has_stream && !resp.headers().contains_key(hyper::header::CONTENT_LENGTH) {
        if let Ok(v) = hyper::header::HeaderValue::from_str(&reply.body.len().to_string()) {
            resp.headers_mut().insert(hyper::header::CONTENT_LENGTH, v);
        }
    }
    Ok(resp)
}

/// Serves `api` on `listener` until [`Server::shutdown`].
pub async fn serve(
    api: Arc<Api>,
    listener: TcpListener,
    tls: Option<TlsFiles>,
) -> Result<Server, ServeError> {
    let acceptor = tls.as_ref().map(load_tls).transpose()?;
    let local_addr = listener
        .local_addr()
        .map_err(|e| anyhow_like::msg(e.to_string()))?;
    let (stop, mut stopped) = watch::channel(false);
    let task = tokio::spawn(async move {
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        loop {
            let (stream, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                        continue;
                    }
                },
                _ = stopped.changed() => break,
            };
            let _ = stream.set_nodelay(true);
            let api = api.clone();
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.half_close(true);
            match &acceptor {
                None => {
                    let svc = service_fn(move |req| respond(api.clone(), req, peer, None));
                    let conn = builder.serve_connection(TokioIo::new(stream), svc);
                    let conn = graceful.watch(conn);
                    tokio::spawn(async move {
                        if let Err(e) = conn.await {
                            tracing::debug!(error = %e, "connection ended with an error");
                        }
                    });
                }
                Some(acc) => {
                    let acc = acc.clone();
                    let watcher = graceful.watcher();
                    tokio::spawn(async move {
                        let tls = match acc.accept(stream).await {
                            Ok(t) => t,
                            Err(e) => {
                                tracing::debug!(error = %e, "TLS handshake failed");
                                return;
                            }
                        };
                        let (_, session) = tls.get_ref();
                        let info = TlsInfo {
                            version: match session.protocol_version() {
                                Some(tokio_rustls::rustls::ProtocolVersion::TLSv1_3) => {
                                    "TLSv1.3".into()
                                }
                                Some(tokio_rustls::rustls::ProtocolVersion::TLSv1_2) => {
                                    "TLSv1.2".into()
                                }
                                Some(v) => format!("{v:?}"),
                                None => "unknown".into(),
                            },
                            cipher: session
                                .negotiated_cipher_suite()
                                .and_then(|c| c.suite().as_str())
                                .unwrap_or("unknown")
                                .to_string(),
                        };
                        let svc = service_fn(move |req| {
                            respond(api.clone(), req, peer, Some(info.clone()))
                        });
                        let conn = builder.serve_connection(TokioIo::new(tls), svc);
                        if let Err(e) = watcher.watch(conn).await {
                            tracing::debug!(error = %e, "connection ended with an error");
                        }
                    });
                }
            }
        }
        drop(listener);
        graceful.shutdown().await;
    });
    Ok(Server {
        local_addr,
        stop,
        task,
    })
}
