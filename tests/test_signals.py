"""Signals sent for real to the CLI as a process: none but SIGKILL ends confsync without its clean
stop, and SIGHUP makes `run` re-read its config (issue 10 item 6, issue 11 item 7)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import urllib.request

import pytest

from confsync.signals import TABLE
from tests.helpers import DEADLINE, Daemon, cli_env, wait_until

CONFIG = """
sources:
  kv: {{type: files, root: ./{root}}}
templates:
{templates}
"""


def template(name: str) -> str:
    return f"  - {{source: {name}.j2, destination: out/{name}.conf}}\n"


def write_config(tmp_path, *names: str, root: str = "data", extra: str = "") -> None:
    (tmp_path / "confsync.yaml").write_text(CONFIG.format(root=root, templates="".join(map(template, names)))
                                            + extra)


@pytest.fixture
def files(tmp_path):
    for name in ("a", "b", "c"):
        (tmp_path / f"{name}.j2").write_text(f'{name}={{{{ kv.key("{name}") }}}}\n')
    for root in ("data", "data2"):
        (tmp_path / root).mkdir()
        for name in ("a", "b", "c"):
            (tmp_path / root / name).write_text(f"{root}-{name}")
    return tmp_path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def reload(daemon: Daemon, **fields: object) -> dict[str, object]:
    daemon.proc.send_signal(signal.SIGHUP)
    return daemon.wait_event("config_reloaded", **fields)


def rendered_after(daemon: Daemon, mark: int) -> set[str]:
    return {line.split('"template": "')[1].split('"')[0] for line in daemon.lines[mark:]
            if '"event": "rendered"' in line}


def test_no_catchable_signal_ends_run_uncleanly(files):
    write_config(files, "a")
    with Daemon("-c", "confsync.yaml", cwd=files) as daemon:
        daemon.wait_event("written")
        for signum, action in sorted(TABLE.items()):
            if action == "stop":
                continue
            daemon.proc.send_signal(signum)
            daemon.wait_event("signal", reason=action)
            assert daemon.proc.poll() is None, signum
        daemon.proc.send_signal(signal.SIGUSR1)  # the dump names each template and source
        assert "out/a.conf" in daemon.wait_event("state", template=str(files / "out/a.conf"))["message"]
        assert daemon.stop(signal.SIGQUIT) == 0
        daemon.wait_event("stopped")


@pytest.mark.parametrize("signum", [s for s, action in TABLE.items() if action == "stop"])
def test_stop_signals_stop_cleanly(files, signum):
    write_config(files, "a")
    with Daemon("-c", "confsync.yaml", cwd=files) as daemon:
        daemon.wait_event("written")
        assert daemon.stop(signum) == 0
        daemon.wait_event("stopped")


def test_sighup_adds_and_removes_templates_without_touching_the_others(files):
    write_config(files, "a", "b")
    with Daemon("-c", "confsync.yaml", cwd=files) as daemon:
        daemon.wait_event("written", template=str(files / "out/a.conf"))
        daemon.wait_event("written", template=str(files / "out/b.conf"))
        write_config(files, "a", "c")
        mark = len(daemon.lines)
        entry = reload(daemon)
        assert sorted(entry["changed"]) == [f"+template {files}/out/c.conf", f"-template {files}/out/b.conf"]
        daemon.wait_event("written", template=str(files / "out/c.conf"))
        assert (files / "out/c.conf").read_text() == "c=data-c\n"
        # a did not change: it was not rendered again, and its watch on kv.key('a') still works
        assert rendered_after(daemon, mark) == {str(files / "out/c.conf")}
        (files / "data/a").write_text("new-a")
        daemon.wait_event("written", template=str(files / "out/a.conf"))
        assert (files / "out/a.conf").read_text() == "a=new-a\n"
        # b is no longer managed: its key is not watched any more
        (files / "data/b").write_text("new-b")
        (files / "data/c").write_text("new-c")
        daemon.wait_event("written", template=str(files / "out/c.conf"))
        assert (files / "out/b.conf").read_text() == "b=data-b\n"


def test_sighup_renders_a_template_whose_text_changed(files):
    (files / "inc.j2").write_text("one")
    (files / "a.j2").write_text('{% include "inc.j2" %} {{ kv.key("a") }}\n')
    write_config(files, "a", "b")
    with Daemon("-c", "confsync.yaml", cwd=files) as daemon:
        daemon.wait_event("written", template=str(files / "out/a.conf"))
        daemon.wait_event("written", template=str(files / "out/b.conf"))
        (files / "inc.j2").write_text("two")  # only an included file changes
        mark = len(daemon.lines)
        assert reload(daemon)["changed"] == [f"~template {files}/out/a.conf"]
        daemon.wait_event("written", template=str(files / "out/a.conf"))
        assert (files / "out/a.conf").read_text() == "two data-a\n"
        assert rendered_after(daemon, mark) == {str(files / "out/a.conf")}


def test_sighup_moves_a_source_to_a_new_root(files):
    write_config(files, "a", "b")
    with Daemon("-c", "confsync.yaml", cwd=files) as daemon:
        daemon.wait_event("written", template=str(files / "out/b.conf"))
        write_config(files, "a", "b", root="data2")
        assert reload(daemon)["changed"] == ["~source kv"]
        wait_until(lambda: (files / "out/a.conf").read_text() == "a=data2-a\n", what="a from data2")
        wait_until(lambda: (files / "out/b.conf").read_text() == "b=data2-b\n", what="b from data2")
        (files / "data2/a").write_text("moved")  # the new root is watched ...
        wait_until(lambda: (files / "out/a.conf").read_text() == "a=moved\n", what="a from data2")
        (files / "data/a").write_text("old")  # ... and the old one is not
        (files / "data2/b").write_text("moved")
        wait_until(lambda: (files / "out/b.conf").read_text() == "b=moved\n", what="b from data2")
        assert (files / "out/a.conf").read_text() == "a=moved\n"


KV = "sources:\n  kv: {type: files, root: ./data}\n"


@pytest.mark.parametrize("broken, named", [
    ("templates: [\n", "confsync.yaml"),  # not YAML
    ("templates:\n  - {source: nosuch.j2, destination: out/x.conf}\n", "nosuch.j2"),  # no such file
    (KV + "templates:\n  - {source: bad.j2, destination: out/x.conf}\n", "bad.j2:1: syntax error"),
    (KV + "templates:\n  - {source: kvv.j2, destination: out/x.conf}\n", "kvv.j2:2: 'kvv' is undefined"),
    (KV + "templates:\n  - {source: inc.j2, destination: out/x.conf}\n", "inc.j2:1: template 'gone.j2' not found"),
])
def test_sighup_refuses_a_broken_config_and_keeps_running(files, broken, named):
    (files / "bad.j2").write_text("{% if %}\n")
    (files / "kvv.j2").write_text('{{ kv.key("a") }}\n{{ kvv.key("a") }}\n')
    (files / "inc.j2").write_text('{% include "gone.j2" %}\n')
    write_config(files, "a")
    port = free_port()
    with Daemon("-c", "confsync.yaml", "--listen", f"127.0.0.1:{port}", cwd=files) as daemon:
        daemon.wait_event("written", template=str(files / "out/a.conf"))
        (files / "confsync.yaml").write_text(broken)
        daemon.proc.send_signal(signal.SIGHUP)
        assert named in daemon.wait_event("config_reload_failed")["message"]
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=DEADLINE).read().decode()
        assert 'confsync_config_reloads_total{result="failed"} 1.0' in metrics
        (files / "data/a").write_text("still")  # the old config still runs
        daemon.wait_event("written", template=str(files / "out/a.conf"))
        assert (files / "out/a.conf").read_text() == "a=still\n"
        assert daemon.stop() == 0


def test_signals_end_once_cleanly(files):
    """A stop signal ends `once` waiting for data with 128+signum; SIGHUP does not end it."""
    (files / "a.j2").write_text('{{ kv.key("never") }}\n')
    write_config(files, "a")
    proc = subprocess.Popen([sys.executable, "-m", "confsync", "once", "-c", "confsync.yaml", "--timeout", "60s",
                             "--log-level", "debug"], cwd=files, env=cli_env(), stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr
        wait_until(lambda: "waits for kv.key('never')" in proc.stderr.readline(), what="once waiting")
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "SIGHUP received: ignored" in proc.stderr.readline(), what="SIGHUP logged")
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=DEADLINE) == 128 + signal.SIGTERM
        assert "Traceback" not in proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()
