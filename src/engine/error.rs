//! Errors of the engine: the typed causes of the layers below, plus the engine's own refusals.
//! [`EngineError::kind`] is the one classification every door maps to its own wire format
//! (an exit code, an HTTP status and problem code, a protocol's result reason): doors never look
//! at the causes of the layers below.

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

/// What kind of failure an [`EngineError`] is, in the terms a caller can act on. Every door
/// maps these, and only these, to its wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is malformed or names something that cannot be (a duplicate name, a bad
    /// slot); the message says what to change.
    BadInput,
    /// A ciphertext, its IV, tag or additional data does not authenticate under the key.
    BadCiphertext,
    /// More data than the key can take in one operation.
    TooLarge,
    /// The thing named does not exist.
    NotFound(Missing),
    /// Policy refuses the request; the [`Refusal`] says which rule.
    Refused(Refusal),
    /// The request conflicts with what is there (e.g. a card slot already holding a key).
    Conflict,
    /// The object found on the token under the key's id is not the one kms recorded.
    WrongObject,
    /// The token, card or integrity key is not available now; trying again later may work.
    Unavailable,
    /// This node's site holds no usable copy; a node at the site that holds one can serve it.
    NotOnSite,
    /// The inventory database cannot be reached now (a restart, a failover); kms connects again
    /// by itself, so the same request may succeed shortly. Nothing of the request was done.
    InventoryUnavailable,
    /// kms is configured wrongly (a PIN source, a token entry, the config file).
    Configuration,
    /// The inventory or the audit trail failed, or work was left for an officer to finish.
    Internal,
}

/// What an [`ErrorKind::NotFound`] did not find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    Key,
    Principal,
    Request,
    Grant,
    /// A key's object on its token.
    TokenObject,
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

    /// The one classification doors map to their wire formats.
    pub fn kind(&self) -> ErrorKind {
        use crate::smartcard::CardError;
        match self {
            EngineError::InvalidInput(_) => ErrorKind::BadInput,
            EngineError::Envelope(_) => ErrorKind::BadCiphertext,
            EngineError::Denied(why, _) => ErrorKind::Refused(*why),
            EngineError::Inventory(e) | EngineError::AuditFailed(e) if e.is_unreachable() => {
                ErrorKind::InventoryUnavailable
            }
            EngineError::Inventory(e) => match e {
                InventoryError::DuplicateName(_) => ErrorKind::BadInput,
                InventoryError::NoSuchKey(_) => ErrorKind::NotFound(Missing::Key),
                InventoryError::NoSuchPrincipal(_) => ErrorKind::NotFound(Missing::Principal),
                InventoryError::NoSuchRequest(_) => ErrorKind::NotFound(Missing::Request),
                InventoryError::NoSuchGrant(_) => ErrorKind::NotFound(Missing::Grant),
                InventoryError::IntegrityUnavailable { config: true, .. } => {
                    ErrorKind::Configuration
                }
                InventoryError::IntegrityUnavailable { .. } => ErrorKind::Unavailable,
                _ => ErrorKind::Internal,
            },
            EngineError::Hsm(e) => match e {
                HsmError::ObjectNotFound { .. } => ErrorKind::NotFound(Missing::TokenObject),
                HsmError::DecryptionFailed { .. } => ErrorKind::BadCiphertext,
                HsmError::WrongObject { .. } => ErrorKind::WrongObject,
                HsmError::Pin(_) | HsmError::NotConfigured { .. } => ErrorKind::Configuration,
                _ => ErrorKind::Unavailable,
            },
            EngineError::SoftCrypto(SoftCryptoError::TooLong { .. }) => ErrorKind::TooLarge,
            EngineError::SoftCrypto(_) => ErrorKind::Unavailable,
            EngineError::Card(CardError::BadSlot(_) | CardError::BadManagementKey) => {
                ErrorKind::BadInput
            }
            EngineError::Card(CardError::SlotInUse { .. }) => ErrorKind::Conflict,
            EngineError::Card(_) => ErrorKind::Unavailable,
            EngineError::Config(_) | EngineError::Misconfigured(_) => ErrorKind::Configuration,
            EngineError::NotOnSite(_) => ErrorKind::NotOnSite,
            EngineError::AuditFailed(_) | EngineError::Incomplete(_) => ErrorKind::Internal,
        }
    }

    /// What a remote caller may be told: the message itself where it is about the caller's
    /// request, and a plain sentence where it would describe kms's insides (token labels,
    /// return codes, inventory paths). Doors log the full error for the operator.
    pub fn public_message(&self) -> String {
        match (self.kind(), self) {
            (ErrorKind::BadCiphertext, EngineError::Hsm(_)) => {
                "the ciphertext or its additional authenticated data is not valid for this key"
                    .into()
            }
            (ErrorKind::Unavailable | ErrorKind::Configuration, _)
            | (ErrorKind::NotFound(Missing::TokenObject), _) => {
                "the key's token is not available; try again later".into()
            }
            (ErrorKind::Internal, _) => "internal error".into(),
            (ErrorKind::InventoryUnavailable, _) => {
                "the inventory database cannot be reached; kms connects again by itself: try again shortly"
                    .into()
            }
            _ => self.to_string(),
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
