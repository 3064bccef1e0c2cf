use crate::config::{TrailCommand, TrailConfig, TrailState};
use crate::digest::{
    digest_json, sha256_hex, signing_string, DeliveredFile, DigestInput, DigestLink,
};
use crate::entry::{self, Entry, EventHeader};
use crate::keys::{sign_hex, KeyRing, KeyWindow, PublicKeyInfo, RootKey};
use crate::logfile::{BufferPool, LogFile, LogFileBuilder};
use crate::names;
use crate::{Result, TrailError};
use cairn_journal::{Journal, JournalReader};
use cairn_record::selector::{TrailScope, TrailSelectors};
use cairn_record::time::{iso, whole_seconds};
use cairn_record::{Clock, EventRecord};
use cairn_store::{ObjectStore, PutItem, PutOptions, StoreError};
use chrono::{DateTime, Duration, Utc};
use rayon::prelude::*;
use redb::{Database, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

/// The journal consumer name of trail delivery.
pub const DELIVERY_CONSUMER: &str = "delivery";

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const TRAILS: TableDefinition<&str, &[u8]> = TableDefinition::new("trails");
const CHAINS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("chains");
const INTENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("intents");

/// CloudTrail's largest log file is 50 MB compressed. A file is closed once it holds this many
/// *uncompressed* bytes, so its compressed size is always below 50 MB whatever the data.
pub const MAX_FILE_BYTES: usize = 48_000_000;
/// Uncompressed bytes an open epoch may buffer across all its files before it is delivered
/// early: the bound on delivery's memory.
pub const MAX_EPOCH_BYTES: usize = 256 << 20;

/// Decides whether a trail (its ARN) may deliver an object (bucket, key): the log bucket's
/// policy, as CloudTrail is subject to it. A refused delivery fails as AccessDenied, is
/// reported in the trail's status, and is retried.
#[derive(Clone)]
pub struct DeliveryGuard(pub Arc<Allows>);

/// Whether trail `source_arn` may put (bucket, key): `allows(bucket, key, source_arn)`.
pub type Allows = dyn Fn(&str, &str, &str) -> bool + Send + Sync;

impl std::fmt::Debug for DeliveryGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeliveryGuard")
    }
}

/// Encrypts log files under their trail's KMS key (SSE-KMS, as CloudTrail does): for one
/// file, a fresh data key's envelope generated *as CloudTrail* (the key policy must allow
/// `cloudtrail.amazonaws.com` for this trail; the call is itself recorded). `Err` carries
/// the KMS error code: the file is not written (never in plaintext, never under another
/// key), the trail's status reports it, and delivery retries.
pub trait LogKeys: Send + Sync {
    fn envelope(
        &self,
        key_id: &str,
        trail_arn: &str,
        bucket: &str,
        key: &str,
    ) -> std::result::Result<LogKey, String>;
}

/// An SSE-KMS data key for one log file.
pub struct LogKey {
    /// The envelope the store keeps beside the body ([`PutOptions::wrapped_key`]).
    pub wrapped: Vec<u8>,
    /// The system attributes the object keeps about its encryption (algorithm, key ARN,
    /// encryption context), as the S3 layer reads them.
    pub system: Vec<(String, String)>,
}

/// [`LogKeys`] in the engine's options.
#[derive(Clone)]
pub struct LogKeysHook(pub Arc<dyn LogKeys>);

impl std::fmt::Debug for LogKeysHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogKeysHook")
    }
}

/// The KMS key a bucket's default encryption names, if any: `key_of(bucket)`.
#[derive(Clone)]
pub struct BucketKmsHook(pub Arc<BucketKeyOf>);

/// `bucket → its default KMS key`.
pub type BucketKeyOf = dyn Fn(&str) -> Option<String> + Send + Sync;

impl std::fmt::Debug for BucketKmsHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BucketKmsHook")
    }
}

/// The gzip level of delivered log files by default: libdeflate's level 4 (greedy parsing).
/// Against level 6 (lazy), `cairn bench ingest` delivered a median 10% more events per
/// second over seven interleaved pairs (107.9k against 97.9k; five of the seven favoured
/// level 4) for files 11% larger (130 against 117 bytes per event); levels 1–2 cost ~30%
/// in size. `log_gzip_level` in `cairn.toml` chooses another (1–9).
pub const DEFAULT_GZIP_LEVEL: u32 = 4;

#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub account: String,
    pub delivery_interval: Duration,
    pub digest_interval: Duration,
    pub max_file_bytes: usize,
    pub max_epoch_bytes: usize,
    /// Events an epoch may hold before it is delivered early. Bounds the work a crash can
    /// throw away (and redo) and so guarantees progress under repeated crashes.
    pub max_epoch_records: usize,
    /// The gzip level of delivered log files ([`DEFAULT_GZIP_LEVEL`]).
    pub gzip_level: u32,
    /// The regions this installation serves: a multi-region trail keeps a digest chain in each.
    pub regions: Vec<String>,
    /// Records consumed per [`TrailEngine::pump`] call at most (keeps calls short).
    pub max_records_per_pump: usize,
    /// Checks every delivery against the log bucket's policy (none: every delivery allowed).
    pub delivery_guard: Option<DeliveryGuard>,
    /// Data keys for trails with a KMS key (none: such trails cannot deliver).
    pub log_keys: Option<LogKeysHook>,
    /// A log bucket's default KMS key: files of a trail without a key of its own are
    /// delivered SSE-KMS under it (as S3 applies its default encryption).
    pub bucket_kms: Option<BucketKmsHook>,
}

impl EngineOptions {
    pub fn new(account: &str) -> EngineOptions {
        EngineOptions {
            account: account.into(),
            delivery_interval: Duration::minutes(5),
            digest_interval: Duration::hours(1),
            max_file_bytes: MAX_FILE_BYTES,
            max_epoch_bytes: MAX_EPOCH_BYTES,
            max_epoch_records: 200_000,
            gzip_level: DEFAULT_GZIP_LEVEL,
            regions: vec![
                "us-east-1".into(),
                "us-east-2".into(),
                "us-west-2".into(),
                "eu-west-1".into(),
            ],
            max_records_per_pump: 100_000,
            delivery_guard: None,
            log_keys: None,
            bucket_kms: None,
        }
    }
}

/// For each (trail, region) with a file still to deliver, the oldest such file's delivery
/// time: that chain's digests wait for it.
fn pending_windows(inner: &Inner) -> HashMap<(String, String), DateTime<Utc>> {
    let mut out: HashMap<(String, String), DateTime<Utc>> = HashMap::new();
    for i in inner.intents.values() {
        for f in &i.files {
            let e = out
                .entry((f.trail.clone(), f.region.clone()))
                .or_insert(i.delivered_at);
            *e = (*e).min(i.delivered_at);
        }
    }
    out
}

