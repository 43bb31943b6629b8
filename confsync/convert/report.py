"""The conversion's report: each template converted or refused (file:line:column: reason), and
each setting mapped, remarked on or refused. Written beside confsync.yaml and printed."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from confsync.convert.values import Refusal


@dataclass
class TemplateResult:
    origin: str  # the Go template's file (or the config's inline contents)
    destination: str
    refusals: list[Refusal]
    notes: list[str]
    written: str | None = None  # the Jinja2 file, relative to the output directory


@dataclass
class Report:
    config: Path
    out_dir: Path
    notes: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    templates: list[TemplateResult] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.refused and all(t.written for t in self.templates)

    def lines(self) -> list[str]:
        state = "complete" if self.complete else "PARTIAL: what is listed as refused was not converted"
        out = [f"confsync convert {self.config} → {self.out_dir}", f"conversion: {state}", ""]
        for t in self.templates:
            if t.written:
                out.append(f"converted {t.origin} → {t.written} (destination {t.destination})")
            else:
                out.append(f"REFUSED {t.origin} (destination {t.destination}): not written")
                out.extend(f"  {t.origin}:{r.pos.line}:{r.pos.col}: {r.reason}" for r in t.refusals)
            out.extend(f"  note: {n}" for n in t.notes)
        if self.refused:
            out += ["", "settings refused:"] + [f"  {r}" for r in self.refused]
        if self.notes:
            out += ["", "notes:"] + [f"  {n}" for n in self.notes]
        return out

    def write(self) -> None:
        (self.out_dir / "convert-report.txt").write_text("\n".join(self.lines()) + "\n", encoding="utf-8")
