"""Reading keys of the `files` source: whatever lies in the directory, never loop, hang or leave it.

The symlink policy (issue 10, items 2 and 11): a symlink is followed only when its target, fully
resolved, is inside the root (a ConfigMap volume is a farm of such links into `..data`); one that
leads out of it — `/dev/zero`, `/etc/shadow`, the service account token — is an error naming the key.
Only regular files are opened, never FIFOs, sockets or devices (stat first, then `O_NONBLOCK`, then
fstat again), and at most `MAX_VALUE` bytes are read. A tree walk never enters a directory that is
one of its own ancestors (`a -> .`), and stops at `MAX_TREE_FILES` files. Key names must be UTF-8
without control characters, as a template's own key() argument must be.

A tree is all or nothing: one entry that cannot be read makes the whole tree unavailable, with a
reason naming the entry, as one unreadable key keeps its template from rendering.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from confsync.sources import ABSENT, Dep, Missing

MAX_VALUE = 16 * 1024 * 1024  # bytes of one key, or of a whole tree
MAX_TREE_FILES = 10_000


class _Refused(Exception):
    """A key (or tree entry) confsync will not read: the message says why, naming it."""


def read(root: Path, dep: Dep) -> Any:
    """The value of `dep` under `root` now: str for key, dict for tree, list for ls, or a Missing."""
    problem = bad_key(dep.path)
    if problem:
        return Missing(f"invalid key {dep.path!r}: {problem}")
    try:
        real_root = os.path.realpath(root)
        if dep.kind == "key":
            return _text(_resolve(real_root, dep.path, ""), "")
        if dep.kind == "tree":
            return _tree(real_root, dep.path)
        if dep.kind == "ls":
            return _ls(real_root, dep.path)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return ABSENT if dep.kind == "key" else ({} if dep.kind == "tree" else [])
    except _Refused as exc:
        return Missing(str(exc))
    except OSError as exc:
        return Missing(f"cannot read: {exc.strerror or exc}")
    return Missing(f"the files source has no {dep.kind}()")


def bad_key(key: str) -> str | None:
    """Why `key` (a template's argument, or a name found on disk) cannot be a key; None if it can."""
    if not key:
        return None
    if not _is_utf8(key):
        return "is not UTF-8"
    if any(ord(c) < 32 or c == "\x7f" for c in key):
        return "contains a control character"
    if any(part in ("", ".", "..") or part.startswith("..") for part in key.split("/")):
        return "path parts may not be empty, '.', '..' or start with '..'"
    return None


def _is_utf8(text: str) -> bool:
    # Names read from disk that are not UTF-8 arrive as lone surrogates (PEP 383): they cannot be
    # encoded, so a template that printed one would fail at the write (issue 10, item 1).
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _resolve(real_root: str, rel: str, label: str) -> str:
    """The real path of `rel`, which must stay inside the root however its symlinks point.

    `label` starts the messages: "" for the dependency's own path, "'a/b' " for an entry of a tree.
    """
    real = os.path.realpath(os.path.join(real_root, rel)) if rel else real_root
    if not inside(real_root, real):
        raise _Refused(f"{label}leads out of the root through a symlink; refused")
    return real


def inside(real_root: str, real: str) -> bool:
    return real == real_root or real.startswith(real_root.rstrip("/") + "/")


def _text(real: str, label: str) -> str:
    st = os.stat(real)
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(real)
    if not stat.S_ISREG(st.st_mode):
        raise _Refused(f"{label}is not a regular file (a FIFO, socket or device is never opened)")
    if st.st_size > MAX_VALUE:
        raise _Refused(f"{label}is larger than {MAX_VALUE // 2**20} MiB")
    # O_NONBLOCK: should a FIFO replace the file after the stat, opening it does not wait for a writer.
    fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _Refused(f"{label}is not a regular file (a FIFO, socket or device is never opened)")
        chunks, size = [], 0
        while size <= MAX_VALUE:
            chunk = os.read(fd, min(1 << 20, MAX_VALUE + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    if size > MAX_VALUE:
        raise _Refused(f"{label}is larger than {MAX_VALUE // 2**20} MiB")
    try:
        return b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Refused(f"{label}value is not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _names(real_dir: str, under: str) -> list[str]:
    """The entries of a directory that are keys (not the kubelet's `..` ones), checked, sorted."""
    names = []
    for name in os.listdir(real_dir):
        if name.startswith(".."):
            continue
        problem = bad_key(name)
        if problem:
            raise _Refused(f"an entry of {under!r} has a name that {problem}: {name!r}")
        names.append(name)
    return sorted(names)


def _ls(real_root: str, prefix: str) -> list[str]:
    return _names(_resolve(real_root, prefix, ""), prefix)


def _tree(real_root: str, prefix: str) -> dict[str, str]:
    top = _resolve(real_root, prefix, "")
    if not os.path.isdir(top):
        raise NotADirectoryError(top)
    found: dict[str, str] = {}
    size = 0
    # (real directory, its key relative to the prefix, the (dev, inode) of it and its ancestors)
    pending: list[tuple[str, str, frozenset[tuple[int, int]]]] = [(top, "", frozenset([_ident(top)]))]
    while pending:
        real_dir, rel_dir, ancestors = pending.pop()
        for name in _names(real_dir, f"{prefix}/{rel_dir}".strip("/")):
            rel = f"{rel_dir}/{name}" if rel_dir else name
            key = f"{prefix}/{rel}" if prefix else rel
            label = f"{key!r} "
            real = _resolve(real_root, key, label)
            try:
                st = os.stat(real)
            except FileNotFoundError:
                continue  # removed since the listing
            if stat.S_ISDIR(st.st_mode):
                ident = (st.st_dev, st.st_ino)
                if ident in ancestors:
                    raise _Refused(f"{label}is a symlink loop (it leads back to a directory above it)")
                pending.append((real, rel, ancestors | {ident}))
                continue
            found[rel] = _text(real, label)
            size += len(found[rel])
            if len(found) > MAX_TREE_FILES or size > MAX_VALUE:
                raise _Refused(f"more than {MAX_TREE_FILES} files or {MAX_VALUE // 2**20} MiB under "
                               f"{prefix!r}; refused")
    return dict(sorted(found.items()))


def _ident(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino
