//! KMIP attributes: reading a request's template (Name, `x-classification`, Key Material),
//! a key's Cryptographic Usage Mask both ways (`USAGE_BITS`), and what GetAttributes reports
//! of a key.

use super::failure::Failure;
use super::items::{enumeration, text};
use super::tags::{self as t, alg, object, result, state, usage};
use super::ttlv::{Item, Value};
use crate::model::KeyRecord;
use crate::model::{KeyFamily, KeyType, Operation, VersionState};

/// The template attribute that sets a KMIP-made key's A8 classification (text: confidential,
/// restricted or public); without it, `[kmip] classification` applies.
pub(super) const CLASSIFICATION_ATTRIBUTE: &str = "x-classification";

/// The label that keeps a key's KMIP Name (what a client named it, or renamed it to).
pub(super) const KMIP_NAME: &str = "kmip-name";

/// A key's KMIP Name: its `kmip-name` label, or else its kms name.
pub(super) fn kmip_name(key: &KeyRecord) -> &str {
    key.labels
        .get(KMIP_NAME)
        .map_or(key.name.as_str(), String::as_str)
}

/// The attributes of a template (KMIP 1.x: Attribute Name + Attribute Value).
pub(super) fn template(p: &Item) -> Vec<(&str, &Item)> {
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
pub(super) fn find<'a>(attrs: &[(&str, &'a Item)], name: &str) -> Option<&'a Item> {
    attrs.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)
}

/// The Name attribute's text, if the template has one.
pub(super) fn name_of(attrs: &[(&str, &Item)]) -> Option<String> {
    find(attrs, "Name")
        .and_then(|n| n.child(t::NAME_VALUE))
        .and_then(Item::as_text)
        .map(str::to_owned)
}

/// Where a registered Secret Data's type (Password, Seed) is kept, to be given back by Get.
pub(super) const SECRET_DATA_TYPE_LABEL: &str = "kmip-secret-data-type";

/// The A8 fields a client may set in a template: `x-classification` (text).
pub(super) fn a8<'a>(attrs: &[(&'a str, &Item)]) -> Result<Vec<(&'a str, String)>, Failure> {
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
pub(super) fn key_material(block: &Item) -> Result<&[u8], Failure> {
    block
        .child(t::KEY_VALUE)
        .and_then(|v| v.child(t::KEY_MATERIAL))
        .and_then(Item::as_bytes)
        .ok_or_else(|| Failure::new(result::MISSING_DATA, "no Key Material"))
}

/// A Name attribute's value (Name Value, Name Type Uninterpreted Text String).
pub(super) fn name_value(name: &str) -> Value {
    Value::Structure(vec![
        text(t::NAME_VALUE, name),
        enumeration(t::NAME_TYPE, 1),
    ])
}

pub(super) fn algorithm(k: KeyType) -> u32 {
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

pub(super) fn length(k: KeyType) -> i32 {
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
pub(super) const USAGE_BITS: [(Operation, i64); 9] = [
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
pub(super) fn usage_of_mask(
    mask: Option<i64>,
    key_type: KeyType,
) -> std::collections::BTreeSet<Operation> {
    USAGE_BITS
        .iter()
        .filter(|(o, bit)| {
            key_type.supported_operations().contains(o) && mask.is_none_or(|m| m & bit != 0)
        })
        .map(|(o, _)| *o)
        .collect()
}

/// What GetAttributes reports of a key.
pub(super) fn attributes(key: &KeyRecord, public: bool) -> Vec<(&'static str, Value)> {
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
pub(super) fn custom_attributes(key: &KeyRecord) -> Vec<(String, String)> {
    key.labels
        .iter()
        .filter(|(k, _)| k.starts_with("x-"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}
