"""Talking to Consul, in worker threads: one request → (X-Consul-Index, value), library errors
mapped to `Unavailable` (the source is down) or `Refused` (this dependency has no value); and the
means to abort a parked long poll from another thread."""

from __future__ import annotations

import base64
import binascii
import json
import socket
import threading
from dataclasses import dataclass
from typing import Any

from confsync.sources import Dep
from confsync.sources.consul import catalog
from confsync.sources.consul import connect as ca
from confsync.sources.consul.functions import CONNECT_KINDS
from confsync.sources.consul.kv import Snapshot
from confsync.sources.consul.options import ConsulOptions, tls_args

# Worker threads are created on demand, one per poll in flight (the KV poll, one per service);
# this only bounds a runaway, below Consul's default of 200 connections per client IP.
MAX_THREADS = 128


class Unavailable(Exception):
    """Consul could not answer (down, 5xx, token unknown…): the source is down, retry with back-off.
    `detail` is the library's own text, for debug logs only."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.detail = detail


class Refused(Exception):
    """Consul answered, but not with this dependency's value (ACL denial, bad request)."""


def connect(options: ConsulOptions, scheme: str, host: str, port: int, conns: dict[int, Any]) -> Any:
    """A py-consul client whose connections are recorded in `conns` (see `tracking_adapter`)."""
    import consul

    verify, cert = tls_args(options.tls)
    host = f"[{host}]" if ":" in host else host
    client = consul.Consul(host=host, port=port, scheme=scheme, verify=verify, cert=cert,
                           connections_timeout=options.timeout)
    client.token = None  # py-consul prefers CONSUL_HTTP_TOKEN to its argument: ours goes per request
    adapter = tracking_adapter(conns)
    client.http.session.mount("http://", adapter)
    client.http.session.mount("https://", adapter)
    return client


@dataclass(frozen=True)
class Answer:
    """One reply: its data, and what its headers say about it (agent/http.go `setMeta`)."""

    index: int | None  # X-Consul-Index; None when missing (a proxy may strip it)
    value: Any  # the plain dict / list templates get, or the KV poll's snapshot
    filtered: bool  # X-Consul-Results-Filtered-By-ACLs (Consul >= 1.11, only sent for a real token)
    deny_by_default: bool  # X-Consul-Default-ACL-Policy: deny
    last_contact: float  # X-Consul-LastContact, seconds since the answering server heard from the leader
    known_leader: bool  # X-Consul-KnownLeader


def read(client: Any, options: ConsulOptions, dep: Dep, index: int, wait: float, token: str | None,
         addr: str, stale: bool) -> Answer:
    """One request for `dep`, blocking while Consul holds it. A thin GET through py-consul's HTTP
    layer (its URL, TLS and timeout handling), with a callback of our own: py-consul's drops the
    response headers that tell an ACL-filtered answer from a complete one."""
    import requests

    path, params = _request(client, options, dep, stale, token, addr)
    if index:
        params += [("index", str(index)), ("wait", f"{max(1, round(wait * 1000))}ms")]
    try:
        code, headers, body = client.http.get(lambda r: r, path, params=params, headers=client.prepare_headers(token))
    except requests.RequestException as exc:
        raise Unavailable(f"cannot reach Consul at {addr}: {_network_reason(exc)}", str(exc)) from None
    brief = f"{code} {_brief(str(body))}"
    if code == 403:
        if "acl not found" in str(body).lower():
            raise Unavailable("Consul does not know the ACL token (ACL not found)")
        raise Refused("permission denied" + ("" if token else " (no ACL token configured)"))
    if code == 500 and "no path to datacenter" in str(body).lower():
        # One call's dc= (or the source's datacenter) names a datacenter Consul does not know: this
        # dependency has no value; the source itself answers.
        raise Refused(f"Consul knows no datacenter {dict(params).get('dc', '')!r} (No path to datacenter)")
    if code == 429 or code >= 500:
        raise Unavailable(f"Consul answered {brief}" if code != 429 else f"Consul is rate-limiting us: {brief}")
    if code != 404 and not 200 <= code < 300:
        raise Refused(f"refused by Consul: {brief}")
    try:
        data = json.loads(body) if code != 404 and body else None
        value = _value(dep, data)
    except (ValueError, TypeError, AttributeError, binascii.Error) as exc:
        raise Unavailable(f"Consul sent a reply that is not what its API documents ({type(exc).__name__})") from None
    try:
        new_index: int | None = int(headers.get("X-Consul-Index"))
    except (TypeError, ValueError):
        new_index = None
    try:
        last_contact = int(headers.get("X-Consul-LastContact") or 0) / 1000
    except ValueError:
        last_contact = 0.0
    return Answer(new_index, value,
                  filtered=str(headers.get("X-Consul-Results-Filtered-By-ACLs", "")).lower() == "true",
                  deny_by_default=str(headers.get("X-Consul-Default-ACL-Policy", "")).lower() == "deny",
                  last_contact=last_contact,
                  known_leader=str(headers.get("X-Consul-KnownLeader", "true")).lower() != "false")


