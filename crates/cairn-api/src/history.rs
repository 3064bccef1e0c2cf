//! Event history for LookupEvents: a journal consumer that indexes events by region and time
//! (newest first) and by each of the eight lookup attributes.
//!
//! The index and its journal position commit in one database transaction, so after a crash
//! the consumer resumes exactly where the index stops (re-indexing is idempotent anyway:
//! keys are derived from the journal sequence number). The journal cursor is committed
//! lazily and only lets the journal drop segments the index has passed.

use crate::wire::ApiError;
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

/// (partition, newest-first time, seq) → the LookupEvents `Event` JSON.
const EVENTS: TableDefinition<(&str, u64, u64), &[u8]> = TableDefinition::new("events");
/// (partition, attribute, value, newest-first time, seq) → ().
const ATTRS: TableDefinition<(&str, u8, &str, u64, u64), u8> = TableDefinition::new("attrs");
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

/// What LookupEvents reports as `Username`.
fn username(rec: &EventRecord) -> Option<String> {
    let id = rec.user_identity.as_ref()?;
    match id.identity_type.as_str() {
        "Root" => Some("root".into()),
        "IAMUser" => id.user_name.clone(),
        "AssumedRole" => id
            .arn
            .as_deref()
            .and_then(|a| a.rsplit('/').next())
            .map(str::to_string),
        _ => id.user_name.clone(),
    }
}

/// The `Event` shape of LookupEvents, and the attribute values to index.
fn lookup_event(rec: &EventRecord, json: &[u8]) -> (Value, Vec<(u8, String)>) {
    let mut attrs = vec![
        (0u8, rec.event_id.clone()),
        (1, rec.event_name.clone()),
        (6, rec.event_source.clone()),
    ];
    if let Some(ro) = rec.read_only {
        attrs.push((2, ro.to_string()));
    }
    let user = username(rec);
    if let Some(u) = &user {
        attrs.push((3, u.clone()));
    }
    let akid = rec
        .user_identity
        .as_ref()
        .and_then(|i| i.access_key_id.clone());
    if let Some(a) = &akid {
        attrs.push((7, a.clone()));
    }
    let mut resources = Vec::new();
    for r in rec.resources.iter().flatten() {
        let name = r.arn.clone().or_else(|| r.arn_prefix.clone());
        attrs.push((4, r.resource_type.clone()));
        if let Some(n) = &name {
            attrs.push((5, n.clone()));
        }
        resources.push(json!({"ResourceType": r.resource_type, "ResourceName": name}));
    }
    let mut ev = serde_json::Map::new();
    ev.insert("EventId".into(), json!(rec.event_id));
    ev.insert("EventName".into(), json!(rec.event_name));
    if let Some(ro) = rec.read_only {
        ev.insert("ReadOnly".into(), json!(ro.to_string()));
    }
    if let Some(a) = akid {
        ev.insert("AccessKeyId".into(), json!(a));
    }
    ev.insert("EventTime".into(), json!(rec.event_time.timestamp()));
    ev.insert("EventSource".into(), json!(rec.event_source));
    if let Some(u) = user {
        ev.insert("Username".into(), json!(u));
    }
    ev.insert("Resources".into(), Value::Array(resources));
    ev.insert(
        "CloudTrailEvent".into(),
        json!(String::from_utf8_lossy(json)),
    );
    (Value::Object(ev), attrs)
}

