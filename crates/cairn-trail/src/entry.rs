//! What the journal holds: events (with the facts selectors need, so delivery never parses
//! whole records) and trail commands (so configuration changes take effect at an exact
//! position in the event stream).

use crate::config::TrailCommand;
use crate::{Result, TrailError};
use cairn_record::selector::EventFacts;
use cairn_record::EventRecord;
use serde::{Deserialize, Serialize};

const KIND_EVENT: u8 = 1;
const KIND_COMMAND: u8 = 2;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventHeader {
    #[serde(rename = "f")]
    pub facts: EventFacts,
    /// eventTime, epoch seconds.
    #[serde(rename = "t")]
    pub time: i64,
}

pub enum Entry {
    Event { header: EventHeader, json: Vec<u8> },
    Command(TrailCommand),
}

/// `1 | u32 header length | header JSON | record JSON`.
pub fn encode_event(rec: &EventRecord) -> Vec<u8> {
    encode_event_json(rec, &rec.to_json())
}

/// As [`encode_event`] when the record's JSON is already at hand.
pub fn encode_event_json(rec: &EventRecord, json: &[u8]) -> Vec<u8> {
    let header = EventHeader {
        facts: EventFacts::from(rec),
        time: rec.event_time.timestamp(),
    };
    let h = serde_json::to_vec(&header).unwrap_or_default();
    let mut out = Vec::with_capacity(5 + h.len() + json.len());
    out.push(KIND_EVENT);
    out.extend_from_slice(&(h.len() as u32).to_le_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(json);
    out
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
            let n = bytes.get(1..5).ok_or_else(|| bad("short event"))?;
            let n = u32::from_le_bytes([n[0], n[1], n[2], n[3]]) as usize;
            let h = bytes
                .get(5..5 + n)
                .ok_or_else(|| bad("short event header"))?;
            let header: EventHeader = serde_json::from_slice(h).map_err(|e| bad(&e.to_string()))?;
            Ok(Entry::Event {
                header,
                json: bytes[5 + n..].to_vec(),
            })
        }
        Some(&KIND_COMMAND) => Ok(Entry::Command(
            serde_json::from_slice(&bytes[1..]).map_err(|e| bad(&e.to_string()))?,
        )),
        _ => Err(bad("unknown entry kind")),
    }
}
