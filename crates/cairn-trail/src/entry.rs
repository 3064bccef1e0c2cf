//! What the journal holds: events (with the facts selectors need, so delivery never parses
//! whole records), trail commands (so configuration changes take effect at an exact
//! position in the event stream), and the two halves of a request whose effect happens
//! outside cairn after its record is durable (a write forwarded to an upstream): `Pending`,
//! the record as it will read if all goes well, journaled before the effect, and
//! `Resolved`, the final record with the effect's outcome, journaled after it. Consumers
//! deliver and index only `Event` and `Resolved`: a request is never delivered as a
//! success before its outcome is known, and never twice.

use crate::config::TrailCommand;
use crate::{Result, TrailError};
use cairn_record::selector::EventFacts;
use cairn_record::EventRecord;
use serde::{Deserialize, Serialize};

const KIND_EVENT: u8 = 1;
const KIND_COMMAND: u8 = 2;
const KIND_PENDING: u8 = 3;
const KIND_RESOLVED: u8 = 4;
const KIND_AUDIT_IDS: u8 = 5;

/// The ids of audit events a PutAuditEvents request stored, journaled in the same batch as
/// the events: the record from which the channel's idempotency index is built (never
/// delivered).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditIds {
    /// The channel's ARN.
    #[serde(rename = "c")]
    pub channel: String,
    /// When they were stored, epoch seconds.
    #[serde(rename = "t")]
    pub time: i64,
    /// `(id the client gave, eventID cairn gave)`.
    #[serde(rename = "i")]
    pub ids: Vec<(String, String)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventHeader {
    #[serde(rename = "f")]
    pub facts: EventFacts,
    /// eventTime, epoch seconds.
    #[serde(rename = "t")]
    pub time: i64,
}

pub enum Entry {
    Event {
        header: EventHeader,
        json: Vec<u8>,
    },
    Command(TrailCommand),
    /// A request whose effect is under way; not delivered.
    Pending {
        header: EventHeader,
        json: Vec<u8>,
    },
    /// The final record of the `Pending` entry at journal position `pending`; delivered as an
    /// event.
    Resolved {
        pending: u64,
        header: EventHeader,
        json: Vec<u8>,
    },
    /// Audit event ids stored by one PutAuditEvents request; not delivered.
    AuditIds(AuditIds),
}

/// `5 | JSON`: the audit event ids a request stored.
pub fn encode_audit_ids(ids: &AuditIds) -> Vec<u8> {
    let mut out = vec![KIND_AUDIT_IDS];
    out.extend_from_slice(&serde_json::to_vec(ids).unwrap_or_default());
    out
}

/// `1 | u32 header length | header JSON | record JSON`.
pub fn encode_event(rec: &EventRecord) -> Vec<u8> {
    encode_event_json(rec, &rec.to_json())
}

/// As [`encode_event`] when the record's JSON is already at hand.
pub fn encode_event_json(rec: &EventRecord, json: &[u8]) -> Vec<u8> {
    encode_record(KIND_EVENT, None, rec, json)
}

/// `3 | u32 header length | header JSON | record JSON`: a request's record before its effect.
pub fn encode_pending(rec: &EventRecord) -> Vec<u8> {
    encode_record(KIND_PENDING, None, rec, &rec.to_json())
}

/// `4 | u64 pending position | u32 header length | header JSON | record JSON`: the final
/// record of the pending entry at `pending`.
pub fn encode_resolved(pending: u64, rec: &EventRecord) -> Vec<u8> {
    encode_record(KIND_RESOLVED, Some(pending), rec, &rec.to_json())
}

fn encode_record(kind: u8, pending: Option<u64>, rec: &EventRecord, json: &[u8]) -> Vec<u8> {
    let header = EventHeader {
        facts: EventFacts::from(rec),
        time: rec.event_time.timestamp(),
    };
    let h = serde_json::to_vec(&header).unwrap_or_default();
    let mut out = Vec::with_capacity(13 + h.len() + json.len());
    out.push(kind);
    if let Some(p) = pending {
        out.extend_from_slice(&p.to_le_bytes());
    }
    out.extend_from_slice(&(h.len() as u32).to_le_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(json);
    out
}

/// Reads `u32 header length | header JSON | record JSON`.
fn decode_record(bytes: &[u8]) -> Result<(EventHeader, Vec<u8>)> {
    let bad = |m: &str| TrailError::Entry(m.to_string());
    let n = bytes.get(0..4).ok_or_else(|| bad("short event"))?;
    let n = u32::from_le_bytes([n[0], n[1], n[2], n[3]]) as usize;
    let h = bytes
        .get(4..4 + n)
        .ok_or_else(|| bad("short event header"))?;
    let header: EventHeader = serde_json::from_slice(h).map_err(|e| bad(&e.to_string()))?;
    Ok((header, bytes[4 + n..].to_vec()))
}

pub fn encode_command(cmd: &TrailCommand) -> Vec<u8> {
    let mut out = vec![KIND_COMMAND];
    out.extend_from_slice(&serde_json::to_vec(cmd).unwrap_or_default());
    out
}

pub fn decode(bytes: &[u8]) -> Result<Entry> {
    let bad = |m: &str| TrailError::Entry(m.to_string());
    match bytes.first() {
        Some(&KIND_EVENT) => {
            let (header, json) = decode_record(&bytes[1..])?;
            Ok(Entry::Event { header, json })
        }
        Some(&KIND_PENDING) => {
            let (header, json) = decode_record(&bytes[1..])?;
            Ok(Entry::Pending { header, json })
        }
        Some(&KIND_RESOLVED) => {
            let p = bytes.get(1..9).ok_or_else(|| bad("short resolved entry"))?;
            let pending = u64::from_le_bytes(p.try_into().map_err(|_| bad("short resolved"))?);
            let (header, json) = decode_record(&bytes[9..])?;
            Ok(Entry::Resolved {
                pending,
                header,
                json,
            })
        }
        Some(&KIND_COMMAND) => Ok(Entry::Command(
            serde_json::from_slice(&bytes[1..]).map_err(|e| bad(&e.to_string()))?,
        )),
        Some(&KIND_AUDIT_IDS) => Ok(Entry::AuditIds(
            serde_json::from_slice(&bytes[1..]).map_err(|e| bad(&e.to_string()))?,
        )),
        _ => Err(bad("unknown entry kind")),
    }
}
