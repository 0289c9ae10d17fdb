//! PyKMIP's own client (pykmip 0.11, `ProxyKmipClient`) drives a real `kms serve` with `[kmip]`
//! (issue 16): a conformance witness nobody here wrote. `scripts/test` installs pykmip into a
//! venv and sets `KMS_PYKMIP` to its python (and `KMS_TEST_SCRIPT=1`: then a missing client
//! fails the test). Run by hand without it, the test says so and is skipped.

use common::service::Service;
use common::*;
use kms_testkit as common;

#[test]
fn pykmip_creates_locates_uses_and_is_refused_key_material() -> TestResult {
    let python = match std::env::var_os("KMS_PYKMIP") {
        Some(p) => std::path::PathBuf::from(p),
        None if std::env::var_os("KMS_TEST_SCRIPT").is_some() => {
            return Err("KMS_PYKMIP is not set: scripts/test must install pykmip".into())
        }
        None => {
            eprintln!(
                "SKIPPED: set KMS_PYKMIP to a python with pykmip 0.11 (scripts/test installs one)"
            );
            return Ok(());
        }
    };
    let svc = Service::start_with(|env| {
        let mut cfg = std::fs::read_to_string(env.config())?;
        cfg.push_str("\n[kmip]\nlisten = \"127.0.0.1:0\"\nmay_create = [\"demo-app\"]\n\n[lifecycle]\ndisposal_wait = \"0\"\ndisposal_wait_min = \"0\"\n");
        std::fs::write(env.config(), cfg)?;
        Ok(())
    })?;
    svc.register("demo-app")?;
    let addr = svc.kmip.ok_or("no KMIP listener")?;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pykmip_client.py");
    let pykmip = |args: &[&str]| {
        std::process::Command::new(&python)
            .arg(&script)
            .args(args)
            .env("KMS_KMIP_PORT", addr.port().to_string())
            .env("KMS_KMIP_CA", svc.pki().join("ca.pem"))
            .env("KMS_KMIP_CERT", svc.pki().join("client-demo-app.pem"))
            .env("KMS_KMIP_KEY", svc.pki().join("client-demo-app-key.pem"))
            .env("PYTHONWARNINGS", "ignore")
            .output()
    };
    let o = pykmip(&[])?;
    let out = format!("{}{}", stdout(&o), stderr(&o));
    assert!(
        o.status.success(),
        "pykmip:\n{out}\nserve log:\n{}",
        svc.log()
    );
    assert!(out.contains("pykmip: all steps passed"), "{out}");
    // It was all kms: an ordinary key, on the token, every call on the record.
    let shown = json(&svc.env.ok(&["key", "show", "pykmip-key", "--json"])?)?;
    assert_eq!(shown["owner"], "demo-app");
    let text = serde_json::to_string(&svc.audit(None)?)?;
    assert!(
        text.contains("kmip.encrypt")
            && text.contains("kmip.create")
            && text.contains("kmip.register")
    );
    // Every KMIP-made key is a sensitive object on the token, and nothing of it is in SQLite.
    let objects = svc.env.list_objects("kms-primary")?;
    let access = key_access(&objects);
    for label in [
        "kms:pykmip-key:v1",
        "kms:pykmip-signer:v1",
        "kms:registered-key:v1",
        "kms:pykmip-secret:v1",
    ] {
        let a = access
            .get(label)
            .ok_or_else(|| format!("no {label} on the token:\n{objects}"))?;
        assert!(
            a.contains("sensitive"),
            "{label} is sensitive on the token: {a}"
        );
    }
    let dump = svc.env.inventory_bytes()?;
    let material: Vec<u8> = (0u8..32).collect();
    let secret = b"vault passphrase: correct horse battery staple";
    for bytes in [material.as_slice(), secret.as_slice()] {
        assert!(
            !dump.windows(bytes.len()).any(|w| w == bytes),
            "the registered bytes are not in the inventory"
        );
    }
    // Destroy, after the disposal procedure the officers carry out.
    let sid = out
        .lines()
        .find_map(|l| l.strip_prefix("secret-uid: "))
        .ok_or("no secret uid printed")?
        .trim()
        .to_owned();
    let name = svc.env.key_name_by_id(&sid)?;
    assert_eq!(name, "pykmip-secret");
    svc.env.approve_disposal(&name)?;
    let o = pykmip(&["destroy", &sid])?;
    let out = format!("{}{}", stdout(&o), stderr(&o));
    assert!(
        o.status.success() && out.contains("pykmip: destroyed"),
        "{out}"
    );
    assert!(!svc
        .env
        .list_objects("kms-primary")?
        .contains("kms:pykmip-secret:v1"));
    Ok(())
}
