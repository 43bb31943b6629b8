"""Linux inotify over ctypes: recursive watches on a directory tree, read on the event loop.

Why not watchfiles: its Rust thread wakes every `step` ms while idle and yields a change only once
`step` ms pass without another, so a change takes `step`–2×`step` ms to arrive and an idle process
wakes 1000/`step` times a second (step=10: 20 ms p50 and 0.2 % of a core idle; docs/performance.md).
Here the loop sleeps in epoll until the kernel has an event: no wake-up while idle, microseconds
after a change. The files source needs only this much of inotify(7).
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from dataclasses import dataclass

from confsync.sources.files.read import inside

IN_MODIFY, IN_ATTRIB, IN_CLOSE_WRITE = 0x2, 0x4, 0x8
IN_MOVED_FROM, IN_MOVED_TO, IN_CREATE, IN_DELETE = 0x40, 0x80, 0x100, 0x200
IN_DELETE_SELF, IN_MOVE_SELF = 0x400, 0x800
IN_Q_OVERFLOW, IN_IGNORED, IN_ONLYDIR, IN_ISDIR = 0x4000, 0x8000, 0x01000000, 0x40000000
_MASK = (IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
         | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR)
_HEADER = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len; then the name

_libc = None


def _lib() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        # The process's own symbols include libc's; ctypes.util.find_library would run ldconfig.
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _call(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


@dataclass(frozen=True)
class Event:
    path: str  # relative to the root, "/"-separated; "" is the root itself
    mask: int


class Tree:
    """Watches `root` and every directory under it, following symlinks that stay inside the root
    (read.py's policy), as they come and go.

    Directories whose names start with `..` (the kubelet's) are not descended into: their changes
    become visible through the `..data` symlink swap in the root. `fd` is non-blocking: read() it
    when the loop says it is readable. `lost` turns true once the root itself is gone.
    """

    def __init__(self, root: str) -> None:
        self.root = root
        self.fd = _call(_lib().inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC), "inotify_init1")
        self.dirs: dict[int, str] = {}  # watch descriptor → directory, relative to the root
        self.lost = False
        try:
            root_wd = self._watch("")
            assert root_wd is not None
            self._root_wd = root_wd
            self.add("")
        except OSError:
            os.close(self.fd)
            raise

    def _watch(self, rel: str) -> int | None:
        """Watch `rel`; None when it is not to be descended into: a symlink out of the root, or a
        directory already watched under another name (`a -> .`: the kernel gives the same watch
        descriptor for the same inode, and it keeps the name it was first found by)."""
        path = os.path.join(self.root, rel) if rel else self.root
        if rel and not inside(os.path.realpath(self.root), os.path.realpath(path)):
            return None
        wd = _call(_lib().inotify_add_watch(self.fd, os.fsencode(path), _MASK), f"cannot watch {path}")
        if wd in self.dirs:
            return None
        self.dirs[wd] = rel
        return wd

    def add(self, rel: str) -> None:
        """Watch the subdirectories of `rel` (already watched itself), recursively."""
        pending = [rel]
        while pending:
            current = pending.pop()
            try:
                entries = list(os.scandir(os.path.join(self.root, current) if current else self.root))
            except OSError:
                continue  # gone already: its parent's event says so
            for entry in entries:
                try:
                    if entry.name.startswith("..") or not entry.is_dir():
                        continue
                except OSError:
                    continue
                child = f"{current}/{entry.name}" if current else entry.name
                try:
                    if self._watch(child) is None:
                        continue
                except OSError as exc:
                    if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                        continue
                    raise  # ENOSPC: out of inotify watches, say so rather than miss changes
                pending.append(child)

    def _forget(self, rel: str) -> None:
        """A directory moved out of the tree: its watches would report it under its old name."""
        for wd, path in list(self.dirs.items()):
            if path == rel or path.startswith(rel + "/"):
                _lib().inotify_rm_watch(self.fd, wd)
                del self.dirs[wd]

    def read(self) -> list[Event] | None:
        """The events queued so far (None: the kernel's queue overflowed, anything may have changed)."""
        events: list[Event] = []
        overflow = False
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            offset = 0
            while offset < len(data):
                wd, mask, _cookie, length = _HEADER.unpack_from(data, offset)
                name = data[offset + _HEADER.size:offset + _HEADER.size + length].rstrip(b"\0")
                offset += _HEADER.size + length
                if mask & IN_Q_OVERFLOW:
                    overflow = True
                    continue
                base = self.dirs.get(wd)
                if base is None:
                    continue  # a watch already forgotten
                path = os.fsdecode(name)
                path = f"{base}/{path}" if base and path else base or path
                if wd == self._root_wd and mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED):
                    self.lost = True
                if mask & IN_IGNORED:
                    del self.dirs[wd]
                    continue
                new_dir = mask & IN_ISDIR and mask & (IN_CREATE | IN_MOVED_TO)
                if new_dir and not os.path.basename(path).startswith(".."):
                    try:
                        if self._watch(path) is not None:
                            self.add(path)
                    except OSError as exc:
                        if exc.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                            raise
                        # else: removed again already
                elif mask & IN_ISDIR and mask & IN_MOVED_FROM:
                    self._forget(path)
                events.append(Event(path, mask))
        return None if overflow else events

    def close(self) -> None:
        os.close(self.fd)
