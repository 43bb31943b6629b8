"""ConsulSource: the loop of each blocking query, the source's status, the ACL token."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import threading
import time
from dataclasses import dataclass
from typing import Any

from confsync.errors import ConfigError
from confsync.sources import ABSENT, Dep, Functions, Missing, Sink
from confsync.sources.consul.client import MAX_THREADS, Refused, Unavailable, abort, connect, read
from confsync.sources.consul.kv import KV_KINDS, Snapshot, common_prefix, derive, need
from confsync.sources.consul.options import DEFAULT_ADDRESS, ConsulOptions, env_path, parse_address

log = logging.getLogger(__name__)

# consul-template rate-limits every watch to one request per ~100 ms (consul-template#1279).
MIN_INTERVAL = 0.1
# Back-off after errors: a random delay up to 0.5 s, 1 s, 2 s… capped (full jitter, so that many
# polls failing together do not come back together).
BACKOFF_MULTIPLIER, BACKOFF_MIN, BACKOFF_MAX = 0.5, 0.1, 30.0
# A KV reply with more entries than this is logged: every change under the prefix costs a read
# of all of them, and a narrower layout (the watched keys under one folder) would be cheaper.
LARGE_PREFIX = 10_000
# close(): how long to keep aborting in-flight requests before giving up on the threads.
CLOSE_GRACE = 2.0


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
        self._token_file = options.token_file or env_path("CONSUL_HTTP_TOKEN_FILE")
        self._token_cache: tuple[Any, str | None] = (None, None)
        self._watches: dict[Dep, _Watch] = {}  # one poll per service dependency
        self._kv: _Watch | None = None  # the one poll of every KV dependency, its dep the prefix
        self._kv_deps: dict[Dep, Any] = {}  # KV dependency → the value last pushed (or _UNSET)
        self._kv_view: Snapshot | Missing | None = None  # the KV poll's last answer
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

        self._client = connect(self.options, self.scheme, self.host, self.port, self._conns)
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
        if w is not None and need(dep).startswith(w.dep.path):
            # Covered: known at once from the last answer, else with the poll's next answer.
            if w.known and w not in self._failing and self._kv_view is not None:
                self._deliver(dep, self._kv_view)
            return
        self._restart_kv(common_prefix(need(d) for d in self._kv_deps))

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

    def _spread(self, view: Snapshot | Missing) -> None:
        """The KV poll's answer → each KV dependency's value, pushed where it changed."""
        self._kv_view = view
        if isinstance(view, Snapshot) and len(view.keys) > LARGE_PREFIX and not self._kv_warned:
            self._kv_warned = True
            log.warning("consul source %s: the KV prefix %r holds %d keys, all read again on every change "
                        "under it; keeping the watched keys under one folder would make it cheaper",
                        self.name, self._kv.dep.path if self._kv else "", len(view.keys))
        for dep in list(self._kv_deps):
            self._deliver(dep, view)

    def _deliver(self, dep: Dep, view: Snapshot | Missing) -> None:
        value = view if isinstance(view, Missing) else derive(dep, view)
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
            except Refused as exc:
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
            retry=tenacity.retry_if_exception_type(Unavailable),
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
            abort(conn)  # frees the worker now rather than at the end of its wait

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
            raise Unavailable(f"cannot read token file {self._token_file}: "
                               f"{getattr(exc, 'strerror', None) or type(exc).__name__}") from None
        return self._token_cache[1]

    # -- the worker-thread side ---------------------------------------------------------------

    def _in_thread(self, w: _Watch, index: int, wait: float, token: str | None) -> tuple[int, Any]:
        ident = threading.get_ident()
        self._busy.add(ident)
        w.thread = ident
        try:
            if w.stopped:
                raise Unavailable("stopped")
            return read(self._client, self.options, w.dep, index, wait, token, self.addr)
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
                abort(conn)
            await asyncio.sleep(0.01)
        if self._busy:
            log.warning("consul source %s: %d request(s) still in flight at close", self.name, len(self._busy))
        self._executor.shutdown(wait=False, cancel_futures=True)


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
