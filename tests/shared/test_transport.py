"""TLS and SASL settings turned into each client's options: FastStream's broker, aiokafka, asyncpg and the
event store's psycopg; what cannot work is refused, with what to set."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from cryptography.hazmat.primitives import serialization
from faststream.kafka import KafkaBroker
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512

from infra.processes import service_env
from shared.config import Settings
from shared.eventstore.application import postgres_env
from shared.transport import TransportError, asyncpg_options, kafka_options, kafka_security, postgres_tls
from tls_support import Authority, Issued


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> tuple[Authority, Authority, Issued, Issued]:
    """(the CA, another CA, a server certificate for localhost, a client certificate)."""
    directory = tmp_path_factory.mktemp("pki")
    ca = Authority(directory / "ca", "test-ca")
    other = Authority(directory / "other", "other-ca")
    return ca, other, ca.issue("server", dns=("localhost",)), ca.issue("ucart", client=True)


def kafka(**settings: object) -> Settings:
    return Settings(_env_file=None, kafka_bootstrap_servers="kafka-1:9093,kafka-2:9093", **settings)


def ca_names(context: ssl.SSLContext) -> list[str]:
    return [dict(entry[0] for entry in cert["subject"])["commonName"] for cert in context.get_ca_certs()]


# Kafka


def test_plaintext_is_the_default_and_adds_nothing():
    settings = kafka()
    assert kafka_security(settings) is None
    assert kafka_options(settings) == {"bootstrap_servers": "kafka-1:9093,kafka-2:9093"}


def test_ssl_verifies_the_brokers_with_the_ca_file(pki):
    ca, *_ = pki
    settings = kafka(kafka_security_protocol="SSL", kafka_ssl_cafile=ca.cert)
    security = kafka_security(settings)
    assert type(security) is BaseSecurity and security.use_ssl
    options = kafka_options(settings)
    context = options.pop("ssl_context")
    assert options == {"bootstrap_servers": "kafka-1:9093,kafka-2:9093", "security_protocol": "SSL"}
    assert ca_names(context) == ["test-ca"]  # that CA only, not the system's
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_without_a_ca_file_the_system_cas_verify_and_the_host_name_check_can_be_turned_off():
    context = kafka_options(kafka(kafka_security_protocol="SSL", kafka_ssl_check_hostname=False))["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED and not context.check_hostname


@pytest.mark.parametrize(
    ("protocol", "mechanism", "security_class"),
    [
        ("SASL_SSL", "SCRAM-SHA-512", SASLScram512),
        ("SASL_SSL", "SCRAM-SHA-256", SASLScram256),
        ("SASL_SSL", "PLAIN", SASLPlaintext),
        ("SASL_PLAINTEXT", "SCRAM-SHA-512", SASLScram512),
        ("SASL_PLAINTEXT", "SCRAM-SHA-256", SASLScram256),
    ],
)
def test_each_sasl_mechanism_gives_its_credentials(pki, protocol, mechanism, security_class):
    ca, *_ = pki
    tls = {"kafka_ssl_cafile": ca.cert} if protocol == "SASL_SSL" else {}
    settings = kafka(
        kafka_security_protocol=protocol,
        kafka_sasl_mechanism=mechanism,
        kafka_sasl_username="ucart-enrollment",
        kafka_sasl_password="s3cret",
        **tls,
    )
    assert type(kafka_security(settings)) is security_class
    options = kafka_options(settings)
    context = options.pop("ssl_context")
    assert options == {
        "bootstrap_servers": "kafka-1:9093,kafka-2:9093",
        "security_protocol": protocol,
        "sasl_mechanism": mechanism,
        "sasl_plain_username": "ucart-enrollment",
        "sasl_plain_password": "s3cret",
    }
    assert (context is not None and ca_names(context) == ["test-ca"]) if tls else context is None


async def test_every_kafka_client_takes_the_same_options(pki):
    """aiokafka checks the combination when a client is made (an SSL protocol without a context is a
    ValueError there); the broker's clients get what the admin client and the tools' consumers get."""
    ca, *_ = pki
    settings = kafka(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="ucart",
        kafka_sasl_password="s3cret",
        kafka_ssl_cafile=ca.cert,
    )
    options = kafka_options(settings)
    AIOKafkaAdminClient(**options)
    consumer = AIOKafkaConsumer(**options)
    producer = AIOKafkaProducer(**options)
    for client in (consumer._client, producer.client):
        assert client._security_protocol == "SASL_SSL" and client._sasl_mechanism == "SCRAM-SHA-512"
        assert client._ssl_context is options["ssl_context"]
    await producer.stop()
    await consumer.stop()
    broker = KafkaBroker(settings.bootstrap_servers, security=kafka_security(settings))
    given = {k: broker._connection_kwargs[k] for k in options if k not in ("bootstrap_servers", "ssl_context")}
    assert given == {k: v for k, v in options.items() if k not in ("bootstrap_servers", "ssl_context")}
    assert ca_names(broker._connection_kwargs["ssl_context"]) == ["test-ca"]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"kafka_security_protocol": "SASL_SSL"},
            "UCART_KAFKA_SECURITY_PROTOCOL=SASL_SSL needs UCART_KAFKA_SASL_MECHANISM",
        ),
        (
            {"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "SCRAM-SHA-512"},
            "SASL SCRAM-SHA-512 needs UCART_KAFKA_SASL_USERNAME and UCART_KAFKA_SASL_PASSWORD",
        ),
        (
            {
                "kafka_security_protocol": "SASL_PLAINTEXT",
                "kafka_sasl_mechanism": "SCRAM-SHA-256",
                "kafka_sasl_username": "ucart",
            },
            "SASL SCRAM-SHA-256 needs UCART_KAFKA_SASL_PASSWORD",
        ),
        (
            {"kafka_sasl_username": "ucart", "kafka_sasl_password": "s3cret"},
            "UCART_KAFKA_SASL_USERNAME, UCART_KAFKA_SASL_PASSWORD set, but UCART_KAFKA_SECURITY_PROTOCOL is PLAINTEXT",
        ),
        (
            {"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_ssl_cafile": "ca.pem"},
            "UCART_KAFKA_SSL_CAFILE set, but UCART_KAFKA_SECURITY_PROTOCOL is SASL_PLAINTEXT: set it to SSL",
        ),
        (
            {"kafka_security_protocol": "SSL", "kafka_ssl_cafile": "/nonexistent/ca.pem"},
            "UCART_KAFKA_SSL_CAFILE: cannot read /nonexistent/ca.pem (No such file or directory)",
        ),
    ],
)
def test_kafka_settings_that_cannot_work_are_refused_with_what_to_set(settings, message):
    with pytest.raises(TransportError) as refused:
        kafka_security(kafka(**settings))
    assert str(refused.value).startswith(message)


def test_files_that_are_not_what_they_should_be_are_named(pki, tmp_path):
    _, _, server, client = pki
    not_pem = tmp_path / "ca.txt"
    not_pem.write_text("not a certificate")
    encrypted = tmp_path / "encrypted.key"
    key = serialization.load_pem_private_key(client.key.read_bytes(), None)
    encryption = serialization.BestAvailableEncryption(b"passphrase")
    encrypted.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption))
    refusals = {
        "UCART_KAFKA_SSL_KEYFILE: the private key is encrypted; give it unencrypted": {
            "kafka_ssl_certfile": client.cert,
            "kafka_ssl_keyfile": encrypted,  # not prompted for on the terminal
        },
        "UCART_KAFKA_SSL_CAFILE: ": {"kafka_ssl_cafile": not_pem},
        "UCART_KAFKA_SSL_CERTFILE and UCART_KAFKA_SSL_KEYFILE: ": {
            "kafka_ssl_certfile": client.cert,
            "kafka_ssl_keyfile": server.key,  # not the certificate's key
        },
        "UCART_KAFKA_SSL_KEYFILE is set without UCART_KAFKA_SSL_CERTFILE": {"kafka_ssl_keyfile": client.key},
    }
    for message, settings in refusals.items():
        with pytest.raises(TransportError, match=f"^{message}"):
            kafka_security(kafka(kafka_security_protocol="SSL", **settings))


# A real TLS handshake with the contexts made here (the Kafka side against a real cluster is tested
# elsewhere): a server that requires a client certificate signed by the CA.


async def handshake(client: ssl.SSLContext, server: Issued, ca: Authority, host: str = "localhost") -> bytes:
    """What the server says to a client with this context (nothing: it hung up)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=ca.cert)
    context.load_cert_chain(server.cert, server.key)
    context.verify_mode = ssl.CERT_REQUIRED

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello")
        await writer.drain()
        writer.close()

    listening = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=context)
    port = listening.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection(host, port, ssl=client, server_hostname=host)
        try:
            return await reader.read()
        except (ssl.SSLError, ConnectionError):  # the server's alert
            return b""
        finally:
            writer.close()
    finally:
        listening.close()


