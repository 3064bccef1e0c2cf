//! cairn's key service: customer managed KMS keys (symmetric, AES-256-GCM), their aliases,
//! grants, key policies and rotation, kept in one small embedded database.
//!
//! - Key material is generated here, sealed under a key derived from the installation's root
//!   key (never written in plaintext, never logged) and opened only in memory.
//! - Ciphertext blobs are self-describing ([`blob`]): the key id, the material version, a
//!   nonce and the AES-256-GCM ciphertext, authenticated together with the encryption
//!   context. A blob opens only under its key, its material version and its exact context.
//! - Authorization ([`access`]) follows AWS: the key policy is the root of trust (it must
//!   allow the principal, or the account and then the principal's IAM policies must allow),
//!   grants add allows, and an explicit deny anywhere wins.
//!
//! The crate changes nothing by itself on a request: [`Kms::new_key`] and friends return new
//! records the caller persists with [`Kms::put_key`] once the request's event is durable.

pub mod access;
pub mod blob;
mod keys;

pub use keys::{
    default_policy, managed_policy, Alias, Grant, GrantConstraints, KeyRecord, KeyState, Material,
    NewKey,
};

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use aws_lc_rs::hmac;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use chrono::{DateTime, Utc};
use redb::{Database, ReadableTable, TableDefinition};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, RwLock};

const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("keys");
/// `region/alias/name` → alias.
const ALIASES: TableDefinition<&str, &[u8]> = TableDefinition::new("aliases");
/// `key_id/grant_id` → grant.
const GRANTS: TableDefinition<&str, &[u8]> = TableDefinition::new("grants");

/// An encryption context: string pairs, authenticated with every ciphertext.
pub type Context = BTreeMap<String, String>;

/// What can go wrong; each maps to the KMS error of the same meaning.
#[derive(Debug, thiserror::Error)]
pub enum KmsError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Disabled(String),
    #[error("{0}")]
    InvalidState(String),
    #[error("{0}")]
    InvalidCiphertext(String),
    #[error("{0}")]
    IncorrectKey(String),
    #[error("{0}")]
    AccessDenied(String),
    #[error("key store error: {0}")]
    Internal(String),
}

impl KmsError {
    /// The KMS error code.
    pub fn code(&self) -> &'static str {
        match self {
            KmsError::NotFound(_) => "NotFoundException",
            KmsError::Disabled(_) => "DisabledException",
            KmsError::InvalidState(_) => "KMSInvalidStateException",
            KmsError::InvalidCiphertext(_) => "InvalidCiphertextException",
            KmsError::IncorrectKey(_) => "IncorrectKeyException",
            KmsError::AccessDenied(_) => "AccessDeniedException",
            KmsError::Internal(_) => "KMSInternalException",
        }
    }
}

fn internal(e: impl std::fmt::Display) -> KmsError {
    KmsError::Internal(e.to_string())
}

pub type Result<T> = std::result::Result<T, KmsError>;

/// The key store of one installation.
pub struct Kms {
    db: Database,
    account: String,
    /// Seals key material at rest (derived from the root key).
    wrap: LessSafeKey,
    records: RwLock<HashMap<String, Arc<KeyRecord>>>,
    /// Opened material, by (key id, version). Material never changes once created.
    materials: RwLock<HashMap<(String, u32), Arc<LessSafeKey>>>,
    /// Parsed key policies, by key id, with the text they were parsed from.
    policies: RwLock<HashMap<String, (String, Arc<cairn_iam::policy::Policy>)>>,
    /// Each key's grants, read once and kept until they change.
    grant_cache: RwLock<HashMap<String, Arc<Vec<Grant>>>>,
}

fn random<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| internal("no randomness"))?;
    Ok(b)
}

/// `n` random bytes (GenerateRandom, data keys).
pub fn random_bytes(n: usize) -> Result<Vec<u8>> {
    let mut b = vec![0u8; n];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| internal("no randomness"))?;
    Ok(b)
}

fn aes(key: &[u8]) -> Result<LessSafeKey> {
    UnboundKey::new(&AES_256_GCM, key)
        .map(LessSafeKey::new)
        .map_err(|_| internal("bad key length"))
}

