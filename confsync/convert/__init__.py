"""`confsync convert`: a consul-template configuration and its templates → confsync's.

    config.py      consul-template's HCL/JSON config → confsync's config keys
    gotemplate.py  Go's text/template → a tree
    emit.py        the tree's statements and pipelines → Jinja2 that renders the same bytes
                   (values.py: what each value is; builtins.py: Go's functions; functions.py:
                   consul-template's; fields.py: .Field and index; printf.py: Go's verbs;
                   assemble.py: the text and Go's trimming as Jinja2's)
    report.py      what was converted, what was refused and where

A template with anything that cannot be translated exactly is not written: the others are, and
the conversion is reported as partial (exit code 1).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confsync.convert import config as ct_config
from confsync.convert.emit import convert_template, jinja_delimiters
from confsync.convert.report import Report, TemplateResult
from confsync.convert.values import unique


@dataclass
class _Names:
    used: set[str] = field(default_factory=set)

    def take(self, stem: str) -> str:
        return unique(re.sub(r"[^\w.-]", "_", stem) or "template", self.used, "-")


def convert(config_path: Path, out_dir: Path) -> Report:
    """Read, translate and write; raises ConfigError for a config that cannot be read at all."""
    converted = ct_config.convert(config_path, ct_config.read(config_path))
    report = Report(config_path, out_dir, notes=converted.notes, refused=converted.refused)
    names, reload_names = _Names(), _Names()
    reloaders: dict[str, dict[str, Any]] = {}
    templates: list[dict[str, Any]] = []
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[str] = []  # the Jinja2 text of every template written, to find the sources they call
    for spec in converted.templates:
        origin = str(spec.source) if spec.source else f"{config_path} template[{spec.index}] contents"
        text, refusals = convert_template(spec.contents, spec.left, spec.right)
        result = TemplateResult(origin, spec.destination, refusals, spec.notes)
        report.templates.append(result)
        if text is None:
            continue
        written.append(text)
        entry: dict[str, Any] = {}
        if spec.source is None:  # inline stays inline
            entry["contents"] = text
            result.written = f"confsync.yaml templates[{len(templates)}].contents"
        else:
            name = names.take(re.sub(r"\.(ctmpl|tmpl|tpl)$", "", spec.source.name)) + ".j2"
            (out_dir / "templates").mkdir(parents=True, exist_ok=True)
            (out_dir / "templates" / name).write_text(text, encoding="utf-8")
            entry["source"] = result.written = f"templates/{name}"
        entry["destination"] = spec.destination
        delimiters = jinja_delimiters(spec.left, spec.right)
        if delimiters is not None:
            entry["delimiters"] = {k: list(v) for k, v in dataclasses.asdict(delimiters).items()}
        entry.update(spec.options)
        if spec.command is not None:
            entry["reload"] = _reloader(spec, reloaders, reload_names)
        templates.append(entry)
    config: dict[str, Any] = {}
    used = "\n".join(written)
    sources = dict(converted.sources)
    for name in ("consul", "vault"):  # a source the templates call must be declared
        if f"{name}." in used and name not in sources:
            sources[name] = {"type": name}
    if sources:
        config["sources"] = sources
    config["templates"] = templates
    if reloaders:
        config["reloaders"] = reloaders
    config.update(converted.top)
    _write_yaml(out_dir / "confsync.yaml", config)
    report.write()
    return report


def _reloader(spec: ct_config.TemplateSpec, reloaders: dict[str, dict[str, Any]], names: _Names) -> str:
    for name, existing in reloaders.items():  # one reloader per distinct command: it fires once per batch
        if existing["command"] == spec.command and existing.get("timeout") == spec.command_timeout:
            return name
    words = spec.command if isinstance(spec.command, list) else (spec.command or "").split()
    name = names.take(re.sub(r"\W", "_", Path(words[0]).name) if words else "command")
    reloaders[name] = {"command": spec.command}
    if spec.command_timeout:
        reloaders[name]["timeout"] = spec.command_timeout
    return name


def _write_yaml(path: Path, config: dict[str, Any]) -> None:
    import yaml

    class Dumper(yaml.SafeDumper):
        """Text of several lines (an inline template) as a `|` block, as a person writes it; PyYAML
        falls back to a quoted string where a block cannot hold the text exactly."""

    def text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)

    Dumper.add_representer(str, text)
    header = "# Written by `confsync convert`; see convert-report.txt beside it.\n"
    path.write_text(header + yaml.dump(config, Dumper=Dumper, sort_keys=False, default_flow_style=False,
                                       allow_unicode=True), encoding="utf-8")
