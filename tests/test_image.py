"""The image, built from the unchanged Dockerfile and run the way Kubernetes runs it (issue 12).

`scripts/image-test build` builds it with podman (the stand-in base and the engine's settings are
the script's); these tests run each mode in a container with the security context that
docs/kubernetes.md recommends, translated into podman flags, as the image's user (10001) and as
an arbitrary UID in group 0 (OpenShift's restricted profile). Where podman cannot run, the module
is skipped and says why. Every container is removed by the test that started it.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import hvac
import pytest

from tests.helpers import DEADLINE, ROOT, documented_security_context, wait_until
from tests.servers import free_port, openbao_server

SCRIPT = ROOT / "scripts" / "image-test"
PODMAN_ENV = {"CONTAINERS_CONF": str(ROOT / "scripts" / "image" / "containers.conf")}
# The image's own user, and an arbitrary UID in group 0 as OpenShift's restricted profile assigns.
USERS = ["10001:10001", "1000770000:0"]
# slirp4netns, not the default bridge (it needs iptables, which the machine may lack); with
# allow_host_loopback the host's 127.0.0.1 is 10.0.2.2 in the container.
NETWORK = "slirp4netns:allow_host_loopback=true"
HOST_LOOPBACK = "10.0.2.2"


def _problem() -> str:
    try:
        return subprocess.run([str(SCRIPT), "problem"], capture_output=True, text=True, timeout=60).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        return f"scripts/image-test cannot run: {exc}"


_PROBLEM = _problem()
pytestmark = pytest.mark.skipif(bool(_PROBLEM), reason=f"image not tested: {_PROBLEM}")


def podman(*args: str, timeout: float = 120, check: bool = True,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **PODMAN_ENV, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: exit {proc.returncode}\n{proc.stderr}")
    return proc


# docs/kubernetes.md's security context, field by field, as podman flags. A field the docs add
# that is not here fails the test: the docs may recommend only what this module runs.
_FLAGS: dict[str, tuple[Any, list[str]]] = {
    "runAsNonRoot": (True, []),  # every run below passes a non-zero --user
    "seccompProfile": ({"type": "RuntimeDefault"}, []),  # podman applies its default profile
    "allowPrivilegeEscalation": (False, ["--security-opt=no-new-privileges"]),
    # Kubernetes mounts nothing on /tmp; `podman run --read-only` alone would.
    "readOnlyRootFilesystem": (True, ["--read-only", "--read-only-tmpfs=false"]),
    "capabilities": ({"drop": ["ALL"]}, ["--cap-drop=ALL"]),
}


def security_flags() -> list[str]:
    flags = []
    for key, value in documented_security_context().items():
        assert key in _FLAGS, f"docs/kubernetes.md recommends {key}, which the image test does not run"
        expected, more = _FLAGS[key]
        assert value == expected, f"docs/kubernetes.md: {key}: {value!r}; the image test runs {expected!r}"
        flags += more
    return flags


@pytest.fixture(scope="module")
def image() -> str:
    proc = subprocess.run([str(SCRIPT), "build"], capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, f"scripts/image-test build: exit {proc.returncode}\n{proc.stderr}"
    return proc.stdout.split()[-1]


@pytest.fixture(params=USERS, ids=["uid10001", "openshift"])
def user(request: pytest.FixtureRequest) -> str:
    return str(request.param)


CONFIG = """
sources:
  values: {type: files, root: /values}
templates:
  - {source: app.conf.j2, destination: /rendered/app.conf}
"""
TEMPLATE = "host={{ values.key('db/host') }}\n"


@pytest.fixture
def pod(tmp_path: Path, user: str) -> dict[str, Path]:
    """What the pod's volumes hold: confsync's config (read-only), the values (read-only) and the
    emptyDir it renders into, owned by the container's user as the kubelet's fsGroup makes it."""
    config, values, rendered = tmp_path / "config", tmp_path / "values", tmp_path / "rendered"
    for d in (config, values / "db", rendered):
        d.mkdir(parents=True)
    (config / "confsync.yaml").write_text(CONFIG)
    (config / "app.conf.j2").write_text(TEMPLATE)
    uid, gid = (int(n) for n in user.split(":"))
    os.chown(rendered, uid, gid)
    rendered.chmod(0o770)
    return {"config": config, "values": values, "rendered": rendered}


def _mounts(pod: dict[str, Path]) -> list[str]:
    return ["-v", f"{pod['config']}:/etc/confsync:ro", "-v", f"{pod['values']}:/values:ro",
            "-v", f"{pod['rendered']}:/rendered"]


@contextlib.contextmanager
def container(image: str, user: str, *args: str, options: tuple[str, ...] = (),
              env: dict[str, str] | None = None) -> Iterator[str]:
    """A detached container, removed on the way out whatever happened. `env` reaches it through
    podman's own environment, never its command line (which `ps` shows)."""
    name = f"confsync-test-{uuid.uuid4().hex[:12]}"
    passed = [f"--env={key}" for key in env or {}]
    podman("run", "-d", "--name", name, "--user", user, *security_flags(), *passed, *options, image, *args,
           env=env)
    try:
        yield name
    finally:
        podman("rm", "-f", "-t", "0", name, check=False)


