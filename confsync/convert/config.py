"""consul-template's configuration (HCL or JSON) → confsync's config, template by template.

consul-template's own docs (docs/configuration.md there) define the blocks read here. What has an
exact counterpart is mapped; what has none is listed in the report, never dropped silently.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confsync.configfile import read_text
from confsync.errors import ConfigError


@dataclass
class TemplateSpec:
    """One `template` block."""

    index: int
    source: Path | None  # None: the template is inline `contents`
    contents: str
    destination: str
    left: str = "{{"
    right: str = "}}"
    options: dict[str, Any] = field(default_factory=dict)  # confsync template keys
    command: str | list[str] | None = None
    command_timeout: str | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class Converted:
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)
    top: dict[str, Any] = field(default_factory=dict)
    templates: list[TemplateSpec] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # mapped with a remark, or not mapped and why
    refused: list[str] = field(default_factory=list)  # settings with no equivalent that change behaviour


_IGNORED_TOP = {
    "syslog": "confsync logs to standard error (log_format: json for pipelines)",
    "kill_signal": "confsync does not supervise the app",
    "reload_signal": "send a signal to confsync? it re-reads nothing: restart it after a config change",
    "deduplicate": "no equivalent",
    "once": "use `confsync once`",
}
_LOG_LEVELS = {"trace": "debug", "debug": "debug", "info": "info", "warn": "warning", "err": "error",
               "error": "error"}


def read(path: Path) -> dict[str, Any]:
    """The config as nested dicts and lists, HCL or JSON by its suffix (HCL when not .json)."""
    text = read_text(path)
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}") from None
    else:
        data = _read_hcl(path, text)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return data


def _read_hcl(path: Path, text: str) -> dict[str, Any]:
    try:
        import hcl2
    except ImportError:
        raise ConfigError("reading HCL needs python-hcl2: pip install 'confsync[convert]'") from None
    options = hcl2.SerializationOptions(strip_string_quotes=True, preserve_heredocs=False,
                                        with_comments=False, explicit_blocks=False)
    try:
        data: dict[str, Any] = hcl2.loads(text, serialization_options=options)
    except Exception as exc:  # lark's errors carry line and column
        line, col = getattr(exc, "line", "?"), getattr(exc, "column", "?")
        raise ConfigError(f"{path}:{line}:{col}: not valid HCL: {str(exc).splitlines()[0]}") from None
    # HCL2 reads `perms = 0640` as the decimal 640; HCL1, which consul-template uses, as octal.
    perms = iter(re.findall(r"^\s*perms\s*=\s*\"?(\d+)\"?", text, flags=re.M))
    for block in data.get("template") or []:
        if isinstance(block, dict) and "perms" in block:
            block["perms"] = next(perms, str(block["perms"]))
    return data


def _blocks(value: Any) -> list[dict[str, Any]]:
    """A block as HCL gives it (a list of mappings) or as JSON does (a mapping or a list)."""
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    return [item for item in items if isinstance(item, dict)]


def _one(value: Any) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for block in _blocks(value):
        merged.update(block)
    return merged


def _wait(value: Any, where: str) -> dict[str, str]:
    if isinstance(value, str):
        low, _, high = value.partition(":")
        return {"min": low.strip(), **({"max": high.strip()} if high else {})}
    block = _one(value)
    unknown = set(block) - {"min", "max", "enabled"}
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}")
    return {k: str(block[k]) for k in ("min", "max") if k in block}


def convert(path: Path, raw: dict[str, Any]) -> Converted:
    out = Converted()
    # every template's delimiters unless it sets its own (config.go DefaultDelims), wherever the block is
    defaults = _one(raw.get("default_delimiters", {}))
    delimiters = (str(defaults.get("left", "{{")), str(defaults.get("right", "}}")))
    for key, value in raw.items():
        if key == "consul":
            out.sources["consul"] = _consul(_one(value), out)
        elif key == "vault":
            out.sources["vault"] = _vault(_one(value), out)
        elif key == "template":
            for block in _blocks(value):
                out.templates.append(_template(path, len(out.templates), block, out, delimiters))
        elif key == "wait":
            out.top["wait"] = _wait(value, "wait")
        elif key == "max_stale":
            out.notes.append("max_stale: mapped to consistency: stale and max_stale on the consul source (0: the "
                             "leader's reads)")
        elif key == "pid_file":  # resolved against the directory convert runs in, as consul-template does
            out.top["pid_file"] = str(Path(str(value)).expanduser().absolute())
        elif key == "log_level":
            out.top["log_level"] = _LOG_LEVELS.get(str(value).lower(), "info")
        elif key == "default_delimiters":
            unknown = sorted(set(defaults) - {"left", "right"})
            if unknown:
                out.refused.append(f"default_delimiters.{unknown[0]}: not translated")
        elif key == "exec":
            out.refused.append("exec: not translated: write the `exec:` section for `confsync exec` by hand "
                               "(docs/migrating.md maps each key)")
        elif key in _IGNORED_TOP:
            out.notes.append(f"{key}: not mapped: {_IGNORED_TOP[key]}")
        else:
            out.refused.append(f"{key}: not translated")
    # consul-template reads from any server, and asks the leader again when the answer lags more than
    # max_stale (watch/view.go), 2 s unless set (config.go DefaultMaxStale); 0 reads from the leader
    max_stale = str(raw.get("max_stale", "2s"))
    if "consul" in out.sources and re.search(r"[1-9]", max_stale):
        out.sources["consul"].update(consistency="stale", max_stale=max_stale)
    return out


def _consul(block: dict[str, Any], out: Converted) -> dict[str, Any]:
    source: dict[str, Any] = {"type": "consul"}
    for key, value in block.items():
        if key == "address":
            source["address"] = str(value)
        elif key == "token":
            out.notes.append("consul.token: not copied (confsync takes no token inline): set CONSUL_HTTP_TOKEN "
                             "or token_file")
        elif key == "ssl":
            ssl = _one(value)
            if ssl.get("enabled") and "address" in source and "://" not in source["address"]:
                source["address"] = "https://" + source["address"]
            source.update(_tls(ssl, "consul", out))
        elif key in ("namespace", "partition"):
            source[key] = str(value)
        elif key in ("retry", "transport"):
            out.notes.append(f"consul.{key}: not mapped: confsync retries with its own back-off")
        else:
            out.refused.append(f"consul.{key}: not translated")
    return source


def _vault(block: dict[str, Any], out: Converted) -> dict[str, Any]:
    source: dict[str, Any] = {"type": "vault"}
    for key, value in block.items():
        if key == "address":
            source["address"] = str(value)
        elif key == "namespace":
            source["namespace"] = str(value)
        elif key == "token":
            out.notes.append("vault.token: not copied (confsync takes no token inline): set VAULT_TOKEN")
        elif key in ("renew_token", "retry", "default_lease_duration", "lease_renewal_threshold"):
            out.notes.append(f"vault.{key}: not mapped: confsync renews tokens and leases itself")
        elif key == "ssl":
            source.update(_tls(_one(value), "vault", out))
        else:
            out.refused.append(f"vault.{key}: not translated")
    return source


def _tls(ssl: dict[str, Any], where: str, out: Converted) -> dict[str, Any]:
    """consul-template's ssl block → confsync's tls mapping (empty: nothing to say); a key it cannot
    map (server_name, ca_path) is refused rather than dropped."""
    for key in sorted(set(ssl) - {"enabled", "verify", "ca_cert", "cert", "key"}):
        out.refused.append(f"{where}.ssl.{key}: not translated")
    tls = {new: ssl[old] for old, new in (("ca_cert", "ca_file"), ("cert", "cert_file"), ("key", "key_file"),
                                          ("verify", "verify")) if old in ssl}
    return {"tls": tls} if tls else {}


def _template(path: Path, index: int, block: dict[str, Any], out: Converted,
              delimiters: tuple[str, str]) -> TemplateSpec:
    where = f"template[{index}]"
    if "destination" not in block:
        raise ConfigError(f"{path}: {where}: destination is required")
    source = block.get("source")
    if source is None and "contents" not in block:
        raise ConfigError(f"{path}: {where}: source or contents is required")
    src_path = Path(str(source)).expanduser().absolute() if source else None
    if src_path is not None:
        try:
            contents = read_text(src_path)  # bytes decoded as they are: CR LF stays as Go sees it
        except ConfigError as exc:
            raise ConfigError(f"{path}: {where}.source: {exc}") from None
    else:
        contents = str(block["contents"])
    spec = TemplateSpec(index, src_path, contents, str(Path(str(block["destination"])).expanduser().absolute()),
                        left=delimiters[0], right=delimiters[1])
    for key, value in block.items():
        if key in ("source", "contents", "destination"):
            continue
        if key == "perms":
            spec.options["perms"] = "0" + str(value).lstrip("0").rjust(3, "0") if str(value).isdigit() else value
        elif key == "backup":
            spec.options["backup"] = bool(value)
        elif key == "create_dest_dirs":
            spec.options["create_dirs"] = bool(value)
        elif key == "wait":
            spec.options["wait"] = _wait(value, f"{where}.wait")
        elif key == "command":
            spec.command = value if isinstance(value, list) else str(value)
        elif key == "command_timeout":
            spec.command_timeout = str(value)
        elif key == "left_delimiter":
            spec.left = str(value)
        elif key == "right_delimiter":
            spec.right = str(value)
        elif key in ("user", "group", "uid", "gid"):  # uid and gid: consul-template 0.28's names
            name = {"uid": "user", "gid": "group"}.get(key, key)
            if key == name or name not in block:
                spec.options[name] = int(value) if str(value).isascii() and str(value).isdigit() else str(value)
        elif key == "error_on_missing_key":
            spec.notes.append("error_on_missing_key: always on in confsync")
        elif key in ("function_denylist", "function_blacklist", "sandbox_path"):
            spec.notes.append(f"{key}: not needed: the sandbox has no file, plugin or exec functions")
        else:
            out.refused.append(f"{where}.{key}: not translated")
    return spec
