"""Never write a bad file: guards, rollback, reload storms, path escapes, and faults of the disk."""

from __future__ import annotations

import errno
import json
import os
import subprocess

import pytest

from confsync import write
from tests.helpers import Daemon, confsync


def cfg_text(extra: str = "", reloaders: str = "", top: str = "") -> str:
    return f"""{top}
sources:
  kv: {{type: files, root: ./data}}
templates:
  - source: t.j2
    destination: out/app.conf
{extra}
{reloaders}
"""


def test_min_bytes_refuses_an_empty_render_while_a_good_file_exists(project, tmp_path):
    cfg = project(cfg_text(), {"t.j2": "{{ kv.tree('app').values() | join(',') }}"}, {"app/a": "1"})
    assert confsync("once", "-c", str(cfg)).returncode == 0
    (tmp_path / "data/app/a").unlink()  # the backend lost its data: the render is empty
    result = confsync("once", "-c", str(cfg))
    assert result.returncode == 1 and "under min_bytes=1" in result.stderr
    assert (tmp_path / "out/app.conf").read_text() == "1"


def test_max_shrink_refuses_unless_forced(project, tmp_path):
    keys = {f"app/k{i}": "x" * 10 for i in range(10)}
    cfg = project(cfg_text("    max_shrink: 50%\n"), {"t.j2": "{{ kv.tree('app') | to_json }}"}, keys)
    assert confsync("once", "-c", str(cfg)).returncode == 0
    good = (tmp_path / "out/app.conf").read_text()
    for i in range(2, 10):
        (tmp_path / f"data/app/k{i}").unlink()
    result = confsync("once", "-c", str(cfg))
    assert result.returncode == 1 and "over max_shrink=50%" in result.stderr
    assert (tmp_path / "out/app.conf").read_text() == good
    assert confsync("once", "-c", str(cfg), "--force").returncode == 0
    assert json.loads((tmp_path / "out/app.conf").read_text()) == {"k0": "x" * 10, "k1": "x" * 10}


@pytest.mark.parametrize("fmt, bad", [("json", '{"a": }'), ("yaml", "a: [1,\n"), ("toml", "a = \n")])
def test_format_check_keeps_the_live_file(project, tmp_path, fmt, bad):
    cfg = project(cfg_text(f"    format: {fmt}\n"), {"t.j2": "{{ kv.key('doc') }}"},
                  {"doc": {"json": '{"a": 1}', "yaml": "a: 1", "toml": "a = 1"}[fmt]})
    assert confsync("once", "-c", str(cfg)).returncode == 0
    good = (tmp_path / "out/app.conf").read_text()
    (tmp_path / "data/doc").write_text(bad)
    result = confsync("once", "-c", str(cfg))
    assert result.returncode == 1 and f"not valid {fmt}" in result.stderr and "line" in result.stderr
    assert (tmp_path / "out/app.conf").read_text() == good


def test_rollback_restores_the_previous_file_when_the_reload_fails(project, tmp_path):
    # The "app" rejects any config containing "bad", as `nginx -s reload` rejects a broken one.
    cfg = project(cfg_text("    rollback: true\n    reload: app\n",
                           'reloaders:\n  app: {command: "! grep -q bad out/app.conf"}\n'),
                  {"t.j2": "{{ kv.key('v') }}"}, {"v": "good"})
    with Daemon("-c", str(cfg), cwd=tmp_path) as daemon:
        daemon.wait_event("reloaded")
        (tmp_path / "data/v").write_text("bad")
        daemon.wait_event("reload_failed")
        daemon.wait_event("rolled_back")
        daemon.wait_event("reloaded")
        assert (tmp_path / "out/app.conf").read_text() == "good"
        (tmp_path / "data/v").write_text("better")  # retried at the next change
        daemon.wait_event("reloaded")
        assert (tmp_path / "out/app.conf").read_text() == "better"


def test_a_reloader_fires_at_most_once_per_wait_window(project, tmp_path, reload_server):
    # A window wide enough that the three writes below fit in it on a loaded machine.
    cfg = project(cfg_text("    wait: {min: 0s}\n    reload: web\n",
                           f'reloaders:\n  web: {{url: "{reload_server.url}"}}\n', top="wait: {min: 5s}\n"),
                  {"t.j2": "{{ kv.key('v') }}"}, {"v": "0"})
    with Daemon("-c", str(cfg)) as daemon:
        daemon.wait_event("reloaded")
        for n in range(1, 4):  # three writes, each on its own, inside one window
            (tmp_path / "data/v").write_text(str(n))
            daemon.wait_event("written")
        daemon.wait_event("reloaded")
        assert (tmp_path / "out/app.conf").read_text() == "3"
    assert reload_server.requests.qsize() == 2


