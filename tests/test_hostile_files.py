"""What lies in a `files` root cannot crash, hang or mislead confsync (issue 10, items 1, 2, 11).

Each odd entry — a name or value that is not text, a FIFO, a device, a symlink out of the root or
into a loop, a file too big — is named in a clear error, the good file on disk stays, and the
daemon keeps serving its other templates.
"""

from __future__ import annotations

import os
import socket
import stat
import time

import httpx
import pytest

from confsync.sources import Dep, Missing
from confsync.sources.files import read
from tests.helpers import Daemon, confsync
from tests.test_observe import free_port

TWO = """
sources:
  kv: {type: files, root: ./data}
templates:
  - {source: odd.j2, destination: out/odd.conf}
  - {source: fine.j2, destination: out/fine.conf}
"""


def _fifo(path):
    os.mkfifo(path)


def _socket(path):
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    sock.close()  # the socket file stays


def _device(path):
    if os.geteuid() != 0:
        pytest.skip("mknod needs root")
    os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 5))  # as /dev/zero


def _to_dev_zero(path):
    os.symlink("/dev/zero", path)


def _out_of_root(path):
    outside = path.parent.parent.parent / "outside"  # beside data/, the root
    outside.write_text("a file beside the root, not a key")
    os.symlink(outside, path)


def _too_big(path):
    with open(path, "wb") as fh:
        fh.truncate(17 * 2**20)  # sparse: 17 MiB of zeros


ODD_ENTRIES = {
    "fifo": (_fifo, "is not a regular file"),
    "socket": (_socket, "is not a regular file"),
    "device": (_device, "is not a regular file"),
    "dev-zero": (_to_dev_zero, "leads out of the root"),
    "out-of-root": (_out_of_root, "leads out of the root"),
    "too-big": (_too_big, "is larger than 16 MiB"),
}


@pytest.mark.parametrize("kind", ["key", "tree"])
@pytest.mark.parametrize("entry", sorted(ODD_ENTRIES))
def test_an_odd_entry_is_named_and_never_read(project, tmp_path, entry, kind):
    make, reason = ODD_ENTRIES[entry]
    template = "{{ kv.key('d/x') }}" if kind == "key" else "{{ kv.tree('d') | to_json }}"
    cfg = project(TWO, {"odd.j2": template, "fine.j2": "{{ kv.key('ok') }}"}, {"ok": "fine", "d/y": "y"})
    make(tmp_path / "data/d/x")
    (tmp_path / "out").mkdir()
    (tmp_path / "out/odd.conf").write_text("good")
    result = confsync("once", "-c", str(cfg), "--timeout", "1s", timeout=30)
    assert result.returncode == 3, result.stderr
    assert reason in result.stderr and ("'d/x'" in result.stderr if kind == "tree" else "kv.key('d/x')"
                                        in result.stderr), result.stderr
    assert "Traceback" not in result.stderr and "a file beside the root" not in result.stderr
    assert (tmp_path / "out/odd.conf").read_text() == "good"
    assert (tmp_path / "out/fine.conf").read_text() == "fine"


def test_symlink_loops_end_a_tree_walk_at_once(project, tmp_path):
    """`d/a -> .` and `d/b -> .` made the walk exponential: `once --timeout 3s` ran on past 30 s."""
    cfg = project(TWO, {"odd.j2": "{{ kv.tree('') | to_json }}", "fine.j2": "{{ kv.key('ok') }}"},
                  {"ok": "fine", "d/x": "1"})
    for name in ("a", "b"):
        os.symlink(".", tmp_path / "data/d" / name)
    result = confsync("once", "-c", str(cfg), "--timeout", "3s", timeout=30)
    assert result.returncode == 3
    assert "is a symlink loop" in result.stderr and "'d/a'" in result.stderr
    assert (tmp_path / "out/fine.conf").read_text() == "fine"


def test_a_symlink_loop_does_not_hide_changes_from_the_daemon(project, tmp_path):
    """A link back to the root re-registered the root's inotify watch under the link's name, so a
    change to `ok` was reported as `up/ok` and never reached the template."""
    cfg = project(TWO, {"odd.j2": "{{ kv.key('d/x') }}", "fine.j2": "{{ kv.key('ok') }}"},
                  {"ok": "1", "d/x": "1"})
    os.symlink(".", tmp_path / "data/up")
    os.symlink("..", tmp_path / "data/d/back")
    with Daemon("-c", str(cfg)) as daemon:
        daemon.wait_event("written", template=str(tmp_path / "out/fine.conf"))
        (tmp_path / "data/ok").write_text("2")
        daemon.wait_event("written", template=str(tmp_path / "out/fine.conf"))
        assert (tmp_path / "out/fine.conf").read_text() == "2"