impl Kms {
    /// Opens (creating) the key store at `path`, sealing material under `root` (32 bytes).
    pub fn open(path: &Path, root: &[u8], account: &str) -> Result<Kms> {
        let db = cairn_db::create(path).map_err(internal)?;
        let w = db.begin_write().map_err(internal)?;
        w.open_table(KEYS).map_err(internal)?;
        w.open_table(ALIASES).map_err(internal)?;
        w.open_table(GRANTS).map_err(internal)?;
        w.commit().map_err(internal)?;
        let sub = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, root),
            b"cairn kms key material v1",
        );
        Ok(Kms {
            db,
            account: account.into(),
            wrap: aes(sub.as_ref())?,
            records: RwLock::new(HashMap::new()),
            materials: RwLock::new(HashMap::new()),
            policies: RwLock::new(HashMap::new()),
            grant_cache: RwLock::new(HashMap::new()),
        })
    }

    pub fn account(&self) -> &str {
        &self.account
    }

    /// Every value of `table` whose key starts with `prefix`, in key order.
    fn scan<T: serde::de::DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        prefix: &str,
    ) -> Result<Vec<T>> {
        let r = self.db.begin_read().map_err(internal)?;
        let t = r.open_table(table).map_err(internal)?;
        let mut out = Vec::new();
        for row in t.range(prefix..).map_err(internal)? {
            let (k, v) = row.map_err(internal)?;
            if !k.value().starts_with(prefix) {
                break;
            }
            out.push(serde_json::from_slice(v.value()).map_err(internal)?);
        }
        Ok(out)
    }

    /// Writes (`Some`) or removes (`None`) one value of `table`.
    fn write<T: serde::Serialize>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
        value: Option<&T>,
    ) -> Result<()> {
        let w = self.db.begin_write().map_err(internal)?;
        {
            let mut t = w.open_table(table).map_err(internal)?;
            match value {
                Some(v) => {
                    let bytes = serde_json::to_vec(v).map_err(internal)?;
                    t.insert(key, bytes.as_slice()).map_err(internal)?;
                }
                None => {
                    t.remove(key).map_err(internal)?;
                }
            }
        }
        w.commit().map_err(internal)
    }

    /// New key material, sealed for key `key_id` as version `version`.
    fn seal_material(&self, key_id: &str, version: u32, now: DateTime<Utc>) -> Result<Material> {
        let mut raw = random::<32>()?.to_vec();
        let nonce = random::<12>()?;
        let aad = format!("{key_id}/{version}");
        self.wrap
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad.as_bytes()),
                &mut raw,
            )
            .map_err(|_| internal("sealing key material failed"))?;
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&raw);
        Ok(Material {
            version,
            created: now,
            sealed,
        })
    }

    /// The opened material `version` of `key`.
    fn material(&self, key: &KeyRecord, version: u32) -> Result<Arc<LessSafeKey>> {
        let id = (key.key_id.clone(), version);
        if let Some(k) = self.materials.read().map_err(internal)?.get(&id) {
            return Ok(k.clone());
        }
        let m = key
            .materials
            .iter()
            .find(|m| m.version == version)
            .ok_or_else(|| {
                KmsError::InvalidCiphertext(
                    "The ciphertext refers to key material this key does not have.".into(),
                )
            })?;
        if m.sealed.len() < 12 + 16 {
            return Err(internal("sealed key material is too short"));
        }
        let (nonce, ct) = m.sealed.split_at(12);
        let mut buf = ct.to_vec();
        let aad = format!("{}/{version}", key.key_id);
        let plain = self
            .wrap
            .open_in_place(
                Nonce::try_assume_unique_for_key(nonce).map_err(internal)?,
                Aad::from(aad.as_bytes()),
                &mut buf,
            )
            .map_err(|_| internal("key material does not authenticate under the root key"))?;
        let k = Arc::new(aes(plain)?);
        self.materials
            .write()
            .map_err(internal)?
            .insert(id, k.clone());
        Ok(k)
    }

    /// A new key (not yet stored: [`Kms::put_key`] stores it).
    pub fn new_key(&self, region: &str, new: NewKey, now: DateTime<Utc>) -> Result<KeyRecord> {
        let key_id = uuid::Uuid::new_v4().to_string();
        let material = self.seal_material(&key_id, 1, now)?;
        Ok(KeyRecord {
            arn: format!("arn:aws:kms:{region}:{}:key/{key_id}", self.account),
            key_id,
            account: self.account.clone(),
            region: region.into(),
            created: now,
            description: new.description,
            state: KeyState::Enabled,
            deletion_date: None,
            pending_window_days: None,
            policy: new.policy,
            rotation_enabled: false,
            rotation_period_days: None,
            next_rotation: None,
            on_demand_rotation: None,
            current_version: 1,
            materials: vec![material],
            tags: new.tags,
            aws_managed: false,
        })
    }

    /// A new AWS managed key for `service` (`s3`) in `region` and its alias `alias/aws/<service>`
    /// (not stored: the caller records its creation, then stores both).
    pub fn new_managed_key(
        &self,
        region: &str,
        service: &str,
        now: DateTime<Utc>,
    ) -> Result<(KeyRecord, Alias)> {
        let mut k = self.new_key(
            region,
            NewKey {
                description: format!(
                    "Default key that protects my {} objects when no other key is defined",
                    service.to_uppercase()
                ),
                policy: managed_policy(&self.account, region, service),
                tags: vec![],
            },
            now,
        )?;
        k.aws_managed = true;
        // AWS rotates its managed keys every year.
        k.rotation_enabled = true;
        k.rotation_period_days = Some(365);
        k.next_rotation = Some(now + chrono::Duration::days(365));
        let alias = Alias {
            name: format!("alias/aws/{service}"),
            region: region.into(),
            target_key_id: k.key_id.clone(),
            created: now,
            updated: now,
        };
        Ok((k, alias))
    }

    /// `key` with a new current material version (older versions keep decrypting).
    pub fn rotated(&self, key: &KeyRecord, now: DateTime<Utc>) -> Result<KeyRecord> {
        let mut k = key.clone();
        let v = k.materials.iter().map(|m| m.version).max().unwrap_or(0) + 1;
        k.materials.push(self.seal_material(&k.key_id, v, now)?);
        k.current_version = v;
        Ok(k)
    }

    /// Stores (creates or replaces) a key record.
    pub fn put_key(&self, key: &KeyRecord) -> Result<()> {
        self.write(KEYS, &key.key_id, Some(key))?;
        self.records
            .write()
            .map_err(internal)?
            .insert(key.key_id.clone(), Arc::new(key.clone()));
        Ok(())
    }

    /// Removes a key, its material, its aliases and its grants for good.
    pub fn purge_key(&self, key_id: &str) -> Result<()> {
        let w = self.db.begin_write().map_err(internal)?;
        {
            w.open_table(KEYS)
                .map_err(internal)?
                .remove(key_id)
                .map_err(internal)?;
            let mut a = w.open_table(ALIASES).map_err(internal)?;
            let doomed: Vec<String> = a
                .iter()
                .map_err(internal)?
                .filter_map(|r| r.ok())
                .filter_map(|(k, v)| {
                    let al: Alias = serde_json::from_slice(v.value()).ok()?;
                    (al.target_key_id == key_id).then(|| k.value().to_string())
                })
                .collect();
            for d in doomed {
                a.remove(d.as_str()).map_err(internal)?;
            }
            let mut g = w.open_table(GRANTS).map_err(internal)?;
            let prefix = format!("{key_id}/");
            let doomed: Vec<String> = g
                .range(prefix.as_str()..)
                .map_err(internal)?
                .filter_map(|r| r.ok())
                .map(|(k, _)| k.value().to_string())
                .take_while(|k| k.starts_with(&prefix))
                .collect();
            for d in doomed {
                g.remove(d.as_str()).map_err(internal)?;
            }
        }
        w.commit().map_err(internal)?;
        self.records.write().map_err(internal)?.remove(key_id);
        self.forget_grants(key_id)?;
        self.policies.write().map_err(internal)?.remove(key_id);
        self.materials
            .write()
            .map_err(internal)?
            .retain(|(k, _), _| k != key_id);
        Ok(())
    }

    /// The key with this id, if stored.
    pub fn key(&self, key_id: &str) -> Result<Option<Arc<KeyRecord>>> {
        if let Some(k) = self.records.read().map_err(internal)?.get(key_id) {
            return Ok(Some(k.clone()));
        }
        let r = self.db.begin_read().map_err(internal)?;
        let t = r.open_table(KEYS).map_err(internal)?;
        let Some(v) = t.get(key_id).map_err(internal)? else {
            return Ok(None);
        };
        let k: Arc<KeyRecord> = Arc::new(serde_json::from_slice(v.value()).map_err(internal)?);
        self.records
            .write()
            .map_err(internal)?
            .insert(key_id.to_string(), k.clone());
        Ok(Some(k))
    }

    /// Every key, in key id order.
    pub fn keys(&self) -> Result<Vec<Arc<KeyRecord>>> {
        Ok(self
            .scan::<KeyRecord>(KEYS, "")?
            .into_iter()
            .map(Arc::new)
            .collect())
    }

    /// The key a request names in `region`: a key id, a key ARN, an alias name
    /// (`alias/…`) or an alias ARN. NotFound when nothing by that name exists here.
    pub fn resolve(&self, region: &str, id: &str) -> Result<Arc<KeyRecord>> {
        let not_found = || {
            KmsError::NotFound(if id.contains("alias/") {
                format!(
                    "Alias {} is not found.",
                    alias_arn_of(region, &self.account, id)
                )
            } else {
                format!(
                    "Key '{}' does not exist",
                    if id.starts_with("arn:") {
                        id.to_string()
                    } else {
                        format!("arn:aws:kms:{region}:{}:key/{id}", self.account)
                    }
                )
            })
        };
        let (want_region, rest) = match id.strip_prefix("arn:aws:kms:") {
            Some(r) => {
                let mut parts = r.splitn(3, ':');
                let (reg, acct, res) = (
                    parts.next().unwrap_or_default(),
                    parts.next().unwrap_or_default(),
                    parts.next().unwrap_or_default(),
                );
                if acct != self.account {
                    return Err(not_found());
                }
                (reg, res)
            }
            None => (region, id),
        };
        if want_region != region {
            return Err(not_found());
        }
        let key_id = if rest.starts_with("alias/") {
            match self.alias(region, rest)? {
                Some(a) => a.target_key_id,
                None => return Err(not_found()),
            }
        } else if let Some(k) = rest.strip_prefix("key/") {
            k.to_string()
        } else if id.starts_with("arn:") {
            return Err(not_found());
        } else {
            rest.to_string()
        };
        match self.key(&key_id)? {
            Some(k) if k.region == region => Ok(k),
            _ => Err(not_found()),
        }
    }

    /// The alias `name` (`alias/…`) of `region`.
    pub fn alias(&self, region: &str, name: &str) -> Result<Option<Alias>> {
        let r = self.db.begin_read().map_err(internal)?;
        let t = r.open_table(ALIASES).map_err(internal)?;
        let k = format!("{region}/{name}");
        match t.get(k.as_str()).map_err(internal)? {
            Some(v) => Ok(Some(serde_json::from_slice(v.value()).map_err(internal)?)),
            None => Ok(None),
        }
    }

    /// Every alias of `region`, in name order.
    pub fn aliases(&self, region: &str) -> Result<Vec<Alias>> {
        self.scan(ALIASES, &format!("{region}/"))
    }

    pub fn put_alias(&self, a: &Alias) -> Result<()> {
        self.write(ALIASES, &format!("{}/{}", a.region, a.name), Some(a))
    }

    pub fn delete_alias(&self, region: &str, name: &str) -> Result<()> {
        self.write::<Alias>(ALIASES, &format!("{region}/{name}"), None)
    }

    /// The grants of a key, in grant id order.
    pub fn grants(&self, key_id: &str) -> Result<Arc<Vec<Grant>>> {
        if let Some(g) = self.grant_cache.read().map_err(internal)?.get(key_id) {
            return Ok(g.clone());
        }
        let out: Vec<Grant> = self.scan(GRANTS, &format!("{key_id}/"))?;
        let out = Arc::new(out);
        self.grant_cache
            .write()
            .map_err(internal)?
            .insert(key_id.to_string(), out.clone());
        Ok(out)
    }

    /// The key's policy, parsed (and checked) once per text.
    pub fn policy(&self, key: &KeyRecord) -> Result<Arc<cairn_iam::policy::Policy>> {
        if let Some((text, p)) = self.policies.read().map_err(internal)?.get(&key.key_id) {
            if *text == key.policy {
                return Ok(p.clone());
            }
        }
        let p = Arc::new(access::check_policy(&key.policy).map_err(KmsError::Internal)?);
        self.policies
            .write()
            .map_err(internal)?
            .insert(key.key_id.clone(), (key.policy.clone(), p.clone()));
        Ok(p)
    }

    fn forget_grants(&self, key_id: &str) -> Result<()> {
        self.grant_cache.write().map_err(internal)?.remove(key_id);
        Ok(())
    }

    /// Every grant of every key (to find one by its token).
    pub fn all_grants(&self) -> Result<Vec<Grant>> {
        self.scan(GRANTS, "")
    }

    pub fn put_grant(&self, g: &Grant) -> Result<()> {
        self.write(GRANTS, &format!("{}/{}", g.key_id, g.grant_id), Some(g))?;
        self.forget_grants(&g.key_id)
    }

    pub fn delete_grant(&self, key_id: &str, grant_id: &str) -> Result<()> {
        self.write::<Grant>(GRANTS, &format!("{key_id}/{grant_id}"), None)?;
        self.forget_grants(key_id)
    }

    /// Encrypts `plain` under the key's current material, bound to `context`.
    pub fn encrypt(&self, key: &KeyRecord, plain: &[u8], context: &Context) -> Result<Vec<u8>> {
        let m = self.material(key, key.current_version)?;
        blob::seal(&m, &key.key_id, key.current_version, plain, context)
    }

    /// Opens a blob under `key` (the caller found it with [`blob::key_id`], checked its state
    /// and authorized the call). Any mismatch is InvalidCiphertext.
    pub fn decrypt(
        &self,
        key: &KeyRecord,
        ciphertext: &[u8],
        context: &Context,
    ) -> Result<Vec<u8>> {
        let parsed = blob::parse(ciphertext)?;
        if parsed.key_id != key.key_id {
            return Err(KmsError::IncorrectKey(
                "The key ID in the request does not identify a KMS key that can perform this operation.".into(),
            ));
        }
        let m = self.material(key, parsed.version)?;
        blob::open(&m, &parsed, context)
    }

    /// A data key of `n` bytes: its plaintext and its ciphertext under `key`.
    pub fn data_key(
        &self,
        key: &KeyRecord,
        n: usize,
        context: &Context,
    ) -> Result<(Vec<u8>, Vec<u8>)> {
        let plain = random_bytes(n)?;
        let ct = self.encrypt(key, &plain, context)?;
        Ok((plain, ct))
    }

    /// What is due at `now`: keys whose deletion date passed (to delete) and keys due for
    /// automatic rotation (with their new material). Nothing is changed: the caller records
    /// each, then [`Kms::apply`]s it.
    pub fn due(&self, now: DateTime<Utc>) -> Result<Vec<Due>> {
        let mut out = Vec::new();
        for k in self.keys()? {
            if k.state == KeyState::PendingDeletion && k.deletion_date.is_some_and(|d| d <= now) {
                out.push(Due::Delete(k));
            } else if k.rotation_enabled
                && k.state == KeyState::Enabled
                && k.next_rotation.is_some_and(|d| d <= now)
            {
                let mut r = self.rotated(&k, now)?;
                r.next_rotation = Some(
                    now + chrono::Duration::days(r.rotation_period_days.unwrap_or(365) as i64),
                );
                out.push(Due::Rotate(Box::new(r)));
            }
        }
        Ok(out)
    }

    pub fn apply(&self, due: &Due) -> Result<()> {
        match due {
            Due::Delete(k) => self.purge_key(&k.key_id),
            Due::Rotate(k) => self.put_key(k),
        }
    }
}

