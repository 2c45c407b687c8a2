"""bench/peers.py end to end in its quick mode: the floor and mlstack serve (the heavy peers' virtual
environments are not built here), real servers under real wrk (and ghz where installed), a table with numbers."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quick_run_writes_a_table_with_numbers(tmp_path):
    assert shutil.which("wrk"), "wrk is installed by test.sh (apt-get install -y wrk)"
    out = tmp_path / "peers.md"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "peers.py"), "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=240, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    rows = {tuple(c.strip() for c in line.split("|")[1:3]): [c.strip() for c in line.split("|")[3:-1]]
            for line in text.splitlines() if line.startswith("| ") and not line.startswith("| server")}
    number = re.compile(r"^\d[\d,]*(\.\d+)?$")
    http = [("floor: bare uvicorn", "constant"), ("mlstack serve", "/predict JSON"), ("mlstack serve", "v2 JSON"),
            ("mlstack serve", "v2 binary")]
    for key in http:
        cells = rows[key]
        assert number.match(cells[0]) and float(cells[0].replace(",", "")) > 0, (key, cells)
        assert number.match(cells[1]) and number.match(cells[2]), (key, cells)  # p50, p99
    assert rows[("mlstack serve", "/predict JSON")][6].endswith("x")  # the ratio to the floor
    grpc = rows[("mlstack serve", "v2 gRPC")]
    ghz = shutil.which("ghz") or (Path.home() / "go" / "bin" / "ghz").exists()
    if ghz:
        assert number.match(grpc[0]), grpc
    else:  # said, not silently dropped
        assert "ghz not installed" in grpc[0], grpc
    assert "mlstack serve /predict ≥ 0.6x the floor" in text