def test_symlinks_inside_the_root_are_followed(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "real/v").write_text("1")
    os.symlink("real", tmp_path / "alias")
    os.symlink("real/v", tmp_path / "v")
    assert read(tmp_path, Dep("kv", "key", "v")) == "1"
    assert read(tmp_path, Dep("kv", "key", "alias/v")) == "1"
    assert read(tmp_path, Dep("kv", "tree", "")) == {"alias/v": "1", "real/v": "1", "v": "1"}


BAD_NAME = os.fsdecode(b"bad\xffname")


def test_a_key_name_that_is_not_utf8_is_named_and_the_daemon_keeps_serving(project, tmp_path):
    """`printf x > "$(printf 'data/app/bad\\xffname')"` read through kv.tree("app") ended `run`
    with UnicodeEncodeError, at every restart (issue 10, item 1)."""
    cfg = project(TWO, {"odd.j2": "{% for k, v in kv.tree('app').items() %}{{ k }}={{ v }}\n{% endfor %}",
                        "fine.j2": "{{ kv.key('ok') }}"}, {"ok": "1", "app/good": "g"})
    with Daemon("-c", str(cfg)) as daemon:
        daemon.wait_event("written", template=str(tmp_path / "out/odd.conf"))
        daemon.wait_event("written", template=str(tmp_path / "out/fine.conf"))
        (tmp_path / "data/app" / BAD_NAME).write_text("x")
        (tmp_path / "data/ok").write_text("2")  # the other template is still served
        daemon.wait_event("written", template=str(tmp_path / "out/fine.conf"))
        assert (tmp_path / "out/fine.conf").read_text() == "2"
        assert (tmp_path / "out/odd.conf").read_text() == "good=g\n"
        assert daemon.proc.poll() is None
    assert "Traceback" not in daemon.log() and "Logging error" not in daemon.log()
    value = read(tmp_path / "data", Dep("kv", "ls", "app"))
    assert isinstance(value, Missing) and "is not UTF-8: 'bad\\udcffname'" in value.reason


def test_a_lone_surrogate_in_a_value_is_a_template_error(project, tmp_path):
    cfg = project(TWO, {"odd.j2": "name={{ (kv.key('j') | from_json).name }}", "fine.j2": "{{ kv.key('ok') }}"},
                  {"ok": "1", "j": '{"name": "\\udc80"}'})
    (tmp_path / "out").mkdir()
    (tmp_path / "out/odd.conf").write_text("good")
    with Daemon("-c", str(cfg)) as daemon:
        failed = daemon.wait_event("render_failed", template=str(tmp_path / "out/odd.conf"))
        assert "output line 1 holds a lone surrogate" in failed["message"]
        daemon.wait_event("written", template=str(tmp_path / "out/fine.conf"))
        (tmp_path / "data/ok").write_text("2")
        daemon.wait_event("written", template=str(tmp_path / "out/fine.conf"))
        assert daemon.proc.poll() is None
    assert (tmp_path / "out/odd.conf").read_text() == "good"
    assert "Traceback" not in daemon.log()


ONE = """
sources:
  kv: {type: files, root: ./data}
templates:
  - {source: templates/t.j2, destination: out/app.conf}
"""


def test_a_destination_directory_that_is_a_symlink_is_refused(project, tmp_path):
    """`ln -s victim out` in a shared volume: the default root, out/ itself, was resolved to
    victim/ and trusted (issue 10, item 11)."""
    cfg = project(ONE, {"templates/t.j2": "planted"})
    (tmp_path / "victim").mkdir()
    (tmp_path / "victim/app.conf").write_text("the victim's file")
    os.symlink("victim", tmp_path / "out")
    result = confsync("once", "-c", str(cfg))
    assert result.returncode == 1
    assert "a symlink, never trusted as a root" in result.stderr, result.stderr
    assert (tmp_path / "victim/app.conf").read_text() == "the victim's file"


def test_an_include_cannot_follow_a_symlink_out_of_the_template_folder(project, tmp_path):
    cfg = project(ONE, {"templates/t.j2": "{% include 'inc.j2' %}", "templates/sub/real.j2": "fine",
                        "private.txt": "not a template"})
    os.symlink("../private.txt", tmp_path / "templates/inc.j2")
    result = confsync("once", "-c", str(cfg))
    assert result.returncode == 1
    assert "'inc.j2' leads out of the template folder" in result.stderr and "t.j2:1:" in result.stderr
    assert not (tmp_path / "out/app.conf").exists()
    os.unlink(tmp_path / "templates/inc.j2")
    os.symlink("sub/real.j2", tmp_path / "templates/inc.j2")  # inside the folder: fine
    assert confsync("once", "-c", str(cfg)).returncode == 0
    assert (tmp_path / "out/app.conf").read_text() == "fine"


