//! KMIP's TTLV encoding (Tag–Type–Length–Value, KMIP 1.x §9.1): a 3-byte tag, a 1-byte type, a
//! 4-byte big-endian length, then the value padded with zeros to a multiple of 8 bytes. Written
//! here: the Rust TTLV crates (`kmip-ttlv`, `kmip-protocol`) serve clients through serde
//! mappings of whole messages, while a server needs a small, defensive reader of arbitrary
//! input. Decoding is bounded: total size, nesting depth and item count are capped, lengths are
//! checked against what is left, padding must be zero, and a malformed message is an error —
//! never a panic, never unbounded allocation.

use std::fmt;

use zeroize::Zeroizing;

/// Largest message read (KMIP servers commonly cap around here; batches beyond it are refused).
pub const MAX_MESSAGE: usize = 1024 * 1024;
/// Deepest nesting of structures accepted.
pub const MAX_DEPTH: usize = 16;
/// Most items in one message.
pub const MAX_ITEMS: usize = 10_000;

/// A TTLV value.
#[derive(Clone, PartialEq, Eq)]
pub enum Value {
    Structure(Vec<Item>),
    Integer(i32),
    LongInteger(i64),
    BigInteger(Vec<u8>),
    Enumeration(u32),
    Boolean(bool),
    Text(String),
    /// A Byte String: key material, plaintext or a secret's value, wiped when dropped.
    Bytes(Zeroizing<Vec<u8>>),
    DateTime(i64),
    Interval(u32),
    DateTimeExtended(i64),
}

/// A tagged value.
#[derive(Clone, PartialEq, Eq)]
pub struct Item {
    pub tag: u32,
    pub value: Value,
}

impl fmt::Debug for Item {
    /// Byte strings (which may be key material or plaintext) are shown by length only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Value::Structure(items) => f
                .debug_tuple(&format!("{:06X}", self.tag))
                .field(items)
                .finish(),
            Value::Bytes(b) => write!(f, "{:06X}=<{} bytes>", self.tag, b.len()),
            Value::BigInteger(b) => write!(f, "{:06X}=<big {} bytes>", self.tag, b.len()),
            Value::Text(t) => write!(f, "{:06X}={t:?}", self.tag),
            Value::Integer(v) => write!(f, "{:06X}={v}", self.tag),
            Value::LongInteger(v) => write!(f, "{:06X}={v}", self.tag),
            Value::Enumeration(v) => write!(f, "{:06X}=enum {v:#x}", self.tag),
            Value::Boolean(v) => write!(f, "{:06X}={v}", self.tag),
            Value::DateTime(v) | Value::DateTimeExtended(v) => {
                write!(f, "{:06X}=time {v}", self.tag)
            }
            Value::Interval(v) => write!(f, "{:06X}=interval {v}", self.tag),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TtlvError {
    #[error("message truncated: {0}")]
    Truncated(&'static str),
    #[error("message over {MAX_MESSAGE} bytes")]
    TooLarge,
    #[error("structures nested deeper than {MAX_DEPTH}")]
    TooDeep,
    #[error("more than {MAX_ITEMS} items")]
    TooManyItems,
    #[error("item {tag:06X}: unknown type {kind:#04x}")]
    UnknownType { tag: u32, kind: u8 },
    #[error("item {tag:06X}: length {len} is wrong for its type")]
    BadLength { tag: u32, len: usize },
    #[error("item {tag:06X}: padding is not zero")]
    BadPadding { tag: u32 },
    #[error("item {tag:06X}: text is not UTF-8")]
    BadText { tag: u32 },
    #[error("{0} bytes after the message")]
    Trailing(usize),
}

impl Item {
    pub fn new(tag: u32, value: Value) -> Item {
        Item { tag, value }
    }
    pub fn structure(tag: u32, items: Vec<Item>) -> Item {
        Item::new(tag, Value::Structure(items))
    }

    /// The items of a structure (empty for other types).
    pub fn items(&self) -> &[Item] {
        match &self.value {
            Value::Structure(v) => v,
            _ => &[],
        }
    }
    /// The first child with `tag`.
    pub fn child(&self, tag: u32) -> Option<&Item> {
        self.items().iter().find(|i| i.tag == tag)
    }
    /// Every child with `tag`.
    pub fn children(&self, tag: u32) -> impl Iterator<Item = &Item> {
        self.items().iter().filter(move |i| i.tag == tag)
    }
    pub fn as_enum(&self) -> Option<u32> {
        match self.value {
            Value::Enumeration(v) => Some(v),
            _ => None,
        }
    }
    pub fn as_int(&self) -> Option<i64> {
        match self.value {
            Value::Integer(v) => Some(i64::from(v)),
            Value::LongInteger(v) => Some(v),
            Value::Interval(v) => Some(i64::from(v)),
            _ => None,
        }
    }
    pub fn as_text(&self) -> Option<&str> {
        match &self.value {
            Value::Text(t) => Some(t),
            _ => None,
        }
    }
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match &self.value {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }
    pub fn as_bool(&self) -> Option<bool> {
        match self.value {
            Value::Boolean(b) => Some(b),
            _ => None,
        }
    }
    pub fn as_time(&self) -> Option<i64> {
        match self.value {
            Value::DateTime(t) | Value::DateTimeExtended(t) => Some(t),
            _ => None,
        }
    }
}

fn padded(len: usize) -> usize {
    len.div_ceil(8) * 8
}

/// Encode one item.
/// Encode one item. The buffer is sized exactly first and written in place (no intermediate
/// copies of byte strings), and is wiped when dropped: a response may carry a secret's value.
pub fn encode(item: &Item) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(encoded_len(item)));
    encode_into(item, &mut out);
    out
}

