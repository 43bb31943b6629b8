"""When reloads fire: coalesced per reloader, paced by `wait.min` and `splay`, rolled back on failure.

The runner hands over every write that a reloader should follow (`add`); the reloader fires once for
all writes that arrived before it was due, however many templates changed. What a reload *does*
(signal, HTTP, command) is `confsync.reload`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import defaultdict
from collections.abc import Callable
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
    """The reloaders of one config: pending writes, pacing timers and outcome counters."""

    def __init__(self, reloaders: dict[str, ReloaderConfig], wait_min: float, kick: Callable[[], None]) -> None:
        self.reloaders = reloaders
        self.wait_min = wait_min
        self.kick = kick  # wakes the runner's worker when a paced reload becomes due
        self.counts: dict[str, dict[str, int]] = {name: {"ok": 0, "failed": 0} for name in reloaders}
        self._unreloaded: dict[str, list[Written]] = defaultdict(list)
        self._due: dict[str, None] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._last: dict[str, float] = {}

    @property
    def pending(self) -> bool:
        """Some write is not yet followed by its reload."""
        return bool(self._unreloaded)

    def add(self, name: str, written: Written) -> None:
        self._unreloaded[name].append(written)
        self._request(name)

    def _request(self, name: str) -> None:
        """Fire at most once per global `wait.min` window, after a random `splay` (consul-template#1671)."""
        if name in self._timers or name in self._due:
            return  # already coming: this write rides along
        cfg = self.reloaders[name]
        now = time.monotonic()
        delay = max(0.0, self._last.get(name, -1e9) + self.wait_min - now)
        delay += random.uniform(0, cfg.splay) if cfg.splay else 0.0
        if delay <= 0:
            self._due[name] = None
        else:
            self._timers[name] = asyncio.get_running_loop().call_later(delay, self._ready, name)

    def _ready(self, name: str) -> None:
        del self._timers[name]
        self._due[name] = None
        self.kick()

    async def fire_due(self) -> None:
        due, self._due = list(self._due), {}
        for name in due:
            await self._reload(name)

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()

    async def _reload(self, name: str) -> None:
        writes = self._unreloaded.pop(name, [])
        self._last[name] = time.monotonic()
        if await self._fire(name):
            return
        rolled_back = await _roll_back(writes)
        if rolled_back:
            log.warning("rolled back %s after reload %s failed; reloading onto the previous version",
                        ", ".join(rolled_back), name, extra={"event": "rolled_back", "reloader": name})
            await self._fire(name)

    async def _fire(self, name: str) -> bool:
        try:
            done = await reload.fire(name, self.reloaders[name])
        except ConfsyncError as exc:
            self.counts[name]["failed"] += 1
            log.error("reload %s failed: %s (will retry at the next change)", name, exc,
                      extra={"event": "reload_failed", "reloader": name})
            return False
        self.counts[name]["ok"] += 1
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
