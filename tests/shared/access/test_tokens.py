"""Token verification: only a token of the study's issuer, for this API, in its lifetime, signed by one
of the issuer's keys with a pinned algorithm, and not altered, is accepted."""

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from infra.issuer import Issuer
from shared.access.tokens import InvalidToken, TokenVerifier

URL, AUDIENCE = "https://issuer.example", "ucart"


@pytest.fixture(scope="module")
def issuer(tmp_path_factory) -> Issuer:
    return Issuer(tmp_path_factory.mktemp("issuer"), URL, AUDIENCE)


@pytest.fixture(scope="module")
def verifier(issuer: Issuer) -> TokenVerifier:
    return TokenVerifier(URL, AUDIENCE, ("RS256",), str(issuer.directory / "jwks.json"))


def refused(verifier: TokenVerifier, token: str, why: str) -> None:
    with pytest.raises(InvalidToken, match=why):
        verifier.verify(token)


def test_a_token_of_the_issuer_gives_its_subject(issuer: Issuer, verifier: TokenVerifier):
    assert verifier.verify(issuer.token("coordinator-01")).subject == "coordinator-01"


def test_expired_and_not_yet_valid_tokens_are_refused(issuer: Issuer, verifier: TokenVerifier):
    refused(verifier, issuer.token("u", seconds=-120), "expired")
    soon = int(time.time()) + 600
    refused(verifier, issuer.token("u", nbf=soon, iat=soon), "not valid yet")


def test_another_issuer_or_audience_is_refused(issuer: Issuer, verifier: TokenVerifier):
    refused(verifier, issuer.token("u", iss="https://elsewhere.example"), "issuer")
    refused(verifier, issuer.token("u", aud="another-api"), "audience")


def test_alg_none_an_unknown_key_and_an_altered_payload_are_refused(
    issuer: Issuer, verifier: TokenVerifier, tmp_path: Path
):
    unsigned = jwt.encode({"iss": URL, "aud": AUDIENCE, "sub": "u", "exp": int(time.time()) + 60}, None, "none")
    refused(verifier, unsigned, "unknown signing key")
    stranger = Issuer(tmp_path / "stranger", URL, AUDIENCE)  # same claims, another key
    refused(verifier, stranger.token("u"), "unknown signing key")
    header, payload, signature = issuer.token("investigator-01").split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    forged = base64.urlsafe_b64encode(json.dumps(claims | {"sub": "study-admin"}).encode()).rstrip(b"=").decode()
    refused(verifier, f"{header}.{forged}.{signature}", "invalid")


def test_a_token_signed_with_a_symmetric_algorithm_is_refused_even_with_the_right_kid(
    issuer: Issuer, verifier: TokenVerifier
):
    # The classic confusion: HS256 keyed with the issuer's public key. The algorithm is pinned to RS256.
    def part(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    now = int(time.time())
    signing_input = (
        part({"alg": "HS256", "typ": "JWT", "kid": issuer.kid})
        + "."
        + part({"iss": URL, "aud": AUDIENCE, "sub": "u", "iat": now, "exp": now + 60})
    )
    public_pem = issuer.private_key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    forged = signing_input + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
    refused(verifier, forged, "algorithm")


def test_garbage_and_the_algorithm_none_setting_are_refused(issuer: Issuer, verifier: TokenVerifier):
    refused(verifier, "not-a-jwt", "not a JWT")
    with pytest.raises(ValueError, match="none"):
        TokenVerifier(URL, AUDIENCE, ("none",), str(issuer.directory / "jwks.json"))
