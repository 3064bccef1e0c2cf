//! Event history for LookupEvents: a journal consumer that indexes events by region and time
//! and by each of the eight lookup attributes; lookups read the indexes backwards (newest
//! first).
//!
//! Compact by design (issue 15: ≤ 1 KB per event beyond the delivered files):
//! - records are kept in **blocks** of up to [`BLOCK_BYTES`] of consecutive records,
//!   deflate-compressed together (CloudTrail records repeat most of their bytes; a block
//!   costs ~5–10% of its records). The newest block stays open and is rewritten at each
//!   step until it is full;
//! - the time index maps (partition, second, journal seq) → block id. Keys are fixed-width
//!   and ascend with time, so a new event's entries go at the end of their key run (an
//!   index in newest-first order put every insert at the front of a leaf, moving the whole
//!   leaf each time: that was most of the indexer's cost);
//! - attribute index keys hold an 8-byte hash of the value, not the value: a hit is
//!   confirmed against the record itself before it is answered (a collision costs a read,
//!   never a wrong answer);
//! - the attribute index holds **postings**: one entry per value and second per indexing
//!   step, listing that step's events (journal seqs), not one entry per event and value.
//!   The values most events share (event name and source, user, access key, resource) cost
//!   one B-tree insert per step instead of one per event (a GetTrailStatus load spent more
//!   than half the indexer in those inserts).
//!
//! The index and its journal position commit in one database transaction, so after a crash
//! the consumer resumes exactly where the index stops. The journal cursor is committed
//! lazily and only lets the journal drop segments the index has passed. Retention deletes:
//! index entries of expired events go, and a block goes once every record in it expired.

use crate::protocol::ApiError;
use cairn_journal::Journal;
use cairn_record::EventRecord;
use cairn_trail::entry::{self, Entry};
use chrono::{DateTime, TimeZone, Utc};
use redb::{Database, ReadableTable, TableDefinition, TableHandle};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub const CONSUMER: &str = "history";

/// block id → header (max event time i64 BE, raw length u32 BE, records u32 BE) ‖ raw
/// deflate of the records, each `seq u64 BE ‖ len u32 BE ‖ JSON`.
const BLOCKS: TableDefinition<u64, &[u8]> = TableDefinition::new("blocks");
/// key: partition hash (4) ‖ second (u32 BE) ‖ seq (u64 BE) → block id, or (top bit set) 31
/// bits of the event ID's hash ‖ block id (u32): see [`times_value`].
const TIMES: TableDefinition<&[u8; 16], u64> = TableDefinition::new("event_times");
/// key: partition hash (4) ‖ attribute (1) ‖ value hash (8) ‖ second (u32 BE) ‖ first seq
/// (u64 BE) → the posting's other seqs: those of one step's events at that second with that
/// value, ascending, as LEB128 deltas from the one before (empty: the first alone). Postings
/// at one second hold disjoint, ascending seq ranges (each step reads past the last), so
/// their keys and contents, read backwards, are newest-first (second, seq) order.
const POSTINGS: TableDefinition<&[u8; 25], &[u8]> = TableDefinition::new("event_postings");
/// The attribute index before postings (one entry per event and value; the same keys, no
/// value): moved into [`POSTINGS`] at open, then deleted.
const ATTRS: TableDefinition<&[u8; 25], ()> = TableDefinition::new("event_attrs");
/// key: newest record time of a block (u64 BE) ‖ block id → (): what retention scans.
const BLOCK_TIMES: TableDefinition<&[u8], ()> = TableDefinition::new("block_times");
const STATE: TableDefinition<&str, u64> = TableDefinition::new("state");
/// The layout before blocks (whole records, attribute values in keys): read once at open,
/// moved into the blocks, then deleted.
const OLD_EVENTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("events");
const OLD_ATTRS: TableDefinition<&[u8], ()> = TableDefinition::new("attrs");
/// The indexes in newest-first order (second stored as `u32::MAX - second`), before they
/// ascended: rewritten into [`TIMES`] and [`POSTINGS`] at open, then deleted.
const REV_TIMES: TableDefinition<&[u8], u64> = TableDefinition::new("times");
const REV_ATTRS: TableDefinition<&[u8], ()> = TableDefinition::new("attr_hashes");

/// Uncompressed bytes at which a block is sealed.
pub const BLOCK_BYTES: usize = 128 << 10;
const HEADER: usize = 16;

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

/// An event time as the index keys hold it (u32 holds seconds until 2106).
fn secs(t: i64) -> u32 {
    t.clamp(0, u32::MAX as i64) as u32
}

/// Newest-first seconds: the unit of a page position (NextToken), as before the keys
/// ascended (tokens from then are refused by their version: within a second they ran in
/// the other direction). Its own inverse.
fn rev(s: u32) -> u32 {
    u32::MAX - s
}

/// The partition of an event: its region, with data events apart (they are opt-in).
fn partition(region: &str, data: bool) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(b"partition\0");
    h.update(region.as_bytes());
    h.update([data as u8]);
    let d = h.finalize();
    [d[0], d[1], d[2], d[3]]
}

/// The 8 bytes that stand for an attribute value in index keys: a hash of the value. An
/// event ID that carries its second (as cairn mints them: `builder::event_uuid`) leads with
/// that second and keeps 4 bytes of hash, so IDs minted in time order are filed at the end
/// of the EventId run: a random hash put every new ID at a random leaf of a B-tree as large
/// as the history, a page copied and written per event. (cairn minted only version 4 IDs
/// before; those keep the whole hash, so an existing index needs no change. The exception is
/// a benchmark's data directory: synthesized events had random hex IDs, one in 16 of them
/// v7-shaped, and those are no longer found by EventId.)
fn value_hash(attr: u8, value: &str) -> [u8; 8] {
    let mut h = Sha256::new();
    h.update([attr]);
    h.update(value.as_bytes());
    let d = h.finalize();
    let mut out = [0u8; 8];
    out.copy_from_slice(&d[..8]);
    if attr == 0 {
        if let Some(s) = cairn_record::builder::event_uuid_second(value) {
            out[..4].copy_from_slice(&secs(s).to_be_bytes());
        }
    }
    out
}

