"""``slm-lsp eval``'s record of each answer and ``--report``, which compares in-file and repo
context over finished runs: paired counts, what the context cost, and a confidence check."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from slm_lsp.bench.eval import choose, distraction, in_context, paired, pairs, pick_margin

FIXTURE = Path(__file__).parent.parent / "data" / "context_repo"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "slm_lsp", *args], capture_output=True, text=True, timeout=300)


def row(repo: str, mode: str, line: int, predicted: str, expected: str, logprobs: list[float],
        context: list[list[str]] | None = None, path: str = "a.py") -> dict:
    from slm_lsp.bench.eval import edit_similarity

    return {"repo": repo, "run": Path(repo).name, "mode": mode, "path": path, "line": line, "expected": expected,
            "predicted": predicted, "exact": predicted == expected, "es": edit_similarity(predicted, expected),
            "logprobs": logprobs, "context": context or []}


def test_paired_counts_wins_losses_and_similarity_both_ways(tmp_path: Path):
    rows = [
        row("r", "infile", 1, "x = 1", "x = 1", [-0.1]), row("r", "repo", 1, "x = 2", "x = 1", [-0.5]),  # lost
        row("r", "infile", 2, "y()", "y(a)", [-1.0]), row("r", "repo", 2, "y(a)", "y(a)", [-0.2]),  # won
        row("r", "infile", 3, "z", "zz", [-1.0]), row("r", "repo", 3, "z", "zz", [-1.0]),  # tie
        row("r", "infile", 4, "q", "q", [-1.0]),  # the repo mode never ran: left out
    ]
    ps = pairs(rows)
    assert [(a["line"], b["line"]) for a, b in ps] == [(1, 1), (2, 2), (3, 3)]
    s = paired(ps)
    assert (s.n, s.wins, s.losses, s.es_wins, s.es_losses) == (3, 1, 1, 1, 1)
    assert round(s.em_a, 1) == round(s.em_b, 1) == 33.3 and s.ratio == 1.0 and s.p == 1.0


def test_distraction_tells_a_copied_context_line_from_the_file_own_pattern(tmp_path: Path):
    (tmp_path / "a.py").write_text("import util\n\ndef f(items):\n    total = 0\n    HIDDEN\n    return total\n"
                                   "\ndef g():\n    total = util.other()\n")
    ctx = [["b.py", "def h():\n    total = util.compute(items)\n    log(total)\n"]]
    expected = "total = util.sum(items)"
    assert distraction(row(str(tmp_path), "repo", 4, "total = util.compute(items)", expected, [], ctx)) \
        == "copied a context line"
    assert distraction(row(str(tmp_path), "repo", 4, "log(items)", expected, [], ctx)) == "a name from the context"
    assert distraction(row(str(tmp_path), "repo", 4, "total = util.other()", expected, [], ctx)) \
        == "another line of the file"
    assert distraction(row(str(tmp_path), "repo", 4, "total += 1", expected, [], ctx)) == "other"
    assert distraction(row(str(tmp_path), "repo", 4, "if total:", expected, [], ctx)) == "opened a block"
    assert distraction(row(str(tmp_path), "repo", 4, "", expected, [], ctx)) == "empty"
    assert not in_context(row(str(tmp_path), "repo", 4, "", expected, [], ctx))
    assert in_context(row(str(tmp_path), "repo", 4, "", "log(total)", [], ctx))


def test_confidence_check_keeps_the_context_answer_unless_the_infile_one_is_surer():
    infile = row("r", "infile", 1, "a", "a", [-0.1, -0.1])
    context = row("r", "repo", 1, "b", "a", [-0.3, -2.0])
    assert choose(infile, context, "mean", 0.0) is infile
    assert choose(infile, context, "mean", 2.0) is context  # not surer by that much
    assert choose(infile, context, "min", 1.8) is infile
    # Picked on runs where the in-file answer is right whenever it is much surer: a margin that
    # takes it there and leaves the context answer where the two are close.
    ps = [(row("r", "infile", 1, "a", "a", [-0.1]), row("r", "repo", 1, "b", "a", [-1.5])),
          (row("r", "infile", 2, "c", "x", [-0.4]), row("r", "repo", 2, "x", "x", [-0.6]))]
    margin = pick_margin(ps, "mean")
    assert 0.2 <= margin < 1.4
    assert [choose(a, b, "mean", margin)["exact"] for a, b in ps] == [True, True]


def test_eval_records_logprobs_and_kept_context_and_report_reads_them(tiny_model: Path, tmp_path: Path):
    jsonl = tmp_path / "run.jsonl"
    out = run("eval", str(FIXTURE), "-n", "6", "--mode", "both", "--model", str(tiny_model), "--threads", "1",
              "--jsonl", str(jsonl))
    assert out.returncode == 0, out.stderr
    rows = [json.loads(x) for x in jsonl.read_text().splitlines()]
    assert rows and all(r["repo"] == str(FIXTURE.resolve()) for r in rows)
    # One log-probability per generated token (the end token too), none above 0.
    assert any(r["logprobs"] for r in rows)
    assert all(all(x <= 0 for x in r["logprobs"]) for r in rows)
    # Answers are never cut by the clock: the benchmark scores the model, not the machine's load.
    assert {r["stop"] for r in rows} <= {"eog", "stop", "length", ""} and any(r["stop"] for r in rows)
    repo_rows = [r for r in rows if r["mode"] == "repo"]
    assert all(not r["context"] for r in rows if r["mode"] == "infile")
    assert any(r["context"] for r in repo_rows)
    assert all({p for p, _ in r["context"]} == set(r["context_files"]) for r in repo_rows)
    out = run("eval", "--report", str(jsonl), "--pick-on", str(jsonl))
    assert out.returncode == 0, out.stderr
    n = len(repo_rows)
    assert f"\ncontext_repo             {n:3d}" in out.stdout and f"\npooled                   {n:3d}" in out.stdout
    for label in ("kept context", "by cause", "surer by mean (margin 0)", "surer by min (margin", "oracle"):
        assert label in out.stdout, label
    assert run("eval").returncode == 2
