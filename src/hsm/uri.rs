//! RFC 7512 PKCS#11 URIs, e.g. `pkcs11:token=officer-card-1;object=approval`, as used to say where
//! a person's approval key lives. Only the attributes kms needs are read; a PIN in the URI
//! (`pin-value`) is refused — PINs come from a PIN source, never from text that may be logged.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pkcs11Uri {
    pub token: Option<String>,
    pub serial: Option<String>,
    pub object: Option<String>,
    pub id: Option<Vec<u8>>,
    pub module_path: Option<PathBuf>,
    text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid PKCS#11 URI '{uri}': {why} (expected e.g. pkcs11:token=alice-card;object=approval)"
)]
pub struct UriError {
    uri: String,
    why: String,
}

impl fmt::Display for Pkcs11Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for Pkcs11Uri {
    type Err = UriError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |why: &str| UriError {
            uri: s.split("pin-value").next().unwrap_or(s).to_owned(),
            why: why.to_owned(),
        };
        let rest = s
            .strip_prefix("pkcs11:")
            .ok_or_else(|| err("it must start with pkcs11:"))?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut uri = Pkcs11Uri {
            token: None,
            serial: None,
            object: None,
            id: None,
            module_path: None,
            text: s.to_owned(),
        };
        for attr in path.split(';').filter(|a| !a.is_empty()) {
            let (k, v) = attr
                .split_once('=')
                .ok_or_else(|| err("attribute without '='"))?;
            let v = decode(v).ok_or_else(|| err("bad percent-encoding"))?;
            match k {
                "token" => uri.token = Some(utf8(v).ok_or_else(|| err("token is not UTF-8"))?),
                "serial" => uri.serial = Some(utf8(v).ok_or_else(|| err("serial is not UTF-8"))?),
                "object" => uri.object = Some(utf8(v).ok_or_else(|| err("object is not UTF-8"))?),
                "id" => uri.id = Some(v),
                "type"
                | "manufacturer"
                | "model"
                | "library-description"
                | "library-manufacturer"
                | "library-version"
                | "slot-description"
                | "slot-id"
                | "slot-manufacturer" => {}
                other => return Err(err(&format!("unknown attribute '{other}'"))),
            }
        }
        for attr in query.split('&').filter(|a| !a.is_empty()) {
            let (k, v) = attr
                .split_once('=')
                .ok_or_else(|| err("query attribute without '='"))?;
            match k {
                "module-path" => {
                    let v = decode(v).ok_or_else(|| err("bad percent-encoding"))?;
                    uri.module_path =
                        Some(PathBuf::from(utf8(v).ok_or_else(|| err("module-path is not UTF-8"))?));
                }
                "pin-value" => {
                    return Err(err(
                        "a PIN in the URI is refused; give a PIN source (--card-pin env:VAR|file:PATH|prompt)",
                    ))
                }
                _ => {}
            }
        }
        if uri.token.is_none() && uri.serial.is_none() {
            return Err(err("name the token with token= or serial="));
        }
        if uri.object.is_none() && uri.id.is_none() {
            return Err(err("name the key with object= or id="));
        }
        Ok(uri)
    }
}

fn utf8(v: Vec<u8>) -> Option<String> {
    String::from_utf8(v).ok()
}

/// Percent-decoding (RFC 3986).
fn decode(v: &str) -> Option<Vec<u8>> {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = v.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_attributes_kms_uses() -> Result<(), UriError> {
        let u: Pkcs11Uri =
            "pkcs11:token=officer%20card;object=approval;id=%01%02?module-path=/usr/lib/x.so"
                .parse()?;
        assert_eq!(u.token.as_deref(), Some("officer card"));
        assert_eq!(u.object.as_deref(), Some("approval"));
        assert_eq!(u.id.as_deref(), Some(&[1u8, 2][..]));
        assert_eq!(u.module_path, Some(PathBuf::from("/usr/lib/x.so")));
        Ok(())
    }

    #[test]
    fn refuses_pins_and_incomplete_uris() {
        let e = "pkcs11:token=a;object=b?pin-value=1234".parse::<Pkcs11Uri>();
        assert!(
            e.as_ref().is_err_and(|e| !e.to_string().contains("1234")),
            "{e:?}"
        );
        assert!("pkcs11:object=b".parse::<Pkcs11Uri>().is_err());
        assert!("pkcs11:token=a".parse::<Pkcs11Uri>().is_err());
        assert!("token=a;object=b".parse::<Pkcs11Uri>().is_err());
    }
}
