//! Client certificate identities: the SHA-256 fingerprint that registers a principal, and the
//! subject / SAN shown in audit rows. Parsing with the RustCrypto `x509-cert` crate.

use der::{Decode as _, DecodePem as _};
use sha2::{Digest, Sha256};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::Certificate;

/// Who a certificate says it is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CertIdentity {
    /// SHA-256 of the DER certificate, lowercase hex.
    pub fingerprint: String,
    /// The subject DN, RFC 4514 style.
    pub subject: String,
    /// DNS names, URIs and e-mail addresses from subjectAltName.
    pub sans: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("not a usable X.509 certificate: {0}")]
pub struct CertError(String);

impl CertIdentity {
    pub fn from_der(der: &[u8]) -> Result<CertIdentity, CertError> {
        let cert = Certificate::from_der(der).map_err(|e| CertError(e.to_string()))?;
        Ok(identity(&cert, der))
    }

    /// The first certificate of a PEM file.
    pub fn from_pem(pem: &[u8]) -> Result<CertIdentity, CertError> {
        let cert = Certificate::from_pem(pem).map_err(|e| CertError(e.to_string()))?;
        let der = der::Encode::to_der(&cert).map_err(|e| CertError(e.to_string()))?;
        Ok(identity(&cert, &der))
    }

    /// Subject and SANs in one line, for audit rows.
    pub fn describe(&self) -> String {
        if self.sans.is_empty() {
            self.subject.clone()
        } else {
            format!("{} [{}]", self.subject, self.sans.join(", "))
        }
    }
}

fn identity(cert: &Certificate, der: &[u8]) -> CertIdentity {
    let tbs = &cert.tbs_certificate;
    let mut sans = Vec::new();
    if let Ok(Some((_, san))) = tbs.get::<SubjectAltName>() {
        for name in san.0 {
            match name {
                GeneralName::DnsName(d) => sans.push(format!("DNS:{}", d.as_str())),
                GeneralName::UniformResourceIdentifier(u) => {
                    sans.push(format!("URI:{}", u.as_str()))
                }
                GeneralName::Rfc822Name(m) => sans.push(format!("email:{}", m.as_str())),
                _ => {}
            }
        }
    }
    CertIdentity {
        fingerprint: hex::encode(Sha256::digest(der)),
        subject: tbs.subject.to_string(),
        sans,
    }
}
