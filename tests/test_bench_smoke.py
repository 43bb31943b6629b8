"""The benchmark harness, run tiny so it cannot rot: shape and sanity of its results, no timing asserts."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers import ROOT, cli_env


def test_quick_bench_on_the_files_source(tmp_path):
    out = tmp_path / "results"
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", "files", "--figures", "latency,footprint,startup",
         "--writes", "5", "--window", "1", "--runs", "1", "--out", str(out), "--no-docs"],
        cwd=ROOT, env=cli_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    results = json.loads((out / "latest.json").read_text())
    assert (out / "latest.md").read_text().count("| files |") >= 3

    latency = results["latency"]["files"]
    for kind in ("file", "signal", "http"):
        stats = latency[kind]
        assert stats["n"] == 5 and stats["misses"] == 0, (kind, stats)
        assert 0 < stats["p50_ms"] <= stats["p95_ms"] <= stats["max_ms"] < 5000, (kind, stats)
    assert latency["floor"]["n"] == 5 and latency["floor"]["misses"] == 0

    for size in ("1", "100"):
        idle = results["footprint"]["files"][size]
        assert 5 < idle["rss_mib"] < 500 and idle["threads"] >= 1 and idle["fds"] >= 3, idle
        assert 0 <= idle["cpu_pct"] < 100, idle

    startup = results["startup"]
    assert 0 < startup["baseline"]["python_ms"] < startup["files"]["1"]["once_ms"]
    assert startup["files"]["100"]["once_ms"] > 0 and startup["files"]["100"]["init_ms"] > 0
    assert startup["files"]["1"]["imports"]["other_backend_clients"] == []

    assert results["detector"]["p50_ms"] > 0
    assert {t["target"] for t in results["targets"]} >= {"files: change → file p50"}


@pytest.mark.vault
def test_peer_harness_renders_the_same_files_as_confsync(tmp_path):
    """bench.peers: OpenBao Agent and confsync, one template each way, the same bytes on disk."""
    from bench.backends import running
    from bench.peers import OpenBaoAgent, Project, one_shot, propagation

    peer = OpenBaoAgent(None)
    peer.check()
    with running("vault") as backend:
        backend.interval = 1.0
        project = Project(tmp_path / "p", backend, templates=2)
        project.seed()
        result = one_shot(peer, project, backend, runs=1)  # raises unless both wrote the right content
        assert result["confsync_ms"] > 0 and result["peer_ms"] > 0
        assert result["renders_per_template"] == 1.0  # from confsync's own count: once all has arrived
        moved = propagation(peer, project, backend, writes=1, rounds=2)
    assert moved["peer"]["n"] == 2 and moved["confsync"]["n"] == 2


def test_peer_harness_on_etcd_skips_a_peer_not_at_hand_and_still_measures_confsync(tmp_path):
    """confd cannot be installed here: the harness says why it is skipped and measures confsync alone."""
    from bench.peers import Project, SlashedEtcd, _at_hand, one_shot, propagation

    results: dict = {"skipped": {}, "versions": {}}
    assert _at_hand("confd", str(tmp_path / "no-confd"), results) is None
    assert "--peer confd=PATH" in results["skipped"]["confd"]
    backend = SlashedEtcd()
    backend.check()
    try:
        backend.start()
        project = Project(tmp_path / "p", backend, templates=2)
        project.seed()
        result = one_shot(None, project, backend, runs=1)  # raises unless confsync wrote the right content
        assert result["confsync_ms"] > 0 and result["peer_ms"] is None
        assert result["renders_per_template"] == 1.0
        moved = propagation(None, project, backend, writes=2, rounds=1)
    finally:
        backend.close()
    assert moved["peer"] is None and moved["confsync"]["n"] == 2 and moved["confsync"]["misses"] == 0
