"""Bearer tokens (OIDC access tokens, JWT) verified with PyJWT against the issuer's JWKS: issuer,
audience and algorithms pinned, expiry and not-before checked. Nothing in a token but its subject is
trusted for access: roles and sites come from the grants."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import jwt

LEEWAY_SECONDS = 30  # clock skew tolerated between the issuer and us


class InvalidToken(Exception):
    """The token cannot be trusted; the message says why (safe to show: it holds no token)."""


@dataclass(frozen=True)
class Claims:
    subject: str  # `sub`: the person, or the client of a client-credentials token
    issuer: str
    expires_at: int


class TokenVerifier:
    def __init__(self, issuer: str, audience: str, algorithms: tuple[str, ...], jwks: str):
        """`jwks`: the issuer's JWKS, as a URL (fetched and cached, refetched for an unknown key id)
        or as a file path (read at start)."""
        if "none" in (a.lower() for a in algorithms):
            raise ValueError("the algorithm 'none' is never accepted")
        self.issuer, self.audience, self.algorithms = issuer, audience, list(algorithms)
        self._client: jwt.PyJWKClient | None = None
        self._keys: jwt.PyJWKSet | None = None
        if jwks.startswith(("https://", "http://")):
            self._client = jwt.PyJWKClient(jwks, cache_keys=True, lifespan=300)
        else:
            self._keys = jwt.PyJWKSet.from_dict(json.loads(Path(jwks).read_text()))

    def _key(self, token: str) -> jwt.PyJWK:
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"the token is not a JWT ({exc})") from None
        if self._client is not None:
            try:
                return self._client.get_signing_key(kid) if kid else self._client.get_signing_key_from_jwt(token)
            except jwt.PyJWKClientError as exc:
                raise InvalidToken(f"no key of the issuer matches the token ({exc})") from None
        assert self._keys is not None
        for key in self._keys.keys:
            if key.key_id == kid:
                return key
        raise InvalidToken(f"unknown signing key {kid!r}: not one of the issuer's keys")

    def verify(self, token: str) -> Claims:
        key = self._key(token)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=self.algorithms,
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("the token has expired: get a new one") from None
        except jwt.ImmatureSignatureError:
            raise InvalidToken("the token is not valid yet (nbf or iat in the future)") from None
        except jwt.InvalidAudienceError:
            raise InvalidToken(f"the token is not for this API (audience must be {self.audience!r})") from None
        except jwt.InvalidIssuerError:
            raise InvalidToken(f"the token is not from the study's issuer ({self.issuer!r})") from None
        except jwt.InvalidAlgorithmError:
            raise InvalidToken(f"the token's algorithm is not one of {', '.join(self.algorithms)}") from None
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"the token is invalid ({exc})") from None
        subject = claims["sub"]
        if not isinstance(subject, str) or not 1 <= len(subject) <= 128:
            raise InvalidToken("the token's subject must be 1 to 128 characters")
        return Claims(subject=subject, issuer=claims["iss"], expires_at=int(claims["exp"]))