def run_once(image: str, user: str, *args: str, options: tuple[str, ...] = (),
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """A container run to its end; its exit code and output, the container removed."""
    with container(image, user, *args, options=options, env=env) as name:
        exit_code = podman("wait", name, timeout=DEADLINE * 3).stdout.strip()
        logs = podman("logs", name)
    assert "Traceback" not in logs.stderr, logs.stderr
    return subprocess.CompletedProcess(args, int(exit_code), logs.stdout, logs.stderr)


def test_labels_name_the_image_and_its_version(image: str) -> None:
    labels = json.loads(podman("image", "inspect", "--format", "{{json .Labels}}", image).stdout)
    assert labels["org.opencontainers.image.title"] == "confsync"
    assert labels["org.opencontainers.image.version"] == version("confsync")
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"


def test_version(image: str, user: str) -> None:
    result = run_once(image, user, "--version", options=("--network=none",))
    assert result.returncode == 0, result.stderr
    assert version("confsync") in result.stdout


def test_check(image: str, user: str, pod: dict[str, Path]) -> None:
    result = run_once(image, user, "check", "-c", "/etc/confsync/confsync.yaml",
                      options=("--network=none", *_mounts(pod)))
    assert result.returncode == 0, result.stderr
    assert "/etc/confsync/confsync.yaml: ok (1 template(s))" in result.stdout


def test_once_renders_into_the_volume(image: str, user: str, pod: dict[str, Path]) -> None:
    (pod["values"] / "db" / "host").write_text("db1")
    result = run_once(image, user, "once", "-c", "/etc/confsync/confsync.yaml",
                      options=("--network=none", *_mounts(pod)))
    assert result.returncode == 0, result.stderr
    assert (pod["rendered"] / "app.conf").read_text() == "host=db1\n"


def test_init_names_the_missing_key_and_exits_3(image: str, user: str, pod: dict[str, Path]) -> None:
    result = run_once(image, user, "init", "-c", "/etc/confsync/confsync.yaml", "--timeout", "1s",
                      options=("--network=none", *_mounts(pod)))
    assert result.returncode == 3, result.stderr
    assert "values.key('db/host') does not exist" in result.stderr
    assert not (pod["rendered"] / "app.conf").exists()


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def test_run_follows_a_change_serves_probes_and_stops_cleanly(image: str, user: str, pod: dict[str, Path]) -> None:
    (pod["values"] / "db" / "host").write_text("db1")
    port = free_port()
    out = pod["rendered"] / "app.conf"
    with container(image, user, "run", "-c", "/etc/confsync/confsync.yaml", "--listen", "0.0.0.0:9101",
                   options=(f"--network={NETWORK}", "-p", f"127.0.0.1:{port}:9101", *_mounts(pod))) as name:
        wait_until(lambda: _get(f"http://127.0.0.1:{port}/readyz")[0] == 200, DEADLINE * 2,
                   "/readyz answering 200 through the published port")
        assert out.read_text() == "host=db1\n"
        (pod["values"] / "db" / "host").write_text("db2")
        wait_until(lambda: out.exists() and out.read_text() == "host=db2\n", DEADLINE * 2, "the change rendered")
        status, metrics = _get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200 and "confsync_" in metrics
        # One second to stop, then podman kills (exit 137): exit 0 proves a clean stop within it.
        podman("stop", "--time", "1", name, timeout=DEADLINE)
        state = podman("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip()
        logs = podman("logs", name).stderr
        assert state == "0", logs
        assert "Traceback" not in logs, logs


def test_vault_secret_rendered_0600_into_the_volume(image: str, tmp_path: Path) -> None:
    user = USERS[0]
    with openbao_server() as bao:
        port = bao.addr.rsplit(":", 1)[1]
        hvac.Client(url=bao.addr, token=bao.root_token).write_data(
            "secret/data/app/db", data={"data": {"password": "s3cret-in-a-container"}})
        config, rendered = tmp_path / "config", tmp_path / "rendered"
        config.mkdir()
        rendered.mkdir()
        os.chown(rendered, *(int(n) for n in user.split(":")))
        (config / "confsync.yaml").write_text(
            f"sources:\n  vault: {{type: vault, address: 'http://{HOST_LOOPBACK}:{port}'}}\n"
            "templates:\n  - {source: db.j2, destination: /rendered/db.conf}\n")
        (config / "db.j2").write_text("password={{ vault.secret('secret/app/db').password }}\n")
        result = run_once(image, user, "once", "-c", "/etc/confsync/confsync.yaml",
                          options=(f"--network={NETWORK}", "-v", f"{config}:/etc/confsync:ro",
                                   "-v", f"{rendered}:/rendered"), env={"VAULT_TOKEN": bao.root_token})
    assert result.returncode == 0, result.stderr
    secret = rendered / "db.conf"
    assert secret.read_text() == "password=s3cret-in-a-container\n"
    assert oct(secret.stat().st_mode & 0o777) == oct(0o600)
    assert secret.stat().st_uid == 10001
    assert "s3cret" not in result.stderr + result.stdout
