//! Encryption and decryption on the token: AES-256-GCM with AAD, and RSA-OAEP decryption
//! (SHA-1/MGF1-SHA-1: the only OAEP hash SoftHSM2 2.6.1 accepts).

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource};
use cryptoki::mechanism::{Mechanism, MechanismType};
use zeroize::Zeroizing;

use super::objects::KeyClass;
use super::{HsmError, Token};
use crate::model::ObjectId;

/// GCM tag length in bits.
const GCM_TAG_BITS: u64 = 128;

impl Token {
    /// AES-256-GCM encryption under the secret key `id`: returns ciphertext || 16-byte tag.
    pub fn aes_gcm_encrypt(
        &self,
        id: &ObjectId,
        iv: &[u8; 12],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, HsmError> {
        self.run(|s| {
            let mut iv = *iv;
            let key = self.handle(s, id, KeyClass::Secret)?;
            let params = GcmParams::new(&mut iv, aad, GCM_TAG_BITS.into())
                .map_err(HsmError::ck(self.name(), "preparing AES-GCM"))?;
            s.encrypt(&Mechanism::AesGcm(params), key, plaintext)
                .map_err(HsmError::ck(self.name(), "encrypting (CKM_AES_GCM)"))
        })
    }

    /// AES-256-GCM decryption; a wrong key, IV, AAD or a tampered ciphertext is one error.
    pub fn aes_gcm_decrypt(
        &self,
        id: &ObjectId,
        iv: &[u8; 12],
        aad: &[u8],
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, HsmError> {
        self.run(|s| {
            let mut iv = *iv;
            let key = self.handle(s, id, KeyClass::Secret)?;
            let params = GcmParams::new(&mut iv, aad, GCM_TAG_BITS.into())
                .map_err(HsmError::ck(self.name(), "preparing AES-GCM"))?;
            s.decrypt(&Mechanism::AesGcm(params), key, ciphertext)
                .map(Zeroizing::new)
                .map_err(|e| match e {
                    // SoftHSM2 2.6.1 reports a GCM tag mismatch (wrong AAD, tampered data) as
                    // CKR_GENERAL_ERROR rather than CKR_ENCRYPTED_DATA_INVALID.
                    CkError::Pkcs11(RvError::GeneralError, _) => HsmError::DecryptionFailed {
                        token: self.name().to_owned(),
                    },
                    other => self.decrypt_error(other, "decrypting (CKM_AES_GCM)"),
                })
        })
    }

    /// RSA-OAEP (SHA-1, MGF1-SHA-1, empty label) decryption with the private key `id`.
    pub fn rsa_oaep_decrypt(
        &self,
        id: &ObjectId,
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, HsmError> {
        let params = PkcsOaepParams::new(
            MechanismType::SHA1,
            PkcsMgfType::MGF1_SHA1,
            PkcsOaepSource::empty(),
        );
        self.run(|s| {
            let key = self.handle(s, id, KeyClass::Private)?;
            s.decrypt(&Mechanism::RsaPkcsOaep(params), key, ciphertext)
                .map(Zeroizing::new)
                .map_err(|e| match e {
                    // SoftHSM2 2.6.1 reports an OAEP padding failure as CKR_GENERAL_ERROR; the
                    // caller has already checked the length, so this is the ciphertext's fault.
                    CkError::Pkcs11(RvError::GeneralError, _) => HsmError::DecryptionFailed {
                        token: self.name().to_owned(),
                    },
                    other => self.decrypt_error(other, "decrypting (CKM_RSA_PKCS_OAEP)"),
                })
        })
    }

    /// Triple-DES CBC with PKCS#7 padding (CKM_DES3_CBC_PAD): what `openssl enc -des-ede3-cbc`
    /// writes. Legacy: decrypts old data; encrypts only for keys allowed to.
    pub fn des3_cbc_encrypt(
        &self,
        id: &ObjectId,
        iv: &[u8; 8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, HsmError> {
        self.run(|s| {
            let key = self.handle(s, id, KeyClass::Secret)?;
            s.encrypt(&Mechanism::Des3CbcPad(*iv), key, plaintext)
                .map_err(HsmError::ck(self.name(), "encrypting (CKM_DES3_CBC_PAD)"))
        })
    }

    /// Triple-DES CBC decryption; bad padding (a wrong key or IV) is one error.
    pub fn des3_cbc_decrypt(
        &self,
        id: &ObjectId,
        iv: &[u8; 8],
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, HsmError> {
        self.run(|s| {
            let key = self.handle(s, id, KeyClass::Secret)?;
            s.decrypt(&Mechanism::Des3CbcPad(*iv), key, ciphertext)
                .map(Zeroizing::new)
                .map_err(|e| match e {
                    CkError::Pkcs11(RvError::GeneralError, _) => HsmError::DecryptionFailed {
                        token: self.name().to_owned(),
                    },
                    other => self.decrypt_error(other, "decrypting (CKM_DES3_CBC_PAD)"),
                })
        })
    }

    /// Triple-DES decryption of whole blocks without padding (CKM_DES3_ECB): for the restore
    /// drill of a decrypt-only key, whose original and copy must turn the same random blocks into
    /// the same output. Never used on data.
    pub fn des3_ecb_decrypt_blocks(
        &self,
        id: &ObjectId,
        blocks: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, HsmError> {
        self.run(|s| {
            let key = self.handle(s, id, KeyClass::Secret)?;
            s.decrypt(&Mechanism::Des3Ecb, key, blocks)
                .map(Zeroizing::new)
                .map_err(HsmError::ck(self.name(), "decrypting (CKM_DES3_ECB)"))
        })
    }

    fn decrypt_error(&self, e: CkError, operation: &'static str) -> HsmError {
        match e {
            CkError::Pkcs11(RvError::EncryptedDataInvalid | RvError::EncryptedDataLenRange, _) => {
                HsmError::DecryptionFailed {
                    token: self.name().to_owned(),
                }
            }
            other => HsmError::ck(self.name(), operation)(other),
        }
    }
}
