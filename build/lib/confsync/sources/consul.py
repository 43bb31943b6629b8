"""The `consul` source: Consul's KV store and service catalog, followed with blocking queries.

Changes are followed with long polls ("blocking queries", https://developer.hashicorp.com/consul/
api-docs/features/blocking): a read with `index` = the last `X-Consul-Index` and a `wait`, which
Consul holds until the resource changes or the wait ends.

All KV dependencies (key, tree, ls) share ONE poll: a recursive read of the longest common prefix
of the paths they need, cut back to a "/" boundary (the whole store if nothing better), and each
dependency's value is derived from that one reply; only values that changed are pushed. One poll
per dependency would cost a thread and a TCP connection each, and a Consul agent accepts only 200
connections per client IP by default (`limits.http_max_conns_per_client`). A watch outside the
prefix widens it: the poll restarts with a plain read, which is current by definition, so nothing
is missed. Each service dependency keeps its own poll (distinct endpoints).

The docs' implementation rules are followed: an index that goes backwards restarts the loop at 0,
an index below 1 is taken as 1, a reply with an unchanged index pushes nothing, and requests are
rate-limited so that a server answering at once cannot make us spin.

py-consul is blocking (requests), so each request runs in a worker thread of a dedicated pool,
one thread per poll in flight (1 + the number of services); the loop thread gets the result
through `run_in_executor`, which hands it over with `call_soon_threadsafe`. A parked long poll
cannot be cancelled from Python, so `unwatch`, a widening and `close` shut down the socket it
waits on: the thread returns at once.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import os
import random
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from confsync.config import Duration, RelPath
from confsync.errors import ConfigError
from confsync.sources import ABSENT, Dep, Functions, Missing, Sink

log = logging.getLogger(__name__)

# consul-template rate-limits every watch to one request per ~100 ms (consul-template#1279).
MIN_INTERVAL = 0.1
# Back-off after errors: a random delay up to 0.5 s, 1 s, 2 s… capped (full jitter, so that many
# polls failing together do not come back together).
BACKOFF_MULTIPLIER, BACKOFF_MIN, BACKOFF_MAX = 0.5, 0.1, 30.0
# Worker threads are created on demand, one per poll in flight (the KV poll, one per service);
# this only bounds a runaway, below Consul's default of 200 connections per client IP.
MAX_THREADS = 128
# A KV reply with more entries than this is logged: every change under the prefix costs a read
# of all of them, and a narrower layout (the watched keys under one folder) would be cheaper.
LARGE_PREFIX = 10_000
KV_KINDS = ("key", "tree", "ls")
# close(): how long to keep aborting in-flight requests before giving up on the threads.
CLOSE_GRACE = 2.0
DEFAULT_ADDRESS = "127.0.0.1:8500"


@dataclass(frozen=True)
class ConsulTLS:
    ca_file: RelPath | None = None  # default: CONSUL_CACERT, else the system's CAs
    cert_file: RelPath | None = None  # default: CONSUL_CLIENT_CERT
    key_file: RelPath | None = None  # default: CONSUL_CLIENT_KEY
    verify: bool | None = None  # default: CONSUL_HTTP_SSL_VERIFY, else true

    def __post_init__(self) -> None:
        if self.key_file and not self.cert_file:
            raise ValueError("tls.key_file needs tls.cert_file")


@dataclass(frozen=True)
class ConsulOptions:
    address: str | None = None  # default: CONSUL_HTTP_ADDR, else 127.0.0.1:8500
    token_file: RelPath | None = None  # default: CONSUL_HTTP_TOKEN_FILE, else CONSUL_HTTP_TOKEN
    datacenter: str | None = None
    consistency: Literal["default", "stale", "consistent"] = "default"
    tls: ConsulTLS = field(default_factory=ConsulTLS)
    wait: Duration = 60.0  # how long Consul holds each blocking query
    timeout: Duration = 10.0  # to connect, or for an answer beyond the blocking wait

    def __post_init__(self) -> None:
        if not 0 < self.wait <= 600:
            raise ValueError(f"wait must be more than 0 and at most 10m (Consul's limit), got {self.wait:g}s")
        if self.address is not None:
            parse_address(self.address)


def parse_address(address: str) -> tuple[str, str, int]:
    """`host:port` or `scheme://host:port` → (scheme, host, port), as Consul's own CLI reads it."""
    if "://" not in address:
        secure = os.environ.get("CONSUL_HTTP_SSL", "").lower() in ("1", "true")
        address = ("https://" if secure else "http://") + address
    url = urlsplit(address)
    if url.scheme not in ("http", "https"):
        raise ValueError(f"address {address!r}: only http:// and https:// are supported")
    try:
        port = url.port or (8501 if url.scheme == "https" else 8500)
    except ValueError:
        raise ValueError(f"address {address!r}: invalid port") from None
    if not url.hostname or url.path.strip("/"):
        raise ValueError(f"address {address!r}: expected host:port or scheme://host:port")
    return url.scheme, url.hostname, port


