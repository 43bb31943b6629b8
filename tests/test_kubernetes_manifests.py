"""examples/kubernetes/*.yaml: valid for the Kubernetes API, hardened, and their confsync configs work.

Three layers, so a typo anywhere fails CI rather than a user's `kubectl apply`:
1. every document validates against the Kubernetes OpenAPI schema, strictly (an unknown field
   fails), with the schemas `kubernetes-validate` ships (no cluster, no network);
2. every pod keeps the rules docs/kubernetes.md gives: non-root, read-only root filesystem, all
   capabilities dropped, seccomp RuntimeDefault, no subPath mounts, sized confsync containers, and
   a shared PID namespace and one UID where confsync signals a process;
3. every confsync config embedded in a ConfigMap passes `confsync check`, then `confsync init`
   against the pod's own ConfigMaps, materialized where the pod mounts them (paths rewritten into
   a temp dir): the templates render with the example's values, and YAML output parses.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from tests.helpers import ROOT, confsync, documented_security_context

EXAMPLES = sorted((ROOT / "examples" / "kubernetes").glob("*.yaml"))
# 1.30: the oldest release we document (native sidecars on by default since 1.29);
# 1.33: native sidecars GA. Pinned, so a new kubernetes-validate cannot move the target silently.
KUBERNETES_VERSIONS = ("1.30.0", "1.33.0")


def _docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _ids(path: Path) -> str:
    return path.name


def test_examples_exist() -> None:
    assert len(EXAMPLES) >= 4, EXAMPLES


# -- 1. the Kubernetes schema -----------------------------------------------------------------

@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("path", EXAMPLES, ids=_ids)
def test_schema_strict(path: Path, version: str) -> None:
    kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")
    for doc in _docs(path):
        try:
            kv.validate(doc, version, strict=True)
        except kv.ValidationError as exc:
            where = "/".join(map(str, exc.path))
            pytest.fail(f"{path.name}: {doc['kind']}/{doc['metadata']['name']} at {where}: {exc.message}")


def test_strict_validation_rejects_an_unknown_field() -> None:
    """Proof that layer 1 can fail: a misspelt field in a pod spec."""
    kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")
    pod = next(d for d in _docs(EXAMPLES[0]) if d["kind"] == "Pod")
    bad = copy.deepcopy(pod)
    bad["spec"]["shareProcessNamespaces"] = True
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, KUBERNETES_VERSIONS[-1], strict=True)


# -- 2. the hardening rules -------------------------------------------------------------------

def _pods() -> Iterator[tuple[Path, dict[str, Any], dict[str, dict[str, Any]]]]:
    for path in EXAMPLES:
        docs = _docs(path)
        config_maps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
        for doc in docs:
            if doc["kind"] == "Pod":
                yield path, doc, config_maps


PODS = list(_pods())


def _pod_id(item: tuple[Path, dict[str, Any], Any]) -> str:
    return f"{item[0].name}:{item[1]['metadata']['name']}"


def _containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return list(spec.get("initContainers", [])) + list(spec["containers"])


def _is_confsync(container: dict[str, Any]) -> bool:
    return container["image"].split("/")[-1].split(":")[0] == "confsync"


def _effective(spec: dict[str, Any], container: dict[str, Any], key: str) -> Any:
    own = container.get("securityContext", {})
    return own[key] if key in own else spec.get("securityContext", {}).get(key)


@pytest.mark.parametrize("item", PODS, ids=_pod_id)
def test_pod_is_hardened(item: tuple[Path, dict[str, Any], Any]) -> None:
    _, pod, _ = item
    spec = pod["spec"]
    for container in _containers(spec):
        name = container["name"]
        # The context docs/kubernetes.md recommends, which tests/test_image.py runs the image with.
        for key, value in documented_security_context().items():
            assert _effective(spec, container, key) == value, f"{name}: securityContext.{key}"
        for mount in container.get("volumeMounts", []):
            # A subPath mount pins one inode: an atomic rename never reaches it (docs/kubernetes.md).
            assert "subPath" not in mount and "subPathExpr" not in mount, f"{name}: {mount}"
        if _is_confsync(container):
            resources = container.get("resources", {})
            for part in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(part, {})), f"{name}: resources.{part}"


def _confsync_config(pod: dict[str, Any], config_maps: dict[str, Any],
                     container: dict[str, Any]) -> dict[str, Any]:
    args = container.get("args", [])
    path = PurePosixPath(args[args.index("--config") + 1])
    data = _volume_data(pod, config_maps, container, path.parent)
    assert data is not None and path.name in data, f"{container['name']}: {path} is not in a mounted ConfigMap"
    return yaml.safe_load(data[path.name])


def _volume_data(pod: dict[str, Any], config_maps: dict[str, Any], container: dict[str, Any],
                 mount_path: PurePosixPath) -> dict[str, str] | None:
    for mount in container.get("volumeMounts", []):
        if PurePosixPath(mount["mountPath"]) == mount_path:
            volume = next(v for v in pod["spec"]["volumes"] if v["name"] == mount["name"])
            if "configMap" in volume:
                return dict(config_maps[volume["configMap"]["name"]]["data"])
    return None


@pytest.mark.parametrize("item", PODS, ids=_pod_id)
def test_signal_reloads_share_pid_namespace_and_uid(item: tuple[Path, dict[str, Any], Any]) -> None:
    _, pod, config_maps = item
    spec = pod["spec"]
    apps = [c for c in spec["containers"] if not _is_confsync(c)]
    for container in filter(_is_confsync, _containers(spec)):
        config = _confsync_config(pod, config_maps, container)
        for name, reloader in (config.get("reloaders") or {}).items():
            if not (reloader.get("process") or reloader.get("pid_file")):
                continue
            assert spec.get("shareProcessNamespace") is True, f"reloader {name}: needs shareProcessNamespace"
            uid = _effective(spec, container, "runAsUser")
            assert uid is not None, f"{container['name']}: set runAsUser explicitly (the app's UID)"
            for app in apps:
                assert _effective(spec, app, "runAsUser") == uid, \
                    f"reloader {name}: {container['name']} and {app['name']} must run as one UID to signal"


# -- 3. the embedded confsync configs ---------------------------------------------------------

def _rewrite(path: str, mounts: dict[PurePosixPath, Path]) -> str:
    """A path inside the container → the same file under the temp dir standing for its volume."""
    pure = PurePosixPath(path)
    for mount_path in sorted(mounts, key=lambda p: len(p.parts), reverse=True):
        if pure == mount_path or mount_path in pure.parents:
            return str(mounts[mount_path] / pure.relative_to(mount_path))
    raise AssertionError(f"{path} is on no volume of the container: the root filesystem is read-only")


def _materialize(pod: dict[str, Any], config_maps: dict[str, Any], container: dict[str, Any],
                 tmp: Path) -> dict[PurePosixPath, Path]:
    mounts = {}
    for mount in container.get("volumeMounts", []):
        volume = next(v for v in pod["spec"]["volumes"] if v["name"] == mount["name"])
        where = tmp / "volumes" / volume["name"]
        where.mkdir(parents=True, exist_ok=True)
        if "configMap" in volume:
            for key, text in config_maps[volume["configMap"]["name"]]["data"].items():
                (where / key).write_text(text)
        mounts[PurePosixPath(mount["mountPath"])] = where
    return mounts


def _configs() -> Iterator[Any]:
    for path, pod, config_maps in PODS:
        for container in filter(_is_confsync, _containers(pod["spec"])):
            yield pytest.param(pod, config_maps, container, id=f"{path.name}:{container['name']}")


@pytest.mark.parametrize(("pod", "config_maps", "container"), list(_configs()))
def test_embedded_config_checks_and_renders(pod: dict[str, Any], config_maps: dict[str, Any],
                                            container: dict[str, Any], tmp_path: Path) -> None:
    mounts = _materialize(pod, config_maps, container, tmp_path)
    args = container["args"]
    config_path = Path(_rewrite(args[args.index("--config") + 1], mounts))
    assert config_path.is_file(), f"--config {args[args.index('--config') + 1]} is not mounted"

    checked = confsync("check", "-c", str(config_path))
    assert checked.returncode == 0, checked.stderr

    # The same config with every absolute path moved onto the temp volumes, rendered for real.
    config = yaml.safe_load(config_path.read_text())
    for source in (config.get("sources") or {}).values():
        if source.get("type") == "files":
            source["root"] = _rewrite(source["root"], mounts)
    for template in config.get("templates") or []:
        template["destination"] = _rewrite(template["destination"], mounts)
    for reloader in (config.get("reloaders") or {}).values():
        if reloader.get("pid_file"):
            reloader["pid_file"] = _rewrite(reloader["pid_file"], mounts)
    local = config_path.with_name("local-" + config_path.name)
    local.write_text(yaml.safe_dump(config))
    rendered = confsync("init", "-c", str(local), "--timeout", "10s")
    assert rendered.returncode == 0, rendered.stderr
    for template in config["templates"]:
        out = Path(template["destination"])
        text = out.read_text()
        assert text.strip(), f"{out.name} rendered empty"
        if out.suffix in (".yml", ".yaml"):
            assert isinstance(yaml.safe_load(text), dict), f"{out.name} is not a YAML mapping"
        if out.suffix == ".conf":  # nginx: balanced braces at least (no nginx binary here)
            assert text.count("{") == text.count("}"), text
