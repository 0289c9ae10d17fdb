//! One audit record as one RFC 5424 syslog message, and its RFC 6587 octet-counting frame.
//!
//! ```text
//! <PRI>1 TIMESTAMP HOSTNAME APP-NAME - MSGID [kms@32473 seq="…" actor="…" … prev="…"] MSG
//! ```
//!
//! - PRI: facility authpriv (10); severity notice (5) for `ok`, warning (4) for `denied`/`error`.
//! - TIMESTAMP: the record's time in UTC with microseconds (RFC 5424 allows at most 6 digits).
//! - HOSTNAME: the host that ships; the host the operation came from is the `host` parameter.
//! - PROCID: `-` (the record was written by whichever `kms` process ran the operation).
//! - MSGID: the action when it is printable US-ASCII of at most 32 characters, else `-`.
//! - Structured data `kms@32473` carries every field; absent fields are omitted. 32473 is the
//!   private enterprise number RFC 5612 reserves for documentation: an organisation deploying
//!   this replaces nothing in the format, but may map the SD-ID in its log server.
//! - MSG: the detail, followed by ` diff=` and the metadata diff as JSON when there is one.
//!   ASCII text is sent as is; anything else as UTF-8 with the BOM, as RFC 5424 asks.

use std::fmt::Write as _;

use time::macros::format_description;
use time::UtcOffset;

use crate::inventory::{AuditRow, Outcome};

/// The structured-data ID of every record.
pub const SD_ID: &str = "kms@32473";

/// Facility authpriv (security/authorization messages).
const FACILITY: u8 = 10;

/// `<PRI>` for an outcome.
pub fn priority(outcome: Outcome) -> u8 {
    let severity = match outcome {
        Outcome::Ok => 5,
        Outcome::Denied | Outcome::Error => 4,
    };
    FACILITY * 8 + severity
}

/// The RFC 5424 message for one audit row.
pub fn format(row: &AuditRow, app_name: &str, hostname: &str) -> String {
    let e = &row.entry;
    let mut m = String::with_capacity(512);
    let at = e.at.to_offset(UtcOffset::UTC);
    let stamp = at
        .format(format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
        ))
        .unwrap_or_else(|_| "-".to_owned());
    let _ = write!(
        m,
        "<{}>1 {stamp} {} {} - {} [{SD_ID}",
        priority(e.outcome),
        header_field(hostname, 255),
        header_field(app_name, 48),
        header_field(&e.action, 32),
    );
    let version = e.key_version.map(|v| v.to_string());
    let params: [(&str, Option<&str>); 15] = [
        ("seq", Some(&row.seq.to_string())),
        ("actor", Some(&e.actor)),
        ("role", e.role.as_deref()),
        ("host", Some(&e.host)),
        ("os_user", e.os_user.as_deref()),
        ("cert", e.cert_fingerprint.as_deref()),
        ("action", Some(&e.action)),
        ("key", e.key_name.as_deref()),
        ("version", version.as_deref()),
        ("reason", e.reason.as_deref()),
        ("outcome", Some(e.outcome.as_str())),
        ("code", e.code.as_deref()),
        ("hash", row.hash.as_deref()),
        ("prev", row.prev_hash.as_deref()),
        ("node", e.node.as_deref()),
    ];
    for (name, value) in params {
        if let Some(v) = value {
            let _ = write!(m, " {name}=\"{}\"", escape_param(v));
        }
    }
    m.push(']');
    let text = match (&e.detail, &e.diff) {
        (Some(d), Some(diff)) => Some(format!("{d} diff={diff}")),
        (Some(d), None) => Some(d.clone()),
        (None, Some(diff)) => Some(format!("diff={diff}")),
        (None, None) => None,
    };
    if let Some(text) = text.filter(|t| !t.is_empty()) {
        m.push(' ');
        if !text.is_ascii() {
            m.push('\u{FEFF}');
        }
        m.push_str(&text);
    }
    m
}

/// RFC 6587 octet-counting: `MSG-LEN SP SYSLOG-MSG`, the length in octets.
pub fn frame(msg: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len() + 8);
    out.extend_from_slice(msg.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(msg.as_bytes());
    out
}

/// A header field (HOSTNAME, APP-NAME, MSGID): 1 to `max` PRINTUSASCII (33..=126) characters,
/// or the NILVALUE `-` when the value cannot be one.
fn header_field(s: &str, max: usize) -> &str {
    let ok = !s.is_empty() && s.len() <= max && s.bytes().all(|b| (33..=126).contains(&b));
    if ok {
        s
    } else {
        "-"
    }
}

