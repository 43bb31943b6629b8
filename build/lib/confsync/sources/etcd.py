"""The `etcd` source: etcd v3 through its JSON gateway (plain HTTP with httpx), one watch stream.

Why plain HTTP: `etcd3gw` watches hang without an error when the server dies or the revision is
compacted; `etcd3` needs protobuf<3.21; the gateway (`/v3/kv/range`, `/v3/watch`) behaved correctly
on death, resume and compaction, and httpx is already a dependency (no gRPC stack to import).

Keys. etcd's keyspace is flat; "/" is only a convention, which we follow for `tree` and `ls`. With
`prefix: /app`, `key("db/host")` reads `/app/db/host`, `tree("db")` every key under `/app/db/`
(relative to it) and `ls("db")` their distinct first segments. The default prefix `/` gives
`/db/host`; `prefix: ""` gives the bare `db/host`.

One stream. etcd 3.4's gateway reads a `/v3/watch` request body to its end before it answers
(measured: a chunked `create_request` gets no reply until the body is closed), so a stream cannot
take new watches once it is open. We open ONE watch on the range spanning every watched key (their
common prefix, cut back to a "/") and filter events here; a dependency outside that span reopens
the stream, wider, from the revision already seen, so nothing is missed.

Consistency. `mirror` holds the watched keys exactly as they were at revision `rev`. Events are
applied in revision order; a new dependency is read at `rev` itself (events past `rev` wait in
the inbox meanwhile), so the mirror never mixes two moments. After a disconnect the watch resumes
at `rev + 1`; if that revision was compacted, everything is read again at the current revision.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from confsync.config import Duration, RelPath
from confsync.errors import ConfigError
from confsync.sources import ABSENT, Dep, Functions, Missing, Sink

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "http://127.0.0.1:2379"
# Keys one batched read may bring back; past that, each dependency's range is read on its own.
READ_LIMIT = 10_000
CONNECT_TIMEOUT = 2.0  # a member that does not accept within this is skipped for the next one
RETRY_FIRST, RETRY_MAX = 0.05, 2.0  # exponential backoff with full jitter, in seconds
# A watch stream may be silent for a long time, so its read timeout cannot be short. TCP keepalive
# notices a dead peer (a crashed host, a cut network) after about IDLE + INTERVAL * COUNT = 11 s,
# with no request.
KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_COUNT = 5, 2, 3
# A hung server keeps the socket alive, so keepalive cannot see it. etcd sends a progress
# notification on a quiet watch at its second 10-minute tick at the latest, so a stream silent
# for longer is given up, as a backstop.
STREAM_SILENCE = 25 * 60.0
UNAUTHENTICATED, OUT_OF_RANGE = 16, 11  # gRPC status codes the gateway passes on as "code"


@dataclass(frozen=True)
class TlsOptions:
    ca_file: RelPath | None = None
    cert_file: RelPath | None = None
    key_file: RelPath | None = None


@dataclass(frozen=True)
class EtcdOptions:
    endpoints: tuple[str, ...] = ()  # default: $ETCDCTL_ENDPOINTS, else http://127.0.0.1:2379
    prefix: str = "/"
    username: str | None = None  # default: $ETCDCTL_USER ("name" or "name:password")
    password_file: RelPath | None = None  # default: $ETCDCTL_PASSWORD
    tls: TlsOptions | None = None  # default: $ETCDCTL_CACERT, $ETCDCTL_CERT, $ETCDCTL_KEY
    timeout: Duration = 5.0  # one read or authentication (the watch stream has none)
    secret: bool = False  # values are secrets: files 0600 by default, values kept out of diffs and errors


class Unavailable(Exception):
    """This endpoint cannot serve us now; the message names why, never a secret."""


class TokenRefused(Unavailable):
    """etcd no longer knows our token (expired, or auth was reset): authenticate again."""


class Compacted(Exception):
    """The revision we asked for is gone: read everything again at the current one."""


# -- where template paths live in etcd's keyspace ------------------------------------------------


@dataclass(frozen=True)
class KeyRange:
    """One key (`exact`) or every key starting with `start`."""

    start: bytes
    exact: bool

    def __contains__(self, key: bytes) -> bool:
        return key == self.start if self.exact else key.startswith(self.start)

    def body(self) -> dict[str, str]:
        """The `key`/`range_end` pair of an etcd request for this range."""
        if self.exact:
            return {"key": _b64(self.start)}
        return {"key": _b64(self.start or b"\0"), "range_end": _b64(_prefix_end(self.start))}


def key_range(base: bytes, dep: Dep) -> KeyRange | None:
    """The range `dep` reads, under the prefix `base` ("" or ending in "/"); None: not a kind of ours."""
    path = dep.path.encode()
    if dep.kind == "key":
        return KeyRange(base + path, exact=True) if path else None
    if dep.kind in ("tree", "ls"):
        return KeyRange(base + path + b"/" if path else base, exact=False)
    return None


def _base(prefix: str) -> bytes:
    return (prefix.rstrip("/") + "/").encode() if prefix else b""


def _prefix_end(prefix: bytes) -> bytes:
    """The first key after every key starting with `prefix` (etcd's `range_end` for a prefix)."""
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        return b"\0"  # etcd: from `key` to the end of the keyspace
    return trimmed[:-1] + bytes([trimmed[-1] + 1])


def span(ranges: Iterable[KeyRange], cut: bool) -> KeyRange:
    """One range covering all of `ranges`: their common prefix (cut back to a "/" when `cut`)."""
    starts = [r.start for r in ranges]
    if len(starts) == 1 and not cut:
        return next(iter(ranges))
    common = _common_prefix(starts)
    if cut:
        common = common[: common.rfind(b"/") + 1]
    return KeyRange(common, exact=False)


def _common_prefix(items: list[bytes]) -> bytes:
    if not items:
        return b""
    low, high = min(items), max(items)  # what the smallest and largest share, all share
    n = 0
    while n < len(low) and low[n] == high[n]:
        n += 1
    return low[:n]


def covers(outer: KeyRange, inner: KeyRange) -> bool:
    return inner.start in outer if inner.exact or outer.exact else inner.start.startswith(outer.start)


def value_of(dep: Dep, rng: KeyRange, mirror: dict[bytes, bytes]) -> Any:
    """What a template gets for `dep` from the watched keys now."""
    try:
        if rng.exact:
            raw = mirror.get(rng.start)
            return ABSENT if raw is None else raw.decode()
        cut = len(rng.start)
        below = sorted((k[cut:], v) for k, v in mirror.items() if k.startswith(rng.start))
        if dep.kind == "tree":
            return {k.decode(): v.decode() for k, v in below}
        return sorted({k.split(b"/", 1)[0].decode() for k, _ in below} - {""})
    except UnicodeDecodeError as exc:
        return Missing(f"a key or value is not UTF-8 text ({exc.reason} at byte {exc.start})")


class Index:
    """Which dependencies a changed key concerns: by exact key, or by prefix."""

    def __init__(self) -> None:
        self.ranges: dict[Dep, KeyRange] = {}
        self._exact: dict[bytes, set[Dep]] = {}
        self._prefix: dict[bytes, set[Dep]] = {}

    def add(self, dep: Dep, rng: KeyRange) -> None:
        self.ranges[dep] = rng
        (self._exact if rng.exact else self._prefix).setdefault(rng.start, set()).add(dep)

    def remove(self, dep: Dep) -> KeyRange | None:
        rng = self.ranges.pop(dep, None)
        if rng:
            table = self._exact if rng.exact else self._prefix
            table[rng.start].discard(dep)
            if not table[rng.start]:
                del table[rng.start]
        return rng

    def deps_of(self, key: bytes) -> set[Dep]:
        found = set(self._exact.get(key, ()))
        for start, deps in self._prefix.items():
            if key.startswith(start):
                found |= deps
        return found

    def wants(self, key: bytes) -> bool:
        return key in self._exact or any(key.startswith(start) for start in self._prefix)


# -- the source ------------------------------------------------------------------------------------


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
        self.endpoints = _endpoints(options.endpoints, tls=options.tls is not None)
        self.username, self._env_password = _username(options.username)
        if self.username and not (options.password_file or self._env_password):
            raise ConfigError(f"sources.{name}: username is set but no password "
                              "(password_file, or the ETCDCTL_PASSWORD variable)")
        self.base = _base(options.prefix)
        self.index = Index()
        self.mirror: dict[bytes, bytes] = {}  # watched keys as they were at revision `rev`
        self.rev = 0
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
            transport=httpx.AsyncHTTPTransport(verify=self._tls(), socket_options=_keepalive(), retries=0),
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
                    log.exception("etcd %s: unexpected failure on %s", self.name, self._endpoint)
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
                    log.exception("etcd %s: unexpected failure on %s", self.name, self._endpoint)
                    self._full = True
                await self._close_stream()
                reasons.append(f"{self._endpoint}: {exc}")
                continue
            self._current = index
            return
        raise Unavailable("; ".join(reasons))

    async def _open(self) -> None:
        """Bring the mirror up to date on `_endpoint`, then watch from the next revision."""
        try:
            if self._full:
                await self._read_all()
            elif self._unread:
                await self._read_unread()
        except Compacted:
            self._full = True
            await self._read_all()
        await self._start_watch()

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
            return revision, _kvs(reply)
        # Too many unrelated keys under the common prefix: one read per range, at the same revision.
        log.debug("etcd %s: %d ranges read one by one", self.name, len(ranges))
        replies = await asyncio.gather(*(self._call("/v3/kv/range", {**r.body(), "revision": revision})
                                         for r in ranges))
        kvs: dict[bytes, bytes] = {}
        for one in replies:
            kvs.update(_kvs(one))
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
            response = await stream.stack.enter_async_context(self._client.stream(
                "POST", self._endpoint + "/v3/watch", json=request, headers=headers,
                timeout=httpx.Timeout(self.options.timeout, connect=CONNECT_TIMEOUT, read=STREAM_SILENCE)))
            if response.status_code != 200:
                await response.aread()
                code, message = _error(response)
                raise (TokenRefused if code == UNAUTHENTICATED else Unavailable)(message)
            lines = response.aiter_lines()
            async with asyncio.timeout(self.options.timeout):
                first = _parse(await anext(lines))
        except (httpx.HTTPError, StopAsyncIteration, TimeoutError) as exc:
            raise Unavailable(f"no answer to the watch request ({_describe(exc)})") from exc
        result = first.get("result") or {}
        if result.get("created") and not result.get("canceled"):
            return lines
        # A refused watch is "created" and "canceled" at once, e.g. for a token etcd no longer knows.
        reason = str(result.get("cancel_reason") or _stream_error(first))
        raise (TokenRefused if "invalid auth token" in reason else Unavailable)(f"the watch was refused: {reason}")

    async def _pump(self, gen: int, lines: Any) -> None:
        import httpx

        try:
            async for line in lines:
                if line:
                    self._inbox.put_nowait((gen, line))
            end: Exception = Unavailable("the watch stream ended")
        except httpx.HTTPError as exc:
            end = Unavailable(f"the watch stream broke ({_describe(exc)})")
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
            await self._on_message(_parse(payload))

    async def _add_deps(self) -> None:
        try:
            await self._read_unread()
        except Compacted:
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
            raise Unavailable(_stream_error(message))
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
                raise Unavailable(_describe(exc)) from exc
            if response.status_code == 200:
                return response.json()  # type: ignore[no-any-return]
            code, message = _error(response)
            if code == UNAUTHENTICATED and auth and self.username and attempt == 1:
                await self._authenticate()  # the token expired, or auth was reset
                continue
            if code == OUT_OF_RANGE and "compacted" in message:
                raise Compacted(message)
            raise Unavailable(message)
        raise AssertionError("unreachable")

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


# -- small helpers ---------------------------------------------------------------------------------


def _endpoints(configured: tuple[str, ...], tls: bool) -> list[str]:
    """The configured endpoints, else $ETCDCTL_ENDPOINTS; "host:port" gets a scheme."""
    raw = configured or (os.environ.get("ETCDCTL_ENDPOINTS", "") or DEFAULT_ENDPOINT,)
    scheme = "https://" if tls or os.environ.get("ETCDCTL_CACERT") else "http://"
    found = []
    for item in raw:
        for endpoint in item.split(","):
            endpoint = endpoint.strip().rstrip("/")
            if endpoint:
                found.append(endpoint if "://" in endpoint else scheme + endpoint)
    return found or [DEFAULT_ENDPOINT]


def _username(configured: str | None) -> tuple[str | None, str | None]:
    """(username, password from the environment): etcdctl's ETCDCTL_USER may be "name:password"."""
    password = os.environ.get("ETCDCTL_PASSWORD")
    if configured:
        return configured, password
    user, sep, inline = os.environ.get("ETCDCTL_USER", "").partition(":")
    return (user or None), (inline if sep else password)


def _keepalive() -> list[tuple[int, int, int]]:
    options = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    for name, value in (("TCP_KEEPIDLE", KEEPALIVE_IDLE), ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL),
                        ("TCP_KEEPCNT", KEEPALIVE_COUNT)):
        if hasattr(socket, name):  # Linux; elsewhere the system's keepalive timing applies
            options.append((socket.IPPROTO_TCP, getattr(socket, name), value))
    return options


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _kvs(reply: dict[str, Any]) -> dict[bytes, bytes]:
    return {base64.b64decode(kv["key"]): base64.b64decode(kv.get("value", "")) for kv in reply.get("kvs", ())}


def _parse(line: str) -> dict[str, Any]:
    try:
        message = json.loads(line)
    except ValueError as exc:
        raise Unavailable(f"the watch stream sent something that is not JSON ({exc})") from None
    if not isinstance(message, dict):
        raise Unavailable("the watch stream sent something that is not a JSON object")
    return message


def _stream_error(message: dict[str, Any]) -> str:
    error = message.get("error")
    if isinstance(error, dict):
        return str(error.get("message") or error)
    return f"unexpected watch reply {str(message)[:200]}"


def _error(response: httpx.Response) -> tuple[int, str]:
    """The gRPC code and message of a gateway error reply (a message never holds a secret)."""
    try:
        body = response.json()
        return int(body.get("code", 0)), str(body.get("message") or body.get("error") or "")
    except (ValueError, AttributeError):
        return 0, f"HTTP {response.status_code} from {response.request.url.path}"


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
