//! Operations: what a key may do, and what a grant may allow.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::ParseError;

domain_enum! {
    /// Cryptographic operations a key may be allowed to perform.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
    pub enum Operation as "operation" {
        Sign = "sign",
        Verify = "verify",
        Encrypt = "encrypt",
        Decrypt = "decrypt",
        Wrap = "wrap",
        Unwrap = "unwrap",
        /// Compute a MAC (HMAC, 3DES-CMAC) on the token.
        Mac = "mac",
        /// Check a MAC on the token.
        VerifyMac = "verify-mac",
        /// Read a secret-data value back (KMIP Get): the one case, with data keys, where a secret
        /// leaves the token, to its grantee.
        Reveal = "reveal",
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

domain_enum! {
    /// What a grant may allow: a key operation, or reading the key's inventory entry.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
    pub enum GrantOp as "grant operation" {
        Sign = "sign",
        Verify = "verify",
        Encrypt = "encrypt",
        Decrypt = "decrypt",
        Wrap = "wrap",
        Unwrap = "unwrap",
        Mac = "mac",
        VerifyMac = "verify-mac",
        Reveal = "reveal",
        ReadInventory = "read-inventory",
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
