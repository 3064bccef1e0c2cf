//! Digest signing keys: one RSA-2048 key pair per region at a time, each valid for 30 days,
//! rotated a day before expiry with overlapping windows (as AWS's ListPublicKeys shows), old
//! public keys kept forever. Private keys are stored encrypted (AES-256-GCM) under the
//! installation's root key and never logged.

use crate::{Result, TrailError};
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256};
use chrono::{DateTime, Duration, Utc};
use md5::Digest as _;
use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("signing_keys");
/// How long a key signs: 30 days, as every AWS sample key.
pub const KEY_VALIDITY: Duration = Duration::days(30);
/// A new key is made when the current one has less than this left.
pub const ROTATE_BEFORE: Duration = Duration::days(1);

/// The root key: 32 random bytes that encrypt every secret at rest.
pub struct RootKey(LessSafeKey);

impl RootKey {
    /// Reads `path`, or creates it (mode 0600) with fresh random bytes.
    pub fn load_or_create(path: &Path) -> Result<RootKey> {
        let bytes = match std::fs::read_to_string(path) {
            Ok(s) => hex::decode(s.trim())
                .map_err(|_| TrailError::Key("root key file is not hex".into()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut b = [0u8; 32];
                SystemRandom::new()
                    .fill(&mut b)
                    .map_err(|_| TrailError::Key("no randomness".into()))?;
                write_secret_file(path, hex::encode(b).as_bytes())?;
                tracing::info!(path = %path.display(), "created root key");
                b.to_vec()
            }
            Err(e) => return Err(e.into()),
        };
        RootKey::from_bytes(&bytes)
    }

    pub fn from_bytes(b: &[u8]) -> Result<RootKey> {
        if b.len() != 32 {
            return Err(TrailError::Key("root key must be 32 bytes".into()));
        }
        let k =
            UnboundKey::new(&AES_256_GCM, b).map_err(|_| TrailError::Key("bad root key".into()))?;
        Ok(RootKey(LessSafeKey::new(k)))
    }

    /// `nonce || ciphertext+tag`, bound to `context`.
    pub fn seal(&self, plaintext: &[u8], context: &[u8]) -> Result<Vec<u8>> {
        let mut nonce = [0u8; 12];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| TrailError::Key("no randomness".into()))?;
        let mut buf = plaintext.to_vec();
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context),
                &mut buf,
            )
            .map_err(|_| TrailError::Key("encryption failed".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(out)
    }

    pub fn open(&self, sealed: &[u8], context: &[u8]) -> Result<Vec<u8>> {
        if sealed.len() < 12 + 16 {
            return Err(TrailError::Key("sealed secret too short".into()));
        }
        let (n, ct) = sealed.split_at(12);
        let nonce =
            Nonce::try_assume_unique_for_key(n).map_err(|_| TrailError::Key("bad nonce".into()))?;
        let mut buf = ct.to_vec();
        let pt = self
            .0
            .open_in_place(nonce, Aad::from(context), &mut buf)
            .map_err(|_| {
                TrailError::Key(
                    "cannot decrypt a signing key: wrong root key or tampered data".into(),
                )
            })?;
        Ok(pt.to_vec())
    }
}

/// Writes a file readable only by its owner, durably.
pub fn write_secret_file(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredKey {
    fingerprint: String,
    /// DER PKCS#1 RSAPublicKey.
    public_der: Vec<u8>,
    /// PKCS#8 private key sealed under the root key.
    private_sealed: Vec<u8>,
    valid_from: DateTime<Utc>,
    valid_to: DateTime<Utc>,
}

/// A public key as ListPublicKeys returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicKeyInfo {
    /// DER PKCS#1 RSAPublicKey (base64 once on the JSON wire).
    pub value: Vec<u8>,
    pub validity_start: DateTime<Utc>,
    pub validity_end: DateTime<Utc>,
    /// Lowercase hex MD5 of `value`.
    pub fingerprint: String,
}

/// The per-region signing keys of an installation.
pub struct KeyRing {
    db: Arc<Database>,
    root: RootKey,
    cache: Mutex<HashMap<String, Arc<KeyPair>>>,
}

