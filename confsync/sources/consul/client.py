"""Talking to Consul, in worker threads: one request → (X-Consul-Index, value), library errors
mapped to `Unavailable` (the source is down) or `Refused` (this dependency has no value); and the
means to abort a parked long poll from another thread."""

from __future__ import annotations

import socket
import threading
from typing import Any

from confsync.sources import Dep
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
    client = consul.Consul(host=host, port=port, scheme=scheme, dc=options.datacenter,
                           consistency=options.consistency, verify=verify, cert=cert,
                           connections_timeout=options.timeout)
    client.token = None  # py-consul prefers CONSUL_HTTP_TOKEN to its argument: ours goes per request
    adapter = tracking_adapter(conns)
    client.http.session.mount("http://", adapter)
    client.http.session.mount("https://", adapter)
    return client


def read(client: Any, options: ConsulOptions, dep: Dep, index: int, wait: float, token: str | None,
          addr: str) -> tuple[int, Any]:
    """One request for `dep`, blocking while Consul holds it → (X-Consul-Index, value)."""
    import requests
    from consul import exceptions as consul

    wait_arg = f"{max(1, round(wait * 1000))}ms" if index else None
    try:
        raw_index, data = _query(client, options, dep, index or None, wait_arg, token)
    except consul.ACLPermissionDenied as exc:
        if "acl not found" in str(exc).lower():
            raise Unavailable("Consul does not know the ACL token (ACL not found)") from None
        raise Refused("permission denied" + ("" if token else " (no ACL token configured)")) from None
    except (consul.BadRequest, consul.ClientError) as exc:
        if str(exc).startswith("429"):
            raise Unavailable(f"Consul is rate-limiting us: {_brief(exc)}") from None
        raise Refused(f"refused by Consul: {_brief(exc)}") from None
    except consul.ConsulException as exc:
        raise Unavailable(f"Consul answered {_brief(exc)}") from None
    except requests.RequestException as exc:
        raise Unavailable(f"cannot reach Consul at {addr}: {_network_reason(exc)}", str(exc)) from None
    try:
        new_index = int(raw_index)
    except (TypeError, ValueError):
        raise Unavailable("Consul sent no valid X-Consul-Index") from None
    return new_index, _value(dep, data)


def _query(client: Any, options: ConsulOptions, dep: Dep, index: int | None, wait: str | None,
           token: str | None) -> Any:
    dc = options.datacenter
    if dep.kind == "kv":  # the one KV poll: everything under the prefix
        return client.kv.get(dep.path, index=index, wait=wait, recurse=True, token=token, dc=dc)
    if dep.kind == "services":
        return client.catalog.services(index=index, wait=wait, token=token, dc=dc)
    return _health(client, options, dep, index, wait, token)


def _health(client: Any, options: ConsulOptions, dep: Dep, index: int | None, wait: str | None,
            token: str | None) -> Any:
    """/v1/health/service through py-consul's HTTP layer: its `health.service()` has no
    `consistency` argument, and `stale` matters most for these reads."""
    from consul.callback import CB

    params: list[tuple[str, Any]] = [("index", index), ("wait", wait)] if index else []
    args = dict(dep.params)
    if args.get("passing"):
        params.append(("passing", "1"))
    if args.get("tag"):
        params.append(("tag", args["tag"]))
    if options.datacenter:
        params.append(("dc", options.datacenter))
    if options.consistency != "default":
        params.append((options.consistency, "1"))
    return client.http.get(CB.json(index=True), f"/v1/health/service/{dep.path}", params=params,
                           headers=client.prepare_headers(token))


def _value(dep: Dep, data: Any) -> Any:
    """A reply's data → the plain dict / list templates get, or the KV poll's snapshot (built
    here, off the loop thread)."""
    if dep.kind == "kv":
        values = {entry["Key"]: entry.get("Value") for entry in data or []}
        return Snapshot(sorted(values), values)
    if dep.kind == "services":
        return {name: sorted(tags or []) for name, tags in sorted((data or {}).items())}
    return sorted((_instance(e) for e in data or []), key=lambda i: (i["node"], i["id"]))


def _instance(entry: dict[str, Any]) -> dict[str, Any]:
    node, svc = entry.get("Node") or {}, entry.get("Service") or {}
    return {
        "address": svc.get("Address") or node.get("Address") or "",
        "port": svc.get("Port") or 0,
        "node": node.get("Node") or "",
        "tags": list(svc.get("Tags") or []),
        "meta": dict(svc.get("Meta") or {}),
        "id": svc.get("ID") or "",
    }


def _brief(exc: BaseException) -> str:
    """The first line of a Consul error (status and body), kept short and stable for the logs."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]


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
