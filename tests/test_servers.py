"""The real-server fixtures in tests/servers/ start servers that really answer, restart
on the same ports, and leave nothing running behind them."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import time

import httpx
import pytest

from tests.servers import (
    ServerHandle,
    ServerStartError,
    _PortInUse,
    _postgres_bindir,
    _Process,
    etcd_cluster,
    etcd_server,
    free_port,
    free_ports,
    openbao_server,
    postgres_server,
    zookeeper_server,
)


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def etcd_put(url: str, key: str, value: str, timeout: float = 10) -> None:
    r = httpx.post(f"{url}/v3/kv/put", json={"key": _b64(key), "value": _b64(value)}, timeout=timeout)
    r.raise_for_status()


def etcd_get(url: str, key: str) -> str | None:
    r = httpx.post(f"{url}/v3/kv/range", json={"key": _b64(key)}, timeout=10)
    r.raise_for_status()
    kvs = r.json().get("kvs", [])
    return base64.b64decode(kvs[0]["value"]).decode() if kvs else None


def retry(fn, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def process_group(pgid: int) -> list[int]:
    """Live pids in a process group (each server runs in its own, as its leader)."""
    pids = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":  # fields: state, ppid, pgrp
            pids.append(int(entry))
    return pids


def assert_gone(handle: ServerHandle, pid: int, port: int) -> None:
    assert not handle.running
    assert not os.path.exists(f"/proc/{pid}"), f"pid {pid} still exists"
    assert process_group(pid) == [], "children of the server are still running"
    assert not port_open(port), f"port {port} still accepts connections"


def url_port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def test_free_ports_are_distinct_and_bindable():
    ports = free_ports(20)
    assert len(set(ports)) == 20
    with socket.socket() as s:
        s.bind(("127.0.0.1", free_port()))


def test_a_server_that_exits_fails_with_its_log_tail(tmp_path):
    proc = _Process("dud", ["sh", "-c", "echo starting; echo boom >&2; exit 3"],
                    ready=lambda: False, log_path=tmp_path / "dud.log")
    with pytest.raises(ServerStartError, match=r"(?s)exited with code 3.*starting\nboom"):
        proc.start()


def test_a_server_that_never_gets_ready_is_killed(tmp_path):
    proc = _Process("sleeper", ["sh", "-c", "echo waiting; exec sleep 60"],
                    ready=lambda: False, log_path=tmp_path / "sleeper.log")
    proc.start(wait=False)
    pid = proc.pid
    with pytest.raises(ServerStartError, match=r"(?s)not ready after 0s.*waiting"):
        proc.wait_ready(timeout=0.3)
    assert not proc.running and not os.path.exists(f"/proc/{pid}")


def test_a_lost_port_race_is_told_apart(tmp_path):
    proc = _Process("loser", ["sh", "-c", "echo 'listen tcp: bind: address already in use'; exit 1"],
                    ready=lambda: False, log_path=tmp_path / "loser.log")
    with pytest.raises(_PortInUse):
        proc.start()


@pytest.mark.etcd
def test_etcd_put_get_then_gone():
    with etcd_server() as etcd:
        etcd_put(etcd.url, "/app/a", "1")
        assert etcd_get(etcd.url, "/app/a") == "1"
        pid, tmp = etcd.pid, etcd.data_dir.parent
    assert_gone(etcd, pid, url_port(etcd.url))
    assert not tmp.exists()


@pytest.mark.etcd
def test_etcd_kill_and_stop_then_start_on_same_port_keeps_data():
    with etcd_server() as etcd:
        url = etcd.url
        etcd_put(url, "k", "before")
        etcd.kill()
        assert not port_open(url_port(url))
        etcd.start()
        assert etcd.url == url
        assert etcd_get(url, "k") == "before"
        etcd.stop()
        assert not etcd.running
        etcd.start()
        assert etcd_get(url, "k") == "before"


@pytest.mark.etcd
def test_etcd_cluster_replicates_and_survives_a_member_restart():
    with etcd_cluster() as cluster:
        a, b, c = cluster.members
        assert cluster.urls == [a.url, b.url, c.url]
        etcd_put(a.url, "k", "1")
        assert etcd_get(c.url, "k") == "1"
        a.kill()
        # Two of three still make a quorum, but if a was the leader, writes get 503
        # until the others notice and elect a new one (about a second): retry, with a
        # short timeout, as etcd holds a write without a leader for ~7 s before its 503.
        retry(lambda: etcd_put(b.url, "k", "2", timeout=1))
        a.start()
        assert etcd_get(a.url, "k") == "2"
        pids = [m.pid for m in cluster.members]
    for m, pid in zip(cluster.members, pids):
        assert_gone(m, pid, url_port(m.url))


@pytest.mark.zookeeper
def test_zookeeper_create_get_then_gone():
    from kazoo.client import KazooClient

    with zookeeper_server() as zk:
        assert zk.hosts == f"127.0.0.1:{zk.port}"
        client = KazooClient(hosts=zk.hosts)
        client.start(timeout=10)
        try:
            client.create("/app/a", b"1", makepath=True)
            assert client.get("/app/a")[0] == b"1"
        finally:
            client.stop()
            client.close()
        pid, tmp = zk.pid, zk.data_dir.parent
    assert_gone(zk, pid, zk.port)
    assert not tmp.exists()


@pytest.mark.zookeeper
def test_zookeeper_kill_then_start_on_same_port_with_a_client_connected():
    from kazoo.client import KazooClient
    from kazoo.exceptions import ConnectionLoss, SessionExpiredError

    with zookeeper_server() as zk:
        client = KazooClient(hosts=zk.hosts, connection_retry={"max_tries": -1, "max_delay": 0.5})
        client.start(timeout=10)
        try:
            client.create("/k", b"before")
            zk.kill()
            assert not port_open(zk.port)
            zk.start()
            deadline = time.monotonic() + 20
            while True:  # the running client reconnects to the restarted server
                try:
                    assert client.get("/k")[0] == b"before"
                    break
                except (ConnectionLoss, SessionExpiredError):
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            zk.stop()
            zk.start()
            assert client.retry(client.get, "/k")[0] == b"before"
        finally:
            client.stop()
            client.close()


@pytest.mark.vault
def test_openbao_kv_write_read_restart_then_gone():
    import hvac

    with openbao_server() as bao:
        client = hvac.Client(url=bao.addr, token=bao.root_token)
        assert client.is_authenticated()
        client.secrets.kv.v2.create_or_update_secret(path="app", secret={"password": "s3cr3t"})
        read = client.secrets.kv.v2.read_secret_version(path="app", raise_on_deleted_version=True)
        assert read["data"]["data"] == {"password": "s3cr3t"}

        bao.kill()
        bao.start()  # dev mode: same address and token, empty storage
        assert client.is_authenticated()
        with pytest.raises(hvac.exceptions.InvalidPath):
            client.secrets.kv.v2.read_secret_version(path="app", raise_on_deleted_version=True)
        pid, port = bao.pid, url_port(bao.addr)
    assert_gone(bao, pid, port)
    assert not port_open(port + 1)  # the dev cluster listener is gone too


def psql(dsn: str, sql: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(_postgres_bindir() / "psql"), "-X", "-At", "-d", dsn, "-c", sql],
        capture_output=True, text=True, timeout=30,
        env={k: v for k, v in os.environ.items() if not k.startswith("PG")},
    )


@pytest.mark.postgres
def test_postgres_select_with_password_then_gone():
    with postgres_server() as pg:
        assert pg.dsn == f"postgresql://{pg.user}:{pg.password}@127.0.0.1:{pg.port}/postgres"
        r = psql(pg.dsn, "SELECT 1")
        assert (r.returncode, r.stdout.strip()) == (0, "1"), r.stderr
        r = psql(pg.dsn, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        assert r.stdout.strip() == "t", r.stderr  # Vault's database engine creates roles
        wrong = pg.dsn.replace(pg.password, "wrong")
        assert psql(wrong, "SELECT 1").returncode != 0  # TCP logins need the password
        pid, tmp = pg.pid, pg.socket_dir
    assert_gone(pg, pid, pg.port)
    assert not tmp.exists()
