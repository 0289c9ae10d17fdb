//! Helpers for the JSON API's bodies and replies (base64 fields, expected statuses).

use base64::Engine as _;
use kms::client::Reply;
use serde_json::Value;

use crate::Res;

/// Standard base64, as the API's byte fields carry it.
pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The bytes of a base64 JSON string field.
pub fn unb64(v: &Value) -> Res<Vec<u8>> {
    let s = v.as_str().ok_or_else(|| format!("not a string: {v}"))?;
    Ok(base64::engine::general_purpose::STANDARD.decode(s)?)
}

/// A reply's body as text (lossy).
pub fn body_text(r: &Reply) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

/// Fail unless the reply has `status` (and, for errors, the problem `code`); its JSON body.
pub fn expect(r: &Reply, status: u16, code: Option<&str>, what: &str) -> Res<Value> {
    if r.status != status {
        return Err(format!(
            "{what}: expected {status}{}, got {}: {}",
            code.map(|c| format!(" {c}")).unwrap_or_default(),
            r.status,
            body_text(r)
        )
        .into());
    }
    let v = r.json()?;
    if let Some(c) = code {
        if v["code"] != c {
            return Err(format!("{what}: expected code {c:?}, got {v}").into());
        }
    }
    Ok(v)
}
