"""A config reload (SIGHUP), worked out before it is applied: the new config's templates compiled
and checked, and what differs from the running one. The runner applies it between two renders."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from confsync import lint, write
from confsync.config import Config, SourceConfig, TemplateConfig
from confsync.errors import TemplateError
from confsync.render import Template, environments
from confsync.sources import source_class
from confsync.state import TemplateState

if TYPE_CHECKING:
    from confsync.runner import Runner


@dataclass
class Plan:
    """A new config checked and compiled, and how it differs from the running one."""

    config: Config
    templates: list[TemplateState]  # in the new config's order; unchanged ones are the running states
    fresh: list[tuple[TemplateState, TemplateState | None]]  # new or changed, and the state each replaces
    removed: list[TemplateState]
    start: dict[str, SourceConfig]  # sources added or changed
    close: set[str]  # sources removed or changed
    changes: list[str]  # what an operator reads in the log: "+template out/b.conf", "~source kv"…


def load_templates(runner: Runner, config: Config) -> list[TemplateState]:
    """`config`'s templates compiled, and `confsync exec`'s `exec.env` values as templates too."""
    functions = {name: source_class(s.type).functions for name, s in config.sources.items()}
    env_for = environments(frozenset(config.env_allow) if config.env_allow is not None else None)
    states = []
    for i, cfg in enumerate(config.templates):
        folder, path = cfg.located(config.path, i)
        target = write.Target(
            cfg.destination, cfg.perms, cfg.create_dirs, cfg.backup, cfg.check, min_bytes=cfg.min_bytes,
            max_shrink=cfg.max_shrink, allow_shrink=cfg.allow_shrink or runner.force, format=cfg.format,
            allowed_roots=cfg.allowed_roots, user=cfg.user, group=cfg.group)
        template = Template(env_for(folder, cfg.delimiters), path, functions, cfg.contents)
        states.append(TemplateState(i, cfg, template, target))
    if sink := runner.exec_env:
        env = env_for(config.path.parent, None)
        for name, text in config.exec.env.items():
            label = f"exec.env.{name}"  # how logs, errors and /metrics call it: never by its value
            cfg = TemplateConfig(contents=text, destination=Path(label))
            template = Template(env, Path(label), functions, text)
            states.append(TemplateState(len(states), cfg, template, functools.partial(sink, name)))
    return states


def fingerprint(states: list[TemplateState]) -> list[str]:
    """Remember what each template's text is, so that a config reload can tell what changed;
    returns the problems found on the way (a missing include, an undefined name)."""
    problems = []
    for state in states:
        env = state.template.compiled.environment
        walk = lint.walk(env, state.template.name, state.template.functions)
        state.fingerprint = walk.fingerprint()
        problems += walk.problems
    return problems


def plan(runner: Runner, config: Config) -> Plan:
    """Compile `config`'s templates and compare with the running config; raises what is wrong."""
    old = runner.config
    states = load_templates(runner, config)
    problems = fingerprint(states)
    if problems:
        raise TemplateError("; ".join(problems))
    start = {n: s for n, s in config.sources.items() if old.sources.get(n) != s}
    close = {n for n, s in old.sources.items() if config.sources.get(n) != s}
    retyped = {n for n in start if n in old.sources and old.sources[n].type != start[n].type}
    running = {s.name: s for s in runner.templates}
    result = Plan(config, [], [], [], start, close, [])
    for new in states:
        prior = running.pop(new.name, None)
        if prior and prior.cfg == new.cfg and prior.fingerprint == new.fingerprint \
                and config.env_allow == old.env_allow and not any(d.source in retyped for d in prior.deps):
            prior.index, prior.template = new.index, new.template  # same text, the new sources' names
            result.templates.append(prior)
            continue
        result.templates.append(new)
        result.fresh.append((new, prior))
        result.changes.append(f"{'~' if prior else '+'}template {new.name}")
    result.removed = list(running.values())
    result.changes += [f"-template {s.name}" for s in result.removed]
    result.changes += [f"{'~' if n in old.sources else '+'}source {n}" for n in start]
    result.changes += [f"-source {n}" for n in close - set(start)]
    if config.exec != old.exec:
        result.changes.append("~exec")
    for name in sorted(set(old.reloaders) | set(config.reloaders)):
        before, after = old.reloaders.get(name), config.reloaders.get(name)
        if before != after:
            result.changes.append(f"{'+' if before is None else '-' if after is None else '~'}reloader {name}")
    return result
