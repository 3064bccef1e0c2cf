//! Event history for LookupEvents: a journal consumer that indexes events by region and time
//! (newest first) and by each of the eight lookup attributes.
//!
//! The index and its journal position commit in one database transaction, so after a crash
//! the consumer resumes exactly where the index stops (re-indexing is idempotent anyway:
//! keys are derived from the journal sequence number). The journal cursor is committed
//! lazily and only lets the journal drop segments the index has passed.

use crate::protocol::ApiError;
use cairn_journal::Journal;
use cairn_record::EventRecord;
use cairn_trail::entry::{self, Entry};
use chrono::{DateTime, TimeZone, Utc};
use redb::{Database, ReadableTable, TableDefinition};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

pub const CONSUMER: &str = "history";

/// key: partition ‖ 0 ‖ newest-first time (u64 BE) ‖ seq (u64 BE) → the record JSON.
const EVENTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("events");
/// key: partition ‖ 0 ‖ attribute ‖ value ‖ 0 ‖ newest-first time ‖ seq → ().
const ATTRS: TableDefinition<&[u8], ()> = TableDefinition::new("attrs");
const STATE: TableDefinition<&str, u64> = TableDefinition::new("state");

/// The lookup attribute keys, in botocore's enum spelling.
pub const ATTRIBUTE_KEYS: [&str; 8] = [
    "EventId",
    "EventName",
    "ReadOnly",
    "Username",
    "ResourceType",
    "ResourceName",
    "EventSource",
    "AccessKeyId",
];

fn rev(ms: i64) -> u64 {
    u64::MAX - ms.max(0) as u64
}

/// The partition of an event: its region, with data events apart (they are opt-in).
fn partition(region: &str, data: bool) -> String {
    if data {
        format!("{region}#data")
    } else {
        region.to_string()
    }
}

fn event_key(part: &str, t: u64, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(part.len() + 17);
    k.extend_from_slice(part.as_bytes());
    k.push(0);
    k.extend_from_slice(&t.to_be_bytes());
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn attr_prefix(part: &str, attr: u8, value: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(part.len() + value.len() + 20);
    k.extend_from_slice(part.as_bytes());
    k.push(0);
    k.push(attr);
    k.extend_from_slice(value.as_bytes());
    k.push(0);
    k
}

fn attr_key(part: &str, attr: u8, value: &str, t: u64, seq: u64) -> Vec<u8> {
    let mut k = attr_prefix(part, attr, value);
    k.extend_from_slice(&t.to_be_bytes());
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// The (time, seq) suffix of an index key.
fn tail(key: &[u8]) -> (u64, u64) {
    let n = key.len();
    let b = |r: std::ops::Range<usize>| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&key[r]);
        u64::from_be_bytes(a)
    };
    (b(n - 16..n - 8), b(n - 8..n))
}

/// The few record fields the index needs beyond the journal entry's header; the rest of the
/// record is skipped, not parsed.
#[derive(serde::Deserialize)]
struct Lite<'a> {
    #[serde(rename = "eventID", borrow)]
    event_id: std::borrow::Cow<'a, str>,
    #[serde(rename = "userIdentity", borrow, default)]
    user_identity: Option<LiteIdentity<'a>>,
}

#[derive(serde::Deserialize)]
struct LiteIdentity<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(rename = "accessKeyId", borrow, default)]
    access_key_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(rename = "userName", borrow, default)]
    user_name: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    arn: Option<std::borrow::Cow<'a, str>>,
}

/// What LookupEvents reports as `Username`: `root` for the root user, the user name, or the
/// session name of an assumed role.
fn lookup_username(kind: &str, user_name: Option<&str>, arn: Option<&str>) -> Option<String> {
    match kind {
        "Root" => Some("root".into()),
        "AssumedRole" => arn.and_then(|a| a.rsplit('/').next()).map(str::to_string),
        _ => user_name
            .map(str::to_string)
            .or_else(|| arn.and_then(|a| a.rsplit('/').next()).map(str::to_string)),
    }
}