async def test_the_kafka_context_verifies_the_broker_and_presents_the_client_certificate(pki):
    ca, other, server, client = pki
    mutual = {"kafka_ssl_certfile": client.cert, "kafka_ssl_keyfile": client.key}
    context = kafka_options(kafka(kafka_security_protocol="SSL", kafka_ssl_cafile=ca.cert, **mutual))["ssl_context"]
    assert await handshake(context, server, ca) == b"hello"

    with pytest.raises(ssl.SSLCertVerificationError, match="self-signed certificate in certificate chain"):
        wrong_ca = kafka(kafka_security_protocol="SSL", kafka_ssl_cafile=other.cert, **mutual)
        await handshake(kafka_options(wrong_ca)["ssl_context"], server, ca)
    with pytest.raises(ssl.SSLCertVerificationError, match=r"certificate is not valid for '127\.0\.0\.1'"):
        await handshake(context, server, ca, host="127.0.0.1")
    unchecked = kafka(kafka_security_protocol="SSL", kafka_ssl_cafile=ca.cert, kafka_ssl_check_hostname=False, **mutual)
    assert await handshake(kafka_options(unchecked)["ssl_context"], server, ca, host="127.0.0.1") == b"hello"
    without_client_certificate = kafka(kafka_security_protocol="SSL", kafka_ssl_cafile=ca.cert)
    assert await handshake(kafka_options(without_client_certificate)["ssl_context"], server, ca) == b""


