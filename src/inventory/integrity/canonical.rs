//! The canonical encoding of a row that a tag signs, and the row's identity as errors name it.

use super::Table;
use crate::inventory::sql::Value;

fn json_value(v: &Value) -> serde_json::Value {
    match v {
        Value::Null => serde_json::Value::Null,
        Value::Integer(i) => serde_json::Value::from(*i),
        Value::Real(r) => serde_json::Value::from(*r),
        Value::Text(t) => serde_json::Value::from(t.as_str()),
        Value::Blob(b) => serde_json::json!({ "hex": hex::encode(b) }),
    }
}

/// The canonical encoding a tag signs: a format name, the table, then each column's name, the
/// value's SQLite type and its length-prefixed bytes, so no two rows or tables share an
/// encoding (written directly: it is computed on every checked read). A row written since issue
/// 23 also carries `row_seq`, the number of the change that wrote it (format `kms-row/3`); a
/// row tagged before has none and keeps its `kms-row/2` tag until its next change.
pub(crate) fn canonical(table: Table, values: &[Value], row_seq: Option<i64>) -> Vec<u8> {
    fn field(out: &mut Vec<u8>, bytes: &[u8]) {
        out.extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_be_bytes());
        out.extend_from_slice(bytes);
    }
    let mut out = Vec::with_capacity(256);
    field(
        &mut out,
        if row_seq.is_some() {
            b"kms-row/3"
        } else {
            b"kms-row/2"
        },
    );
    field(&mut out, table.name().as_bytes());
    if let Some(seq) = row_seq {
        field(&mut out, b"row_seq");
        field(&mut out, &seq.to_be_bytes());
    }
    for (col, v) in table.columns().iter().zip(values) {
        field(&mut out, col.as_bytes());
        match v {
            Value::Null => out.push(0),
            Value::Integer(i) => {
                out.push(1);
                field(&mut out, &i.to_be_bytes());
            }
            Value::Real(r) => {
                out.push(2);
                field(&mut out, &r.to_be_bytes());
            }
            Value::Text(t) => {
                out.push(3);
                field(&mut out, t.as_bytes());
            }
            Value::Blob(b) => {
                out.push(4);
                field(&mut out, b);
            }
        }
    }
    out
}

pub(super) fn identity(table: Table, values: &[Value]) -> String {
    let cols = table.columns();
    values
        .iter()
        .zip(cols)
        .take(table.identity_len())
        .map(|(v, c)| match v {
            Value::Text(t) => format!("{c}={t}"),
            Value::Integer(i) => format!("{c}={i}"),
            other => format!("{c}={}", json_value(other)),
        })
        .collect::<Vec<_>>()
        .join(" ")
}
