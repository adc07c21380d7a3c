"""The local issuer of the demo and the tests: discovery, its JWKS, and client-credentials tokens for
service accounts, which the services' verifier accepts."""

from pathlib import Path

from fastapi.testclient import TestClient

from infra.issuer import Issuer, app
from shared.access.tokens import TokenVerifier

URL = "http://127.0.0.1:8000"


def test_a_service_account_gets_a_token_with_its_secret_only(tmp_path: Path):
    issuer = Issuer(tmp_path, URL, "ucart")
    secret = issuer.register_client("lab-system")
    client = TestClient(app(issuer))
    discovery = client.get("/.well-known/openid-configuration").json()
    assert discovery["issuer"] == URL and discovery["token_endpoint"] == f"{URL}/token"
    assert client.get("/jwks.json").json() == issuer.jwks

    form = {"grant_type": "client_credentials", "client_id": "lab-system", "client_secret": secret}
    granted = client.post("/token", data=form)
    assert granted.status_code == 200 and granted.json()["token_type"] == "Bearer"
    verifier = TokenVerifier(URL, "ucart", ("RS256",), str(tmp_path / "jwks.json"))
    assert verifier.verify(granted.json()["access_token"]).subject == "lab-system"

    assert client.post("/token", data=form | {"client_secret": "guess"}).status_code == 401
    assert client.post("/token", data=form | {"grant_type": "password"}).status_code == 400
    assert secret not in (tmp_path / "clients.json").read_text()  # only its hash is kept


def test_the_key_is_made_once_for_the_owner_only_and_kept(tmp_path: Path):
    first = Issuer(tmp_path, URL, "ucart")
    assert (tmp_path / "signing.key").stat().st_mode & 0o077 == 0
    again = Issuer(tmp_path, URL, "ucart")
    assert again.kid == first.kid and again.jwks == first.jwks
