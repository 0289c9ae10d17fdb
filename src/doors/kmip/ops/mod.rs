//! One KMIP request message in, one response message out: the header, then each batch item as
//! one engine call (each its own audit record), in order, through `OPERATIONS` to the
//! operation's file (`fn handle`). What kms does not do is answered with
//! the spec's Operation Not Supported; what policy refuses with Permission Denied.

use time::OffsetDateTime;

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

use super::tags::{self as t, alg, object, op, result, state, usage};
use super::ttlv::{Item, Value};
use crate::engine::{
    Aead, Caller, Engine, EngineError, ErrorKind, KeyRef, LabelChange, OwnedKey, Refusal, ToSign,
};
use crate::model::KeyRecord;
use crate::model::{Classification, KeyFamily, KeyType, Operation, OperationSet, VersionState};

/// The protocol versions answered (KMIP 1.0–1.4), newest first.
const VERSIONS: [(i32, i32); 5] = [(1, 4), (1, 3), (1, 2), (1, 1), (1, 0)];
/// Most batch items served in one message.
const MAX_BATCH: usize = 64;

/// A failed batch item: the spec's reason and a message.
struct Failure {
    reason: u32,
    message: String,
}

impl Failure {
    fn new(reason: u32, message: impl Into<String>) -> Failure {
        Failure {
            reason,
            message: message.into(),
        }
    }
    fn field(m: impl Into<String>) -> Failure {
        Failure::new(result::INVALID_FIELD, m)
    }
}

impl From<EngineError> for Failure {
    /// KMIP's result reasons for the engine's [`ErrorKind`]s.
    fn from(e: EngineError) -> Failure {
        let reason = match e.kind() {
            ErrorKind::NotFound(_) => result::ITEM_NOT_FOUND,
            ErrorKind::Refused(
                Refusal::NotSupported
                | Refusal::UsageNotAllowed
                | Refusal::KeyState
                | Refusal::KeyExpired,
            ) => result::ILLEGAL_OPERATION,
            ErrorKind::Refused(_) => result::PERMISSION_DENIED,
            ErrorKind::BadCiphertext => result::CRYPTOGRAPHIC_FAILURE,
            ErrorKind::BadInput | ErrorKind::TooLarge => result::INVALID_FIELD,
            _ => {
                tracing::error!(error = %e, "kmip: general failure");
                result::GENERAL_FAILURE
            }
        };
        Failure {
            reason,
            message: e.public_message(),
        }
    }
}

fn int(tag: u32, v: i32) -> Item {
    Item::new(tag, Value::Integer(v))
}
fn enumeration(tag: u32, v: u32) -> Item {
    Item::new(tag, Value::Enumeration(v))
}
/// KMIP text as clients decode it: printable ASCII (PyKMIP refuses anything else).
fn text(tag: u32, v: &str) -> Item {
    let ascii: String = v
        .chars()
        .map(|c| match c {
            '…' => '~',
            c if (' '..='~').contains(&c) => c,
            _ => '?',
        })
        .collect();
    Item::new(tag, Value::Text(ascii))
}
fn bytes(tag: u32, v: &[u8]) -> Item {
    Item::new(tag, Value::Bytes(v.to_vec().into()))
}
fn version(major: i32, minor: i32) -> Item {
    Item::structure(
        t::PROTOCOL_VERSION,
        vec![
            int(t::PROTOCOL_VERSION_MAJOR, major),
            int(t::PROTOCOL_VERSION_MINOR, minor),
        ],
    )
}

/// The response to a message that could not be read as a KMIP request at all.
pub fn invalid_message(message: &str) -> Item {
    response(
        (1, 4),
        vec![Item::structure(
            t::BATCH_ITEM,
            vec![
                enumeration(t::RESULT_STATUS, result::OPERATION_FAILED),
                enumeration(t::RESULT_REASON, result::INVALID_MESSAGE),
                text(t::RESULT_MESSAGE, message),
            ],
        )],
    )
}

/// How a response answered, in words for an audit record: each batch item's operation and
/// result (reason and message when it failed). Never any payload.
pub fn answered(response: &Item) -> crate::engine::Answered {
    let mut ok = true;
    let parts: Vec<String> = response
        .children(t::BATCH_ITEM)
        .map(|b| {
            let operation = b
                .child(t::OPERATION)
                .and_then(Item::as_enum)
                .map(operation_name)
                .unwrap_or_else(|| "no operation".into());
            let status = b.child(t::RESULT_STATUS).and_then(Item::as_enum);
            if status == Some(result::SUCCESS) {
                return format!("{operation}: Success");
            }
            ok = false;
            let reason = b
                .child(t::RESULT_REASON)
                .and_then(Item::as_enum)
                .map(reason_name)
                .unwrap_or("Operation Failed");
            let message = b
                .child(t::RESULT_MESSAGE)
                .and_then(Item::as_text)
                .unwrap_or_default();
            if b.child(t::OPERATION).is_none() {
                format!("{reason}: {message}")
            } else {
                format!("{operation}: {reason}: {message}")
            }
        })
        .collect();
    let summary: String = parts.join("; ").chars().take(300).collect();
    let malformed = !ok && summary.starts_with("Invalid Message");
    crate::engine::Answered {
        ok,
        malformed,
        summary,
    }
}

