"""Template helpers (confsync/filters.py): through the CLI on the files source, and their bounds
against hostile values: a pattern that backtracks for ever, an alias bomb, a result too large."""

from __future__ import annotations

import base64
import hashlib
import tomllib

import pytest

from tests.helpers import confsync

CONFIG = """
sources:
  kv: {type: files, root: ./data}
templates:
  - {source: t.j2, destination: out/t}
"""

HELPERS = """\
{%- set v = kv.key("v") -%}
sha256={{ v | sha256 }}
sha1={{ v | sha1 }}
md5={{ v | md5 }}
b64url={{ v | b64url_encode }}
back={{ v | b64url_encode | b64url_decode }}
match={{ v is regex_match("^a.c") }} {{ v | regex_match("z") }}
replace={{ v | regex_replace("(b)", "[\\\\1]") }}
findall={{ "a1 b22 c333" | regex_findall("[0-9]+") | join(",") }}
split={{ "x,y,,z" | split(",") | join("|") }}
yaml={{ (kv.key("doc.yaml") | from_yaml)["items"] | sum }}
toml={{ {"server": {"port": 8080, "hosts": ["a", "b"]}} | to_toml }}
stamp={{ timestamp("%Y") | length }}
"""


def test_helpers_render_through_the_cli(project, tmp_path):
    value = "abc?é"
    cfg = project(CONFIG, {"t.j2": HELPERS}, {"v": value, "doc.yaml": "items: [1, 2, 3]\n"})
    result = confsync("once", "-c", str(cfg))
    assert result.returncode == 0, result.stderr
    lines = dict(line.split("=", 1) for line in (tmp_path / "out/t").read_text().split("\n") if "=" in line
                 and not line.startswith(("port", "hosts", "[")))
    raw = value.encode()
    assert lines["sha256"] == hashlib.sha256(raw).hexdigest()
    assert lines["sha1"] == hashlib.sha1(raw).hexdigest()
    assert lines["md5"] == hashlib.md5(raw).hexdigest()
    assert lines["b64url"] == base64.urlsafe_b64encode(raw).decode()
    assert lines["back"] == value
    assert lines["match"] == "True False"
    assert lines["replace"] == "a[b]c?é"
    assert lines["findall"] == "1,22,333"
    assert lines["split"] == "x|y||z"
    assert lines["yaml"] == "6"
    assert lines["stamp"] == "4"
    toml = (tmp_path / "out/t").read_text().split("toml=", 1)[1].split("stamp=")[0]
    assert tomllib.loads(toml) == {"server": {"port": 8080, "hosts": ["a", "b"]}}


def test_b64url_decode_accepts_unpadded_input(project, tmp_path):
    unpadded = base64.urlsafe_b64encode(b"ab?>").decode().rstrip("=")
    assert "_" in unpadded and "=" not in unpadded
    cfg = project(CONFIG, {"t.j2": '{{ kv.key("v") | b64url_decode }}'}, {"v": unpadded})
    assert confsync("once", "-c", str(cfg)).returncode == 0
    assert (tmp_path / "out/t").read_text() == "ab?>"


@pytest.mark.parametrize(("template", "data", "message"), [
    # Catastrophic backtracking: with `re` this runs for longer than the universe has.
    ('{{ kv.key("v") | regex_match("(a|aa)+$") }}', "a" * 60 + "b", "regex_match: the pattern took longer"),
    ('{{ kv.key("v") | regex_replace("(", "x") }}', "abc", "regex_replace: invalid pattern"),
    # The billion-laughs shape: 11 levels of ten aliases, 10**11 elements once expanded.
    ('{{ kv.key("v") | from_yaml | length }}',
     "a: &a [x,x,x,x,x,x,x,x,x,x]\n" + "".join(
         f"{c}: &{c} [{','.join(['*' + p] * 10)}]\n" for p, c in zip("abcdefghijk", "bcdefghijkl", strict=True)),
     "from_yaml: more than 100 aliases"),
    ('{{ kv.key("v") | from_yaml }}', "a: [1,\n", "from_yaml: not valid YAML at line 2"),
    ('{{ kv.key("v") | regex_replace("", "y" * 4096) }}', "x" * 8192, "regex_replace: result larger than"),
    ('{{ ["a"] | to_toml }}', "v", "to_toml: needs a mapping"),
])
def test_helpers_refuse_hostile_input_and_keep_the_good_file(project, tmp_path, template, data, message):
    # The helpers' own limits are under test: the render budget's clock (wall time, on a loaded
    # machine) must not end the render first.
    cfg = project(CONFIG + "render: {timeout: 1m}\n", {"t.j2": template}, {"v": data})
    (tmp_path / "out").mkdir()
    (tmp_path / "out/t").write_text("good\n")
    result = confsync("once", "-c", str(cfg), "--timeout", "30s")
    assert result.returncode == 1
    assert message in result.stderr and "t.j2:1" in result.stderr
    assert "Traceback" not in result.stderr
    assert (tmp_path / "out/t").read_text() == "good\n"