/// The attribute values an event is indexed under.
fn attributes(header: &entry::EventHeader, lite: &Lite) -> Vec<(u8, String)> {
    let f = &header.facts;
    let mut attrs = vec![
        (0u8, lite.event_id.to_string()),
        (1, f.name.clone()),
        (6, f.source.clone()),
    ];
    // ReadOnly (two values) is answered by filtering the time index, not indexed.
    if let Some(id) = &lite.user_identity {
        if let Some(u) = lookup_username(&id.kind, id.user_name.as_deref(), id.arn.as_deref()) {
            attrs.push((3, u));
        }
        if let Some(a) = &id.access_key_id {
            attrs.push((7, a.to_string()));
        }
    }
    for (ty, name, _) in &f.resources {
        attrs.push((4, ty.clone()));
        attrs.push((5, name.clone()));
    }
    attrs.sort();
    attrs.dedup();
    // NUL separates key parts; a value containing it is not indexed (nor can it be asked for).
    attrs.retain(|(_, v)| !v.as_bytes().contains(&0));
    attrs
}

/// The `Event` shape of LookupEvents for a stored record.
fn lookup_event(json: &[u8]) -> Option<Value> {
    let rec: EventRecord = serde_json::from_slice(json).ok()?;
    let id = rec.user_identity.as_ref();
    let mut ev = serde_json::Map::new();
    ev.insert("EventId".into(), json!(rec.event_id));
    ev.insert("EventName".into(), json!(rec.event_name));
    if let Some(ro) = rec.read_only {
        ev.insert("ReadOnly".into(), json!(ro.to_string()));
    }
    if let Some(a) = id.and_then(|i| i.access_key_id.clone()) {
        ev.insert("AccessKeyId".into(), json!(a));
    }
    ev.insert("EventTime".into(), json!(rec.event_time.timestamp()));
    ev.insert("EventSource".into(), json!(rec.event_source));
    if let Some(u) =
        id.and_then(|i| lookup_username(&i.identity_type, i.user_name.as_deref(), i.arn.as_deref()))
    {
        ev.insert("Username".into(), json!(u));
    }
    let resources: Vec<Value> = rec
        .resources
        .iter()
        .flatten()
        .map(|r| {
            json!({"ResourceType": r.resource_type, "ResourceName": r.arn.clone().or_else(|| r.arn_prefix.clone())})
        })
        .collect();
    ev.insert("Resources".into(), Value::Array(resources));
    ev.insert(
        "CloudTrailEvent".into(),
        json!(String::from_utf8_lossy(json)),
    );
    Some(Value::Object(ev))
}

/// `"true"`/`"false"` from a stored record's `readOnly`.
fn read_only_of(json: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Ro {
        #[serde(rename = "readOnly", default)]
        read_only: Option<bool>,
    }
    serde_json::from_slice::<Ro>(json)
        .ok()?
        .read_only
        .map(|b| b.to_string())
}

/// The attribute values of a stored record (for AND filters and pruning).
fn stored_attributes(json: &[u8]) -> Vec<(u8, String)> {
    let Ok(rec) = serde_json::from_slice::<EventRecord>(json) else {
        return Vec::new();
    };
    let header = entry::EventHeader {
        facts: cairn_record::selector::EventFacts::from(&rec),
        time: rec.event_time.timestamp(),
    };
    let Ok(lite) = serde_json::from_slice::<Lite>(json) else {
        return Vec::new();
    };
    attributes(&header, &lite)
}

pub struct History {
    db: Database,
    journal: Arc<Journal>,
    /// Kept between steps: opening a reader seeks through its segment.
    reader: std::sync::Mutex<Option<cairn_journal::JournalReader>>,
    /// Position of the last commit known to be on disk (the journal cursor may move up to it).
    durable_position: AtomicU64,
    last_durable: std::sync::Mutex<std::time::Instant>,
    force_durable: AtomicBool,
    /// Set by readers that wait for fresh events; wakes the indexer early.
    nudge: (std::sync::Mutex<bool>, std::sync::Condvar),
    position: AtomicU64,
    watch: tokio::sync::watch::Sender<u64>,
    stop: AtomicBool,
    /// Whether data events are indexed (only LookupEvents' documented extension reads them;
    /// without it they would cost index writes no query can use).
    index_data: AtomicBool,
}

/// A page of `Event` values and, when more remain, the position after the last one.
pub type Page = (Vec<Value>, Option<(u64, u64)>);

/// One LookupEvents query, validated.
#[derive(Debug, Clone)]
pub struct Query {
    pub region: String,
    pub attributes: Vec<(u8, String)>,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub max_results: usize,
    pub data_events: bool,
    /// Position after which to continue: (newest-first time, seq).
    pub after: Option<(u64, u64)>,
}

