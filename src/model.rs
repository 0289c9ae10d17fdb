//! Plain domain types shared by every layer. No I/O here.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A parse failure of a domain value: what was given and what is accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} '{given}': expected one of {expected}")]
pub struct ParseError {
    pub what: &'static str,
    pub given: String,
    pub expected: &'static str,
}

/// The kinds of key the KMS generates on a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KeyType {
    #[serde(rename = "aes-128")]
    Aes128,
    #[serde(rename = "aes-256")]
    Aes256,
    #[serde(rename = "ec-p256")]
    EcP256,
    #[serde(rename = "ec-p384")]
    EcP384,
    #[serde(rename = "ec-p521")]
    EcP521,
    #[serde(rename = "ed25519")]
    Ed25519,
    #[serde(rename = "rsa-2048")]
    Rsa2048,
    #[serde(rename = "rsa-3072")]
    Rsa3072,
    #[serde(rename = "rsa-4096")]
    Rsa4096,
    #[serde(rename = "hmac-sha256")]
    HmacSha256,
    #[serde(rename = "hmac-sha384")]
    HmacSha384,
    /// Triple DES (three-key, 168-bit): legacy, kept only to read old data and move it to AES.
    #[serde(rename = "des3")]
    Des3,
    /// A secret value its applications read back (KMIP Secret Data: a password, a seed, a
    /// storage array's volume secret): a sensitive generic secret on the token, returned only
    /// to a principal granted `reveal`.
    #[serde(rename = "secret-data")]
    SecretData,
}

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

/// A signature scheme, named as the API and the audit trail name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SignatureScheme {
    #[serde(rename = "ecdsa-p256-sha256")]
    EcdsaP256Sha256,
    #[serde(rename = "ecdsa-p384-sha384")]
    EcdsaP384Sha384,
    #[serde(rename = "ecdsa-p521-sha512")]
    EcdsaP521Sha512,
    /// Pure Ed25519 (RFC 8032): the message itself is signed, never a digest.
    #[serde(rename = "ed25519")]
    Ed25519,
    /// RSASSA-PSS, SHA-256, MGF1-SHA-256, salt 32.
    #[serde(rename = "rsa-pss-sha256")]
    RsaPssSha256,
    /// RSASSA-PKCS1-v1_5 with SHA-256: only for keys created with `--signature rsa-pkcs1-sha256`.
    #[serde(rename = "rsa-pkcs1-sha256")]
    RsaPkcs1Sha256,
}

impl SignatureScheme {
    pub const ALL: [SignatureScheme; 6] = [
        SignatureScheme::EcdsaP256Sha256,
        SignatureScheme::EcdsaP384Sha384,
        SignatureScheme::EcdsaP521Sha512,
        SignatureScheme::Ed25519,
        SignatureScheme::RsaPssSha256,
        SignatureScheme::RsaPkcs1Sha256,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SignatureScheme::EcdsaP256Sha256 => "ecdsa-p256-sha256",
            SignatureScheme::EcdsaP384Sha384 => "ecdsa-p384-sha384",
            SignatureScheme::EcdsaP521Sha512 => "ecdsa-p521-sha512",
            SignatureScheme::Ed25519 => "ed25519",
            SignatureScheme::RsaPssSha256 => "rsa-pss-sha256",
            SignatureScheme::RsaPkcs1Sha256 => "rsa-pkcs1-sha256",
        }
    }

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

impl fmt::Display for SignatureScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SignatureScheme {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SignatureScheme::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| ParseError {
                what: "signature scheme",
                given: s.to_owned(),
                expected: "ecdsa-p256-sha256, ecdsa-p384-sha384, ecdsa-p521-sha512, ed25519, rsa-pss-sha256, rsa-pkcs1-sha256",
            })
    }
}

