//! The AWS wire protocols over the trail engine.
//!
//! One listener serves every service; [`edge`] classifies each request by its SigV4
//! credential scope, `X-Amz-Target` and path, authenticates it, hands it to the service
//! module (`cloudtrail`, `cloudtrail_data`, `iam_api`, `sts`, `s3`) and records it as an
//! event in the journal **before** answering. If the journal refuses, the client gets a 503
//! and the request is not acknowledged.
//!
//! Control-plane metadata the engine does not own (trail tags, insight selectors, channels)
//! lives in [`meta`]. LookupEvents reads [`history`], a journal consumer that indexes
//! management events.

pub mod cloudtrail;
pub mod cloudtrail_data;
pub mod delivery;
pub mod edge;
pub mod history;
pub mod http;
pub mod iam_api;
pub mod lifecycle;
pub mod meta;
pub mod metrics;
pub mod s3;
pub mod s3_chunked;
pub mod s3_multipart;
pub mod s3_object_ext;
pub mod s3_proxy;
pub mod sts;
pub mod wire;
pub mod xml;

use cairn_iam::identity::Directory;
use cairn_record::{Clock, EventRecord};
use cairn_store::ObjectStore;
use cairn_trail::TrailEngine;
use std::sync::Arc;
use wire::ApiError;

pub use edge::{HttpRequest, TlsInfo};
pub use http::{serve, Server, TlsFiles};

/// Settings of the API layer.
#[derive(Debug, Clone)]
pub struct ApiOptions {
    pub account: String,
    /// Regions served (trails are visible as shadow trails in each).
    pub regions: Vec<String>,
    /// Region assumed for requests whose signature names none.
    pub default_region: String,
    /// Accept the well-known `test`/`test` credentials as the account root (development only).
    pub dev_credentials: bool,
    /// Largest request body accepted (bytes).
    pub max_body_bytes: usize,
    /// Retention of LookupEvents history.
    pub history_days: i64,
    /// Documented LookupEvents extensions: several attributes combined with AND, and
    /// `EventCategory: data` for data events. Off by default (AWS refuses both).
    pub lookup_extensions: bool,
    /// Where multipart upload parts wait until completed.
    pub multipart_dir: std::path::PathBuf,
    /// Buckets served by an upstream S3-compatible service (cairn bucket name → target).
    pub proxies: std::collections::HashMap<String, s3_proxy::ProxyTarget>,
}

impl ApiOptions {
    pub fn new(account: &str) -> ApiOptions {
        ApiOptions {
            account: account.into(),
            regions: vec![
                "us-east-1".into(),
                "us-east-2".into(),
                "us-west-2".into(),
                "eu-west-1".into(),
            ],
            default_region: "us-east-1".into(),
            dev_credentials: false,
            max_body_bytes: 16 << 20,
            history_days: 90,
            lookup_extensions: false,
            multipart_dir: std::env::temp_dir().join("cairn-multipart"),
            proxies: Default::default(),
        }
    }
}

/// Everything a request may touch.
pub struct Api {
    pub opts: ApiOptions,
    pub engine: Arc<TrailEngine>,
    /// The store buckets live in (the S3 read path serves it).
    pub store: Arc<dyn ObjectStore>,
    /// Where trails deliver (the same store unless delivery goes to a remote S3).
    pub trail_store: Arc<dyn ObjectStore>,
    pub iam: Arc<Directory>,
    pub meta: Arc<meta::Meta>,
    pub history: Arc<history::History>,
    pub clock: Arc<dyn Clock>,
    pub metrics: metrics::Metrics,
    /// Serialises control-plane changes (check-then-act on trails and channels).
    pub control: tokio::sync::Mutex<()>,
    /// When this API started (the creation date ListBuckets shows for proxied buckets).
    pub started: chrono::DateTime<chrono::Utc>,
    /// The HTTP client for proxied buckets (built on first use).
    pub upstream: std::sync::OnceLock<s3_proxy::Upstream>,
}

impl Api {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        opts: ApiOptions,
        engine: Arc<TrailEngine>,
        store: Arc<dyn ObjectStore>,
        trail_store: Arc<dyn ObjectStore>,
        iam: Arc<Directory>,
        meta: Arc<meta::Meta>,
        history: Arc<history::History>,
        clock: Arc<dyn Clock>,
    ) -> Arc<Api> {
        Arc::new(Api {
            opts,
            engine,
            store,
            trail_store,
            iam,
            meta,
            history,
            clock,
            metrics: metrics::Metrics::new(),
            control: tokio::sync::Mutex::new(()),
            upstream: std::sync::OnceLock::new(),
            started: chrono::Utc::now(),
        })
    }

    /// Appends `rec` to the journal and waits until it is durable. Never blocks a runtime
    /// thread: the journal's group commit wakes this task.
    pub async fn record(&self, rec: &EventRecord) -> Result<(), ApiError> {
        let json = rec.to_json();
        let queued = self
            .engine
            .try_append_event_async(rec, &json)
            .map_err(ApiError::unavailable)?;
        let outcome = match queued {
            Some(fut) => fut.await.map(|_| ()).map_err(ApiError::unavailable),
            None => {
                // The journal's queue is full: wait for room on a blocking thread.
                let engine = self.engine.clone();
                let rec = rec.clone();
                tokio::task::spawn_blocking(move || engine.append_event(&rec))
                    .await
                    .map_err(ApiError::unavailable)?
                    .map(|_| ())
                    .map_err(ApiError::unavailable)
            }
        };
        match &outcome {
            Ok(()) => self.metrics.events_recorded.inc(),
            Err(_) => self.metrics.events_refused.inc(),
        };
        outcome
    }

    /// The region a bucket was declared in (`None`: us-east-1).
    pub fn bucket_region(&self, bucket: &str) -> Option<String> {
        self.meta
            .get::<String>(&format!("bucket-region/{bucket}"))
            .ok()
            .flatten()
    }

    /// Records several events; all are queued before any is awaited, so they share fsyncs.
    pub async fn record_many(&self, recs: &[EventRecord]) -> Result<(), ApiError> {
        let mut pending = Vec::with_capacity(recs.len());
        for rec in recs {
            let json = rec.to_json();
            match self
                .engine
                .try_append_event_async(rec, &json)
                .map_err(ApiError::unavailable)?
            {
                Some(f) => pending.push(f),
                None => self.record(rec).await?,
            }
        }
        for f in pending {
            f.await.map_err(ApiError::unavailable)?;
            self.metrics.events_recorded.inc();
        }
        Ok(())
    }

    /// Runs blocking engine work off the async threads.
    pub async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(ApiError::internal)?
    }
}
