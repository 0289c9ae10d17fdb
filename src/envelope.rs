//! The ciphertext format of `kms key encrypt`: versioned and self-describing, so a ciphertext says
//! which key and key version made it and how, and decryption never has to guess.
//!
//! ```text
//! offset  size  field
//! 0       4     magic "KMSE"
//! 4       1     format version (1)
//! 5       1     algorithm: 1 = AES-GCM (AES-256 or AES-128, as the key), 2 = RSA-OAEP (SHA-1,
//!               MGF1-SHA-1), 3 = AES key wrap with padding, 4 = 3DES-CBC (legacy)
//! 6       16    inventory ID of the key (UUID bytes)
//! 22      4     key version (big-endian u32)
//! -- AES-256-GCM --
//! 26      12    IV (random per message)
//! 38      n+16  ciphertext || 128-bit tag
//! -- RSA-OAEP --
//! 26      k     ciphertext (k = modulus size)
//! -- AES key wrap with padding (data keys, alg 3) --
//! 26      40    the 32-byte data key wrapped under the key (RFC 5649)
//! -- 3DES-CBC (legacy, alg 4) --
//! 26      8     IV
//! 34      8n    ciphertext, PKCS#7 padding: exactly what `openssl enc -des-ede3-cbc -K … -iv …`
//!               writes (no authentication: 3DES data is only read and moved to AES-GCM)
//! ```
//!
//! For AES-256-GCM the whole header (bytes 0..38) is authenticated: the GCM additional data is the
//! header followed by the caller's AAD, so neither the key reference nor the IV can be swapped.

use crate::model::{KeyFamily, KeyType};

pub const MAGIC: &[u8; 4] = b"KMSE";
pub const FORMAT_VERSION: u8 = 1;
const FIXED: usize = 4 + 1 + 1 + 16 + 4;
pub const GCM_IV_LEN: usize = 12;
pub const GCM_TAG_LEN: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    AesGcm = 1,
    RsaOaepSha1 = 2,
    /// A data key wrapped with CKM_AES_KEY_WRAP_PAD (RFC 5649); the wrap itself authenticates.
    AesKeyWrapPad = 3,
    /// Triple-DES CBC, PKCS#7 padding; the body is IV (8) || ciphertext.
    Des3Cbc = 4,
}

impl Algorithm {
    pub fn for_key(key_type: KeyType) -> Algorithm {
        match key_type.family() {
            KeyFamily::Aes => Algorithm::AesGcm,
            KeyFamily::Des3 => Algorithm::Des3Cbc,
            _ => Algorithm::RsaOaepSha1,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    #[error("not a kms ciphertext (no KMSE header); was it made by `kms key encrypt`?")]
    NotEnvelope,
    #[error("kms ciphertext format version {0} is not supported by this kms (it reads version 1)")]
    UnsupportedVersion(u8),
    #[error("kms ciphertext names unknown algorithm {0}")]
    UnknownAlgorithm(u8),
    #[error("kms ciphertext is truncated")]
    Truncated,
}

/// A parsed ciphertext header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub algorithm: Algorithm,
    pub key_id: [u8; 16],
    pub key_version: u32,
    /// Present for AES-256-GCM.
    pub iv: Option<[u8; GCM_IV_LEN]>,
}

impl Header {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(FIXED + GCM_IV_LEN);
        out.extend_from_slice(MAGIC);
        out.push(FORMAT_VERSION);
        out.push(self.algorithm as u8);
        out.extend_from_slice(&self.key_id);
        out.extend_from_slice(&self.key_version.to_be_bytes());
        if let Some(iv) = &self.iv {
            out.extend_from_slice(iv);
        }
        out
    }

    /// The GCM additional data: header then the caller's AAD.
    pub fn gcm_aad(&self, user_aad: &[u8]) -> Vec<u8> {
        let mut aad = self.encode();
        aad.extend_from_slice(user_aad);
        aad
    }
}

/// Split a ciphertext into its header and body.
pub fn parse(data: &[u8]) -> Result<(Header, &[u8]), EnvelopeError> {
    if data.len() < 4 || &data[..4] != MAGIC {
        return Err(EnvelopeError::NotEnvelope);
    }
    if data.len() < FIXED {
        return Err(EnvelopeError::Truncated);
    }
    if data[4] != FORMAT_VERSION {
        return Err(EnvelopeError::UnsupportedVersion(data[4]));
    }
    let algorithm = match data[5] {
        1 => Algorithm::AesGcm,
        2 => Algorithm::RsaOaepSha1,
        3 => Algorithm::AesKeyWrapPad,
        4 => Algorithm::Des3Cbc,
        other => return Err(EnvelopeError::UnknownAlgorithm(other)),
    };
    let mut key_id = [0u8; 16];
    key_id.copy_from_slice(&data[6..22]);
    let mut v = [0u8; 4];
    v.copy_from_slice(&data[22..26]);
    let key_version = u32::from_be_bytes(v);
    let (iv, body) = match algorithm {
        Algorithm::AesGcm => {
            if data.len() < FIXED + GCM_IV_LEN + GCM_TAG_LEN {
                return Err(EnvelopeError::Truncated);
            }
            let mut iv = [0u8; GCM_IV_LEN];
            iv.copy_from_slice(&data[FIXED..FIXED + GCM_IV_LEN]);
            (Some(iv), &data[FIXED + GCM_IV_LEN..])
        }
        Algorithm::Des3Cbc
            if data.len() < FIXED + 16 || !(data.len() - FIXED).is_multiple_of(8) =>
        {
            return Err(EnvelopeError::Truncated)
        }
        Algorithm::RsaOaepSha1 | Algorithm::AesKeyWrapPad | Algorithm::Des3Cbc => {
            (None, &data[FIXED..])
        }
    };
    if body.is_empty() {
        return Err(EnvelopeError::Truncated);
    }
    Ok((
        Header {
            algorithm,
            key_id,
            key_version,
            iv,
        },
        body,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_garbage() {
        let h = Header {
            algorithm: Algorithm::AesGcm,
            key_id: [7; 16],
            key_version: 3,
            iv: Some([9; 12]),
        };
        let mut data = h.encode();
        data.extend_from_slice(&[1; 20]);
        let parsed = parse(&data);
        assert_eq!(parsed, Ok((h, &[1u8; 20][..])));
        assert_eq!(parse(b"hello"), Err(EnvelopeError::NotEnvelope));
        assert_eq!(parse(&data[..30]), Err(EnvelopeError::Truncated));
        let mut v2 = data.clone();
        v2[4] = 2;
        assert_eq!(parse(&v2), Err(EnvelopeError::UnsupportedVersion(2)));
    }
}
