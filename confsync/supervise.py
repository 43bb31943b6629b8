"""`confsync exec`: start the app once its files and environment are rendered, tell it about changes,
and otherwise get out of its way (issue 13; docs/exec.md).

- The app runs in its own process group; every signal confsync sends goes to the group, so the
  app's own children get it too.
- A file whose template says `reload: [exec]` → `reload_signal` (coalesced by the runner like every
  reload); an `exec.env` value → a restart: `kill_signal`, `kill_timeout`, SIGKILL, start again.
  Restarts are coalesced and rate-limited (the churn Vault Agent fixed in vault#20917, #20940).
- When the app ends on its own, confsync ends with its status (128+N for signal N): no restart
  loop inside confsync; systemd or the container runtime restarts both.
- As PID 1 it reaps the orphans the app leaves behind.
- SIGHUP re-reads confsync's config as in `run`; what changed in `exec:` applies to the running app
  (a new command or a removed `env` value restarts it; new signals and timeouts apply next time).
  SIGUSR1, SIGUSR2, SIGWINCH and SIGQUIT go to the app; the other signals act as in `run`.

Values of `exec.env` never reach a log line, an error or /metrics: only their names do.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

from confsync import modes, observe, signals
from confsync.config import EXEC, Config, ExecConfig
from confsync.errors import ConfigError, ExecError, ReloadError
from confsync.runner import Runner

log = logging.getLogger(__name__)

# A burst of `exec.env` changes gives one restart: the first change opens a window of this many
# seconds, every change inside it rides along.
RESTART_DELAY = 1.0
# And two restarts are never closer than this (from one start to the next).
RESTART_INTERVAL = 5.0

FORWARDED = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH, signal.SIGQUIT)

AppState = Literal["waiting", "running", "restarting", "stopping", "exited"]


def exit_status(returncode: int) -> int:
    """A shell's convention: a signal N that ended the process is 128+N."""
    return 128 - returncode if returncode < 0 else returncode


