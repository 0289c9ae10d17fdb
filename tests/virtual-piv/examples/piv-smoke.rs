//! Smoke test of the virtual PIV card through the real `yubikey` crate (0.8, `untested`).
//!
//! Needs pcscd + vpcd + a running `virtual-piv` (see scripts/lib/virtual-piv.sh) and
//! PCSCLITE_CSOCK_NAME pointing at that pcscd. Opens the card (by serial when VPIV_SERIAL is
//! set, else the only card), then: wrong PIN shows tries left; PIN verify; management-key
//! authentication; EC P-384 key generated in slot 9c; self-signed certificate written to the
//! slot and read back; a SHA-384 digest signed on the card and verified with `p384`; a data
//! object written and read; PIN blocked by wrong tries and unblocked with the PUK.
//! Exits non-zero on the first failure.

use std::{str::FromStr, time::Duration};

use p384::ecdsa::{signature::hazmat::PrehashVerifier, DerSignature, VerifyingKey};
use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha384};
use x509_cert::{
    der::{referenced::OwnedToRef, Encode},
    name::Name,
    serial_number::SerialNumber,
    time::Validity,
};
use yubikey::{
    certificate::Certificate,
    piv::{self, AlgorithmId, SlotId},
    Error, MgmKey, PinPolicy, Serial, TouchPolicy, YubiKey,
};

const PIN: &[u8] = b"123456";
const PUK: &[u8] = b"12345678";

type Res<T = ()> = Result<T, String>;

fn step<T>(what: &str, r: yubikey::Result<T>) -> Res<T> {
    match r {
        Ok(v) => {
            println!("ok    {what}");
            Ok(v)
        }
        Err(e) => Err(format!("FAIL  {what}: {e} ({e:?})")),
    }
}

fn open() -> Res<YubiKey> {
    match std::env::var("VPIV_SERIAL") {
        Ok(s) => {
            let serial = Serial(s.parse().map_err(|_| format!("bad VPIV_SERIAL {s}"))?);
            step(
                &format!("open card with serial {serial}"),
                YubiKey::open_by_serial(serial),
            )
        }
        Err(_) => step("open the only card", YubiKey::open()),
    }
}

fn wrong_pin(yk: &mut YubiKey, expect_tries: u8) -> Res {
    match yk.verify_pin(b"999999") {
        Err(Error::WrongPin { tries }) if tries == expect_tries => {
            println!("ok    wrong PIN refused, {tries} tries left");
            Ok(())
        }
        other => Err(format!(
            "FAIL  wrong PIN: expected WrongPin {{ tries: {expect_tries} }}, got {other:?}"
        )),
    }
}

