"""The etcd source under hostile data and faulty servers (issue 18), against real etcd servers, some
behind the fault proxy of tests/faults.py. Never a wrong file, never blind, never silent."""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Iterator

import httpx
import pytest

from tests.faults import blackhole, fault_proxy
from tests.helpers import Daemon, confsync, metrics_text, readyz, wait_until
from tests.servers import EtcdServer, etcd_server, free_port
from tests.test_etcd import _certificates, delete, put, tls_etcd

pytestmark = pytest.mark.etcd


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdServer]:
    with etcd_server() as server:
        yield server


def put_bytes(url: str, key: str | bytes, value: bytes) -> None:
    raw = key.encode() if isinstance(key, str) else key
    httpx.post(url + "/v3/kv/put", json={"key": base64.b64encode(raw).decode(),
                                         "value": base64.b64encode(value).decode()},
               timeout=10, trust_env=False).raise_for_status()


def config(endpoints: list[str], prefix: str, extra: str = "", top: str = "") -> str:
    urls = ", ".join(f'"{u}"' for u in endpoints)
    return (f"sources:\n  etcd: {{type: etcd, endpoints: [{urls}], prefix: {prefix}{extra}}}\n"
            f"templates:\n  - {{source: t.j2, destination: out.conf}}\n{top}")




def test_timeout_bounds_every_step_of_opening_a_watch(etcd, project, tmp_path):
    """Item 4: after a cut the source tries the next endpoint, which accepts and never answers;
    `timeout` must give up on it and come back, not wait 25 minutes for response headers."""
    with fault_proxy(etcd.url) as proxy, blackhole() as hole:
        put(etcd.url, "/f4/mode", "one")
        cfg = project(config([proxy.url, hole.url], "/f4", ", timeout: 1s"), {"t.j2": "{{ etcd.key('mode') }}"})
        with Daemon("-c", str(cfg)) as daemon:
            daemon.wait_event("written")
            proxy.cut()  # the stream breaks: the next endpoint tried is the silent one
            wait_until(lambda: hole.hit_count("hang") >= 1, timeout=30, what="a try on the silent endpoint")
            put(etcd.url, "/f4/mode", "two")
            wait_until(lambda: (tmp_path / "out.conf").read_text() == "two", timeout=60, what="the change")


def test_a_wiped_and_restarted_etcd_is_read_again(project, tmp_path):
    """Item 2: the revision goes backwards: every watched key is read again, and a key that no
    longer exists leaves the file."""
    with etcd_server() as server:
        for i in range(30):  # the revision climbs past anything the new store will reach
            put(server.url, "/w/app/a", f"v{i}")
        put(server.url, "/w/app/gone", "here")
        cfg = project(config([server.url], "/w", ", timeout: 2s"),
                      {"t.j2": "{% for k, v in etcd.tree('app') | dictsort %}{{ k }}={{ v }}\n{% endfor %}"})
        out = tmp_path / "out.conf"
        with Daemon("-c", str(cfg)) as daemon:
            daemon.wait_event("written")
            assert out.read_text() == "a=v29\ngone=here\n"
            server.stop()
            shutil.rmtree(server.data_dir)
            server.start()
            put(server.url, "/w/app/a", "fresh")  # revision 2 of the new store
            entry = daemon.wait_event("etcd_store_replaced", timeout=60)
            assert entry["level"] == "warning" and "went back" in entry["message"]
            wait_until(lambda: out.read_text() == "a=fresh\n", timeout=60, what="the new store's content")


def test_a_value_that_stops_being_utf8_waits_instead_of_using_the_default(etcd, project, tmp_path):
    """Items 3 and 8: `default=` is for a key that does not exist; an unreadable value makes the
    template wait, said at warning, counted in /metrics, and /readyz 503 past max_stale_for_ready."""
    port = free_port()
    put(etcd.url, "/f3/mode", "fast")
    cfg = project(config([etcd.url], "/f3", top=f"listen: 127.0.0.1:{port}\nmax_stale_for_ready: 0s\n"),
                  {"t.j2": "mode={{ etcd.key('mode', default='safe') }}"})
    out = tmp_path / "out.conf"
    with Daemon("-c", str(cfg)) as daemon:
        daemon.wait_event("written")
        assert readyz(port)[0] == 200
        put_bytes(etcd.url, "/f3/mode", b"\xff\xfefast")
        entry = daemon.wait_event("unreadable", timeout=30)
        assert entry["level"] == "warning" and "UTF-8" in entry["message"]
        status, body = readyz(port)
        assert status == 503 and "UTF-8" in json.dumps(body["stale"]), body
        assert 'confsync_unreadable_keys{source="etcd"} 1.0' in metrics_text(port)
        assert out.read_text() == "mode=fast"
        put(etcd.url, "/f3/mode", "turbo")
        daemon.wait_event("written", timeout=30)
        assert out.read_text() == "mode=turbo"
        assert readyz(port)[0] == 200
        delete(etcd.url, "/f3/mode")  # gone: now the default applies
        daemon.wait_event("written", timeout=30)
        assert out.read_text() == "mode=safe"


def test_one_unreadable_key_in_a_tree_is_said_not_silent(etcd, project, tmp_path):
    """Item 8: one non-UTF-8 key freezes its tree: the template says so at warning and in /readyz."""
    port = free_port()
    put(etcd.url, "/f8/app/a", "1")
    cfg = project(config([etcd.url], "/f8", top=f"listen: 127.0.0.1:{port}\nmax_stale_for_ready: 0s\n"),
                  {"t.j2": "{{ etcd.tree('app') | to_json }}"})
    with Daemon("-c", str(cfg)) as daemon:
        daemon.wait_event("written")
        put_bytes(etcd.url, b"/f8/app/b\xff", b"2")  # a key that is not UTF-8
        entry = daemon.wait_event("unreadable", timeout=30)
        assert "etcd.tree('app')" in entry["message"]
        assert readyz(port)[0] == 503


def test_tls_mismatches_name_the_likely_cause(project, tmp_path):
    """Item 12: not "ReadError" or "ConnectError": a CA we do not trust, or a scheme that does not match."""
    _certificates(tmp_path)
    with tls_etcd(tmp_path) as url:
        template = {"t.j2": "{{ etcd.key('db/host') }}"}
        untrusted = project(config([url], "/s"), template, name="untrusted.yaml")
        result = confsync("init", "-c", str(untrusted), "--timeout", "2s")
        assert result.returncode == 3 and "not signed by a CA we trust" in result.stderr, result.stderr
        plain = project(config([url.replace("https://", "http://")], "/s"), template, name="plain.yaml")
        result = confsync("init", "-c", str(plain), "--timeout", "2s")
        assert result.returncode == 3 and "use https://" in result.stderr, result.stderr
