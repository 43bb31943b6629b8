"""End to end through the real CLI against a real ZooKeeper (tests/servers/) on 127.0.0.1.

One server for the module; each test works under its own chroot, so tests never see each other's
znodes. Server-side watches are read with the `wchp` four-letter command: that is how the tests
see that watches are re-established (or not) without looking inside confsync.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import time
from collections.abc import Iterator

import pytest

from tests.helpers import Daemon, confsync, wait_until
from tests.servers import free_port, zookeeper_server

pytestmark = pytest.mark.zookeeper
kazoo = pytest.importorskip("kazoo")
from kazoo.client import KazooClient  # noqa: E402
from kazoo.exceptions import NodeExistsError, NoNodeError  # noqa: E402
from kazoo.security import make_digest_acl  # noqa: E402

TEMPLATE = 'host={{ zk.key("db/host") }}\nport={{ zk.key("db/port", default="5432") }}\n'


@pytest.fixture(scope="module")
def zk() -> Iterator[object]:
    with zookeeper_server() as server:
        yield server


@pytest.fixture(scope="module")
def writer(zk) -> Iterator[KazooClient]:
    """The tests' own client: it rides out the server restarts some tests cause."""
    client = KazooClient(hosts=zk.hosts, connection_retry={"max_tries": -1, "max_delay": 0.2},
                         command_retry={"max_tries": -1, "max_delay": 0.2, "deadline": 30})
    client.start(timeout=30)
    yield client
    client.stop()
    client.close()


@pytest.fixture
def ns(request) -> str:
    """This test's chroot."""
    return "/" + request.node.name.replace("[", "-").replace("]", "")


def put(client: KazooClient, path: str, value: str | bytes, acl: list | None = None) -> None:
    data = value.encode() if isinstance(value, str) else value

    def write() -> None:
        try:
            client.set(path, data)
        except NoNodeError:
            try:
                client.create(path, data, acl=acl, makepath=True)
            except NodeExistsError:  # a retried create that had gone through
                client.set(path, data)

    client.retry(write)


def delete(client: KazooClient, path: str) -> None:
    client.retry(client.delete, path, recursive=True)


def zk_config(zk, ns: str, templates: str, extra: str = "", source_extra: str = "", hosts: str = "") -> str:
    return f"""
sources:
  zk: {{type: zookeeper, hosts: "{hosts or zk.hosts}", chroot: "{ns}"{source_extra}}}
{extra}
templates:
{templates}
"""


def watched(zk, under: str) -> set[str]:
    """The paths under `under` with a data watch (or an exists watch) on the server (`wchp`)."""
    with socket.create_connection(("127.0.0.1", zk.port), timeout=5) as conn:
        conn.sendall(b"wchp")
        reply = b""
        while chunk := conn.recv(65536):
            reply += chunk
    lines = reply.decode().splitlines()
    return {line for line in lines if line.startswith(under + "/") or line == under}


def test_change_reaches_file_and_reloads_app(project, tmp_path, signal_app, zk, writer, ns):
    put(writer, f"{ns}/db/host", "db1")
    cfg = project(zk_config(zk, ns, "  - {source: app.conf.j2, destination: out/app.conf, reload: app}",
                            extra="reloaders:\n  app: {pid_file: app.pid}"), {"app.conf.j2": TEMPLATE})
    out = tmp_path / "out/app.conf"
    with Daemon("-c", str(cfg)) as daemon:
        daemon.wait_event("reloaded", reloader="app")
        assert signal_app.wait_signal() == "HUP"
        assert out.read_text() == "host=db1\nport=5432\n"

        put(writer, f"{ns}/db/host", "db2")
        assert daemon.wait_event("written")["changed"] == ["zk.key('db/host')"]
        daemon.wait_event("reloaded", reloader="app")
        assert signal_app.wait_signal() == "HUP"
        assert out.read_text() == "host=db2\nport=5432\n"

        put(writer, f"{ns}/db/port", "7000")  # absent until now: its creation is watched too
        daemon.wait_event("reloaded", reloader="app")
        assert out.read_text() == "host=db2\nport=7000\n"

        delete(writer, f"{ns}/db/port")  # gone again: the default comes back
        daemon.wait_event("reloaded", reloader="app")
        assert out.read_text() == "host=db2\nport=5432\n"
        assert [signal_app.wait_signal(), signal_app.wait_signal()] == ["HUP", "HUP"]
    assert daemon.proc.returncode == 0


