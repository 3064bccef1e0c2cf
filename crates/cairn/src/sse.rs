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

/// Seals the chunks of one streamed body (see `cairn_store::body`): AES-256-GCM under the
/// file's own key; the nonce is the chunk's index with a flag on the last chunk, the file's
/// name the associated data.
struct ChunkGcm {
    key: LessSafeKey,
    context: Vec<u8>,
}

fn chunk_nonce(index: u64, last: bool) -> Nonce {
    let mut n = [0u8; 12];
    n[0] = u8::from(last);
    n[4..].copy_from_slice(&index.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

impl cairn_store::ChunkKey for ChunkGcm {
    fn seal(&self, index: u64, last: bool, buf: &mut Vec<u8>) -> Result<(), String> {
        let tag = self
            .key
            .seal_in_place_separate_tag(
                chunk_nonce(index, last),
                Aad::from(self.context.as_slice()),
                buf,
            )
            .map_err(|_| "encryption failed".to_string())?;
        buf.extend_from_slice(tag.as_ref());
        Ok(())
    }

    fn open(&self, index: u64, last: bool, buf: &mut Vec<u8>) -> Result<(), String> {
        let len = self
            .key
            .open_in_place(
                chunk_nonce(index, last),
                Aad::from(self.context.as_slice()),
                buf,
            )
            .map_err(|_| "wrong key or tampered body".to_string())?
            .len();
        buf.truncate(len);
        Ok(())
    }
}

impl SseS3 {
    /// The key of one streamed body file: derived apart from the whole-body keys (another
    /// label), so no key ever meets both nonce schemes.
    fn streamed_key(&self, context: &[u8], wrapped: Option<&[u8]>) -> Result<LessSafeKey, String> {
        let k = match wrapped {
            Some(w) => {
                let kms = self.kms.as_ref().ok_or("no key service")?;
                let data_key = kms.open_envelope(w).map_err(|e| e.to_string())?;
                hmac::sign(
                    &hmac::Key::new(hmac::HMAC_SHA256, &data_key),
                    &[b"cairn sse-kms chunked v1\0".as_slice(), context].concat(),
                )
            }
            None => hmac::sign(
                &self.master,
                &[b"cairn sse-s3 chunked v1\0".as_slice(), context].concat(),
            ),
        };
        UnboundKey::new(&AES_256_GCM, k.as_ref())
            .map(LessSafeKey::new)
            .map_err(|_| "bad body key".to_string())
    }
}

impl cairn_store::BodyCipher for SseS3 {
    fn chunk_key(
        &self,
        context: &[u8],
        wrapped: Option<&[u8]>,
    ) -> Result<Box<dyn cairn_store::ChunkKey>, String> {
        Ok(Box::new(ChunkGcm {
            key: self.streamed_key(context, wrapped)?,
            context: context.to_vec(),
        }))
    }

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

    fn read_range(s: &EmbeddedStore, range: Option<(u64, u64)>) -> std::io::Result<Vec<u8>> {
        use std::io::Read;
        let (_, mut r) = s
            .open_read("bkt", "k", None, &|_| range)
            .map_err(std::io::Error::other)?;
        let mut out = vec![];
        r.read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn streamed_bodies_read_by_range_and_every_change_to_the_file_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let cipher: Arc<dyn BodyCipher> = Arc::new(SseS3::from_root(&[9u8; 32]));
        let s = EmbeddedStore::open_with_cipher(dir.path(), Some(cipher.clone())).unwrap();
        s.create_bucket("bkt").unwrap();
        // Three and a bit chunks, written in odd-sized pieces.
        let body: Vec<u8> = (0..(3 * cairn_store::body::CHUNK + 777))
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let mut w = s.stage_writer("bkt", "k", &PutOptions::default()).unwrap();
        for piece in body.chunks(10_000) {
            w.write(piece).unwrap();
        }
        let staged = w.finish().unwrap();
        assert_eq!(staged.size, body.len() as u64);
        s.commit_staged(staged).unwrap();
        assert_eq!(s.get("bkt", "k").unwrap().body, body);
        let c = cairn_store::body::CHUNK as u64;
        for (a, b) in [
            (0, 1),
            (c - 1, c + 1),
            (5, 3 * c + 777),
            (2 * c, 2 * c),
            (3 * c, 3 * c + 777),
        ] {
            assert_eq!(
                read_range(&s, Some((a, b))).unwrap(),
                body[a as usize..b as usize],
                "range {a}..{b}"
            );
        }
        let file = std::fs::read_dir(dir.path().join("blobs"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let raw = std::fs::read(&file).unwrap();
        let header = 11 + 4;
        let sealed = cairn_store::body::CHUNK + cairn_store::body::TAG;
        // Swapped chunks, a flipped bit, a cut and an appended byte: none reads back.
        let mut swapped = raw.clone();
        let (a, b) = swapped[header..].split_at_mut(sealed);
        a[..sealed].swap_with_slice(&mut b[..sealed]);
        let mut flipped = raw.clone();
        flipped[header + sealed + 100] ^= 1;
        let cut = raw[..raw.len() - (777 + 16)].to_vec();
        let mut longer = raw.clone();
        longer.push(0);
        for (what, bad) in [
            ("swap", swapped),
            ("flip", flipped),
            ("cut", cut),
            ("append", longer),
        ] {
            std::fs::write(&file, &bad).unwrap();
            assert!(s.get("bkt", "k").is_err(), "{what}: whole read");
            assert!(read_range(&s, Some((c, c + 10))).is_err(), "{what}: range");
        }
        // The last chunk is flagged: a body cut at a chunk boundary does not open either.
        std::fs::write(&file, &raw).unwrap();
        assert_eq!(read_range(&s, None).unwrap(), body);
    }

    #[test]
    fn an_empty_streamed_body_is_sealed_too() {
        let dir = tempfile::tempdir().unwrap();
        let cipher: Arc<dyn BodyCipher> = Arc::new(SseS3::from_root(&[9u8; 32]));
        let s = EmbeddedStore::open_with_cipher(dir.path(), Some(cipher)).unwrap();
        s.create_bucket("bkt").unwrap();
        s.put("bkt", "k", b"", &PutOptions::default()).unwrap();
        assert_eq!(s.get("bkt", "k").unwrap().body, b"");
        let file = std::fs::read_dir(dir.path().join("blobs"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let mut raw = std::fs::read(&file).unwrap();
        assert_eq!(raw.len(), 11 + 4 + 16);
        raw[20] ^= 1;
        std::fs::write(&file, &raw).unwrap();
        assert!(s.get("bkt", "k").is_err());
    }

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

    /// A small streamed body is kept in the store's database, not a file: sealed there the
    /// same way (no plaintext in the database file), and a changed bit is corruption, on a
    /// whole read and on a range.
    #[test]
    fn small_bodies_kept_with_their_metadata_are_sealed_and_checked() {
        use redb::{ReadableTable, TableDefinition};
        let dir = tempfile::tempdir().unwrap();
        let cipher: Arc<dyn BodyCipher> = Arc::new(SseS3::from_root(&[9u8; 32]));
        let s = EmbeddedStore::open_with_cipher(dir.path(), Some(cipher.clone())).unwrap();
        s.create_bucket("bkt").unwrap();
        let secret = b"the quick brown fox jumps over the lazy dog".repeat(20);
        let mut w = s.stage_writer("bkt", "k", &PutOptions::default()).unwrap();
        w.write(&secret).unwrap();
        s.commit_staged(w.finish().unwrap()).unwrap();
        assert_eq!(s.get("bkt", "k").unwrap().body, secret);
        assert_eq!(read_range(&s, Some((4, 9))).unwrap(), b"quick");
        assert_eq!(
            std::fs::read_dir(dir.path().join("blobs")).unwrap().count(),
            0
        );
        assert_eq!(s.inline_bodies().unwrap(), 1);
        drop(s);
        let meta = dir.path().join("meta.redb");
        let raw = std::fs::read(&meta).unwrap();
        assert!(
            !raw.windows(9).any(|w| w == b"quick bro"),
            "plaintext in the database"
        );
        const INLINE: TableDefinition<&str, &[u8]> = TableDefinition::new("inline_bodies");
        // Flips one bit of the stored body's byte `at`, in the database itself.
        let flip = |at: usize| {
            let db = cairn_db::create(&meta).unwrap();
            let w = db.begin_write().unwrap();
            {
                let mut t = w.open_table(INLINE).unwrap();
                let (k, mut v) = {
                    let (k, v) = t.first().unwrap().unwrap();
                    (k.value().to_string(), v.value().to_vec())
                };
                v[at] ^= 1;
                t.insert(k.as_str(), v.as_slice()).unwrap();
            }
            w.commit().unwrap();
        };
        for at in [12, 20, 11 + 4 + secret.len() + 3] {
            flip(at);
            let s = EmbeddedStore::open_with_cipher(dir.path(), Some(cipher.clone())).unwrap();
            assert!(
                matches!(
                    s.get("bkt", "k"),
                    Err(cairn_store::StoreError::Corrupt { .. })
                ),
                "byte {at} changed: whole read"
            );
            assert!(read_range(&s, Some((4, 9))).is_err(), "byte {at}: range");
            drop(s);
            // Changed back: it reads again.
            flip(at);
        }
        let s = EmbeddedStore::open_with_cipher(dir.path(), Some(cipher)).unwrap();
        assert_eq!(s.get("bkt", "k").unwrap().body, secret);
    }

    /// Sealed, a body's stored bytes carry the stream header and a tag: it is in memory (and
    /// kept with its metadata) only while those fit the limit too.
    #[test]
    fn a_sealed_body_is_in_memory_only_while_its_stored_bytes_fit() {
        let dir = tempfile::tempdir().unwrap();
        let cipher: Arc<dyn BodyCipher> = Arc::new(SseS3::from_root(&[9u8; 32]));
        let s = EmbeddedStore::open_with_cipher(dir.path(), Some(cipher)).unwrap();
        s.create_bucket("bkt").unwrap();
        let fits = cairn_store::INLINE_MAX
            - (cairn_store::body::STREAM_MAGIC.len() + 4 + cairn_store::body::TAG);
        for (n, kept) in [(fits, true), (fits + 1, false)] {
            let mut w = s.stage_writer("bkt", "k", &PutOptions::default()).unwrap();
            assert_eq!(w.takes_in_memory(n), kept, "{n} bytes, asked first");
            w.write(&vec![1u8; n]).unwrap();
            assert_eq!(w.in_memory(), kept, "{n} bytes");
            s.commit_staged(w.finish().unwrap()).unwrap();
            assert_eq!(s.inline_bodies().unwrap(), kept as usize, "{n} bytes");
            assert_eq!(s.get("bkt", "k").unwrap().body.len(), n);
        }
    }
}