fn time_key(part: &[u8; 4], t: u32, seq: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..4].copy_from_slice(part);
    k[4..8].copy_from_slice(&t.to_be_bytes());
    k[8..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// An event's entry in [`TIMES`]. An event ID that carries the second the event is filed at
/// (as cairn mints them) is filed there, not in a posting of its own: its 31-bit hash goes
/// into the entry (top bit set, block id in the low 32 bits), and a lookup by that ID scans
/// the entries of its second for the hash. That was one B-tree insert per event (every ID
/// is its own posting), about half of the indexer's inserts. Other IDs, and blocks past
/// `u32::MAX`, keep the plain block id and a posting. Returns the entry, and whether the ID
/// is filed in it (no posting).
fn times_value(block: u64, event_id: &str, t: u32) -> (u64, bool) {
    let by_time = block <= u32::MAX as u64
        && cairn_record::builder::event_uuid_second(event_id).map(secs) == Some(t);
    if !by_time {
        return (block, false);
    }
    (1 << 63 | (id_hash(event_id) as u64) << 32 | block, true)
}

/// The 31 bits of an event ID's hash [`times_value`] files it under.
fn id_hash(event_id: &str) -> u32 {
    let h = value_hash(0, event_id);
    u32::from_be_bytes([h[4], h[5], h[6], h[7]]) & 0x7fff_ffff
}

/// The block a [`TIMES`] entry names.
fn times_block(v: u64) -> u64 {
    if v >> 63 == 1 {
        v & 0xffff_ffff
    } else {
        v
    }
}

/// The ID hash a [`TIMES`] entry carries, if any.
fn times_id_hash(v: u64) -> Option<u32> {
    (v >> 63 == 1).then_some((v >> 32) as u32 & 0x7fff_ffff)
}

fn attr_prefix(part: &[u8; 4], attr: u8, value: &str) -> [u8; 13] {
    let mut k = [0u8; 13];
    k[..4].copy_from_slice(part);
    k[4] = attr;
    k[5..].copy_from_slice(&value_hash(attr, value));
    k
}

fn attr_key(part: &[u8; 4], attr: u8, value: &str, t: u32, seq: u64) -> [u8; 25] {
    let mut k = [0u8; 25];
    k[..13].copy_from_slice(&attr_prefix(part, attr, value));
    k[13..17].copy_from_slice(&t.to_be_bytes());
    k[17..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// Appends `d` as LEB128.
fn push_varint(out: &mut Vec<u8>, mut d: u64) {
    loop {
        let b = (d & 0x7f) as u8;
        d >>= 7;
        if d == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// The seqs of a posting, ascending: its key's first seq, then the deltas of its value (a
/// malformed tail is ignored).
fn posting_seqs(first: u64, rest: &[u8]) -> Vec<u64> {
    let mut out = Vec::with_capacity(1 + rest.len() / 2);
    out.push(first);
    let (mut cur, mut d, mut shift) = (first, 0u64, 0u32);
    for &b in rest {
        if shift > 63 {
            break;
        }
        d |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            // Seqs only rise: a zero or overflowing delta is corruption, and what follows it
            // is not trusted (never an event twice, never one out of order).
            match cur.checked_add(d) {
                Some(next) if d > 0 => cur = next,
                _ => break,
            }
            out.push(cur);
            (d, shift) = (0, 0);
        } else {
            shift += 7;
        }
    }
    out
}

/// One posting being built by an indexing step.
struct Posting {
    first: u64,
    last: u64,
    rest: Vec<u8>,
}

impl Posting {
    fn new(seq: u64) -> Posting {
        Posting {
            first: seq,
            last: seq,
            rest: Vec::new(),
        }
    }

    /// Adds `seq` (a step reads the journal in order: each seq is above the last).
    fn add(&mut self, seq: u64) {
        if seq > self.last {
            push_varint(&mut self.rest, seq - self.last);
            self.last = seq;
        }
    }
}

/// The postings of one step: (attribute prefix ‖ second) → posting, in key order (inserted
/// sorted, they touch each B-tree leaf once).
#[derive(Default)]
struct StepPostings(std::collections::BTreeMap<[u8; 17], Posting>);

impl StepPostings {
    fn add(&mut self, prefix: &[u8; 13], t: u32, seq: u64) {
        let mut k = [0u8; 17];
        k[..13].copy_from_slice(prefix);
        k[13..].copy_from_slice(&t.to_be_bytes());
        self.0
            .entry(k)
            .and_modify(|p| p.add(seq))
            .or_insert_with(|| Posting::new(seq));
    }

    fn write(self, table: &mut redb::Table<&[u8; 25], &[u8]>) -> Result<(), String> {
        for (k, p) in self.0 {
            let mut key = [0u8; 25];
            key[..17].copy_from_slice(&k);
            key[17..].copy_from_slice(&p.first.to_be_bytes());
            table.insert(&key, p.rest.as_slice()).map_err(err)?;
        }
        Ok(())
    }
}

/// Removes every posting of these (attribute prefix, second) pairs: at retention, whole
/// seconds expire, so every event a posting lists is gone with it.
fn remove_postings(
    table: &mut redb::Table<&[u8; 25], &[u8]>,
    keys: std::collections::BTreeSet<([u8; 13], u32)>,
) -> Result<(), String> {
    for (prefix, t) in keys {
        let mut lo = [0u8; 25];
        lo[..13].copy_from_slice(&prefix);
        lo[13..17].copy_from_slice(&t.to_be_bytes());
        let mut hi = lo;
        hi[17..].copy_from_slice(&u64::MAX.to_be_bytes());
        table
            .retain_in::<&[u8; 25], _>(&lo..=&hi, |_, _| false)
            .map_err(err)?;
    }
    Ok(())
}

/// The (second, seq) suffix of an index key.
fn tail(key: &[u8]) -> (u32, u64) {
    let n = key.len();
    let mut t = [0u8; 4];
    t.copy_from_slice(&key[n - 12..n - 8]);
    let mut s = [0u8; 8];
    s.copy_from_slice(&key[n - 8..]);
    (u32::from_be_bytes(t), u64::from_be_bytes(s))
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

/// Who made an event, as far as the lookup attributes need: type, user name, ARN, access key.
type Who<'a> = (&'a str, Option<&'a str>, Option<&'a str>, Option<&'a str>);

/// The attribute values an event is indexed under (the indexer reads them from a `Lite`, a
/// stored record from its `EventRecord`: one computation for both).
fn attributes(
    facts: &cairn_record::selector::EventFacts,
    event_id: &str,
    who: Option<Who>,
) -> Vec<(u8, String)> {
    let mut attrs = vec![
        (0u8, event_id.to_string()),
        (1, facts.name.clone()),
        (6, facts.source.clone()),
    ];
    // ReadOnly (two values) is answered by filtering the time index, not indexed.
    if let Some((kind, user_name, arn, key)) = who {
        if let Some(u) = lookup_username(kind, user_name, arn) {
            attrs.push((3, u));
        }
        if let Some(a) = key {
            attrs.push((7, a.to_string()));
        }
    }
    for (ty, name, _) in &facts.resources {
        attrs.push((4, ty.clone()));
        attrs.push((5, name.clone()));
    }
    attrs.sort();
    attrs.dedup();
    attrs
}

impl Lite<'_> {
    fn attributes(&self, facts: &cairn_record::selector::EventFacts) -> Vec<(u8, String)> {
        let who = self.user_identity.as_ref().map(|i| {
            (
                i.kind.as_ref(),
                i.user_name.as_deref(),
                i.arn.as_deref(),
                i.access_key_id.as_deref(),
            )
        });
        attributes(facts, &self.event_id, who)
    }
}

/// The `Event` shape of LookupEvents for a stored record.
fn lookup_event(rec: &EventRecord, json: &[u8]) -> Value {
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
    Value::Object(ev)
}

/// What the index knows of a stored record: its partition, its time, its attribute values
/// and `readOnly` — recomputed from the record itself (to confirm a hashed hit, and to find
/// the keys to delete at retention).
struct Stored {
    rec: EventRecord,
    part: [u8; 4],
    time: i64,
    attrs: Vec<(u8, String)>,
}

impl Stored {
    fn parse(json: &[u8]) -> Option<Stored> {
        let rec: EventRecord = serde_json::from_slice(json).ok()?;
        let facts = cairn_record::selector::EventFacts::from(&rec);
        let who = rec.user_identity.as_ref().map(|i| {
            (
                i.identity_type.as_str(),
                i.user_name.as_deref(),
                i.arn.as_deref(),
                i.access_key_id.as_deref(),
            )
        });
        let data = facts.category == cairn_record::record::category::DATA;
        Some(Stored {
            part: partition(&facts.region, data),
            time: rec.event_time.timestamp(),
            attrs: attributes(&facts, &rec.event_id, who),
            rec,
        })
    }

    fn has(&self, attr: u8, value: &str) -> bool {
        if attr == 2 {
            self.rec.read_only.map(|b| b.to_string()).as_deref() == Some(value)
        } else {
            self.attrs.iter().any(|(k, v)| *k == attr && v == value)
        }
    }
}

/// A block being filled: its id, its records and their largest event time.
///
/// Its buffers (the records, the compressor, the compressed block) are kept from one block
/// to the next: the indexer rewrites the open block at every step, and allocating them anew
/// each time was most of what the allocator returned to the system and faulted back in.
struct OpenBlock {
    id: u64,
    /// The records as a block holds them (`seq u64 BE ‖ len u32 BE ‖ JSON` each).
    raw: Vec<u8>,
    count: u32,
    max_time: i64,
    /// The newest time its `block_times` entry is under (`None`: not written yet).
    stored_max: Option<i64>,
    deflate: libdeflater::Compressor,
    stored: Vec<u8>,
}

/// libdeflate's level for history blocks. On records, level 1 compresses ~1.7× faster
/// than level 4 (measured: 410–440 against ~250 MB/s) for blocks ~7% larger; the indexer
/// compresses every event once, which was about a third of its CPU at level 4.
const BLOCK_LEVEL: i32 = 1;

impl OpenBlock {
    fn empty(id: u64) -> OpenBlock {
        OpenBlock {
            id,
            raw: Vec::new(),
            count: 0,
            max_time: 0,
            stored_max: None,
            deflate: libdeflater::Compressor::new(
                libdeflater::CompressionLvl::new(BLOCK_LEVEL).unwrap_or_default(),
            ),
            stored: Vec::new(),
        }
    }

    /// Block `id`, empty, in this block's buffers.
    fn restart(&mut self, id: u64) {
        self.id = id;
        self.raw.clear();
        self.count = 0;
        self.max_time = 0;
        self.stored_max = None;
    }

    fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn push(&mut self, seq: u64, json: &[u8], time: i64) {
        self.raw.extend_from_slice(&seq.to_be_bytes());
        self.raw
            .extend_from_slice(&(json.len() as u32).to_be_bytes());
        self.raw.extend_from_slice(json);
        self.count += 1;
        self.max_time = self.max_time.max(time);
    }

    /// The block as stored: header ‖ raw deflate of the records.
    fn encode(&mut self) -> Result<&[u8], String> {
        let bound = HEADER + self.deflate.deflate_compress_bound(self.raw.len());
        self.stored.clear();
        self.stored.resize(bound, 0);
        // The bound guarantees room; a failure is not stored as an empty block.
        let n = self
            .deflate
            .deflate_compress(&self.raw, &mut self.stored[HEADER..])
            .map_err(|e| format!("compressing an event history block: {e:?}"))?;
        self.stored.truncate(HEADER + n);
        self.stored[..8].copy_from_slice(&self.max_time.to_be_bytes());
        self.stored[8..12].copy_from_slice(&(self.raw.len() as u32).to_be_bytes());
        self.stored[12..16].copy_from_slice(&self.count.to_be_bytes());
        Ok(&self.stored)
    }
}

fn block_time_key(max_time: i64, id: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&(max_time.max(0) as u64).to_be_bytes());
    k[8..].copy_from_slice(&id.to_be_bytes());
    k
}

/// The tables a block lives in, opened in one write transaction: its records, its entry in
/// `block_times` (newest record time ‖ id: what retention scans), and the id counter.
struct BlockTables<'t> {
    blocks: redb::Table<'t, u64, &'static [u8]>,
    block_times: redb::Table<'t, &'static [u8], ()>,
    state: redb::Table<'t, &'static str, u64>,
}

impl<'t> BlockTables<'t> {
    fn open(tx: &'t redb::WriteTransaction) -> Result<Self, String> {
        Ok(BlockTables {
            blocks: tx.open_table(BLOCKS).map_err(err)?,
            block_times: tx.open_table(BLOCK_TIMES).map_err(err)?,
            state: tx.open_table(STATE).map_err(err)?,
        })
    }

    /// A new block id: ids only grow (a deleted block's id is never reused).
    fn alloc(&mut self) -> Result<u64, String> {
        let last = self
            .blocks
            .last()
            .map_err(err)?
            .map(|(k, _)| k.value() + 1)
            .unwrap_or(0);
        let counted = self
            .state
            .get("next_block")
            .map_err(err)?
            .map(|v| v.value())
            .unwrap_or(0);
        let id = last.max(counted);
        self.state.insert("next_block", id + 1).map_err(err)?;
        Ok(id)
    }

    /// The open block as the database holds it, or a new one.
    fn reopen(&mut self) -> Result<OpenBlock, String> {
        let id = self
            .state
            .get("open_block")
            .map_err(err)?
            .map(|v| v.value());
        let Some(id) = id else {
            return Ok(OpenBlock::empty(self.alloc()?));
        };
        let mut b = OpenBlock::empty(id);
        if let Some(v) = self.blocks.get(id).map_err(err)? {
            let stored = block_max_time(v.value());
            if let Some(mut raw) = block_raw(v.value()) {
                // Whole records only: a record cut short (and whatever follows) is dropped.
                let (count, end) =
                    records(&raw).fold((0, 0), |(n, e), (_, j)| (n + 1, e + 12 + j.len()));
                raw.truncate(end);
                b.count = count;
                b.raw = raw;
            }
            b.max_time = stored;
            b.stored_max = Some(stored);
        }
        Ok(b)
    }

    /// Writes `b` (again) and files it under its newest record's time.
    fn write(&mut self, b: &mut OpenBlock) -> Result<(), String> {
        let id = b.id;
        self.blocks.insert(id, b.encode()?).map_err(err)?;
        if b.stored_max != Some(b.max_time) {
            if let Some(old) = b.stored_max {
                self.block_times
                    .remove(block_time_key(old, b.id).as_slice())
                    .map_err(err)?;
            }
            self.block_times
                .insert(block_time_key(b.max_time, b.id).as_slice(), ())
                .map_err(err)?;
            b.stored_max = Some(b.max_time);
        }
        Ok(())
    }
}

fn block_max_time(v: &[u8]) -> i64 {
    let mut t = [0u8; 8];
    if v.len() >= 8 {
        t.copy_from_slice(&v[..8]);
    }
    i64::from_be_bytes(t)
}

/// The records of a stored block; an unreadable block reads as empty (its events are not
/// answered rather than failing every query that touches it).
fn decode_block(v: &[u8]) -> Vec<(u64, Vec<u8>)> {
    match block_raw(v) {
        Some(raw) => records(&raw).map(|(seq, j)| (seq, j.to_vec())).collect(),
        None => Vec::new(),
    }
}

/// A stored block's records, decompressed (`None`: it does not decompress).
fn block_raw(v: &[u8]) -> Option<Vec<u8>> {
    let mut raw = Vec::new();
    inflate_into(&mut libdeflater::Decompressor::new(), v, &mut raw).then_some(raw)
}

/// Most bytes deflate can expand one byte into (a run of 258 per 2 bits, rounded up).
const DEFLATE_MAX_RATIO: usize = 1032;

/// Decompresses a stored block's records into `raw` (its buffer reused); false when the
/// block does not decompress. A stated size no deflate stream of the block's length can
/// reach (a damaged or forged header) is refused before any buffer is sized for it.
fn inflate_into(d: &mut libdeflater::Decompressor, v: &[u8], raw: &mut Vec<u8>) -> bool {
    raw.clear();
    if v.len() < HEADER {
        return false;
    }
    let mut n = [0u8; 4];
    n.copy_from_slice(&v[8..12]);
    let raw_len = u32::from_be_bytes(n) as usize;
    let ok = raw_len <= (v.len() - HEADER).saturating_mul(DEFLATE_MAX_RATIO) && {
        raw.resize(raw_len, 0);
        d.deflate_decompress(&v[HEADER..], raw)
            .map(|got| got == raw_len)
            .unwrap_or(false)
    };
    if !ok {
        raw.clear();
        tracing::error!("an event history block does not decompress; its events are skipped");
    }
    ok
}

/// The (seq, JSON) records of a block's raw bytes, up to the first that is cut short.
fn records(raw: &[u8]) -> impl Iterator<Item = (u64, &[u8])> {
    spans(raw).map(|(seq, start, len)| (seq, &raw[start..start + len]))
}

/// Where the records of a block's raw bytes lie: (seq, start, len) each, up to the first
/// that is cut short.
fn spans(raw: &[u8]) -> impl Iterator<Item = (u64, usize, usize)> + '_ {
    let mut at = 0;
    std::iter::from_fn(move || {
        let head = raw.get(at..at + 12)?;
        let mut s = [0u8; 8];
        s.copy_from_slice(&head[..8]);
        let mut l = [0u8; 4];
        l.copy_from_slice(&head[8..]);
        let len = u32::from_be_bytes(l) as usize;
        let start = at + 12;
        raw.get(start..start + len)?;
        at = start + len;
        Some((u64::from_be_bytes(s), start, len))
    })
}

/// A decoded block: its records' bytes and, in seq order, where each lies in them.
#[derive(Default)]
struct Decoded {
    raw: Vec<u8>,
    /// (seq, start, len) of each record in `raw`.
    at: Vec<(u64, u32, u32)>,
}

impl Decoded {
    fn get(&self, seq: u64) -> Option<&[u8]> {
        let i = self.at.binary_search_by_key(&seq, |(s, _, _)| *s).ok()?;
        let (_, start, len) = self.at[i];
        self.raw.get(start as usize..start as usize + len as usize)
    }
}

/// Decoded blocks' buffers, kept for the next reader: a lookup decodes a block or a few
/// (mostly the open one), and allocating those afresh faulted their pages in each time
/// (freed pages go back to the OS at once), about half of a lookup's CPU under load.
/// Bounded by [`POOL_BUFFERS`] buffers of at most [`POOL_BUFFER_BYTES`] each (and their
/// record tables, 16 bytes per record of at least 12).
static DECODED_POOL: Mutex<Vec<Decoded>> = Mutex::new(Vec::new());
const POOL_BUFFERS: usize = 4;
const POOL_BUFFER_BYTES: usize = 2 * BLOCK_BYTES;

/// Reads records by block id, keeping the last few blocks decoded (a page of hits mostly
/// shares blocks) and counting the blocks it decoded.
struct BlockReader<'t, T: ReadableTable<u64, &'static [u8]>> {
    table: &'t T,
    /// Most recently used last.
    cache: Vec<(u64, Decoded)>,
    decoded: usize,
    inflater: libdeflater::Decompressor,
}

const READER_CACHE: usize = 8;

impl<'t, T: ReadableTable<u64, &'static [u8]>> BlockReader<'t, T> {
    fn new(table: &'t T) -> Self {
        BlockReader {
            table,
            cache: Vec::new(),
            decoded: 0,
            inflater: libdeflater::Decompressor::new(),
        }
    }

    fn get(&mut self, block: u64, seq: u64) -> Result<Option<&[u8]>, redb::StorageError> {
        Ok(self.get_counted(block, seq)?.0)
    }

    /// [`BlockReader::get`], with the number of blocks decoded so far.
    fn get_counted(
        &mut self,
        block: u64,
        seq: u64,
    ) -> Result<(Option<&[u8]>, usize), redb::StorageError> {
        match self.cache.iter().position(|(id, _)| *id == block) {
            Some(i) => {
                let hit = self.cache.remove(i);
                self.cache.push(hit);
            }
            None => {
                let mut d = if self.cache.len() == READER_CACHE {
                    self.cache.remove(0).1
                } else {
                    lock_pool().pop().unwrap_or_default()
                };
                d.at.clear();
                let ok = match self.table.get(block)? {
                    Some(v) => inflate_into(&mut self.inflater, v.value(), &mut d.raw),
                    None => false,
                };
                if ok {
                    d.at.extend(spans(&d.raw).map(|(s, start, len)| (s, start as u32, len as u32)));
                }
                self.decoded += 1;
                self.cache.push((block, d));
            }
        }
        let Some((_, d)) = self.cache.last() else {
            return Ok((None, self.decoded));
        };
        Ok((d.get(seq), self.decoded))
    }
}