def test_tree_ls_and_chroot(project, tmp_path, zk, writer, ns):
    for path, value in {"cfg": "top", "cfg/a": "1", "cfg/dir/b": "2", "cfg/both": "B", "cfg/both/c": "3",
                        "cfg/empty": ""}.items():
        put(writer, f"{ns}/{path}", value)
    put(writer, "/cfg/outside", "not in the chroot")
    template = ("{{ zk.tree('cfg') | to_json }}\n{{ zk.ls('cfg') | to_json }}\n{{ zk.ls('/') | to_json }}\n"
                "{{ zk.tree('nothing') | to_json }} {{ zk.ls('nothing') | to_json }}\n"
                "{{ 'zookeeper' in top.ls('') }} {{ top.key('" + ns[1:] + "/cfg/a') }}\n")
    cfg = project(zk_config(zk, ns, "  - {source: t.j2, destination: out/t}",
                            extra=f'  top: {{type: zookeeper, hosts: "{zk.hosts}"}}'), {"t.j2": template})
    out = tmp_path / "out/t"

    def tree() -> dict:
        return json.loads(out.read_text().splitlines()[0])

    with Daemon("-c", str(cfg)) as daemon:
        daemon.wait_event("written")
        # A znode is in the tree when it has data or no children: "dir" only holds "b".
        assert tree() == {"a": "1", "both": "B", "both/c": "3", "dir/b": "2", "empty": ""}
        assert out.read_text().splitlines()[1:] == ['["a", "both", "dir", "empty"]', '["cfg"]', "{} []",
                                                    "False 1"]

        # Several writes each (parents made one by one, a recursive delete child first): each
        # may be rendered on its own, so wait for the final state.
        put(writer, f"{ns}/cfg/dir/deeper/new", "4")  # two levels that did not exist
        wait_until(lambda: tree().get("dir/deeper/new") == "4", what="a new deep znode")
        put(writer, f"{ns}/cfg/both/c", "33")
        wait_until(lambda: tree()["both/c"] == "33", what="a changed znode")
        delete(writer, f"{ns}/cfg/dir")
        wait_until(lambda: tree() == {"a": "1", "both": "B", "both/c": "33", "empty": ""}, what="a deletion")
        assert json.loads(out.read_text().splitlines()[1]) == ["a", "both", "empty"]

        put(writer, f"{ns}/nothing/x", "y")  # the prefix appears
        wait_until(lambda: out.read_text().splitlines()[3] == '{"x": "y"} ["x"]', what="a new prefix")
    assert daemon.proc.returncode == 0


def test_unreadable_values_are_missing_with_a_reason(project, zk, writer, ns):
    put(writer, f"{ns}/bin", b"\xff\xfeok")
    put(writer, f"{ns}/t/ok", "fine")
    put(writer, f"{ns}/t/bin", b"\x80")
    cfg = project(zk_config(zk, ns, "  - {source: a.j2, destination: out/a}\n  - {source: b.j2, destination: out/b}"),
                  {"a.j2": "{{ zk.key('bin') }}", "b.j2": "{{ zk.tree('t') }}"})
    result = confsync("once", "-c", str(cfg), "--timeout", "1s")
    assert result.returncode == 3, result.stderr
    assert "zk.key('bin') znode data is not UTF-8 text (invalid start byte at byte 0)" in result.stderr
    assert "zk.tree('t') znode 'bin' of the tree: znode data is not UTF-8 text" in result.stderr


