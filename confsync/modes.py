"""The three ways to run: `run` (the sidecar daemon), `once` (one render, then exit), `init`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Iterator

from confsync import observe
from confsync.config import Config
from confsync.errors import ReloadError
from confsync.runner import Runner, print_to_stdout

log = logging.getLogger(__name__)


@contextlib.contextmanager
def capture_signals(stop: asyncio.Event) -> Iterator[None]:
    """SIGTERM/SIGINT ask for a clean stop; the previous handlers come back afterwards."""
    loop = asyncio.get_running_loop()
    handled = (signal.SIGTERM, signal.SIGINT)
    for signum in handled:
        loop.add_signal_handler(signum, stop.set)
    try:
        yield
    finally:
        for signum in handled:
            loop.remove_signal_handler(signum)


async def run(config: Config, *, force: bool = False) -> int:
    runner = Runner(config, force=force)
    stop = asyncio.Event()
    with capture_signals(stop):
        server = await observe.serve(runner, config.listen) if config.listen else None
        await runner.start()
        log.info("confsync running: %d template(s), %d source(s)", len(runner.templates),
                 len(runner.sources), extra={"event": "started"})
        worker = runner.worker = asyncio.create_task(runner.work())
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({worker, stopper}, return_when=asyncio.FIRST_COMPLETED)
        runner.stop()
        stopper.cancel()
        try:
            await worker  # lets the write in flight finish; re-raises a crash of the loop
        finally:
            if server:
                server.close()
            await runner.close()
    log.info("confsync stopped", extra={"event": "stopped"})
    return 0


async def once(config: Config, timeout: float, *, reloads: bool = True, dry_run: bool = False,
               diff: bool = False, force: bool = False) -> int:
    """Render every template once (waiting up to `timeout` for data), write, reload, exit.

    `init` is this without reloads: in an init container the app is not running yet.
    """
    runner = Runner(config, reloads=reloads and not dry_run, dry_run=dry_run,
                    diff=print_to_stdout if diff else None, force=force, deadline=time.monotonic() + timeout)
    await runner.start()
    worker = asyncio.create_task(runner.work())
    try:
        await asyncio.wait_for(runner.settled.wait(), timeout)
    except TimeoutError:
        pass
    runner.stop()
    try:
        await worker
    finally:
        await runner.close()
    error = runner.first_error()
    if error:
        raise error
    if not all(s.rendered for s in runner.templates):
        raise runner.missing_report(timeout)
    failed = sum(counts["failed"] for counts in runner.reloads.values())
    if failed:
        raise ReloadError(f"{failed} reload(s) failed")
    return 0
