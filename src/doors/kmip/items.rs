//! Building KMIP response items: typed fields, the response message and its header, the
//! answer to an unreadable message, and a response summed up in words for the audit record.

use time::OffsetDateTime;

use super::tags::{self as t, op, result};
use super::ttlv::{Item, Value};

pub(super) fn int(tag: u32, v: i32) -> Item {
    Item::new(tag, Value::Integer(v))
}
pub(super) fn enumeration(tag: u32, v: u32) -> Item {
    Item::new(tag, Value::Enumeration(v))
}
/// KMIP text as clients decode it: printable ASCII (PyKMIP refuses anything else).
pub(super) fn text(tag: u32, v: &str) -> Item {
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
pub(super) fn bytes(tag: u32, v: &[u8]) -> Item {
    Item::new(tag, Value::Bytes(v.to_vec().into()))
}
pub(super) fn version(major: i32, minor: i32) -> Item {
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

pub(super) fn operation_name(o: u32) -> String {
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

pub(super) fn reason_name(r: u32) -> &'static str {
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

pub(super) fn response(v: (i32, i32), items: Vec<Item>) -> Item {
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
