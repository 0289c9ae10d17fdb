//! KMIP (issue 16) against a real `kms serve` with `[kmip]` on loopback, spoken in TTLV over
//! mutual TLS by a small client here (kms's codec, not its server code). Every KMIP object is an
//! ordinary kms key: grants, audit records and the token's sensitive objects apply.

use common::service::*;
use common::*;
use kms_testkit as common;

use kms::doors::kmip::ttlv::{self, Item, Value};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kmip_client_creates_uses_and_cannot_take_key_material() -> TestResult {
    let svc = kmip_service()?;
    let mut s = connect(&svc, APP).await?;

    let r = ok_payload(&call(&mut s, 4, 0x1E, vec![]).await?)?;
    assert_eq!(r.children(0x420069).count(), 5, "1.4 down to 1.0");
    let r = ok_payload(&call(&mut s, 4, 0x18, vec![en(0x420074, 1)]).await?)?;
    assert!(
        r.children(0x42005C).any(|o| o.as_enum() == Some(0x1F)),
        "Query lists Encrypt"
    );

    // Create an AES-256 key named by the client.
    let r = ok_payload(
        &call(
            &mut s,
            4,
            0x01,
            vec![
                en(0x420057, 2),
                Item::structure(
                    0x420091,
                    vec![
                        attr("Cryptographic Algorithm", Value::Enumeration(3)),
                        attr("Cryptographic Length", Value::Integer(256)),
                        attr("Cryptographic Usage Mask", Value::Integer(0x04 | 0x08)),
                        attr(
                            "Name",
                            Value::Structure(vec![txt(0x420055, "db-master"), en(0x420054, 1)]),
                        ),
                    ],
                ),
            ],
        )
        .await?,
    )?;
    let uid = r
        .child(0x420094)
        .and_then(Item::as_text)
        .ok_or("no uid")?
        .to_owned();
    // It is an ordinary kms key: in the inventory, owned by the client, on the token.
    let shown = json(&svc.env.ok(&["key", "show", "db-master", "--json"])?)?;
    assert_eq!(shown["id"], uid.as_str());
    assert_eq!(shown["owner"], APP);
    assert!(svc
        .env
        .list_objects("kms-primary")?
        .contains("kms:db-master:v1"));

    let r = ok_payload(
        &call(
            &mut s,
            4,
            0x08,
            vec![attr(
                "Name",
                Value::Structure(vec![txt(0x420055, "db-master"), en(0x420054, 1)]),
            )],
        )
        .await?,
    )?;
    assert_eq!(
        r.child(0x420094).and_then(Item::as_text),
        Some(uid.as_str())
    );
    ok_payload(&call(&mut s, 4, 0x12, vec![txt(0x420094, &uid)]).await?)?;
    let r = ok_payload(&call(&mut s, 4, 0x0B, vec![txt(0x420094, &uid)]).await?)?;
    let names: Vec<&str> = r
        .children(0x420008)
        .filter_map(|a| a.child(0x42000A).and_then(Item::as_text))
        .collect();
    for n in [
        "Name",
        "Cryptographic Algorithm",
        "Cryptographic Length",
        "State",
    ] {
        assert!(names.contains(&n), "GetAttributes has {n}: {names:?}");
    }

    // Encrypt / decrypt with AES-GCM and AAD (1.4: the tag apart; 1.2: at the end of Data).
    let r = ok_payload(
        &call(
            &mut s,
            4,
            0x1F,
            vec![
                txt(0x420094, &uid),
                bytes(0x4200C2, b"row 42 secret"),
                bytes(0x4200FE, b"table=users"),
            ],
        )
        .await?,
    )?;
    let (ct, iv, tag) = (
        r.child(0x4200C2)
            .and_then(Item::as_bytes)
            .ok_or("no data")?
            .to_vec(),
        r.child(0x42003D)
            .and_then(Item::as_bytes)
            .ok_or("no iv")?
            .to_vec(),
        r.child(0x4200FF)
            .and_then(Item::as_bytes)
            .ok_or("no tag")?
            .to_vec(),
    );
    let r = ok_payload(
        &call(
            &mut s,
            4,
            0x20,
            vec![
                txt(0x420094, &uid),
                bytes(0x4200C2, &ct),
                bytes(0x42003D, &iv),
                bytes(0x4200FE, b"table=users"),
                bytes(0x4200FF, &tag),
            ],
        )
        .await?,
    )?;
    assert_eq!(
        r.child(0x4200C2).and_then(Item::as_bytes),
        Some(&b"row 42 secret"[..])
    );
    let bad = call(
        &mut s,
        4,
        0x20,
        vec![
            txt(0x420094, &uid),
            bytes(0x4200C2, &ct),
            bytes(0x42003D, &iv),
            bytes(0x4200FE, b"table=admins"),
            bytes(0x4200FF, &tag),
        ],
    )
    .await?;
    assert_eq!(failure(&bad).0, 0x0A, "wrong AAD: Cryptographic Failure");
    let r = ok_payload(
        &call(
            &mut s,
            2,
            0x1F,
            vec![txt(0x420094, &uid), bytes(0x4200C2, b"v1.2 client")],
        )
        .await?,
    )?;
    assert!(r.child(0x4200FF).is_none(), "no separate tag before 1.4");
    let joined = r
        .child(0x4200C2)
        .and_then(Item::as_bytes)
        .ok_or("no data")?
        .to_vec();
    let iv12 = r
        .child(0x42003D)
        .and_then(Item::as_bytes)
        .ok_or("no iv")?
        .to_vec();
    let r = ok_payload(
        &call(
            &mut s,
            2,
            0x20,
            vec![
                txt(0x420094, &uid),
                bytes(0x4200C2, &joined),
                bytes(0x42003D, &iv12),
            ],
        )
        .await?,
    )?;
    assert_eq!(
        r.child(0x4200C2).and_then(Item::as_bytes),
        Some(&b"v1.2 client"[..])
    );

    // Key material never leaves: Get of a symmetric key is Permission Denied; Destroy needs the
    // disposal procedure; Revoke (compromise) needs an officer.
    let (reason, message) = failure(&call(&mut s, 4, 0x0A, vec![txt(0x420094, &uid)]).await?);
    assert_eq!(reason, 0x0C, "{message}");
    let (reason, message) = failure(&call(&mut s, 4, 0x14, vec![txt(0x420094, &uid)]).await?);
    assert_eq!(reason, 0x0C);
    assert!(message.contains("kms key dispose"), "{message}");
    let (reason, _) = failure(
        &call(
            &mut s,
            4,
            0x13,
            vec![
                txt(0x420094, &uid),
                Item::structure(0x420081, vec![en(0x420082, 2)]),
            ],
        )
        .await?,
    );
    assert_eq!(reason, 0x0C, "declaring a compromise is an officer's act");

    // An unknown key, and a key of someone else.
    let (reason, _) = failure(
        &call(
            &mut s,
            4,
            0x0B,
            vec![txt(0x420094, "00000000-0000-0000-0000-000000000000")],
        )
        .await?,
    );
    assert_eq!(reason, 0x01, "Item Not Found");
    svc.register("other-app")?;
    let mut other = connect(&svc, "other-app").await?;
    let (reason, _) = failure(
        &call(
            &mut other,
            4,
            0x1F,
            vec![txt(0x420094, &uid), bytes(0x4200C2, b"x")],
        )
        .await?,
    );
    assert_eq!(reason, 0x0C, "no grant, no use");
    let (reason, _) = failure(&call(&mut other, 4, 0x01, vec![en(0x420057, 2)]).await?);
    assert_eq!(reason, 0x0C, "not in [kmip] may_create");

    // Every operation is on the record.
    let text = serde_json::to_string(&svc.audit(None)?)?;
    for needle in [
        "kmip.create",
        "kmip.encrypt",
        "kmip.decrypt",
        "kmip.get",
        "kmip.locate",
    ] {
        assert!(text.contains(needle), "audit has {needle}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_strangers_get_errors_not_panics() -> TestResult {
    let svc = kmip_service()?;
    // A certificate of no registered principal: no KMIP at all.
    let mut stranger = connect(&svc, "stranger").await?;
    let _ = stranger
        .write_all(&ttlv::encode(&Item::structure(0x420078, vec![])))
        .await;
    let mut buf = [0u8; 8];
    assert!(
        stranger.read_exact(&mut buf).await.is_err(),
        "the stranger's connection is closed"
    );
    // Not TTLV: an Invalid Message answer, then the connection closes.
    let mut s = connect(&svc, APP).await?;
    s.write_all(&[
        0x42, 0x00, 0x78, 0x01, 0, 0, 0, 8, 0x42, 0, 0, 0x99, 0, 0, 0, 0,
    ])
    .await?;
    let reply = read_reply(&mut s).await?;
    assert_eq!(failure(&reply).0, 0x04, "Invalid Message");
    // The service still serves.
    let mut s = connect(&svc, APP).await?;
    ok_payload(&call(&mut s, 4, 0x1E, vec![]).await?)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_hmac_key_macs_on_the_token_like_the_reference() -> TestResult {
    use hmac::Mac as _;
    let svc = kmip_service()?;
    let mut s = connect(&svc, APP).await?;
    let material = [0x5cu8; 32];
    let r = ok_payload(
        &call(
            &mut s,
            4,
            0x03,
            vec![
                en(0x420057, 2),
                Item::structure(
                    0x420091,
                    vec![
                        attr("Cryptographic Usage Mask", Value::Integer(0x80 | 0x100)),
                        attr(
                            "Name",
                            Value::Structure(vec![txt(0x420055, "webhooks"), en(0x420054, 1)]),
                        ),
                    ],
                ),
                Item::structure(
                    0x42008F,
                    vec![Item::structure(
                        0x420040,
                        vec![
                            en(0x420042, 1),
                            Item::structure(0x420045, vec![bytes(0x420043, &material)]),
                            en(0x420028, 9),
                            int(0x42002A, 256),
                        ],
                    )],
                ),
            ],
        )
        .await?,
    )?;
    let uid = r
        .child(0x420094)
        .and_then(Item::as_text)
        .ok_or("no uid")?
        .to_owned();
    let r = ok_payload(
        &call(
            &mut s,
            4,
            0x23,
            vec![txt(0x420094, &uid), bytes(0x4200C2, b"event 7")],
        )
        .await?,
    )?;
    let mut reference = hmac::Hmac::<sha2::Sha256>::new_from_slice(&material)?;
    reference.update(b"event 7");
    assert_eq!(
        r.child(0x4200C6).and_then(Item::as_bytes),
        Some(&reference.finalize().into_bytes()[..]),
        "the token's HMAC is the reference HMAC"
    );
    let shown = json(&svc.env.ok(&["key", "show", "webhooks", "--json"])?)?;
    assert_eq!(shown["key_type"], "hmac-sha256");
    assert_eq!(shown["origin"], "imported");
    // Destroy without an approved disposal is refused, naming the procedure.
    let (reason, message) = failure(&call(&mut s, 4, 0x14, vec![txt(0x420094, &uid)]).await?);
    assert_eq!(reason, 0x0C);
    assert!(message.contains("disposal"), "{message}");
    Ok(())
}

/// A seeded property test against the live listener: mutated requests get an answer or a
/// closed connection, never a hang, and the service keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutated_requests_never_stop_the_listener() -> TestResult {
    use rand::{Rng, SeedableRng};
    let svc = kmip_service()?;
    let seed = std::env::var("KMS_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(17u64);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let valid = ttlv::encode(&Item::structure(
        0x420078,
        vec![
            Item::structure(
                0x420077,
                vec![
                    Item::structure(0x420069, vec![int(0x42006A, 1), int(0x42006B, 4)]),
                    int(0x42000D, 1),
                ],
            ),
            Item::structure(
                0x42000F,
                vec![
                    en(0x42005C, 0x1F),
                    Item::structure(0x420079, vec![txt(0x420094, "x"), bytes(0x4200C2, b"abc")]),
                ],
            ),
        ],
    ));
    // Issue 23: every message has an audit record. Each round is one connection, so its
    // client address (port) names the records it caused.
    let mut peers = Vec::new();
    for round in 0..60 {
        let mut m = valid.clone();
        for _ in 0..rng.gen_range(1..5) {
            let at = rng.gen_range(8..m.len());
            m[at] = rng.gen();
        }
        let mut s = connect(&svc, APP).await?;
        peers.push(s.get_ref().0.local_addr()?.to_string());
        s.write_all(&m).await?;
        let mut header = [0u8; 8];
        let answered = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            s.read_exact(&mut header),
        )
        .await;
        assert!(
            answered.is_ok(),
            "round {round}: no answer and no close within 10 s"
        );
    }
    let mut s = connect(&svc, APP).await?;
    ok_payload(&call(&mut s, 4, 0x1E, vec![]).await?)?;
    drop(s);
    let rows = svc.audit(None)?;
    let (mut unrecorded, mut door, mut by_operation) = (Vec::new(), 0, 0);
    for (round, peer) in peers.iter().enumerate() {
        let mine: Vec<&serde_json::Value> = rows
            .iter()
            .filter(|r| r["host"] == peer.as_str() && r["action"] != "auth.connect")
            .collect();
        if mine.is_empty() {
            unrecorded.push(round);
        }
        if mine.iter().any(|r| {
            r["action"]
                .as_str()
                .is_some_and(|a| a == "kmip.malformed" || a == "kmip.message")
        }) {
            door += 1;
        } else if !mine.is_empty() {
            by_operation += 1;
        }
        for r in &mine {
            let detail = r["detail"].as_str().unwrap_or_default();
            assert!(
                !detail.contains("616263"),
                "no message bytes in a record: {r}"
            );
        }
    }
    eprintln!(
        "seed {seed}: 60 mutated messages, {door} recorded by the KMIP door, {by_operation} by their operation, {} unrecorded",
        unrecorded.len()
    );
    assert!(
        unrecorded.is_empty(),
        "rounds without an audit record: {unrecorded:?}"
    );
    Ok(())
}