# PostgreSQL


def test_the_database_url_without_tls_parameters_leaves_the_clients_their_defaults():
    url = "postgresql://ucart@db.example:5432/ucart"
    assert postgres_tls(url).libpq == {} and asyncpg_options(url) == {}
    assert not {k for k in postgres_env(url, "enrollment") if "SSL" in k}
    disabled = f"{url}?sslmode=disable"
    assert asyncpg_options(disabled) == {}  # asyncpg reads sslmode from the URL, as libpq does
    assert postgres_env(disabled, "enrollment")["POSTGRES_SSLMODE"] == "disable"


def test_verify_full_checks_the_ca_and_the_host_name_in_both_clients(pki):
    ca, _, _, client = pki
    url = (
        f"postgresql://ucart:pw@db.example/ucart?sslmode=verify-full&sslrootcert={ca.cert}"
        f"&sslcert={client.cert}&sslkey={client.key}"
    )
    context = asyncpg_options(url)["ssl"]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname and ca_names(context) == ["test-ca"]
    env = postgres_env(url, "enrollment")
    assert env["PERSISTENCE_MODULE"] == "shared.eventstore.factory:TLSPostgresFactory"
    assert {k: v for k, v in env.items() if k.startswith("POSTGRES_SSL")} == {
        "POSTGRES_SSLMODE": "verify-full",
        "POSTGRES_SSLROOTCERT": str(ca.cert),
        "POSTGRES_SSLCERT": str(client.cert),
        "POSTGRES_SSLKEY": str(client.key),
    }