/// A digest chain of one (trail, region).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ChainState {
    active: bool,
    window_start: DateTime<Utc>,
    /// The newest digest written (when active), or the last one of the ended chain.
    prev: Option<DigestLink>,
    /// Set on a chain's first digest: the last digest of the chain before it.
    previous_chain: Option<DigestLink>,
    /// Files delivered and not yet listed by a digest.
    pending: Vec<DeliveredFile>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Snapshot {
    selectors: TrailSelectors,
    scope: TrailScope,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct FileIntent {
    trail: String,
    region: String,
    bucket: String,
    key: String,
    sha256: String,
    snapshot: Snapshot,
}

/// Committed before any file of an epoch is written; removed once all are stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct EpochIntent {
    epoch: u64,
    seq_from: u64,
    seq_to: u64,
    delivered_at: DateTime<Utc>,
    files: Vec<FileIntent>,
}

struct OpenEpoch {
    seq_from: u64,
    opened_at: Option<DateTime<Utc>>,
    /// trail → region → file being filled.
    batches: BTreeMap<String, BTreeMap<String, LogFileBuilder>>,
    bytes: usize,
    records: usize,
    full: bool,
}

impl OpenEpoch {
    fn new(seq_from: u64) -> OpenEpoch {
        OpenEpoch {
            seq_from,
            opened_at: None,
            batches: BTreeMap::new(),
            bytes: 0,
            records: 0,
            full: false,
        }
    }
}

struct Inner {
    reader: JournalReader,
    open: OpenEpoch,
    cursor: u64,
    epoch: u64,
    trails: BTreeMap<String, TrailState>,
    chains: BTreeMap<(String, String), ChainState>,
    intents: BTreeMap<u64, EpochIntent>,
    /// An epoch whose files are being compressed in the background. Nothing about it is
    /// durable yet: a crash now simply re-reads its records from the journal.
    inflight: Option<InFlight>,
    /// A pump failed after its reader moved on: records may have been read and not
    /// delivered, so [`TrailEngine::release_idle`] stays off until a restart.
    reader_ahead: bool,
    /// When [`TrailEngine::release_idle`] last moved the cursor.
    last_release: Option<std::time::Instant>,
}

/// A closed epoch being compressed: everything of its intent but the file hashes.
struct InFlight {
    intent: EpochIntent,
    files: std::sync::mpsc::Receiver<Vec<LogFile>>,
}

/// What one [`TrailEngine::pump`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PumpReport {
    pub records: u64,
    pub files: u64,
    pub digests: u64,
    /// True when the journal had more records than this call consumed.
    pub more: bool,
}

/// Read-only view of an engine's state directory, for tools that run while the engine does
/// not (the offline validator, `cairn status`).
pub struct StateReader {
    db: Database,
}

impl StateReader {
    pub fn open(state_dir: &Path) -> Result<StateReader> {
        let path = state_dir.join("trail.redb");
        if !path.exists() {
            return Err(TrailError::Invalid(format!(
                "no trail state at {}",
                path.display()
            )));
        }
        Ok(StateReader {
            db: Database::open(path).map_err(db_err)?,
        })
    }

    pub fn trails(&self) -> Result<Vec<TrailState>> {
        let r = self.db.begin_read().map_err(db_err)?;
        let t = r.open_table(TRAILS).map_err(db_err)?;
        let mut out = vec![];
        for item in t.iter().map_err(db_err)? {
            let (_, v) = item.map_err(db_err)?;
            out.push(serde_json::from_slice(v.value()).map_err(db_err)?);
        }
        Ok(out)
    }

    pub fn public_keys(&self, w: &KeyWindow) -> Result<Vec<PublicKeyInfo>> {
        crate::keys::list_public_keys(&self.db, w)
    }
}

pub struct TrailEngine {
    journal: Arc<Journal>,
    store: Arc<dyn ObjectStore>,
    db: Arc<Database>,
    keys: KeyRing,
    clock: Arc<dyn Clock>,
    opts: EngineOptions,
    inner: Mutex<Inner>,
    /// Trail states and the consumed position as of the end of the last pump, readable while
    /// a pump holds `inner` (status reads never wait for a delivery).
    published: std::sync::RwLock<(u64, Arc<BTreeMap<String, TrailState>>)>,
    /// Deliveries a crash had interrupted, finished when this engine opened.
    recovered: usize,
    /// What delivery holds (the open and compressing epochs' bytes, readable while a pump
    /// holds `inner`), and the buffers of finished files kept for the next epochs'.
    buffers: Arc<BufferPool>,
}

/// Kept file buffers are freed after this long unused.
const BUFFERS_IDLE: std::time::Duration = std::time::Duration::from_secs(5);

/// Every row of a table of JSON values, keyed by what `key` makes of the stored key.
fn json_rows<K, M, T>(
    r: &redb::ReadTransaction,
    table: TableDefinition<K, &[u8]>,
    key: impl Fn(K::SelfType<'_>) -> M,
) -> Result<BTreeMap<M, T>>
where
    K: redb::Key + 'static,
    M: Ord,
    T: serde::de::DeserializeOwned,
{
    let mut out = BTreeMap::new();
    for item in r
        .open_table(table)
        .map_err(db_err)?
        .iter()
        .map_err(db_err)?
    {
        let (k, v) = item.map_err(db_err)?;
        out.insert(
            key(k.value()),
            serde_json::from_slice(v.value()).map_err(db_err)?,
        );
    }
    Ok(out)
}

fn db_err(e: impl std::fmt::Display) -> TrailError {
    TrailError::Db(e.to_string())
}

fn js<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(db_err)
}

