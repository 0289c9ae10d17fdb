//! The KMIP 1.x tags and enumeration values kms reads or writes (KMIP 1.4, §9.1.3).

pub const ATTRIBUTE: u32 = 0x420008;
pub const ATTRIBUTE_NAME: u32 = 0x42000A;
pub const ATTRIBUTE_VALUE: u32 = 0x42000B;
pub const BATCH_COUNT: u32 = 0x42000D;
pub const BATCH_ITEM: u32 = 0x42000F;
pub const BLOCK_CIPHER_MODE: u32 = 0x420011;
pub const CRYPTOGRAPHIC_ALGORITHM: u32 = 0x420028;
pub const CRYPTOGRAPHIC_LENGTH: u32 = 0x42002A;
pub const CRYPTOGRAPHIC_PARAMETERS: u32 = 0x42002B;
pub const IV_COUNTER_NONCE: u32 = 0x42003D;
pub const KEY_BLOCK: u32 = 0x420040;
pub const KEY_FORMAT_TYPE: u32 = 0x420042;
pub const KEY_MATERIAL: u32 = 0x420043;
pub const KEY_VALUE: u32 = 0x420045;
pub const MAXIMUM_ITEMS: u32 = 0x42004F;
pub const NAME_TYPE: u32 = 0x420054;
pub const NAME_VALUE: u32 = 0x420055;
pub const OBJECT_TYPE: u32 = 0x420057;
pub const OPERATION: u32 = 0x42005C;
pub const PROTOCOL_VERSION: u32 = 0x420069;
pub const PROTOCOL_VERSION_MAJOR: u32 = 0x42006A;
pub const PROTOCOL_VERSION_MINOR: u32 = 0x42006B;
pub const PUBLIC_KEY: u32 = 0x42006D;
pub const PRIVATE_KEY_TEMPLATE_ATTRIBUTE: u32 = 0x420065;
pub const PRIVATE_KEY_UNIQUE_IDENTIFIER: u32 = 0x420066;
pub const PUBLIC_KEY_TEMPLATE_ATTRIBUTE: u32 = 0x42006E;
pub const PUBLIC_KEY_UNIQUE_IDENTIFIER: u32 = 0x42006F;
pub const COMMON_TEMPLATE_ATTRIBUTE: u32 = 0x42001F;
pub const REQUEST_HEADER: u32 = 0x420077;
pub const REQUEST_MESSAGE: u32 = 0x420078;
pub const REQUEST_PAYLOAD: u32 = 0x420079;
pub const RESPONSE_HEADER: u32 = 0x42007A;
pub const RESPONSE_MESSAGE: u32 = 0x42007B;
pub const RESPONSE_PAYLOAD: u32 = 0x42007C;
pub const RESULT_MESSAGE: u32 = 0x42007D;
pub const RESULT_REASON: u32 = 0x42007E;
pub const RESULT_STATUS: u32 = 0x42007F;
pub const REVOCATION_MESSAGE: u32 = 0x420080;
pub const REVOCATION_REASON: u32 = 0x420081;
pub const REVOCATION_REASON_CODE: u32 = 0x420082;
pub const SECRET_DATA: u32 = 0x420085;
pub const SECRET_DATA_TYPE: u32 = 0x420086;
pub const SERVER_INFORMATION: u32 = 0x420088;
pub const SYMMETRIC_KEY: u32 = 0x42008F;
pub const TEMPLATE_ATTRIBUTE: u32 = 0x420091;
pub const TIME_STAMP: u32 = 0x420092;
pub const UNIQUE_BATCH_ITEM_ID: u32 = 0x420093;
pub const UNIQUE_IDENTIFIER: u32 = 0x420094;
pub const VALIDITY_INDICATOR: u32 = 0x42009B;
pub const VENDOR_IDENTIFICATION: u32 = 0x42009D;
pub const DATA: u32 = 0x4200C2;
pub const SIGNATURE_DATA: u32 = 0x4200C3;
pub const MAC_DATA: u32 = 0x4200C6;
pub const AE_ADDITIONAL_DATA: u32 = 0x4200FE;
pub const AE_TAG: u32 = 0x4200FF;