/// Work the key service does by itself.
pub enum Due {
    /// The waiting period ended: the key and its material go.
    Delete(Arc<KeyRecord>),
    /// Automatic rotation: the key with its new material.
    Rotate(Box<KeyRecord>),
}

/// An SSE-KMS data key as stored beside a body: the data key's ciphertext blob and the
/// encryption context it was generated with.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub blob: Vec<u8>,
    pub context: Context,
}

impl Envelope {
    /// `u32` length of the context's JSON, the JSON, the blob.
    pub fn to_bytes(&self) -> Vec<u8> {
        let ctx = serde_json::to_vec(&self.context).unwrap_or_else(|_| b"{}".to_vec());
        let mut out = Vec::with_capacity(4 + ctx.len() + self.blob.len());
        out.extend_from_slice(&(ctx.len() as u32).to_be_bytes());
        out.extend_from_slice(&ctx);
        out.extend_from_slice(&self.blob);
        out
    }

    pub fn from_bytes(b: &[u8]) -> Result<Envelope> {
        let bad = || KmsError::InvalidCiphertext("malformed key envelope".into());
        let n = b
            .get(..4)
            .map(|x| u32::from_be_bytes([x[0], x[1], x[2], x[3]]) as usize)
            .ok_or_else(bad)?;
        let ctx = b.get(4..4 + n).ok_or_else(bad)?;
        Ok(Envelope {
            context: serde_json::from_slice(ctx).map_err(|_| bad())?,
            blob: b[4 + n..].to_vec(),
        })
    }
}

