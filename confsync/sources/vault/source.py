"""The vault source's event-loop side: the token, and one task per secret (see the package doc)."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from confsync.sources import Dep, Missing, Sink
from confsync.sources.failures import internal_error
from confsync.sources.vault.auth import method_for
from confsync.sources.vault.auth.sink import write_token
from confsync.sources.vault.errors import (
    RATE_LIMITED,
    Problem,
    Refused,
    Unreachable,
    not_a_reply,
    problem_of,
    retry_after_of,
)
from confsync.sources.vault.life import TokenLife, life_from_auth, life_from_lookup, ttl_text
from confsync.sources.vault.options import VaultFunctions, VaultOptions
from confsync.sources.vault.secrets import MIN_DELAY, Mount, Secret, kv_path, lease_text, listing, parse

log = logging.getLogger(__name__)

DEFAULT_ADDRESS = "http://127.0.0.1:8200"  # the Vault CLI's default too
RENEW_AT = 2 / 3  # of a TTL: leaves a third for retries if a renewal fails
REFETCH_AT = (0.85, 0.90)  # of what is left of a lease that cannot be extended; jittered
BACKOFF_MAX = 30.0  # s: between tries to reach (or log in to) a server that is down
WORKERS = 8  # concurrent requests: enough to fetch many secrets at start-up in one go


class VaultSource:
    Options = VaultOptions
    functions = VaultFunctions
    secret = True  # templates using it hold secrets: their destinations default to private modes

    def __init__(self, name: str, options: VaultOptions, sink: Sink) -> None:
        self.name = name
        self.options = options
        self.sink = sink
        self.address = (options.address or os.environ.get("VAULT_ADDR") or DEFAULT_ADDRESS).rstrip("/")
        self.interval = options.static_secret_interval
        self._client: Any = None
        self._method = method_for(options.auth)
        self._executor: ThreadPoolExecutor | None = None
        self._tasks: dict[Dep, asyncio.Task[None]] = {}
        self._auth_task: asyncio.Task[None] | None = None
        self._mounts: dict[str, Mount] = {}
        self._ready = asyncio.Event()  # logged in, and the server answers
        self._check = asyncio.Event()  # a watcher saw trouble: the auth task looks again
        self._last_token = ""  # the token last logged in with (the client's is "" while none is good)
        self._token_replaced = asyncio.Event()  # set, then replaced, at each new token
        self._reconnected = asyncio.Event()  # set, then replaced, when the server is back
        self._down: str | None = None  # the reason last reported, while down
        self._denied: dict[Dep, str] = {}  # reasons already logged, so a retry loop logs once
        self._expiry: dict[Dep, float] = {}  # loop time at which each leased secret expires

    # -- the Source protocol

    async def start(self) -> None:
        import hvac  # here, not at module level: an unused backend costs no start-up time

        self._executor = ThreadPoolExecutor(WORKERS, thread_name_prefix=f"vault-{self.name}")
        self._client = hvac.Client(
            url=self.address, token="", timeout=self.options.timeout, verify=self._verify(),
            cert=self._client_cert(), namespace=self.options.namespace or os.environ.get("VAULT_NAMESPACE"),
        )
        self._client.adapter.session.hooks["response"].append(_note_retry_after)
        self._auth_task = asyncio.create_task(self._guarded(self._keep_authenticated),
                                              name=f"vault:{self.name}:auth")

    def watch(self, dep: Dep) -> None:
        if dep not in self._tasks:  # every new dep starts at once: their first reads run together
            self._tasks[dep] = asyncio.create_task(self._guarded(partial(self._follow, dep), dep),
                                                   name=f"vault:{dep}")

    def lease_remaining(self) -> dict[str, float]:
        """Seconds until each leased secret expires, for /metrics."""
        now = asyncio.get_running_loop().time()
        return {dep.path: max(0.0, end - now) for dep, end in self._expiry.items()}

    def unwatch(self, dep: Dep) -> None:
        # The lease is left alone: the application may still use the credential until it expires.
        task = self._tasks.pop(dep, None)
        if task:
            task.cancel()
        self._denied.pop(dep, None)
        self._expiry.pop(dep, None)

    async def close(self) -> None:
        tasks = [t for t in (self._auth_task, *self._tasks.values()) if t]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        if self._executor:
            self._executor.shutdown(wait=False, cancel_futures=True)
        if self._client:
            self._client.adapter.close()

    # -- settings from options and the environment

    def _verify(self) -> bool | str:
        tls = self.options.tls
        if not tls.verify:
            return False
        if tls.ca_file:
            return str(tls.ca_file)
        return os.environ.get("VAULT_CACERT") or True

    def _client_cert(self) -> tuple[str, str] | None:
        tls = self.options.tls
        if tls.cert_file and tls.key_file:
            return (str(tls.cert_file), str(tls.key_file))
        return None

    # -- requests

    async def _call(self, fn: Any, *args: Any, redact: tuple[str, ...] = (), **kwargs: Any) -> Any:
        """Run one blocking hvac call in a worker thread: a JSON object, or None for a 204 (a write
        that returns nothing). Its failures, and any other body, come back as `Problem`s."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, partial(self._request, fn, args, kwargs, redact))

    call = _call  # what auth methods see of the source (auth.base.Vault): call, client, set_token

    @property
    def client(self) -> Any:
        return self._client

    def _request(self, fn: Any, args: Any, kwargs: Any, redact: tuple[str, ...]) -> dict[str, Any] | None:
        """In a worker thread: `_last_reply` is this thread's, so its Retry-After is this request's."""
        _last_reply.retry_after = None
        try:
            body = fn(*args, **kwargs)
        except Exception as exc:
            problem = problem_of(exc, self.address, redact, retry_after_of(_last_reply.retry_after, time.time()))
            if problem is None:
                raise
            raise problem from None  # hvac's own text holds URLs and bodies: drop it
        if isinstance(body, dict):
            return body
        if getattr(body, "status_code", None) == 204:
            return None
        raise not_a_reply(self.address, body)  # a proxy's HTML page, a JSON list… (issue 18)

    # -- connection state

    def _unreachable(self, reason: str) -> None:
        self._ready.clear()
        self._check.set()
        self._report_down(reason)

    def _up(self) -> None:
        if self._down is not None:
            self._down = None
            self._mounts.clear()  # a restarted server may mount other engines
            self.sink.source_status(self.name, True)
            _fire(self, "_reconnected")
        self._ready.set()

    async def _token_rejected(self, token: str) -> bool:
        """After a 403 with `token`: is it the token (expired, revoked) rather than a policy? Then
        log in again. True when the request is worth retrying."""
        if self._client.token != token:
            return True  # replaced meanwhile: retry with the new one
        try:
            await self._call(self._client.auth.token.lookup_self)
        except Refused as exc:
            if exc.status != 403:
                return False
            if self._client.token == token:  # not already replaced by a concurrent check
                log.info("source %s: token no longer valid: logging in again", self.name,
                         extra={"event": "token_invalid", "source": self.name})
                self._client.token = ""
                self._ready.clear()
                self._check.set()
            return True
        except Unreachable as exc:
            self._unreachable(exc.reason)
            return True
        return bool(self._client.token != token)

    # -- the token

    async def _keep_authenticated(self) -> None:
        import tenacity

        while True:
            self._check.clear()
            backoff = tenacity.wait_exponential_jitter(initial=0.2, max=BACKOFF_MAX, jitter=0.5)

            def wait(state: Any, backoff: Any = backoff) -> float:
                # A 429's Retry-After, when longer than our own back-off (issue 18).
                return max(float(backoff(state)), float(state.outcome.exception().retry_after))

            retrying = tenacity.AsyncRetrying(
                wait=wait,
                retry=tenacity.retry_if_exception_type(Problem),
                before_sleep=self._report_attempt,
            )
            async for attempt in retrying:
                with attempt:
                    life = await self._authenticate()
                    await self._sink()  # a sink that cannot be written keeps the source down
            self._up()
            await self._keep_token(life)

    def _report_attempt(self, state: Any) -> None:
        self._ready.clear()
        self._report_down(state.outcome.exception().reason)

    def _report_down(self, reason: str) -> None:
        if self._down != reason:
            self._down = reason
            self.sink.source_status(self.name, False, reason)

    async def _authenticate(self) -> TokenLife:
        """Keep the token we have while it is still good (a reconnection); else log in."""
        if self._client.token:
            try:
                return life_from_lookup(await self._call(self._client.auth.token.lookup_self))
            except Refused as exc:
                if exc.status != 403:
                    raise
                log.info("source %s: token no longer valid: logging in again", self.name,
                         extra={"event": "token_invalid", "source": self.name})
        return await self._login()

    async def _login(self) -> TokenLife:
        life = await self._method.login(self)
        log.info("source %s: logged in (%s; token ttl %s)", self.name, self.options.auth.method, ttl_text(life),
                 extra={"event": "logged_in", "source": self.name})
        return life

    def _set_token(self, token: str) -> None:
        self._client.token = token
        if token != self._last_token:  # not the same token read again (token / token_file)
            self._last_token = token
            _fire(self, "_token_replaced")  # leases taken with the old token die with it

    set_token = _set_token

    async def _sink(self) -> None:
        sink = self.options.auth.sink
        if sink and await write_token(sink, self, self._client.token):
            log.info("source %s: token written to %s", self.name, sink.path,
                     extra={"event": "token_sink_written", "source": self.name})

    async def _keep_token(self, life: TokenLife) -> None:
        """Renew the token at 2/3 of its TTL while that extends it; return to log in again (or
        to look again after a watcher saw trouble)."""
        loop = asyncio.get_running_loop()
        extendable = life.renewable
        while True:
            if not life.ttl:  # never expires: only trouble wakes us
                await self._check.wait()
                return
            at = RENEW_AT if extendable else random.uniform(*REFETCH_AT)
            if await _sleep(life.ttl * at, self._check):
                return
            if not extendable:
                log.info("source %s: token reaches its max TTL: logging in again", self.name,
                         extra={"event": "token_expiring", "source": self.name})
                self._client.token = ""
                return
            start = loop.time()
            try:
                renewed = await self._call(self._client.auth.token.renew_self, increment=int(life.full))
            except Unreachable as exc:
                self._unreachable(exc.reason)
                return
            except Refused as exc:
                log.info("source %s: token renewal refused (%s): logging in again", self.name, exc.reason,
                         extra={"event": "token_renewal_failed", "source": self.name})
                self._client.token = ""
                return
            life = life_from_auth(renewed, full=life.full)
            if life.ttl:  # counted from when it was asked (0 would mean "never expires")
                life = TokenLife(max(life.ttl - (loop.time() - start), MIN_DELAY), life.renewable, life.full)
            extendable = life.renewable and life.ttl + 1 >= life.full  # shorter than asked: capped
            log.debug("source %s: token renewed (ttl %s)", self.name, ttl_text(life),
                      extra={"event": "token_renewed", "source": self.name})
            try:
                await self._sink()
            except Problem as exc:  # the file still holds this same token (or an older wrapping)
                log.error("source %s: %s", self.name, exc.reason,
                          extra={"event": "token_sink_failed", "source": self.name})

    # -- the secrets

    async def _follow(self, dep: Dep) -> None:
        """Deliver `dep` now, then keep it fresh until unwatched."""
        failures = 0
        while True:
            await self._ready.wait()
            token, token_replaced, reconnected = self._client.token, self._token_replaced, self._reconnected
            try:
                secret = await self._fetch(dep)
            except Unreachable as exc:
                if exc.status != RATE_LIMITED:
                    self._unreachable(exc.reason)
                    continue
                # A quota: the server is there (the token need not be checked), and asks us to wait.
                failures += 1
                self._report_down(exc.reason)
                await asyncio.sleep(max(exc.retry_after * random.uniform(0.8, 1.0), _backoff(failures)))
                continue
            except Refused as exc:
                if exc.status == 403 and await self._token_rejected(token):
                    continue
                failures += 1
                self._refused(dep, exc.reason)
                # A new token may carry other policies: try again with it at once.
                await _sleep(min(2.0 ** (failures - 1), self.interval), reconnected, token_replaced)
                continue
            failures = 0
            if self._down is not None and self._ready.is_set():  # back from a rate limit
                self._up()
            if self._denied.pop(dep, None):
                log.info("source %s: %s readable again", self.name, dep,
                         extra={"event": "secret_available", "source": self.name, "key": str(dep)})
            log.debug("source %s: read %s (%s)", self.name, dep, lease_text(secret),
                      extra={"event": "secret_read", "source": self.name, "key": str(dep)})
            self.sink.update(dep, secret.fields["keys"] if dep.kind == "list" else secret.fields)
            if not secret.leased:
                await _sleep(self.interval, reconnected)
            else:
                await self._keep_lease(dep, secret, token_replaced, reconnected)

    def _refused(self, dep: Dep, reason: str) -> None:
        self.sink.update(dep, Missing(reason))
        if self._denied.get(dep) != reason:
            self._denied[dep] = reason
            log.warning("source %s: %s %s (retrying)", self.name, dep, reason,
                        extra={"event": "secret_unavailable", "source": self.name, "key": str(dep)})

    async def _fetch(self, dep: Dep) -> Secret:
        mount = await self._mount_of(dep.path)
        if dep.kind == "list":
            return await self._list(dep, mount)
        params = {k: list(v) if isinstance(v, tuple) else v for k, v in dep.params}
        redact = tuple(str(v) for v in params.values())
        if mount and mount.kv:
            return parse(await self._read_kv(dep, mount, params), mount)
        if params:  # an engine that issues something on a write: pki/issue/<role>, transit…
            body = await self._call(self._client.adapter.post, f"/v1/{dep.path}", json=params, redact=redact)
        else:
            body = await self._call(self._client.adapter.get, f"/v1/{dep.path}")
        return parse(body, mount)

    async def _list(self, dep: Dep, mount: Mount | None) -> Secret:
        path = kv_path(dep.path, mount, "list") if mount else dep.path
        try:
            return listing(await self._call(self._client.adapter.get, f"/v1/{path}", params={"list": "true"}))
        except Refused as exc:
            if exc.status == 404:  # no key under it: Vault's folders exist only through their keys
                return Secret({"keys": []})
            raise

    async def _read_kv(self, dep: Dep, mount: Mount, params: dict[str, Any]) -> Any:
        # Never a write to KV: parameters there would overwrite the secret itself.
        query = {}
        if mount.kv == 2 and set(params) <= {"version"}:
            query = {k: str(v) for k, v in params.items()}
        elif params:
            raise Refused("KV secrets take no parameters (KV v2: only version)")
        return await self._call(self._client.adapter.get, f"/v1/{kv_path(dep.path, mount)}", params=query)

    async def _mount_of(self, path: str) -> Mount | None:
        """The mount holding `path`, from the cache or asked once; None when it cannot be told (the
        read that follows then says why)."""
        known = [m for p, m in self._mounts.items() if (path + "/").startswith(p)]
        if known:
            return max(known, key=lambda m: len(m.path))
        try:
            body = await self._call(self._client.adapter.get, f"/v1/sys/internal/ui/mounts/{path}")
        except Refused:
            return None
        data = (body.get("data") or {}) if isinstance(body, dict) else {}
        if not data.get("path"):
            return None
        kv = 0
        if data.get("type") in ("kv", "generic"):
            kv = 2 if str((data.get("options") or {}).get("version")) == "2" else 1
        mount = Mount(data["path"], kv)
        self._mounts[mount.path] = mount
        return mount

    async def _keep_lease(self, dep: Dep, secret: Secret, token_replaced: asyncio.Event,
                          reconnected: asyncio.Event) -> None:
        """Renew the lease while that extends it; return when the secret must be fetched anew."""
        loop = asyncio.get_running_loop()
        start, ttl = loop.time(), secret.ttl
        self._expiry[dep] = start + ttl
        extendable = secret.renewable and bool(secret.lease_id)
        # A lease dies with the token that took it; a certificate without a lease does not.
        dies_with_token = (token_replaced,) if secret.lease_id else ()
        while True:
            if not extendable:
                left = start + ttl - loop.time()
                await _sleep(left * random.uniform(*REFETCH_AT), *dies_with_token)
                return
            woke = await _sleep(start + ttl * RENEW_AT - loop.time(), token_replaced, reconnected)
            if woke is token_replaced:
                return
            try:
                renewed = await self._call(self._client.sys.renew_lease, lease_id=secret.lease_id,
                                           increment=int(secret.ttl))
            except Unreachable as exc:
                self._unreachable(exc.reason)
                await self._ready.wait()
                if loop.time() >= start + ttl:
                    return
                reconnected = self._reconnected
                continue
            except Refused as exc:  # expired, revoked, or lost by a restarted server
                log.info("source %s: lease of %s not renewed (%s): fetching it anew", self.name, dep,
                         exc.reason, extra={"event": "lease_lost", "source": self.name, "key": str(dep)})
                return
            renewed = renewed or {}  # a 204: nothing renewed
            start, ttl = loop.time(), float(renewed.get("lease_duration") or 0)
            self._expiry[dep] = start + ttl
            # Asked for the full lease and got less: the max TTL is near, renewals cannot help.
            extendable = bool(renewed.get("renewable")) and ttl >= secret.ttl
            reconnected = self._reconnected
            log.debug("source %s: renewed the lease of %s (ttl %gs%s)", self.name, dep, ttl,
                      "" if extendable else ", at its max TTL: fetched anew before it expires",
                      extra={"event": "lease_renewed", "source": self.name, "key": str(dep)})

    async def _guarded(self, work: Callable[[], Awaitable[None]], dep: Dep | None = None) -> None:
        """No task of the source may die (issue 18): a failure nothing else caught is said, at error,
        as the reason its secret (or the source) is unavailable, and the work starts over."""
        failures = 0
        while True:
            try:
                await work()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                reason = f"{internal_error(exc)}; retrying"
                log.error("source %s: %s%s", self.name, f"{dep}: " if dep else "", reason,
                          extra={"event": "source_internal_error", "source": self.name})
                if dep is None:
                    self._report_down(reason)
                else:
                    self.sink.update(dep, Missing(reason))
                await asyncio.sleep(_backoff(failures))


