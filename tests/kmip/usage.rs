//! A KMIP client creates and uses keys without taking key material; registered HMAC keys; custom
//! attributes are labels.

use super::*;

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
