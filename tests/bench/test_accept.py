"""bench accept: where it accepts, where the cursor lands, and one short run over the wire with
the tiny model (both servers answer; the one with the look-ahead counts its prefetches)."""

from __future__ import annotations

import subprocess
import sys

from slm_lsp.bench.accept import after, places
from tests.conftest import TINY_MODEL

TEXT = "import os\n\n\ndef main():\n    print(os.getcwd())\n    return 0\n"


def test_places_cut_lines_in_the_middle_of_their_code():
    ((doc, line, column),) = places(TEXT, 1)
    assert (line, column) == (4, 4 + len("print(os.getcwd())") // 2)
    assert doc.split("\n")[line] == "    print(os."
    assert doc.split("\n")[line + 1] == "    return 0"


def test_after_counts_utf16_units_and_lines():
    assert after(4, 12, "getcwd())") == (4, 21)
    assert after(4, 12, "x\n    y") == (5, 5)
    assert after(0, 0, "\U0001f600") == (0, 2)


def test_a_short_run_over_the_wire(tmp_path):
    source = tmp_path / "demo.py"
    source.write_text(TEXT)
    proc = subprocess.run([sys.executable, "-m", "slm_lsp", "bench", "accept", str(source), "--model", str(TINY_MODEL),
                           "--threads", "1", "--cycles", "1", "--chain", "1", "--read-ms", "50", "--pause-ms", "0"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "prefetch on : accept → next suggestion" in proc.stdout
    on = proc.stdout.split("prefetch off")[0]
    assert "prefetches {'" in on and "'queued'" in on, on  # the look-ahead after each suggestion
    assert "p50 accept → next answer (all answers)" in proc.stdout, proc.stdout
