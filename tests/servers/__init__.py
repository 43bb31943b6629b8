"""Real backend servers for the test suite, on 127.0.0.1 only.

Each context manager starts one real server process on free loopback ports with a
throwaway temp dir, waits until the server's own health check passes (polling, never
a fixed sleep), yields a small frozen handle, and on exit stops the process and
removes the dir:

    with etcd_server() as etcd:
        httpx.post(f"{etcd.url}/v3/kv/put", json={...})
        etcd.kill()      # crash it (SIGKILL)
        etcd.start()     # same ports, same data dir; returns once healthy again

This module needs only the standard library and the server binaries that
scripts/test-deps.sh installs; it does not import confsync.
"""

from tests.servers.etcd import EtcdCluster, EtcdServer, etcd_cluster, etcd_server
from tests.servers.openbao import OpenBaoServer, openbao_server
from tests.servers.postgres import PostgresServer, _postgres_bindir, postgres_server
from tests.servers.process import (
    LOOPBACK,
    ServerHandle,
    ServerNotInstalled,
    ServerStartError,
    _PortInUse,
    _Process,
    free_port,
    free_ports,
)
from tests.servers.zookeeper import ZooKeeperServer, zookeeper_server

__all__ = [
    "LOOPBACK", "EtcdCluster", "EtcdServer", "OpenBaoServer", "PostgresServer", "ServerHandle", "ServerNotInstalled",
    "ServerStartError", "ZooKeeperServer", "_PortInUse", "_Process", "_postgres_bindir", "etcd_cluster",
    "etcd_server", "free_port", "free_ports", "openbao_server", "postgres_server", "zookeeper_server",
]