class ConsulFunctions(Functions):
    """`consul.key/tree/ls` read the KV store; `service` and `services` the catalog."""

    def service(self, name: str, tag: str | None = None, passing: bool = True) -> Any:
        """The instances of a service: dicts with address, port, node, tags, meta and id."""
        if tag is not None and not isinstance(tag, str):
            raise TypeError(f"{self._source}.service() expects tag to be a string, got {type(tag).__name__}")
        return self._lookup(self._dep("service", name, tag=tag, passing=bool(passing)), ABSENT)

    def services(self) -> Any:
        """Every service of the datacenter → its tags."""
        return self._lookup(self._dep("services", ""), ABSENT)


class _Unavailable(Exception):
    """Consul could not answer (down, 5xx, token unknown…): the source is down, retry with back-off.
    `detail` is the library's own text, for debug logs only."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.detail = detail


class _Refused(Exception):
    """Consul answered, but not with this dependency's value (ACL denial, bad request)."""


@dataclass(eq=False)
class _Watch:
    """The state of one dependency's blocking-query loop."""

    dep: Dep
    task: asyncio.Task[None] | None = None
    index: int = 0  # the X-Consul-Index to send; 0 = a plain read
    known: bool = False  # a value was pushed
    spins: int = 0  # replies in a row that came back early with nothing new
    refusals: int = 0  # refusals in a row
    last_start: float = -1e9
    thread: int | None = None  # the worker thread running its request, if any
    stopped: bool = False


@dataclass(frozen=True)
class _Snapshot:
    """One recursive KV read: every key under the polled prefix, sorted, and its raw value."""

    keys: list[str]
    values: dict[str, bytes | None]

    def under(self, prefix: str) -> Iterator[str]:
        """The keys starting with `prefix`, in order."""
        for key in self.keys[bisect.bisect_left(self.keys, prefix):]:
            if not key.startswith(prefix):
                return
            yield key


_UNSET: Any = object()  # a KV dependency whose value was not pushed yet


@dataclass
class _Reply:
    sent: int  # the index sent
    index: int  # the index received
    value: Any
    elapsed: float
    blocked: bool  # a blocking query (else a plain read)


