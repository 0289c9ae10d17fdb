//! The Synology sequence to disposal, and an owner written into the inventory gives no revoke.

use super::*;

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