/// Issue 23: a flood of messages kms cannot serve on one connection is recorded one by one up
/// to a limit, then counted, and summarised when the connection closes: the records account for
/// every message, and the trail grows by a bounded number of records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_bad_messages_is_recorded_then_summarised_per_connection() -> TestResult {
    let svc = kmip_service()?;
    let mut s = connect(&svc, APP).await?;
    let peer = s.get_ref().0.local_addr()?.to_string();
    // Valid TTLV, but a Request Message without a header or batch items: an Invalid Message
    // answer each time, and the connection stays open.
    let bad = ttlv::encode(&Item::structure(0x420078, vec![int(0x42000D, 1)]));
    let sent = 100u64;
    for _ in 0..sent {
        s.write_all(&bad).await?;
        assert_eq!(
            failure(&read_reply(&mut s).await?).0,
            0x04,
            "Invalid Message"
        );
    }
    // One Query (answered, no operation record) and a message that cannot be framed, which
    // closes the connection.
    ok_payload(&call(&mut s, 4, 0x18, vec![]).await?)?;
    s.write_all(&[0x42, 0x00, 0x78, 0x99, 0, 0, 0, 8]).await?;
    let _ = read_reply(&mut s).await;
    drop(s);
    let total = sent + 2;
    // The summary is written when the server sees the close.
    let mut rows = Vec::new();
    for _ in 0..50 {
        rows = svc.audit(None)?;
        if rows
            .iter()
            .any(|r| r["host"] == peer.as_str() && r["action"] == "kmip.messages-summarised")
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let mine: Vec<&serde_json::Value> = rows
        .iter()
        .filter(|r| r["host"] == peer.as_str() && r["action"] != "auth.connect")
        .collect();
    let one_each = mine
        .iter()
        .filter(|r| r["action"] == "kmip.malformed" || r["action"] == "kmip.message")
        .count() as u64;
    let summarised: u64 = mine
        .iter()
        .filter(|r| r["action"] == "kmip.messages-summarised")
        .map(|r| {
            r["detail"]
                .as_str()
                .and_then(|d| d.split(' ').next())
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0)
        })
        .sum();
    let summaries = mine.len() as u64 - one_each;
    eprintln!(
        "{total} messages on one connection: {one_each} recorded one by one, {summarised} counted in {summaries} summary record(s)"
    );
    assert_eq!(
        one_each + summarised,
        total,
        "every message accounted for: {mine:#?}"
    );
    assert_eq!(one_each, 16, "the first 16 are recorded one by one");
    assert_eq!(summaries, 1, "one summary at close");
    let first = mine.first().ok_or("no records")?;
    assert_eq!(first["actor"], APP, "the principal: {first}");
    assert!(first["cert_fingerprint"].is_string(), "{first}");
    assert!(
        first["detail"]
            .as_str()
            .is_some_and(|d| d.contains("Invalid Message") && d.contains(&peer)),
        "{first}"
    );
    let last = mine.last().ok_or("no records")?;
    assert_eq!(last["action"], "kmip.messages-summarised");
    assert!(
        last["detail"]
            .as_str()
            .is_some_and(|d| d.contains("malformed") && d.contains("unknown type")),
        "{last}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_attributes_are_labels_and_the_name_stays_fixed() -> TestResult {
    let svc = kmip_service()?;
    let mut s = connect(&svc, APP).await?;
    let r = ok_payload(
        &call(
            &mut s,
            4,
            0x01,
            vec![
                en(0x420057, 2),
                Item::structure(
                    0x420091,
                    vec![attr(
                        "Name",
                        Value::Structure(vec![txt(0x420055, "vol-7"), en(0x420054, 1)]),
                    )],
                ),
            ],
        )
        .await?,
    )?;
    let uid = r
        .child(0x420094)
        .and_then(Item::as_text)
        .ok_or("no uid")?
        .to_owned();
    let custom =
        |v: &str| Item::structure(0x420008, vec![txt(0x42000A, "x-volume"), txt(0x42000B, v)]);
    ok_payload(
        &call(
            &mut s,
            4,
            0x0D,
            vec![txt(0x420094, &uid), custom("nas-1/vol7")],
        )
        .await?,
    )?;
    let (reason, _) =
        failure(&call(&mut s, 4, 0x0D, vec![txt(0x420094, &uid), custom("again")]).await?);
    assert_eq!(
        reason, 0x07,
        "Add of an existing attribute is Invalid Field"
    );
    ok_payload(
        &call(
            &mut s,
            4,
            0x0E,
            vec![txt(0x420094, &uid), custom("nas-2/vol7")],
        )
        .await?,
    )?;
    let r = ok_payload(&call(&mut s, 4, 0x0B, vec![txt(0x420094, &uid)]).await?)?;
    let value = r
        .children(0x420008)
        .find(|a| a.child(0x42000A).and_then(Item::as_text) == Some("x-volume"))
        .and_then(|a| a.child(0x42000B))
        .and_then(Item::as_text)
        .map(str::to_owned);
    assert_eq!(value.as_deref(), Some("nas-2/vol7"));
    let shown = json(&svc.env.ok(&["key", "show", "vol-7", "--json"])?)?;
    assert_eq!(
        shown["labels"]["x-volume"], "nas-2/vol7",
        "a label of the inventory entry"
    );
    ok_payload(
        &call(
            &mut s,
            4,
            0x0F,
            vec![txt(0x420094, &uid), txt(0x42000A, "x-volume")],
        )
        .await?,
    )?;
    let shown = json(&svc.env.ok(&["key", "show", "vol-7", "--json"])?)?;
    assert!(shown["labels"].get("x-volume").is_none());
    // The KMIP Name can change (a label); the kms name, the key's label on the token, cannot.
    let rename = Item::structure(
        0x420008,
        vec![
            txt(0x42000A, "Name"),
            Item::new(
                0x42000B,
                Value::Structure(vec![txt(0x420055, "vol-8"), en(0x420054, 1)]),
            ),
        ],
    );
    ok_payload(&call(&mut s, 4, 0x0E, vec![txt(0x420094, &uid), rename]).await?)?;
    let found = ok_payload(&call(&mut s, 4, 0x08, vec![name_attr("vol-8")]).await?)?;
    assert_eq!(
        found.child(0x420094).and_then(Item::as_text),
        Some(uid.as_str()),
        "Locate finds the new Name"
    );
    let shown = json(&svc.env.ok(&["key", "show", "vol-7", "--json"])?)?;
    assert_eq!(shown["labels"]["kmip-name"], "vol-8");
    // A cryptographic attribute is kms's: Illegal Operation.
    let length = Item::structure(
        0x420008,
        vec![
            txt(0x42000A, "Cryptographic Length"),
            Item::new(0x42000B, Value::Integer(128)),
        ],
    );
    let (reason, message) =
        failure(&call(&mut s, 4, 0x0E, vec![txt(0x420094, &uid), length]).await?);
    assert_eq!(reason, 0x0B, "Illegal Operation: {message}");
    assert!(message.contains("cannot be changed"), "{message}");
    let text = serde_json::to_string(&svc.audit(None)?)?;
    assert!(text.contains("kmip.modify-attribute") && text.contains("kmip.delete-attribute"));
    Ok(())
}