fn run() -> Res {
    let mut yk = open()?;
    println!(
        "      reader {:?}, serial {}, version {}",
        yk.name(),
        yk.serial(),
        yk.version()
    );

    let tries = step("PIN tries left", yk.get_pin_retries())?;
    println!("      {tries} PIN tries left");
    if tries != 3 {
        return Err(format!(
            "FAIL  expected 3 PIN tries on a fresh start, got {tries}"
        ));
    }
    wrong_pin(&mut yk, 2)?;
    step("verify PIN 123456", yk.verify_pin(PIN))?;
    let tries = step("PIN tries reset by a good PIN", yk.get_pin_retries())?;
    if tries != 3 {
        return Err(format!(
            "FAIL  expected 3 tries after a good PIN, got {tries}"
        ));
    }
    step("verify PIN again", yk.verify_pin(PIN))?;
    step(
        "authenticate with the default 3DES management key",
        yk.authenticate(MgmKey::default()),
    )?;

    let slot = SlotId::Signature; // 9c
    let spki = step(
        "generate EC P-384 key in slot 9c",
        piv::generate(
            &mut yk,
            slot,
            AlgorithmId::EccP384,
            PinPolicy::Default,
            TouchPolicy::Default,
        ),
    )?;
    let vk = VerifyingKey::try_from(spki.owned_to_ref())
        .map_err(|e| format!("FAIL  public key is not P-384: {e}"))?;

    let mut serial = [0u8; 16];
    OsRng.fill_bytes(&mut serial);
    serial[0] &= 0x7f;
    step(
        "verify PIN before signing the certificate",
        yk.verify_pin(PIN),
    )?;
    let cert = step(
        "self-signed certificate into slot 9c",
        Certificate::generate_self_signed::<_, p384::NistP384>(
            &mut yk,
            slot,
            SerialNumber::new(&serial).expect("serial"),
            Validity::from_now(Duration::from_secs(365 * 86400)).expect("validity"),
            Name::from_str("CN=virtual-piv smoke,O=kms tests").expect("name"),
            spki.clone(),
            |_| Ok(()),
        ),
    )?;
    let read = step(
        "read the certificate back",
        Certificate::read(&mut yk, slot),
    )?;
    if read.cert.to_der().ok() != cert.cert.to_der().ok() {
        return Err("FAIL  certificate read back differs".into());
    }
    println!("      subject {}", read.subject());

    let digest = Sha384::digest(b"kms virtual PIV smoke test");
    step("verify PIN before signing", yk.verify_pin(PIN))?;
    let sig = step(
        "sign a SHA-384 digest with slot 9c",
        piv::sign_data(&mut yk, &digest, AlgorithmId::EccP384, slot),
    )?;
    let sig = DerSignature::try_from(&sig[..]).map_err(|e| format!("FAIL  signature DER: {e}"))?;
    vk.verify_prehash(&digest, &sig)
        .map_err(|e| format!("FAIL  signature does not verify: {e}"))?;
    println!("ok    signature verified with p384");
    match piv::sign_data(&mut yk, &digest, AlgorithmId::EccP384, slot) {
        Ok(_) => println!("info  slot 9c signed again without a fresh PIN"),
        Err(e) => println!("ok    slot 9c refuses a second signature without a fresh PIN ({e})"),
    }

    // Slot 9a: PIN once, then several signatures.
    step("verify PIN", yk.verify_pin(PIN))?;
    step(
        "authenticate (management key)",
        yk.authenticate(MgmKey::default()),
    )?;
    let spki_9a = step(
        "generate EC P-384 key in slot 9a",
        piv::generate(
            &mut yk,
            SlotId::Authentication,
            AlgorithmId::EccP384,
            PinPolicy::Default,
            TouchPolicy::Default,
        ),
    )?;
    let vk_9a = VerifyingKey::try_from(spki_9a.owned_to_ref())
        .map_err(|e| format!("FAIL  public key is not P-384: {e}"))?;
    step("verify PIN", yk.verify_pin(PIN))?;
    for n in 1..=2 {
        let sig = step(
            &format!("sign with slot 9a (#{n} after one PIN)"),
            piv::sign_data(
                &mut yk,
                &digest,
                AlgorithmId::EccP384,
                SlotId::Authentication,
            ),
        )?;
        let sig = DerSignature::try_from(&sig[..]).map_err(|e| format!("FAIL  DER: {e}"))?;
        vk_9a
            .verify_prehash(&digest, &sig)
            .map_err(|e| format!("FAIL  9a signature does not verify: {e}"))?;
    }
    println!("ok    9a signatures verified with p384");

    // A standard PIV data object (printed information, 5FC109): write and read back.
    // (Yubico's vendor objects 5FFFxx, e.g. its admin data, are not supported by the card.)
    let object_id = 0x5f_c109;
    let mut data = b"\x01\x05hello".to_vec();
    step(
        "save data object 5FC109",
        yk.save_object(object_id, &mut data),
    )?;
    let got = step("fetch data object 5FC109", yk.fetch_object(object_id))?;
    if !got.windows(5).any(|w| w == b"hello") {
        return Err(format!("FAIL  data object read back as {:02x?}", &got[..]));
    }
    let mut admin = b"\x80\x03\x81\x01\x00".to_vec();
    match yk.save_object(0x5f_ff00, &mut admin) {
        Ok(()) => println!("info  Yubico admin data object 5FFF00 accepted"),
        Err(e) => println!("info  Yubico admin data object 5FFF00 refused: {e}"),
    }

    // Block the PIN with wrong tries, then unblock it with the PUK.
    wrong_pin(&mut yk, 2)?;
    wrong_pin(&mut yk, 1)?;
    match yk.verify_pin(b"999999") {
        Err(Error::WrongPin { tries: 0 }) | Err(Error::PinLocked) => {
            println!("ok    third wrong PIN blocks the PIN")
        }
        other => return Err(format!("FAIL  third wrong PIN: got {other:?}")),
    }
    match yk.verify_pin(PIN) {
        Err(Error::WrongPin { tries: 0 }) | Err(Error::PinLocked) => {
            println!("ok    right PIN refused while blocked")
        }
        other => return Err(format!("FAIL  right PIN while blocked: got {other:?}")),
    }
    step(
        "unblock the PIN with PUK 12345678",
        yk.unblock_pin(PUK, PIN),
    )?;
    step("verify PIN after unblock", yk.verify_pin(PIN))?;
    let tries = step("PIN tries after unblock", yk.get_pin_retries())?;
    if tries != 3 {
        return Err(format!("FAIL  expected 3 tries after unblock, got {tries}"));
    }

    // What does not work on this card (reported, not failed).
    match piv::metadata(&mut yk, slot) {
        Ok(m) => println!("info  piv::metadata works: {m:?}"),
        Err(e) => println!("info  piv::metadata not supported by the virtual card: {e}"),
    }
    match yk.piv_keys() {
        Ok(keys) => println!("info  piv_keys(): {} keys", keys.len()),
        Err(e) => println!("info  piv_keys() not supported by the virtual card: {e}"),
    }
    Ok(())
}

