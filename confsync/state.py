"""What the runner knows of each template: its compiled text, what it uses, how it last went."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from confsync import write
from confsync.config import TemplateConfig
from confsync.errors import ConfsyncError
from confsync.render import Template
from confsync.sources import Dep


@dataclass
class Timing:
    """A Prometheus summary without quantiles: how many, and how long in all."""

    count: int = 0
    total: float = 0.0

    def add(self, seconds: float) -> None:
        self.count += 1
        self.total += seconds


@dataclass(eq=False)
class TemplateState:
    index: int
    cfg: TemplateConfig
    template: Template
    target: write.Target | Callable[[str], None]  # a file, or where an `exec.env` value's text goes
    deps: set[Dep] = field(default_factory=set)
    missing: dict[Dep, str] = field(default_factory=dict)  # as the last render found them
    unreadable: dict[Dep, str] = field(default_factory=dict)  # missing because a read failed, not "not yet"
    changed: set[Dep] = field(default_factory=set)
    rendered: bool = False  # rendered completely at least once
    error: ConfsyncError | None = None
    error_since: float | None = None  # monotonic time of the first failure since the last success
    wait_since: float | None = None
    timer: asyncio.TimerHandle | None = None
    # For /metrics (render_time.count: every render pass, including those that find data missing):
    renders: int = 0
    failures: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # by kind of failure
    render_time: Timing = field(default_factory=Timing)
    write_time: Timing = field(default_factory=Timing)
    propagation: Timing = field(default_factory=Timing)  # change seen → file written
    changed_at: float | None = None  # monotonic time of the oldest change not yet written
    last_success: float | None = None  # wall-clock time of the last render that reached the disk
    fingerprint: str = ""  # the text of the template and all it includes, set where configs reload

    @property
    def name(self) -> str:
        return str(self.cfg.destination)

    def take_over(self, old: TemplateState) -> None:
        """A config reload changed this template: keep its counters (Prometheus counters only grow)."""
        self.renders, self.failures = old.renders, old.failures
        self.render_time, self.write_time, self.propagation = old.render_time, old.write_time, old.propagation
        self.last_success = old.last_success
