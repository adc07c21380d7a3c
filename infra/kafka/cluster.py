"""Apache Kafka, a cluster on one machine: `size` KRaft nodes, each a broker and a controller in one
JVM, the controllers one quorum of `size` voters. Every topic is replicated to three brokers and a
write needs two in sync (min.insync.replicas=2), so that the loss of one broker loses nothing and
writes go on. For the tests that prove it; the laptop and the demo run one node (`EmbeddedApacheKafka`).

The quorum is dynamic (KIP-853), as Kafka 4.x formats it: every node's storage is formatted with the
same cluster id and the same `--initial-controllers` (each voter's node id, controller endpoint and
metadata directory id), and the nodes find the quorum through `controller.quorum.bootstrap.servers`.
A voter's endpoint is in the quorum's log, so each node keeps its ports for the cluster's life.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from infra.embedded import free_port
from infra.kafka import EmbeddedApacheKafka, _cluster_id, server_properties

T = TypeVar("T")


class ClusterNode(EmbeddedApacheKafka):
    """One node of an `EmbeddedKafkaCluster` (broker and controller), with ports of its own for life."""

    def __init__(self, cluster: EmbeddedKafkaCluster, node_id: int, data_dir: Path, log_file: Path | None, heap: str):
        super().__init__(free_port(), log_file, data_dir, heap)
        self.cluster, self.node_id = cluster, node_id
        self.controller_port = free_port()
        self.directory_id = _cluster_id()  # the metadata directory's id (a Kafka Uuid, as the cluster id)

    @property
    def voter(self) -> str:
        return f"{self.node_id}@127.0.0.1:{self.controller_port}:{self.directory_id}"

    def _configure(self) -> tuple[str, list[str]]:
        single = server_properties(self.port, self.controller_port, self.log_dir, self.security)
        settings: dict[str, object] = {k: v for k, _, v in (line.partition("=") for line in single.splitlines())}
        replicas, min_insync = self.cluster.replication, self.cluster.min_insync_replicas
        settings.update(
            {
                "node.id": self.node_id,
                "controller.quorum.bootstrap.servers": ",".join(
                    f"127.0.0.1:{n.controller_port}" for n in self.cluster.nodes
                ),
                "default.replication.factor": replicas,
                "min.insync.replicas": min_insync,
                "offsets.topic.replication.factor": replicas,
                "transaction.state.log.replication.factor": replicas,
                "transaction.state.log.min.isr": min_insync,
                "share.coordinator.state.topic.replication.factor": replicas,
                "share.coordinator.state.topic.min.isr": min_insync,
                # A follower that stopped fetching leaves the ISR after 5 s (default 30 s).
                "replica.lag.time.max.ms": 5000,
            }
        )
        properties = "".join(f"{key}={value}\n" for key, value in settings.items())
        voters = ",".join(n.voter for n in self.cluster.nodes)
        return properties, ["-t", self.cluster.cluster_id, "--initial-controllers", voters]


class EmbeddedKafkaCluster:
    """`size` Apache Kafka nodes on 127.0.0.1, their logs kept in `data_dir/node-<id>` across restarts
    and kills. Nodes are named by their node id, 1 to `size`."""

    def __init__(
        self,
        data_dir: Path,
        size: int = 3,
        *,
        replication: int = 3,
        min_insync_replicas: int = 2,
        heap: str = "384m",
    ):
        if not 1 <= min_insync_replicas <= replication <= size:
            raise ValueError("need 1 <= min_insync_replicas <= replication <= size")
        self.data_dir = Path(data_dir).resolve()
        self.replication, self.min_insync_replicas = replication, min_insync_replicas
        self.cluster_id = _cluster_id()
        self.nodes: list[ClusterNode] = []
        for node_id in range(1, size + 1):
            home = self.data_dir / f"node-{node_id}"
            self.nodes.append(ClusterNode(self, node_id, home, home / "broker.log", heap))

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(n.bootstrap_servers for n in self.nodes)

    def node(self, node_id: int) -> ClusterNode:
        return self.nodes[node_id - 1]

    def start(self, timeout: float = 120.0) -> str:
        """Start every node at once (a node answers only once a majority of the quorum runs), then wait
        until the cluster is whole."""
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            for future in [pool.submit(n.start, timeout) for n in self.nodes]:
                future.result()
        self.wait_whole(timeout)
        return self.bootstrap_servers

    def stop(self) -> None:
        """Every node, at once (SIGTERM: a controlled shutdown)."""
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            list(pool.map(lambda n: n.stop(), self.nodes))

    def kill(self) -> None:
        for node in self.nodes:
            node.kill()

    def stop_node(self, node_id: int) -> None:
        """SIGTERM: the broker hands its partitions' leadership over, then stops."""
        self.node(node_id).stop()

    def kill_node(self, node_id: int) -> None:
        """SIGKILL: its leaderships move once the controller has missed its heartbeats."""
        self.node(node_id).kill()

    def start_node(self, node_id: int, timeout: float = 60.0) -> None:
        self.node(node_id).start(timeout)

    def running(self) -> list[int]:
        return [n.node_id for n in self.nodes if n.pid is not None]

    def leader_of(self, topic: str, partition: int) -> int:
        """The node id of the partition's leader, as the cluster's metadata says (-1: none)."""
        [described] = self._ask(lambda admin: admin.describe_topics([topic]))
        for found in described["partitions"]:
            if found["partition"] == partition:
                return int(found["leader"])
        raise LookupError(f"{topic} has no partition {partition}")

    def brokers(self) -> set[int]:
        """The node ids of the brokers registered with the controllers (fenced ones are not)."""
        cluster = self._ask(lambda admin: admin.describe_cluster())
        return {int(b["node_id"]) for b in cluster["brokers"]}

    def under_replicated(self) -> list[str]:
        """Partitions (internal topics included) whose in-sync replicas are fewer than their replicas."""
        topics = self._ask(lambda admin: admin.describe_topics())
        return [
            f"{t['topic']}[{p['partition']}]: isr {sorted(p['isr'])} of {sorted(p['replicas'])}"
            for t in topics
            for p in t["partitions"]
            if set(p["isr"]) != set(p["replicas"]) or p["leader"] < 0
        ]

    def wait_whole(self, timeout: float = 90.0) -> None:
        """Until every running node is a registered broker and every partition has all its replicas in sync."""
        deadline = time.monotonic() + timeout
        problem = ""
        while time.monotonic() < deadline:
            try:
                missing = set(self.running()) - self.brokers()
                problem = f"brokers {sorted(missing)} not registered" if missing else "; ".join(self.under_replicated())
            except Exception as exc:
                problem = f"{type(exc).__name__}: {exc}"
            if not problem:
                return
            time.sleep(0.5)
        raise TimeoutError(f"the cluster is not whole after {timeout:.0f}s: {problem[:500]}")

    def _ask(self, question: Callable[[Any], Awaitable[T]], timeout: float = 20.0) -> T:
        """One admin request to the running nodes, from a thread (callers may run in an event loop);
        asked again while it fails (the metadata may still name a broker that just died)."""
        from aiokafka.admin import AIOKafkaAdminClient
        from aiokafka.errors import KafkaError

        bootstrap = ",".join(n.bootstrap_servers for n in self.nodes if n.pid is not None)

        async def ask() -> T:
            deadline = time.monotonic() + timeout
            while True:
                admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
                try:
                    await admin.start()
                    return await question(admin)
                except (KafkaError, OSError):
                    if time.monotonic() > deadline:
                        raise
                finally:
                    await admin.close()
                await asyncio.sleep(0.2)

        with ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, ask()).result()