fn operation_name(o: u32) -> String {
    match o {
        op::CREATE => "Create",
        op::CREATE_KEY_PAIR => "Create Key Pair",
        op::REGISTER => "Register",
        op::LOCATE => "Locate",
        op::GET => "Get",
        op::GET_ATTRIBUTES => "Get Attributes",
        op::GET_ATTRIBUTE_LIST => "Get Attribute List",
        op::ADD_ATTRIBUTE => "Add Attribute",
        op::MODIFY_ATTRIBUTE => "Modify Attribute",
        op::DELETE_ATTRIBUTE => "Delete Attribute",
        op::ACTIVATE => "Activate",
        op::REVOKE => "Revoke",
        op::DESTROY => "Destroy",
        op::QUERY => "Query",
        op::DISCOVER_VERSIONS => "Discover Versions",
        op::ENCRYPT => "Encrypt",
        op::DECRYPT => "Decrypt",
        op::SIGN => "Sign",
        op::SIGNATURE_VERIFY => "Signature Verify",
        op::MAC => "MAC",
        other => return format!("operation {other:#04x}"),
    }
    .to_owned()
}

fn reason_name(r: u32) -> &'static str {
    match r {
        result::ITEM_NOT_FOUND => "Item Not Found",
        result::INVALID_MESSAGE => "Invalid Message",
        result::OPERATION_NOT_SUPPORTED => "Operation Not Supported",
        result::MISSING_DATA => "Missing Data",
        result::INVALID_FIELD => "Invalid Field",
        result::CRYPTOGRAPHIC_FAILURE => "Cryptographic Failure",
        result::ILLEGAL_OPERATION => "Illegal Operation",
        result::PERMISSION_DENIED => "Permission Denied",
        _ => "General Failure",
    }
}

fn response(v: (i32, i32), items: Vec<Item>) -> Item {
    let mut out = vec![Item::structure(
        t::RESPONSE_HEADER,
        vec![
            version(v.0, v.1),
            Item::new(
                t::TIME_STAMP,
                Value::DateTime(OffsetDateTime::now_utc().unix_timestamp()),
            ),
            int(t::BATCH_COUNT, items.len() as i32),
        ],
    )];
    out.extend(items);
    Item::structure(t::RESPONSE_MESSAGE, out)
}

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

/// The template attribute that sets a KMIP-made key's A8 classification (text: confidential,
/// restricted or public); without it, `[kmip] classification` applies.
pub const CLASSIFICATION_ATTRIBUTE: &str = "x-classification";

/// The label that keeps a key's KMIP Name (what a client named it, or renamed it to).
pub const KMIP_NAME: &str = "kmip-name";

/// A key's KMIP Name: its `kmip-name` label, or else its kms name.
pub fn kmip_name(key: &KeyRecord) -> &str {
    key.labels
        .get(KMIP_NAME)
        .map_or(key.name.as_str(), String::as_str)
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

/// The attributes of a template (KMIP 1.x: Attribute Name + Attribute Value).
fn template(p: &Item) -> Vec<(&str, &Item)> {
    let nested: Vec<&Item> = [
        t::TEMPLATE_ATTRIBUTE,
        t::COMMON_TEMPLATE_ATTRIBUTE,
        t::PRIVATE_KEY_TEMPLATE_ATTRIBUTE,
        t::PUBLIC_KEY_TEMPLATE_ATTRIBUTE,
    ]
    .iter()
    .filter_map(|tag| p.child(*tag))
    .flat_map(|tpl| tpl.children(t::ATTRIBUTE))
    .collect();
    p.children(t::ATTRIBUTE)
        .chain(nested)
        .filter_map(|a| {
            Some((
                a.child(t::ATTRIBUTE_NAME).and_then(Item::as_text)?,
                a.child(t::ATTRIBUTE_VALUE)?,
            ))
        })
        .collect()
}

/// The value of template attribute `name`.
fn find<'a>(attrs: &[(&str, &'a Item)], name: &str) -> Option<&'a Item> {
    attrs.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)
}

/// The Name attribute's text, if the template has one.
fn name_of(attrs: &[(&str, &Item)]) -> Option<String> {
    find(attrs, "Name")
        .and_then(|n| n.child(t::NAME_VALUE))
        .and_then(Item::as_text)
        .map(str::to_owned)
}

/// Where a registered Secret Data's type (Password, Seed) is kept, to be given back by Get.
const SECRET_DATA_TYPE_LABEL: &str = "kmip-secret-data-type";

/// The A8 fields a client may set in a template: `x-classification` (text).
fn a8<'a>(attrs: &[(&'a str, &Item)]) -> Result<Vec<(&'a str, String)>, Failure> {
    let key = CLASSIFICATION_ATTRIBUTE;
    match find(attrs, key) {
        None => Ok(Vec::new()),
        Some(v) => {
            let text = v
                .as_text()
                .ok_or_else(|| Failure::field(format!("{key} is a Text String")))?;
            text.parse::<crate::model::Classification>()
                .map_err(|e| Failure::field(format!("{key}: {e}")))?;
            Ok(vec![(key, text.to_owned())])
        }
    }
}

