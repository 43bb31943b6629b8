"""Values computed from the mirror of watched znodes: a key's text, an ls, a whole tree."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from confsync.sources import ABSENT, Dep, Missing


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
    tree: dict[str, str] = {}
    problem = walk(data_of, children_of, dep.path, len(dep.path) + 1 if dep.path else 0, children, tree)
    if problem is INCOMPLETE:
        return None
    return tree if problem is None else problem

def walk(data_of: Mapping[str, bytes | Missing], children_of: Mapping[str, frozenset[str] | Missing],
         path: str, cut: int, children: frozenset[str], into: dict[str, str]) -> Missing | None:
    """Fill `into` from the znodes under `path`; a Missing if one of them cannot be had.

    A znode is an entry when it has no children or when its data is not empty: a znode
    that only holds others (the usual "directory", made by `create -p`) is not.
    """
    for name in sorted(children):
        child = join(path, name)
        data, below = data_of.get(child), children_of.get(child)
        if data is None or below is None:
            return INCOMPLETE
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
        problem = walk(data_of, children_of, child, cut, below, into)
        if problem is not None:
            return problem
    return None


INCOMPLETE = Missing("(still being read)")  # internal: the tree is not complete yet


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
