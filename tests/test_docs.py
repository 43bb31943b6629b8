"""The documentation site builds with `mkdocs build --strict`, and names what the code emits.

Strict mode (with the `validation:` settings of mkdocs.yml) fails on a broken link or anchor, a
page missing from the nav, or a nav entry without its page. A source page may be missing only
while its source module does not exist either (they are written on other branches): the build
then runs on a copy of docs/ with a stub in its place, so every other page is still checked.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from confsync.sources import REGISTRY

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def _nav_pages(nav: object) -> list[str]:
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, list):
        return [p for item in nav for p in _nav_pages(item)]
    if isinstance(nav, dict):
        return [p for value in nav.values() for p in _nav_pages(value)]
    return []


def _source_module_exists(type_name: str) -> bool:
    return importlib.util.find_spec(REGISTRY[type_name].partition(":")[0]) is not None


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None:
        pytest.skip("mkdocs and mkdocs-material are not installed (pip install mkdocs mkdocs-material)")
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    missing = [page for page in _nav_pages(config["nav"]) if not (DOCS / page).is_file()]
    stubs = []
    for page in missing:
        match = re.fullmatch(r"sources/(\w+)\.md", page)
        assert match and match.group(1) in REGISTRY, f"mkdocs.yml's nav names docs/{page}, which does not exist"
        assert not _source_module_exists(match.group(1)), \
            f"confsync/sources/{match.group(1)}.py exists but docs/{page} does not: write the page"
        stubs.append(page)
    site_root = ROOT
    if stubs:
        site_root = tmp_path / "project"
        shutil.copytree(DOCS, site_root / "docs")
        shutil.copy(ROOT / "mkdocs.yml", site_root / "mkdocs.yml")
        for page in stubs:
            (site_root / "docs" / page).write_text(f"# {page}\n\nNot written yet.\n")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(site_root / "mkdocs.yml"),
         "--site-dir", str(tmp_path / "site")],
        capture_output=True, text=True, timeout=120, env=env, cwd=site_root,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "site" / "configuration" / "index.html").is_file()


def _operations() -> str:
    return (DOCS / "operations.md").read_text()


def test_every_metric_is_documented() -> None:
    source = (ROOT / "confsync" / "observe.py").read_text()
    families = re.findall(r'(Counter|Gauge|Summary)MetricFamily\(\s*"(\w+)"', source)
    assert families, "no metric found in observe.py: has the collector moved?"
    text = _operations()
    # prometheus_client exposes a counter `x` as `x_total`.
    names = [f"{name}_total" if kind == "Counter" else name for kind, name in families]
    missing = [name for name in names if f"`{name}`" not in text]
    assert not missing, f"metrics not in docs/operations.md: {', '.join(missing)}"


def test_every_core_log_event_is_documented() -> None:
    """Events of the core modules (sources document their own on their pages)."""
    events = set()
    for path in (ROOT / "confsync").glob("*.py"):
        events |= set(re.findall(r'"event":\s*"(\w+)"', path.read_text()))
    assert events
    text = _operations()
    missing = sorted(e for e in events if f"| `{e}` |" not in text)
    assert not missing, f"log events not in docs/operations.md's events table: {', '.join(missing)}"


def test_every_json_log_field_is_documented() -> None:
    """The JSON formatter fed a record that has every optional attribute: all its keys documented."""
    import json
    import logging

    from confsync.logs import JsonFormatter

    class Everything(logging.LogRecord):
        def __getattr__(self, name: str) -> str:  # only for attributes a plain record lacks
            return "x"

    try:
        raise RuntimeError("boom")
    except RuntimeError:
        exc_info = sys.exc_info()
    record = Everything("confsync", logging.INFO, __file__, 1, "message", None, exc_info)
    fields = json.loads(JsonFormatter().format(record))
    text = _operations()
    missing = sorted(f for f in fields if f"| `{f}` |" not in text)
    assert not missing, f"JSON log fields not in docs/operations.md: {', '.join(missing)}"