def test_init_names_the_missing_znode_then_succeeds_once_it_exists(project, tmp_path, zk, writer, ns):
    dead = f"127.0.0.1:{free_port()}"  # of several hosts, any one that answers will do
    cfg = project(zk_config(zk, ns, "  - {source: app.conf.j2, destination: out/app.conf}",
                            hosts=f"{dead},{zk.hosts},{dead}"), {"app.conf.j2": TEMPLATE})
    result = confsync("init", "-c", str(cfg), "--timeout", "1s")
    assert result.returncode == 3, result.stderr
    assert "source zk: zk.key('db/host') does not exist" in result.stderr
    assert not (tmp_path / "out/app.conf").exists()

    put(writer, f"{ns}/db/host", "db1")
    result = confsync("init", "-c", str(cfg), "--timeout", "5s")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out/app.conf").read_text() == "host=db1\nport=5432\n"


def test_digest_auth_reads_what_the_acl_allows(project, tmp_path, zk, writer, ns):
    password = "s3cret-Pa55"
    writer.add_auth("digest", f"app:{password}")
    put(writer, f"{ns}/secret", "hunter2", acl=[make_digest_acl("app", password, all=True)])
    put(writer, f"{ns}/public", "open")
    (tmp_path / "good.cred").write_text(f"app:{password}\n")
    (tmp_path / "bad.cred").write_text("app:wrong\n")
    templates = {"a.j2": "{{ zk.key('public') }} {{ zk.key('secret') }}"}

    def run(auth: str, timeout: str = "1s") -> tuple[int, str]:
        cfg = project(zk_config(zk, ns, "  - {source: a.j2, destination: out/a}", source_extra=auth), templates)
        result = confsync("once", "-c", str(cfg), "--timeout", timeout, "--log-level", "debug")
        assert password not in result.stderr + result.stdout
        return result.returncode, result.stderr

    code, stderr = run(", auth: {credential_file: good.cred}", timeout="10s")
    assert code == 0, stderr
    assert (tmp_path / "out/a").read_text() == "open hunter2"
    for auth in (", auth: {credential_file: bad.cred}", ""):
        code, stderr = run(auth)
        assert code == 3
        assert "zk.key('secret') permission denied by the znode's ACL" in stderr

    code, stderr = run(", auth: {credential_file: later.cred}")
    assert code == 3
    assert "cannot read auth.credential_file" in stderr and "No such file" in stderr

    # A credential file that appears later (a Secret volume mounted late) is picked up.
    (tmp_path / "out/a").unlink()
    with Daemon("-c", str(tmp_path / "confsync.yaml")) as daemon:
        daemon.wait_event("source_down", source="zk")
        (tmp_path / "later.cred").write_text(f"app:{password}")
        daemon.wait_event("written")
        assert (tmp_path / "out/a").read_text() == "open hunter2"
    assert password not in daemon.log()


def test_options_are_checked(project):
    for options, error in [('hosts: "h:1/app"', "give the chroot in `chroot`"),
                           ('hosts: "h:1,"', "expected \"host:port,host:port\""),
                           ('hosts: "h:1", chroot: "/a//b"', "chroot: path parts may not be empty"),
                           ('hosts: "h:1", auth: {scheme: sasl, credential_file: c}', "auth.scheme: expected one of")]:
        cfg = project(f"sources:\n  zk: {{type: zookeeper, {options}}}\n")
        result = confsync("check", "-c", str(cfg))
        assert result.returncode == 2 and "sources.zk" in result.stderr and error in result.stderr, result.stderr


