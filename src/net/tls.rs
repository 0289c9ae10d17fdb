//! TLS for the service: rustls (ring provider), the server certificate from PEM files, and client
//! authentication *required* against the configured client CA, so a client without a certificate
//! chaining to it is refused in the handshake.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use super::ServerError;

pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<ServerConfig, ServerError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let pem_err = |path: &Path, what: &str, e: &dyn std::fmt::Display| {
        ServerError::Tls(format!("{}: cannot read {what}: {e}", path.display()))
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| pem_err(cert, "certificates", &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| pem_err(cert, "certificates", &e))?;
    if certs.is_empty() {
        return Err(ServerError::Tls(format!(
            "{}: no certificate found",
            cert.display()
        )));
    }
    check_private_file(key)?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| pem_err(key, "private key", &e))?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ServerError::Tls(e.to_string()))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(client_ca) => {
            let mut roots = RootCertStore::empty();
            for ca in CertificateDer::pem_file_iter(client_ca)
                .map_err(|e| pem_err(client_ca, "client CA", &e))?
            {
                let ca = ca.map_err(|e| pem_err(client_ca, "client CA", &e))?;
                roots
                    .add(ca)
                    .map_err(|e| pem_err(client_ca, "client CA", &e))?;
            }
            if roots.is_empty() {
                return Err(ServerError::Tls(format!(
                    "{}: no client CA certificate found",
                    client_ca.display()
                )));
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| ServerError::Tls(format!("client verifier: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key_der)
        .map_err(|e| ServerError::Tls(format!("server certificate/key: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The TLS private key file must be readable by its owner only, like PIN files.
fn check_private_file(path: &Path) -> Result<(), ServerError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path)
        .map_err(|e| ServerError::Tls(format!("{}: {e}", path.display())))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(ServerError::Tls(format!(
            "{} has mode {mode:o}; a private key must be readable by its owner only (chmod 600 {})",
            path.display(),
            path.display()
        )));
    }
    Ok(())
}
