//! The CloudTrail event record and everything needed to decide which trail receives it.
//!
//! This crate is pure: no I/O, no clocks other than the [`Clock`] trait (whose
//! [`SystemClock`] reads the system time). Field names, casing, types and time formats follow
//! `shared/spec/cloudtrail-formats.md` §2 exactly; [`selector`] implements basic and advanced
//! event selectors with AWS's validation limits and error names.

pub mod arn;
pub mod builder;
pub mod record;
pub mod selector;
pub mod time;

pub use arn::Arn;
pub use record::{EventRecord, Resource, SessionContext, UserIdentity, EVENT_VERSION};
pub use time::{Clock, ManualClock, SystemClock};