impl Query {
    /// A digest of everything but the page position: a NextToken is only valid for the query
    /// that produced it.
    pub fn fingerprint(&self, raw_start: &str, raw_end: &str) -> String {
        let mut h = Sha256::new();
        h.update(self.region.as_bytes());
        for (k, v) in &self.attributes {
            h.update([0, *k]);
            h.update(v.as_bytes());
        }
        h.update([1]);
        h.update(raw_start.as_bytes());
        h.update([2]);
        h.update(raw_end.as_bytes());
        h.update([self.data_events as u8, self.max_results as u8]);
        hex::encode(&h.finalize()[..12])
    }
}

impl History {
    pub fn open(path: &Path, journal: Arc<Journal>) -> Result<Arc<History>, String> {
        let db = cairn_db::create(path).map_err(|e| e.to_string())?;
        let mut start = {
            let tx = db.begin_write().map_err(|e| e.to_string())?;
            let pos = {
                tx.open_table(EVENTS).map_err(|e| e.to_string())?;
                tx.open_table(ATTRS).map_err(|e| e.to_string())?;
                let t = tx.open_table(STATE).map_err(|e| e.to_string())?;
                let p = t
                    .get("position")
                    .map_err(|e| e.to_string())?
                    .map(|v| v.value());
                p
            };
            tx.commit().map_err(|e| e.to_string())?;
            pos
        };
        let registered = journal
            .register_consumer(CONSUMER)
            .map_err(|e| e.to_string())?;
        if start.is_none() {
            start = Some(registered);
        }
        let start = start.unwrap_or(registered).max(registered);
        let (watch, _) = tokio::sync::watch::channel(start);
        Ok(Arc::new(History {
            db,
            journal,
            reader: std::sync::Mutex::new(None),
            durable_position: AtomicU64::new(start),
            // The first commit after opening is durable: a server that lives only moments
            // (crash loops) still saves what it indexed, instead of re-indexing from the same
            // point at every start while the journal holds everything since.
            last_durable: std::sync::Mutex::new(
                std::time::Instant::now()
                    .checked_sub(std::time::Duration::from_secs(60))
                    .unwrap_or_else(std::time::Instant::now),
            ),
            force_durable: AtomicBool::new(false),
            nudge: (std::sync::Mutex::new(false), std::sync::Condvar::new()),
            position: AtomicU64::new(start),
            watch,
            stop: AtomicBool::new(false),
            index_data: AtomicBool::new(true),
        }))
    }

    /// Whether data events are indexed from now on (`ApiOptions::lookup_extensions`; data
    /// events recorded while it was off are not searchable when it is turned on).
    pub fn set_index_data(&self, on: bool) {
        self.index_data.store(on, Ordering::Release);
    }

    /// Journal position the index has consumed.
    pub fn position(&self) -> u64 {
        self.position.load(Ordering::Acquire)
    }

