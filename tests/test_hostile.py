"""Hostile and bad input: template injection, odd values, odd keys, leaks of secrets."""

from __future__ import annotations

import json
import re
import string

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from confsync.render import Template, make_environment
from confsync.sources import ABSENT, Dep, Functions
from tests.helpers import Daemon, confsync
from tests.test_observe import free_port

# Known server-side template injection payloads for Jinja2 (PayloadsAllTheThings, HackTricks, and the
# sandbox escapes fixed in Jinja2 itself: str.format, attr(), __init__.__globals__, ...).
SSTI = [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ ''.__class__.__base__.__subclasses__() }}",
    "{{ kv.__init__.__globals__ }}",
    "{{ kv._lookup }}",
    "{{ kv._source }}",
    "{{ env.__globals__['os'].popen('id').read() }}",
    "{{ env.__code__ }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ joiner.__init__.__globals__.os.system('id') }}",
    "{{ namespace.__init__.__globals__.os.popen('id').read() }}",
    "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "{{ self._TemplateReference__context.cycler.__init__.__globals__.os }}",
    "{{ config.__class__.__init__.__globals__['os'] }}",
    "{{ request.application.__globals__.__builtins__.__import__('os') }}",
    "{{ ''|attr('__class__')|attr('__mro__') }}",
    "{{ ()|attr('\\x5f\\x5fclass\\x5f\\x5f') }}",
    "{{ '{0.__class__}'.format(kv) }}",
    "{{ '{0.__class__.__mro__}'.format('') }}",
    "{{ '{a._lookup.__globals__}'.format_map({'a': kv}) }}",
    "{% for c in [].__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}",
    "{% import 'os' as os %}",
    "{% include '/etc/passwd' %}",
    "{% include '../../../../etc/passwd' %}",
    "{% extends '/etc/hostname' %}",
    "{{ kv.tree('').clear() }}",
    "{{ kv.ls('').append('x') }}",
    "{{ range.__self__ }}",
    "{{ get_flashed_messages.__globals__ }}",
]


@pytest.mark.parametrize("payload", SSTI)
def test_injection_payloads_are_refused_and_nothing_is_written(project, tmp_path, payload):
    cfg = project("""
sources:
  kv: {type: files, root: ./data}
templates:
  - {source: t.j2, destination: out/app.conf}
""", {"t.j2": payload}, {"a": "1"})
    result = confsync("once", "-c", str(cfg))
    assert result.returncode == 1, result.stdout
    assert re.search(r"t\.j2:\d+: ", result.stderr), result.stderr  # names the file and line
    assert "uid=" not in result.stderr + result.stdout
    assert not (tmp_path / "out/app.conf").exists()


def render_with(values: dict[str, str], text: str) -> str:
    env = make_environment([])
    template = Template.__new__(Template)
    template.path, template.functions = None, {"kv": Functions}
    template.compiled = env.from_string(text)

    def get(dep: Dep):
        return dict(values) if dep.kind == "tree" else values.get(dep.path, ABSENT)

    result = template.render(get)
    assert result.error is None and not result.missing
    return result.text


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.text(string.ascii_lowercase, min_size=1, max_size=5),
                       st.text(max_size=50) | st.sampled_from(["{{ 7*7 }}", "{% raw %}", "{#", "}}"]), max_size=5))
def test_values_are_data_never_code(values):
    """Whatever the values, the output is exactly the values: nothing in them is evaluated."""
    text = "".join(f"[{{{{ kv.key({key!r}) }}}}]" for key in sorted(values))
    assert render_with(values, text) == "".join(f"[{values[k]}]" for k in sorted(values))
    assert json.loads(render_with(values, "{{ kv.tree('') | to_json }}")) == values


def test_big_binary_and_odd_values(project, tmp_path):
    big = "x" * 10_000_000
    cfg = project("""
sources:
  kv: {type: files, root: ./data}
templates:
  - {source: big.j2, destination: out/big}
  - {source: bin.j2, destination: out/bin}
""", {"big.j2": "{{ kv.key('big') }}", "bin.j2": "{{ kv.key('bin') }}"}, {"big": big})
    (tmp_path / "data/bin").write_bytes(b"\x00\xff\xfe binary")
    (tmp_path / "out").mkdir()
    (tmp_path / "out/bin").write_text("keep me")
    result = confsync("once", "-c", str(cfg), "--timeout", "2s")
    assert result.returncode == 3
    assert "kv.key('bin') value is not UTF-8 text" in result.stderr
    assert (tmp_path / "out/big").stat().st_size == 10_000_000
    assert (tmp_path / "out/bin").read_text() == "keep me"


