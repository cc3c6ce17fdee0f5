"""``slm-lsp eval --task next-edit``: the scores, the step selection, the pairing of two runs, the
prompt choice, and one replay through the CLI with the tiny model (the server's engine path)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from finetune.history import Step
from slm_lsp.bench.humaneval import sign_test
from slm_lsp.bench.next_edit import (
    changed_similarity,
    compare,
    edit_text,
    outcomes_of,
    pick_steps,
    predicted_region,
    prompt_mode,
    score,
    summarize,
)
from slm_lsp.engine.next_edit import NextEditResult, Replacement
from tests.conftest import TINY_MODEL
from tests.finetune.test_history import commit, new_repo, numbered

REGION = "def f(total):\n    total += 1\n    return total\n"
TARGET = "def f(total):\n    total += 1\n    return total * 2\n"


def step(target: str | None, kind: str = "next", index: int = 0) -> Step:
    return Step("c", "a.py", index, [], REGION, 0, 0, target, kind, REGION, 0, 0)


def test_edit_similarity_compares_the_predicted_change_with_the_expected_one() -> None:
    assert edit_text(REGION, TARGET) == "-    return total\n+    return total * 2\n"
    assert edit_text(REGION, None) == edit_text(REGION, REGION) == ""
    assert changed_similarity(REGION, TARGET, TARGET) == 1.0
    assert changed_similarity(REGION, TARGET, None) == 0.0
    near = REGION.replace("return total", "return total * 3")
    wrong_line = REGION.replace("total += 1", "total -= 1")
    assert 0.8 < changed_similarity(REGION, TARGET, near) < 1.0
    assert changed_similarity(REGION, TARGET, wrong_line) < changed_similarity(REGION, TARGET, near)
    # A long unchanged region does not dilute the score.
    tail = "x = 1\n" * 50
    assert changed_similarity(REGION + tail, TARGET + tail, near + tail) == changed_similarity(REGION, TARGET, near)


def test_score_counts_exact_edits_false_positives_and_right_silence() -> None:
    exact = score(step(TARGET), TARGET, "", 10.0, 100, 20)
    assert exact.exact and exact.right and exact.similarity == 1.0
    silent = score(step(TARGET), None, "<|no_edit|>", 10.0, 100, 2, "cut (time)")
    assert not silent.exact and not silent.right and not silent.predicted_edit
    assert silent.similarity == 0.0
    fp = score(step(None, "last"), TARGET, "", 10.0, 100, 20)
    assert fp.predicted_edit and not fp.right and not fp.expected_edit
    quiet = score(step(None, "last"), None, "", 10.0, 100, 2)
    assert quiet.right
    s = summarize([exact, silent, fp, quiet])
    assert s["exact_match"] == 0.5 and s["false_positive"] == 0.5 and s["no_edit_right"] == 0.5
    assert s["right"] == 0.5 and s["wrong_edit"] == 0.0 and s["suggested_on_edit_steps"] == 0.5
    assert s["cut"] == 1  # an answer the time budget cut counts as no edit, and is counted apart


def test_predicted_region_applies_the_server_s_replacement() -> None:
    s = Step("c", "a.py", 0, [], REGION, 0, 1, TARGET, "next", "# head\n" + REGION + "tail\n", 1, 0)
    result = NextEditResult(Replacement(3, 11, 3, 16, "total * 2"), "edit", region=(1, 4))
    assert predicted_region(s, result) == TARGET
    assert predicted_region(s, NextEditResult(None, "no-edit", region=(1, 4))) is None


def test_pick_steps_balances_edit_and_no_edit_steps_in_history_order() -> None:
    steps = [step(TARGET if i % 5 == 0 else None, index=i) for i in range(50)]
    picked = pick_steps(steps, 10)
    assert len(picked) == 10
    assert sum(s.target is not None for s in picked) == 5
    assert [s.index for s in picked] == sorted(s.index for s in picked)
    assert pick_steps(steps, 0) == steps
    few_edits = [step(TARGET, index=0)] + [step(None, index=i) for i in range(1, 20)]
    assert sum(s.target is not None for s in pick_steps(few_edits, 8)) == 1


def test_compare_pairs_two_runs_by_step(tmp_path: Path) -> None:
    def write(name: str, rights: list[bool]) -> str:
        path = tmp_path / name
        rows = []
        for i, right in enumerate(rights):
            o = score(step(TARGET if i % 2 == 0 else None, index=i),
                      (TARGET if right else None) if i % 2 == 0 else (None if right else TARGET), "", 5.0, 10, 1)
            rows.append({**o.__dict__})
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return str(path)

    a = write("a.jsonl", [False] * 8 + [True] * 2)
    b = write("b.jsonl", [True] * 8 + [False] * 2)
    result = compare(a, b)
    assert result["paired_steps"] == 10
    assert (result["right"]["b_wins"], result["right"]["b_losses"]) == (8, 2)
    assert result["right"]["p"] == sign_test(8, 2)
    assert result["exact"]["n"] == 5 and result["exact"]["b_wins"] == 4
    # edit steps 0, 2, 4, 6 (exact in B, nothing in A) and 8 (nothing in B, exact in A)
    assert result["similarity"]["n"] == 5
    assert (result["similarity"]["b_wins"], result["similarity"]["b_losses"]) == (4, 1)
    assert result["similarity"]["a"] == pytest.approx(0.2) and result["similarity"]["b"] == pytest.approx(0.8)
    rows = [json.loads(x) for x in Path(b).read_text().splitlines()]
    assert summarize(outcomes_of(rows))["right"] == 0.8


def test_prompt_mode_follows_the_adapter_template(tmp_path: Path) -> None:
    adapter = tmp_path / "adapter.gguf"
    (tmp_path / "template.json").write_text(json.dumps({"name": "qwen2.5-coder", "next_edit": True}))
    assert prompt_mode(str(adapter), True) == "raw"
    assert prompt_mode("", True) == "chat"
    assert prompt_mode("", True, "raw") == "raw"
    (tmp_path / "template.json").write_text(json.dumps({"name": "qwen2.5-coder"}))
    assert prompt_mode(str(adapter), True) == "chat"


def test_eval_replays_held_out_commits_through_the_engine(tmp_path: Path) -> None:
    """The CLI end to end on the tiny model: the held-out commits only, one row per step."""
    repo = new_repo(tmp_path / "proj")
    text = numbered(40)
    commit(repo, {"a.py": text}, "create")
    shas = []
    for i in range(4):
        text = text.replace(f"x{i * 8} = ", f"y{i * 8} = ").replace(f"x{i * 8 + 2} = ", f"y{i * 8 + 2} = ")
        shas.append(commit(repo, {"a.py": text}, f"rename {i}"))
    out = tmp_path / "steps.jsonl"
    proc = subprocess.run([sys.executable, "-m", "slm_lsp", "eval", str(repo), "--task", "next-edit", "--model",
                           str(TINY_MODEL), "--threads", "1", "--ctx", "2048", "--heldout-commits", "2", "-n", "0",
                           "--prompt", "raw", "--edit-budget-ms", "20000", "--jsonl", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    # Two held-out commits of two hunks each: after the first, the second is expected; after it, nothing.
    assert [(r["commit"], r["index"], r["kind"]) for r in rows] == [
        (shas[2], 0, "next"), (shas[2], 1, "last"), (shas[3], 0, "next"), (shas[3], 1, "last")]
    assert all(r["mode"] == "raw" and r["prompt_tokens"] > 0 for r in rows)
    assert rows[0]["target"] == rows[0]["region"].replace("x18 = ", "y18 = ")
    assert [r["expected_edit"] for r in rows] == [True, False, True, False]
    for r in rows:  # an exact answer is an edit the server offered, on a step that expected one
        assert not r["exact"] or (r["predicted_edit"] and r["expected_edit"])
        assert r["reason"] or r["predicted_edit"]
    assert "4 steps (2 with an edit expected, 2 without)" in proc.stdout
