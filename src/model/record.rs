//! What the inventory records about a key and its versions: origin, classification, version
//! state, CKA_ID and object label.

use std::fmt;

use serde::{Deserialize, Serialize};

domain_enum! {
    /// Where a key came from. Generated keys were born on the token; imported keys arrived wrapped
    /// (BYOK) and were unwrapped on the token; adopted keys were already on a configured token.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum KeyOrigin as "key origin" {
        Generated = "generated",
        Imported = "imported",
        Adopted = "adopted",
    }
}

domain_enum! {
    /// Classification levels of the inventory procedure (A8).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
    pub enum Classification as "classification",
        expected "confidential, restricted, public" {
        Public = "public",
        Restricted = "restricted",
        Confidential = "confidential",
    }
}

domain_enum! {
    /// Lifecycle state of one key version on its token.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum VersionState as "version state" {
        /// Pre-active: intent recorded; the object may or may not exist on the token yet (or its
        /// backup copy is missing).
        Pending = "pending",
        /// Usable for every allowed operation.
        Active = "active",
        /// Replaced by a newer version: decrypt, unwrap and verify only, until destroyed.
        Deactivated = "deactivated",
        /// Declared compromised: no operation at all (an officer's audited break-glass may decrypt).
        Compromised = "compromised",
        /// Destroyed on every token; the row stays for the record.
        Destroyed = "destroyed",
        /// A compromised version, destroyed on every token once its data was re-encrypted.
        DestroyedCompromised = "destroyed-compromised",
    }
}

impl VersionState {
    /// Destroyed on every token (either way).
    pub fn is_destroyed(self) -> bool {
        matches!(
            self,
            VersionState::Destroyed | VersionState::DestroyedCompromised
        )
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
