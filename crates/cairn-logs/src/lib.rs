//! CloudWatch Logs for cairn: filter patterns ([`pattern`]), the language of FilterLogEvents
//! and metric filters, parsed once and matched against log event messages; the durable log
//! event store ([`store`]), every message sealed at rest; the Logs Insights query subset
//! ([`insights`]).

pub mod insights;
pub mod pattern;
pub mod store;

pub use pattern::{FilterPattern, PatternError};
pub use store::{Batch, Event, KeyRing, LogStore, NewEvent, StoreError, StreamStats};
