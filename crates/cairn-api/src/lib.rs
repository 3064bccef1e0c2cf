//! The AWS wire protocols over the trail engine.
//!
//! One listener serves every service. Each service is one folder (`cloudtrail/`, `iam/`,
//! `s3/`) registered once in [`service::SERVICES`]; [`edge`] finds a request's service,
//! authenticates the request, has the service's router turn it into a typed operation, runs
//! the handler and records the request as an event in the journal **before** answering. If
//! the journal refuses, the client gets a 503 and nothing the request would change has
//! changed. [`protocol`] holds the wire formats (JSON, query, REST-XML) and error rendering.
//!
//! Control-plane metadata the engine does not own (trail tags, insight selectors, channels,
//! bucket configuration) lives in [`meta`]. LookupEvents reads
//! [`cloudtrail::history`], a journal consumer that indexes management events.

pub mod cloudtrail;
pub mod disk;
pub mod dynamodb;
pub mod edge;
pub mod http;
pub mod iam;
pub mod kms;
pub mod logs;
pub mod meta;
pub mod metrics;
pub mod protocol;
pub mod s3;
pub mod service;

use cairn_iam::identity::Directory;
use cairn_record::{Clock, EventRecord};
use cairn_store::ObjectStore;
use cairn_trail::TrailEngine;
use protocol::ApiError;
use std::sync::Arc;

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
    /// Largest request body read whole (bytes). PutObject and UploadPart bodies stream
    /// instead, up to `max_object_bytes`.
    pub max_body_bytes: usize,
    /// Largest body of one PutObject or UploadPart, streamed to disk (S3's limit, 5 GiB, at
    /// most).
    pub max_object_bytes: u64,
    /// Largest body of an API call (JSON, query, REST-JSON protocols).
    pub max_api_body_bytes: usize,
    /// Request bodies buffered at once, in bytes, across all connections; a request waits
    /// (up to `body_timeout`) for room, then gets 503 SlowDown.
    pub max_buffered_body_bytes: usize,
    /// The share of that one client address may hold (503 SlowDown beyond).
    pub max_buffered_body_bytes_per_client: usize,
    /// How long a client may take to send its request headers.
    pub header_timeout: std::time::Duration,
    /// How long a body may go without a byte arriving, and (times 20) in all.
    pub body_timeout: std::time::Duration,
    /// How long a TLS handshake may take.
    pub tls_handshake_timeout: std::time::Duration,
    /// Connections served at once; further ones wait in the listen backlog.
    pub max_connections: usize,
    /// `/_cairn/metrics` on the API listener: `None` refuses it (unless `metrics_public`);
    /// `Some(token)` serves it to `Authorization: Bearer <token>`.
    pub metrics_token: Option<String>,
    /// Serve `/_cairn/metrics` on the API listener to anyone (explicit opt-in).
    pub metrics_public: bool,
    /// Retention of LookupEvents history.
    pub history_days: i64,
    /// Documented LookupEvents extensions: several attributes combined with AND, and
    /// `EventCategory: data` for data events. Off by default (AWS refuses both).
    pub lookup_extensions: bool,
    /// Where multipart upload parts wait until completed.
    pub multipart_dir: std::path::PathBuf,
    /// Seals part files at rest (the embedded store's SSE-S3 cipher); `None` writes them as
    /// they came (tests only).
    pub part_cipher: Option<PartCipher>,
    /// Days after which an incomplete multipart upload is aborted when no lifecycle rule of its
    /// bucket says otherwise.
    pub multipart_expiry_days: i64,
    /// Buckets served by an upstream S3-compatible service (cairn bucket name → target).
    pub proxies: std::collections::HashMap<String, s3::proxy::ProxyTarget>,
    /// The DynamoDB-compatible database DynamoDB calls go to (`None`: DynamoDB calls are
    /// answered with how to configure one).
    pub dynamodb: Option<dynamodb::Target>,
    /// Filesystems whose free space is held to `disk_reserve` (the data directory, the
    /// journal, multipart staging); empty watches nothing.
    pub disk_paths: Vec<std::path::PathBuf>,
    /// Free space kept for reads, deletes, delivery and the journal records of refused
    /// requests ([`disk`]).
    pub disk_reserve: disk::Reserve,
    /// The memory budget and its shares, as the server split them (reported by
    /// `/_cairn/metrics`; empty when the embedding process set none).
    pub memory: MemoryReport,
}

