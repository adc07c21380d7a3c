"""SASL/SCRAM and ACLs for the embedded Apache Kafka: each service authenticates as its own principal and
may write only its own topics and read the others'.

- Clients (the services, and `admin` for the tools) connect over SASL_PLAINTEXT with SCRAM-SHA-512 on the
  client listener, which the broker also uses to reach itself (as `admin`). The controller listener takes
  SASL PLAIN with `admin` alone: no listener accepts an unauthenticated connection.
- The SCRAM credentials go into the metadata log when the storage is formatted (`--add-scram`); the
  passwords are generated once and kept in `kafka-credentials.json` in the data directory (mode 0600).
- The StandardAuthorizer allows what an ACL allows and nothing else (`admin` is the super user); the
  ACLs are created at each start (creating one that exists changes nothing).
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any

from shared.contract.topics import SOURCES, Source, checkpoint_topic, topic_for

MECHANISM = "SCRAM-SHA-512"
ADMIN = "admin"
PRINCIPALS: tuple[str, ...] = (ADMIN, *SOURCES)
CREDENTIALS_FILE = "kafka-credentials.json"


class Resource(IntEnum):  # Kafka's ResourceType codes
    TOPIC = 2
    GROUP = 3


class Pattern(IntEnum):  # PatternType
    LITERAL = 3
    PREFIXED = 4


class Operation(IntEnum):  # AclOperation
    READ = 3
    WRITE = 4
    CREATE = 5
    DESCRIBE = 8


ALLOW = 3  # AclPermissionType


@dataclass(frozen=True)
class Acl:
    principal: str  # a user name, e.g. "treatment"
    resource: Resource
    name: str
    pattern: Pattern
    operation: Operation


def service_acls(service: Source, prefix: str = "") -> list[Acl]:
    """What `service` may do, and nothing more (names as shared/contract/topics.py and shared/service.py
    build them; `prefix` is UCART_TOPIC_PREFIX):

    - write, describe and create its own topics: `ucart.<service>.events`, `ucart.<service>.checkpoints`,
      and its consumers' dead-letter topics (`ucart.<service>-<kind>.dead-letter`, hence a prefix);
    - read, describe and create every service's event topic: a service creates the event topics it reads
      when it starts (shared/service.py), so that it can subscribe before their owners have started;
      creating a topic is not writing to it;
    - use its consumer groups (`ucart-<service>-<kind>`).
    """
    own = [
        (topic_for(service, prefix), Pattern.LITERAL),
        (checkpoint_topic(service, prefix), Pattern.LITERAL),
        (f"{prefix}ucart.{service}-", Pattern.PREFIXED),
    ]
    acls = [
        Acl(service, Resource.TOPIC, name, pattern, operation)
        for name, pattern in own
        for operation in (Operation.WRITE, Operation.DESCRIBE, Operation.CREATE)
    ]
    acls += [
        Acl(service, Resource.TOPIC, topic_for(source, prefix), Pattern.LITERAL, operation)
        for source in SOURCES
        for operation in (Operation.READ, Operation.DESCRIBE, Operation.CREATE)
    ]
    acls += [
        Acl(service, Resource.GROUP, f"{prefix}ucart-{service}-", Pattern.PREFIXED, operation)
        for operation in (Operation.READ, Operation.DESCRIBE)
    ]
    return acls


def _jaas(module: str, username: str, password: str, **users: str) -> str:
    extra = "".join(f' user_{name}="{secret}"' for name, secret in users.items())
    return f'{module} required username="{username}" password="{password}"{extra};'


class BrokerSecurity:
    """The embedded broker's SASL/SCRAM credentials and ACLs, kept in `data_dir`."""

    def __init__(self, data_dir: Path, prefix: str = ""):
        self.file = Path(data_dir).resolve() / CREDENTIALS_FILE
        self.prefix = prefix

    def _passwords(self) -> dict[str, str]:
        """One password per principal, generated on first use and kept (readable by the owner only)."""
        try:
            return dict(json.loads(self.file.read_text()))
        except FileNotFoundError:
            pass
        if (self.file.parent / "log").exists():  # formatted already: the broker knows other credentials, or none
            raise RuntimeError(
                f"{self.file} is missing, and the broker's storage in {self.file.parent} was formatted without "
                "these credentials: restore the file, or delete the data directory to start over"
            )
        passwords = {name: secrets.token_urlsafe(24) for name in PRINCIPALS}
        self.file.parent.mkdir(parents=True, exist_ok=True)
        with os.fdopen(os.open(self.file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
            json.dump(passwords, out)
        return passwords

    def password(self, principal: str) -> str:
        return self._passwords()[principal]

    def properties(self, port: int, controller_port: int) -> dict[str, object]:
        """What server.properties gets in addition (or instead): it then holds the admin password."""
        admin = self.password(ADMIN)
        scram = "org.apache.kafka.common.security.scram.ScramLoginModule"
        plain = "org.apache.kafka.common.security.plain.PlainLoginModule"
        return {
            "listeners": f"CLIENT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
            "advertised.listeners": f"CLIENT://127.0.0.1:{port}",
            "listener.security.protocol.map": "CLIENT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT",
            "inter.broker.listener.name": "CLIENT",
            "sasl.mechanism.inter.broker.protocol": MECHANISM,
            "listener.name.client.sasl.enabled.mechanisms": MECHANISM,
            f"listener.name.client.{MECHANISM.lower()}.sasl.jaas.config": _jaas(scram, ADMIN, admin),
            # SCRAM's credentials live in the metadata log, which the controller serves: its own listener
            # takes PLAIN, with admin alone.
            "sasl.mechanism.controller.protocol": "PLAIN",
            "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
            "listener.name.controller.plain.sasl.jaas.config": _jaas(plain, ADMIN, admin, **{ADMIN: admin}),
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users": f"User:{ADMIN}",
            "allow.everyone.if.no.acl.found": "false",
        }

    @property
    def format_arguments_file(self) -> Path:
        return self.file.with_name("kafka-format-arguments")

    def format_arguments(self) -> Path:
        """A file of `kafka-storage format` arguments that store every principal's SCRAM credential, for
        the JVM to read (`@file`): on the command line the passwords would show in the process list."""
        passwords = self._passwords()
        path = self.format_arguments_file
        path.unlink(missing_ok=True)
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
            for name in PRINCIPALS:
                out.write(f"--add-scram\n{MECHANISM}=[name={name},password={passwords[name]}]\n")
        return path

    def client_options(self, principal: str) -> dict[str, Any]:
        """aiokafka keyword arguments (besides bootstrap_servers) to connect as `principal`."""
        return {
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": MECHANISM,
            "sasl_plain_username": principal,
            "sasl_plain_password": self.password(principal),
        }

    def settings(self, principal: str) -> dict[str, Any]:
        """The UCART_KAFKA_* settings (as Settings' field names) that connect as `principal`."""
        return {
            "kafka_security_protocol": "SASL_PLAINTEXT",
            "kafka_sasl_mechanism": MECHANISM,
            "kafka_sasl_username": principal,
            "kafka_sasl_password": self.password(principal),
        }

    def acls(self) -> list[Acl]:
        return [acl for service in SOURCES for acl in service_acls(service, self.prefix)]

    async def create_acls(self, bootstrap_servers: str) -> None:
        """Create every service's ACLs as admin (a CreateAcls request per ACL; aiokafka has no call for it)."""
        from aiokafka.admin import AIOKafkaAdminClient
        from aiokafka.protocol.admin import CreateAclsRequest

        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, **self.client_options(ADMIN))
        try:
            await admin.start()
            for acl in self.acls():
                request = CreateAclsRequest(
                    acl.resource, acl.name, acl.pattern, f"User:{acl.principal}", "*", acl.operation, ALLOW
                )
                response = await admin._send_request(request)
                errors = [(code, message) for code, message in response.creation_responses if code]
                if errors:
                    raise RuntimeError(f"Kafka refused the ACL {acl}: {errors}")
        finally:
            await admin.close()
