//! Creating keys on the token and reading the inventory.
//!
//! `request.rs` what an officer asks for ([`CreateKey`]) and its validation, `create.rs` creating
//! a key on the key token (or importing one), `on_card.rs` a key generated on a PIV card and the
//! card's secrets, `abandon.rs` removing a key whose creation never finished, `read.rs` listing
//! and showing keys and reading a public key.

mod abandon;
mod create;
mod on_card;
mod read;
mod request;

pub(crate) use request::validate;
pub use request::{CreateKey, Import, OnCard, PlainKey, CARD_TOKEN};