/// The sequence a Synology NAS sends to keep its encryption key vault's secret in a KMIP server
/// (DiscoverVersions, Query, Locate, Register Secret Data, ModifyAttribute Name, Activate,
/// GetAttributes, Get, Revoke, Destroy), spoken as KMIP 1.2. The secret is a sensitive object on
/// the token, read back only through kms; Destroy waits for the disposal procedure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_synology_sequence_keeps_a_secret_on_the_token_until_its_disposal() -> TestResult {
    let svc = Service::start_with(|env| {
        let mut cfg = std::fs::read_to_string(env.config())?;
        cfg.push_str(&format!(
            "\n[kmip]\nlisten = \"127.0.0.1:0\"\nmay_create = [\"{APP}\"]\n\n[lifecycle]\ndisposal_wait = \"0\"\ndisposal_wait_min = \"0\"\n"
        ));
        std::fs::write(env.config(), cfg)?;
        Ok(())
    })?;
    svc.register(APP)?;
    let mut s = connect(&svc, APP).await?;
    let v = 2;

    let r = ok_payload(&call(&mut s, v, 0x1E, vec![]).await?)?;
    let versions: Vec<(i64, i64)> = r
        .children(0x420069)
        .map(|p| {
            (
                p.child(0x42006A).and_then(Item::as_int).unwrap_or(0),
                p.child(0x42006B).and_then(Item::as_int).unwrap_or(0),
            )
        })
        .collect();
    assert!(versions.contains(&(1, 2)), "{versions:?}");
    let r = ok_payload(&call(&mut s, v, 0x18, vec![en(0x420074, 1), en(0x420074, 2)]).await?)?;
    let ops: Vec<u32> = r.children(0x42005C).filter_map(Item::as_enum).collect();
    let objects: Vec<u32> = r.children(0x420057).filter_map(Item::as_enum).collect();
    for o in [0x03, 0x0E, 0x12, 0x0B, 0x0A, 0x13, 0x14, 0x08] {
        assert!(ops.contains(&o), "Query lists operation {o:#x}: {ops:?}");
    }
    assert!(objects.contains(&0x07), "Query lists Secret Data");

    let vault_name = "Synology_DS923_vault";
    let r = ok_payload(&call(&mut s, v, 0x08, vec![name_attr(vault_name)]).await?)?;
    assert!(r.child(0x420094).is_none(), "nothing yet: {r:?}");

    let secret: Vec<u8> = (0..32u8)
        .map(|b| b.wrapping_mul(7).wrapping_add(200))
        .collect();
    let r = ok_payload(
        &call(
            &mut s,
            v,
            0x03,
            vec![
                en(0x420057, 0x07),
                Item::structure(
                    0x420091,
                    vec![
                        attr("Cryptographic Usage Mask", Value::Integer(0x02)),
                        name_attr("tmp-registration"),
                        attr("x-classification", Value::Text("restricted".into())),
                    ],
                ),
                Item::structure(
                    0x420085,
                    vec![
                        en(0x420086, 0x01),
                        Item::structure(
                            0x420040,
                            vec![
                                en(0x420042, 0x02),
                                Item::structure(0x420045, vec![bytes(0x420043, &secret)]),
                            ],
                        ),
                    ],
                ),
            ],
        )
        .await?,
    )?;
    let uid = r
        .child(0x420094)
        .and_then(Item::as_text)
        .ok_or("no uid")?
        .to_owned();

    let rename = Item::structure(
        0x420008,
        vec![
            txt(0x42000A, "Name"),
            int(0x420009, 0),
            Item::new(
                0x42000B,
                Value::Structure(vec![txt(0x420055, vault_name), en(0x420054, 1)]),
            ),
        ],
    );
    ok_payload(&call(&mut s, v, 0x0E, vec![txt(0x420094, &uid), rename]).await?)?;
    ok_payload(&call(&mut s, v, 0x12, vec![txt(0x420094, &uid)]).await?)?;

    let r = ok_payload(&call(&mut s, v, 0x0B, vec![txt(0x420094, &uid)]).await?)?;
    assert_eq!(
        attribute(&r, "Object Type").and_then(Item::as_enum),
        Some(0x07)
    );
    assert_eq!(
        attribute(&r, "State").and_then(Item::as_enum),
        Some(0x02),
        "Active"
    );
    assert_eq!(
        attribute(&r, "Name")
            .and_then(|n| n.child(0x420055))
            .and_then(Item::as_text),
        Some(vault_name)
    );
    let r = ok_payload(&call(&mut s, v, 0x08, vec![name_attr(vault_name)]).await?)?;
    assert_eq!(
        r.child(0x420094).and_then(Item::as_text),
        Some(uid.as_str())
    );

    let get = |r: &Item| -> Option<Vec<u8>> {
        r.child(0x420085)?
            .child(0x420040)?
            .child(0x420045)?
            .child(0x420043)?
            .as_bytes()
            .map(<[u8]>::to_vec)
    };
    let r = ok_payload(&call(&mut s, v, 0x0A, vec![txt(0x420094, &uid)]).await?)?;
    assert_eq!(r.child(0x420057).and_then(Item::as_enum), Some(0x07));
    assert_eq!(
        get(&r).as_deref(),
        Some(secret.as_slice()),
        "Get gives the secret back"
    );

    // On the token: a sensitive object under the key's own label; nothing of it in the inventory.
    let name = svc.env.key_name_by_id(&uid)?;
    let shown = json(&svc.env.ok(&["key", "show", &name, "--json"])?)?;
    assert_eq!(
        shown["classification"], "restricted",
        "A8 from the template"
    );
    assert_eq!(shown["owner"], APP);
    let objects = svc.env.list_objects("kms-primary")?;
    let block = objects
        .split("Object;")
        .find(|b| b.contains(&format!("kms:{name}:v1")))
        .ok_or_else(|| format!("no kms:{name}:v1 on the token:\n{objects}"))?;
    assert!(block.contains("sensitive"), "{block}");
    assert!(!svc
        .env
        .inventory_bytes()?
        .windows(secret.len())
        .any(|w| w == secret.as_slice()));
    // Another principal gets nothing.
    svc.register("other-app")?;
    let mut other = connect(&svc, "other-app").await?;
    let (reason, _) = failure(&call(&mut other, v, 0x0A, vec![txt(0x420094, &uid)]).await?);
    assert_eq!(reason, 0x0C, "no grant, no secret");

    // Revoke (Cessation of Operation): deactivated; it still opens what it protects.
    ok_payload(
        &call(
            &mut s,
            v,
            0x13,
            vec![
                txt(0x420094, &uid),
                Item::structure(0x420081, vec![en(0x420082, 0x06)]),
            ],
        )
        .await?,
    )?;
    let r = ok_payload(&call(&mut s, v, 0x0B, vec![txt(0x420094, &uid)]).await?)?;
    assert_eq!(
        attribute(&r, "State").and_then(Item::as_enum),
        Some(0x03),
        "Deactivated"
    );
    let r = ok_payload(&call(&mut s, v, 0x0A, vec![txt(0x420094, &uid)]).await?)?;
    assert_eq!(get(&r).as_deref(), Some(secret.as_slice()));

    // Destroy waits for the disposal procedure, then carries it out.
    let (reason, message) = failure(&call(&mut s, v, 0x14, vec![txt(0x420094, &uid)]).await?);
    assert_eq!(reason, 0x0C, "{message}");
    assert!(message.contains("kms key dispose"), "{message}");
    svc.env.approve_disposal(&name)?;
    ok_payload(&call(&mut s, v, 0x14, vec![txt(0x420094, &uid)]).await?)?;
    let objects = svc.env.list_objects("kms-primary")?;
    assert!(!objects.contains(&format!("kms:{name}:v1")), "{objects}");
    let (reason, _) = failure(&call(&mut s, v, 0x0A, vec![txt(0x420094, &uid)]).await?);
    assert_eq!(reason, 0x01, "Item Not Found after Destroy");

    let text = serde_json::to_string(&svc.audit(None)?)?;
    for needle in [
        "kmip.register",
        "kmip.modify-attribute",
        "key.reveal",
        "kmip.revoke",
        "key.dispose",
    ] {
        assert!(text.contains(needle), "audit has {needle}");
    }
    assert!(
        !text.contains(&hex::encode(&secret)),
        "no secret in the audit trail"
    );
    Ok(())
}

