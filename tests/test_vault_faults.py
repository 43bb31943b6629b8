"""The vault source under hostile answers and faulty servers (issue 18): a real OpenBao behind the
fault proxy of tests/faults.py. Never a wrong file, never a dead task, every failure said."""

from __future__ import annotations

import base64
import json
import re
import urllib.request
from collections.abc import Iterator
from typing import Any

import hvac
import pytest

from tests.faults import FaultProxy, fault_proxy
from tests.helpers import Daemon, confsync, wait_until
from tests.servers import OpenBaoServer, free_port, openbao_server

pytestmark = pytest.mark.vault


@pytest.fixture(scope="module")
def bao() -> Iterator[OpenBaoServer]:
    with openbao_server() as server:
        client = hvac.Client(url=server.addr, token=server.root_token)
        client.sys.enable_secrets_engine("transit", path="transit")
        client.write_data("transit/keys/k", data={})
        yield server


@pytest.fixture
def proxy(bao) -> Iterator[FaultProxy]:
    with fault_proxy(bao.addr) as p:
        yield p


def put(server: OpenBaoServer, path: str, **fields: Any) -> None:
    hvac.Client(url=server.addr, token=server.root_token).write_data(f"secret/data/{path}", data={"data": fields})


def config(address: str, destination: str, listen: str = "") -> str:
    return (f"sources:\n  vault: {{type: vault, address: '{address}', static_secret_interval: 1s, timeout: 5s}}\n"
            f"templates:\n  - {{source: t.j2, destination: {destination}}}\n" + listen)


def warnings(daemon: Daemon) -> list[dict[str, Any]]:
    found = []
    for line in daemon.lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("level") in ("warning", "error", "critical"):
            found.append(entry)
    return found


def metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    match = re.search(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M)
    assert match, f"{name} not in /metrics:\n{text}"
    return float(match.group(1))


GARBAGE = [
    (200, b"<html>hello</html>", {"Content-Type": "text/html"}),
    (200, b'{"data":"not-a-mapping"}', {"Content-Type": "application/json"}),
    (200, b"[1,2,3]", {"Content-Type": "application/json"}),
]


@pytest.mark.parametrize("status,body,headers", GARBAGE, ids=["html", "data-not-a-mapping", "list"])
def test_a_garbage_200_never_reaches_the_file_and_nothing_dies(bao, proxy, project, tmp_path, status, body,
                                                              headers):
    """Issue 18 items 1 and 5: a non-JSON or malformed 200 is a failure with a reason, not an empty
    secret, and every task lives on to render the next good answer."""
    name = f"garbage{len(body)}"
    put(bao, name, password="good-one")
    out = tmp_path / "out.json"
    cfg = project(config(proxy.url, str(out)), templates={"t.j2": f"{{{{ vault.secret('secret/{name}') | to_json }}}}"})
    with Daemon("-c", str(cfg), VAULT_TOKEN=bao.root_token) as daemon:
        daemon.wait_event("written")
        good = out.read_text()
        assert "good-one" in good
        proxy.respond(status, body, headers)
        wait_until(lambda: proxy.hit_count("200") >= 3 and warnings(daemon), timeout=30, what="garbage answered")
        assert out.read_text() == good
        said = " ".join(w["message"] for w in warnings(daemon))
        assert "not a Vault reply" in said or "not a secret" in said, said
        assert "internal error" not in daemon.log() and "Traceback" not in daemon.log()
        proxy.passthrough()
        put(bao, name, password="next-one")
        daemon.wait_event("written", timeout=30)
        assert "next-one" in out.read_text()


def test_429_honours_retry_after_and_says_so_once(bao, proxy, project, tmp_path):
    """Issue 18 item 6: a rate limit backs off (Retry-After) instead of 21 requests a second."""
    put(bao, "limited", password="p1")
    out = tmp_path / "out.txt"
    cfg = project(config(proxy.url, str(out)), templates={"t.j2": "{{ vault.secret('secret/limited').password }}"})
    with Daemon("-c", str(cfg), VAULT_TOKEN=bao.root_token) as daemon:
        daemon.wait_event("written")
        proxy.respond(429, b'{"errors":["rate limit quota exceeded"]}',
                      {"Content-Type": "application/json", "Retry-After": "2"})
        wait_until(lambda: proxy.hit_count("429") >= 4, timeout=60, what="four rate-limited requests")
        times = [t for t, kind in proxy.hits if kind.startswith("429")]
        gaps = [b - a for a, b in zip(times, times[1:])]
        # Retry-After: 2, jittered down by at most a quarter: a lower bound, which load cannot break.
        assert min(gaps) >= 1.4, gaps
        said = [w["message"] for w in warnings(daemon) if "429" in w["message"]]
        assert 1 <= len(said) <= 2, said
        proxy.passthrough()
        put(bao, "limited", password="p2")
        daemon.wait_event("written", timeout=30)
        assert out.read_text() == "p2"


