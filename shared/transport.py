"""How the processes reach Kafka and PostgreSQL: the TLS and SASL settings, checked, turned into each
client's options. Every client is built from here (FastStream's broker, aiokafka's admin client and
consumers, asyncpg, the event store's psycopg), so a setting means the same to all of them.

- Kafka: `UCART_KAFKA_SECURITY_PROTOCOL` and the `UCART_KAFKA_SASL_*` / `UCART_KAFKA_SSL_*` settings.
- PostgreSQL: libpq's own parameters in DATABASE_URL (`sslmode`, `sslrootcert`, `sslcert`, `sslkey`),
  as psql takes them; psycopg gets them as they are, asyncpg an SSL context made to the same rules.

A setting that cannot work raises TransportError, whose message names what to set and never a secret.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import parse_qs, urlsplit

from faststream.kafka.security import parse_security
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512

from shared.config import Settings


class TransportError(ValueError):
    """A TLS or SASL setting that cannot work."""


SASL_MECHANISMS = {"PLAIN": SASLPlaintext, "SCRAM-SHA-256": SASLScram256, "SCRAM-SHA-512": SASLScram512}


class _EncryptedKey(Exception):
    pass


def _no_key_password() -> NoReturn:
    # Without a callback OpenSSL would prompt on the terminal for an encrypted key's passphrase.
    raise _EncryptedKey


def _why(exc: ssl.SSLError) -> str:
    return str(exc.reason or exc)


def _file(path: Path, setting: str) -> str:
    try:
        path.open("rb").close()
    except OSError as exc:
        raise TransportError(f"{setting}: cannot read {path} ({exc.strerror or exc})") from None
    return str(path)


def _tls_context(
    *,
    ca: tuple[str, Path | None],
    cert: tuple[str, Path | None],
    key: tuple[str, Path | None],
    verify: bool = True,
    check_hostname: bool = True,
) -> ssl.SSLContext:
    """A client context: the server verified by the CA file (the system's CAs when none is given, unless
    `verify` is off), and a client certificate if one is given. Each part is (its setting, its path)."""
    (ca_setting, cafile), (cert_setting, certfile), (key_setting, keyfile) = ca, cert, key
    try:
        context = ssl.create_default_context(cafile=_file(cafile, ca_setting) if cafile else None)
    except ssl.SSLError as exc:
        raise TransportError(f"{ca_setting}: {cafile} holds no CA certificate in PEM form ({_why(exc)})") from None
    context.check_hostname = check_hostname and verify
    if not verify:
        context.verify_mode = ssl.CERT_NONE
    if certfile:
        try:
            context.load_cert_chain(
                _file(certfile, cert_setting), _file(keyfile, key_setting) if keyfile else None, _no_key_password
            )
        except _EncryptedKey:
            raise TransportError(
                f"{key_setting if keyfile else cert_setting}: the private key is encrypted; give it unencrypted"
            ) from None
        except ssl.SSLError as exc:
            what = f"{cert_setting} and {key_setting}" if keyfile else cert_setting
            raise TransportError(f"{what}: no client certificate and matching key in PEM form ({_why(exc)})") from None
    elif keyfile:
        raise TransportError(f"{key_setting} is set without {cert_setting}: give the client certificate too")
    return context


# Kafka


def _them(settings: list[str]) -> str:
    return "it" if len(settings) == 1 else "them"


def _refuse_unused(settings: Settings, tls: bool, sasl: bool) -> None:
    """A SASL or TLS setting that the protocol would ignore is a mistake: refuse it rather than connect
    without the authentication or the verification it asked for."""
    protocol = f"UCART_KAFKA_SECURITY_PROTOCOL is {settings.kafka_security_protocol}"
    unused_sasl = [
        f"UCART_KAFKA_SASL_{name.upper()}"
        for name in ("mechanism", "username", "password")
        if getattr(settings, f"kafka_sasl_{name}") is not None and not sasl
    ]
    if unused_sasl:
        raise TransportError(
            f"{', '.join(unused_sasl)} set, but {protocol}: set it to SASL_SSL (or unset {_them(unused_sasl)})"
        )
    unused_tls = [
        f"UCART_KAFKA_SSL_{name.upper()}"
        for name in ("cafile", "certfile", "keyfile")
        if getattr(settings, f"kafka_ssl_{name}") is not None and not tls
    ]
    if unused_tls:
        raise TransportError(
            f"{', '.join(unused_tls)} set, but {protocol}: set it to SSL or SASL_SSL (or unset {_them(unused_tls)})"
        )


def kafka_security(settings: Settings) -> BaseSecurity | None:
    """FastStream's `security=` for the KafkaBroker (None for PLAINTEXT)."""
    protocol = settings.kafka_security_protocol
    tls, sasl = protocol in ("SSL", "SASL_SSL"), protocol.startswith("SASL_")
    _refuse_unused(settings, tls, sasl)
    context = (
        _tls_context(
            ca=("UCART_KAFKA_SSL_CAFILE", settings.kafka_ssl_cafile),
            cert=("UCART_KAFKA_SSL_CERTFILE", settings.kafka_ssl_certfile),
            key=("UCART_KAFKA_SSL_KEYFILE", settings.kafka_ssl_keyfile),
            check_hostname=settings.kafka_ssl_check_hostname,
        )
        if tls
        else None
    )
    if not sasl:
        return BaseSecurity(ssl_context=context) if tls else None
    mechanism, username, password = (
        settings.kafka_sasl_mechanism,
        settings.kafka_sasl_username,
        settings.kafka_sasl_password,
    )
    if mechanism is None:
        raise TransportError(
            f"UCART_KAFKA_SECURITY_PROTOCOL={protocol} needs UCART_KAFKA_SASL_MECHANISM: "
            "SCRAM-SHA-256, SCRAM-SHA-512 or PLAIN"
        )
    if not username or not password or not password.get_secret_value():
        missing = [
            setting
            for setting, value in (
                ("UCART_KAFKA_SASL_USERNAME", username),
                ("UCART_KAFKA_SASL_PASSWORD", password and password.get_secret_value()),
            )
            if not value
        ]
        raise TransportError(f"SASL {mechanism} needs {' and '.join(missing)}")
    return SASL_MECHANISMS[mechanism](username, password.get_secret_value(), ssl_context=context, use_ssl=tls)


