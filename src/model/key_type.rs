//! Key types: what kms generates, each with its family, curve, secret length, signature schemes
//! and supported operations (the one table every layer reads).

use super::Operation;

domain_enum! {
    /// The kinds of key the KMS generates on a token.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub enum KeyType as "key type" {
        Aes128 = "aes-128",
        Aes256 = "aes-256",
        EcP256 = "ec-p256",
        EcP384 = "ec-p384",
        EcP521 = "ec-p521",
        Ed25519 = "ed25519",
        Rsa2048 = "rsa-2048",
        Rsa3072 = "rsa-3072",
        Rsa4096 = "rsa-4096",
        HmacSha256 = "hmac-sha256",
        HmacSha384 = "hmac-sha384",
        /// Triple DES (three-key, 168-bit): legacy, kept only to read old data and move it to AES.
        Des3 = "des3",
        /// A secret value its applications read back (KMIP Secret Data: a password, a seed, a
        /// storage array's volume secret): a sensitive generic secret on the token, returned only
        /// to a principal granted `reveal`.
        SecretData = "secret-data",
    }
}

impl KeyType {
    pub fn family(self) -> KeyFamily {
        match self {
            KeyType::Aes128 | KeyType::Aes256 => KeyFamily::Aes,
            KeyType::EcP256 => KeyFamily::Ec(Curve::P256),
            KeyType::EcP384 => KeyFamily::Ec(Curve::P384),
            KeyType::EcP521 => KeyFamily::Ec(Curve::P521),
            KeyType::Ed25519 => KeyFamily::Ed25519,
            KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096 => KeyFamily::Rsa,
            KeyType::HmacSha256 | KeyType::HmacSha384 => KeyFamily::Hmac,
            KeyType::Des3 => KeyFamily::Des3,
            KeyType::SecretData => KeyFamily::Secret,
        }
    }

    /// Symmetric (a secret-key object: AES, HMAC, 3DES) or asymmetric (RSA, EC, Ed25519), as the
    /// inventory procedure classifies keys.
    pub fn is_symmetric(self) -> bool {
        matches!(
            self.family(),
            KeyFamily::Aes | KeyFamily::Hmac | KeyFamily::Des3 | KeyFamily::Secret
        )
    }

    /// A secret whose value is given back to its grantees (`reveal`): on the token it is
    /// sensitive but not limited to trusted wrapping keys, since kms itself reads it out
    /// through a transient session key when a grantee asks.
    pub fn is_revealable(self) -> bool {
        self.family() == KeyFamily::Secret
    }

    /// A value that came from its owner is replaced by its owner (a new Register, then the old
    /// one's disposal), never by kms generating another: its applications would lose what it
    /// protects. The scheduler skips it; the rotation report still shows it due.
    pub fn rotated_by_owner(self) -> bool {
        self.family() == KeyFamily::Secret
    }

    /// The lengths a registered value of this type may have, in bytes.
    pub fn registered_len(self) -> std::ops::RangeInclusive<usize> {
        match (self.family(), self.secret_len()) {
            (KeyFamily::Secret, _) => 1..=MAX_SECRET_DATA,
            (_, Some(n)) => n..=n,
            (_, None) => 0..=0,
        }
    }

    /// Kept only to read old data and be migrated away from: created with `--legacy` by an
    /// officer, overdue for rotation from its creation, listed by `kms report legacy`.
    pub fn is_legacy(self) -> bool {
        self == KeyType::Des3
    }

    /// CKA_VALUE_LEN of a secret key, in bytes.
    pub fn secret_len(self) -> Option<usize> {
        match self {
            KeyType::Aes128 => Some(16),
            KeyType::Aes256 | KeyType::HmacSha256 => Some(32),
            KeyType::HmacSha384 => Some(48),
            KeyType::Des3 => Some(24),
            // The length kms generates; a registered value may have any of registered_len().
            KeyType::SecretData => Some(32),
            _ => None,
        }
    }

    pub fn rsa_bits(self) -> Option<u32> {
        match self {
            KeyType::Rsa2048 => Some(2048),
            KeyType::Rsa3072 => Some(3072),
            KeyType::Rsa4096 => Some(4096),
            _ => None,
        }
    }

    pub fn curve(self) -> Option<Curve> {
        match self.family() {
            KeyFamily::Ec(c) => Some(c),
            _ => None,
        }
    }

    /// Whether a key of this type has a public half (and so a SubjectPublicKeyInfo).
    pub fn has_public_key(self) -> bool {
        !self.is_symmetric()
    }