def test_splay_delays_but_delivers(project, tmp_path, reload_server):
    cfg = project(cfg_text("    reload: web\n", f'reloaders:\n  web: {{url: "{reload_server.url}", splay: 300ms}}\n'),
                  {"t.j2": "{{ kv.key('v') }}"}, {"v": "0"})
    assert confsync("once", "-c", str(cfg)).returncode == 0
    assert reload_server.requests.qsize() == 1


def test_destination_outside_allowed_roots_is_refused(project, tmp_path):
    victim = tmp_path / "elsewhere/victim"
    victim.parent.mkdir()
    victim.write_text("precious")
    (tmp_path / "out").mkdir()
    os.symlink(victim, tmp_path / "out/app.conf")  # a symlink planted where the file goes
    cfg = project(cfg_text(), {"t.j2": "{{ kv.key('v') }}"}, {"v": "1"})
    result = confsync("once", "-c", str(cfg))
    assert result.returncode == 1 and "outside the allowed roots" in result.stderr
    assert victim.read_text() == "precious"

    dotdot = project(cfg_text().replace("out/app.conf", "out/../elsewhere/victim") +
                     f"    allowed_roots: [{tmp_path / 'out'}]\n".replace("\n", "\n", 1),
                     {"t.j2": "{{ kv.key('v') }}"}, {"v": "1"}, name="c2.yaml")
    text = dotdot.read_text().replace("\n\n\n", "\n")
    dotdot.write_text(text)
    result = confsync("once", "-c", str(dotdot))
    assert result.returncode == 1 and "outside the allowed roots" in result.stderr, result.stderr
    assert victim.read_text() == "precious"


def test_secret_sources_give_private_files_and_backups(project, tmp_path):
    cfg = project("""
sources:
  s: {type: files, root: ./data, secret: true}
templates:
  - {source: t.j2, destination: out/app.conf, backup: true}
""", {"t.j2": "pw={{ s.key('pw') }}"}, {"pw": "hunter2-first"})
    (tmp_path / "out").mkdir()
    (tmp_path / "out/app.conf").write_text("old")
    os.chmod(tmp_path / "out/app.conf", 0o644)
    assert confsync("once", "-c", str(cfg)).returncode == 0
    assert (tmp_path / "out/app.conf").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "out/app.conf.bak").stat().st_mode & 0o077 == 0


