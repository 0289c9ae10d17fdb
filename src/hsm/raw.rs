//! The PKCS#11 call cryptoki 0.12 cannot express: C_UnwrapKey with a template holding an
//! attribute *array* (CKA_UNWRAP_TEMPLATE). Used only to create the backup key-encryption keys, so that every key
//! ever unwrapped under them is forced to be private, sensitive and wrappable only under a trusted
//! key: without it, anyone with a user session could unwrap a kms key's backup blob as a
//! non-sensitive object and read it (C_UnwrapKey lets the caller choose the new key's template).
//!
//! The module's function list is fetched from the same library file cryptoki loaded (the same
//! process-wide instance), and the calls run on a cryptoki session's raw handle.

#![allow(unsafe_code)] // the one FFI exception of the crate: see the module doc

use std::path::Path;

use cryptoki::context::Function;
use cryptoki::error::Rv;
use cryptoki::session::Session;
use cryptoki_sys as sys;

use super::HsmError;

/// One attribute value of a raw template.
pub(super) enum Value {
    Bool(bool),
    Ulong(u64),
    Bytes(Vec<u8>),
    /// An attribute array (CKA_UNWRAP_TEMPLATE).
    Array(Vec<(sys::CK_ATTRIBUTE_TYPE, Value)>),
}

/// The attributes every key unwrapped under a backup KEK must carry.
pub(super) fn pinned_unwrap_template() -> Value {
    Value::Array(vec![
        (sys::CKA_PRIVATE, Value::Bool(true)),
        (sys::CKA_SENSITIVE, Value::Bool(true)),
        (sys::CKA_WRAP_WITH_TRUSTED, Value::Bool(true)),
        (sys::CKA_DERIVE, Value::Bool(false)),
    ])
}

/// A template laid out in memory the way C_* functions read it. The buffers are owned here and
/// outlive every pointer handed to the module.
struct Raw {
    attrs: Vec<sys::CK_ATTRIBUTE>,
    _bytes: Vec<Vec<u8>>,
    _nested: Vec<Raw>,
}

fn layout(items: &[(sys::CK_ATTRIBUTE_TYPE, Value)]) -> Raw {
    let mut bytes: Vec<Vec<u8>> = Vec::new();
    let mut nested: Vec<Raw> = Vec::new();
    let mut attrs = Vec::with_capacity(items.len());
    for (kind, value) in items {
        let (ptr, len) = match value {
            Value::Array(inner) => {
                let mut raw = layout(inner);
                let ptr = raw.attrs.as_mut_ptr().cast::<std::ffi::c_void>();
                let len = raw.attrs.len() * std::mem::size_of::<sys::CK_ATTRIBUTE>();
                nested.push(raw);
                (ptr, len)
            }
            other => {
                let mut b = match other {
                    Value::Bool(v) => vec![u8::from(*v)],
                    Value::Ulong(v) => (*v as sys::CK_ULONG).to_ne_bytes().to_vec(),
                    Value::Bytes(v) => v.clone(),
                    Value::Array(_) => Vec::new(),
                };
                let ptr = b.as_mut_ptr().cast::<std::ffi::c_void>();
                let len = b.len();
                bytes.push(b);
                (ptr, len)
            }
        };
        attrs.push(sys::CK_ATTRIBUTE {
            type_: *kind,
            pValue: ptr,
            ulValueLen: len as sys::CK_ULONG,
        });
    }
    Raw {
        attrs,
        _bytes: bytes,
        _nested: nested,
    }
}

/// The module's function list, from the library file cryptoki already loaded.
struct Functions {
    _lib: sys::Pkcs11,
    list: sys::CK_FUNCTION_LIST,
}

