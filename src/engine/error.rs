//! Errors of the engine: the typed causes of the layers below, plus the engine's own refusals.
//! [`EngineError::exit_code`] is the one place that maps them to process exit codes.

use crate::config::ConfigError;
use crate::envelope::EnvelopeError;
use crate::hsm::HsmError;
use crate::inventory::InventoryError;
use crate::softverify::SoftCryptoError;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Hsm(#[from] HsmError),
    #[error(transparent)]
    Inventory(InventoryError),
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    #[error(transparent)]
    SoftCrypto(#[from] SoftCryptoError),
    #[error(transparent)]
    Card(#[from] crate::smartcard::CardError),
    /// The request itself is malformed; the message says what to change.
    #[error("{0}")]
    InvalidInput(String),
    /// The request is well-formed but policy refuses it; the [`Refusal`] says which rule.
    #[error("refused: {1}")]
    Denied(Refusal, String),
    /// The operation happened but its audit record could not be written, so its result is withheld.
    #[error("the audit record could not be written ({0}); the operation's result was discarded")]
    AuditFailed(InventoryError),
    /// The configuration points somewhere other than the inventory says (e.g. a token entry now
    /// resolving to another token).
    #[error("configuration mismatch: {0}")]
    Misconfigured(String),
    /// Something was left for an officer to finish (e.g. an object a rollback could not destroy).
    #[error("{0}")]
    Incomplete(String),
    /// This node's site holds no usable copy of the version asked for (issue 13): another
    /// node, at the site that holds it, can serve it.
    #[error("{0}")]
    NotOnSite(String),
}

/// Which rule refused a request. Stable: the service maps these to HTTP statuses and problem codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The client certificate belongs to no registered principal.
    UnknownPrincipal,
    PrincipalDisabled,
    /// The principal holds no grant on the key.
    NoGrant,
    /// The principal's grants on the key have expired.
    GrantExpired,
    /// A grant exists but does not include this operation.
    OperationNotGranted,
    /// The principal's role does not allow this.
    WrongRole,
    /// A grant whose review deadline passed without re-certification.
    ReviewLapsed,
    /// The request came from a network the principal is not allowed to connect from.
    SourceNotAllowed,
    /// Separation of duties: the same person may not request and approve, or verify and approve.
    SeparationOfDuties,
    /// A signature does not verify against the signer's registered key.
    BadSignature,
    /// The request is not in the state this step needs.
    WrongState,
    /// The key's type cannot do this operation at all.
    NotSupported,
    /// The key's inventory usage does not include this operation.
    UsageNotAllowed,
    KeyExpired,
    /// The key (version) is not in a state that allows this.
    KeyState,
    /// An inventory row this decision relies on fails its HSM-made integrity tag: it was
    /// written or changed outside kms, and is not honoured.
    InventoryTampered,
}

impl From<InventoryError> for EngineError {
    /// A row that fails its integrity check is a refusal (the row was not made by kms), audited
    /// as a denial like every other; everything else keeps its inventory cause.
    fn from(e: InventoryError) -> Self {
        match e {
            InventoryError::Tampered(bad) => EngineError::Denied(
                Refusal::InventoryTampered,
                format!(
                    "the {} row {} was not made by kms ({}); it is not honoured. The inventory file was changed outside kms: `kms inventory verify` lists every such row; restore the file from a backup (kms backup import) or undo the change",
                    bad.table, bad.row, bad.why
                ),
            ),
            other => EngineError::Inventory(other),
        }
    }
}

impl Refusal {
    /// Every refusal (the service's documented code lists are checked against it).
    pub const ALL: [Refusal; 16] = [
        Refusal::UnknownPrincipal,
        Refusal::PrincipalDisabled,
        Refusal::NoGrant,
        Refusal::GrantExpired,
        Refusal::OperationNotGranted,
        Refusal::WrongRole,
        Refusal::ReviewLapsed,
        Refusal::SourceNotAllowed,
        Refusal::SeparationOfDuties,
        Refusal::BadSignature,
        Refusal::WrongState,
        Refusal::NotSupported,
        Refusal::UsageNotAllowed,
        Refusal::KeyExpired,
        Refusal::KeyState,
        Refusal::InventoryTampered,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Refusal::UnknownPrincipal => "unknown-principal",
            Refusal::PrincipalDisabled => "principal-disabled",
            Refusal::NoGrant => "no-grant",
            Refusal::GrantExpired => "grant-expired",
            Refusal::OperationNotGranted => "operation-not-granted",
            Refusal::WrongRole => "wrong-role",
            Refusal::ReviewLapsed => "review-lapsed",
            Refusal::SourceNotAllowed => "source-not-allowed",
            Refusal::SeparationOfDuties => "separation-of-duties",
            Refusal::BadSignature => "bad-signature",
            Refusal::WrongState => "wrong-state",
            Refusal::NotSupported => "operation-not-supported",
            Refusal::UsageNotAllowed => "usage-not-allowed",
            Refusal::KeyExpired => "key-expired",
            Refusal::KeyState => "key-state",
            Refusal::InventoryTampered => "inventory-tampered",
        }
    }
}

