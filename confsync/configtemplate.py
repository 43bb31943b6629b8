"""The settings of one template (`templates:` entries) and their cross-checks."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from confsync.configcheck import Count, Duration, FieldError, Percent, Perms, RelPath, report


@dataclass(frozen=True)
class Wait:
    """Quiescence, as consul-template's `wait`: render once changes stop for `min`, or at `max`."""

    min: Duration = 0.0
    max: Duration = 0.0

    def __post_init__(self) -> None:
        if self.min and not self.max:
            object.__setattr__(self, "max", self.min * 4)  # consul-template's default
        if self.max < self.min:
            raise ValueError(f"max ({self.max}s) is shorter than min ({self.min}s)")


@dataclass(frozen=True)
class TemplateConfig:
    source: RelPath
    destination: RelPath
    perms: Perms | None = None
    create_dirs: bool = True
    backup: bool = False
    check: str | None = None
    wait: Wait | None = None
    reload: tuple[str, ...] = ()
    # Guards: a render that fails one keeps the last good file (consul-template#727, #1131).
    min_bytes: Count = 1  # refuse a shorter render while a good file exists
    max_shrink: Percent | None = None  # refuse a render that shrinks the file by more than this
    allow_shrink: bool = False
    format: Literal["json", "yaml", "toml"] | None = None  # parse the staged file first
    rollback: bool = False  # on a failed reload, put the previous file back and reload again
    allowed_roots: tuple[RelPath, ...] = ()  # default: the destination's own directory


def check_templates(templates: tuple[TemplateConfig, ...], roots: dict[str, Path]) -> None:
    """What each template's settings cannot say alone: a missing source file, a destination shared,
    its own source, or inside the root of a `files` source (name → its real root)."""
    seen: dict[Path, int] = {}
    for i, tpl in enumerate(templates):
        if not tpl.source.is_file():
            report(FieldError(f"templates[{i}].source", f"template file not found: {tpl.source}"))
        dest = Path(os.path.realpath(tpl.destination))
        if dest in seen:
            report(FieldError(f"templates[{i}].destination",
                              f"{tpl.destination} is also the destination of templates[{seen[dest]}]"))
        seen[dest] = i
        if dest == Path(os.path.realpath(tpl.source)):
            report(FieldError(f"templates[{i}].destination", "is the template's own source file"))
        for name, root in roots.items():
            if dest.is_relative_to(root):  # each write would be read back as a change: it feeds itself
                report(FieldError(f"templates[{i}].destination",
                                  f"{tpl.destination} is inside the root of source {name!r} ({root})"))