fn functions(module: &Path, token: &str) -> Result<Functions, HsmError> {
    // SAFETY: loading the PKCS#11 library cryptoki already loaded and initialised in this
    // process (dlopen returns the same instance); nothing runs at load beyond that.
    let lib = unsafe { sys::Pkcs11::new(module) }.map_err(|e| HsmError::Raw {
        token: token.to_owned(),
        what: format!("cannot load {}: {e}", module.display()),
    })?;
    let mut ptr: *mut sys::CK_FUNCTION_LIST = std::ptr::null_mut();
    // SAFETY: C_GetFunctionList writes one pointer to the module's static function table.
    let rv = unsafe { lib.C_GetFunctionList(&mut ptr) };
    Rv::from(rv)
        .into_result(Function::GetFunctionList)
        .map_err(HsmError::ck(token, "reading the function list"))?;
    if ptr.is_null() {
        return Err(HsmError::Raw {
            token: token.to_owned(),
            what: "C_GetFunctionList returned no table".into(),
        });
    }
    // SAFETY: non-null pointer to the module's function table, valid while the library is loaded.
    let list = unsafe { *ptr };
    Ok(Functions { _lib: lib, list })
}

/// The unwrapping mechanisms used with raw templates.
#[derive(Debug, Clone, Copy)]
pub(super) enum Unwrapping {
    /// RSA-OAEP, SHA-1, MGF1-SHA-1, no label (the ceremony's transport).
    RsaOaepSha1,
    /// CKM_AES_KEY_WRAP_PAD (RFC 5649).
    AesKeyWrapPad,
}

/// C_UnwrapKey under `unwrapping` with a template that may hold attribute arrays.
#[allow(clippy::too_many_arguments)] // a thin FFI wrapper: one argument per C_UnwrapKey input
pub(super) fn unwrap_key(
    module: &Path,
    token: &str,
    session: &Session,
    how: Unwrapping,
    unwrapping: cryptoki::object::ObjectHandle,
    wrapped: &[u8],
    template: &[(sys::CK_ATTRIBUTE_TYPE, Value)],
    what: &'static str,
) -> Result<(), HsmError> {
    let f = functions(module, token)?;
    let unwrap = f.list.C_UnwrapKey.ok_or_else(|| HsmError::Raw {
        token: token.to_owned(),
        what: "the module has no C_UnwrapKey".into(),
    })?;
    let mut raw = layout(template);
    let mut params = sys::CK_RSA_PKCS_OAEP_PARAMS {
        hashAlg: sys::CKM_SHA_1,
        mgf: sys::CKG_MGF1_SHA1,
        source: sys::CKZ_DATA_SPECIFIED,
        pSourceData: std::ptr::null_mut(),
        ulSourceDataLen: 0,
    };
    let mut mechanism = match how {
        Unwrapping::RsaOaepSha1 => sys::CK_MECHANISM {
            mechanism: sys::CKM_RSA_PKCS_OAEP,
            pParameter: (&mut params as *mut sys::CK_RSA_PKCS_OAEP_PARAMS).cast(),
            ulParameterLen: std::mem::size_of::<sys::CK_RSA_PKCS_OAEP_PARAMS>() as sys::CK_ULONG,
        },
        Unwrapping::AesKeyWrapPad => sys::CK_MECHANISM {
            mechanism: sys::CKM_AES_KEY_WRAP_PAD,
            pParameter: std::ptr::null_mut(),
            ulParameterLen: 0,
        },
    };
    let mut blob = wrapped.to_vec();
    let mut handle: sys::CK_OBJECT_HANDLE = 0;
    // SAFETY: every pointer refers to memory owned by `raw`, `params`, `mechanism`, `blob` and
    // `handle`, all alive for the call; the session handle is a live session of this module.
    let rv = unsafe {
        unwrap(
            session.handle(),
            &mut mechanism,
            unwrapping.handle(),
            blob.as_mut_ptr(),
            blob.len() as sys::CK_ULONG,
            raw.attrs.as_mut_ptr(),
            raw.attrs.len() as sys::CK_ULONG,
            &mut handle,
        )
    };
    Rv::from(rv)
        .into_result(Function::UnwrapKey)
        .map_err(HsmError::ck(token, what))
}
