"""`confsync convert` is tested against Go itself: every template in tests/convert_corpus/ is rendered
by Go's text/template (tests/gotemplate/, consul-template's functions over a snapshot of the
data) and, converted, by `confsync once` against the same data in the Consul emulator and OpenBao;
the two outputs must be the same bytes.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import hvac
import pytest

from tests.consul_emulator import consul_emulator
from tests.helpers import build_ctrender, confsync
from tests.servers import openbao_server

CORPUS = Path(__file__).parent / "convert_corpus"
DELIMS = {"custom-delims": ("[[", "]]")}
INLINE = {"custom-delims"}  # given to consul-template as `contents`, converted to confsync's inline `contents`

KV = {
    "app/name": "shop",
    "app/port": "8080",
    "app/empty": "",
    "app/env/LOG_LEVEL": "debug",
    "app/env/DB_HOST": "db.internal",
    "app/env/FEATURE_X": "on & <off>",
    "app/limits": '{"cpu": 2, "mem": "512Mi", "ratio": 1.5, "tags": ["a", "b"]}',
    "app/hosts": " a.example, b.example ,c.example \n",
    "app/cert_b64": base64.b64encode(b"hello\nworld").decode(),
    "app/multi": "line1\nline2\n\nline4\n",
    "app/unicode": "héllo wörld",
    "app/flag": "true",
    "app/neg": "-42",
    "config/db/host": "db1",
    "config/db/port": "5432",
    "config/cache/host": "redis1",
    "config/cache/ttl/seconds": "30",
}

SERVICES = [  # node, node address, service id, name, port, tags, service address, meta, check status
    ("node-a", "10.0.0.1", "web-1", "web", 8080, ["v2", "primary"], "", {"version": "2"}, "passing"),
    ("node-b", "10.0.0.2", "web-2", "web", 8080, ["v1"], "10.1.0.2", {}, "passing"),
    ("node-b", "10.0.0.2", "web-4", "web", 8082, ["v2"], "", {"version": "v2.1", "weight": "10"}, "passing"),
    ("node-c", "10.0.0.3", "web-3", "web", 8081, ["v2"], "", {}, "critical"),
    ("node-a", "10.0.0.1", "db-1", "db", 5432, ["primary"], "", {"role": "primary"}, "passing"),
    ("node-b", "10.0.0.2", "db-2", "db", 5432, ["replica"], "", {}, "warning"),
]

NODES = {"node-a": {"NodeMeta": {"rack": "r1", "zone": "a"},
                    "TaggedAddresses": {"lan": "10.0.0.1", "wan": "198.51.100.1"}}}
COORDINATES = {"node-c": 0, "node-b": 1, "node-a": 5, "consul-emulator": 9}  # ?near: distance on a line
NEAR = ("node-c", "_agent")
WEIGHTS = {"db-1": {"Passing": 10, "Warning": 2}}
TAGGED = {"web-1": {"lan": {"Address": "10.0.0.1", "Port": 8080}, "wan": {"Address": "198.51.100.1", "Port": 80}}}
PROXY = {"Node": "node-a", "Address": "10.0.0.1", **NODES["node-a"],  # web's sidecar: what `connect "web"` lists
         "Service": {"ID": "web-1-sidecar-proxy", "Service": "web-sidecar-proxy", "Kind": "connect-proxy",
                     "Port": 21000, "Proxy": {"DestinationServiceName": "web", "DestinationServiceID": "web-1"}},
         "Checks": [{"CheckID": "check-web-1-proxy", "Name": "c", "Status": "passing",
                     "ServiceID": "web-1-sidecar-proxy"}]}

CERT = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUQ\nZm9vYmFy\n-----END CERTIFICATE-----"
SECRETS_V2 = {  # KV version 2 at the dev server's secret/
    "app": {"user": "app", "password": "s3cr&t<>", "port": 5432, "enabled": True},
    "users/bob": {"name": "Bob", "password": "b0b"},
    "users/alice": {"name": "Alice", "password": "a1ice"},
    "users/ops/carol": {"name": "Carol", "password": "c4rol"},
    "certs/web": {"certificate": CERT, "ca_chain": [CERT],
                  "private_key": "-----BEGIN EC PRIVATE KEY-----\nabc\n-----END EC PRIVATE KEY-----"},
}
SECRETS_V1 = {"kv1/db": {"username": "dbuser", "password": "p@ss:word/1"}}
SECRET_READS = ["secret/data/app", "secret/data/certs/web", "kv1/db", "secret/data/users/alice",
                "secret/data/users/bob"]
# consul-template's `secrets` path → what it LISTs (KV v2 under metadata/)
SECRET_LISTS = {"secret/users": "secret/metadata/users", "kv1": "kv1", "secret/none": "secret/metadata/none"}
SECRET_WRITES = {"transit/hash/sha2-256": {"input": "aGVsbG8gd29ybGQ="}}


@dataclass
class World:
    consul: str
    vault: str
    token: str
    snapshot: Path
    ctrender: Path


def _seed_consul(addr: str) -> dict[str, Any]:
    with httpx.Client(base_url=addr, timeout=30) as http:
        for key, value in KV.items():
            assert http.put(f"/v1/kv/{key}", content=value.encode()).status_code == 200
        for node, node_addr, sid, name, port, tags, svc_addr, meta, status in SERVICES:
            body = {"Node": node, "Address": node_addr, **NODES.get(node, {}),
                    "Service": {"ID": sid, "Service": name, "Port": port, "Tags": tags, "Address": svc_addr,
                                "Meta": meta, **({"Weights": WEIGHTS[sid]} if sid in WEIGHTS else {}),
                                **({"TaggedAddresses": TAGGED[sid]} if sid in TAGGED else {})},
                    "Checks": [{"CheckID": f"check-{sid}", "Name": f"{name} health", "Status": status, "ServiceID": sid,
                                "Notes": "GET /health", "Output": f"HTTP 200: {status} <ok>"}]}
            assert http.put("/v1/catalog/register", json=body).status_code == 200
        assert http.put("/v1/catalog/register", json=PROXY).status_code == 200
        # The snapshot the Go side reads is what Consul itself answers.
        kv = {e["Key"]: base64.b64decode(e["Value"] or "").decode() for e in http.get("/v1/kv/?recurse").json()}
        catalog = http.get("/v1/catalog/services").json()
        nodes = http.get("/v1/catalog/nodes").json()
        return {"kv": kv, "catalog": catalog, "nodes": nodes,
                "health": {name: http.get(f"/v1/health/service/{name}").json() for name in catalog},
                "connect": {name: http.get(f"/v1/health/connect/{name}").json() for name in catalog},
                "node": {n["Node"]: http.get(f"/v1/catalog/node/{n['Node']}").json() for n in nodes},
                "agent_node": http.get("/v1/agent/self").json()["Config"]["NodeName"],
                "datacenters": http.get("/v1/catalog/datacenters").json(),
                "nodes_near": {n: http.get("/v1/catalog/nodes", params={"near": n}).json() for n in NEAR},
                "health_near": {f"{s}~{n}": http.get(f"/v1/health/service/{s}", params={"near": n}).json()
                                for s in catalog for n in NEAR},
                "ca_roots": http.get("/v1/agent/connect/ca/roots").json(),
                "ca_leaf": {"web": http.get("/v1/agent/connect/ca/leaf/web").json()}}


def _seed_vault(addr: str, token: str) -> dict[str, Any]:
    client = hvac.Client(url=addr, token=token)
    client.sys.enable_secrets_engine("kv", path="kv1", options={"version": "1"})
    client.sys.enable_secrets_engine("transit", path="transit")
    for path, data in SECRETS_V2.items():
        client.write_data(f"secret/data/{path}", data={"data": data})
    for path, data in SECRETS_V1.items():
        client.write_data(path, data=data)
    secrets: dict[str, Any] = {}
    lists: dict[str, list[str]] = {}
    with httpx.Client(base_url=addr, headers={"X-Vault-Token": token}, timeout=30) as http:
        for path in SECRET_READS:
            secrets[path] = http.get(f"/v1/{path}").json()
        for path, params in SECRET_WRITES.items():
            key = path + "?" + "&".join(f"{k}={v}" for k, v in sorted(params.items()))
            secrets[key] = http.put(f"/v1/{path}", json=params).json()
        for path, listed in SECRET_LISTS.items():
            reply = http.get(f"/v1/{listed}", params={"list": "true"})
            assert reply.status_code in (200, 404), reply.text  # 404: nothing under it
            lists[path] = reply.json()["data"]["keys"] if reply.status_code == 200 else []
    return {"secrets": secrets, "lists": lists}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("convert-go")
    ctrender = build_ctrender(tmp)
    with consul_emulator() as emu, openbao_server() as bao:
        emu.coordinates.update(COORDINATES)
        snapshot = _seed_consul(emu.addr)
        snapshot.update(_seed_vault(bao.addr, bao.root_token))
        path = tmp / "snapshot.json"
        path.write_text(json.dumps(snapshot))
        yield World(emu.addr, bao.addr, bao.root_token, path, ctrender)


def go_render(world: World, template: Path) -> str:
    delims = list(DELIMS.get(template.stem, ()))
    env = {**os.environ, "CONVERT_TEST_VAR": "set"}
    env.pop("CONVERT_TEST_UNSET", None)
    result = subprocess.run([str(world.ctrender), str(world.snapshot), str(template), *delims],
                            capture_output=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


def _ct_config(world: World, templates: list[Path], out: Path) -> str:
    blocks = [f'consul {{\n  address = "{world.consul}"\n}}', f'vault {{\n  address = "{world.vault}"\n}}']
    for t in templates:
        text = json.dumps(t.read_bytes().decode(), ensure_ascii=False)  # an HCL string: the same escapes
        lines = [f"  contents = {text}" if t.stem in INLINE else f'  source = "{t}"',
                 f'  destination = "{out / t.stem}"']
        if t.stem in DELIMS:
            left, right = DELIMS[t.stem]
            lines += [f'  left_delimiter = "{left}"', f'  right_delimiter = "{right}"']
        blocks.append("template {\n" + "\n".join(lines) + "\n}")
    return "\n".join(blocks) + "\n"


@pytest.fixture(scope="module")
def converted(world: World, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The whole corpus converted by `confsync convert` and rendered by one `confsync once`."""
    tmp = tmp_path_factory.mktemp("convert-out")
    out = tmp / "rendered"
    config = tmp / "consul-template.hcl"
    config.write_text(_ct_config(world, sorted(CORPUS.glob("*.ctmpl")), out))
    result = confsync("convert", str(config), "-o", str(tmp / "conv"))
    assert result.returncode == 0, result.stdout + result.stderr
    run = confsync("once", "-c", str(tmp / "conv" / "confsync.yaml"), "--timeout", "60s", timeout=120,
                   VAULT_TOKEN=world.token, CONVERT_TEST_VAR="set")
    assert run.returncode == 0, run.stdout + run.stderr
    return out


@pytest.mark.vault
@pytest.mark.parametrize("template", sorted(CORPUS.glob("*.ctmpl")), ids=lambda p: p.stem)
def test_converted_template_renders_what_go_renders(world: World, converted: Path, template: Path) -> None:
    expected = go_render(world, template)
    assert (converted / template.stem).read_bytes().decode() == expected


def test_corpus_is_big_enough_and_covers_every_translation() -> None:
    """Each function the converter translates (Go's and consul-template's) and each statement is
    checked against Go by at least one template of the corpus."""
    from confsync.convert.builtins import BUILTINS
    from confsync.convert.functions import TRANSLATORS

    templates = sorted(CORPUS.glob("*.ctmpl"))
    assert len(templates) >= 30
    text = "\n".join(t.read_text() for t in templates)
    untested = [f for f in sorted({*BUILTINS, *TRANSLATORS}) if not re.search(rf"(?<![\w.$]){f}\b", text)]
    statements = ["{{-", "-}}", "{{/*", "if ", "else if", "else", "range ", "with ", "define ", "template ",
                  "block ", ":=", " = ", "$i, $", "end"]
    assert not untested and all(f in text for f in statements), untested