    /// The signature schemes a key of this type can be created for; the first is the default.
    pub fn signature_schemes(self) -> &'static [SignatureScheme] {
        match self.family() {
            KeyFamily::Ec(Curve::P256) => &[SignatureScheme::EcdsaP256Sha256],
            KeyFamily::Ec(Curve::P384) => &[SignatureScheme::EcdsaP384Sha384],
            KeyFamily::Ec(Curve::P521) => &[SignatureScheme::EcdsaP521Sha512],
            KeyFamily::Ed25519 => &[SignatureScheme::Ed25519],
            KeyFamily::Rsa => &[
                SignatureScheme::RsaPssSha256,
                SignatureScheme::RsaPkcs1Sha256,
            ],
            _ => &[],
        }
    }

    /// Operations a key of this type can perform at all, whatever its usage policy says.
    pub fn supported_operations(self) -> &'static [Operation] {
        match self.family() {
            KeyFamily::Aes => &[
                Operation::Encrypt,
                Operation::Decrypt,
                Operation::Wrap,
                Operation::Unwrap,
            ],
            KeyFamily::Ec(_) | KeyFamily::Ed25519 => &[Operation::Sign, Operation::Verify],
            KeyFamily::Rsa => &[
                Operation::Sign,
                Operation::Verify,
                Operation::Encrypt,
                Operation::Decrypt,
                Operation::Wrap,
                Operation::Unwrap,
            ],
            KeyFamily::Hmac => &[Operation::Mac, Operation::VerifyMac],
            // No 3DES MAC: CKM_DES3_CMAC is not among cryptoki 0.12's mechanisms.
            KeyFamily::Des3 => &[Operation::Decrypt, Operation::Encrypt],
            KeyFamily::Secret => &[Operation::Reveal],
        }
    }

    /// Operations that produce new data under a legacy key (3DES encryption): allowed only when
    /// the key was created with `--allow-legacy-encrypt`.
    pub fn legacy_producing(self, op: Operation) -> bool {
        self.is_legacy() && matches!(op, Operation::Encrypt | Operation::Mac)
    }
}

/// The largest secret-data value kms keeps (bytes).
pub const MAX_SECRET_DATA: usize = 1024;

/// What a key type is, as PKCS#11 sees it: the family decides the object classes, the key-type
/// attribute and the mechanisms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFamily {
    Aes,
    /// NIST curves, ECDSA.
    Ec(Curve),
    /// Edwards curve 25519, pure EdDSA.
    Ed25519,
    Rsa,
    /// A generic secret used with CKM_SHA*_HMAC.
    Hmac,
    Des3,
    /// A generic secret used for nothing on the token: its value is revealed to its grantees.
    Secret,
}

/// The NIST curves kms generates on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    P256,
    P384,
    P521,
}

impl Curve {
    /// Bytes of one scalar (r or s of a signature).
    pub fn field_bytes(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
            Curve::P521 => 66,
        }
    }

    /// The digest ECDSA signs over on this curve: SHA-256, SHA-384, SHA-512 (what `openssl dgst`
    /// is told with -sha256/-sha384/-sha512).
    pub fn digest_len(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
            Curve::P521 => 64,
        }
    }
}

domain_enum! {
    /// A signature scheme, named as the API and the audit trail name it.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum SignatureScheme as "signature scheme" {
        EcdsaP256Sha256 = "ecdsa-p256-sha256",
        EcdsaP384Sha384 = "ecdsa-p384-sha384",
        EcdsaP521Sha512 = "ecdsa-p521-sha512",
        /// Pure Ed25519 (RFC 8032): the message itself is signed, never a digest.
        Ed25519 = "ed25519",
        /// RSASSA-PSS, SHA-256, MGF1-SHA-256, salt 32.
        RsaPssSha256 = "rsa-pss-sha256",
        /// RSASSA-PKCS1-v1_5 with SHA-256: only for keys created with `--signature rsa-pkcs1-sha256`.
        RsaPkcs1Sha256 = "rsa-pkcs1-sha256",
    }
}

impl SignatureScheme {
    /// Length of the digest a caller may send instead of the message; `None`: messages only.
    pub fn digest_len(self) -> Option<usize> {
        match self {
            SignatureScheme::EcdsaP256Sha256 => Some(32),
            SignatureScheme::EcdsaP384Sha384 => Some(48),
            SignatureScheme::EcdsaP521Sha512 => Some(64),
            SignatureScheme::Ed25519 => None,
            SignatureScheme::RsaPssSha256 | SignatureScheme::RsaPkcs1Sha256 => Some(32),
        }
    }
}
