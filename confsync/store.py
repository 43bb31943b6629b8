"""The store of last-known values, and which template uses which (consul-template's "brain").

What a render asks for is exactly what gets watched: `use` starts a watch on a dependency's first
user and ends it with its last. A template renders once every dependency it is known to use has
an answer, not again at each answer: its first pass discovers what it uses, the sources fetch all
of it together, and the next pass renders it once (issue 16).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from typing import Any

from confsync.render import WAITING
from confsync.sources import ABSENT, Dep, Missing, Source
from confsync.state import TemplateState

log = logging.getLogger(__name__)

class Store:
    def __init__(self, sources: dict[str, Source]) -> None:
        self.sources = sources  # the runner's: it adds and removes sources
        self.values: dict[Dep, Any] = {}
        self.users: dict[Dep, set[TemplateState]] = defaultdict(set)
        # Values templates need and cannot have (issue 18): dep → (why, monotonic time since).
        self.unreadable: dict[Dep, tuple[str, float]] = {}

    def update(self, dep: Dep, value: Any) -> set[TemplateState]:
        """Record `dep`'s value; the templates whose input changed (none for a repeat, or a
        dependency no longer watched)."""
        if dep not in self.users or (dep in self.values and self.values[dep] == value):
            return set()
        self.values[dep] = value
        if not isinstance(value, Missing) and dep in self.unreadable:
            del self.unreadable[dep]
            log.info("%s can be read again", dep, extra={"event": "readable", "source": dep.source, "key": str(dep)})
        return self.users[dep]

    def use(self, state: TemplateState, used: set[Dep]) -> None:
        """`state` now uses `used`: watch what is new to everyone, unwatch what no one uses."""
        for dep in used - state.deps:
            users = self.users[dep]
            users.add(state)
            if len(users) == 1:
                self.sources[dep.source].watch(dep)
        for dep in state.deps - used:
            users = self.users[dep]
            users.discard(state)
            if not users:
                del self.users[dep]
                self.values.pop(dep, None)
                self.unreadable.pop(dep, None)
                if dep.source in self.sources:  # else removed by a config reload
                    self.sources[dep.source].unwatch(dep)
        state.deps = used

    def unanswered(self, state: TemplateState) -> list[Dep]:
        """What `state` uses that its source has not answered yet: it renders when this is empty."""
        return [dep for dep in state.deps if dep not in self.values]

    def pending(self, state: TemplateState) -> dict[Dep, str]:
        """What `state` waits for, and why: the answers still to come, else what its last render
        found missing (which only a render can tell: a `default=` stands in for a value that does
        not exist)."""
        return dict.fromkeys(self.unanswered(state), WAITING) or state.missing

    def note_unreadable(self, state: TemplateState) -> None:
        """After a render: a value it needs that exists but cannot be read (not UTF-8, a permission,
        a read error), or that was deleted after the template rendered, is a warning (once per
        value and reason), a failure count and not-ready, never a quiet wait (issue 10 item 13,
        issue 18). A key absent from the start is only waited for: `init` exists for that."""
        found = {}
        for dep, why in state.missing.items():
            value = self.values.get(dep)
            if not isinstance(value, Missing) or (value == ABSENT and not state.rendered):
                continue
            found[dep] = why
            known = self.unreadable.get(dep)
            if known is None or known[0] != why:
                log.warning("%s cannot be read: %s (templates using it wait; their files keep their last "
                            "content)", dep, why, extra={"event": "unreadable", "template": state.name,
                                                         "source": dep.source, "key": str(dep)})
            self.unreadable[dep] = (why, known[1] if known else time.monotonic())
        if found:
            state.failures["unreadable"] += 1
        state.unreadable = found
