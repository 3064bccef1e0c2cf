//! Durable log events: one redb database (`logs.redb`), every message sealed at rest.
//!
//! Tables:
//! - `groups`: `region\0name` → group id (a re-created group never sees its predecessor's
//!   events; a deleted group's events are removed with it).
//! - `streams`: (group id, stream name) → [`StreamStats`] (JSON, with the stream's id).
//! - `stream_names`: (group id, stream id) → name (FilterLogEvents names each event's stream).
//! - `events`: (group id, timestamp, seq) → stream id, ingestion time, key slot, nonce,
//!   AES-256-GCM(message). Scans in time order across streams (FilterLogEvents, Insights).
//! - `by_stream`: (group id, stream id, timestamp, seq) → () (GetLogEvents).
//! - `metric_points`: (namespace\0metric\0dimensions JSON, minute) → [`Point`] (metric filters'
//!   data points, for alarms).
//!
//! The AD of each sealed message is (group id, timestamp, seq, stream id): moving a message to
//! another place, group or stream makes it fail to open. A group's messages are sealed under
//! its key ring ([`KeyRing`]): slot 0 is a key derived from cairn's root key, later slots are
//! KMS data keys of keys associated with the group (an event keeps the slot it was written
//! with, so events written before a DisassociateKmsKey still need that key).

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use aws_lc_rs::hmac;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use redb::{Database, Durability, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

const GROUPS: TableDefinition<&str, (u64, i64)> = TableDefinition::new("log_groups");
const STREAMS: TableDefinition<(u64, &str), &[u8]> = TableDefinition::new("streams");
const STREAM_NAMES: TableDefinition<(u64, u64), &str> = TableDefinition::new("stream_names");
const EVENTS: TableDefinition<(u64, i64, u64), &[u8]> = TableDefinition::new("events");
const BY_STREAM: TableDefinition<(u64, u64, i64, u64), ()> = TableDefinition::new("by_stream");
const POINTS: TableDefinition<(&str, i64), &[u8]> = TableDefinition::new("metric_points");
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("state");

/// A failure of the log store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The key that sealed an event cannot be used (disabled, deleted, not permitted).
    #[error("{0}")]
    Key(String),
    /// The group or stream was deleted (or re-created) since the caller looked.
    #[error("{0}")]
    Gone(String),
    #[error("log store: {0}")]
    Internal(String),
}

fn internal(e: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(e.to_string())
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// What a stream knows about its events (DescribeLogStreams).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StreamStats {
    pub id: u64,
    pub first_event: Option<i64>,
    pub last_event: Option<i64>,
    pub last_ingestion: Option<i64>,
    pub stored_bytes: u64,
    pub events: u64,
}

/// A log event to store.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub timestamp: i64,
    pub message: String,
}

/// Events for one stream, with what they need to be stored.
#[derive(Clone)]
pub struct Batch {
    /// `region\0name`.
    pub group: String,
    pub stream: String,
    pub events: Vec<NewEvent>,
    pub ingestion: i64,
    pub ring: KeyRing,
    /// Metric filters' data points: (series, minute, value).
    pub points: Vec<(String, i64, f64)>,
    /// The group's generation (its creation time) as the caller saw it: a put into a group
    /// deleted or re-created since fails with [`StoreError::Gone`]. `None` creates the group
    /// and stream when missing (tools and tests).
    pub generation: Option<i64>,
}

/// A stored log event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub seq: u64,
    pub timestamp: i64,
    pub ingestion: i64,
    pub stream: String,
    pub message: String,
}

impl Event {
    /// Where it is in its group's time order (paging tokens).
    pub fn position(&self) -> (i64, u64) {
        (self.timestamp, self.seq)
    }
}

/// A stored log event, lent by [`LogStore::scan`].
#[derive(Debug, Clone, Copy)]
pub struct EventRef<'a> {
    pub seq: u64,
    pub timestamp: i64,
    pub ingestion: i64,
    pub stream: &'a str,
    pub message: &'a str,
}

impl EventRef<'_> {
    /// Where it is in its group's time order (paging tokens).
    pub fn position(&self) -> (i64, u64) {
        (self.timestamp, self.seq)
    }
}

/// The unsealed header of a stored event: stream id, ingestion time, key slot, nonce.
fn header_of(raw: &[u8]) -> Result<(u64, i64, u32, [u8; 12])> {
    if raw.len() < 8 + 8 + 4 + 12 + 16 {
        return Err(internal("a truncated event"));
    }
    let sid = u64::from_le_bytes(raw[0..8].try_into().map_err(internal)?);
    let ingestion = i64::from_le_bytes(raw[8..16].try_into().map_err(internal)?);
    let slot = u32::from_le_bytes(raw[16..20].try_into().map_err(internal)?);
    let nonce: [u8; 12] = raw[20..32].try_into().map_err(internal)?;
    Ok((sid, ingestion, slot, nonce))
}

/// A metric filter's data points in one minute.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Point {
    pub sum: f64,
    pub count: u64,
    pub min: f64,
    pub max: f64,
}

/// The keys of a group's slots, opened by the caller (slot 0 is the store's own and need not
/// be given). A slot whose key cannot be used holds why.
#[derive(Clone, Default)]
pub struct KeyRing {
    pub slots: HashMap<u32, std::result::Result<Arc<LessSafeKey>, String>>,
    /// The slot new events are sealed in.
    pub current: u32,
}

impl KeyRing {
    /// A ring whose only key is the store's own.
    pub fn default_only() -> KeyRing {
        KeyRing::default()
    }

    /// Adds a slot's 32-byte data key.
    pub fn with_key(mut self, slot: u32, key: &[u8]) -> Result<KeyRing> {
        let k = UnboundKey::new(&AES_256_GCM, key).map_err(|_| internal("bad data key"))?;
        self.slots.insert(slot, Ok(Arc::new(LessSafeKey::new(k))));
        Ok(self)
    }

