//! AWS Signature Version 4 *verification* for the XKS proxy (AWS KMS signs every call with
//! service `kms-xks-proxy`). Written here because no maintained crate verifies SigV4 the way a
//! proxy must: `aws-sigv4` only signs (and picks its own headers), `scratchstack-aws-signature`
//! normalises the path and allows 15 minutes of skew. The canonical request is built from what
//! the client says it signed (`SignedHeaders`, at least `host` and `x-amz-date`), from the raw
//! path as sent, and the request must be within five minutes of now. The comparison is constant
//! time. Verified against AWS's own signing test suite (`tests/data/sigv4`, Apache-2.0).

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

type HmacSha256 = Hmac<Sha256>;

/// How far a request's `X-Amz-Date` may be from now (the XKS spec: five minutes).
pub const MAX_SKEW_SECS: i64 = 300;

/// Why a request did not authenticate. Messages name the problem, never a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no Authorization header")]
    Missing,
    #[error("malformed Authorization: {0}")]
    Malformed(&'static str),
    #[error("unknown access key id")]
    UnknownKey,
    #[error("the credential scope is for {0}")]
    WrongScope(String),
    #[error("X-Amz-Date {0} is more than five minutes from now")]
    Stale(String),
    #[error("signed header '{0}' is missing from the request")]
    MissingHeader(String),
    #[error("the signature does not match")]
    BadSignature,
}

/// The parts of an HTTP request a signature covers.
#[derive(Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    /// The path exactly as sent (no normalisation: `//kms/...` stays `//kms/...`).
    pub path: &'a str,
    /// The query string without `?` ("" for none).
    pub query: &'a str,
    /// (lower-case name, value) in the order received.
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
}

/// Verify `req`, signed for `service` in `region`, at `now`; `secret_of` gives the secret of an
/// access key id. Returns the access key id that signed.
pub fn verify(
    req: &Request<'_>,
    now: OffsetDateTime,
    region: &str,
    service: &str,
    secret_of: impl Fn(&str) -> Option<secrecy::SecretString>,
) -> Result<String, AuthError> {
    use secrecy::ExposeSecret as _;
    let auth = header(req.headers, "authorization").ok_or(AuthError::Missing)?;
    let rest = auth
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or(AuthError::Malformed("algorithm is not AWS4-HMAC-SHA256"))?;
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let part = part.trim();
        if let Some(v) = part.strip_prefix("Credential=") {
            credential = Some(v);
        } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
            signed_headers = Some(v);
        } else if let Some(v) = part.strip_prefix("Signature=") {
            signature = Some(v);
        }
    }
    let credential = credential.ok_or(AuthError::Malformed("no Credential"))?;
    let signed_headers = signed_headers.ok_or(AuthError::Malformed("no SignedHeaders"))?;
    let signature = signature.ok_or(AuthError::Malformed("no Signature"))?;
    let scope: Vec<&str> = credential.split('/').collect();
    let [akid, date, scope_region, scope_service, terminator] = scope.as_slice() else {
        return Err(AuthError::Malformed(
            "Credential is not KEY/DATE/REGION/SERVICE/aws4_request",
        ));
    };
    if *terminator != "aws4_request" {
        return Err(AuthError::Malformed(
            "Credential does not end in aws4_request",
        ));
    }
    if *scope_region != region || *scope_service != service {
        return Err(AuthError::WrongScope(format!(
            "region '{scope_region}' and service '{scope_service}'"
        )));
    }
    let names: Vec<&str> = signed_headers.split(';').collect();
    if !names.contains(&"host") || !names.contains(&"x-amz-date") {
        return Err(AuthError::Malformed(
            "SignedHeaders must include host and x-amz-date",
        ));
    }
    let amz_date = header(req.headers, "x-amz-date")
        .ok_or_else(|| AuthError::MissingHeader("x-amz-date".into()))?;
    let when = parse_amz_date(&amz_date)
        .ok_or(AuthError::Malformed("X-Amz-Date is not YYYYMMDDTHHMMSSZ"))?;
    if !amz_date.starts_with(date) || date.len() != 8 {
        return Err(AuthError::Malformed(
            "the Credential date is not X-Amz-Date's",
        ));
    }
    if (now - when).whole_seconds().abs() > MAX_SKEW_SECS {
        return Err(AuthError::Stale(amz_date));
    }
    let secret = secret_of(akid).ok_or(AuthError::UnknownKey)?;
    let expected = compute_signature(
        req,
        &names,
        &amz_date,
        date,
        region,
        service,
        secret.expose_secret(),
    )?;
    if expected.as_bytes().ct_eq(signature.as_bytes()).into() {
        Ok((*akid).to_owned())
    } else {
        Err(AuthError::BadSignature)
    }
}