def _request(client: Any, options: ConsulOptions, dep: Dep, stale: bool, token: str | None,
             addr: str) -> tuple[str, list[tuple[str, str]]]:
    """The path and query of a read of `dep` (one KV poll: everything under its prefix)."""
    params: list[tuple[str, str]] = []
    scoped = dict(dep.params)
    if options.datacenter and "dc" not in scoped:
        params.append(("dc", options.datacenter))
    if dep.kind not in ("datacenters", "ca_roots"):
        # The source's namespace and partition, unless the call names its own (Consul Enterprise).
        if options.namespace and "ns" not in scoped and dep.kind not in ("node", "nodes"):
            params.append(("ns", options.namespace))
        if options.partition and "partition" not in scoped:
            params.append(("partition", options.partition))
    if options.consistency == "consistent":
        params.append(("consistent", ""))
    elif options.consistency == "stale" and stale:
        params.append(("stale", ""))
    if dep.kind == "kv":
        return f"/v1/kv/{dep.path}", params + [(k, scoped[k]) for k in ("dc", "ns", "partition") if k in scoped] + [
            ("recurse", "")]
    if dep.kind in CONNECT_KINDS:
        path, more = ca.request(dep)
        return path, params + more
    path, more = catalog.request(dep, _agent_node(client, token, addr) if dep.kind == "node" and not dep.path else "")
    return path, params + more


def _agent_node(client: Any, token: str | None, addr: str) -> str:
    """The local agent's node name, for node() without a name (as consul-template: Agent().NodeName())."""
    import requests

    try:
        code, _, body = client.http.get(lambda r: r, "/v1/agent/self", headers=client.prepare_headers(token))
    except requests.RequestException as exc:
        raise Unavailable(f"cannot reach Consul at {addr}: {_network_reason(exc)}", str(exc)) from None
    if code == 403:
        raise Refused("permission denied reading the local agent's node name (grant agent:read)")
    try:
        return str(json.loads(body)["Config"]["NodeName"]) if code == 200 else ""
    except (ValueError, TypeError, KeyError):
        return ""


def _value(dep: Dep, data: Any) -> Any:
    """A reply's data → the plain dict / list templates get, or the KV poll's snapshot (built
    here, off the loop thread)."""
    if dep.kind == "kv":
        values = {entry["Key"]: _b64(entry.get("Value")) for entry in data or []}
        return Snapshot(sorted(values), values)
    if dep.kind in CONNECT_KINDS:
        return ca.value(dep, data)
    return catalog.value(dep, data)


def _b64(value: str | None) -> bytes | None:
    return base64.b64decode(value, validate=True) if value is not None else None


def _brief(text: str) -> str:
    """The first line of a Consul error body, kept short and stable for the logs."""
    return text.strip().splitlines()[0][:200] if text.strip() else ""


def _network_reason(exc: BaseException) -> str:
    """A short, stable reason for a requests error: its own text repeats the URL with the index,
    and the kinds of "connection closed" vary while Consul restarts, which would log a new outage
    each time. "Refused" (nothing listens there) is worth telling apart: a wrong address."""
    import requests

    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS handshake failed"
    if isinstance(exc, requests.exceptions.Timeout):
        return "timed out"
    seen: set[int] = set()
    todo: list[Any] = [exc]
    while todo:  # the OSError is buried in urllib3's exception arguments
        cause = todo.pop()
        if id(cause) in seen or not isinstance(cause, BaseException):
            continue
        seen.add(id(cause))
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        todo += [cause.__cause__, cause.__context__, getattr(cause, "reason", None), *cause.args]
    return "connection failed"


# -- aborting requests in flight ---------------------------------------------------------------


def tracking_adapter(conns: dict[int, Any]) -> Any:
    """A requests adapter whose connections are recorded per thread, so that another thread can
    shut down the socket a long poll waits on; its pool holds a connection per poll."""
    import requests.adapters
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    def get_conn(base: Any) -> Any:
        def _get_conn(self: Any, timeout: float | None = None) -> Any:
            conn = base._get_conn(self, timeout)
            conns[threading.get_ident()] = conn
            return conn
        return _get_conn

    pools = {"http": type("TrackedPool", (HTTPConnectionPool,), {"_get_conn": get_conn(HTTPConnectionPool)}),
             "https": type("TrackedTLSPool", (HTTPSConnectionPool,), {"_get_conn": get_conn(HTTPSConnectionPool)})}

    class Adapter(requests.adapters.HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = pools

    return Adapter(pool_connections=1, pool_maxsize=MAX_THREADS)


def abort(conn: Any) -> None:
    sock = getattr(conn, "sock", None)
    if sock is None:
        return
    try:
        # The plain socket's shutdown, also for TLS: SSLSocket.shutdown would drop its SSL object
        # under the reading thread's feet. The reader then sees EOF and returns.
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass
