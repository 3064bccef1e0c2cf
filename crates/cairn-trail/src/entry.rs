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

/// `1 | u32 header length | header | record JSON` (the header: [`HEADER_V1`], then postcard).
pub fn encode_event(rec: &EventRecord) -> Vec<u8> {
    encode_event_json(rec, &rec.to_json())
}

/// As [`encode_event`] when the record's JSON is already at hand.
pub fn encode_event_json(rec: &EventRecord, json: &[u8]) -> Vec<u8> {
    encode_record(KIND_EVENT, None, rec, json)
}

/// `3 | u32 header length | header | record JSON`: a request's record before its effect.
pub fn encode_pending(rec: &EventRecord) -> Vec<u8> {
    encode_record(KIND_PENDING, None, rec, &rec.to_json())
}

/// `4 | u64 pending position | u32 header length | header | record JSON`: the final
/// record of the pending entry at `pending`.
pub fn encode_resolved(pending: u64, rec: &EventRecord) -> Vec<u8> {
    encode_record(KIND_RESOLVED, Some(pending), rec, &rec.to_json())
}

fn encode_record(kind: u8, pending: Option<u64>, rec: &EventRecord, json: &[u8]) -> Vec<u8> {
    let header = EventHeader {
        facts: EventFacts::from(rec),
        time: rec.event_time.timestamp(),
    };
    let mut out = Vec::with_capacity(256 + json.len());
    out.push(kind);
    if let Some(p) = pending {
        out.extend_from_slice(&p.to_le_bytes());
    }
    // postcard cannot fail on this header (strings, options and a Vec); were it ever to,
    // the header is written as JSON, which is still read.
    let h = postcard::to_extend(&header, vec![HEADER_V1])
        .unwrap_or_else(|_| serde_json::to_vec(&header).unwrap_or_default());
    out.extend_from_slice(&(h.len() as u32).to_le_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(json);
    out
}

/// The first byte of a binary (postcard) header: the fields of [`EventHeader`] in order. A
/// header that begins with `{` is JSON, as every header was before; both are read. A change
/// to the header's fields takes a new version byte (postcard is not self-describing).
const HEADER_V1: u8 = 0x01;

fn decode_header(h: &[u8]) -> std::result::Result<EventHeader, String> {
    match h.first() {
        Some(&HEADER_V1) => match postcard::take_from_bytes(&h[1..]) {
            // Every byte is the header's: a longer one is not this version.
            Ok((header, [])) => Ok(header),
            Ok(_) => Err("bytes after the event header".into()),
            Err(e) => Err(e.to_string()),
        },
        Some(b'{') => serde_json::from_slice(h).map_err(|e| e.to_string()),
        _ => Err("unknown event header format".into()),
    }
}

/// Whether a journal entry is an [`AuditIds`] record, read from its kind alone (consumers
/// that want only these skip every other entry without decoding it).
pub fn is_audit_ids(bytes: &[u8]) -> bool {
    bytes.first() == Some(&KIND_AUDIT_IDS)
}

/// Reads `u32 header length | header | record JSON`.
fn decode_record(bytes: &[u8]) -> Result<(EventHeader, Vec<u8>)> {
    let bad = |m: &str| TrailError::Entry(m.to_string());
    let n = bytes.get(0..4).ok_or_else(|| bad("short event"))?;
    let n = u32::from_le_bytes([n[0], n[1], n[2], n[3]]) as usize;
    let h = bytes
        .get(4..4 + n)
        .ok_or_else(|| bad("short event header"))?;
    let header = decode_header(h).map_err(|e| bad(&e))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_record::builder;
    use cairn_record::record::Resource;

    fn record() -> EventRecord {
        let at = chrono::DateTime::from_timestamp(1_767_225_600, 0).unwrap_or_default();
        let who = builder::iam_user_identity("123456789012", "alice", "AIDAEXAMPLE", "AKIAEX");
        let mut r = builder::s3_object(
            "PutObject",
            "eu-west-1",
            at,
            who,
            "123456789012",
            "logs",
            "a/b",
            "logs.s3.amazonaws.com",
        );
        r.session_credential_from_console = Some("true".into());
        r.resources.get_or_insert_with(Vec::new).push(Resource {
            account_id: None,
            resource_type: "AWS::S3::Object".into(),
            arn: None,
            arn_prefix: Some("arn:aws:s3:::logs/a/".into()),
        });
        r
    }

    fn facts_of(e: &Entry) -> (&EventHeader, &[u8]) {
        match e {
            Entry::Event { header, json }
            | Entry::Pending { header, json }
            | Entry::Resolved { header, json, .. } => (header, json),
            _ => panic!("not a record entry"),
        }
    }

    #[test]
    fn record_entries_round_trip_with_a_binary_header() {
        let rec = record();
        let json = rec.to_json();
        for bytes in [
            encode_event(&rec),
            encode_pending(&rec),
            encode_resolved(77, &rec),
        ] {
            let e = decode(&bytes).expect("decodes");
            if let Entry::Resolved { pending, .. } = &e {
                assert_eq!(*pending, 77);
            }
            let (h, j) = facts_of(&e);
            assert_eq!(h.facts, EventFacts::from(&rec));
            assert!(h.facts.resources.iter().any(|r| r.2), "a prefix resource");
            assert_eq!(h.time, rec.event_time.timestamp());
            assert_eq!(j, &json[..]);
            // The header is binary, behind its version byte.
            let at = if bytes[0] == KIND_RESOLVED { 9 } else { 1 };
            assert_eq!(bytes[at + 4], HEADER_V1);
        }
    }

    #[test]
    fn entries_with_a_json_header_are_still_read() {
        let rec = record();
        let header = EventHeader {
            facts: EventFacts::from(&rec),
            time: rec.event_time.timestamp(),
        };
        let h = serde_json::to_vec(&header).unwrap_or_default();
        let mut old = vec![KIND_RESOLVED];
        old.extend_from_slice(&5u64.to_le_bytes());
        old.extend_from_slice(&(h.len() as u32).to_le_bytes());
        old.extend_from_slice(&h);
        old.extend_from_slice(&rec.to_json());
        let e = decode(&old).expect("an old entry decodes");
        let (got, j) = facts_of(&e);
        assert_eq!(got.facts, header.facts);
        assert_eq!(got.time, header.time);
        assert_eq!(j, &rec.to_json()[..]);
    }

    #[test]
    fn a_damaged_header_is_refused_not_misread() {
        let bytes = encode_event(&record());
        let n = u32::from_le_bytes(bytes[1..5].try_into().unwrap_or_default()) as usize;
        // An unknown version byte.
        let mut b = bytes.clone();
        b[5] = 0x02;
        assert!(decode(&b).is_err());
        // A header cut short inside a field.
        let mut b = vec![KIND_EVENT];
        b.extend_from_slice(&((n / 2) as u32).to_le_bytes());
        b.extend_from_slice(&bytes[5..5 + n / 2]);
        assert!(decode(&b).is_err());
        // A header with a byte more than its fields (a later version's field, say).
        let mut b = vec![KIND_EVENT];
        b.extend_from_slice(&((n + 1) as u32).to_le_bytes());
        b.extend_from_slice(&bytes[5..5 + n]);
        b.push(0);
        b.extend_from_slice(&bytes[5 + n..]);
        assert!(decode(&b).is_err());
        // A length past the end.
        let mut b = bytes.clone();
        b[1..5].copy_from_slice(&(bytes.len() as u32).to_le_bytes());
        assert!(decode(&b).is_err());
    }

    #[test]
    fn audit_ids_are_known_by_their_kind_alone() {
        let ids = AuditIds {
            channel: "arn:aws:cloudtrail:eu-west-1:123456789012:channel/c".into(),
            time: 1,
            ids: vec![("a".into(), "b".into())],
        };
        let bytes = encode_audit_ids(&ids);
        assert!(is_audit_ids(&bytes));
        assert!(matches!(decode(&bytes), Ok(Entry::AuditIds(m)) if m == ids));
        assert!(!is_audit_ids(&encode_event(&record())));
        assert!(!is_audit_ids(&[]));
    }
}