fn lock_pool() -> std::sync::MutexGuard<'static, Vec<Decoded>> {
    DECODED_POOL.lock().unwrap_or_else(|e| e.into_inner())
}

impl<T: ReadableTable<u64, &'static [u8]>> Drop for BlockReader<'_, T> {
    fn drop(&mut self) {
        // The most recently used are kept when more than the pool takes come back.
        let keep: Vec<Decoded> = self
            .cache
            .drain(..)
            .rev()
            .map(|(_, d)| d)
            .filter(|d| d.raw.capacity() <= POOL_BUFFER_BYTES)
            .take(POOL_BUFFERS)
            .collect();
        let mut pool = lock_pool();
        for d in keep {
            if pool.len() < POOL_BUFFERS {
                pool.push(d);
            }
        }
    }
}

/// What one LookupEvents page may scan before it answers with what it found and a
/// NextToken at the scan position (a filter that rejects nearly everything must not turn
/// one request into a read of the whole history).
const MAX_CANDIDATES: usize = 20_000;
const MAX_BLOCKS_DECODED: usize = 256;
/// Index entries of expired events removed per retention transaction.
const PRUNE_BATCH: usize = 20_000;
/// Expired blocks deleted per retention transaction.
const PRUNE_BLOCKS: usize = 200;

pub struct History {
    db: Database,
    journal: Arc<Journal>,
    /// Kept between steps: opening a reader seeks through its segment.
    reader: Mutex<Option<cairn_journal::JournalReader>>,
    /// The block being filled; `None` until read back from the database (at the first step,
    /// and after a failed step).
    open: Mutex<Option<OpenBlock>>,
    /// Most record bytes one step indexes (its write transaction's size: a memory share).
    batch_bytes: usize,
    /// Record bytes the step under way has taken (0 between steps).
    batch_in_use: std::sync::atomic::AtomicUsize,
    /// Position of the last commit known to be on disk (the journal cursor may move up to it).
    durable_position: AtomicU64,
    last_durable: Mutex<std::time::Instant>,
    force_durable: AtomicBool,
    /// Set by readers that wait for fresh events; wakes the indexer early.
    nudge: (Mutex<bool>, std::sync::Condvar),
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
    /// Position after which to continue: (newest-first second, seq).
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

/// Record bytes one indexing step takes by default (its write transaction's size).
pub const DEFAULT_BATCH_BYTES: usize = 16 << 20;

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

impl History {
    pub fn open(path: &Path, journal: Arc<Journal>) -> Result<Arc<History>, String> {
        Self::open_with(path, journal, DEFAULT_BATCH_BYTES)
    }

    /// [`History::open`] indexing at most `batch_bytes` of records per step (its page cache
    /// is the one `cairn_db` sets for the file name).
    pub fn open_with(
        path: &Path,
        journal: Arc<Journal>,
        batch_bytes: usize,
    ) -> Result<Arc<History>, String> {
        let db = cairn_db::create(path).map_err(err)?;
        let mut start = {
            let tx = db.begin_write().map_err(err)?;
            let pos = {
                tx.open_table(BLOCKS).map_err(err)?;
                tx.open_table(BLOCK_TIMES).map_err(err)?;
                tx.open_table(TIMES).map_err(err)?;
                tx.open_table(POSTINGS).map_err(err)?;
                let t = tx.open_table(STATE).map_err(err)?;
                let p = t.get("position").map_err(err)?.map(|v| v.value());
                p
            };
            tx.commit().map_err(err)?;
            pos
        };
        let registered = journal.register_consumer(CONSUMER).map_err(err)?;
        if start.is_none() {
            start = Some(registered);
        }
        let start = start.unwrap_or(registered).max(registered);
        let (watch, _) = tokio::sync::watch::channel(start);
        let h = History {
            db,
            journal,
            reader: Mutex::new(None),
            open: Mutex::new(None),
            batch_bytes: batch_bytes.max(1 << 20),
            batch_in_use: std::sync::atomic::AtomicUsize::new(0),
            durable_position: AtomicU64::new(start),
            // The first commit after opening is durable: a server that lives only moments
            // (crash loops) still saves what it indexed, instead of re-indexing from the same
            // point at every start while the journal holds everything since.
            last_durable: Mutex::new(
                std::time::Instant::now()
                    .checked_sub(std::time::Duration::from_secs(60))
                    .unwrap_or_else(std::time::Instant::now),
            ),
            force_durable: AtomicBool::new(false),
            nudge: (Mutex::new(false), std::sync::Condvar::new()),
            position: AtomicU64::new(start),
            watch,
            stop: AtomicBool::new(false),
            index_data: AtomicBool::new(true),
        };
        h.migrate()?;
        h.ascend()?;
        h.to_postings()?;
        h.backfill_block_times()?;
        Ok(Arc::new(h))
    }

    /// Whether the database holds a table of one of these names.
    fn has_table(&self, names: &[&str]) -> Result<bool, String> {
        let tx = self.db.begin_read().map_err(err)?;
        let mut tables = tx.list_tables().map_err(err)?;
        Ok(tables.any(|t| names.contains(&t.name())))
    }

