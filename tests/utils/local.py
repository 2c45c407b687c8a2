"""Helpers for the tests of ``./init.sh --local`` (tests/local/): run it, read the credentials it writes."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_init(args, env, timeout=600):
    return subprocess.run([str(ROOT / "init.sh"), *args], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def read_credentials(out: Path) -> dict[str, str]:
    """outputs/credentials.txt of local mode: ``<what> <value>`` lines (``#`` lines are notes)."""
    creds = {}
    for line in (out / "credentials.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            creds[key.strip()] = value
    return creds
