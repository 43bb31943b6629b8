"""A template's text inline (`contents`), its own delimiters, and the owner of the file it writes
(`user`, `group`), through the CLI. The tests run as root, so chown is real; the non-root cases run
confsync under setpriv, capsh or a user namespace."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import Daemon, cli_env, confsync, wait_until

KV = "sources:\n  kv: {type: files, root: ./data}\ntemplates:\n"

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to other users needs root")


def test_inline_contents_render_and_include_from_the_config_directory(project, tmp_path):
    cfg = project(KV + """\
  - contents: |
      host={{ kv.key("db/host") }}
      {% include "parts/common.j2" %}
    destination: out/inline.conf
  - {source: templates/file.j2, destination: out/file.conf}
""", {"parts/common.j2": "port={{ kv.key('db/port') }}", "templates/file.j2": "file {{ kv.key('db/host') }}\n"},
        {"db/host": "db1", "db/port": "5432"})
    result = confsync("once", "-c", str(cfg))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out/inline.conf").read_text() == "host=db1\nport=5432\n"
    assert (tmp_path / "out/file.conf").read_text() == "file db1\n"


def test_sighup_renders_inline_contents_and_delimiters_that_changed(project, tmp_path):
    inline = KV + "  - contents: TEXT\n    destination: out/a.conf\n"
    cfg = project(inline.replace("TEXT", "'a={{ kv.key(\"a\") }}'"), data={"a": "1"})
    with Daemon("-c", str(cfg), cwd=tmp_path) as daemon:
        daemon.wait_event("written", template=str(tmp_path / "out/a.conf"))
        cfg.write_text(inline.replace("TEXT", "'b=[[ kv.key(\"a\") ]] {{ x }}'")
                       + '    delimiters: {variable: ["[[", "]]"]}\n')
        daemon.proc.send_signal(signal.SIGHUP)
        assert daemon.wait_event("config_reloaded")["changed"] == [f"~template {tmp_path}/out/a.conf"]
        wait_until(lambda: (tmp_path / "out/a.conf").read_text() == "b=1 {{ x }}", what="the new inline text")


def test_check_names_the_config_file_the_template_and_the_line_inside_inline_text(project, tmp_path):
    cfg = project(KV + """\
  - contents: "ok\\n{% if %}\\n"
    destination: out/a
  - contents: |
      fine
      {{ kv.kye("x") }}
      {{ nosuch }}
    destination: out/b
  - contents: '{% include "outside.j2" %}{% include "../secret.j2" %}'
    destination: out/c
""")
    os.symlink("/etc/passwd", tmp_path / "outside.j2")
    result = confsync("check", "-c", str(cfg))
    assert result.returncode == 2
    for line in (f"{cfg}: templates[0].contents:2: syntax error",
                 f"{cfg}: templates[1].contents:2: kv.kye: no such function",
                 f"{cfg}: templates[1].contents:3: 'nosuch' is undefined",
                 f"{cfg}: templates[2].contents:1: refused: 'outside.j2' leads out of the template folder",
                 f"{cfg}: templates[2].contents:1: template '../secret.j2' not found"):
        assert line in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()


def test_template_settings_that_cannot_work_are_refused_naming_the_template(project, tmp_path):
    cfg = project(KV + """\
  - {source: t.j2, contents: "x", destination: out/a}
  - {destination: out/b}
  - {contents: "x", destination: out/c, user: no-such-user-here, group: -1}
  - {contents: "x", destination: out/d, delimiters: {variable: ["[[", "]]"], block: ["[[", "]]"]}}
  - {contents: "x", destination: out/e, delimiters: {comment: ["<#"]}}
  - {contents: "x", destination: out/f, delimiters: {variable: ["[ [", "]]"]}}
