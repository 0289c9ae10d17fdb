//! Backup copies of every new type on the backup token, sensitive and drilled.

use super::*;

/// The new types, one key each, made after the ceremony: name, type, usage, extra options.
const BACKED_UP: &[(&str, &str, &str, &[&str])] = &[
    ("b-p256", "ec-p256", "sign,verify", &[]),
    ("b-p521", "ec-p521", "sign,verify", &[]),
    (
        "b-rsa",
        "rsa-2048",
        "sign,verify",
        &["--signature", "rsa-pkcs1-sha256"],
    ),
    ("b-aes128", "aes-128", "encrypt,decrypt", &[]),
    ("b-hmac256", "hmac-sha256", "mac,verify-mac", &[]),
    ("b-hmac384", "hmac-sha384", "mac,verify-mac", &[]),
    ("b-secret", "secret-data", "reveal", &[]),
    (
        "b-des3",
        "des3",
        "encrypt,decrypt",
        &["--legacy", "--allow-legacy-encrypt"],
    ),
    ("b-des3-ro", "des3", "decrypt", &["--legacy"]),
];

/// `Access:` lines of the private and secret key objects labelled `kms:NAME:v1`, per name.
fn access_of(listing: &str) -> std::collections::BTreeMap<String, String> {
    key_access(listing)
        .into_iter()
        .filter(|(label, _)| label.starts_with("kms:b-"))
        .collect()
}

