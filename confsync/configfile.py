"""Reading a config file safely: what a user names as config may be anything (issue 11).

A regular file of at most 1 MiB of UTF-8 (not /dev/zero, not a FIFO); YAML errors name the file,
keys given twice are refused, and aliases may not expand past a bound (an alias bomb is refused
before it is built).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from confsync.errors import ConfigError

MAX_CONFIG_BYTES = 1 << 20  # a config file is a few KiB; /dev/zero or a log file given by mistake is not
MAX_YAML_NODES = 100_000  # counted with aliases expanded: a YAML alias bomb is refused, not built


def read_text(path: Path) -> str:
    """A file a user names as config (or a template to convert): a regular file of at most 1 MiB of
    UTF-8. Not /dev/zero (read until memory runs out), not a FIFO (an open that waits forever)."""
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused just below.
        with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC), "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                raise ConfigError(f"{path}: not a regular file")
            data = fh.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES >> 20} MiB: not a config file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None


def read_mapping(path: Path) -> dict[str, Any]:
    """The config file's top-level mapping, YAML or TOML by its suffix."""
    text = read_text(path)
    if path.suffix == ".toml":
        import tomllib

        try:
            parsed: Any = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    else:
        parsed = _load_yaml(path, text)
    if parsed is None:
        raise ConfigError(f"{path}: the file is empty: nothing to do (see docs/configuration.md)")
    if not isinstance(parsed, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(parsed).__name__}")
    return parsed


def _load_yaml(path: Path, text: str) -> Any:
    """YAML with its errors naming the file, duplicate keys refused (YAML says keys are unique; PyYAML
    keeps the last one silently), and an alias bomb refused before it is built (issue 11 item 10)."""
    import io

    import yaml

    stream = io.StringIO(text)
    stream.name = str(path)  # the name the parser puts in its marks, instead of "<unicode string>"
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(stream)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_nodes(node, path)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    finally:
        loader.dispose()


def _check_nodes(root: Any, path: Path) -> None:
    import yaml

    sizes: dict[int, int] = {}

    def size(node: Any) -> int:  # the node count once aliases are expanded, each shared node counted once
        if id(node) in sizes:
            return sizes[id(node)]
        sizes[id(node)] = 1  # a recursive alias counts once
        total = 1
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                    if key.value in seen:
                        raise ConfigError(f"{path}:{key.start_mark.line + 1}: duplicate key {key.value!r} "
                                          f"(first at line {seen[key.value]})")
                    seen[key.value] = key.start_mark.line + 1
                total += size(key) + size(value)
        elif isinstance(node, yaml.SequenceNode):
            total += sum(size(item) for item in node.value)
        sizes[id(node)] = total = min(total, MAX_YAML_NODES + 1)
        if total > MAX_YAML_NODES:
            raise ConfigError(f"{path}: more than {MAX_YAML_NODES} values once aliases are expanded "
                              "(a YAML alias bomb?)")
        return total

    size(root)