impl KeyType {
    pub const ALL: [KeyType; 13] = [
        KeyType::Aes128,
        KeyType::Aes256,
        KeyType::EcP256,
        KeyType::EcP384,
        KeyType::EcP521,
        KeyType::Ed25519,
        KeyType::Rsa2048,
        KeyType::Rsa3072,
        KeyType::Rsa4096,
        KeyType::HmacSha256,
        KeyType::HmacSha384,
        KeyType::Des3,
        KeyType::SecretData,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::Aes128 => "aes-128",
            KeyType::Aes256 => "aes-256",
            KeyType::EcP256 => "ec-p256",
            KeyType::EcP384 => "ec-p384",
            KeyType::EcP521 => "ec-p521",
            KeyType::Ed25519 => "ed25519",
            KeyType::Rsa2048 => "rsa-2048",
            KeyType::Rsa3072 => "rsa-3072",
            KeyType::Rsa4096 => "rsa-4096",
            KeyType::HmacSha256 => "hmac-sha256",
            KeyType::HmacSha384 => "hmac-sha384",
            KeyType::Des3 => "des3",
            KeyType::SecretData => "secret-data",
        }
    }

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

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyType {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KeyType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| ParseError {
                what: "key type",
                given: s.to_owned(),
                expected: "aes-128, aes-256, ec-p256, ec-p384, ec-p521, ed25519, rsa-2048, rsa-3072, rsa-4096, hmac-sha256, hmac-sha384, des3, secret-data",
            })
    }
}

/// The largest secret-data value kms keeps (bytes).
pub const MAX_SECRET_DATA: usize = 1024;

/// Where a key came from. Generated keys were born on the token; imported keys arrived wrapped
/// (BYOK) and were unwrapped on the token; adopted keys were already on a configured token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyOrigin {
    Generated,
    Imported,
    Adopted,
}

impl KeyOrigin {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyOrigin::Generated => "generated",
            KeyOrigin::Imported => "imported",
            KeyOrigin::Adopted => "adopted",
        }
    }
}

impl fmt::Display for KeyOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyOrigin {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "generated" => Ok(KeyOrigin::Generated),
            "imported" => Ok(KeyOrigin::Imported),
            "adopted" => Ok(KeyOrigin::Adopted),
            _ => Err(ParseError {
                what: "key origin",
                given: s.to_owned(),
                expected: "generated, imported, adopted",
            }),
        }
    }
}

/// Classification levels of the inventory procedure (A8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Classification {
    Public,
    Restricted,
    Confidential,
}

impl Classification {
    pub fn as_str(self) -> &'static str {
        match self {
            Classification::Public => "public",
            Classification::Restricted => "restricted",
            Classification::Confidential => "confidential",
        }
    }
}

impl fmt::Display for Classification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Classification {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "public" => Ok(Classification::Public),
            "restricted" => Ok(Classification::Restricted),
            "confidential" => Ok(Classification::Confidential),
            _ => Err(ParseError {
                what: "classification",
                given: s.to_owned(),
                expected: "confidential, restricted, public",
            }),
        }
    }
}

/// Cryptographic operations a key may be allowed to perform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Operation {
    Sign,
    Verify,
    Encrypt,
    Decrypt,
    Wrap,
    Unwrap,
    /// Compute a MAC (HMAC, 3DES-CMAC) on the token.
    Mac,
    /// Check a MAC on the token.
    VerifyMac,
    /// Read a secret-data value back (KMIP Get): the one case, with data keys, where a secret
    /// leaves the token, to its grantee.
    Reveal,
}

