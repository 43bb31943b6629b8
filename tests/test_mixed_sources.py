"""One template, three sources: etcd, ZooKeeper and files together, through the real daemon."""

from __future__ import annotations

from kazoo.client import KazooClient

from tests.helpers import Daemon, confsync
from tests.servers import etcd_server, zookeeper_server
from tests.test_etcd import put as etcd_put


def test_a_template_renders_from_etcd_zookeeper_and_files(project, tmp_path):
    with etcd_server() as etcd, zookeeper_server() as zk:
        etcd_put(etcd.url, "/mix/db/host", "db.etcd")
        client = KazooClient(hosts=zk.hosts)
        client.start(timeout=20)
        try:
            client.create("/mix/feature", b"on", makepath=True)
            cfg = project(f"""
sources:
  etcd: {{type: etcd, endpoints: ["{etcd.url}"], prefix: /mix}}
  zk: {{type: zookeeper, hosts: "{zk.hosts}", chroot: /mix}}
  kv: {{type: files, root: ./data}}
templates:
  - {{source: t.j2, destination: out/app.conf}}
""", {"t.j2": "{{ etcd.key('db/host') }} {{ zk.key('feature') }} {{ kv.key('region') }}\n"}, {"region": "eu"})
            assert confsync("init", "-c", str(cfg), "--timeout", "20s").returncode == 0
            assert (tmp_path / "out/app.conf").read_text() == "db.etcd on eu\n"
            with Daemon("-c", str(cfg)) as daemon:
                daemon.wait_event("rendered")  # identical to what init wrote: not written again
                etcd_put(etcd.url, "/mix/db/host", "db2.etcd")
                assert daemon.wait_event("written")["changed"] == ["etcd.key('db/host')"]
                client.set("/mix/feature", b"off")
                assert daemon.wait_event("written")["changed"] == ["zk.key('feature')"]
                (tmp_path / "data/region").write_text("us")
                assert daemon.wait_event("written")["changed"] == ["kv.key('region')"]
                assert (tmp_path / "out/app.conf").read_text() == "db2.etcd off us\n"
        finally:
            client.stop()
            client.close()
