//! Bringing keys in (issue 14): key material wrapped with openssl to kms's import key is
//! unwrapped on the token (never in kms), and then behaves exactly as what openssl knows of it:
//! an HMAC key from a known value gives `openssl mac`'s tag, a 3DES key decrypts `openssl enc`
//! output and migrates it to AES-GCM, EC and RSA private keys sign what openssl verifies. Blobs
//! for another import key, of the wrong length or type, are refused and leave nothing behind.

use common::*;
use kms_testkit as common;

#[path = "import/formats.rs"]
mod formats;
#[path = "import/refusals.rs"]
mod refusals;

const TOKEN: &str = "kms-primary";

/// Wrap `material` for `kms key import` the way an importer does with openssl alone:
/// RSA-OAEP(SHA-1) of a fresh AES-256 key to the import key, then RFC 5649 key wrap.
fn wrap_for(
    env: &Env,
    import_pem: &std::path::Path,
    material: &[u8],
    tag: &str,
) -> Res<std::path::PathBuf> {
    let m = env.write(&format!("{tag}.material"), material)?;
    let aes = random_hex(32)?;
    let aes_bin = env.write(&format!("{tag}.aes"), &hex::decode(&aes)?)?;
    let wrapped_aes = env.path(&format!("{tag}.aes.wrapped"));
    let o = openssl(&[
        "pkeyutl",
        "-encrypt",
        "-pubin",
        "-inkey",
        path(import_pem)?,
        "-pkeyopt",
        "rsa_padding_mode:oaep",
        "-pkeyopt",
        "rsa_oaep_md:sha1",
        "-pkeyopt",
        "rsa_mgf1_md:sha1",
        "-in",
        path(&aes_bin)?,
        "-out",
        path(&wrapped_aes)?,
    ])?;
    assert!(o.status.success(), "openssl pkeyutl: {}", stderr(&o));
    let wrapped_key = env.path(&format!("{tag}.key.wrapped"));
    let o = openssl(&[
        "enc",
        "-id-aes256-wrap-pad",
        "-K",
        &aes,
        "-iv",
        "A65959A6",
        "-in",
        path(&m)?,
        "-out",
        path(&wrapped_key)?,
    ])?;
    assert!(o.status.success(), "openssl enc wrap: {}", stderr(&o));
    let mut blob = std::fs::read(&wrapped_aes)?;
    blob.extend(std::fs::read(&wrapped_key)?);
    std::fs::remove_file(&m)?;
    std::fs::remove_file(&aes_bin)?;
    env.write(&format!("{tag}.wrapped"), &blob)
}

fn random_hex(n: usize) -> Res<String> {
    let o = openssl(&["rand", "-hex", &n.to_string()])?;
    Ok(stdout(&o).trim().to_owned())
}

fn import_key(env: &Env) -> Res<std::path::PathBuf> {
    let pem = env.path("import-key.pem");
    env.ok(&["key", "import-key", "--out", path(&pem)?])?;
    Ok(pem)
}

fn import_args<'a>(
    name: &'a str,
    key_type: &'a str,
    usage: &'a str,
    wrapped: &'a str,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut args = create_args(name, key_type, usage, &["--wrapped", wrapped]);
    args[1] = "import";
    args.extend_from_slice(extra);
    args
}

#[test]
fn hmac_key_imported_from_a_known_value_gives_the_openssl_mac() -> TestResult {
    let env = Env::new()?;
    let ik = import_key(&env)?;
    for (ty, bytes, digest) in [("hmac-sha256", 32, "SHA256"), ("hmac-sha384", 48, "SHA384")] {
        let key_hex = random_hex(bytes)?;
        let wrapped = wrap_for(&env, &ik, &hex::decode(&key_hex)?, ty)?;
        let name = format!("webhook-{ty}");
        env.ok(&import_args(
            &name,
            ty,
            "mac,verify-mac",
            path(&wrapped)?,
            &[],
        ))?;
        env.grant_ops(&name, "mac,verify-mac,read-inventory")?;
        let msg = env.write("msg.txt", b"{\"event\":\"payment.settled\",\"id\":42}")?;
        let tag = env.path("msg.tag");
        env.ok(&[
            "key",
            "mac",
            &name,
            "--in",
            path(&msg)?,
            "--out",
            path(&tag)?,
        ])?;
        let o = openssl(&[
            "mac",
            "-digest",
            digest,
            "-macopt",
            &format!("hexkey:{key_hex}"),
            "-in",
            path(&msg)?,
            "HMAC",
        ])?;
        assert!(o.status.success(), "openssl mac: {}", stderr(&o));
        assert_eq!(
            hex::encode(std::fs::read(&tag)?),
            stdout(&o).trim().to_lowercase(),
            "{ty}: the token's HMAC is openssl's"
        );
        let o = env.ok(&[
            "key",
            "verify-mac",
            &name,
            "--in",
            path(&msg)?,
            "--tag",
            path(&tag)?,
        ])?;
        assert!(stdout(&o).contains("MAC valid"));
        let other = env.write("other.txt", b"{\"event\":\"payment.settled\",\"id\":43}")?;
        let o = env.run(&[
            "key",
            "verify-mac",
            &name,
            "--in",
            path(&other)?,
            "--tag",
            path(&tag)?,
        ])?;
        assert_fails(&o, 1, &["MAC NOT valid"]);
        let shown = json(&env.ok(&["key", "show", &name, "--json"])?)?;
        assert_eq!(shown["origin"], "imported");
    }
    // The trail says what came in, and never the key.
    let o = env.ok(&["audit", "list", "--json"])?;
    let trail = stdout(&o);
    assert!(trail.contains("key.import"), "{trail}");
    Ok(())
}