/// How the server's `memory_limit` was split: each share's name, bytes and what it holds.
#[derive(Debug, Clone, Default)]
pub struct MemoryReport {
    pub limit: u64,
    pub shares: Vec<(String, u64)>,
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
            max_object_bytes: 5 << 30,
            max_api_body_bytes: 2 << 20,
            max_buffered_body_bytes: 256 << 20,
            max_buffered_body_bytes_per_client: 64 << 20,
            header_timeout: std::time::Duration::from_secs(20),
            body_timeout: std::time::Duration::from_secs(20),
            tls_handshake_timeout: std::time::Duration::from_secs(10),
            max_connections: 4096,
            metrics_token: None,
            metrics_public: false,
            history_days: 90,
            lookup_extensions: false,
            multipart_dir: std::env::temp_dir().join("cairn-multipart"),
            part_cipher: None,
            multipart_expiry_days: 7,
            proxies: Default::default(),
            dynamodb: None,
            disk_paths: Vec::new(),
            disk_reserve: disk::Reserve::Default,
            memory: MemoryReport::default(),
        }
    }
}

/// The cipher of part files (a newtype so the options stay `Debug`).
#[derive(Clone)]
pub struct PartCipher(pub Arc<dyn cairn_store::BodyCipher>);

impl std::fmt::Debug for PartCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PartCipher")
    }
}

impl std::ops::Deref for PartCipher {
    type Target = dyn cairn_store::BodyCipher;
    fn deref(&self) -> &Self::Target {
        self.0.as_ref()
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
    /// KMS keys (the `kms` service, SSE-KMS objects, encrypted trails).
    pub kms: Arc<cairn_kms::Kms>,
    /// CloudWatch Logs' events (the `logs` service, trail delivery to log groups).
    pub logs: Arc<cairn_logs::LogStore>,
    /// Logs Insights queries started and not yet forgotten.
    pub queries: logs::queries::Queries,
    /// S3 Bucket Keys in use (SSE-KMS data keys S3 reuses per bucket for a while).
    pub bucket_keys: kms::on_behalf::BucketKeys,
    pub meta: Arc<meta::Meta>,
    pub history: Arc<cloudtrail::history::History>,
    /// PutAuditEvents' idempotency index (channel, id) → eventID.
    pub audit_ids: Arc<cloudtrail::audit_ids::AuditIds>,
    pub clock: Arc<dyn Clock>,
    pub metrics: metrics::Metrics,
    /// Serialises control-plane changes (check-then-act on trails and channels). A handler
    /// holds it until its deferred change is made ([`edge::Ctx::hold_until_made`]).
    pub control: Arc<tokio::sync::Mutex<()>>,
    /// When this API started (the creation date ListBuckets shows for proxied buckets).
    pub started: chrono::DateTime<chrono::Utc>,
    /// DynamoDB's upstream client, learned ARN prefix and key schemas.
    pub dynamodb: Arc<dynamodb::State>,
    /// The HTTP client for proxied buckets (built on first use).
    pub upstream: std::sync::OnceLock<s3::proxy::Upstream>,
    /// Room for request bodies being buffered, in bytes (`ApiOptions::max_buffered_body_bytes`).
    pub body_budget: Arc<tokio::sync::Semaphore>,
    /// Body bytes being buffered per client address (bounded by
    /// `ApiOptions::max_buffered_body_bytes_per_client`).
    pub body_bytes_by_peer: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
    /// Requests journaled as pending whose outcome is not journaled yet: token → a journal
    /// position at or below their pending entry. The `pending` journal consumer never passes
    /// the lowest, so a crash leaves every unresolved entry for [`Api::resolve_orphans`].
    pending: std::sync::Mutex<PendingSet>,
    /// Free space held back from requests that would grow the data.
    pub disk: disk::DiskReserve,
}

#[derive(Default)]
struct PendingSet {
    next_token: u64,
    floors: std::collections::HashMap<u64, u64>,
    /// The cursor last committed.
    committed: Option<u64>,
}

/// The journal consumer that holds back unresolved pending entries.
pub const PENDING_CONSUMER: &str = "pending";

impl Api {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        opts: ApiOptions,
        engine: Arc<TrailEngine>,
        store: Arc<dyn ObjectStore>,
        trail_store: Arc<dyn ObjectStore>,
        iam: Arc<Directory>,
        kms: Arc<cairn_kms::Kms>,
        logs: Arc<cairn_logs::LogStore>,
        meta: Arc<meta::Meta>,
        history: Arc<cloudtrail::history::History>,
        clock: Arc<dyn Clock>,
    ) -> Arc<Api> {
        history.set_index_data(opts.lookup_extensions);
        let audit_ids = cloudtrail::audit_ids::AuditIds::new(
            meta.clone(),
            engine.journal().clone(),
            clock.clone(),
        );
        Arc::new(Api {
            audit_ids,
            engine,
            store,
            trail_store,
            iam,
            kms,
            logs,
            queries: Default::default(),
            bucket_keys: Default::default(),
            meta,
            history,
            clock,
            metrics: metrics::Metrics::new(),
            control: Arc::new(tokio::sync::Mutex::new(())),
            upstream: std::sync::OnceLock::new(),
            dynamodb: Default::default(),
            started: chrono::Utc::now(),
            pending: std::sync::Mutex::new(PendingSet::default()),
            body_bytes_by_peer: Default::default(),
            disk: disk::DiskReserve::new(opts.disk_paths.clone(), opts.disk_reserve),
            body_budget: Arc::new(tokio::sync::Semaphore::new(
                opts.max_buffered_body_bytes
                    .min(tokio::sync::Semaphore::MAX_PERMITS),
            )),
            opts,
        })
    }

