//! What test clients say on the wire to the XKS and KMIP doors, written once: the SigV4 headers
//! of an XKS call, and a KMIP request message of one batch item and the response it gets.

use std::net::SocketAddr;

use kms::doors::kmip::ttlv::{self, Item, Value};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::Res;

/// The headers of an XKS call to `addr`: `host` and `content-type`, then the SigV4 ones made
/// with `akid`/`secret` at time `when` (region `us-east-1`, service `kms-xks-proxy`).
pub fn xks_headers(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
    (akid, secret): (&str, &str),
    when: time::OffsetDateTime,
) -> Res<Vec<(String, String)>> {
    let mut headers = vec![
        ("host".to_owned(), addr.to_string()),
        ("content-type".to_owned(), "application/json".to_owned()),
    ];
    let req = kms::doors::xks::sigv4::Request {
        method,
        path,
        query: "",
        headers: &headers,
        body,
    };
    let added =
        kms::doors::xks::sigv4::sign(&req, when, akid, secret, "us-east-1", "kms-xks-proxy")
            .map_err(|e| e.to_string())?;
    headers.extend(added);
    Ok(headers)
}

/// A KMIP request message as protocol 1.`minor`, with one batch item: `operation` (an
/// enumeration) and its request payload.
pub fn kmip_request(minor: i32, operation: u32, payload: Vec<Item>) -> Item {
    let int = |tag: u32, v: i32| Item::new(tag, Value::Integer(v));
    Item::structure(
        0x420078,
        vec![
            Item::structure(
                0x420077,
                vec![
                    Item::structure(0x420069, vec![int(0x42006A, 1), int(0x42006B, minor)]),
                    int(0x42000D, 1),
                ],
            ),
            Item::structure(
                0x42000F,
                vec![
                    Item::new(0x42005C, Value::Enumeration(operation)),
                    Item::structure(0x420079, payload),
                ],
            ),
        ],
    )
}

/// Read one whole TTLV message (the 8-byte header says how long it is) and decode it.
pub async fn read_kmip_message(s: &mut (impl AsyncRead + Unpin)) -> Res<Item> {
    let mut header = [0u8; 8];
    s.read_exact(&mut header).await?;
    let total = ttlv::message_len(&header)?;
    let mut msg = vec![0u8; total];
    msg[..8].copy_from_slice(&header);
    s.read_exact(&mut msg[8..]).await?;
    Ok(ttlv::decode(&msg)?)
}
