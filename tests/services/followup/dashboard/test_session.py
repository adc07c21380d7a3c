"""Logging in: the PKCE challenge (RFC 7636's own example) and where a login may return to."""

import pytest

from services.followup.dashboard.session import challenge, safe_next


def test_the_s256_challenge_is_rfc_7636s():
    assert challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk") == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


@pytest.mark.parametrize(
    "target, back_to",
    [
        ("/dashboard/subjects/UCT-01-001", "/dashboard/subjects/UCT-01-001"),
        (None, "/"),
        ("", "/"),
        ("https://evil.example/", "/"),
        ("//evil.example/path", "/"),
        ("dashboard", "/"),
    ],
)
def test_a_login_returns_only_to_a_page_of_this_site(target, back_to):
    assert safe_next(target) == back_to
