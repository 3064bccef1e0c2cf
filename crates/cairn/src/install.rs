//! A cairn data directory: where each part keeps its state.
//!
//! ```text
//! DIR/cairn.json   the account id (created at first start)
//! DIR/root.key     the root key, mode 0600 (unless supplied by the operator)
//! DIR/journal/     the write-ahead journal
//! DIR/store/       the embedded object store
//! DIR/trail/       trail state, digest chains, signing keys
//! ```

use anyhow::{Context, Result};
use cairn_journal::{Journal, JournalOptions};
use cairn_record::Clock;
use cairn_store::{EmbeddedStore, ObjectStore};
use cairn_trail::{EngineOptions, RootKey, TrailEngine};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstallConfig {
    pub account_id: String,
}

pub struct Installation {
    pub config: InstallConfig,
    pub journal: Arc<Journal>,
    pub store: Arc<EmbeddedStore>,
    /// Where trails deliver: the embedded store, or a remote S3-compatible one.
    pub trail_store: Arc<dyn ObjectStore>,
    pub engine: Arc<TrailEngine>,
    /// The KMS key store (the `kms` service, SSE-KMS bodies, encrypted log files).
    pub kms: Arc<cairn_kms::Kms>,
}

/// Loads the root key: `CAIRN_ROOT_KEY` (64 hex chars) if set, else `DIR/root.key`, created
/// with mode 0600 on first use.
pub fn root_key(dir: &Path) -> Result<RootKey> {
    Ok(RootKey::from_bytes(&root_key_bytes(dir)?)?)
}

/// The root key's 32 bytes (see [`root_key`]).
pub fn root_key_bytes(dir: &Path) -> Result<Vec<u8>> {
    if let Ok(hexkey) = std::env::var("CAIRN_ROOT_KEY") {
        return hex::decode(hexkey.trim()).context("CAIRN_ROOT_KEY must be 64 hex characters");
    }
    RootKey::load_or_create(&dir.join("root.key"))?;
    let text = std::fs::read_to_string(dir.join("root.key")).context("reading the root key")?;
    hex::decode(text.trim()).context("the root key file is not hex")
}

/// Opens the embedded object store of data directory `dir` on its own (a validator or bench
/// reading a stopped installation), with the installation's key service.
pub fn open_store(dir: &Path) -> Result<EmbeddedStore> {
    let account = install_config(dir, None)?.account_id;
    open_store_with(dir, Arc::new(open_kms(dir, &account)?))
}

/// Opens the embedded object store of data directory `dir`: bodies encrypted at rest under a
/// key derived from the root key (SSE-S3), or under a KMS data key of `kms` (SSE-KMS).
pub fn open_store_with(dir: &Path, kms: Arc<cairn_kms::Kms>) -> Result<EmbeddedStore> {
    let cipher: Arc<dyn cairn_store::BodyCipher> =
        Arc::new(crate::sse::SseS3::from_root(&root_key_bytes(dir)?).with_kms(kms));
    EmbeddedStore::open_with_cipher(dir.join("store"), Some(cipher))
        .context("opening the object store")
}

/// Opens the KMS key store of data directory `dir` (`kms.redb`; key material sealed under
/// the root key).
pub fn open_kms(dir: &Path, account: &str) -> Result<cairn_kms::Kms> {
    cairn_kms::Kms::open(&dir.join("kms.redb"), &root_key_bytes(dir)?, account)
        .map_err(|e| anyhow::anyhow!("opening the KMS key store: {e}"))
}

fn random_account() -> String {
    use rand::Rng;
    let mut r = rand::thread_rng();
    let mut s = r.gen_range(1..=9).to_string();
    for _ in 0..11 {
        s.push(char::from(b'0' + r.gen_range(0..10u8)));
    }
    s
}

/// Reads (or creates) `DIR/cairn.json`.
pub fn install_config(dir: &Path, account: Option<&str>) -> Result<InstallConfig> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join("cairn.json");
    if let Ok(b) = std::fs::read(&path) {
        let c: InstallConfig =
            serde_json::from_slice(&b).with_context(|| format!("reading {}", path.display()))?;
        if let Some(a) = account {
            anyhow::ensure!(
                a == c.account_id,
                "data directory belongs to account {}, not {a}",
                c.account_id
            );
        }
        return Ok(c);
    }
    let account_id = account.map(str::to_string).unwrap_or_else(random_account);
    anyhow::ensure!(
        cairn_record::arn::is_account_id(&account_id),
        "account id must be 12 digits"
    );
    let c = InstallConfig { account_id };
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&c)?)?;
    std::fs::rename(&tmp, &path)?;
    Ok(c)
}

impl Installation {
    pub fn open(
        dir: &Path,
        account: Option<&str>,
        clock: Arc<dyn Clock>,
        tune: impl FnOnce(&mut EngineOptions),
    ) -> Result<Installation> {
        Self::open_with(dir, account, clock, None, tune)
    }

    /// As [`Installation::open`], delivering into `trail_store` when given.
    pub fn open_with(
        dir: &Path,
        account: Option<&str>,
        clock: Arc<dyn Clock>,
        trail_store: Option<Arc<dyn ObjectStore>>,
        tune: impl FnOnce(&mut EngineOptions),
    ) -> Result<Installation> {
        Self::open_delivering(
            dir,
            account,
            clock,
            |embedded| trail_store.unwrap_or_else(|| embedded.clone()),
            tune,
        )
    }

    /// As [`Installation::open`], delivering through the store `trail_store` makes from the
    /// embedded one (e.g. one that enforces bucket policies on deliveries).
    pub fn open_delivering(
        dir: &Path,
        account: Option<&str>,
        clock: Arc<dyn Clock>,
        trail_store: impl FnOnce(&Arc<EmbeddedStore>) -> Arc<dyn ObjectStore>,
        tune: impl FnOnce(&mut EngineOptions),
    ) -> Result<Installation> {
        let config = install_config(dir, account)?;
        let journal = Arc::new(
            Journal::open(
                dir.join("journal"),
                JournalOptions {
                    max_pending_bytes: crate::memory::current().share("journal_queue") as usize,
                    ..JournalOptions::default()
                },
            )
            .context("opening the journal")?,
        );
        let kms = Arc::new(open_kms(dir, &config.account_id)?);
        let store = Arc::new(open_store_with(dir, kms.clone())?);
        let mut opts = EngineOptions::new(&config.account_id);
        // Trails with a KMS key get their data keys as CloudTrail would.
        opts.log_keys = Some(cairn_trail::LogKeysHook(Arc::new(
            cairn_api::kms::on_behalf::TrailKeys::new(kms.clone(), journal.clone()),
        )));
        tune(&mut opts);
        let trail_store: Arc<dyn ObjectStore> = trail_store(&store);
        let engine = Arc::new(
            TrailEngine::open(
                &dir.join("trail"),
                journal.clone(),
                trail_store.clone(),
                clock,
                root_key(dir)?,
                opts,
            )
            .context("opening the trail engine")?,
        );
        Ok(Installation {
            config,
            trail_store,
            journal,
            store,
            engine,
            kms,
        })
    }
}
