"""The local OIDC issuer of the demo and the tests: `python -m infra.issuer`.

Production points the services at the site's identity provider (UCART_OIDC_ISSUER, UCART_OIDC_JWKS,
UCART_OIDC_AUDIENCE); nothing in the services knows this module. It holds an RS256 key under
`data_dir/issuer/` (made on first use), writes the matching JWKS there (the services read it as a
file), serves discovery and the JWKS, and issues access tokens: to service accounts by the OAuth 2
client-credentials grant, to demo users from the command line (`ucart token`), and to demo users who
log in with their password by the authorization-code grant with PKCE (S256 only), for public clients
such as the dashboard (`ucart-dashboard`), each with the redirect URIs it may use.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Annotated, Any, ClassVar
from urllib.parse import urlencode

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from shared.config import Settings

TOKEN_SECONDS = 12 * 3600  # a demo session; a real IdP sets its own
PASSWORD_BYTES = 9  # secrets.token_urlsafe(9): 12 characters (72 bits), short enough to type
SCRYPT = (2**14, 8, 1)  # n, r, p: about 16 MB and some 50 ms a hash
CODE_SECONDS = 60.0  # an authorization code's lifetime
DASHBOARD_CLIENT = "ucart-dashboard"  # a public client (no secret: PKCE)
DASHBOARD_CALLBACK = "/auth/callback"  # on the follow-up service, which serves the dashboard
CLIENT_CREDENTIALS_SECONDS = 3600
CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43}")  # base64url of a SHA-256, no padding (RFC 7636 4.2)
VERIFIER = re.compile(r"[A-Za-z0-9._~-]{43,128}")  # RFC 7636 4.1


@dataclass(frozen=True)
class _Code:
    """What an authorization code stands for, until it is redeemed or expires."""

    client_id: str
    redirect_uri: str
    code_challenge: str
    user_id: str
    expires_at: float


class Issuer:
    def __init__(
        self,
        directory: Path,
        url: str,
        audience: str,
        *,
        redirect_uris: Mapping[str, Sequence[str]] | None = None,
        code_seconds: float = CODE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ):
        """`redirect_uris`: the public clients (authorization code with PKCE, no secret) and, for each, the
        exact redirect URIs it may be sent back to. `clock` and `code_seconds` time the authorization
        codes (kept in this process's memory only)."""
        self.directory, self.url, self.audience = directory, url.rstrip("/"), audience
        self.redirect_uris = {client: tuple(uris) for client, uris in (redirect_uris or {}).items()}
        self.code_seconds, self.clock = code_seconds, clock
        self._codes: dict[str, _Code] = {}
        self._codes_lock = threading.Lock()
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
        return cls(
            settings.data_dir / "issuer",
            settings.oidc_issuer,
            settings.oidc_audience,
            redirect_uris={DASHBOARD_CLIENT: (dashboard_redirect_uri(settings),)},
        )

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
        return self.token(client_id, seconds=CLIENT_CREDENTIALS_SECONDS, client_id=client_id)

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

    # --- authorization codes (public clients, PKCE) -------------------------------------------------

    def issue_code(self, client_id: str, redirect_uri: str, code_challenge: str, user_id: str) -> str:
        """A single-use code for `user_id`, valid `code_seconds`, bound to the client, the redirect URI and
        the PKCE challenge (S256)."""
        code = secrets.token_urlsafe(32)
        now = self.clock()
        with self._codes_lock:
            for expired in [c for c, bound in self._codes.items() if bound.expires_at <= now]:
                del self._codes[expired]
            self._codes[code] = _Code(client_id, redirect_uri, code_challenge, user_id, now + self.code_seconds)
        return code

    def redeem_code(self, code: str, client_id: str, redirect_uri: str, code_verifier: str) -> str | None:
        """The user the code was issued to, if it is unexpired and was issued to this client for this
        redirect URI with the challenge of this verifier; else None. Any attempt uses the code up,
        whether it succeeds or not: a code is tried once."""
        with self._codes_lock:
            bound = self._codes.pop(code, None)
        if bound is None or self.clock() >= bound.expires_at:
            return None
        matches = (
            bound.client_id == client_id
            and bound.redirect_uri == redirect_uri
            and VERIFIER.fullmatch(code_verifier) is not None
            and hmac.compare_digest(bound.code_challenge, s256(code_verifier))
        )
        return bound.user_id if matches else None


def dashboard_redirect_uri(settings: Settings) -> str:
    """Where the issuer sends a user back to the dashboard: the follow-up service's callback."""
    return settings.url("followup") + DASHBOARD_CALLBACK


def s256(code_verifier: str) -> str:
    """The PKCE S256 challenge of a verifier: base64url(SHA-256(verifier)), unpadded (RFC 7636 4.2)."""
    return _b64(hashlib.sha256(code_verifier.encode("ascii")).digest())


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


# --- the authorization request (RFC 6749 4.1.1, RFC 7636 4.3) ---------------------------------------


@dataclass(frozen=True)
class AuthorizationRequest:
    PARAMETERS: ClassVar = (
        "response_type",
        "client_id",
        "redirect_uri",
        "state",
        "code_challenge",
        "code_challenge_method",
        "scope",
    )

    client_id: str
    redirect_uri: str
    state: str
    code_challenge: str
    scope: str | None

    def fields(self) -> dict[str, str]:
        """The request's parameters, as the login form carries them to its POST."""
        fields = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "state": self.state,
            "code_challenge": self.code_challenge,
            "code_challenge_method": "S256",
        }
        return fields | ({"scope": self.scope} if self.scope is not None else {})


