//! One KMIP request message in, one response message out: the header, then each batch item as
//! one engine call (each its own audit record), in order, through `OPERATIONS` to the
//! operation's file (`fn handle`). What kms does not do is answered with
//! the spec's Operation Not Supported; what policy refuses with Permission Denied.

mod activate;
mod add_attribute;
mod create;
mod create_key_pair;
mod decrypt;
mod delete_attribute;
mod destroy;
mod discover_versions;
mod encrypt;
mod get;
mod get_attribute_list;
mod get_attributes;
mod locate;
mod mac;
mod query;
mod register;
mod revoke;
mod sign;
mod signature_verify;

use super::attributes::{
    a8, algorithm, attributes, custom_attributes, find, key_material, kmip_name, length, name_of,
    name_value, template, usage_of_mask, CLASSIFICATION_ATTRIBUTE, KMIP_NAME,
    SECRET_DATA_TYPE_LABEL,
};
use super::items::{bytes, enumeration, int, invalid_message, response, text, version};
use super::tags::{self as t, alg, object, op, result, usage};
use super::ttlv::{Item, Value};
use crate::engine::{
    Aead, Caller, Engine, EngineError, KeyRef, LabelChange, OwnedKey, Refusal, ToSign,
};
use crate::model::KeyRecord;
use crate::model::{Classification, KeyFamily, KeyType, Operation, OperationSet};

/// The protocol versions answered (KMIP 1.0–1.4), newest first.
const VERSIONS: [(i32, i32); 5] = [(1, 4), (1, 3), (1, 2), (1, 1), (1, 0)];
/// Most batch items served in one message.
const MAX_BATCH: usize = 64;

pub(super) use super::failure::Failure;

/// Serve one request message as `caller`.
pub fn handle(engine: &Engine, caller: &Caller, request: &Item) -> Item {
    if request.tag != t::REQUEST_MESSAGE {
        return invalid_message("not a KMIP Request Message");
    }
    let v = request
        .child(t::REQUEST_HEADER)
        .and_then(|h| h.child(t::PROTOCOL_VERSION))
        .map(|p| {
            (
                p.child(t::PROTOCOL_VERSION_MAJOR)
                    .and_then(Item::as_int)
                    .unwrap_or(1) as i32,
                p.child(t::PROTOCOL_VERSION_MINOR)
                    .and_then(Item::as_int)
                    .unwrap_or(0) as i32,
            )
        })
        .unwrap_or((1, 0));
    let v = if VERSIONS.contains(&v) { v } else { (1, 4) };
    let batch: Vec<&Item> = request.children(t::BATCH_ITEM).collect();
    if batch.is_empty() || batch.len() > MAX_BATCH {
        return invalid_message(&format!(
            "a request carries 1..={MAX_BATCH} batch items, not {}",
            batch.len()
        ));
    }
    let items = batch
        .into_iter()
        .map(|b| {
            let operation = b.child(t::OPERATION).and_then(Item::as_enum);
            let mut out = Vec::new();
            if let Some(o) = operation {
                out.push(enumeration(t::OPERATION, o));
            }
            if let Some(id) = b.child(t::UNIQUE_BATCH_ITEM_ID) {
                out.push(id.clone());
            }
            let payload = b.child(t::REQUEST_PAYLOAD);
            let answer = match (operation, payload) {
                (Some(o), Some(p)) => dispatch(engine, caller, o, p, v),
                (Some(_), None) => Err(Failure::new(result::MISSING_DATA, "no Request Payload")),
                (None, _) => Err(Failure::new(result::INVALID_MESSAGE, "no Operation")),
            };
            match answer {
                Ok(payload) => {
                    out.push(enumeration(t::RESULT_STATUS, result::SUCCESS));
                    out.push(Item::structure(t::RESPONSE_PAYLOAD, payload));
                }
                Err(f) => {
                    out.push(enumeration(t::RESULT_STATUS, result::OPERATION_FAILED));
                    out.push(enumeration(t::RESULT_REASON, f.reason));
                    out.push(text(t::RESULT_MESSAGE, &f.message));
                }
            }
            Item::structure(t::BATCH_ITEM, out)
        })
        .collect();
    response(v, items)
}

fn uid(p: &Item) -> Result<String, Failure> {
    p.child(t::UNIQUE_IDENTIFIER)
        .and_then(Item::as_text)
        .map(str::to_owned)
        .ok_or_else(|| Failure::new(result::MISSING_DATA, "no Unique Identifier"))
}

/// What every operation's handler is given.
#[derive(Clone, Copy)]
struct Cx<'a> {
    engine: &'a Engine,
    caller: &'a Caller,
    operation: u32,
    /// The Authenticated Encryption Tag field exists from KMIP 1.4; before it, the GCM tag
    /// travels at the end of Data (what 1.2 clients such as PyKMIP's default send back).
    separate_tag: bool,
}

type Handler = fn(&Cx, &Item) -> Result<Vec<Item>, Failure>;