def test_source_errors_count_outages_not_changes_of_reason(bao, proxy, project, tmp_path):
    """Issue 18 item 12: one outage whose reason changes (503, then 502) is one error."""
    put(bao, "outage", password="p")
    port = free_port()
    out = tmp_path / "out.txt"
    cfg = project(config(proxy.url, str(out), listen=f"listen: 127.0.0.1:{port}\n"),
                  templates={"t.j2": "{{ vault.secret('secret/outage').password }}"})
    with Daemon("-c", str(cfg), VAULT_TOKEN=bao.root_token) as daemon:
        daemon.wait_event("written")
        proxy.respond(503, b'{"errors":["Vault is sealed"]}', {"Content-Type": "application/json"})
        daemon.wait_event("source_down", timeout=30)
        proxy.respond(502, b'{"errors":["bad gateway"]}', {"Content-Type": "application/json"})
        wait_until(lambda: "502" in " ".join(w["message"] for w in warnings(daemon)), timeout=60,
                   what="the second reason")
        proxy.passthrough()
        daemon.wait_event("source_up", timeout=60)
        assert metric(port, "confsync_source_errors_total") == 1


def test_write_style_parameters_from_a_secret_never_reach_the_log(bao, project, tmp_path):
    """Issue 18 item 11: `plaintext=` built from a secret is itself secret, in every message."""
    put(bao, "pw", password="first-password")
    out = tmp_path / "out.txt"
    template = ("{{ vault.secret('transit/encrypt/k', plaintext=(vault.secret('secret/pw').password | b64encode))"
                ".ciphertext }}")
    cfg = project(config(bao.addr, str(out)), templates={"t.j2": template})
    with Daemon("-c", str(cfg), VAULT_TOKEN=bao.root_token) as daemon:
        daemon.wait_event("written")
        put(bao, "pw", password="second-password")
        daemon.wait_event("written", timeout=30)
        log = daemon.log()
    denied = project(config(bao.addr, str(out)), name="denied.yaml",
                     templates={"t.j2": template.replace("transit/encrypt/k", "transit/nope/k")})
    result = confsync("init", "-c", str(denied), "--timeout", "3s", VAULT_TOKEN=bao.root_token)
    assert result.returncode == 3, result.stderr
    assert "transit/nope/k" in result.stderr
    for text in (log, result.stderr):
        for password in ("first-password", "second-password"):
            assert base64.b64encode(password.encode()).decode() not in text
            assert password not in text


def test_https_to_a_plain_listener_names_the_likely_cause(bao, project, tmp_path):
    """Issue 18 item 12: not just "TLS handshake failed"."""
    cfg = project(config(bao.addr.replace("http://", "https://"), str(tmp_path / "out")),
                  templates={"t.j2": "{{ vault.secret('secret/x').a }}"})
    result = confsync("init", "-c", str(cfg), "--timeout", "3s", VAULT_TOKEN=bao.root_token)
    assert result.returncode == 3
    assert "does not speak TLS" in result.stderr and "http://" in result.stderr, result.stderr


def test_http_to_a_tls_listener_names_the_likely_cause(bao, proxy, project, tmp_path):
    """Item 12: Go's answer to plain HTTP on a TLS port (HTTP 400, this text) is not "the token was
    refused". The proxy answers exactly what Vault's listener would."""
    proxy.respond(400, b"Client sent an HTTP request to an HTTPS server.\n", {"Content-Type": "text/plain"})
    cfg = project(config(proxy.url, str(tmp_path / "out")), templates={"t.j2": "{{ vault.secret('secret/x').a }}"})
    result = confsync("init", "-c", str(cfg), "--timeout", "3s", VAULT_TOKEN=bao.root_token)
    assert result.returncode == 3
    assert "use https://" in result.stderr and "refused" not in result.stderr, result.stderr