impl TrailEngine {
    /// Opens the engine's state in `state_dir`, then finishes any delivery a crash interrupted.
    pub fn open(
        state_dir: &Path,
        journal: Arc<Journal>,
        store: Arc<dyn ObjectStore>,
        clock: Arc<dyn Clock>,
        root: RootKey,
        opts: EngineOptions,
    ) -> Result<TrailEngine> {
        std::fs::create_dir_all(state_dir)?;
        let db = Arc::new(cairn_db::create(&state_dir.join("trail.redb")).map_err(db_err)?);
        {
            let w = db.begin_write().map_err(db_err)?;
            w.open_table(META).map_err(db_err)?;
            w.open_table(TRAILS).map_err(db_err)?;
            w.open_table(CHAINS).map_err(db_err)?;
            w.open_table(INTENTS).map_err(db_err)?;
            w.commit().map_err(db_err)?;
        }
        let keys = KeyRing::new(db.clone(), root)?;
        let jcursor = journal.register_consumer(DELIVERY_CONSUMER)?;
        let (cursor, epoch, trails, chains, intents) = {
            let r = db.begin_read().map_err(db_err)?;
            let meta = r.open_table(META).map_err(db_err)?;
            let cursor = meta
                .get("cursor")
                .map_err(db_err)?
                .map(|v| v.value())
                .unwrap_or(jcursor);
            let epoch = meta
                .get("epoch")
                .map_err(db_err)?
                .map(|v| v.value())
                .unwrap_or(0);
            let trails = json_rows(&r, TRAILS, |k| k.to_string())?;
            let chains = json_rows(&r, CHAINS, |(t, reg)| (t.to_string(), reg.to_string()))?;
            let intents = json_rows(&r, INTENTS, |k| k)?;
            (cursor, epoch, trails, chains, intents)
        };
        let reader = journal.reader(cursor)?;
        let recovered = intents.len();
        let published = std::sync::RwLock::new((cursor, Arc::new(trails.clone())));
        // Delivery's bound: an open and a compressing epoch. Buffers are kept only within it.
        let buffers = BufferPool::new(opts.max_epoch_bytes.saturating_mul(2));
        let engine = TrailEngine {
            journal,
            store,
            db,
            keys,
            clock,
            opts,
            inner: Mutex::new(Inner {
                reader,
                open: OpenEpoch::new(cursor),
                cursor,
                epoch,
                trails,
                chains,
                intents,
                inflight: None,
                reader_ahead: false,
                last_release: None,
            }),
            published,
            recovered,
            buffers,
        };
        {
            let mut inner = engine.lock();
            let now = engine.clock.now();
            engine.retry_intents(&mut inner, now)?;
            engine.publish(&inner);
        }
        Ok(engine)
    }

