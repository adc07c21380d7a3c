"""Logging in to the dashboard: the authorization-code flow with PKCE (RFC 7636) against the study's OIDC
issuer, and a session cookie that holds the access token.

The browser never sees a token it could paste elsewhere: the cookie is HttpOnly, SameSite=Lax (sent on
top-level navigation from the issuer back to us, never on another site's form or fetch), and Secure when
the dashboard is served over HTTPS. Each request verifies the token exactly as the API verifies a bearer
token (`shared.http.identity.permit_for`), so the policy, expiry and revocation of grants apply alike.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from services.followup.dashboard.render import message
from shared.config import Settings
from shared.runtime import Rt

SESSION_COOKIE = "ucart_session"
LOGIN_COOKIE = "ucart_login"  # the state and PKCE verifier of a login under way
CLIENT_ID = "ucart-dashboard"  # the dashboard's client at the issuer (a public client: PKCE, no secret)
LOGIN_SECONDS = 600
UNREACHABLE = "The study's identity provider cannot be reached just now; try again in a moment."

router = APIRouter(include_in_schema=False)


def redirect_uri(settings: Settings) -> str:
    return f"{settings.url('followup')}/auth/callback"


def challenge(verifier: str) -> str:
    """The S256 code challenge of a verifier (RFC 7636 4.2)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def safe_next(target: str | None) -> str:
    """A path on this site to go back to after logging in: never another site (an open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or urlsplit(target).netloc:
        return "/"
    return target


async def _issuer_endpoints(settings: Settings) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.get(f"{settings.oidc_issuer.rstrip('/')}/.well-known/openid-configuration")
        response.raise_for_status()
        endpoints: dict[str, Any] = response.json()
        return endpoints


def _cookie(response: Response, request: Request, name: str, value: str, seconds: int, path: str = "/") -> None:
    response.set_cookie(
        name,
        value,
        max_age=seconds,
        path=path,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )


@router.get("/login")
async def login(request: Request, rt: Rt, next: str | None = None) -> Response:
    """Send the browser to the issuer's login page, with a fresh state and PKCE verifier."""
    try:
        endpoints = await _issuer_endpoints(rt.settings)
    except (httpx.HTTPError, KeyError, ValueError):
        return message(request, 503, "Login unavailable", UNREACHABLE)
    state, verifier = secrets.token_urlsafe(24), secrets.token_urlsafe(48)
    query = urlencode(
        {
            "response_type": "code",
            "client_id": CLIENT_ID,
            "redirect_uri": redirect_uri(rt.settings),
            "scope": "openid",
            "state": state,
            "code_challenge": challenge(verifier),
            "code_challenge_method": "S256",
        }
    )
    response = RedirectResponse(f"{endpoints['authorization_endpoint']}?{query}", status_code=303)
    _cookie(response, request, LOGIN_COOKIE, f"{state}.{verifier}.{safe_next(next)}", LOGIN_SECONDS, "/auth")
    return response


@router.get("/auth/callback")
async def callback(
    request: Request, rt: Rt, code: str | None = None, state: str | None = None, error: str | None = None
) -> Response:
    """The issuer sends the browser back here with a code; exchange it (with the verifier) for a token."""
    expected_state, _, rest = (request.cookies.get(LOGIN_COOKIE) or "").partition(".")
    verifier, _, back_to = rest.partition(".")
    if error:
        return message(request, 400, "Login refused", f"The issuer refused the login ({error}). Try again.")
    if not code or not state or not expected_state or not secrets.compare_digest(state, expected_state):
        return message(request, 400, "Login expired", "This login is not the one under way here. Log in again.")
    try:
        endpoints = await _issuer_endpoints(rt.settings)
        async with httpx.AsyncClient(timeout=5) as client:
            answer = await client.post(
                endpoints["token_endpoint"],
                data={
                    "grant_type": "authorization_code",
                    "code": code,
                    "redirect_uri": redirect_uri(rt.settings),
                    "client_id": CLIENT_ID,
                    "code_verifier": verifier,
                },
            )
    except (httpx.HTTPError, KeyError, ValueError):
        return message(request, 503, "Login unavailable", UNREACHABLE)
    if answer.status_code != 200:
        return message(request, 400, "Login refused", "The issuer did not accept the login. Log in again.")
    tokens = answer.json()
    response = RedirectResponse(safe_next(back_to), status_code=303)
    _cookie(response, request, SESSION_COOKIE, tokens["access_token"], int(tokens.get("expires_in", 3600)))
    response.delete_cookie(LOGIN_COOKIE, path="/auth")
    return response


@router.post("/logout")
async def logout() -> Response:
    response = RedirectResponse("/logged-out", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
