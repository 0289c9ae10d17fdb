//! The inventory's anchor on the token: small public data objects (CKO_DATA, application
//! `kms-anchor`) whose value the engine signs with the integrity key. The token is the one place
//! an attacker who can write the inventory cannot roll back, so the anchor pins the inventory's
//! change log there (engine/anchor.rs says what it holds and when it is checked).
//!
//! Two slots (labels `…-a`, `…-b`) are written in turn, and a slot is written by creating the
//! new object before destroying the old one: a process killed in the middle leaves at least one
//! whole anchor (SoftHSM2 writes each object to a file of its own).

use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;

use super::module;
use super::token::find_slot;
use super::{HsmError, Token};
use crate::config::TokenConfig;

/// The values of every object of `application` on the token, read without logging in (public
/// objects), with the token's serial.
pub fn read_without_login(
    cfg: &TokenConfig,
    application: &str,
) -> Result<(String, Vec<Vec<u8>>), HsmError> {
    let _gate = module::gate();
    let ctx = module::load(&cfg.module)?;
    let (slot, description) = find_slot(&ctx, cfg)?;
    let session = ctx
        .open_ro_session(slot)
        .map_err(HsmError::ck(&cfg.name, "opening a session"))?;
    Ok((
        description.serial,
        values(&cfg.name, &session, application, None)?,
    ))
}

fn template(application: &str, label: Option<&str>) -> Vec<Attribute> {
    let mut t = vec![
        Attribute::Class(ObjectClass::DATA),
        Attribute::Application(application.as_bytes().to_vec()),
    ];
    if let Some(l) = label {
        t.push(Attribute::Label(l.as_bytes().to_vec()));
    }
    t
}

fn handles(
    token: &str,
    session: &Session,
    application: &str,
    label: Option<&str>,
) -> Result<Vec<ObjectHandle>, HsmError> {
    session
        .find_objects(&template(application, label))
        .map_err(HsmError::ck(token, "finding the inventory anchor"))
}

fn values(
    token: &str,
    session: &Session,
    application: &str,
    label: Option<&str>,
) -> Result<Vec<Vec<u8>>, HsmError> {
    let mut out = Vec::new();
    for h in handles(token, session, application, label)? {
        let attrs = session
            .get_attributes(h, &[AttributeType::Value])
            .map_err(HsmError::ck(token, "reading the inventory anchor"))?;
        for a in attrs {
            if let Attribute::Value(v) = a {
                out.push(v);
            }
        }
    }
    Ok(out)
}

impl Token {
    /// Every anchor value on the token (through the logged-in session).
    pub fn anchors(&self, application: &str) -> Result<Vec<Vec<u8>>, HsmError> {
        self.run(|s| values(self.name(), s, application, None))
    }

    /// Put `value` in the anchor slot `label`: the new object first, then the old ones go —
    /// except those whose value `keep` says must stay (a newer anchor another process wrote
    /// meanwhile).
    pub fn write_anchor(
        &self,
        application: &str,
        label: &str,
        value: &[u8],
        keep: &dyn Fn(&[u8]) -> bool,
    ) -> Result<(), HsmError> {
        self.run(|s| {
            let mut old = Vec::new();
            for h in handles(self.name(), s, application, Some(label))? {
                let kept = s
                    .get_attributes(h, &[AttributeType::Value])
                    .ok()
                    .and_then(|attrs| {
                        attrs.into_iter().find_map(|a| match a {
                            Attribute::Value(v) => Some(keep(&v)),
                            _ => None,
                        })
                    })
                    .unwrap_or(false);
                if !kept {
                    old.push(h);
                }
            }
            let mut t = template(application, Some(label));
            t.extend([
                Attribute::Token(true),
                Attribute::Private(false),
                Attribute::Value(value.to_vec()),
            ]);
            s.create_object(&t)
                .map_err(HsmError::ck(self.name(), "writing the inventory anchor"))?;
            // Best effort: another process writing the same slot at once may have destroyed
            // them already; a leftover is replaced at this slot's next write.
            for h in old {
                let _ = s.destroy_object(h);
            }
            Ok(())
        })
    }
}