/// PARAM-VALUE escaping (RFC 5424 §6.3.3): `"`, `\` and `]` are preceded by a backslash.
pub fn escape_param(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    for c in s.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::AuditEntry;
    use time::macros::datetime;

    fn row() -> AuditRow {
        AuditRow {
            seq: 42,
            entry: AuditEntry {
                tally: None,
                at: datetime!(2025-03-04 05:06:07.123456789 +02:00),
                actor: "alice".into(),
                host: "console".into(),
                action: "key.create".into(),
                key_name: Some("payments-dek".into()),
                key_version: Some(1),
                reason: Some("CHG-1 \"quoted\" [x] back\\slash".into()),
                outcome: Outcome::Ok,
                detail: Some("created".into()),
                role: Some("security-officer".into()),
                os_user: Some("root".into()),
                cert_fingerprint: None,
                code: None,
                diff: None,
                node: None,
            },
            prev_hash: Some("00ab".into()),
            hash: Some("cd01".into()),
        }
    }

    #[test]
    fn escapes_quote_backslash_and_bracket_only() {
        assert_eq!(escape_param(r#"a"b\c]d[e=f"#), r#"a\"b\\c\]d[e=f"#);
        assert_eq!(escape_param("plain ünïcode"), "plain ünïcode");
        assert_eq!(escape_param(""), "");
    }

    #[test]
    fn formats_every_field_in_rfc5424() {
        let m = format(&row(), "kms", "kms-host");
        assert_eq!(
            m,
            "<85>1 2025-03-04T03:06:07.123456Z kms-host kms - key.create [kms@32473 \
             seq=\"42\" actor=\"alice\" role=\"security-officer\" host=\"console\" \
             os_user=\"root\" action=\"key.create\" key=\"payments-dek\" version=\"1\" \
             reason=\"CHG-1 \\\"quoted\\\" [x\\] back\\\\slash\" outcome=\"ok\" \
             hash=\"cd01\" prev=\"00ab\"] created"
        );
    }

    #[test]
    fn refusals_are_warnings_and_carry_their_code() {
        let mut r = row();
        r.entry.outcome = Outcome::Denied;
        r.entry.code = Some("no-grant".into());
        r.entry.cert_fingerprint = Some("ab:cd".into());
        let m = format(&r, "kms", "h");
        assert!(m.starts_with("<84>1 "), "{m}");
        assert!(m.contains(" outcome=\"denied\" code=\"no-grant\" "), "{m}");
        assert!(m.contains(" cert=\"ab:cd\" "), "{m}");
        r.entry.outcome = Outcome::Error;
        assert!(format(&r, "kms", "h").starts_with("<84>1 "));
    }

    #[test]
    fn header_fields_fall_back_to_nilvalue() {
        let mut r = row();
        r.entry.action = "x".repeat(33);
        let m = format(&r, "app name", "");
        assert!(
            m.starts_with("<85>1 2025-03-04T03:06:07.123456Z - - - - [kms@32473 "),
            "{m}"
        );
        // The full action is still in the structured data.
        assert!(
            m.contains(&format!(" action=\"{}\"", "x".repeat(33))),
            "{m}"
        );
    }

    #[test]
    fn message_is_plain_ascii_or_utf8_with_bom_and_carries_the_diff() {
        let mut r = row();
        r.entry.detail = Some("owner changed".into());
        r.entry.diff = Some(serde_json::json!({"before": {"owner": "a"}, "after": {"owner": "b"}}));
        let m = format(&r, "kms", "h");
        assert!(
            m.ends_with(
                "] owner changed diff={\"after\":{\"owner\":\"b\"},\"before\":{\"owner\":\"a\"}}"
            ),
            "{m}"
        );
        r.entry.detail = Some("propriétaire changé".into());
        r.entry.diff = None;
        assert!(format(&r, "kms", "h").ends_with("] \u{FEFF}propriétaire changé"));
        r.entry.detail = None;
        assert!(format(&r, "kms", "h").ends_with("prev=\"00ab\"]"));
    }

    #[test]
    fn absent_fields_are_omitted() {
        let mut r = row();
        r.entry.key_name = None;
        r.entry.key_version = None;
        r.entry.reason = None;
        r.entry.role = None;
        r.entry.os_user = None;
        r.prev_hash = None;
        r.hash = None;
        let m = format(&r, "kms", "h");
        for absent in [
            "key=", "version=", "reason=", "role=", "os_user=", "cert=", "code=", "hash=", "prev=",
        ] {
            assert!(!m.contains(&format!(" {absent}")), "{absent} in {m}");
        }
        assert!(m.contains("[kms@32473 seq=\"42\" actor=\"alice\" host=\"console\" action=\"key.create\" outcome=\"ok\"]"), "{m}");
    }

    #[test]
    fn frames_count_octets_not_characters() {
        assert_eq!(frame("<85>1 - - - - - -"), b"17 <85>1 - - - - - -".to_vec());
        let m = "é\u{FEFF}";
        let f = frame(m);
        assert_eq!(m.len(), 5);
        assert!(f.starts_with(b"5 "));
        assert_eq!(&f[2..], m.as_bytes());
        assert_eq!(frame(""), b"0 ".to_vec());
    }
}
