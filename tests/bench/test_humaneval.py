"""``slm-lsp bench humaneval``: the three infilling sets, how a task's hole reaches the server,
exact match, the paired sign test, and a whole run with the tiny generated model."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import pytest

from slm_lsp import cli
from slm_lsp.bench.humaneval import (
    SETS,
    answer_lines,
    cut_at_suffix,
    exact_match,
    find_data,
    hole,
    hole_lines,
    line_or_block,
    load_tasks,
    model_or_rules,
    normalise,
    parse_shard,
    passes,
    read_runs,
    sample,
    select_tasks,
    sign_test,
)
from tests.conftest import TINY_MODEL

CHECK_ADD = "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n"
# Tasks in the sets' own layout (prompt, suffix, canonical_solution, test, entry_point), small.
TASKS = {
    "single": [
        {"task_id": "SingleLineInfilling/add/L1", "entry_point": "add",
         "prompt": 'def add(a, b):\n    """Sum of a and b."""\n', "canonical_solution": "    return a + b\n",
         "suffix": "\n\ndef sub(a, b):\n    return a - b\n", "test": CHECK_ADD},
        {"task_id": "SingleLineInfilling/total/L1", "entry_point": "total",
         "prompt": "def total(xs):\n    s = 0\n", "canonical_solution": "    for x in xs:\n",
         "suffix": "        s += x\n    return s\n",
         "test": "def check(candidate):\n    assert candidate([1, 2, 3]) == 6\n"},
        {"task_id": "SingleLineInfilling/neg/L0", "entry_point": "neg",
         "prompt": "def neg(x):\n", "canonical_solution": "    return -x\n", "suffix": "",
         "test": "def check(candidate):\n    assert candidate(4) == -4\n"},
    ],
    "multi": [
        {"task_id": "MultiLineInfilling/total/L1_L2", "entry_point": "total",
         "prompt": "def total(xs):\n    s = 0\n", "canonical_solution": "    for x in xs:\n        s += x\n",
         "suffix": "    return s\n", "test": "def check(candidate):\n    assert candidate([1, 2, 3]) == 6\n"},
        {"task_id": "MultiLineInfilling/add/L1_L2", "entry_point": "add",
         "prompt": "def add(a, b):\n", "canonical_solution": "    c = a + b\n    return c\n", "suffix": "",
         "test": CHECK_ADD},
        {"task_id": "MultiLineInfilling/neg/L0_L0", "entry_point": "neg",
         "prompt": "def neg(x):\n", "canonical_solution": "    return -x\n", "suffix": "",
         "test": "def check(candidate):\n    assert candidate(4) == -4\n"},
    ],
    "span": [
        {"task_id": "RandomSpanInfillingLight/double/0", "entry_point": "double",
         "prompt": "def double(x):\n    return 2 ", "canonical_solution": "* x", "suffix": "\n",
         "test": "def check(candidate):\n    assert candidate(4) == 8\n"},
        {"task_id": "RandomSpanInfillingLight/add/1", "entry_point": "add",
         "prompt": "def add(a, b):\n    c = a", "canonical_solution": " + b\n    return",
         "suffix": " c\n", "test": CHECK_ADD},
        {"task_id": "RandomSpanInfillingLight/neg/2", "entry_point": "neg",
         "prompt": "def neg(x):\n    return ", "canonical_solution": "-x", "suffix": "\n",
         "test": "def check(candidate):\n    assert candidate(4) == -4\n"},
    ],
}


def write_set(path: Path, tasks: list[dict]) -> Path:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8") as fh:  # type: ignore[operator]
        fh.writelines(json.dumps(t) + "\n" for t in tasks)
    return path


# -- the paired sign test --------------------------------------------------------------------
def test_sign_test_matches_the_exact_binomial_tails():
    # n = 12 differing tasks, 10 won: 2 * (C(12,0) + C(12,1) + C(12,2)) / 2^12 (scipy's binomtest gives the same).
    assert sign_test(10, 2) == pytest.approx(2 * (1 + 12 + 66) / 4096)
    assert sign_test(5, 0) == pytest.approx(2 / 32)
    assert sign_test(2, 10) == sign_test(10, 2)


def test_sign_test_without_a_difference_is_one():
    assert sign_test(0, 0) == 1.0
    assert sign_test(7, 7) == 1.0
    assert sign_test(8, 7) == 1.0


def test_sign_test_of_a_large_split_is_small():
    # 60 won, 30 lost: the normal approximation gives z = 30 / sqrt(90) = 3.16, p ~ 0.0016.
    p = sign_test(60, 30)
    assert 0.001 < p < 0.003
    assert p == pytest.approx(2 * sum(math.comb(90, k) for k in range(31)) / 2 ** 90)


# -- exact match ---------------------------------------------------------------------------
def test_exact_match_ignores_the_whitespace_around_a_line():
    assert exact_match("return a + b", "    return a + b\n")
    assert exact_match("  return a + b  \n", "    return a + b\n")


def test_exact_match_keeps_whitespace_inside_a_line():
    assert not exact_match("return a+b", "    return a + b\n")
    assert not exact_match("return a + b\n    return c", "    return a + b\n")


def test_exact_match_of_blocks_compares_line_by_line():
    canonical = "    for x in xs:\n        s += x\n"
    assert exact_match("for x in xs:\n    s += x", canonical)  # the indentation is normalised away
    assert exact_match("    for x in xs:\n\n        s += x\n\n", canonical)  # and blank lines
    assert not exact_match("    for x in xs:\n", canonical)
    assert normalise("\n            if idx != idx2:\n                d = 1") == "if idx != idx2:\nd = 1"


def test_an_empty_answer_matches_only_an_empty_middle():
    assert not exact_match("", "    return a + b\n")
    assert exact_match("\n", "")


# -- loading and sampling ------------------------------------------------------------------
def test_a_raw_answer_is_cut_where_it_writes_the_suffix_out_again():
    suffix = "\n    return total\n\n\ndef check(candidate):\n    assert candidate([]) == 0\n"
    ran_on = "    total = sum(xs)\n    return total\n\n\ndef check(candidate):\n    assert cand"
    assert cut_at_suffix(ran_on, suffix, whole_lines=True) == "    total = sum(xs)\n"
    capped = "    total = sum(xs)\n    return total\n\n"  # the token cap hit inside the echo
    assert cut_at_suffix(capped, suffix, whole_lines=True) == "    total = sum(xs)\n"
    assert cut_at_suffix("    total = sum(xs)\n", suffix, whole_lines=True) == "    total = sum(xs)\n"
    # A span: the echo may start mid-line.
    assert cut_at_suffix("sum(xs))\n    return total\n\n\ndef check(c", ")\n    return total\n\n\ndef check(c",
                         whole_lines=False) == "sum(xs)"
    # Too little suffix left to tell an echo from an answer: unchanged.
    assert cut_at_suffix("x)\n", ")\n", whole_lines=False) == "x)\n"


def test_sample_spreads_n_tasks_evenly_and_defaults_to_all():
    tasks = [{"task_id": str(i)} for i in range(1033)]
    picked = sample(tasks, 400)
    # The selection runs made with -n N before --set existed used: the same N, the same tasks.
    assert [t["task_id"] for t in picked] == [str(round(i * 1033 / 400)) for i in range(400)]
    assert len({t["task_id"] for t in picked}) == 400
    assert sample(tasks, None) == tasks
    assert sample(tasks, 0) == tasks
    assert sample(tasks, 5000) == tasks


def test_shards_split_the_selection_without_overlap_and_skip_resumes_one():
    tasks = [{"task_id": str(i)} for i in range(1033)]
    shards = [select_tasks(tasks, 300, f"{i}/3", 0) for i in (1, 2, 3)]
    ids = [t["task_id"] for shard in shards for t in shard]
    assert sorted(ids, key=int) == [t["task_id"] for t in sample(tasks, 300)]
    assert len(set(ids)) == 300
    # --skip applies inside the shard: a stopped shard is finished with the same --shard.
    assert select_tasks(tasks, 300, "2/3", 40) == shards[1][40:]
    assert select_tasks(tasks, None, None, 1030) == tasks[1030:]


@pytest.mark.parametrize("text", ["0/2", "3/2", "1", "a/b", "1/0"])
def test_a_shard_outside_one_to_n_is_a_clear_error(text: str):
    with pytest.raises(ValueError, match="--shard"):
        parse_shard(text)


def test_read_runs_refuses_a_task_counted_twice_and_mixed_sets(tmp_path: Path):
    one = tmp_path / "a.jsonl"
    one.write_text(json.dumps({"task_id": "t1", "set": "single"}) + "\n")
    again = tmp_path / "b.jsonl"
    again.write_text(json.dumps({"task_id": "t1", "set": "single"}) + "\n")
    with pytest.raises(ValueError, match="t1 is already"):
        read_runs([str(one), str(again)])
    span = tmp_path / "c.jsonl"
    span.write_text(json.dumps({"task_id": "t2", "set": "span"}) + "\n")
    with pytest.raises(ValueError, match="mix sets"):
        read_runs([str(one), str(span)])
    broken = tmp_path / "d.jsonl"
    broken.write_text("{not json\n")
    with pytest.raises(ValueError, match="d.jsonl:1"):
        read_runs([str(broken)])


def test_load_tasks_reads_gzip_and_plain_jsonl(tmp_path: Path):
    gz = write_set(tmp_path / "set.jsonl.gz", TASKS["multi"])
    plain = write_set(tmp_path / "set.jsonl", TASKS["multi"])
    assert load_tasks(gz) == load_tasks(plain) == TASKS["multi"]
    assert [t["task_id"] for t in load_tasks(gz, 2)] == [TASKS["multi"][0]["task_id"], TASKS["multi"][2]["task_id"]]


def test_find_data_names_each_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    folder = tmp_path / "shared" / "benchmarks" / "human-eval-infilling"
    folder.mkdir(parents=True)
    for name in SETS.values():
        (folder / name).write_bytes(b"")
    work = tmp_path / "checkout" / "sub"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    assert find_data(None, "multi") == folder / "HumanEval-MultiLineInfilling.jsonl.gz"
    assert find_data(None, "span") == folder / "HumanEval-RandomSpanInfillingLight.jsonl.gz"
    assert find_data(None) == folder / "HumanEval-SingleLineInfilling.jsonl.gz"
    assert find_data("x.jsonl", "span") == Path("x.jsonl")


def test_find_data_without_the_set_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match="HumanEval-RandomSpanInfillingLight.jsonl.gz not found; pass --data"):
        find_data(None, "span")


# -- how a hole reaches the server -----------------------------------------------------------
@pytest.mark.parametrize("set_name", ["single", "multi"])
def test_a_missing_line_is_an_empty_line_with_the_cursor_on_it(set_name: str):
    task = TASKS[set_name][0]
    where = hole(task, set_name)
    lines = where.document.split("\n")
    assert lines[where.line] == "" and where.column == 0
    assert "\n".join(lines[: where.line]) + "\n" == task["prompt"]
    assert "\n".join(lines[where.line + 1:]) == task["suffix"]
    # The answer on that line is the middle with its newline; the canonical one passes, a wrong one fails.
    assert where.middle(task["canonical_solution"].rstrip("\n")) == task["canonical_solution"]
    assert passes(task, where.middle(task["canonical_solution"].rstrip("\n")))
    assert not passes(task, where.middle("    pass"))


def test_a_span_puts_the_cursor_where_the_hole_starts_mid_line():
    task = TASKS["span"][1]  # the hole starts after "    c = a" and ends before " c"
    where = hole(task, "span")
    assert where.document == task["prompt"] + task["suffix"]
    line = where.document.split("\n")[where.line]
    assert line[: where.column] == "    c = a" and where.column == 9
    assert where.middle(" + b\n    return") == " + b\n    return"  # nothing added to a span
    assert passes(task, where.middle(task["canonical_solution"]))
    assert not passes(task, where.middle(" - b\n    return"))


def test_the_canonical_middle_of_every_fixture_task_passes():
    for tasks in TASKS.values():
        for task in tasks:
            assert passes(task, task["canonical_solution"]), task["task_id"]
            assert exact_match(task["canonical_solution"], task["canonical_solution"])


# -- a whole run, as a user runs it ----------------------------------------------------------
@pytest.mark.parametrize("set_name", ["single", "multi", "span"])
def test_bench_humaneval_runs_a_set_with_the_tiny_model(set_name: str, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]):
    data = write_set(tmp_path / f"{set_name}.jsonl.gz", TASKS[set_name])
    jsonl = tmp_path / "out.jsonl"
    code = cli.main(["bench", "humaneval", "--set", set_name, "--data", str(data), "--sample", "2",
                     "--model", str(TINY_MODEL), "--threads", "1", "--raw-max-tokens", "24",
                     "--jsonl", str(jsonl)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "2 HumanEval" in out
    assert "pass@1 server (windows + shaping): " in out and "pass@1 raw model, plain FIM: " in out
    assert "exact match server: " in out and "; raw: " in out
    assert "paired vs raw: server won " in out and "sign test p = " in out
    assert "generated tokens/s: server " in out
    assert "[2/2] server " in err
    rows = [json.loads(x) for x in jsonl.read_text().splitlines()]
    assert [r["task_id"] for r in rows] == [TASKS[set_name][0]["task_id"], TASKS[set_name][2]["task_id"]]
    for row in rows:
        assert row["set"] == set_name
        assert isinstance(row["pass"], bool) and isinstance(row["raw_pass"], bool)
        assert isinstance(row["em"], bool) and isinstance(row["raw_em"], bool)
        assert isinstance(row["raw_text"], str) and row["raw_tokens"] <= 24
        # The fields runs made before --set wrote are still there.
        assert {"text", "backend", "route", "ms", "multiline", "mean_logprob", "min_logprob"} <= row.keys()
        # answer_length auto (the default): the first answers are the model's, paired with the rules'
        assert row["answer_length"] == "model" and isinstance(row["rules_pass"], bool)
    assert "answer length auto: the model's own length on 2 of 2 tasks" in out
    won = sum(r["pass"] and not r["raw_pass"] for r in rows)
    lost = sum(r["raw_pass"] and not r["pass"] for r in rows)
    assert f"paired vs raw: server won {won}, lost {lost}, tied {2 - won - lost}" in out
    if set_name == "single":
        assert "raw cut where it repeats the suffix" not in out and rows[0]["raw_cut_pass"] is None
    else:
        cut_ok = sum(r["raw_cut_pass"] for r in rows)
        assert f"raw cut where it repeats the suffix: pass@1 {cut_ok}/2 = " in out


def test_bench_humaneval_skip_leaves_out_the_first_tasks(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    data = write_set(tmp_path / "single.jsonl.gz", TASKS["single"])
    jsonl = tmp_path / "out.jsonl"
    code = cli.main(["bench", "humaneval", "--set", "single", "--data", str(data), "--skip", "1", "--no-raw",
                     "--model", str(TINY_MODEL), "--threads", "1", "--jsonl", str(jsonl)])
    assert code == 0
    rows = [json.loads(x) for x in jsonl.read_text().splitlines()]
    assert [r["task_id"] for r in rows] == [task["task_id"] for task in TASKS["single"][1:]]


@pytest.mark.parametrize("set_name", ["single", "span"])
def test_report_of_two_shards_adds_up_to_the_tables_the_shards_printed(set_name: str, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]):
    data = write_set(tmp_path / f"{set_name}.jsonl.gz", TASKS[set_name])
    files, rows = [], []
    for i in (1, 2):
        jsonl = tmp_path / f"shard{i}.jsonl"
        code = cli.main(["bench", "humaneval", "--set", set_name, "--data", str(data), "--shard", f"{i}/2",
                         "--model", str(TINY_MODEL), "--threads", "1", "--raw-max-tokens", "12",
                         "--jsonl", str(jsonl)])
        assert code == 0
        files.append(str(jsonl))
        rows += [json.loads(x) for x in jsonl.read_text().splitlines()]
    capsys.readouterr()
    assert sorted(r["task_id"] for r in rows) == sorted(t["task_id"] for t in TASKS[set_name])
    assert cli.main(["bench", "humaneval", "--report", *files]) == 0
    out = capsys.readouterr().out
    noun = "random-span" if set_name == "span" else "single-line"
    assert f"3 HumanEval {noun} infilling tasks from 2 run file(s)" in out
    ok, raw_ok = sum(r["pass"] for r in rows), sum(r["raw_pass"] for r in rows)
    won = sum(r["pass"] and not r["raw_pass"] for r in rows)
    lost = sum(r["raw_pass"] and not r["pass"] for r in rows)
    assert f"pass@1 server (windows + shaping): {ok}/3 = {100 * ok / 3:.1f}%" in out
    assert f"pass@1 raw model, plain FIM:        {raw_ok}/3 = " in out
    assert f"paired vs raw: server won {won}, lost {lost}, tied {3 - won - lost}" in out
    assert ("raw cut where it repeats the suffix" in out) == (set_name == "span")


def test_report_of_a_missing_file_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert cli.main(["bench", "humaneval", "--report", str(tmp_path / "none.jsonl")]) == 2
    assert "error:" in capsys.readouterr().err


def test_line_or_block_counts_answers_by_shape_against_the_hole_size():
    assert hole_lines("MultiLineInfilling/HumanEval/0/L3_L5") == 3
    assert hole_lines("MultiLineInfilling/HumanEval/0/L0_L0") == 1
    assert hole_lines("SingleLineInfilling/HumanEval/0/L1") is None
    assert [answer_lines(t) for t in ("", "\n", "x = 1\n", "if a:\n    b\n")] == [0, 0, 1, 2]
    rows = [
        {"task_id": "M/H/0/L0_L0", "text": "    return x\n", "pass": True, "raw_cut_pass": True},
        {"task_id": "M/H/1/L2_L2", "text": "    for a in b:\n        c\n", "pass": False, "raw_cut_pass": True},
        {"task_id": "M/H/2/L1_L3", "text": "    for a in b:\n", "pass": False, "raw_cut_pass": False},
        {"task_id": "M/H/3/L1_L2", "text": "    a = 1\n    b = 2\n", "pass": True, "raw_cut_pass": False},
        {"task_id": "M/H/4/L1_L2", "text": "", "pass": False, "raw_cut_pass": False},
    ]
    report = line_or_block(rows)
    assert report[1] == ("  hole of 1 line: 2 tasks; server pass 1, raw cut 2; answered with "
                         "one line 1 (pass 1), a block 1 (pass 0)")
    assert report[2] == ("  hole of 2+ lines: 3 tasks; server pass 1, raw cut 0; answered with "
                         "nothing 1 (pass 0), one line 1 (pass 0), a block 1 (pass 1)")
    # A run without the raw model (--no-raw) has no raw cut to show.
    no_raw = line_or_block([{**row, "raw_cut_pass": None} for row in rows])
    assert no_raw[1] == ("  hole of 1 line: 2 tasks; server pass 1, answered with "
                         "one line 1 (pass 1), a block 1 (pass 0)")


def test_model_or_rules_pairs_the_model_length_with_the_rules_on_the_same_generation():
    rows = [
        {"text": "a\nb", "rules_text": "a", "pass": True, "rules_pass": False, "length_by": "model", "rules_em": True},
        {"text": "c", "rules_text": "c", "pass": True, "rules_pass": True, "length_by": "model"},
        {"text": "d", "rules_text": "d", "pass": False, "rules_pass": False, "length_by": "rules"},
        {"text": "e\nf", "rules_text": "e", "pass": False, "rules_pass": True, "length_by": "model"},
        {"text": "g\nh", "rules_text": "g", "pass": True, "rules_pass": False, "length_by": "model"},
    ]
    report = model_or_rules([{"rules_em": False, **row} for row in rows])
    assert report[0] == "the same generations shaped by the rules: pass@1 2/5 = 40.0%, exact match 1/5 = 20.0%"
    assert report[1].startswith("paired, model length vs rules: won 2, lost 1; difference +20.0 points;")
    assert report[1].endswith("the model ended 4/5 answers, 3 differ from the rules'")


def test_report_replays_answer_length_auto_on_a_model_length_run():
    from slm_lsp.bench.humaneval import replay_auto
    from slm_lsp.engine.shaping import AnswerLengthChoice

    window, n = AnswerLengthChoice.SAMPLE, AnswerLengthChoice.SAMPLE + 8
    tasks = [{"task_id": f"SingleLineInfilling/f/L{i}", "prompt": "def f(a):\n    b = a + 1\n",
              "suffix": "    return c\n", "canonical_solution": "    c = b\n"} for i in range(n)]
    run_on = "".join(f"    c{i} = {i}\n" for i in range(20))  # past completion.max_lines: the model ran on
    # A model that runs on everywhere; its model-length answers fail where the rules' cut passes.
    rows = [{"task_id": t["task_id"], "generated": run_on, "stop_reason": "stop", "pass": False,
             "rules_pass": True, "length_by": "rules"} for t in reversed(tasks)]  # any file order
    lines = replay_auto(rows, tasks, "single")
    # auto: the model's length for the first SAMPLE answers, then the rules' (no retry before
    # PROBE_EVERY more requests)
    assert lines[0] == (f"answer length auto, replayed on these generations: pass@1 {n - window}/{n} = "
                        f"{100 * (n - window) / n:.1f} (rules 100.0, model 0.0); the model's length on {window} "
                        f"tasks, the rules' on {n - window}")
    assert f"vs rules: won 0, lost {window}, " in lines[1] and f"vs model: won {n - window}, lost 0" in lines[1]
    assert f"the model had ended 0 of the last {window} answers it could end (rules next)" in lines[1]
    # Not a model-length run (no rules cut recorded): nothing to replay.
    assert replay_auto([{**r, "rules_pass": None} for r in rows], tasks, "single") == []
