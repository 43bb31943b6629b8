"""What every server of the suite shares: free loopback ports, a supervised process, a handle."""

from __future__ import annotations

import contextlib
import http.client
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

LOOPBACK = "127.0.0.1"
# Generous: a JVM or an initdb on a loaded 2-core CI box can be slow. Typical start-up
# is well under a second to a few seconds; the deadline only bounds a broken start.
STARTUP_TIMEOUT = float(os.environ.get("CONFSYNC_TEST_SERVER_TIMEOUT", "60"))
STOP_TIMEOUT = 10.0
POLL_INTERVAL = 0.05

# Direct opener: an http_proxy in the environment must never see loopback probes.
_http = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ServerStartError(RuntimeError):
    """A server did not become ready; the message ends with its log tail."""


class ServerNotInstalled(ServerStartError):
    """A server binary is missing; scripts/test-deps.sh installs it."""


class _PortInUse(ServerStartError):
    """Someone took one of our ports between free_ports() and the server's bind."""


# --------------------------------------------------------------------------- ports


def free_ports(n: int) -> list[int]:
    """n distinct free loopback ports.

    All n sockets stay bound until every port is picked, so the kernel cannot hand
    out the same port twice. Another process can still grab a port before the server
    binds it; the context managers see that in the log and retry on fresh ports.
    """
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind((LOOPBACK, 0))
        return [s.getsockname()[1] for s in socks]


def free_port() -> int:
    """One free loopback port (see free_ports for the race this cannot rule out)."""
    return free_ports(1)[0]


def _free_port_pair() -> int:
    """A free port P with P+1 free too: `bao server -dev` puts its cluster listener on P+1."""
    for _ in range(100):
        with socket.socket() as a, socket.socket() as b:
            a.bind((LOOPBACK, 0))
            port = a.getsockname()[1]
            try:
                b.bind((LOOPBACK, port + 1))
            except (OSError, OverflowError):
                continue
            return port
    raise RuntimeError("no pair of adjacent free ports on 127.0.0.1")


# ------------------------------------------------------------------------- process


class _Process:
    """One server process: start it, poll its readiness, log to a file, stop it.

    start() may be called again after stop() or kill(): it runs the same argv, so the
    server comes back on the same ports with the same data dir.
    """

    def __init__(
        self,
        name: str,
        argv: list[str],
        *,
        ready: Callable[[], bool],
        log_path: Path,
        env: dict[str, str] | None = None,
        user: pwd.struct_passwd | None = None,
        stop_signal: int = signal.SIGTERM,
    ) -> None:
        self.name, self.argv, self.ready, self.log_path = name, argv, ready, log_path
        self.env, self.user, self.stop_signal = env, user, stop_signal
        self._popen: subprocess.Popen[bytes] | None = None
        self._log_offset = 0  # where this run's output starts in the (appended) log

    @property
    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen else None

    def start(self, wait: bool = True) -> None:
        if self.running:
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        as_user = {}
        if self.user is not None:  # only when root: servers like postgres refuse root
            as_user = dict(user=self.user.pw_uid, group=self.user.pw_gid, extra_groups=[])
        with open(self.log_path, "ab") as log:
            self._popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.log_path.parent,
                # Own process group: kill() can take the server's children with it.
                start_new_session=True,
                **as_user,
            )
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT) -> None:
        _wait_ready([self], timeout)

    def _probe(self) -> bool:
        try:
            return bool(self.ready())
        except (OSError, ValueError, http.client.HTTPException, subprocess.SubprocessError):
            return False  # not listening yet, half-started, or answering "not yet"

    def _fail(self, why: str) -> None:
        self.kill()
        tail = self.log_tail()
        error = _PortInUse if "address already in use" in tail.lower() else ServerStartError
        raise error(
            f"{self.name} {why}: {' '.join(self.argv)}\n"
            f"--- last lines of {self.log_path} ---\n{tail}"
        )

    def log_tail(self, lines: int = 40) -> str:
        """The last lines this run wrote (earlier runs' output is skipped)."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_offset)
                text = f.read().decode(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Clean shutdown: stop_signal, then SIGKILL if it is still up after timeout."""
        p = self._popen
        if p is None:
            return
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(self.stop_signal)
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout)
        self.kill()

    def kill(self) -> None:
        """SIGKILL the whole process group: a crash, with no chance to clean up."""
        p = self._popen
        if p is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()


def _wait_ready(procs: list[_Process], timeout: float = STARTUP_TIMEOUT) -> None:
    """Poll until every process is ready; fail as soon as any one of them exits.

    Waiting on all at once matters for a cluster: if one member dies (say it lost
    a port race), the others would otherwise wait out the deadline for a quorum.
    """
    assert all(p._popen is not None for p in procs), "start() first"
    deadline = time.monotonic() + timeout
    pending = list(procs)
    while pending:
        for p in pending:
            code = p._popen.poll()  # type: ignore[union-attr]
            if code is not None:
                p._fail(f"exited with code {code} before it was ready")
        pending = [p for p in pending if not p._probe()]
        if pending and time.monotonic() > deadline:
            pending[0]._fail(f"not ready after {timeout:.0f}s")
        if pending:
            time.sleep(POLL_INTERVAL)


@dataclass(frozen=True, kw_only=True)
class ServerHandle:
    """What every server yields: control of its process (same ports, same dir)."""

    _proc: _Process = field(repr=False, compare=False)

    def kill(self) -> None:
        """SIGKILL the server (and its children); returns once it is dead."""
        self._proc.kill()

    def stop(self) -> None:
        """Stop it cleanly (SIGTERM/SIGINT, SIGKILL after a timeout)."""
        self._proc.stop()

    def start(self, wait: bool = True) -> None:
        """Start it again with the same config; by default wait until it is ready."""
        self._proc.start(wait)

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT) -> None:
        self._proc.wait_ready(timeout)

    @property
    def running(self) -> bool:
        return self._proc.running

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    @property
    def log_path(self) -> Path:
        return self._proc.log_path

    def log_tail(self, lines: int = 40) -> str:
        return self._proc.log_tail(lines)


H = TypeVar("H", bound=ServerHandle)


@contextlib.contextmanager
def _tempdir(kind: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=f"confsync-{kind}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _launch(make: Callable[[], H], attempts: int = 3) -> H:
    """Build a handle on fresh ports and start it; lost port races get new ports."""
    for attempt in range(attempts):
        handle = make()
        try:
            handle.start()
            return handle
        except _PortInUse:
            if attempt == attempts - 1:
                raise
        except BaseException:  # e.g. Ctrl-C while waiting: leave no server behind
            handle.kill()
            raise
    raise AssertionError("unreachable")


def _env(drop_prefixes: tuple[str, ...], **extra: str) -> dict[str, str]:
    """os.environ minus the server's own config variables, which would override ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop_prefixes)}
    env.update(extra)
    return env


def _which(name: str, *candidates: str) -> str:
    for path in (*candidates, shutil.which(name)):
        if path and os.access(path, os.X_OK):
            return path
    raise ServerNotInstalled(f"{name} not found; run scripts/test-deps.sh")


def _http_ok(url: str, check: Callable[[bytes], bool] = lambda body: True) -> bool:
    with _http.open(url, timeout=2) as resp:  # raises HTTPError on non-2xx
        return resp.status == 200 and check(resp.read())


# ---------------------------------------------------------------------------- etcd
