"""`vault.list(path)`: the key names under a KV path (v1 and v2), re-read every
`static_secret_interval`, through the CLI against a real OpenBao dev server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers import Daemon, confsync, wait_until
from tests.servers import OpenBaoServer, openbao_server
from tests.test_vault import assert_no_leak, config, put, root_client

TEMPLATE = ("v2={{ vault.list('secret/list-app') | join(',') }}\n"
            "v1={{ vault.list('kv1/list-app/') | join(',') }}\n"
            "none={{ vault.list('secret/list-none') | length }}\n"
            "{% for k in vault.list('secret/list-app') if not k.endswith('/') %}"
            "{{ k }}={{ vault.secret('secret/list-app/' ~ k).v }};{% endfor %}\n")


@pytest.fixture(scope="module")
def bao() -> Iterator[OpenBaoServer]:
    with openbao_server() as server:
        client = root_client(server)
        client.sys.enable_secrets_engine("kv", path="kv1", options={"version": "1"})
        for name in ("b", "a", "sub/c"):
            put(server, f"list-app/{name}", v=name.upper())
        for name in ("y", "x"):
            client.write_data(f"kv1/list-app/{name}", data={"v": name})
        client.sys.create_or_update_policy("read-only", 'path "secret/data/*" { capabilities = ["read"] }')
        yield server


def test_list_kv_v2_and_v1_and_follow_changes(bao, project, tmp_path):
    cfg = project(config(bao, {"app.conf.j2": "out/app.conf"}, interval="300ms"), {"app.conf.j2": TEMPLATE})
    out = tmp_path / "out/app.conf"
    with Daemon("-c", str(cfg), VAULT_TOKEN=bao.root_token) as daemon:
        daemon.wait_event("written")
        assert out.read_text() == "v2=a,b,sub/\nv1=x,y\nnone=0\na=A;b=B;\n"
        put(bao, "list-app/d", v="D")  # a new key: seen at the next re-read
        daemon.wait_event("written")
        assert out.read_text() == "v2=a,b,d,sub/\nv1=x,y\nnone=0\na=A;b=B;d=D;\n"
        client = root_client(bao)
        client.delete("kv1/list-app/x")
        client.delete("kv1/list-app/y")  # the last key gone: an empty list, not a missing value
        # (a re-read between the two deletes writes "v1=y" first)
        wait_until(lambda: out.read_text() == "v2=a,b,d,sub/\nv1=\nnone=0\na=A;b=B;d=D;\n", what="v1 empty")


def test_list_without_permission_is_named_like_a_secret(bao, project, tmp_path):
    token = root_client(bao).auth.token.create(policies=["read-only"], ttl="1h")["auth"]["client_token"]
    cfg = project(config(bao, {"app.conf.j2": "out/app.conf"}),
                  {"app.conf.j2": "{{ vault.list('secret/list-app') | join(',') }}"})
    result = confsync("init", "-c", str(cfg), "--timeout", "1s", VAULT_TOKEN=token)
    assert result.returncode == 3, result.stderr
    assert "vault.list('secret/list-app') permission denied" in result.stderr
    assert not (tmp_path / "out/app.conf").exists()
    assert_no_leak(result.stderr, token)
