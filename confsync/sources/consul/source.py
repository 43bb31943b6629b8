"""ConsulSource: the loop of each blocking query, the source's status, the ACL token."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from confsync.errors import ConfigError
from confsync.sources import Dep, Missing, Sink
from confsync.sources.consul.client import MAX_THREADS, Answer, Refused, Unavailable, abort, connect, read
from confsync.sources.consul.functions import ConsulFunctions, bad_dep
from confsync.sources.consul.hidden import ACL_HIDDEN, View, empty, hidden
from confsync.sources.consul.kv import KV_KINDS, derive, need, poll_prefix
from confsync.sources.consul.options import DEFAULT_ADDRESS, ConsulOptions, env_path, parse_address
from confsync.sources.consul.pacing import MIN_INTERVAL, Pace, ServerWait

log = logging.getLogger(__name__)

# Back-off after errors: a random delay up to 0.5 s, 1 s, 2 s… capped (full jitter, so that many
# polls failing together do not come back together).
BACKOFF_MULTIPLIER, BACKOFF_MIN, BACKOFF_MAX = 0.5, 0.1, 30.0
# A KV reply with more entries than this is logged: every change under the prefix costs a read
# of all of them, and a narrower layout (the watched keys under one folder) would be cheaper.
LARGE_PREFIX = 10_000
# /v1/catalog/datacenters is not a blocking query: read it this often (consul-template: 15 s,
# dependency/catalog_datacenters.go), or every `wait` if shorter.
DATACENTERS_EVERY = 15.0
# close(): how long to keep aborting in-flight requests before giving up on the threads.
CLOSE_GRACE = 2.0


_Group = tuple[tuple[tuple[str, Any], ...], str]  # a KV poll's key: a call's dc/ns/partition, and a folder


@dataclass(eq=False)
class _Watch:
    """The state of one blocking-query loop: a catalog or Connect dependency, or one KV folder's poll."""

    dep: Dep
    group: _Group | None = None  # a KV poll: the scope and top-level folder it serves
    task: asyncio.Task[None] | None = None
    index: int = 0  # the X-Consul-Index to send; 0 = a plain read
    known: bool = False  # a value was pushed
    view: Any = None  # a KV poll: its last answer (a Snapshot, or a Missing)
    pace: Pace = field(default_factory=Pace)
    last_start: float = -1e9
    thread: int | None = None  # the worker thread running its request, if any
    stopped: bool = False
    stale: bool = True  # may this poll's next read be ?stale (false: fall back to the leader once)
    token: str | None = None  # the token of its last request: another one may see other data


_UNSET: Any = object()  # a KV dependency whose value was not pushed yet


@dataclass
class _Reply:
    sent: int  # the index sent
    answer: Answer
    elapsed: float
    wait: float  # the wait asked for
    blocked: bool  # a blocking query (else a plain read)
    hidden: str | None  # why an empty answer may be entries hidden by ACLs, if it may
    retoken: bool  # asked with another token than the previous request: same index, other data


