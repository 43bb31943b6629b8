"""The etcd source itself: the mirror, the watch stream, reconnection (see the package doc)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from confsync.errors import ConfigError
from confsync.sources import Dep, Functions, Missing, Sink
from confsync.sources.etcd.keys import Index, KeyRange, covers, key_range, prefix_bytes, span, value_of
from confsync.sources.etcd.options import EtcdOptions, TlsOptions, endpoint_list, username_of
from confsync.sources.etcd.wire import (
    OUT_OF_RANGE,
    UNAUTHENTICATED,
    Compacted,
    StoreReplaced,
    TokenRefused,
    Unavailable,
    describe,
    error_of,
    keepalive_options,
    kvs_of,
    parse_line,
    reply_of,
    stream_error,
)
from confsync.sources.failures import internal_error

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

# Keys one batched read may bring back; past that, each dependency's range is read on its own.
READ_LIMIT = 10_000
CONNECT_TIMEOUT = 2.0  # a member that does not accept within this is skipped for the next one
RETRY_FIRST, RETRY_MAX = 0.05, 2.0  # exponential backoff with full jitter, in seconds
# A hung server keeps the socket alive, so keepalive cannot see it. etcd sends a progress
# notification on a quiet watch at its second 10-minute tick at the latest, so a stream silent
# for longer is given up, as a backstop.
STREAM_SILENCE = 25 * 60.0


class Stream:
    """One open `/v3/watch` response; its lines go to the source's inbox, tagged with `gen`."""

    def __init__(self, gen: int, watched: KeyRange) -> None:
        self.gen, self.watched = gen, watched
        self.stack = contextlib.AsyncExitStack()
        self.pump: asyncio.Task[None] | None = None

    async def close(self) -> None:
        if self.pump:
            self.pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.pump
        await self.stack.aclose()


_NEW_DEPS = object()  # inbox marker: watch() added dependencies to read


