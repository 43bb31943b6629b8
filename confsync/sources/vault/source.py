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
from pathlib import Path
from typing import Any

from confsync.errors import WriteError
from confsync.sources import Dep, Missing, Sink
from confsync.sources.failures import internal_error
from confsync.sources.vault.auth import method_for
from confsync.sources.vault.auth.base import GivenToken
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
from confsync.sources.vault.leases import BACKOFF_MAX, REFETCH_AT, RENEW_AT, LeaseKeeping, backoff, sleep
from confsync.sources.vault.life import TokenLife, life_from_auth, life_from_lookup, ttl_text
from confsync.sources.vault.options import VaultFunctions, VaultOptions
from confsync.sources.vault.secrets import MIN_DELAY, Mount
from confsync.sources.vault.state import State, dump, identity, load, read_key
from confsync.write import SECRET_MODE, Target, clear_foreign, write

log = logging.getLogger(__name__)

DEFAULT_ADDRESS = "http://127.0.0.1:8200"  # the Vault CLI's default too
WORKERS = 8  # concurrent requests: enough to fetch many secrets at start-up in one go


class VaultSource(LeaseKeeping):
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
        self._mount_lookups: dict[str, asyncio.Future[None]] = {}  # first path segment → lookup under way
        self._ready = asyncio.Event()  # logged in, and the server answers
        self._check = asyncio.Event()  # a watcher saw trouble: the auth task looks again
        self._last_token = ""  # the token last logged in with (the client's is "" while none is good)
        self._token_replaced = asyncio.Event()  # set, then replaced, at each new token
        self._reconnected = asyncio.Event()  # set, then replaced, when the server is back
        self._down: str | None = None  # the reason last reported, while down
        self._denied: dict[Dep, str] = {}  # reasons already logged, so a retry loop logs once
        self._expiry: dict[Dep, float] = {}  # loop time at which each leased secret expires
        # What the state file keeps (state.py): the token (if ours), its accessor and the leases it took.
        self._state = State()
        self._state_key: bytes | None = None
        self._identity = identity(name, self.address, options.namespace or os.environ.get("VAULT_NAMESPACE") or "",
                                  options.auth)
        self._adopting = False  # the state file's token is being tried
        self._ours = not isinstance(self._method, GivenToken)  # logged in for: ours to keep and to revoke
        self._dirty = False
        self._saving: asyncio.Task[None] | None = None

    # -- the Source protocol

    async def start(self) -> None:
        import hvac  # here, not at module level: an unused backend costs no start-up time

        if self.options.state_file:
            self._state_key = read_key(self.options.state_key_file, self.options.state_key_env)
            self._state = load(self.options.state_file, self._state_key, self._identity)
            self._adopting = bool(self._state.token) and self._ours
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
        if self._saving:
            await self._saving
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
        """Keep the token we have while it is still good (a reconnection, or the state file's
        token: an init container's, for its sidecar); else log in."""
        if self._adopting and not self._client.token:
            self._set_token(self._state.token)
        if self._client.token:
            try:
                life = life_from_lookup(await self._call(self._client.auth.token.lookup_self))
            except Refused as exc:
                if exc.status != 403:
                    raise
                log.info("source %s: %s no longer valid: logging in again", self.name,
                         "the state file's token is" if self._adopting else "token",
                         extra={"event": "token_invalid", "source": self.name})
            else:
                if not self._adopting:
                    return life
                self._adopting = False
                if life.accessor == self._state.accessor:
                    log.info("source %s: took over the state file's token (token ttl %s)", self.name,
                             ttl_text(life), extra={"event": "token_adopted", "source": self.name})
                    return life
                log.warning("state_file %s: its token is not the one it names (altered?): logging in",
                            self.options.state_file, extra={"event": "state_ignored", "source": self.name})
            self._adopting = False
        return self._known(await self._login())

    def _known(self, life: TokenLife) -> TokenLife:
        """A new token: the state file's leases were taken with the old one, and die with it."""
        if life.accessor != self._state.accessor:
            self._state.secrets = {k: held for k, held in self._state.secrets.items() if not held.lease_id}
            self._state.accessor = life.accessor
        self._state.token = self._client.token if self._ours else ""
        self._save_soon()
        return life

    async def _login(self) -> TokenLife:
        life = await self._method.login(self)
        log.info("source %s: logged in (%s; token ttl %s)", self.name, self.options.auth.method, ttl_text(life),
                 extra={"event": "logged_in", "source": self.name})
        return life

    # -- the state file, and giving back at shutdown

    def _save_soon(self) -> None:
        """Write the state file once the changes of this turn of the event loop are made."""
        if not self.options.state_file:
            return
        self._dirty = True
        if self._saving is None or self._saving.done():
            self._saving = asyncio.create_task(self._save(self.options.state_file))

    async def _save(self, path: Path) -> None:
        while self._dirty:
            await asyncio.sleep(0)
            self._dirty = False
            try:
                clear_foreign(path)
                await write(Target(path, perms=SECRET_MODE, create_dirs=False, secret=True),
                            dump(self._state, self._state_key, self._identity))
            except WriteError as exc:
                log.warning("source %s: cannot write state_file: %s", self.name, exc.message,
                            extra={"event": "state_write_failed", "source": self.name})

    async def shutdown(self) -> None:
        """`run` and `exec` stop for good: with revoke_on_shutdown, give back our token (Vault revokes
        the leases taken with it), or each lease when the token is not ours (VAULT_TOKEN, token_file)."""
        if not self.options.revoke_on_shutdown or self._client is None:
            return
        tasks = [t for t in (self._auth_task, *self._tasks.values()) if t]
        for task in tasks:  # no renewal or new login races the revocation
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        leases = {key: held for key, held in self._state.secrets.items() if held.lease_id}
        if self._ours and self._client.token:
            try:
                await self._call(self._client.auth.token.revoke_self)
            except Problem as exc:
                log.warning("source %s: could not revoke the token: %s", self.name, exc.reason,
                            extra={"event": "revoke_failed", "source": self.name})
                return
            self._state.token = ""
            revoked = list(leases)
        else:  # all at once: the pod's grace period is short, and a dead server would make each one wait
            done = await asyncio.gather(*(self._call(self._client.sys.revoke_lease, lease_id=held.lease_id)
                                          for held in leases.values()), return_exceptions=True)
            revoked = []
            for (key, held), outcome in zip(leases.items(), done, strict=True):
                if isinstance(outcome, Problem):
                    log.warning("source %s: could not revoke the lease of %s: %s (it ends in %.0fs)", self.name,
                                key[0], outcome.reason, held.left(),
                                extra={"event": "revoke_failed", "source": self.name})
                elif isinstance(outcome, BaseException):
                    raise outcome
                else:
                    revoked.append(key)
        for key in revoked:
            del self._state.secrets[key]
        log.info("source %s: revoked %s%d lease(s)", self.name, "the token and its " if self._ours else "",
                 len(revoked), extra={"event": "revoked", "source": self.name})
        self._save_soon()

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
            if await sleep(life.ttl * at, self._check):
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
                await asyncio.sleep(backoff(failures))


# -- small helpers ------------------------------------------------------------------------------

_last_reply = threading.local()  # per worker thread: the Retry-After of its last 429


def _note_retry_after(response: Any, *args: Any, **kwargs: Any) -> None:
    """A requests hook, run in the thread that made the request."""
    if response.status_code == RATE_LIMITED:
        _last_reply.retry_after = response.headers.get("Retry-After")


def _fire(source: VaultSource, attr: str) -> None:
    """Wake whoever waits on the event in `attr`, and put a fresh one in its place."""
    old = getattr(source, attr)
    setattr(source, attr, asyncio.Event())
    old.set()
