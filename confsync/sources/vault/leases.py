"""The vault source's secrets half: one task per secret fetches it (or adopts it from the state
file), then keeps it fresh: KV re-read, leases renewed, the rest fetched anew before it expires."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

from confsync.sources import Dep, Missing, Sink
from confsync.sources.vault.errors import RATE_LIMITED, Refused, Unreachable
from confsync.sources.vault.secrets import MIN_DELAY, Mount, Secret, kv_path, lease_text, listing, parse
from confsync.sources.vault.state import Held, State

log = logging.getLogger(__name__)

RENEW_AT = 2 / 3  # of a TTL: leaves a third for retries if a renewal fails
REFETCH_AT = (0.85, 0.90)  # of what is left of a lease that cannot be extended; jittered
BACKOFF_MAX = 30.0  # s: between tries to reach (or log in to) a server that is down


class LeaseKeeping:
    """Mixed into VaultSource, which provides what is declared here."""

    name: str
    sink: Sink
    interval: float
    _client: Any
    _ready: asyncio.Event
    _token_replaced: asyncio.Event
    _reconnected: asyncio.Event
    _down: str | None
    _denied: dict[Dep, str]
    _expiry: dict[Dep, float]
    _mounts: dict[str, Mount]
    _mount_lookups: dict[str, asyncio.Future[None]]
    _state: State

    async def _call(self, fn: Any, *args: Any, redact: tuple[str, ...] = (), **kwargs: Any) -> Any:
        raise NotImplementedError

    def _unreachable(self, reason: str) -> None:
        raise NotImplementedError

    def _up(self) -> None:
        raise NotImplementedError

    def _report_down(self, reason: str) -> None:
        raise NotImplementedError

    async def _token_rejected(self, token: str) -> bool:
        raise NotImplementedError

    def _save_soon(self) -> None:
        raise NotImplementedError

    async def _follow(self, dep: Dep) -> None:
        """Deliver `dep` now, then keep it fresh until unwatched."""
        failures = 0
        adopting = True  # the first time round only: later rounds are due to an end, a loss or a new token
        while True:
            await self._ready.wait()
            token, token_replaced, reconnected = self._client.token, self._token_replaced, self._reconnected
            adopted = self._adopt(dep) if adopting else None
            adopting = False
            try:
                secret = adopted or await self._fetch(dep)
            except Unreachable as exc:
                if exc.status != RATE_LIMITED:
                    self._unreachable(exc.reason)
                    continue
                # A quota: the server is there (the token need not be checked), and asks us to wait.
                failures += 1
                self._report_down(exc.reason)
                await asyncio.sleep(max(exc.retry_after * random.uniform(0.8, 1.0), backoff(failures)))
                continue
            except Refused as exc:
                if exc.status == 403 and await self._token_rejected(token):
                    continue
                failures += 1
                self._refused(dep, exc.reason)
                # A new token may carry other policies: try again with it at once.
                await sleep(min(2.0 ** (failures - 1), self.interval), reconnected, token_replaced)
                continue
            failures = 0
            if self._down is not None and self._ready.is_set():  # back from a rate limit
                self._up()
            if self._denied.pop(dep, None):
                log.info("source %s: %s readable again", self.name, dep,
                         extra={"event": "secret_available", "source": self.name, "key": str(dep)})
            if not adopted:
                log.debug("source %s: read %s (%s)", self.name, dep, lease_text(secret),
                          extra={"event": "secret_read", "source": self.name, "key": str(dep)})
                self._hold(dep, secret)
            self.sink.update(dep, secret.fields["keys"] if dep.kind == "list" else secret.fields)
            if not secret.leased:
                await sleep(self.interval, reconnected)
            else:
                await self._keep_lease(dep, secret, token_replaced, reconnected)

    def _refused(self, dep: Dep, reason: str) -> None:
        self.sink.update(dep, Missing(reason))
        if self._denied.get(dep) != reason:
            self._denied[dep] = reason
            log.warning("source %s: %s %s (retrying)", self.name, dep, reason,
                        extra={"event": "secret_unavailable", "source": self.name, "key": str(dep)})

    # -- the state file's side

    def _adopt(self, dep: Dep) -> Secret | None:
        """The secret as an earlier run left it in the state file, when it is still good: a lease
        (of the token we hold now: the others were dropped at login) that has time left, or a
        certificate with more than the refetch margin left (else it would be fetched anew at once).
        The state file holds it under the exact request (path and every parameter: common name,
        SANs, TTL…), with the private key it was issued with, so it answers this request only."""
        held = self._state.secrets.get((dep.path, dep.params))
        if held is None:
            return None
        left = held.left()
        margin = MIN_DELAY * 5 if held.renewable else held.term * (1 - REFETCH_AT[0])
        if left <= margin:
            return None
        what = f"lease, {left:.0f}s left" if held.lease_id else f"expires in {left:.0f}s"
        log.info("source %s: %s taken over from the state file (%s)", self.name, dep, what,
                 extra={"event": "secret_adopted", "source": self.name, "key": str(dep)})
        return Secret(held.fields, held.lease_id, left, held.renewable, held.term, held.duration)

    def _hold(self, dep: Dep, secret: Secret) -> None:
        """Keep a freshly fetched secret for the state file (and for revoke_on_shutdown)."""
        key = (dep.path, dep.params)
        if not secret.leased:
            if self._state.secrets.pop(key, None):
                self._save_soon()
            return
        self._state.secrets[key] = Held(secret.fields, time.time() + secret.ttl, secret.ttl, secret.lease_id,
                                        secret.renewable, secret.ttl)
        self._save_soon()

    def _renewed(self, dep: Dep, lease_id: str, ttl: float, renewable: bool) -> None:
        held = self._state.secrets.get((dep.path, dep.params))
        if held and held.lease_id == lease_id:
            held.expires_at, held.term, held.renewable = time.time() + ttl, ttl, renewable
            self._save_soon()

    # -- requests

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
        # Secrets asked for together mostly share a mount: while one lookup under the same first
        # segment is under way the others wait for it, so that 100 templates cost one lookup, not
        # 100 (issue 16). What it does not answer each then asks for itself.
        top = path.split("/", 1)[0]
        if top in self._mount_lookups:
            await asyncio.shield(self._mount_lookups[top])
        known = [m for p, m in self._mounts.items() if (path + "/").startswith(p)]
        if known:
            return max(known, key=lambda m: len(m.path))
        first = top not in self._mount_lookups
        if first:
            self._mount_lookups[top] = asyncio.get_running_loop().create_future()
        try:
            body = await self._call(self._client.adapter.get, f"/v1/sys/internal/ui/mounts/{path}")
        except Refused:
            return None
        finally:
            if first:
                self._mount_lookups.pop(top).set_result(None)
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
        term, increment = secret.term or ttl, secret.duration or ttl
        self._expiry[dep] = start + ttl
        extendable = secret.renewable and bool(secret.lease_id)
        # A lease dies with the token that took it; a certificate without a lease does not.
        dies_with_token = (token_replaced,) if secret.lease_id else ()
        while True:
            end = start + ttl
            if not extendable:  # at 85–90% of the term: 10–15% of it left
                await sleep(end - term * (1 - random.uniform(*REFETCH_AT)) - loop.time(), *dies_with_token)
                return
            woke = await sleep(end - term * (1 - RENEW_AT) - loop.time(), token_replaced, reconnected)
            if woke is token_replaced:
                return
            if dies_with_token and not self._client.token:
                # The token could not be renewed and a login is under way: the lease dies with the
                # old token, and a renewal now would be refused for want of one.
                await token_replaced.wait()
                return
            token = self._client.token
            try:
                renewed = await self._call(self._client.sys.renew_lease, lease_id=secret.lease_id,
                                           increment=int(increment))
            except Unreachable as exc:
                self._unreachable(exc.reason)
                await self._ready.wait()
                if loop.time() >= end:
                    return
                reconnected = self._reconnected
                continue
            except Refused as exc:  # expired, revoked, or lost by a restarted server
                if exc.status == 403 and await self._token_rejected(token):
                    return  # the token's end (its max TTL, as its re-login races this renewal): fetched anew
                log.info("source %s: lease of %s not renewed (%s): fetching it anew", self.name, dep,
                         exc.reason, extra={"event": "lease_lost", "source": self.name, "key": str(dep)})
                return
            renewed = renewed or {}  # a 204: nothing renewed
            start, ttl = loop.time(), float(renewed.get("lease_duration") or 0)
            term = ttl
            self._expiry[dep] = start + ttl
            # Asked for the full lease and got less: the max TTL is near, renewals cannot help.
            extendable = bool(renewed.get("renewable")) and ttl >= increment
            self._renewed(dep, secret.lease_id, ttl, extendable)
            reconnected = self._reconnected
            log.debug("source %s: renewed the lease of %s (ttl %gs%s)", self.name, dep, ttl,
                      "" if extendable else ", at its max TTL: fetched anew before it expires",
                      extra={"event": "lease_renewed", "source": self.name, "key": str(dep)})


def backoff(failures: int) -> float:
    """Exponential with full jitter, from MIN_DELAY up to BACKOFF_MAX."""
    return random.uniform(MIN_DELAY, min(BACKOFF_MAX, MIN_DELAY * 2.0 ** failures))


async def sleep(delay: float, *events: asyncio.Event) -> asyncio.Event | None:
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

