"""Values computed from the mirror of watched znodes: a key's text, an ls, a whole tree."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from confsync.sources import ABSENT, Dep, Missing

DATA = "data"  # a znode's data, as opposed to its children: the two halves of the mirror


def value_of(dep: Dep, data_of: Mapping[str, bytes | Missing],
             children_of: Mapping[str, frozenset[str] | Missing]) -> Any:
    """`dep`'s value from the mirror; None while a part of it is still unknown."""
    if dep.kind == "key":
        return text_of(data_of.get(dep.path))
    children = children_of.get(dep.path)
    if children is None or isinstance(children, Missing):
        return children if children is not ABSENT else ([] if dep.kind == "ls" else {})
    if dep.kind == "ls":
        return sorted(children)
    return walk(data_of, children_of, dep.path, children)


def walk(data_of: Mapping[str, bytes | Missing], children_of: Mapping[str, frozenset[str] | Missing],
         top: str, children: frozenset[str]) -> dict[str, str] | Missing | None:
    """The znodes under `top` by path relative to it; a Missing if one of them cannot be had, None
    while one is still unknown.

    A znode is an entry when it has no children or when its data is not empty: a znode
    that only holds others (the usual "directory", made by `create -p`) is not. Depth first in
    name order, with a stack of our own: a tree may be deeper than Python's recursion (issue 18).
    """
    cut = len(top) + 1 if top else 0
    into: dict[str, str] = {}
    stack = [join(top, name) for name in sorted(children, reverse=True)]
    while stack:
        child = stack.pop()
        data, below = data_of.get(child), children_of.get(child)
        if data is None or below is None:
            return None
        if data is ABSENT or below is ABSENT:
            continue  # deleted just now; its parent's change is on its way
        for part in (data, below):
            if isinstance(part, Missing):
                return Missing(f"cannot read znode {child[cut:]!r} of the tree: {part.reason}")
        assert isinstance(data, bytes) and isinstance(below, frozenset)
        if data or not below:
            text = text_of(data)
            if isinstance(text, Missing):
                return Missing(f"znode {child[cut:]!r} of the tree: {text.reason}")
            into[child[cut:]] = text
        stack.extend(join(child, name) for name in sorted(below, reverse=True))
    return into


def text_of(data: bytes | Missing | None) -> Any:
    if not isinstance(data, bytes):
        return data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Missing(f"znode data is not UTF-8 text ({exc.reason} at byte {exc.start})")


def why(error: BaseException) -> Missing:
    name = type(error).__name__
    if name == "NoAuthError":
        return Missing("permission denied by the znode's ACL (check auth)")
    return Missing(f"ZooKeeper error {name}")


def join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


def stamp(stat: Any, aspect: str) -> tuple[int, int]:
    """What changes when the aspect or the ACL of a znode does."""
    return (stat.mzxid if aspect == DATA else stat.cversion), stat.aversion


def under(path: str, tops: set[str]) -> bool:
    """`path` is one of `tops` or below one (ancestors looked up: linear in the depth, not in `tops`)."""
    while True:
        if path in tops:
            return True
        if not path:
            return False
        path = path.rpartition("/")[0]