impl Operation {
    pub const ALL: [Operation; 9] = [
        Operation::Sign,
        Operation::Verify,
        Operation::Encrypt,
        Operation::Decrypt,
        Operation::Wrap,
        Operation::Unwrap,
        Operation::Mac,
        Operation::VerifyMac,
        Operation::Reveal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Sign => "sign",
            Operation::Verify => "verify",
            Operation::Encrypt => "encrypt",
            Operation::Decrypt => "decrypt",
            Operation::Wrap => "wrap",
            Operation::Unwrap => "unwrap",
            Operation::Mac => "mac",
            Operation::VerifyMac => "verify-mac",
            Operation::Reveal => "reveal",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Operation {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Operation::ALL
            .into_iter()
            .find(|o| o.as_str() == s)
            .ok_or_else(|| ParseError {
                what: "operation",
                given: s.to_owned(),
                expected: "sign, verify, encrypt, decrypt, wrap, unwrap, mac, verify-mac, reveal",
            })
    }
}

/// A set of operations, written `sign,verify` on the command line and in SQLite.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OperationSet(pub BTreeSet<Operation>);

impl OperationSet {
    pub fn contains(&self, op: Operation) -> bool {
        self.0.contains(&op)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = Operation> + '_ {
        self.0.iter().copied()
    }
}

impl fmt::Display for OperationSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.0.iter().map(|o| o.as_str()).collect();
        f.write_str(&names.join(","))
    }
}

impl FromStr for OperationSet {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ops = s
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(Operation::from_str)
            .collect::<Result<BTreeSet<_>, _>>()?;
        Ok(OperationSet(ops))
    }
}

/// Lifecycle state of one key version on its token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VersionState {
    /// Pre-active: intent recorded; the object may or may not exist on the token yet (or its
    /// backup copy is missing).
    Pending,
    /// Usable for every allowed operation.
    Active,
    /// Replaced by a newer version: decrypt, unwrap and verify only, until destroyed.
    Deactivated,
    /// Declared compromised: no operation at all (an officer's audited break-glass may decrypt).
    Compromised,
    /// Destroyed on every token; the row stays for the record.
    Destroyed,
    /// A compromised version, destroyed on every token once its data was re-encrypted.
    DestroyedCompromised,
}

impl VersionState {
    /// Destroyed on every token (either way).
    pub fn is_destroyed(self) -> bool {
        matches!(
            self,
            VersionState::Destroyed | VersionState::DestroyedCompromised
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            VersionState::Pending => "pending",
            VersionState::Active => "active",
            VersionState::Deactivated => "deactivated",
            VersionState::Compromised => "compromised",
            VersionState::Destroyed => "destroyed",
            VersionState::DestroyedCompromised => "destroyed-compromised",
        }
    }
}

impl FromStr for VersionState {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(VersionState::Pending),
            "active" => Ok(VersionState::Active),
            "deactivated" => Ok(VersionState::Deactivated),
            "compromised" => Ok(VersionState::Compromised),
            "destroyed" => Ok(VersionState::Destroyed),
            "destroyed-compromised" => Ok(VersionState::DestroyedCompromised),
            _ => Err(ParseError {
                what: "version state",
                given: s.to_owned(),
                expected:
                    "pending, active, deactivated, compromised, destroyed, destroyed-compromised",
            }),
        }
    }
}

impl fmt::Display for VersionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A PKCS#11 CKA_ID: 16 random bytes, shown as hex.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct ObjectId(pub Vec<u8>);

/// The CKA_LABEL kms gives the object(s) of version `version` of key `key`, on every token.
pub fn object_label(key: &str, version: u32) -> String {
    format!("kms:{key}:v{version}")
}

