//! CloudWatch Logs for cairn (issue 12, in progress). So far: filter patterns
//! ([`pattern`]), the language of FilterLogEvents, metric filters and subscription filters,
//! parsed once and matched against log event messages.

pub mod pattern;

pub use pattern::{FilterPattern, PatternError};
