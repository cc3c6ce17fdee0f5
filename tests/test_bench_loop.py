"""``slm-lsp bench loop``, run as a user runs it (a small file, a few keystrokes, the tiny model):
it drives a real server over stdio and prints the heartbeat's numbers (no limit asserted)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path


def test_bench_loop_reports_the_longest_stall(tiny_model: Path):
    out = subprocess.run([sys.executable, "-m", "slm_lsp", "bench", "loop", "--lines", "3000", "--chars", "40",
                          "--interval-ms", "5", "--model", str(tiny_model), "--threads", "1"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "file: 3000 lines" in out.stdout
    assert "typing: 40 keystrokes" in out.stdout
    match = re.search(r"longest stall ([0-9.]+) ms, (\d+) stalls over 20 ms, (\d+) heartbeats", out.stdout)
    assert match, out.stdout
    assert int(match.group(3)) > 0  # the heartbeat ran while the keystrokes came in
