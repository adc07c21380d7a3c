"""The event store's PostgreSQL factory: eventsourcing's, plus the TLS options libpq takes.

eventsourcing 9.5 gives psycopg only the host, port, database, user and password; TLS reaches psycopg
here, from POSTGRES_SSLMODE, POSTGRES_SSLROOTCERT, POSTGRES_SSLCERT and POSTGRES_SSLKEY (`postgres_env`
sets them from DATABASE_URL, checked by `shared.transport`)."""

from __future__ import annotations

from eventsourcing.postgres import PostgresFactory
from eventsourcing.utils import Environment, EnvType

from shared.transport import TLS_PARAMETERS

TOPIC = "shared.eventstore.factory:TLSPostgresFactory"  # PERSISTENCE_MODULE, to make the store with it


def tls_setting(parameter: str) -> str:
    return f"POSTGRES_{parameter.upper()}"


class TLSPostgresFactory(PostgresFactory):
    def __init__(self, env: Environment | EnvType | None):
        super().__init__(env)
        tls = {p: value for p in TLS_PARAMETERS if (value := self.env.get(tls_setting(p)))}
        connection = self.datastore.pool.kwargs
        # The pool opens on first use, after this: its connections are made with these options.
        if not isinstance(connection, dict):
            raise TypeError("eventsourcing's pool takes its connection options as a dict")
        connection.update(tls)