#[test]
fn every_new_type_is_copied_to_the_backup_token_sensitive_and_drilled() -> TestResult {
    let env = Env::new()?;
    env.ok(&["--reason", "CHG-7 backup ceremony", "backup", "init"])?;
    env.ok(&["backup", "sync"])?;
    let mut failed = Vec::new();
    for (name, t, usage, extra) in BACKED_UP {
        let mut args = vec!["--reason", "CHG-1 key types"];
        args.extend_from_slice(extra);
        let o = env.run(&create_args(name, t, usage, &args))?;
        if !o.status.success() {
            failed.push(format!("{name} ({t}): {}", stderr(&o)));
        }
    }
    assert!(
        failed.is_empty(),
        "creation with a backup copy failed: {failed:#?}"
    );

    // SoftHSM2 2.6.1 cannot wrap an Ed25519 private key at all (CKR_KEY_NOT_WRAPPABLE), so with
    // a backup pairing an ed25519 key never gets its copy: it is generated but stays pending,
    // and kms says why.
    let o = env.run(&create_args(
        "b-ed",
        "ed25519",
        "sign,verify",
        &["--reason", "CHG-1 key types"],
    ))?;
    assert!(
        !o.status.success(),
        "an ed25519 key became active without a copy"
    );
    let err = stderr(&o);
    assert!(
        err.contains("cannot wrap ed25519 private keys")
            && err.contains("CKR_KEY_NOT_WRAPPABLE")
            && err.contains("NOT active"),
        "clear reason: {err}"
    );
    let v = json(&env.ok(&["key", "show", "b-ed", "--json"])?)?;
    assert_eq!(v["versions"][0]["state"], "pending", "{v}");
    let o = env.run(&["backup", "sync"])?;
    assert!(
        stdout(&o).contains("b-ed") || stderr(&o).contains("b-ed"),
        "sync reports the key it cannot copy: {}{}",
        stdout(&o),
        stderr(&o)
    );
    env.ok(&[
        "--reason",
        "CHG-1 cannot be backed up",
        "key",
        "abandon",
        "b-ed",
    ])?;

    for (name, ..) in BACKED_UP {
        let v = json(&env.ok(&["key", "show", name, "--json"])?)?;
        let last = v["versions"]
            .as_array()
            .and_then(|a| a.last())
            .ok_or("no versions")?;
        assert_eq!(last["state"], "active", "{name}: {last}");
        let copies = last["copies"].as_array().cloned().unwrap_or_default();
        assert_eq!(copies.len(), 1, "{name}: one copy: {last}");
        assert_eq!(copies[0]["token"], "backup");
        assert!(copies[0]["verified_at"].is_string(), "{name}: {last}");
    }

    // Both tokens: every private/secret object sensitive, only wrappable by a trusted key.
    for token in ["kms-primary", "kms-backup"] {
        let listing = env.list_objects(token)?;
        let access = access_of(&listing);
        for (name, ..) in BACKED_UP {
            let label = format!("kms:{name}:v1");
            let a = access
                .get(&label)
                .ok_or_else(|| format!("{token}: no private/secret object {label}: {listing}"))?;
            assert!(a.contains("sensitive"), "{token} {label}: {a}");
            assert!(
                !a.contains("never extractable") || !a.contains("extractable,"),
                "{a}"
            );
            // Generated sensitive on the primary; a copy was unwrapped, which PKCS#11 never
            // calls "always sensitive", but it is sensitive from its creation.
            // A secret-data value is put on the token by C_CreateObject (from its owner, or
            // from the token's RNG through kms), so PKCS#11 does not call it always sensitive.
            if token == "kms-primary" && !name.contains("secret") {
                assert!(a.contains("always sensitive"), "{token} {label}: {a}");
            }
        }
    }
    // No way to read a secret's value out in the clear.
    let o = env.pkcs11_tool(
        "kms-backup",
        &[
            "--read-object",
            "--type",
            "secrkey",
            "--label",
            "kms:b-hmac256:v1",
        ],
    )?;
    assert!(!o.status.success(), "read a secret value: {}", stdout(&o));
    // Extractable only under a CKA_TRUSTED key (CKA_WRAP_WITH_TRUSTED): a wrapping key the
    // user makes on the token cannot export them (pkcs11-tool 0.23 wraps secret keys only, so
    // the secret ones are tried).
    for token in ["kms-primary", "kms-backup"] {
        let o = env.pkcs11_tool(
            token,
            &[
                "--keygen",
                "--key-type",
                "AES:32",
                "--id",
                "ee01",
                "--label",
                "user-kek",
                "--usage-wrap",
            ],
        )?;
        assert!(o.status.success(), "user AES key: {}", stderr(&o));
        for (name, t, ..) in BACKED_UP {
            if !matches!(*t, "aes-128" | "hmac-sha256" | "hmac-sha384" | "des3") {
                continue;
            }
            let id = env.object_id(name)?;
            let out = env.path("wrapped.bin");
            let o = env.pkcs11_tool(
                token,
                &[
                    "--wrap",
                    "--mechanism",
                    "0x210A",
                    "--id",
                    "ee01",
                    "--application-id",
                    &id,
                    "--output-file",
                    path(&out)?,
                ],
            )?;
            assert_fails(&o, 1, &["CKR_KEY_NOT_WRAPPABLE"]);
        }
    }

    // The drill passes for every copy, each by its family's proof.
    let o = env.run(&["backup", "verify", "--json"])?;
    let r = json(&o)?;
    let results = r["results"].as_array().ok_or_else(|| format!("{r}"))?;
    for (name, t, ..) in BACKED_UP {
        let d = results
            .iter()
            .find(|d| d.to_string().contains(&format!("\"{name}\"")))
            .ok_or_else(|| format!("{name} not drilled: {r}"))?;
        assert_eq!(d["ok"], true, "{name} ({t}): {d}");
        let detail = d["detail"].as_str().unwrap_or_default();
        let want = match *t {
            "hmac-sha256" | "hmac-sha384" => "same MAC",
            "aes-128" => "decrypted",
            "des3" if *name == "b-des3" => "decrypted on the copy",
            "des3" => "decrypt the same random blocks",
            "secret-data" => "same HMAC over a challenge",
            _ => "signature made on the copy verified",
        };
        assert!(detail.contains(want), "{name}: {detail}");
    }
    assert!(o.status.success(), "{}", stderr(&o));
    let o = env.ok(&["backup", "status"])?;
    assert!(stdout(&o).contains("b-des3-ro"), "{}", stdout(&o));

    // A secret's value is its owner's: kms never rotates it into a value of its own making,
    // not by hand and not when the scheduler finds it due (the report still shows it due).
    assert_fails(
        &env.run(&["--reason", "CHG-9", "key", "rotate", "b-secret"])?,
        4,
        &["its owner registers the new value"],
    );
    let o = env
        .kms()
        .env("KMS_TEST_CLOCK_OFFSET", "400d")
        .args(["schedule", "run"])
        .output()?;
    assert!(!stdout(&o).contains("b-secret v1"), "{}", stdout(&o));
    let v = json(&env.ok(&["key", "show", "b-secret", "--json"])?)?;
    assert_eq!(v["versions"].as_array().map(Vec::len), Some(1), "{v}");
    Ok(())
}
