//! `kms card ...`: YubiKey PIV smartcards.

use clap::Subcommand;

use super::args::pin_source;
use super::output::{print_json, print_table};
use super::CliError;
use crate::engine::{Caller, Engine};
use crate::model::Role;

#[derive(Debug, Subcommand)]
pub enum CardCmd {
    /// Readers and the cards in them (serial, firmware).
    List {
        #[arg(long)]
        json: bool,
    },
    /// One card: serial, firmware, PIN tries left, slots in use.
    Status {
        #[arg(long)]
        serial: Option<u32>,
        #[arg(long)]
        json: bool,
    },
    /// Generate an EC P-384 approval key on a person's card (self-signed certificate in the slot)
    /// and register it as their approval key.
    Enrol {
        #[arg(long)]
        principal: String,
        /// Register the person with this role if they are new.
        #[arg(long)]
        role: Option<Role>,
        #[arg(long)]
        serial: Option<u32>,
        #[arg(long, default_value = "9c")]
        slot: String,
        /// PIN source for the card's PIN: env:VAR, file:PATH or prompt.
        #[arg(long, value_name = "SOURCE", default_value = "prompt")]
        card_pin: String,
        /// Source of the card's management key (hex); default: the card's factory key.
        #[arg(long, value_name = "SOURCE")]
        mgm_key_source: Option<String>,
        /// Overwrite a key already in the slot / replace the person's approval key (recorded).
        #[arg(long)]
        force: bool,
        #[arg(long)]
        json: bool,
    },
    /// Unblock a blocked PIN with the PUK (both from PIN sources).
    Unblock {
        #[arg(long)]
        serial: Option<u32>,
        #[arg(long, value_name = "SOURCE", default_value = "prompt")]
        puk: String,
        #[arg(long, value_name = "SOURCE", default_value = "prompt")]
        new_pin: String,
        /// Allow the PUK's last try (or a try on a card that cannot report its PUK counter);
        /// recorded in the audit trail. Without it kms refuses rather than risk blocking the PUK.
        #[arg(long)]
        last_try: bool,
    },
    /// A person's card was lost (or stolen): end their approval keys on it and revoke every
    /// grant in force that one of those keys signed (verification, approval, re-certification).
    /// Signatures made before stay valid evidence; the person needs a new card (`card enrol`).
    Lost {
        /// Whose card.
        principal: String,
        /// The card's serial (PIV serial or token serial); default: their current card.
        #[arg(long)]
        serial: Option<String>,
        /// How it was lost (ticket, report): recorded.
        #[arg(long)]
        justification: String,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(engine: &Engine, caller: &Caller, cmd: CardCmd) -> Result<(), CliError> {
    match cmd {
        CardCmd::List { json } => {
            let listing = engine.card_list(caller)?;
            if json {
                print_json(&listing.cards)?;
            } else {
                let rows: Vec<Vec<String>> = listing
                    .cards
                    .iter()
                    .map(|c| vec![c.serial.to_string(), c.version.clone(), c.reader.clone()])
                    .collect();
                print_table(&["SERIAL", "FIRMWARE", "READER"], &rows);
            }
            // The cards that answered are listed; a reader whose card did not answer makes
            // the command fail, saying which (a script must not take the list as complete).
            if listing.unreachable.is_empty() {
                return Ok(());
            }
            Err(CliError::Engine(crate::engine::EngineError::Card(
                crate::smartcard::CardError::Unlisted(listing.unreachable),
            )))
        }
        CardCmd::Status { serial, json } => {
            let s = engine.card_status(caller, serial)?;
            if json {
                return print_json(&s);
            }
            outln!("serial:          {}", s.info.serial);
            outln!("firmware:        {}", s.info.version);
            outln!("reader:          {}", s.info.reader);
            outln!(
                "PIN tries left:  {}",
                s.pin_tries_left
                    .map(|t| t.to_string())
                    .unwrap_or_else(|| "unknown".into())
            );
            outln!(
                "PUK tries left:  {}",
                s.puk_tries_left
                    .map(|t| t.to_string())
                    .unwrap_or_else(|| "unknown (the card does not report it)".into())
            );
            let rows: Vec<Vec<String>> = s
                .slots
                .iter()
                .map(|u| vec![u.slot.clone(), u.subject.clone()])
                .collect();
            outln!("slots in use:");
            print_table(&["SLOT", "CERTIFICATE SUBJECT"], &rows);
            Ok(())
        }
        CardCmd::Enrol {
            principal,
            role,
            serial,
            slot,
            card_pin,
            mgm_key_source,
            force,
            json,
        } => {
            let pin = pin_source(&card_pin)?;
            let mgm = mgm_key_source.as_deref().map(pin_source).transpose()?;
            let e = engine.card_enrol(
                caller,
                &principal,
                role,
                serial,
                &slot,
                &pin,
                mgm.as_ref(),
                force,
            )?;
            if json {
                return print_json(&e);
            }
            outln!(
                "enrolled '{}': EC P-384 key generated on card {} in slot {} ({}); registered as their approval key",
                e.principal, e.card.serial, e.card.slot, e.uri
            );
            Ok(())
        }
        CardCmd::Unblock {
            serial,
            puk,
            new_pin,
            last_try,
        } => {
            engine.card_unblock(
                caller,
                serial,
                &pin_source(&puk)?,
                &pin_source(&new_pin)?,
                last_try,
            )?;
            outln!("PIN unblocked");
            Ok(())
        }
        CardCmd::Lost {
            principal,
            serial,
            justification,
            json,
        } => {
            let loss = engine.card_lost(caller, &principal, serial.as_deref(), &justification)?;
            if json {
                return print_json(&loss);
            }
            outln!(
                "card {} of '{}' reported lost: {} approval key(s) ended, {} grant(s) revoked{}",
                loss.card,
                loss.principal,
                loss.keys_ended.len(),
                loss.grants_revoked.len(),
                if loss.grants_revoked.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", loss.grants_revoked.join(", "))
                }
            );
            if !loss.open_requests.is_empty() {
                outln!(
                    "open requests with a signature from this card (valid when made; deny them if in doubt): {}",
                    loss.open_requests.join(", ")
                );
            }
            if loss.current_key_lost {
                outln!(
                    "'{}' has no approval key now: enrol a new card with `kms card enrol --principal {} --force`",
                    loss.principal, loss.principal
                );
            }
            Ok(())
        }
    }
}
