"""The zookeeper source itself: kazoo's threads → the loop, the mirror, reads and pushes (see the
package doc)."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

from confsync.sources import ABSENT, Dep, Functions, Missing, Sink
from confsync.sources.failures import internal_error
from confsync.sources.zookeeper.client import new_client, read_credential, stop_client
from confsync.sources.zookeeper.options import ZooKeeperOptions, bad_path
from confsync.sources.zookeeper.tree import DATA, join, stamp, under, value_of, why

log = logging.getLogger(__name__)

# Not connected this long after start: say so (kazoo keeps trying meanwhile and says nothing).
CONNECT_GRACE = 1.0
# Values are pushed once no read is in flight, so that a batch (the first reads, the re-reads after
# a reconnection) lands as one change and each template renders once; a server busy enough to
# always have a read in flight delays pushes by at most this.
HOLD_MAX = 0.5
# Reconnection attempts fail for this many session timeouts: start over with a new client. A server
# refuses a client that has seen a newer transaction than it has ("client must try another
# server"), so after a server comes back without its data, the old client would retry for ever;
# by then our session has expired wherever it was known, so a new one loses nothing.
FRESH_AFTER_SESSIONS = 2

CHILDREN = "children"
Op = Literal["get", "children", "exists", "arm", "check"]
_READ: dict[str, Op] = {DATA: "get", CHILDREN: "children"}
# kazoo errors that mean "the connection went away", not "this znode": by name, as kazoo is only
# imported in start().
_CONNECTION_ERRORS = ("ConnectionLoss", "SessionExpiredError", "ConnectionClosedError",
                      "OperationTimeoutError", "AuthFailedError", "SessionMovedError")



@dataclass(eq=False)
class _Watch:
    """One dependency's bookkeeping: how many reads concerning it are still in flight."""

    dep: Dep
    pending: int = 0


@dataclass(eq=False)
class _Request:
    op: Op
    path: str  # relative to the chroot, without leading "/"; "" is the root
    aspect: str  # DATA or CHILDREN: which half of the mirror the reply fills in
    epoch: int  # the connection it was sent on
    watches: list[_Watch] = field(default_factory=list)


