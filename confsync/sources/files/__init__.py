"""The `files` source: a directory tree, where a key is a relative path and its value the file's text.

The embedded default: it needs no server, and it reads Kubernetes ConfigMap and Secret volumes, where
each key is a symlink into `..data`, itself a symlink the kubelet swaps atomically to a new
`..<timestamp>` directory. Entries whose names start with `..` are the kubelet's, never keys.
Changes arrive through inotify, read on the event loop (`inotify.py`), not polling.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import os
from dataclasses import dataclass

from confsync.config import RelPath
from confsync.sources import Dep, Functions, Sink
from confsync.sources.files import inotify
from confsync.sources.files.read import read

__all__ = ["FilesOptions", "FilesSource", "read"]

log = logging.getLogger(__name__)

# While the root is missing or cannot be watched, look again this often.
RETRY = 1.0
# Changes are read this long after the first of a burst, so that a script writing several files
# lands as one change (watchfiles grouped for 10-20 ms; this costs ~2 ms of latency); `wait` in the
# config groups longer bursts.
GROUP = 0.001


@dataclass(frozen=True)
class FilesOptions:
    root: RelPath
    secret: bool = False  # a Secret volume: files 0600 by default, values redacted from diffs and errors


class FilesSource:
    Options = FilesOptions
    functions = Functions

    def __init__(self, name: str, options: FilesOptions, sink: Sink) -> None:
        self.name = name
        self.root = options.root
        self.secret = options.secret
        self.sink = sink
        self.deps: set[Dep] = set()
        self._index = _Index()
        self._unread: set[Dep] = set()
        self._tree: inotify.Tree | None = None
        self._retry: asyncio.Task[None] | None = None
        self._pending: set[str] = set()
        self._group_timer: asyncio.TimerHandle | None = None
        self._stop = asyncio.Event()

    async def start(self) -> None:
        # Watching starts before any dependency is read, so no change can slip in between.
        if not self._open():
            self._retry = asyncio.create_task(self._reopen(), name=f"files:{self.name}")

    def watch(self, dep: Dep) -> None:
        self.deps.add(dep)
        self._index.add(dep)
        if not self._unread:
            asyncio.get_running_loop().call_soon(self._read_unread)
        self._unread.add(dep)

    def unwatch(self, dep: Dep) -> None:
        self.deps.discard(dep)
        self._index.discard(dep)
        self._unread.discard(dep)

    async def close(self) -> None:
        self._stop.set()
        if self._retry:
            await self._retry
        if self._group_timer:
            self._group_timer.cancel()
        self._drop_tree()

    def _read_unread(self) -> None:
        deps, self._unread = self._unread, set()
        for dep in deps:
            self.sink.update(dep, read(self.root, dep))

    # -- watching -----------------------------------------------------------------------------

    def _open(self) -> bool:
        if not self.root.is_dir():
            self.sink.source_status(self.name, False, f"root directory {self.root} does not exist")
            return False
        try:
            self._tree = inotify.Tree(str(self.root))
        except OSError as exc:
            self.sink.source_status(self.name, False, f"cannot watch {self.root}: {exc.strerror or exc}")
            return False
        asyncio.get_running_loop().add_reader(self._tree.fd, self._on_events)
        return True

    def _drop_tree(self) -> None:
        if self._tree:
            asyncio.get_running_loop().remove_reader(self._tree.fd)
            self._tree.close()
            self._tree = None

    async def _reopen(self) -> None:
        """Until the root can be watched again; then everything is read afresh."""
        while not self._stop.is_set():
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=RETRY)
            except TimeoutError:
                pass
            else:
                return
            if self._open():
                self.sink.source_status(self.name, True)
                self._unread |= self.deps
                self._read_unread()
                return

    def _lose(self, reason: str) -> None:
        # Down: push nothing more (the runner keeps the last known values); all is read again once back.
        if self._group_timer:
            self._group_timer.cancel()
        self._group_timer = None
        self._pending = set()
        self._drop_tree()
        self.sink.source_status(self.name, False, reason)
        if not self._stop.is_set() and (self._retry is None or self._retry.done()):
            self._retry = asyncio.create_task(self._reopen(), name=f"files:{self.name}")

    def _on_events(self) -> None:
        assert self._tree
        try:
            events = self._tree.read()
        except OSError as exc:  # out of inotify watches (ENOSPC), most likely
            self._lose(f"cannot watch {self.root}: {exc.strerror or exc}")
            return
        if events is None:  # the kernel dropped events: start over, reading everything
            self._drop_tree()
            if self._open():
                self._changed(None)
            else:
                self._lose(f"cannot watch {self.root}")
            return
        changed = []
        for event in events:
            *parents, name = event.path.split("/")
            if any(part.startswith("..") for part in (*parents, name)):
                # The kubelet's AtomicWriter: keys read through the `..data` symlink, so only its
                # replacement changes them. Reading on its other steps (a new `..<timestamp>`
                # directory, `..data_tmp`, removing the old one) could mix old and new values.
                if name == "..data" and not any(part.startswith("..") for part in parents):
                    changed.append("/".join(parents))
            elif event.mask & inotify.IN_MODIFY:
                # Still being written: read at the close (IN_CLOSE_WRITE), never in between, where a
                # shell's `>` has truncated the file and not yet written it (issue 10, item 7).
                pass
            elif event.mask & inotify.IN_CREATE and not event.mask & inotify.IN_ISDIR and \
                    not os.path.islink(self.root / event.path):
                pass  # a new file is empty until its writer closes it (IN_CLOSE_WRITE follows)
            else:
                changed.append(event.path)
        if changed:
            self._pending.update(changed)
            if self._group_timer is None:
                self._group_timer = asyncio.get_running_loop().call_later(GROUP, self._flush_pending)
        if self._tree.lost:
            self._lose(f"root directory {self.root} was removed")

    def _flush_pending(self) -> None:
        self._group_timer = None
        paths, self._pending = list(self._pending), set()
        self._changed(paths)

    def _changed(self, paths: list[str] | None) -> None:
        """Re-read the dependencies these paths (relative to the root; None: any) may affect."""
        deps: set[Dep] = set()
        for rel in paths or [""]:
            if rel in ("", ".") or any(part.startswith("..") for part in rel.split("/")):
                deps = self.deps  # a kubelet swap of `..data` (or the root itself): anything may have moved
                break
            deps |= self._index.affected(rel)
        for dep in list(deps):
            self.sink.update(dep, read(self.root, dep))


class _Index:
    """Dependencies by path, so that a change finds the few it concerns without looking at all of
    them (1,000 templates × 10 keys: 13 ms a change with a scan, docs/performance.md)."""

    def __init__(self) -> None:
        self.by_path: dict[str, set[Dep]] = {}
        self.paths: list[str] = []  # sorted: the paths under a directory are one slice

    def add(self, dep: Dep) -> None:
        if dep.path not in self.by_path:
            self.by_path[dep.path] = set()
            bisect.insort(self.paths, dep.path)
        self.by_path[dep.path].add(dep)

    def discard(self, dep: Dep) -> None:
        deps = self.by_path.get(dep.path)
        if deps is None:
            return
        deps.discard(dep)
        if not deps:
            del self.by_path[dep.path]
            del self.paths[bisect.bisect_left(self.paths, dep.path)]

    def affected(self, changed: str) -> set[Dep]:
        """What a change at `changed` concerns: its own path, every directory above it (their trees
        and lists), and everything below it (it may be, or have been, a directory)."""
        found: set[Dep] = set()
        parts = changed.split("/")
        for depth in range(len(parts) + 1):
            found |= self.by_path.get("/".join(parts[:depth]), set())
        # "/" sorts just before "0": the paths starting with `changed/` lie between the two.
        below = self.paths[bisect.bisect_left(self.paths, changed + "/"):bisect.bisect_left(self.paths, changed + "0")]
        for path in below:
            found |= self.by_path[path]
        return found
