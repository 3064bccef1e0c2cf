//! The HTTP listener: HTTP/1.1 over TCP, optionally TLS (rustls), with graceful shutdown.

use crate::edge::{self, HttpRequest, TlsInfo};
use crate::protocol::StreamBody;
use http_body_util::Either;

/// A response body: buffered (nearly every answer, no allocation for the body type) or
/// streamed (a proxied GetObject).
type Body = Either<Full<Bytes>, StreamBody>;
use crate::Api;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Sleep;

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
    for single in ["authorization", "host", "content-type", "content-md5"] {
        if parts.headers.get_all(single).iter().count() > 1 {
            bad.get_or_insert_with(|| format!("Header {single} must not be repeated"));
        }
    }
    // No x-amz-* header may be repeated: cairn reads one value, an upstream might read another.
    for name in parts.headers.keys() {
        if name.as_str().starts_with("x-amz-") && parts.headers.get_all(name).iter().count() > 1 {
            bad.get_or_insert_with(|| format!("Header {name} must not be repeated"));
        }
    }
    (headers, bad)
}

async fn to_request(
    api: &Arc<Api>,
    req: hyper::Request<Incoming>,
    peer: SocketAddr,
    tls: Option<TlsInfo>,
) -> HttpRequest {
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
        body_problem: None,
        body_stream: None,
        body_unread: false,
        signature_checked: false,
        presented: None,
    };
    // A request that cannot authenticate is answered without reading its body: nobody
    // without a valid key makes cairn buffer anything.
    let presented = edge::presented(&request);
    match edge::preauthenticate(api, &request, &presented) {
        edge::Preauth::Refused => {
            request.body_unread = true;
            request.presented = Some(presented);
            return request;
        }
        edge::Preauth::SignatureValid => request.signature_checked = true,
        edge::Preauth::NeedsBody => {}
    }
    // A body bound for a proxied bucket's upstream is streamed there, not read here.
    if crate::service::streams_body(api, &request) {
        request.body_stream = Some(edge::BodyStream::new(body));
        request.presented = Some(presented);
        return request;
    }
    let scope = presented.as_ref().ok().map(|a| a.service.as_str());
    let limit = edge::body_limit(api, &request, scope);
    match read_body(api, body, &request, limit).await {
        Ok(b) => request.body = b,
        Err(p) => request.body_problem = Some(p),
    }
    request.presented = Some(presented);
    request
}

/// A sleep, pinned where it can be reset.
type PinnedSleep = Pin<Box<Sleep>>;

