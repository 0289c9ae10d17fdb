//! One KMIP request message in, one response message out: the header, then each batch item as
//! one engine call (each its own audit record), in order. What kms does not do is answered with
//! the spec's Operation Not Supported; what policy refuses with Permission Denied.

use time::OffsetDateTime;

use super::tags::{self as t, alg, object, op, result, state, usage};
use super::ttlv::{Item, Value};
use crate::engine::{Caller, Engine, EngineError, ErrorKind, Refusal, ToSign};
use crate::model::KeyRecord;
use crate::model::{KeyFamily, KeyType, Operation, OperationSet, VersionState};

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
    crate::engine::Answered { ok, summary }
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

fn dispatch(
    engine: &Engine,
    caller: &Caller,
    operation: u32,
    p: &Item,
    v: (i32, i32),
) -> Result<Vec<Item>, Failure> {
    // The Authenticated Encryption Tag field exists from KMIP 1.4; before it, the GCM tag
    // travels at the end of Data (what 1.2 clients such as PyKMIP's default send back).
    let separate_tag = v >= (1, 4);
    match operation {
        op::DISCOVER_VERSIONS => {
            let asked: Vec<(i32, i32)> = p
                .children(t::PROTOCOL_VERSION)
                .map(|v| {
                    (
                        v.child(t::PROTOCOL_VERSION_MAJOR)
                            .and_then(Item::as_int)
                            .unwrap_or(0) as i32,
                        v.child(t::PROTOCOL_VERSION_MINOR)
                            .and_then(Item::as_int)
                            .unwrap_or(0) as i32,
                    )
                })
                .collect();
            Ok(VERSIONS
                .iter()
                .filter(|v| asked.is_empty() || asked.contains(v))
                .map(|(a, b)| version(*a, *b))
                .collect())
        }
        op::QUERY => {
            let mut out: Vec<Item> = [
                op::CREATE,
                op::CREATE_KEY_PAIR,
                op::REGISTER,
                op::LOCATE,
                op::GET,
                op::GET_ATTRIBUTES,
                op::ACTIVATE,
                op::REVOKE,
                op::DESTROY,
                op::QUERY,
                op::DISCOVER_VERSIONS,
                op::ENCRYPT,
                op::DECRYPT,
                op::SIGN,
                op::SIGNATURE_VERIFY,
                op::MAC,
                op::GET_ATTRIBUTE_LIST,
                op::ADD_ATTRIBUTE,
                op::MODIFY_ATTRIBUTE,
                op::DELETE_ATTRIBUTE,
            ]
            .iter()
            .map(|o| enumeration(t::OPERATION, *o))
            .collect();
            out.extend(
                [
                    object::SYMMETRIC_KEY,
                    object::PUBLIC_KEY,
                    object::PRIVATE_KEY,
                    object::SECRET_DATA,
                ]
                .iter()
                .map(|o| enumeration(t::OBJECT_TYPE, *o)),
            );
            out.push(text(t::VENDOR_IDENTIFICATION, "kms"));
            out.push(Item::structure(
                t::SERVER_INFORMATION,
                vec![text(
                    t::VENDOR_IDENTIFICATION,
                    concat!("kms ", env!("CARGO_PKG_VERSION")),
                )],
            ));
            Ok(out)
        }
        op::CREATE => create(engine, caller, p),
        op::CREATE_KEY_PAIR => create_key_pair(engine, caller, p),
        op::REGISTER => register(engine, caller, p),
        op::LOCATE => locate(engine, caller, p),
        op::GET => {
            let id = uid(p)?;
            let (kms_id, public) = split_uid(&id);
            let key = engine.kmip_describe(caller, kms_id, "kmip.get")?;
            if key.key_type.family() == KeyFamily::Secret && !public {
                let secret = engine.reveal_secret(caller, &key.name)?;
                let data_type = key
                    .labels
                    .get(SECRET_DATA_TYPE_LABEL)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(t::SECRET_PASSWORD);
                return Ok(vec![
                    enumeration(t::OBJECT_TYPE, object::SECRET_DATA),
                    text(t::UNIQUE_IDENTIFIER, &id),
                    Item::structure(
                        t::SECRET_DATA,
                        vec![
                            enumeration(t::SECRET_DATA_TYPE, data_type),
                            Item::structure(
                                t::KEY_BLOCK,
                                vec![
                                    enumeration(t::KEY_FORMAT_TYPE, t::FORMAT_OPAQUE),
                                    Item::structure(
                                        t::KEY_VALUE,
                                        vec![bytes(t::KEY_MATERIAL, &secret.value)],
                                    ),
                                ],
                            ),
                        ],
                    ),
                ]);
            }
            let spki = key.current_version().and_then(|v| v.public_key.clone());
            let Some(spki) = spki.filter(|_| public) else {
                return Err(Failure::new(
                    result::PERMISSION_DENIED,
                    format!(
                        "key '{}' is {}: its material never leaves the token",
                        key.name, key.key_type
                    ),
                ));
            };
            Ok(vec![
                enumeration(t::OBJECT_TYPE, object::PUBLIC_KEY),
                text(t::UNIQUE_IDENTIFIER, &id),
                Item::structure(
                    t::PUBLIC_KEY,
                    vec![Item::structure(
                        t::KEY_BLOCK,
                        vec![
                            enumeration(t::KEY_FORMAT_TYPE, t::FORMAT_X509),
                            Item::structure(t::KEY_VALUE, vec![bytes(t::KEY_MATERIAL, &spki)]),
                            enumeration(t::CRYPTOGRAPHIC_ALGORITHM, algorithm(key.key_type)),
                            int(t::CRYPTOGRAPHIC_LENGTH, length(key.key_type)),
                        ],
                    )],
                ),
            ])
        }
        op::GET_ATTRIBUTES => {
            let id = uid(p)?;
            let (kms_id, public) = split_uid(&id);
            let key = engine.kmip_describe(caller, kms_id, "kmip.get-attributes")?;
            let wanted: Vec<&str> = p
                .children(t::ATTRIBUTE_NAME)
                .filter_map(Item::as_text)
                .collect();
            let mut out = vec![text(t::UNIQUE_IDENTIFIER, &id)];
            out.extend(
                attributes(&key, public)
                    .into_iter()
                    .filter(|(n, _)| wanted.is_empty() || wanted.contains(n))
                    .map(|(n, v)| {
                        Item::structure(
                            t::ATTRIBUTE,
                            vec![text(t::ATTRIBUTE_NAME, n), Item::new(t::ATTRIBUTE_VALUE, v)],
                        )
                    }),
            );
            out.extend(
                custom_attributes(&key)
                    .into_iter()
                    .filter(|(n, _)| wanted.is_empty() || wanted.contains(&n.as_str()))
                    .map(|(n, v)| {
                        Item::structure(
                            t::ATTRIBUTE,
                            vec![text(t::ATTRIBUTE_NAME, &n), text(t::ATTRIBUTE_VALUE, &v)],
                        )
                    }),
            );
            Ok(out)
        }
        op::ACTIVATE => {
            let id = uid(p)?;
            let key = engine.kmip_describe(caller, split_uid(&id).0, "kmip.activate")?;
            if key.current_version().is_none() {
                return Err(Failure::new(
                    result::ILLEGAL_OPERATION,
                    format!("key '{}' has no version that can be active", key.name),
                ));
            }
            Ok(vec![text(t::UNIQUE_IDENTIFIER, &id)])
        }
        op::REVOKE => {
            let id = uid(p)?;
            let code = p
                .child(t::REVOCATION_REASON)
                .and_then(|r| r.child(t::REVOCATION_REASON_CODE))
                .and_then(Item::as_enum)
                .ok_or_else(|| Failure::new(result::MISSING_DATA, "no Revocation Reason"))?;
            let message = p
                .child(t::REVOCATION_REASON)
                .and_then(|r| r.child(t::REVOCATION_MESSAGE))
                .and_then(Item::as_text);
            if code != t::REVOKE_KEY_COMPROMISE {
                let why = format!(
                    "revoked over KMIP, reason code {code}{}",
                    message.map(|m| format!(": {m}")).unwrap_or_default()
                );
                engine.kmip_revoke(caller, split_uid(&id).0, &why)?;
                return Ok(vec![text(t::UNIQUE_IDENTIFIER, &id)]);
            }
            let message = message.unwrap_or("declared compromised over KMIP");
            let name = engine.kmip_name(caller, split_uid(&id).0)?;
            engine.compromise_key(caller, &name, None, message)?;
            Ok(vec![text(t::UNIQUE_IDENTIFIER, &id)])
        }
        op::DESTROY => {
            let id = uid(p)?;
            engine.kmip_destroy(caller, split_uid(&id).0)?;
            Ok(vec![text(t::UNIQUE_IDENTIFIER, &id)])
        }
        op::GET_ATTRIBUTE_LIST => {
            let id = uid(p)?;
            let (kms_id, public) = split_uid(&id);
            let key = engine.kmip_describe(caller, kms_id, "kmip.get-attribute-list")?;
            let mut out = vec![text(t::UNIQUE_IDENTIFIER, &id)];
            out.extend(
                attributes(&key, public)
                    .into_iter()
                    .map(|(n, _)| text(t::ATTRIBUTE_NAME, n)),
            );
            Ok(out)
        }
        op::ADD_ATTRIBUTE | op::MODIFY_ATTRIBUTE => {
            let id = uid(p)?;
            let a = p
                .child(t::ATTRIBUTE)
                .ok_or_else(|| Failure::new(result::MISSING_DATA, "no Attribute"))?;
            let name = a
                .child(t::ATTRIBUTE_NAME)
                .and_then(Item::as_text)
                .ok_or_else(|| Failure::field("no Attribute Name"))?;
            // A standard attribute is refused by the engine (audited) whatever its value.
            let value_item = a.child(t::ATTRIBUTE_VALUE);
            let value = match value_item.and_then(Item::as_text) {
                Some(v) => v,
                None if name == "Name" => value_item
                    .and_then(|v| v.child(t::NAME_VALUE))
                    .and_then(Item::as_text)
                    .ok_or_else(|| Failure::field("a Name's value is a Name Value text"))?,
                None if !name.starts_with("x-") => "",
                None => {
                    return Err(Failure::field(
                        "a custom attribute's value is a Text String",
                    ))
                }
            };
            engine.kmip_set_attribute(
                caller,
                split_uid(&id).0,
                name,
                Some(value),
                Some(operation == op::MODIFY_ATTRIBUTE),
            )?;
            Ok(vec![text(t::UNIQUE_IDENTIFIER, &id), a.clone()])
        }
        op::DELETE_ATTRIBUTE => {
            let id = uid(p)?;
            let name = p
                .child(t::ATTRIBUTE_NAME)
                .and_then(Item::as_text)
                .ok_or_else(|| Failure::new(result::MISSING_DATA, "no Attribute Name"))?;
            let old = engine.kmip_set_attribute(caller, split_uid(&id).0, name, None, None)?;
            let old = old.unwrap_or_default();
            let value = if name == "Name" {
                name_value(&old)
            } else {
                Value::Text(old)
            };
            Ok(vec![
                text(t::UNIQUE_IDENTIFIER, &id),
                Item::structure(
                    t::ATTRIBUTE,
                    vec![
                        text(t::ATTRIBUTE_NAME, name),
                        Item::new(t::ATTRIBUTE_VALUE, value),
                    ],
                ),
            ])
        }
        op::MAC => {
            let id = uid(p)?;
            let data = p
                .child(t::DATA)
                .and_then(Item::as_bytes)
                .ok_or_else(|| Failure::field("no Data"))?;
            let name = engine.kmip_name(caller, split_uid(&id).0)?;
            let m = engine.mac(caller, &name, data)?;
            Ok(vec![
                text(t::UNIQUE_IDENTIFIER, &id),
                bytes(t::MAC_DATA, &m.tag),
            ])
        }
        op::ENCRYPT => {
            let id = uid(p)?;
            gcm_only(p)?;
            let data = p
                .child(t::DATA)
                .and_then(Item::as_bytes)
                .ok_or_else(|| Failure::field("no Data"))?;
            let iv = p.child(t::IV_COUNTER_NONCE).and_then(Item::as_bytes);
            let aad = p
                .child(t::AE_ADDITIONAL_DATA)
                .and_then(Item::as_bytes)
                .unwrap_or_default();
            let sealed = engine.kmip_encrypt(caller, &id, data, iv, aad)?;
            let mut out = vec![text(t::UNIQUE_IDENTIFIER, &id)];
            if separate_tag {
                out.push(bytes(t::DATA, &sealed.ciphertext));
                out.push(bytes(t::IV_COUNTER_NONCE, &sealed.iv));
                out.push(bytes(t::AE_TAG, &sealed.tag));
            } else {
                let mut joined = sealed.ciphertext.clone();
                joined.extend_from_slice(&sealed.tag);
                out.push(bytes(t::DATA, &joined));
                out.push(bytes(t::IV_COUNTER_NONCE, &sealed.iv));
            }
            Ok(out)
        }
        op::DECRYPT => {
            let id = uid(p)?;
            gcm_only(p)?;
            let data = p
                .child(t::DATA)
                .and_then(Item::as_bytes)
                .ok_or_else(|| Failure::field("no Data"))?;
            let iv = p
                .child(t::IV_COUNTER_NONCE)
                .and_then(Item::as_bytes)
                .ok_or_else(|| Failure::field("no IV/Counter/Nonce"))?;
            let (data, tag) =
                match p.child(t::AE_TAG).and_then(Item::as_bytes) {
                    Some(tag) => (data, tag),
                    None if data.len() >= 16 => data.split_at(data.len() - 16),
                    None => return Err(Failure::field(
                        "no Authenticated Encryption Tag, and Data is too short to end with one",
                    )),
                };
            let aad = p
                .child(t::AE_ADDITIONAL_DATA)
                .and_then(Item::as_bytes)
                .unwrap_or_default();
            let plaintext = engine.kmip_decrypt(caller, &id, data, iv, tag, aad)?;
            Ok(vec![
                text(t::UNIQUE_IDENTIFIER, &id),
                bytes(t::DATA, &plaintext),
            ])
        }
        op::SIGN => {
            let id = uid(p)?;
            let data = p
                .child(t::DATA)
                .and_then(Item::as_bytes)
                .ok_or_else(|| Failure::field("no Data"))?;
            let name = engine.kmip_name(caller, split_uid(&id).0)?;
            let s = engine.sign_data(caller, &name, ToSign::Message(data))?;
            Ok(vec![
                text(t::UNIQUE_IDENTIFIER, &id),
                bytes(t::SIGNATURE_DATA, &s.signature),
            ])
        }
        op::SIGNATURE_VERIFY => {
            let id = uid(p)?;
            let data = p
                .child(t::DATA)
                .and_then(Item::as_bytes)
                .ok_or_else(|| Failure::field("no Data"))?;
            let sig = p
                .child(t::SIGNATURE_DATA)
                .and_then(Item::as_bytes)
                .ok_or_else(|| Failure::field("no Signature Data"))?;
            let name = engine.kmip_name(caller, split_uid(&id).0)?;
            let v = engine.verify_data(caller, &name, ToSign::Message(data), sig)?;
            Ok(vec![
                text(t::UNIQUE_IDENTIFIER, &id),
                enumeration(
                    t::VALIDITY_INDICATOR,
                    if v.valid { t::VALID } else { t::INVALID },
                ),
            ])
        }
        other => Err(Failure::new(
            result::OPERATION_NOT_SUPPORTED,
            format!("operation {other:#x} is not served by kms (Query lists what is)"),
        )),
    }
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

fn create(engine: &Engine, caller: &Caller, p: &Item) -> Result<Vec<Item>, Failure> {
    if p.child(t::OBJECT_TYPE).and_then(Item::as_enum) != Some(object::SYMMETRIC_KEY) {
        return Err(Failure::new(
            result::OPERATION_NOT_SUPPORTED,
            "Create makes symmetric keys (Object Type Symmetric Key)",
        ));
    }
    let attrs = template(p);
    let get = |n: &str| find(&attrs, n);
    let algorithm = get("Cryptographic Algorithm").and_then(Item::as_enum);
    let length = get("Cryptographic Length").and_then(Item::as_int);
    let key_type = match (algorithm, length) {
        (Some(alg::AES) | None, Some(256) | None) => KeyType::Aes256,
        (Some(alg::AES) | None, Some(128)) => KeyType::Aes128,
        (a, l) => {
            return Err(Failure::new(
                result::OPERATION_NOT_SUPPORTED,
                format!("Create makes AES-128 and AES-256 keys, not algorithm {a:?} length {l:?}"),
            ))
        }
    };
    let mask = get("Cryptographic Usage Mask")
        .and_then(Item::as_int)
        .unwrap_or(usage::ENCRYPT | usage::DECRYPT);
    let ops = usage_of_mask(Some(mask), key_type);
    if ops.is_empty() {
        return Err(Failure::field(
            "the Cryptographic Usage Mask allows nothing an AES key does (Encrypt, Decrypt, Wrap Key, Unwrap Key)",
        ));
    }
    let name = name_of(&attrs);
    let key = engine.kmip_create(caller, name, key_type, OperationSet(ops), &a8(&attrs)?)?;
    Ok(vec![
        enumeration(t::OBJECT_TYPE, object::SYMMETRIC_KEY),
        text(t::UNIQUE_IDENTIFIER, &key.id),
    ])
}

/// Where a registered Secret Data's type (Password, Seed) is kept, to be given back by Get.
const SECRET_DATA_TYPE_LABEL: &str = "kmip-secret-data-type";

/// Register: a symmetric key in Raw format (AES-128/256, HMAC-SHA256/384) or Secret Data, put on
/// the token as a sensitive object.
fn register(engine: &Engine, caller: &Caller, p: &Item) -> Result<Vec<Item>, Failure> {
    match p.child(t::OBJECT_TYPE).and_then(Item::as_enum) {
        Some(object::SYMMETRIC_KEY) => {}
        Some(object::SECRET_DATA) => return register_secret_data(engine, caller, p),
        _ => {
            return Err(Failure::new(
                result::OPERATION_NOT_SUPPORTED,
                "Register takes Symmetric Keys and Secret Data (key pairs are made on the token: CreateKeyPair, or kms key import)",
            ))
        }
    }
    let block = p
        .child(t::SYMMETRIC_KEY)
        .and_then(|k| k.child(t::KEY_BLOCK))
        .ok_or_else(|| Failure::new(result::MISSING_DATA, "no Symmetric Key / Key Block"))?;
    if block.child(t::KEY_FORMAT_TYPE).and_then(Item::as_enum) != Some(t::FORMAT_RAW) {
        return Err(Failure::new(
            result::OPERATION_NOT_SUPPORTED,
            "Register takes symmetric keys in Raw format",
        ));
    }
    let material = key_material(block)?;
    let algorithm = block
        .child(t::CRYPTOGRAPHIC_ALGORITHM)
        .and_then(Item::as_enum);
    let key_type = match (algorithm, material.len()) {
        (Some(alg::AES), 32) => KeyType::Aes256,
        (Some(alg::AES), 16) => KeyType::Aes128,
        (Some(alg::HMAC_SHA256), 32) => KeyType::HmacSha256,
        (Some(alg::HMAC_SHA384), 48) => KeyType::HmacSha384,
        (a, n) => {
            return Err(Failure::new(
                result::OPERATION_NOT_SUPPORTED,
                format!("Register takes AES-128/256 and HMAC-SHA256/384 keys, not algorithm {a:?} of {n} bytes"),
            ))
        }
    };
    let attrs = template(p);
    let get = |n: &str| find(&attrs, n);
    let mask = get("Cryptographic Usage Mask").and_then(Item::as_int);
    let ops = usage_of_mask(mask, key_type);
    let name = name_of(&attrs);
    let key = engine.kmip_register(
        caller,
        name,
        key_type,
        OperationSet(ops),
        crate::engine::PlainKey(zeroize::Zeroizing::new(material.to_vec())),
        &a8(&attrs)?,
    )?;
    Ok(vec![text(t::UNIQUE_IDENTIFIER, &key.id)])
}

/// Register of Secret Data (a password or seed, Opaque or Raw): a `secret-data` key whose value
/// its grantees read back with Get. The usage mask is not kms's to honour: what a secret allows
/// is `reveal`, to its grantees.
fn register_secret_data(engine: &Engine, caller: &Caller, p: &Item) -> Result<Vec<Item>, Failure> {
    let secret = p
        .child(t::SECRET_DATA)
        .ok_or_else(|| Failure::new(result::MISSING_DATA, "no Secret Data"))?;
    let data_type = secret
        .child(t::SECRET_DATA_TYPE)
        .and_then(Item::as_enum)
        .unwrap_or(t::SECRET_PASSWORD);
    let block = secret
        .child(t::KEY_BLOCK)
        .ok_or_else(|| Failure::new(result::MISSING_DATA, "no Secret Data / Key Block"))?;
    match block.child(t::KEY_FORMAT_TYPE).and_then(Item::as_enum) {
        Some(t::FORMAT_OPAQUE | t::FORMAT_RAW) => {}
        _ => {
            return Err(Failure::new(
                result::OPERATION_NOT_SUPPORTED,
                "Secret Data is registered in Opaque or Raw format",
            ))
        }
    }
    let material = key_material(block)?;
    let allowed = KeyType::SecretData.registered_len();
    if !allowed.contains(&material.len()) {
        return Err(Failure::field(format!(
            "Secret Data is {} to {} bytes, not {}",
            allowed.start(),
            allowed.end(),
            material.len()
        )));
    }
    let attrs = template(p);
    let key = engine.kmip_register(
        caller,
        name_of(&attrs),
        KeyType::SecretData,
        OperationSet([Operation::Reveal].into_iter().collect()),
        crate::engine::PlainKey(zeroize::Zeroizing::new(material.to_vec())),
        &[
            a8(&attrs)?,
            vec![(SECRET_DATA_TYPE_LABEL, data_type.to_string())],
        ]
        .concat(),
    )?;
    Ok(vec![text(t::UNIQUE_IDENTIFIER, &key.id)])
}

/// The A8 fields a client may set in a template: `x-classification` (text).
fn a8<'a>(attrs: &[(&'a str, &Item)]) -> Result<Vec<(&'a str, String)>, Failure> {
    let key = crate::engine::CLASSIFICATION_ATTRIBUTE;
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

/// CreateKeyPair: RSA-3072 or EC P-384 (Cryptographic Algorithm RSA or EC/ECDSA, Length 3072
/// or 384), usage sign,verify. The private key's identifier is the kms key ID; the public key's
/// is the same ID with `/public`.
fn create_key_pair(engine: &Engine, caller: &Caller, p: &Item) -> Result<Vec<Item>, Failure> {
    let attrs = template(p);
    let get = |n: &str| find(&attrs, n);
    let algorithm = get("Cryptographic Algorithm").and_then(Item::as_enum);
    let length = get("Cryptographic Length").and_then(Item::as_int);
    let key_type = match (algorithm, length) {
        (Some(alg::RSA), Some(3072) | None) => KeyType::Rsa3072,
        (Some(alg::RSA), Some(2048)) => KeyType::Rsa2048,
        (Some(alg::RSA), Some(4096)) => KeyType::Rsa4096,
        (Some(alg::ECDSA | alg::EC), Some(384) | None) => KeyType::EcP384,
        (Some(alg::ECDSA | alg::EC), Some(256)) => KeyType::EcP256,
        (a, l) => {
            return Err(Failure::new(
                result::OPERATION_NOT_SUPPORTED,
                format!("CreateKeyPair makes RSA (2048/3072/4096) and EC (P-256/P-384) key pairs, not algorithm {a:?} length {l:?}"),
            ))
        }
    };
    let name = name_of(&attrs);
    let usage = OperationSet([Operation::Sign, Operation::Verify].into_iter().collect());
    let key = engine.kmip_create(caller, name, key_type, usage, &a8(&attrs)?)?;
    Ok(vec![
        text(t::PRIVATE_KEY_UNIQUE_IDENTIFIER, &key.id),
        text(
            t::PUBLIC_KEY_UNIQUE_IDENTIFIER,
            &format!("{}{PUBLIC_SUFFIX}", key.id),
        ),
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

fn locate(engine: &Engine, caller: &Caller, p: &Item) -> Result<Vec<Item>, Failure> {
    let attrs = template(p);
    let name = name_of(&attrs);
    let name = name.as_deref();
    let families: Vec<KeyFamily> = match attrs
        .iter()
        .find(|(n, _)| *n == "Object Type")
        .and_then(|(_, v)| v.as_enum())
    {
        None => Vec::new(),
        Some(object::SYMMETRIC_KEY) => vec![KeyFamily::Aes, KeyFamily::Hmac, KeyFamily::Des3],
        Some(object::SECRET_DATA) => vec![KeyFamily::Secret],
        Some(object::PUBLIC_KEY | object::PRIVATE_KEY) => vec![
            KeyFamily::Rsa,
            KeyFamily::Ed25519,
            KeyFamily::Ec(crate::model::Curve::P256),
            KeyFamily::Ec(crate::model::Curve::P384),
            KeyFamily::Ec(crate::model::Curve::P521),
        ],
        Some(_) => return Ok(Vec::new()),
    };
    let max = p
        .child(t::MAXIMUM_ITEMS)
        .and_then(Item::as_int)
        .unwrap_or(i64::MAX);
    let keys = engine.kmip_locate(caller, name, &families)?;
    Ok(keys
        .iter()
        .take(usize::try_from(max.max(0)).unwrap_or(usize::MAX))
        .map(|k| text(t::UNIQUE_IDENTIFIER, &k.id))
        .collect())
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
        ("Name", name_value(crate::engine::kmip_name(key))),
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
