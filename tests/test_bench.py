"""The benchmarks users run on their own repository (``slm-lsp eval``, ``slm-lsp bench index``),
run as a user runs them, on the fixture repository with the tiny generated model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

FIXTURE = Path(__file__).parent / "data" / "context_repo"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "slm_lsp", *args], capture_output=True, text=True, timeout=300)


def test_eval_compares_infile_repo_and_baseline(tiny_model: Path, tmp_path: Path):
    jsonl = tmp_path / "tasks.jsonl"
    out = run("eval", str(FIXTURE), "-n", "6", "--mode", "infile,repo,baseline", "--model", str(tiny_model),
              "--threads", "1", "--jsonl", str(jsonl))
    assert out.returncode == 0, out.stderr
    rows = [json.loads(x) for x in jsonl.read_text().splitlines()]
    modes = {m: [r for r in rows if r["mode"] == m] for m in ("infile", "repo", "baseline")}
    n = len(modes["infile"])
    assert n >= 3 and all(len(v) == n for v in modes.values())
    # The same tasks in every mode; lines that use names the file imports from the repository
    # are among them; the file being written is never part of its own context.
    assert [(r["path"], r["line"]) for r in modes["repo"]] == [(r["path"], r["line"]) for r in modes["infile"]]
    assert any(r["cross_file"] for r in modes["repo"])
    assert all(not r["context_files"] for r in modes["infile"])
    assert any(r["context_files"] for r in modes["repo"]) and any(r["context_files"] for r in modes["baseline"])
    assert all(r["path"] not in r["context_files"] for r in modes["repo"] + modes["baseline"])
    assert all(0.0 <= r["es"] <= 1.0 and r["exact"] == (r["predicted"] == r["expected"]) for r in rows)
    table = out.stdout.split("mode ", 1)[1]
    assert all(f"\n{m}" in table for m in modes)
    # --cross-file-only asks exactly the cross-file tasks of the same draw.
    cross = tmp_path / "cross.jsonl"
    out = run("eval", str(FIXTURE), "-n", "6", "--mode", "infile", "--cross-file-only", "--model", str(tiny_model),
              "--threads", "1", "--jsonl", str(cross))
    assert out.returncode == 0, out.stderr
    asked = [(r["path"], r["line"]) for r in map(json.loads, cross.read_text().splitlines())]
    assert asked == [(r["path"], r["line"]) for r in modes["infile"] if r["cross_file"]]


def test_bench_index_reports_every_measure(tmp_path: Path):
    out = run("bench", "index", str(FIXTURE), "--requests", "10")
    assert out.returncode == 0, out.stderr
    for label in ("full index (cold cache)", "peak memory", "saved index", "restart (saved index)",
                  "single-file change", "window index (all files)", "context assembly per request"):
        assert label in out.stdout, label