/// Reads a body of at most `limit` bytes within the server's budgets for buffered bodies (all
/// connections, and each client address): a declared length is reserved before reading, a
/// chunked body's bytes as they arrive, an empty body reserves nothing. Bytes must keep coming
/// (`body_timeout` without one ends the read) and all of them within 20 times that.
async fn read_body(
    api: &Arc<Api>,
    mut body: Incoming,
    req: &HttpRequest,
    limit: usize,
) -> Result<Bytes, edge::BodyProblem> {
    use edge::BodyProblem;
    use hyper::body::Body as _;
    if body.is_end_stream() {
        return Ok(Bytes::new());
    }
    let declared = body.size_hint().exact();
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(BodyProblem::TooLarge { limit });
    }
    let mut held = BodyReservation::new(api, req.peer);
    // Small bodies are not worth the accounting: connections × this stays small.
    let small = declared.is_some_and(|n| n <= SMALL_BODY_BYTES);
    if let (Some(n), false) = (declared, small) {
        held.reserve(n as usize).await?;
    }
    let deadline = tokio::time::Instant::now() + api.opts.body_timeout * 20;
    let mut buf = bytes::BytesMut::with_capacity(declared.unwrap_or(0).min(64 << 10) as usize);
    // The timers are armed only once a frame is not there already: a small body usually
    // arrives with its headers, and two timers set and cancelled per request were ~1% of a
    // server's CPU under `bench api`.
    let mut timers: Option<(PinnedSleep, PinnedSleep)> = None;
    loop {
        // Polled once without a waker of ours: `Pending` leaves hyper holding a no-op waker,
        // which the `select!` below replaces with the task's.
        let ready = Pin::new(&mut body)
            .poll_frame(&mut std::task::Context::from_waker(std::task::Waker::noop()));
        let frame = match ready {
            std::task::Poll::Ready(f) => f,
            std::task::Poll::Pending => {
                let (idle, whole) = timers.get_or_insert_with(|| {
                    (
                        Box::pin(tokio::time::sleep(api.opts.body_timeout)),
                        Box::pin(tokio::time::sleep_until(deadline)),
                    )
                });
                tokio::select! {
                    f = body.frame() => f,
                    _ = idle.as_mut() => return Err(BodyProblem::TimedOut),
                    _ = whole.as_mut() => return Err(BodyProblem::TimedOut),
                }
            }
        };
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Err(BodyProblem::TimedOut);
        }
        if let Some((idle, _)) = &mut timers {
            idle.as_mut().reset(now + api.opts.body_timeout);
        }
        match frame {
            None => break,
            Some(Err(e)) => {
                return Err(BodyProblem::Incomplete(format!(
                    "could not read the request body: {e}"
                )))
            }
            Some(Ok(f)) => {
                if let Ok(data) = f.into_data() {
                    if buf.len() + data.len() > limit {
                        return Err(BodyProblem::TooLarge { limit });
                    }
                    if declared.is_none() {
                        held.reserve(data.len()).await?;
                    }
                    buf.extend_from_slice(&data);
                }
            }
        }
    }
    Ok(buf.freeze())
}

/// Bodies at most this long are read without reserving budget (4096 connections × 16 KiB
/// is 64 MiB at worst).
const SMALL_BODY_BYTES: u64 = 16 << 10;

/// Bytes of request bodies being read, reserved from the server-wide budget and from the
/// client address's share; released when dropped (once the body is read or abandoned).
struct BodyReservation {
    api: Arc<Api>,
    peer: std::net::IpAddr,
    permits: Option<tokio::sync::OwnedSemaphorePermit>,
    per_peer: usize,
}

impl BodyReservation {
    fn new(api: &Arc<Api>, peer: std::net::IpAddr) -> BodyReservation {
        BodyReservation {
            api: api.clone(),
            peer,
            permits: None,
            per_peer: 0,
        }
    }

    /// Reserves `n` more bytes: refused at once (503) past the address's share, waiting up to
    /// `body_timeout` for room in the server-wide budget.
    async fn reserve(&mut self, n: usize) -> Result<(), edge::BodyProblem> {
        use edge::BodyProblem;
        if n == 0 {
            return Ok(());
        }
        {
            let mut by_peer = self
                .api
                .body_bytes_by_peer
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let used = by_peer.entry(self.peer).or_insert(0);
            if *used + n > self.api.opts.max_buffered_body_bytes_per_client {
                return Err(BodyProblem::Busy);
            }
            *used += n;
            self.per_peer += n;
        }
        let permits = u32::try_from(n).map_err(|_| BodyProblem::Busy)?;
        let got = tokio::time::timeout(
            self.api.opts.body_timeout,
            self.api.body_budget.clone().acquire_many_owned(permits),
        )
        .await
        .map_err(|_| BodyProblem::Busy)?
        .map_err(|_| BodyProblem::Busy)?;
        match &mut self.permits {
            Some(p) => p.merge(got),
            None => self.permits = Some(got),
        }
        Ok(())
    }
}

impl Drop for BodyReservation {
    fn drop(&mut self) {
        if self.per_peer == 0 {
            return;
        }
        let mut by_peer = self
            .api
            .body_bytes_by_peer
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(used) = by_peer.get_mut(&self.peer) {
            *used = used.saturating_sub(self.per_peer);
            if *used == 0 {
                by_peer.remove(&self.peer);
            }
        }
    }
}

