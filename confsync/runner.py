"""The loop at the heart of every mode: values in, renders, atomic writes, coalesced reloads.

One asyncio loop owns all state, so nothing needs a lock. Sources push values into the store
(`update`, store.py); a value equal to the one known is dropped before anyone re-renders. A change
marks the templates that used it (and only those) due, once all they use has an answer, after
their `wait` quiescence; the worker renders the due templates, writes what changed, then fires
each affected reloader once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import difflib
import hashlib
import logging
import os
import sys
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

from confsync import reconfig, write
from confsync.config import Config
from confsync.errors import ConfigError, ConfsyncError, MissingDataError, TemplateError, WriteError
from confsync.reconfig import Plan
from confsync.reloading import Reloads, Written
from confsync.sources import Dep, Source, is_secret, source_class
from confsync.state import TemplateState
from confsync.store import Store

log = logging.getLogger(__name__)


class Runner:
    """Drives all templates of a config. `reloads=False` for init; `dry_run`/`diff` for once.

    `confsync exec` (supervise.py) adds `exec_env`, which receives each `exec.env` value as it renders
    (name, text: rendered like a template, never written), and `targets`, reload targets of its own
    beside the configured reloaders (`exec`: tell the app).
    """

    def __init__(self, config: Config, *, reloads: bool = True, dry_run: bool = False,
                 diff: Callable[[str], None] | None = None, force: bool = False,
                 exec_env: Callable[[str, str], None] | None = None,
                 targets: dict[str, Callable[[], Awaitable[str]]] | None = None,
                 deadline: float | None = None, pace_reloads: bool = True) -> None:
        self.config = config
        self.exec_env = exec_env
        self.targets = targets or {}
        self.deadline = deadline  # time.monotonic() by which once/init must be done, renders included
        self.reload_enabled = reloads
        self.dry_run = dry_run
        self.diff = diff
        self.force = force
        self.sources: dict[str, Source] = {}
        self.store = Store(self.sources)
        self.templates = reconfig.load_templates(self, config)
        self._due: set[TemplateState] = set(self.templates)
        self._kick = asyncio.Event()
        self._stopping = False
        self.settled = asyncio.Event()  # every template rendered, or one failed for good
        self.source_down: dict[str, str] = {}
        self.down_since: dict[str, float] = {}  # monotonic
        self.source_errors: dict[str, int] = defaultdict(int)
        self.reloaders = Reloads(config.reloaders, self.targets, config.wait.min, paced=pace_reloads,
                                 kick=self._kick.set, describe=self._describe_reload_error)
        self.reloads = self.reloaders.counts  # reloader → {"ok": n, "failed": n}, for /metrics
        self.worker: asyncio.Task[None] | None = None
        self.config_reloads = {"ok": 0, "failed": 0}
        self._plans: list[tuple[Plan, asyncio.Future[None]]] = []

    def fingerprint(self, states: list[TemplateState]) -> list[str]:
        return reconfig.fingerprint(states)

    # -- config reload (SIGHUP) -------------------------------------------------------------------

    def plan(self, config: Config) -> Plan:
        """Compile `config`'s templates and compare with the running config; raises what is wrong."""
        return reconfig.plan(self, config)

    async def reconfigure(self, plan: Plan) -> None:
        """Apply `plan` between two renders (the worker does it: no render sees half a config)."""
        done = asyncio.get_running_loop().create_future()
        self._plans.append((plan, done))
        self._kick.set()
        await done

    async def _apply(self, plan: Plan) -> None:
        started: dict[str, Source] = {}
        try:  # sources first: one that cannot start refuses the whole config
            for name, spec in plan.start.items():
                started[name] = source_class(spec.type)(name, spec.options, self)
                await started[name].start()
        except Exception as exc:
            for source in started.values():
                await source.close()
            raise ConfigError(f"sources.{name}: cannot start: {exc}") from None
        self.config = plan.config
        for new, prior in plan.fresh:
            if prior:  # hand its watches over: the new version most likely uses the same keys
                if prior.timer:
                    prior.timer.cancel()
                new.take_over(prior)
                for dep in prior.deps:
                    self.store.users[dep].discard(prior)
                    self.store.users[dep].add(new)
                new.deps = prior.deps
                self._due.discard(prior)
            self._due.add(new)
        for state in plan.removed:
            if state.timer:
                state.timer.cancel()
            self._due.discard(state)
            self.store.use(state, set())
        for name in plan.close:
            await self.sources.pop(name).close()
            self.source_down.pop(name, None)
        self.sources.update(started)
        for dep in self.store.users:
            if dep.source in started:
                started[dep.source].watch(dep)
        self.reloaders.reconfigure(plan.config.reloaders, plan.config.wait.min)
        self.templates = plan.templates
        self.config_reloads["ok"] += 1
        log.info("config reloaded from %s: %s", plan.config.path, ", ".join(plan.changes) or "nothing changed",
                 extra={"event": "config_reloaded", "changed": plan.changes})

    # -- the Sink the sources push into -------------------------------------------------------

    def update(self, dep: Dep, value: Any) -> None:
        for state in self.store.update(dep, value):
            self._mark_changed(state, dep)

    def source_status(self, source: str, up: bool, reason: str = "") -> None:
        if not up and self.source_down.get(source) != reason:
            if source not in self.source_down:  # an outage, not a change of its reason (issue 18)
                self.source_errors[source] += 1
                self.down_since[source] = time.monotonic()
            log.warning("source %s unavailable: %s (keeping last known values)", source, reason,
                        extra={"event": "source_down", "source": source})
            self.source_down[source] = reason
        elif up and source in self.source_down:
            log.info("source %s available again", source, extra={"event": "source_up", "source": source})
            del self.source_down[source]

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        if not self.dry_run:
            for state in self.templates:
                for path in write.sweep_stale(state.cfg.destination):
                    log.info("removed %s, left by an interrupted write", path,
                             extra={"event": "stale_temp_removed", "template": state.name})
        for name, spec in self.config.sources.items():
            source = source_class(spec.type)(name, spec.options, self)
            self.sources[name] = source
            try:
                await source.start()
            except ValueError as exc:  # options it cannot use, such as a key file it cannot read
                raise ConfigError(f"sources.{name}: cannot start: {exc}") from None
        self._kick.set()

    async def work(self) -> None:
        """Render what is due until `stop()`; the write in flight always completes."""
        while not self._stopping:
            await self._kick.wait()
            self._kick.clear()
            while self._plans:
                plan, done = self._plans.pop(0)
                try:
                    await self._apply(plan)
                except ConfsyncError as exc:
                    done.set_exception(exc)
                else:
                    done.set_result(None)
            due = sorted(self._due, key=lambda s: s.index)
            self._due.clear()
            for state in due:
                # Past once/init's --timeout no render starts: its template is reported as not
                # rendered in time (exit 3), never as a template that took too long.
                if self._stopping or (self.deadline is not None and time.monotonic() >= self.deadline):
                    self._due.add(state)
                    continue
                change = await self._render(state)
                if change and self.reload_enabled:
                    # `exec` outside `confsync exec`: there is no app of ours to tell.
                    written = Written(state.name, self._target(state), change, state.cfg.rollback)
                    for name in (n for n in state.cfg.reload if n in self.reloads):
                        self.reloaders.add(name, written)
            if (all(s.rendered for s in self.templates) and not self.reloaders.pending) \
                    or any(_fatal(s.error) for s in self.templates):
                self.settled.set()

    def stop(self) -> None:
        self._stopping = True
        self._kick.set()

    async def close(self, final: bool = False) -> None:
        """`final`: the process stops for good (`run`, `exec`), not to hand over to a next one
        (`init`, `once`): a source may then give back what it holds (Vault's revoke_on_shutdown)."""
        for state in self.templates:
            if state.timer:
                state.timer.cancel()
        await self.reloaders.close()
        for source in self.sources.values():
            if final and hasattr(source, "shutdown"):
                await source.shutdown()
            await source.close()

    # -- rendering ------------------------------------------------------------------------------

    def _mark_changed(self, state: TemplateState, dep: Dep) -> None:
        state.changed.add(dep)
        if state.changed_at is None:
            state.changed_at = time.monotonic()
        if self.store.unanswered(state):
            return  # the last answer to come marks it: one render with all, not one at each answer
        wait = state.cfg.wait or self.config.wait
        if not state.rendered or not wait.max:
            self._make_due(state)
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        if state.wait_since is None:
            state.wait_since = now
        if state.timer:
            state.timer.cancel()
        state.timer = loop.call_at(min(now + wait.min, state.wait_since + wait.max), self._make_due, state)

    def _make_due(self, state: TemplateState) -> None:
        if state.timer:
            state.timer.cancel()
        state.timer, state.wait_since = None, None
        self._due.add(state)
        self._kick.set()

    async def _render(self, state: TemplateState) -> write.Change | None:
        """Render one template and write it; what changed on disk, if anything."""
        started = time.monotonic()
        result = state.template.render(self.store.values.get, self.config.render, self.deadline)
        state.render_time.add(time.monotonic() - started)
        # After an error keep watching what the last good render used too: either may fix it.
        self.store.use(state, result.used | state.deps if result.error else result.used)
        state.missing = result.missing
        if result.error:
            state.changed = set()
            self._failed(state, result.error, "template")
            return None
        self.store.note_unreadable(state)
        if result.text is None:
            log.debug("%s waits for %s", state.name, ", ".join(map(str, result.missing)),
                      extra={"event": "waiting", "template": state.name})
            return None
        changed, state.changed = state.changed, set()
        state.renders += 1
        if callable(state.target):  # an `exec.env` value: to the supervisor, never to disk or a diff
            state.rendered, state.error, state.last_success = True, None, time.time()
            state.target(result.text)
            return None
        data = result.text.encode("utf-8")
        log.debug("rendered %s", state.name, extra={"event": "rendered", "template": state.name,
                                                    "changed": sorted(map(str, changed))})
        target = self._target(state)
        started = time.monotonic()
        try:
            if self.diff:
                self.diff(_unified_diff(target, data))
            written = await write.write(target, data, dry_run=self.dry_run)
        except write.RefusedError as exc:
            self._failed(state, exc, "refused")
            return None
        except WriteError as exc:
            self._failed(state, exc, "write")
            return None
        if self.dry_run:
            state.rendered, state.error, state.error_since = True, None, None
            return None
        now = time.monotonic()
        state.write_time.add(now - started)
        if state.changed_at is not None:
            state.propagation.add(now - state.changed_at)
            state.changed_at = None
        first, state.rendered, state.error, state.error_since = not state.rendered, True, None, None
        state.last_success = time.time()
        if written:
            digest = hashlib.sha256(data).hexdigest()
            why = ("created" if written.previous is None else "changed: the file on disk differed" if first
                   else "changed: " + ", ".join(sorted(map(str, changed))))
            log.info("wrote %s (%d bytes, sha256 %s; %s)", state.name, len(data), digest[:12], why,
                     extra={"event": "written", "template": state.name, "bytes": len(data),
                            "sha256": digest, "changed": sorted(map(str, changed))})
        return written

    def _failed(self, state: TemplateState, error: ConfsyncError, kind: str) -> None:
        error = type(error)(self.safe_message(error, self._is_secret(state)))
        state.error = error
        if state.error_since is None:
            state.error_since = time.monotonic()
        state.failures[kind] += 1
        log.error("%s not written: %s", state.name, error, extra={"event": "render_failed",
                                                                 "template": state.name, "reason": kind})

    def _is_secret(self, state: TemplateState) -> bool:
        return any(is_secret(self.sources[d.source], d) for d in state.deps)

    def _target(self, state: TemplateState) -> write.Target:
        """Templates that used a secret get 0600 files and private backups unless perms say so."""
        assert isinstance(state.target, write.Target)  # `exec.env` values never get this far
        return dataclasses.replace(state.target, secret=True) if self._is_secret(state) else state.target

    def _describe_reload_error(self, reloader: str, error: ConfsyncError) -> str:
        return self.safe_message(error, any(self._is_secret(s) for s in self.templates if reloader in s.cfg.reload))

    def safe_message(self, error: ConfsyncError, secret: bool) -> str:
        """What may be told of an error (issue 10). For a secret-bearing template or reloader: what
        failed and where, without the detail taken from data or a command's output, since no
        redaction finds a secret that was transformed (`|upper`, b64encode, a slice) or is short.
        For others: all of it, with every value a secret source gave cut out."""
        if secret:
            return error.message + (" (details withheld: it uses secrets)" if error.detail else "")
        text = str(error)
        for dep, value in self.store.values.items():
            if is_secret(self.sources.get(dep.source), dep):
                for secret_text in _strings(value):
                    if secret_text:
                        text = text.replace(secret_text, "<redacted>")
        return text

    # -- reports --------------------------------------------------------------------------------

    def dump(self, signum: int = 0) -> None:
        """SIGUSR1: one log line per template and source, saying where each stands (never a value)."""
        for state in self.templates:
            status = ("failing: " + str(state.error) if state.error else "rendered" if state.rendered
                      else "waiting for " + ", ".join(sorted(map(str, self.store.pending(state)))))
            log.info("state: %s ← %s: %s; %d dependencies, %d renders", state.name, state.template.path, status,
                     len(state.deps), state.renders, extra={"event": "state", "template": state.name})
        for name in self.sources:
            down = self.source_down.get(name)
            watched = sum(1 for dep in self.store.users if dep.source == name)
            log.info("state: source %s: %s; %d dependencies watched", name, f"unavailable: {down}" if down
                     else "available", watched, extra={"event": "state", "source": name})
        for name, counts in self.reloads.items():
            log.info("state: reloader %s: %d delivered, %d failed", name, counts["ok"], counts["failed"],
                     extra={"event": "state", "reloader": name})

    def waiting(self) -> dict[str, dict[str, str]]:
        """Templates not rendered yet, or whose watched values cannot be read → the dependencies
        each waits for, and why."""
        return {s.name: {str(dep): why for dep, why in self.store.pending(s).items()}
                for s in self.templates if not s.rendered or s.unreadable}

    def stale(self) -> dict[str, tuple[float, dict[str, str]]]:
        """Rendered templates that cannot get fresh data: for how many seconds, and why (issue 18).
        A value that cannot be read, a source down, or a render or write that fails."""
        now = time.monotonic()
        found = {}
        for state in self.templates:
            if not state.rendered:
                continue  # waiting(): not ready anyway
            why: dict[str, str] = {}
            since: list[float] = []
            for dep in state.deps:
                if dep in state.unreadable:
                    why[str(dep)] = state.unreadable[dep]
                    since.append(self.store.unreadable.get(dep, ("", now))[1])
                elif dep.source in self.source_down:
                    why[f"source {dep.source}"] = f"unavailable: {self.source_down[dep.source]}"
                    since.append(self.down_since.get(dep.source, now))
            if state.error is not None:
                why["render"] = str(state.error)
                since.append(state.error_since or now)
            if why:
                found[state.name] = (now - min(since), why)
        return found

    def first_error(self) -> ConfsyncError | None:
        return next((s.error for s in self.templates if s.error), None)

    def missing_report(self, timeout: float) -> MissingDataError:
        lines = [f"data still missing after {timeout:g}s:"]
        for state in self.templates:
            if state.rendered:
                continue
            pending = self.store.pending(state)
            if not pending:
                lines.append(f"  {state.template.path} → {state.name}: not rendered before the timeout")
            for dep, why in sorted(pending.items(), key=lambda i: str(i[0])):
                down = self.source_down.get(dep.source)
                lines.append(f"  source {dep.source}: {dep} {why}" + (f" (source unavailable: {down})"
                                                                      if down else "")
                             + f" — needed by {state.template.path} → {state.name}")
        return MissingDataError("\n".join(lines))


def _fatal(error: ConfsyncError | None) -> bool:
    return isinstance(error, TemplateError | WriteError)


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list | tuple):
        return [s for v in value for s in _strings(v)]
    return []


def _unified_diff(target: write.Target, new: bytes) -> str:
    old = write.current(target.destination) or b""
    name = str(target.destination)
    if old == new:
        return ""
    if target.secret:
        return f"--- {name} (on disk)\n+++ {name} (rendered)\n<redacted: the file holds secrets>\n"
    return "".join(difflib.unified_diff(
        old.decode("utf-8", "replace").splitlines(keepends=True),
        new.decode("utf-8", "replace").splitlines(keepends=True),
        fromfile=f"{name} (on disk)", tofile=f"{name} (rendered)",
    ))


def print_to_stdout(text: str) -> None:
    """`once --diff | head -1`: once the reader has gone (EPIPE), the rest of the diff goes nowhere,
    and the run goes on to write its files, as it does without the pipe."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # what Python's docs advise: the buffer's flush at exit goes there
        os.close(devnull)