fn db_err(e: impl std::fmt::Display) -> TrailError {
    TrailError::Db(e.to_string())
}

/// Lowercase hex MD5 of the DER bytes: the fingerprint CloudTrail uses.
pub fn fingerprint(public_der: &[u8]) -> String {
    hex::encode(md5::Md5::digest(public_der))
}

impl KeyRing {
    pub fn new(db: Arc<Database>, root: RootKey) -> Result<KeyRing> {
        let w = db.begin_write().map_err(db_err)?;
        w.open_table(KEYS).map_err(db_err)?;
        w.commit().map_err(db_err)?;
        Ok(KeyRing {
            db,
            root,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The key that signs a digest ending at `t` in `region`, creating (and durably storing)
    /// a new one when none is valid at `t` or the newest is about to expire.
    pub fn signing_key(&self, region: &str, t: DateTime<Utc>) -> Result<(String, Arc<KeyPair>)> {
        let keys = read_keys(&self.db, region)?;
        let newest = keys
            .iter()
            .filter(|k| k.valid_from <= t && t < k.valid_to)
            .max_by_key(|k| k.valid_from)
            .cloned();
        let key = match newest {
            Some(k) if k.valid_to - t > ROTATE_BEFORE => k,
            _ => self.create(region, t)?,
        };
        if let Some(kp) = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key.fingerprint)
        {
            return Ok((key.fingerprint.clone(), kp.clone()));
        }
        let pkcs8 = self.root.open(
            &key.private_sealed,
            aad(region, &key.fingerprint).as_bytes(),
        )?;
        let kp = Arc::new(
            KeyPair::from_pkcs8(&pkcs8)
                .map_err(|e| TrailError::Key(format!("stored key unreadable: {e}")))?,
        );
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.fingerprint.clone(), kp.clone());
        Ok((key.fingerprint, kp))
    }

    fn create(&self, region: &str, t: DateTime<Utc>) -> Result<StoredKey> {
        let kp = KeyPair::generate(KeySize::Rsa2048)
            .map_err(|_| TrailError::Key("RSA key generation failed".into()))?;
        let public_der = kp.public_key().as_ref().to_vec();
        let pkcs8 = kp
            .as_der()
            .map_err(|_| TrailError::Key("cannot encode private key".into()))?;
        let fp = fingerprint(&public_der);
        let sealed = self
            .root
            .seal(pkcs8.as_ref(), aad(region, &fp).as_bytes())?;
        let key = StoredKey {
            fingerprint: fp.clone(),
            public_der,
            private_sealed: sealed,
            valid_from: t,
            valid_to: t + KEY_VALIDITY,
        };
        let w = self.db.begin_write().map_err(db_err)?;
        {
            let mut tb = w.open_table(KEYS).map_err(db_err)?;
            let mut keys: Vec<StoredKey> = match tb.get(region).map_err(db_err)? {
                Some(v) => serde_json::from_slice(v.value()).map_err(db_err)?,
                None => vec![],
            };
            keys.push(key.clone());
            let bytes = serde_json::to_vec(&keys).map_err(db_err)?;
            tb.insert(region, bytes.as_slice()).map_err(db_err)?;
        }
        w.commit().map_err(db_err)?;
        tracing::info!(region, fingerprint = %fp, valid_from = %t, "created digest signing key");
        Ok(key)
    }

    /// Public keys whose validity intersects the window (ListPublicKeys).
    pub fn public_keys(&self, w: &KeyWindow) -> Result<Vec<PublicKeyInfo>> {
        list_public_keys(&self.db, w)
    }
}

/// The keys ListPublicKeys asks for: those of `region` valid at some point of
/// `[start, end]`.
#[derive(Debug, Clone, Copy)]
pub struct KeyWindow<'a> {
    pub region: &'a str,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// The public keys of a window, read straight from a state database (no root key needed: public keys are not secret).
pub fn list_public_keys(db: &Database, w: &KeyWindow) -> Result<Vec<PublicKeyInfo>> {
    let keys = read_keys(db, w.region)?;
    Ok(keys
        .into_iter()
        .filter(|k| k.valid_from <= w.end && w.start <= k.valid_to)
        .map(|k| PublicKeyInfo {
            value: k.public_der,
            validity_start: k.valid_from,
            validity_end: k.valid_to,
            fingerprint: k.fingerprint,
        })
        .collect())
}

/// Every key of `region`, oldest first (none when the table does not exist yet).
fn read_keys(db: &Database, region: &str) -> Result<Vec<StoredKey>> {
    let r = db.begin_read().map_err(db_err)?;
    let t = match r.open_table(KEYS) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(vec![]),
        Err(e) => return Err(db_err(e)),
    };
    match t.get(region).map_err(db_err)? {
        Some(v) => serde_json::from_slice(v.value()).map_err(db_err),
        None => Ok(vec![]),
    }
}

