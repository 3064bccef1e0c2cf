//! Trail delivery: from the journal to CloudTrail log files and signed hourly digests.
//!
//! [`TrailEngine`] is the journal's `delivery` consumer. It routes each event to the
//! (trail, region) batches whose selectors admit it, closes a delivery *epoch* every
//! delivery interval (or when a file nears 50 MB), and writes each batch as one log file.
//! Exactly once: before any file of an epoch is written, an intent naming the epoch's journal
//! range, keys and selector snapshots is committed together with the new cursor; a retry
//! after a crash rebuilds the same files from the same journal range — same keys, same bytes.
//! Digests are emitted per (trail, region) chain once their window has closed and every file
//! delivered in it is stored; a digest rewritten after a crash is byte-identical (PKCS#1 v1.5
//! signatures are deterministic).

pub mod config;
pub mod digest;
mod engine;
pub mod entry;
pub mod failpoint;
pub mod keys;
pub mod logfile;
pub mod names;

pub use config::{validate_trail_name, TrailCommand, TrailConfig, TrailState};
pub use engine::{
    BucketKmsHook, DeliveryGuard, EngineOptions, LogKey, LogKeys, LogKeysHook, PumpReport,
    StateReader, TrailEngine, DEFAULT_GZIP_LEVEL, DELIVERY_CONSUMER,
};
pub use keys::{KeyRing, KeyWindow, PublicKeyInfo, RootKey};

#[derive(Debug, thiserror::Error)]
pub enum TrailError {
    #[error(transparent)]
    Journal(#[from] cairn_journal::JournalError),
    #[error(transparent)]
    Store(#[from] cairn_store::StoreError),
    #[error("state database error: {0}")]
    Db(String),
    #[error("signing key error: {0}")]
    Key(String),
    #[error("bad journal entry: {0}")]
    Entry(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("Unknown trail: {name} for the user: {account}")]
    TrailNotFound { name: String, account: String },
    #[error("{0}")]
    Invalid(String),
    #[error("rebuilt log file {key} differs from the original (sha256 {got}, expected {want})")]
    Nondeterministic {
        key: String,
        got: String,
        want: String,
    },
}

pub type Result<T> = std::result::Result<T, TrailError>;