    fn pending_set(&self) -> std::sync::MutexGuard<'_, PendingSet> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until entries queued on the journal are durable and returns the first one's
    /// position; when the journal's queue was full (`Ok(None)`), appends them with `blocking`
    /// on a blocking thread instead (never blocking a runtime thread).
    async fn durable<T: Send + 'static>(
        &self,
        queued: cairn_trail::Result<Option<cairn_journal::Append>>,
        owned: impl FnOnce() -> T,
        blocking: impl FnOnce(&TrailEngine, T) -> cairn_trail::Result<u64> + Send + 'static,
    ) -> Result<u64, ApiError> {
        match queued.map_err(ApiError::unavailable)? {
            Some(fut) => fut.await.map(|r| r.start).map_err(ApiError::unavailable),
            None => {
                let (engine, payload) = (self.engine.clone(), owned());
                tokio::task::spawn_blocking(move || blocking(&engine, payload))
                    .await
                    .map_err(ApiError::unavailable)?
                    .map_err(ApiError::unavailable)
            }
        }
    }

    /// Counts recorded (or refused) events.
    fn count(&self, outcome: &Result<u64, ApiError>, n: u64) {
        let counter = match outcome {
            Ok(_) => &self.metrics.events_recorded,
            Err(_) => &self.metrics.events_refused,
        };
        counter.inc_by(n);
    }

    /// Journals the record of a request whose effect happens outside cairn, as pending (not
    /// delivered); returns its journal position once durable.
    pub async fn record_pending(&self, rec: &EventRecord) -> Result<u64, ApiError> {
        // The position the entry will get is at least the journal's next one now: hold the
        // consumer back to it before appending, so no checkpoint can pass the entry.
        let token = {
            let mut p = self.pending_set();
            let token = p.next_token;
            p.next_token += 1;
            p.floors.insert(token, self.engine.journal().next_seq());
            token
        };
        let queued = self.engine.try_append_pending_async(rec);
        let appended = self
            .durable(queued, || rec.clone(), |e, r| e.append_pending(&r))
            .await;
        self.count(&appended, 1);
        let mut p = self.pending_set();
        p.floors.remove(&token);
        let seq = appended?;
        p.floors.insert(seq | (1 << 63), seq);
        Ok(seq)
    }

    /// Journals the final record of the pending entry at `pending` (delivered as the request's
    /// one event) and waits until it is durable.
    pub async fn record_resolved(&self, pending: u64, rec: &EventRecord) -> Result<(), ApiError> {
        let queued = self.engine.try_append_resolved_async(pending, rec);
        self.durable(
            queued,
            || rec.clone(),
            move |e, r| e.append_resolved(pending, &r),
        )
        .await?;
        self.pending_set().floors.remove(&(pending | (1 << 63)));
        Ok(())
    }

    /// Journals the outcome `entry` of the pending entry at `pending`, whose store write kept
    /// it in the same transaction as the change (`ObjectStore::keeps_outbox`): it is durable
    /// already, and a stop before the journal has it is resolved from the store at the next
    /// start (`resolve_orphans`). Returns once the entry is queued on the journal, so what
    /// the client does after its answer (a StopLogging, a flush, a lookup) is journaled after
    /// it; only the wait for it to be durable is left to a task. When the journal's queue is
    /// full the entry is appended durably here, before the answer, for the same reason. A
    /// failed append is retried until the journal takes it (a journal batch that fails after
    /// the answer is the one case where a later request can be journaled first); the pending
    /// entry holds the journal's `pending` cursor back meanwhile.
    pub async fn resolve_kept(self: &Arc<Self>, pending: u64, entry: Vec<u8>) {
        let queued = self
            .engine
            .try_append_entries_async(std::slice::from_ref(&entry));
        let durable = match queued {
            Ok(Some(fut)) => Some(fut),
            Ok(None) => {
                let appended = self
                    .durable(
                        Ok(None),
                        || vec![entry.clone()],
                        |e, es| e.append_entries(&es),
                    )
                    .await;
                if appended.is_ok() {
                    self.kept_resolved(pending);
                    return;
                }
                None
            }
            Err(_) => None,
        };
        let api = self.clone();
        tokio::spawn(async move {
            let mut first = durable;
            let mut wait = std::time::Duration::from_millis(100);
            loop {
                let queued = match first.take() {
                    Some(fut) => Ok(Some(fut)),
                    None => api
                        .engine
                        .try_append_entries_async(std::slice::from_ref(&entry)),
                };
                let appended = api
                    .durable(
                        queued,
                        || vec![entry.clone()],
                        |e, es| e.append_entries(&es),
                    )
                    .await;
                match appended {
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(pending, error = %e.message, "journaling a kept outcome failed; retrying");
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(std::time::Duration::from_secs(10));
                    }
                }
            }
            api.kept_resolved(pending);
        });
    }

    /// The kept outcome of `pending` is durable in the journal: the entry no longer holds
    /// the cursor back, and the store's copy goes with a later commit.
    fn kept_resolved(&self, pending: u64) {
        self.pending_set().floors.remove(&(pending | (1 << 63)));
        self.store.outbox_release(pending);
    }

    /// Moves the `pending` consumer's durable cursor up to the oldest unresolved entry (or the
    /// journal's end when none is). Cheap when nothing changed; call periodically.
    pub fn checkpoint_pending(&self) -> Result<(), ApiError> {
        let target = {
            let p = self.pending_set();
            p.floors
                .values()
                .min()
                .copied()
                .unwrap_or_else(|| self.engine.journal().next_seq())
        };
        if self.pending_set().committed == Some(target) {
            return Ok(());
        }
        self.engine
            .journal()
            .commit_cursor(PENDING_CONSUMER, target)
            .map_err(ApiError::internal)?;
        self.pending_set().committed = Some(target);
        Ok(())
    }

    /// At start, before serving: every pending entry a crash left without its outcome is
    /// resolved — with the outcome its store write kept, when the write was made (see
    /// [`Api::resolve_kept`]); otherwise as failed with an unknown outcome (the effect may or
    /// may not have happened upstream; the trail says so rather than claim either). Returns
    /// how many were resolved as unknown.
    pub fn resolve_orphans(&self) -> Result<usize, ApiError> {
        use cairn_trail::entry::{self, Entry};
        let journal = self.engine.journal();
        let from = journal
            .register_consumer(PENDING_CONSUMER)
            .map_err(ApiError::internal)?;
        let mut open: std::collections::BTreeMap<u64, Vec<u8>> = Default::default();
        let mut reader = journal.reader(from).map_err(ApiError::internal)?;
        while let Some((seq, bytes)) = reader.next_record().map_err(ApiError::internal)? {
            match entry::decode(&bytes) {
                Ok(Entry::Pending { json, .. }) => {
                    open.insert(seq, json);
                }
                Ok(Entry::Resolved { pending, .. }) => {
                    open.remove(&pending);
                }
                _ => {}
            }
        }
        let n = open.len();
        let mut kept = 0;
        for (seq, json) in open {
            // A store write that kept its outcome with it was made: that outcome is its record.
            if let Some(entry) = self.store.outbox_record(seq).map_err(ApiError::internal)? {
                self.engine
                    .append_entries(&[entry])
                    .map_err(ApiError::internal)?;
                kept += 1;
                continue;
            }
            let mut rec: EventRecord = serde_json::from_slice(&json).map_err(ApiError::internal)?;
            rec.error_code = Some("ServiceUnavailable".into());
            rec.error_message = Some(
                "cairn stopped before this request's outcome was known; the upstream may or may not have applied it"
                    .into(),
            );
            rec.response_elements = None;
            self.engine
                .append_resolved(seq, &rec)
                .map_err(ApiError::internal)?;
            tracing::warn!(request_id = ?rec.request_id, "a request left pending by a crash is recorded with an unknown outcome");
        }
        if kept > 0 {
            tracing::info!(
                kept,
                "outcomes kept with their store writes are journaled after a stop"
            );
        }
        // Every kept outcome is in the journal now (durably), or was before the stop.
        self.store.outbox_clear().map_err(ApiError::internal)?;
        let end = journal.next_seq();
        journal
            .commit_cursor(PENDING_CONSUMER, end)
            .map_err(ApiError::internal)?;
        self.pending_set().committed = Some(end);
        Ok(n - kept)
    }

    /// Appends `rec` to the journal and waits until it is durable. Never blocks a runtime
    /// thread: the journal's group commit wakes this task.
    pub async fn record(&self, rec: &EventRecord) -> Result<(), ApiError> {
        let queued = self.engine.try_append_event_async(rec, &rec.to_json());
        let outcome = self
            .durable(queued, || rec.clone(), |e, r| e.append_event(&r))
            .await;
        self.count(&outcome, 1);
        outcome.map(|_| ())
    }

    /// Records a request's event with the events it carries and their id mark as one batch
    /// (PutAuditEvents); returns the journal position after the batch once it is durable.
    pub async fn record_marked(
        &self,
        rec: &EventRecord,
        carried: &[EventRecord],
        mark: &cairn_trail::entry::AuditIds,
    ) -> Result<u64, ApiError> {
        use cairn_trail::entry;
        let mut entries: Vec<Vec<u8>> = std::iter::once(rec)
            .chain(carried)
            .map(entry::encode_event)
            .collect();
        entries.push(entry::encode_audit_ids(mark));
        let n = entries.len() as u64;
        let queued = self.engine.try_append_entries_async(&entries);
        let outcome = self
            .durable(queued, || entries, |e, es| e.append_entries(&es))
            .await;
        self.count(&outcome, n - 1);
        outcome.map(|start| start + n)
    }

    /// Records a request's event, the events it carries and its trail commands (after them)
    /// as one batch; returns the batch's first position once it is durable.
    pub async fn record_with_commands(
        &self,
        rec: &EventRecord,
        carried: &[EventRecord],
        commands: &[&cairn_trail::TrailCommand],
    ) -> Result<u64, ApiError> {
        use cairn_trail::entry;
        let mut entries: Vec<Vec<u8>> = std::iter::once(rec)
            .chain(carried)
            .map(entry::encode_event)
            .collect();
        let events = entries.len() as u64;
        entries.extend(commands.iter().map(|c| entry::encode_command(c)));
        let queued = self.engine.try_append_entries_async(&entries);
        let outcome = self
            .durable(queued, || entries, |e, es| e.append_entries(&es))
            .await;
        self.count(&outcome, events);
        outcome
    }

    /// Records a request's event with the events it carries (PutAuditEvents' audit events)
    /// as one batch: none is durable without the others, and the caller waits for all.
    pub async fn record_with(
        &self,
        rec: &EventRecord,
        carried: &[EventRecord],
    ) -> Result<(), ApiError> {
        if carried.is_empty() {
            return self.record(rec).await;
        }
        let all: Vec<&EventRecord> = std::iter::once(rec).chain(carried).collect();
        let queued = self.engine.try_append_events_async(&all);
        let owned = || all.iter().map(|r| (*r).clone()).collect::<Vec<_>>();
        let outcome = self
            .durable(queued, owned, |e, recs| {
                e.append_events(&recs.iter().collect::<Vec<_>>())
            })
            .await;
        self.count(&outcome, all.len() as u64);
        outcome.map(|_| ())
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
