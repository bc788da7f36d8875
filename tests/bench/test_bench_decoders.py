"""bench/decoders.py runs and reports both tables (no timing assertions)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_decoder_bench_quick(tmp_path):
    from stages.decoders import installed_decoders

    backends = [b for b in ("decord", "pyav") if b in installed_decoders()]
    out = tmp_path / "dec.json"
    proc = subprocess.run([sys.executable, os.path.join(REPO, "bench", "decoders.py"), "--quick",
                           "--backends", ",".join(backends), "--work", str(tmp_path / "w"), "--json", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["backends"] == backends and "bikes.mp4" in r["accuracy"] and "vfr.webm" in r["accuracy"]
    assert set(r["speed"]["backends"]) == set(backends) and r["speed"]["table_scan_cpu_ms"] > 0
    for row in r["accuracy"].values():
        assert all(c["indices_equal"] for c in row["backends"].values())
    assert "speed: ms per HD clip" in proc.stdout
