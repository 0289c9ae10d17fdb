//! `kms key ...`

use std::path::PathBuf;

use clap::Subcommand;

use super::args::{parse_date, parse_iv, parse_label};
use super::io::{read_input, write_output};
use super::output::{print_json, print_key, print_table};
use super::CliError;
use crate::duration::HumanDuration;
use crate::engine::{Caller, CreateKey, Engine};
use crate::model::KeyFilter;
use crate::model::{Classification, KeyType, OperationSet, SignatureScheme};

#[derive(Debug, Subcommand)]
pub enum KeyCmd {
    /// Generate a key on the key token and record it in the inventory.
    Create {
        /// Unique name (letters, digits, '-', '_', '.').
        name: String,
        #[command(flatten)]
        fields: KeyFields,
        /// Generate the key on the PIV smartcard with this serial (ec-p384, sign/verify), not on
        /// the HSM: it never leaves the card.
        #[arg(long, value_name = "SERIAL")]
        on_card: Option<u32>,
        /// The card slot: 9a, 9c, 9d, 9e or 82..95.
        #[arg(long, requires = "on_card", default_value = "9a")]
        slot: String,
        /// With --on-card: PIN source for the card (default: [cards.SERIAL] pin, else prompt).
        #[arg(long, value_name = "SOURCE", requires = "on_card")]
        card_pin: Option<String>,
        /// With --on-card: source of the card's management key (hex); default the factory key.
        #[arg(long, value_name = "SOURCE", requires = "on_card")]
        mgm_key_source: Option<String>,
        /// With --on-card: overwrite a key already in the slot (recorded).
        #[arg(long, requires = "on_card")]
        force: bool,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Every access to one key: who, when, why, from where, with what outcome.
    History {
        name: String,
        #[arg(long, default_value_t = u32::MAX)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    /// Remove a key whose creation never finished (all versions pending), token objects included.
    Abandon { name: String },
    /// The public half (PEM) of kms's import key (RSA-3072, made on first use): wrap key material
    /// to it for `kms key import` (RSA-OAEP SHA-1 of a fresh AES-256 key, then RFC 5649 key wrap
    /// of the material under that key; see README "Bringing keys in").
    ImportKey {
        /// Write here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Import a key wrapped to the import key: unwrapped on the token, never in kms's memory.
    Import {
        /// Unique name (letters, digits, '-', '_', '.').
        name: String,
        #[command(flatten)]
        fields: KeyFields,
        /// The wrapped key: RSA-OAEP(AES key) || AES-KWP(material); material is the raw key
        /// (AES, HMAC, 3DES) or PKCS#8 DER (RSA, EC, Ed25519).
        #[arg(long, value_name = "FILE")]
        wrapped: PathBuf,
        /// EC and Ed25519 keys: the public key (PEM), proven against the private one.
        #[arg(long, value_name = "FILE")]
        public: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Take a key that already sits on a configured token into the inventory (same A8 fields).
    /// Weak keys (not sensitive, extractable under any key, once in the clear) are refused
    /// unless --accept-weak gives the reason, which the inventory shows.
    Adopt {
        /// Unique name (letters, digits, '-', '_', '.').
        name: String,
        #[command(flatten)]
        fields: KeyFields,
        /// Where the key is: pkcs11:token=LABEL;id=%01%02… (or object=LABEL).
        #[arg(long, value_name = "URI")]
        uri: String,
        /// Adopt a weak key anyway, for this reason (recorded).
        #[arg(long, value_name = "REASON")]
        accept_weak: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// The key inventory.
    List {
        #[arg(long)]
        owner: Option<String>,
        #[arg(long)]
        classification: Option<Classification>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// One key with every inventory field and its versions.
    Show {
        name: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// The public key as PEM SubjectPublicKeyInfo (what `openssl pkey -pubin` reads).
    Public {
        name: String,
        /// Write here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Sign a file: ECDSA P-384/SHA-384 (DER) or RSA-PSS/SHA-256 (salt 32).
    Sign {
        name: String,
        /// Message file ('-' for standard input).
        #[arg(long = "in", value_name = "FILE")]
        input: PathBuf,
        /// Signature file (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// A MAC of a file, made on the token (HMAC keys: hmac-sha256, hmac-sha384); raw tag bytes.
    Mac {
        name: String,
        /// Message file ('-' for standard input).
        #[arg(long = "in", value_name = "FILE")]
        input: PathBuf,
        /// Tag file (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Check a MAC on the token (C_Verify); exit 0 only when valid.
    VerifyMac {
        name: String,
        #[arg(long = "in", value_name = "FILE")]
        input: PathBuf,
        /// The tag (raw bytes).
        #[arg(long, value_name = "FILE")]
        tag: PathBuf,
    },
    /// Give a legacy (des3) key its AES successor: `kms key rewrap NAME` then re-encrypts its
    /// ciphertexts to AES-GCM under it, and the legacy key decrypts only.
    Migrate {
        name: String,
        /// The successor's type: aes-256 or aes-128.
        #[arg(long, value_name = "TYPE")]
        to: KeyType,
        /// The successor's name (default NAME.aes256 / NAME.aes128).
        #[arg(long, value_name = "NAME")]
        successor: Option<String>,
    },
    /// Verify a signature in software from the stored public key; exit 0 only when valid.
    Verify {
        name: String,
        #[arg(long = "in", value_name = "FILE")]
        input: PathBuf,
        #[arg(long, value_name = "FILE")]
        sig: PathBuf,
    },
    /// Encrypt a file (AES-256-GCM for aes-256 keys, RSA-OAEP for small data with RSA keys).
    Encrypt {
        name: String,
        #[arg(long = "in", value_name = "FILE")]
        input: PathBuf,
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Additional authenticated data (AES-256-GCM only); the same text is needed to decrypt.
        #[arg(long, value_name = "TEXT")]
        aad: Option<String>,
    },
    /// Decrypt a file made by `kms key encrypt` (output created 0600).
    Decrypt {
        name: String,
        #[arg(long = "in", value_name = "FILE")]
        input: PathBuf,
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        #[arg(long, value_name = "TEXT")]
        aad: Option<String>,
        /// Security officer only, with --reason: decrypt data of a compromised version.
        #[arg(long)]
        break_glass: bool,
        /// The input is a raw 3DES-CBC ciphertext (as `openssl enc -des-ede3-cbc` writes it)
        /// made with this IV (16 hex digits), not a kms envelope. des3 keys only.
        #[arg(long, value_name = "HEX")]
        iv: Option<String>,
        /// With --iv: the key version that made it (default: the newest not destroyed).
        #[arg(long, value_name = "N", requires = "iv")]
        key_version: Option<u32>,
    },
    /// Rotate now: a new version on the device; the old one decrypts/verifies only for the
    /// key's re-encryption window, then is destroyed on every token.
    Rotate(super::lifecycle::RotateArgs),
    /// Declare a version compromised (--reason required): out of service at once, replaced, with
    /// a report of who used it; --status shows it, --close destroys the version.
    Compromise(super::lifecycle::CompromiseArgs),
    /// Dispose of a key on contract termination: request (--contract-ref, --justification),
    /// --verify / --approve (signed on cards), --cancel, --execute after the waiting period.
    Dispose(super::lifecycle::DisposeArgs),
    /// Disposal requests; --show ID for one with its signatures and destruction record.
    Disposals(super::lifecycle::DisposalsArgs),
    /// Move a ciphertext or wrapped data key to the key's current version.
    Rewrap(super::lifecycle::RewrapArgs),
}

/// The inventory fields (A8) of a new key, shared by `create` and `import`.
#[derive(Debug, clap::Args)]
pub struct KeyFields {
    /// aes-128 | aes-256 | ec-p256 | ec-p384 | ec-p521 | ed25519 | rsa-2048 | rsa-3072 |
    /// rsa-4096 | hmac-sha256 | hmac-sha384 | des3 (legacy: needs --legacy)
    #[arg(long = "type", value_name = "TYPE")]
    pub key_type: KeyType,
    /// Responsible person or team.
    #[arg(long)]
    pub owner: String,
    /// confidential | restricted | public
    #[arg(long)]
    pub classification: Classification,
    /// Allowed operations, comma-separated: sign, verify, encrypt, decrypt, wrap, unwrap,
    /// mac, verify-mac (HMAC keys).
    #[arg(long, value_name = "OPS")]
    pub usage: OperationSet,
    /// RSA keys: the one signature scheme the key signs with: rsa-pss-sha256 (default) or
    /// rsa-pkcs1-sha256 (PKCS#1 v1.5, for verifiers that need it).
    #[arg(long, value_name = "SCHEME")]
    pub signature: Option<SignatureScheme>,
    /// Create a legacy-type key (des3): only to read old data and migrate it to AES.
    #[arg(long)]
    pub legacy: bool,
    /// A legacy key may also encrypt (recorded in the inventory); without it, it only decrypts.
    #[arg(long)]
    pub allow_legacy_encrypt: bool,
    /// What the key is for (acceptable usage).
    #[arg(long, default_value = "")]
    pub purpose: String,
    /// Handling guidelines: storage, sharing.
    #[arg(long, default_value = "")]
    pub handling: String,
    /// Disposal / return process.
    #[arg(long, default_value = "")]
    pub disposal: String,
    /// Rotation period (default from config, normally 90d).
    #[arg(long, value_name = "DURATION")]
    pub rotate_every: Option<HumanDuration>,
    /// Expiry date, YYYY-MM-DD.
    #[arg(long, value_name = "DATE", value_parser = parse_date)]
    pub expires: Option<time::Date>,
    /// Free label, key=value; repeatable.
    #[arg(long = "label", value_name = "K=V", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// After a rotation, how long the old version still decrypts/unwraps/verifies before it
    /// is destroyed (e.g. 7d; 0 destroys it at once). Default: [lifecycle] reencrypt_window.
    #[arg(long, value_name = "DURATION", value_parser = crate::config::parse_window)]
    pub reencrypt_window: Option<u64>,
    /// Originator usage period of each version: no new sign/encrypt/wrap after it.
    #[arg(long, value_name = "DURATION")]
    pub protect_for: Option<HumanDuration>,
    /// Recipient usage period of each version: no decrypt/unwrap/verify after it either.
    #[arg(long, value_name = "DURATION")]
    pub process_for: Option<HumanDuration>,
}

impl KeyFields {
    fn request(self, name: String) -> CreateKey {
        let mut req = CreateKey::new(
            name,
            self.key_type,
            self.owner,
            self.classification,
            self.usage,
        );
        req.purpose = self.purpose;
        req.handling = self.handling;
        req.disposal = self.disposal;
        req.rotate_every = self.rotate_every;
        req.expires = self.expires;
        req.labels = self.labels.into_iter().collect();
        req.reencrypt_window_secs = self.reencrypt_window;
        req.protect_for = self.protect_for;
        req.process_for = self.process_for;
        req.signature = self.signature;
        req.legacy = self.legacy;
        req.allow_legacy_encrypt = self.allow_legacy_encrypt;
        req
    }
}

pub fn run(engine: &Engine, caller: &Caller, cmd: KeyCmd) -> Result<(), CliError> {
    match cmd {
        KeyCmd::Create {
            name,
            fields,
            on_card,
            slot,
            card_pin,
            mgm_key_source,
            force,
            json,
        } => {
            let card = match on_card {
                None => None,
                Some(serial) => Some(crate::engine::OnCard {
                    serial,
                    slot,
                    pin: card_pin
                        .as_deref()
                        .map(super::args::pin_source)
                        .transpose()?,
                    mgm: mgm_key_source
                        .as_deref()
                        .map(super::args::pin_source)
                        .transpose()?,
                    force,
                }),
            };
            let mut req = fields.request(name);
            req.on_card = card;
            let key = engine.create_key(caller, req)?;
            if json {
                return print_json(&key);
            }
            let v = key.current_version();
            outln!(
                "created key '{}' ({}, id {}) on token '{}' as CKA_ID {}",
                key.name,
                key.key_type,
                key.id,
                v.map(|v| v.token.as_str()).unwrap_or("-"),
                v.map(|v| v.object_id.to_hex()).unwrap_or_default()
            );
            Ok(())
        }
        KeyCmd::ImportKey { out } => {
            let (pem, v) = engine.import_key_pem(caller)?;
            write_output(out.as_deref(), pem.as_bytes(), false)?;
            if out.is_some() {
                errln!("import key '{}' v{v}", crate::engine::IMPORT_KEY);
            }
            Ok(())
        }
        KeyCmd::Import {
            name,
            fields,
            wrapped,
            public,
            json,
        } => {
            let wrapped = read_input(&wrapped)?;
            let public_key = match public {
                None => None,
                Some(p) => Some(
                    crate::softverify::any_spki_from_pem(&read_input(&p)?)
                        .map_err(|e| CliError::Usage(format!("--public {}: {e}", p.display())))?,
                ),
            };
            let key = engine.import_key(
                caller,
                fields.request(name),
                crate::engine::Import {
                    wrapped,
                    public_key,
                    plain: None,
                },
            )?;
            if json {
                return print_json(&key);
            }
            let v = key.current_version();
            outln!(
                "imported key '{}' ({}, id {}) on token '{}' as CKA_ID {}",
                key.name,
                key.key_type,
                key.id,
                v.map(|v| v.token.as_str()).unwrap_or("-"),
                v.map(|v| v.object_id.to_hex()).unwrap_or_default()
            );
            Ok(())
        }
        KeyCmd::Adopt {
            name,
            fields,
            uri,
            accept_weak,
            json,
        } => {
            let key = engine.adopt_key(
                caller,
                fields.request(name),
                crate::engine::Adopt { uri, accept_weak },
            )?;
            if json {
                return print_json(&key);
            }
            outln!(
                "adopted key '{}' ({}, id {}){}",
                key.name,
                key.key_type,
                key.id,
                key.weak_reason
                    .as_deref()
                    .map(|w| format!(" -- WEAK: {w}"))
                    .unwrap_or_default()
            );
            Ok(())
        }
        KeyCmd::List {
            owner,
            classification,
            json,
        } => {
            let keys = engine.list_keys(
                caller,
                &KeyFilter {
                    owner,
                    classification,
                },
            )?;
            if json {
                return print_json(&keys);
            }
            let rows: Vec<Vec<String>> = keys
                .iter()
                .map(|k| {
                    vec![
                        k.name.clone(),
                        k.key_type.to_string(),
                        k.owner.clone(),
                        k.classification.to_string(),
                        k.usage.to_string(),
                        k.current_version()
                            .map(|v| format!("v{}", v.version))
                            .unwrap_or_else(|| "none".into()),
                        k.rotation_due()
                            .map(|t| t.date().to_string())
                            .unwrap_or_else(|| "-".into()),
                        k.expires
                            .map(|d| d.to_string())
                            .unwrap_or_else(|| "-".into()),
                    ]
                })
                .collect();
            print_table(
                &[
                    "NAME",
                    "TYPE",
                    "OWNER",
                    "CLASSIFICATION",
                    "USAGE",
                    "CURRENT",
                    "ROTATE-BY",
                    "EXPIRES",
                ],
                &rows,
            );
            Ok(())
        }
        KeyCmd::History { name, limit, json } => {
            let rows = engine.key_history(caller, &name, limit)?;
            if json {
                return print_json(&rows);
            }
            super::output::print_rows(&rows);
            Ok(())
        }
        KeyCmd::Abandon { name } => {
            let n = engine.abandon_key(caller, &name)?;
            outln!("abandoned key '{name}' ({n} token object(s) destroyed)");
            Ok(())
        }
        KeyCmd::Show { name, json } => {
            let key = engine.show_key(caller, &name)?;
            if json {
                return print_json(&key);
            }
            print_key(&key, engine.config());
            Ok(())
        }
        KeyCmd::Public { name, out } => {
            let (pem, _) = engine.public_key_pem(caller, &name)?;
            write_output(out.as_deref(), pem.as_bytes(), false)
        }
        KeyCmd::Sign { name, input, out } => {
            let message = read_input(&input)?;
            let signed = engine.sign(caller, &name, &message)?;
            write_output(out.as_deref(), &signed.signature, false)?;
            if out.is_some() {
                errln!("signed with key '{name}' v{}", signed.key_version);
            }
            Ok(())
        }
        KeyCmd::Verify { name, input, sig } => {
            let message = read_input(&input)?;
            let signature = read_input(&sig)?;
            let outcome = engine.verify(caller, &name, &message, &signature)?;
            match outcome.key_version {
                Some(v) if outcome.valid => {
                    outln!("signature valid (key '{name}' v{v})");
                    Ok(())
                }
                _ => Err(CliError::Negative(format!(
                    "signature NOT valid for key '{name}'"
                ))),
            }
        }
        KeyCmd::Encrypt {
            name,
            input,
            out,
            aad,
        } => {
            let plaintext = zeroize::Zeroizing::new(read_input(&input)?);
            let aad = aad.unwrap_or_default();
            let (ct, _) = engine.encrypt(caller, &name, &plaintext, aad.as_bytes())?;
            write_output(Some(&out), &ct, false)
        }
        KeyCmd::Decrypt {
            name,
            input,
            out,
            aad,
            break_glass,
            iv,
            key_version,
        } => {
            let mut ct = read_input(&input)?;
            if let Some(iv) = iv {
                ct = engine.legacy_envelope(&name, key_version, &parse_iv(&iv)?, &ct)?;
            }
            let aad = aad.unwrap_or_default();
            let (pt, _) = if break_glass {
                engine.decrypt_break_glass(caller, &name, &ct, aad.as_bytes())?
            } else {
                engine.decrypt(caller, &name, &ct, aad.as_bytes())?
            };
            write_output(Some(&out), &pt, true)
        }
        KeyCmd::Mac { name, input, out } => {
            let message = read_input(&input)?;
            let mac = engine.mac(caller, &name, &message)?;
            write_output(out.as_deref(), &mac.tag, false)?;
            if out.is_some() {
                errln!("{} with key '{name}' v{}", mac.algorithm, mac.key_version);
            }
            Ok(())
        }
        KeyCmd::VerifyMac { name, input, tag } => {
            let message = read_input(&input)?;
            let tag = read_input(&tag)?;
            let outcome = engine.verify_mac(caller, &name, &message, &tag)?;
            match outcome.key_version {
                Some(v) if outcome.valid => {
                    outln!("MAC valid (key '{name}' v{v})");
                    Ok(())
                }
                _ => Err(CliError::Negative(format!(
                    "MAC NOT valid for key '{name}'"
                ))),
            }
        }
        KeyCmd::Migrate {
            name,
            to,
            successor,
        } => {
            let key = engine.migrate_key(caller, &name, to, successor.as_deref())?;
            outln!(
                "key '{name}' ({}) migrates to '{}': re-encrypt its ciphertexts with `kms key rewrap {name} --in FILE --out FILE` (add --iv HEX for raw openssl 3DES-CBC data); it decrypts only from now on",
                key.key_type,
                key.migrated_to.as_deref().unwrap_or("-")
            );
            Ok(())
        }
        KeyCmd::Rotate(a) => super::lifecycle::rotate(engine, caller, a),
        KeyCmd::Compromise(a) => super::lifecycle::compromise(engine, caller, a),
        KeyCmd::Dispose(a) => super::lifecycle::dispose(engine, caller, a),
        KeyCmd::Disposals(a) => super::lifecycle::disposals(engine, caller, a),
        KeyCmd::Rewrap(a) => super::lifecycle::rewrap(engine, caller, a),
    }
}
