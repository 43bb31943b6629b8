"""ZooKeeper, standalone, from Debian's package."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.servers.process import (
    LOOPBACK,
    ServerHandle,
    ServerNotInstalled,
    _env,
    _launch,
    _Process,
    _tempdir,
    _which,
    free_port,
)

ZOOKEEPER_CLASSPATH = ["/usr/share/java/zookeeper.jar", "/usr/share/java/slf4j-simple.jar"]
# Small heap, serial GC and C1 only: a test server should start fast and stay small.
ZOOKEEPER_JVM_OPTS = [
    "-Xmx256m", "-Xms32m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
    "-Xshare:auto", "-Djava.net.preferIPv4Stack=true",
]


@dataclass(frozen=True, kw_only=True)
class ZooKeeperServer(ServerHandle):
    hosts: str  # "127.0.0.1:P", as kazoo wants it
    port: int
    data_dir: Path


def _zk_ruok(port: int) -> bool:
    # "imok" only once the server is serving; before that it answers something else.
    with socket.create_connection((LOOPBACK, port), timeout=1) as s:
        s.sendall(b"ruok")
        reply = b""
        while chunk := s.recv(64):
            reply += chunk
    return reply == b"imok"


@contextlib.contextmanager
def zookeeper_server() -> Iterator[ZooKeeperServer]:
    """A standalone ZooKeeper on 127.0.0.1; .hosts is "127.0.0.1:P".

    kill()/stop() then start() bring it back on the same port with the same data.
    """
    for jar in ZOOKEEPER_CLASSPATH:
        if not os.path.exists(jar):
            raise ServerNotInstalled(f"{jar} not found; run scripts/test-deps.sh")
    java = _which("java")
    with _tempdir("zookeeper") as tmp:
        data = tmp / "data"
        data.mkdir()

        def make() -> ZooKeeperServer:
            port = free_port()
            cfg = tmp / "zoo.cfg"
            cfg.write_text(
                # Sessions may last 2 ticks to maxSessionTimeout: allow short ones
                # for expiry tests, and long ones as in production.
                "tickTime=500\n"
                "maxSessionTimeout=60000\n"
                f"dataDir={data}\n"
                f"clientPort={port}\n"
                f"clientPortAddress={LOOPBACK}\n"
                "admin.enableServer=false\n"  # else Jetty grabs port 8080
                "4lw.commands.whitelist=*\n"
                "forceSync=no\n"  # throwaway data: skip fsync for speed
            )
            argv = [java, *ZOOKEEPER_JVM_OPTS, "-cp", ":".join(ZOOKEEPER_CLASSPATH),
                    "org.apache.zookeeper.server.quorum.QuorumPeerMain", str(cfg)]
            proc = _Process(
                "zookeeper", argv, ready=lambda: _zk_ruok(port), log_path=tmp / "zookeeper.log",
                env=_env(("ZOO", "JVMFLAGS", "SERVER_JVMFLAGS")),
            )
            return ZooKeeperServer(_proc=proc, hosts=f"{LOOPBACK}:{port}", port=port, data_dir=data)

        server = _launch(make)
        try:
            yield server
        finally:
            server.stop()


# ------------------------------------------------------------------------- openbao