impl Kms {
    /// The plaintext data key of an envelope, for the store that keeps a body under it. The
    /// key must still exist and be enabled: a disabled or deleted key makes the body
    /// unreadable. (Authorization is the caller's business, before it reads.)
    pub fn open_envelope(&self, bytes: &[u8]) -> Result<Vec<u8>> {
        let env = Envelope::from_bytes(bytes)?;
        let id = blob::key_id(&env.blob)?;
        let key = self
            .key(&id)?
            .ok_or_else(|| KmsError::NotFound(format!("Key '{id}' does not exist")))?;
        key.usable()?;
        self.decrypt(&key, &env.blob, &env.context)
    }

    /// A new data key's envelope under `key` with `context` (the plaintext is not returned:
    /// the store derives body keys from the envelope through [`Kms::open_envelope`]).
    pub fn new_envelope(&self, key: &KeyRecord, context: &Context) -> Result<Envelope> {
        key.usable()?;
        let (_, blob) = self.data_key(key, 32, context)?;
        Ok(Envelope {
            blob,
            context: context.clone(),
        })
    }
}

/// The ARN of alias `name` (`alias/…`, or already an ARN).
pub fn alias_arn_of(region: &str, account: &str, name: &str) -> String {
    if name.starts_with("arn:") {
        name.to_string()
    } else {
        format!("arn:aws:kms:{region}:{account}:{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kms() -> (tempfile::TempDir, Kms) {
        let d = tempfile::tempdir().unwrap();
        let k = Kms::open(&d.path().join("kms.redb"), &[7u8; 32], "123456789012").unwrap();
        (d, k)
    }

    fn new_key(k: &Kms) -> KeyRecord {
        let rec = k
            .new_key(
                "us-east-1",
                NewKey {
                    description: "t".into(),
                    policy: default_policy("123456789012"),
                    tags: vec![],
                },
                Utc::now(),
            )
            .unwrap();
        k.put_key(&rec).unwrap();
        rec
    }

    #[test]
    fn blobs_open_only_under_their_key_version_and_context() {
        let (_d, k) = kms();
        let key = new_key(&k);
        let other = new_key(&k);
        let mut ctx = Context::new();
        ctx.insert("purpose".into(), "test".into());
        let ct = k.encrypt(&key, b"secret sentinel", &ctx).unwrap();
        assert_eq!(k.decrypt(&key, &ct, &ctx).unwrap(), b"secret sentinel");
        // Wrong context.
        let mut wrong = ctx.clone();
        wrong.insert("purpose".into(), "other".into());
        assert!(matches!(
            k.decrypt(&key, &ct, &wrong),
            Err(KmsError::InvalidCiphertext(_))
        ));
        assert!(matches!(
            k.decrypt(&key, &ct, &Context::new()),
            Err(KmsError::InvalidCiphertext(_))
        ));
        // Wrong key.
        assert!(matches!(
            k.decrypt(&other, &ct, &ctx),
            Err(KmsError::IncorrectKey(_))
        ));
        // Every single-byte change is refused.
        for i in 0..ct.len() {
            let mut t = ct.clone();
            t[i] ^= 1;
            let r = blob::key_id(&t)
                .ok()
                .and_then(|id| (id == key.key_id).then_some(()))
                .map(|_| k.decrypt(&key, &t, &ctx));
            assert!(!matches!(r, Some(Ok(_))), "byte {i} flipped still opens");
        }
        // Rotation: old blobs still open, new ones use the new version.
        let rotated = k.rotated(&key, Utc::now()).unwrap();
        k.put_key(&rotated).unwrap();
        assert_eq!(k.decrypt(&rotated, &ct, &ctx).unwrap(), b"secret sentinel");
        let ct2 = k.encrypt(&rotated, b"x", &ctx).unwrap();
        assert_eq!(blob::parse(&ct2).unwrap().version, 2);
    }

    #[test]
    fn material_is_sealed_at_rest_and_reopens_after_restart() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("kms.redb");
        let (key, ct) = {
            let k = Kms::open(&path, &[7u8; 32], "123456789012").unwrap();
            let key = new_key(&k);
            let ct = k.encrypt(&key, b"hello", &Context::new()).unwrap();
            (key, ct)
        };
        let k = Kms::open(&path, &[7u8; 32], "123456789012").unwrap();
        let key2 = k.resolve("us-east-1", &key.arn).unwrap();
        assert_eq!(k.decrypt(&key2, &ct, &Context::new()).unwrap(), b"hello");
        // Another root key cannot open the material.
        drop(k);
        let k = Kms::open(&path, &[8u8; 32], "123456789012").unwrap();
        let key3 = k.resolve("us-east-1", &key.key_id).unwrap();
        assert!(k.decrypt(&key3, &ct, &Context::new()).is_err());
    }

    #[test]
    fn deletion_after_the_window_and_automatic_rotation_come_due() {
        let (_d, k) = kms();
        let now = Utc::now();
        let mut doomed = new_key(&k);
        doomed.state = KeyState::PendingDeletion;
        doomed.deletion_date = Some(now - chrono::Duration::seconds(1));
        k.put_key(&doomed).unwrap();
        let ct = k.encrypt(&new_key(&k), b"x", &Context::new()).unwrap();
        let mut rotating = k
            .resolve("us-east-1", &blob::key_id(&ct).unwrap())
            .unwrap()
            .as_ref()
            .clone();
        rotating.rotation_enabled = true;
        rotating.rotation_period_days = Some(90);
        rotating.next_rotation = Some(now - chrono::Duration::seconds(1));
        k.put_key(&rotating).unwrap();
        let due = k.due(now).unwrap();
        assert_eq!(due.len(), 2);
        for d in &due {
            k.apply(d).unwrap();
        }
        assert!(k.key(&doomed.key_id).unwrap().is_none());
        let r = k.key(&rotating.key_id).unwrap().unwrap();
        assert_eq!(r.current_version, 2);
        assert!(r.next_rotation.unwrap() > now + chrono::Duration::days(89));
        assert_eq!(k.decrypt(&r, &ct, &Context::new()).unwrap(), b"x");
        assert!(k.due(now).unwrap().is_empty());
    }

    #[test]
    fn names_resolve_only_in_their_region_and_account() {
        let (_d, k) = kms();
        let key = new_key(&k);
        k.put_alias(&Alias {
            name: "alias/main".into(),
            region: "us-east-1".into(),
            target_key_id: key.key_id.clone(),
            created: Utc::now(),
            updated: Utc::now(),
        })
        .unwrap();
        assert_eq!(
            k.resolve("us-east-1", "alias/main").unwrap().key_id,
            key.key_id
        );
        assert_eq!(
            k.resolve("us-east-1", "arn:aws:kms:us-east-1:123456789012:alias/main")
                .unwrap()
                .key_id,
            key.key_id
        );
        assert!(k.resolve("us-west-2", &key.key_id).is_err());
        assert!(k.resolve("us-west-2", "alias/main").is_err());
        assert!(k
            .resolve(
                "us-east-1",
                &key.arn.replace("123456789012", "210987654321")
            )
            .is_err());
        k.purge_key(&key.key_id).unwrap();
        assert!(k.resolve("us-east-1", "alias/main").is_err());
    }
}