def test_starts_while_the_server_is_down_and_catches_up(project, tmp_path, zk, writer, ns):
    put(writer, f"{ns}/db/host", "db1")
    cfg = project(zk_config(zk, ns, "  - {source: app.conf.j2, destination: out/app.conf}"),
                  {"app.conf.j2": TEMPLATE})
    zk.kill()
    try:
        started = time.monotonic()
        result = confsync("init", "-c", str(cfg), "--timeout", "1500ms")
        assert result.returncode == 3
        assert f"(source unavailable: cannot connect to ZooKeeper at {zk.hosts} yet; retrying)" in result.stderr
        assert time.monotonic() - started < 5  # closing does not wait out kazoo's reconnection back-off

        with Daemon("-c", str(cfg)) as daemon:
            daemon.wait_event("source_down", source="zk")
            zk.start()
            daemon.wait_event("source_up", source="zk", timeout=30)
            daemon.wait_event("written")
            assert (tmp_path / "out/app.conf").read_text() == "host=db1\nport=5432\n"
    finally:
        if not zk.running:
            zk.start()


def test_server_restart_keeps_the_file_and_renders_the_change_after(project, tmp_path, zk, writer, ns):
    put(writer, f"{ns}/db/host", "db1")
    cfg = project(zk_config(zk, ns, "  - {source: app.conf.j2, destination: out/app.conf}"),
                  {"app.conf.j2": TEMPLATE})
    out = tmp_path / "out/app.conf"
    with Daemon("-c", str(cfg)) as daemon:
        daemon.wait_event("written")
        zk.kill()
        down = daemon.wait_event("source_down", source="zk")
        assert "lost the connection" in down["message"]
        assert out.read_text() == "host=db1\nport=5432\n"
        zk.start()
        put(writer, f"{ns}/db/host", "db2")  # just after: confsync may or may not be back yet
        daemon.wait_event("source_up", source="zk", timeout=30)
        daemon.wait_event("written", timeout=30)
        assert out.read_text() == "host=db2\nport=5432\n"
        put(writer, f"{ns}/db/port", "1")  # watches work again
        daemon.wait_event("written")
        assert out.read_text() == "host=db2\nport=1\n"
    writes = [json.loads(line) for line in daemon.lines if '"event": "written"' in line]
    assert len(writes) == 3, daemon.log()  # first render, db2, port: nothing in between


def test_session_expiry_reestablishes_every_watch(project, tmp_path, zk, writer, ns):
    for path, value in {"k": "1", "tree/a": "1", "dir/x": ""}.items():
        put(writer, f"{ns}/{path}", value)
    template = ("{{ zk.key('k') }} {{ zk.tree('tree') | to_json }} {{ zk.ls('dir') | to_json }} "
                "{{ zk.key('absent-yet', default='-') }}")
    cfg = project(zk_config(zk, ns, "  - {source: t.j2, destination: out/t}", source_extra=", session_timeout: 1s"),
                  {"t.j2": template})
    out = tmp_path / "out/t"
    # `wchp` lists data watches only; the child watches (on tree and dir) show in what is rendered.
    expected_watches = {f"{ns}/{p}" for p in ("k", "tree/a", "absent-yet")}
    with Daemon("-c", str(cfg)) as daemon:
        daemon.wait_event("written")
        assert out.read_text() == '1 {"a": "1"} ["x"] -'
        assert watched(zk, ns) == expected_watches
        os.kill(daemon.proc.pid, signal.SIGSTOP)  # silent: the server expires its session
        try:
            put(writer, f"{ns}/k", "2")  # made during the outage
            put(writer, f"{ns}/tree/a", "2")
            wait_until(lambda: not watched(zk, ns), what="the server to expire confsync's session")
        finally:
            os.kill(daemon.proc.pid, signal.SIGCONT)
        daemon.wait_event("session_expired", source="zk")
        daemon.wait_event("written")
        # Both changes in one write: after a reconnection the values land together.
        assert out.read_text() == '2 {"a": "2"} ["x"] -'
        wait_until(lambda: watched(zk, ns) == expected_watches, what="every watch re-established")

        for path, value in {"tree/b": "2", "dir/y": "", "absent-yet": "here", "k": "3"}.items():
            put(writer, f"{ns}/{path}", value)
        wait_until(lambda: out.read_text() == '3 {"a": "2", "b": "2"} ["x", "y"] here', what="all changes")
    assert daemon.proc.returncode == 0


