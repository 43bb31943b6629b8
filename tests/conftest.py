from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers import ReloadServer, SignalApp

pytest_plugins = ["tests.consul_fixtures"]


@pytest.fixture
def project(tmp_path: Path) -> Callable[..., Path]:
    """Write a config, its templates and data files under tmp_path; returns the config's path."""

    def make(config: str, templates: dict[str, str] | None = None, data: dict[str, str] | None = None,
             name: str = "confsync.yaml") -> Path:
        for rel, text in (templates or {}).items():
            (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / rel).write_text(text)
        for rel, text in (data or {}).items():
            (tmp_path / "data" / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / "data" / rel).write_text(text)
        (tmp_path / "data").mkdir(exist_ok=True)
        path = tmp_path / name
        path.write_text(config)
        return path

    return make


@pytest.fixture
def signal_app(tmp_path: Path) -> Iterator[SignalApp]:
    app = SignalApp(tmp_path / "app.pid")
    yield app
    app.stop()


@pytest.fixture
def reload_server() -> Iterator[ReloadServer]:
    server = ReloadServer()
    yield server
    server.stop()