pub struct History {
    db: Database,
    journal: Arc<Journal>,
    position: AtomicU64,
    watch: tokio::sync::watch::Sender<u64>,
    stop: AtomicBool,
}

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
        let db = Database::create(path).map_err(|e| e.to_string())?;
        let mut start = {
            let tx = db.begin_write().map_err(|e| e.to_string())?;
            let pos = {
                tx.open_table(EVENTS).map_err(|e| e.to_string())?;
                tx.open_table(ATTRS).map_err(|e| e.to_string())?;
                let t = tx.open_table(STATE).map_err(|e| e.to_string())?;
                let p = t.get("position").map_err(|e| e.to_string())?.map(|v| v.value());
                p
            };
            tx.commit().map_err(|e| e.to_string())?;
            pos
        };
        let registered = journal.register_consumer(CONSUMER).map_err(|e| e.to_string())?;
        if start.is_none() {
            start = Some(registered);
        }
        let start = start.unwrap_or(registered).max(registered);
        let (watch, _) = tokio::sync::watch::channel(start);
        Ok(Arc::new(History {
            db,
            journal,
            position: AtomicU64::new(start),
            watch,
            stop: AtomicBool::new(false),
        }))
    }

    /// Journal position the index has consumed.
    pub fn position(&self) -> u64 {
        self.position.load(Ordering::Acquire)
    }

    /// Indexes what the journal holds beyond the current position (at most `max` records).
    /// Returns the number of records consumed.
    pub fn step(&self, max: usize) -> Result<usize, String> {
        let from = self.position();
        let mut reader = self.journal.reader(from).map_err(|e| e.to_string())?;
        let tx = self.db.begin_write().map_err(|e| e.to_string())?;
        let mut n = 0;
        {
            let mut events = tx.open_table(EVENTS).map_err(|e| e.to_string())?;
            let mut attrs = tx.open_table(ATTRS).map_err(|e| e.to_string())?;
            while n < max {
                let Some((seq, bytes)) = reader.next_record().map_err(|e| e.to_string())? else {
                    break;
                };
                n += 1;
                let Ok(Entry::Event { json, .. }) = entry::decode(&bytes) else {
                    continue;
                };
                let Ok(rec) = serde_json::from_slice::<EventRecord>(&json) else {
                    continue;
                };
                let data = rec.event_category == cairn_record::record::category::DATA;
                if !(rec.is_management() || data) {
                    continue;
                }
                let part = partition(&rec.aws_region, data);
                let t = rev(rec.event_time.timestamp_millis());
                let (ev, keys) = lookup_event(&rec, &json);
                let ev = serde_json::to_vec(&ev).map_err(|e| e.to_string())?;
                events
                    .insert((part.as_str(), t, seq), ev.as_slice())
                    .map_err(|e| e.to_string())?;
                for (k, v) in keys {
                    attrs
                        .insert((part.as_str(), k, v.as_str(), t, seq), 0u8)
                        .map_err(|e| e.to_string())?;
                }
            }
            let mut st = tx.open_table(STATE).map_err(|e| e.to_string())?;
            st.insert("position", reader.position())
                .map_err(|e| e.to_string())?;
        }
        if n == 0 {
            tx.abort().map_err(|e| e.to_string())?;
            return Ok(0);
        }
        tx.commit().map_err(|e| e.to_string())?;
        let pos = reader.position();
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
                let mut last_cursor = std::time::Instant::now();
                while !h.stop.load(Ordering::Acquire) {
                    match h.step(20_000) {
                        Ok(0) => std::thread::sleep(std::time::Duration::from_millis(20)),
                        Ok(_) => {}
                        Err(e) => {
                            tracing::error!(error = %e, "event history indexing failed; retrying");
                            std::thread::sleep(std::time::Duration::from_millis(500));
                        }
                    }
                    if last_cursor.elapsed() > std::time::Duration::from_secs(5) {
                        last_cursor = std::time::Instant::now();
                        if let Err(e) = h.journal.commit_cursor(CONSUMER, h.position()) {
                            tracing::warn!(error = %e, "committing the history cursor failed");
                        }
                    }
                }
                let _ = h.journal.commit_cursor(CONSUMER, h.position());
            })
            .unwrap_or_else(|_| std::thread::spawn(|| {}))
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    /// Waits (up to `timeout`) until every record below `seq` is indexed.
    pub async fn caught_up(&self, seq: u64, timeout: std::time::Duration) {
        let mut rx = self.watch.subscribe();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|p| *p >= seq)).await;
    }

    /// Runs `q`; returns the page of `Event` JSON values and the position after the last one
    /// when more remain.
    pub fn lookup(&self, q: &Query) -> Result<(Vec<Value>, Option<(u64, u64)>), ApiError> {
        let tx = self.db.begin_read().map_err(ApiError::internal)?;
        let events = tx.open_table(EVENTS).map_err(ApiError::internal)?;
        let part = partition(&q.region, q.data_events);
        let lo_t = rev(q.end.timestamp_millis() + 999);
        let hi_t = rev(q.start.timestamp_millis());
        let (from_t, from_seq) = match q.after {
            Some((t, s)) => (t, s.saturating_add(1)),
            None => (lo_t, 0),
        };
        let mut out = Vec::new();
        let mut next = None;
        let want = q.max_results;
        let matches_rest = |ev: &Value| -> bool {
            q.attributes.iter().skip(1).all(|(k, v)| attr_matches(ev, *k, v))
        };
        match q.attributes.first() {
            None => {
                let range = events
                    .range((part.as_str(), from_t, from_seq)..=(part.as_str(), hi_t, u64::MAX))
                    .map_err(ApiError::internal)?;
                for row in range {
                    let (k, v) = row.map_err(ApiError::internal)?;
                    if out.len() == want {
                        break;
                    }
                    let (_, t, s) = k.value();
                    let ev: Value = serde_json::from_slice(v.value()).map_err(ApiError::internal)?;
                    out.push(ev);
                    next = Some((t, s));
                }
                if out.len() < want {
                    next = None;
                } else if let Some((t, s)) = next {
                    // Only hand out a token when something follows.
                    let more = events
                        .range((part.as_str(), t, s + 1)..=(part.as_str(), hi_t, u64::MAX))
                        .map_err(ApiError::internal)?
                        .next()
                        .is_some();
                    if !more {
                        next = None;
                    }
                }
            }
            Some((k, v)) => {
                let attrs = tx.open_table(ATTRS).map_err(ApiError::internal)?;
                let range = attrs
                    .range(
                        (part.as_str(), *k, v.as_str(), from_t, from_seq)
                            ..=(part.as_str(), *k, v.as_str(), hi_t, u64::MAX),
                    )
                    .map_err(ApiError::internal)?;
                let mut last = None;
                let mut more = false;
                for row in range {
                    let (key, _) = row.map_err(ApiError::internal)?;
                    let (_, _, _, t, s) = key.value();
                    if Some((t, s)) == last {
                        continue;
                    }
                    let Some(ev) = events
                        .get((part.as_str(), t, s))
                        .map_err(ApiError::internal)?
                    else {
                        continue;
                    };
                    let ev: Value =
                        serde_json::from_slice(ev.value()).map_err(ApiError::internal)?;
                    if !matches_rest(&ev) {
                        continue;
                    }
                    if out.len() == want {
                        more = true;
                        break;
                    }
                    out.push(ev);
                    last = Some((t, s));
                }
                next = if more { last } else { None };
            }
        }
        Ok((out, next))
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
                    let old: Vec<(u64, u64, Vec<u8>)> = events
                        .range((part.as_str(), cut, 0)..=(part.as_str(), u64::MAX, u64::MAX))
                        .map_err(|e| e.to_string())?
                        .filter_map(|row| row.ok())
                        .map(|(k, v)| {
                            let (_, t, s) = k.value();
                            (t, s, v.value().to_vec())
                        })
                        .collect();
                    for (t, s, v) in old {
                        if let Ok(ev) = serde_json::from_slice::<Value>(&v) {
                            for (k, val) in index_values(&ev) {
                                attrs
                                    .remove((part.as_str(), k, val.as_str(), t, s))
                                    .map_err(|e| e.to_string())?;
                            }
                        }
                        events
                            .remove((part.as_str(), t, s))
                            .map_err(|e| e.to_string())?;
                        n += 1;
                    }
                }
            }
        }
        tx.commit().map_err(|e| e.to_string())?;
        Ok(n)
    }
}

fn index_values(ev: &Value) -> Vec<(u8, String)> {
    let mut v = Vec::new();
    let s = |k: &str| ev.get(k).and_then(Value::as_str).map(str::to_string);
    for (code, key) in [(0u8, "EventId"), (1, "EventName"), (2, "ReadOnly"), (3, "Username"), (6, "EventSource"), (7, "AccessKeyId")] {
        if let Some(x) = s(key) {
            v.push((code, x));
        }
    }
    for r in ev.get("Resources").and_then(Value::as_array).into_iter().flatten() {
        if let Some(t) = r.get("ResourceType").and_then(Value::as_str) {
            v.push((4, t.to_string()));
        }
        if let Some(n) = r.get("ResourceName").and_then(Value::as_str) {
            v.push((5, n.to_string()));
        }
    }
    v
}

fn attr_matches(ev: &Value, k: u8, want: &str) -> bool {
    index_values(ev).iter().any(|(code, v)| *code == k && v == want)
}

/// Epoch seconds → time (for tokens and tests).
pub fn from_epoch(s: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(s, 0).single().unwrap_or_default()
}
