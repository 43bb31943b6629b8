"""Compiled templates cached on disk between runs: used when safe, never stale, off on request."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tests.helpers import cli_env, confsync

CONFIG = """
sources:
  kv: {type: files, root: ./data}
templates:
  - {source: t.j2, destination: out/app.conf}
"""


def test_a_second_run_uses_the_cache_and_an_edited_template_is_recompiled(project, tmp_path):
    cache = tmp_path / "cache"
    cfg = project(CONFIG, {"t.j2": "a={{ kv.key('k') }}\n"}, {"k": "1"})
    assert confsync("once", "-c", str(cfg), CONFSYNC_TEMPLATE_CACHE=str(cache)).returncode == 0
    entries = list(cache.iterdir())
    assert len(entries) == 1 and oct(entries[0].stat().st_mode & 0o777) == oct(0o600)
    assert oct(cache.stat().st_mode & 0o777) == oct(0o700)

    (tmp_path / "t.j2").write_text("b={{ kv.key('k') }}\n")  # same name, new source: not the cached code
    result = confsync("once", "-c", str(cfg), CONFSYNC_TEMPLATE_CACHE=str(cache))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out/app.conf").read_text() == "b=1\n"


def test_the_same_template_read_with_other_delimiters_is_other_code(project, tmp_path):
    """Jinja2 keys its cache by the template's name and text; the delimiters change the code too."""
    cache = tmp_path / "cache"
    text = "a=[[ kv.key('k') ]] b={{ kv.key('k') }}\n"
    plain = project(CONFIG, {"t.j2": text}, {"k": "1"})
    square = project(CONFIG.replace("out/app.conf}", 'out/square.conf, delimiters: {variable: ["[[", "]]"]}}'),
                     name="square.yaml")
    for cfg in (plain, square, plain, square):  # the second pair loads what the first compiled
        result = confsync("once", "-c", str(cfg), CONFSYNC_TEMPLATE_CACHE=str(cache))
        assert result.returncode == 0, result.stderr
        assert (tmp_path / "out/app.conf").read_text() == "a=[[ kv.key('k') ]] b=1\n"
        if cfg == square:
            assert (tmp_path / "out/square.conf").read_text() == "a=1 b={{ kv.key('k') }}\n"
    assert len(list(cache.iterdir())) == 2


def test_a_cache_directory_others_can_write_is_not_used(project, tmp_path):
    cache = tmp_path / "shared"
    cache.mkdir()
    os.chmod(cache, 0o777)
    cfg = project(CONFIG, {"t.j2": "a={{ kv.key('k') }}\n"}, {"k": "1"})
    result = confsync("once", "-c", str(cfg), CONFSYNC_TEMPLATE_CACHE=str(cache))
    assert result.returncode == 0, result.stderr
    assert list(cache.iterdir()) == []


def test_the_cache_can_be_turned_off(project, tmp_path):
    cfg = project(CONFIG, {"t.j2": "a={{ kv.key('k') }}\n"}, {"k": "1"})
    result = confsync("once", "-c", str(cfg), CONFSYNC_TEMPLATE_CACHE="off", TMPDIR=str(tmp_path / "tmp"))
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "tmp").exists() and not (tmp_path / "off").exists()


def test_no_writable_temp_directory_turns_the_cache_off(project, tmp_path):
    """readOnlyRootFilesystem with no volume on /tmp (issue 10, item 14): no candidate of
    tempfile.gettempdir() is writable, so the cache is off and the render goes on."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare(1) to make /tmp and /var/tmp read-only in a mount namespace")
    cfg = project(CONFIG, {"t.j2": "a={{ kv.key('k') }}\n"}, {"k": "1"})
    (tmp_path / "out").mkdir()
    (tmp_path / "cwd").mkdir()
    # A private mount namespace: /tmp, /var/tmp and the working directory read-only (each bound
    # onto itself first, so the remount touches only this namespace), the destination writable.
    script = """
        set -e
        for d in /tmp /var/tmp "$CWD"; do mount --bind "$d" "$d"; done
        mount --bind "$OUT" "$OUT"
        for d in /tmp /var/tmp "$CWD"; do mount -o remount,bind,ro "$d"; done
        cd "$CWD"
        exec "$PYTHON" -m confsync once -c "$CFG" --log-level debug
    """
    env = {k: v for k, v in cli_env().items() if k not in ("TMPDIR", "TEMP", "TMP")}
    env.update(CWD=str(tmp_path / "cwd"), OUT=str(tmp_path / "out"), CFG=str(cfg), PYTHON=sys.executable)
    result = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out/app.conf").read_text() == "a=1\n"
    assert "template cache off" in result.stderr and "Traceback" not in result.stderr