/// Operation.
pub mod op {
    pub const CREATE: u32 = 0x01;
    pub const CREATE_KEY_PAIR: u32 = 0x02;
    pub const REGISTER: u32 = 0x03;
    pub const LOCATE: u32 = 0x08;
    pub const GET: u32 = 0x0A;
    pub const GET_ATTRIBUTES: u32 = 0x0B;
    pub const ACTIVATE: u32 = 0x12;
    pub const REVOKE: u32 = 0x13;
    pub const DESTROY: u32 = 0x14;
    pub const QUERY: u32 = 0x18;
    pub const DISCOVER_VERSIONS: u32 = 0x1E;
    pub const ENCRYPT: u32 = 0x1F;
    pub const DECRYPT: u32 = 0x20;
    pub const SIGN: u32 = 0x21;
    pub const SIGNATURE_VERIFY: u32 = 0x22;
    pub const MAC: u32 = 0x23;
    pub const GET_ATTRIBUTE_LIST: u32 = 0x0C;
    pub const ADD_ATTRIBUTE: u32 = 0x0D;
    pub const MODIFY_ATTRIBUTE: u32 = 0x0E;
    pub const DELETE_ATTRIBUTE: u32 = 0x0F;
}

/// Object Type.
pub mod object {
    pub const SYMMETRIC_KEY: u32 = 0x02;
    pub const PUBLIC_KEY: u32 = 0x03;
    pub const PRIVATE_KEY: u32 = 0x04;
    pub const SECRET_DATA: u32 = 0x07;
}

/// Result Status and Result Reason.
pub mod result {
    pub const SUCCESS: u32 = 0x00;
    pub const OPERATION_FAILED: u32 = 0x01;
    pub const ITEM_NOT_FOUND: u32 = 0x01;
    pub const INVALID_MESSAGE: u32 = 0x04;
    pub const OPERATION_NOT_SUPPORTED: u32 = 0x05;
    pub const MISSING_DATA: u32 = 0x06;
    pub const INVALID_FIELD: u32 = 0x07;
    pub const CRYPTOGRAPHIC_FAILURE: u32 = 0x0A;
    pub const ILLEGAL_OPERATION: u32 = 0x0B;
    pub const PERMISSION_DENIED: u32 = 0x0C;
    pub const GENERAL_FAILURE: u32 = 0x100;
}

/// State.
pub mod state {
    pub const PRE_ACTIVE: u32 = 0x01;
    pub const ACTIVE: u32 = 0x02;
    pub const DEACTIVATED: u32 = 0x03;
    pub const COMPROMISED: u32 = 0x04;
    pub const DESTROYED: u32 = 0x05;
}

/// Cryptographic Algorithm.
pub mod alg {
    pub const AES: u32 = 0x03;
    pub const RSA: u32 = 0x04;
    pub const ECDSA: u32 = 0x06;
    pub const HMAC_SHA256: u32 = 0x09;
    pub const HMAC_SHA384: u32 = 0x0A;
    pub const EC: u32 = 0x1A;
}

/// Block Cipher Mode.
pub const MODE_GCM: u32 = 0x09;
/// Key Format Type X.509 (a SubjectPublicKeyInfo).
pub const FORMAT_X509: u32 = 0x05;
/// Key Format Type Raw.
pub const FORMAT_RAW: u32 = 0x01;
/// Key Format Type Opaque (what Secret Data travels as).
pub const FORMAT_OPAQUE: u32 = 0x02;
/// Secret Data Type Password (the other is Seed, 0x02).
pub const SECRET_PASSWORD: u32 = 0x01;
/// Revocation Reason Code: Key Compromise.
pub const REVOKE_KEY_COMPROMISE: u32 = 0x02;
/// Validity Indicator.
pub const VALID: u32 = 0x01;
pub const INVALID: u32 = 0x02;

/// Cryptographic Usage Mask bits.
pub mod usage {
    pub const SIGN: i64 = 0x01;
    pub const VERIFY: i64 = 0x02;
    pub const ENCRYPT: i64 = 0x04;
    pub const DECRYPT: i64 = 0x08;
    pub const WRAP_KEY: i64 = 0x10;
    pub const UNWRAP_KEY: i64 = 0x20;
    pub const EXPORT: i64 = 0x40;
    pub const MAC_GENERATE: i64 = 0x80;
    pub const MAC_VERIFY: i64 = 0x100;
}
