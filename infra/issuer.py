"""The local OIDC issuer of the demo and the tests: `python -m infra.issuer`.

Production points the services at the site's identity provider (UCART_OIDC_ISSUER, UCART_OIDC_JWKS,
UCART_OIDC_AUDIENCE); nothing in the services knows this module. It holds an RS256 key under
`data_dir/issuer/` (made on first use), writes the matching JWKS there (the services read it as a
file), serves discovery and the JWKS, and issues access tokens: to service accounts by the OAuth 2
client-credentials grant, and to demo users from the command line (`ucart token`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from pathlib import Path
from typing import Annotated, Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI, Form
from fastapi.responses import JSONResponse

from shared.config import Settings

TOKEN_SECONDS = 12 * 3600  # a demo session; a real IdP sets its own
PASSWORD_BYTES = 9  # secrets.token_urlsafe(9): 12 characters (72 bits), short enough to type
SCRYPT = (2**14, 8, 1)  # n, r, p: about 16 MB and some 50 ms a hash


class Issuer:
    def __init__(self, directory: Path, url: str, audience: str):
        self.directory, self.url, self.audience = directory, url.rstrip("/"), audience
        self.directory.mkdir(parents=True, exist_ok=True)
        key_file = self.directory / "signing.key"
        if not key_file.exists():
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            pem = key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # the owner only
            with os.fdopen(fd, "wb") as out:
                out.write(pem)
        private = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        assert isinstance(private, rsa.RSAPrivateKey)
        self.private_key = private
        public_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
        self.kid = hashlib.sha256(json.dumps(public_jwk, sort_keys=True).encode()).hexdigest()[:16]
        self.jwks = {"keys": [public_jwk | {"kid": self.kid, "use": "sig", "alg": "RS256"}]}
        (self.directory / "jwks.json").write_text(json.dumps(self.jwks, indent=2))

    @classmethod
    def of(cls, settings: Settings) -> Issuer:
        return cls(settings.data_dir / "issuer", settings.oidc_issuer, settings.oidc_audience)

    def token(self, subject: str, *, seconds: int = TOKEN_SECONDS, **claims: Any) -> str:
        now = int(time.time())
        body = {"iss": self.url, "aud": self.audience, "sub": subject, "iat": now, "nbf": now, "exp": now + seconds}
        return jwt.encode(body | claims, self.private_key, algorithm="RS256", headers={"kid": self.kid})

    # --- service accounts (client credentials) ------------------------------------------------------

    @property
    def _clients_file(self) -> Path:
        return self.directory / "clients.json"

    def _clients(self) -> dict[str, str]:
        return json.loads(self._clients_file.read_text()) if self._clients_file.exists() else {}

    def register_client(self, client_id: str) -> str:
        """A new secret for a service account (only its hash is kept); returns the secret."""
        secret = secrets.token_urlsafe(32)
        clients = self._clients() | {client_id: hashlib.sha256(secret.encode()).hexdigest()}
        write_private(self._clients_file, json.dumps(clients, indent=2))
        return secret

    def client_token(self, client_id: str, secret: str) -> str | None:
        expected = self._clients().get(client_id)
        given = hashlib.sha256(secret.encode()).hexdigest()
        if expected is None or not hmac.compare_digest(expected, given):
            return None
        return self.token(client_id, seconds=3600, client_id=client_id)

    # --- people (a password each, for the login form of the authorization-code flow) -----------------

    @property
    def _users_file(self) -> Path:
        return self.directory / "users.json"

    def _users(self) -> dict[str, str]:
        return json.loads(self._users_file.read_text()) if self._users_file.exists() else {}

    def register_user(self, user_id: str) -> str:
        """A new password for a person, replacing any they had (only a salted scrypt hash of it is kept);
        returns the password."""
        if not 1 <= len(user_id) <= 128:  # a token's subject must be (shared/access/tokens.py)
            raise ValueError("a user id is 1 to 128 characters")
        password = secrets.token_urlsafe(PASSWORD_BYTES)
        users = self._users() | {user_id: _password_hash(password)}
        write_private(self._users_file, json.dumps(users, indent=2))
        return password

    def check_password(self, user_id: str, password: str) -> bool:
        stored = self._users().get(user_id)
        # An unknown user costs the same hashing as a known one: the time taken does not tell them apart.
        given = _password_hash(password, _decoded(stored) if stored else None)
        return stored is not None and hmac.compare_digest(given, stored)


def write_private(path: Path, text: str) -> None:
    """Write `text` to a file only its owner may read or write, replacing the file whole (whoever reads it
    meanwhile sees the old content or the new, never a part, and never with wider permissions)."""
    partial = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _password_hash(password: str, like: tuple[int, int, int, bytes] | None = None) -> str:
    """`scrypt$n$r$p$salt$hash` (base64url); with `like`, the same parameters and salt, to compare."""
    n, r, p, salt = like or (*SCRYPT, secrets.token_bytes(16))
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=32)
    return "$".join(["scrypt", str(n), str(r), str(p), _b64(salt), _b64(digest)])


def _decoded(stored: str) -> tuple[int, int, int, bytes]:
    _, n, r, p, salt, _ = stored.split("$")
    return int(n), int(r), int(p), base64.urlsafe_b64decode(salt + "=" * (-len(salt) % 4))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def app(issuer: Issuer) -> FastAPI:
    api = FastAPI(title="UCAR-T local OIDC issuer (demo and tests)", version="0.1.0")

    @api.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok", "service": "issuer"}

    @api.get("/.well-known/openid-configuration")
    async def discovery() -> dict[str, Any]:
        return {
            "issuer": issuer.url,
            "jwks_uri": f"{issuer.url}/jwks.json",
            "token_endpoint": f"{issuer.url}/token",
            "grant_types_supported": ["client_credentials"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": ["client_secret_post"],
        }

    @api.get("/jwks.json")
    async def jwks() -> dict[str, Any]:
        return issuer.jwks

    @api.post("/token")
    async def token(
        grant_type: Annotated[str, Form()],
        client_id: Annotated[str, Form()],
        client_secret: Annotated[str, Form()],
    ) -> JSONResponse:
        if grant_type != "client_credentials":
            return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
        access_token = issuer.client_token(client_id, client_secret)
        if access_token is None:
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        return JSONResponse({"access_token": access_token, "token_type": "Bearer", "expires_in": 3600})

    return api


def serve() -> None:
    import uvicorn

    settings = Settings()
    issuer = Issuer.of(settings)
    uvicorn.run(app(issuer), host=settings.host, port=settings.issuer_port, log_level="warning")


if __name__ == "__main__":
    serve()
