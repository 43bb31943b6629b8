"""The settings of one template (`templates:` entries) and their cross-checks.

A template's text is a file (`source`) or inline in the config (`contents`): exactly one. An inline
template includes files from the config file's directory, confined there as a file template is to
its own (render.FolderLoader), and messages call it `<config file>: templates[N].contents:LINE`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from confsync.configcheck import Count, Duration, FieldError, GroupId, Percent, Perms, RelPath, UserId, report


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
class Delimiters:
    """Jinja2's delimiters, for a file whose own syntax uses `{{ }}` (consul-template's
    left_delimiter/right_delimiter, which Go templates need only one pair of)."""

    variable: tuple[str, ...] = ("{{", "}}")
    block: tuple[str, ...] = ("{%", "%}")
    comment: tuple[str, ...] = ("{#", "#}")

    def __post_init__(self) -> None:
        pairs = {"variable": self.variable, "block": self.block, "comment": self.comment}
        for name, pair in pairs.items():
            if len(pair) != 2 or not all(pair) or any(c.isspace() for c in "".join(pair)):
                raise ValueError(f"{name}: expected [start, end], two strings without white space, got {list(pair)}")
        starts = [pair[0] for pair in pairs.values()]
        if len(set(starts)) < 3:
            raise ValueError(f"variable, block and comment need three different starts, got {starts}")


@dataclass(frozen=True, kw_only=True)
class TemplateConfig:
    source: RelPath | None = None  # a file, or:
    contents: str | None = None  # the template's text, inline
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
    delimiters: Delimiters | None = None  # None: Jinja2's own
    user: UserId | None = None  # the file's owner (only root, or CAP_CHOWN, can give a file away)
    group: GroupId | None = None

    def __post_init__(self) -> None:
        if (self.source is None) == (self.contents is None):
            raise ValueError("set exactly one of source (a template file) or contents (the template inline)"
                             + (", not both" if self.source is not None else ""))

    def located(self, config_path: Path, index: int) -> tuple[Path, Path]:
        """The folder its includes come from, and what messages call it: its file, or for inline
        `contents` the config file and the template's place in it."""
        if self.source is not None:
            return self.source.parent, self.source
        return config_path.parent, Path(f"{config_path}: templates[{index}].contents")


def check_templates(templates: tuple[TemplateConfig, ...], roots: dict[str, Path], config_path: Path,
                    written: dict[Path, str]) -> None:
    """What each template's settings cannot say alone: a missing source file, a destination shared,
    its own source or the config file, inside the root of a `files` source (name → its real root),
    a file a source writes (real path → its option: a Vault state file or token sink), or an owner
    this process cannot give files to."""
    seen: dict[Path, int] = {}
    for i, tpl in enumerate(templates):
        if tpl.source is not None and not tpl.source.is_file():
            report(FieldError(f"templates[{i}].source", f"template file not found: {tpl.source}"))
        dest = Path(os.path.realpath(tpl.destination))
        if dest in seen:
            report(FieldError(f"templates[{i}].destination",
                              f"{tpl.destination} is also the destination of templates[{seen[dest]}]"))
        seen[dest] = i
        if tpl.source is not None and dest == Path(os.path.realpath(tpl.source)):
            report(FieldError(f"templates[{i}].destination", "is the template's own source file"))
        if dest == Path(os.path.realpath(config_path)):
            report(FieldError(f"templates[{i}].destination", "is the config file itself"))
        if dest in written:  # each would replace the other's file: a token rendered over, or written out
            report(FieldError(f"templates[{i}].destination", f"{tpl.destination} is also {written[dest]}"))
        for key, problem in (("user", _user_problem(tpl.user)), ("group", _group_problem(tpl.group))):
            if problem:
                report(FieldError(f"templates[{i}].{key}", problem))
        for name, root in roots.items():
            if dest.is_relative_to(root):  # each write would be read back as a change: it feeds itself
                report(FieldError(f"templates[{i}].destination",
                                  f"{tpl.destination} is inside the root of source {name!r} ({root})"))


CAP_CHOWN = 0  # linux/capability.h


def can_chown() -> bool:
    """Whether this process may give a file to any user and group: root, or CAP_CHOWN (which a
    container may drop from root, or grant to another user)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> CAP_CHOWN & 1)
    except (OSError, ValueError, IndexError):
        pass
    return os.geteuid() == 0


def _user_problem(uid: int | None) -> str | None:
    """Checked when the config loads, so a sidecar that could never write its file does not start."""
    if uid is None or uid == os.geteuid() or can_chown():
        return None
    return (f"cannot give files to {_named(uid, 'user')}: confsync runs as uid {os.geteuid()} without CAP_CHOWN "
            "(root has it unless the container drops it); run it as root, or leave `user` out")


def _group_problem(gid: int | None) -> str | None:
    if gid is None or gid == os.getegid() or gid in os.getgroups() or can_chown():
        return None
    return (f"cannot give files to {_named(gid, 'group')}: confsync runs as uid {os.geteuid()} without CAP_CHOWN, "
            "and is not in that group")


def _named(number: int, kind: str) -> str:
    import grp
    import pwd

    try:
        name = pwd.getpwuid(number).pw_name if kind == "user" else grp.getgrgid(number).gr_name
    except KeyError:
        return f"{kind} id {number}"
    return f"{kind} {name!r} ({'uid' if kind == 'user' else 'gid'} {number})"