def test_a_server_restarted_empty_gets_a_new_session_and_the_file_waits(project, tmp_path, zk, writer, ns):
    # ZooKeeper refuses a client that has seen newer transactions than the server has ("client
    # must try another server"): after a restart without its data, a client would retry for ever.
    # confsync starts over with a new client after two session timeouts. Every znode is gone
    # too: the file keeps its content until they are back.
    put(writer, f"{ns}/db/host", "db1")
    cfg = project(zk_config(zk, ns, "  - {source: app.conf.j2, destination: out/app.conf}",
                            source_extra=", session_timeout: 1s"), {"app.conf.j2": TEMPLATE})
    out = tmp_path / "out/app.conf"
    try:
        with Daemon("-c", str(cfg)) as daemon:
            daemon.wait_event("written")
            zk.kill()
            shutil.rmtree(zk.data_dir)
            zk.data_dir.mkdir()
            zk.start()
            daemon.wait_event("session_reset", source="zk")
            daemon.wait_event("source_up", source="zk")
            daemon.wait_event("waiting")  # db/host is gone: nothing to render...
            assert out.read_text() == "host=db1\nport=5432\n"  # ...so the file stays as it was
            writer.restart()  # the tests' client is refused too: it starts over as well
            put(writer, f"{ns}/db/host", "db2")
            daemon.wait_event("written")
            assert out.read_text() == "host=db2\nport=5432\n"
    finally:
        if not writer.connected:
            writer.restart()


def test_an_unwatched_znode_is_not_watched_again(project, tmp_path, zk, writer, ns):
    for path, value in {"mode": "a", "a": "A1", "b": "B1"}.items():
        put(writer, f"{ns}/{path}", value)
    template = "{% if zk.key('mode') == 'a' %}{{ zk.key('a') }}{% else %}{{ zk.key('b') }}{% endif %}"
    cfg = project(zk_config(zk, ns, "  - {source: t.j2, destination: out/t}"), {"t.j2": template})
    with Daemon("-c", str(cfg)) as daemon:
        daemon.wait_event("written")
        # b too: the first render pass, before mode was known, took the else branch.
        assert watched(zk, ns) == {f"{ns}/mode", f"{ns}/a", f"{ns}/b"}
        put(writer, f"{ns}/mode", "b")
        assert daemon.wait_event("written")["changed"] == ["zk.key('b')", "zk.key('mode')"]
        put(writer, f"{ns}/a", "A2")  # fires a's last watch, which confsync ignores...
        put(writer, f"{ns}/b", "B2")
        assert daemon.wait_event("written")["changed"] == ["zk.key('b')"]
        # ...and does not set again: by now its request would have reached the server before b's.
        assert watched(zk, ns) == {f"{ns}/mode", f"{ns}/b"}


# -- scale (speed itself is measured in bench/, not asserted here) ---------------------------


def test_once_with_100_templates_of_10_keys(project, tmp_path, zk, writer, ns):
    writer.ensure_path(ns)
    pending = []
    for t in range(100):
        pending.append(writer.create_async(f"{ns}/app{t}", b""))
        pending.extend(writer.create_async(f"{ns}/app{t}/k{i}", f"{t}.{i}".encode()) for i in range(10))
    for result in pending:
        result.get(timeout=30)
    templates = {f"t/{t}.j2": "".join(f"k{i}={{{{ zk.key('app{t}/k{i}') }}}}\n" for i in range(10))
                 for t in range(100)}
    listed = "\n".join(f"  - {{source: t/{t}.j2, destination: out/{t}.conf}}" for t in range(100))
    cfg = project(zk_config(zk, ns, listed), templates)
    result = confsync("once", "-c", str(cfg))
    assert result.returncode == 0, result.stderr
    assert all((tmp_path / f"out/{t}.conf").read_text() == "".join(f"k{i}={t}.{i}\n" for i in range(10))
               for t in range(100))