@pytest.mark.parametrize("key, code, why", [
    ("../secret", 1, "malformed key name"), ("a/../../b", 1, "malformed key name"),  # for every source (issue 11)
    ("a\x01b", 1, "malformed key name"), ("..data/x", 3, "invalid key"),  # the kubelet's, in the files source
])
def test_odd_keys_are_named_and_refused(project, tmp_path, key, code, why):
    cfg = project("""
sources:
  kv: {type: files, root: ./data}
templates:
  - {source: t.j2, destination: out/app.conf}
""", {"t.j2": "{{ kv.key(" + json.dumps(key) + ") }}"})
    (tmp_path / "secret").write_text("outside the root")
    result = confsync("once", "-c", str(cfg), "--timeout", "1s")
    assert result.returncode == code and why in result.stderr
    assert repr(key.strip("/")) in result.stderr
    assert "outside the root" not in result.stderr


def test_env_allowlist(project, tmp_path):
    cfg = project("""
env_allow: [OK_VAR]
sources:
  kv: {type: files, root: ./data}
templates:
  - {source: t.j2, destination: out/app.conf}
""", {"t.j2": "{{ env('OK_VAR') }} {{ env('AWS_SECRET_ACCESS_KEY') }}"})
    result = confsync("once", "-c", str(cfg), OK_VAR="fine", AWS_SECRET_ACCESS_KEY="do-not-leak-me")
    assert result.returncode == 1
    assert "env('AWS_SECRET_ACCESS_KEY') is not in the allowed list" in result.stderr
    assert "do-not-leak-me" not in result.stderr


SECRET = "s3cr3t-Planted-Value-42"


def test_a_secret_never_reaches_logs_errors_metrics_or_diffs(project, tmp_path):
    """Every mode, at debug level, with --diff and --dry-run, and with errors triggered."""
    cfg = project("""
sources:
  s: {type: files, root: ./data, secret: true}
templates:
  - {source: t.j2, destination: out/app.conf, check: "cat {staged}; exit $(cat fail)", format: json}
  - {source: bad.j2, destination: out/bad.conf}
""", {"t.j2": '{"password": "{{ s.key("pw") }}"}', "bad.j2": "{{ s.key('pw') | int(base=37) }}"},
                  {"pw": SECRET})
    (tmp_path / "fail").write_text("0")
    seen = []

    def run(*args: str, **env: str) -> None:
        result = confsync(*args, "-c", str(cfg), "--log-level", "debug", cwd=tmp_path, **env)
        seen.append(result.stdout + result.stderr)

    run("check")
    run("once", "--diff", "--dry-run")
    run("once", "--diff")
    run("init")
    (tmp_path / "data/pw").write_text(SECRET + "-rotated")
    (tmp_path / "fail").write_text("1")  # the check fails, after printing the staged file
    run("once", "--diff")
    run("once", "--log-format", "json")
    (tmp_path / "data/pw").write_text(SECRET + '"broken json')
    (tmp_path / "fail").write_text("0")
    run("once", "--diff")
    port = free_port()
    with Daemon("-c", str(cfg), "--listen", f"127.0.0.1:{port}", cwd=tmp_path) as daemon:
        daemon.wait_event("render_failed")
        seen.append(httpx.get(f"http://127.0.0.1:{port}/metrics").text)
        seen.append(httpx.get(f"http://127.0.0.1:{port}/readyz").text)
    seen.append(daemon.log())
    everything = "\n".join(seen)
    assert "check failed" in everything and "not valid json" in everything  # errors were triggered
    assert "<redacted" in everything  # diffs of the secret file were shown redacted
    assert SECRET not in everything
    assert (tmp_path / "out/app.conf").stat().st_mode & 0o077 == 0
