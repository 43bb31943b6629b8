"""The three ways to run: `run` (the sidecar daemon), `once` (one render, then exit), `init`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from confsync import logs, signals
from confsync.config import Config
from confsync.errors import ConfigError, ConfsyncError, ReloadError
from confsync.runner import Runner, print_to_stdout

log = logging.getLogger(__name__)


class ConfigReload:
    """SIGHUP in `run`: re-read the config file and apply what changed (issue 11 item 7).

    A config that fails any check is refused with an error log and the `confsync_config_reloads`
    metric; the running one stays. Reloads run one at a time; signals during one coalesce into one more.
    """

    def __init__(self, runner: Runner, load: Callable[[], Config],
                 applied: Callable[[Config], None] | None = None) -> None:
        self.runner, self.load, self.applied = runner, load, applied
        self._task: asyncio.Task[None] | None = None
        self._again = False

    def request(self, signum: int = 0) -> None:
        if self._task and not self._task.done():
            self._again = True
            return
        self._task = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            self._again = False
            config = await reload_config(self.runner, self.load)
            if config and self.applied:
                self.applied(config)
            if not self._again:
                return

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def reload_config(runner: Runner, load: Callable[[], Config]) -> Config | None:
    """Load the config again and apply it to the running `runner`; the new config, None if refused."""
    old = runner.config
    try:
        config = load()
        plan = runner.plan(config)
        await runner.reconfigure(plan)
    except ConfsyncError as exc:
        runner.config_reloads["failed"] += 1
        log.error("config reload refused, the running config stays: %s", exc,
                  extra={"event": "config_reload_failed"})
        return None
    logs.setup(config.log_level, config.log_format)
    if config.listen != old.listen:
        log.warning("listen: still %s; a new address takes effect at the next start", old.listen,
                    extra={"event": "config_reloaded"})
    return config


async def run(config: Config, *, force: bool = False, load: Callable[[], Config] | None = None) -> int:
    """The daemon until a stop signal; `load` re-reads the config on SIGHUP (else SIGHUP is ignored)."""
    runner = Runner(config, force=force)
    stop = asyncio.Event()
    reloader = ConfigReload(runner, load) if load else None
    handlers: dict[signals.Action, Callable[[int], None]] = {"stop": lambda _: stop.set(), "dump": runner.dump}
    if reloader:
        runner.fingerprint(runner.templates)
        handlers["reload"] = reloader.request
    with signals.capture(handlers), _pid_file(config.pid_file):
        server = None
        if config.listen:
            from confsync import observe  # here: `once` and a run without `listen` need none of it

            server = await observe.serve(runner, config.listen)
        await runner.start()
        log.info("confsync running: %d template(s), %d source(s)", len(runner.templates),
                 len(runner.sources), extra={"event": "started"})
        worker = runner.worker = asyncio.create_task(runner.work())
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({worker, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if reloader:
            await reloader.close()
        runner.stop()
        stopper.cancel()
        try:
            await worker  # lets the write in flight finish; re-raises a crash of the loop
        finally:
            if server:
                server.close()
            await runner.close(final=True)
    log.info("confsync stopped", extra={"event": "stopped"})
    return 0


@contextlib.contextmanager
def _pid_file(path: Path | None) -> Iterator[None]:
    """`pid_file:`/`--pid-file`: confsync's PID while it runs (systemd's PIDFile=, scripts' `kill -HUP`).
    Written atomically; removed at the clean stop if it still holds this process's PID."""
    if path is None:
        yield
        return
    pid = str(os.getpid())
    try:
        staged = path.with_name(f".{path.name}.{pid}.tmp")
        staged.write_text(pid + "\n")
        os.replace(staged, path)
    except (OSError, ValueError) as exc:  # ValueError: a path without a file name, as "/"
        raise ConfigError(f"pid_file: cannot write {path}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            if path.read_text().strip() == pid:
                path.unlink()


async def once(config: Config, timeout: float, *, reloads: bool = True, dry_run: bool = False,
               diff: bool = False, force: bool = False) -> int:
    """Render every template once (waiting up to `timeout` for data), write, reload, exit.

    `init` is this without reloads: in an init container the app is not running yet.
    """
    runner = Runner(config, reloads=reloads and not dry_run, dry_run=dry_run,
                    diff=print_to_stdout if diff else None, force=force, pace_reloads=False,
                    deadline=time.monotonic() + timeout)
    stopped: list[int] = []

    def stop(signum: int) -> None:
        stopped.append(signum)
        runner.settled.set()

    with signals.capture({"stop": stop, "dump": runner.dump}):  # SIGHUP: nothing to re-read in one run
        await runner.start()
        worker = asyncio.create_task(runner.work())
        settled = asyncio.create_task(runner.settled.wait())
        # A crash of the render loop ends the wait too (re-raised below), not only settling or the timeout.
        await asyncio.wait({settled, worker}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        settled.cancel()
        runner.stop()
        try:
            await worker
        finally:
            await runner.close()
    passes = sum(s.render_time.count for s in runner.templates)
    log.info("%d template(s), %d render passes (each template's first discovers what it uses)",
             len(runner.templates), passes,
             extra={"event": "finished", "templates": len(runner.templates), "passes": passes})
    if stopped:
        raise signals.Stopped(stopped[0])
    error = runner.first_error()
    if error:
        error.logged = True  # the runner logged it when it happened: said once, not twice
        raise error
    if not all(s.rendered for s in runner.templates):
        raise runner.missing_report(timeout)
    failed = sum(counts["failed"] for counts in runner.reloads.values())
    if failed:
        raise ReloadError(f"{failed} reload(s) failed")
    return 0
