"""The `files` source: a directory tree, where a key is a relative path and its value the file's text.

The embedded default: it needs no server, and it reads Kubernetes ConfigMap and Secret volumes, where
each key is a symlink into `..data`, itself a symlink the kubelet swaps atomically to a new
`..<timestamp>` directory. Entries whose names start with `..` are the kubelet's, never keys.
Changes arrive through inotify (watchfiles), not polling.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confsync.config import RelPath
from confsync.sources import ABSENT, Dep, Functions, Missing, Sink

log = logging.getLogger(__name__)

# watchfiles groups events for `STEP_MS` before yielding them, and wakes that often while idle:
# a small step is low latency, a large one low idle CPU.
STEP_MS = 10


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
        self._unread: set[Dep] = set()
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._watch_tree(), name=f"files:{self.name}")

    def watch(self, dep: Dep) -> None:
        self.deps.add(dep)
        if not self._unread:
            asyncio.get_running_loop().call_soon(self._read_unread)
        self._unread.add(dep)

    def unwatch(self, dep: Dep) -> None:
        self.deps.discard(dep)
        self._unread.discard(dep)

    async def close(self) -> None:
        self._stop.set()
        if self._task:
            await self._task

    def _read_unread(self) -> None:
        deps, self._unread = self._unread, set()
        for dep in deps:
            self.sink.update(dep, read(self.root, dep))

    async def _watch_tree(self) -> None:
        import watchfiles

        down = False
        while not self._stop.is_set():
            if not self.root.is_dir():  # watchfiles would block forever on a missing path
                self.sink.source_status(self.name, False, f"root directory {self.root} does not exist")
                down = True
                if await self._stopped_within(1.0):
                    return
                continue
            if down:  # back: whatever happened meanwhile is read afresh
                down = False
                self.sink.source_status(self.name, True)
                self._unread |= self.deps
                self._read_unread()
            try:
                async for changes in watchfiles.awatch(
                    self.root, stop_event=self._stop, watch_filter=None, step=STEP_MS, debounce=1000,
                    recursive=True, ignore_permission_denied=True,
                ):
                    self._changed({Path(p) for _, p in changes})
            except OSError as exc:
                self.sink.source_status(self.name, False, f"cannot watch {self.root}: {exc}")
                down = True
                if await self._stopped_within(1.0):
                    return

    async def _stopped_within(self, seconds: float) -> bool:
        try:
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)
        except TimeoutError:
            return False
        return True

    def _changed(self, paths: set[Path]) -> None:
        rels: list[str] | None = []
        for path in paths:
            try:
                rel = path.relative_to(self.root).as_posix()
            except ValueError:
                rel = ""
            if rel in ("", ".") or any(part.startswith("..") for part in rel.split("/")):
                rels = None  # a kubelet swap of `..data` (or the root itself): anything may have moved
                break
            rels.append(rel)  # type: ignore[union-attr]
        for dep in list(self.deps):
            if rels is None or any(_related(dep.path, rel) for rel in rels):
                self.sink.update(dep, read(self.root, dep))


def _related(key: str, changed: str) -> bool:
    return key == changed or not key or key.startswith(changed + "/") or changed.startswith(key + "/")


def read(root: Path, dep: Dep) -> Any:
    """The value of `dep` under `root` now: str for key, dict for tree, list for ls, or a Missing."""
    problem = _bad_key(dep.path)
    if problem:
        return Missing(f"invalid key {dep.path!r}: {problem}")
    path = root / dep.path if dep.path else root
    try:
        if dep.kind == "key":
            return _text(path)
        if dep.kind == "tree":
            return {rel: _text(path / rel) for rel in _walk(path)}
        if dep.kind == "ls":
            return sorted(e.name for e in os.scandir(path) if not e.name.startswith(".."))
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return ABSENT if dep.kind == "key" else ({} if dep.kind == "tree" else [])
    except UnicodeDecodeError as exc:
        return Missing(f"value is not UTF-8 text ({exc.reason} at byte {exc.start})")
    except OSError as exc:
        return Missing(f"cannot read: {exc.strerror}")
    return Missing(f"the files source has no {dep.kind}()")


def _text(path: Path) -> str:
    if path.is_dir():
        raise IsADirectoryError(path)
    return path.read_bytes().decode("utf-8")


def _walk(top: Path) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(top, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".."))
        rel_dir = Path(dirpath).relative_to(top).as_posix()
        for name in sorted(filenames):
            if not name.startswith(".."):
                found.append(name if rel_dir == "." else f"{rel_dir}/{name}")
    return found


def _bad_key(key: str) -> str | None:
    if any(ord(c) < 32 or c == "\x7f" for c in key):
        return "contains a control character"
    if any(part in ("", ".", "..") or part.startswith("..") for part in key.split("/")) and key:
        return "path parts may not be empty, '.', '..' or start with '..'"
    return None