/// The bytes of a Key Block's Key Value.
fn key_material(block: &Item) -> Result<&[u8], Failure> {
    block
        .child(t::KEY_VALUE)
        .and_then(|v| v.child(t::KEY_MATERIAL))
        .and_then(Item::as_bytes)
        .ok_or_else(|| Failure::new(result::MISSING_DATA, "no Key Material"))
}

/// A Name attribute's value (Name Value, Name Type Uninterpreted Text String).
fn name_value(name: &str) -> Value {
    Value::Structure(vec![
        text(t::NAME_VALUE, name),
        enumeration(t::NAME_TYPE, 1),
    ])
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

fn algorithm(k: KeyType) -> u32 {
    match k.family() {
        KeyFamily::Aes => alg::AES,
        KeyFamily::Rsa => alg::RSA,
        KeyFamily::Ec(_) | KeyFamily::Ed25519 => alg::ECDSA,
        KeyFamily::Hmac if k == KeyType::HmacSha384 => alg::HMAC_SHA384,
        KeyFamily::Hmac => alg::HMAC_SHA256,
        KeyFamily::Des3 => 0x02,
        // Secret Data has no Cryptographic Algorithm; attributes() leaves it out.
        KeyFamily::Secret => 0,
    }
}

fn length(k: KeyType) -> i32 {
    if let Some(b) = k.rsa_bits() {
        return b as i32;
    }
    if let Some(c) = k.curve() {
        return (c.field_bytes() * 8).min(521) as i32;
    }
    if k == KeyType::Ed25519 {
        return 255;
    }
    k.secret_len().map(|l| l as i32 * 8).unwrap_or(0)
}

/// Each kms operation and its Cryptographic Usage Mask bit, both ways.
const USAGE_BITS: [(Operation, i64); 9] = [
    (Operation::Sign, usage::SIGN),
    (Operation::Verify, usage::VERIFY),
    (Operation::Encrypt, usage::ENCRYPT),
    (Operation::Decrypt, usage::DECRYPT),
    (Operation::Wrap, usage::WRAP_KEY),
    (Operation::Unwrap, usage::UNWRAP_KEY),
    (Operation::Mac, usage::MAC_GENERATE),
    (Operation::VerifyMac, usage::MAC_VERIFY),
    (Operation::Reveal, usage::EXPORT),
];

/// The operations a usage mask allows a key of `key_type` (all it supports when no mask).
fn usage_of_mask(mask: Option<i64>, key_type: KeyType) -> std::collections::BTreeSet<Operation> {
    USAGE_BITS
        .iter()
        .filter(|(o, bit)| {
            key_type.supported_operations().contains(o) && mask.is_none_or(|m| m & bit != 0)
        })
        .map(|(o, _)| *o)
        .collect()
}

/// What GetAttributes reports of a key.
fn attributes(key: &KeyRecord, public: bool) -> Vec<(&'static str, Value)> {
    let mask = USAGE_BITS
        .iter()
        .filter(|(o, _)| key.usage.contains(*o))
        .fold(0i32, |m, (_, bit)| m | *bit as i32);
    let kmip_state = match key.current_version().map(|v| v.state) {
        _ if key.disposed_at.is_some() => state::DESTROYED,
        Some(VersionState::Active) => state::ACTIVE,
        _ if key
            .versions
            .iter()
            .any(|v| v.state == VersionState::Compromised) =>
        {
            state::COMPROMISED
        }
        _ if key
            .versions
            .iter()
            .all(|v| v.state == VersionState::Pending) =>
        {
            state::PRE_ACTIVE
        }
        _ => state::DEACTIVATED,
    };
    let secret = key.key_type.family() == KeyFamily::Secret;
    let object_type = if secret {
        object::SECRET_DATA
    } else if key.key_type.is_symmetric() {
        object::SYMMETRIC_KEY
    } else if public {
        object::PUBLIC_KEY
    } else {
        object::PRIVATE_KEY
    };
    let mut out = vec![
        ("Name", name_value(kmip_name(key))),
        ("Object Type", Value::Enumeration(object_type)),
    ];
    if !secret {
        out.extend([
            (
                "Cryptographic Algorithm",
                Value::Enumeration(algorithm(key.key_type)),
            ),
            ("Cryptographic Length", Value::Integer(length(key.key_type))),
        ]);
    }
    out.extend([
        ("Cryptographic Usage Mask", Value::Integer(mask)),
        ("State", Value::Enumeration(kmip_state)),
        (
            "Initial Date",
            Value::DateTime(key.created_at.unix_timestamp()),
        ),
    ]);
    if let Some(at) = key.current_version().and_then(|v| v.activated_at) {
        out.push(("Activation Date", Value::DateTime(at.unix_timestamp())));
    }
    out
}

/// The custom (`x-…`) attributes of a key: its labels of that form.
fn custom_attributes(key: &KeyRecord) -> Vec<(String, String)> {
    key.labels
        .iter()
        .filter(|(k, _)| k.starts_with("x-"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}