class ZooKeeperSource:
    Options = ZooKeeperOptions
    functions = Functions

    def __init__(self, name: str, options: ZooKeeperOptions, sink: Sink) -> None:
        self.name = name
        self.options = options
        self.secret = options.secret
        self.sink = sink
        self._client: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = threading.Event()  # also wakes kazoo from a reconnection back-off
        self._credential_text: str | None = None
        self._starter: asyncio.Task[None] | None = None
        self._retiring: set[asyncio.Task[None]] = set()  # clients being stopped
        self._grace: asyncio.TimerHandle | None = None
        self._fresh: asyncio.TimerHandle | None = None
        self._connected = False  # pushes allowed: connected and every watch re-armed after it
        self._epoch = 0  # counts connections; replies from an older one are stale
        self._inflight = 0  # reads sent on this connection and not answered yet
        self._hold_since: float | None = None
        self._down: str | None = None  # the reason last reported, while down
        # What is watched, by dependency and by path.
        self._watches: dict[Dep, _Watch] = {}
        self._keys: dict[str, _Watch] = {}
        self._lss: dict[str, _Watch] = {}
        self._trees: dict[str, _Watch] = {}
        # The mirror: ABSENT for a znode that does not exist, a Missing for one we may not read.
        self._data: dict[str, bytes | Missing] = {}
        self._children: dict[str, frozenset[str] | Missing] = {}
        self._todo: dict[tuple[Op, str, str], None] = {}  # reads to send at the next flush
        self._flush_soon = False
        self._dirty: set[_Watch] = set()  # values to push once nothing concerning them is in flight
        # What the server said of each (path, aspect) last, to notice a change no watch reported
        # (issue 18: ZooKeeper drops, without an event, a watch it may no longer deliver: an ACL).
        self._stats: dict[tuple[str, str], tuple[int, int]] = {}
        self._reading: set[tuple[str, str]] = set()  # reads in flight
        self._checker: asyncio.TimerHandle | None = None
        # kazoo's threads → the loop.
        self._inbox: deque[tuple[Any, ...]] = deque()
        self._inbox_lock = threading.Lock()
        self._drain_soon = False

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._grace = self._loop.call_later(CONNECT_GRACE, self._not_connected_yet)
        if self.options.watch_check_interval:
            self._checker = self._loop.call_later(self.options.watch_check_interval, self._check_watches)
        self._credential_text = self._credential()
        if self._credential_text is not None or not self.options.auth:
            self._connect()
        else:
            self._starter = asyncio.create_task(self._connect_when_readable())

    def _connect(self) -> None:
        """Start kazoo's connection thread; it connects and reconnects on its own from now on."""
        client = new_client(self.options, self._credential_text, self._closed)
        client.add_listener(lambda state: self._post("state", client, state))
        self._client = client
        client.start_async()

    def _credential(self) -> str | None:
        text, problem = read_credential(self.options.auth)
        if problem:
            self._report_down(problem)
        return text

    async def _connect_when_readable(self) -> None:
        """The credential file may appear later (a Secret volume being mounted): keep looking."""
        from tenacity import AsyncRetrying, retry_if_result, wait_random_exponential

        async def read() -> str | None:
            return self._credential()

        retrying = AsyncRetrying(wait=wait_random_exponential(multiplier=0.5, max=30),
                                 retry=retry_if_result(lambda found: found is None))
        self._credential_text = await retrying(read)
        self._connect()

    def _start_over(self) -> None:
        """Replace a client that cannot get back in (see FRESH_AFTER_SESSIONS)."""
        self._fresh = None
        if self._connected or self._closed.is_set() or self._client is None:
            return
        log.warning("zookeeper %s: no server took the connection back for %gs; starting over with a new "
                    "session", self.name, self.options.session_timeout * FRESH_AFTER_SESSIONS,
                    extra={"event": "session_reset", "source": self.name})
        self._retire(self._client)
        self._connect()

    def _retire(self, client: Any) -> None:
        task = asyncio.create_task(asyncio.to_thread(stop_client, client))  # blocks: not on the loop
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def close(self) -> None:
        self._closed.set()
        for timer in (self._grace, self._fresh, self._checker):
            if timer:
                timer.cancel()
        if self._starter:
            self._starter.cancel()
            await asyncio.gather(self._starter, return_exceptions=True)
        if self._client is not None:
            self._retire(self._client)  # its threads end and its session is closed
        self._client = None
        await asyncio.gather(*self._retiring)

    # -- the Source interface -------------------------------------------------------------------

    def watch(self, dep: Dep) -> None:
        index = self._index(dep.kind)
        problem = bad_path(dep.path)
        if index is None or problem:
            why = f"invalid znode path {dep.path!r}: {problem}" if problem else f"no {dep.kind}() in zookeeper"
            asyncio.get_running_loop().call_soon(self.sink.update, dep, Missing(why))
            return
        watch = _Watch(dep)
        self._watches[dep] = watch
        index[dep.path] = watch
        self._want_dep(dep)
        if not self._flush_soon:  # all watch() calls of this tick go out in one batch
            self._flush_soon = True
            asyncio.get_running_loop().call_soon(self._flush)

    def unwatch(self, dep: Dep) -> None:
        watch = self._watches.pop(dep, None)
        index = self._index(dep.kind)
        if watch is None or index is None:
            return
        del index[dep.path]
        self._dirty.discard(watch)
        # Its watches cannot be taken back from the server: they fire once more and are ignored.
        self._prune({dep.path}, subtree=dep.kind == "tree")

    def _index(self, kind: str) -> dict[str, _Watch] | None:
        return {"key": self._keys, "ls": self._lss, "tree": self._trees}.get(kind)

    # -- kazoo's threads → the loop -------------------------------------------------------------

    def _post(self, *item: Any) -> None:
        """Any thread: queue `item` for the loop; one wake-up serves a whole burst."""
        if self._closed.is_set() or self._loop is None:
            return
        self._inbox.append(item)
        with self._inbox_lock:
            if self._drain_soon:
                return
            self._drain_soon = True
        try:
            self._loop.call_soon_threadsafe(self._drain)
        except RuntimeError:
            pass  # the loop is gone: we are shutting down

    def _on_watch(self, event: Any) -> None:
        if event.path is not None and event.type != "NONE":  # NONE: kazoo dropping its watches
            self._post("event", event.type, event.path)

    def _drain(self) -> None:
        with self._inbox_lock:
            self._drain_soon = False
        while self._inbox:
            kind, *args = self._inbox.popleft()
            if self._closed.is_set():
                return
            try:
                if kind == "result":
                    self._result(*args)
                elif kind == "event":
                    self._event(*args)
                else:
                    self._state(*args)
            except Exception as exc:  # a bug must not lose the rest of the inbox (issue 18)
                log.error("zookeeper %s: %s; reading everything again", self.name, internal_error(exc),
                          extra={"event": "source_internal_error", "source": self.name})
                self._want_all()
        self._flush()

    # -- connection states ----------------------------------------------------------------------

    def _state(self, client: Any, state: str) -> None:
        if client is not self._client:
            return  # a retired client saying goodbye
        if state == "CONNECTED":
            self._epoch += 1
            self._connected = True
            self._inflight = 0  # whatever was in flight is lost with the old connection
            for watch in self._watches.values():
                watch.pending = 0
            for timer in (self._grace, self._fresh):
                if timer:
                    timer.cancel()
            self._fresh = None
            if self._down is not None:
                self._down = None
                self.sink.source_status(self.name, True)
            # kazoo forgot every watch when the connection dropped: read everything again.
            log.debug("zookeeper %s connected: reading %d dependencies", self.name, len(self._watches),
                      extra={"event": "source_connected", "source": self.name})
            self._want_all()
            return
        self._connected = False
        if self._fresh is None and self._epoch:
            delay = self.options.session_timeout * FRESH_AFTER_SESSIONS
            self._fresh = asyncio.get_running_loop().call_later(delay, self._start_over)
        if state == "SUSPENDED":
            self._report_down(f"lost the connection to ZooKeeper at {self.options.hosts}; reconnecting")
        elif self._client is not None and str(self._client.client_state) == "AUTH_FAILED":
            self._report_down("ZooKeeper refused the credentials (AUTH_FAILED)")
        else:
            log.info("zookeeper %s: session expired; reconnecting with a new session", self.name,
                     extra={"event": "session_expired", "source": self.name})
            self._report_down("ZooKeeper session expired; reconnecting with a new session")

    def _not_connected_yet(self) -> None:
        if not self._connected and self._down is None:
            self._report_down(f"cannot connect to ZooKeeper at {self.options.hosts} yet; retrying")

    def _report_down(self, reason: str) -> None:
        self._down = reason
        self.sink.source_status(self.name, False, reason)

    # -- what to read ---------------------------------------------------------------------------

    def _want_dep(self, dep: Dep) -> None:
        self._want("get" if dep.kind == "key" else "children", dep.path, DATA if dep.kind == "key" else CHILDREN)

    def _want_all(self) -> None:
        for dep in self._watches:
            self._want_dep(dep)
        for path in list(self._data):
            if self._wanted(path, DATA):
                self._want("get", path, DATA)
        for path in list(self._children):
            if self._wanted(path, CHILDREN):
                self._want("children", path, CHILDREN)

    def _want(self, op: Op, path: str, aspect: str) -> None:
        self._todo[(op, path, aspect)] = None

    def _wanted(self, path: str, aspect: str) -> bool:
        if aspect == DATA and path in self._keys:
            return True
        if aspect == CHILDREN and (path in self._lss or path in self._trees):
            return True
        return self._in_tree(path)

    def _in_tree(self, path: str) -> bool:
        """Strictly under a watched tree, and listed by every parent down to it."""
        while path:
            parent, _, name = path.rpartition("/")
            listed = self._children.get(parent)
            if not isinstance(listed, frozenset) or name not in listed:
                return False
            if parent in self._trees:
                return True
            path = parent
        return False

    def _related(self, path: str, aspect: str) -> list[_Watch]:
        """The watches whose value a read of `path` feeds."""
        found = [w for w in (self._keys.get(path) if aspect == DATA else self._lss.get(path),) if w]
        ancestor = path
        while True:
            if ancestor in self._trees:
                found.append(self._trees[ancestor])
            if not ancestor:
                return found
            ancestor = ancestor.rpartition("/")[0]

    # -- sending reads --------------------------------------------------------------------------

    def _flush(self) -> None:
        """Send the reads wanted, then push what is complete."""
        self._flush_soon = False
        todo, self._todo = self._todo, {}
        if self._connected and self._client is not None:
            for op, path, aspect in todo:
                self._send(op, path, aspect)
        self._push()

    def _send(self, op: Op, path: str, aspect: str) -> None:
        reads = op in ("get", "children", "exists")
        request = _Request(op, path, aspect, self._epoch, self._related(path, aspect) if reads else [])
        if op != "check":  # a check changes nothing: pushes need not wait for it
            self._inflight += 1
        if reads:
            self._reading.add((path, aspect))
        for watch in request.watches:
            watch.pending += 1
        zpath = "/" + path
        client, watcher = self._client, self._on_watch
        if op == "get":
            result = client.get_async(zpath, watch=watcher)
        elif op == "children":
            result = client.get_children_async(zpath, watch=watcher, include_data=True)
        elif op == "check":  # no watch: see _check_watches
            result = client.exists_async(zpath)
        else:  # exists: learn that an absent znode appears; arm: be told of a change we may not read
            result = client.exists_async(zpath, watch=watcher)
        result.rawlink(lambda done: self._post("result", request, done))

    # -- replies and events ---------------------------------------------------------------------

    def _result(self, request: _Request, result: Any) -> None:
        if request.epoch != self._epoch:
            return  # sent on a connection since lost: the reconnection read it again
        key = (request.path, request.aspect)
        if request.op == "check":
            self._checked(key, result)
            return
        self._inflight -= 1
        self._reading.discard(key)
        for watch in request.watches:
            watch.pending -= 1
            self._dirty.add(watch)
        error = result.exception
        if error is None and result.value is not None and self._wanted(*key):
            self._stats[key] = stamp(result.value[1] if request.op in ("get", "children") else result.value,
                                      request.aspect)
        if request.op == "arm":
            return
        if error is not None and type(error).__name__ in _CONNECTION_ERRORS:
            self._connected = False  # hold pushes: the state change and a full re-read follow
            return
        if not self._wanted(request.path, request.aspect):
            return  # unwatched meanwhile
        if request.op == "exists":
            if error is None and result.value is not None:
                self._want(_READ[request.aspect], request.path, request.aspect)  # it appeared meanwhile
            else:
                self._store(request.path, request.aspect, ABSENT if error is None else why(error))
        elif error is None:
            value = result.value[0]
            self._store(request.path, request.aspect, (value or b"") if request.op == "get" else value)
        elif type(error).__name__ == "NoNodeError":
            # A failed read sets no watch; `exists` does, and answers whether it appeared meanwhile.
            self._want("exists", request.path, request.aspect)
        else:
            self._store(request.path, request.aspect, why(error))
            self._want("arm", request.path, request.aspect)

    def _store(self, path: str, aspect: str, value: Any) -> None:
        if aspect == DATA:
            self._data[path] = value
            return
        if isinstance(value, list):
            if not path and not self.options.chroot:
                value = [n for n in value if n != "zookeeper"]  # the server's own, not configuration
            value = frozenset(value)
        before = self._children.get(path)
        self._children[path] = value
        if isinstance(before, frozenset):
            gone = before - (value if isinstance(value, frozenset) else frozenset())
            if gone:
                self._prune({join(path, name) for name in gone}, subtree=True)
        if isinstance(value, frozenset) and (path in self._trees or self._in_tree(path)):
            for name in value:  # a tree reads every znode under it, new ones as they appear
                child = join(path, name)
                if child not in self._data:
                    self._want("get", child, DATA)
                if child not in self._children:
                    self._want("children", child, CHILDREN)

    def _event(self, kind: str, zpath: str) -> None:
        path = zpath.strip("/")
        if kind == "CHANGED":
            aspects = [DATA] + ([CHILDREN] if isinstance(self._children.get(path), Missing) else [])
        elif kind == "CHILD":
            aspects = [CHILDREN]
        else:  # CREATED, DELETED
            aspects = [DATA, CHILDREN]
        for aspect in aspects:
            if self._wanted(path, aspect):
                self._want(_READ[aspect], path, aspect)

    def _prune(self, tops: set[str], subtree: bool) -> None:
        """Forget what is no longer watched at `tops` (and under them), so it is read afresh if it
        is watched again: its server-side watch may fire unseen meanwhile. One pass over the mirror
        for all of them (issue 18: one per gone child took 7 s of the loop for 10k children)."""
        for mirror, aspect in ((self._data, DATA), (self._children, CHILDREN)):
            if subtree:
                paths = [p for p in mirror if under(p, tops)]
            else:
                paths = [p for p in tops if p in mirror]
            for path in [p for p in paths if not self._wanted(p, aspect)]:
                del mirror[path]
                self._stats.pop((path, aspect), None)

    # -- changes no watch reported --------------------------------------------------------------

    def _check_watches(self) -> None:
        """Every `watch_check_interval`: ask (without a watch) for the stat of every znode watched."""
        assert self._loop
        self._checker = self._loop.call_later(self.options.watch_check_interval, self._check_watches)
        if self._connected and self._client is not None:
            for path, aspect in list(self._stats):
                self._send("check", path, aspect)

    def _checked(self, key: tuple[str, str], result: Any) -> None:
        if key not in self._stats or key in self._reading or not self._wanted(*key):
            return  # a read is on its way (an event came first: ZooKeeper orders them), or unwatched
        if result.exception is not None:
            return  # the connection went: everything is read again on reconnection
        now = None if result.value is None else stamp(result.value, key[1])
        if now == self._stats[key]:
            return
        log.warning("zookeeper %s: znode /%s changed (%s) without a watch event: ZooKeeper drops a watch it "
                    "may no longer deliver, after an ACL change; reading it again", self.name, key[0],
                    "deleted" if now is None else key[1], extra={"event": "watch_lost", "source": self.name})
        del self._stats[key]
        self._want(_READ[key[1]], *key)
        self._flush()

    # -- pushing values -------------------------------------------------------------------------

    def _push(self) -> None:
        if not self._connected or self._holding():
            return
        ready = [w for w in self._dirty if w.pending == 0]
        for watch in ready:
            self._dirty.discard(watch)
            if self._watches.get(watch.dep) is not watch:
                continue
            value = value_of(watch.dep, self._data, self._children)
            if value is not None:
                self.sink.update(watch.dep, value)

    def _holding(self) -> bool:
        if not self._inflight:
            self._hold_since = None
            return False
        now = asyncio.get_running_loop().time()
        if self._hold_since is None:
            self._hold_since = now
        return now - self._hold_since < HOLD_MAX

