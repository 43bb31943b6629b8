"""Reloaders tell the app its config changed: a signal, an HTTP call, or a command.

Each fires at most once per batch of writes, however many of its templates changed. A failure is
reported to the caller, which logs it and tries again at the next change: it never stops the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
from pathlib import Path
from typing import Any

from confsync.config import ReloaderConfig
from confsync.errors import ReloadError

log = logging.getLogger(__name__)


async def fire(name: str, cfg: ReloaderConfig) -> str:
    """Deliver one reload; returns what was done, raises ReloadError naming why not."""
    if cfg.kind == "signal":
        return _signal(name, cfg)
    if cfg.kind == "url":
        return await _http(name, cfg)
    return await _command(name, cfg)


def _signal(name: str, cfg: ReloaderConfig) -> str:
    signum = getattr(signal, cfg.signal)
    pids = [_pid_from_file(name, cfg.pid_file)] if cfg.pid_file else find_processes(cfg.process or "")
    if not pids:
        raise ReloadError(f"reloader {name!r}: no process named {cfg.process!r} found in /proc")
    for pid in pids:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            raise ReloadError(f"reloader {name!r}: process {pid} is gone (stale pid file?)") from None
        except PermissionError:
            raise ReloadError(f"reloader {name!r}: not allowed to signal process {pid}") from None
    return f"sent {cfg.signal} to pid {', '.join(map(str, pids))}"


def _pid_from_file(name: str, path: Path | None) -> int:
    """Read every time: the app may have restarted with a new PID."""
    try:
        text = Path(path).read_text().strip()  # type: ignore[arg-type]
        pid = int(text.split()[0])
    except FileNotFoundError:
        raise ReloadError(f"reloader {name!r}: pid file {path} does not exist") from None
    except (OSError, ValueError, IndexError):
        raise ReloadError(f"reloader {name!r}: pid file {path} does not hold a PID") from None
    if pid <= 1:
        raise ReloadError(f"reloader {name!r}: pid file {path} holds {pid}, refusing to signal it")
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


async def _http(name: str, cfg: ReloaderConfig) -> str:
    import httpx
    import tenacity

    expected = set(cfg.expect_status)

    async def call(client: httpx.AsyncClient) -> int:
        response = await client.request(cfg.method, cfg.url)  # type: ignore[arg-type]
        ok = response.status_code in expected if expected else 200 <= response.status_code < 300
        if not ok:
            raise ReloadError(f"reloader {name!r}: {cfg.method} {cfg.url} answered {response.status_code}")
        return response.status_code

    try:
        async with httpx.AsyncClient(timeout=cfg.timeout, verify=_tls()) as client:
            async for attempt in tenacity.AsyncRetrying(
                stop=tenacity.stop_after_attempt(max(1, cfg.retries)),
                wait=tenacity.wait_random_exponential(multiplier=0.2, max=5),
                reraise=True,
            ):
                with attempt:
                    status = await call(client)
    except httpx.HTTPError as exc:
        raise ReloadError(f"reloader {name!r}: {cfg.method} {cfg.url} failed: "
                          f"{type(exc).__name__} {exc}".rstrip()) from None
    return f"{cfg.method} {cfg.url} → {status}"


async def _command(name: str, cfg: ReloaderConfig) -> str:
    command = cfg.command or ()
    if isinstance(command, str):
        proc = await asyncio.create_subprocess_shell(
            command, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, start_new_session=True)
    else:
        try:
            proc = await asyncio.create_subprocess_exec(
                *command, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, start_new_session=True)
        except OSError as exc:
            raise ReloadError(f"reloader {name!r}: cannot run {command[0]!r}: {exc.strerror}") from None
    try:
        output, _ = await asyncio.wait_for(proc.communicate(), cfg.timeout)
    except (TimeoutError, asyncio.CancelledError) as exc:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        if isinstance(exc, asyncio.CancelledError):
            raise
        raise ReloadError(f"reloader {name!r}: command timed out after {cfg.timeout:g}s") from None
    if proc.returncode != 0:
        text = output.decode("utf-8", "replace").strip()[-2000:]
        raise ReloadError(f"reloader {name!r}: command exited {proc.returncode}" + (f": {text}" if text else ""))
    return "command succeeded"
