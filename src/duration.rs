//! Human durations such as `90d`, `12w`, `36h`, used for rotation periods and access durations.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A whole number of seconds, written with one unit suffix: `h` (hours), `d` (days), `w` (weeks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct HumanDuration {
    seconds: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration '{0}': write a positive number followed by h, d or w (for example 90d), at most 100 years")]
pub struct DurationError(String);

/// The longest duration accepted: 100 years (36,500 days).
pub const MAX_SECS: u64 = 36_500 * 86_400;

impl HumanDuration {
    pub const fn days(days: u64) -> Self {
        HumanDuration {
            seconds: days * 86_400,
        }
    }

    /// A duration of `seconds`, if positive.
    pub fn from_secs(seconds: u64) -> Option<Self> {
        (seconds > 0 && seconds <= MAX_SECS).then_some(HumanDuration { seconds })
    }

    pub fn as_secs(self) -> u64 {
        self.seconds
    }

    pub fn to_time(self) -> time::Duration {
        time::Duration::seconds(i64::try_from(self.seconds).unwrap_or(i64::MAX))
    }
}

impl FromStr for HumanDuration {
    type Err = DurationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || DurationError(s.to_owned());
        let s = s.trim();
        // The unit is the last character, whatever its width: user text may be any Unicode, so
        // never split at a byte index (`"1é"` once panicked here).
        let mut chars = s.chars();
        let unit = chars.next_back().ok_or_else(err)?;
        let num = chars.as_str();
        if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err());
        }
        let n: u64 = num.parse().map_err(|_| err())?;
        let mult = match unit {
            'h' => 3_600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            _ => return Err(err()),
        };
        if n == 0 {
            return Err(err());
        }
        let seconds = n.checked_mul(mult).ok_or_else(err)?;
        if seconds > MAX_SECS {
            return Err(err());
        }
        Ok(HumanDuration { seconds })
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.seconds;
        if s.is_multiple_of(86_400) {
            write!(f, "{}d", s / 86_400)
        } else {
            write!(f, "{}h", s / 3_600)
        }
    }
}

impl From<HumanDuration> for String {
    fn from(d: HumanDuration) -> String {
        d.to_string()
    }
}

impl TryFrom<String> for HumanDuration {
    type Error = DurationError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() -> Result<(), DurationError> {
        assert_eq!("90d".parse::<HumanDuration>()?.as_secs(), 90 * 86_400);
        assert_eq!("2w".parse::<HumanDuration>()?.to_string(), "14d");
        assert_eq!("36h".parse::<HumanDuration>()?.to_string(), "36h");
        for bad in [
            "",
            "d",
            "0d",
            "-1d",
            "10y",
            "1.5d",
            "36501d",
            "4000000000000000h",
            "1é",
            "é",
            "éd",
            "1\u{10FFFF}",
            "+1d",
            "1 d",
        ] {
            assert!(bad.parse::<HumanDuration>().is_err(), "{bad}");
        }
        Ok(())
    }
}