    /// Moves a history written in the layout before blocks into blocks, a bounded batch per
    /// transaction (each commits its moved records and their removal together: a crash
    /// resumes where it stopped), then drops the old tables (their pages are reused).
    fn migrate(&self) -> Result<(), String> {
        if !self.has_table(&[OLD_EVENTS.name()])? {
            return Ok(());
        }
        let mut moved = 0usize;
        loop {
            let tx = self.db.begin_write().map_err(err)?;
            let done = {
                let mut old = tx.open_table(OLD_EVENTS).map_err(err)?;
                let mut batch: Vec<(Vec<u8>, u64, Vec<u8>)> = Vec::new();
                let mut bytes = 0;
                for row in old.iter().map_err(err)? {
                    let (k, v) = row.map_err(err)?;
                    let key = k.value();
                    if key.len() < 16 {
                        continue;
                    }
                    let mut s = [0u8; 8];
                    s.copy_from_slice(&key[key.len() - 8..]);
                    bytes += v.value().len();
                    batch.push((key.to_vec(), u64::from_be_bytes(s), v.value().to_vec()));
                    if bytes >= self.batch_bytes {
                        break;
                    }
                }
                if batch.is_empty() {
                    true
                } else {
                    batch.sort_by_key(|(_, s, _)| *s);
                    let mut bt = BlockTables::open(&tx)?;
                    let mut times = tx.open_table(TIMES).map_err(err)?;
                    let mut postings = tx.open_table(POSTINGS).map_err(err)?;
                    let mut cur = OpenBlock::empty(bt.alloc()?);
                    let n = batch.len();
                    for (i, (key, seq, json)) in batch.into_iter().enumerate() {
                        old.remove(key.as_slice()).map_err(err)?;
                        if let Some(st) = Stored::parse(&json) {
                            let t = secs(st.time);
                            times
                                .insert(&time_key(&st.part, t, seq), cur.id)
                                .map_err(err)?;
                            for (a, v) in &st.attrs {
                                postings
                                    .insert(&attr_key(&st.part, *a, v, t, seq), &[][..])
                                    .map_err(err)?;
                            }
                            cur.push(seq, &json, st.time);
                        }
                        if !cur.is_empty() && (cur.raw.len() >= BLOCK_BYTES || i + 1 == n) {
                            bt.write(&mut cur)?;
                            if i + 1 < n {
                                cur.restart(bt.alloc()?);
                            }
                        }
                    }
                    moved += n;
                    false
                }
            };
            if done {
                tx.delete_table(OLD_EVENTS).map_err(err)?;
                tx.delete_table(OLD_ATTRS).map_err(err)?;
                tx.commit().map_err(err)?;
                break;
            }
            tx.commit().map_err(err)?;
        }
        tracing::info!(records = moved, "event history moved to compressed blocks");
        Ok(())
    }

    /// Rewrites indexes kept newest-first (the layout before the keys ascended) into the
    /// ascending tables, a bounded batch per transaction (each commits the rewritten entries
    /// and their removal together: a crash resumes where it stopped), then drops the old
    /// tables. Only the second in each key changes.
    fn ascend(&self) -> Result<(), String> {
        if !self.has_table(&[REV_TIMES.name(), REV_ATTRS.name()])? {
            return Ok(());
        }
        /// The key with its second (at `at`) turned from newest-first to ascending.
        fn flip<const N: usize>(old: &[u8], at: usize) -> Option<[u8; N]> {
            let mut k: [u8; N] = old.try_into().ok()?;
            let mut t = [0u8; 4];
            t.copy_from_slice(&k[at..at + 4]);
            k[at..at + 4].copy_from_slice(&rev(u32::from_be_bytes(t)).to_be_bytes());
            Some(k)
        }
        const BATCH: usize = 100_000;
        let moved = self.in_batches(
            |tx| {
                let mut old_times = tx.open_table(REV_TIMES).map_err(err)?;
                let mut old_attrs = tx.open_table(REV_ATTRS).map_err(err)?;
                let mut times = tx.open_table(TIMES).map_err(err)?;
                let mut postings = tx.open_table(POSTINGS).map_err(err)?;
                let mut n = 0;
                while n < BATCH {
                    // From the oldest (the old tables' end): the new keys go in as appends.
                    let Some((k, b)) = old_times.pop_last().map_err(err)? else {
                        break;
                    };
                    if let Some(k) = flip::<16>(k.value(), 4) {
                        times.insert(&k, b.value()).map_err(err)?;
                    }
                    n += 1;
                }
                while n < BATCH {
                    let Some((k, _)) = old_attrs.pop_last().map_err(err)? else {
                        break;
                    };
                    if let Some(k) = flip::<25>(k.value(), 13) {
                        postings.insert(&k, &[][..]).map_err(err)?;
                    }
                    n += 1;
                }
                Ok(n)
            },
            |tx| {
                tx.delete_table(REV_TIMES).map_err(err)?;
                tx.delete_table(REV_ATTRS).map_err(err)?;
                Ok(())
            },
        )?;
        tracing::info!(
            entries = moved,
            "event history index rewritten in time order"
        );
        Ok(())
    }

    /// Runs `batch` in one write transaction after another until it moves nothing, then
    /// `finish` (dropping the old tables) in that last one. Each transaction commits the
    /// entries it moved with their removal: a crash resumes where it stopped. Returns the
    /// number moved.
    fn in_batches(
        &self,
        mut batch: impl FnMut(&redb::WriteTransaction) -> Result<usize, String>,
        finish: impl FnOnce(&redb::WriteTransaction) -> Result<(), String>,
    ) -> Result<usize, String> {
        let mut moved = 0;
        loop {
            let tx = self.db.begin_write().map_err(err)?;
            let n = batch(&tx)?;
            if n == 0 {
                finish(&tx)?;
                tx.commit().map_err(err)?;
                return Ok(moved);
            }
            tx.commit().map_err(err)?;
            moved += n;
        }
    }

    /// Moves the attribute index of one entry per event and value into postings of one
    /// event each (the same keys), a bounded batch per transaction, then drops it.
    fn to_postings(&self) -> Result<(), String> {
        if !self.has_table(&[ATTRS.name()])? {
            return Ok(());
        }
        const BATCH: usize = 100_000;
        let moved = self.in_batches(
            |tx| {
                let mut old = tx.open_table(ATTRS).map_err(err)?;
                let mut postings = tx.open_table(POSTINGS).map_err(err)?;
                let mut n = 0;
                while n < BATCH {
                    let Some((k, _)) = old.pop_first().map_err(err)? else {
                        break;
                    };
                    postings.insert(k.value(), &[][..]).map_err(err)?;
                    n += 1;
                }
                Ok(n)
            },
            |tx| tx.delete_table(ATTRS).map(drop).map_err(err),
        )?;
        tracing::info!(
            entries = moved,
            "event history attribute index moved into postings"
        );
        Ok(())
    }

    /// Files every block under its newest record's time when `block_times` is empty but
    /// blocks exist (a history written before retention scanned by time).
    fn backfill_block_times(&self) -> Result<(), String> {
        let tx = self.db.begin_write().map_err(err)?;
        {
            let mut bt = BlockTables::open(&tx)?;
            if bt.block_times.first().map_err(err)?.is_some() {
                return Ok(());
            }
            let rows: Vec<(u64, i64)> = bt
                .blocks
                .iter()
                .map_err(err)?
                .filter_map(|r| r.ok())
                .map(|(k, v)| (k.value(), block_max_time(v.value())))
                .collect();
            for (id, t) in rows {
                bt.block_times
                    .insert(block_time_key(t, id).as_slice(), ())
                    .map_err(err)?;
            }
        }
        tx.commit().map_err(err)?;
        Ok(())
    }

    /// Whether data events are indexed from now on (`ApiOptions::lookup_extensions`; data
    /// events recorded while it was off are not searchable when it is turned on).
    pub fn set_index_data(&self, on: bool) {
        self.index_data.store(on, Ordering::Release);
    }

    /// Record bytes the indexing step under way holds.
    pub fn batch_in_use(&self) -> usize {
        self.batch_in_use.load(Ordering::Relaxed)
    }

    /// Journal position the index has consumed.
    pub fn position(&self) -> u64 {
        self.position.load(Ordering::Acquire)
    }

    /// Indexes what the journal holds beyond the current position (at most `max` records).
    /// Returns the number of records consumed.
    pub fn step(&self, max: usize) -> Result<usize, String> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let r = self.step_locked(max, &mut open);
        self.batch_in_use.store(0, Ordering::Relaxed);
        if r.is_err() {
            // What the failed transaction left in memory is not what the database holds.
            *open = None;
            *self.reader.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
        r
    }

