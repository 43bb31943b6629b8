"""The `files` source: plain trees and Kubernetes ConfigMap/Secret volume layouts."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

from confsync.sources import ABSENT, Dep, Missing
from confsync.sources.files import read
from tests.helpers import Daemon, wait_until


def configmap(volume: Path, values: dict[str, str], stamp: str) -> None:
    """Lay out or update `volume` as the kubelet's AtomicWriter does: a new `..<stamp>` directory,
    a `..data_tmp` symlink to it renamed over `..data`, and per-key symlinks through `..data`."""
    volume.mkdir(exist_ok=True)
    new = volume / f"..{stamp}"
    new.mkdir()
    for key, value in values.items():
        (new / key).write_text(value)
    old = os.readlink(volume / "..data") if (volume / "..data").is_symlink() else None
    os.symlink(new.name, volume / "..data_tmp")
    os.rename(volume / "..data_tmp", volume / "..data")
    for key in values:
        if not (volume / key).is_symlink():
            os.symlink(f"..data/{key}", volume / key)
    if old:
        shutil.rmtree(volume / old)


def test_read_plain_tree(tmp_path):
    (tmp_path / "app/db").mkdir(parents=True)
    (tmp_path / "app/db/host").write_text("h")
    (tmp_path / "app/name").write_text("n")
    assert read(tmp_path, Dep("kv", "key", "app/db/host")) == "h"
    assert read(tmp_path, Dep("kv", "key", "app/nope")) is ABSENT
    assert read(tmp_path, Dep("kv", "key", "app")) is ABSENT  # a directory is not a value
    assert read(tmp_path, Dep("kv", "tree", "app")) == {"db/host": "h", "name": "n"}
    assert read(tmp_path, Dep("kv", "tree", "none")) == {}
    assert read(tmp_path, Dep("kv", "ls", "app")) == ["db", "name"]


def test_bad_keys_and_values_are_missing_with_a_reason(tmp_path):
    (tmp_path / "bin").write_bytes(b"\xff\xfe")
    assert "not UTF-8" in read(tmp_path, Dep("kv", "key", "bin")).reason
    for key in ("../etc/passwd", "a/../../b", "..data", "a\x00b", "a\nb"):
        value = read(tmp_path, Dep("kv", "key", key))
        assert isinstance(value, Missing) and "invalid key" in value.reason, key


def test_configmap_layout_hides_kubelet_entries(tmp_path):
    configmap(tmp_path, {"host": "h1", "port": "1"}, "2026_01_01_00_00_00.1")
    assert read(tmp_path, Dep("kv", "tree", "")) == {"host": "h1", "port": "1"}
    assert read(tmp_path, Dep("kv", "ls", "")) == ["host", "port"]


def test_configmap_swap_is_seen_by_the_daemon(project, tmp_path):
    cfg = project("""
sources:
  cm: {type: files, root: ./cm}
templates:
  - {source: t.j2, destination: out/app.conf}
""", {"t.j2": "{{ cm.key('host') }}:{{ cm.key('port') }} {{ cm.ls() | join(',') }}"})
    configmap(tmp_path / "cm", {"host": "h1", "port": "1"}, "2026_01_01_00_00_00.1")
    with Daemon("-c", str(cfg)) as daemon:
        daemon.wait_event("written")
        assert (tmp_path / "out/app.conf").read_text() == "h1:1 host,port"
        configmap(tmp_path / "cm", {"host": "h2", "port": "2"}, "2026_01_01_00_01_00.2")
        daemon.wait_event("written")
        assert (tmp_path / "out/app.conf").read_text() == "h2:2 host,port"


READER = textwrap.dedent("""
    import sys
    path, stop = sys.argv[1], sys.argv[2]
    import os
    reads = bad = 0
    while not os.path.exists(stop):
        try:
            with open(path) as fh:
                text = fh.read()
        except FileNotFoundError:
            continue
        reads += 1
        lines = text.split("\\n")
        # Whole: 2000 identical lines and a final newline.
        if len(lines) != 2001 or lines[-1] != "" or len(set(lines[:-1])) != 1:
            bad += 1
    print(reads, bad)
""")


def test_a_reader_never_sees_a_partial_or_empty_file(project, tmp_path):
    cfg = project("""
sources:
  kv: {type: files, root: ./data}
templates:
  - {source: t.j2, destination: out/app.conf}
""", {"t.j2": "{% for i in range(2000) %}value={{ kv.key('v') }}\n{% endfor %}"}, {"v": "0"})
    stop = tmp_path / "stop"
    with Daemon("-c", str(cfg)) as daemon:
        daemon.wait_event("written")
        reader = subprocess.Popen([sys.executable, "-c", READER, str(tmp_path / "out/app.conf"), str(stop)],
                                  stdout=subprocess.PIPE, text=True)
        try:
            for n in range(1, 150):
                (tmp_path / "data/v").write_text(str(n) * (n % 7 + 1))  # sizes vary too
                daemon.wait_event("written")
        finally:
            stop.write_text("")
            out, _ = reader.communicate(timeout=20)
    reads, bad = map(int, out.split())
    assert reads > 150 and bad == 0


def test_a_root_created_after_start_is_picked_up(project, tmp_path):
    cfg = project("""
sources:
  late: {type: files, root: ./late}
templates:
  - {source: t.j2, destination: out/app.conf}
""", {"t.j2": "{{ late.key('v') }}"})
    with Daemon("-c", str(cfg)) as daemon:
        daemon.wait_event("source_down", source="late")
        (tmp_path / "late.tmp").mkdir()
        (tmp_path / "late.tmp/v").write_text("here")
        (tmp_path / "late.tmp").rename(tmp_path / "late")
        daemon.wait_event("written")  # the first read may already see it, before the watcher does
        assert (tmp_path / "out/app.conf").read_text() == "here"
        wait_until(lambda: '"source_up"' in daemon.log(), what="the source to be reported up")
