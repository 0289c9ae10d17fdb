//! Malformed requests get problem details; the OpenAPI document matches the routes.

use super::*;

// ---- 7. malformed input ------------------------------------------------------------------------

/// method, path, body, expected status, expected code (when the code is fixed).
type Case<'a> = (&'a str, &'a str, Vec<u8>, u16, Option<&'a str>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_problem_details() -> TestResult {
    let svc = Service::start()?;
    create_keys(&svc)?;
    svc.register("demo-app")?;
    svc.grant("demo-app", "sig", "sign,verify")?;
    svc.grant("demo-app", "dek", "encrypt,decrypt,wrap,unwrap")?;
    let pins = [
        svc.env.user_pin("kms-primary")?,
        svc.env.user_pin("kms-backup")?,
    ];

    let big = format!("{{\"message\":\"{}\"}}", "A".repeat(100 * 1024 / 4 * 4));
    let cases: Vec<Case> = vec![
        (
            "POST",
            "/v1/keys/sig/sign",
            br#"{"message":"not base64!"}"#.to_vec(),
            400,
            Some("bad-base64"),
        ),
        (
            "POST",
            "/v1/keys/dek/encrypt",
            br#"{"plaintext":"aGVsbG8=","aad":"%%%"}"#.to_vec(),
            400,
            Some("bad-base64"),
        ),
        (
            "POST",
            "/v1/keys/sig/sign",
            br#"{"message":"aGVsbG8=","extra":1}"#.to_vec(),
            400,
            Some("unknown-field"),
        ),
        (
            "POST",
            "/v1/keys/dek/data-key",
            br#"{"bits":128}"#.to_vec(),
            400,
            Some("unknown-field"),
        ),
        (
            "POST",
            "/v1/keys/sig/sign",
            big.into_bytes(),
            413,
            Some("body-too-large"),
        ),
        (
            "POST",
            "/v1/keys/sig/sign",
            b"this is not json".to_vec(),
            400,
            None,
        ),
        ("POST", "/v1/keys/sig/sign", Vec::new(), 400, None),
        (
            "POST",
            "/v1/keys/sig/sign",
            br#"{"message":"aGVsbG8=","digest":"aGVsbG8="}"#.to_vec(),
            400,
            None,
        ),
        (
            "GET",
            "/v1/no-such-thing",
            Vec::new(),
            404,
            Some("no-such-route"),
        ),
        (
            "POST",
            "/v2/keys/sig/sign",
            b"{}".to_vec(),
            404,
            Some("no-such-route"),
        ),
        (
            "GET",
            "/v1/keys/sig/sign",
            Vec::new(),
            405,
            Some("method-not-allowed"),
        ),
        (
            "DELETE",
            "/v1/keys/sig",
            Vec::new(),
            405,
            Some("method-not-allowed"),
        ),
        (
            "GET",
            "/v1/keys/no-such-key",
            Vec::new(),
            404,
            Some("key-not-found"),
        ),
    ];
    for (method, path, body, status, code) in cases {
        let what = format!("{method} {path} ({} body bytes)", body.len());
        let r = svc.fetch("demo-app", method, path, body).await?;
        let text = String::from_utf8_lossy(&r.body).into_owned();
        assert_eq!(r.status, status, "{what}: body {text}");
        assert_eq!(
            r.content_type.as_deref(),
            Some("application/problem+json"),
            "{what}: content type; body {text}"
        );
        let v = r.json()?;
        for field in ["type", "title", "status", "detail", "code"] {
            assert!(!v[field].is_null(), "{what}: problem has no `{field}`: {v}");
        }
        assert_eq!(v["status"], status, "{what}: {v}");
        let c = v["code"].as_str().ok_or("code is not a string")?;
        assert_eq!(
            v["type"],
            format!("urn:kms:problem:{c}"),
            "{what}: type and code disagree: {v}"
        );
        if let Some(want) = code {
            assert_eq!(c, want, "{what}: {v}");
        }
        for pin in &pins {
            assert!(
                !text.contains(pin.as_str()),
                "{what}: the body contains a PIN"
            );
        }
    }

    // The service is still fine.
    let mut c = svc.connect("demo-app").await?;
    expect(
        &sign_msg(&mut c, "sig", b"ok").await?,
        200,
        None,
        "sign after bad input",
    )?;
    assert!(
        !pins.iter().any(|p| svc.log().contains(p.as_str())),
        "the service log contains a PIN"
    );
    Ok(())
}

// ---- 9. OpenAPI ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_matches_the_routes() -> TestResult {
    let spec_path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.json");
    let spec: Value = serde_json::from_str(&std::fs::read_to_string(&spec_path)?)?;
    let paths = spec["paths"]
        .as_object()
        .ok_or("openapi.json has no paths")?;
    let methods = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];
    let mut documented = BTreeSet::new();
    for (path, item) in paths {
        let item = item.as_object().ok_or("path item is not an object")?;
        for m in item.keys().filter(|k| methods.contains(&k.as_str())) {
            documented.insert((m.to_uppercase(), path.clone()));
        }
    }
    let served: BTreeSet<(String, String)> = kms::doors::json::ROUTES
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from docs/openapi.json: {undocumented:?}"
    );
    assert!(
        unserved.is_empty(),
        "documented operations the server does not route: {unserved:?}"
    );

    let svc = Service::start()?;
    create_keys(&svc)?;
    svc.register("demo-app")?;
    svc.grant("demo-app", "sig", "sign,verify,read-inventory")?;
    let mut c = svc.connect("demo-app").await?;
    for (method, path) in kms::doors::json::ROUTES {
        let path = path.replace("{name}", "sig");
        let body = if *method == "POST" {
            Some(json!({}))
        } else {
            None
        };
        let r = c.request(method, &path, body.as_ref(), None).await?;
        let code = serde_json::from_slice::<Value>(&r.body)
            .ok()
            .and_then(|v| v["code"].as_str().map(str::to_owned))
            .unwrap_or_default();
        let not_routed = (r.status == 404 && code == "no-such-route")
            || r.status == 405
            || code == "method-not-allowed";
        assert!(
            !not_routed,
            "{method} {path} is not routed: {} {}",
            r.status,
            body_text(&r)
        );
    }
    Ok(())
}