fn aad(region: &str, fp: &str) -> String {
    format!("cairn-signing-key|{region}|{fp}")
}

/// RSASSA-PKCS1-v1_5 with SHA-256, lowercase hex.
pub fn sign_hex(kp: &KeyPair, msg: &[u8]) -> Result<String> {
    let mut sig = vec![0u8; kp.public_modulus_len()];
    kp.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), msg, &mut sig)
        .map_err(|_| TrailError::Key("signing failed".into()))?;
    Ok(hex::encode(sig))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(region: &str, start: DateTime<Utc>, end: DateTime<Utc>) -> KeyWindow<'_> {
        KeyWindow { region, start, end }
    }
    use chrono::TimeZone;

    fn ring() -> (tempfile::TempDir, KeyRing) {
        let d = tempfile::tempdir().unwrap();
        let db = Arc::new(Database::create(d.path().join("k.redb")).unwrap());
        let root = RootKey::load_or_create(&d.path().join("root.key")).unwrap();
        (d, KeyRing::new(db, root).unwrap())
    }

    #[test]
    fn public_key_is_pkcs1_der_and_fingerprint_is_md5() {
        let (_d, r) = ring();
        let t = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
        let (fp, kp) = r.signing_key("us-east-1", t).unwrap();
        let der = kp.public_key().as_ref();
        assert_eq!(der.len(), 270);
        assert_eq!(&der[..4], &[0x30, 0x82, 0x01, 0x0a]);
        use base64::Engine;
        assert!(base64::engine::general_purpose::STANDARD
            .encode(der)
            .starts_with("MIIBCgKCAQEA"));
        assert_eq!(fp, fingerprint(der));
    }

    #[test]
    fn keys_rotate_with_overlapping_30_day_windows_and_old_ones_stay_listable() {
        let (_d, r) = ring();
        let t0 = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
        let (a, _) = r.signing_key("eu-west-1", t0).unwrap();
        let (same, _) = r.signing_key("eu-west-1", t0 + Duration::days(10)).unwrap();
        assert_eq!(a, same);
        let (b, _) = r
            .signing_key("eu-west-1", t0 + Duration::days(29) + Duration::hours(1))
            .unwrap();
        assert_ne!(a, b);
        let all = r
            .public_keys(&window("eu-west-1", t0, t0 + Duration::days(60)))
            .unwrap();
        assert_eq!(all.len(), 2);
        assert!(all
            .iter()
            .all(|k| k.validity_end - k.validity_start == KEY_VALIDITY));
        assert_eq!(
            r.public_keys(&window(
                "eu-west-1",
                t0 - Duration::days(9),
                t0 - Duration::days(8)
            ))
            .unwrap()
            .len(),
            0
        );
        assert_eq!(
            r.public_keys(&window("us-east-1", t0, t0)).unwrap().len(),
            0,
            "keys are per region"
        );
    }

    #[test]
    fn root_key_file_is_owner_only_and_a_wrong_root_key_cannot_decrypt() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("root.key");
        let k = RootKey::load_or_create(&p).unwrap();
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let sealed = k.seal(b"secret", b"ctx").unwrap();
        assert_eq!(k.open(&sealed, b"ctx").unwrap(), b"secret");
        assert!(k.open(&sealed, b"other").is_err());
        let other = RootKey::from_bytes(&[7u8; 32]).unwrap();
        assert!(other.open(&sealed, b"ctx").is_err());
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
    }
}
