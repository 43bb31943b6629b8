"""The CLI without surprises (issue 11): flags checked like the settings they set, `--version`, no
traceback for any argv, a dry run that says what the real run would do, a pid file for `run`."""

from __future__ import annotations

import os
import signal

import pytest

from tests.helpers import Daemon, confsync, wait_until

CONFIG = """
sources:
  kv: {{type: files, root: ./data}}
templates:
  - {{source: t.j2, destination: out/t.conf{extra}}}
"""


@pytest.fixture
def cfg(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data/v").write_text("1")
    (tmp_path / "t.j2").write_text('v = {{ kv.key("v") }}\n')

    def make(extra: str = "", text: str | None = None) -> str:
        if text is not None:
            (tmp_path / "t.j2").write_text(text)
        (tmp_path / "confsync.yaml").write_text(CONFIG.format(extra=extra))
        return str(tmp_path / "confsync.yaml")

    return make


def test_version_names_the_installed_clients():
    result = confsync("--version")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("confsync 0.")
    assert "  files: built in" in lines
    assert any(line.startswith("  vault: hvac ") for line in lines)
    assert any(line.startswith("  zookeeper: kazoo ") for line in lines)


@pytest.mark.parametrize("value", ["verbose", "trace", ""])
def test_log_level_is_checked_the_same_from_flag_env_and_file(cfg, tmp_path, value):
    expected = f"expected one of 'debug', 'info', 'warning', 'error', got {value!r}"
    flag = confsync("check", "-c", cfg(), "--log-level", value)
    assert flag.returncode == 2 and f"--log-level: {expected}" in flag.stderr, flag.stderr
    if value:
        env = confsync("check", "-c", cfg(), CONFSYNC_LOG_LEVEL=value)
        assert env.returncode == 2 and f"CONFSYNC_LOG_LEVEL: {expected}" in env.stderr, env.stderr
    (tmp_path / "confsync.yaml").write_text(CONFIG.format(extra="") + f"log_level: {value!r}\n")
    file = confsync("check", "-c", str(tmp_path / "confsync.yaml"))
    assert file.returncode == 2 and f"confsync.yaml: log_level: {expected}" in file.stderr, file.stderr
    for result in (flag, file):
        assert "Traceback" not in result.stderr


@pytest.mark.parametrize("how", ["flag", "env", "file"])
def test_log_level_is_case_insensitive(cfg, tmp_path, how):
    path = cfg()
    if how == "file":
        (tmp_path / "confsync.yaml").write_text(CONFIG.format(extra="") + "log_level: DEBUG\n")
    args = ["--log-level", "DEBUG"] if how == "flag" else []
    result = confsync("once", "-c", path, *args, **({"CONFSYNC_LOG_LEVEL": "Debug"} if how == "env" else {}))
    assert result.returncode == 0, result.stderr
    assert "DEBUG" in result.stderr  # debug lines were logged


def test_a_flag_error_is_named_as_the_flag(cfg):
    result = confsync("run", "-c", cfg(), "--listen", "abc")
    assert result.returncode == 2
    assert "--listen: expected host:port" in result.stderr
    assert "confsync.yaml" not in result.stderr


HOSTILE = [
    ["-c", "/dev/zero"], ["-c", "/"], ["-c", "/nonexistent/x.yaml"], ["-c", "{fifo}"], ["-c", "{binary}"],
    ["-c", "{cfg}", "--log-level", "verbose"], ["-c", "{cfg}", "--log-format", "xml"],
    ["-c", "{cfg}", "--log-level", "\udcff"], ["-c", "\udcff.yaml"], ["--nosuchflag"], ["-c"],
    ["-c", "{cfg}", "--log-level", "x" * 100_000],
]
EXTRA = {
    "run": [["-c", "{cfg}", "--listen", ":99999"], ["-c", "{cfg}", "--listen", "[::1"], ["-c", "{cfg}", "--listen", ""],
            ["-c", "{cfg}", "--pid-file", ""], ["-c", "{cfg}", "--pid-file", "/nonexistent/dir/confsync.pid"],
            ["-c", "{cfg}", "--pid-file", "/"]],
    "once": [["-c", "{cfg}", "--timeout", t] for t in ("-1s", "nan", "1e400", "inf", "0x10", "", "5 s s")],
    "init": [["-c", "{cfg}", "--timeout", "1e400"]],
    "check": [],
}
CONVERT = [["/dev/zero"], ["/"], ["{fifo}"], ["{binary}"], ["/nonexistent.hcl"], ["\udcff.hcl"], [], ["--nosuchflag"],
           ["{cfg}", "-o", "/dev/null"]]


@pytest.mark.parametrize("command", [*sorted(EXTRA), "convert"])
def test_no_argv_prints_a_traceback(cfg, tmp_path, command):
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    (tmp_path / "binary.yaml").write_bytes(b"\xff\xfe\x00 not text")
    names = {"cfg": cfg(), "fifo": str(fifo), "binary": str(tmp_path / "binary.yaml")}
    for argv in CONVERT if command == "convert" else HOSTILE + EXTRA[command]:
        args = [a.format(**names) if "{" in a else a for a in argv]
        result = confsync(command, *args, timeout=60)
        assert "Traceback" not in result.stderr, (args, result.stderr)
        assert result.returncode == 2, (args, result.returncode, result.stderr)
        assert result.stderr.strip(), args


def test_dry_run_applies_every_guard_and_writes_nothing(cfg, tmp_path):
    assert confsync("once", "-c", cfg()).returncode == 0
    out = tmp_path / "out/t.conf"
    before = out.read_bytes()
    (tmp_path / "data/v").write_text("2")
    for extra, text, why in [
        (", format: toml", 'v = {{ kv.key("v") }}\n[[\n', "not valid toml"),
        (", check: 'grep -q never {staged}'", None, "check failed"),
        (", min_bytes: 100", None, "under min_bytes=100"),
        (", max_shrink: '10%'", "{{ kv.key('v') }}", "over max_shrink=10%"),
    ]:
        path = cfg(extra, text if text is not None else 'v = {{ kv.key("v") }}\n')
        dry = confsync("once", "-c", path, "--dry-run", "--diff")
        real = confsync("once", "-c", path)
        assert dry.returncode == real.returncode == 1, (extra, dry.stderr, real.stderr)
        assert why in dry.stderr and why in real.stderr, (extra, dry.stderr)
        assert out.read_bytes() == before
    assert not [p for p in (tmp_path / "out").iterdir() if p.name != "t.conf"]  # nothing staged left
    ok = confsync("once", "-c", cfg(", format: toml, check: 'grep -q 2 {staged}'", 'v = {{ kv.key("v") }}\n'),
                  "--dry-run")
    assert ok.returncode == 0, ok.stderr
    assert out.read_bytes() == before


def test_once_says_changed_when_it_replaces_a_file_and_prints_an_error_once(cfg, tmp_path):
    path = cfg()
    (tmp_path / "out").mkdir()
    (tmp_path / "out/t.conf").write_text("old\n")
    result = confsync("once", "-c", path)
    assert result.returncode == 0, result.stderr
    assert "changed: the file on disk differed" in result.stderr and "first render" not in result.stderr
    (tmp_path / "out/t.conf").unlink()
    assert "; created)" in confsync("once", "-c", path).stderr
    (tmp_path / "t.j2").write_text("{{ 1 / 0 }}\n")
    failed = confsync("once", "-c", path)
    assert failed.returncode == 1
    assert failed.stderr.count("ZeroDivisionError") == 1, failed.stderr


def test_run_writes_and_removes_its_pid_file(cfg, tmp_path):
    pid_file = tmp_path / "run/confsync.pid"
    pid_file.parent.mkdir()
    with Daemon("-c", cfg(), "--pid-file", str(pid_file), cwd=tmp_path) as daemon:
        daemon.wait_event("written")
        assert pid_file.read_text().strip() == str(daemon.proc.pid)
        os.kill(int(pid_file.read_text()), signal.SIGHUP)  # what `kill -HUP $(cat pid)` does
        daemon.wait_event("config_reloaded")
        assert daemon.stop() == 0
    assert not pid_file.exists()


def test_pid_file_from_the_config(cfg, tmp_path):
    path = cfg()
    with open(path, "a") as fh:
        fh.write("pid_file: confsync.pid\n")
    with Daemon("-c", path, cwd=tmp_path) as daemon:
        daemon.wait_event("written")
        wait_until(lambda: (tmp_path / "confsync.pid").exists(), what="pid file")
        assert (tmp_path / "confsync.pid").read_text().strip() == str(daemon.proc.pid)
