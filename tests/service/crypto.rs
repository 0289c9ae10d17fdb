//! Signing, data keys, rewrap after a rotation and AEAD through the service.

use super::*;

// ---- 4. sign and verify ------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_verify_with_openssl_and_the_api() -> TestResult {
    let svc = Service::start()?;
    create_keys(&svc)?;
    svc.register("demo-app")?;
    svc.grant("demo-app", "sig", "sign,verify")?;
    let mut c = svc.connect("demo-app").await?;

    let msg = b"the quick brown fox jumps over the lazy dog".to_vec();
    let signed = expect(&sign_msg(&mut c, "sig", &msg).await?, 200, None, "sign")?;
    assert_eq!(signed["algorithm"], "ecdsa-p384-sha384", "{signed}");
    let sig = unb64(&signed["signature"])?;

    let public = expect(
        &get(&mut c, "/v1/keys/sig/public-key").await?,
        200,
        None,
        "public key",
    )?;
    let pem = public["pem"].as_str().ok_or("public-key has no pem")?;
    let pub_path = svc.env.write("pub.pem", pem.as_bytes())?;
    let sig_path = svc.env.write("sig.der", &sig)?;
    let msg_path = svc.env.write("msg", &msg)?;
    let check = |sig_path: &std::path::Path| -> TestResult {
        let out = openssl_dgst_verify(&["-sha384"], &pub_path, sig_path, &msg_path)?;
        assert!(
            out.status.success() && stdout(&out).contains("Verified OK"),
            "openssl does not verify the service's signature: {} {}",
            stdout(&out),
            stderr(&out)
        );
        Ok(())
    };
    check(&sig_path)?;

    // A precomputed SHA-384 digest: the signature verifies over the message, via the API and openssl.
    let digest = Sha384::digest(&msg).to_vec();
    let r = post(
        &mut c,
        "/v1/keys/sig/sign",
        json!({ "digest": b64(&digest) }),
    )
    .await?;
    let signed2 = expect(&r, 200, None, "sign a digest")?;
    let sig2 = unb64(&signed2["signature"])?;
    let r = post(
        &mut c,
        "/v1/keys/sig/verify",
        json!({ "message": b64(&msg), "signature": b64(&sig2) }),
    )
    .await?;
    let v = expect(&r, 200, None, "verify")?;
    assert_eq!(v["valid"], true, "verify: {v}");
    check(&svc.env.write("sig2.der", &sig2)?)?;

    // The same signature does not verify another message.
    let r = post(
        &mut c,
        "/v1/keys/sig/verify",
        json!({ "message": b64(b"another message"), "signature": b64(&sig2) }),
    )
    .await?;
    let v = expect(&r, 200, None, "verify another message")?;
    assert_eq!(v["valid"], false, "verify of another message: {v}");

    // A digest of the wrong length.
    let r = post(
        &mut c,
        "/v1/keys/sig/sign",
        json!({ "digest": b64(&[7u8; 32]) }),
    )
    .await?;
    expect(&r, 400, None, "sign a 32-byte digest with a P-384 key")?;
    Ok(())
}

// ---- 5. data keys ------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_keys_unwrap_and_rewrap() -> TestResult {
    let svc = Service::start()?;
    create_keys(&svc)?;
    svc.register("demo-app")?;
    svc.grant("demo-app", "dek", "wrap,unwrap")?;
    let mut c = svc.connect("demo-app").await?;

    let dk = expect(
        &post(&mut c, "/v1/keys/dek/data-key", json!({})).await?,
        200,
        None,
        "data-key",
    )?;
    let plaintext = unb64(&dk["plaintext"])?;
    assert_eq!(plaintext.len(), 32, "a data key is 256 bits");
    let wrapped = unb64(&dk["wrapped"])?;
    assert!(
        !wrapped.windows(32).any(|w| w == plaintext.as_slice()),
        "the wrapped blob contains the plaintext"
    );

    let un = expect(
        &post(
            &mut c,
            "/v1/keys/dek/unwrap",
            json!({ "wrapped": b64(&wrapped) }),
        )
        .await?,
        200,
        None,
        "unwrap",
    )?;
    assert_eq!(
        unb64(&un["plaintext"])?,
        plaintext,
        "unwrap gives the data key"
    );

    let re = expect(
        &post(
            &mut c,
            "/v1/keys/dek/rewrap",
            json!({ "wrapped": b64(&wrapped) }),
        )
        .await?,
        200,
        None,
        "rewrap",
    )?;
    let rewrapped = unb64(&re["wrapped"])?;
    let un2 = expect(
        &post(
            &mut c,
            "/v1/keys/dek/unwrap",
            json!({ "wrapped": b64(&rewrapped) }),
        )
        .await?,
        200,
        None,
        "unwrap the rewrapped key",
    )?;
    assert_eq!(
        unb64(&un2["plaintext"])?,
        plaintext,
        "rewrap keeps the data key"
    );

    // Tampered wrapped blobs (past the 26-byte header) are refused as bad ciphertext.
    for i in [27usize, wrapped.len() / 2 + 13, wrapped.len() - 1] {
        let mut bad = wrapped.clone();
        let byte = bad.get_mut(i).ok_or("wrapped blob too short")?;
        *byte ^= 0x01;
        let r = post(
            &mut c,
            "/v1/keys/dek/unwrap",
            json!({ "wrapped": b64(&bad) }),
        )
        .await?;
        expect(
            &r,
            400,
            Some("bad-ciphertext"),
            &format!("unwrap with byte {i} flipped"),
        )?;
    }
    // The service still works.
    expect(
        &post(
            &mut c,
            "/v1/keys/dek/unwrap",
            json!({ "wrapped": b64(&wrapped) }),
        )
        .await?,
        200,
        None,
        "unwrap after tampered attempts",
    )?;
    Ok(())
}