def test_stale_temp_files_of_an_interrupted_write_are_removed_at_start(project, tmp_path):
    """`kill -9` between staging and rename leaves `.app.conf.XXXXXXXX.tmp` (issue 10, item 12)."""
    cfg = project(ONE, {"templates/t.j2": "new"})
    out = tmp_path / "out"
    out.mkdir()
    old, fresh = time.time() - 86400, time.time()
    names = {".app.conf.k3x_9a0q.tmp": old, ".app.conf.bak.tmp": old, ".app.conf.zz12ab34.tmp": fresh,
             ".other.conf.k3x_9a0q.tmp": old, ".app.conf.notours.tmp": old, "app.conf.k3x_9a0q.tmp": old}
    for name, mtime in names.items():
        (out / name).write_text("left over")
        os.utime(out / name, (mtime, mtime))
    result = confsync("once", "-c", str(cfg), "--log-level", "info")
    assert result.returncode == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [".app.conf.zz12ab34.tmp", ".other.conf.k3x_9a0q.tmp", ".app.conf.notours.tmp", "app.conf.k3x_9a0q.tmp",
         "app.conf"])
    assert result.stderr.count("left by an interrupted write") == 2


def test_a_watched_key_that_cannot_be_read_is_a_warning_a_metric_and_not_ready(project, tmp_path):
    """It was logged at debug only, counted nowhere, and /readyz stayed 200 (issue 10, item 13)."""
    cfg = project(ONE, {"templates/t.j2": "v={{ kv.key('k') }}"}, {"k": "1"})
    port = free_port()
    with Daemon("-c", str(cfg), "--listen", f"127.0.0.1:{port}") as daemon:
        daemon.wait_event("written")
        ready = lambda: httpx.get(f"http://127.0.0.1:{port}/readyz")  # noqa: E731
        assert ready().status_code == 200
        (tmp_path / "data/k").write_bytes(b"\xff\xfe")
        warning = daemon.wait_event("unreadable")
        assert warning["level"] == "warning" and "value is not UTF-8 text" in warning["message"]
        answer = ready()
        assert answer.status_code == 503
        assert "value is not UTF-8" in answer.json()["waiting"][str(tmp_path / "out/app.conf")]["kv.key('k')"]
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        assert 'reason="unreadable"' in metrics
        (tmp_path / "data/k").write_text("2")
        daemon.wait_event("written")
        # Said once, not by the value and again by the template that uses it (issue 16).
        assert daemon.log().count('"event": "unreadable"') == 1, daemon.log()
        assert ready().status_code == 200
        (tmp_path / "data/k").unlink()
        assert "does not exist" in daemon.wait_event("unreadable")["message"]
        assert ready().status_code == 503
    assert (tmp_path / "out/app.conf").read_text() == "v=2"


def test_out_of_descriptors_is_an_error_readyz_shows_not_waiting(project, tmp_path):
    """EMFILE on a key read was treated as "waiting" (debug only) and /readyz said 200 (issue 10,
    item 5). The daemon's own descriptor limit is lowered to what it holds, so its next open fails."""
    import resource

    cfg = project(ONE, {"templates/t.j2": "v={{ kv.key('k') }}"}, {"k": "1"})
    port = free_port()
    with Daemon("-c", str(cfg), "--listen", f"127.0.0.1:{port}") as daemon:
        daemon.wait_event("written")
        pid = daemon.proc.pid
        limits = resource.prlimit(pid, resource.RLIMIT_NOFILE)
        held = len(os.listdir(f"/proc/{pid}/fd"))
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (held, limits[1]))
        try:
            (tmp_path / "data/k").write_text("2")
            warning = daemon.wait_event("unreadable")
        finally:
            resource.prlimit(pid, resource.RLIMIT_NOFILE, limits)
        assert warning["level"] == "warning" and "Too many open files" in warning["message"]
        answer = httpx.get(f"http://127.0.0.1:{port}/readyz")
        assert answer.status_code == 503 and "Too many open files" in answer.text
        assert 'reason="unreadable"' in httpx.get(f"http://127.0.0.1:{port}/metrics").text
        (tmp_path / "data/k").write_text("3")  # descriptors back: the next change is read and written
        daemon.wait_event("written")
        assert httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200
    assert (tmp_path / "out/app.conf").read_text() == "v=3"


@pytest.mark.parametrize("diff", [False, True])
def test_a_fifo_in_a_destination_s_place_is_named_and_left(project, tmp_path, diff):
    """A FIFO where a destination goes (a shared volume): reading the current file waited for a
    writer for ever, and SIGTERM could not end the wait (`once` hung in open())."""
    cfg = project(TWO, {"odd.j2": "{{ kv.key('ok') }}", "fine.j2": "{{ kv.key('ok') }}"}, {"ok": "fine"})
    (tmp_path / "out").mkdir()
    os.mkfifo(tmp_path / "out/odd.conf")
    result = confsync("once", "-c", str(cfg), *(["--diff"] if diff else []), timeout=30)
    assert result.returncode == 1, result.stderr
    assert "out/odd.conf: is not a regular file" in result.stderr and "Traceback" not in result.stderr
    assert stat.S_ISFIFO(os.lstat(tmp_path / "out/odd.conf").st_mode)
    assert (tmp_path / "out/fine.conf").read_text() == "fine"