impl ObjectId {
    pub fn to_hex(&self) -> String {
        hex::encode(&self.0)
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectId({})", self.to_hex())
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl From<ObjectId> for String {
    fn from(id: ObjectId) -> String {
        id.to_hex()
    }
}

impl TryFrom<String> for ObjectId {
    type Error = hex::FromHexError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        hex::decode(s).map(ObjectId)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_sets_parse_and_print_sorted() -> Result<(), ParseError> {
        let ops: OperationSet = "verify, sign".parse()?;
        assert_eq!(ops.to_string(), "sign,verify");
        assert!("sign,fly".parse::<OperationSet>().is_err());
        Ok(())
    }

    #[test]
    fn key_types_round_trip() -> Result<(), ParseError> {
        for t in KeyType::ALL {
            assert_eq!(t.as_str().parse::<KeyType>()?, t);
        }
        let err = "des".parse::<KeyType>().err();
        assert!(err.is_some_and(|e| e.to_string().contains("aes-256")));
        Ok(())
    }
}

/// Roles of principals (A9). Applications authenticate with a client certificate; humans
/// (officers, admins, managers, auditors, users) will approve with a hardware-held key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    SecurityOfficer,
    SecurityAdmin,
    Manager,
    Auditor,
    Application,
    User,
}

impl Role {
    pub const ALL: [Role; 6] = [
        Role::SecurityOfficer,
        Role::SecurityAdmin,
        Role::Manager,
        Role::Auditor,
        Role::Application,
        Role::User,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::SecurityOfficer => "security-officer",
            Role::SecurityAdmin => "security-admin",
            Role::Manager => "manager",
            Role::Auditor => "auditor",
            Role::Application => "application",
            Role::User => "user",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| ParseError {
                what: "role",
                given: s.to_owned(),
                expected: "security-officer, security-admin, manager, auditor, application, user",
            })
    }
}

/// What a grant may allow: a key operation, or reading the key's inventory entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GrantOp {
    Sign,
    Verify,
    Encrypt,
    Decrypt,
    Wrap,
    Unwrap,
    Mac,
    VerifyMac,
    Reveal,
    ReadInventory,
}

impl GrantOp {
    pub const ALL: [GrantOp; 10] = [
        GrantOp::Sign,
        GrantOp::Verify,
        GrantOp::Encrypt,
        GrantOp::Decrypt,
        GrantOp::Wrap,
        GrantOp::Unwrap,
        GrantOp::Mac,
        GrantOp::VerifyMac,
        GrantOp::Reveal,
        GrantOp::ReadInventory,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            GrantOp::ReadInventory => "read-inventory",
            GrantOp::Sign => "sign",
            GrantOp::Verify => "verify",
            GrantOp::Encrypt => "encrypt",
            GrantOp::Decrypt => "decrypt",
            GrantOp::Wrap => "wrap",
            GrantOp::Unwrap => "unwrap",
            GrantOp::Mac => "mac",
            GrantOp::VerifyMac => "verify-mac",
            GrantOp::Reveal => "reveal",
        }
    }
}

impl From<Operation> for GrantOp {
    fn from(op: Operation) -> GrantOp {
        match op {
            Operation::Sign => GrantOp::Sign,
            Operation::Verify => GrantOp::Verify,
            Operation::Encrypt => GrantOp::Encrypt,
            Operation::Decrypt => GrantOp::Decrypt,
            Operation::Wrap => GrantOp::Wrap,
            Operation::Unwrap => GrantOp::Unwrap,
            Operation::Mac => GrantOp::Mac,
            Operation::VerifyMac => GrantOp::VerifyMac,
            Operation::Reveal => GrantOp::Reveal,
        }
    }
}

impl fmt::Display for GrantOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for GrantOp {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        GrantOp::ALL
            .into_iter()
            .find(|o| o.as_str() == s)
            .ok_or_else(|| ParseError {
                what: "grant operation",
                given: s.to_owned(),
                expected:
                    "sign, verify, encrypt, decrypt, wrap, unwrap, mac, verify-mac, reveal, read-inventory",
            })
    }
}

/// A set of grant operations, written `sign,read-inventory`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct GrantOps(pub BTreeSet<GrantOp>);

impl GrantOps {
    pub fn contains(&self, op: GrantOp) -> bool {
        self.0.contains(&op)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for GrantOps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.0.iter().map(|o| o.as_str()).collect();
        f.write_str(&names.join(","))
    }
}

impl FromStr for GrantOps {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ops = s
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(GrantOp::from_str)
            .collect::<Result<BTreeSet<_>, _>>()?;
        Ok(GrantOps(ops))
    }
}