class Supervisor:
    """One app: its process, its environment, its restarts."""

    def __init__(self, cfg: ExecConfig, command: str | Sequence[str], *, command_from_config: bool = True) -> None:
        self.cfg = cfg
        self.command = command
        self.command_from_config = command_from_config  # else from `-- cmd…`, which a SIGHUP keeps
        self.env: dict[str, str] = {}  # the latest rendered `exec.env` values
        self.state: AppState = "waiting"
        self.exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()  # ended on its own
        self._proc: asyncio.subprocess.Process | None = None
        self._started_env: dict[str, str] = {}
        self._started_command = command
        self._started_at = -1e9
        self._restart_timer: asyncio.TimerHandle | None = None
        self._restart: asyncio.Task[None] | None = None
        self._files_changed = False  # with `reload_signal: restart`, since the app started
        self._watcher: asyncio.Task[None] | None = None  # held: the loop keeps only weak references to tasks

    def stopping(self) -> bool:
        return self.state == "stopping"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    # -- what the runner calls --------------------------------------------------------------------

    def set_env(self, name: str, value: str) -> None:
        """An `exec.env` value rendered; a running app restarts when its environment is not current."""
        self.env[name] = value
        if self.state == "running" and self._started_env.get(name) != value:
            log.info("exec.env.%s changed: the app will restart", name, extra={"event": "exec_env_changed"})
            self.request_restart()

    def configure(self, cfg: ExecConfig) -> None:
        """A config reload: the new `exec:` settings; the app restarts if what it runs is not current."""
        self.cfg = cfg
        restart = False
        if self.command_from_config and cfg.command and cfg.command != self.command:
            self.command, restart = cfg.command, True
            log.info("exec.command changed: the app will restart", extra={"event": "exec_command_changed"})
        for name in set(self.env) - set(cfg.env):
            del self.env[name]
            if name in self._started_env:
                log.info("exec.env.%s removed: the app will restart", name, extra={"event": "exec_env_changed"})
                restart = True
        if restart and self.state == "running":
            self.request_restart()

    async def reload(self) -> str:
        """The `exec` reload target: files the app reads changed."""
        if self.state != "running":
            return f"the app is {self.state}: it reads the files when it starts"
        if self.cfg.reload_signal == "restart":
            self._files_changed = True
            self.request_restart()
            return "restart scheduled"
        if not self.send(getattr(signal, self.cfg.reload_signal)):
            raise ReloadError(f"reloader {EXEC!r}: the app (pid {self.pid}) is gone")
        return f"sent {self.cfg.reload_signal} to the app's process group {self.pid}"

    # -- the process --------------------------------------------------------------------------------

    async def start(self) -> None:
        env = {**os.environ, **self.env}  # confsync's own environment stays as it is
        command = self.command
        try:
            if isinstance(command, str):
                proc = await asyncio.create_subprocess_shell(command, env=env, process_group=0)
            else:
                proc = await asyncio.create_subprocess_exec(*command, env=env, process_group=0)
        except FileNotFoundError:
            raise ExecError(f"exec: command not found: {_first(command)!r}", 127) from None
        except OSError as exc:
            raise ExecError(f"exec: cannot run {_first(command)!r}: {exc.strerror}", 126) from None
        self._proc, self._started_env, self._started_at = proc, dict(self.env), time.monotonic()
        self._started_command = command
        self._files_changed = False
        if self.state != "stopping":
            self.state = "running"
        log.info("started the app: pid %d, %s%s", proc.pid, _first(command),
                 f" with exec.env {', '.join(sorted(self.env))}" if self.env else "",
                 extra={"event": "exec_started"})
        self._watcher = asyncio.create_task(self._watch(proc))

    async def _watch(self, proc: asyncio.subprocess.Process) -> None:
        status = exit_status(await proc.wait())
        if proc is self._proc and self.state == "running":  # not one confsync is stopping
            self.state = "exited"
            log.info("the app (pid %d) exited with status %d", proc.pid, status, extra={"event": "exec_exited"})
            if not self.exited.done():
                self.exited.set_result(status)

    def send(self, signum: int) -> bool:
        """Signal the app's process group; False if it is gone."""
        if self._proc is None:
            return False
        try:
            os.killpg(self._proc.pid, signum)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    async def _terminate(self) -> int:
        """kill_signal, up to kill_timeout, then SIGKILL: the app's exit status."""
        proc = self._proc
        assert proc is not None
        if proc.returncode is not None:
            return exit_status(proc.returncode)
        self.send(getattr(signal, self.cfg.kill_signal))
        try:
            return exit_status(await asyncio.wait_for(proc.wait(), self.cfg.kill_timeout))
        except TimeoutError:
            log.warning("the app (pid %d) is still running %gs after %s: sending SIGKILL", proc.pid,
                        self.cfg.kill_timeout, self.cfg.kill_signal, extra={"event": "exec_killed"})
            self.send(signal.SIGKILL)
            return exit_status(await proc.wait())

    async def stop(self) -> int:
        """Stop the app for good (confsync is stopping); its exit status."""
        if self._restart_timer:
            self._restart_timer.cancel()
            self._restart_timer = None
        restarting = self._restart
        self.state = "stopping"
        if restarting and not restarting.done():
            await restarting  # sees `stopping` and starts nothing new
        if self._proc is None:
            return 0
        status = await self._terminate()
        log.info("the app (pid %d) stopped with status %d", self._proc.pid, status, extra={"event": "exec_stopped"})
        return status

    # -- restarts -------------------------------------------------------------------------------

    def request_restart(self) -> None:
        """Restart soon, once for all the changes of a burst."""
        if self._restart_timer or (self._restart and not self._restart.done()):
            return  # already coming; the new process starts with the latest files and env
        now = time.monotonic()
        delay = max(RESTART_DELAY, self._started_at + RESTART_INTERVAL - now)
        self._restart_timer = asyncio.get_running_loop().call_later(delay, self._begin_restart)

    def _begin_restart(self) -> None:
        self._restart_timer = None
        if self.state != "running":
            return
        if self.env == self._started_env and self.command == self._started_command and not self._files_changed:
            log.info("exec.env is back to what the app runs: no restart", extra={"event": "exec_restart_dropped"})
            return
        self._restart = asyncio.create_task(self._restart_app())

    async def _restart_app(self) -> None:
        if self.state != "running":  # it ended on its own meanwhile: confsync ends with it
            return
        self.state = "restarting"
        old = self._proc
        assert old is not None
        status = await self._terminate()
        log.info("restarting the app: pid %d stopped with status %d", old.pid, status,
                 extra={"event": "exec_restarting"})
        if self.stopping():
            return
        try:
            await self.start()
        except ExecError as exc:
            self.state = "exited"
            log.error("%s", exc, extra={"event": "exec_failed"})
            if not self.exited.done():
                self.exited.set_result(exc.exit_code)
            return
        if self.env != self._started_env or self.command != self._started_command:  # changed meanwhile
            self.request_restart()


def _first(command: str | Sequence[str]) -> str:
    return command if isinstance(command, str) else command[0]


# -- PID 1 --------------------------------------------------------------------------------------


