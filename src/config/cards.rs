//! `[cards.SERIAL]`: PIN and management-key sources of PIV cards holding card-resident keys.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{ConfigError, Ctx, PinSource};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCard {
    pin: String,
    mgm_key: Option<String>,
}

/// PIN sources by card serial, and management-key sources of the cards that name one.
pub(super) type CardSources = (BTreeMap<String, PinSource>, BTreeMap<String, PinSource>);

pub(super) fn validate(
    raw: BTreeMap<String, RawCard>,
    ctx: &Ctx,
) -> Result<CardSources, ConfigError> {
    let mut cards = BTreeMap::new();
    let mut card_mgm_keys = BTreeMap::new();
    for (serial, c) in raw {
        if let Some(m) = &c.mgm_key {
            let src = ctx.pin_source(m).ok_or_else(|| {
                ctx.invalid(format!(
                    "[cards.{serial}] mgm_key must be `env:VAR`, `file:PATH` or `prompt`"
                ))
            })?;
            card_mgm_keys.insert(serial.clone(), src);
        }
        if serial.parse::<u32>().is_err() {
            return Err(ctx.invalid(format!(
                "[cards.{serial}]: the table name is the card's serial number"
            )));
        }
        let pin = ctx.pin_source(&c.pin).ok_or_else(|| {
            ctx.invalid(format!(
                "[cards.{serial}] pin must be `env:VAR`, `file:PATH` or `prompt`; a PIN is never written in the config itself"
            ))
        })?;
        cards.insert(serial, pin);
    }
    Ok((cards, card_mgm_keys))
}
