#!/usr/bin/env python3
"""A small Consul HTTP API emulator for tests (standard library only).

Written from the official Consul HTTP API documentation:

* KV store ............ https://developer.hashicorp.com/consul/api-docs/kv
* Blocking queries .... https://developer.hashicorp.com/consul/api-docs/features/blocking
* Consistency modes ... https://developer.hashicorp.com/consul/api-docs/features/consistency
* Health .............. https://developer.hashicorp.com/consul/api-docs/health
* Catalog ............. https://developer.hashicorp.com/consul/api-docs/catalog
* Agent services ...... https://developer.hashicorp.com/consul/api-docs/agent/service
* Status .............. https://developer.hashicorp.com/consul/api-docs/status
* Authentication ...... https://developer.hashicorp.com/consul/api-docs/api-structure

It implements only what a config-sync client needs (see docs/consul-emulator.md
for the exact scope and the known deviations from a real Consul).

Usage in-process::

    with consul_emulator(token=None) as emu:
        client = consul.Consul(host="127.0.0.1", port=emu.port)
        ...
        emu.stop(); emu.start()   # restart on the same port, state kept
        emu.reset()               # wipe state: Consul "lost" its data
        emu.delay = 0.5           # every response delayed by 0.5 s
        emu.fail_with = 500       # every request answered with HTTP 500
        emu.request_count["/v1/kv/foo"]

Standalone::

    python tests/consul_emulator.py --port 8500 [--token SECRET]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import random
import re
import signal
import socket
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["ConsulEmulator", "consul_emulator", "parse_go_duration", "main"]

DATACENTER = "dc1"
DEFAULT_LEADER = "127.0.0.1:8300"
MAX_VALUE_SIZE = 512 * 1024  # "Values in the KV store cannot be larger than 512kb."
DEFAULT_WAIT = 5 * 60.0  # "If not set, the wait time defaults to 5 minutes."
MAX_WAIT = 10 * 60.0  # "This is limited to 10 minutes."
HEALTH_STATES = ("passing", "warning", "critical")
THREAD_PREFIX = "consul-emulator"


# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #


class ApiError(Exception):
    """An HTTP error answered as ``text/plain``, the way Consul does."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


class _Abort(Exception):
    """The server is stopping: drop the connection without answering."""


@dataclass
class _Response:
    status: int = 200
    body: bytes = b""
    content_type: str | None = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_go_duration(text: str) -> float:
    """Parse a Go ``time.Duration`` string ("10s", "5m", "1m30s", "250ms") to seconds.

    Raises ``ValueError`` for anything Go's ``time.ParseDuration`` would reject
    (notably a bare number such as ``"10"``; only ``"0"`` is allowed unitless).
    """
    s = text.strip()
    sign = 1.0
    if s[:1] in ("+", "-"):
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise ValueError(f"invalid duration {text!r}")
    total = 0.0
    pos = 0
    while pos < len(s):
        m = _DURATION_PART.match(s, pos)
        if not m:
            raise ValueError(f"invalid duration {text!r}")
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    return sign * total


def _fields(obj: Any, names: tuple[str, ...], *, snake: bool = False, what: str = "body") -> dict[str, Any]:
    """Pick struct fields out of a decoded JSON object the way Go does it.

    Go's encoding/json matches object keys to struct fields case-insensitively,
    and the agent endpoints also accept snake_case; clients (py-consul among
    them) rely on that and send e.g. ``{"node": ..., "serviceid": ...}``.
    Only the top-level keys are normalised; maps such as ``Meta`` keep theirs.
    """
    if obj is None:
        return {}
    if not isinstance(obj, dict):
        raise ApiError(400, f"Request decode failed: {what} must be a JSON object")
    canon = {n.lower(): n for n in names}
    out: dict[str, Any] = {}
    for key, value in obj.items():
        norm = key.lower().replace("_", "") if snake else key.lower()
        if norm in canon:
            out[canon[norm]] = value
    return out


def _expect(value: Any, kind: type | tuple[type, ...], name: str, default: Any) -> Any:
    if value is None:
        return default
    if kind is int and isinstance(value, bool):
        raise ApiError(400, f"Request decode failed: {name} must be a number")
    if not isinstance(value, kind):
        raise ApiError(400, f"Request decode failed: invalid type for {name}")
    return value


def _str_list(value: Any, name: str) -> list[str]:
    value = _expect(value, list, name, [])
    if not all(isinstance(v, str) for v in value):
        raise ApiError(400, f"Request decode failed: {name} must be a list of strings")
    return list(value)


def _str_map(value: Any, name: str) -> dict[str, str]:
    value = _expect(value, dict, name, {})
    return dict(value)


def _weights(value: Any, *, snake: bool = False) -> dict[str, int] | None:
    if value is None:
        return None
    w = _fields(value, ("Passing", "Warning"), snake=snake, what="Weights")
    return {"Passing": _expect(w.get("Passing"), int, "Weights.Passing", 1),
            "Warning": _expect(w.get("Warning"), int, "Weights.Warning", 1)}


def _flag(query: dict[str, list[str]], name: str) -> bool:
    # Consul treats these query parameters as set when present at all
    # ("?recurse", "?keys", "?raw", "?passing", "?stale", "?consistent").
    return name in query


