"""Secrets kept out of what is printed or logged: a URL shows who and where, never the password."""

from __future__ import annotations

import re

MASK = "***"

# The password of a URL's user info: scheme://user:PASSWORD@host (it cannot hold / ? # or @ unencoded).
_USER_INFO = re.compile(r"(//[^/?#@:\s]*:)[^/?#@\s]*@")
# A password given as a parameter: ?password=..., &sslpassword=..., or libpq's `password=...`.
_PARAMETER = re.compile(r"(?i)\b((?:ssl)?password|passwd|pwd)=[^&\s]*")


def mask_url(url: str) -> str:
    """`url` with every password replaced by ***: postgresql://user:***@host/db."""
    return _PARAMETER.sub(rf"\1={MASK}", _USER_INFO.sub(rf"\1{MASK}@", url))