def mount(*args: str) -> None:
    result = subprocess.run(["mount", *args], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount here: {result.stderr.strip()}")


@pytest.fixture
def small_disk(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    mount("-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk))
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=True)


def test_disk_full_keeps_the_live_file_and_the_daemon_up(project, tmp_path, small_disk):
    cfg = project(cfg_text().replace("out/app.conf", "disk/app.conf"),
                  {"t.j2": "{{ kv.key('v') }}"}, {"v": "small"})
    with Daemon("-c", str(cfg)) as daemon:
        daemon.wait_event("written")
        (tmp_path / "data/v").write_text("x" * 100_000)  # larger than the whole disk
        failure = daemon.wait_event("render_failed")
        assert "No space left on device" in failure["message"]
        assert (small_disk / "app.conf").read_text() == "small"
        assert os.listdir(small_disk) == ["app.conf"]  # the staged file was cleaned up
        (tmp_path / "data/v").write_text("fits")
        daemon.wait_event("written")
        assert (small_disk / "app.conf").read_text() == "fits"


def test_read_only_destination_is_a_clear_error(project, tmp_path, small_disk):
    cfg = project(cfg_text().replace("out/app.conf", "disk/app.conf"), {"t.j2": "{{ kv.key('v') }}"}, {"v": "1"})
    assert confsync("once", "-c", str(cfg)).returncode == 0
    mount("-o", "remount,ro", str(small_disk))
    (tmp_path / "data/v").write_text("2")
    result = confsync("once", "-c", str(cfg))
    assert result.returncode == 1 and "Read-only file system" in result.stderr
    assert (small_disk / "app.conf").read_text() == "1"


def test_bind_mounted_file_falls_back_to_an_in_place_write(tmp_path, caplog):
    source, dest = tmp_path / "host-file", tmp_path / "app.conf"
    source.write_text("old")
    dest.write_text("")
    mount("--bind", str(source), str(dest))
    try:
        import asyncio

        target = write.Target(dest)
        assert asyncio.run(write.write(target, b"new")) is not None
        assert asyncio.run(write.write(target, b"newer")) is not None
        assert dest.read_text() == "newer" and source.read_text() == "newer"
        assert sum("EBUSY" in r.message for r in caplog.records) == 1  # said once
        assert [p.name for p in tmp_path.iterdir()] == sorted(["host-file", "app.conf"]) or \
            sorted(p.name for p in tmp_path.iterdir()) == ["app.conf", "host-file"]
    finally:
        subprocess.run(["umount", str(dest)], check=True)


def test_stale_pid_file_fails_the_reload_not_the_daemon(project, tmp_path):
    (tmp_path / "app.pid").write_text("999999")
    cfg = project(cfg_text("    reload: app\n", "reloaders:\n  app: {pid_file: app.pid}\n"),
                  {"t.j2": "{{ kv.key('v') }}"}, {"v": "1"})
    with Daemon("-c", str(cfg)) as daemon:
        failure = daemon.wait_event("reload_failed")
        assert "process 999999 is gone" in failure["message"]
        (tmp_path / "data/v").write_text("2")
        daemon.wait_event("reload_failed")
        assert (tmp_path / "out/app.conf").read_text() == "2"
    assert daemon.proc.returncode == 0


def test_destination_directory_removed_is_recreated(project, tmp_path):
    cfg = project(cfg_text(), {"t.j2": "{{ kv.key('v') }}"}, {"v": "1"})
    with Daemon("-c", str(cfg)) as daemon:
        daemon.wait_event("written")
        (tmp_path / "out/app.conf").unlink()
        (tmp_path / "out").rmdir()
        (tmp_path / "data/v").write_text("2")
        daemon.wait_event("written")
        assert (tmp_path / "out/app.conf").read_text() == "2"


def test_sigterm_during_a_write_finishes_it(project, tmp_path):
    started = tmp_path / "check-started"
    cfg = project(cfg_text(f'    check: "touch {started}; sleep 1"\n'), {"t.j2": "{{ kv.key('v') }}\n" * 100},
                  {"v": "1"})
    daemon = Daemon("-c", str(cfg))
    try:
        daemon.wait_event("written")
        started.unlink()
        (tmp_path / "data/v").write_text("2")
        from tests.helpers import wait_until

        wait_until(started.exists, what="the check of the second write to start")
        assert daemon.stop() == 0
    finally:
        daemon.stop()
    assert (tmp_path / "out/app.conf").read_text() == "2\n" * 100
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["app.conf"]


def test_enospc_from_the_writer_only_via_a_test_double(tmp_path, monkeypatch):
    """Where no small disk can be mounted, the same guarantee through a writer double."""
    import asyncio

    dest = tmp_path / "app.conf"
    dest.write_text("good")
    real_fdopen = os.fdopen

    class FullDisk:
        def __init__(self, fd: int, mode: str) -> None:
            self.fh = real_fdopen(fd, mode)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def write(self, data: bytes) -> int:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(write.os, "fdopen", FullDisk)
    with pytest.raises(write.WriteError, match="No space left on device"):
        asyncio.run(write.write(write.Target(dest), b"new content"))
    assert dest.read_text() == "good"
    assert [p.name for p in tmp_path.iterdir()] == ["app.conf"]


def test_reload_url_down_is_retried_at_the_next_change(project, tmp_path):
    from tests.test_observe import free_port

    url = f"http://127.0.0.1:{free_port()}/-/reload"  # nothing listens there
    cfg = project(cfg_text("    reload: web\n", f'reloaders:\n  web: {{url: "{url}", retries: 2, timeout: 5s}}\n'),
                  {"t.j2": "{{ kv.key('v') }}"}, {"v": "1"})
    with Daemon("-c", str(cfg)) as daemon:
        failure = daemon.wait_event("reload_failed")
        assert "ConnectError" in failure["message"] and url in failure["message"]
        (tmp_path / "data/v").write_text("2")
        daemon.wait_event("reload_failed")
        assert (tmp_path / "out/app.conf").read_text() == "2"
    assert daemon.proc.returncode == 0
