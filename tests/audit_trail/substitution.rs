//! A substituted audit key and a grant put into the inventory behind kms's back.

use super::*;

/// The v2 text of checkpoint row `id`, as an intruder rebuilds it from the row.
fn checkpoint_text(env: &Env, id: &str) -> Res<Vec<u8>> {
    use sha2::Digest as _;
    let row = env.sql_rows(&format!(
        "SELECT seq, head_hash, at, prev_checkpoint_id, prev_head_hash, covered
             FROM audit_checkpoints WHERE id = {id}"
    ))?;
    let f: Vec<&str> = row.split('|').collect();
    let [seq, head, at, prev, prev_head, covered] = f.as_slice() else {
        return Err(format!("row {row}").into());
    };
    let digest = hex::encode(sha2::Sha384::digest(covered.as_bytes()));
    Ok(format!(
        "kms-audit-checkpoint/v2\nid: {id}\nseq: {seq}\nhead: {head}\nat: {at}\nprev: {prev}\nprev_head: {prev_head}\ncovered: {digest}\n"
    )
    .into_bytes())
}

#[test]
fn a_substituted_audit_key_is_named() -> TestResult {
    let env = with_history()?;
    let genuine = stdout(&env.ok(&["audit", "public-key"])?);
    // The intruder's own P-384 key; its public half replaces the audit key's in the inventory,
    // and every checkpoint is signed again with it.
    let key = env.path("intruder.pem");
    let key_s = key.to_str().ok_or("path")?;
    let o = openssl(&[
        "ecparam",
        "-name",
        "secp384r1",
        "-genkey",
        "-noout",
        "-out",
        key_s,
    ])?;
    assert!(o.status.success(), "{}", stderr(&o));
    let spki = env.path("intruder.der");
    let o = openssl(&[
        "ec",
        "-in",
        key_s,
        "-pubout",
        "-outform",
        "DER",
        "-out",
        spki.to_str().ok_or("path")?,
    ])?;
    assert!(o.status.success(), "{}", stderr(&o));
    let spki_hex = hex::encode(std::fs::read(&spki)?);
    env.sql(&format!(
        "UPDATE key_versions SET public_key = {}
             WHERE key_id = (SELECT id FROM keys WHERE name = 'kms-audit')",
        env.sql_bytes(&spki_hex)
    ))?;
    let ids = env.sql_rows("SELECT id FROM audit_checkpoints ORDER BY id")?;
    for id in ids.lines() {
        let msg = env.write(&format!("cp-{id}.txt"), &checkpoint_text(&env, id)?)?;
        let sig = env.path(&format!("cp-{id}.sig"));
        let o = openssl(&[
            "dgst",
            "-sha384",
            "-sign",
            key_s,
            "-out",
            sig.to_str().ok_or("path")?,
            msg.to_str().ok_or("path")?,
        ])?;
        assert!(o.status.success(), "{}", stderr(&o));
        let sig_hex = hex::encode(std::fs::read(&sig)?);
        env.sql(&format!(
            "UPDATE audit_checkpoints SET signature = {} WHERE id = {id}",
            env.sql_bytes(&sig_hex)
        ))?;
    }
    let (code, problems) = verify_json(&env)?;
    assert_eq!(code, Some(1), "{problems:?}");
    // Since issue 17 the edited key_versions row fails its HSM-made integrity tag first, and
    // verification names that; before, it named the key mismatch.
    assert!(
        problems[0].starts_with("the audit key in the inventory is not the one on the HSM")
            || (problems[0].contains("integrity check failed")
                && problems[0].contains("key_versions")),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.contains("has no valid signature from the audit key")),
        "the intruder's signatures were accepted: {problems:?}"
    );
    // The key printed for safekeeping is never the intruder's: the HSM's, or a refusal that
    // names the tampered row.
    let o = env.run(&["audit", "public-key"])?;
    if o.status.success() {
        assert_eq!(stdout(&o), genuine);
    } else {
        assert!(stderr(&o).contains("was not made by kms"), "{}", stderr(&o));
    }
    Ok(())
}

#[test]
fn a_grant_put_into_the_inventory_behind_kms_back_is_named() -> TestResult {
    let env = with_history()?;
    let (code, out) = verify(&env)?;
    assert_eq!(code, Some(0), "{out}");
    // An intruder with write access to the inventory file grants himself a key.
    env.sql(
        "INSERT INTO grants (id, principal, key_id, ops, not_before, not_after, ticket,
             justification, created_by, created_at, break_glass)
         SELECT 'g-forged000001', 'test-user', id, 'sign', '2020-01-01T00:00:00Z',
                '2099-01-01T00:00:00Z', 'X', 'x', 'nobody', '2020-01-01T00:00:00Z', 0
         FROM keys WHERE name = 'k'",
    )?;
    let (code, out) = verify(&env)?;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("grant g-forged000001"), "{out}");
    assert!(out.contains("outside kms"), "{out}");
    Ok(())
}
