"""``--speculative compare`` in ``bench typing`` and ``bench humaneval``: every model request
generated again without speculation, with prompt lookup and with the draft model, run as a user
runs it with the tiny generated model (numbers are printed, never asserted)."""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import TINY_MODEL

SOURCE = "".join(f"def f{i}(x):\n    y = x * {i}\n    return y + {i}\n\n" for i in range(12))


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "slm_lsp", "bench", *args, "--model", str(TINY_MODEL),
                           "--threads", "1", "--ctx", "2048", "--speculative", "compare",
                           "--draft-model", str(TINY_MODEL)], capture_output=True, text=True, timeout=300)


def table(stdout: str) -> dict[str, list[str]]:
    """The comparison's rows by mode."""
    rows = {}
    for line in stdout.splitlines():
        m = re.match(r"  (off|lookup|draft) +(\d+) ", line)
        if m:
            rows[m.group(1)] = line.split()
    return rows


def test_bench_typing_compares_each_mode_on_the_same_requests(tmp_path: Path):
    (tmp_path / "a.py").write_text(SOURCE)
    out = bench("typing", str(tmp_path / "a.py"), "--lines", "2", "--every", "6", "--baseline-samples", "0")
    assert out.returncode == 0, out.stderr
    assert "model requests generated again each way" in out.stdout, out.stdout
    rows = table(out.stdout)
    assert set(rows) == {"off", "lookup", "draft"}, out.stdout
    n = re.search(r"speculative decoding: (\d+) model requests", out.stdout).group(1)  # type: ignore[union-attr]
    tokens = {mode: int(row[1]) for mode, row in rows.items()}
    assert len(set(tokens.values())) == 1 and tokens["off"] > 0  # the same answers, token for token
    for row in rows.values():
        assert row[-1] == f"{n}/{n}", out.stdout
    accepted, drafted = map(int, rows["draft"][-2].split("/"))
    assert accepted == drafted  # the model drafting for itself (how often: DraftBudget decides, by timings)


def test_bench_humaneval_compares_each_mode(tmp_path: Path):
    data = tmp_path / "tasks.jsonl.gz"
    task = {"task_id": "t/0", "entry_point": "f", "canonical_solution": "    y = x + 1\n",
            "prompt": "def f(x):\n", "suffix": "    return y\n", "test": "def check(f):\n    pass\n"}
    with gzip.open(data, "wt") as fh:
        for i in range(2):
            fh.write(json.dumps(dict(task, task_id=f"t/{i}")) + "\n")
    out = bench("humaneval", "--data", str(data), "--no-raw")
    assert out.returncode == 0, out.stderr
    rows = table(out.stdout)
    assert set(rows) == {"off", "lookup", "draft"}, out.stdout
    assert all(row[-1] == "2/2" for row in rows.values()), out.stdout