# -- small helpers ------------------------------------------------------------------------------

_last_reply = threading.local()  # per worker thread: the Retry-After of its last 429


def _note_retry_after(response: Any, *args: Any, **kwargs: Any) -> None:
    """A requests hook, run in the thread that made the request."""
    if response.status_code == RATE_LIMITED:
        _last_reply.retry_after = response.headers.get("Retry-After")


def _backoff(failures: int) -> float:
    """Exponential with full jitter, from MIN_DELAY up to BACKOFF_MAX."""
    return random.uniform(MIN_DELAY, min(BACKOFF_MAX, MIN_DELAY * 2.0 ** failures))


def _fire(source: VaultSource, attr: str) -> None:
    """Wake whoever waits on the event in `attr`, and put a fresh one in its place."""
    old = getattr(source, attr)
    setattr(source, attr, asyncio.Event())
    old.set()


async def _sleep(delay: float, *events: asyncio.Event) -> asyncio.Event | None:
    """Sleep `delay` seconds, or less if one of `events` is set: then return it."""
    delay = max(delay, MIN_DELAY)
    if not events:
        await asyncio.sleep(delay)
        return None
    waiters = {asyncio.ensure_future(e.wait()): e for e in events}
    try:
        done, _ = await asyncio.wait(waiters, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
    return waiters[next(iter(done))] if done else None
