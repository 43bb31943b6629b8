"""A confsync project on disk (config, templates, destinations) and confsync as a real process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.backends import ROOT, Backend

PYTHON = sys.executable  # what confsync runs under (python -m bench --python changes it)


def key(template: int, index: int) -> str:
    return f"bench/t{template:04d}/k{index}"


def expected(values: dict[str, str], template: int, keys: int) -> str:
    """The text template `template` renders to for these values."""
    return "".join(f"k{i}={values[key(template, i)]}\n" for i in range(keys))


@dataclass
class Project:
    """`templates` templates, template j reading keys bench/tJJJJ/k0..k{keys-1} of source `src`."""

    directory: Path
    backend: Backend
    templates: int
    keys: int = 10
    reloaders: dict[str, str] = field(default_factory=dict)  # name → YAML flow mapping
    values: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "templates").mkdir(exist_ok=True)
        self.out = self.directory / "out"
        lines = [f"sources:\n  src: {self.backend.source_yaml()}\n", "templates:\n"]
        reload = f", reload: [{', '.join(self.reloaders)}]" if self.reloaders else ""
        for j in range(self.templates):
            body = "".join(f"k{i}={{{{ {self.backend.expr(key(j, i))} }}}}\n" for i in range(self.keys))
            (self.directory / "templates" / f"t{j:04d}.j2").write_text(body)
            lines.append(f"  - {{source: templates/t{j:04d}.j2, destination: out/t{j:04d}.conf{reload}}}\n")
        if self.reloaders:
            lines.append("reloaders:\n")
            lines += [f"  {name}: {spec}\n" for name, spec in self.reloaders.items()]
        self.config = self.directory / "confsync.yaml"
        self.config.write_text("".join(lines))

    def seed(self, tag: str = "v0") -> None:
        items = {key(j, i): f"{tag}-{j}-{i}" for j in range(self.templates) for i in range(self.keys)}
        self.backend.seed(items)
        self.values.update(items)

    def destination(self, template: int) -> Path:
        return self.out / f"t{template:04d}.conf"

    def text(self, template: int) -> str:
        return expected(self.values, template, self.keys)

    def clear(self) -> None:
        shutil.rmtree(self.out, ignore_errors=True)

    def all_written(self) -> bool:
        for j in range(self.templates):
            try:
                if self.destination(j).read_text() != self.text(j):
                    return False
            except FileNotFoundError:
                return False
        return True


def env() -> dict[str, str]:
    # PYTHONDONTWRITEBYTECODE would make every run compile confsync's modules anew (~20 ms), which an
    # installed confsync never does: compile_confsync() writes the bytecode once instead.
    values = {k: v for k, v in os.environ.items()
              if not k.startswith(("CONFSYNC_", "VAULT_", "CONSUL_")) and k != "PYTHONDONTWRITEBYTECODE"}
    values["PYTHONPATH"] = str(ROOT)  # this checkout's confsync
    return values


def compile_confsync() -> None:
    """Byte-compile this checkout's confsync for the interpreter that runs it, as pip install does."""
    subprocess.run([PYTHON, "-m", "compileall", "-q", str(ROOT / "confsync")], env=env(), check=True,
                   stdout=subprocess.DEVNULL)


class Confsync:
    """`confsync run` in the background, its log in a file."""

    def __init__(self, project: Project, *args: str) -> None:
        self.project = project
        self.log_path = project.directory / "confsync.log"
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([PYTHON, "-m", "confsync", "run", "-c", str(project.config), *args],
                                     cwd=project.directory, env=env(), stdout=self.log, stderr=self.log)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_written(self, timeout: float = 120.0) -> float:
        """Poll until every destination holds its expected text; the time that took."""
        start = time.monotonic()
        while not self.project.all_written():
            if self.proc.poll() is not None:
                raise RuntimeError(f"confsync exited {self.proc.returncode}:\n{self.log_tail()}")
            if time.monotonic() - start > timeout:
                raise RuntimeError(f"destinations not written within {timeout}s:\n{self.log_tail()}")
            time.sleep(0.02)
        return time.monotonic() - start

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        terminate(self.proc)
        self.log.close()


def terminate(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it has not exited within 20 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_once(project: Project, command: str = "once", timeout: float = 120.0, **extra: str) -> float:
    """Wall time of one `confsync once|init` process (from fork to exit), in seconds."""
    start = time.monotonic()
    result = subprocess.run([PYTHON, "-m", "confsync", command, "-c", str(project.config)],
                            cwd=project.directory, env={**env(), **extra}, capture_output=True, text=True,
                            timeout=timeout)
    elapsed = time.monotonic() - start
    if result.returncode != 0:
        raise RuntimeError(f"confsync {command} exited {result.returncode}: {result.stderr[-2000:]}")
    return elapsed
