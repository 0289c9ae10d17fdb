//! Bringing a key in without it ever being plaintext outside a token (BYOK). The key arrives
//! wrapped the way CKM_RSA_AES_KEY_WRAP (and AWS KMS's RSA_AES_KEY_WRAP_SHA_1) wraps:
//!
//! ```text
//! RSA-OAEP(SHA-1, MGF1-SHA-1) of a fresh AES-256 key  (modulus length: 384 bytes for RSA-3072)
//! || AES key wrap with padding (RFC 5649) of the key material under that AES key
//! ```
//!
//! The material is the raw key for AES, HMAC and 3DES, and a PKCS#8 PrivateKeyInfo for RSA, EC
//! and Ed25519. SoftHSM2 lacks CKM_RSA_AES_KEY_WRAP, so the two halves are unwrapped here in two
//! C_UnwrapKey calls: the AES key as a non-extractable session object of this session, then the
//! key itself as a token object with kms's attribute policy. Neither ever exists in this process.

use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use cryptoki::session::Session;

use super::keygen::{ck_key_type, ec_params, secret_flags, GeneratedKey};
use super::objects::{find, KeyClass};
use super::{public_key, HsmError, Token};
use crate::model::{KeyType, ObjectId, Operation, OperationSet};

/// Why an import was refused, in words for the officer.
fn refused(token: &str, what: String) -> HsmError {
    HsmError::Raw {
        token: token.to_owned(),
        what,
    }
}

impl Token {
    /// Unwrap `blob` (see the module doc) under the import key `import_key` into a new key of
    /// `key_type` with CKA_ID `id`. For EC and Ed25519 keys the caller gives the public key
    /// (SPKI DER), which becomes the public object; for RSA it is read off the private key. On
    /// any failure nothing stays on the token under `id`.
    #[allow(clippy::too_many_arguments)]
    pub fn import_wrapped(
        &self,
        import_key: &ObjectId,
        blob: &[u8],
        key_type: KeyType,
        id: &ObjectId,
        label: &str,
        usage: &OperationSet,
        public_spki: Option<&[u8]>,
    ) -> Result<GeneratedKey, HsmError> {
        self.run(|s| {
            let result = import_in(
                self.name(),
                s,
                import_key,
                blob,
                key_type,
                id,
                label,
                usage,
                public_spki,
            );
            if result.is_err() {
                let _ = super::objects::destroy_id(self.name(), s, id);
            }
            result
        })
    }
}

#[allow(clippy::too_many_arguments)]
fn import_in(
    token: &str,
    s: &Session,
    import_key: &ObjectId,
    blob: &[u8],
    key_type: KeyType,
    id: &ObjectId,
    label: &str,
    usage: &OperationSet,
    public_spki: Option<&[u8]>,
) -> Result<GeneratedKey, HsmError> {
    let private = find(token, s, import_key, KeyClass::Private)?;
    let modulus = s
        .get_attributes(private, &[AttributeType::Modulus])
        .map_err(HsmError::ck(token, "reading the import key's modulus"))?
        .into_iter()
        .find_map(|a| match a {
            Attribute::Modulus(m) => Some(m.len()),
            _ => None,
        })
        .unwrap_or(0);
    if modulus == 0 || blob.len() <= modulus + 8 {
        return Err(refused(
            token,
            format!(
                "the wrapped key is {} bytes: it must be the RSA-OAEP-wrapped AES key ({modulus} bytes for this import key) followed by the AES-KWP-wrapped key material",
                blob.len()
            ),
        ));
    }
    let (wrapped_aes, wrapped_key) = blob.split_at(modulus);
    if let Some(want) = key_type.secret_len() {
        // RFC 5649 output is the material padded to whole 8-byte blocks plus 8: the token
        // checks the exact length inside the wrap; this tells a wrong-size key before that.
        // Every kms secret length is a multiple of 8, and no valid AES or 3DES key is shorter
        // by 1..7 bytes; an HMAC key that is shows as `want` (see docs/key-types.md).
        let padded = wrapped_key.len().saturating_sub(8);
        if padded != want {
            return Err(refused(
                token,
                format!(
                    "the wrapped key material is {padded} bytes (to the next 8): a {key_type} key is {want} bytes"
                ),
            ));
        }
    }
    let oaep = Mechanism::RsaPkcsOaep(PkcsOaepParams::new(
        MechanismType::SHA1,
        PkcsMgfType::MGF1_SHA1,
        PkcsOaepSource::empty(),
    ));
    let ephemeral = s
        .unwrap_key(
            &oaep,
            private,
            wrapped_aes,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(cryptoki::object::KeyType::AES),
                Attribute::Token(false),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Unwrap(true),
                Attribute::Wrap(false),
                Attribute::Encrypt(false),
                Attribute::Decrypt(false),
                Attribute::Derive(false),
            ],
        )
        .map_err(|e| {
            refused(
                token,
                format!(
                    "the wrapped AES key does not open with this import key ({e}): the blob was made for another import key, or is damaged; fetch the current one with `kms key import-key`"
                ),
            )
        })?;
    let template = import_template(key_type, id, label, usage);
    let unwrapped = s.unwrap_key(&Mechanism::AesKeyWrapPad, ephemeral, wrapped_key, &template);
    let _ = s.destroy_object(ephemeral);
    let handle = unwrapped.map_err(|e| {
        if key_type == KeyType::Ed25519
            && matches!(
                e,
                cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::FunctionFailed, _)
            )
        {
            // Measured on SoftHSM2 2.6.1: C_UnwrapKey of an Ed25519 PKCS#8 fails with
            // CKR_FUNCTION_FAILED (it unwraps RSA and EC PKCS#8 fine).
            return refused(
                token,
                format!(
                    "this token cannot unwrap Ed25519 private keys ({e}; SoftHSM2 2.6.1 does not); generate the Ed25519 key on the token instead (`kms key create --type ed25519`)"
                ),
            );
        }
        refused(
            token,
            format!(
                "the key material does not unwrap as {key_type} ({e}): wrong type, or damaged data"
            ),
        )
    })?;
    check_imported(token, s, handle, key_type)?;
    let public_key_der = if key_type.is_symmetric() {
        None
    } else {
        create_public(token, s, handle, key_type, id, label, usage, public_spki)?;
        Some(public_key::export(token, s, id, key_type)?)
    };
    if let (Some(given), Some(made)) = (public_spki, &public_key_der) {
        if given != made.as_slice() {
            return Err(refused(
                token,
                "the public key given does not encode like the one kms made from it".into(),
            ));
        }
    }
    Ok(GeneratedKey {
        id: id.clone(),
        public_key_der,
    })
}

