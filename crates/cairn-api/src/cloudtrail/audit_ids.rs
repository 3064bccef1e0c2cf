//! PutAuditEvents is idempotent on (channel, event `id`): a resent id already stored is
//! answered with its original `eventID` and not stored again — across retries, restarts and
//! crashes, for at least [`WINDOW_SECS`].
//!
//! The truth is the journal: a request's stored ids are journaled as an
//! [`entry::AuditIds`] mark in the same batch as its events, so the mark is durable exactly
//! when they are. This index is a journal consumer (in `meta.redb`) that applies the marks,
//! and a request consults three things in order:
//! - `recent`: ids durable but perhaps not applied yet (each kept until the index has passed
//!   the journal position its batch was durable below);
//! - the index;
//! - `inflight`: ids a request is storing right now; a second request with one waits for
//!   the first's outcome, then looks again.
//!
//! At start the index catches up with the whole journal beyond its position before the first
//! request is answered, so a crash between a batch and its application loses nothing. The
//! index is bounded: entries older than the window are deleted, and beyond [`MAX_ENTRIES`]
//! the oldest go first (a 16-byte hash of channel and id is the key, so an entry is about
//! 70 bytes).

use cairn_journal::Journal;
use cairn_trail::entry::{self, Entry};
use redb::{Database, ReadableTable, TableDefinition};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// How long an id is remembered (24 hours, and an hour's margin).
pub const WINDOW_SECS: i64 = 25 * 3600;
/// The most ids remembered; the oldest are forgotten first beyond it.
pub const MAX_ENTRIES: u64 = 4_000_000;
/// Entries expired per step at most.
const EXPIRE_PER_STEP: usize = 50_000;

/// hash(channel, id) → (stored at, eventID).
const IDS: TableDefinition<&[u8], (i64, &str)> = TableDefinition::new("audit_ids");
/// (stored at, hash) → (), for expiry in time order.
const BY_TIME: TableDefinition<(i64, &[u8]), ()> = TableDefinition::new("audit_ids_by_time");
const STATE: TableDefinition<&str, u64> = TableDefinition::new("audit_ids_state");
const CONSUMER: &str = "audit-ids";

pub type Key = [u8; 16];

/// The index key of `id` on `channel`.
pub fn key(channel: &str, id: &str) -> Key {
    let mut h = Sha256::new();
    h.update(channel.as_bytes());
    h.update([0]);
    h.update(id.as_bytes());
    let d = h.finalize();
    let mut k = [0u8; 16];
    k.copy_from_slice(&d[..16]);
    k
}

#[derive(Default)]
struct Inner {
    /// Being stored by a request; dropping the sender (outcome known) wakes the waiters.
    inflight: HashMap<Key, tokio::sync::watch::Sender<()>>,
    /// Durable, perhaps not applied: eventID and the journal position the index must reach.
    recent: HashMap<Key, (String, u64)>,
}

pub struct AuditIds {
    db: Arc<crate::meta::Meta>,
    journal: Arc<Journal>,
    clock: Arc<dyn cairn_record::Clock>,
    /// The consumer thread runs (started by the first catch-up).
    running: AtomicBool,
    inner: Mutex<Inner>,
    /// Journal position applied (and committed) so far.
    applied: AtomicU64,
    ready: AtomicBool,
    /// One step at a time; holds the journal reader between steps (opening one walks its
    /// segment's record headers from the start: done once, not at every step).
    step_lock: Mutex<Option<cairn_journal::JournalReader>>,
}

/// What a request learns about one id.
pub enum Claim {
    /// Already stored: answer with this eventID, store nothing.
    Stored(String),
    /// This request stores it; the guard settles the claim.
    Mine,
}

/// The ids a request claimed; settled with the journal position after its batch once
/// durable, or released (also when dropped unsettled: nothing was journaled).
pub struct Guard {
    ids: Arc<AuditIds>,
    /// Claimed in `inflight` by this request.
    claimed: Vec<Key>,
    /// Claimed and stored by this request, with their eventIDs.
    keys: Vec<(Key, String)>,
    settled: bool,
}

impl Guard {
    /// The batch holding these ids is durable below journal position `end`.
    pub fn stored(mut self, end: u64) {
        let mut g = self.ids.lock();
        for (k, event_id) in self.keys.drain(..) {
            g.recent.insert(k, (event_id, end));
        }
        for k in self.claimed.drain(..) {
            g.inflight.remove(&k);
        }
        self.settled = true;
    }

    /// Adds `(key, eventID)` to what this request stores.
    pub fn push(&mut self, k: Key, event_id: String) {
        self.keys.push((k, event_id));
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let mut g = self.ids.lock();
        for k in self.claimed.drain(..) {
            g.inflight.remove(&k);
        }
    }
}

