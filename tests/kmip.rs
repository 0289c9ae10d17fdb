//! KMIP (issue 16) against a real `kms serve` with `[kmip]` on loopback, spoken in TTLV over
//! mutual TLS by a small client here (kms's codec, not its server code). Every KMIP object is an
//! ordinary kms key: grants, audit records and the token's sensitive objects apply.

use common::service::*;
use common::*;
use kms_testkit as common;

use kms::doors::kmip::ttlv::{self, Item, Value};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[path = "kmip/bad_input.rs"]
mod bad_input;
#[path = "kmip/disposal.rs"]
mod disposal;
#[path = "kmip/usage.rs"]
mod usage;

const APP: &str = "demo-app";

fn kmip_service() -> Res<Service> {
    let svc = Service::start_with(|env| {
        let mut cfg = std::fs::read_to_string(env.config())?;
        cfg.push_str(&format!(
            "\n[kmip]\nlisten = \"127.0.0.1:0\"\nmay_create = [\"{APP}\"]\n"
        ));
        std::fs::write(env.config(), cfg)?;
        Ok(())
    })?;
    svc.register(APP)?;
    Ok(svc)
}

type Stream = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn connect(svc: &Service, client: &str) -> Res<Stream> {
    let addr = svc.kmip.ok_or("no KMIP listener")?;
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    Ok(tokio_rustls::TlsConnector::from(svc.tls(client)?)
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await?)
}

fn int(tag: u32, v: i32) -> Item {
    Item::new(tag, Value::Integer(v))
}
fn en(tag: u32, v: u32) -> Item {
    Item::new(tag, Value::Enumeration(v))
}
fn txt(tag: u32, v: &str) -> Item {
    Item::new(tag, Value::Text(v.into()))
}
fn bytes(tag: u32, v: &[u8]) -> Item {
    Item::new(tag, Value::Bytes(v.to_vec().into()))
}
fn attr(name: &str, value: Value) -> Item {
    Item::structure(
        0x420008,
        vec![txt(0x42000A, name), Item::new(0x42000B, value)],
    )
}

/// A Name attribute (Name Value, Name Type Uninterpreted Text String).
fn name_attr(name: &str) -> Item {
    attr(
        "Name",
        Value::Structure(vec![txt(0x420055, name), en(0x420054, 1)]),
    )
}

/// The value of attribute `name` in a GetAttributes response payload.
fn attribute<'a>(payload: &'a Item, name: &str) -> Option<&'a Item> {
    payload
        .children(0x420008)
        .find(|a| a.child(0x42000A).and_then(Item::as_text) == Some(name))
        .and_then(|a| a.child(0x42000B))
}

/// One request with one batch item, as KMIP `minor`; the response's batch item.
async fn call(s: &mut Stream, minor: i32, operation: u32, payload: Vec<Item>) -> Res<Item> {
    let request = kmip_request(minor, operation, payload);
    s.write_all(&ttlv::encode(&request)).await?;
    read_reply(s).await
}

async fn read_reply(s: &mut Stream) -> Res<Item> {
    let response = read_kmip_message(s).await?;
    assert_eq!(response.tag, 0x42007B, "a Response Message");
    Ok(response.child(0x42000F).ok_or("no batch item")?.clone())
}

fn ok_payload(item: &Item) -> Res<Item> {
    if item.child(0x42007F).and_then(Item::as_enum) != Some(0) {
        return Err(format!("KMIP failure: {item:?}").into());
    }
    Ok(item
        .child(0x42007C)
        .cloned()
        .unwrap_or_else(|| Item::structure(0x42007C, vec![])))
}

fn failure(item: &Item) -> (u32, String) {
    (
        item.child(0x42007E).and_then(Item::as_enum).unwrap_or(0),
        item.child(0x42007D)
            .and_then(Item::as_text)
            .unwrap_or("")
            .to_owned(),
    )
}