def test_verify_ca_does_not_check_the_host_name_and_require_checks_only_with_a_ca(pki):
    ca, *_ = pki
    verify_ca = asyncpg_options(f"postgresql://db/ucart?sslmode=verify-ca&sslrootcert={ca.cert}")["ssl"]
    assert verify_ca.verify_mode == ssl.CERT_REQUIRED and not verify_ca.check_hostname
    require = asyncpg_options("postgresql://db/ucart?sslmode=require")["ssl"]
    assert require.verify_mode == ssl.CERT_NONE  # encrypted, not verified (as libpq)
    require_with_ca = asyncpg_options(f"postgresql://db/ucart?sslmode=require&sslrootcert={ca.cert}")["ssl"]
    assert require_with_ca.verify_mode == ssl.CERT_REQUIRED and not require_with_ca.check_hostname


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("sslmode=verify-full", "DATABASE_URL: sslmode=verify-full needs sslrootcert=<file>"),
        ("sslmode=strict", "DATABASE_URL: sslmode=strict is not one of disable, allow, prefer"),
        ("sslrootcert=/etc/ca.pem", "DATABASE_URL: sslrootcert given, but sslmode=prefer (the default) would not"),
        ("sslmode=require&sslkey=/etc/key.pem", "DATABASE_URL: sslkey given without sslcert"),
        ("sslmode=require&sslcrl=/etc/crl.pem", "DATABASE_URL: sslcrl not supported: TLS is set with sslmode"),
        (
            "sslmode=verify-ca&sslrootcert=/nonexistent/ca.pem",
            "DATABASE_URL's sslrootcert: cannot read /nonexistent/ca.pem",
        ),
    ],
)
def test_database_urls_that_cannot_work_are_refused_with_what_to_set(query, message):
    url = f"postgresql://ucart:s3cret@db.example/ucart?{query}"
    for build in (postgres_tls, asyncpg_options, lambda u: postgres_env(u, "enrollment")):
        with pytest.raises(TransportError) as refused:
            build(url)
        assert str(refused.value).startswith(message) and "s3cret" not in str(refused.value)


def test_the_services_started_by_the_demo_get_the_kafka_settings(pki):
    ca, _, _, client = pki
    settings = kafka(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-256",
        kafka_sasl_username="ucart",
        kafka_sasl_password="s3cret",
        kafka_ssl_cafile=Path(ca.cert),
        kafka_ssl_certfile=client.cert,
        kafka_ssl_keyfile=client.key,
        kafka_ssl_check_hostname=False,
    )
    env = service_env(settings, "postgresql://db/ucart", settings.bootstrap_servers)
    forwarded = {k: v for k, v in env.items() if k.startswith("UCART_KAFKA_S")}
    assert forwarded == {
        "UCART_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "UCART_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
        "UCART_KAFKA_SASL_USERNAME": "ucart",
        "UCART_KAFKA_SASL_PASSWORD": "s3cret",
        "UCART_KAFKA_SSL_CAFILE": str(ca.cert),
        "UCART_KAFKA_SSL_CERTFILE": str(client.cert),
        "UCART_KAFKA_SSL_KEYFILE": str(client.key),
        "UCART_KAFKA_SSL_CHECK_HOSTNAME": "False",
    }
    read_back = Settings(_env_file=None, **{k.removeprefix("UCART_").lower(): v for k, v in forwarded.items()})
    assert kafka_options(read_back)["sasl_plain_password"] == "s3cret"
    assert not kafka_options(read_back)["ssl_context"].check_hostname
