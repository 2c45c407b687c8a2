"""shellcheck on every shell script of the repository."""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path

from tests.utils.cluster import ROOT, need_tool

SKIP_DIRS = {".git", ".venv", "node_modules", "outputs", "dist", "__pycache__"}


@functools.cache
def shell_scripts() -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS and not d.endswith(".egg-info")]
        found += [Path(dirpath) / f for f in filenames if is_shell(Path(dirpath) / f)]
    return sorted(str(p.relative_to(ROOT)) for p in found)


def is_shell(path: Path) -> bool:
    if path.suffix in {".sh", ".bash"}:
        return True
    if path.suffix == "" or path.name == "run":
        try:
            head = path.open("rb").readline(100)
        except OSError:
            return False
        return head.startswith(b"#!") and (b"bash" in head or b"/sh" in head)
    return False


def test_the_known_scripts_are_found():
    scripts = shell_scripts()
    for required in ("init.sh", "test.sh", ".ci/run"):
        assert required in scripts


def test_shellcheck_clean():
    shellcheck = need_tool("shellcheck")
    scripts = shell_scripts()
    out = subprocess.run([shellcheck, "--external-sources", *scripts], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, f"shellcheck {' '.join(scripts)}:\n{out.stdout}{out.stderr}"