/// Issue 23: the key's owner written into the inventory behind kms's back gives a grantee no
/// owner's power over KMIP (Revoke deactivates a key for its owner): the keys row carries a tag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_written_into_the_inventory_gives_no_kmip_revoke() -> TestResult {
    let svc = kmip_service()?;
    svc.env.ok(&create_args(
        "k",
        "aes-256",
        "encrypt,decrypt",
        &["--reason", "CHG-1"],
    ))?;
    svc.grant(APP, "k", "encrypt")?;
    let shown = json(&svc.env.ok(&["key", "show", "k", "--json"])?)?;
    let uid = shown["id"].as_str().ok_or("id")?.to_owned();
    svc.env
        .sql(&format!("UPDATE keys SET owner = '{APP}' WHERE name = 'k'"))?;
    let mut s = connect(&svc, APP).await?;
    let (_, message) = failure(
        &call(
            &mut s,
            4,
            0x13,
            vec![
                txt(0x420094, &uid),
                Item::structure(0x420081, vec![en(0x420082, 0x06)]),
            ],
        )
        .await?,
    );
    assert!(message.contains("keys row"), "{message}");
    assert_eq!(
        svc.env.sql_text(
            "SELECT state FROM key_versions WHERE key_id = (SELECT id FROM keys WHERE name = 'k')"
        )?,
        "active",
        "the key was deactivated"
    );
    Ok(())
}
