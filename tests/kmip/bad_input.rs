//! Garbage, strangers, mutated requests and floods of bad messages: errors, never panics or a
//! stopped listener.

use super::*;

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
