//! Keys brought in (BYOK): `kms key import-key` gives the public half of kms's import key (an
//! RSA-3072 key that only unwraps, made on the key token and inventoried like every key);
//! `kms key import` unwraps key material wrapped to it *on the token* (see `hsm/import.rs`) and
//! records it with the same A8 fields, backup copy and audit as a generated key.

use super::keys::{CreateKey, Import};
use super::policy::require_role;
use super::{Caller, Engine, EngineError, Refusal};
use crate::hsm::{GeneratedKey, HsmError, Token};
use crate::inventory::KeyRecord;
use crate::model::{KeyType, ObjectId, Operation, Role};

/// The inventory name of kms's import key.
pub const IMPORT_KEY: &str = "kms-import";

impl Engine {
    /// The import key's public half (PEM), made on first use; what importers wrap to with
    /// RSA-OAEP (SHA-1, MGF1-SHA-1).
    pub fn import_key_pem(&self, caller: &Caller) -> Result<(String, u32), EngineError> {
        require_role(
            &self.inventory,
            caller,
            &[Role::SecurityOfficer],
            "fetch the import key",
        )?;
        let key = self.import_key_record()?;
        let v = key.current_version().ok_or_else(|| {
            EngineError::denied(
                Refusal::KeyState,
                format!("the import key '{IMPORT_KEY}' has no active version (`kms reconcile`)"),
            )
        })?;
        let der = v.public_key.as_deref().ok_or_else(|| {
            EngineError::Incomplete("the import key has no recorded public key".into())
        })?;
        let pem = der::pem::encode_string("PUBLIC KEY", der::pem::LineEnding::LF, der)
            .map_err(|e| EngineError::InvalidInput(format!("cannot encode PEM: {e}")))?;
        Ok((pem, v.version))
    }

    /// `kms key import`: a key of `req.key_type` from material wrapped to the import key.
    pub fn import_key(
        &self,
        caller: &Caller,
        mut req: CreateKey,
        import: Import,
    ) -> Result<KeyRecord, EngineError> {
        req.import = Some(import);
        self.create_key(caller, req)
    }

    fn import_key_record(&self) -> Result<KeyRecord, EngineError> {
        match self.inventory.key(IMPORT_KEY) {
            Ok(k) => Ok(k),
            Err(crate::inventory::InventoryError::NoSuchKey(_)) => {
                let req = CreateKey::internal(
                    IMPORT_KEY,
                    KeyType::Rsa3072,
                    "unwrap",
                    "unwraps keys brought in wrapped to it (kms key import, BYOK); never decrypts data",
                    "replace (and destroy) once no importer holds its public key any more",
                )?;
                let mut system = self.system_caller();
                system.reason = Some("import key, made on first use".into());
                self.create_key(&system, req)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Unwrap the material on `token` under the import key, then prove a key pair is whole: a
    /// signature made with the imported private key verifies with the public key.
    pub(super) fn import_material(
        &self,
        token: &Token,
        req: &CreateKey,
        import: &Import,
        id: &ObjectId,
        label: &str,
    ) -> Result<GeneratedKey, HsmError> {
        let wrong = |what: String| HsmError::Raw {
            token: token.name().to_owned(),
            what,
        };
        let key = self
            .import_key_record()
            .map_err(|e| wrong(format!("the import key: {e}")))?;
        let v = key
            .current_version()
            .ok_or_else(|| wrong("the import key has no active version".into()))?;
        if v.token_serial != token.serial() {
            return Err(wrong(format!(
                "the import key lives on token '{}', not on the key token '{}'",
                v.token,
                token.name()
            )));
        }
        let made = token.import_wrapped(
            &v.object_id,
            &import.wrapped,
            req.key_type,
            id,
            label,
            &req.usage,
            import.public_key.as_deref(),
        )?;
        if let (Some(spki), true) = (&made.public_key_der, req.usage.contains(Operation::Sign)) {
            let scheme = req
                .signature
                .or_else(|| req.key_type.signature_schemes().first().copied());
            if let Some(scheme) = scheme {
                let challenge: [u8; 32] = rand::random();
                let proven = super::crypto::prepare(
                    scheme,
                    super::ToSign::Message(&challenge),
                    (&req.name, req.key_type),
                )
                .ok()
                .and_then(|p| super::crypto::sign_prepared(token, id, scheme, &p).ok())
                .and_then(|sig| {
                    crate::softverify::verify_scheme(
                        scheme,
                        spki,
                        crate::softverify::Signed::Message(&challenge),
                        &sig,
                    )
                    .ok()
                })
                .unwrap_or(false);
                if !proven {
                    token.destroy(id)?;
                    return Err(wrong(
                        "the imported private key does not match the public key given: a signature made with it does not verify; nothing was kept".into(),
                    ));
                }
            }
        }
        Ok(made)
    }
}