fn import_template(
    key_type: KeyType,
    id: &ObjectId,
    label: &str,
    usage: &OperationSet,
) -> Vec<Attribute> {
    let mut t = vec![
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(true),
        Attribute::WrapWithTrusted(true),
        Attribute::KeyType(ck_key_type(key_type)),
    ];
    if key_type.is_symmetric() {
        t.push(Attribute::Class(ObjectClass::SECRET_KEY));
        t.extend(secret_flags(usage));
        // CKA_VALUE_LEN cannot be given to C_UnwrapKey (SoftHSM2: CKR_ATTRIBUTE_READ_ONLY);
        // the length is checked from the wrapped size before, and read back after.
    } else {
        t.extend([
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Sign(usage.contains(Operation::Sign)),
            Attribute::Decrypt(usage.contains(Operation::Decrypt)),
            Attribute::Unwrap(usage.contains(Operation::Unwrap)),
            Attribute::Derive(false),
        ]);
    }
    t.extend([
        Attribute::Id(id.0.clone()),
        Attribute::Label(label.as_bytes().to_vec()),
        // SoftHSM2 applies unwrap templates in order: MODIFIABLE=false must come last.
        Attribute::Modifiable(false),
    ]);
    t
}

/// The unwrapped key is what was declared: length for secret keys, modulus size or curve for
/// key pairs, and as sensitive as asked.
fn check_imported(
    token: &str,
    s: &Session,
    handle: cryptoki::object::ObjectHandle,
    key_type: KeyType,
) -> Result<(), HsmError> {
    let attrs = s
        .get_attributes(
            handle,
            &[
                AttributeType::Sensitive,
                AttributeType::WrapWithTrusted,
                AttributeType::ValueLen,
                AttributeType::Modulus,
                AttributeType::EcParams,
            ],
        )
        .map_err(HsmError::ck(token, "reading the imported key back"))?;
    let (mut sensitive, mut wwt, mut len, mut modulus, mut params) =
        (false, false, None, None, None);
    for a in attrs {
        match a {
            Attribute::Sensitive(v) => sensitive = v,
            Attribute::WrapWithTrusted(v) => wwt = v,
            Attribute::ValueLen(v) => len = Some(u64::from(v) as usize),
            Attribute::Modulus(m) => modulus = Some(m),
            Attribute::EcParams(p) => params = Some(p),
            _ => {}
        }
    }
    if !sensitive || !wwt {
        return Err(refused(
            token,
            "the imported key is not sensitive and wrap-with-trusted as asked".into(),
        ));
    }
    if let (Some(want), Some(got)) = (key_type.secret_len(), len) {
        if got != 0 && got != want {
            return Err(refused(
                token,
                format!("the key material is {got} bytes; a {key_type} key is {want}"),
            ));
        }
    }
    if let Some(bits) = key_type.rsa_bits() {
        let got = modulus.as_ref().map(|m| m.len() * 8).unwrap_or(0);
        if got != bits as usize {
            return Err(refused(
                token,
                format!("the RSA key has a {got}-bit modulus; a {key_type} key has {bits}"),
            ));
        }
    }
    if let Some(want) = ec_params(key_type) {
        if params.as_deref() != Some(want) {
            return Err(refused(
                token,
                format!("the key is not on the curve of a {key_type} key"),
            ));
        }
    }
    Ok(())
}