def _one(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None


# --------------------------------------------------------------------------- #
# state
# --------------------------------------------------------------------------- #


class _State:
    """Everything a Consul server would keep in its raft-backed state store.

    All access happens with ``cond`` held; every write calls ``notify_all`` so
    that blocking queries re-evaluate their resource index.
    """

    def __init__(self, node_name: str, node_address: str) -> None:
        self.cond = threading.Condition()
        self.node_name = node_name
        self.node_address = node_address
        self.node_id = str(uuid.uuid4())
        self.blocked = 0
        with self.cond:
            self.wipe()

    # -- lifecycle ---------------------------------------------------------- #

    def wipe(self) -> None:
        self.index = 0  # the raft index: +1 for every write request applied
        self.kv: dict[str, dict[str, Any]] = {}
        self.kv_tombstones: dict[str, int] = {}  # key -> index of the delete
        self.kv_table_index = 0
        self.nodes: dict[str, dict[str, Any]] = {}
        self.services: dict[tuple[str, str], dict[str, Any]] = {}  # (node, service id)
        self.checks: dict[tuple[str, str], dict[str, Any]] = {}  # (node, check id)
        self.service_index: dict[str, int] = {}  # service name -> last change to its instances/health
        self.services_table_index = 0  # last change to any service registration
        self.catalog_index = 0  # last change to anything in the catalog
        self._bootstrap()

    def _bootstrap(self) -> None:
        # A real server registers itself: its node (with the serfHealth check)
        # and the "consul" service.  This is the first raft entry.
        self.register(
            {
                "ID": self.node_id,
                "Node": self.node_name,
                "Address": self.node_address,
                "Service": {"ID": "consul", "Service": "consul", "Port": 8300},
                "Checks": [
                    {
                        "CheckID": "serfHealth",
                        "Name": "Serf Health Status",
                        "Status": "passing",
                        "Output": "Agent alive and reachable",
                    }
                ],
            }
        )

    def next_index(self) -> int:
        self.index += 1
        self.cond.notify_all()
        return self.index

    # -- KV ----------------------------------------------------------------- #

    def kv_put(self, key: str, value: bytes, flags: int, cas: int | None) -> bool:
        idx = self.next_index()
        existing = self.kv.get(key)
        if cas is not None:
            if cas == 0 and existing is not None:
                return False
            if cas != 0 and (existing is None or existing["ModifyIndex"] != cas):
                return False
        self.kv[key] = {
            "CreateIndex": existing["CreateIndex"] if existing else idx,
            "ModifyIndex": idx,
            "LockIndex": existing["LockIndex"] if existing else 0,
            "Flags": flags,
            "Value": value,
            "Session": existing["Session"] if existing else "",
        }
        self.kv_tombstones.pop(key, None)
        self.kv_table_index = idx
        return True

    def _kv_remove(self, key: str, idx: int) -> None:
        del self.kv[key]
        self.kv_tombstones[key] = idx
        self.kv_table_index = idx

    def kv_delete(self, key: str, recurse: bool, cas: int | None) -> bool:
        idx = self.next_index()
        if recurse:
            for k in [k for k in self.kv if k.startswith(key)]:
                self._kv_remove(k, idx)
            return True
        existing = self.kv.get(key)
        if cas is not None:
            # "Unlike PUT, the index must be greater than 0 for Consul to take
            # any action: a 0 index will not delete the key."
            if existing is None:
                return True
            if cas == 0 or existing["ModifyIndex"] != cas:
                return False
        if existing is not None:
            self._kv_remove(key, idx)
        return True

    def kv_watch_index(self, key: str, prefix: bool) -> int:
        """Index of the last write that affected this (key | prefix) result.

        Deletes are remembered as tombstones, so removing the entry with the
        highest ModifyIndex still moves the index forward (until tombstones
        are reaped -- see ``ConsulEmulator.reap_tombstones``).
        """
        if not prefix:
            entry = self.kv.get(key)
            return entry["ModifyIndex"] if entry else self.kv_tombstones.get(key, 0)
        best = 0
        for k, e in self.kv.items():
            if k.startswith(key) and e["ModifyIndex"] > best:
                best = e["ModifyIndex"]
        for k, i in self.kv_tombstones.items():
            if k.startswith(key) and i > best:
                best = i
        return best

    # -- catalog ------------------------------------------------------------ #

    def _touch_node_services(self, node: str, idx: int) -> None:
        for (n, _sid), svc in self.services.items():
            if n == node:
                self.service_index[svc["Service"]] = idx

    def register(self, payload: dict[str, Any]) -> None:
        """Apply a /catalog/register body (already field-normalised)."""
        node_name = payload["Node"]
        svc_def = payload.get("Service")
        for chk in payload.get("Checks") or []:
            sid = chk.get("ServiceID") or ""
            if sid and (node_name, sid) not in self.services and not (svc_def and svc_def["ID"] == sid):
                raise ApiError(500, "Missing service registration")
        idx = self.next_index()
        changed_names: set[str] = set()
        node_changed = False
        services_changed = False

        node = self.nodes.get(node_name)
        if node is None or not payload.get("SkipNodeUpdate"):
            new_node = {
                "ID": payload.get("ID") or (node["ID"] if node else ""),
                "Node": node_name,
                "Address": payload["Address"] if payload.get("Address") else (node["Address"] if node else ""),
                "Datacenter": DATACENTER,
                "TaggedAddresses": payload.get("TaggedAddresses") or {},
                "Meta": payload.get("NodeMeta") or {},
            }
            if node is None or {k: node[k] for k in new_node} != new_node:
                new_node["CreateIndex"] = node["CreateIndex"] if node else idx
                new_node["ModifyIndex"] = idx
                self.nodes[node_name] = new_node
                node_changed = True

        if svc_def is not None:
            sid = svc_def["ID"]
            old = self.services.get((node_name, sid))
            new = {
                "ID": sid,
                "Service": svc_def["Service"],
                "Tags": svc_def.get("Tags") or [],
                "Address": svc_def.get("Address") or "",
                "Meta": svc_def.get("Meta") or {},
                "Port": svc_def.get("Port") or 0,
                "Weights": svc_def.get("Weights") or {"Passing": 1, "Warning": 1},
                "EnableTagOverride": bool(svc_def.get("EnableTagOverride")),
                "TaggedAddresses": svc_def.get("TaggedAddresses") or {},
            }
            if old is None or {k: old[k] for k in new} != new:
                new["CreateIndex"] = old["CreateIndex"] if old else idx
                new["ModifyIndex"] = idx
                self.services[(node_name, sid)] = new
                services_changed = True
                changed_names.add(new["Service"])
                if old is not None:
                    changed_names.add(old["Service"])
                    # keep ServiceName/ServiceTags of its checks in step
                    for c in self.checks.values():
                        if c["Node"] == node_name and c["ServiceID"] == sid:
                            c["ServiceName"], c["ServiceTags"] = new["Service"], list(new["Tags"])
                            c["ModifyIndex"] = idx

        for chk in payload.get("Checks") or []:
            service_id = chk.get("ServiceID") or ""
            svc = self.services.get((node_name, service_id)) if service_id else None
            old = self.checks.get((node_name, chk["CheckID"]))
            new = {
                "Node": node_name,
                "CheckID": chk["CheckID"],
                "Name": chk.get("Name") or chk["CheckID"],
                "Status": chk.get("Status") or "critical",
                "Notes": chk.get("Notes") or "",
                "Output": chk.get("Output") or "",
                "ServiceID": service_id,
                "ServiceName": svc["Service"] if svc else "",
                "ServiceTags": list(svc["Tags"]) if svc else [],
                "Type": chk.get("Type") or "",
                "Definition": chk.get("Definition") or {},
            }
            if old is None or {k: old[k] for k in new} != new:
                new["CreateIndex"] = old["CreateIndex"] if old else idx
                new["ModifyIndex"] = idx
                self.checks[(node_name, chk["CheckID"])] = new
                if svc is not None:
                    changed_names.add(svc["Service"])
                else:
                    node_changed = True  # a node-level check affects every service on the node
                if old is not None and old["ServiceID"] and old["ServiceID"] != service_id:
                    old_svc = self.services.get((node_name, old["ServiceID"]))
                    if old_svc:
                        changed_names.add(old_svc["Service"])

        self._record_catalog_change(idx, node_name, node_changed, services_changed, changed_names)

    def _record_catalog_change(
        self, idx: int, node_name: str, node_changed: bool, services_changed: bool, names: set[str]
    ) -> None:
        if node_changed:
            self._touch_node_services(node_name, idx)
        for name in names:
            self.service_index[name] = idx
        if services_changed:
            self.services_table_index = idx
        if node_changed or services_changed or names:
            self.catalog_index = idx

    def deregister(self, node_name: str, service_id: str | None, check_id: str | None) -> None:
        idx = self.next_index()
        if node_name not in self.nodes:
            return
        names: set[str] = set()
        node_changed = services_changed = False
        if service_id:
            svc = self.services.pop((node_name, service_id), None)
            if svc is not None:
                services_changed = True
                names.add(svc["Service"])
                for key in [k for k, c in self.checks.items() if k[0] == node_name and c["ServiceID"] == service_id]:
                    del self.checks[key]
        elif check_id:
            chk = self.checks.pop((node_name, check_id), None)
            if chk is not None:
                if chk["ServiceID"]:
                    svc = self.services.get((node_name, chk["ServiceID"]))
                    if svc:
                        names.add(svc["Service"])
                else:
                    node_changed = True
        else:
            self._touch_node_services(node_name, idx)
            for key in [k for k in self.services if k[0] == node_name]:
                names.add(self.services.pop(key)["Service"])
                services_changed = True
            for key in [k for k in self.checks if k[0] == node_name]:
                del self.checks[key]
            del self.nodes[node_name]
            self.catalog_index = idx
        self._record_catalog_change(idx, node_name, node_changed, services_changed, names)

    def update_check(self, node_name: str, check_id: str, status: str, output: str | None) -> bool:
        chk = self.checks.get((node_name, check_id))
        if chk is None:
            return False
        idx = self.next_index()
        new_output = chk["Output"] if output is None else output
        if chk["Status"] == status and chk["Output"] == new_output:
            return True
        chk["Status"], chk["Output"], chk["ModifyIndex"] = status, new_output, idx
        names: set[str] = set()
        if chk["ServiceID"]:
            svc = self.services.get((node_name, chk["ServiceID"]))
            if svc:
                names.add(svc["Service"])
        self._record_catalog_change(idx, node_name, not chk["ServiceID"], False, names)
        return True

    # -- catalog views ------------------------------------------------------ #

    @staticmethod
    def _has_tags(svc: dict[str, Any], tags: list[str]) -> bool:
        # Multiple ?tag= are AND-ed; Consul compares tags case-insensitively.
        have = {t.lower() for t in svc["Tags"]}
        return all(t.lower() in have for t in tags)

    def service_instances(self, name: str, tags: list[str]) -> list[tuple[dict, dict]]:
        out = []
        for (node_name, _sid), svc in sorted(self.services.items()):
            if svc["Service"] == name and self._has_tags(svc, tags):
                out.append((self.nodes[node_name], svc))
        return out

    def checks_for(self, node_name: str, service_id: str) -> list[dict[str, Any]]:
        return [
            dict(c)
            for (n, _cid), c in sorted(self.checks.items())
            if n == node_name and c["ServiceID"] in ("", service_id)
        ]

    def service_report_index(self, name: str) -> int:
        """X-Consul-Index for one service: the last change to its instances or
        their health; for a service never seen, the last catalog change."""
        watch = self.service_index.get(name, 0)
        return watch if watch > 0 else max(1, self.catalog_index)


# --------------------------------------------------------------------------- #
# HTTP plumbing
# --------------------------------------------------------------------------- #


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer that can be stopped with long polls in flight.

    Every accepted connection and its handler thread are tracked so that
    ``close_all`` can shut the sockets down (waking handlers parked in a
    keep-alive read) and the emulator can join every thread it started.
    """

    daemon_threads = True  # joined explicitly in ConsulEmulator.stop()
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], emulator: ConsulEmulator) -> None:
        self.emulator = emulator
        self.stopping = threading.Event()
        self._track_lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._handler_threads: set[threading.Thread] = set()
        super().__init__(address, _Handler)

    def process_request(self, request, client_address):  # type: ignore[override]
        # Headers and body go out as separate writes; without TCP_NODELAY,
        # Nagle + the client's delayed ACK add ~40 ms to every response.
        with contextlib.suppress(OSError):
            request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        thread = threading.Thread(
            target=self._serve_connection,
            args=(request, client_address),
            name=f"{THREAD_PREFIX}-{self.server_address[1]}-conn",
            daemon=True,
        )
        with self._track_lock:
            self._connections.add(request)
            self._handler_threads.add(thread)
        thread.start()

    def _serve_connection(self, request, client_address) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)
            with self._track_lock:
                self._connections.discard(request)
                self._handler_threads.discard(threading.current_thread())

    def handle_error(self, request, client_address) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, OSError)) or self.stopping.is_set():
            return  # client went away / we are shutting down
        if self.emulator.verbose:
            super().handle_error(request, client_address)

    def close_all(self) -> list[threading.Thread]:
        with self._track_lock:
            connections = list(self._connections)
            threads = list(self._handler_threads)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        return threads


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "consul-emulator"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        if self.server.emulator.verbose:
            super().log_message(format, *args)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _dispatch(self, method: str) -> None:
        emu = self.server.emulator
        try:
            body = self._read_body()
            split = urlsplit(self.path)
            query = parse_qs(split.query, keep_blank_values=True)
            emu._count(split.path)
            if emu.delay and self.server.stopping.wait(emu.delay):
                raise _Abort
            if emu.fail_with:
                raise ApiError(int(emu.fail_with), f"consul emulator: injected failure (HTTP {emu.fail_with})")
            response = emu._handle(self.server, method, split.path, query, self.headers, body)
        except _Abort:
            self.close_connection = True
            return
        except ApiError as err:
            response = _Response(err.status, err.message.encode(), "text/plain; charset=utf-8", dict(err.headers))
        except Exception as err:  # pragma: no cover - a bug in the emulator itself
            response = _Response(500, f"consul emulator internal error: {err!r}".encode(), "text/plain; charset=utf-8")
        self._send(response, head=(method == "HEAD"))

    def _send(self, response: _Response, head: bool = False) -> None:
        emu = self.server.emulator
        self.send_response(response.status)
        if response.content_type:
            self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        self.send_header("X-Consul-Default-Acl-Policy", "deny" if emu.token else "allow")
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if not head and response.body:
            self.wfile.write(response.body)


# --------------------------------------------------------------------------- #
# the emulator
# --------------------------------------------------------------------------- #

_Route = tuple[str, "re.Pattern[str]", str, bool]  # (methods, pattern, handler name, needs ACL)
# Endpoints answered by the local agent without a raft leader.
_LEADERLESS = frozenset({"_status_leader", "_status_peers", "_catalog_datacenters", "_agent_self",
                         "_agent_service_register", "_agent_service_deregister", "_agent_check"})


class ConsulEmulator:
    """An in-process Consul HTTP API for tests.

    Tunables (plain attributes, may be changed while running):

    ``delay``      seconds every response is delayed by (0 = none)
    ``fail_with``  HTTP status returned for every request (None = behave)
    ``leader``     what /v1/status/leader reports; "" simulates "no cluster leader"
    ``jitter``     add the documented random wait/16 to blocking waits
    """

    def __init__(
        self,
        token: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        node_name: str = "consul-emulator",
        jitter: bool = True,
        verbose: bool = False,
    ) -> None:
        self.token = token or None
        self.host = host
        self.port = port
        self.delay: float = 0.0
        self.fail_with: int | None = None
        self.leader: str = DEFAULT_LEADER
        self.jitter = jitter
        self.verbose = verbose
        self.request_count: Counter[str] = Counter()
        self._count_lock = threading.Lock()
        self._state = _State(node_name, host if host not in ("", "0.0.0.0", "::") else "127.0.0.1")
        self._server: _Server | None = None
        self._serve_thread: threading.Thread | None = None
        self._lifecycle = threading.Lock()

    # -- lifecycle ---------------------------------------------------------- #

    @property
    def addr(self) -> str:
        host = self.host if self.host not in ("", "0.0.0.0") else "127.0.0.1"
        return f"http://{host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> ConsulEmulator:
        """Start serving; after a ``stop()`` it binds the same port again and keeps the state."""
        with self._lifecycle:
            if self._server is not None:
                raise RuntimeError("consul emulator already running")
            server = _Server((self.host, self.port), self)
            self.port = server.server_address[1]
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"{THREAD_PREFIX}-{self.port}-accept",
                daemon=True,
            )
            thread.start()
            self._server, self._serve_thread = server, thread
        return self

    def stop(self) -> None:
        """Stop serving: in-flight long polls are dropped (the client sees the
        connection close), every thread started by the emulator is joined.
        The state survives; ``start()`` serves it again on the same port."""
        with self._lifecycle:
            server, thread = self._server, self._serve_thread
            if server is None:
                return
            server.stopping.set()
            with self._state.cond:
                self._state.cond.notify_all()
            server.shutdown()
            handler_threads = server.close_all()
            server.server_close()
            if thread is not None:
                thread.join(timeout=5)
            for t in handler_threads:
                t.join(timeout=5)
            self._server = self._serve_thread = None

    def reset(self) -> None:
        """Wipe all state, as if the Consul cluster lost its data.

        The raft index starts over, so indexes seen by clients go *backwards*
        (the case the blocking-query docs tell clients to handle)."""
        with self._state.cond:
            self._state.wipe()
            self._state.cond.notify_all()

    def reap_tombstones(self) -> None:
        """Forget KV delete tombstones (Consul reaps them periodically); a
        prefix whose highest-index key was deleted may then report a lower index."""
        with self._state.cond:
            self._state.kv_tombstones.clear()
            self._state.cond.notify_all()

    def __enter__(self) -> ConsulEmulator:
        if not self.running:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- introspection ------------------------------------------------------ #

    @property
    def index(self) -> int:
        """The current raft index (what the last write was applied at)."""
        with self._state.cond:
            return self._state.index

    @property
    def blocked_queries(self) -> int:
        """Number of blocking queries currently parked waiting for a change."""
        with self._state.cond:
            return self._state.blocked

    def wait_for_blocked(self, count: int = 1, timeout: float = 5.0) -> bool:
        """Wait (without polling) until at least ``count`` blocking queries are parked."""
        with self._state.cond:
            return self._state.cond.wait_for(lambda: self._state.blocked >= count, timeout)

    @property
    def requests_total(self) -> int:
        with self._count_lock:
            return sum(self.request_count.values())

    def requests_to(self, prefix: str) -> int:
        """Requests received for paths starting with ``prefix`` (e.g. "/v1/kv/")."""
        with self._count_lock:
            return sum(n for p, n in self.request_count.items() if p.startswith(prefix))

    def reset_counters(self) -> None:
        with self._count_lock:
            self.request_count.clear()

    def _count(self, path: str) -> None:
        with self._count_lock:
            self.request_count[path] += 1

    # -- request handling --------------------------------------------------- #

    _ROUTES: list[_Route] = [
        ("GET PUT DELETE", re.compile(r"/v1/kv/(?P<key>.*)"), "_kv", True),
        ("GET", re.compile(r"/v1/health/service/(?P<name>[^/]+)"), "_health_service", True),
        ("GET", re.compile(r"/v1/catalog/services"), "_catalog_services", True),
        ("GET", re.compile(r"/v1/catalog/service/(?P<name>[^/]+)"), "_catalog_service", True),
        ("GET", re.compile(r"/v1/catalog/datacenters"), "_catalog_datacenters", False),
        ("PUT", re.compile(r"/v1/catalog/register"), "_catalog_register", True),
        ("PUT", re.compile(r"/v1/catalog/deregister"), "_catalog_deregister", True),
        ("PUT", re.compile(r"/v1/agent/service/register"), "_agent_service_register", True),
        ("PUT", re.compile(r"/v1/agent/service/deregister/(?P<sid>[^/]+)"), "_agent_service_deregister", True),
        ("PUT", re.compile(r"/v1/agent/check/(?P<op>pass|warn|fail|update)/(?P<cid>[^/]+)"), "_agent_check", True),
        ("GET", re.compile(r"/v1/agent/self"), "_agent_self", True),
        ("GET", re.compile(r"/v1/status/leader"), "_status_leader", False),
        ("GET", re.compile(r"/v1/status/peers"), "_status_peers", False),
    ]

    def _handle(self, server: _Server, method: str, path: str, query, headers, body: bytes) -> _Response:
        for methods, pattern, handler_name, needs_acl in self._ROUTES:
            m = pattern.fullmatch(path)
            if not m:
                continue
            allowed = methods.split()
            if method == "HEAD" and "GET" in allowed:
                method = "GET"
            if method not in allowed:
                raise ApiError(405, f"method {method} not allowed", {"Allow": ", ".join(allowed)})
            dc = _one(query, "dc")
            if dc and dc != DATACENTER:
                raise ApiError(500, "No path to datacenter")
            if needs_acl:
                self._check_acl(query, headers)
            if method == "GET":
                if _flag(query, "stale") and _flag(query, "consistent"):
                    raise ApiError(400, "Cannot specify ?stale with ?consistent, conflicting semantics.")
                if not self.leader and not _flag(query, "stale") and handler_name not in _LEADERLESS:
                    raise ApiError(500, "No cluster leader")
            elif not self.leader and handler_name not in _LEADERLESS:
                raise ApiError(500, "No cluster leader")
            kwargs = {k: unquote(v) for k, v in m.groupdict().items()}
            return getattr(self, handler_name)(server, method, query, body, **kwargs)
        raise ApiError(404, "404 page not found")

    def _check_acl(self, query, headers) -> None:
        if not self.token:
            return  # ACLs disabled: any token (or none) is accepted
        presented = _one(query, "token") or headers.get("X-Consul-Token") or ""
        if not presented:
            auth = headers.get("Authorization") or ""
            if auth[:7].lower() == "bearer ":
                presented = auth[7:].strip()
        if not presented:
            # No token -> the anonymous token, which a default-deny policy refuses.
            raise ApiError(403, "Permission denied")
        if presented != self.token:
            raise ApiError(403, "ACL not found")

    # -- blocking queries --------------------------------------------------- #

    def _blocking(
        self,
        server: _Server,
        query,
        current_index: Callable[[], int],
        build: Callable[[int], _Response],
    ) -> _Response:
        """Run a read as a blocking query (https://developer.hashicorp.com/consul/api-docs/features/blocking).

        ``current_index()`` is the X-Consul-Index the resource would be served
        with right now; the query returns as soon as it exceeds ``?index``, or
        after ``?wait`` (+ up to wait/16 jitter).  ``build(index)`` renders the
        reply.  Both are called with the state lock held.
        """
        raw_index = _one(query, "index")
        min_index = 0
        if raw_index not in (None, ""):
            try:
                min_index = int(raw_index)
                if min_index < 0:
                    raise ValueError
            except ValueError:
                raise ApiError(400, "Invalid index") from None
        wait = DEFAULT_WAIT
        raw_wait = _one(query, "wait")
        if raw_wait not in (None, ""):
            try:
                wait = parse_go_duration(raw_wait)
            except ValueError:
                raise ApiError(400, "Invalid wait time") from None
            if wait <= 0:
                wait = DEFAULT_WAIT
            wait = min(wait, MAX_WAIT)
        state = self._state
        with state.cond:
            if min_index > 0:
                if self.jitter:
                    wait += random.uniform(0, wait / 16)
                deadline = time.monotonic() + wait
                state.blocked += 1
                state.cond.notify_all()  # for wait_for_blocked()
                try:
                    while current_index() <= min_index:
                        if server.stopping.is_set():
                            raise _Abort
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            break
                        state.cond.wait(remaining)
                finally:
                    state.blocked -= 1
            if server.stopping.is_set():
                raise _Abort
            response = build(current_index())
        response.headers.setdefault("X-Consul-KnownLeader", "true" if self.leader else "false")
        response.headers.setdefault("X-Consul-LastContact", "0")
        response.headers.setdefault(
            "X-Consul-Effective-Consistency",
            "stale" if _flag(query, "stale") else "consistent" if _flag(query, "consistent") else "leader",
        )
        return response

    @staticmethod
    def _json(payload: Any, query, status: int = 200, index: int | None = None) -> _Response:
        if "pretty" in query:
            text = json.dumps(payload, indent=4)
        else:
            text = json.dumps(payload, separators=(",", ":"))
        headers = {"X-Consul-Index": str(index)} if index is not None else {}
        return _Response(status, text.encode(), "application/json", headers)

    # -- /v1/kv ------------------------------------------------------------- #

    @staticmethod
    def _kv_view(key: str, e: dict[str, Any]) -> dict[str, Any]:
        view: dict[str, Any] = {
            "CreateIndex": e["CreateIndex"],
            "ModifyIndex": e["ModifyIndex"],
            "LockIndex": e["LockIndex"],
            "Key": key,
            "Flags": e["Flags"],
            "Value": base64.b64encode(e["Value"]).decode() if e["Value"] else None,
        }
        if e["Session"]:
            view["Session"] = e["Session"]
        return view

    def _kv(self, server: _Server, method: str, query, body: bytes, key: str) -> _Response:
        if method == "GET":
            return self._kv_get(server, query, key)
        for name in ("acquire", "release"):
            session = _one(query, name)
            if session:
                raise ApiError(500, f'invalid session "{session}" (consul emulator: sessions are not implemented)')
        if method == "PUT":
            return self._kv_put(query, body, key)
        return self._kv_delete(query, key)

    def _kv_get(self, server: _Server, query, key: str) -> _Response:
        keys_only = _flag(query, "keys")
        recurse = _flag(query, "recurse") or keys_only
        raw = _flag(query, "raw") and not recurse
        separator = _one(query, "separator") or ""
        state = self._state

        def current_index() -> int:
            # The last write affecting this key/prefix; for a key or prefix
            # with no history, the index of the last KV write anywhere (so,
            # as in Consul, such queries may also wake for unrelated writes).
            watch = state.kv_watch_index(key, recurse)
            return watch if watch > 0 else max(1, state.kv_table_index)

        def build(index: int) -> _Response:
            if not recurse:
                entry = state.kv.get(key)
                if entry is None:
                    return _Response(404, b"", None, {"X-Consul-Index": str(index)})
                if raw:
                    return _Response(
                        200,
                        entry["Value"],
                        "text/plain",
                        {"X-Consul-Index": str(index), "X-Content-Type-Options": "nosniff"},
                    )
                return self._json([self._kv_view(key, entry)], query, index=index)
            matched = sorted(k for k in state.kv if k.startswith(key))
            if not matched:
                return _Response(404, b"", None, {"X-Consul-Index": str(index)})
            if keys_only:
                listed: list[str] = []
                seen: set[str] = set()
                for k in matched:
                    if separator:
                        rest = k[len(key):]
                        cut = rest.find(separator)
                        if cut >= 0:
                            k = key + rest[: cut + len(separator)]
                    if k not in seen:
                        seen.add(k)
                        listed.append(k)
                return self._json(listed, query, index=index)
            return self._json([self._kv_view(k, state.kv[k]) for k in matched], query, index=index)

        return self._blocking(server, query, current_index, build)

    @staticmethod
    def _uint_param(query, name: str) -> int | None:
        raw = _one(query, name)
        if raw is None:
            return None
        try:
            value = int(raw)
            if value < 0 or value >= 2**64:
                raise ValueError
        except ValueError:
            raise ApiError(400, f"Invalid {name} index" if name == "cas" else f"Invalid {name}") from None
        return value

    def _kv_put(self, query, body: bytes, key: str) -> _Response:
        if not key:
            raise ApiError(400, "Missing key name")
        if len(body) > MAX_VALUE_SIZE:
            raise ApiError(413, f"Request body({len(body)} bytes) too large, max size: {MAX_VALUE_SIZE} bytes.")
        flags = self._uint_param(query, "flags") or 0
        cas = self._uint_param(query, "cas")
        with self._state.cond:
            ok = self._state.kv_put(key, body, flags, cas)
        return self._json(ok, query)

    def _kv_delete(self, query, key: str) -> _Response:
        recurse = _flag(query, "recurse")
        if not key and not recurse:
            raise ApiError(400, "Missing key name")
        cas = None if recurse else self._uint_param(query, "cas")
        with self._state.cond:
            ok = self._state.kv_delete(key, recurse, cas)
        return self._json(ok, query)

    # -- /v1/health, /v1/catalog reads --------------------------------------- #

    @staticmethod
    def _node_view(node: dict[str, Any]) -> dict[str, Any]:
        return {k: node[k] for k in ("ID", "Node", "Address", "Datacenter", "TaggedAddresses", "Meta",
                                     "CreateIndex", "ModifyIndex")}

    @staticmethod
    def _service_view(svc: dict[str, Any]) -> dict[str, Any]:
        view = {k: svc[k] for k in ("ID", "Service", "Tags", "Address", "Meta", "Port", "Weights",
                                    "EnableTagOverride", "CreateIndex", "ModifyIndex")}
        if svc["TaggedAddresses"]:
            view["TaggedAddresses"] = svc["TaggedAddresses"]
        return view

    def _health_service(self, server: _Server, method: str, query, body: bytes, name: str) -> _Response:
        tags = [t for t in query.get("tag", []) if t]
        passing = _flag(query, "passing")
        state = self._state

        def build(index: int) -> _Response:
            entries = []
            for node, svc in state.service_instances(name, tags):
                checks = state.checks_for(node["Node"], svc["ID"])
                # "?passing ... return only nodes with all checks in the passing state"
                if passing and any(c["Status"] != "passing" for c in checks):
                    continue
                entries.append({"Node": self._node_view(node), "Service": self._service_view(svc), "Checks": checks})
            return self._json(entries, query, index=index)

        return self._blocking(server, query, lambda: state.service_report_index(name), build)

    def _catalog_service(self, server: _Server, method: str, query, body: bytes, name: str) -> _Response:
        tags = [t for t in query.get("tag", []) if t]
        state = self._state

        def build(index: int) -> _Response:
            entries = []
            for node, svc in state.service_instances(name, tags):
                entries.append(
                    {
                        "ID": node["ID"],
                        "Node": node["Node"],
                        "Address": node["Address"],
                        "Datacenter": node["Datacenter"],
                        "TaggedAddresses": node["TaggedAddresses"],
                        "NodeMeta": node["Meta"],
                        "ServiceID": svc["ID"],
                        "ServiceName": svc["Service"],
                        "ServiceTags": svc["Tags"],
                        "ServiceAddress": svc["Address"],
                        "ServiceTaggedAddresses": svc["TaggedAddresses"],
                        "ServiceWeights": svc["Weights"],
                        "ServiceMeta": svc["Meta"],
                        "ServicePort": svc["Port"],
                        "ServiceEnableTagOverride": svc["EnableTagOverride"],
                        "CreateIndex": svc["CreateIndex"],
                        "ModifyIndex": svc["ModifyIndex"],
                    }
                )
            return self._json(entries, query, index=index)

        return self._blocking(server, query, lambda: state.service_report_index(name), build)

    def _catalog_services(self, server: _Server, method: str, query, body: bytes) -> _Response:
        state = self._state

        def build(index: int) -> _Response:
            tags: dict[str, set[str]] = {}
            for svc in state.services.values():
                tags.setdefault(svc["Service"], set()).update(svc["Tags"])
            payload = {name: sorted(tags[name]) for name in sorted(tags)}
            return self._json(payload, query, index=index)

        return self._blocking(server, query, lambda: max(1, state.services_table_index), build)

    def _catalog_datacenters(self, server: _Server, method: str, query, body: bytes) -> _Response:
        return self._json([DATACENTER], query)

    # -- /v1/catalog writes ------------------------------------------------- #

    @staticmethod
    def _decode(body: bytes) -> Any:
        if not body.strip():
            return {}
        try:
            return json.loads(body)
        except ValueError as err:
            raise ApiError(400, f"Request decode failed: {err}") from None

    @staticmethod
    def _check_dc(value: Any) -> None:
        if value and value != DATACENTER:
            raise ApiError(500, "No path to datacenter")

    _CHECK_FIELDS = ("Node", "CheckID", "ID", "Name", "Status", "Notes", "Output", "ServiceID", "Type", "Definition")

    def _normalise_check(self, raw: Any, *, snake: bool) -> dict[str, Any]:
        chk = _fields(raw, self._CHECK_FIELDS, snake=snake, what="Check")
        chk["CheckID"] = _expect(chk.get("CheckID") or chk.pop("ID", None), str, "CheckID", "")
        status = _expect(chk.get("Status"), str, "Status", "")
        if status and status not in HEALTH_STATES:
            raise ApiError(400, f'Invalid check status: "{status}"')
        return chk

    def _catalog_register(self, server: _Server, method: str, query, body: bytes) -> _Response:
        payload = _fields(
            self._decode(body),
            ("ID", "Node", "Address", "Datacenter", "TaggedAddresses", "NodeMeta", "Service", "Check", "Checks",
             "SkipNodeUpdate"),
        )
        self._check_dc(payload.get("Datacenter"))
        node = _expect(payload.get("Node"), str, "Node", "")
        if not node:
            raise ApiError(400, "Must provide node")
        address = _expect(payload.get("Address"), str, "Address", "")
        if not address and not payload.get("SkipNodeUpdate"):
            raise ApiError(400, "Must provide address")
        reg: dict[str, Any] = {
            "ID": _expect(payload.get("ID"), str, "ID", ""),
            "Node": node,
            "Address": address,
            "TaggedAddresses": _str_map(payload.get("TaggedAddresses"), "TaggedAddresses"),
            "NodeMeta": _str_map(payload.get("NodeMeta"), "NodeMeta"),
            "SkipNodeUpdate": bool(payload.get("SkipNodeUpdate")),
        }
        if payload.get("Service") is not None:
            svc = _fields(
                payload["Service"],
                ("ID", "Service", "Tags", "Address", "Meta", "Port", "Weights", "EnableTagOverride",
                 "TaggedAddresses"),
                what="Service",
            )
            name = _expect(svc.get("Service"), str, "Service.Service", "")
            if not name:
                raise ApiError(400, "Must provide service name")
            reg["Service"] = {
                "ID": _expect(svc.get("ID"), str, "Service.ID", "") or name,
                "Service": name,
                "Tags": _str_list(svc.get("Tags"), "Service.Tags"),
                "Address": _expect(svc.get("Address"), str, "Service.Address", ""),
                "Meta": _str_map(svc.get("Meta"), "Service.Meta"),
                "Port": _expect(svc.get("Port"), int, "Service.Port", 0),
                "Weights": _weights(svc.get("Weights")),
                "EnableTagOverride": bool(svc.get("EnableTagOverride")),
                "TaggedAddresses": _expect(svc.get("TaggedAddresses"), dict, "Service.TaggedAddresses", {}),
            }
        checks = []
        if payload.get("Check") is not None:
            checks.append(payload["Check"])
        checks.extend(_expect(payload.get("Checks"), list, "Checks", []))
        reg["Checks"] = []
        for raw in checks:
            chk = self._normalise_check(raw, snake=False)
            chk["CheckID"] = chk["CheckID"] or _expect(chk.get("Name"), str, "Name", "")
            if not chk["CheckID"]:
                raise ApiError(400, "Must provide check ID or name")
            if chk.get("Node") and chk["Node"] != node:
                raise ApiError(400, "Check node does not match node")
            reg["Checks"].append(chk)
        with self._state.cond:
            self._state.register(reg)
        return self._json(True, query)

    def _catalog_deregister(self, server: _Server, method: str, query, body: bytes) -> _Response:
        payload = _fields(self._decode(body), ("Node", "Datacenter", "ServiceID", "CheckID"))
        self._check_dc(payload.get("Datacenter"))
        node = _expect(payload.get("Node"), str, "Node", "")
        if not node:
            raise ApiError(400, "Must provide node")
        with self._state.cond:
            self._state.deregister(
                node,
                _expect(payload.get("ServiceID"), str, "ServiceID", "") or None,
                _expect(payload.get("CheckID"), str, "CheckID", "") or None,
            )
        return self._json(True, query)

    # -- /v1/agent (registers on the emulator's own node, synchronously) ---- #

    def _agent_service_register(self, server: _Server, method: str, query, body: bytes) -> _Response:
        svc = _fields(
            self._decode(body),
            ("ID", "Name", "Tags", "Address", "Meta", "Port", "Weights", "EnableTagOverride", "TaggedAddresses",
             "Check", "Checks"),
            snake=True,
        )
        name = _expect(svc.get("Name"), str, "Name", "")
        if not name:
            raise ApiError(400, "Missing service name")
        sid = _expect(svc.get("ID"), str, "ID", "") or name
        raw_checks = ([svc["Check"]] if svc.get("Check") else []) + _expect(svc.get("Checks"), list, "Checks", [])
        checks = []
        for i, raw in enumerate(raw_checks, start=1):
            chk = self._normalise_check(raw, snake=True)
            if not chk["CheckID"]:
                chk["CheckID"] = f"service:{sid}" if len(raw_checks) == 1 else f"service:{sid}:{i}"
            chk.setdefault("Name", f"Service '{name}' check")
            chk["ServiceID"] = sid
            checks.append(chk)
        state = self._state
        reg = {
            "Node": state.node_name,
            "Address": state.node_address,
            "SkipNodeUpdate": True,
            "Service": {
                "ID": sid,
                "Service": name,
                "Tags": _str_list(svc.get("Tags"), "Tags"),
                "Address": _expect(svc.get("Address"), str, "Address", ""),
                "Meta": _str_map(svc.get("Meta"), "Meta"),
                "Port": _expect(svc.get("Port"), int, "Port", 0),
                "Weights": _weights(svc.get("Weights"), snake=True),
                "EnableTagOverride": bool(svc.get("EnableTagOverride")),
                "TaggedAddresses": _expect(svc.get("TaggedAddresses"), dict, "TaggedAddresses", {}),
            },
            "Checks": checks,
        }
        with state.cond:
            if "replace-existing-checks" in query:
                keep = {c["CheckID"] for c in checks}
                for (n, cid), c in list(state.checks.items()):
                    if n == state.node_name and c["ServiceID"] == sid and cid not in keep:
                        state.deregister(n, None, cid)
            state.register(reg)
        return _Response(200, b"", None)

    def _agent_service_deregister(self, server: _Server, method: str, query, body: bytes, sid: str) -> _Response:
        # "If the service does not exist, no action is taken."
        state = self._state
        with state.cond:
            if (state.node_name, sid) in state.services:
                state.deregister(state.node_name, sid, None)
        return _Response(200, b"", None)

    def _agent_check(self, server: _Server, method: str, query, body: bytes, op: str, cid: str) -> _Response:
        if op == "update":
            upd = _fields(self._decode(body), ("Status", "Output"))
            status = _expect(upd.get("Status"), str, "Status", "")
            if status not in HEALTH_STATES:
                raise ApiError(400, f'Invalid check status: "{status}"')
            output = _expect(upd.get("Output"), str, "Output", "")
        else:
            status = {"pass": "passing", "warn": "warning", "fail": "critical"}[op]
            output = _one(query, "note") or ""
        state = self._state
        with state.cond:
            if not state.update_check(state.node_name, cid, status, output):
                raise ApiError(404, f'Unknown check ID "{cid}". '
                               "Ensure that the check ID is passed, not the check name.")
        return _Response(200, b"", None)

    def _agent_self(self, server: _Server, method: str, query, body: bytes) -> _Response:
        state = self._state
        return self._json(
            {
                "Config": {
                    "Datacenter": DATACENTER,
                    "NodeName": state.node_name,
                    "NodeID": state.node_id,
                    "Server": True,
                    "Version": "emulator",
                },
                "Member": {"Name": state.node_name, "Addr": state.node_address, "Port": 8301, "Status": 1},
            },
            query,
        )

    # -- /v1/status --------------------------------------------------------- #

    def _status_leader(self, server: _Server, method: str, query, body: bytes) -> _Response:
        return self._json(self.leader or "", query)

    def _status_peers(self, server: _Server, method: str, query, body: bytes) -> _Response:
        return self._json([self.leader] if self.leader else [], query)


@contextlib.contextmanager
def consul_emulator(token: str | None = None, **kwargs: Any) -> Iterator[ConsulEmulator]:
    """Run a ``ConsulEmulator`` for the duration of the ``with`` block."""
    emu = ConsulEmulator(token=token, **kwargs)
    emu.start()
    try:
        yield emu
    finally:
        emu.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Consul HTTP API emulator (for tests)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8500, help="0 picks a free port (printed on start)")
    parser.add_argument("--token", default=None, help="require this ACL token on every request")
    parser.add_argument("--no-jitter", action="store_true", help="do not add wait/16 jitter to blocking queries")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = parser.parse_args(argv)

    emu = ConsulEmulator(token=args.token, host=args.host, port=args.port, jitter=not args.no_jitter,
                         verbose=args.verbose)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    emu.start()
    print(f"consul emulator listening on {emu.addr}", flush=True)
    try:
        done.wait()
    finally:
        emu.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