    /// Indexes what the journal holds beyond the current position (at most `max` records).
    /// Returns the number of records consumed.
    pub fn step(&self, max: usize) -> Result<usize, String> {
        let from = self.position();
        let mut slot = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        if slot.as_ref().map(|r| r.position()) != Some(from) {
            *slot = Some(self.journal.reader(from).map_err(|e| e.to_string())?);
        }
        let Some(reader) = slot.as_mut() else {
            return Ok(0);
        };
        let mut tx = self.db.begin_write().map_err(|e| e.to_string())?;
        // Most commits skip the fsync: a crash loses only index entries the journal still
        // holds (its cursor moves only to positions committed durably), and they are re-indexed.
        let durable = {
            let mut last = self.last_durable.lock().unwrap_or_else(|e| e.into_inner());
            if last.elapsed() >= std::time::Duration::from_secs(2)
                || self.force_durable.swap(false, Ordering::AcqRel)
            {
                *last = std::time::Instant::now();
                true
            } else {
                false
            }
        };
        if !durable {
            tx.set_durability(redb::Durability::None);
        }
        let mut n = 0;
        let index_data = self.index_data.load(Ordering::Acquire);
        {
            let mut events = tx.open_table(EVENTS).map_err(|e| e.to_string())?;
            let mut attrs = tx.open_table(ATTRS).map_err(|e| e.to_string())?;
            while n < max {
                let Some((seq, bytes)) = reader.next_record().map_err(|e| e.to_string())? else {
                    break;
                };
                n += 1;
                let Ok(Entry::Event { header, json } | Entry::Resolved { header, json, .. }) =
                    entry::decode(&bytes)
                else {
                    continue;
                };
                let data = header.facts.category == cairn_record::record::category::DATA;
                if !(data && index_data
                    || header.facts.category == cairn_record::record::category::MANAGEMENT)
                {
                    continue;
                }
                let Ok(lite) = serde_json::from_slice::<Lite>(&json) else {
                    continue;
                };
                let part = partition(&header.facts.region, data);
                let t = rev(header.time * 1000);
                events
                    .insert(event_key(&part, t, seq).as_slice(), json.as_slice())
                    .map_err(|e| e.to_string())?;
                for (k, v) in attributes(&header, &lite) {
                    attrs
                        .insert(attr_key(&part, k, &v, t, seq).as_slice(), ())
                        .map_err(|e| e.to_string())?;
                }
            }
            let mut st = tx.open_table(STATE).map_err(|e| e.to_string())?;
            st.insert("position", reader.position())
                .map_err(|e| e.to_string())?;
        }
        // Nothing new since the last durable commit: no commit, no cursor to move.
        if n == 0
            && (!durable || reader.position() == self.durable_position.load(Ordering::Acquire))
        {
            tx.abort().map_err(|e| e.to_string())?;
            return Ok(0);
        }
        tx.commit().map_err(|e| e.to_string())?;
        let pos = reader.position();
        if durable {
            self.durable_position.store(pos, Ordering::Release);
            // Durable in the index: the journal may drop what lies below.
            if let Err(e) = self.journal.commit_cursor(CONSUMER, pos) {
                tracing::warn!(error = %e, "committing the history cursor failed");
            }
        }
        self.position.store(pos, Ordering::Release);
        self.watch.send_replace(pos);
        Ok(n)
    }

    /// Runs the indexer on its own thread until [`History::stop`].
    pub fn spawn(self: &Arc<Self>) -> std::thread::JoinHandle<()> {
        let h = self.clone();
        std::thread::Builder::new()
            .name("history-index".into())
            .spawn(move || {
                while !h.stop.load(Ordering::Acquire) {
                    match h.step(50_000) {
                        // Index in batches: a larger transaction amortises the B-tree work.
                        // A LookupEvents waiting for fresh events nudges the thread awake.
                        Ok(n) if n < 50_000 => h.nap(std::time::Duration::from_millis(250)),
                        Ok(_) => {}
                        Err(e) => {
                            tracing::error!(error = %e, "event history indexing failed; retrying");
                            std::thread::sleep(std::time::Duration::from_millis(500));
                        }
                    }
                }
                // One last durable commit, then the cursor may move to it.
                h.force_durable.store(true, Ordering::Release);
                let _ = h.step(0);
                let _ = h
                    .journal
                    .commit_cursor(CONSUMER, h.durable_position.load(Ordering::Acquire));
            })
            .unwrap_or_else(|_| std::thread::spawn(|| {}))
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.wake();
    }

    fn wake(&self) {
        *self.nudge.0.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.nudge.1.notify_one();
    }

    /// Sleeps up to `d`, or until nudged.
    fn nap(&self, d: std::time::Duration) {
        let g = self.nudge.0.lock().unwrap_or_else(|e| e.into_inner());
        let (mut g, _) = self
            .nudge
            .1
            .wait_timeout_while(g, d, |nudged| !*nudged)
            .unwrap_or_else(|e| e.into_inner());
        *g = false;
    }

    /// Waits (up to `timeout`) until every record below `seq` is indexed.
    pub async fn caught_up(&self, seq: u64, timeout: std::time::Duration) {
        let mut rx = self.watch.subscribe();
        if self.position() < seq {
            self.wake();
        }
        let _ = tokio::time::timeout(timeout, rx.wait_for(|p| *p >= seq)).await;
    }