""", {"t.j2": "x"})
    result = confsync("check", "-c", str(cfg))
    assert result.returncode == 2
    for line in (f"{cfg}: templates[0]: set exactly one of source (a template file) or contents (the template "
                 "inline), not both",
                 f"{cfg}: templates[1]: set exactly one of source",
                 f"{cfg}: templates[2].user: no user named 'no-such-user-here'",
                 f"{cfg}: templates[2].group: a group id is from 0 to 4294967294, got -1",
                 f"{cfg}: templates[3].delimiters: variable, block and comment need three different starts",
                 f"{cfg}: templates[4].delimiters: comment: expected [start, end]",
                 f"{cfg}: templates[5].delimiters: variable: expected [start, end], two strings without white space"):
        assert line in result.stderr, result.stderr


def test_custom_delimiters_leave_the_files_own_braces_alone(project, tmp_path):
    """A Prometheus rule file: its `{{ $labels.instance }}` is the file's, `[[ ]]` and `[% %]` are ours,
    and so are the delimiters of what the template includes."""
    rules = """\
groups:
[%- for name in kv.ls("alerts") %]
  - alert: [[ name ]]
    expr: up == 0
    for: [[ kv.key("alerts/" ~ name) ]]
    annotations:
      summary: "{{ $labels.instance }} is down {# not a comment #}"
[%- endfor %]
[% include "footer.j2" %]
"""
    cfg = project(KV + """\
  - source: rules.yml.j2
    destination: out/rules.yml
    delimiters: {variable: ["[[", "]]"], block: ["[%", "%]"], comment: ["[#", "#]"]}
""", {"rules.yml.j2": rules, "footer.j2": "# [[ kv.ls('alerts') | length ]] rules {% raw %}"},
        {"alerts/HostDown": "5m", "alerts/DiskFull": "10m"})
    result = confsync("once", "-c", str(cfg))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out/rules.yml").read_text() == """\
groups:
  - alert: DiskFull
    expr: up == 0
    for: 10m
    annotations:
      summary: "{{ $labels.instance }} is down {# not a comment #}"
  - alert: HostDown
    expr: up == 0
    for: 5m
    annotations:
      summary: "{{ $labels.instance }} is down {# not a comment #}"
# 2 rules {% raw %}
"""


@needs_root
def test_user_and_group_are_set_on_the_staged_file_before_the_rename(project, tmp_path):
    """By name and by number; the `check` command sees the staged file already owned as it will be.
    Unset, each part keeps the current file's (root keeps the owner the app expects)."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "kept.conf").write_text("old")
    os.chown(out / "kept.conf", 5, 6)
    cfg = project(KV + f"""\
  - source: t.j2
    destination: out/app.conf
    user: daemon
    group: 4321
    perms: "0640"
    check: "stat -c %u:%g:%a {{staged}} > {tmp_path}/seen"
  - {{source: t.j2, destination: out/kept.conf, user: 4242}}
""", {"t.j2": "secret={{ kv.key('s') }}\n"}, {"s": "x"})
    result = confsync("once", "-c", str(cfg))
    assert result.returncode == 0, result.stderr
    daemon = int(subprocess.run(["id", "-u", "daemon"], capture_output=True, text=True, check=True).stdout)
    assert (tmp_path / "seen").read_text().strip() == f"{daemon}:4321:640"
    st = os.stat(out / "app.conf")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (daemon, 4321, 0o640)
    st = os.stat(out / "kept.conf")
    assert (st.st_uid, st.st_gid) == (4242, 6)


