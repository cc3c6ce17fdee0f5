"""The publish gate: held-out lines sized to the repository and spread over its held-out files,
the subset that uses the repository's own names, paired statistics (wins and losses with the
exact sign test, bootstrap intervals) on known per-line outcomes, and the decision in both
directions. Outcomes are scored by the real ``score_line``; the end-to-end pairing runs the tiny
GGUF through the server's completion engine, and the cache of the base's answers."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from finetune import lora
from finetune.config import FinetuneConfig
from finetune.data import SourceFile, load_files, repo_names
from finetune.evaluate import (
    LineOutcome,
    base_lines,
    bootstrap_interval,
    compare_paired,
    compare_reports,
    complete_lines,
    decide,
    line_tasks,
    lines_key,
    score_line,
)
from slm_lsp.bench.humaneval import sign_test
from tests.conftest import TINY_MODEL

REPO = Path(__file__).parent.parent / "data" / "finetune_repo"
GATE = {"min_loss_gain": 0.01, "max_similarity_drop": 0.01, "exact_match_alpha": 0.05}


def answers(outcomes: list[LineOutcome]) -> list[tuple[str, bool, float]]:
    """What was answered and how it scored (not how long it took)."""
    return [(o.completion, o.exact, o.similarity) for o in outcomes]


def outcome(exact: bool, similarity: float) -> LineOutcome:
    return LineOutcome("x" if exact else "y", exact, similarity, 0.0)


# -- the repository's own names -----------------------------------------------------------------
def test_repo_names_are_the_definitions_less_builtins_short_and_dunder_names():
    text = '''"""Notes: the type checker and a class of problems; def is a keyword."""
import os

MAX_RETRIES: int = 3
registry = {}


class ShapeRegistry:
    def __init__(self, size):
        self.capacity = size
        self.n = 0

    async def register_shape(self, shape):
        list = []  # shadows a builtin: not the repository's own name
        return list


def area_of(shape):
    return shape.width == 2
'''
    js = "export function loadConfig(path) {}\nconst DEFAULT_PORT = 80;\nthis.handler = null;\n"
    go = "func (s *Server) ServeLines(w io.Writer) {}\ntype LineBuffer struct {}\n"
    names = repo_names([SourceFile("a.py", text), SourceFile("b.js", js), SourceFile("c.go", go)])
    assert names == {"MAX_RETRIES", "registry", "ShapeRegistry", "capacity", "register_shape", "area_of",
                     "loadConfig", "DEFAULT_PORT", "handler", "ServeLines", "LineBuffer"}


# -- tasks: sized to the repository, spread, own names first -----------------------------------
def numbered_file(path: str, n_lines: int, named_every: int = 0) -> SourceFile:
    lines = []
    for i in range(n_lines):
        uses = named_every and i % named_every == 0
        lines.append(f"    value_{i} = {'area_of(shape)' if uses else 'compute(x, y)'} + {i}")
    return SourceFile(path, "\n".join(lines) + "\n")


def test_tasks_reach_the_requested_size_on_distinct_lines_spread_over_all_files():
    files = [numbered_file(f"pkg/m{i}.py", 150) for i in range(4)]
    tasks = line_tasks(files, 200, seed=3)
    assert len(tasks) == 200
    per_file = {f.path: sum(t.path == f.path for t in tasks) for f in files}
    assert set(per_file.values()) == {50}  # round-robin: an even spread, not the biggest file
    assert len({(t.path, t.line) for t in tasks}) == 200  # never the same line twice
    for t in tasks:
        original = next(f.text for f in files if f.path == t.path).split("\n")
        line = t.text.split("\n")[t.line]
        assert line[:t.column] + t.target == original[t.line] and len(t.target.strip()) >= 6
    assert [(t.path, t.line, t.column) for t in line_tasks(files, 200, seed=3)] == \
        [(t.path, t.line, t.column) for t in tasks]


def test_tasks_are_fewer_only_when_the_heldout_files_have_no_more_lines():
    files = [numbered_file("a.py", 30), numbered_file("b.py", 5), SourceFile("c.py", "x = 1\n\n")]
    tasks = line_tasks(files, 200, seed=0)
    # every line of a.py and b.py is a task; c.py's one line is too short to complete
    assert len(tasks) == 35
    assert {t.path for t in tasks} == {"a.py", "b.py"}


def test_a_share_of_the_tasks_use_the_repository_s_own_names():
    files = [numbered_file(f"m{i}.py", 200, named_every=10) for i in range(3)]  # 60 lines of 600 use area_of
    names = repo_names([SourceFile("shapes.py", "def area_of(shape):\n    return 1\n")])
    tasks = line_tasks(files, 100, seed=1, names=names, own_names_fraction=0.5)
    own = [t for t in tasks if t.own_names]
    assert len(tasks) == 100 and 50 <= len(own) <= 60  # at least the share; the rest drawn from any line
    assert all("area_of" in t.target for t in own) and not any("area_of" in t.target for t in tasks if not t.own_names)
    # by chance alone, about 10% would use the name
    assert sum(t.own_names for t in line_tasks(files, 100, seed=1, names=names)) < 25
    # asking for more named lines than there are: all of them, then the rest
    many = line_tasks(files, 100, seed=1, names=names, own_names_fraction=1.0)
    assert len(many) == 100 and sum(t.own_names for t in many) == 60


# -- paired statistics on known outcomes ----------------------------------------------------------
def test_score_line_compares_the_first_line():
    assert score_line("foo(bar)\nnext line", "foo(bar)  ") == LineOutcome("foo(bar)", True, 1.0, 0.0)
    assert score_line("foo(baz)", "foo(bar)").similarity == pytest.approx(1 - 1 / 8)


def test_compare_paired_counts_wins_and_losses_on_the_same_tasks():
    before = [outcome(e, s) for e, s in [(True, 1.0), (True, 1.0), (False, 0.5), (False, 0.5), (False, 0.4),
                                           (False, 0.2), (False, 0.6), (False, 0.1), (False, 0.3), (True, 1.0)]]
    after = [outcome(e, s) for e, s in [(True, 1.0), (False, 0.9), (True, 1.0), (True, 1.0), (True, 1.0),
                                          (True, 1.0), (True, 1.0), (True, 1.0), (False, 0.3), (True, 1.0)]]
    c = compare_paired(before, after, resamples=2000, seed=0)
    assert (c.n, c.wins, c.losses) == (10, 6, 1)
    # exact sign test over the 7 lines that differ: 2 * (C(7,0) + C(7,1)) / 2^7
    assert c.sign_p == pytest.approx(2 * 8 / 128) == sign_test(6, 1)
    assert (c.exact_before, c.exact_after, c.exact_diff) == pytest.approx((0.3, 0.8, 0.5))
    diffs = [a.similarity - b.similarity for b, a in zip(before, after)]
    assert c.similarity_diff == pytest.approx(statistics.fmean(diffs)) == pytest.approx(0.36)
    low, high = c.similarity_interval
    assert min(diffs) <= low < c.similarity_diff < high <= max(diffs)
    assert c.as_dict()["similarity_diff"] == pytest.approx(0.36)
    with pytest.raises(ValueError, match="length"):
        compare_paired(before, after[:-1])


def test_bootstrap_interval_on_known_inputs():
    assert bootstrap_interval([0.25] * 50) == (0.25, 0.25)  # no spread, no uncertainty
    assert bootstrap_interval([]) == (-1.0, 1.0)  # nothing measured: anything is possible
    diffs = [(-1) ** i * (i % 7) / 10 + 0.05 for i in range(400)]
    low, high = bootstrap_interval(diffs, confidence=0.95, resamples=4000, seed=1)
    mean, sd = statistics.fmean(diffs), statistics.stdev(diffs)
    half = 1.96 * sd / len(diffs) ** 0.5  # the normal interval the bootstrap approximates
    assert low < mean < high
    assert (high - low) / 2 == pytest.approx(half, rel=0.15)
    assert bootstrap_interval(diffs, resamples=4000, seed=1) == (low, high)  # deterministic
    narrow = bootstrap_interval(diffs, confidence=0.5, resamples=4000, seed=1)
    assert low < narrow[0] < narrow[1] < high


# -- the decision, both ways ----------------------------------------------------------------------
def paired_lines(n: int, similarity_gain: float, spread: float, exact: list[tuple[bool, bool]] | None = None):
    """``n`` recorded tasks whose edit similarity changes by ``similarity_gain`` on average,
    with per-line differences of +-``spread`` around it."""
    before, after = [], []
    for i in range(n):
        e0, e1 = exact[i] if exact and i < len(exact) else (False, False)
        s0 = 0.5
        s1 = s0 + similarity_gain + (spread if i % 2 else -spread)
        before.append(outcome(e0, 1.0 if e0 else s0))
        after.append(outcome(e1, 1.0 if e1 else s1))
    return compare_paired(before, after, seed=0)


def test_the_gate_publishes_when_the_loss_drops_and_edit_similarity_is_shown_not_to_fall():
    lines = paired_lines(200, similarity_gain=0.03, spread=0.1, exact=[(False, True)] * 9 + [(True, False)] * 4)
    d = decide(1.20, 1.05, lines, **GATE)
    assert d.publish and d.metric == "edit similarity"
    assert "9 wins, 4 losses" in d.reason and "on 200 lines" in d.reason


def test_the_gate_refuses_when_the_loss_does_not_drop():
    d = decide(1.20, 1.195, paired_lines(200, 0.05, 0.01), **GATE)
    assert not d.publish and d.metric == "held-out loss" and "--min-loss-gain" in d.reason


def test_the_gate_refuses_an_adapter_whose_edit_similarity_fell():
    """The reported defect: 57.7 -> 56.7 on 21 lines, within the old point tolerance, was published."""
    before = [outcome(False, 0.577)] * 21
    after = [outcome(False, 0.567 + (0.2 if i % 2 else -0.2) * (i < 20)) for i in range(21)]
    lines = compare_paired(before, after, seed=0)
    assert lines.similarity_diff == pytest.approx(-0.01, abs=1e-9)
    d = decide(1.2, 1.0, lines, **GATE)
    assert not d.publish and d.metric == "edit similarity" and "fell" in d.reason


def test_the_gate_refuses_when_too_few_lines_cannot_rule_out_a_loss():
    lines = paired_lines(20, similarity_gain=0.01, spread=0.3)  # +1 point on average, +-30 per line
    assert lines.similarity_interval[0] < -0.05
    d = decide(1.2, 1.0, lines, **GATE)
    assert not d.publish and d.metric == "edit similarity" and "interval reaches below" in d.reason
    # the same effect on 2000 lines is measured tightly enough to publish
    assert decide(1.2, 1.0, paired_lines(2000, 0.01, 0.3), **{**GATE, "max_similarity_drop": 0.02}).publish


def test_exact_match_significantly_worse_vetoes_even_with_better_similarity():
    lines = paired_lines(200, similarity_gain=0.04, spread=0.05, exact=[(True, False)] * 12 + [(False, True)] * 1)
    assert lines.sign_p < 0.05
    d = decide(1.2, 1.0, lines, **GATE)
    assert not d.publish and d.metric == "exact match" and "12 losses" in d.reason


def test_without_lines_the_loss_decides():
    assert decide(1.2, 1.0, None, **GATE).publish
    d = decide(1.2, 1.0, compare_paired([], []), **GATE)
    assert d.publish and d.metric == "held-out loss" and "no line completions" in d.reason


def test_judge_reports_all_lines_and_the_own_names_subset():
    files = [numbered_file(f"m{i}.py", 40, named_every=4) for i in range(3)]
    tasks = line_tasks(files, 60, seed=0, names={"area_of"}, own_names_fraction=0.5)
    own = [t.own_names for t in tasks]
    before = {"loss": 1.2, "lines": [vars(score_line("compute(x, y)", t.target)) for t in tasks]}
    after = {"loss": 1.0, "lines": [vars(score_line(t.target if t.own_names else "compute(x, y)", t.target))
                                    for t in tasks]}
    cfg = FinetuneConfig(repo="r", base="b", out="o", eval_lines=60)
    decision, gate, text = lora.judge(before, after, tasks, cfg)
    assert gate["own_names"]["n"] == sum(own) >= 30 and gate["all"]["n"] == 60 and gate["files"] == 3
    assert gate["own_names"]["exact_after"] == 1.0 and gate["all"]["losses"] == 0
    assert gate["all"]["wins"] == sum(own)
    assert decision.publish and decision.metric == "edit similarity"
    assert "sign test p=" in text and "95%" in text and "own names" in text and "decided by edit similarity" in text


# -- end to end on the tiny GGUF: the pairing lines up, the base's answers are cached ------------
def test_base_against_itself_through_the_engine_is_all_ties(tmp_path):
    files = load_files(REPO, heldout_fraction=0.3, seed=0)
    tasks = line_tasks(files.heldout, 12, seed=0, names=repo_names(files.train), own_names_fraction=0.5)
    cache = tmp_path / "cache"
    first, from_cache = base_lines(cache, TINY_MODEL, tasks, threads=1, max_tokens=8)
    again = complete_lines(TINY_MODEL, tasks, threads=1, max_tokens=8)
    assert not from_cache and len(first) == len(tasks) == 12
    c = compare_paired(first, again)
    assert (c.wins, c.losses, c.sign_p, c.similarity_diff, c.similarity_interval) == (0, 0, 1.0, 0.0, (0.0, 0.0))
    assert all(o.similarity == score_line(o.completion, t.target).similarity for o, t in zip(first, tasks))
    # a second run on the same lines, model and budget reads the base's answers back
    assert base_lines(cache, TINY_MODEL, tasks, threads=1, max_tokens=8) == (first, True)
    # other lines or another prompt budget are other answers
    key = lines_key(TINY_MODEL, tasks, max_tokens=8)
    assert lines_key(TINY_MODEL, tasks[:-1], max_tokens=8) != key
    assert lines_key(TINY_MODEL, tasks, max_tokens=8, prompt_tokens=256) != key
    fewer, from_cache = base_lines(cache, TINY_MODEL, tasks[:3], threads=1, max_tokens=8)
    assert not from_cache and answers(fewer) == answers(first[:3]) and len(list(cache.iterdir())) == 2
    # a damaged entry is computed again and replaced
    (cache / f"{key}.json").write_text("{not json")
    redone, from_cache = base_lines(cache, TINY_MODEL, tasks, threads=1, max_tokens=8)
    assert not from_cache and answers(redone) == answers(first)
    assert base_lines(cache, TINY_MODEL, tasks, threads=1, max_tokens=8) == (redone, True)


def gate_report(places: list[tuple[str, int, int]], exact: list[bool]) -> dict:
    return {"line_tasks": [{"path": p, "line": ln, "column": c, "own_names": False} for p, ln, c in places],
            "after": {"lines": [{"completion": "x", "exact": e, "similarity": float(e), "ms": 1.0} for e in exact]}}


def test_compare_reports_pairs_two_adapters_by_the_lines_both_asked() -> None:
    a = gate_report([("a.py", 1, 0), ("a.py", 5, 2), ("b.py", 3, 4), ("c.py", 9, 0)], [True, False, False, True])
    # B asked three of A's lines, in another order, and one A did not.
    b = gate_report([("b.py", 3, 4), ("a.py", 1, 0), ("d.py", 2, 2), ("a.py", 5, 2)], [True, False, True, True])
    comparison, unpaired = compare_reports(a, b)
    assert comparison.n == 3 and unpaired == 2
    assert (comparison.wins, comparison.losses) == (2, 1)  # b.py:3 and a.py:5 won, a.py:1 lost
    assert comparison.exact_before == pytest.approx(1 / 3) and comparison.exact_after == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="line_tasks"):
        compare_reports({"after": a["after"]}, b)  # a report written before the places were
    with pytest.raises(ValueError, match="in common"):
        compare_reports(a, gate_report([("z.py", 1, 0)], [True]))
    for garbage in ([], {"after": []}, "eval"):
        with pytest.raises(ValueError, match="not a finetune report"):
            compare_reports(garbage, b)  # type: ignore[arg-type]


def test_eval_compare_says_what_is_wrong_with_its_files(tmp_path: Path, capsys) -> None:
    from slm_lsp.cli import main as cli_main

    good = tmp_path / "good.json"
    good.write_text(json.dumps(gate_report([("a.py", 1, 0)], [True])))
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "broken.json").write_text("{not json")
    for other in ("missing.json", "list.json", "broken.json"):
        assert cli_main(["eval", "--compare", str(good), str(tmp_path / other)]) == 2
        assert "error: slm-lsp eval --compare" in capsys.readouterr().err
