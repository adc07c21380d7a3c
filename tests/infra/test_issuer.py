"""The local issuer of the demo and the tests: discovery, its JWKS, and client-credentials tokens for
service accounts, which the services' verifier accepts."""

import json
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


def test_a_person_gets_a_password_kept_only_hashed_and_a_new_one_replaces_it(tmp_path: Path):
    issuer = Issuer(tmp_path, URL, "ucart")
    password = issuer.register_user("coordinator-01")
    assert len(password) == 12 and issuer.check_password("coordinator-01", password)
    assert not issuer.check_password("coordinator-01", password[:-1] + ("x" if password[-1] != "x" else "y"))
    assert not issuer.check_password("investigator-01", password)  # a password is its user's only
    assert not issuer.check_password("nobody", password)

    users = tmp_path / "users.json"
    assert users.stat().st_mode & 0o077 == 0 and password not in users.read_text()
    other = issuer.register_user("monitor")
    stored = json.loads(users.read_text())
    assert set(stored) == {"coordinator-01", "monitor"}
    assert stored["coordinator-01"].startswith("scrypt$") and other not in users.read_text()

    renewed = issuer.register_user("coordinator-01")
    assert renewed != password
    assert issuer.check_password("coordinator-01", renewed) and not issuer.check_password("coordinator-01", password)
    assert issuer.check_password("monitor", other)  # the others keep theirs
    again = Issuer(tmp_path, URL, "ucart")  # kept in the directory, for the issuer's own process
    assert again.check_password("coordinator-01", renewed)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no partial file left


def test_the_service_accounts_secrets_are_for_the_owner_only(tmp_path: Path):
    Issuer(tmp_path, URL, "ucart").register_client("lab-system")
    assert (tmp_path / "clients.json").stat().st_mode & 0o077 == 0