@needs_root
def test_a_new_owner_or_mode_applies_to_a_file_whose_bytes_are_already_right(project, tmp_path):
    """`user` added to the config after the file was written: no write is due, the owner changes all
    the same; never through a symlink, which may lead to a file that is not ours to give away."""
    out = tmp_path / "out"
    out.mkdir()
    for name in ("app.conf", "victim.conf"):
        (out / name).write_text("v=1\n")
        os.chmod(out / name, 0o644)
    os.symlink("victim.conf", out / "link.conf")
    cfg = project(KV + """  - {contents: "v=1\\n", destination: out/app.conf, user: 4242, group: 4343, perms: "0600"}
  - {contents: "v=1\\n", destination: out/link.conf, user: 4242, perms: "0600"}
""")
    result = confsync("once", "-c", str(cfg))
    assert result.returncode == 0, result.stderr
    assert "wrote" not in result.stderr  # the bytes were right: nothing written, nothing to reload
    st = os.stat(out / "app.conf")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (4242, 4343, 0o600)
    st = os.stat(out / "victim.conf")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, 0o644)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory another user can reach (pytest's tmp_path is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="confsync-owner-"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path)


@needs_root
@pytest.mark.parametrize("prefix", [
    ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"],
    ["capsh", "--drop=cap_chown", "--"],  # root in a container that dropped CAP_CHOWN
], ids=["nobody", "root-without-cap-chown"])
def test_without_cap_chown_another_owner_is_refused_when_the_config_loads(shared_dir, prefix):
    if not shutil.which(prefix[0]):
        pytest.skip(f"needs {prefix[0]}")
    cfg = shared_dir / "c.yaml"
    cfg.write_text(f"sources: {{kv: {{type: files, root: {shared_dir}}}}}\ntemplates:\n"
                   f"  - {{contents: x, destination: {shared_dir}/out/a, user: daemon}}\n"
                   f"  - {{contents: x, destination: {shared_dir}/out/b, group: 4321}}\n")
    cfg.chmod(0o644)
    command = [sys.executable, "-m", "confsync", "check", "-c", str(cfg)]
    if prefix[0] == "capsh":
        command = ["-c", " ".join(command)]
    result = subprocess.run([*prefix, *command], env=cli_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    uid = 65534 if prefix[0] == "setpriv" else 0
    assert (f"templates[0].user: cannot give files to user 'daemon' (uid 1): confsync runs as uid {uid} without "
            "CAP_CHOWN") in result.stderr
    assert (f"templates[1].group: cannot give files to group id 4321: confsync runs as uid {uid} without "
            "CAP_CHOWN, and is not in that group") in result.stderr
    assert "Traceback" not in result.stderr


@needs_root
def test_without_cap_chown_a_group_of_its_own_is_given(shared_dir):
    cfg = shared_dir / "c.yaml"
    cfg.write_text(f"sources: {{kv: {{type: files, root: {shared_dir}/data}}}}\ntemplates:\n"
                   f"  - {{contents: x, destination: {shared_dir}/out/a, group: 4321}}\n")
    (shared_dir / "data").mkdir()
    (shared_dir / "out").mkdir()
    os.chown(shared_dir / "out", 65534, 65534)
    result = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--groups=4321", sys.executable, "-m",
                             "confsync", "once", "-c", str(cfg)], env=cli_env(), capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    st = os.stat(shared_dir / "out/a")
    assert (st.st_uid, st.st_gid) == (65534, 4321)


@needs_root
def test_a_chown_the_system_refuses_at_write_time_keeps_the_good_file(project, tmp_path):
    """In a user namespace confsync is root with CAP_CHOWN, so the config passes; uid 4321 is not
    mapped there, so the kernel refuses the chown (EINVAL): a write error naming the owner, not a crash."""
    if not shutil.which("unshare"):
        pytest.skip("needs unshare(1)")
    cfg = project(KV + "  - {contents: new, destination: out/app.conf, user: 4321}\n")
    (tmp_path / "out").mkdir()
    (tmp_path / "out/app.conf").write_text("good")
    result = subprocess.run(["unshare", "--user", "--map-root-user", sys.executable, "-m", "confsync", "once", "-c",
                             str(cfg)], env=cli_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stderr
    assert f"{tmp_path}/out/app.conf: cannot give the file to uid 4321, gid 0: Invalid argument" in result.stderr
    assert "Traceback" not in result.stderr
    assert (tmp_path / "out/app.conf").read_text() == "good"
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["app.conf"]  # no staged file left behind