/// `/_cairn/metrics` on the API listener: open when configured public, else only to
/// `Authorization: Bearer <metrics token>` (compared in constant time), else refused.
fn metrics_allowed(api: &Api, req: &hyper::Request<Incoming>) -> bool {
    if api.opts.metrics_public {
        return true;
    }
    let Some(token) = &api.opts.metrics_token else {
        return false;
    };
    req.headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|given| {
            aws_lc_rs::constant_time::verify_slices_are_equal(
                given.trim().as_bytes(),
                token.as_bytes(),
            )
            .is_ok()
        })
}

fn metrics_response(api: &Api) -> hyper::Response<Body> {
    let m = &api.metrics;
    m.journal_next_seq
        .set(api.engine.journal().next_seq() as i64);
    m.delivery_position.set(api.engine.position() as i64);
    m.history_position.set(api.history.position() as i64);
    if let Some(s) = api.disk.refresh() {
        m.disk_free.set(s.free.min(i64::MAX as u64) as i64);
        m.disk_reserve.set(s.reserve.min(i64::MAX as u64) as i64);
    }
    m.disk_reserve_reached.set(api.disk.reached() as i64);
    m.disk_refused.set(api.disk.refused() as i64);
    let mem = &api.opts.memory;
    m.memory_limit.set(mem.limit.min(i64::MAX as u64) as i64);
    for (name, bytes) in &mem.shares {
        m.memory_share
            .get_or_create(&crate::metrics::ShareLabels {
                share: name.clone(),
            })
            .set((*bytes).min(i64::MAX as u64) as i64);
    }
    m.set_used("journal_queue", api.engine.journal().pending_bytes());
    m.set_used("delivery", api.engine.buffered_bytes());
    m.set_used("history_batch", api.history.batch_in_use());
    let budget = api
        .opts
        .max_buffered_body_bytes
        .min(tokio::sync::Semaphore::MAX_PERMITS);
    m.set_used(
        "request_bodies",
        budget.saturating_sub(api.body_budget.available_permits()),
    );
    let (rss, fds) = crate::metrics::process_usage();
    m.resident.set(rss.min(i64::MAX as u64) as i64);
    m.open_fds.set(fds as i64);
    let mut r = hyper::Response::new(full(Bytes::from(m.render())));
    r.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static(
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
    );
    r
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
            if metrics_allowed(&api, &req) {
                return Ok(metrics_response(&api));
            }
            let mut r = hyper::Response::new(full(Bytes::from_static(
                b"metrics need Authorization: Bearer <token> (CAIRN_METRICS_TOKEN), or metrics_listen\n",
            )));
            *r.status_mut() = hyper::StatusCode::UNAUTHORIZED;
            r.headers_mut().insert(
                hyper::header::WWW_AUTHENTICATE,
                hyper::header::HeaderValue::from_static("Bearer"),
            );
            return Ok(r);
        }
        _ => {}
    }
    let request = to_request(&api, req, peer, tls).await;
    let head = request.method == "HEAD";
    // The request runs in a task of its own: a client that goes away cannot cancel it
    // halfway (a staged body left unnamed, an effect whose event is durable never made).
    // Boxed: the handler's future holds every service's states (kilobytes), and a task moves
    // its future into place and its stages around; a box moves a pointer.
    let handler = {
        let api = api.clone();
        tokio::spawn(Box::pin(async move { edge::handle(&api, request).await }))
    };
    let reply = match handler.await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "a request handler failed");
            let mut r = hyper::Response::new(full(Bytes::new()));
            *r.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
            return Ok(r);
        }
    };
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

/// The most header bytes one request may send.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

async fn metrics_only(
    api: Arc<Api>,
    req: hyper::Request<Incoming>,
) -> Result<hyper::Response<Body>, std::convert::Infallible> {
    Ok(match req.uri().path() {
        "/metrics" | "/_cairn/metrics" => metrics_response(&api),
        _ => {
            let mut r = hyper::Response::new(full(Bytes::new()));
            *r.status_mut() = hyper::StatusCode::NOT_FOUND;
            r
        }
    })
}

