"""Every render runs under a budget: wall time, size, iterations (issue 10, item 4).

Each payload used to take gigabytes or run for ever, past `once --timeout`, with the daemon's
/healthz and SIGTERM waiting behind it. Now each fails cleanly, naming the template and the limit,
the good file stays, and memory stays within 100 MiB of an idle render.
"""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from tests.helpers import Daemon, cli_env, confsync, wait_until
from tests.test_observe import free_port

CONFIG = """
sources:
  kv: {type: files, root: ./data}
templates:
  - {source: t.j2, destination: out/app.conf}
"""

NESTED = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
PAYLOADS = {
    "multiply": "{{ 'x'*300000000 }}",
    "center": "{{ 'x'|center(1000000000) }}",
    "nested-range": NESTED,
    "lipsum": "{{ lipsum(n=10000000) }}",
    "percent-width": "{{ '%999999999s' % 'x' }}",
    "format-width": "{{ '{:>999999999}'.format('x') }}",
    "ljust": "{{ 'x'.ljust(999999999) }}",
    "doubling": "{% set ns = namespace(s='x') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}"
                "{{ ns.s }}",
    "power": "{{ 2 ** 100000000 }}",
    "replace": "{{ ('x'*1000)|replace('x', 'y'*100000) }}",
    "loop-text": "{% for i in range(100000) %}" + "x" * 1000 + "{% endfor %}",
    "join-shared": "{{ (['x'*1000000]*1000)|join }}",
    "expandtabs": "{{ '\\t'.expandtabs(999999999) }}",
    "indent": "{{ ('\\n'*100000)|indent(1000) }}",
    "batch-fill": "{{ [1]|batch(100000000, 'x')|list }}",
    "macro-fan-out": "{% macro f(n) %}{% if n %}{{ f(n-1) }}{{ f(n-1) }}{% endif %}{% endmacro %}{{ f(40) }}",
}

_MEASURED = """
import resource, subprocess, sys
subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=sys.stderr)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)
"""


def once_measured(cfg, *args: str) -> tuple[str, int]:
    """`confsync once` as a process: its stderr, and its peak memory in KiB."""
    result = subprocess.run([sys.executable, "-c", _MEASURED, sys.executable, "-m", "confsync", "once", "-c",
                             str(cfg), *args], env=cli_env(), capture_output=True, text=True, timeout=120)
    *lines, peak = result.stderr.splitlines()
    return "\n".join(lines), int(peak)


@pytest.fixture(scope="module")
def idle_peak(tmp_path_factory) -> int:
    tmp = tmp_path_factory.mktemp("idle")
    (tmp / "t.j2").write_text("idle")
    (tmp / "data").mkdir()
    (tmp / "confsync.yaml").write_text(CONFIG)
    return once_measured(tmp / "confsync.yaml")[1]


@pytest.mark.parametrize("payload", sorted(PAYLOADS))
def test_a_runaway_render_fails_cleanly_and_memory_stays_bounded(project, tmp_path, payload, idle_peak):
    cfg = project(CONFIG, {"t.j2": "line one\n" + PAYLOADS[payload]})
    (tmp_path / "out").mkdir()
    (tmp_path / "out/app.conf").write_text("good")
    stderr, peak = once_measured(cfg, "--timeout", "2s")
    # The line is "?" when the deadline strikes outside the template's own frames (seen with a cold
    # bytecode cache on the macro fan-out): the file is still named, the failure still the budget's.
    assert any(f"t.j2:{line}: {what}" in stderr for line in ("2", "?")
               for what in ("over the render budget", "RecursionError")), stderr
    assert "Traceback" not in stderr
    assert (tmp_path / "out/app.conf").read_text() == "good"
    assert peak - idle_peak < 100 * 1024, f"{(peak - idle_peak) // 1024} MiB over an idle render"


def test_once_timeout_is_a_total_even_for_a_render_that_only_the_clock_stops(project, tmp_path):
    """No iteration limit to hit: `--timeout 3s` (under render.timeout's 5 s) ends the render.
    (No render starts after the timeout: 3 s leaves a loaded machine time to start rendering.)"""
    # max_output too: each inner range() counts 8 characters an item towards 4 × max_output.
    cfg = project(CONFIG + "render: {max_iterations: 1000000000000, max_output: 100000000}\n", {"t.j2": NESTED})
    result = confsync("once", "-c", str(cfg), "--timeout", "3s", timeout=60)
    assert result.returncode == 1, result.stderr
    assert "the render took too long (render.timeout, or the --timeout of once/init)" in result.stderr


def test_a_single_slow_filter_is_cut_at_the_deadline(project, tmp_path):
    """textwrap in pure Python: no step of the budget runs inside it, SIGALRM does."""
    cfg = project(CONFIG + "render: {timeout: 1s}\n", {"t.j2": "{{ ('word ' * 3000000)|wordwrap(7) }}"})
    result = confsync("once", "-c", str(cfg), timeout=60)
    assert result.returncode == 1
    assert "the render took too long" in result.stderr, result.stderr
    assert "SIGALRM" not in result.stderr  # the budget's own alarm is no stray signal


def test_render_limits_are_configurable(project, tmp_path):
    cfg = project(CONFIG + "render: {max_output: 10}\n", {"t.j2": "{{ 'x' * 20 }}"})
    result = confsync("once", "-c", str(cfg))
    assert result.returncode == 1 and "over render.max_output (10)" in result.stderr
    cfg.write_text(CONFIG + "render: {timeout: 0s}\n")
    result = confsync("check", "-c", str(cfg))
    assert result.returncode == 2 and "render: timeout must be more than 0" in result.stderr


def test_the_daemon_serves_other_templates_and_stops_while_one_runs_away(project, tmp_path):
    cfg = project("""
sources:
  kv: {type: files, root: ./data}
templates:
  - {source: runaway.j2, destination: out/runaway.conf}
  - {source: fine.j2, destination: out/fine.conf}
render: {timeout: 1s, max_iterations: 1000000000000}
""", {"runaway.j2": "{{ kv.key('go') }}" + NESTED, "fine.j2": "{{ kv.key('v') }}"}, {"go": "", "v": "1"})
    port = free_port()
    with Daemon("-c", str(cfg), "--listen", f"127.0.0.1:{port}") as daemon:
        failed = daemon.wait_event("render_failed", template=str(tmp_path / "out/runaway.conf"))
        assert "took too long" in failed["message"]
        daemon.wait_event("written", template=str(tmp_path / "out/fine.conf"))
        for n in range(2, 5):  # each change of `go` runs away again; `v` still gets through
            (tmp_path / "data/go").write_text(str(n))
            (tmp_path / "data/v").write_text(str(n))
            wait_until(lambda n=n: (tmp_path / "out/fine.conf").read_text() == str(n), what=f"fine.conf = {n}")
            assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200
        assert daemon.stop() == 0


def test_a_render_due_after_the_timeout_is_missing_data_not_a_template_error(project, tmp_path):
    """Data that arrives at the deadline of init: exit 3 as before the budget, never "took too long"."""
    cfg = project(CONFIG, {"t.j2": "{{ kv.key('k') }}"}, {"k": "v"})
    result = confsync("init", "-c", str(cfg), "--timeout", "1ms")  # starting takes longer than that
    assert result.returncode in (0, 3), result.stderr  # rendered in time, or missing at the timeout
    assert "took too long" not in result.stderr
