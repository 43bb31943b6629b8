"""Reloaders tell the app its config changed: a signal, an HTTP call, or a command.

A kind of reloader is one small async function from its config to a line saying what was done; it
raises ReloadError saying why not. `fire` bounds each with the reloader's `timeout` as a total
(retries included), and turns anything else that goes wrong into a ReloadError: a reload that
fails never stops the daemon (issue 10). When reloads fire is `confsync.reloading`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from confsync import command
from confsync.config import ReloaderConfig
from confsync.errors import ConfsyncError, ReloadError

log = logging.getLogger(__name__)

PID_MAX = 1 << 22  # Linux's PID_MAX_LIMIT: no process has a larger PID


async def fire(name: str, cfg: ReloaderConfig) -> str:
    """Deliver one reload; returns what was done, raises ReloadError naming why not."""
    if cfg.kind == "url":
        _tls()  # imports httpx and loads the CA bundle: once per process, and not on the reload's clock
    try:
        async with asyncio.timeout(cfg.timeout):
            return await KINDS[cfg.kind](cfg)
    except TimeoutError:
        raise ReloadError(f"reloader {name!r}: {cfg.kind} reload not done after {cfg.timeout:g}s "
                          "(its timeout, retries included)") from None
    except ConfsyncError as exc:
        raise ReloadError(f"reloader {name!r}: {exc.message}", exc.detail) from None
    except Exception as exc:  # never a crash of the daemon, whatever the peer or the setting did
        raise ReloadError(f"reloader {name!r}: {cfg.kind} reload failed: {type(exc).__name__}") from None


async def _signal(cfg: ReloaderConfig) -> str:
    signum = getattr(signal, cfg.signal)
    pids = [_pid_from_file(cfg.pid_file)] if cfg.pid_file else find_processes(cfg.process or "")
    if not pids:
        raise ReloadError(f"no process named {cfg.process!r} found in /proc")
    for pid in pids:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            raise ReloadError(f"process {pid} is gone (stale pid file?)") from None
        except PermissionError:
            raise ReloadError(f"not allowed to signal process {pid}") from None
    return f"sent {cfg.signal} to pid {', '.join(map(str, pids))}"


def _pid_from_file(path: Path | None) -> int:
    """Read every time: the app may have restarted with a new PID. A pid file is a few bytes of a
    regular file: a FIFO or /dev/zero in its place must neither hang nor fill the memory."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)  # type: ignore[arg-type]
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise ReloadError(f"pid file {path} is not a regular file")
            text = os.read(fd, 64).decode("ascii")
        finally:
            os.close(fd)
        pid = int(text.split()[0])
    except FileNotFoundError:
        raise ReloadError(f"pid file {path} does not exist") from None
    except (OSError, ValueError, IndexError):
        raise ReloadError(f"pid file {path} does not hold a PID") from None
    if not 1 < pid < PID_MAX:
        raise ReloadError(f"pid file {path} holds {pid}, not a PID confsync may signal")
    return pid


def find_processes(name: str) -> list[int]:
    """PIDs whose command name (or argv[0]'s base name) is `name`, as pkill -x would match.

    In a pod with `shareProcessNamespace: true` this sees the app's processes. confsync itself is
    never included.
    """
    found = []
    me = os.getpid()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        with contextlib.suppress(OSError):
            comm = Path(entry.path, "comm").read_text().strip()
            argv0 = Path(entry.path, "cmdline").read_bytes().split(b"\0", 1)[0].decode(errors="replace")
            if name in (comm, os.path.basename(argv0)):
                found.append(int(entry.name))
    return sorted(found)


@functools.cache
def _tls() -> Any:
    """Loading the CA bundle into an SSL context takes ~18 ms: once per process, not once per reload
    (it made an HTTP reload 30 ms p50 against 5 ms for a signal; docs/performance.md)."""
    import httpx

    return httpx.create_ssl_context()


async def _http(cfg: ReloaderConfig) -> str:
    import httpx
    import tenacity

    expected = set(cfg.expect_status)

    async def call(client: httpx.AsyncClient) -> int:
        response = await client.request(cfg.method, cfg.url)  # type: ignore[arg-type]
        ok = response.status_code in expected if expected else 200 <= response.status_code < 300
        if not ok:
            raise ReloadError(f"{cfg.method} {cfg.url} answered {response.status_code}")
        return response.status_code

    try:
        async with httpx.AsyncClient(timeout=cfg.timeout, verify=_tls()) as client:
            async for attempt in tenacity.AsyncRetrying(
                # No attempt that the total timeout would cut: the last real failure is what is told.
                stop=tenacity.stop_after_attempt(max(1, cfg.retries)) | tenacity.stop_before_delay(cfg.timeout),
                wait=tenacity.wait_random_exponential(multiplier=0.2, max=5),
                reraise=True,
            ):
                with attempt:
                    status = await call(client)
    except httpx.HTTPError as exc:
        raise ReloadError(f"{cfg.method} {cfg.url} failed: {type(exc).__name__} {exc}".rstrip()) from None
    return f"{cfg.method} {cfg.url} → {status}"


async def _command(cfg: ReloaderConfig) -> str:
    try:
        done = await command.run(cfg.command or ())
    except OSError as exc:
        raise ReloadError(f"cannot run the command: {exc.strerror}") from None
    if done.returncode != 0:
        raise ReloadError(f"command exited {done.returncode}", done.first_line)
    return "command succeeded"


KINDS: dict[str, Callable[[ReloaderConfig], Awaitable[str]]] = {
    "signal": _signal, "url": _http, "command": _command}