/// The hex signature of `req` over the headers `names`, as SigV4 defines it.
fn compute_signature(
    req: &Request<'_>,
    names: &[&str],
    amz_date: &str,
    date: &str,
    region: &str,
    service: &str,
    secret: &str,
) -> Result<String, AuthError> {
    let mut canonical = String::with_capacity(512);
    canonical.push_str(req.method);
    canonical.push('\n');
    canonical.push_str(req.path);
    canonical.push('\n');
    canonical.push_str(&canonical_query(req.query));
    canonical.push('\n');
    for name in names {
        let values: Vec<String> = req
            .headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| collapse_spaces(v.trim()))
            .collect();
        if values.is_empty() {
            return Err(AuthError::MissingHeader((*name).to_owned()));
        }
        canonical.push_str(name);
        canonical.push(':');
        canonical.push_str(&values.join(","));
        canonical.push('\n');
    }
    canonical.push('\n');
    canonical.push_str(&names.join(";"));
    canonical.push('\n');
    canonical.push_str(&hex::encode(Sha256::digest(req.body)));

    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{date}/{region}/{service}/aws4_request\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let mut key = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    for part in [region, service, "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    Ok(hex::encode(hmac(&key, string_to_sign.as_bytes())))
}

/// Sign a request the way AWS KMS signs XKS calls (for kms's own tests and benchmark): returns
/// the `x-amz-date` and `authorization` headers to add. `req.headers` must hold `host`; the
/// signed headers are `host`, `x-amz-date` and any other header in `req.headers`, sorted.
pub fn sign(
    req: &Request<'_>,
    now: OffsetDateTime,
    access_key_id: &str,
    secret: &str,
    region: &str,
    service: &str,
) -> Result<Vec<(String, String)>, AuthError> {
    let fmt = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    let amz_date = now
        .format(fmt)
        .map_err(|_| AuthError::Malformed("cannot format the date"))?;
    let date = amz_date[..8].to_owned();
    let mut headers = req.headers.to_vec();
    headers.push(("x-amz-date".to_owned(), amz_date.clone()));
    let mut names: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let with_date = Request {
        headers: &headers,
        ..*req
    };
    let sig = compute_signature(
        &with_date, &names, &amz_date, &date, region, service, secret,
    )?;
    Ok(vec![
        ("x-amz-date".to_owned(), amz_date),
        (
            "authorization".to_owned(),
            format!(
                "AWS4-HMAC-SHA256 Credential={access_key_id}/{date}/{region}/{service}/aws4_request, SignedHeaders={}, Signature={sig}",
                names.join(";")
            ),
        ),
    ])
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length; new_from_slice cannot fail for it.
    match HmacSha256::new_from_slice(key) {
        Ok(mut m) => {
            m.update(data);
            m.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}

fn header(headers: &[(String, String)], name: &str) -> Option<String> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.trim().to_owned())
}

fn collapse_spaces(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut space = false;
    for c in v.chars() {
        if c == ' ' {
            if !space {
                out.push(' ');
            }
            space = true;
        } else {
            out.push(c);
            space = false;
        }
    }
    out
}

