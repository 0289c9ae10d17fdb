"""PyKMIP's ProxyKmipClient (pykmip 0.11) against kms serve's KMIP listener (issue 16).

Run by tests/pykmip.rs with KMS_KMIP_PORT, KMS_KMIP_CA, KMS_KMIP_CERT, KMS_KMIP_KEY set. Prints one
line per step; exits non-zero at the first step that does not do what kms promises. With
`destroy UID` it destroys that object (run after the officers' disposal procedure)."""

import os
import sys

from kmip import enums
from kmip.core import enums as core_enums  # noqa: F401  (the same enums, as some versions export)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from kmip.pie import client as pie_client
from kmip.pie import exceptions
from kmip.pie import objects


def step(name):
    print("step:", name, flush=True)


def expect_failure(name, reason, call):
    try:
        call()
    except exceptions.KmipOperationFailure as e:
        if e.reason != reason:
            sys.exit(f"{name}: failed with {e.reason}, expected {reason}: {e.message}")
        print(f"step: {name}: refused as expected ({e.reason.name})", flush=True)
        return
    sys.exit(f"{name}: succeeded, but kms must refuse it")


def client():
    return pie_client.ProxyKmipClient(
        hostname="127.0.0.1",
        port=int(os.environ["KMS_KMIP_PORT"]),
        cert=os.environ["KMS_KMIP_CERT"],
        key=os.environ["KMS_KMIP_KEY"],
        ca=os.environ["KMS_KMIP_CA"],
        config_file=None,
    )


def destroy(uid):
    """The second phase: after the officers' disposal procedure, Destroy carries it out."""
    c = client()
    with c:
        step("destroy after the disposal procedure")
        c.destroy(uid)
        expect_failure("get after destroy", enums.ResultReason.ITEM_NOT_FOUND, lambda: c.get(uid))
    print("pykmip: destroyed", flush=True)


def main():
    c = client()
    with c:
        step("create an AES-256 key")
        uid = c.create(enums.CryptographicAlgorithm.AES, 256, name="pykmip-key")
        step("locate it by name")
        found = c.locate(
            attributes=[
                c.attribute_factory.create_attribute(
                    enums.AttributeType.NAME, "pykmip-key"
                )
            ]
        )
        if uid not in found:
            sys.exit(f"locate did not find {uid}: {found}")
        step("activate")
        c.activate(uid)
        step("get attributes")
        got_uid, attrs = c.get_attributes(
            uid, ["Cryptographic Algorithm", "Cryptographic Length", "State"]
        )
        values = {a.attribute_name.value: a.attribute_value.value for a in attrs}
        if got_uid != uid or values.get("Cryptographic Length") != 256:
            sys.exit(f"unexpected attributes: {values}")
        if values.get("State") != enums.State.ACTIVE:
            sys.exit(f"the key is not active: {values}")
        step("encrypt and decrypt (AES-GCM)")
        params = {"block_cipher_mode": enums.BlockCipherMode.GCM}
        ciphertext, iv = c.encrypt(b"hello from PyKMIP", uid=uid, cryptographic_parameters=params)
        plaintext = c.decrypt(
            ciphertext, uid=uid, cryptographic_parameters=params, iv_counter_nonce=iv
        )
        if plaintext != b"hello from PyKMIP":
            sys.exit(f"round trip gave {plaintext!r}")
        step("create an RSA-3072 key pair, sign, verify")
        public_uid, private_uid = c.create_key_pair(
            enums.CryptographicAlgorithm.RSA, 3072, private_name="pykmip-signer"
        )
        signature = c.sign(b"release 4.2", uid=private_uid)
        validity = c.signature_verify(b"release 4.2", signature, uid=public_uid)
        if validity != enums.ValidityIndicator.VALID:
            sys.exit(f"a kms signature did not verify: {validity}")
        validity = c.signature_verify(b"release 4.3", signature, uid=public_uid)
        if validity != enums.ValidityIndicator.INVALID:
            sys.exit(f"a signature over other data verified: {validity}")
        step("get the public key")
        public = c.get(public_uid)
        if len(public.value) < 300:
            sys.exit(f"the public key is {len(public.value)} bytes")
        expect_failure(
            "get the private key", enums.ResultReason.PERMISSION_DENIED, lambda: c.get(private_uid)
        )
        step("register an AES-256 key; what kms encrypts with it opens with the same key here")
        material = bytes(range(32))
        registered = objects.SymmetricKey(
            enums.CryptographicAlgorithm.AES,
            256,
            material,
            [enums.CryptographicUsageMask.ENCRYPT, enums.CryptographicUsageMask.DECRYPT],
            name="registered-key",
        )
        rid = c.register(registered)
        sealed, iv2 = c.encrypt(b"registered", uid=rid, cryptographic_parameters=params)
        if AESGCM(material).decrypt(iv2, sealed, None) != b"registered":
            sys.exit("the registered key is not the one kms encrypts with")
        expect_failure(
            "get the registered key back", enums.ResultReason.PERMISSION_DENIED, lambda: c.get(rid)
        )
        step("register Secret Data and get it back")
        secret = b"vault passphrase: correct horse battery staple"
        sid = c.register(
            objects.SecretData(
                secret,
                enums.SecretDataType.PASSWORD,
                masks=[enums.CryptographicUsageMask.VERIFY],
                name="pykmip-secret",
            )
        )
        got = c.get(sid)
        if not isinstance(got, objects.SecretData) or got.value != secret:
            sys.exit(f"Get of the Secret Data gave {type(got).__name__} {getattr(got, 'value', None)!r}")
        if got.data_type != enums.SecretDataType.PASSWORD:
            sys.exit(f"the Secret Data came back as {got.data_type}")
        found = c.locate(
            attributes=[
                c.attribute_factory.create_attribute(
                    enums.AttributeType.OBJECT_TYPE, enums.ObjectType.SECRET_DATA
                )
            ]
        )
        if sid not in found or uid in found:
            sys.exit(f"locate by Object Type Secret Data gave {found}")
        step("revoke (cessation of operation): deactivated, still readable")
        c.revoke(enums.RevocationReasonCode.CESSATION_OF_OPERATION, sid)
        _, attrs = c.get_attributes(sid, ["State"])
        state = {a.attribute_name.value: a.attribute_value.value for a in attrs}.get("State")
        if state != enums.State.DEACTIVATED:
            sys.exit(f"after Revoke the state is {state}")
        if c.get(sid).value != secret:
            sys.exit("a revoked secret no longer opens what it protects")
        expect_failure(
            "destroy before the disposal procedure",
            enums.ResultReason.PERMISSION_DENIED,
            lambda: c.destroy(sid),
        )
        print(f"secret-uid: {sid}", flush=True)
        step("the key material stays on the token")
        expect_failure("get", enums.ResultReason.PERMISSION_DENIED, lambda: c.get(uid))
        expect_failure(
            "destroy without the disposal procedure",
            enums.ResultReason.PERMISSION_DENIED,
            lambda: c.destroy(uid),
        )
        expect_failure(
            "revoke (key compromise) by an application",
            enums.ResultReason.PERMISSION_DENIED,
            lambda: c.revoke(enums.RevocationReasonCode.KEY_COMPROMISE, uid),
        )
    print("pykmip: all steps passed", flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "destroy":
        destroy(sys.argv[2])
    else:
        main()