    /// Marks a slot unusable (its key is disabled, deleted, or not permitted).
    pub fn without_key(mut self, slot: u32, why: String) -> KeyRing {
        self.slots.insert(slot, Err(why));
        self
    }
}

/// The log event store.
pub struct LogStore {
    db: Database,
    own_key: Arc<LessSafeKey>,
    next_seq: Mutex<u64>,
    rng: SystemRandom,
    group: Mutex<GroupState>,
    group_done: std::sync::Condvar,
}

/// Puts waiting to share one transaction (group commit): whoever finds no commit under way
/// commits everything queued, then hands each its result.
#[derive(Default)]
struct GroupState {
    next_ticket: u64,
    queued: Vec<(u64, Batch)>,
    committing: bool,
    results: HashMap<u64, Result<Vec<u64>>>,
}

fn stats_of(b: &[u8]) -> Result<StreamStats> {
    serde_json::from_slice(b).map_err(internal)
}

fn range_of_group(gid: u64) -> std::ops::RangeInclusive<(u64, i64, u64)> {
    (gid, i64::MIN, 0)..=(gid, i64::MAX, u64::MAX)
}

impl LogStore {
    /// Opens (creating) the store at `path`; `root` (32 bytes) derives the key of slot 0.
    pub fn open(path: &Path, root: &[u8]) -> Result<LogStore> {
        let db = cairn_db::create(path).map_err(internal)?;
        let w = db.begin_write().map_err(internal)?;
        w.open_table(GROUPS).map_err(internal)?;
        w.open_table(STREAMS).map_err(internal)?;
        w.open_table(STREAM_NAMES).map_err(internal)?;
        w.open_table(EVENTS).map_err(internal)?;
        w.open_table(BY_STREAM).map_err(internal)?;
        w.open_table(POINTS).map_err(internal)?;
        w.open_table(STATE).map_err(internal)?;
        let next = {
            let c = w.open_table(COUNTERS).map_err(internal)?;
            let v = c.get("seq").map_err(internal)?.map(|v| v.value());
            v.unwrap_or(1)
        };
        w.commit().map_err(internal)?;
        let sub = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, root),
            b"cairn log events v1",
        );
        let k = UnboundKey::new(&AES_256_GCM, sub.as_ref()).map_err(internal)?;
        Ok(LogStore {
            db,
            own_key: Arc::new(LessSafeKey::new(k)),
            next_seq: Mutex::new(next),
            rng: SystemRandom::new(),
            group: Mutex::new(GroupState::default()),
            group_done: std::sync::Condvar::new(),
        })
    }

    fn key_of(&self, ring: &KeyRing, slot: u32) -> Result<Arc<LessSafeKey>> {
        if slot == 0 {
            return Ok(self.own_key.clone());
        }
        match ring.slots.get(&slot) {
            Some(Ok(k)) => Ok(k.clone()),
            Some(Err(why)) => Err(StoreError::Key(why.clone())),
            None => Err(StoreError::Key(format!(
                "the KMS key of key slot {slot} is not available"
            ))),
        }
    }

    /// The id of group `group` (`region\0name`), if it has one.
    pub fn group_id(&self, group: &str) -> Result<Option<u64>> {
        let r = self.db.begin_read().map_err(internal)?;
        let t = r.open_table(GROUPS).map_err(internal)?;
        Ok(t.get(group).map_err(internal)?.map(|v| v.value().0))
    }

    /// A stream's statistics (`None`: no event was ever stored in it).
    pub fn stream_stats(&self, group: &str, stream: &str) -> Result<Option<StreamStats>> {
        let Some(gid) = self.group_id(group)? else {
            return Ok(None);
        };
        let r = self.db.begin_read().map_err(internal)?;
        let t = r.open_table(STREAMS).map_err(internal)?;
        let v = t.get((gid, stream)).map_err(internal)?;
        v.map(|v| stats_of(v.value())).transpose()
    }

    /// Every stream's statistics in a group.
    pub fn all_stream_stats(&self, group: &str) -> Result<HashMap<String, StreamStats>> {
        let mut out = HashMap::new();
        let Some(gid) = self.group_id(group)? else {
            return Ok(out);
        };
        let r = self.db.begin_read().map_err(internal)?;
        let t = r.open_table(STREAMS).map_err(internal)?;
        for e in t.range((gid, "")..(gid + 1, "")).map_err(internal)? {
            let (k, v) = e.map_err(internal)?;
            out.insert(k.value().1.to_string(), stats_of(v.value())?);
        }
        Ok(out)
    }

    /// Stores `events` in `stream`, ingested at `ingestion`, sealed in the ring's current
    /// slot, and the metric `points` they made; durable when this returns. Returns their
    /// sequence numbers.
    pub fn put(
        &self,
        group: &str,
        stream: &str,
        events: &[NewEvent],
        ingestion: i64,
        ring: &KeyRing,
        points: &[(String, i64, f64)],
    ) -> Result<Vec<u64>> {
        let b = Batch {
            group: group.into(),
            stream: stream.into(),
            events: events.to_vec(),
            ingestion,
            ring: ring.clone(),
            points: points.to_vec(),
            generation: None,
        };
        self.put_batches(std::slice::from_ref(&b), &[])
    }

    /// As [`LogStore::put`], sharing one durable transaction with the puts of other threads
    /// waiting at the same time (one fsync for all of them). A batch that cannot be sealed
    /// (its key unusable) fails alone.
    pub fn put_grouped(&self, b: Batch) -> Result<Vec<u64>> {
        self.key_of(&b.ring, b.ring.current)?;
        let mut g = self.group.lock().unwrap_or_else(|p| p.into_inner());
        let ticket = g.next_ticket;
        g.next_ticket += 1;
        g.queued.push((ticket, b));
        loop {
            if let Some(r) = g.results.remove(&ticket) {
                return r;
            }
            if !g.committing {
                g.committing = true;
                let work = std::mem::take(&mut g.queued);
                drop(g);
                let (tickets, batches): (Vec<u64>, Vec<Batch>) = work.into_iter().unzip();
                // A panic in the commit must not leave every later put waiting.
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    self.put_each(&batches, &[])
                }))
                .unwrap_or_else(|_| Err(internal("the grouped commit panicked")));
                g = self.group.lock().unwrap_or_else(|p| p.into_inner());
                match outcome {
                    Ok(each) => {
                        for (t, r) in tickets.iter().zip(each) {
                            g.results.insert(*t, r);
                        }
                    }
                    Err(e) => {
                        for t in &tickets {
                            g.results
                                .insert(*t, Err(StoreError::Internal(e.to_string())));
                        }
                    }
                }
                g.committing = false;
                self.group_done.notify_all();
                continue;
            }
            g = self.group_done.wait(g).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Stores several batches and sets consumer `positions` (a trail's delivery cursor, its
    /// status) in one durable transaction: after a crash either all of it is there or none.
    pub fn put_batches(
        &self,
        batches: &[Batch],
        positions: &[(String, Vec<u8>)],
    ) -> Result<Vec<u64>> {
        let each = self.put_each(batches, positions)?;
        let mut seqs = Vec::new();
        for r in each {
            seqs.extend(r?);
        }
        Ok(seqs)
    }

    /// As [`LogStore::put_batches`], one outcome per batch: a batch whose group or stream is
    /// gone is left out (its outcome says so) and the others are stored.
    fn put_each(
        &self,
        batches: &[Batch],
        positions: &[(String, Vec<u8>)],
    ) -> Result<Vec<Result<Vec<u64>>>> {
        let mut seq_guard = self.next_seq.lock().unwrap_or_else(|p| p.into_inner());
        let mut w = self.db.begin_write().map_err(internal)?;
        w.set_durability(Durability::Immediate);
        let mut seq = *seq_guard;
        let mut out = Vec::with_capacity(batches.len());
        for b in batches {
            let mut seqs = Vec::new();
            match self.put_in(&w, b, &mut seq, &mut seqs) {
                Ok(()) => out.push(Ok(seqs)),
                Err(StoreError::Gone(m)) => out.push(Err(StoreError::Gone(m))),
                Err(e) => return Err(e),
            }
        }
        {
            let mut st = w.open_table(STATE).map_err(internal)?;
            for (k, v) in positions {
                st.insert(k.as_str(), v.as_slice()).map_err(internal)?;
            }
            let mut counters = w.open_table(COUNTERS).map_err(internal)?;
            counters.insert("seq", seq).map_err(internal)?;
        }
        w.commit().map_err(internal)?;
        *seq_guard = seq;
        drop(seq_guard);
        Ok(out)
    }

    /// A value kept beside the events (delivery cursors and statuses).
    pub fn state(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let r = self.db.begin_read().map_err(internal)?;
        let t = r.open_table(STATE).map_err(internal)?;
        let v = t.get(key).map_err(internal)?;
        Ok(v.map(|v| v.value().to_vec()))
    }

    /// Every kept value whose key starts with `prefix`.
    pub fn states(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let r = self.db.begin_read().map_err(internal)?;
        let t = r.open_table(STATE).map_err(internal)?;
        let mut out = Vec::new();
        for e in t.range(prefix..).map_err(internal)? {
            let (k, v) = e.map_err(internal)?;
            if !k.value().starts_with(prefix) {
                break;
            }
            out.push((k.value().to_string(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// Sets (or with `None` removes) kept values, durably.
    pub fn set_states(&self, values: &[(String, Option<Vec<u8>>)]) -> Result<()> {
        let mut w = self.db.begin_write().map_err(internal)?;
        w.set_durability(Durability::Immediate);
        {
            let mut st = w.open_table(STATE).map_err(internal)?;
            for (k, v) in values {
                match v {
                    Some(v) => {
                        st.insert(k.as_str(), v.as_slice()).map_err(internal)?;
                    }
                    None => {
                        st.remove(k.as_str()).map_err(internal)?;
                    }
                }
            }
        }
        w.commit().map_err(internal)
    }

    fn put_in(
        &self,
        w: &redb::WriteTransaction,
        b: &Batch,
        seq: &mut u64,
        seqs: &mut Vec<u64>,
    ) -> Result<()> {
        let (group, stream, events, ingestion, ring, points) = (
            &b.group,
            &b.stream,
            &b.events,
            b.ingestion,
            &b.ring,
            &b.points,
        );
        let group = group.as_str();
        let stream = stream.as_str();
        let key = self.key_of(ring, ring.current)?;
        {
            let mut counters = w.open_table(COUNTERS).map_err(internal)?;
            let mut groups = w.open_table(GROUPS).map_err(internal)?;
            let found = groups.get(group).map_err(internal)?.map(|v| v.value());
            let gid = match (found, b.generation) {
                (Some((g, gen)), Some(want)) if gen == want => g,
                (Some((g, _)), None) => g,
                (None, None) => {
                    let g = next_id(&mut counters, "group")?;
                    groups.insert(group, (g, 0)).map_err(internal)?;
                    g
                }
                _ => {
                    return Err(StoreError::Gone(
                        "The specified log group does not exist.".into(),
                    ))
                }
            };
            let mut streams = w.open_table(STREAMS).map_err(internal)?;
            let existing = {
                let v = streams.get((gid, stream)).map_err(internal)?;
                v.map(|v| stats_of(v.value())).transpose()?
            };
            let mut stats = match existing {
                Some(s) => s,
                None if b.generation.is_some() => {
                    return Err(StoreError::Gone(
                        "The specified log stream does not exist.".into(),
                    ))
                }
                None => {
                    let id = next_id(&mut counters, "stream")?;
                    let mut names = w.open_table(STREAM_NAMES).map_err(internal)?;
                    names.insert((gid, id), stream).map_err(internal)?;
                    StreamStats {
                        id,
                        ..Default::default()
                    }
                }
            };
            let sid = stats.id;
            let mut ev = w.open_table(EVENTS).map_err(internal)?;
            let mut bs = w.open_table(BY_STREAM).map_err(internal)?;
            let mut next = *seq;
            let mut buf = Vec::new();
            // A random 96-bit nonce per event (one call to the generator per batch).
            let mut nonces = vec![0u8; 12 * events.len()];
            self.rng
                .fill(&mut nonces)
                .map_err(|_| internal("no randomness"))?;
            for (i, e) in events.iter().enumerate() {
                buf.clear();
                buf.extend_from_slice(&sid.to_le_bytes());
                buf.extend_from_slice(&ingestion.to_le_bytes());
                buf.extend_from_slice(&ring.current.to_le_bytes());
                let mut nonce = [0u8; 12];
                nonce.copy_from_slice(&nonces[12 * i..12 * i + 12]);
                buf.extend_from_slice(&nonce);
                let mut sealed = e.message.as_bytes().to_vec();
                key.seal_in_place_append_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(ad(gid, e.timestamp, next, sid, ingestion, ring.current)),
                    &mut sealed,
                )
                .map_err(|_| internal("seal failed"))?;
                buf.extend_from_slice(&sealed);
                ev.insert((gid, e.timestamp, next), buf.as_slice())
                    .map_err(internal)?;
                bs.insert((gid, sid, e.timestamp, next), ())
                    .map_err(internal)?;
                stats.first_event = Some(
                    stats
                        .first_event
                        .map_or(e.timestamp, |f| f.min(e.timestamp)),
                );
                stats.last_event =
                    Some(stats.last_event.map_or(e.timestamp, |l| l.max(e.timestamp)));
                stats.stored_bytes += e.message.len() as u64;
                stats.events += 1;
                seqs.push(next);
                next += 1;
            }
            if !events.is_empty() {
                stats.last_ingestion = Some(ingestion);
            }
            let sb = serde_json::to_vec(&stats).map_err(internal)?;
            streams
                .insert((gid, stream), sb.as_slice())
                .map_err(internal)?;
            let mut pts = w.open_table(POINTS).map_err(internal)?;
            for (series, minute, value) in points {
                let old = {
                    let v = pts.get((series.as_str(), *minute)).map_err(internal)?;
                    v.map(|v| serde_json::from_slice::<Point>(v.value()))
                        .transpose()
                        .map_err(internal)?
                };
                let p = match old {
                    None => Point {
                        sum: *value,
                        count: 1,
                        min: *value,
                        max: *value,
                    },
                    Some(p) => Point {
                        sum: p.sum + value,
                        count: p.count + 1,
                        min: p.min.min(*value),
                        max: p.max.max(*value),
                    },
                };
                let pb = serde_json::to_vec(&p).map_err(internal)?;
                pts.insert((series.as_str(), *minute), pb.as_slice())
                    .map_err(internal)?;
            }
            *seq = next;
        }
        Ok(())
    }

    fn open_event(
        &self,
        gid: u64,
        (ts, seq): (i64, u64),
        raw: &[u8],
        ring: &KeyRing,
        keys: &mut HashMap<u32, Arc<LessSafeKey>>,
    ) -> Result<(u64, i64, String)> {
        if raw.len() < 8 + 8 + 4 + 12 + 16 {
            return Err(internal("a truncated event"));
        }
        let sid = u64::from_le_bytes(raw[0..8].try_into().map_err(internal)?);
        let ingestion = i64::from_le_bytes(raw[8..16].try_into().map_err(internal)?);
        let slot = u32::from_le_bytes(raw[16..20].try_into().map_err(internal)?);
        let nonce: [u8; 12] = raw[20..32].try_into().map_err(internal)?;
        let key = match keys.get(&slot) {
            Some(k) => k.clone(),
            None => {
                let k = self.key_of(ring, slot)?;
                keys.insert(slot, k.clone());
                k
            }
        };
        let mut body = raw[32..].to_vec();
        let plain = key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(ad(gid, ts, seq, sid, ingestion, slot)),
                &mut body,
            )
            .map_err(|_| {
                internal(format!(
                    "event {seq} does not open: its stored bytes were changed"
                ))
            })?;
        let n = plain.len();
        body.truncate(n);
        let message = String::from_utf8(body).map_err(internal)?;
        Ok((sid, ingestion, message))
    }

    /// Events of one stream in time order, strictly after `after` (or from `start`), up to
    /// `end` (exclusive), at most `limit` and about `max_bytes` (26 bytes counted per event).
    /// With `backward`, the last of them strictly before `before`-or-`end`, still returned in
    /// time order.
    #[allow(clippy::too_many_arguments)]
    pub fn stream_events(
        &self,
        group: &str,
        stream: &str,
        start: Option<i64>,
        end: Option<i64>,
        cursor: Option<(i64, u64)>,
        backward: bool,
        limit: usize,
        max_bytes: usize,
        ring: &KeyRing,
    ) -> Result<Vec<Event>> {
        let Some(gid) = self.group_id(group)? else {
            return Ok(Vec::new());
        };
        let Some(stats) = self.stream_stats(group, stream)? else {
            return Ok(Vec::new());
        };
        let sid = stats.id;
        let r = self.db.begin_read().map_err(internal)?;
        let bs = r.open_table(BY_STREAM).map_err(internal)?;
        let ev = r.open_table(EVENTS).map_err(internal)?;
        let lo = (gid, sid, start.unwrap_or(i64::MIN), 0u64);
        let hi_excl = end.map(|e| (gid, sid, e, 0u64));
        let mut keys = HashMap::new();
        let mut positions = Vec::new();
        if !backward {
            let lo = match cursor {
                Some((t, s)) if (gid, sid, t, s) >= lo => (gid, sid, t, s.saturating_add(1)),
                _ => lo,
            };
            let lo = if matches!(cursor, Some((_, u64::MAX))) {
                return Ok(Vec::new());
            } else {
                lo
            };
            for e in bs
                .range(lo..=(gid, sid, i64::MAX, u64::MAX))
                .map_err(internal)?
            {
                let (k, _) = e.map_err(internal)?;
                let k = k.value();
                if hi_excl.is_some_and(|h| k >= h) || positions.len() >= limit {
                    break;
                }
                positions.push((k.2, k.3));
            }
        } else {
            let mut hi = hi_excl.unwrap_or((gid, sid, i64::MAX, u64::MAX));
            if let Some((t, s)) = cursor {
                hi = hi.min((gid, sid, t, s));
            }
            if hi <= lo {
                return Ok(Vec::new());
            }
            for e in bs.range(lo..hi).map_err(internal)?.rev() {
                let (k, _) = e.map_err(internal)?;
                let k = k.value();
                if positions.len() >= limit {
                    break;
                }
                positions.push((k.2, k.3));
            }
        }
        // Opened in the direction of reading, until `max_bytes` of messages (at least one).
        let mut out = Vec::with_capacity(positions.len());
        let mut bytes = 0usize;
        for (ts, seq) in positions {
            let raw = ev
                .get((gid, ts, seq))
                .map_err(internal)?
                .ok_or_else(|| internal("an indexed event is missing"))?;
            let (_, ingestion, message) =
                self.open_event(gid, (ts, seq), raw.value(), ring, &mut keys)?;
            bytes += message.len() + 26;
            if bytes > max_bytes && !out.is_empty() {
                break;
            }
            out.push(Event {
                seq,
                timestamp: ts,
                ingestion,
                stream: stream.to_string(),
                message,
            });
        }
        if backward {
            out.reverse();
        }
        Ok(out)
    }

    /// Visits a group's events in time order from `start` (or strictly after `cursor`) to
    /// `end` (exclusive); `visit` returns false to stop. Returns the number scanned and the
    /// bytes of their messages. Events are lent, opened into one reused buffer: a scan
    /// allocates per stream, not per event.
    pub fn scan(
        &self,
        group: &str,
        start: Option<i64>,
        end: Option<i64>,
        cursor: Option<(i64, u64)>,
        ring: &KeyRing,
        mut visit: impl FnMut(EventRef<'_>) -> bool,
    ) -> Result<(u64, u64)> {
        let Some(gid) = self.group_id(group)? else {
            return Ok((0, 0));
        };
        let r = self.db.begin_read().map_err(internal)?;
        let ev = r.open_table(EVENTS).map_err(internal)?;
        let names_t = r.open_table(STREAM_NAMES).map_err(internal)?;
        let mut names: HashMap<u64, String> = HashMap::new();
        let mut lo = (gid, start.unwrap_or(i64::MIN), 0u64);
        if let Some((t, s)) = cursor {
            if s == u64::MAX {
                return Ok((0, 0));
            }
            lo = lo.max((gid, t, s + 1));
        }
        let hi = (gid, end.unwrap_or(i64::MAX), 0u64);
        if lo >= hi && end.is_some() {
            return Ok((0, 0));
        }
        let mut keys: HashMap<u32, Arc<LessSafeKey>> = HashMap::new();
        let (mut scanned, mut bytes) = (0u64, 0u64);
        let range = if end.is_some() {
            ev.range(lo..hi).map_err(internal)?
        } else {
            ev.range(lo..=*range_of_group(gid).end())
                .map_err(internal)?
        };
        let mut buf: Vec<u8> = Vec::with_capacity(4096);
        for e in range {
            let (k, v) = e.map_err(internal)?;
            let (_, ts, seq) = k.value();
            let raw = v.value();
            let (sid, ingestion, slot, nonce) = header_of(raw)?;
            let key = match keys.get(&slot) {
                Some(k) => k,
                None => {
                    let k = self.key_of(ring, slot)?;
                    keys.entry(slot).or_insert(k)
                }
            };
            buf.clear();
            buf.extend_from_slice(&raw[32..]);
            let n = key
                .open_in_place(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(ad(gid, ts, seq, sid, ingestion, slot)),
                    &mut buf,
                )
                .map_err(|_| {
                    internal(format!(
                        "event {seq} does not open: its stored bytes were changed"
                    ))
                })?
                .len();
            let message = std::str::from_utf8(&buf[..n]).map_err(internal)?;
            scanned += 1;
            bytes += n as u64;
            if let std::collections::hash_map::Entry::Vacant(slot) = names.entry(sid) {
                let name = names_t
                    .get((gid, sid))
                    .map_err(internal)?
                    .map(|v| v.value().to_string())
                    .unwrap_or_default();
                slot.insert(name);
            }
            let stream = names.get(&sid).map(String::as_str).unwrap_or_default();
            let go_on = visit(EventRef {
                seq,
                timestamp: ts,
                ingestion,
                stream,
                message,
            });
            if !go_on {
                break;
            }
        }
        Ok((scanned, bytes))
    }

    /// Registers a group (CreateLogGroup) under `generation` (its creation time): only puts
    /// naming that generation reach it.
    pub fn create_group(&self, group: &str, generation: i64) -> Result<()> {
        let mut w = self.db.begin_write().map_err(internal)?;
        w.set_durability(Durability::Immediate);
        {
            let mut counters = w.open_table(COUNTERS).map_err(internal)?;
            let g = next_id(&mut counters, "group")?;
            w.open_table(GROUPS)
                .map_err(internal)?
                .insert(group, (g, generation))
                .map_err(internal)?;
        }
        w.commit().map_err(internal)
    }

    /// Registers a stream of a registered group (CreateLogStream; trail delivery's streams).
    /// Nothing to do when it exists.
    pub fn create_stream(&self, group: &str, stream: &str) -> Result<()> {
        let mut w = self.db.begin_write().map_err(internal)?;
        w.set_durability(Durability::Immediate);
        {
            let gid = w
                .open_table(GROUPS)
                .map_err(internal)?
                .get(group)
                .map_err(internal)?
                .map(|v| v.value().0)
                .ok_or_else(|| {
                    StoreError::Gone("The specified log group does not exist.".into())
                })?;
            let mut streams = w.open_table(STREAMS).map_err(internal)?;
            let exists = streams.get((gid, stream)).map_err(internal)?.is_some();
            if !exists {
                let mut counters = w.open_table(COUNTERS).map_err(internal)?;
                let id = next_id(&mut counters, "stream")?;
                w.open_table(STREAM_NAMES)
                    .map_err(internal)?
                    .insert((gid, id), stream)
                    .map_err(internal)?;
                let st = serde_json::to_vec(&StreamStats {
                    id,
                    ..Default::default()
                })
                .map_err(internal)?;
                streams
                    .insert((gid, stream), st.as_slice())
                    .map_err(internal)?;
            }
        }
        w.commit().map_err(internal)
    }

    /// Removes a group's events, streams and id (DeleteLogGroup).
    pub fn delete_group(&self, group: &str) -> Result<()> {
        let Some(gid) = self.group_id(group)? else {
            return Ok(());
        };
        let mut w = self.db.begin_write().map_err(internal)?;
        w.set_durability(Durability::Immediate);
        {
            w.open_table(GROUPS)
                .map_err(internal)?
                .remove(group)
                .map_err(internal)?;
            w.open_table(EVENTS)
                .map_err(internal)?
                .retain_in(range_of_group(gid), |_, _| false)
                .map_err(internal)?;
            w.open_table(BY_STREAM)
                .map_err(internal)?
                .retain_in(
                    (gid, 0, i64::MIN, 0)..=(gid, u64::MAX, i64::MAX, u64::MAX),
                    |_, _| false,
                )
                .map_err(internal)?;
            w.open_table(STREAMS)
                .map_err(internal)?
                .retain_in((gid, "")..(gid + 1, ""), |_, _| false)
                .map_err(internal)?;
            w.open_table(STREAM_NAMES)
                .map_err(internal)?
                .retain_in((gid, 0)..=(gid, u64::MAX), |_, _| false)
                .map_err(internal)?;
        }
        w.commit().map_err(internal)
    }

    /// Removes one stream and its events (DeleteLogStream).
    pub fn delete_stream(&self, group: &str, stream: &str) -> Result<()> {
        let Some(gid) = self.group_id(group)? else {
            return Ok(());
        };
        let Some(stats) = self.stream_stats(group, stream)? else {
            return Ok(());
        };
        let sid = stats.id;
        let mut w = self.db.begin_write().map_err(internal)?;
        w.set_durability(Durability::Immediate);
        {
            let mut bs = w.open_table(BY_STREAM).map_err(internal)?;
            let mut ev = w.open_table(EVENTS).map_err(internal)?;
            let mut gone = Vec::new();
            for e in bs
                .range((gid, sid, i64::MIN, 0)..=(gid, sid, i64::MAX, u64::MAX))
                .map_err(internal)?
            {
                let (k, _) = e.map_err(internal)?;
                let k = k.value();
                gone.push((k.2, k.3));
            }
            for (ts, seq) in &gone {
                ev.remove((gid, *ts, *seq)).map_err(internal)?;
            }
            bs.retain_in(
                (gid, sid, i64::MIN, 0)..=(gid, sid, i64::MAX, u64::MAX),
                |_, _| false,
            )
            .map_err(internal)?;
            w.open_table(STREAMS)
                .map_err(internal)?
                .remove((gid, stream))
                .map_err(internal)?;
            w.open_table(STREAM_NAMES)
                .map_err(internal)?
                .remove((gid, sid))
                .map_err(internal)?;
        }
        w.commit().map_err(internal)
    }

    /// Removes a group's events with timestamps before `before` (retention). Returns how many.
    pub fn expire(&self, group: &str, before: i64) -> Result<u64> {
        let Some(gid) = self.group_id(group)? else {
            return Ok(0);
        };
        let mut w = self.db.begin_write().map_err(internal)?;
        w.set_durability(Durability::Immediate);
        let mut n = 0u64;
        {
            let mut ev = w.open_table(EVENTS).map_err(internal)?;
            let mut gone = Vec::new();
            for e in ev
                .extract_from_if((gid, i64::MIN, 0)..(gid, before, 0), |_, _| true)
                .map_err(internal)?
            {
                let (k, v) = e.map_err(internal)?;
                let (_, ts, seq) = k.value();
                let raw = v.value();
                let sid = u64::from_le_bytes(raw[0..8].try_into().map_err(internal)?);
                let len = raw.len().saturating_sub(32 + 16) as u64;
                gone.push((sid, ts, seq, len));
            }
            let mut bs = w.open_table(BY_STREAM).map_err(internal)?;
            let mut by_sid: HashMap<u64, (u64, u64)> = HashMap::new();
            for (sid, ts, seq, len) in gone {
                bs.remove((gid, sid, ts, seq)).map_err(internal)?;
                let e = by_sid.entry(sid).or_default();
                e.0 += 1;
                e.1 += len;
                n += 1;
            }
            if !by_sid.is_empty() {
                let mut streams = w.open_table(STREAMS).map_err(internal)?;
                let all: Vec<(String, StreamStats)> = streams
                    .range((gid, "")..(gid + 1, ""))
                    .map_err(internal)?
                    .map(|e| {
                        let (k, v) = e.map_err(internal)?;
                        Ok((k.value().1.to_string(), stats_of(v.value())?))
                    })
                    .collect::<Result<_>>()?;
                for (name, mut s) in all {
                    if let Some((count, bytes)) = by_sid.get(&s.id) {
                        s.events = s.events.saturating_sub(*count);
                        s.stored_bytes = s.stored_bytes.saturating_sub(*bytes);
                        let first = bs
                            .range((gid, s.id, i64::MIN, 0)..=(gid, s.id, i64::MAX, u64::MAX))
                            .map_err(internal)?
                            .next()
                            .transpose()
                            .map_err(internal)?
                            .map(|(k, _)| k.value().2);
                        s.first_event = first;
                        if first.is_none() {
                            s.last_event = None;
                        }
                        let sb = serde_json::to_vec(&s).map_err(internal)?;
                        streams
                            .insert((gid, name.as_str()), sb.as_slice())
                            .map_err(internal)?;
                    }
                }
            }
        }
        w.commit().map_err(internal)?;
        Ok(n)
    }

    /// A metric series' points from `from` to `to` (minutes since the epoch, inclusive).
    pub fn points(&self, series: &str, from: i64, to: i64) -> Result<Vec<(i64, Point)>> {
        let r = self.db.begin_read().map_err(internal)?;
        let t = r.open_table(POINTS).map_err(internal)?;
        let mut out = Vec::new();
        for e in t.range((series, from)..=(series, to)).map_err(internal)? {
            let (k, v) = e.map_err(internal)?;
            out.push((
                k.value().1,
                serde_json::from_slice(v.value()).map_err(internal)?,
            ));
        }
        Ok(out)
    }

    /// Flips one byte of a stored message (tamper tests).
    #[cfg(test)]
    fn tamper_first_event(&self, group: &str) -> Result<bool> {
        let Some(gid) = self.group_id(group)? else {
            return Ok(false);
        };
        let w = self.db.begin_write().map_err(internal)?;
        let found = {
            let mut ev = w.open_table(EVENTS).map_err(internal)?;
            let first = ev
                .range(range_of_group(gid))
                .map_err(internal)?
                .next()
                .transpose()
                .map_err(internal)?
                .map(|(k, v)| (k.value(), v.value().to_vec()));
            match first {
                Some((k, mut v)) => {
                    let last = v.len() - 1;
                    v[last] ^= 1;
                    ev.insert(k, v.as_slice()).map_err(internal)?;
                    true
                }
                None => false,
            }
        };
        w.commit().map_err(internal)?;
        Ok(found)
    }
}

/// The next id of a counter (group and stream ids start at 1).
fn next_id(counters: &mut redb::Table<&str, u64>, name: &str) -> Result<u64> {
    let id = counters
        .get(name)
        .map_err(internal)?
        .map(|v| v.value())
        .unwrap_or(0)
        + 1;
    counters.insert(name, id).map_err(internal)?;
    Ok(id)
}

/// What a sealed message is bound to: its place (group, time, seq, stream) and the unsealed
/// header fields (ingestion time, key slot), so none can be moved or edited undetected.
fn ad(gid: u64, ts: i64, seq: u64, sid: u64, ingestion: i64, slot: u32) -> [u8; 44] {
    let mut a = [0u8; 44];
    a[0..8].copy_from_slice(&gid.to_be_bytes());
    a[8..16].copy_from_slice(&ts.to_be_bytes());
    a[16..24].copy_from_slice(&seq.to_be_bytes());
    a[24..32].copy_from_slice(&sid.to_be_bytes());
    a[32..40].copy_from_slice(&ingestion.to_be_bytes());
    a[40..44].copy_from_slice(&slot.to_be_bytes());
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, LogStore) {
        let d = tempfile::tempdir().unwrap();
        let s = LogStore::open(&d.path().join("logs.redb"), &[7u8; 32]).unwrap();
        (d, s)
    }

    fn evs(from: i64, n: i64) -> Vec<NewEvent> {
        (0..n)
            .map(|i| NewEvent {
                timestamp: from + i,
                message: format!("message {}", from + i),
            })
            .collect()
    }

    const G: &str = "us-east-1\u{0}g";

    #[test]
    fn events_read_back_in_order_by_stream_and_across_streams() {
        let (_d, s) = store();
        let ring = KeyRing::default_only();
        s.put(G, "a", &evs(100, 5), 1, &ring, &[]).unwrap();
        s.put(G, "b", &evs(102, 5), 2, &ring, &[]).unwrap();
        let a = s
            .stream_events(G, "a", None, None, None, false, 100, usize::MAX, &ring)
            .unwrap();
        assert_eq!(
            a.iter().map(|e| e.timestamp).collect::<Vec<_>>(),
            vec![100, 101, 102, 103, 104]
        );
        // Forward paging from a cursor, backward from the end.
        let next = s
            .stream_events(
                G,
                "a",
                None,
                None,
                Some(a[1].position()),
                false,
                2,
                usize::MAX,
                &ring,
            )
            .unwrap();
        assert_eq!(
            next.iter().map(|e| e.timestamp).collect::<Vec<_>>(),
            vec![102, 103]
        );
        let tail = s
            .stream_events(G, "a", None, None, None, true, 2, usize::MAX, &ring)
            .unwrap();
        assert_eq!(
            tail.iter().map(|e| e.timestamp).collect::<Vec<_>>(),
            vec![103, 104]
        );
        let before = s
            .stream_events(
                G,
                "a",
                None,
                None,
                Some(tail[0].position()),
                true,
                10,
                usize::MAX,
                &ring,
            )
            .unwrap();
        assert_eq!(before.len(), 3);
        // Time range: start inclusive, end exclusive.
        let mid = s
            .stream_events(
                G,
                "a",
                Some(101),
                Some(103),
                None,
                false,
                100,
                usize::MAX,
                &ring,
            )
            .unwrap();
        assert_eq!(mid.len(), 2);
        let mut all = Vec::new();
        let (scanned, _) = s
            .scan(G, None, None, None, &ring, |e| {
                all.push((e.timestamp, e.stream.to_string()));
                true
            })
            .unwrap();
        assert_eq!(scanned, 10);
        assert!(all.windows(2).all(|w| w[0].0 <= w[1].0));
        assert_eq!(s.stream_stats(G, "b").unwrap().unwrap().events, 5);
        assert_eq!(
            s.stream_stats(G, "b").unwrap().unwrap().last_event,
            Some(106)
        );
    }

    #[test]
    fn survives_reopen_and_deletes_and_expiry() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("logs.redb");
        let ring = KeyRing::default_only();
        {
            let s = LogStore::open(&p, &[7u8; 32]).unwrap();
            s.put(G, "a", &evs(100, 10), 1, &ring, &[]).unwrap();
        }
        let s = LogStore::open(&p, &[7u8; 32]).unwrap();
        let seqs = s.put(G, "a", &evs(200, 1), 1, &ring, &[]).unwrap();
        assert_eq!(seqs, vec![11], "sequence numbers go on after a reopen");
        assert_eq!(s.expire(G, 105).unwrap(), 5);
        let st = s.stream_stats(G, "a").unwrap().unwrap();
        assert_eq!((st.events, st.first_event), (6, Some(105)));
        s.delete_stream(G, "a").unwrap();
        assert!(s
            .stream_events(G, "a", None, None, None, false, 100, usize::MAX, &ring)
            .unwrap()
            .is_empty());
        s.put(G, "b", &evs(1, 3), 1, &ring, &[]).unwrap();
        s.delete_group(G).unwrap();
        assert_eq!(s.group_id(G).unwrap(), None);
        s.put(G, "b", &evs(1, 1), 1, &ring, &[]).unwrap();
        let (n, _) = s.scan(G, None, None, None, &ring, |_| true).unwrap();
        assert_eq!(
            n, 1,
            "a re-created group does not see its predecessor's events"
        );
    }

    #[test]
    fn sealed_at_rest_and_tampering_is_detected() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("logs.redb");
        let s = LogStore::open(&p, &[7u8; 32]).unwrap();
        let ring = KeyRing::default_only().with_key(1, &[9u8; 32]).unwrap();
        let ring = KeyRing { current: 1, ..ring };
        s.put(
            G,
            "a",
            &[NewEvent {
                timestamp: 1,
                message: "SENTINEL-PLAINTEXT-42".into(),
            }],
            1,
            &ring,
            &[],
        )
        .unwrap();
        drop(s);
        let raw = std::fs::read(&p).unwrap();
        assert!(!raw.windows(21).any(|w| w == b"SENTINEL-PLAINTEXT-42"));
        let s = LogStore::open(&p, &[7u8; 32]).unwrap();
        // Without the slot's key the event cannot be read.
        let err = s.stream_events(
            G,
            "a",
            None,
            None,
            None,
            false,
            10,
            usize::MAX,
            &KeyRing::default_only(),
        );
        assert!(matches!(err, Err(StoreError::Key(_))));
        let ok = s
            .stream_events(G, "a", None, None, None, false, 10, usize::MAX, &ring)
            .unwrap();
        assert_eq!(ok[0].message, "SENTINEL-PLAINTEXT-42");
        assert!(s.tamper_first_event(G).unwrap());
        assert!(s
            .stream_events(G, "a", None, None, None, false, 10, usize::MAX, &ring)
            .is_err());
    }

    #[test]
    fn grouped_puts_from_many_threads_are_all_stored_once() {
        let (_d, s) = store();
        let s = Arc::new(s);
        let hs: Vec<_> = (0..8)
            .map(|t| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for b in 0..20 {
                        let seqs = s
                            .put_grouped(Batch {
                                group: G.into(),
                                stream: format!("s{t}"),
                                events: evs(b * 10, 10),
                                ingestion: 1,
                                ring: KeyRing::default_only(),
                                points: Vec::new(),
                                generation: None,
                            })
                            .unwrap();
                        assert_eq!(seqs.len(), 10);
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        let mut seen = std::collections::HashSet::new();
        let (n, _) = s
            .scan(G, None, None, None, &KeyRing::default_only(), |e| {
                assert!(seen.insert(e.seq));
                true
            })
            .unwrap();
        assert_eq!(n, 8 * 20 * 10);
        assert_eq!(s.stream_stats(G, "s3").unwrap().unwrap().events, 200);
    }

    #[test]
    fn puts_reach_only_the_generation_they_name() {
        let (_d, s) = store();
        let ring = KeyRing::default_only();
        s.create_group(G, 111).unwrap();
        let batch = |generation, stream: &str| Batch {
            group: G.into(),
            stream: stream.into(),
            events: evs(1, 2),
            ingestion: 1,
            ring: ring.clone(),
            points: Vec::new(),
            generation: Some(generation),
        };
        assert!(
            matches!(s.put_grouped(batch(111, "s")), Err(StoreError::Gone(_))),
            "no stream yet"
        );
        s.create_stream(G, "s").unwrap();
        s.put_grouped(batch(111, "s")).unwrap();
        // Deleted and re-created: a put that saw the old group reaches nothing.
        s.delete_group(G).unwrap();
        s.create_group(G, 222).unwrap();
        s.create_stream(G, "s").unwrap();
        assert!(matches!(
            s.put_grouped(batch(111, "s")),
            Err(StoreError::Gone(_))
        ));
        let (n, _) = s.scan(G, None, None, None, &ring, |_| true).unwrap();
        assert_eq!(n, 0);
        assert!(matches!(
            s.create_stream("us-east-1\u{0}nope", "s"),
            Err(StoreError::Gone(_))
        ));
    }

    #[test]
    fn metric_points_accumulate_per_minute() {
        let (_d, s) = store();
        let ring = KeyRing::default_only();
        let pts = vec![
            ("ns\u{0}m\u{0}{}".to_string(), 5, 1.0),
            ("ns\u{0}m\u{0}{}".to_string(), 5, 3.0),
        ];
        s.put(G, "a", &evs(1, 2), 1, &ring, &pts).unwrap();
        let p = s.points("ns\u{0}m\u{0}{}", 0, 10).unwrap();
        assert_eq!(
            p,
            vec![(
                5,
                Point {
                    sum: 4.0,
                    count: 2,
                    min: 1.0,
                    max: 3.0
                }
            )]
        );
    }
}
