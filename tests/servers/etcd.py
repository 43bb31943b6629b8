"""etcd: one member or a cluster of them."""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.servers.process import (
    LOOPBACK,
    ServerHandle,
    _env,
    _http_ok,
    _launch,
    _PortInUse,
    _Process,
    _tempdir,
    _wait_ready,
    _which,
    free_ports,
)


@dataclass(frozen=True, kw_only=True)
class EtcdServer(ServerHandle):
    url: str  # http://127.0.0.1:P, the client URL
    name: str
    data_dir: Path


def _etcd_member(
    name: str, data_dir: Path, client_port: int, peer_port: int, cluster: str, token: str
) -> EtcdServer:
    url, peer = f"http://{LOOPBACK}:{client_port}", f"http://{LOOPBACK}:{peer_port}"
    argv = [
        _which("etcd"),
        "--name", name,
        "--data-dir", str(data_dir),
        "--listen-client-urls", url,
        "--advertise-client-urls", url,
        "--listen-peer-urls", peer,
        "--initial-advertise-peer-urls", peer,
        "--initial-cluster", cluster,
        # "new" is ignored once the data dir exists, so restarts rejoin as before.
        "--initial-cluster-state", "new",
        # Unique per cluster: members of two test clusters can never join each other.
        "--initial-cluster-token", token,
        "--logger", "zap",
        "--log-outputs", "stderr",
    ]
    # /health is {"health":"true"} once the member has a leader and no alarms.
    ready = lambda: _http_ok(f"{url}/health", lambda b: json.loads(b).get("health") == "true")  # noqa: E731
    proc = _Process(
        f"etcd {name}", argv, ready=ready,
        log_path=data_dir.parent / f"{name}.log", env=_env(("ETCD_",)),
    )
    return EtcdServer(_proc=proc, url=url, name=name, data_dir=data_dir)


@contextlib.contextmanager
def etcd_server() -> Iterator[EtcdServer]:
    """A single-member etcd on 127.0.0.1; .url is its client URL.

    kill()/stop() then start() bring it back on the same ports with the same data.
    """
    with _tempdir("etcd") as tmp:
        token = secrets.token_hex(8)

        def make() -> EtcdServer:
            client, peer = free_ports(2)
            shutil.rmtree(tmp / "t.etcd", ignore_errors=True)  # a failed try's partial state
            cluster = f"t=http://{LOOPBACK}:{peer}"
            return _etcd_member("t", tmp / "t.etcd", client, peer, cluster, token)

        server = _launch(make)
        try:
            yield server
        finally:
            server.stop()


@dataclass(frozen=True)
class EtcdCluster:
    members: tuple[EtcdServer, ...]  # each can be killed/stopped/started on its own

    @property
    def urls(self) -> list[str]:
        return [m.url for m in self.members]

    def start_all(self) -> None:
        """Start every stopped member, then wait: one member alone has no quorum."""
        for m in self.members:
            if not m.running:
                m.start(wait=False)
        _wait_ready([m._proc for m in self.members])

    def stop_all(self) -> None:
        for m in self.members:
            m.stop()


@contextlib.contextmanager
def etcd_cluster(n: int = 3) -> Iterator[EtcdCluster]:
    """An n-member etcd cluster on 127.0.0.1, ready when every member is healthy."""
    with _tempdir("etcd-cluster") as tmp:
        token = secrets.token_hex(8)
        for attempt in range(3):
            ports = free_ports(2 * n)
            names = [f"m{i}" for i in range(n)]
            peers = ports[n:]
            spec = ",".join(f"{nm}=http://{LOOPBACK}:{p}" for nm, p in zip(names, peers))
            for nm in names:
                shutil.rmtree(tmp / f"{nm}.etcd", ignore_errors=True)
            cluster = EtcdCluster(tuple(
                _etcd_member(nm, tmp / f"{nm}.etcd", c, p, spec, token)
                for nm, c, p in zip(names, ports[:n], peers)
            ))
            try:
                cluster.start_all()
                break
            except _PortInUse:
                cluster.stop_all()
                if attempt == 2:
                    raise
            except BaseException:
                cluster.stop_all()
                raise
        try:
            yield cluster
        finally:
            cluster.stop_all()


# ----------------------------------------------------------------------- zookeeper

# zookeeper.jar's manifest Class-Path names its Debian dependencies (jute, netty,
# metrics, slf4j-api, ...); only an SLF4J binding is missing, and slf4j-simple sends
# the server log to stderr, i.e. to our log file.
