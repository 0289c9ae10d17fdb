//! `piv:serial=12345678;slot=9c`: a key in a PIV card's slot, as kms names it.

use super::EngineError;
use crate::smartcard;

/// A PIV key: card serial and slot, written `piv:serial=N;slot=9c`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PivUri {
    pub serial: u32,
    pub slot: String,
}

impl std::fmt::Display for PivUri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "piv:serial={};slot={}", self.serial, self.slot)
    }
}

impl std::str::FromStr for PivUri {
    type Err = EngineError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            EngineError::InvalidInput(format!(
                "'{s}' is not a PIV key URI; write piv:serial=12345678;slot=9c"
            ))
        };
        let rest = s.strip_prefix("piv:").ok_or_else(bad)?;
        let (mut serial, mut slot) = (None, None);
        for part in rest.split(';') {
            match part.split_once('=') {
                Some(("serial", v)) => serial = v.parse::<u32>().ok(),
                Some(("slot", v)) => slot = Some(v.to_ascii_lowercase()),
                _ => return Err(bad()),
            }
        }
        let slot = slot.ok_or_else(bad)?;
        smartcard::parse_slot(&slot)?;
        Ok(PivUri {
            serial: serial.ok_or_else(bad)?,
            slot,
        })
    }
}
