"""docs/getting-started.md run step by step as written, in a copy of the checkout; and the
quickstart stopped every way a user stops it, leaving no process behind (issue 11 item 9)."""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.helpers import DEADLINE, ROOT, cli_env, wait_until

PAGE = ROOT / "docs/getting-started.md"


def sh_blocks() -> list[str]:
    return re.findall(r"```sh\n(.*?)```", PAGE.read_text(), re.S)


@pytest.fixture
def checkout(tmp_path):
    """The checkout's files (as git sees them) in a scratch directory, with the tested venv."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, check=True).stdout.decode().split("\0")
    copy = tmp_path / "repo"
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, copy / name)
    (copy / ".venv").symlink_to(ROOT / ".venv")
    return copy


def _default_signals() -> None:
    for signum in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM, signal.SIGQUIT):
        signal.signal(signum, signal.SIG_DFL)


class Terminal:
    """A command started as in a terminal of its own: its own process group, output read on a thread."""

    def __init__(self, script: str, cwd: Path) -> None:
        # Signals at their default, as a terminal gives them: a harness started in the background
        # (`cmd &`) or under nohup passes SIGINT or SIGHUP down ignored, and a shell cannot trap a
        # signal it got ignored.
        self.proc = subprocess.Popen(["bash", "-c", script], cwd=cwd, env=cli_env(), start_new_session=True,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, preexec_fn=_default_signals)
        self.output: list[str] = []
        self.lines: queue.Queue[str] = queue.Queue()
        self.consumed = 0  # lines `expect` has gone through
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout
        for line in self.proc.stdout:
            self.output.append(line)
            self.lines.put(line)

    def expect(self, pattern: str) -> str:
        end = time.monotonic() + DEADLINE * 3  # the first start may compile every module
        while time.monotonic() < end:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                continue
            self.consumed += 1
            if re.search(pattern, line):
                return line
        raise AssertionError(f"no {pattern!r} in:\n{''.join(self.output)}")

    def left_running(self) -> list[int]:
        """Processes still in this terminal's session (its process group leader's sid)."""
        alive = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if os.getsid(int(entry)) == self.proc.pid:
                        alive.append(int(entry))
                except OSError:
                    pass
        return alive

    def exit_status(self) -> int:
        """run.sh's status once it ended; else what it printed and what of it still runs."""
        try:
            return self.proc.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            running = []
            for pid in self.left_running():
                try:
                    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
                    argv = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                except OSError:
                    continue
                running.append(f"{pid} {stat} {argv}")
            left, output = "\n".join(running), "".join(self.output)
            raise AssertionError(f"still running after {DEADLINE}s:\n{left}\noutput:\n{output}") from None

    def close(self) -> None:
        if self.left_running():
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=DEADLINE)


def test_getting_started_as_written(checkout):
    blocks = sh_blocks()
    assert blocks[0].strip() == "./examples/quickstart/run.sh"
    quickstart = checkout / "examples/quickstart"

    # 1. Run the quickstart.
    term = Terminal(blocks[0], checkout)
    try:
        term.expect(r"wrote .*out/app\.conf")
        # 2. Change a value, in a second terminal.
        subprocess.run(["bash", "-c", blocks[1]], cwd=checkout, check=True)
        term.expect(r"wrote .*out/app\.conf \(.*changed: kv\.key\('db/host'\)\)")
        mark = term.consumed  # then, in either order, the reload and the app showing its new config
        wait_until(lambda: all(text in "".join(term.output[mark:]) for text in
                               ("reload app: sent SIGHUP to pid", "host = db2.internal")), what="the app reloaded")
        # 4. Stop the quickstart with Ctrl-C: the terminal signals its whole foreground group.
        os.killpg(term.proc.pid, signal.SIGINT)
        assert term.exit_status() == 0
        wait_until(lambda: not term.left_running(), what="every quickstart process gone")
    finally:
        term.close()
    assert not (quickstart / "app.pid").exists()
    for line in blocks[2].strip().splitlines():  # the other commands, from examples/quickstart/
        result = subprocess.run(["bash", "-c", line], cwd=quickstart, env=cli_env(), capture_output=True,
                                text=True, timeout=120)
        assert result.returncode == 0, (line, result.stdout, result.stderr)
    # 5. Health and metrics (on a free port rather than 9101, which a parallel test may hold).
    port = free_port()
    run, *curls = [line.replace("9101", str(port)) for line in blocks[3].strip().splitlines()]
    daemon = Terminal(run, quickstart)
    try:
        daemon.expect('"event": "listening"')
        ready = subprocess.run(["bash", "-c", curls[0]], capture_output=True, text=True, timeout=60)
        assert '"ready": true' in ready.stdout
        metrics = subprocess.run(["bash", "-c", curls[1]], capture_output=True, text=True, timeout=60)
        assert "confsync_renders_total" in metrics.stdout
        os.killpg(daemon.proc.pid, signal.SIGINT)
        assert daemon.exit_status() == 0
    finally:
        daemon.close()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_the_quickstart_stops_whole_when_run_sh_is_signalled(checkout, signum):
    """`kill <run.sh>`, or the terminal closing (SIGHUP): neither confsync nor the app is left behind."""
    term = Terminal("./examples/quickstart/run.sh", checkout)
    try:
        term.expect(r"wrote .*out/app\.conf")
        term.expect(r"demo app \(pid \d+\)")
        os.kill(term.proc.pid, signum)  # run.sh alone, as `kill` or systemd would
        assert term.exit_status() == 0
        wait_until(lambda: not term.left_running(), what="every quickstart process gone")
    finally:
        term.close()
    assert not (checkout / "examples/quickstart/app.pid").exists()
