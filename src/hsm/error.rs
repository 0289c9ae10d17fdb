//! Errors of the PKCS#11 layer. The PKCS#11 return code stays typed (`cryptoki::error::Error`,
//! which holds `RvError` and the function), so callers can tell a wrong PIN from a missing object.

use std::path::PathBuf;

use cryptoki::error::{Error as CkError, RvError};

use crate::config::ConfigError;

#[derive(Debug, thiserror::Error)]
pub enum HsmError {
    #[error("cannot load PKCS#11 module {path}: {source}; check `module` in the token's config entry and that the library is installed")]
    ModuleLoad { path: PathBuf, source: CkError },
    #[error("PKCS#11 module {path} failed to initialise: {source}")]
    ModuleInit { path: PathBuf, source: CkError },
    #[error("no token with {selector} for '{token}' in module {module}; tokens present: {}{advice}", present_list(.present))]
    TokenNotFound {
        token: String,
        selector: String,
        module: PathBuf,
        present: Vec<String>,
        /// Which token file is damaged and what to do (empty when nothing was found).
        advice: String,
    },
    #[error("no token named '{token}' in the configuration (configured: {})", .configured.join(", "))]
    NotConfigured {
        token: String,
        configured: Vec<String>,
    },
    #[error("token '{token}' says the next wrong PIN locks it; kms will not risk it. Check the PIN source, then set KMS_ALLOW_FINAL_PIN_TRY=1 for one run")]
    PinFinalTry { token: String },
    #[error("token '{token}': all {size} sessions stayed busy for {waited_secs} s; raise `sessions` or lower the load")]
    PoolExhausted {
        token: String,
        size: usize,
        waited_secs: u64,
    },
    #[error("wrong PIN for token '{token}'{}", tries_hint(.final_try, .count_low))]
    WrongPin {
        token: String,
        final_try: bool,
        count_low: bool,
    },
    #[error("the user PIN of token '{token}' is locked; the token's security officer must unlock or reset it")]
    PinLocked { token: String },
    #[error("token '{token}': the security officer cannot log in while a user session holds the token (PKCS#11 allows one login type at a time); stop `kms serve` and any other kms process using this token, then run the ceremony again")]
    UserHoldsToken { token: String },
    #[error("token '{token}': {what}")]
    Raw { token: String, what: String },
    /// The token answered that this object can never be wrapped for a backup copy (and reading
    /// it back confirmed why): not extractable, or a type the token cannot wrap.
    #[error("token '{token}': {why}")]
    NeverCopyable {
        token: String,
        code: super::backup::NoCopy,
        why: String,
    },
    #[error("wrong SO PIN for token '{token}'{}", if *.final_try { "; the next wrong SO PIN locks the token for good" } else { "" })]
    WrongSoPin { token: String, final_try: bool },
    #[error("the SO PIN of token '{token}' is locked; only re-initialising the token (losing every key on it) unlocks it")]
    SoPinLocked { token: String },
    #[error(transparent)]
    Pin(#[from] ConfigError),
    #[error("token '{token}': the object with CKA_ID {id} is not the key the inventory recorded ({why}); it is not used. Someone changed the token or the inventory: run `kms reconcile`")]
    WrongObject {
        token: String,
        id: String,
        why: String,
    },
    #[error("token '{token}' has no {class} object with CKA_ID {id}")]
    ObjectNotFound {
        token: String,
        class: &'static str,
        id: String,
    },
    #[error("token '{token}': {operation} failed: {}", ck_summary(.source))]
    Pkcs11 {
        token: String,
        operation: &'static str,
        source: CkError,
    },
    #[error("token '{token}': the public key of object {id} cannot be encoded: {reason}")]
    PublicKey {
        token: String,
        id: String,
        reason: String,
    },
    #[error("token '{token}' returned a malformed {what} ({len} bytes)")]
    BadTokenOutput {
        token: String,
        what: &'static str,
        len: usize,
    },
    #[error(
        "token '{token}': the ciphertext or its authentication data is not valid for this key"
    )]
    DecryptionFailed { token: String },
}

impl HsmError {
    /// The PKCS#11 return code, where the failure came from the token.
    pub fn rv(&self) -> Option<RvError> {
        match self {
            HsmError::ModuleInit { source, .. } | HsmError::Pkcs11 { source, .. } => match source {
                CkError::Pkcs11(rv, _) => Some(*rv),
                _ => None,
            },
            _ => None,
        }
    }

    /// Wrap a cryptoki error for `operation` on `token`.
    pub(crate) fn ck<'a>(
        token: &'a str,
        operation: &'static str,
    ) -> impl FnOnce(CkError) -> HsmError + 'a {
        move |source| HsmError::Pkcs11 {
            token: token.to_owned(),
            operation,
            source,
        }
    }
}

fn present_list(present: &[String]) -> String {
    if present.is_empty() {
        "none (is SOFTHSM2_CONF or the module's own config pointing at the right token directory?)"
            .to_owned()
    } else {
        present.join(", ")
    }
}

fn tries_hint(final_try: &bool, count_low: &bool) -> &'static str {
    if *final_try {
        " (the token says one try is left before the PIN locks)"
    } else if *count_low {
        " (the token says few tries are left)"
    } else {
        ""
    }
}

/// `C_Sign: CKR_KEY_FUNCTION_NOT_PERMITTED`-style summary without the spec's paragraph-long text.
fn ck_summary(e: &CkError) -> String {
    match e {
        CkError::Pkcs11(rv, function) => format!("{function} returned {rv:?}"),
        other => other.to_string(),
    }
}