def reap_orphans() -> None:
    """As PID 1, reap the zombies nobody else waits for: orphans the app left, reparented to us.

    Process-group leaders are left alone: the app and the commands confsync runs itself (reload and
    check commands start their own session) lead their groups, and whoever started them waits for
    them. Read from /proc, which must be this PID namespace's (a container's always is).
    """
    me = os.getpid()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(os.path.join(entry.path, "stat"), "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        pid = int(entry.name)
        state, ppid, pgrp = fields[0], int(fields[1]), int(fields[2])
        if state == b"Z" and ppid == me and pgrp != pid:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)


def _proc_is_ours() -> bool:
    try:
        with open("/proc/self/stat", "rb") as fh:
            return int(fh.read().split(b" ", 1)[0]) == os.getpid()
    except (OSError, ValueError):
        return False


# -- the mode -------------------------------------------------------------------------------------


@contextlib.contextmanager
def _signals(app: Supervisor, runner: Runner, stop: asyncio.Event,
             reload: Callable[[int], None] | None) -> Iterator[None]:
    """The signal table as in `run`, but USR1, USR2, WINCH and QUIT go to the app; SIGCHLD reaps as
    PID 1. The previous handlers come back afterwards."""
    loop = asyncio.get_running_loop()
    handlers: dict[signals.Action, Callable[[int], None]] = {"stop": lambda _: stop.set(), "dump": runner.dump}
    if reload:
        handlers["reload"] = reload
    forward = {int(signum): functools.partial(_forward, app) for signum in FORWARDED}
    reaping = False
    if os.getpid() == 1:
        if _proc_is_ours():
            loop.add_signal_handler(signal.SIGCHLD, reap_orphans)
            reaping = True
        else:
            log.warning("running as PID 1 but /proc is not this PID namespace's: orphans are not reaped "
                        "(mount /proc, e.g. unshare --mount-proc)", extra={"event": "exec_no_reaper"})
    try:
        with signals.capture(handlers, forward):
            yield
    finally:
        if reaping:
            loop.remove_signal_handler(signal.SIGCHLD)


def _forward(app: Supervisor, signum: int) -> None:
    name = signal.Signals(signum).name
    if app.send(signum):
        log.info("forwarded %s to the app's process group %d", name, app.pid, extra={"event": "exec_forwarded"})
    else:
        log.info("%s received with no app running: dropped", name, extra={"event": "exec_forwarded"})


async def run(config: Config, command: Sequence[str], timeout: float, *, force: bool = False,
              load: Callable[[], Config] | None = None) -> int:
    """Render everything (waiting up to `timeout`), start the app, supervise it; its exit status.
    `command`: from the command line (after --), else exec.command; `load` re-reads the config on SIGHUP."""
    run_what = command or config.exec.command
    if not run_what:
        raise ConfigError(f"{config.path}: exec.command: no command to run (set it, or give one after --)")
    app = Supervisor(config.exec, run_what, command_from_config=not command)
    runner = Runner(config, force=force, exec_env=app.set_env, targets={EXEC: app.reload})
    stop = asyncio.Event()
    reloader = modes.ConfigReload(runner, load, applied=lambda cfg: app.configure(cfg.exec)) if load else None
    if reloader:
        runner.fingerprint(runner.templates)
    with _signals(app, runner, stop, reloader.request if reloader else None):
        server = await observe.serve(runner, config.listen, app=lambda: app.state) if config.listen else None
        worker: asyncio.Task[None] | None = None
        try:
            await runner.start()
            worker = runner.worker = asyncio.create_task(runner.work())
            return await _supervise(runner, app, worker, stop, timeout)
        finally:
            if reloader:
                await reloader.close()
            if app.state in ("running", "restarting"):
                await app.stop()  # an error of confsync's own: the app does not outlive it
            runner.stop()
            if worker:
                with contextlib.suppress(Exception):
                    await worker
            if server:
                server.close()
            await runner.close(final=True)


async def _supervise(runner: Runner, app: Supervisor, worker: asyncio.Task[None], stop: asyncio.Event,
                     timeout: float) -> int:
    stopper = asyncio.create_task(stop.wait())
    settled = asyncio.create_task(runner.settled.wait())
    try:
        await asyncio.wait({stopper, settled, worker}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set():
            log.info("stopped before the app started", extra={"event": "stopped"})
            return 0
        if worker.done():
            await worker  # re-raises a crash of the render loop
        error = runner.first_error()
        if error:
            raise error
        if not all(s.rendered for s in runner.templates):
            raise runner.missing_report(timeout)
        await app.start()
        ends: set[asyncio.Future[Any]] = {stopper, worker, app.exited}
        await asyncio.wait(ends, return_when=asyncio.FIRST_COMPLETED)
        if app.exited.done():
            return app.exited.result()
        status = await app.stop()
        if worker.done():
            await worker
        return status
    finally:
        stopper.cancel()
        settled.cancel()