def kafka_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for an aiokafka client (admin client, consumer, producer): where the brokers are
    and how to reach them, exactly as FastStream gives its own clients (from `kafka_security`)."""
    return {"bootstrap_servers": settings.bootstrap_servers, **parse_security(kafka_security(settings))}


# PostgreSQL

SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
_FILES = ("sslrootcert", "sslcert", "sslkey")
TLS_PARAMETERS = ("sslmode", *_FILES)
_ENCRYPTED = ("require", "verify-ca", "verify-full")


@dataclass(frozen=True)
class PostgresTLS:
    """The TLS parameters a DATABASE_URL gives, checked."""

    libpq: dict[str, str] = field(default_factory=dict)  # as libpq (psycopg) takes them
    # asyncpg's `ssl=` when TLS is required; None leaves the URL's sslmode (or its default, prefer) to
    # asyncpg, which reads it as libpq does.
    context: ssl.SSLContext | None = None


def _refuse(message: str) -> NoReturn:
    raise TransportError(f"DATABASE_URL: {message}")


def postgres_tls(database_url: str) -> PostgresTLS:
    query = parse_qs(urlsplit(database_url).query)
    if unsupported := sorted(k for k in query if k.startswith("ssl") and k not in TLS_PARAMETERS):
        _refuse(f"{', '.join(unsupported)} not supported: TLS is set with {', '.join(TLS_PARAMETERS)}")
    given = {k: query[k][-1] for k in TLS_PARAMETERS if k in query}
    mode = given.get("sslmode")
    if mode is not None and mode not in SSLMODES:
        _refuse(f"sslmode={mode} is not one of {', '.join(SSLMODES)}")
    files = [k for k in _FILES if k in given]
    if files and mode not in _ENCRYPTED:
        _refuse(
            f"{' and '.join(files)} given, but sslmode={mode or 'prefer (the default)'} would not use {_them(files)}: "
            "set sslmode=verify-full (or verify-ca, require)"
        )
    if mode in ("verify-ca", "verify-full") and "sslrootcert" not in given:
        _refuse(f"sslmode={mode} needs sslrootcert=<file>: the CA certificate (PEM) that signed the server's")
    if "sslkey" in given and "sslcert" not in given:
        _refuse("sslkey given without sslcert: give the client certificate too")
    if mode not in _ENCRYPTED:
        return PostgresTLS(given)
    rootcert, cert, key = (Path(given[k]) if k in given else None for k in _FILES)
    context = _tls_context(
        ca=("DATABASE_URL's sslrootcert", rootcert),
        cert=("DATABASE_URL's sslcert", cert),
        key=("DATABASE_URL's sslkey", key),
        # As libpq: require checks the certificate only when given a CA, verify-full the host name too.
        verify=rootcert is not None,
        check_hostname=mode == "verify-full",
    )
    return PostgresTLS(given, context)


def asyncpg_options(database_url: str) -> dict[str, Any]:
    """Keyword arguments for asyncpg's connect and create_pool."""
    context = postgres_tls(database_url).context
    return {"ssl": context} if context else {}


def check(settings: Settings) -> None:
    """Build every client's options once, so that a setting that cannot work stops a process at start."""
    kafka_security(settings)
    if settings.database_url:
        postgres_tls(settings.database_url)
