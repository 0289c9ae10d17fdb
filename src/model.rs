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
    #[serde(rename = "aes-256")]
    Aes256,
    #[serde(rename = "ec-p384")]
    EcP384,
    #[serde(rename = "rsa-3072")]
    Rsa3072,
    #[serde(rename = "rsa-4096")]
    Rsa4096,
}

impl KeyType {
    pub const ALL: [KeyType; 4] = [
        KeyType::Aes256,
        KeyType::EcP384,
        KeyType::Rsa3072,
        KeyType::Rsa4096,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::Aes256 => "aes-256",
            KeyType::EcP384 => "ec-p384",
            KeyType::Rsa3072 => "rsa-3072",
            KeyType::Rsa4096 => "rsa-4096",
        }
    }

    /// Symmetric (AES) or asymmetric (RSA, EC), as the inventory procedure classifies keys.
    pub fn is_symmetric(self) -> bool {
        matches!(self, KeyType::Aes256)
    }

    pub fn rsa_bits(self) -> Option<u32> {
        match self {
            KeyType::Rsa3072 => Some(3072),
            KeyType::Rsa4096 => Some(4096),
            _ => None,
        }
    }

    /// Operations a key of this type can perform at all, whatever its usage policy says.
    pub fn supported_operations(self) -> &'static [Operation] {
        match self {
            KeyType::Aes256 => &[
                Operation::Encrypt,
                Operation::Decrypt,
                Operation::Wrap,
                Operation::Unwrap,
            ],
            KeyType::EcP384 => &[Operation::Sign, Operation::Verify],
            KeyType::Rsa3072 | KeyType::Rsa4096 => &[
                Operation::Sign,
                Operation::Verify,
                Operation::Encrypt,
                Operation::Decrypt,
                Operation::Wrap,
                Operation::Unwrap,
            ],
        }
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
                expected: "aes-256, ec-p384, rsa-3072, rsa-4096",
            })
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
#[serde(rename_all = "lowercase")]
pub enum Operation {
    Sign,
    Verify,
    Encrypt,
    Decrypt,
    Wrap,
    Unwrap,
}

impl Operation {
    pub const ALL: [Operation; 6] = [
        Operation::Sign,
        Operation::Verify,
        Operation::Encrypt,
        Operation::Decrypt,
        Operation::Wrap,
        Operation::Unwrap,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Sign => "sign",
            Operation::Verify => "verify",
            Operation::Encrypt => "encrypt",
            Operation::Decrypt => "decrypt",
            Operation::Wrap => "wrap",
            Operation::Unwrap => "unwrap",
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
                expected: "sign, verify, encrypt, decrypt, wrap, unwrap",
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
    ReadInventory,
}

impl GrantOp {
    pub const ALL: [GrantOp; 7] = [
        GrantOp::Sign,
        GrantOp::Verify,
        GrantOp::Encrypt,
        GrantOp::Decrypt,
        GrantOp::Wrap,
        GrantOp::Unwrap,
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
                expected: "sign, verify, encrypt, decrypt, wrap, unwrap, read-inventory",
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
