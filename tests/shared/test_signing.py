"""Service keys: what one service signs, the public keys verify; an altered message, an unknown key or
no signature is named; a rotated key keeps the old messages verifiable; the Kafka headers carry it."""

import base64
from pathlib import Path

import pytest

from shared.signing import KEY_ID_HEADER, carried_signature, ensure_keys, load_signer, load_verifier, service_of


def test_a_signed_message_verifies_and_an_altered_one_does_not(tmp_path: Path):
    ensure_keys(tmp_path, ("treatment", "followup"))
    signer, verifier = load_signer(tmp_path, "treatment"), load_verifier(tmp_path)
    message = b'{"event_type": "UCARTInfused"}'
    signature = signer.sign(message)
    assert verifier.problem(signer.key_id, message, signature) is None
    assert "does not match" in (verifier.problem(signer.key_id, message + b" ", signature) or "")
    other = load_signer(tmp_path, "followup")
    assert "does not match" in (verifier.problem(other.key_id, message, signature) or "")
    assert "unknown key" in (verifier.problem("treatment-000000000000", message, signature) or "")
    assert "not signed" in (verifier.problem(None, message, None) or "")


def test_keys_are_made_once_private_ones_for_their_owner_only_and_rotation_keeps_old_ones(tmp_path: Path):
    ensure_keys(tmp_path, ("enrollment",))
    first = load_signer(tmp_path, "enrollment")
    ensure_keys(tmp_path, ("enrollment",))
    assert load_signer(tmp_path, "enrollment").key_id == first.key_id  # not regenerated
    assert (tmp_path / "enrollment.key").stat().st_mode & 0o077 == 0
    signed_before = first.sign(b"old")
    (tmp_path / "enrollment.key").unlink()  # rotate: a new private key, the old public key kept
    ensure_keys(tmp_path, ("enrollment",))
    second = load_signer(tmp_path, "enrollment")
    assert second.key_id != first.key_id
    verifier = load_verifier(tmp_path)
    assert verifier.problem(first.key_id, b"old", signed_before) is None
    assert verifier.problem(second.key_id, b"new", second.sign(b"new")) is None


def test_the_signature_headers_carry_a_signature_that_verifies_the_exact_value(tmp_path: Path):
    ensure_keys(tmp_path, ("followup",))
    signer, verifier = load_signer(tmp_path, "followup"), load_verifier(tmp_path)
    value = b'{"event_type": "SubjectDied"}'
    headers = [(name, text.encode()) for name, text in signer.headers(value).items()]
    key, signature = carried_signature([("event_type", b"SubjectDied"), *headers])
    assert key == signer.key_id and service_of(key) == "followup"
    assert base64.b64decode(signature or "") == signer.sign(value)  # Ed25519: the same bytes, the same signature
    assert verifier.check(value, key, signature) is None
    assert "does not match" in (verifier.check(value.replace(b"Died", b"Dead"), key, signature) or "")
    assert "not base64" in (verifier.check(value, key, "not base64!") or "")
    assert "not signed" in (verifier.check(value, *carried_signature([("event_type", b"SubjectDied")])) or "")
    # A header sent twice counts once (the first); what is taken must verify the value all the same.
    assert carried_signature([*headers, (KEY_ID_HEADER, b"followup-000000000000")])[0] == signer.key_id


def test_a_public_key_whose_file_name_is_not_its_key_id_is_refused(tmp_path: Path):
    ensure_keys(tmp_path, ("treatment",))
    [public] = tmp_path.glob("*.pub")
    public.rename(tmp_path / "enrollment-000000000000.pub")  # the treatment key passed off as enrollment's
    with pytest.raises(ValueError, match="not its key id"):
        load_verifier(tmp_path)


def test_a_message_checked_once_is_not_checked_again_and_an_altered_copy_still_fails(tmp_path: Path):
    ensure_keys(tmp_path, ("enrollment",))
    signer, verifier = load_signer(tmp_path, "enrollment"), load_verifier(tmp_path)
    key = verifier.public_keys[signer.key_id]
    checks = []

    class Counted:  # the real key, counting its checks
        def verify(self, signature: bytes, data: bytes) -> None:
            checks.append(data)
            key.verify(signature, data)

    verifier.public_keys[signer.key_id] = Counted()  # type: ignore[assignment]
    message = b'{"event_type": "Enrolled"}'
    signature = signer.sign(message)
    assert verifier.problem(signer.key_id, message, signature) is None
    assert verifier.problem(signer.key_id, bytes(bytearray(message)), signature) is None  # another copy
    assert checks == [message]
    assert "does not match" in (verifier.problem(signer.key_id, message + b" ", signature) or "")
    assert "does not match" in (verifier.problem(signer.key_id, message + b" ", signature) or "")
    assert len(checks) == 2