/// `status`: what a test may want to check between steps (e.g. across a card restart).
fn status() -> Res {
    let mut yk = open()?;
    println!(
        "serial {} version {} reader {:?}",
        yk.serial(),
        yk.version(),
        yk.name()
    );
    println!(
        "pin-tries {}",
        step("PIN tries left", yk.get_pin_retries())?
    );
    for (name, slot) in [("9a", SlotId::Authentication), ("9c", SlotId::Signature)] {
        match Certificate::read(&mut yk, slot) {
            Ok(c) => println!("cert-{name} {}", c.subject()),
            Err(e) => println!("cert-{name} none ({e})"),
        }
    }
    Ok(())
}

/// `retired`: a P-384 key and certificate in retired slot 82, signing verified with p384.
fn retired() -> Res {
    let mut yk = open()?;
    let slot = SlotId::Retired(yubikey::piv::RetiredSlotId::R1);
    step("verify PIN", yk.verify_pin(PIN))?;
    step(
        "authenticate (management key)",
        yk.authenticate(MgmKey::default()),
    )?;
    let spki = step(
        "generate EC P-384 key in slot 82",
        piv::generate(
            &mut yk,
            slot,
            AlgorithmId::EccP384,
            PinPolicy::Default,
            TouchPolicy::Default,
        ),
    )?;
    let vk = VerifyingKey::try_from(spki.owned_to_ref())
        .map_err(|e| format!("FAIL  public key is not P-384: {e}"))?;
    step(
        "self-signed certificate into slot 82",
        Certificate::generate_self_signed::<_, p384::NistP384>(
            &mut yk,
            slot,
            SerialNumber::new(&[1]).expect("serial"),
            Validity::from_now(Duration::from_secs(86400)).expect("validity"),
            Name::from_str("CN=virtual-piv retired 82").expect("name"),
            spki.clone(),
            |_| Ok(()),
        ),
    )?;
    let digest = Sha384::digest(b"retired slot");
    let sig = step(
        "sign with slot 82",
        piv::sign_data(&mut yk, &digest, AlgorithmId::EccP384, slot),
    )?;
    let sig = DerSignature::try_from(&sig[..]).map_err(|e| format!("FAIL  DER: {e}"))?;
    vk.verify_prehash(&digest, &sig)
        .map_err(|e| format!("FAIL  82 signature does not verify: {e}"))?;
    println!("ok    slot 82 signature verified with p384");
    match yk.piv_keys() {
        Ok(keys) => println!("info  piv_keys(): {} keys", keys.len()),
        Err(e) => println!("info  piv_keys() fails: {e}"),
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let result = match std::env::args().nth(1).as_deref() {
        None | Some("all") => run().map(|()| println!("piv-smoke: all checks passed")),
        Some("status") => status(),
        Some("retired") => retired(),
        Some("wrong-pin") => open().and_then(|mut yk| match yk.verify_pin(b"999999") {
            Err(Error::WrongPin { tries }) => {
                println!("wrong PIN: {tries} tries left");
                Ok(())
            }
            other => Err(format!("FAIL  wrong PIN: got {other:?}")),
        }),
        Some(other) => Err(format!(
            "usage: piv-smoke [all|status|wrong-pin|retired] (got {other})"
        )),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            println!("{e}");
            std::process::ExitCode::FAILURE
        }
    }
}