/// Serves Prometheus metrics (`GET /metrics`, `GET /_cairn/metrics`) without authentication
/// on an administrative listener of its own (`metrics_listen`, loopback by default), for
/// scrapers that cannot sign requests. Stops with the returned handle's `abort`.
pub async fn serve_metrics(
    api: Arc<Api>,
    listener: TcpListener,
) -> Result<tokio::task::JoinHandle<()>, ServeError> {
    Ok(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                continue;
            };
            let api = api.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| metrics_only(api.clone(), req));
                let mut b = hyper::server::conn::http1::Builder::new();
                b.timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(std::time::Duration::from_secs(10));
                let _ = b.serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    }))
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
    let slots = Arc::new(tokio::sync::Semaphore::new(api.opts.max_connections.max(1)));
    let task = tokio::spawn(async move {
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        loop {
            // A connection slot first: past the cap, new connections wait in the backlog.
            let slot = tokio::select! {
                s = slots.clone().acquire_owned() => match s {
                    Ok(s) => s,
                    Err(_) => break,
                },
                _ = stopped.changed() => break,
            };
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
            // A connection whose writes stall this long is closed: a client that never reads its
            // answers cannot hold its slot. (Reads have their own timeouts: headers, bodies.)
            let mut stream = tokio_io_timeout::TimeoutStream::new(stream);
            let idle = api.opts.header_timeout.max(api.opts.body_timeout) * 3;
            stream.set_write_timeout(Some(idle));
            let stream = Box::pin(stream);
            let api = api.clone();
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .half_close(true)
                .timer(hyper_util::rt::TokioTimer::new())
                // Headers must arrive in time (an idle keep-alive connection also closes).
                .header_read_timeout(api.opts.header_timeout)
                // Bounds the headers of one request (hyper answers 431 beyond).
                .max_buf_size(MAX_HEADER_BYTES);
            match &acceptor {
                None => {
                    let svc = service_fn(move |req| respond(api.clone(), req, peer, None));
                    let conn = builder.serve_connection(TokioIo::new(stream), svc);
                    let conn = graceful.watch(conn);
                    tokio::spawn(async move {
                        if let Err(e) = conn.await {
                            tracing::debug!(error = %e, "connection ended with an error");
                        }
                        drop(slot);
                    });
                }
                Some(acc) => {
                    let acc = acc.clone();
                    let watcher = graceful.watcher();
                    let handshake = api.opts.tls_handshake_timeout;
                    tokio::spawn(async move {
                        let _slot = slot;
                        let tls = match tokio::time::timeout(handshake, acc.accept(stream)).await {
                            Ok(Ok(t)) => t,
                            Ok(Err(e)) => {
                                tracing::debug!(error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!("TLS handshake timed out");
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

/// The HTTP(S) client cairn uses towards upstreams (proxied S3 buckets, the DynamoDB
/// upstream).
pub type UpstreamClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    StreamBody,
>;

/// An [`UpstreamClient`]: HTTP/1.1 with keep-alive pools and `TCP_NODELAY`, HTTPS trusting
/// the system's roots plus the PEM certificates in `extra_ca`.
pub fn upstream_client(extra_ca: Option<&std::path::Path>) -> Result<UpstreamClient, String> {
    let provider = Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    for c in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(c);
    }
    if let Some(path) = extra_ca {
        let pem = std::fs::read(path)
            .map_err(|e| format!("cannot read the CA file {}: {e}", path.display()))?;
        for c in rustls_pemfile::certs(&mut pem.as_slice()).flatten() {
            let _ = roots.add(c);
        }
    }
    let tls = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.set_nodelay(true);
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_max_idle_per_host(256)
            .build(https),
    )
}
