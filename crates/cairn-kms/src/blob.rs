//! The ciphertext blob: `"CK1"`, the key id's length (one byte) and the key id, the material
//! version (u32, big-endian), a 96-bit nonce, then the AES-256-GCM ciphertext and tag. The
//! header and the canonical encryption context are the associated data, so a blob opens only
//! under its own key, version and exact context; any other change fails authentication.

use crate::{internal, Context, KmsError, Result};
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};

const MAGIC: &[u8] = b"CK1";

/// A parsed blob (borrowing the bytes).
pub struct Parsed<'a> {
    pub key_id: String,
    pub version: u32,
    header: &'a [u8],
    nonce: &'a [u8],
    sealed: &'a [u8],
}

fn invalid() -> KmsError {
    KmsError::InvalidCiphertext(
        "The ciphertext is invalid or was not encrypted under this key and encryption context."
            .into(),
    )
}

/// The canonical bytes of an encryption context: pairs sorted by key, each part
/// length-prefixed (no separator can be forged).
pub fn canonical_context(context: &Context) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in context {
        for part in [k, v] {
            out.extend_from_slice(&(part.len() as u32).to_be_bytes());
            out.extend_from_slice(part.as_bytes());
        }
    }
    out
}

pub fn parse(blob: &[u8]) -> Result<Parsed<'_>> {
    let rest = blob.strip_prefix(MAGIC).ok_or_else(invalid)?;
    let (&n, rest) = rest.split_first().ok_or_else(invalid)?;
    let n = n as usize;
    if rest.len() < n + 4 + 12 + 16 {
        return Err(invalid());
    }
    let key_id = std::str::from_utf8(&rest[..n])
        .map_err(|_| invalid())?
        .to_string();
    let version = u32::from_be_bytes(rest[n..n + 4].try_into().map_err(|_| invalid())?);
    let header_len = MAGIC.len() + 1 + n + 4;
    Ok(Parsed {
        key_id,
        version,
        header: &blob[..header_len],
        nonce: &blob[header_len..header_len + 12],
        sealed: &blob[header_len + 12..],
    })
}

/// The key id a blob names (InvalidCiphertext when it is not a blob).
pub fn key_id(blob: &[u8]) -> Result<String> {
    parse(blob).map(|p| p.key_id)
}

pub(crate) fn seal(
    key: &LessSafeKey,
    key_id: &str,
    version: u32,
    plain: &[u8],
    context: &Context,
) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(MAGIC.len() + 1 + key_id.len() + 4 + 12 + plain.len() + 16);
    out.extend_from_slice(MAGIC);
    out.push(u8::try_from(key_id.len()).map_err(internal)?);
    out.extend_from_slice(key_id.as_bytes());
    out.extend_from_slice(&version.to_be_bytes());
    let mut aad = out.clone();
    aad.extend_from_slice(&canonical_context(context));
    let mut nonce = [0u8; 12];
    SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| internal("no randomness"))?;
    out.extend_from_slice(&nonce);
    let mut body = plain.to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad.as_slice()),
        &mut body,
    )
    .map_err(|_| internal("encryption failed"))?;
    out.extend_from_slice(&body);
    Ok(out)
}

pub(crate) fn open(key: &LessSafeKey, p: &Parsed<'_>, context: &Context) -> Result<Vec<u8>> {
    let mut aad = p.header.to_vec();
    aad.extend_from_slice(&canonical_context(context));
    let mut buf = p.sealed.to_vec();
    let nonce = Nonce::try_assume_unique_for_key(p.nonce).map_err(|_| invalid())?;
    let n = key
        .open_in_place(nonce, Aad::from(aad.as_slice()), &mut buf)
        .map_err(|_| invalid())?
        .len();
    buf.truncate(n);
    Ok(buf)
}

/// A grant token from random bytes (an opaque base64url string, as KMS's are).
pub fn grant_token(random: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random)
}
