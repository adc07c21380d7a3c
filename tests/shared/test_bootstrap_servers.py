"""KAFKA_BOOTSTRAP_SERVERS may name several brokers, comma-separated, as every Kafka client takes it."""

from __future__ import annotations

import asyncio

from infra.embedded import free_port
from services.enrollment.main import SPEC
from shared.config import Settings
from shared.service import wire
from shared.signing import load_signer


async def test_a_service_reaches_the_brokers_through_a_list_with_a_dead_one(bootstrap_servers, signing_keys):
    servers = f"127.0.0.1:{free_port()},{bootstrap_servers}"  # nothing listens on the first
    wiring = wire(
        SPEC,
        Settings(_env_file=None, kafka_bootstrap_servers=servers),
        asyncio.Event(),
        load_signer(signing_keys, "enrollment"),
    )
    async with asyncio.timeout(30):
        await wiring.broker.start()
    try:
        assert await wiring.broker.ping(timeout=5)
    finally:
        await wiring.broker.stop()
