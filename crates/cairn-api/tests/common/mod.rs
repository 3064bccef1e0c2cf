//! An in-process `Api` on a temporary directory (journal, embedded store, trail engine,
//! directory with a root key, metadata, history), shared by the integration tests and the
//! fuzz target (`fuzz/fuzz_targets/s3_request.rs` includes this file).
#![allow(dead_code)]

use cairn_api::cloudtrail::history::History;
use cairn_api::meta::Meta;
use cairn_api::{Api, ApiOptions};
use cairn_iam::identity::{Directory, Sealer};
use cairn_journal::{FaultInjector, Journal, JournalOptions};
use cairn_record::Clock;
use cairn_store::{EmbeddedStore, ObjectStore};
use cairn_trail::{EngineOptions, RootKey, TrailEngine};
use std::sync::Arc;

pub const ACCOUNT: &str = "123456789012";

/// Secrets kept as they are (tests only).
pub struct Plain;
impl Sealer for Plain {
    fn seal(&self, p: &[u8], _: &[u8]) -> Result<Vec<u8>, String> {
        Ok(p.to_vec())
    }
    fn open(&self, s: &[u8], _: &[u8]) -> Result<Vec<u8>, String> {
        Ok(s.to_vec())
    }
}

pub struct Testbed {
    pub dir: tempfile::TempDir,
    pub api: Arc<Api>,
    pub store: Arc<EmbeddedStore>,
    /// The account root's access key.
    pub key: String,
    pub secret: String,
}

/// Builds the API on `clock`, its journal failing through `faults` when given; `tune`
/// adjusts the options (the multipart directory is inside the temporary directory).
pub fn testbed(
    clock: Arc<dyn Clock>,
    faults: Option<Arc<dyn FaultInjector>>,
    tune: impl FnOnce(&mut ApiOptions),
) -> Testbed {
    let dir = tempfile::tempdir().unwrap();
    let journal = Arc::new(
        Journal::open(
            dir.path().join("journal"),
            JournalOptions {
                faults,
                ..Default::default()
            },
        )
        .unwrap(),
    );
    let store = Arc::new(EmbeddedStore::open(dir.path().join("store")).unwrap());
    let engine = Arc::new(
        TrailEngine::open(
            &dir.path().join("trail"),
            journal.clone(),
            store.clone(),
            clock.clone(),
            RootKey::from_bytes(&[7u8; 32]).unwrap(),
            EngineOptions::new(ACCOUNT),
        )
        .unwrap(),
    );
    let iam =
        Arc::new(Directory::open(&dir.path().join("iam.redb"), ACCOUNT, Arc::new(Plain)).unwrap());
    let k = iam.add_root_key(None, clock.now()).unwrap();
    let meta = Arc::new(Meta::open(&dir.path().join("meta.redb")).unwrap());
    let history = History::open(&dir.path().join("history.redb"), journal).unwrap();
    let mut opts = ApiOptions::new(ACCOUNT);
    opts.multipart_dir = dir.path().join("multipart");
    std::fs::create_dir_all(&opts.multipart_dir).unwrap();
    tune(&mut opts);
    let s: Arc<dyn ObjectStore> = store.clone();
    let kms =
        Arc::new(cairn_kms::Kms::open(&dir.path().join("kms.redb"), &[7u8; 32], ACCOUNT).unwrap());
    let logs =
        Arc::new(cairn_logs::LogStore::open(&dir.path().join("logs.redb"), &[7u8; 32]).unwrap());
    let api = Api::new(
        opts,
        engine,
        s.clone(),
        s,
        iam,
        kms,
        logs,
        meta,
        history,
        clock,
    );
    Testbed {
        dir,
        api,
        store,
        key: k.id,
        secret: k.secret,
    }
}
