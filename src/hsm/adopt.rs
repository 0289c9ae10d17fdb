//! Adopting a key that already sits on a configured token (`kms key adopt --uri pkcs11:…`):
//! find it by CKA_ID or label, read what it is and how well it is protected, and give it kms's
//! label. Nothing is generated, copied out or destroyed here: a refused adoption leaves the
//! object exactly as it was.

use cryptoki::object::{Attribute, AttributeType, KeyType as CkKeyType, ObjectClass};

use super::{HsmError, Token};
use crate::model::{KeyType, ObjectId};

/// What kms found on the token for an adoption.
#[derive(Debug, Clone)]
pub struct Adoptable {
    pub id: ObjectId,
    /// The kms type the object is (RSA by modulus size, EC by curve, secret keys by length).
    pub key_type: Option<KeyType>,
    /// PKCS#11's words for what it is, for messages (`CKK_EC secp256r1`, `CKK_AES 16 bytes`).
    pub described: String,
    pub sensitive: bool,
    pub extractable: bool,
    pub wrap_with_trusted: bool,
    pub always_sensitive: bool,
    pub never_extractable: bool,
    pub modifiable: bool,
}

impl Adoptable {
    /// Why the key is weaker than a kms-generated one; empty when it is not.
    pub fn weaknesses(&self) -> Vec<&'static str> {
        let mut w = Vec::new();
        if !self.sensitive {
            w.push("not sensitive (CKA_SENSITIVE=false): its value can be read off the token in the clear");
        }
        if self.extractable && !self.wrap_with_trusted {
            w.push("extractable under any wrapping key (CKA_EXTRACTABLE=true without CKA_WRAP_WITH_TRUSTED)");
        }
        if !self.always_sensitive && self.sensitive {
            w.push(
                "not always sensitive (CKA_ALWAYS_SENSITIVE=false): it existed in the clear before",
            );
        }
        w
    }
}

impl Token {
    /// Find the one private or secret key named by `id` and/or `label` and describe it.
    pub fn inspect_for_adoption(
        &self,
        id: Option<&[u8]>,
        label: Option<&str>,
    ) -> Result<Adoptable, HsmError> {
        let name = self.name().to_owned();
        let refused = |what: String| HsmError::Raw {
            token: name.clone(),
            what,
        };
        self.run(|s| {
            let mut found = Vec::new();
            for class in [ObjectClass::PRIVATE_KEY, ObjectClass::SECRET_KEY] {
                let mut t = vec![Attribute::Class(class)];
                if let Some(id) = id {
                    t.push(Attribute::Id(id.to_vec()));
                }
                if let Some(l) = label {
                    t.push(Attribute::Label(l.as_bytes().to_vec()));
                }
                let hs = s
                    .find_objects(&t)
                    .map_err(HsmError::ck(self.name(), "finding the key to adopt"))?;
                found.extend(hs.into_iter().map(|h| (h, class)));
            }
            let (handle, class) = match found.as_slice() {
                [one] => *one,
                [] => {
                    return Err(refused(
                        "no private or secret key matches the URI (check id= / object=)".into(),
                    ))
                }
                _ => {
                    return Err(refused(format!(
                        "{} keys match the URI; name exactly one (add id=)",
                        found.len()
                    )))
                }
            };
            let attrs = s
                .get_attributes(
                    handle,
                    &[
                        AttributeType::Id,
                        AttributeType::KeyType,
                        AttributeType::Sensitive,
                        AttributeType::Extractable,
                        AttributeType::WrapWithTrusted,
                        AttributeType::AlwaysSensitive,
                        AttributeType::NeverExtractable,
                        AttributeType::Modifiable,
                        AttributeType::ValueLen,
                        AttributeType::Modulus,
                        AttributeType::EcParams,
                    ],
                )
                .map_err(HsmError::ck(self.name(), "reading the key to adopt"))?;
            let mut a = Adoptable {
                id: ObjectId(Vec::new()),
                key_type: None,
                described: String::new(),
                sensitive: false,
                extractable: true,
                wrap_with_trusted: false,
                always_sensitive: false,
                never_extractable: false,
                modifiable: false,
            };
            let (mut ck, mut len, mut bits, mut params) = (None, None, None, None);
            for attr in attrs {
                match attr {
                    Attribute::Id(v) => a.id = ObjectId(v),
                    Attribute::KeyType(t) => ck = Some(t),
                    Attribute::Sensitive(v) => a.sensitive = v,
                    Attribute::Extractable(v) => a.extractable = v,
                    Attribute::WrapWithTrusted(v) => a.wrap_with_trusted = v,
                    Attribute::AlwaysSensitive(v) => a.always_sensitive = v,
                    Attribute::NeverExtractable(v) => a.never_extractable = v,
                    Attribute::Modifiable(v) => a.modifiable = v,
                    Attribute::ValueLen(v) => len = Some(u64::from(v) as usize),
                    Attribute::Modulus(m) => bits = Some(m.len() * 8),
                    Attribute::EcParams(p) => params = Some(p),
                    _ => {}
                }
            }
            if a.id.0.is_empty() {
                return Err(refused(
                    "the key has no CKA_ID; kms finds keys by CKA_ID, so give it one first".into(),
                ));
            }
            let secret = class == ObjectClass::SECRET_KEY;
            a.key_type = KeyType::ALL.into_iter().find(|t| {
                t.is_symmetric() == secret
                    && Some(super::keygen::ck_key_type(*t)) == ck
                    && match (t.secret_len(), t.rsa_bits(), super::keygen::ec_params(*t)) {
                        (Some(n), _, _) => *t == KeyType::Des3 || len == Some(n),
                        (_, Some(b), _) => bits == Some(b as usize),
                        (_, _, Some(p)) => params.as_deref() == Some(p),
                        _ => false,
                    }
            });
            a.described = format!(
                "{} {}",
                ck.map(|t| format!("{t:?}"))
                    .unwrap_or_else(|| "unknown type".into()),
                match (len, bits) {
                    (Some(n), _) if n > 0 => format!("{n} bytes"),
                    (_, Some(b)) => format!("{b} bits"),
                    _ => String::new(),
                }
            );
            if ck == Some(CkKeyType::GENERIC_SECRET) && a.key_type.is_none() {
                a.described.push_str(" (HMAC keys are 32 or 48 bytes)");
            }
            Ok(a)
        })
    }

    /// Give an adopted key (and its public half) kms's label.
    pub fn relabel(&self, id: &ObjectId, label: &str) -> Result<(), HsmError> {
        self.run(|s| {
            let hs = s
                .find_objects(&[Attribute::Id(id.0.clone())])
                .map_err(HsmError::ck(
                    self.name(),
                    "finding the adopted key's objects",
                ))?;
            for h in hs {
                s.update_attributes(h, &[Attribute::Label(label.as_bytes().to_vec())])
                    .map_err(HsmError::ck(
                        self.name(),
                        "labelling the adopted key (C_SetAttributeValue)",
                    ))?;
            }
            self.forget_handles();
            Ok(())
        })
    }
}