class ConsulSource:
    Options = ConsulOptions
    functions = ConsulFunctions
    secret_kinds = ("ca_leaf",)  # a leaf certificate comes with its private key

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
        self._watches: dict[Dep, _Watch] = {}  # one poll per catalog or Connect dependency
        self._kv: dict[_Group, _Watch] = {}  # (scope, top-level folder) → its KV poll (its dep the prefix read)
        self._kv_deps: dict[Dep, Any] = {}  # KV dependency → the value last pushed (or _UNSET)
        self._server_wait = ServerWait()
        self._warned: set[str] = set()
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
        problem = bad_dep(dep)
        if problem:
            self.sink.update(dep, Missing(problem))
            return
        if dep.kind in KV_KINDS:
            self._watch_kv(dep)
            return
        w = self._watches[dep] = _Watch(dep)
        if len(self._watches) == MAX_THREADS:
            log.warning("consul source %s: more than %d catalog dependencies watched; the polls beyond that wait for a "
                        "free thread", self.name, MAX_THREADS - 1)
        w.task = asyncio.create_task(self._follow(w), name=f"consul:{dep}")

    def unwatch(self, dep: Dep) -> None:
        if dep in self._kv_deps:
            del self._kv_deps[dep]
            group = self._group(dep)
            if not any(self._group(d) == group for d in self._kv_deps) and group in self._kv:
                # A folder's prefix is not narrowed while other dependencies in it remain: the
                # next widening recomputes it from those still watched.
                self._stop(self._kv.pop(group))
            return
        w = self._watches.pop(dep, None)
        if w:
            self._stop(w)

    async def close(self) -> None:
        watches = list(self._watches.values()) + list(self._kv.values())
        self._watches, self._kv, self._kv_deps = {}, {}, {}
        for w in watches:
            self._stop(w)
        await asyncio.gather(*(w.task for w in watches if w.task), return_exceptions=True)
        if self._executor:
            await self._drain()
        if self._client:
            self._client.http.session.close()

    # -- the KV polls: one per top-level folder ---------------------------------------------------

    def _group(self, dep: Dep) -> _Group:
        """The KV poll serving `dep`: its top-level folder (a key at the root is its own), so that
        keys with no common folder do not make one poll read, and wake for, the whole store. A
        watch of the root itself ("" — tree() or ls()) reads everything: it serves all. Calls with
        their own dc / ns / partition (the dependency's parameters) are a store apart: polls apart."""
        scope, path = dep.params, need(dep)
        return (scope, "") if (scope, "") in self._kv or not path else (scope, path.split("/", 1)[0])

    def _watch_kv(self, dep: Dep) -> None:
        self._kv_deps[dep] = _UNSET
        group = self._group(dep)
        if group[1] == "":
            for other in [g for g in self._kv if g[0] == group[0] and g != group]:
                self._stop(self._kv.pop(other))  # the root is watched: one poll of everything
        w = self._kv.get(group)
        if w is not None and need(dep).startswith(w.dep.path):
            # Covered: known at once from the last answer, else with the poll's next answer.
            if w.known and w not in self._failing and w.view is not None:
                self._deliver(dep, w)
            return
        self._restart_kv(group, poll_prefix(need(d) for d in self._kv_deps if self._group(d) == group))

    def _restart_kv(self, group: _Group, prefix: str) -> None:
        """Poll `prefix` for `group` from now on. Watches arriving in one loop tick cost one request:
        the task has not run yet when the next one widens it again. The first request is a plain
        read of the current data, so no change made meanwhile is missed."""
        old, w = self._kv.get(group), _Watch(Dep(self.name, "kv", prefix, group[0]), group)
        self._kv[group] = w
        if old is not None:
            reason = self._failing.get(old)
            self._stop(old)
            if reason is not None:
                self._failing[w] = reason  # still down: source_up comes with the first answer
            log.debug("consul source %s: KV prefix %r → %r", self.name, old.dep.path, prefix)
        w.task = asyncio.create_task(self._follow(w), name=f"consul:kv:{prefix}")

    def _spread(self, w: _Watch, view: Any) -> bool:
        """A KV poll's answer → each of its dependencies' value, pushed where it changed."""
        w.view = view
        if isinstance(view, View) and len(view.value.keys) > LARGE_PREFIX:
            self._warn_once(f"large:{w.dep.path}", "consul source %s: the KV prefix %r holds %d keys, all read again "
                            "on every change under it; keeping the watched keys under one folder would make it "
                            "cheaper", self.name, w.dep.path, len(view.value.keys))
        changed = False
        for dep in [d for d in self._kv_deps if self._group(d) == w.group]:
            changed |= self._deliver(dep, w)
        return changed

    def _deliver(self, dep: Dep, w: _Watch) -> bool:
        view = w.view
        value = view if isinstance(view, Missing) else derive(dep, view.value)
        if view is not None and not isinstance(view, Missing) and view.hidden and empty(value):
            value = Missing(view.hidden)  # never an empty config because ACLs hid the data
        last = self._kv_deps[dep]
        if last is not _UNSET and last == value:
            return False
        self._kv_deps[dep] = value
        self._tell(dep, last, value)
        return True

    def _tell(self, dep: Dep, last: Any, value: Any) -> None:
        if isinstance(value, Missing) and value.reason.startswith(ACL_HIDDEN) and not isinstance(last, Missing):
            # In `run`, the files that use it keep their last good content: say why they stop following.
            log.warning("consul source %s: %s %s", self.name, dep, value.reason,
                        extra={"event": "consul_acl_hidden", "source": self.name})
        self.sink.update(dep, value)

    # -- one poll's loop ---------------------------------------------------------------------

    async def _follow(self, w: _Watch) -> None:
        while True:
            delay = w.pace.delay(self.wait)
            if w.dep.kind == "datacenters" and w.known and w not in self._failing:
                delay = max(delay, min(self.wait, DATACENTERS_EVERY))
            await asyncio.sleep(max(0.0, w.last_start + delay - time.monotonic()))
            try:
                reply = await self._fetch(w)
            except Refused as exc:
                self._healthy(w)
                w.pace.refusals, w.index = w.pace.refusals + 1, 0
                self._push(w, Missing(str(exc)))
                continue
            w.pace.refusals = 0 if not self._acl_hidden(w) else w.pace.refusals
            self._healthy(w)
            self._reply(w, reply)

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
        sent, w.last_start, stale = w.index, time.monotonic(), w.stale
        retoken, w.stale, w.token = token != w.token, True, token
        loop = asyncio.get_running_loop()
        answer = await loop.run_in_executor(
            self._executor, self._in_thread, w, sent if block else 0, wait, token, stale)
        return _Reply(sent, answer, time.monotonic() - w.last_start, wait, block, hidden(w.dep, answer, token),
                      retoken)

    def _reply(self, w: _Watch, reply: _Reply) -> None:
        answer = reply.answer
        if self.options.consistency == "stale" and (answer.last_contact > self.options.max_stale
                                                   or not answer.known_leader):
            # As consul-template (watch/view.go): a follower too far behind the leader; drop its
            # answer and ask the leader (which holds us, then fails, while there is none).
            log.debug("consul %s: stale answer (last contact %.1fs, known leader %s); asking the leader",
                      w.dep, answer.last_contact, answer.known_leader)
            w.stale, w.last_start = False, -1e9
            return
        if answer.index is None and w.dep.kind == "datacenters":
            self._changed(w, self._push(w, reply))  # not a blocking query: read again in DATACENTERS_EVERY
            return
        if answer.index is None:
            # No X-Consul-Index (a proxy may strip it): the value still counts; poll without blocking.
            self._warn_once("no-index", "consul source %s: Consul's replies carry no X-Consul-Index; "
                            "polling without blocking queries", self.name)
            w.index = 0
            w.pace.spins += 1
            self._changed(w, self._push(w, reply))
            return
        index = max(1, answer.index)  # the docs: an index below 1 is a Consul bug; 0 would never block
        if reply.sent and index < reply.sent:
            # Consul lost or restored its state: as consul-template, drop this answer and read
            # afresh from index 0 (a plain read, current by definition).
            log.info("consul %s: index went backwards (%d → %d); reading afresh", w.dep, reply.sent, index,
                     extra={"event": "consul_index_reset", "source": self.name})
            w.index, w.last_start = 0, -1e9
            return
        if w.known and index == reply.sent and not reply.retoken:
            if reply.blocked and self._server_wait.early(reply.elapsed, reply.wait):
                w.pace.spins += 1  # early with nothing new: a misbehaving server
            else:
                w.pace.spins = 0
                self._note_cap()
            if w.group is not None and _UNSET in self._kv_deps.values():
                self._spread(w, View(answer.value, reply.hidden))  # KV dependencies watched while down
            return
        log.debug("consul %s: index %d → %d", w.dep, reply.sent, index)
        w.index, w.pace.spins = index, 0
        self._changed(w, self._push(w, reply))
        if self._acl_hidden(w):
            # As a refusal: read again (not blocking) after 1–2 s, then twice as long…, so that a
            # grant or a new token is seen; a grant does not move the index a blocking query waits on.
            w.index, w.pace.refusals = 0, w.pace.refusals + 1

    def _acl_hidden(self, w: _Watch) -> bool:
        values = [v for d, v in self._kv_deps.items() if self._group(d) == w.group] if w.group is not None \
            else [w.view]
        return any(isinstance(v, Missing) and v.reason.startswith(ACL_HIDDEN) for v in values)

    def _changed(self, w: _Watch, changed: bool) -> None:
        if changed:
            w.pace.changed()
        elif w.known:
            w.pace.churned()  # the index moved, no watched value did: a busy resource

    def _push(self, w: _Watch, reply: _Reply | Missing) -> bool:
        """A reply (or a refusal) → the values of the dependencies the poll serves; True if one changed."""
        if w.stopped:
            return False
        first, w.known = not w.known, True
        if w.group is not None:
            view = reply if isinstance(reply, Missing) else View(reply.answer.value, reply.hidden)
            return self._spread(w, view) or first
        value: Any = reply
        if isinstance(reply, _Reply):
            value = reply.answer.value
            if reply.hidden and empty(value):
                value = Missing(reply.hidden)
        last, w.view = w.view, value
        if not first and last == value:
            return False
        self._tell(w.dep, last, value)
        return True

    def _note_cap(self) -> None:
        cap = self._server_wait.cap
        if cap is not None and cap < self.wait * 0.8:
            self._warn_once("cap", "consul source %s: Consul holds blocking queries for at most about %.1fs (its "
                            "max_query_time), less than wait %gs: its same-index replies are not taken as errors",
                            self.name, cap, self.wait, level=logging.INFO)

    def _warn_once(self, key: str, msg: str, *args: Any, level: int = logging.WARNING) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.log(level, msg, *args)

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

    def _in_thread(self, w: _Watch, index: int, wait: float, token: str | None, stale: bool) -> Answer:
        ident = threading.get_ident()
        self._busy.add(ident)
        w.thread = ident
        try:
            if w.stopped:
                raise Unavailable("stopped")
            return read(self._client, self.options, w.dep, index, wait, token, self.addr, stale)
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
