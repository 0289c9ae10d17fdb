//! Plain domain types shared by every layer. No I/O here.
//!
//! `key_type.rs` key types, families, curves and signature schemes; `operation.rs` operations and
//! grant operations (and their sets); `record.rs` origin, classification, version state, CKA_ID;
//! `role.rs` roles; `records.rs` the plain records the inventory stores and the engine returns
//! (keys, versions, grants, requests, audit rows). Every enum spelled as a word on the command line, in SQLite, in JSON and in
//! the audit trail is declared through `domain_enum!`, which writes its one string per variant
//! into `as_str`, `Display`, `FromStr` and serde alike.

/// A parse failure of a domain value: what was given and what is accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} '{given}': expected one of {expected}")]
pub struct ParseError {
    pub what: &'static str,
    pub given: String,
    pub expected: &'static str,
}

/// An enum whose variants are each spelled as one word. Given
///
/// ```text
/// domain_enum! {
///     #[derive(Debug, Clone, Copy, PartialEq, Eq)]
///     pub enum Colour as "colour" {      // `as`: the noun ParseError names
///         Red = "red",
///         DarkBlue = "dark-blue",
///     }
/// }
/// ```
///
/// it declares the enum (with serde `Serialize`/`Deserialize` under those spellings) and writes
/// `Colour::ALL` (declaration order), `as_str`, `Display` and `FromStr` (exact match; otherwise
/// `ParseError` "invalid colour 'x': expected one of red, dark-blue"). `expected "..."` after the
/// noun replaces the list in that message when it must differ from declaration order.
macro_rules! domain_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident as $what:literal $(, expected $expected:literal)? {
            $(#[$first_meta:meta])* $first:ident = $first_str:literal
            $(, $(#[$vmeta:meta])* $variant:ident = $str:literal)* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(serde::Serialize, serde::Deserialize)]
        $vis enum $name {
            $(#[$first_meta])*
            #[serde(rename = $first_str)]
            $first,
            $(
                $(#[$vmeta])*
                #[serde(rename = $str)]
                $variant,
            )*
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: [$name; 1 $(+ domain_enum!(@one $variant))*] =
                [$name::$first $(, $name::$variant)*];

            /// The one spelling of this value (command line, SQLite, JSON, audit trail).
            pub fn as_str(self) -> &'static str {
                match self {
                    $name::$first => $first_str,
                    $($name::$variant => $str,)*
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::model::ParseError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $first_str => Ok($name::$first),
                    $($str => Ok($name::$variant),)*
                    _ => Err($crate::model::ParseError {
                        what: $what,
                        given: s.to_owned(),
                        expected: domain_enum!(
                            @expected [$first_str $(, $str)*] $($expected)?
                        ),
                    }),
                }
            }
        }
    };
    (@one $variant:ident) => { 1 };
    (@expected [$first:literal $(, $str:literal)*]) => { concat!($first $(, ", ", $str)*) };
    (@expected [$($str:literal),*] $expected:literal) => { $expected };
}

mod key_type;
mod operation;
mod record;
mod records;
mod role;

pub use key_type::{Curve, KeyFamily, KeyType, SignatureScheme, MAX_SECRET_DATA};
pub use operation::{GrantOp, GrantOps, Operation, OperationSet};
pub use record::{object_label, Classification, KeyOrigin, ObjectId, VersionState};
pub use records::{
    AccessRequest, AuditCheckpoint, AuditEntry, AuditFilter, AuditRow, BackupPair, Grant,
    GrantFilter, KeyCopy, KeyFilter, KeyRecord, KeyVersion, NewGrant, NewKey, Outcome, Principal,
    RecordTally, RequestState, SignedStep,
};
pub use role::Role;

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

    /// Every `domain_enum!` enum: one spelling per variant in as_str, Display, FromStr and serde,
    /// and the ParseError text exactly as it was before the macro.
    #[test]
    fn domain_enums_spell_each_value_once() -> Result<(), Box<dyn std::error::Error>> {
        fn check<T>(all: &[T], message: &str) -> Result<(), Box<dyn std::error::Error>>
        where
            T: Copy + PartialEq + std::fmt::Debug + std::fmt::Display + std::str::FromStr,
            T: serde::Serialize + serde::de::DeserializeOwned,
            T::Err: std::fmt::Display,
        {
            for v in all {
                let word = v.to_string();
                assert_eq!(word.parse::<T>().ok(), Some(*v));
                assert_eq!(serde_json::to_string(v)?, format!("\"{word}\""));
                assert_eq!(serde_json::from_str::<T>(&format!("\"{word}\""))?, *v);
            }
            let err = "Nope".parse::<T>().err().map(|e| e.to_string());
            assert_eq!(err.as_deref(), Some(message));
            Ok(())
        }
        check(&KeyType::ALL, "invalid key type 'Nope': expected one of aes-128, aes-256, ec-p256, ec-p384, ec-p521, ed25519, rsa-2048, rsa-3072, rsa-4096, hmac-sha256, hmac-sha384, des3, secret-data")?;
        check(&SignatureScheme::ALL, "invalid signature scheme 'Nope': expected one of ecdsa-p256-sha256, ecdsa-p384-sha384, ecdsa-p521-sha512, ed25519, rsa-pss-sha256, rsa-pkcs1-sha256")?;
        check(
            &KeyOrigin::ALL,
            "invalid key origin 'Nope': expected one of generated, imported, adopted",
        )?;
        check(
            &Classification::ALL,
            "invalid classification 'Nope': expected one of confidential, restricted, public",
        )?;
        check(&Operation::ALL, "invalid operation 'Nope': expected one of sign, verify, encrypt, decrypt, wrap, unwrap, mac, verify-mac, reveal")?;
        check(&VersionState::ALL, "invalid version state 'Nope': expected one of pending, active, deactivated, compromised, destroyed, destroyed-compromised")?;
        check(&Role::ALL, "invalid role 'Nope': expected one of security-officer, security-admin, manager, auditor, application, user")?;
        check(&GrantOp::ALL, "invalid grant operation 'Nope': expected one of sign, verify, encrypt, decrypt, wrap, unwrap, mac, verify-mac, reveal, read-inventory")?;
        assert!(Classification::Public < Classification::Restricted);
        assert!(Classification::Restricted < Classification::Confidential);
        Ok(())
    }
}
