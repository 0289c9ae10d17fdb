//! Argument types and value parsers shared by several nouns (no noun file imports another).

use crate::config::PinSource;
use crate::engine::CardAccess;

use super::CliError;

// `--card` and `--card-pin`: the signer's own token, for the access workflow's signatures (a
// plain comment: a doc comment on a flattened clap struct would become the command's about).
#[derive(Debug, clap::Args)]
pub struct CardArgs {
    /// Your token's approval key (default: the URI registered for you).
    #[arg(long, value_name = "PKCS11-URI")]
    card: Option<String>,
    /// PIN source for your token: env:VAR, file:PATH or prompt.
    #[arg(long, value_name = "SOURCE", default_value = "prompt")]
    card_pin: String,
}

/// A PIN source from the command line; a literal PIN is refused.
pub fn pin_source(s: &str) -> Result<PinSource, CliError> {
    PinSource::parse(s).ok_or_else(|| {
        CliError::Usage(
            "--card-pin takes a PIN source (env:VAR, file:PATH or prompt), never the PIN itself"
                .into(),
        )
    })
}

/// The signer's token from `--card`/`--card-pin`.
pub fn card(c: CardArgs) -> Result<CardAccess, CliError> {
    Ok(CardAccess {
        uri: c.card,
        pin: pin_source(&c.card_pin)?,
    })
}

/// A calendar date, `YYYY-MM-DD` (dates of keys and grants; audit times accept it too).
pub fn parse_date(s: &str) -> Result<time::Date, String> {
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(s, fmt).map_err(|_| format!("'{s}' is not a date; write YYYY-MM-DD"))
}

/// A 3DES-CBC IV: 16 hex digits.
pub fn parse_iv(s: &str) -> Result<[u8; 8], CliError> {
    hex::decode(s.trim())
        .ok()
        .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
        .ok_or_else(|| {
            CliError::Usage(format!(
                "--iv '{s}' is not an 8-byte IV: write 16 hex digits (what `openssl enc -iv` takes)"
            ))
        })
}

/// A `key=value` label (`--label`).
pub fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        _ => Err(format!("'{s}' is not a label; write key=value")),
    }
}
