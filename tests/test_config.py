"""Config loading: every error names the file and the field path; nothing unknown slips through."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from confsync.config import MAX_DURATION, load, parse_duration
from confsync.errors import ConfigError

BASE = """
sources:
  kv: {type: files, root: ./data}
templates:
  - source: t.j2
    destination: out/t
"""


@pytest.fixture
def write(tmp_path):
    (tmp_path / "t.j2").write_text("x")

    def make(text: str, name: str = "confsync.yaml"):
        path = tmp_path / name
        path.write_text(text)
        return path

    return make


def error_of(path) -> str:
    with pytest.raises(ConfigError) as info:
        load(path)
    assert str(path) in str(info.value)
    return str(info.value)


def test_a_valid_config_loads_with_resolved_paths(write, tmp_path):
    cfg = load(write(BASE + "    perms: '0600'\n    wait: {min: 250ms}\n"))
    tpl = cfg.templates[0]
    assert tpl.source == tmp_path / "t.j2" and tpl.destination == tmp_path / "out/t"
    assert tpl.perms == 0o600 and tpl.wait.min == 0.25 and tpl.wait.max == 1.0
    assert cfg.sources["kv"].options.root == tmp_path / "data"


def test_toml_is_accepted(write, tmp_path):
    cfg = load(write('[sources.kv]\ntype = "files"\nroot = "d"\n[[templates]]\nsource = "t.j2"\n'
                     'destination = "o"\nreload = ["r"]\n[reloaders.r]\ncommand = "true"\n', "c.toml"))
    assert cfg.templates[0].reload == ("r",) and cfg.reloaders["r"].kind == "command"


@pytest.mark.parametrize("snippet, message", [
    ("    colour: red\n", "templates[0].colour: unknown key"),
    ("    perms: 640\n", "templates[0].perms: expected an octal mode"),
    ("    wait: {min: 2x}\n", "templates[0].wait.min: expected a duration"),
    ("    wait: {min: 2s, max: 1s}\n", "templates[0].wait: max (1.0s) is shorter than min"),
    ("    create_dirs: 'yes'\n", "templates[0].create_dirs: expected true or false"),
    ("    reload: ap\nreloaders:\n  app: {command: x}\n", "templates[0].reload: unknown reloader 'ap'"),
    ("reloaders:\n  r: {signal: SIGHUP}\n", "reloaders.r: set exactly one of pid_file, process, url or command"),
    ("reloaders:\n  r: {process: x, url: http://h}\n", "(got process, url)"),
    ("reloaders:\n  r: {process: x, signal: SIGNOPE}\n", "unknown signal 'SIGNOPE'"),
    ("reloaders:\n  r: {command: [1]}\n", "reloaders.r.command[0]: expected a string"),
    ("colour: red\n", "colour: unknown key"),
    ("log_level: loud\n", "log_level: expected one of"),
])
def test_errors_name_the_field(write, snippet, message):
    assert message in error_of(write(BASE + snippet))


def test_source_errors(write):
    assert "sources.kv.type: unknown source type 'nope'" in error_of(write("sources:\n  kv: {type: nope}\n"))
    assert "sources.kv.root: required" in error_of(write("sources:\n  kv: {type: files}\n"))
    assert "sources.kv.rot: unknown key" in error_of(write("sources:\n  kv: {type: files, root: d, rot: x}\n"))
    assert "would shadow a template built-in" in error_of(write("sources:\n  env: {type: files, root: d}\n"))
    assert "valid identifier" in error_of(write("sources:\n  my-kv: {type: files, root: d}\n"))


def test_duplicate_destinations_and_missing_template(write):
    dup = BASE + "  - source: t.j2\n    destination: ./out/../out/t\n"
    assert "templates[1].destination" in error_of(write(dup)) and "templates[0]" in error_of(write(dup))
    assert "templates[0].source: template file not found" in error_of(
        write(BASE.replace("t.j2", "missing.j2")))


def test_malformed_files_name_the_line(write):
    msg = error_of(write("sources:\n  kv: {type: files\n"))
    assert "not valid YAML" in msg and "line" in msg
    assert "not valid TOML" in error_of(write("[sources\n", "c.toml"))
    assert "top level must be a mapping" in error_of(write("- a\n- b\n"))


def test_environment_overrides_file(write, monkeypatch):
    monkeypatch.setenv("CONFSYNC_LOG_LEVEL", "debug")
    monkeypatch.setenv("CONFSYNC_LISTEN", "127.0.0.1:9101")
    cfg = load(write(BASE + "log_level: error\n"))
    assert cfg.log_level == "debug" and cfg.listen == "127.0.0.1:9101"
    assert load(write(BASE), {"log_level": "warning"}).log_level == "warning"  # a flag beats both


@pytest.mark.parametrize("text, seconds", [("250ms", 0.25), ("2s", 2), ("1m", 60), ("1.5h", 5400), (3, 3), ("0", 0)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@given(st.floats(min_value=0, max_value=1e6, allow_nan=False), st.sampled_from(["ms", "s", "m", "h", ""]))
def test_duration_round_trip(number, unit):
    text = f"{number:f}{unit}"
    factor = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "": 1}[unit]
    if float(f"{number:f}") * factor > MAX_DURATION:
        with pytest.raises(ValueError, match="between 0 and 366 days"):
            parse_duration(text)
        return
    assert parse_duration(text) == pytest.approx(float(f"{number:f}") * factor)


@given(st.text(max_size=12))
def test_durations_reject_garbage_with_valueerror(text):
    try:
        assert parse_duration(text) >= 0
    except ValueError as exc:
        assert "duration" in str(exc)


yaml_scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=8) | st.floats(allow_nan=False)
yaml_values = st.recursive(yaml_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=10)


@given(st.dictionaries(st.sampled_from(["sources", "templates", "reloaders", "wait", "listen", "log_level",
                                        "extra"]), yaml_values, max_size=4))
def test_loader_fails_only_with_config_errors(tmp_path_factory, data):
    import yaml

    path = tmp_path_factory.mktemp("h") / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    try:
        load(path)
    except ConfigError as exc:
        assert str(path) in str(exc)