/// The public object of an imported key pair: RSA from the private key's public attributes; EC
/// and Ed25519 from the public key the importer gave.
#[allow(clippy::too_many_arguments)]
fn create_public(
    token: &str,
    s: &Session,
    private: cryptoki::object::ObjectHandle,
    key_type: KeyType,
    id: &ObjectId,
    label: &str,
    usage: &OperationSet,
    public_spki: Option<&[u8]>,
) -> Result<(), HsmError> {
    let mut t = vec![
        Attribute::Class(ObjectClass::PUBLIC_KEY),
        Attribute::KeyType(ck_key_type(key_type)),
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Id(id.0.clone()),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Verify(usage.contains(Operation::Verify)),
        Attribute::Encrypt(usage.contains(Operation::Encrypt)),
        Attribute::Wrap(usage.contains(Operation::Wrap)),
    ];
    if key_type.rsa_bits().is_some() {
        let attrs = s
            .get_attributes(
                private,
                &[AttributeType::Modulus, AttributeType::PublicExponent],
            )
            .map_err(HsmError::ck(
                token,
                "reading the imported RSA key's public half",
            ))?;
        t.extend(attrs);
    } else {
        let spki = public_spki.ok_or_else(|| {
            refused(
                token,
                format!("a {key_type} import needs its public key (--public FILE, PEM)"),
            )
        })?;
        let point = crate::softverify::point_of_spki(key_type, spki)
            .map_err(|e| refused(token, format!("the public key given: {e}")))?;
        let params = ec_params(key_type).unwrap_or_default().to_vec();
        let point = der::Encode::to_der(
            &der::asn1::OctetString::new(point)
                .map_err(|e| refused(token, format!("encoding the point: {e}")))?,
        )
        .map_err(|e| refused(token, format!("encoding the point: {e}")))?;
        t.extend([Attribute::EcParams(params), Attribute::EcPoint(point)]);
    }
    t.push(Attribute::Modifiable(false));
    s.create_object(&t).map_err(HsmError::ck(
        token,
        "creating the imported key's public object",
    ))?;
    Ok(())
}

impl Token {
    /// Put a secret key given in the clear on the token as a sensitive object (extractable only
    /// under a trusted key, like a generated one), after checking its length for the type.
    pub fn create_secret(
        &self,
        key_type: KeyType,
        id: &ObjectId,
        label: &str,
        usage: &OperationSet,
        value: &[u8],
    ) -> Result<GeneratedKey, HsmError> {
        if key_type.secret_len().is_none() {
            return Err(refused(
                self.name(),
                format!("{key_type} is not a secret-key type"),
            ));
        }
        let allowed = key_type.registered_len();
        if !allowed.contains(&value.len()) {
            return Err(refused(
                self.name(),
                if allowed.start() == allowed.end() {
                    format!(
                        "the key is {} bytes; a {key_type} key is {}",
                        value.len(),
                        allowed.start()
                    )
                } else {
                    format!(
                        "the value is {} bytes; a {key_type} value is {} to {} bytes",
                        value.len(),
                        allowed.start(),
                        allowed.end()
                    )
                },
            ));
        }
        let mut template = vec![
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(ck_key_type(key_type)),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(true),
            Attribute::WrapWithTrusted(super::keygen::wrap_with_trusted(key_type)),
            Attribute::Id(id.0.clone()),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Value(if key_type.is_revealable() {
                super::reveal::encode_secret(value).to_vec()
            } else {
                value.to_vec()
            }),
        ];
        template.extend(secret_flags(usage));
        template.push(Attribute::Modifiable(false));
        let made = self.run(|s| {
            s.create_object(&template).map_err(HsmError::ck(
                self.name(),
                "putting the key on the token (C_CreateObject)",
            ))
        });
        for a in &mut template {
            if let Attribute::Value(v) = a {
                zeroize::Zeroize::zeroize(v);
            }
        }
        made?;
        Ok(GeneratedKey {
            id: id.clone(),
            public_key_der: None,
        })
    }
}