impl EngineError {
    pub(crate) fn denied(why: Refusal, message: impl Into<String>) -> EngineError {
        EngineError::Denied(why, message.into())
    }

    /// Exit codes: 2 bad input, 3 not found, 4 refused by policy, 5 token, 6 inventory or audit,
    /// 7 configuration.
    pub fn exit_code(&self) -> i32 {
        match self {
            EngineError::InvalidInput(_) | EngineError::Envelope(_) => 2,
            EngineError::Inventory(InventoryError::DuplicateName(_)) => 2,
            EngineError::Inventory(
                InventoryError::NoSuchKey(_)
                | InventoryError::NoSuchPrincipal(_)
                | InventoryError::NoSuchGrant(_)
                | InventoryError::NoSuchRequest(_),
            ) => 3,
            EngineError::Hsm(HsmError::ObjectNotFound { .. }) => 3,
            EngineError::Hsm(HsmError::DecryptionFailed { .. }) => 2,
            EngineError::Denied(..) => 4,
            EngineError::Inventory(InventoryError::IntegrityUnavailable {
                config: true, ..
            }) => 7,
            EngineError::Inventory(InventoryError::IntegrityUnavailable { .. }) => 5,
            EngineError::Hsm(HsmError::Pin(_) | HsmError::NotConfigured { .. })
            | EngineError::Config(_)
            | EngineError::Misconfigured(_) => 7,
            EngineError::Card(crate::smartcard::CardError::BadSlot(_))
            | EngineError::Card(crate::smartcard::CardError::BadManagementKey) => 2,
            EngineError::Card(crate::smartcard::CardError::SlotInUse { .. }) => 4,
            EngineError::Hsm(_)
            | EngineError::SoftCrypto(_)
            | EngineError::Card(_)
            | EngineError::NotOnSite(_) => 5,
            EngineError::Inventory(_)
            | EngineError::AuditFailed(_)
            | EngineError::Incomplete(_) => 6,
        }
    }

    /// A stable code for the audit row and the logs.
    pub fn code(&self) -> &'static str {
        match self {
            EngineError::Denied(r, _) => r.code(),
            EngineError::InvalidInput(_) => "bad-request",
            EngineError::Envelope(_) => "bad-ciphertext",
            EngineError::Inventory(InventoryError::DuplicateName(_)) => "duplicate-name",
            EngineError::Inventory(InventoryError::NoSuchKey(_)) => "key-not-found",
            EngineError::Inventory(InventoryError::IntegrityUnavailable {
                config: true, ..
            }) => "config-mismatch",
            EngineError::Inventory(InventoryError::IntegrityUnavailable { .. }) => {
                "integrity-unavailable"
            }
            EngineError::Inventory(_) => "inventory-error",
            EngineError::Hsm(HsmError::DecryptionFailed { .. }) => "bad-ciphertext",
            EngineError::Hsm(HsmError::WrongObject { .. }) => "wrong-object",
            EngineError::Hsm(HsmError::WrongPin { .. }) => "wrong-pin",
            EngineError::Hsm(HsmError::PinLocked { .. }) => "pin-locked",
            EngineError::Hsm(_) => "token-error",
            EngineError::SoftCrypto(_) => "crypto-error",
            EngineError::Card(crate::smartcard::CardError::WrongPin { .. }) => "wrong-pin",
            EngineError::Card(crate::smartcard::CardError::PinBlocked) => "pin-locked",
            EngineError::Card(crate::smartcard::CardError::PinFinalTry) => "pin-final-try",
            EngineError::Card(crate::smartcard::CardError::WrongPuk { .. }) => "wrong-puk",
            EngineError::Card(crate::smartcard::CardError::PukBlocked) => "puk-blocked",
            EngineError::Card(
                crate::smartcard::CardError::PukFinalTry
                | crate::smartcard::CardError::PukTriesUnknown,
            ) => "puk-final-try",
            EngineError::Card(crate::smartcard::CardError::SlotInUse { .. }) => "slot-in-use",
            EngineError::Card(
                crate::smartcard::CardError::Removed { .. }
                | crate::smartcard::CardError::ReaderGone { .. },
            ) => "card-removed",
            EngineError::Card(
                crate::smartcard::CardError::NotAnswering { .. }
                | crate::smartcard::CardError::StillStuck { .. }
                | crate::smartcard::CardError::Unlisted(_),
            ) => "card-not-answering",
            EngineError::Card(crate::smartcard::CardError::Busy { .. }) => "card-busy",
            EngineError::Card(crate::smartcard::CardError::NoCard { .. }) => "card-not-found",
            EngineError::Card(_) => "card-error",
            EngineError::Config(_) => "config-error",
            EngineError::Misconfigured(_) => "config-mismatch",
            EngineError::AuditFailed(_) => "audit-failed",
            EngineError::Incomplete(_) => "incomplete",
            EngineError::NotOnSite(_) => "not-on-this-site",
        }
    }

    /// The audit outcome this error stands for.
    pub(crate) fn outcome(&self) -> crate::inventory::Outcome {
        match self {
            EngineError::Denied(..) => crate::inventory::Outcome::Denied,
            _ => crate::inventory::Outcome::Error,
        }
    }
}
