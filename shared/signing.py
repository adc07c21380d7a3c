"""Ed25519 keys of the services: each signs what it publishes (events, checkpoints), and anyone with
the public keys verifies it.

On Kafka the signature covers the exact bytes of the message value and travels in two headers:
`key_id` and `signature` (the 64-byte Ed25519 signature, base64). Other headers and the key are not
covered: a reader reads the value, never a header, for what happened.

A keys directory holds, per service, its private key `<service>.key` (PEM, PKCS#8) and every public
key it ever used, `<key id>.pub` (PEM). A key id is `<service>-<12 hex digits of the public key's
SHA-256>`, so a rotated key gets a new id and messages signed with the old one still verify as long as
its `.pub` file is kept. Production mounts the private key of one service into that service only;
consumers and auditors need only the `.pub` files.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

KEY_ID_HEADER = "key_id"
SIGNATURE_HEADER = "signature"


def key_id(service: str, public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return f"{service}-{hashlib.sha256(raw).hexdigest()[:12]}"


def service_of(key_id: str) -> str:
    """The service a key id belongs to (`<service>-<digest>`): the only source it may sign for."""
    return key_id.rsplit("-", 1)[0]


def carried_signature(headers: Iterable[tuple[str, bytes]]) -> tuple[str | None, str | None]:
    """The key id and the (base64) signature a Kafka record's headers carry; None for what is missing.
    A repeated header counts once, the first: whichever is taken, it must still verify the value."""
    found: dict[str, str] = {}
    for name, value in headers:
        if name in (KEY_ID_HEADER, SIGNATURE_HEADER) and name not in found:
            found[name] = (value or b"").decode("utf-8", errors="replace")
    return found.get(KEY_ID_HEADER), found.get(SIGNATURE_HEADER)


@dataclass(frozen=True)
class Signer:
    key_id: str
    private_key: Ed25519PrivateKey

    def sign(self, data: bytes) -> bytes:
        return self.private_key.sign(data)

    def headers(self, data: bytes) -> dict[str, str]:
        """The headers that carry the signature of a message value (`data`, the exact bytes sent)."""
        return {KEY_ID_HEADER: self.key_id, SIGNATURE_HEADER: base64.b64encode(self.sign(data)).decode()}


class Verifier:
    """The public keys by key id; `verify` says whether `signature` is `data` signed by `key_id`."""

    def __init__(self, public_keys: dict[str, Ed25519PublicKey], remembered: int = 4096):
        self.public_keys = public_keys
        # A service's consumers read the same messages (the follow-up's journey and subject facts both
        # read every enrolment), and a check costs about 150 us: a message checked once is not checked
        # again. The answer depends on nothing but these three values.
        self._checked = functools.lru_cache(maxsize=remembered)(self._check)

    @property
    def services(self) -> set[str]:
        """The services it has at least one public key of."""
        return {service_of(k) for k in self.public_keys}

    def verify(self, key_id: str, data: bytes, signature: bytes) -> bool:
        return self._checked(key_id, data, signature)

    def _check(self, key_id: str, data: bytes, signature: bytes) -> bool:
        key = self.public_keys.get(key_id)
        if key is None:
            return False
        try:
            key.verify(signature, data)
        except InvalidSignature:
            return False
        return True

    def problem(self, key_id: str | None, data: bytes, signature: bytes | None) -> str | None:
        """None when it verifies, else what is wrong (for a parked message's reason)."""
        if not key_id or signature is None:
            return "signature: the message is not signed"
        if key_id not in self.public_keys:
            return f"signature: unknown key {key_id!r}"
        if not self.verify(key_id, data, signature):
            return f"signature: does not match the message (altered, or not signed by {key_id})"
        return None

    def check(self, data: bytes, key_id: str | None, signature: str | None) -> str | None:
        """`problem` for a message value and the headers it came with (`carried_signature`)."""
        if signature is None:
            return self.problem(key_id, data, None)
        try:
            raw = base64.b64decode(signature, validate=True)
        except (binascii.Error, ValueError):
            return "signature: the signature header is not base64"
        return self.problem(key_id, data, raw)


def load_signer(keys_dir: Path, service: str) -> Signer:
    path = keys_dir / f"{service}.key"
    private = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(private, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 private key")
    return Signer(key_id(service, private.public_key()), private)


def load_verifier(keys_dir: Path) -> Verifier:
    keys = {}
    for path in sorted(keys_dir.glob("*.pub")):
        public = serialization.load_pem_public_key(path.read_bytes())
        if not isinstance(public, Ed25519PublicKey):
            raise ValueError(f"{path} is not an Ed25519 public key")
        # The file's name says which service the key speaks for: it must be the key's own id.
        if path.stem != key_id(service_of(path.stem), public):
            raise ValueError(f"{path}: its name is not its key id ({key_id(service_of(path.stem), public)})")
        keys[path.stem] = public
    return Verifier(keys)


def ensure_keys(keys_dir: Path, services: tuple[str, ...]) -> None:
    """Generate the key pair of each service that has none (the demo and the tests; production
    provisions its own). Private keys are readable by their owner only."""
    keys_dir.mkdir(parents=True, exist_ok=True)
    for service in services:
        private_path = keys_dir / f"{service}.key"
        if private_path.exists():
            continue
        private = Ed25519PrivateKey.generate()
        pem = private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(pem)
        public = private.public_key()
        (keys_dir / f"{key_id(service, public)}.pub").write_bytes(
            public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        )