// ---- 6. encrypt / decrypt with AAD -------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_rotation_rewrap_moves_ciphertexts_and_data_keys_to_the_new_version() -> TestResult
{
    let svc = Service::start()?;
    create_keys(&svc)?;
    svc.register("demo-app")?;
    svc.grant("demo-app", "dek", "encrypt,decrypt,wrap,unwrap")?;
    let mut c = svc.connect("demo-app").await?;
    let (pt, aad) = (b"ledger row 17".to_vec(), b"tenant=9".to_vec());
    let enc = expect(
        &post(
            &mut c,
            "/v1/keys/dek/encrypt",
            json!({ "plaintext": b64(&pt), "aad": b64(&aad) }),
        )
        .await?,
        200,
        None,
        "encrypt",
    )?;
    let dk = expect(
        &post(&mut c, "/v1/keys/dek/data-key", json!({})).await?,
        200,
        None,
        "data-key",
    )?;
    svc.env
        .ok(&["--reason", "CHG-11", "key", "rotate", "dek"])?;
    let re = expect(
        &post(
            &mut c,
            "/v1/keys/dek/rewrap",
            json!({ "ciphertext": enc["ciphertext"], "aad": b64(&aad) }),
        )
        .await?,
        200,
        None,
        "rewrap ciphertext",
    )?;
    assert_eq!(re["key_version"], 2, "{re}");
    let dec = expect(
        &post(
            &mut c,
            "/v1/keys/dek/decrypt",
            json!({ "ciphertext": re["ciphertext"], "aad": b64(&aad) }),
        )
        .await?,
        200,
        None,
        "decrypt the moved ciphertext",
    )?;
    assert_eq!(unb64(&dec["plaintext"])?, pt);
    assert_eq!(dec["key_version"], 2);
    let rw = expect(
        &post(
            &mut c,
            "/v1/keys/dek/rewrap",
            json!({ "wrapped": dk["wrapped"] }),
        )
        .await?,
        200,
        None,
        "rewrap data key",
    )?;
    assert_eq!(rw["key_version"], 2);
    let un = expect(
        &post(
            &mut c,
            "/v1/keys/dek/unwrap",
            json!({ "wrapped": rw["wrapped"] }),
        )
        .await?,
        200,
        None,
        "unwrap",
    )?;
    assert_eq!(unb64(&un["plaintext"])?, unb64(&dk["plaintext"])?);
    // Both fields, or none: a clear 400.
    let r = post(
        &mut c,
        "/v1/keys/dek/rewrap",
        json!({ "wrapped": dk["wrapped"], "ciphertext": enc["ciphertext"] }),
    )
    .await?;
    expect(&r, 400, Some("bad-request"), "both fields")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypt_decrypt_with_aad() -> TestResult {
    let svc = Service::start()?;
    create_keys(&svc)?;
    svc.register("demo-app")?;
    svc.grant("demo-app", "dek", "encrypt,decrypt")?;
    let mut c = svc.connect("demo-app").await?;

    let pt = b"card 4111 1111 1111 1111".to_vec();
    let aad = b"tenant=42".to_vec();
    let enc = expect(
        &post(
            &mut c,
            "/v1/keys/dek/encrypt",
            json!({ "plaintext": b64(&pt), "aad": b64(&aad) }),
        )
        .await?,
        200,
        None,
        "encrypt",
    )?;
    let ct = unb64(&enc["ciphertext"])?;
    assert!(
        !ct.windows(pt.len()).any(|w| w == pt.as_slice()),
        "ciphertext contains the plaintext"
    );
    let dec = expect(
        &post(
            &mut c,
            "/v1/keys/dek/decrypt",
            json!({ "ciphertext": b64(&ct), "aad": b64(&aad) }),
        )
        .await?,
        200,
        None,
        "decrypt",
    )?;
    assert_eq!(unb64(&dec["plaintext"])?, pt, "round trip");

    for wrong in [
        json!({ "ciphertext": b64(&ct), "aad": b64(b"tenant=43") }),
        json!({ "ciphertext": b64(&ct) }),
    ] {
        let r = post(&mut c, "/v1/keys/dek/decrypt", wrong.clone()).await?;
        expect(
            &r,
            400,
            Some("bad-ciphertext"),
            &format!("decrypt with wrong AAD {wrong}"),
        )?;
    }

    // Still working afterwards, on the same connection and a new one.
    let dec = expect(
        &post(
            &mut c,
            "/v1/keys/dek/decrypt",
            json!({ "ciphertext": b64(&ct), "aad": b64(&aad) }),
        )
        .await?,
        200,
        None,
        "decrypt after a failed one",
    )?;
    assert_eq!(unb64(&dec["plaintext"])?, pt);
    let mut c2 = svc.connect("demo-app").await?;
    let enc2 = expect(
        &post(
            &mut c2,
            "/v1/keys/dek/encrypt",
            json!({ "plaintext": b64(b"x") }),
        )
        .await?,
        200,
        None,
        "encrypt on a new connection",
    )?;
    assert!(enc2["ciphertext"].is_string());
    let h = expect(&get(&mut c2, "/v1/health").await?, 200, None, "health")?;
    assert_eq!(h["status"], "ok");
    Ok(())
}
