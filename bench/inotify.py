"""A blocking inotify reader on its own thread: the detector for "the destination file changed".

The thread sleeps in read(2) until the kernel queues an event, takes `time.monotonic()` at once,
then reads the file, so an event's timestamp is the moment the rename became visible plus the
wake-up of one blocked thread (tens of microseconds; `resolution()` measures it on this machine).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import queue
import struct
import tempfile
import threading
import time
from pathlib import Path

IN_CLOSE_WRITE = 0x008
IN_MOVED_TO = 0x080
IN_CREATE = 0x100
_EVENT = struct.Struct("iIII")

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _check(result: int) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return result


class DirWatcher:
    """Timestamps every file renamed into (or closed after writing in) `directory`.

    `events` yields (monotonic time, file name, the file's text at that moment or None).
    `names` limits which files are read (None: all).
    """

    def __init__(self, directory: Path, names: set[str] | None = None, read: bool = True) -> None:
        self.directory = directory
        self.names = names
        self.read = read
        self.events: queue.Queue[tuple[float, str, str | None]] = queue.Queue()
        self._fd = _check(_libc.inotify_init1(os.O_CLOEXEC))
        _check(_libc.inotify_add_watch(self._fd, os.fsencode(directory), IN_MOVED_TO | IN_CLOSE_WRITE))
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._run, name="inotify", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import select

        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        poller.register(self._stop_r, select.POLLIN)
        while True:
            ready = {fd for fd, _ in poller.poll()}
            now = time.monotonic()
            if self._stop_r in ready:
                return
            data = os.read(self._fd, 65536)
            for name in _names(data):
                if self.names is not None and name not in self.names:
                    continue
                text = None
                if self.read:
                    try:
                        text = (self.directory / name).read_text()
                    except (FileNotFoundError, UnicodeDecodeError):
                        pass
                self.events.put((now, name, text))

    def wait_for(self, name: str, text: str | None, timeout: float) -> float | None:
        """The time `name` first held `text` (None: any event on `name`), or None if not within
        `timeout`; events before it are dropped."""
        end = time.monotonic() + timeout
        while (remaining := end - time.monotonic()) > 0:
            try:
                when, got, content = self.events.get(timeout=remaining)
            except queue.Empty:
                return None
            if got == name and (text is None or content == text):
                return when
        return None

    def drain(self) -> None:
        while not self.events.empty():
            self.events.get_nowait()

    def close(self) -> None:
        os.write(self._stop_w, b"x")
        self._thread.join(timeout=5)
        for fd in (self._fd, self._stop_r, self._stop_w):
            os.close(fd)


def _names(data: bytes) -> list[str]:
    names, offset = [], 0
    while offset < len(data):
        _wd, _mask, _cookie, length = _EVENT.unpack_from(data, offset)
        raw = data[offset + _EVENT.size: offset + _EVENT.size + length]
        names.append(raw.rstrip(b"\0").decode("utf-8", "replace"))
        offset += _EVENT.size + length
    return names


def resolution(samples: int = 200) -> list[float]:
    """The detector's own delay: rename a file into a watched dir, time until the thread saw it."""
    with tempfile.TemporaryDirectory(prefix="bench-inotify-") as tmp:
        directory = Path(tmp)
        watcher = DirWatcher(directory, {"f"})
        delays = []
        try:
            for i in range(samples):
                staged = directory / ".f.tmp"
                staged.write_text(str(i))
                start = time.monotonic()
                os.rename(staged, directory / "f")
                seen = watcher.wait_for("f", str(i), 1.0)
                if seen is not None:
                    delays.append(seen - start)
                time.sleep(0.002)
        finally:
            watcher.close()
    return delays
