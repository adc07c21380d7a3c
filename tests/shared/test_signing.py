"""Service keys: what one service signs, the public keys verify; an altered message, an unknown key or
no signature is named; a rotated key keeps the old messages verifiable."""

from pathlib import Path

from shared.signing import ensure_keys, load_signer, load_verifier


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
