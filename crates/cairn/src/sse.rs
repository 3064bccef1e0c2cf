//! SSE-S3 for the embedded store: every object body is encrypted at rest with AES-256-GCM.
//! Each body file has its own key, derived from the installation's root key with HMAC-SHA256
//! over the file's random id, and a random 96-bit nonce — so no key ever encrypts more than
//! one body and nonce reuse cannot occur in practice. The file id is also the AEAD's
//! associated data: a body moved under another name does not open.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use aws_lc_rs::hmac;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};

pub struct SseS3 {
    master: hmac::Key,
    /// Opens SSE-KMS envelopes (bodies sealed under a KMS data key).
    kms: Option<std::sync::Arc<cairn_kms::Kms>>,
}

impl SseS3 {
    /// From the 32 root-key bytes.
    pub fn from_root(root: &[u8]) -> SseS3 {
        // A separate subkey, so body keys never equal a key used for anything else.
        let sub = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, root), b"cairn sse-s3 v1");
        SseS3 {
            master: hmac::Key::new(hmac::HMAC_SHA256, sub.as_ref()),
            kms: None,
        }
    }

    /// With a key service: bodies written with an SSE-KMS envelope are sealed under a key
    /// derived from the envelope's data key (and the file id), so they open only while the
    /// KMS key can be used.
    pub fn with_kms(mut self, kms: std::sync::Arc<cairn_kms::Kms>) -> SseS3 {
        self.kms = Some(kms);
        self
    }

    fn wrapped_key(&self, wrapped: &[u8], context: &[u8]) -> Result<LessSafeKey, String> {
        let kms = self.kms.as_ref().ok_or("no key service")?;
        let data_key = kms.open_envelope(wrapped).map_err(|e| e.to_string())?;
        let k = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, &data_key),
            &[b"cairn sse-kms body v1\0".as_slice(), context].concat(),
        );
        UnboundKey::new(&AES_256_GCM, k.as_ref())
            .map(LessSafeKey::new)
            .map_err(|_| "bad body key".to_string())
    }

    fn key_for(&self, context: &[u8]) -> Result<LessSafeKey, String> {
        let k = hmac::sign(&self.master, context);
        UnboundKey::new(&AES_256_GCM, k.as_ref())
            .map(LessSafeKey::new)
            .map_err(|_| "bad body key".to_string())
    }
}

/// AES-256-GCM with a random nonce: nonce, ciphertext, tag.
fn seal_with(key: &LessSafeKey, plain: &[u8], context: &[u8]) -> Result<Vec<u8>, String> {
    let mut nonce = [0u8; 12];
    SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| "no randomness".to_string())?;
    let mut out = Vec::with_capacity(12 + plain.len() + 16);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plain);
    let tag = key
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(context),
            &mut out[12..],
        )
        .map_err(|_| "encryption failed".to_string())?;
    out.extend_from_slice(tag.as_ref());
    Ok(out)
}

fn open_with(key: &LessSafeKey, sealed: &[u8], context: &[u8]) -> Result<Vec<u8>, String> {
    if sealed.len() < 12 + 16 {
        return Err("sealed body too short".into());
    }
    let (n, ct) = sealed.split_at(12);
    let nonce = Nonce::try_assume_unique_for_key(n).map_err(|_| "bad nonce".to_string())?;
    let mut buf = ct.to_vec();
    let len = key
        .open_in_place(nonce, Aad::from(context), &mut buf)
        .map_err(|_| "wrong key or tampered body".to_string())?
        .len();
    buf.truncate(len);
    Ok(buf)
}

impl cairn_store::BodyCipher for SseS3 {
    fn seal_wrapped(
        &self,
        plain: &[u8],
        context: &[u8],
        wrapped: &[u8],
    ) -> Result<Vec<u8>, String> {
        seal_with(&self.wrapped_key(wrapped, context)?, plain, context)
    }

    fn open_wrapped(
        &self,
        sealed: &[u8],
        context: &[u8],
        wrapped: &[u8],
    ) -> Result<Vec<u8>, String> {
        open_with(&self.wrapped_key(wrapped, context)?, sealed, context)
    }

    fn seal(&self, plain: &[u8], context: &[u8]) -> Result<Vec<u8>, String> {
        seal_with(&self.key_for(context)?, plain, context)
    }

    fn open(&self, sealed: &[u8], context: &[u8]) -> Result<Vec<u8>, String> {
        open_with(&self.key_for(context)?, sealed, context)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_store::{BodyCipher, EmbeddedStore, ObjectStore, PutOptions};
    use std::sync::Arc;

    #[test]
    fn bodies_are_encrypted_on_disk_and_tampering_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let cipher: Arc<dyn BodyCipher> = Arc::new(SseS3::from_root(&[9u8; 32]));
        let s = EmbeddedStore::open_with_cipher(dir.path(), Some(cipher.clone())).unwrap();
        s.create_bucket("bkt").unwrap();
        let secret = b"the quick brown fox jumps over the lazy dog".repeat(100);
        s.put("bkt", "k", &secret, &PutOptions::default()).unwrap();
        assert_eq!(s.get("bkt", "k").unwrap().body, secret);
        let files: Vec<_> = std::fs::read_dir(dir.path().join("blobs"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(files.len(), 1);
        let raw = std::fs::read(&files[0]).unwrap();
        assert!(
            !raw.windows(9).any(|w| w == b"quick bro"),
            "plaintext on disk"
        );
        // A flipped bit fails the tag: the store reports corruption, never altered bytes.
        let mut bad = raw.clone();
        let last = bad.len() - 20;
        bad[last] ^= 1;
        std::fs::write(&files[0], &bad).unwrap();
        assert!(matches!(
            s.get("bkt", "k"),
            Err(cairn_store::StoreError::Corrupt { .. })
        ));
        std::fs::write(&files[0], &raw).unwrap();
        drop(s);
        // Another root key cannot read it; no key at all cannot either.
        let other: Arc<dyn BodyCipher> = Arc::new(SseS3::from_root(&[8u8; 32]));
        let s2 = EmbeddedStore::open_with_cipher(dir.path(), Some(other)).unwrap();
        assert!(s2.get("bkt", "k").is_err());
        drop(s2);
        let s3 = EmbeddedStore::open(dir.path()).unwrap();
        assert!(s3.get("bkt", "k").is_err());
        drop(s3);
        let s4 = EmbeddedStore::open_with_cipher(dir.path(), Some(cipher)).unwrap();
        assert_eq!(s4.get("bkt", "k").unwrap().body, secret);
    }
}