class UnknownClient(Exception):
    """No client, or a redirect URI not registered for it: the user is told, never sent anywhere."""


class Refused(Exception):
    """A request the client gets back as an error at its redirect URI (RFC 6749 4.1.2.1)."""

    def __init__(self, redirect_uri: str, error: str, description: str, state: str | None):
        super().__init__(description)
        self.redirect_uri, self.error, self.description, self.state = redirect_uri, error, description, state


def authorization_request(issuer: Issuer, params: Iterable[tuple[str, str]]) -> AuthorizationRequest:
    """The request of `params` (the query of GET /authorize, or the login form), checked: the client and
    its redirect URI first (UnknownClient), then the rest (Refused)."""
    given: dict[str, list[str]] = {}
    for name, value in params:
        given.setdefault(name, []).append(value)

    def one(name: str) -> str | None:
        values = given.get(name, [])
        return values[0] if len(values) == 1 and values[0] else None

    client_id, redirect_uri = one("client_id"), one("redirect_uri")
    for name in ("client_id", "redirect_uri"):
        if len(given.get(name, [])) > 1:
            raise UnknownClient(f"The request gives {name} more than once.")
    if client_id is None:
        raise UnknownClient("The request names no client (client_id is missing).")
    allowed = issuer.redirect_uris.get(client_id)
    if allowed is None:
        raise UnknownClient(f"Unknown client {client_id!r}: no application of that name logs users in here.")
    if redirect_uri is None:
        raise UnknownClient("The request has no redirect_uri.")
    if redirect_uri not in allowed:
        raise UnknownClient(f"The redirect_uri {redirect_uri!r} is not registered for client {client_id!r}.")

    state = one("state")

    def refuse(description: str, error: str = "invalid_request") -> Refused:
        return Refused(redirect_uri, error, description, state)

    if repeated := [name for name in AuthorizationRequest.PARAMETERS if len(given.get(name, [])) > 1]:
        raise refuse(f"parameters given more than once: {', '.join(repeated)}")
    response_type = one("response_type")
    if response_type is None:
        raise refuse("response_type is missing")
    if response_type != "code":
        raise refuse("only response_type=code is supported", "unsupported_response_type")
    if state is None:
        raise refuse("state is required")
    code_challenge, method = one("code_challenge"), one("code_challenge_method")
    if code_challenge is None:
        raise refuse("code_challenge is required (PKCE)")
    if method != "S256":
        raise refuse("code_challenge_method must be S256")
    if CHALLENGE.fullmatch(code_challenge) is None:
        raise refuse("code_challenge must be 43 base64url characters (an S256 challenge)")
    return AuthorizationRequest(client_id, redirect_uri, state, code_challenge, one("scope"))


# --- pages (server-rendered, no script, no external asset) --------------------------------------------

PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; line-height: 1.5; max-width: 26rem; margin: 3rem auto; padding: 0 1rem; }}
label {{ display: block; margin-top: 1rem; font-weight: 600; }}
input {{ font: inherit; width: 100%; box-sizing: border-box; padding: 0.4rem; }}
button {{ font: inherit; margin-top: 1.5rem; padding: 0.5rem 1.5rem; }}
.error {{ color: #a00000; font-weight: 600; }}
</style>
</head>
<body>
<main>
{body}
</main>
</body>
</html>
"""


def _page(title: str, body: str, status: int) -> HTMLResponse:
    return HTMLResponse(PAGE.format(title=escape(title), body=body), status_code=status, headers=PAGE_HEADERS)


def login_page(asked: AuthorizationRequest, user_id: str = "", error: str | None = None) -> HTMLResponse:
    hidden = "\n".join(
        f'<input type="hidden" name="{escape(name)}" value="{escape(value)}">' for name, value in asked.fields().items()
    )
    alert = f'<p class="error" role="alert">{escape(error)}</p>\n' if error else ""
    body = f"""<h1>Log in to UCAR-T</h1>
<p>For <strong>{escape(asked.client_id)}</strong>, which gets a token in your name.</p>
{alert}<form method="post" action="authorize">
<label for="user_id">User</label>
<input id="user_id" name="user_id" value="{escape(user_id)}" autocomplete="username" required autofocus>
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required>
{hidden}
<button type="submit">Log in</button>
</form>"""
    return _page("Log in - UCAR-T", body, 401 if error else 200)


def unusable_page(why: str) -> HTMLResponse:
    body = f"""<h1>This login request cannot be used</h1>
<p class="error" role="alert">{escape(why)}</p>
<p>Nothing was sent back to the application. Go back to it and start again; if this happens again,
tell whoever set it up.</p>"""
    return _page("Login request refused - UCAR-T", body, 400)


def to_client(redirect_uri: str, **params: str | None) -> RedirectResponse:
    """302 to the client's redirect URI with `params` added to its query."""
    query = urlencode({name: value for name, value in params.items() if value is not None})
    return RedirectResponse(
        f"{redirect_uri}{'&' if '?' in redirect_uri else '?'}{query}",
        status_code=302,
        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
    )


TOKEN_HEADERS = {"Cache-Control": "no-store", "Pragma": "no-cache"}  # RFC 6749 5.1


def granted(access_token: str, seconds: int) -> JSONResponse:
    body = {"access_token": access_token, "token_type": "Bearer", "expires_in": seconds}
    return JSONResponse(body, 200, TOKEN_HEADERS)


def token_error(error: str, description: str, status: int = 400) -> JSONResponse:
    """RFC 6749 5.2."""
    return JSONResponse({"error": error, "error_description": description}, status, TOKEN_HEADERS)


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
            "authorization_endpoint": f"{issuer.url}/authorize",
            "token_endpoint": f"{issuer.url}/token",
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["client_credentials", "authorization_code"],
            "code_challenge_methods_supported": ["S256"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": ["client_secret_post", "none"],
        }

    @api.get("/jwks.json")
    async def jwks() -> dict[str, Any]:
        return issuer.jwks

    @api.get("/authorize", response_class=HTMLResponse)
    async def authorize(request: Request) -> Response:
        """The authorization request (response_type=code, client_id, redirect_uri, state, code_challenge,
        code_challenge_method=S256, optional scope): the login form."""
        try:
            asked = authorization_request(issuer, request.query_params.multi_items())
        except UnknownClient as exc:
            return unusable_page(str(exc))
        except Refused as exc:
            return to_client(exc.redirect_uri, error=exc.error, error_description=exc.description, state=exc.state)
        return login_page(asked)

    @api.post("/authorize", response_class=HTMLResponse)
    async def log_in(request: Request) -> Response:
        """The login form: user_id and password, and the request's parameters. Right: 302 to the redirect
        URI with a code and the state; wrong: the form again, 401."""
        form = [(name, value) for name, value in (await request.form()).multi_items() if isinstance(value, str)]
        try:
            asked = authorization_request(issuer, form)
        except UnknownClient as exc:
            return unusable_page(str(exc))
        except Refused as exc:
            return to_client(exc.redirect_uri, error=exc.error, error_description=exc.description, state=exc.state)
        entered = dict(form)
        user_id, password = entered.get("user_id", ""), entered.get("password", "")
        if not user_id or not password:
            return login_page(asked, user_id, "Enter your user and your password.")
        if not await run_in_threadpool(issuer.check_password, user_id, password):  # scrypt: off the event loop
            return login_page(asked, user_id, "Wrong user or password.")
        code = issuer.issue_code(asked.client_id, asked.redirect_uri, asked.code_challenge, user_id)
        return to_client(asked.redirect_uri, code=code, state=asked.state)

    @api.post("/token")
    async def token(
        grant_type: Annotated[str | None, Form()] = None,
        client_id: Annotated[str | None, Form()] = None,
        client_secret: Annotated[str | None, Form()] = None,
        code: Annotated[str | None, Form()] = None,
        redirect_uri: Annotated[str | None, Form()] = None,
        code_verifier: Annotated[str | None, Form()] = None,
    ) -> JSONResponse:
        """client_credentials: client_id, client_secret. authorization_code (public clients, PKCE):
        code, redirect_uri, client_id, code_verifier."""
        if grant_type == "client_credentials":
            access_token = issuer.client_token(client_id, client_secret) if client_id and client_secret else None
            if access_token is None:
                return token_error("invalid_client", "unknown client or wrong secret", 401)
            return granted(access_token, CLIENT_CREDENTIALS_SECONDS)
        if grant_type == "authorization_code":
            given = {"code": code, "redirect_uri": redirect_uri, "client_id": client_id, "code_verifier": code_verifier}
            if missing := [name for name, value in given.items() if not value]:
                return token_error("invalid_request", f"missing: {', '.join(missing)}")
            assert code and redirect_uri and client_id and code_verifier
            if client_id not in issuer.redirect_uris:
                return token_error("invalid_client", f"unknown client {client_id!r}", 401)
            user_id = issuer.redeem_code(code, client_id, redirect_uri, code_verifier)
            if user_id is None:
                why = "the code is unknown, used or expired, or not for this client, redirect_uri or code_verifier"
                return token_error("invalid_grant", why)
            return granted(issuer.token(user_id, client_id=client_id), TOKEN_SECONDS)
        if not grant_type:
            return token_error("invalid_request", "missing: grant_type")
        return token_error("unsupported_grant_type", "client_credentials or authorization_code")

    return api


def serve() -> None:
    import uvicorn

    settings = Settings()
    issuer = Issuer.of(settings)
    uvicorn.run(app(issuer), host=settings.host, port=settings.issuer_port, log_level="warning")


if __name__ == "__main__":
    serve()