/// The mark a request journals with its carried events, and its claim on the ids.
pub struct CarriedIds {
    pub mark: entry::AuditIds,
    pub guard: Guard,
}

impl std::fmt::Debug for CarriedIds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CarriedIds")
            .field("mark", &self.mark)
            .finish()
    }
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

impl AuditIds {
    pub fn new(
        db: Arc<crate::meta::Meta>,
        journal: Arc<Journal>,
        clock: Arc<dyn cairn_record::Clock>,
    ) -> Arc<AuditIds> {
        Arc::new(AuditIds {
            db,
            journal,
            clock,
            running: AtomicBool::new(false),
            inner: Mutex::new(Inner::default()),
            applied: AtomicU64::new(0),
            ready: AtomicBool::new(false),
            step_lock: Mutex::new(None),
        })
    }

    fn database(&self) -> &Database {
        self.db.db()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies everything the journal holds beyond the index (blocking). Called before the
    /// first request is served, and on first use otherwise.
    pub fn catch_up(self: &Arc<Self>) -> Result<(), String> {
        if self.ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let registered = self.journal.register_consumer(CONSUMER).map_err(err)?;
        let stored = {
            let tx = self.database().begin_write().map_err(err)?;
            let p = {
                tx.open_table(IDS).map_err(err)?;
                tx.open_table(BY_TIME).map_err(err)?;
                let t = tx.open_table(STATE).map_err(err)?;
                let v = t.get("applied").map_err(err)?.map(|v| v.value());
                v
            };
            tx.commit().map_err(err)?;
            p
        };
        // The index may be ahead of the journal's cursor (a crash between the two commits),
        // never behind what the journal still holds for it.
        self.applied.fetch_max(
            stored.unwrap_or(registered).max(registered),
            Ordering::AcqRel,
        );
        while self.step(100_000)? > 0 {}
        self.ready.store(true, Ordering::Release);
        self.start_thread();
        Ok(())
    }

    /// Applies up to `max` journal records beyond the index; returns how many were read.
    pub fn step(&self, max: usize) -> Result<usize, String> {
        let mut slot = self.step_lock.lock().unwrap_or_else(|e| e.into_inner());
        let r = self.step_with(max, &mut slot);
        if r.is_err() {
            // A read that failed part-way leaves the reader inside a frame: open a new one.
            *slot = None;
        }
        r
    }

    fn step_with(
        &self,
        max: usize,
        slot: &mut Option<cairn_journal::JournalReader>,
    ) -> Result<usize, String> {
        let from = self.applied.load(Ordering::Acquire);
        // A reader left elsewhere (a step that failed after reading) starts again at `from`.
        if slot.as_ref().map(|r| r.position()) != Some(from) {
            *slot = Some(self.journal.reader(from).map_err(err)?);
        }
        let Some(reader) = slot.as_mut() else {
            return Ok(0);
        };
        let mut marks = vec![];
        let mut n = 0;
        while n < max {
            let Some((_, bytes)) = reader.next_record().map_err(err)? else {
                break;
            };
            n += 1;
            if !entry::is_audit_ids(&bytes) {
                continue;
            }
            if let Ok(Entry::AuditIds(m)) = entry::decode(&bytes) {
                marks.push(m);
            }
        }
        let to = reader.position();
        let now = self.clock.now().timestamp();
        let expire = self.expire_due(now)?;
        if n == 0 && !expire {
            return Ok(0);
        }
        let tx = self.database().begin_write().map_err(err)?;
        {
            let mut ids = tx.open_table(IDS).map_err(err)?;
            let mut by_time = tx.open_table(BY_TIME).map_err(err)?;
            let mut state = tx.open_table(STATE).map_err(err)?;
            let mut count = state.get("count").map_err(err)?.map_or(0, |v| v.value());
            for m in &marks {
                for (id, event_id) in &m.ids {
                    let k = key(&m.channel, id);
                    let old = ids
                        .insert(k.as_slice(), (m.time, event_id.as_str()))
                        .map_err(err)?
                        .map(|v| v.value().0);
                    match old {
                        Some(t) => {
                            by_time.remove((t, k.as_slice())).map_err(err)?;
                        }
                        None => count += 1,
                    }
                    by_time.insert((m.time, k.as_slice()), ()).map_err(err)?;
                }
            }
            // Forget what is past the window, and the oldest beyond the cap.
            let cutoff = now - WINDOW_SECS;
            let mut gone = vec![];
            let mut evicted_in_window = 0u64;
            for row in by_time.iter().map_err(err)? {
                let (k, _) = row.map_err(err)?;
                let (t, h) = k.value();
                // At most a bounded amount per step: a long downtime expires over many.
                if gone.len() >= EXPIRE_PER_STEP
                    || (t >= cutoff && count - gone.len() as u64 <= MAX_ENTRIES)
                {
                    break;
                }
                if t >= cutoff {
                    evicted_in_window += 1;
                }
                gone.push((t, h.to_vec()));
            }
            if evicted_in_window > 0 {
                tracing::warn!(
                    evicted_in_window,
                    max = MAX_ENTRIES,
                    "the audit-id index is full: ids younger than the idempotency window are forgotten (resends of them would be stored again)"
                );
            }
            for (t, h) in &gone {
                by_time.remove((*t, h.as_slice())).map_err(err)?;
                ids.remove(h.as_slice()).map_err(err)?;
            }
            count -= gone.len() as u64;
            state.insert("count", count).map_err(err)?;
            state.insert("applied", to).map_err(err)?;
            state.insert("expired_at", now as u64).map_err(err)?;
        }
        tx.commit().map_err(err)?;
        // Durable in the index: the journal may drop what lies below.
        self.journal.commit_cursor(CONSUMER, to).map_err(err)?;
        self.applied.store(to, Ordering::Release);
        self.lock().recent.retain(|_, (_, end)| *end > to);
        Ok(n)
    }

    /// Whether an expiry pass is due (once a minute when nothing new arrives).
    fn expire_due(&self, now: i64) -> Result<bool, String> {
        let tx = self.database().begin_read().map_err(err)?;
        let t = tx.open_table(STATE).map_err(err)?;
        let last = t
            .get("expired_at")
            .map_err(err)?
            .map_or(0, |v| v.value() as i64);
        Ok(now - last >= 60)
    }

    fn stored(&self, k: &Key) -> Result<Option<String>, String> {
        let tx = self.database().begin_read().map_err(err)?;
        let t = tx.open_table(IDS).map_err(err)?;
        Ok(t.get(k.as_slice())
            .map_err(err)?
            .map(|v| v.value().1.to_string()))
    }

    /// Claims `id` on `channel` for `guard`'s request: [`Claim::Stored`] when it is already
    /// stored (waiting first for a request storing it now).
    pub async fn claim(
        self: &Arc<Self>,
        guard: &mut Guard,
        channel: &str,
        id: &str,
    ) -> Result<Claim, String> {
        if !self.ready.load(Ordering::Acquire) {
            let me = self.clone();
            tokio::task::spawn_blocking(move || me.catch_up())
                .await
                .map_err(err)??;
        }
        let k = key(channel, id);
        if guard.claimed.contains(&k) {
            // The same id twice in one request: stored once.
            return Ok(match guard.keys.iter().find(|(g, _)| *g == k) {
                Some((_, event_id)) => Claim::Stored(event_id.clone()),
                None => Claim::Mine,
            });
        }
        loop {
            let wait = {
                let mut g = self.lock();
                if let Some((event_id, _)) = g.recent.get(&k) {
                    return Ok(Claim::Stored(event_id.clone()));
                }
                match g.inflight.get(&k) {
                    // Subscribed under the lock: the sender's drop cannot be missed.
                    Some(tx) => Some(tx.subscribe()),
                    None => {
                        if let Some(event_id) = self.stored(&k)? {
                            return Ok(Claim::Stored(event_id));
                        }
                        g.inflight.insert(k, tokio::sync::watch::channel(()).0);
                        guard.claimed.push(k);
                        None
                    }
                }
            };
            match wait {
                Some(mut rx) => {
                    let _ = rx.changed().await;
                }
                None => return Ok(Claim::Mine),
            }
        }
    }

    /// An empty guard for one request.
    pub fn guard(self: &Arc<Self>) -> Guard {
        Guard {
            ids: self.clone(),
            claimed: vec![],
            keys: vec![],
            settled: false,
        }
    }

    /// Runs the index on its own thread (once), until the index is dropped: every instance
    /// whose cursor is registered also moves it, so the journal can reclaim segments.
    fn start_thread(self: &Arc<Self>) {
        if self.running.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("audit-ids".into())
            .spawn(move || loop {
                let Some(me) = weak.upgrade() else {
                    return;
                };
                let pause = match me.step(100_000) {
                    Ok(n) if n >= 100_000 => None,
                    Ok(_) => Some(std::time::Duration::from_millis(200)),
                    Err(e) => {
                        tracing::error!(error = %e, "the audit-id index failed; retrying");
                        Some(std::time::Duration::from_secs(1))
                    }
                };
                drop(me);
                if let Some(p) = pause {
                    std::thread::sleep(p);
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the audit-id index thread");
            self.running.store(false, Ordering::Release);
        }
    }
}
