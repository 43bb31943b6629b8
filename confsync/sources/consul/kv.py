"""The one KV poll: which prefix it reads, and each KV dependency's value derived from its reply."""

from __future__ import annotations

import bisect
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from confsync.sources import ABSENT, Dep, Missing

KV_KINDS = ("key", "tree", "ls")


@dataclass(frozen=True)
class Snapshot:
    """One recursive KV read: every key under the polled prefix, sorted, and its raw value."""

    keys: list[str]
    values: dict[str, bytes | None]

    def under(self, prefix: str) -> Iterator[str]:
        """The keys starting with `prefix`, in order."""
        for key in self.keys[bisect.bisect_left(self.keys, prefix):]:
            if not key.startswith(prefix):
                return
            yield key


def derive(dep: Dep, view: Snapshot) -> Any:
    """A KV dependency's value from the KV poll's snapshot: the str / dict / list templates get
    (or a Missing), exactly as a read of that key or prefix alone would give."""
    if dep.kind == "key":
        return _text(view.values[dep.path], dep.path) if dep.path in view.values else ABSENT
    prefix = _prefix(dep.path)
    if dep.kind == "tree":
        tree = {}
        for key in view.under(prefix):
            rel = key[len(prefix):]
            if rel and not rel.endswith("/"):  # "dir/" keys are folder markers, not values
                text = _text(view.values[key], key)
                if isinstance(text, Missing):
                    return text
                tree[rel] = text
        return tree
    # ls: the immediate children, as `?keys&separator=/` lists them ("dir/" → "dir")
    return sorted({key[len(prefix):].split("/", 1)[0] for key in view.under(prefix)} - {""})


def need(dep: Dep) -> str:
    """What a KV dependency reads: a key, or every key under a folder."""
    return dep.path if dep.kind == "key" else _prefix(dep.path)


def poll_prefix(needs: Iterable[str]) -> str:
    """The prefix a KV poll reads for the paths of one top-level folder: the longest one common to
    all, cut back to a "/" boundary (so that the next key in the same folder does not widen it);
    when that leaves nothing, the folder's name itself ("apps" covers the key "apps" and "apps/…")."""
    needs = list(needs)
    common = os.path.commonprefix(needs)
    return common[:common.rfind("/") + 1] or common.split("/", 1)[0]


def _text(value: bytes | None, key: str) -> str | Missing:
    if value is None:
        return ""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Missing(f"value of {key!r} is not UTF-8 text ({exc.reason} at byte {exc.start})")


def _prefix(path: str) -> str:
    return f"{path}/" if path else ""