/// Bytes of a value's body, before padding.
fn body_len(value: &Value) -> usize {
    match value {
        Value::Structure(items) => items.iter().map(encoded_len).sum(),
        Value::Integer(_) | Value::Enumeration(_) | Value::Interval(_) => 4,
        Value::LongInteger(_)
        | Value::Boolean(_)
        | Value::DateTime(_)
        | Value::DateTimeExtended(_) => 8,
        Value::BigInteger(v) => v.len(),
        Value::Text(v) => v.len(),
        Value::Bytes(v) => v.len(),
    }
}

/// Bytes of an encoded item: header, body, padding.
fn encoded_len(item: &Item) -> usize {
    8 + padded(body_len(&item.value))
}

fn encode_into(item: &Item, out: &mut Vec<u8>) {
    let tag = item.tag.to_be_bytes();
    out.extend_from_slice(&tag[1..4]);
    let kind = match &item.value {
        Value::Structure(_) => 0x01,
        Value::Integer(_) => 0x02,
        Value::LongInteger(_) => 0x03,
        Value::BigInteger(_) => 0x04,
        Value::Enumeration(_) => 0x05,
        Value::Boolean(_) => 0x06,
        Value::Text(_) => 0x07,
        Value::Bytes(_) => 0x08,
        Value::DateTime(_) => 0x09,
        Value::Interval(_) => 0x0A,
        Value::DateTimeExtended(_) => 0x0B,
    };
    out.push(kind);
    let len = body_len(&item.value);
    out.extend_from_slice(&(len as u32).to_be_bytes());
    match &item.value {
        Value::Structure(items) => items.iter().for_each(|i| encode_into(i, out)),
        Value::Integer(v) => out.extend_from_slice(&v.to_be_bytes()),
        Value::LongInteger(v) | Value::DateTime(v) | Value::DateTimeExtended(v) => {
            out.extend_from_slice(&v.to_be_bytes())
        }
        Value::BigInteger(v) => out.extend_from_slice(v),
        Value::Enumeration(v) | Value::Interval(v) => out.extend_from_slice(&v.to_be_bytes()),
        Value::Boolean(v) => out.extend_from_slice(&u64::from(*v).to_be_bytes()),
        Value::Text(v) => out.extend_from_slice(v.as_bytes()),
        Value::Bytes(v) => out.extend_from_slice(v),
    }
    out.resize(out.len() + padded(len) - len, 0);
}