/// Each operation served and its handler (one file each).
const OPERATIONS: &[(u32, Handler)] = &[
    (op::DISCOVER_VERSIONS, discover_versions::handle),
    (op::QUERY, query::handle),
    (op::CREATE, create::handle),
    (op::CREATE_KEY_PAIR, create_key_pair::handle),
    (op::REGISTER, register::handle),
    (op::LOCATE, locate::handle),
    (op::GET, get::handle),
    (op::GET_ATTRIBUTES, get_attributes::handle),
    (op::ACTIVATE, activate::handle),
    (op::REVOKE, revoke::handle),
    (op::DESTROY, destroy::handle),
    (op::GET_ATTRIBUTE_LIST, get_attribute_list::handle),
    (op::ADD_ATTRIBUTE, add_attribute::handle),
    (op::MODIFY_ATTRIBUTE, add_attribute::handle),
    (op::DELETE_ATTRIBUTE, delete_attribute::handle),
    (op::MAC, mac::handle),
    (op::ENCRYPT, encrypt::handle),
    (op::DECRYPT, decrypt::handle),
    (op::SIGN, sign::handle),
    (op::SIGNATURE_VERIFY, signature_verify::handle),
];

fn dispatch(
    engine: &Engine,
    caller: &Caller,
    operation: u32,
    p: &Item,
    v: (i32, i32),
) -> Result<Vec<Item>, Failure> {
    let cx = Cx {
        engine,
        caller,
        operation,
        separate_tag: v >= (1, 4),
    };
    match OPERATIONS.iter().find(|(o, _)| *o == operation) {
        Some((_, handle)) => handle(&cx, p),
        None => Err(Failure::new(
            result::OPERATION_NOT_SUPPORTED,
            format!("operation {operation:#x} is not served by kms (Query lists what is)"),
        )),
    }
}

/// Create and Register: the key is made by kms itself (owner: the caller), allowed only to the
/// principals `[kmip] may_create` names — an officer's standing decision, recorded with every
/// key it creates; the caller gets a break-glass grant of the key's usage, audited as such.
fn create_owned(
    engine: &Engine,
    caller: &Caller,
    name: Option<String>,
    key_type: KeyType,
    usage: OperationSet,
    material: Option<crate::engine::PlainKey>,
    labels: &[(&str, String)],
) -> Result<KeyRecord, EngineError> {
    let action = if material.is_some() {
        "kmip.register"
    } else {
        "kmip.create"
    };
    let kmip = engine.config().kmip.as_ref();
    let no_one: &[String] = &[];
    engine.create_owned_key(
        caller,
        OwnedKey {
            action,
            door: "KMIP",
            may_create: kmip.map_or(no_one, |k| k.may_create.as_slice()),
            may_create_source: "[kmip] may_create",
            requested_name: name,
            name_label: KMIP_NAME,
            name_prefix: "kmip-",
            key_type,
            usage,
            material,
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
            classification_label: CLASSIFICATION_ATTRIBUTE,
            classification: kmip.map_or(Classification::Confidential, |k| k.classification),
        },
    )
}

/// Add/Modify/DeleteAttribute of a custom attribute (`x-…`) or the Name, kept as a label of the
/// key: only by the key's owner, with a grant on it. `None` deletes. Returns the value it had.
fn set_attribute(
    engine: &Engine,
    caller: &Caller,
    uid: &str,
    attribute: &str,
    value: Option<&str>,
    must_exist: Option<bool>,
) -> Result<Option<String>, EngineError> {
    let action = match (value, must_exist) {
        (None, _) => "kmip.delete-attribute",
        (Some(_), Some(true)) => "kmip.modify-attribute",
        _ => "kmip.add-attribute",
    };
    // The KMIP Name is the `kmip-name` label; without one, the kms name stands for it.
    let is_name = attribute == "Name";
    let accept = |_: &KeyRecord| {
        if !is_name && !attribute.starts_with("x-") {
            return Err(EngineError::denied(
                Refusal::NotSupported,
                format!(
                    "'{attribute}' cannot be changed: kms keeps a key's cryptographic attributes and state to its own procedures; Name and custom attributes (x-...) can be"
                ),
            ));
        }
        if let (true, Some(v)) = (is_name, value) {
            if v.trim().is_empty() || v.len() > 255 {
                return Err(EngineError::InvalidInput(
                    "a Name is 1 to 255 characters".into(),
                ));
            }
        }
        Ok(())
    };
    engine.set_key_label(
        caller,
        uid,
        LabelChange {
            action,
            attribute,
            label: if is_name { KMIP_NAME } else { attribute },
            value,
            must_exist,
            always_present: is_name,
        },
        &accept,
    )
}

/// Encrypt and Decrypt serve AES keys.
fn aes_only(key: &KeyRecord, op: &str) -> Result<(), EngineError> {
    if key.key_type.family() != KeyFamily::Aes {
        return Err(EngineError::denied(
            Refusal::NotSupported,
            format!(
                "key '{}' is {}: KMIP {op} is AES-GCM",
                key.name, key.key_type
            ),
        ));
    }
    Ok(())
}

/// Encrypt and Decrypt are AES-GCM: Cryptographic Parameters may only say so.
fn gcm_only(p: &Item) -> Result<(), Failure> {
    if let Some(mode) = p
        .child(t::CRYPTOGRAPHIC_PARAMETERS)
        .and_then(|c| c.child(t::BLOCK_CIPHER_MODE))
        .and_then(Item::as_enum)
    {
        if mode != t::MODE_GCM {
            return Err(Failure::new(
                result::OPERATION_NOT_SUPPORTED,
                "kms encrypts with AES-GCM only (Block Cipher Mode GCM)",
            ));
        }
    }
    Ok(())
}

/// What marks a key pair's public half in a KMIP unique identifier.
const PUBLIC_SUFFIX: &str = "/public";

/// The kms key ID of a unique identifier, and whether it names a public half.
fn split_uid(uid: &str) -> (&str, bool) {
    match uid.strip_suffix(PUBLIC_SUFFIX) {
        Some(id) => (id, true),
        None => (uid, false),
    }
}
