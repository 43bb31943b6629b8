"""The files source's inotify watch: directories that appear later, a root that goes and comes
back, files written in place read at their close, and no half-created file ever rendered."""

from __future__ import annotations

import os
import shutil

from tests.helpers import Daemon

CONFIG = """
sources:
  kv: {type: files, root: ./data}
templates:
  - {source: t.j2, destination: out/app.conf}
"""


def no_more_writes(daemon: Daemon, within: float = 0.3) -> bool:
    try:
        daemon.wait_event("written", timeout=within)
    except AssertionError:
        return True
    return False


def test_a_key_in_a_directory_created_after_start_is_seen(project, tmp_path):
    cfg = project(CONFIG, {"t.j2": "{{ kv.key('a/b/c', default='none') }}"}, {"x": "1"})
    with Daemon("-c", str(cfg)) as daemon:
        daemon.wait_event("written")
        (tmp_path / "data/a/b").mkdir(parents=True)  # two levels at once: the inner one races the watch
        (tmp_path / "data/a/b/c").write_text("deep")
        daemon.wait_event("written")
        assert (tmp_path / "out/app.conf").read_text() == "deep"
        os.rename(tmp_path / "data/a", tmp_path / "moved")  # moved out of the tree: gone
        daemon.wait_event("written")
        assert (tmp_path / "out/app.conf").read_text() == "none"
        (tmp_path / "moved/b/c").write_text("outside")  # no longer under the root: not a change
        assert no_more_writes(daemon)


def test_the_root_removed_and_recreated_is_watched_again(project, tmp_path):
    cfg = project(CONFIG, {"t.j2": "v={{ kv.key('k', default='none') }}"}, {"k": "1"})
    with Daemon("-c", str(cfg)) as daemon:
        daemon.wait_event("written")
        shutil.rmtree(tmp_path / "data")
        daemon.wait_event("source_down")
        (tmp_path / "data").mkdir()
        (tmp_path / "data/k").write_text("2")
        daemon.wait_event("source_up")
        daemon.wait_event("written")
        assert (tmp_path / "out/app.conf").read_text() == "v=2"
        (tmp_path / "data/k").write_text("3")  # and the new root is watched, not only read
        daemon.wait_event("written")
        assert (tmp_path / "out/app.conf").read_text() == "v=3"


def test_a_file_rewritten_in_place_is_read_at_its_close_never_while_truncated(project, tmp_path):
    """`{ sleep 0.3; printf db2; } > data/k`: the shell truncates the file, and only later writes the
    value (issue 10, item 7). The app must never be given the empty or partial value in between."""
    cfg = project(CONFIG, {"t.j2": "v={{ kv.key('k') }}"}, {"k": "db1"})
    with Daemon("-c", str(cfg)) as daemon:
        daemon.wait_event("written")
        with open(tmp_path / "data/k", "w") as fh:  # truncated: IN_MODIFY, no close yet
            assert no_more_writes(daemon)
            fh.write("db")
            fh.flush()
            assert no_more_writes(daemon)  # partly written, still open: not read either
            fh.write("2")
        daemon.wait_event("written")  # at the close
        assert (tmp_path / "out/app.conf").read_text() == "v=db2"
        assert no_more_writes(daemon, 0.1)


def test_a_new_file_is_not_read_before_its_writer_closes_it(project, tmp_path):
    cfg = project(CONFIG, {"t.j2": "v={{ kv.key('new', default='none') }}"}, {"k": "1"})
    with Daemon("-c", str(cfg)) as daemon:
        daemon.wait_event("written")
        with open(tmp_path / "data/new", "w") as fh:  # created empty…
            assert no_more_writes(daemon)  # …and not rendered as the empty value
            fh.write("full")
        daemon.wait_event("written")
        assert (tmp_path / "out/app.conf").read_text() == "v=full"
        assert no_more_writes(daemon, 0.1)


def test_a_burst_of_changes_ends_on_the_last_value(project, tmp_path):
    cfg = project(CONFIG, {"t.j2": "v={{ kv.key('k') }}"}, {"k": "0"})
    with Daemon("-c", str(cfg)) as daemon:
        daemon.wait_event("written")
        for n in range(1, 200):
            (tmp_path / "data/.k.tmp").write_text(str(n))
            os.rename(tmp_path / "data/.k.tmp", tmp_path / "data/k")
        while (tmp_path / "out/app.conf").read_text() != "v=199":
            daemon.wait_event("written")  # fails after its deadline if the last value never comes


def test_a_change_concerns_its_path_the_directories_above_and_everything_below():
    from confsync.sources import Dep
    from confsync.sources.files import _Index

    index = _Index()
    deps = {path: Dep("kv", kind, path) for kind, path in
            [("key", "a/b/c"), ("tree", "a"), ("tree", ""), ("key", "a/bc"), ("ls", "a/b"), ("key", "x"),
             ("key", "a/b0")]}
    for dep in deps.values():
        index.add(dep)
    names = lambda found: sorted(d.path for d in found)  # noqa: E731
    assert names(index.affected("a/b")) == ["", "a", "a/b", "a/b/c"]
    assert names(index.affected("a/b/c")) == ["", "a", "a/b", "a/b/c"]
    assert names(index.affected("x")) == ["", "x"]
    index.discard(deps["a/b/c"])
    index.discard(deps["a/b/c"])  # twice: harmless
    assert names(index.affected("a/b")) == ["", "a", "a/b"]
    assert "a/b/c" not in index.paths and index.paths == sorted(index.paths)


def test_a_configmap_volume_below_the_root_swaps_as_one_change(project, tmp_path):
    from tests.test_files_source import configmap

    cfg = project("""
sources:
  kv: {type: files, root: ./data}
templates:
  - {source: t.j2, destination: out/app.conf}
""", {"t.j2": "{{ kv.key('cm/host') }}:{{ kv.key('cm/port') }} {{ kv.key('other') }}"}, {"other": "o"})
    configmap(tmp_path / "data/cm", {"host": "h1", "port": "1"}, "2026_01_01_00_00_00.1")
    with Daemon("-c", str(cfg)) as daemon:
        daemon.wait_event("written")
        for n in range(2, 6):
            configmap(tmp_path / "data/cm", {"host": f"h{n}", "port": str(n)}, f"2026_01_01_00_0{n}_00.{n}")
            daemon.wait_event("written")
            assert (tmp_path / "out/app.conf").read_text() == f"h{n}:{n} o"  # never a mix of two versions
