//! People's approval cards for tests: real SoftHSM2 tokens (one per person) in the test's token
//! directory, each holding an EC P-384 key pair labelled `approval`.

use std::process::Command;

use crate::{Env, Res};

/// The PIN of `person`'s test card (dev only).
pub fn card_pin(person: &str) -> String {
    format!("pin-{person}-0000")
}

/// The URI of `person`'s approval key.
pub fn card_uri(person: &str) -> String {
    format!("pkcs11:token={person}-card;object=approval")
}

impl Env {
    /// Make `person`'s card: a token `<person>-card` with an approval key pair on it.
    pub fn make_card(&self, person: &str) -> Res<()> {
        let label = format!("{person}-card");
        let pin = card_pin(person);
        let out = Command::new("softhsm2-util")
            .env("SOFTHSM2_CONF", self.softhsm_conf())
            .args([
                "--init-token",
                "--free",
                "--label",
                &label,
                "--so-pin",
                "so-pin-0000",
            ])
            .args(["--pin", &pin])
            .output()?;
        if !out.status.success() {
            return Err(format!("init {label}: {}", String::from_utf8_lossy(&out.stderr)).into());
        }
        let out = Command::new("pkcs11-tool")
            .env("SOFTHSM2_CONF", self.softhsm_conf())
            .args([
                "--module",
                &self.module()?,
                "--token-label",
                &label,
                "--login",
                "--pin",
                &pin,
            ])
            .args([
                "--keypairgen",
                "--key-type",
                "EC:secp384r1",
                "--label",
                "approval",
                "--id",
                "01",
            ])
            .output()?;
        if !out.status.success() {
            return Err(format!(
                "keygen on {label}: {}",
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        Ok(())
    }

    /// One more EC P-384 key pair on `person`'s card, labelled `label` (CKA_ID `id`, hex): made
    /// by openssl and written to the card, so its public key is at hand as PEM (returned).
    pub fn import_card_key(&self, person: &str, label: &str, id: &str) -> Res<std::path::PathBuf> {
        let base = self.path(&format!("{person}-{label}"));
        let file = |ext: &str| base.with_extension(ext);
        let openssl = |args: &str, input: &std::path::Path, out: &std::path::Path| -> Res<()> {
            let o = Command::new("openssl")
                .args(args.split_whitespace())
                .arg("-in")
                .arg(input)
                .arg("-out")
                .arg(out)
                .output()?;
            if !o.status.success() {
                return Err(
                    format!("openssl {args}: {}", String::from_utf8_lossy(&o.stderr)).into(),
                );
            }
            Ok(())
        };
        let (key, p8, pub_der, pem) = (file("key"), file("p8"), file("pub"), file("pem"));
        let o = Command::new("openssl")
            .args(["ecparam", "-genkey", "-name", "secp384r1", "-noout", "-out"])
            .arg(&key)
            .output()?;
        if !o.status.success() {
            return Err(format!("openssl ecparam: {}", String::from_utf8_lossy(&o.stderr)).into());
        }
        openssl("pkcs8 -topk8 -nocrypt -outform DER", &key, &p8)?;
        openssl("pkey -pubout -outform DER", &key, &pub_der)?;
        openssl("pkey -pubout", &key, &pem)?;
        for (what, f) in [("privkey", &p8), ("pubkey", &pub_der)] {
            let out = Command::new("pkcs11-tool")
                .env("SOFTHSM2_CONF", self.softhsm_conf())
                .args(["--module", &self.module()?])
                .args(["--token-label", &format!("{person}-card")])
                .args(["--login", "--pin", &card_pin(person)])
                .arg("--write-object")
                .arg(f)
                .args(["--type", what, "--label", label, "--id", id])
                .output()?;
            if !out.status.success() {
                return Err(
                    format!("write {what}: {}", String::from_utf8_lossy(&out.stderr)).into(),
                );
            }
        }
        std::fs::remove_file(&key)?;
        std::fs::remove_file(&p8)?;
        Ok(pem)
    }

    /// Register `person` with `role` and the approval key on their card.
    pub fn register_person(&self, person: &str, role: &str) -> Res<()> {
        self.make_card(person)?;
        let out = self
            .kms_as(super::OFFICER)
            .env("CARD_PIN", card_pin(person))
            .args(["principal", "add", person, "--role", role])
            .args([
                "--approval-key",
                &card_uri(person),
                "--card-pin",
                "env:CARD_PIN",
            ])
            .output()?;
        if !out.status.success() {
            return Err(format!(
                "register {person}: {}",
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        Ok(())
    }

    /// The whole disposal procedure for `key` up to its execution: an officer's request (with
    /// the configured waiting period), a security admin's verification and a manager's approval,
    /// each signed on the signer's card (the two people are registered on first use). Returns
    /// the disposal's id.
    pub fn approve_disposal(&self, key: &str) -> Res<String> {
        if !self.path("cards-people").exists() {
            self.register_person("alice", "security-admin")?;
            self.register_person("bob", "manager")?;
            std::fs::write(self.path("cards-people"), "alice bob")?;
        }
        let o = self.ok(&[
            "key",
            "dispose",
            key,
            "--contract-ref",
            "CTR-2026-17",
            "--justification",
            "client contract ended",
            "--json",
        ])?;
        let id = super::json(&o)?["id"]
            .as_str()
            .ok_or("no disposal id")?
            .to_owned();
        for (who, verb) in [("alice", "--verify"), ("bob", "--approve")] {
            let o = self.as_person(
                who,
                &["key", "dispose", verb, &id, "--card-pin", "env:CARD_PIN"],
            )?;
            if !o.status.success() {
                return Err(
                    format!("{who} {verb} {id}: {}", String::from_utf8_lossy(&o.stderr)).into(),
                );
            }
        }
        Ok(id)
    }

    /// `kms ARGS` as `person`, with their card's PIN in CARD_PIN (pass `--card-pin env:CARD_PIN`).
    pub fn as_person(&self, person: &str, args: &[&str]) -> Res<std::process::Output> {
        Ok(self
            .kms_as(person)
            .env("CARD_PIN", card_pin(person))
            .args(args)
            .output()?)
    }
}