class EtcdSource:
    Options = EtcdOptions
    functions = Functions

    def __init__(self, name: str, options: EtcdOptions, sink: Sink) -> None:
        self.name = name
        self.options = options
        self.sink = sink
        self.secret = options.secret
        self.endpoints = endpoint_list(options.endpoints, tls=options.tls is not None)
        self.username, self._env_password = username_of(options.username)
        if self.username and not (options.password_file or self._env_password):
            raise ConfigError(f"sources.{name}: username is set but no password "
                              "(password_file, or the ETCDCTL_PASSWORD variable)")
        self.base = prefix_bytes(options.prefix)
        self.index = Index()
        self.mirror: dict[bytes, bytes] = {}  # watched keys as they were at revision `rev`
        self.rev = 0
        self._cluster, self._term = "", 0  # the store `rev` comes from: see _check_store
        self._full = True  # the next connection reads every watched key again (start, compaction)
        self._unread: set[Dep] = set()
        self._inbox: asyncio.Queue[Any] = asyncio.Queue()
        self._wanted = asyncio.Event()
        self._current = 0  # index of the endpoint in use (or to try first)
        self._endpoint = self.endpoints[0]
        self._token: str | None = None
        self._gen = 0
        self._stream: Stream | None = None
        self._client: httpx.AsyncClient | None = None
        self._task: asyncio.Task[None] | None = None

    # -- the Source interface ---------------------------------------------------------------------

    async def start(self) -> None:
        import httpx

        self._client = httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(verify=self._tls(), socket_options=keepalive_options(), retries=0),
            timeout=httpx.Timeout(self.options.timeout, connect=CONNECT_TIMEOUT),
            trust_env=False,  # an http_proxy meant for the internet must not carry etcd traffic
        )
        self._task = asyncio.create_task(self._run(), name=f"etcd:{self.name}")

    def watch(self, dep: Dep) -> None:
        rng = key_range(self.base, dep)
        if rng is None:
            why = "an empty key names nothing" if dep.kind == "key" else f"the etcd source has no {dep.kind}()"
            asyncio.get_running_loop().call_soon(self.sink.update, dep, Missing(why))
            return
        self.index.add(dep, rng)
        if not self._unread:  # the first of a batch: every watch() of this tick is read in one go
            self._inbox.put_nowait(_NEW_DEPS)
        self._unread.add(dep)
        self._wanted.set()

    def unwatch(self, dep: Dep) -> None:
        self._unread.discard(dep)
        rng = self.index.remove(dep)
        if rng:
            for key in [k for k in self.mirror if k in rng and not self.index.wants(k)]:
                del self.mirror[key]

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._close_stream()  # one opened by a connect the cancel interrupted
        if self._client:
            await self._client.aclose()

    # -- connecting, with failover and backoff ----------------------------------------------------

    async def _run(self) -> None:
        import tenacity

        await self._wanted.wait()  # nothing to read or watch before the first template asks
        while True:
            async for attempt in tenacity.AsyncRetrying(
                wait=tenacity.wait_random_exponential(multiplier=RETRY_FIRST, max=RETRY_MAX),
                retry=tenacity.retry_if_exception_type(Unavailable), before_sleep=self._report_down,
            ):
                with attempt:
                    await self._connect()
            self.sink.source_status(self.name, True)
            try:
                await self._follow()
            except Exception as exc:  # Unavailable, or a reply we did not expect: reconnect either way
                if not isinstance(exc, Unavailable):
                    log.error("etcd %s: %s on %s", self.name, internal_error(exc), self._endpoint,
                              extra={"event": "source_internal_error", "source": self.name})
                    self._full = True
                log.info("etcd %s: lost %s (%s); reconnecting", self.name, self._endpoint, exc,
                         extra={"event": "etcd_disconnected", "source": self.name})
                self._current = (self._current + 1) % len(self.endpoints)  # try the others first
            finally:
                await self._close_stream()

    def _report_down(self, state: Any) -> None:
        self.sink.source_status(self.name, False, str(state.outcome.exception()))

    async def _connect(self) -> None:
        """Open a watch on one endpoint, trying each in turn from the current one."""
        reasons = []
        for i in range(len(self.endpoints)):
            index = (self._current + i) % len(self.endpoints)
            self._endpoint = self.endpoints[index]
            try:
                await self._open()
            except Exception as exc:  # Unavailable, or a reply we did not expect: never a dead task
                if not isinstance(exc, Unavailable):
                    log.error("etcd %s: %s on %s", self.name, internal_error(exc), self._endpoint,
                              extra={"event": "source_internal_error", "source": self.name})
                    self._full = True
                await self._close_stream()
                reasons.append(f"{self._endpoint}: {exc}")
                continue
            self._current = index
            return
        raise Unavailable("; ".join(reasons))

    async def _open(self) -> None:
        """Bring the mirror up to date on `_endpoint`, then watch from the next revision."""
        for attempt in (1, 2):
            try:
                if self._full:
                    await self._read_all()
                elif self._unread:
                    await self._read_unread()
                await self._start_watch()
                return
            except (Compacted, StoreReplaced) as exc:
                self._full = True
                if attempt == 2:
                    raise Unavailable(f"the store changed again while it was read ({exc})") from None

    # -- reading ----------------------------------------------------------------------------------

    async def _read_all(self) -> None:
        """Read every watched key at the current revision and push every value."""
        self._unread.clear()  # what watch() adds during the read comes in the next batch
        ranges = list(self.index.ranges.values())
        rev, kvs = await self._read(ranges, 0) if ranges else (await self._current_revision(), {})
        self.mirror = {k: v for k, v in kvs.items() if self.index.wants(k)}
        self.rev, self._full = rev, False
        self._push(self.index.ranges)

    async def _read_unread(self) -> None:
        """Read the dependencies added since the last read, at `rev`: the mirror stays one moment."""
        deps = [d for d in self._unread if d in self.index.ranges]
        self._unread.clear()
        ranges = [self.index.ranges[d] for d in deps]
        if not ranges:
            return
        _, kvs = await self._read(ranges, self.rev)
        for key in [k for k in self.mirror if any(k in r for r in ranges)]:
            del self.mirror[key]
        self.mirror.update((k, v) for k, v in kvs.items() if any(k in r for r in ranges))
        self._push(deps)

    async def _read(self, ranges: list[KeyRange], revision: int) -> tuple[int, dict[bytes, bytes]]:
        """All keys of `ranges` at `revision` (0: the current one), in one range read if it can."""
        reply = await self._call("/v3/kv/range", {**span(ranges, cut=False).body(), "revision": revision,
                                                  "limit": READ_LIMIT})
        revision = revision or int(reply["header"]["revision"])
        if not reply.get("more"):
            return revision, kvs_of(reply)
        # Too many unrelated keys under the common prefix: one read per range, at the same revision.
        log.debug("etcd %s: %d ranges read one by one", self.name, len(ranges))
        replies = await asyncio.gather(*(self._call("/v3/kv/range", {**r.body(), "revision": revision})
                                         for r in ranges))
        kvs: dict[bytes, bytes] = {}
        for one in replies:
            kvs.update(kvs_of(one))
        return revision, kvs

    async def _current_revision(self) -> int:
        reply = await self._call("/v3/kv/range", {**KeyRange(self.base, False).body(), "count_only": True})
        return int(reply["header"]["revision"])

    # -- watching ---------------------------------------------------------------------------------

    async def _start_watch(self) -> None:
        """Replace the stream by one watching the span of every dependency, from `rev + 1`."""
        await self._close_stream()
        watched = span(self.index.ranges.values(), cut=True) if self.index.ranges else KeyRange(self.base, False)
        request = {"create_request": {**watched.body(), "start_revision": self.rev + 1,
                                      "progress_notify": True}}  # keeps `rev` fresh while idle
        if self.username and not self._token:
            await self._authenticate()
        for attempt in (1, 2):
            self._gen += 1
            stream = self._stream = Stream(self._gen, watched)
            try:
                lines = await self._created(stream, request)
                break
            except TokenRefused:
                if not self.username or attempt == 2:
                    raise
            await self._close_stream()
            await self._authenticate()  # the token expired, or auth was reset
        stream.pump = asyncio.create_task(self._pump(stream.gen, lines), name=f"etcd:{self.name}:watch")
        log.debug("etcd %s: watching %r from revision %d on %s", self.name, watched.start.decode(errors="replace"),
                  self.rev + 1, self._endpoint, extra={"event": "etcd_watch", "source": self.name})

    async def _created(self, stream: Stream, request: dict[str, Any]) -> Any:
        """Send the watch request; once etcd says the watch is created, its remaining lines."""
        import httpx

        assert self._client
        # `hasleader`: a member cut off from its cluster ends the watch instead of going quiet.
        headers = {**self._auth_header(), "Grpc-Metadata-hasleader": "true"}
        try:
            # `timeout` bounds every step of opening: connecting, the response headers, and etcd's
            # "created" (issue 18: an endpoint that accepts and never answers held us 25 minutes).
            async with asyncio.timeout(self.options.timeout):
                response = await stream.stack.enter_async_context(self._client.stream(
                    "POST", self._endpoint + "/v3/watch", json=request, headers=headers,
                    timeout=httpx.Timeout(self.options.timeout, connect=CONNECT_TIMEOUT, read=STREAM_SILENCE)))
                if response.status_code != 200:
                    await response.aread()
                    code, message = error_of(response, self._endpoint)
                    raise (TokenRefused if code == UNAUTHENTICATED else Unavailable)(message)
                lines = response.aiter_lines()
                first = parse_line(await anext(lines))
        except TimeoutError:
            raise Unavailable(f"no answer to the watch request within {self.options.timeout:g}s") from None
        except (httpx.HTTPError, StopAsyncIteration) as exc:
            raise Unavailable(f"no answer to the watch request ({describe(exc, self._endpoint)})") from exc
        result = first.get("result") or {}
        self._check_store(result.get("header"))
        if result.get("created") and not result.get("canceled"):
            return lines
        # A refused watch is "created" and "canceled" at once, e.g. for a token etcd no longer knows.
        reason = str(result.get("cancel_reason") or stream_error(first))
        raise (TokenRefused if "invalid auth token" in reason else Unavailable)(f"the watch was refused: {reason}")

    async def _pump(self, gen: int, lines: Any) -> None:
        import httpx

        try:
            async for line in lines:
                if line:
                    self._inbox.put_nowait((gen, line))
            end: Exception = Unavailable("the watch stream ended")
        except httpx.HTTPError as exc:
            end = Unavailable(f"the watch stream broke ({describe(exc, self._endpoint)})")
        self._inbox.put_nowait((gen, end))

    async def _close_stream(self) -> None:
        if self._stream:
            stream, self._stream = self._stream, None
            await stream.close()

    async def _follow(self) -> None:
        """Apply what arrives, in order, until the stream fails (raises Unavailable)."""
        while True:
            item = await self._inbox.get()
            if item is _NEW_DEPS:
                if self._unread:
                    await self._add_deps()
                continue
            gen, payload = item
            if not self._stream or gen != self._stream.gen:
                continue  # from a stream already replaced
            if isinstance(payload, Exception):
                raise payload
            await self._on_message(parse_line(payload))

    async def _add_deps(self) -> None:
        try:
            await self._read_unread()
        except (Compacted, StoreReplaced):
            self._full = True  # if this read fails too, the next connection reads everything
            await self._read_all()
        else:
            assert self._stream
            if all(covers(self._stream.watched, r) for r in self.index.ranges.values()):
                return
        await self._start_watch()  # wider, or after a full read: from the new `rev + 1`

    async def _on_message(self, message: dict[str, Any]) -> None:
        result = message.get("result")
        if result is None:
            raise Unavailable(stream_error(message))
        if result.get("compact_revision"):
            log.info("etcd %s: revision %d was compacted (oldest kept: %s); re-reading all watched keys",
                     self.name, self.rev + 1, result["compact_revision"],
                     extra={"event": "etcd_resync", "source": self.name})
            self._full = True
            await self._read_all()
            await self._start_watch()
        elif result.get("canceled"):
            raise Unavailable(f"the watch was canceled: {result.get('cancel_reason') or 'no reason given'}")
        elif result.get("events"):
            self._apply(result["events"])
        elif not result.get("created"):
            # A progress notification: etcd sends them only once the watch has caught up.
            self.rev = max(self.rev, int(result["header"]["revision"]))

    def _apply(self, events: list[dict[str, Any]]) -> None:
        touched: set[Dep] = set()
        for event in events:
            kv = event["kv"]
            key = base64.b64decode(kv["key"])
            self.rev = max(self.rev, int(kv["mod_revision"]))
            deps = self.index.deps_of(key)
            if not deps:
                continue
            if event.get("type") == "DELETE":
                self.mirror.pop(key, None)
            else:
                self.mirror[key] = base64.b64decode(kv.get("value", ""))
            touched |= deps
        self._push(touched)

    def _push(self, deps: Iterable[Dep]) -> None:
        for dep in list(deps):
            rng = self.index.ranges.get(dep)
            if rng and dep not in self._unread:  # an unread dependency's keys are not all here yet
                self.sink.update(dep, value_of(dep, rng, self.mirror))

    # -- requests and authentication ---------------------------------------------------------------

    async def _call(self, path: str, body: dict[str, Any], auth: bool = True) -> dict[str, Any]:
        """POST to the gateway; errors become Unavailable/Compacted. Re-authenticates once on 401."""
        import httpx

        assert self._client
        if auth and self.username and not self._token:
            await self._authenticate()
        for attempt in (1, 2):
            try:
                response = await self._client.post(self._endpoint + path, json=body,
                                                    headers=self._auth_header() if auth else {})
            except httpx.HTTPError as exc:
                raise Unavailable(describe(exc, self._endpoint)) from exc
            if response.status_code == 200:
                reply = reply_of(response, self._endpoint)
                self._check_store(reply["header"])
                return reply
            code, message = error_of(response, self._endpoint)
            if code == UNAUTHENTICATED and auth and self.username and attempt == 1:
                await self._authenticate()  # the token expired, or auth was reset
                continue
            if code == OUT_OF_RANGE and "compacted" in message:
                raise Compacted(message)
            if code == OUT_OF_RANGE and "future revision" in message:  # our revision is not reached
                self._store_replaced(f"revision {self.rev} is in its future")
            raise Unavailable(message)
        raise AssertionError("unreachable")

    def _check_store(self, header: Any) -> None:
        """Is this still the store our revision comes from? A revision or raft term that went back,
        or another cluster ID, means a restore or a wipe (issue 18)."""
        if not isinstance(header, dict):
            return
        cluster = str(header.get("cluster_id") or "")
        revision, term = int(header.get("revision") or 0), int(header.get("raft_term") or 0)
        if self._cluster and cluster and cluster != self._cluster:
            self._store_replaced(f"its cluster ID changed from {self._cluster} to {cluster}")
        if revision < self.rev:
            self._store_replaced(f"its revision went back from {self.rev} to {revision}")
        if term < self._term:
            self._store_replaced(f"its raft term went back from {self._term} to {term}")
        self._cluster, self._term = cluster or self._cluster, max(term, self._term)

    def _store_replaced(self, why: str) -> None:
        log.warning("etcd %s: %s serves another store (%s: restored or wiped); reading every watched key "
                    "again", self.name, self._endpoint, why,
                    extra={"event": "etcd_store_replaced", "source": self.name})
        self.rev, self._term, self._cluster, self._full = 0, 0, "", True
        raise StoreReplaced(why)

    def _auth_header(self) -> dict[str, str]:
        return {"Authorization": self._token} if self._token else {}

    async def _authenticate(self) -> None:
        self._token = None
        reply = await self._call("/v3/auth/authenticate", {"name": self.username, "password": self._password()},
                                 auth=False)
        self._token = reply["token"]
        log.debug("etcd %s: authenticated as %s", self.name, self.username,
                  extra={"event": "etcd_authenticated", "source": self.name})

    def _password(self) -> str:
        if self.options.password_file:  # read each time: a rotated password is picked up
            try:
                return self.options.password_file.read_text().rstrip("\r\n")
            except OSError as exc:
                raise Unavailable(f"cannot read password_file {self.options.password_file}: "
                                  f"{exc.strerror}") from None
        return self._env_password or ""

    def _tls(self) -> Any:
        """An SSLContext for https endpoints; False when every endpoint is plain http (no CA loading)."""
        import ssl

        if not any(e.startswith("https://") for e in self.endpoints):
            return False
        tls = self.options.tls or TlsOptions()
        ca = tls.ca_file or os.environ.get("ETCDCTL_CACERT")
        cert = tls.cert_file or os.environ.get("ETCDCTL_CERT")
        key = tls.key_file or os.environ.get("ETCDCTL_KEY")
        try:
            context = ssl.create_default_context(cafile=str(ca) if ca else None)
            if cert:
                context.load_cert_chain(str(cert), str(key) if key else None)
        except (OSError, ssl.SSLError) as exc:  # a file that is missing, unreadable or not PEM
            raise ConfigError(f"sources.{self.name}.tls: {exc}") from None
        return context