/// Parameters sorted by name, then value, as sent (already percent-encoded by the signer).
fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(&str, &str)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn parse_amz_date(s: &str) -> Option<OffsetDateTime> {
    let fmt = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    time::PrimitiveDateTime::parse(s, fmt)
        .ok()
        .map(|t| t.assume_utc())
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    /// A test-suite file: request line, headers, blank line, body.
    fn parse(text: &str) -> (String, String, String, Vec<(String, String)>, Vec<u8>) {
        let (head, body) = text.split_once("\n\n").unwrap_or((text, ""));
        let mut lines = head.lines();
        let first = lines.next().unwrap_or_default();
        let mut parts = first.split(' ');
        let method = parts.next().unwrap_or_default().to_owned();
        let target = parts.next().unwrap_or_default();
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.to_ascii_lowercase(), v.to_owned()))
            .collect();
        (
            method,
            path.to_owned(),
            query.to_owned(),
            headers,
            body.as_bytes().to_vec(),
        )
    }

    fn at(s: &str) -> OffsetDateTime {
        parse_amz_date(s).unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }

    #[test]
    fn aws_signing_test_suite_requests_verify() -> Result<(), Box<dyn std::error::Error>> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/sigv4");
        let mut n = 0;
        for case in std::fs::read_dir(&dir)? {
            let case = case?.path();
            if !case.is_dir() {
                continue;
            }
            let signed = std::fs::read_to_string(case.join("header-signed-request.txt"))?;
            let (method, path, query, headers, body) = parse(&signed);
            let req = Request {
                method: &method,
                path: &path,
                query: &query,
                headers: &headers,
                body: &body,
            };
            let secret = || {
                Some(SecretString::from(
                    "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                ))
            };
            let got = verify(&req, at("20150830T123600Z"), "us-east-1", "service", |k| {
                (k == "AKIDEXAMPLE").then(secret).flatten()
            });
            assert_eq!(got, Ok("AKIDEXAMPLE".to_owned()), "{}", case.display());
            // One changed byte of the body or a header value breaks it.
            let mut tampered = body.clone();
            tampered.push(b'x');
            let req2 = Request {
                body: &tampered,
                ..req
            };
            assert_eq!(
                verify(
                    &req2,
                    at("20150830T123600Z"),
                    "us-east-1",
                    "service",
                    |_| secret()
                ),
                Err(AuthError::BadSignature),
                "{}",
                case.display()
            );
            n += 1;
        }
        assert!(n >= 10, "the suite is there ({n} cases)");
        Ok(())
    }

    /// An XKS health request signed the way KMS signs (host;x-amz-date) and the way curl
    /// --aws-sigv4 does (content-type too); vectors computed independently of this code.
    #[test]
    fn what_sign_makes_verifies() {
        let headers = vec![
            ("host".to_owned(), "127.0.0.1:8444".to_owned()),
            ("content-type".to_owned(), "application/json".to_owned()),
        ];
        let req = Request {
            method: "POST",
            path: "/a/kms/xks/v1/health",
            query: "",
            headers: &headers,
            body: b"{}",
        };
        let now = at("20261205T101010Z");
        let added =
            sign(&req, now, "AKIAXKS", "s3cret", "us-east-1", "kms-xks-proxy").unwrap_or_default();
        let mut all = headers.clone();
        all.extend(added);
        let signed = Request {
            headers: &all,
            ..req
        };
        assert_eq!(
            verify(&signed, now, "us-east-1", "kms-xks-proxy", |_| Some(
                SecretString::from("s3cret")
            )),
            Ok("AKIAXKS".to_owned())
        );
    }

    #[test]
    fn xks_requests_signed_by_kms_and_by_curl_verify_and_stale_ones_do_not() {
        let body = br#"{"requestMetadata":{"kmsOperation":"KmsHealthCheck","kmsRequestId":"1124f4d6-db54-4af4-ae30-c55a22a8abcd"}}"#;
        let secret = || {
            Some(SecretString::from(
                "FYtE5EFA5FT0mCc3DrGUe2sti527BitkQ0Zr9MO9fvE",
            ))
        };
        let path = "/example/uri/path/prefix/kms/xks/v1/health";
        for (signed, sig, extra) in [
            (
                "host;x-amz-date",
                "6013a919c1a1ef1d146e4a01cf7792fb9e1db29488dc3a09148fcf36138d2b26",
                None,
            ),
            (
                "content-type;host;x-amz-date",
                "1d8ebd27eb30b866406293368b689cf38664a5e0f1a8282639400c8ae8bec914",
                Some(("content-type".to_owned(), "application/json".to_owned())),
            ),
        ] {
            let mut headers = vec![
                ("host".to_owned(), "xks.example.com".to_owned()),
                ("x-amz-date".to_owned(), "20221110T120000Z".to_owned()),
                (
                    "authorization".to_owned(),
                    format!("AWS4-HMAC-SHA256 Credential=AKIAXKSTEST/20221110/us-east-1/kms-xks-proxy/aws4_request, SignedHeaders={signed}, Signature={sig}"),
                ),
            ];
            headers.extend(extra);
            let req = Request {
                method: "POST",
                path,
                query: "",
                headers: &headers,
                body,
            };
            let now = at("20221110T120400Z");
            assert_eq!(
                verify(&req, now, "us-east-1", "kms-xks-proxy", |_| secret()),
                Ok("AKIAXKSTEST".to_owned()),
                "{signed}"
            );
            assert!(matches!(
                verify(
                    &req,
                    at("20221110T120601Z"),
                    "us-east-1",
                    "kms-xks-proxy",
                    |_| secret()
                ),
                Err(AuthError::Stale(_))
            ));
            assert!(matches!(
                verify(&req, now, "eu-west-1", "kms-xks-proxy", |_| secret()),
                Err(AuthError::WrongScope(_))
            ));
            assert_eq!(
                verify(&req, now, "us-east-1", "kms-xks-proxy", |_| None),
                Err(AuthError::UnknownKey)
            );
            let wrong = || {
                Some(SecretString::from(
                    "InvalidFYtE5EFA5FT0mCc3DrGUe2sti527BitkQ0Zr9",
                ))
            };
            assert_eq!(
                verify(&req, now, "us-east-1", "kms-xks-proxy", |_| wrong()),
                Err(AuthError::BadSignature)
            );
        }
    }
}