    fn publish(&self, inner: &Inner) {
        *self.published.write().unwrap_or_else(|e| e.into_inner()) =
            (inner.reader.position(), Arc::new(inner.trails.clone()));
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn journal(&self) -> &Arc<Journal> {
        &self.journal
    }

    /// Refuses deliveries the [`DeliveryGuard`] does not allow.
    fn guard<'a>(
        &self,
        items: impl Iterator<Item = (&'a str, &'a str, &'a PutOptions)>,
    ) -> cairn_store::Result<()> {
        let Some(DeliveryGuard(allows)) = &self.opts.delivery_guard else {
            return Ok(());
        };
        for (bucket, key, opts) in items {
            if let Some(arn) = &opts.source_arn {
                if !allows(bucket, key, arn) {
                    return Err(StoreError::AccessDenied(format!(
                        "{arn} may not write s3://{bucket}/{key}"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Appends an event durably; returns its journal sequence number.
    pub fn append_event(&self, rec: &EventRecord) -> Result<u64> {
        Ok(self.journal.append(&entry::encode_event(rec))?)
    }

    /// Queues an event without blocking; the returned future resolves once it is durable.
    /// `Ok(None)`: the journal's queue is full; use [`TrailEngine::append_event`] on a blocking
    /// thread instead.
    pub fn try_append_event_async(
        &self,
        rec: &EventRecord,
        json: &[u8],
    ) -> Result<Option<cairn_journal::Append>> {
        Ok(self
            .journal
            .try_append_async(&[&entry::encode_event_json(rec, json)])?)
    }

    /// Appends several events as one batch (consecutive positions, one group commit): a
    /// request's own event with the events it carries (PutAuditEvents), all or none durable
    /// before anyone is answered.
    pub fn append_events(&self, recs: &[&EventRecord]) -> Result<u64> {
        let encoded: Vec<Vec<u8>> = recs.iter().map(|r| entry::encode_event(r)).collect();
        let refs: Vec<&[u8]> = encoded.iter().map(Vec::as_slice).collect();
        Ok(self.journal.append_batch(&refs)?.start)
    }

    /// Queues events as one batch without blocking (see [`TrailEngine::append_events`]).
    pub fn try_append_events_async(
        &self,
        recs: &[&EventRecord],
    ) -> Result<Option<cairn_journal::Append>> {
        let encoded: Vec<Vec<u8>> = recs.iter().map(|r| entry::encode_event(r)).collect();
        let refs: Vec<&[u8]> = encoded.iter().map(Vec::as_slice).collect();
        Ok(self.journal.try_append_async(&refs)?)
    }

    /// Queues pre-encoded entries (events from [`entry::encode_event`] and marks such as
    /// [`entry::encode_audit_ids`]) as one batch without blocking.
    pub fn try_append_entries_async(
        &self,
        entries: &[Vec<u8>],
    ) -> Result<Option<cairn_journal::Append>> {
        let refs: Vec<&[u8]> = entries.iter().map(Vec::as_slice).collect();
        Ok(self.journal.try_append_async(&refs)?)
    }

    /// Blocking form of [`TrailEngine::try_append_entries_async`]; returns the first position.
    pub fn append_entries(&self, entries: &[Vec<u8>]) -> Result<u64> {
        let refs: Vec<&[u8]> = entries.iter().map(Vec::as_slice).collect();
        Ok(self.journal.append_batch(&refs)?.start)
    }

    /// Queues the record of a request whose effect is about to happen outside cairn; the
    /// future resolves once it is durable, with its journal position. `Ok(None)`: the queue is
    /// full (retry on a blocking thread with [`TrailEngine::append_pending`]).
    pub fn try_append_pending_async(
        &self,
        rec: &EventRecord,
    ) -> Result<Option<cairn_journal::Append>> {
        Ok(self
            .journal
            .try_append_async(&[&entry::encode_pending(rec)])?)
    }

    /// Blocking form of [`TrailEngine::try_append_pending_async`].
    pub fn append_pending(&self, rec: &EventRecord) -> Result<u64> {
        Ok(self.journal.append(&entry::encode_pending(rec))?)
    }

    /// Queues the final record of the pending entry at `pending` (see [`Entry::Resolved`]).
    pub fn try_append_resolved_async(
        &self,
        pending: u64,
        rec: &EventRecord,
    ) -> Result<Option<cairn_journal::Append>> {
        Ok(self
            .journal
            .try_append_async(&[&entry::encode_resolved(pending, rec)])?)
    }

    /// Blocking form of [`TrailEngine::try_append_resolved_async`].
    pub fn append_resolved(&self, pending: u64, rec: &EventRecord) -> Result<u64> {
        Ok(self.journal.append(&entry::encode_resolved(pending, rec))?)
    }

    /// Appends a trail command durably (after validating what can be validated up front).
    pub fn command(&self, cmd: TrailCommand) -> Result<u64> {
        Self::validate_command(&cmd)?;
        Ok(self.journal.append(&entry::encode_command(&cmd))?)
    }

    /// What can be validated of a command before it is journaled.
    pub fn validate_command(cmd: &TrailCommand) -> Result<()> {
        if let TrailCommand::Put { config, .. } = cmd {
            crate::validate_trail_name(&config.name).map_err(TrailError::Invalid)?;
            config
                .selectors
                .validate()
                .map_err(|e| TrailError::Invalid(e.message))?;
        }
        Ok(())
    }

    /// One step of delivery at the clock's current time: consume journal records, deliver an
    /// epoch when due, write due digests. Bounded work; call repeatedly.
    pub fn pump(&self) -> Result<PumpReport> {
        self.pump_limited(self.opts.max_records_per_pump)
    }

    /// As [`TrailEngine::pump`], consuming at most `max_records` records (drivers of simulated
    /// time use small steps so delivery times follow event times).
    pub fn pump_limited(&self, max_records: usize) -> Result<PumpReport> {
        let mut inner = self.lock();
        let r = self.pump_locked(&mut inner, max_records);
        if r.is_err() {
            // The reader may have passed records (or an epoch) that were not delivered: until
            // a restart rebuilds from the state's cursor, never move the cursor past them.
            inner.reader_ahead = true;
        }
        r
    }

    fn pump_locked(&self, inner: &mut Inner, max_records: usize) -> Result<PumpReport> {
        let now = self.clock.now();
        let mut rep = PumpReport::default();
        self.retry_intents(inner, now)?;
        rep.files += self.settle_inflight(inner, false)?;
        while (rep.records as usize) < max_records {
            let Some((seq, bytes)) = inner.reader.next_record()? else {
                break;
            };
            rep.records += 1;
            match entry::decode(&bytes)? {
                Entry::Event { header, json } | Entry::Resolved { header, json, .. } => {
                    self.route(inner, &header, &json, now);
                    if inner.open.full {
                        rep.files += self.close_epoch(inner, seq + 1, now)?;
                    }
                }
                // Delivered once resolved (with its outcome), never before; id marks never.
                Entry::Pending { .. } | Entry::AuditIds(_) => {}
                Entry::Command(cmd) => {
                    rep.files += self.close_epoch(inner, seq, now)?;
                    rep.digests += self.emit_due_digests(inner, now)?;
                    rep.digests += self.apply(inner, seq, cmd, now)?;
                }
            }
        }
        rep.more = (rep.records as usize) >= max_records;
        let pos = inner.reader.position();
        match inner.open.opened_at {
            Some(t) if now - t >= self.opts.delivery_interval => {
                rep.files += self.close_epoch(inner, pos, now)?;
            }
            None => inner.open.seq_from = pos,
            _ => {}
        }
        if !rep.more {
            // Caught up: nothing to overlap with, so land the files now.
            rep.files += self.finish_inflight(inner)?;
        }
        rep.digests += self.emit_due_digests(inner, now)?;
        self.release_idle(inner)?;
        self.buffers.trim_idle(BUFFERS_IDLE);
        self.publish(inner);
        Ok(rep)
    }

    /// With nothing routed, open or being delivered, everything read so far needs no
    /// delivery: move the cursor there (state first, then the journal's copy) when that frees
    /// a segment — so a server whose trails log nothing does not keep its journal forever.
    fn release_idle(&self, inner: &mut Inner) -> Result<()> {
        let pos = inner.reader.position();
        if inner.reader_ahead
            || !inner.intents.is_empty()
            || inner.inflight.is_some()
            || !inner.open.batches.is_empty()
            || pos <= inner.cursor
            || !self.journal.would_free_segments(pos)
            // Another consumer may hold the segment: try at most once a second.
            || inner
                .last_release
                .is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(1))
        {
            return Ok(());
        }
        inner.last_release = Some(std::time::Instant::now());
        let w = self.db.begin_write().map_err(db_err)?;
        w.open_table(META)
            .map_err(db_err)?
            .insert("cursor", pos)
            .map_err(db_err)?;
        w.commit().map_err(db_err)?;
        inner.cursor = pos;
        inner.open.seq_from = pos;
        self.journal.commit_cursor(DELIVERY_CONSUMER, pos)?;
        Ok(())
    }

    /// Consumes everything in the journal and delivers it now, then closes every open digest
    /// window at the current time (the next window starts there).
    pub fn flush(&self) -> Result<PumpReport> {
        let mut total = PumpReport::default();
        loop {
            let r = self.pump()?;
            total.records += r.records;
            total.files += r.files;
            total.digests += r.digests;
            if !r.more {
                break;
            }
        }
        // A digest window ends on a whole second after it starts: if the timer closed one in
        // this very second, wait for the next (briefly, in case the clock is a test's) so the
        // files delivered here still get their digest now.
        let waited = std::time::Instant::now();
        let now = loop {
            let now = whole_seconds(self.clock.now());
            let fresh = self
                .lock()
                .chains
                .values()
                .any(|c| c.active && c.window_start >= now);
            if !fresh || waited.elapsed() > std::time::Duration::from_millis(1500) {
                break now;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let mut inner = self.lock();
        let pos = inner.reader.position();
        total.files += self.close_epoch(&mut inner, pos, now)?;
        total.files += self.finish_inflight(&mut inner)?;
        // Chains with files still pending get no digest yet; the others do.
        let pending = pending_windows(&inner);
        let keys: Vec<_> = inner
            .chains
            .iter()
            .filter(|(k, c)| c.active && c.window_start < now && !pending.contains_key(*k))
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            if self.emit_digest(&mut inner, &k, now, None, now)? {
                total.digests += 1;
            }
        }
        self.publish(&inner);
        Ok(total)
    }

    fn route(&self, inner: &mut Inner, h: &EventHeader, json: &[u8], now: DateTime<Utc>) {
        let level = self.opts.gzip_level;
        let buffers = &self.buffers;
        let Inner { trails, open, .. } = inner;
        for (name, st) in trails.iter() {
            if !st.logging
                || !st.config.admits_region(&h.facts)
                || !st.config.selectors.matches(&h.facts)
            {
                continue;
            }
            // Look up without allocating; allocate the keys only for a new file.
            if !open.batches.contains_key(name.as_str()) {
                open.batches.insert(name.clone(), BTreeMap::new());
            }
            let Some(regions) = open.batches.get_mut(name.as_str()) else {
                continue;
            };
            if !regions.contains_key(h.facts.region.as_str()) {
                regions.insert(
                    h.facts.region.clone(),
                    LogFileBuilder::pooled(level, buffers),
                );
            }
            let Some(b) = regions.get_mut(h.facts.region.as_str()) else {
                continue;
            };
            b.push(json, h.time);
            open.bytes += json.len() + 1;
            buffers
                .open
                .store(open.bytes, std::sync::atomic::Ordering::Relaxed);
            open.records += 1;
            if b.raw_len() >= self.opts.max_file_bytes
                || open.bytes >= self.opts.max_epoch_bytes
                || open.records >= self.opts.max_epoch_records
            {
                open.full = true;
            }
            open.opened_at.get_or_insert(now);
        }
    }

    /// Closes the open epoch: fixes its files' keys and snapshots now and compresses them in
    /// the background, so routing goes on meanwhile. The previous in-flight epoch is finished
    /// first (intents and cursors advance in order). Returns files finished by this call.
    fn close_epoch(&self, inner: &mut Inner, seq_to: u64, now: DateTime<Utc>) -> Result<u64> {
        // Buffers that no epoch took while this one was open go.
        self.buffers.age();
        let mut done = self.finish_inflight(inner)?;
        if inner.open.batches.is_empty() {
            inner.open = OpenEpoch::new(seq_to);
            return Ok(done);
        }
        let epoch = inner.epoch;
        let open = std::mem::replace(&mut inner.open, OpenEpoch::new(seq_to));
        self.buffers
            .open
            .store(0, std::sync::atomic::Ordering::Relaxed);
        self.buffers
            .compressing
            .store(open.bytes, std::sync::atomic::Ordering::Relaxed);
        let mut builders = vec![];
        let mut intents = vec![];
        for (trail, regions) in open.batches {
            let Some(st) = inner.trails.get(&trail) else {
                continue;
            };
            let cfg = &st.config;
            for (region, b) in regions {
                let key = names::log_file_key(
                    cfg.prefix(),
                    &cfg.account,
                    &region,
                    now,
                    &names::unique_part(epoch, intents.len() as u32),
                );
                intents.push(FileIntent {
                    trail: trail.clone(),
                    region,
                    bucket: cfg.s3_bucket.clone(),
                    key,
                    sha256: String::new(),
                    snapshot: Snapshot {
                        selectors: cfg.selectors.clone(),
                        scope: cfg.scope(),
                    },
                });
                builders.push(b);
            }
        }
        inner.epoch += 1;
        let intent = EpochIntent {
            epoch,
            seq_from: open.seq_from,
            seq_to,
            delivered_at: now,
            files: intents,
        };
        // Compress and hash every file of the epoch on all cores, in the background.
        let (tx, rx) = std::sync::mpsc::channel();
        rayon::spawn(move || {
            let files: Vec<LogFile> = builders
                .into_par_iter()
                .map(LogFileBuilder::finish)
                .collect();
            let _ = tx.send(files);
        });
        inner.inflight = Some(InFlight { intent, files: rx });
        if open.full {
            // A full epoch means a backlog: finish now rather than let memory grow.
            done += self.finish_inflight(inner)?;
        }
        Ok(done)
    }

    /// Commits the in-flight epoch's intent (with its file hashes and the new cursor), then
    /// writes its files. Returns how many files it wrote.
    fn finish_inflight(&self, inner: &mut Inner) -> Result<u64> {
        self.settle_inflight(inner, true)
    }

    /// As [`Self::finish_inflight`]; without `block`, only if compression has already ended.
    fn settle_inflight(&self, inner: &mut Inner, block: bool) -> Result<u64> {
        let Some(f) = inner.inflight.take() else {
            return Ok(0);
        };
        let received = if block {
            f.files.recv().map_err(|_| ())
        } else {
            match f.files.try_recv() {
                Ok(v) => Ok(v),
                Err(std::sync::mpsc::TryRecvError::Empty) => {
                    inner.inflight = Some(f);
                    return Ok(0);
                }
                Err(std::sync::mpsc::TryRecvError::Disconnected) => Err(()),
            }
        };
        self.buffers
            .compressing
            .store(0, std::sync::atomic::Ordering::Relaxed);
        let files =
            received.map_err(|_| TrailError::Invalid("log file compression failed".into()))?;
        let mut intent = f.intent;
        for (fi, lf) in intent.files.iter_mut().zip(&files) {
            fi.sha256 = lf.sha256.clone();
        }
        let epoch = intent.epoch;
        inner.cursor = intent.seq_to;
        inner.intents.insert(epoch, intent.clone());
        let w = self.db.begin_write().map_err(db_err)?;
        {
            w.open_table(INTENTS)
                .map_err(db_err)?
                .insert(epoch, js(&intent)?.as_slice())
                .map_err(db_err)?;
            let mut m = w.open_table(META).map_err(db_err)?;
            m.insert("cursor", intent.seq_to).map_err(db_err)?;
            m.insert("epoch", inner.epoch).map_err(db_err)?;
        }
        w.commit().map_err(db_err)?;
        crate::failpoint::crash_point("after-intent");
        let n = files.len() as u64;
        let now = self.clock.now();
        self.deliver(inner, &intent, files, now)?;
        Ok(n)
    }

    /// Delivers intents left pending by a crash or a failed write, oldest first.
    fn retry_intents(&self, inner: &mut Inner, now: DateTime<Utc>) -> Result<()> {
        let pending: Vec<EpochIntent> = inner.intents.values().cloned().collect();
        // Each pending intent is tried: one trail's failure does not hold back the others
        // (digests wait per chain for their own pending files).
        for intent in pending {
            let files = self.rebuild(&intent)?;
            self.deliver(inner, &intent, files, now)?;
        }
        Ok(())
    }

    /// Rebuilds an epoch's files from its journal range: the same bytes as the first time.
    fn rebuild(&self, intent: &EpochIntent) -> Result<Vec<LogFile>> {
        let mut builders: Vec<LogFileBuilder> = intent
            .files
            .iter()
            .map(|_| LogFileBuilder::new(self.opts.gzip_level))
            .collect();
        let mut r = self.journal.reader(intent.seq_from)?;
        while r.position() < intent.seq_to {
            let Some((_, bytes)) = r.next_record()? else {
                break;
            };
            if let Entry::Event { header, json } | Entry::Resolved { header, json, .. } =
                entry::decode(&bytes)?
            {
                for (fi, b) in intent.files.iter().zip(builders.iter_mut()) {
                    if fi.region == header.facts.region
                        && fi.snapshot.scope.admits(&header.facts)
                        && fi.snapshot.selectors.matches(&header.facts)
                    {
                        b.push(&json, header.time);
                    }
                }
            }
        }
        let files: Vec<LogFile> = builders
            .into_par_iter()
            .map(LogFileBuilder::finish)
            .collect();
        for (fi, f) in intent.files.iter().zip(&files) {
            if f.sha256 != fi.sha256 {
                return Err(TrailError::Nondeterministic {
                    key: fi.key.clone(),
                    got: f.sha256.clone(),
                    want: fi.sha256.clone(),
                });
            }
        }
        Ok(files)
    }

    /// Writes an epoch's files; on success records them for their digests and drops the
    /// intent. Returns false (intent kept, error recorded in the trail status) on failure.
    fn deliver(
        &self,
        inner: &mut Inner,
        intent: &EpochIntent,
        files: Vec<LogFile>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        // Each file is written on behalf of its trail (bucket policies see the trail's ARN),
        // SSE-KMS under the trail's key when it has one. A file its trail cannot deliver now
        // (its key unusable, the bucket policy refusing) waits in the intent without holding
        // back the other trails' files.
        let opts: Vec<std::result::Result<PutOptions, String>> = intent
            .files
            .iter()
            .map(|fi| {
                let cfg = inner.trails.get(&fi.trail).map(|t| &t.config);
                let mut o = PutOptions {
                    content_type: Some("application/json".into()),
                    content_encoding: Some("gzip".into()),
                    source_arn: cfg.map(|c| c.arn()),
                    ..Default::default()
                };
                let kms_key = cfg.and_then(|c| c.kms_key_id.clone()).or_else(|| {
                    self.opts
                        .bucket_kms
                        .as_ref()
                        .and_then(|h| (h.0)(&fi.bucket))
                });
                if let Some((kms_key, arn)) = kms_key.and_then(|k| cfg.map(|c| (k, c.arn()))) {
                    let hook =
                        self.opts.log_keys.as_ref().ok_or(
                            "KMS.NotFoundException: no key service for this trail's KMS key",
                        )?;
                    let k = hook.0.envelope(&kms_key, &arn, &fi.bucket, &fi.key)?;
                    o.wrapped_key = Some(k.wrapped);
                    o.system.extend(k.system);
                }
                self.guard(std::iter::once((fi.bucket.as_str(), fi.key.as_str(), &o)))
                    .map_err(|e| e.s3_code().to_string())?;
                Ok(o)
            })
            .collect();
        let failed: Vec<usize> = (0..opts.len()).filter(|&i| opts[i].is_err()).collect();
        for &i in &failed {
            let fi = &intent.files[i];
            let e = opts[i].as_ref().err().cloned().unwrap_or_default();
            tracing::warn!(epoch = intent.epoch, trail = %fi.trail, error = %e, "log file not delivered; will retry");
            if let Some(st) = inner.trails.get_mut(&fi.trail) {
                st.latest_delivery_attempt_time = Some(now);
                st.latest_delivery_error = Some(e);
            }
        }
        let ready: Vec<usize> = (0..opts.len()).filter(|&i| opts[i].is_ok()).collect();
        if ready.is_empty() {
            self.save_trails(inner)?;
            return Ok(false);
        }
        let items: Vec<PutItem> = ready
            .iter()
            .filter_map(|&i| {
                let (fi, f) = (&intent.files[i], &files[i]);
                opts[i].as_ref().ok().map(|o| PutItem {
                    bucket: &fi.bucket,
                    key: &fi.key,
                    body: &f.gz,
                    opts: o,
                })
            })
            .collect();
        if let Err(e) = self.store.put_many(&items) {
            tracing::warn!(epoch = intent.epoch, error = %e, "log file delivery failed; will retry");
            for &i in &ready {
                if let Some(st) = inner.trails.get_mut(&intent.files[i].trail) {
                    st.latest_delivery_attempt_time = Some(now);
                    st.latest_delivery_error = Some(e.s3_code().to_string());
                }
            }
            self.save_trails(inner)?;
            return Ok(false);
        }
        crate::failpoint::crash_point("after-log-put");
        for &i in &ready {
            let (fi, f) = (&intent.files[i], &files[i]);
            let df = DeliveredFile {
                bucket: fi.bucket.clone(),
                key: fi.key.clone(),
                sha256: f.sha256.clone(),
                oldest: f.oldest,
                newest: f.newest,
                delivered_at: intent.delivered_at,
            };
            let home_start = inner
                .chains
                .get(&(
                    fi.trail.clone(),
                    inner
                        .trails
                        .get(&fi.trail)
                        .map(|s| s.config.home_region.clone())
                        .unwrap_or_default(),
                ))
                .map(|c| c.window_start);
            if let Some(st) = inner.trails.get_mut(&fi.trail) {
                st.latest_delivery_time = Some(now);
                st.latest_delivery_attempt_time = Some(now);
                st.latest_delivery_error = None;
                if st.logging && st.config.log_file_validation {
                    let chain = inner
                        .chains
                        .entry((fi.trail.clone(), fi.region.clone()))
                        .or_insert_with(|| ChainState {
                            active: true,
                            window_start: home_start.unwrap_or(whole_seconds(intent.delivered_at)),
                            prev: None,
                            previous_chain: None,
                            pending: vec![],
                        });
                    if !chain.active {
                        *chain = ChainState {
                            active: true,
                            window_start: whole_seconds(intent.delivered_at),
                            previous_chain: chain.prev.take(),
                            prev: None,
                            pending: vec![],
                        };
                    }
                    chain.pending.push(df);
                }
            }
        }
        if !failed.is_empty() {
            // The files still to deliver stay in the intent (rebuilt from the same journal
            // range when retried); the delivered ones are done.
            let mut rest = intent.clone();
            rest.files = failed.iter().map(|&i| intent.files[i].clone()).collect();
            let w = self.db.begin_write().map_err(db_err)?;
            w.open_table(INTENTS)
                .map_err(db_err)?
                .insert(rest.epoch, js(&rest)?.as_slice())
                .map_err(db_err)?;
            w.commit().map_err(db_err)?;
            inner.intents.insert(rest.epoch, rest);
            self.save_trails(inner)?;
            return Ok(false);
        }
        tracing::debug!(epoch = intent.epoch, files = files.len(), "delivered epoch");
        inner.intents.remove(&intent.epoch);
        let keep_from = inner
            .intents
            .values()
            .map(|i| i.seq_from)
            .min()
            .unwrap_or(inner.cursor)
            .min(inner.cursor)
            .min(inner.open.seq_from);
        // The journal's copy of the cursor only decides which segments may go (the
        // authoritative one is in the state database), so move it only when that frees one.
        let free = self.journal.would_free_segments(keep_from);
        let mut w = self.db.begin_write().map_err(db_err)?;
        if !free {
            // Losing this commit in a crash only means the intent is still pending at the
            // next start: the same files are rewritten with the same bytes. The next durable
            // commit (the next intent) persists it. Segments a pending intent could need are
            // freed only after a durable commit (below).
            w.set_durability(redb::Durability::None);
        }
        w.open_table(INTENTS)
            .map_err(db_err)?
            .remove(intent.epoch)
            .map_err(db_err)?;
        self.write_state(&w, inner)?;
        w.commit().map_err(db_err)?;
        if free {
            self.journal.commit_cursor(DELIVERY_CONSUMER, keep_from)?;
        }
        Ok(true)
    }

    fn write_state(&self, w: &WriteTransaction, inner: &Inner) -> Result<()> {
        {
            let mut t = w.open_table(TRAILS).map_err(db_err)?;
            let names: Vec<String> = t
                .iter()
                .map_err(db_err)?
                .filter_map(|i| i.ok().map(|(k, _)| k.value().to_string()))
                .collect();
            for n in names {
                if !inner.trails.contains_key(&n) {
                    t.remove(n.as_str()).map_err(db_err)?;
                }
            }
            for (name, st) in &inner.trails {
                t.insert(name.as_str(), js(st)?.as_slice())
                    .map_err(db_err)?;
            }
        }
        {
            let mut t = w.open_table(CHAINS).map_err(db_err)?;
            for ((tr, reg), c) in &inner.chains {
                t.insert((tr.as_str(), reg.as_str()), js(c)?.as_slice())
                    .map_err(db_err)?;
            }
        }
        let mut m = w.open_table(META).map_err(db_err)?;
        m.insert("cursor", inner.cursor).map_err(db_err)?;
        m.insert("epoch", inner.epoch).map_err(db_err)?;
        Ok(())
    }

    fn save_trails(&self, inner: &Inner) -> Result<()> {
        let w = self.db.begin_write().map_err(db_err)?;
        self.write_state(&w, inner)?;
        w.commit().map_err(db_err)
    }

    /// Saves state that a crash may roll back without harm (re-derived identically from the
    /// durable state and the journal): digest-chain advances and status fields. Made
    /// durable by the next durable commit.
    fn save_trails_lazily(&self, inner: &Inner) -> Result<()> {
        let mut w = self.db.begin_write().map_err(db_err)?;
        w.set_durability(redb::Durability::None);
        self.write_state(&w, inner)?;
        w.commit().map_err(db_err)
    }

    fn regions_of(&self, cfg: &TrailConfig) -> Vec<String> {
        let mut r = vec![cfg.home_region.clone()];
        if cfg.multi_region {
            r.extend(self.opts.regions.iter().cloned());
            if cfg.include_global_service_events {
                r.push("us-east-1".into());
            }
        }
        r.sort();
        r.dedup();
        r
    }

    /// Applies a trail command at journal position `seq`. Returns digests written.
    fn apply(
        &self,
        inner: &mut Inner,
        seq: u64,
        cmd: TrailCommand,
        now: DateTime<Utc>,
    ) -> Result<u64> {
        // Everything before the command must be durable before the command moves the cursor
        // past it or ends a chain.
        self.finish_inflight(inner)?;
        let mut digests = 0;
        let start = whole_seconds(now);
        match cmd {
            TrailCommand::Put { config, .. } => {
                let name = config.name.clone();
                let st = inner
                    .trails
                    .entry(name.clone())
                    .or_insert_with(|| TrailState::new(config.clone()));
                let was_validating = st.logging && st.config.log_file_validation;
                st.config = config;
                let logging = st.logging;
                let validating = logging && st.config.log_file_validation;
                let regions = self.regions_of(&st.config);
                if was_validating && !validating {
                    digests += self.end_chains(inner, &name, now, "LogFileValidationDisabled")?;
                } else if validating {
                    self.start_chains(inner, &name, &regions, start);
                }
            }
            TrailCommand::StartLogging { name, at } => {
                if let Some(st) = inner.trails.get_mut(&name) {
                    if !st.logging {
                        st.logging = true;
                        st.start_logging_time = Some(at);
                        if st.config.log_file_validation {
                            let regions = self.regions_of(&st.config);
                            self.start_chains(inner, &name, &regions, start);
                        }
                    }
                }
            }
            TrailCommand::StopLogging { name, at } => {
                if inner.trails.get(&name).is_some_and(|s| s.logging) {
                    digests += self.end_chains(inner, &name, now, "StopLogging")?;
                    if let Some(st) = inner.trails.get_mut(&name) {
                        st.logging = false;
                        st.stop_logging_time = Some(at);
                    }
                }
            }
            TrailCommand::Delete { name, .. } => {
                if inner.trails.get(&name).is_some_and(|s| s.logging) {
                    digests += self.end_chains(inner, &name, now, "DeleteTrail")?;
                }
                inner.trails.remove(&name);
                let gone: Vec<_> = inner
                    .chains
                    .keys()
                    .filter(|k| k.0 == name)
                    .cloned()
                    .collect();
                let w = self.db.begin_write().map_err(db_err)?;
                {
                    let mut t = w.open_table(CHAINS).map_err(db_err)?;
                    for k in &gone {
                        t.remove((k.0.as_str(), k.1.as_str())).map_err(db_err)?;
                        inner.chains.remove(k);
                    }
                }
                w.commit().map_err(db_err)?;
            }
        }
        inner.cursor = seq + 1;
        inner.open.seq_from = seq + 1;
        self.save_trails(inner)?;
        Ok(digests)
    }

    fn start_chains(
        &self,
        inner: &mut Inner,
        name: &str,
        regions: &[String],
        start: DateTime<Utc>,
    ) {
        for region in regions {
            let c = inner
                .chains
                .entry((name.to_string(), region.clone()))
                .or_insert_with(|| ChainState {
                    active: false,
                    window_start: start,
                    prev: None,
                    previous_chain: None,
                    pending: vec![],
                });
            if !c.active {
                *c = ChainState {
                    active: true,
                    window_start: start,
                    previous_chain: c.prev.take(),
                    prev: None,
                    pending: vec![],
                };
            }
        }
    }

    /// Final digests for every chain of a trail; the chains end.
    fn end_chains(
        &self,
        inner: &mut Inner,
        name: &str,
        now: DateTime<Utc>,
        why: &str,
    ) -> Result<u64> {
        let mut n = 0;
        let end = whole_seconds(now);
        let keys: Vec<_> = inner
            .chains
            .iter()
            .filter(|(k, c)| k.0 == name && c.active)
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            let c = &inner.chains[&k];
            if c.window_start < end || !c.pending.is_empty() {
                let end = end.max(c.window_start + Duration::seconds(1));
                if self.emit_digest(inner, &k, end, Some(why), now)? {
                    n += 1;
                }
            }
            if let Some(c) = inner.chains.get_mut(&k) {
                c.active = false;
            }
        }
        Ok(n)
    }

    fn emit_due_digests(&self, inner: &mut Inner, now: DateTime<Utc>) -> Result<u64> {
        let mut n = 0;
        let due = inner
            .chains
            .values()
            .any(|c| c.active && c.window_start + self.opts.digest_interval <= now);
        if due {
            // The in-flight epoch may belong in a window about to close.
            self.finish_inflight(inner)?;
        }
        let pending = pending_windows(inner);
        let keys: Vec<_> = inner
            .chains
            .iter()
            .filter(|(_, c)| c.active)
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            while let Some(c) = inner.chains.get(&k) {
                let end = c.window_start + self.opts.digest_interval;
                // A digest is written only after every file delivered in its window is stored.
                if end > now || pending.get(&k).is_some_and(|p| *p < end) {
                    break;
                }
                if !self.emit_digest(inner, &k, end, None, now)? {
                    break;
                }
                n += 1;
            }
        }
        Ok(n)
    }

    /// Writes the digest of `key`'s chain for the window ending at `end`. Returns false when
    /// the write failed (recorded in the trail status; retried later).
    fn emit_digest(
        &self,
        inner: &mut Inner,
        k: &(String, String),
        end: DateTime<Utc>,
        why: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let Some(st) = inner.trails.get(&k.0) else {
            return Ok(false);
        };
        let Some(chain) = inner.chains.get(k) else {
            return Ok(false);
        };
        let cfg = &st.config;
        let files: Vec<DeliveredFile> = chain
            .pending
            .iter()
            .filter(|f| why.is_some() || f.delivered_at < end)
            .cloned()
            .collect();
        let key = names::digest_key(
            cfg.prefix(),
            &cfg.account,
            &k.1,
            &cfg.name,
            &cfg.home_region,
            end,
        );
        let (fp, kp) = self.keys.signing_key(&k.1, end)?;
        let previous_chain = if chain.prev.is_none() {
            chain.previous_chain.as_ref()
        } else {
            None
        };
        let chain_event = why.or(if chain.prev.is_none() && previous_chain.is_some() {
            Some("StartLogging")
        } else {
            None
        });
        let json = digest_json(&DigestInput {
            account: &cfg.account,
            bucket: &cfg.s3_bucket,
            key: &key,
            start: chain.window_start,
            end,
            fingerprint: &fp,
            previous: chain.prev.as_ref(),
            files: &files,
            previous_chain,
            chain_event,
        });
        let hash = sha256_hex(&json);
        let sts = signing_string(
            &iso(end),
            &cfg.s3_bucket,
            &key,
            &hash,
            chain.prev.as_ref().map(|p| p.signature.as_str()),
        );
        let sig = sign_hex(&kp, sts.as_bytes())?;
        let gz = crate::logfile::gzip(&json, 6);
        let mut opts = PutOptions {
            content_type: Some("application/json".into()),
            content_encoding: Some("gzip".into()),
            source_arn: Some(cfg.arn()),
            ..Default::default()
        };
        opts.metadata.insert("signature".into(), sig.clone());
        opts.metadata
            .insert("signature-algorithm".into(), "SHA256withRSA".into());
        let bucket = cfg.s3_bucket.clone();
        let delivered = self
            .guard(std::iter::once((bucket.as_str(), key.as_str(), &opts)))
            .and_then(|_| self.store.put(&bucket, &key, &gz, &opts));
        if let Err(e) = delivered {
            tracing::warn!(trail = %k.0, region = %k.1, error = %e, "digest delivery failed; will retry");
            if let Some(st) = inner.trails.get_mut(&k.0) {
                st.latest_digest_delivery_error = Some(e.s3_code().to_string());
            }
            self.save_trails(inner)?;
            return Ok(false);
        }
        crate::failpoint::crash_point("after-digest-put");
        if let Some(c) = inner.chains.get_mut(k) {
            c.prev = Some(DigestLink {
                bucket,
                key,
                sha256: hash,
                signature: sig,
            });
            c.previous_chain = None;
            c.window_start = end;
            c.pending.retain(|f| why.is_none() && f.delivered_at >= end);
        }
        if let Some(st) = inner.trails.get_mut(&k.0) {
            st.latest_digest_delivery_time = Some(now);
            st.latest_digest_delivery_error = None;
        }
        // A crash losing this re-emits the same digest (same window, files, link, key).
        self.save_trails_lazily(inner)?;
        Ok(true)
    }

    /// Every trail's state as of the last pump.
    pub fn trails(&self) -> Vec<TrailState> {
        self.snapshot().1.values().cloned().collect()
    }

    /// Every trail's state together with the journal position it reflects: every command
    /// below the position has been applied, none at or after it.
    pub fn trails_at(&self) -> (u64, Vec<TrailState>) {
        let (pos, trails) = self.snapshot();
        (pos, trails.values().cloned().collect())
    }

    pub fn trail(&self, name: &str) -> Option<TrailState> {
        self.snapshot().1.get(name).cloned()
    }

    fn snapshot(&self) -> (u64, Arc<BTreeMap<String, TrailState>>) {
        self.published
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// ListPublicKeys for `region`.
    pub fn public_keys(&self, w: &KeyWindow) -> Result<Vec<PublicKeyInfo>> {
        self.keys.public_keys(w)
    }

    /// How many deliveries interrupted by a crash this engine finished when it opened.
    pub fn recovered_deliveries(&self) -> usize {
        self.recovered
    }

    /// What delivery holds: the uncompressed records of the open epoch and of the one being
    /// compressed (each bounded by [`EngineOptions::max_epoch_bytes`]), and the capacity of
    /// the file buffers kept for the next files.
    pub fn buffered_bytes(&self) -> usize {
        self.buffers.held_bytes()
    }

    /// Journal position up to which delivery has consumed (and whose effects [`TrailEngine::trail`]
    /// shows).
    pub fn position(&self) -> u64 {
        self.snapshot().0
    }

    /// Pumps until every record below `seq` has been applied (read-your-writes for commands).
    pub fn apply_through(&self, seq: u64) -> Result<()> {
        while self.position() <= seq {
            self.pump()?;
        }
        Ok(())
    }
}
