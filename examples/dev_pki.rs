//! Development PKI for `kms serve`: a dev CA, a server certificate for localhost / 127.0.0.1 / ::1
//! and client certificates for demo applications. DEVELOPMENT ONLY.
//!
//!     cargo run --example dev_pki -- OUT_DIR [--force] [--client NAME]...
//!
//! Idempotent: existing files are kept; a missing leaf is issued by the existing CA (rebuilt from
//! `ca-key.pem` with the same name, so its signature chains to `ca.pem`); `--force` starts over.
//! Private keys are PKCS#8 PEM written 0600; the directory is 0700.
//! The integration tests include this file as a module and call [`ensure`].

use std::error::Error;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

type Res<T> = Result<T, Box<dyn Error>>;

const CA_CN: &str = "kms dev CA";

#[allow(dead_code)]
fn main() -> Res<()> {
    let mut args = std::env::args().skip(1);
    let mut dir = None;
    let mut force = false;
    let mut clients = vec!["demo-app".to_owned()];
    while let Some(a) = args.next() {
        match a.as_str() {
            "--force" => force = true,
            "--client" => clients.push(args.next().ok_or("--client needs a NAME")?),
            "-h" | "--help" => {
                println!("usage: dev_pki OUT_DIR [--force] [--client NAME]...");
                return Ok(());
            }
            _ if dir.is_none() => dir = Some(a),
            other => return Err(format!("unexpected argument '{other}'").into()),
        }
    }
    let dir = dir.ok_or("usage: dev_pki OUT_DIR [--force] [--client NAME]...")?;
    let names: Vec<&str> = clients.iter().map(String::as_str).collect();
    for written in ensure(Path::new(&dir), &names, force)? {
        eprintln!("wrote {}", written);
    }
    Ok(())
}

/// Make sure `dir` holds the CA, the server certificate and one client certificate per name.
/// Returns the files written.
pub fn ensure(dir: &Path, clients: &[&str], force: bool) -> Res<Vec<String>> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let mut written = Vec::new();
    let (ca_cert, ca_key) = (dir.join("ca.pem"), dir.join("ca-key.pem"));
    let fresh_ca = force || !ca_cert.exists() || !ca_key.exists();
    let ca_key_pair = if fresh_ca {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384)?;
        let cert = ca_params()?.self_signed(&key)?;
        write(&ca_key, key.serialize_pem().as_bytes(), 0o600, &mut written)?;
        write(&ca_cert, cert.pem().as_bytes(), 0o644, &mut written)?;
        key
    } else {
        KeyPair::from_pem(&std::fs::read_to_string(&ca_key)?)?
    };
    let issuer = Issuer::new(ca_params()?, ca_key_pair);

    let mut leaves = vec![("server".to_owned(), "localhost".to_owned(), true)];
    for c in clients {
        leaves.push((format!("client-{c}"), (*c).to_owned(), false));
    }
    for (file, cn, server) in leaves {
        let (cert_path, key_path) = (
            dir.join(format!("{file}.pem")),
            dir.join(format!("{file}-key.pem")),
        );
        if !fresh_ca && cert_path.exists() && key_path.exists() {
            continue;
        }
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let cert = leaf_params(&cn, server)?.signed_by(&key, &issuer)?;
        write(
            &key_path,
            key.serialize_pem().as_bytes(),
            0o600,
            &mut written,
        )?;
        write(&cert_path, cert.pem().as_bytes(), 0o644, &mut written)?;
    }
    Ok(written)
}

fn name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "kms development");
    dn.push(DnType::CommonName, cn);
    dn
}

fn validity(p: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::minutes(5);
    p.not_after = now + time::Duration::days(days);
}

fn ca_params() -> Res<CertificateParams> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name = name(CA_CN);
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut p, 730);
    Ok(p)
}

fn leaf_params(cn: &str, server: bool) -> Res<CertificateParams> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name = name(cn);
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    if server {
        p.subject_alt_names = vec![
            SanType::DnsName("localhost".try_into()?),
            SanType::IpAddress("127.0.0.1".parse()?),
            SanType::IpAddress("::1".parse()?),
        ];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    } else {
        p.subject_alt_names = vec![
            SanType::URI(format!("urn:kms:principal:{cn}").try_into()?),
            SanType::DnsName(cn.try_into()?),
        ];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    }
    p.use_authority_key_identifier_extension = true;
    validity(&mut p, 365);
    Ok(p)
}

/// Write a new file with `mode` from the start (never chmod after writing), replacing any old one.
fn write(path: &Path, data: &[u8], mode: u32, written: &mut Vec<String>) -> Res<()> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    written.push(path.display().to_string());
    Ok(())
}