/// Decode exactly one item filling `bytes`.
pub fn decode(bytes: &[u8]) -> Result<Item, TtlvError> {
    if bytes.len() > MAX_MESSAGE {
        return Err(TtlvError::TooLarge);
    }
    let mut items = 0usize;
    let (item, used) = decode_one(bytes, 0, &mut items)?;
    if used != bytes.len() {
        return Err(TtlvError::Trailing(bytes.len() - used));
    }
    Ok(item)
}

/// The total size of the message whose first 8 bytes are `header` (for reading off a socket).
pub fn message_len(header: &[u8; 8]) -> Result<usize, TtlvError> {
    let len = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
    if header[3] != 0x01 {
        return Err(TtlvError::UnknownType {
            tag: u32::from_be_bytes([0, header[0], header[1], header[2]]),
            kind: header[3],
        });
    }
    let total = 8 + padded(len);
    if total > MAX_MESSAGE {
        return Err(TtlvError::TooLarge);
    }
    Ok(total)
}

fn decode_one(bytes: &[u8], depth: usize, items: &mut usize) -> Result<(Item, usize), TtlvError> {
    if depth > MAX_DEPTH {
        return Err(TtlvError::TooDeep);
    }
    *items += 1;
    if *items > MAX_ITEMS {
        return Err(TtlvError::TooManyItems);
    }
    if bytes.len() < 8 {
        return Err(TtlvError::Truncated("item header"));
    }
    let tag = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]);
    let kind = bytes[3];
    let len = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize;
    let total = 8usize
        .checked_add(padded(len))
        .ok_or(TtlvError::BadLength { tag, len })?;
    if total > bytes.len() {
        return Err(TtlvError::Truncated("item value"));
    }
    let body = &bytes[8..8 + len];
    if bytes[8 + len..total].iter().any(|b| *b != 0) {
        return Err(TtlvError::BadPadding { tag });
    }
    let fixed = |n: usize| -> Result<(), TtlvError> {
        if len == n {
            Ok(())
        } else {
            Err(TtlvError::BadLength { tag, len })
        }
    };
    let be4 = |b: &[u8]| [b[0], b[1], b[2], b[3]];
    let be8 = |b: &[u8]| [b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]];
    let value = match kind {
        0x01 => {
            let mut children = Vec::new();
            let mut at = 0;
            while at < len {
                let (child, used) = decode_one(&body[at..], depth + 1, items)?;
                children.push(child);
                at += used;
            }
            Value::Structure(children)
        }
        0x02 => {
            fixed(4)?;
            Value::Integer(i32::from_be_bytes(be4(body)))
        }
        0x03 => {
            fixed(8)?;
            Value::LongInteger(i64::from_be_bytes(be8(body)))
        }
        0x04 => {
            if len == 0 || !len.is_multiple_of(8) {
                return Err(TtlvError::BadLength { tag, len });
            }
            Value::BigInteger(body.to_vec())
        }
        0x05 => {
            fixed(4)?;
            Value::Enumeration(u32::from_be_bytes(be4(body)))
        }
        0x06 => {
            fixed(8)?;
            match u64::from_be_bytes(be8(body)) {
                0 => Value::Boolean(false),
                1 => Value::Boolean(true),
                _ => return Err(TtlvError::BadLength { tag, len }),
            }
        }
        0x07 => {
            Value::Text(String::from_utf8(body.to_vec()).map_err(|_| TtlvError::BadText { tag })?)
        }
        0x08 => Value::Bytes(Zeroizing::new(body.to_vec())),
        0x09 => {
            fixed(8)?;
            Value::DateTime(i64::from_be_bytes(be8(body)))
        }
        0x0A => {
            fixed(4)?;
            Value::Interval(u32::from_be_bytes(be4(body)))
        }
        0x0B => {
            fixed(8)?;
            Value::DateTimeExtended(i64::from_be_bytes(be8(body)))
        }
        other => return Err(TtlvError::UnknownType { tag, kind: other }),
    };
    Ok((Item { tag, value }, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Item {
        Item::structure(
            0x420078,
            vec![
                Item::structure(
                    0x420077,
                    vec![
                        Item::new(0x42000D, Value::Integer(1)),
                        Item::new(0x420092, Value::DateTime(1_700_000_000)),
                    ],
                ),
                Item::new(0x420055, Value::Text("backup-key-1".into())),
                Item::new(0x4200C2, Value::Bytes(vec![1, 2, 3].into())),
                Item::new(0x42005C, Value::Enumeration(0x1E)),
                Item::new(0x420008, Value::Boolean(true)),
                Item::new(0x420050, Value::LongInteger(-5)),
                Item::new(0x420051, Value::BigInteger(vec![0; 8])),
                Item::new(0x420052, Value::Interval(7)),
            ],
        )
    }

    #[test]
    fn round_trips_every_type() {
        let item = sample();
        let bytes = encode(&item);
        assert_eq!(bytes.len() % 8, 0);
        assert_eq!(decode(&bytes), Ok(item));
        let header: [u8; 8] = bytes[..8].try_into().unwrap_or([0; 8]);
        assert_eq!(message_len(&header), Ok(bytes.len()));
    }

    /// The KMIP 1.x specification's own example of an Integer: tag 0x420020, value 8.
    #[test]
    fn matches_the_specification_encoding() {
        let bytes = encode(&Item::new(0x420020, Value::Integer(8)));
        assert_eq!(
            bytes.as_slice(),
            [0x42, 0x00, 0x20, 0x02, 0, 0, 0, 4, 0, 0, 0, 8, 0, 0, 0, 0]
        );
        let text = encode(&Item::new(0x420020, Value::Text("Hello World".into())));
        assert_eq!(&text[..8], &[0x42, 0x00, 0x20, 0x07, 0, 0, 0, 0x0B]);
        assert_eq!(text.len(), 8 + 16);
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let good = encode(&sample());
        for cut in 0..good.len() {
            assert!(decode(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad_pad = encode(&Item::new(0x420020, Value::Integer(8)));
        bad_pad[15] = 1;
        assert_eq!(
            decode(&bad_pad),
            Err(TtlvError::BadPadding { tag: 0x420020 })
        );
        let mut huge_len = good.clone();
        huge_len[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(decode(&huge_len).is_err());
        // A nesting bomb: 100 structures inside each other.
        let mut bomb = Item::new(0x420001, Value::Integer(1));
        for _ in 0..100 {
            bomb = Item::structure(0x420001, vec![bomb]);
        }
        assert_eq!(decode(&encode(&bomb)), Err(TtlvError::TooDeep));
        // Many items.
        let many = Item::structure(
            0x420001,
            (0..MAX_ITEMS + 1)
                .map(|_| Item::new(0x420002, Value::Boolean(false)))
                .collect(),
        );
        assert_eq!(decode(&encode(&many)), Err(TtlvError::TooManyItems));
    }

    /// A seeded property test: random bytes and random mutations of a valid message never panic
    /// and never decode to something that does not re-encode to its own bytes.
    #[test]
    fn random_and_mutated_messages_never_panic() {
        use rand::{Rng, SeedableRng};
        let seed = std::env::var("KMS_FUZZ_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(17u64);
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let good = encode(&sample());
        for _ in 0..20_000 {
            let input: Vec<u8> = if rng.gen_bool(0.5) {
                let n = rng.gen_range(0..200);
                (0..n).map(|_| rng.gen()).collect()
            } else {
                let mut m = good.to_vec();
                for _ in 0..rng.gen_range(1..6) {
                    let at = rng.gen_range(0..m.len());
                    match rng.gen_range(0..3) {
                        0 => m[at] = rng.gen(),
                        1 => m.truncate(at),
                        _ => m.insert(at, rng.gen()),
                    }
                    if m.is_empty() {
                        break;
                    }
                }
                m
            };
            if let Ok(item) = decode(&input) {
                assert_eq!(
                    encode(&item).as_slice(),
                    input,
                    "decoded input re-encodes to itself"
                );
            }
        }
    }
}