class ConsulSource:
    Options = ConsulOptions
    functions = ConsulFunctions

    def __init__(self, name: str, options: ConsulOptions, sink: Sink) -> None:
        self.name = name
        self.options = options
        self.sink = sink
        self.wait = options.wait
        try:
            self.scheme, self.host, self.port = parse_address(
                options.address or os.environ.get("CONSUL_HTTP_ADDR") or DEFAULT_ADDRESS)
        except ValueError as exc:
            raise ConfigError(f"sources.{name}: CONSUL_HTTP_ADDR: {exc}") from None
        self.addr = f"{self.scheme}://{self.host}:{self.port}"
        self._token_file = options.token_file or _env_path("CONSUL_HTTP_TOKEN_FILE")
        self._token_cache: tuple[Any, str | None] = (None, None)
        self._watches: dict[Dep, _Watch] = {}  # one poll per service dependency
        self._kv: _Watch | None = None  # the one poll of every KV dependency, its dep the prefix
        self._kv_deps: dict[Dep, Any] = {}  # KV dependency → the value last pushed (or _UNSET)
        self._kv_view: _Snapshot | Missing | None = None  # the KV poll's last answer
        self._kv_warned = False
        self._failing: dict[_Watch, str] = {}
        self._down: str | None = None
        self._back = asyncio.Event()  # set (and replaced) when a failing poll gets an answer
        self._client: Any = None
        self._executor: Any = None
        self._busy: set[int] = set()  # worker threads inside a request
        self._conns: dict[int, Any] = {}  # worker thread → the HTTP connection it is using

    # -- the Source interface ---------------------------------------------------------------

    async def start(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._client = self._connect()
        self._executor = ThreadPoolExecutor(MAX_THREADS, thread_name_prefix=f"consul-{self.name}")
        log.debug("consul source %s: %s", self.name, self.addr)

    def watch(self, dep: Dep) -> None:
        if dep in self._watches or dep in self._kv_deps:
            return
        problem = _bad_dep(dep)
        if problem:
            self.sink.update(dep, Missing(problem))
            return
        if dep.kind in KV_KINDS:
            self._watch_kv(dep)
            return
        w = self._watches[dep] = _Watch(dep)
        if len(self._watches) == MAX_THREADS:
            log.warning("consul source %s: more than %d services watched; the polls beyond that wait for a "
                        "free thread", self.name, MAX_THREADS - 1)
        w.task = asyncio.create_task(self._follow(w), name=f"consul:{dep}")

    def unwatch(self, dep: Dep) -> None:
        if dep in self._kv_deps:
            del self._kv_deps[dep]
            if not self._kv_deps and self._kv:
                # The prefix is not narrowed while other KV dependencies remain: the next
                # widening recomputes it from those still watched.
                self._stop(self._kv)
                self._kv, self._kv_view = None, None
            return
        w = self._watches.pop(dep, None)
        if w:
            self._stop(w)

    async def close(self) -> None:
        watches, self._watches = list(self._watches.values()), {}
        if self._kv:
            watches.append(self._kv)
            self._kv, self._kv_deps = None, {}
        for w in watches:
            self._stop(w)
        await asyncio.gather(*(w.task for w in watches if w.task), return_exceptions=True)
        if self._executor:
            await self._drain()
        if self._client:
            self._client.http.session.close()

    # -- the KV poll ----------------------------------------------------------------------------

    def _watch_kv(self, dep: Dep) -> None:
        self._kv_deps[dep] = _UNSET
        w = self._kv
        if w is not None and _need(dep).startswith(w.dep.path):
            # Covered: known at once from the last answer, else with the poll's next answer.
            if w.known and w not in self._failing and self._kv_view is not None:
                self._deliver(dep, self._kv_view)
            return
        self._restart_kv(_common_prefix(_need(d) for d in self._kv_deps))

    def _restart_kv(self, prefix: str) -> None:
        """Poll `prefix` from now on. Watches arriving in one loop tick cost one request: the
        task has not run yet when the next one widens it again. The first request is a plain
        read of the current data, so no change made meanwhile is missed."""
        old, w = self._kv, _Watch(Dep(self.name, "kv", prefix))
        self._kv = w
        if old is not None:
            reason = self._failing.get(old)
            self._stop(old)
            if reason is not None:
                self._failing[w] = reason  # still down: source_up comes with the first answer
            log.debug("consul source %s: KV prefix %r → %r", self.name, old.dep.path, prefix)
        w.task = asyncio.create_task(self._follow(w), name=f"consul:kv:{prefix}")

    def _spread(self, view: _Snapshot | Missing) -> None:
        """The KV poll's answer → each KV dependency's value, pushed where it changed."""
        self._kv_view = view
        if isinstance(view, _Snapshot) and len(view.keys) > LARGE_PREFIX and not self._kv_warned:
            self._kv_warned = True
            log.warning("consul source %s: the KV prefix %r holds %d keys, all read again on every change "
                        "under it; keeping the watched keys under one folder would make it cheaper",
                        self.name, self._kv.dep.path if self._kv else "", len(view.keys))
        for dep in list(self._kv_deps):
            self._deliver(dep, view)

    def _deliver(self, dep: Dep, view: _Snapshot | Missing) -> None:
        value = view if isinstance(view, Missing) else _derive(dep, view)
        last = self._kv_deps[dep]
        if last is _UNSET or last != value:
            self._kv_deps[dep] = value
            self.sink.update(dep, value)

    # -- one poll's loop ---------------------------------------------------------------------

    async def _follow(self, w: _Watch) -> None:
        while True:
            await asyncio.sleep(self._pause(w))
            try:
                reply = await self._fetch(w)
            except _Refused as exc:
                self._healthy(w)
                w.refusals, w.index = w.refusals + 1, 0
                self._push(w, Missing(str(exc)))
                continue
            w.refusals = 0
            self._healthy(w)
            self._reply(w, reply)

    def _pause(self, w: _Watch) -> float:
        """How long to wait before the next request: the rate limit, stretched while the server
        keeps answering early with nothing new, or keeps refusing."""
        delay = MIN_INTERVAL
        if w.spins:
            delay = min(self.wait, MIN_INTERVAL * 2 ** w.spins)
        if w.refusals:
            delay = max(delay, random.uniform(0.5, 1.0) * min(self.wait, 2.0 ** w.refusals))
        return max(0.0, w.last_start + delay - time.monotonic())

    async def _fetch(self, w: _Watch) -> _Reply:
        """One read, retried with back-off while Consul is unavailable (reported down meanwhile)."""
        import tenacity

        retrying = tenacity.AsyncRetrying(
            retry=tenacity.retry_if_exception_type(_Unavailable),
            wait=tenacity.wait_random_exponential(multiplier=BACKOFF_MULTIPLIER, min=BACKOFF_MIN,
                                                  max=BACKOFF_MAX),
            before_sleep=lambda state: self._failed(w, state.outcome.exception() if state.outcome else None),
            sleep=self._backoff,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._request(w)
        raise AssertionError("unreachable: the retrying never stops")

    async def _backoff(self, seconds: float) -> None:
        """Sleep between retries, cut short when another poll found Consul back: changes made
        while it was down then arrive at once, not after the longest back-off."""
        try:
            await asyncio.wait_for(self._back.wait(), seconds)
        except TimeoutError:
            return
        await asyncio.sleep(random.uniform(0, MIN_INTERVAL))  # not all in the same instant

    async def _request(self, w: _Watch) -> _Reply:
        token = self._token()
        # After an error, a plain read: it tells at once whether Consul is back (a blocking query
        # would only tell at the end of its wait); its index is still compared with the known one.
        block = bool(w.index) and w not in self._failing
        # Client-side jitter on top of Consul's own (up to wait/16): polls started together drift apart.
        wait = self.wait * random.uniform(0.9, 1.0)
        sent, w.last_start = w.index, time.monotonic()
        loop = asyncio.get_running_loop()
        index, value = await loop.run_in_executor(
            self._executor, self._in_thread, w, sent if block else 0, wait, token)
        return _Reply(sent, index, value, time.monotonic() - w.last_start, block)

    def _reply(self, w: _Watch, reply: _Reply) -> None:
        index = max(1, reply.index)  # the docs: an index below 1 is a Consul bug; 0 would never block
        early = reply.blocked and reply.elapsed < self.wait / 2
        if reply.sent and index < reply.sent:
            # Consul lost or restored its state (the docs: reset to 0, i.e. restart with a plain read).
            log.info("consul %s: index went backwards (%d → %d); reading afresh", w.dep, reply.sent, index,
                     extra={"event": "consul_index_reset", "source": self.name})
            w.index, w.spins = 0, w.spins + 1 if early else 0
            self._push(w, reply.value)
            return
        if w.known and index == reply.sent:
            w.spins = w.spins + 1 if early else 0  # early with nothing new: a misbehaving server
            if w is self._kv and _UNSET in self._kv_deps.values():
                self._spread(reply.value)  # KV dependencies watched while Consul was down
            return
        log.debug("consul %s: index %d → %d", w.dep, reply.sent, index)
        w.index, w.spins = index, 0
        self._push(w, reply.value)

    def _push(self, w: _Watch, value: Any) -> None:
        if w.stopped:
            return
        w.known = True
        if w is self._kv:
            self._spread(value)
        else:
            self.sink.update(w.dep, value)

    def _stop(self, w: _Watch) -> None:
        w.stopped = True
        if w.task:
            w.task.cancel()
        self._failing.pop(w, None)
        thread = w.thread
        conn = self._conns.get(thread) if thread is not None else None
        if conn is not None:
            _abort(conn)  # frees the worker now rather than at the end of its wait

    # -- source status ------------------------------------------------------------------------

    def _failed(self, w: _Watch, exc: BaseException | None) -> None:
        if w.stopped:
            return
        reason = str(exc)
        log.debug("consul %s: %s", w.dep, getattr(exc, "detail", "") or reason)
        self._failing[w] = reason
        if reason != self._down:
            self._down = reason
            self.sink.source_status(self.name, False, reason)

    def _healthy(self, w: _Watch) -> None:
        if self._failing.pop(w, None) is None:
            return
        if self._failing:
            self._back.set()  # wake the others' back-off
            self._back = asyncio.Event()
        else:
            self._down = None
            self.sink.source_status(self.name, True)

    # -- the ACL token ------------------------------------------------------------------------

    def _token(self) -> str | None:
        """The token, re-read whenever its file changes (a rotated token is picked up)."""
        if self._token_file is None:
            return os.environ.get("CONSUL_HTTP_TOKEN") or None
        try:
            st = os.stat(self._token_file)
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
            if stamp != self._token_cache[0]:
                token = self._token_file.read_text(encoding="utf-8").strip() or None
                self._token_cache = (stamp, token)
        except (OSError, UnicodeDecodeError) as exc:
            raise _Unavailable(f"cannot read token file {self._token_file}: "
                               f"{getattr(exc, 'strerror', None) or type(exc).__name__}") from None
        return self._token_cache[1]

    # -- the worker-thread side ---------------------------------------------------------------

    def _connect(self) -> Any:
        import consul

        verify, cert = _tls_args(self.options.tls)
        host = f"[{self.host}]" if ":" in self.host else self.host
        client = consul.Consul(host=host, port=self.port, scheme=self.scheme, dc=self.options.datacenter,
                               consistency=self.options.consistency, verify=verify, cert=cert,
                               connections_timeout=self.options.timeout)
        client.token = None  # py-consul prefers CONSUL_HTTP_TOKEN to its argument: ours goes per request
        adapter = _tracking_adapter(self._conns)
        client.http.session.mount("http://", adapter)
        client.http.session.mount("https://", adapter)
        return client

    def _in_thread(self, w: _Watch, index: int, wait: float, token: str | None) -> tuple[int, Any]:
        ident = threading.get_ident()
        self._busy.add(ident)
        w.thread = ident
        try:
            if w.stopped:
                raise _Unavailable("stopped")
            return _read(self._client, self.options, w.dep, index, wait, token, self.addr)
        finally:
            w.thread = None
            self._conns.pop(ident, None)
            self._busy.discard(ident)

    async def _drain(self) -> None:
        """Abort the requests still in flight (long polls parked for up to `wait`), then let the
        threads go: close() takes milliseconds, not a minute."""
        deadline = time.monotonic() + CLOSE_GRACE
        while self._busy and time.monotonic() < deadline:
            for conn in list(self._conns.values()):
                _abort(conn)
            await asyncio.sleep(0.01)
        if self._busy:
            log.warning("consul source %s: %d request(s) still in flight at close", self.name, len(self._busy))
        self._executor.shutdown(wait=False, cancel_futures=True)


# -- reading (in worker threads) --------------------------------------------------------------


def _read(client: Any, options: ConsulOptions, dep: Dep, index: int, wait: float, token: str | None,
          addr: str) -> tuple[int, Any]:
    """One request for `dep`, blocking while Consul holds it → (X-Consul-Index, value)."""
    import requests
    from consul import exceptions as consul

    wait_arg = f"{max(1, round(wait * 1000))}ms" if index else None
    try:
        raw_index, data = _query(client, options, dep, index or None, wait_arg, token)
    except consul.ACLPermissionDenied as exc:
        if "acl not found" in str(exc).lower():
            raise _Unavailable("Consul does not know the ACL token (ACL not found)") from None
        raise _Refused("permission denied" + ("" if token else " (no ACL token configured)")) from None
    except (consul.BadRequest, consul.ClientError) as exc:
        if str(exc).startswith("429"):
            raise _Unavailable(f"Consul is rate-limiting us: {_brief(exc)}") from None
        raise _Refused(f"refused by Consul: {_brief(exc)}") from None
    except consul.ConsulException as exc:
        raise _Unavailable(f"Consul answered {_brief(exc)}") from None
    except requests.RequestException as exc:
        raise _Unavailable(f"cannot reach Consul at {addr}: {_network_reason(exc)}", str(exc)) from None
    try:
        new_index = int(raw_index)
    except (TypeError, ValueError):
        raise _Unavailable("Consul sent no valid X-Consul-Index") from None
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
        return _Snapshot(sorted(values), values)
    if dep.kind == "services":
        return {name: sorted(tags or []) for name, tags in sorted((data or {}).items())}
    return sorted((_instance(e) for e in data or []), key=lambda i: (i["node"], i["id"]))


def _derive(dep: Dep, view: _Snapshot) -> Any:
    """A KV dependency's value from the KV poll's snapshot: the str / dict / list templates get
    (or a Missing), exactly as a read of that key or prefix alone would give."""
    if dep.kind == "key":
        return _text(view.values[dep.path], dep.path) if dep.path in view.values else ABSENT
    prefix = _prefix(dep.path)
    if dep.kind == "tree":
        tree = {}
        for key in view.under(prefix):
            rel = key[len(prefix):]
            if rel and not rel.endswith("/"):  # "dir/" keys are folder markers, not values
                text = _text(view.values[key], key)
                if isinstance(text, Missing):
                    return text
                tree[rel] = text
        return tree
    # ls: the immediate children, as `?keys&separator=/` lists them ("dir/" → "dir")
    return sorted({key[len(prefix):].split("/", 1)[0] for key in view.under(prefix)} - {""})


def _need(dep: Dep) -> str:
    """What a KV dependency reads: a key, or every key under a folder."""
    return dep.path if dep.kind == "key" else _prefix(dep.path)


def _common_prefix(needs: Iterable[str]) -> str:
    """The prefix for the KV poll: the longest one common to all, cut back to a "/" boundary
    (so that the next key in the same folder does not widen it)."""
    common = os.path.commonprefix(list(needs))
    return common[:common.rfind("/") + 1]


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


def _text(value: bytes | None, key: str) -> str | Missing:
    if value is None:
        return ""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Missing(f"value of {key!r} is not UTF-8 text ({exc.reason} at byte {exc.start})")


def _prefix(path: str) -> str:
    return f"{path}/" if path else ""


def _bad_dep(dep: Dep) -> str | None:
    if dep.kind not in ("key", "tree", "ls", "service", "services"):
        return f"the consul source has no {dep.kind}()"
    if dep.kind in ("key", "service") and not dep.path:
        return f"{dep.kind}() needs a name"
    if any(ord(c) < 32 or c == "\x7f" for c in dep.path):
        return "the name contains a control character"
    if dep.kind == "service" and "/" in dep.path:
        return "a service name cannot contain '/'"
    return None


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


def _tls_args(tls: ConsulTLS) -> tuple[bool | str, str | tuple[str, str] | None]:
    """The TLS options (or Consul's own environment variables) → requests' `verify` and `cert`."""
    verify: bool | str = tls.verify if tls.verify is not None else \
        os.environ.get("CONSUL_HTTP_SSL_VERIFY", "true").lower() not in ("0", "false")
    ca = tls.ca_file or _env_path("CONSUL_CACERT")
    if verify and ca:
        verify = str(ca)
    cert_file = tls.cert_file or _env_path("CONSUL_CLIENT_CERT")
    key_file = tls.key_file or (_env_path("CONSUL_CLIENT_KEY") if not tls.cert_file else None)
    if cert_file and key_file:
        return verify, (str(cert_file), str(key_file))
    return verify, str(cert_file) if cert_file else None


def _env_path(name: str) -> Any:
    from pathlib import Path

    value = os.environ.get(name)
    return Path(value) if value else None


# -- aborting requests in flight ---------------------------------------------------------------


def _tracking_adapter(conns: dict[int, Any]) -> Any:
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


def _abort(conn: Any) -> None:
    sock = getattr(conn, "sock", None)
    if sock is None:
        return
    try:
        # The plain socket's shutdown, also for TLS: SSLSocket.shutdown would drop its SSL object
        # under the reading thread's feet. The reader then sees EOF and returns.
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass
