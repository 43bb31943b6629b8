"""When reloads fire: coalesced per reloader, paced by `wait.min` and `splay`, rolled back on failure.

The runner hands over every write that a reloader should follow (`add`). Each reloader fires as a
task of its own, so a slow reload delays neither renders nor other reloaders (issue 10); at most one
is in flight per reloader, and writes that arrive meanwhile get exactly one more. What a reload
*does* (signal, HTTP, command) is `confsync.reload`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from confsync import reload, write
from confsync.config import ReloaderConfig
from confsync.errors import ConfsyncError, WriteError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Written:
    """A write a reload has yet to follow: what to put back if the reload fails."""

    template: str
    target: write.Target
    change: write.Change
    rollback: bool


class Reloads:
    """The reloaders of one config: pending writes, pacing timers, reloads in flight, outcomes.

    `paced=False` (for `once`) fires at once, without `wait.min` spacing or `splay`: a one-shot run
    must not exit with a reload still to come, nor wait an hour of splay for it (issue 10).
    `describe(reloader, error)` is what may be logged of a failure (secrets: see Runner.safe_message).
    `targets` are reloaders of the caller's own beside the configured ones (`confsync exec`: `exec`).
    """

    def __init__(self, reloaders: dict[str, ReloaderConfig], targets: dict[str, Callable[[], Awaitable[str]]],
                 wait_min: float, *, paced: bool = True, kick: Callable[[], None],
                 describe: Callable[[str, ConfsyncError], str]) -> None:
        self.reloaders = reloaders
        self.targets = targets
        self.wait_min = wait_min
        self.paced = paced
        self.kick = kick  # wakes the runner's worker, which tells when all is settled
        self.describe = describe
        self.counts: dict[str, dict[str, int]] = {name: {"ok": 0, "failed": 0} for name in [*reloaders, *targets]}
        self._unreloaded: dict[str, list[Written]] = defaultdict(list)
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._last: dict[str, float] = {}
        self._closed = False

    @property
    def pending(self) -> bool:
        """Some write is not yet followed by its reload, or a reload is in flight."""
        return bool(self._unreloaded or self._tasks)

    def reconfigure(self, reloaders: dict[str, ReloaderConfig], wait_min: float) -> None:
        """A config reload (SIGHUP): reloaders gone are forgotten, new ones start from zero."""
        for name in set(self.reloaders) - set(reloaders):
            self.counts.pop(name, None)
            self._unreloaded.pop(name, None)
            timer = self._timers.pop(name, None)
            if timer:
                timer.cancel()
            task = self._tasks.get(name)
            if task:
                task.cancel()
        for name in reloaders:
            self.counts.setdefault(name, {"ok": 0, "failed": 0})
        self.reloaders, self.wait_min = reloaders, wait_min

    def add(self, name: str, written: Written) -> None:
        self._unreloaded[name].append(written)
        self._request(name)

    def _request(self, name: str) -> None:
        """Fire at most once per global `wait.min` window, after a random `splay` (consul-template#1671)."""
        if name in self._timers or name in self._tasks or self._closed:
            return
        if name not in self.reloaders and name not in self.targets:  # gone with a config reload
            self._unreloaded.pop(name, None)
            return  # already coming, or in flight: its end asks again for the writes it did not take
        splay = self.reloaders[name].splay if name in self.reloaders else 0.0
        delay = 0.0
        if self.paced:
            delay = max(0.0, self._last.get(name, -1e9) + self.wait_min - time.monotonic())
            delay += random.uniform(0, splay) if splay else 0.0
        if delay <= 0:
            self._start(name)
        else:
            self._timers[name] = asyncio.get_running_loop().call_later(delay, self._start, name)

    def _start(self, name: str) -> None:
        self._timers.pop(name, None)
        task = self._tasks[name] = asyncio.create_task(self._reload(name), name=f"reload {name}")
        task.add_done_callback(lambda _: self._done(name, task))

    def _done(self, name: str, task: asyncio.Task[None]) -> None:
        self._tasks.pop(name, None)
        if not task.cancelled() and task.exception():  # a bug of ours: say so, keep serving
            log.error("reload %s: internal error: %r", name, task.exception(),
                      extra={"event": "reload_failed", "reloader": name})
        if self._unreloaded.get(name):  # written while it was in flight: one more
            self._request(name)
        self.kick()

    async def close(self) -> None:
        """Stop: what was not delivered is counted and logged as failed (`once` must not exit 0)."""
        self._closed = True
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        for name in list(self._unreloaded):
            self.counts.setdefault(name, {"ok": 0, "failed": 0})["failed"] += 1
            log.error("reload %s not delivered: confsync stopped before it was done", name,
                      extra={"event": "reload_failed", "reloader": name})
        self._unreloaded.clear()

    async def _reload(self, name: str) -> None:
        writes = self._unreloaded.pop(name, [])
        self._last[name] = time.monotonic()
        try:
            if await self._fire(name):
                return
            rolled_back = await _roll_back(writes)
            if rolled_back:
                log.warning("rolled back %s after reload %s failed; reloading onto the previous version",
                            ", ".join(rolled_back), name, extra={"event": "rolled_back", "reloader": name})
                await self._fire(name)
        except asyncio.CancelledError:
            if writes:  # not delivered: `close` reports it
                self._unreloaded[name][:0] = writes
            raise

    async def _fire(self, name: str) -> bool:
        counts = self.counts.setdefault(name, {"ok": 0, "failed": 0})
        try:
            target = self.targets.get(name)
            done = await (target() if target else reload.fire(name, self.reloaders[name]))
        except ConfsyncError as exc:
            counts["failed"] += 1
            log.error("reload %s failed: %s (will retry at the next change)", name, self.describe(name, exc),
                      extra={"event": "reload_failed", "reloader": name})
            return False
        counts["ok"] += 1
        log.info("reload %s: %s", name, done, extra={"event": "reloaded", "reloader": name})
        return True


async def _roll_back(writes: list[Written]) -> list[str]:
    """Put back, for templates with `rollback: true`, the file the app had before these writes."""
    restored: list[str] = []
    for written in writes:
        # The first write of a template in the window holds the version to restore. A first
        # render has none: removing the file would leave the app nothing at its next start.
        if not written.rollback or written.template in restored or written.change.previous is None:
            continue
        try:
            await write.write(written.target, written.change.previous, guard=False)
        except WriteError as exc:
            log.error("%s: rollback failed: %s", written.template, exc,
                      extra={"event": "rollback_failed", "template": written.template})
            continue
        restored.append(written.template)
    return restored