    /// Runs `q`; returns the page of `Event` JSON values and the position after the last one
    /// when more remain.
    pub fn lookup(&self, q: &Query) -> Result<Page, ApiError> {
        let tx = self.db.begin_read().map_err(ApiError::internal)?;
        let events = tx.open_table(EVENTS).map_err(ApiError::internal)?;
        let part = partition(&q.region, q.data_events);
        // Newest first: the scan runs from the end time (inclusive, to the last millisecond
        // of its second) towards the start time.
        let lo_t = rev(q.end.timestamp_millis() + 999);
        let hi_t = rev(q.start.timestamp_millis());
        let (from_t, from_seq) = match q.after {
            Some((t, s)) => (t, s.saturating_add(1)),
            None => (lo_t, 0),
        };
        let mut out = Vec::new();
        let mut last = None;
        let mut more = false;
        // ReadOnly is not indexed: it and any further attributes (AND, an opt-in extension)
        // filter the hits of the first indexed attribute, or of the time index.
        let mut indexed: Option<&(u8, String)> = q.attributes.iter().find(|(k, _)| *k != 2);
        let filters: Vec<&(u8, String)> = q
            .attributes
            .iter()
            .filter(|a| Some(*a) != indexed)
            .collect();
        let mut take = |json: &[u8], t: u64, s: u64| -> bool {
            if !filters.is_empty() {
                let have = stored_attributes(json);
                let ok = filters.iter().all(|(k, v)| {
                    if *k == 2 {
                        read_only_of(json).as_deref() == Some(v.as_str())
                    } else {
                        have.iter().any(|(hk, hv)| hk == k && hv == v)
                    }
                });
                if !ok {
                    return true;
                }
            }
            if out.len() == q.max_results {
                more = true;
                return false;
            }
            if let Some(ev) = lookup_event(json) {
                out.push(ev);
                last = Some((t, s));
            }
            true
        };
        match indexed.take() {
            None => {
                let lo = event_key(&part, from_t, from_seq);
                let hi = event_key(&part, hi_t, u64::MAX);
                for row in events
                    .range(lo.as_slice()..=hi.as_slice())
                    .map_err(ApiError::internal)?
                {
                    let (k, v) = row.map_err(ApiError::internal)?;
                    let (t, s) = tail(k.value());
                    if !take(v.value(), t, s) {
                        break;
                    }
                }
            }
            Some((attr, value)) => {
                let attrs = tx.open_table(ATTRS).map_err(ApiError::internal)?;
                let mut lo = attr_prefix(&part, *attr, value);
                let mut hi = lo.clone();
                lo.extend_from_slice(&from_t.to_be_bytes());
                lo.extend_from_slice(&from_seq.to_be_bytes());
                hi.extend_from_slice(&hi_t.to_be_bytes());
                hi.extend_from_slice(&u64::MAX.to_be_bytes());
                for row in attrs
                    .range(lo.as_slice()..=hi.as_slice())
                    .map_err(ApiError::internal)?
                {
                    let (k, _) = row.map_err(ApiError::internal)?;
                    let (t, s) = tail(k.value());
                    let Some(v) = events
                        .get(event_key(&part, t, s).as_slice())
                        .map_err(ApiError::internal)?
                    else {
                        continue;
                    };
                    if !take(v.value(), t, s) {
                        break;
                    }
                }
            }
        }
        Ok((out, if more { last } else { None }))
    }

    /// Drops events older than `before` (retention).
    pub fn prune(&self, regions: &[String], before: DateTime<Utc>) -> Result<usize, String> {
        let cut = rev(before.timestamp_millis());
        let tx = self.db.begin_write().map_err(|e| e.to_string())?;
        let mut n = 0;
        {
            let mut events = tx.open_table(EVENTS).map_err(|e| e.to_string())?;
            let mut attrs = tx.open_table(ATTRS).map_err(|e| e.to_string())?;
            for r in regions {
                for data in [false, true] {
                    let part = partition(r, data);
                    let lo = event_key(&part, cut, 0);
                    let hi = event_key(&part, u64::MAX, u64::MAX);
                    let old: Vec<(Vec<u8>, Vec<u8>)> = events
                        .range(lo.as_slice()..=hi.as_slice())
                        .map_err(|e| e.to_string())?
                        .filter_map(|row| row.ok())
                        .map(|(k, v)| (k.value().to_vec(), v.value().to_vec()))
                        .collect();
                    for (k, json) in old {
                        let (t, s) = tail(&k);
                        for (a, v) in stored_attributes(&json) {
                            attrs
                                .remove(attr_key(&part, a, &v, t, s).as_slice())
                                .map_err(|e| e.to_string())?;
                        }
                        events.remove(k.as_slice()).map_err(|e| e.to_string())?;
                        n += 1;
                    }
                }
            }
        }
        tx.commit().map_err(|e| e.to_string())?;
        Ok(n)
    }
}

/// Epoch seconds → time (for tokens and tests).
pub fn from_epoch(s: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(s, 0).single().unwrap_or_default()
}