    fn step_locked(&self, max: usize, open: &mut Option<OpenBlock>) -> Result<usize, String> {
        let from = self.position();
        let mut slot = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        if slot.as_ref().map(|r| r.position()) != Some(from) {
            *slot = Some(self.journal.reader(from).map_err(err)?);
        }
        let Some(reader) = slot.as_mut() else {
            return Ok(0);
        };
        let mut tx = self.db.begin_write().map_err(err)?;
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
        let mut bytes = 0;
        let index_data = self.index_data.load(Ordering::Acquire);
        {
            let mut bt = BlockTables::open(&tx)?;
            let mut times = tx.open_table(TIMES).map_err(err)?;
            let mut postings = tx.open_table(POSTINGS).map_err(err)?;
            let mut step_postings = StepPostings::default();
            if open.is_none() {
                *open = Some(bt.reopen()?);
            }
            let Some(block) = open.as_mut() else {
                return Ok(0);
            };
            let mut changed = false;
            while n < max && bytes < self.batch_bytes {
                let Some((seq, raw)) = reader.next_record().map_err(err)? else {
                    break;
                };
                n += 1;
                bytes += raw.len();
                self.batch_in_use.store(bytes, Ordering::Relaxed);
                let Ok(Entry::Event { header, json } | Entry::Resolved { header, json, .. }) =
                    entry::decode(&raw)
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
                let t = secs(header.time);
                let (value, id_by_time) = times_value(block.id, &lite.event_id, t);
                times.insert(&time_key(&part, t, seq), value).map_err(err)?;
                for (k, v) in lite.attributes(&header.facts) {
                    if k == 0 && id_by_time {
                        continue;
                    }
                    step_postings.add(&attr_prefix(&part, k, &v), t, seq);
                }
                block.push(seq, &json, header.time);
                changed = true;
                if block.raw.len() >= BLOCK_BYTES {
                    bt.write(block)?;
                    block.restart(bt.alloc()?);
                    changed = false;
                }
            }
            if changed {
                bt.write(block)?;
            }
            step_postings.write(&mut postings)?;
            if block.is_empty() {
                bt.state.remove("open_block").map_err(err)?;
            } else {
                bt.state.insert("open_block", block.id).map_err(err)?;
            }
            bt.state
                .insert("position", reader.position())
                .map_err(err)?;
        }
        // Nothing new since the last durable commit: no commit, no cursor to move.
        if n == 0
            && (!durable || reader.position() == self.durable_position.load(Ordering::Acquire))
        {
            tx.abort().map_err(err)?;
            return Ok(0);
        }
        tx.commit().map_err(err)?;
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
        let times = tx.open_table(TIMES).map_err(ApiError::internal)?;
        let blocks = tx.open_table(BLOCKS).map_err(ApiError::internal)?;
        let mut reader = BlockReader::new(&blocks);
        let part = partition(&q.region, q.data_events);
        // Newest first: the scan runs backwards from the end time (inclusive) or from just
        // before the page position, down to the start time.
        let start_t = secs(q.start.timestamp());
        let end_t = secs(q.end.timestamp());
        let after = q
            .after
            .map(|(t, s)| (rev(t.min(u32::MAX as u64) as u32), s));
        let (upto_t, upto_seq) = match after {
            // A position after the end time (only a forged token has one) starts at it.
            Some((t, s)) if t <= end_t => match s.checked_sub(1) {
                Some(s) => (t, s),
                None => match t.checked_sub(1) {
                    Some(t) => (t, u64::MAX),
                    None => return Ok((Vec::new(), None)),
                },
            },
            _ => (end_t, u64::MAX),
        };
        if upto_t < start_t {
            return Ok((Vec::new(), None));
        }
        let mut out = Vec::new();
        let mut last = None;
        let mut scanned = 0usize;
        // ReadOnly is not indexed: the first other attribute is the index scanned (or the
        // time index); every attribute, that one included, is checked against the record.
        let indexed: Option<&(u8, String)> = q.attributes.iter().find(|(k, _)| *k != 2);
        // Whether to go on after the candidate at (t, s): false once the page is full (the
        // position is that of its last event) or the scan reached its bound (the position
        // is the candidate's: the next page goes on from there).
        let mut take = |json: Option<&[u8]>, decoded: usize, t: u32, s: u64| -> bool {
            scanned += 1;
            if let Some(st) = json.and_then(Stored::parse) {
                if st.part == part
                    && secs(st.time) == t
                    && q.attributes.iter().all(|(k, v)| st.has(*k, v))
                {
                    if out.len() == q.max_results {
                        return false;
                    }
                    out.push(lookup_event(&st.rec, json.unwrap_or_default()));
                    last = Some((rev(t) as u64, s));
                    return true;
                }
            }
            if scanned >= MAX_CANDIDATES || decoded >= MAX_BLOCKS_DECODED {
                last = Some((rev(t) as u64, s));
                return false;
            }
            true
        };
        let mut stopped = false;
        match indexed {
            None => {
                let lo = time_key(&part, start_t, 0);
                let hi = time_key(&part, upto_t, upto_seq);
                stopped = !scan_times(&times, &mut reader, &lo, &hi, None, &mut take)?;
            }
            Some((attr, value)) => {
                let postings = tx.open_table(POSTINGS).map_err(ApiError::internal)?;
                // An event ID filed by its second (`times_value`): that second's time
                // entries with its hash, newest first, ahead of any posting (an ID names one
                // event: cairn mints them, 74 random bits each; only a forged journal could
                // repeat one, and its events might then page out of time order). The scan
                // reads every entry of one second of one partition (the peak rate at which
                // events are recorded: ~25,000 under `bench api`), keys only; blocks are
                // read for matching hashes alone.
                let id_second = (*attr == 0)
                    .then(|| cairn_record::builder::event_uuid_second(value).map(secs))
                    .flatten()
                    .filter(|t| (start_t..=upto_t).contains(t));
                if let Some(t) = id_second {
                    let hi_seq = if t == upto_t { upto_seq } else { u64::MAX };
                    let lo = time_key(&part, t, 0);
                    let hi = time_key(&part, t, hi_seq);
                    let want = Some(id_hash(value));
                    stopped = !scan_times(&times, &mut reader, &lo, &hi, want, &mut take)?;
                }
                // Postings that start at or before the position; seqs after it (in the one
                // at the position's second) are skipped.
                let lo = attr_key(&part, *attr, value, start_t, 0);
                let hi = attr_key(&part, *attr, value, upto_t, upto_seq);
                'scan: for row in postings
                    .range::<&[u8; 25]>(&lo..=&hi)
                    .map_err(ApiError::internal)?
                    .rev()
                {
                    if stopped {
                        break;
                    }
                    let (k, rest) = row.map_err(ApiError::internal)?;
                    let (t, first) = tail(k.value());
                    for s in posting_seqs(first, rest.value()).into_iter().rev() {
                        if t == upto_t && s > upto_seq {
                            continue;
                        }
                        let (json, decoded) = match times
                            .get(&time_key(&part, t, s))
                            .map_err(ApiError::internal)?
                        {
                            Some(b) => reader
                                .get_counted(times_block(b.value()), s)
                                .map_err(ApiError::internal)?,
                            None => (None, 0),
                        };
                        if !take(json, decoded, t, s) {
                            stopped = true;
                            break 'scan;
                        }
                    }
                }
            }
        }
        Ok((out, if stopped { last } else { None }))
    }

