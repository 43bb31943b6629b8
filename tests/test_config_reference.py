"""docs/configuration.md cannot drift from the config model.

Every field of the model (the top-level keys of `Config`, `TemplateConfig`, `ReloaderConfig`,
`Wait`, `RenderBudget`, and each source type's `Options`) must be a row of the reference's table under its own
section, found by the section's explicit heading id (`## Templates {#templates}`). A source type's
options may instead be documented in its own page, docs/sources/<type>.md, as table rows. Nested
option groups (a dataclass inside `Options`) are documented as `group.key` or as `key`.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
from pathlib import Path

import pytest

from confsync import config as config_model
from confsync.sources import REGISTRY, source_class

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "docs" / "configuration.md"

_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*(?:\{#([\w-]+)\})?\s*$")
_ROW_KEY = re.compile(r"^\|\s*`([\w.\-\[\]<>]+)`")  # the first cell of a table row: `key`

# Config fields that are not keys of the file: computed by the loader.
NOT_KEYS = {"path"}


def _section_keys(text: str, section_id: str) -> set[str]:
    """The `key`s in the first cell of table rows between the heading {#section_id} and the next
    heading of the same or a higher level."""
    keys: set[str] = set()
    level = None
    for line in text.splitlines():
        heading = _HEADING.match(line)
        if heading and level is not None and len(heading.group(1)) <= level:
            break
        if heading and heading.group(3) == section_id:
            level = len(heading.group(1))
            continue
        if level is not None and (row := _ROW_KEY.match(line)):
            keys.add(row.group(1))
    if level is None:
        raise AssertionError(f"{REFERENCE.name} has no section with the id {{#{section_id}}}")
    return keys


def _all_row_keys(text: str) -> set[str]:
    return {m.group(1) for line in text.splitlines() if (m := _ROW_KEY.match(line))}


def _fields(cls: type) -> list[dataclasses.Field[object]]:
    return [f for f in dataclasses.fields(cls) if f.init and f.name not in NOT_KEYS]  # type: ignore[arg-type]


def _undocumented(cls: type, documented: set[str], prefix: str = "") -> list[str]:
    missing = []
    hints = _hints(cls)
    for f in _fields(cls):
        name = prefix + f.name
        if name not in documented and f.name not in documented:
            missing.append(name)
        nested = hints.get(f.name)
        if dataclasses.is_dataclass(nested):
            missing += _undocumented(nested, documented, prefix=f"{name}.")  # type: ignore[arg-type]
    return missing


def _hints(cls: type) -> dict[str, object]:
    import typing

    out = {}
    for name, hint in typing.get_type_hints(cls).items():
        options = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
        out[name] = next((a for a in options if dataclasses.is_dataclass(a)), hint)
    return out


@pytest.mark.parametrize(("section", "cls"), [
    ("top-level", config_model.Config),
    ("templates", config_model.TemplateConfig),
    ("reloaders", config_model.ReloaderConfig),
    ("wait", config_model.Wait),
    ("exec", config_model.ExecConfig),
    ("render", config_model.RenderBudget),
], ids=lambda v: v if isinstance(v, str) else "")
def test_core_keys_documented(section: str, cls: type) -> None:
    documented = _section_keys(REFERENCE.read_text(), section)
    missing = [f.name for f in _fields(cls) if f.name not in documented]
    assert not missing, (f"{cls.__name__} fields missing from docs/configuration.md's {{#{section}}} "
                         f"table: {', '.join(missing)} (add a row: | `key` | type | default | meaning |)")


def test_top_level_section_matches_the_loader() -> None:
    """The loader's own list of accepted top-level keys, the other side of the same contract."""
    documented = _section_keys(REFERENCE.read_text(), "top-level")
    accepted = getattr(config_model, "_TOP_LEVEL", None)
    if accepted is None:
        pytest.skip("config.py no longer exposes _TOP_LEVEL")
    assert set(accepted) <= documented, sorted(set(accepted) - documented)


def test_sources_section_documents_type() -> None:
    assert "type" in _section_keys(REFERENCE.read_text(), "sources")


def _module_exists(type_name: str) -> bool:
    module = REGISTRY[type_name].partition(":")[0]
    return importlib.util.find_spec(module) is not None


@pytest.mark.parametrize("type_name", sorted(REGISTRY))
def test_source_options_documented(type_name: str) -> None:
    if not _module_exists(type_name):
        pytest.skip(f"confsync/sources/{type_name}.py does not exist yet")
    options = source_class(type_name).Options
    documented = _section_keys(REFERENCE.read_text(), f"source-{type_name}")
    page = ROOT / "docs" / "sources" / f"{type_name}.md"
    if page.exists():
        documented |= _all_row_keys(page.read_text())
    missing = _undocumented(options, documented)
    assert not missing, (f"{type_name} options not documented in docs/configuration.md {{#source-{type_name}}} "
                         f"nor as table rows in docs/sources/{type_name}.md: {', '.join(missing)}")


def test_every_registered_source_has_a_section() -> None:
    text = REFERENCE.read_text()
    for type_name in REGISTRY:
        _section_keys(text, f"source-{type_name}")  # raises when the heading is missing


def test_the_checker_sees_a_missing_key() -> None:
    """Proof that the test can fail: a section without one of the model's keys."""
    text = REFERENCE.read_text().replace("| `splay` |", "| splay |")
    assert "splay" not in _section_keys(text, "reloaders")
