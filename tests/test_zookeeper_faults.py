"""The zookeeper source under hostile data (issue 18), against a real ZooKeeper: ACLs that change
under a watch, unreadable values, deep trees, mass deletions."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from confsync.sources import Dep
from tests.helpers import Daemon, confsync, readyz, wait_until
from tests.servers import free_port, zookeeper_server
from tests.test_zookeeper import put, zk_config

pytestmark = pytest.mark.zookeeper
kazoo = pytest.importorskip("kazoo")
from kazoo.client import KazooClient  # noqa: E402
from kazoo.security import OPEN_ACL_UNSAFE, make_digest_acl  # noqa: E402


@pytest.fixture(scope="module")
def zk() -> Iterator[Any]:
    with zookeeper_server() as server:
        yield server


@pytest.fixture(scope="module")
def writer(zk) -> Iterator[KazooClient]:
    client = KazooClient(hosts=zk.hosts)
    client.start(timeout=30)
    client.add_auth("digest", "admin:admin-pw")
    yield client
    client.stop()
    client.close()


@pytest.fixture
def ns(request) -> str:
    return "/" + request.node.name



def test_an_acl_tightened_under_a_watch_is_noticed_and_the_default_not_used(project, tmp_path, zk, writer, ns):
    """Items 3 and 7: ZooKeeper drops, without an event, a watch it may no longer deliver. The
    source notices (a periodic check of what it watches), says so, and the template waits for the
    value it cannot read instead of writing the default; loosened again, the value comes back."""
    port = free_port()
    put(writer, f"{ns}/feature", "on")
    cfg = project(zk_config(zk, ns, "  - {source: t.j2, destination: out.conf}",
                            extra=f"listen: 127.0.0.1:{port}\nmax_stale_for_ready: 0s",
                            source_extra=", watch_check_interval: 1s"),
                  {"t.j2": "feature={{ zk.key('feature', default='off') }}"})
    out = tmp_path / "out.conf"
    with Daemon("-c", str(cfg)) as daemon:
        daemon.wait_event("written")
        assert out.read_text() == "feature=on"
        writer.set_acls(f"{ns}/feature", [make_digest_acl("admin", "admin-pw", all=True)])
        writer.set(f"{ns}/feature", b"off")  # our watch is consumed without an event
        entry = daemon.wait_event("watch_lost", timeout=30)
        assert entry["level"] == "warning" and "feature" in entry["message"]
        entry = daemon.wait_event("unreadable", timeout=30)
        assert "permission denied" in entry["message"]
        assert out.read_text() == "feature=on"
        assert readyz(port)[0] == 503
        writer.set_acls(f"{ns}/feature", OPEN_ACL_UNSAFE)
        writer.set(f"{ns}/feature", b"maybe")
        wait_until(lambda: out.read_text() == "feature=maybe", timeout=30, what="the value, readable again")
        assert readyz(port)[0] == 200


def test_a_tree_deeper_than_python_recursion(project, tmp_path, zk, writer, ns):
    """Item 10: 1100 levels: no RecursionError, the file is written."""
    deep = ns + "/deep" + "/d" * 1100
    writer.create(deep, b"bottom", makepath=True)
    cfg = project(zk_config(zk, ns, "  - {source: t.j2, destination: out.conf}"),
                  {"t.j2": "{% for k, v in zk.tree('deep').items() %}{{ k.count('/') }} {{ v }}{% endfor %}"})
    result = confsync("once", "-c", str(cfg), "--timeout", "60s")
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "out.conf").read_text() == "1099 bottom"


class _CountingDict(dict[str, Any]):
    visits = 0

    def __iter__(self) -> Iterator[str]:
        for key in super().__iter__():
            _CountingDict.visits += 1
            yield key


def test_pruning_the_children_of_a_watched_tree_is_linear():
    """Item 9: the mirror is scanned once for all the children gone, not once for each one (which
    took 7 s of the event loop for 10k children). Counted in mirror entries visited, not timed."""
    from confsync.sources.zookeeper.options import ZooKeeperOptions
    from confsync.sources.zookeeper.source import CHILDREN, ZooKeeperSource, _Watch

    source = ZooKeeperSource("zk", ZooKeeperOptions(hosts="127.0.0.1:1"), sink=None)  # type: ignore[arg-type]
    dep = Dep("zk", "tree", "t")
    source._trees["t"] = source._watches[dep] = _Watch(dep)
    n = 5000
    names = [f"c{i}" for i in range(n)]
    source._children = _CountingDict({"t": frozenset(names), **{f"t/{x}": frozenset() for x in names}})
    source._data = _CountingDict({f"t/{x}": b"v" for x in names})
    source._store("t", CHILDREN, [])
    assert set(source._data) == set() and set(source._children) == {"t"}
    assert _CountingDict.visits < 10 * n, _CountingDict.visits