    /// Deletes events older than `before` (retention): their index entries, then every block
    /// whose records are all older (the open block stays). Bounded transactions: the indexer
    /// goes on between them. Returns the number of events removed from the index.
    pub fn prune(&self, regions: &[String], before: DateTime<Utc>) -> Result<usize, String> {
        let cut = before.timestamp();
        let mut n = 0;
        for r in regions {
            for data in [false, true] {
                let part = partition(r, data);
                // Strictly older than the cut.
                let lo = time_key(&part, 0, 0);
                let Some(hi) = secs(cut)
                    .checked_sub(1)
                    .map(|t| time_key(&part, t, u64::MAX))
                else {
                    continue;
                };
                loop {
                    let tx = self.db.begin_write().map_err(err)?;
                    let removed = {
                        let mut times = tx.open_table(TIMES).map_err(err)?;
                        let mut postings = tx.open_table(POSTINGS).map_err(err)?;
                        let blocks = tx.open_table(BLOCKS).map_err(err)?;
                        let old: Vec<(u32, u64, u64)> = times
                            .range::<&[u8; 16]>(&lo..=&hi)
                            .map_err(err)?
                            .take(PRUNE_BATCH)
                            .filter_map(|row| row.ok())
                            .map(|(k, b)| {
                                let (t, s) = tail(k.value());
                                (t, s, b.value())
                            })
                            .collect();
                        let mut reader = BlockReader::new(&blocks);
                        let mut gone = std::collections::BTreeSet::new();
                        for (t, s, b) in &old {
                            let json = reader.get(times_block(*b), *s).map_err(err)?;
                            if let Some(st) = json.and_then(Stored::parse) {
                                // An ID filed in its time entry has no posting to remove.
                                let id_filed = times_id_hash(*b).is_some();
                                for (a, v) in &st.attrs {
                                    if !(*a == 0 && id_filed) {
                                        gone.insert((attr_prefix(&part, *a, v), *t));
                                    }
                                }
                            }
                            times.remove(&time_key(&part, *t, *s)).map_err(err)?;
                        }
                        remove_postings(&mut postings, gone)?;
                        old.len()
                    };
                    tx.commit().map_err(err)?;
                    n += removed;
                    if removed < PRUNE_BATCH {
                        break;
                    }
                }
            }
        }
        // Blocks whose newest record expired, found by `block_times` in time order, a bounded
        // number per transaction. Each block's records lose whatever index entries they still
        // have first (a region no longer configured, a block sealed while this ran): nothing
        // is left pointing at a block that is gone.
        loop {
            let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
            let tx = self.db.begin_write().map_err(err)?;
            let deleted = {
                let mut bt = BlockTables::open(&tx)?;
                let mut times = tx.open_table(TIMES).map_err(err)?;
                let mut postings = tx.open_table(POSTINGS).map_err(err)?;
                let mut gone = std::collections::BTreeSet::new();
                let open_id = match open.as_ref() {
                    Some(b) => Some(b.id),
                    None => bt.state.get("open_block").map_err(err)?.map(|v| v.value()),
                };
                let hi = block_time_key(cut, 0);
                let expired: Vec<(Vec<u8>, u64)> = bt
                    .block_times
                    .range(..hi.as_slice())
                    .map_err(err)?
                    .filter_map(|row| row.ok())
                    .map(|(k, _)| {
                        let k = k.value().to_vec();
                        let mut id = [0u8; 8];
                        id.copy_from_slice(&k[8..16]);
                        (k, u64::from_be_bytes(id))
                    })
                    .filter(|(_, id)| Some(*id) != open_id)
                    .take(PRUNE_BLOCKS)
                    .collect();
                for (k, id) in &expired {
                    let records = match bt.blocks.get(*id).map_err(err)? {
                        Some(v) => decode_block(v.value()),
                        None => Vec::new(),
                    };
                    for (seq, json) in &records {
                        let Some(st) = Stored::parse(json) else {
                            continue;
                        };
                        let t = secs(st.time);
                        let id_filed = times
                            .remove(&time_key(&st.part, t, *seq))
                            .map_err(err)?
                            .is_some_and(|v| times_id_hash(v.value()).is_some());
                        for (a, v) in &st.attrs {
                            if !(*a == 0 && id_filed) {
                                gone.insert((attr_prefix(&st.part, *a, v), t));
                            }
                        }
                    }
                    bt.block_times.remove(k.as_slice()).map_err(err)?;
                    bt.blocks.remove(*id).map_err(err)?;
                }
                remove_postings(&mut postings, gone)?;
                expired.len()
            };
            tx.commit().map_err(err)?;
            drop(open);
            if deleted < PRUNE_BLOCKS {
                break;
            }
        }
        Ok(n)
    }
}

/// Hands `take` the records of the time entries in `lo..=hi`, newest first (only those that
/// file the ID hash `want`, when given); false once `take` stopped the scan.
fn scan_times<T: ReadableTable<u64, &'static [u8]>>(
    times: &impl ReadableTable<&'static [u8; 16], u64>,
    reader: &mut BlockReader<'_, T>,
    lo: &[u8; 16],
    hi: &[u8; 16],
    want: Option<u32>,
    take: &mut impl FnMut(Option<&[u8]>, usize, u32, u64) -> bool,
) -> Result<bool, ApiError> {
    for row in times
        .range::<&[u8; 16]>(lo..=hi)
        .map_err(ApiError::internal)?
        .rev()
    {
        let (k, b) = row.map_err(ApiError::internal)?;
        if want.is_some() && times_id_hash(b.value()) != want {
            continue;
        }
        let (t, s) = tail(k.value());
        let (json, decoded) = reader
            .get_counted(times_block(b.value()), s)
            .map_err(ApiError::internal)?;
        if !take(json, decoded, t, s) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Epoch seconds → time (for tokens and tests).
pub fn from_epoch(s: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(s, 0).single().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_journal::JournalOptions;
    use cairn_record::builder;
    use chrono::Duration;

    /// A journal and a history over it in a new directory.
    fn fresh() -> (tempfile::TempDir, Arc<Journal>, Arc<History>) {
        let dir = tempfile::tempdir().unwrap();
        let journal =
            Arc::new(Journal::open(dir.path().join("j"), JournalOptions::default()).unwrap());
        let h = History::open(&dir.path().join("h.redb"), journal.clone()).unwrap();
        (dir, journal, h)
    }

    fn event(i: i64, at: DateTime<Utc>) -> EventRecord {
        let id = builder::iam_user_identity(
            "123456789012",
            if i % 3 == 0 { "alice" } else { "bob" },
            "AIDA1",
            "AKIA1",
        );
        builder::management(
            "cloudtrail.amazonaws.com",
            if i % 2 == 0 {
                "GetTrail"
            } else {
                "StopLogging"
            },
            "us-east-1",
            at,
            id,
            i % 2 == 0,
        )
    }

    fn query(attrs: Vec<(u8, String)>, now: DateTime<Utc>) -> Query {
        Query {
            region: "us-east-1".into(),
            attributes: attrs,
            start: now - Duration::days(2),
            end: now,
            max_results: 50,
            data_events: false,
            after: None,
        }
    }

    fn all(h: &History, mut q: Query) -> Vec<Value> {
        let mut out = Vec::new();
        loop {
            let (page, next) = h.lookup(&q).unwrap();
            out.extend(page);
            match next {
                Some(n) => q.after = Some(n),
                None => return out,
            }
        }
    }

    /// The event ids of an answer, sorted, after checking it runs newest first.
    fn newest_first_ids(got: &[Value]) -> Vec<String> {
        let times: Vec<i64> = got
            .iter()
            .map(|e| e["EventTime"].as_i64().unwrap())
            .collect();
        assert!(times.windows(2).all(|w| w[0] >= w[1]), "newest first");
        let mut ids: Vec<String> = got
            .iter()
            .map(|e| e["EventId"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    }

    fn block_count(h: &History) -> usize {
        let tx = h.db.begin_read().unwrap();
        let t = tx.open_table(BLOCKS).unwrap();
        t.iter().unwrap().count()
    }

    #[test]
    fn blocks_fill_across_steps_and_restarts() {
        let (dir, journal, _) = fresh();
        let now = Utc::now();
        let mut ids = Vec::new();
        let path = dir.path().join("h.redb");
        let mut h = History::open(&path, journal.clone()).unwrap();
        for i in 0..600i64 {
            let rec = event(i, now - Duration::seconds(600 - i));
            ids.push(rec.event_id.clone());
            journal.append(&entry::encode_event(&rec)).unwrap();
            // Small steps rewrite the open block; a reopen reads it back.
            if i % 7 == 0 {
                h.step(5).unwrap();
            }
            if i % 150 == 0 {
                h.force_durable.store(true, Ordering::Release);
                while h.step(3).unwrap() > 0 {}
                drop(h);
                h = History::open(&path, journal.clone()).unwrap();
            }
        }
        while h.step(11).unwrap() > 0 {}
        assert!(block_count(&h) >= 3, "records span several blocks");
        let got_ids = newest_first_ids(&all(&h, query(vec![], now)));
        assert_eq!(got_ids.len(), 600);
        ids.sort();
        assert_eq!(got_ids, ids, "every event exactly once");
        // Attribute lookups (hashed keys) confirm against the record.
        let one = all(&h, query(vec![(0, ids[17].clone())], now));
        assert_eq!(one.len(), 1);
        assert_eq!(one[0]["EventId"], ids[17].as_str());
        let alice = all(&h, query(vec![(3, "alice".into())], now));
        assert_eq!(alice.len(), 200);
        let none = all(&h, query(vec![(3, "mallory".into())], now));
        assert!(none.is_empty());
        let stops = all(
            &h,
            query(vec![(2, "false".into()), (3, "alice".into())], now),
        );
        assert_eq!(stops.len(), 100);
        assert!(stops.iter().all(|e| e["EventName"] == "StopLogging"));
    }

    #[test]
    fn a_reused_block_buffer_answers_only_its_own_records() {
        let small = |id: u64| format!("{{\"small\":{id},\"pad\":\"{}\"}}", "y".repeat(1000));
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("b.redb")).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let mut t = tx.open_table(BLOCKS).unwrap();
            // Block 0: large, seqs 0..400; blocks 1..=8: smaller, seqs 1000·id + 0..3, long
            // enough that block 0's first records' places lie within them.
            let mut big = OpenBlock::empty(0);
            for s in 0..400u64 {
                big.push(
                    s,
                    format!("{{\"big\":{s},\"pad\":\"{}\"}}", "x".repeat(200)).as_bytes(),
                    1,
                );
            }
            t.insert(0, big.encode().unwrap()).unwrap();
            for id in 1..=8u64 {
                let mut b = OpenBlock::empty(id);
                for s in 0..3 {
                    b.push(1000 * id + s, small(id).as_bytes(), 1);
                }
                t.insert(id, b.encode().unwrap()).unwrap();
            }
            // Block 9 states 4,000 bytes and does not decompress; block 10 states 4 GiB.
            let mut bad = vec![0u8; HEADER];
            bad[8..12].copy_from_slice(&4000u32.to_be_bytes());
            bad.extend_from_slice(&[0xff; 16]);
            t.insert(9, bad.as_slice()).unwrap();
            bad[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
            t.insert(10, bad.as_slice()).unwrap();
        }
        tx.commit().unwrap();
        let tx = db.begin_read().unwrap();
        let t = tx.open_table(BLOCKS).unwrap();
        let mut r = BlockReader::new(&t);
        assert!(r.get(0, 399).unwrap().unwrap().starts_with(b"{\"big\":399"));
        for id in 1..=7 {
            assert_eq!(r.get(id, 1000 * id).unwrap().unwrap(), small(id).as_bytes());
        }
        // The cache is full: block 8 takes block 0's (larger) buffer.
        assert_eq!(r.get(8, 8001).unwrap().unwrap(), small(8).as_bytes());
        for s in [0, 5, 399] {
            assert_eq!(
                r.get(8, s).unwrap(),
                None,
                "seq {s} of block 0 read from block 8"
            );
        }
        assert_eq!(r.get(8, 8003).unwrap(), None);
        // An unreadable block read into block 1's buffer holds nothing of it, nor does an
        // absent one read into block 2's; a forged size is refused before it is allocated.
        assert_eq!(r.get(9, 1000).unwrap(), None);
        assert_eq!(r.get(9, 1001).unwrap(), None);
        assert_eq!(r.get(42, 2000).unwrap(), None);
        assert_eq!(r.get(42, 2001).unwrap(), None);
        assert_eq!(r.get(10, 3000).unwrap(), None);
        assert!(r
            .cache
            .iter()
            .all(|(_, d)| d.raw.capacity() <= POOL_BUFFER_BYTES));
        // Pooled buffers serve a later reader as well: one left with another block's
        // records and table (a parallel test may take it first; it is cleared either way).
        drop(r);
        let stale = Decoded {
            raw: small(7).repeat(3).into_bytes(),
            at: vec![(3002, 0, 100), (399, 0, 100)],
        };
        lock_pool().push(stale);
        let mut r = BlockReader::new(&t);
        assert_eq!(r.get(3, 3002).unwrap().unwrap(), small(3).as_bytes());
        assert_eq!(r.get(3, 399).unwrap(), None);
    }

    #[test]
    fn prune_deletes_expired_blocks_and_entries() {
        let (_dir, journal, h) = fresh();
        let now = Utc::now();
        for i in 0..400i64 {
            let rec = event(i, now - Duration::hours(400 - i));
            journal.append(&entry::encode_event(&rec)).unwrap();
        }
        while h.step(1000).unwrap() > 0 {}
        let before = block_count(&h);
        let cut = now - Duration::hours(100);
        let n = h.prune(&["us-east-1".into()], cut).unwrap();
        assert_eq!(n, 300);
        assert!(block_count(&h) < before, "expired blocks are deleted");
        let mut q = query(vec![], now);
        q.start = now - Duration::days(30);
        let left = all(&h, q.clone());
        assert_eq!(left.len(), 100);
        q.attributes = vec![(3, "bob".into())];
        assert!(all(&h, q)
            .iter()
            .all(|e| e["EventTime"].as_i64().unwrap() >= cut.timestamp()));
        let tx = h.db.begin_read().unwrap();
        let postings = tx.open_table(POSTINGS).unwrap();
        let times = tx.open_table(TIMES).unwrap();
        assert_eq!(times.iter().unwrap().count(), 100);
        // EventName, EventSource, Username, AccessKeyId per event (each event is alone in
        // its second; its ID is filed in its time entry).
        assert_eq!(postings.iter().unwrap().count(), 400);
    }

    fn append_all(journal: &Journal, recs: &[EventRecord]) {
        let enc: Vec<Vec<u8>> = recs.iter().map(entry::encode_event).collect();
        let refs: Vec<&[u8]> = enc.iter().map(|e| e.as_slice()).collect();
        journal.append_batch(&refs).unwrap();
    }

    fn block_ids(h: &History) -> Vec<u64> {
        let tx = h.db.begin_read().unwrap();
        let t = tx.open_table(BLOCKS).unwrap();
        t.iter().unwrap().map(|r| r.unwrap().0.value()).collect()
    }

    #[test]
    fn retention_finds_expired_blocks_behind_a_newer_one_and_never_reuses_ids() {
        let (_dir, journal, h) = fresh();
        let now = Utc::now();
        // A block of events stamped a day ahead (a clock step) comes first in journal order.
        let ahead: Vec<EventRecord> = (0..200)
            .map(|i| event(i, now + Duration::days(1)))
            .collect();
        append_all(&journal, &ahead);
        while h.step(1000).unwrap() > 0 {}
        h.force_durable.store(true, Ordering::Release);
        let old: Vec<EventRecord> = (0..1000)
            .map(|i| event(i, now - Duration::days(100) + Duration::seconds(i)))
            .collect();
        append_all(&journal, &old);
        while h.step(1000).unwrap() > 0 {}
        let before = block_ids(&h);
        let n = h
            .prune(&["us-east-1".into()], now - Duration::days(90))
            .unwrap();
        assert_eq!(n, 1000);
        let after = block_ids(&h);
        // Blocks 0 (ahead) and the one mixing both stay, and the open one.
        assert!(
            after.len() <= 3 && after.len() + 3 <= before.len(),
            "blocks of expired events are deleted though a newer block precedes them: {before:?} → {after:?}"
        );
        // Everything expires (but the open block, which goes on filling); new blocks get new
        // ids.
        let max_before = *before.iter().max().unwrap();
        h.prune(&["us-east-1".into()], now + Duration::days(3))
            .unwrap();
        append_all(
            &journal,
            &(0..300).map(|i| event(i, now)).collect::<Vec<_>>(),
        );
        while h.step(1000).unwrap() > 0 {}
        let fresh = block_ids(&h);
        assert!(
            fresh.iter().all(|id| *id >= max_before) && fresh.len() >= 2,
            "{fresh:?} after {max_before}"
        );
        assert_eq!(all(&h, query(vec![], now)).len(), 300);
    }

    /// Index entries that name a block or a time entry that is gone.
    fn dangling(h: &History) -> usize {
        let tx = h.db.begin_read().unwrap();
        let blocks = tx.open_table(BLOCKS).unwrap();
        let times = tx.open_table(TIMES).unwrap();
        let postings = tx.open_table(POSTINGS).unwrap();
        let mut n = 0;
        for r in times.iter().unwrap() {
            let (_, b) = r.unwrap();
            if blocks.get(times_block(b.value())).unwrap().is_none() {
                n += 1;
            }
        }
        for r in postings.iter().unwrap() {
            let (k, rest) = r.unwrap();
            let k = k.value();
            let mut part = [0u8; 4];
            part.copy_from_slice(&k[..4]);
            let (t, first) = tail(k);
            for s in posting_seqs(first, rest.value()) {
                if times.get(&time_key(&part, t, s)).unwrap().is_none() {
                    n += 1;
                }
            }
        }
        n
    }

    /// Pages of one query in pages of 7 (with ten events a second, pages end inside a
    /// second): newest first, every event once.
    fn assert_paged_newest_first(h: &History, q: Query, expect: usize) {
        let mut q = q;
        q.max_results = 7;
        let got = all(h, q);
        assert_eq!(got.len(), expect);
        let mut ids = newest_first_ids(&got);
        ids.dedup();
        assert_eq!(ids.len(), expect, "no event twice across pages");
    }

    /// A fresh history with `n` events indexed, ten in each second up to now (pages of 7
    /// end inside a second).
    fn indexed_ten_a_second(
        n: i64,
    ) -> (
        tempfile::TempDir,
        Arc<Journal>,
        Arc<History>,
        Vec<EventRecord>,
        DateTime<Utc>,
    ) {
        let (dir, journal, h) = fresh();
        let now = Utc::now();
        let recs: Vec<EventRecord> = (0..n)
            .map(|i| event(i, now - Duration::seconds(n / 10 - i / 10)))
            .collect();
        append_all(&journal, &recs);
        while h.step(1000).unwrap() > 0 {}
        (dir, journal, h, recs, now)
    }

    #[test]
    fn a_time_entry_holds_its_block_and_the_id_it_files() {
        let t = secs(1_800_000_000);
        let id = builder::event_uuid(from_epoch(1_800_000_000));
        for block in [0, 1, 77, u32::MAX as u64] {
            let (v, filed) = times_value(block, &id, t);
            assert!(filed);
            assert_eq!(times_block(v), block);
            assert_eq!(times_id_hash(v), Some(id_hash(&id)));
        }
        // A block id past 32 bits, an ID of another second, or one without a second: a
        // plain block id, and the ID keeps its posting.
        for (block, id, at) in [
            (u32::MAX as u64 + 1, id.clone(), t),
            (5, id.clone(), t + 1),
            (5, builder::fast_uuid(), t),
        ] {
            let (v, filed) = times_value(block, &id, at);
            assert!(!filed);
            assert_eq!(v, block);
            assert_eq!(times_block(v), block);
            assert_eq!(times_id_hash(v), None);
        }
    }

    /// A lookup by an ID filed in its time entry honours a page position inside its second
    /// and the query's time range.
    #[test]
    fn an_id_filed_by_time_is_found_only_within_the_position_and_range() {
        let (_dir, _journal, h, recs, now) = indexed_ten_a_second(100);
        let target = &recs[54];
        let t = secs(target.event_time.timestamp());
        let seq = {
            let tx = h.db.begin_read().unwrap();
            let times = tx.open_table(TIMES).unwrap();
            let part = partition("us-east-1", false);
            let lo = time_key(&part, t, 0);
            let hi = time_key(&part, t, u64::MAX);
            let hits: Vec<u64> = times
                .range::<&[u8; 16]>(&lo..=&hi)
                .unwrap()
                .map(|r| r.unwrap())
                .filter(|(_, v)| times_id_hash(v.value()) == Some(id_hash(&target.event_id)))
                .map(|(k, _)| tail(k.value()).1)
                .collect();
            assert_eq!(hits.len(), 1, "filed in its time entry");
            hits[0]
        };
        let q = |after: Option<(u64, u64)>| {
            let mut q = query(vec![(0, target.event_id.clone())], now);
            q.after = after;
            q
        };
        let found = |q: Query| newest_first_ids(&all(&h, q));
        let id = vec![target.event_id.clone()];
        assert_eq!(found(q(None)), id);
        // A position just after it (the next page starts below the position) finds it; one
        // at it or before it does not.
        assert_eq!(found(q(Some((rev(t) as u64, seq + 1)))), id);
        assert!(found(q(Some((rev(t) as u64, seq)))).is_empty());
        assert!(found(q(Some((rev(t) as u64 + 1, u64::MAX)))).is_empty());
        // A range that ends before its second, or starts after it.
        let mut early = q(None);
        early.end = from_epoch(t as i64 - 1);
        assert!(found(early).is_empty());
        let mut late = q(None);
        late.start = from_epoch(t as i64 + 1);
        assert!(found(late).is_empty());
        // Another event's ID with this event's second finds that event only.
        let other = &recs[55];
        assert_eq!(secs(other.event_time.timestamp()), t);
        let mut oq = q(None);
        oq.attributes = vec![(0, other.event_id.clone())];
        assert_eq!(found(oq), vec![other.event_id.clone()]);
    }

    #[test]
    fn the_newest_first_layout_is_rewritten_ascending() {
        let (dir, journal, h, recs, now) = indexed_ten_a_second(400);
        let queries = [
            query(vec![], now),
            query(vec![(3, "alice".into())], now),
            query(vec![(2, "true".into()), (1, "GetTrail".into())], now),
            query(vec![(0, recs[123].event_id.clone())], now),
        ];
        let before: Vec<Vec<Value>> = queries.iter().map(|q| all(&h, q.clone())).collect();
        assert_eq!(before[0].len(), 400);
        assert_paged_newest_first(&h, queries[0].clone(), 400);
        assert_paged_newest_first(&h, queries[1].clone(), 134);
        // The index as the layout before wrote it: seconds newest-first, in the old tables.
        {
            let tx = h.db.begin_write().unwrap();
            {
                let times = tx.open_table(TIMES).unwrap();
                let postings = tx.open_table(POSTINGS).unwrap();
                let mut old_times = tx.open_table(REV_TIMES).unwrap();
                let mut old_attrs = tx.open_table(REV_ATTRS).unwrap();
                for r in times.iter().unwrap() {
                    let (k, b) = r.unwrap();
                    let mut k = *k.value();
                    let (t, _) = tail(&k);
                    k[4..8].copy_from_slice(&rev(t).to_be_bytes());
                    old_times.insert(k.as_slice(), b.value()).unwrap();
                }
                for r in postings.iter().unwrap() {
                    let (k, rest) = r.unwrap();
                    let mut k = *k.value();
                    let (t, first) = tail(&k);
                    k[13..17].copy_from_slice(&rev(t).to_be_bytes());
                    for s in posting_seqs(first, rest.value()) {
                        k[17..].copy_from_slice(&s.to_be_bytes());
                        old_attrs.insert(k.as_slice(), ()).unwrap();
                    }
                }
            }
            tx.delete_table(TIMES).unwrap();
            tx.delete_table(POSTINGS).unwrap();
            tx.commit().unwrap();
        }
        drop(h);
        let h = History::open(&dir.path().join("h.redb"), journal).unwrap();
        let after: Vec<Vec<Value>> = queries.iter().map(|q| all(&h, q.clone())).collect();
        assert_eq!(after, before, "the same answers from the rewritten index");
        assert_paged_newest_first(&h, queries[0].clone(), 400);
        assert!(!h.has_table(&["times", "attr_hashes"]).unwrap());
    }

    #[test]
    fn postings_round_trip_their_seqs() {
        for seqs in [
            vec![7u64],
            vec![0, 1, 2, 3],
            vec![5, 200, 70_000, 70_001, u64::MAX / 2, u64::MAX],
        ] {
            let mut p = Posting::new(seqs[0]);
            for s in &seqs[1..] {
                p.add(*s);
            }
            // A seq at or below the last is not added twice.
            p.add(seqs[seqs.len() - 1]);
            assert_eq!(posting_seqs(p.first, &p.rest), seqs);
        }
        // A truncated or overlong tail is ignored, never a panic.
        assert_eq!(posting_seqs(1, &[0x80]), vec![1]);
        assert_eq!(posting_seqs(1, &[0xff; 12]), vec![1]);
        // A zero or overflowing delta ends the posting: no seq twice, none falling.
        assert_eq!(posting_seqs(1, &[2, 0, 3]), vec![1, 3]);
        let mut wrap = Vec::new();
        push_varint(&mut wrap, u64::MAX);
        assert_eq!(
            posting_seqs(5, &[[1u8].as_slice(), &wrap, &[1]].concat()),
            vec![5, 6]
        );
    }

    #[test]
    fn a_step_keeps_one_posting_per_value_and_second() {
        let (_dir, journal, h) = fresh();
        let now = Utc::now();
        // 40 seconds, ten events in each.
        let recs: Vec<EventRecord> = (0..400)
            .map(|i| event(i, now - Duration::seconds(40 - i / 10)))
            .collect();
        // Two steps that split second 25.
        append_all(&journal, &recs[..255]);
        while h.step(1000).unwrap() > 0 {}
        append_all(&journal, &recs[255..]);
        while h.step(1000).unwrap() > 0 {}
        {
            let tx = h.db.begin_read().unwrap();
            let postings = tx.open_table(POSTINGS).unwrap();
            let mut per_attr = [0usize; 8];
            for r in postings.iter().unwrap() {
                per_attr[r.unwrap().0.value()[4] as usize] += 1;
            }
            // EventId: none (each ID carries its event's second: it is filed in the time
            // entry). The source and the access key have one value each: a posting for each
            // second, and one more for the second the steps split. The event name and the
            // user have two.
            assert_eq!(per_attr[0], 0);
            assert_eq!(per_attr[6], 41);
            assert_eq!(per_attr[7], 41);
            assert_eq!(per_attr[1], 82);
            assert_eq!(per_attr[3], 82);
        }
        assert_eq!(dangling(&h), 0);
        // Pages of 7 end inside postings; every event once, newest first.
        assert_paged_newest_first(&h, query(vec![(1, "GetTrail".into())], now), 200);
        assert_paged_newest_first(&h, query(vec![(3, "alice".into())], now), 134);
        let one = all(&h, query(vec![(0, recs[123].event_id.clone())], now));
        assert_eq!(newest_first_ids(&one), vec![recs[123].event_id.clone()]);
    }

    #[test]
    fn event_ids_are_filed_in_time_order_and_older_ids_still_found() {
        let (_dir, journal, h) = fresh();
        let now = Utc::now();
        let mut recs: Vec<EventRecord> = (0..60)
            .map(|i| event(i, now - Duration::seconds(60 - i)))
            .collect();
        // IDs minted before event IDs carried their time.
        for r in recs.iter_mut().step_by(7) {
            r.event_id = builder::fast_uuid();
        }
        // IDs that carry another second than their event's (a record stamped again after
        // its ID was minted): filed in a posting, not in the time entry.
        for r in recs.iter_mut().skip(3).step_by(11) {
            r.event_time += Duration::seconds(2);
        }
        append_all(&journal, &recs);
        while h.step(1000).unwrap() > 0 {}
        // The first events as an index from before IDs were filed in time entries holds
        // them: a plain block id, and a posting of each ID.
        {
            let tx = h.db.begin_write().unwrap();
            {
                let mut times = tx.open_table(TIMES).unwrap();
                let mut postings = tx.open_table(POSTINGS).unwrap();
                let part = partition("us-east-1", false);
                let old: Vec<([u8; 16], u64)> = times
                    .iter()
                    .unwrap()
                    .take(6)
                    .map(|r| r.unwrap())
                    .map(|(k, v)| (*k.value(), v.value()))
                    .collect();
                let blocks = tx.open_table(BLOCKS).unwrap();
                let mut reader = BlockReader::new(&blocks);
                let mut filed = 0;
                for (k, v) in old {
                    let (t, seq) = tail(&k);
                    if times_id_hash(v).is_none() {
                        continue;
                    }
                    let json = reader.get(times_block(v), seq).unwrap().unwrap();
                    let id = Stored::parse(json).unwrap().rec.event_id;
                    times.insert(&k, times_block(v)).unwrap();
                    postings
                        .insert(&attr_key(&part, 0, &id, t, seq), [].as_slice())
                        .unwrap();
                    filed += 1;
                }
                assert_eq!(filed, 4);
            }
            tx.commit().unwrap();
        }
        let tx = h.db.begin_read().unwrap();
        let postings = tx.open_table(POSTINGS).unwrap();
        let id_postings = postings
            .iter()
            .unwrap()
            .filter(|r| r.as_ref().unwrap().0.value()[4] == 0)
            .count();
        drop(postings);
        drop(tx);
        // 9 version 4 IDs, 6 shifted ones (one of them also version 4), 4 old entries (the
        // first 6 time entries less the version 4 one and the shifted one among them).
        assert_eq!(id_postings, 18);
        let ids: Vec<[u8; 8]> = recs
            .iter()
            .filter(|r| builder::event_uuid_second(&r.event_id).is_some())
            .map(|r| value_hash(0, &r.event_id))
            .collect();
        assert_eq!(ids.len(), 51);
        assert!(
            ids.windows(2).all(|w| w[0][..4] < w[1][..4]),
            "time-ordered keys"
        );
        for r in &recs {
            let got = all(&h, query(vec![(0, r.event_id.clone())], now));
            assert_eq!(newest_first_ids(&got), vec![r.event_id.clone()]);
        }
        // A forged ID with the right second but another value finds nothing.
        let mut forged = recs[1].event_id.clone();
        forged.replace_range(27.., "000000000");
        assert!(all(&h, query(vec![(0, forged)], now)).is_empty());
    }

    #[test]
    fn the_per_event_attribute_index_is_moved_into_postings() {
        let (dir, journal, h, recs, now) = indexed_ten_a_second(300);
        let queries = [
            query(vec![], now),
            query(vec![(3, "alice".into())], now),
            query(vec![(1, "GetTrail".into())], now),
            query(vec![(0, recs[77].event_id.clone())], now),
        ];
        let before: Vec<Vec<Value>> = queries.iter().map(|q| all(&h, q.clone())).collect();
        assert_eq!(before[0].len(), 300);
        // The index as the layout before postings wrote it: one entry per event and value.
        {
            let tx = h.db.begin_write().unwrap();
            {
                let postings = tx.open_table(POSTINGS).unwrap();
                let mut old = tx.open_table(ATTRS).unwrap();
                for r in postings.iter().unwrap() {
                    let (k, rest) = r.unwrap();
                    let mut k = *k.value();
                    let (_, first) = tail(&k);
                    for s in posting_seqs(first, rest.value()) {
                        k[17..].copy_from_slice(&s.to_be_bytes());
                        old.insert(&k, ()).unwrap();
                    }
                }
            }
            tx.delete_table(POSTINGS).unwrap();
            tx.commit().unwrap();
        }
        drop(h);
        let h = History::open(&dir.path().join("h.redb"), journal).unwrap();
        let after: Vec<Vec<Value>> = queries.iter().map(|q| all(&h, q.clone())).collect();
        assert_eq!(after, before, "the same answers from the moved index");
        assert_paged_newest_first(&h, queries[1].clone(), 100);
        assert!(!h.has_table(&["event_attrs"]).unwrap());
        assert_eq!(dangling(&h), 0);
    }

    #[test]
    fn retention_leaves_no_index_entry_naming_a_deleted_block() {
        let (_dir, journal, h) = fresh();
        let now = Utc::now();
        // Old events of a region retention is not told about, then current ones.
        let mut old: Vec<EventRecord> = (0..500)
            .map(|i| {
                let mut e = event(i, now - Duration::days(100));
                e.aws_region = "eu-west-2".into();
                e
            })
            .collect();
        old.extend((0..300).map(|i| event(i, now)));
        append_all(&journal, &old);
        while h.step(1000).unwrap() > 0 {}
        let before = block_ids(&h).len();
        h.prune(&["us-east-1".into()], now - Duration::days(90))
            .unwrap();
        assert!(block_ids(&h).len() < before, "the old region's blocks go");
        assert_eq!(dangling(&h), 0);
        assert_eq!(all(&h, query(vec![], now)).len(), 300);
    }

    #[test]
    fn a_page_that_filters_out_everything_stops_at_its_bound_with_a_token() {
        let (_dir, journal, h) = fresh();
        let now = Utc::now();
        // Odd events only: ReadOnly=false; one read-only event, the oldest.
        let mut recs: Vec<EventRecord> = (0..(MAX_CANDIDATES as i64 + 5000))
            .map(|i| event(2 * i + 1, now - Duration::seconds(30_000 - i)))
            .collect();
        recs.insert(0, event(0, now - Duration::seconds(40_000)));
        append_all(&journal, &recs);
        while h.step(100_000).unwrap() > 0 {}
        let q = query(vec![(2, "true".into())], now);
        let (page, next) = h.lookup(&q).unwrap();
        assert!(page.is_empty());
        assert!(next.is_some(), "the scan stops at its bound and says where");
        let got = all(&h, q);
        assert_eq!(got.len(), 1, "following the tokens finds the one match");
    }

    #[test]
    fn the_old_layout_is_moved_into_blocks() {
        let (dir, journal, _) = fresh();
        // A file of its own: written in the old layout only.
        let path = dir.path().join("old.redb");
        let now = Utc::now();
        let mut ids = Vec::new();
        {
            let db = Database::create(&path).unwrap();
            let tx = db.begin_write().unwrap();
            {
                let mut ev = tx.open_table(OLD_EVENTS).unwrap();
                let mut at = tx.open_table(OLD_ATTRS).unwrap();
                for i in 0..300i64 {
                    let rec = event(i, now - Duration::minutes(300 - i));
                    ids.push(rec.event_id.clone());
                    let mut k = b"us-east-1\0".to_vec();
                    let ms = rec.event_time.timestamp_millis() as u64;
                    k.extend_from_slice(&(u64::MAX - ms).to_be_bytes());
                    k.extend_from_slice(&(i as u64 + 1).to_be_bytes());
                    ev.insert(k.as_slice(), serde_json::to_vec(&rec).unwrap().as_slice())
                        .unwrap();
                    at.insert(b"us-east-1\0\x01x\0".as_slice(), ()).unwrap();
                }
                tx.open_table(STATE).unwrap().insert("position", 0).unwrap();
            }
            tx.commit().unwrap();
        }
        let h = History::open(&path, journal.clone()).unwrap();
        assert!(!h.has_table(&["events", "attrs"]).unwrap());
        let got = all(&h, query(vec![], now));
        assert_eq!(got.len(), 300);
        let mut got_ids: Vec<String> = got
            .iter()
            .map(|e| e["EventId"].as_str().unwrap().to_string())
            .collect();
        got_ids.sort();
        ids.sort();
        assert_eq!(got_ids, ids);
        assert_eq!(all(&h, query(vec![(3, "alice".into())], now)).len(), 100);
        // New events go to new blocks after the moved ones.
        journal
            .append(&entry::encode_event(&event(1000, now)))
            .unwrap();
        while h.step(100).unwrap() > 0 {}
        assert_eq!(all(&h, query(vec![], now)).len(), 301);
    }
}

#[cfg(test)]
mod probe {
    use super::*;
    use redb::ReadableTableMetadata;
    #[test]
    #[ignore]
    fn table_stats() {
        let db = Database::open(std::env::var("HIST").unwrap()).unwrap();
        let tx = db.begin_read().unwrap();
        let b = tx.open_table(BLOCKS).unwrap();
        let t = tx.open_table(TIMES).unwrap();
        let a = tx.open_table(POSTINGS).unwrap();
        for (n, s, len) in [
            ("blocks", b.stats().unwrap(), b.len().unwrap()),
            ("times", t.stats().unwrap(), t.len().unwrap()),
            ("postings", a.stats().unwrap(), a.len().unwrap()),
        ] {
            println!(
                "{n}: len {len} leaf_pages {} branch {} stored {} meta {} frag {}",
                s.leaf_pages(),
                s.branch_pages(),
                s.stored_bytes(),
                s.metadata_bytes(),
                s.fragmented_bytes()
            );
        }
    }
}
