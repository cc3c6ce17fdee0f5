"""Next-edit training data: the questions from older history, the tokenized examples (the tiny
GGUF's llama.cpp tokenizer stands in for the model's), the cut before the held-out commits, the
files a mixed run trains FIM on, and the adapter's template flag the server reads."""

from __future__ import annotations

import json
import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from finetune.config import TASK_DEFAULTS, ConfigError, FinetuneConfig, from_args
from finetune.data import IGNORE_INDEX, DataSettings
from finetune.history import HELDOUT_COMMITS, Commit, FileChange, Hunk, Step, mine, split_history
from finetune.next_edit import (
    MixedExampleMaker,
    NextEditExampleMaker,
    away_steps,
    decision_token,
    files_at,
    jump_steps,
    mark_template,
    split_commits,
    task_data,
    training_steps,
)
from slm_lsp.engine.fim import FimTemplate
from slm_lsp.engine.model import ADAPTER_TEMPLATE, LlamaRunner, LlamaVocab
from slm_lsp.engine.next_edit import NextEditInput, render_prompt, render_target, trained_for_next_edit
from tests.conftest import TINY_MODEL
from tests.finetune import test_lora
from tests.finetune.test_history import commit, git, new_repo, numbered

tiny = test_lora.tiny
"""The tiny model and its HF directory (a module fixture of the LoRA tests)."""

BODY = "def area(w, h):\n    return w * h\n\n\n" + numbered(80) + "\ndef perimeter(w, h):\n    return 2 * (w + h)\n"


@pytest.fixture(scope="module")
def runner():
    r = LlamaRunner(str(TINY_MODEL), threads=1, n_ctx=512)
    yield r
    r.close()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """Eight commits: each renames one variable at two nearby lines of geom.py (two hunks), the
    last three touch a file the first five do not change in the same way."""
    repo = new_repo(tmp_path / "geom")
    text = BODY
    commit(repo, {"geom.py": text, "other.py": "A = 1\n" * 30}, "create")
    for i in range(7):
        old, new = f"x{10 * i + 5} = {10 * i + 5}", f"y{10 * i + 5} = {10 * i + 5}"
        text = text.replace(old + "\n", new + "\n").replace(f"x{10 * i + 7} = ", f"y{10 * i + 7} = ")
        commit(repo, {"geom.py": text}, f"rename {i}")
    commit(repo, {"other.py": "A = 2\n" + "A = 1\n" * 29}, "late change to other.py")
    return repo


def two_hunk_commit() -> Commit:
    before = numbered(60)
    hunks = [Hunk("a.py", 10, ["x10 = 10\n"], ["y10 = 10\n"]), Hunk("a.py", 12, ["x12 = 12\n"], ["y12 = 12\n"])]
    return Commit("c1", 0, "rename", [FileChange("a.py", before, hunks)])


def test_jump_questions_put_the_cursor_above_the_next_hunk() -> None:
    [jump] = jump_steps(two_hunk_commit(), random.Random(0))
    assert jump.kind == "jump" and jump.index == 1
    # The region is the file after the first hunk; the answer applies the second one there.
    assert "y10 = 10\n" in jump.region and "x12 = 12\n" in jump.region
    assert jump.target == jump.region.replace("x12 = 12\n", "y12 = 12\n")
    cursor_line = jump.region[:jump.cursor].count("\n") + jump.region_start
    assert 9 <= cursor_line <= 11
    assert jump.region[jump.cursor] == "\n"  # the end of a line
    assert len(jump.edits) == 1 and "+y10 = 10\n" in jump.edits[0]


def test_away_questions_are_far_from_every_change_and_expect_nothing() -> None:
    for seed in range(20):
        [away] = away_steps(two_hunk_commit(), random.Random(seed))
        assert away.kind == "away" and away.target is None
        assert "y10" not in away.region and "y12" not in away.region
        assert away.region_start > 12 + 2 or away.region_start + away.region.count("\n") < 10
        assert len(away.edits) == 2


def test_training_steps_hold_replayed_jump_and_away_questions(repo: Path) -> None:
    steps = training_steps(mine(repo), seed=0)
    kinds = {s.kind for s in steps}
    assert {"next", "last", "jump", "away"} <= kinds
    for s in steps:
        assert s.target is None or s.target != s.region
        assert 0 <= s.cursor <= len(s.region)


def test_a_short_history_always_keeps_a_validation_commit() -> None:
    # Any hashes (here: 200 seeds over 7 commits, the end-to-end repo's size): a validation
    # commit, the rest for training, each in history's order and none in both.
    history = [Commit(f"{i:040x}", i, f"c{i}") for i in range(7)]
    for seed in range(200):
        train, valid = split_commits(history, seed, 0.1)
        assert len(valid) == 1 and len(train) == 6
        assert {c.sha for c in train} | {c.sha for c in valid} == {c.sha for c in history}
        assert [c.time for c in train] == sorted(c.time for c in train)
    longer = [Commit(f"{i:040x}", i, f"c{i}") for i in range(21)]
    assert len(split_commits(longer, 0, 0.1)[1]) == 2  # a fraction of a longer one
    assert split_commits(history[:1], 0, 0.1) == (history[:1], [])  # one commit: nothing to spare


def test_example_is_the_server_prompt_then_the_answer_with_loss_on_the_answer(runner) -> None:
    step = Step("c", "a.py", 0, ["--- a/a.py\n+++ b/a.py\n@@ -1 +1 @@\n-x = 1\n+y = 1\n"], "y = 1\nz = x\n", 5, 0,
                "y = 1\nz = y\n", "next")
    end = runner.special("<|endoftext|>")
    maker = NextEditExampleMaker([step], runner, end_token=end, bos=[], seq_len=512, seed=0)
    ex = maker.make(step)
    assert ex is not None
    prompt = runner.tokenize(render_prompt(NextEditInput("a.py", step.edits, step.region, step.cursor)))
    answer = runner.tokenize(render_target("y = 1\nz = y\n")) + [end]
    assert ex.input_ids == prompt + answer
    assert ex.labels == [IGNORE_INDEX] * len(prompt) + answer
    assert ex.kind == "next-edit:next"
    # A no-edit question learns the no-edit marker.
    none = maker.make(Step("c", "a.py", 0, step.edits, step.region, 5, 0, None, "last"))
    assert none is not None
    assert none.input_ids[len(prompt):] == runner.tokenize(render_target(None)) + [end]
    # Deterministic by index.
    assert maker.example(3).input_ids == maker.example(3).input_ids


def test_a_long_history_loses_its_oldest_edits_to_fit(runner) -> None:
    edits = [f"--- a/a.py\n+++ b/a.py\n@@ -{i} +{i} @@\n-{'old ' * 20}\n+{'new ' * 20}\n" for i in range(3)]
    step = Step("c", "a.py", 2, edits, "a = 1\n" * 5, 0, 0, None, "last")
    end = runner.special("<|endoftext|>")
    full = NextEditExampleMaker([step], runner, end_token=end, seq_len=4096).make(step)
    assert full is not None
    one_less = len(full.input_ids) - 1
    cut = NextEditExampleMaker([step], runner, end_token=end, seq_len=one_less).make(step)
    assert cut is not None and len(cut.input_ids) <= one_less
    assert "@@ -0 +0 @@" not in runner.detokenize(cut.input_ids) and "@@ -2 +2 @@" in runner.detokenize(cut.input_ids)
    assert NextEditExampleMaker([step], runner, end_token=end, seq_len=40).make(step) is None


def test_task_data_never_trains_on_the_held_out_commits(repo: Path, runner) -> None:
    cfg = FinetuneConfig(repo=str(repo), base="x", out="y", task="next-edit", heldout_commits=3,
                         heldout_fraction=0.25, seq_len=1024, eval_examples=4)
    base = SimpleNamespace(tokenizer=runner, end_token=runner.special("<|endoftext|>"), bos=[],
                           template=runner.template)
    data = task_data(cfg, base, "geom", DataSettings())
    older, recent = split_history(mine(repo), 3)
    held = {c.sha for c in recent}
    trained = {s.commit for s in data.maker.steps}
    assert trained and not trained & held
    assert trained <= {c.sha for c in older}
    assert data.summary["cut"] == older[-1].sha and data.summary["heldout_from"] == recent[0].sha
    assert len(data.eval_examples) == 4 and data.fim_files is None
    assert {e.kind.split(":")[0] for e in data.eval_examples} == {"next-edit"}
    # The validation commits (the loss before and after) are older ones, none of them trained on.
    assert data.summary["validation_commits"] >= 1
    assert data.summary["train_commits"] + data.summary["validation_commits"] == len(older)


def test_mixed_trains_fim_on_the_files_at_the_cut(repo: Path, runner, tmp_path: Path) -> None:
    older, recent = split_history(mine(repo), 1)
    dest = files_at(repo, older[-1].sha, tmp_path / "cut")
    # The last commit (held out) changed other.py: its FIM files are the version before it.
    assert (dest / "other.py").read_text() == "A = 1\n" * 30
    assert (dest / "geom.py").read_text() == git(repo, "show", f"{older[-1].sha}:geom.py")
    cfg = FinetuneConfig(repo=str(repo), base="x", out="y", task="mixed", heldout_commits=1, heldout_fraction=0.3,
                         seq_len=1024, eval_examples=4, next_edit_fraction=0.5)
    base = SimpleNamespace(tokenizer=runner, end_token=runner.special("<|endoftext|>"), bos=[],
                           template=runner.template)
    data = task_data(cfg, base, "geom", DataSettings(seq_len=256))
    assert isinstance(data.maker, MixedExampleMaker) and data.fim_files is not None
    kinds = [e.kind for e in data.maker.examples(range(40))]
    share = sum(k.startswith("next-edit") for k in kinds) / len(kinds)
    assert 0.25 < share < 0.75
    assert sorted(e.kind.startswith("next-edit") for e in data.eval_examples) == [False, False, True, True]
    assert {f.path for f in data.fim_files.train + data.fim_files.heldout} == {"geom.py", "other.py"}
    assert any(f.text == "A = 1\n" * 30 for f in data.fim_files.train + data.fim_files.heldout)


def test_task_data_refuses_a_history_that_is_all_held_out(repo: Path, runner) -> None:
    cfg = FinetuneConfig(repo=str(repo), base="x", out="y", task="next-edit", heldout_commits=100)
    base = SimpleNamespace(tokenizer=runner, end_token=0, bos=[], template=runner.template)
    with pytest.raises(ValueError, match="held out"):
        task_data(cfg, base, "geom", DataSettings())


def test_the_adapter_template_says_it_knows_the_next_edit_format(tmp_path: Path) -> None:
    path = tmp_path / ADAPTER_TEMPLATE
    FimTemplate("qwen2.5-coder", "psm", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>",
                ("<|endoftext|>",)).save(path)
    assert not trained_for_next_edit(path)
    mark_template(path)
    assert trained_for_next_edit(path)  # what the server reads
    assert FimTemplate.load(path).prefix == "<|fim_prefix|>"  # still a FIM template
    assert json.loads(path.read_text())["next_edit"] is True
    assert path.stat().st_mode & 0o044 == 0o044


def test_task_flags_and_their_defaults() -> None:
    given = {"repo": "r", "base": "b", "out": "o"}
    assert from_args(given).task == "fim" and from_args(given).seq_len == 256
    cfg = from_args({**given, "task": "next-edit"})
    assert cfg.seq_len == TASK_DEFAULTS["next-edit"]["seq_len"] == 768
    # A rewrite and the no-edit marker differ in one token: every answer token weighs the same.
    assert cfg.loss_per == "token" and from_args(given).loss_per == "example"
    assert from_args({**given, "task": "next-edit", "loss_per": "example"}).loss_per == "example"
    with pytest.raises(ConfigError, match="--loss-per"):
        from_args({**given, "loss_per": "sequence"})
    assert from_args({**given, "task": "mixed", "seq_len": 512}).seq_len == 512
    # The finetune cut and the evaluation's default agree.
    assert FinetuneConfig().heldout_commits == HELDOUT_COMMITS
    with pytest.raises(ConfigError, match="--task"):
        from_args({**given, "task": "rewrite"})
    with pytest.raises(ConfigError, match="--next-edit-fraction"):
        from_args({**given, "task": "mixed", "next_edit_fraction": 1.5})
    with pytest.raises(ConfigError, match="--heldout-commits"):
        from_args({**given, "heldout_commits": -1})


def test_finetune_next_edit_end_to_end_marks_the_adapter_for_the_server(repo: Path, tiny, tmp_path: Path) -> None:
    """``slm-lsp finetune --task next-edit`` on the tiny model: trained on the older commits,
    published with ``"next_edit": true``, and the runner then uses the raw next-edit prompt."""
    from finetune.lora import main

    gguf, hf_dir = tiny
    cfg = test_lora.config(tmp_path, hf_dir, gguf=str(gguf), repo=str(repo), task="next-edit", heldout_commits=2,
                 seq_len=1024, eval_lines=0, eval_examples=4, steps=4, grad_accum=1)
    assert main(cfg) == 0
    out = Path(cfg.out)
    report = json.loads((out / "eval.json").read_text())
    assert report["after"]["loss"] < report["before"]["loss"], report
    # The edit-or-not decision was checked before and after on the validation questions.
    for when in ("before", "after"):
        d = report[when]["decisions"]
        assert d["edit"]["of"] + d["none"]["of"] >= 1 and 0 <= d["edit"]["right"] <= d["edit"]["of"], report
    assert trained_for_next_edit(out / ADAPTER_TEMPLATE)
    r = LlamaRunner(str(gguf), threads=1, n_ctx=512)
    try:
        r.set_adapter(str(out / "adapter.gguf"))
        assert r.next_edit_prompt
    finally:
        r.close()


def test_a_mixed_run_gates_on_the_lines_a_fim_run_on_the_cut_asks(tmp_path: Path, tiny, capsys) -> None:
    """``--task mixed`` trains FIM on the files at the cut; its gate asks the same held-out lines,
    own-name lines included, as a FIM run on a checkout of the cut, and says which: the two
    adapters' answers pair up line by line (one adapter for both tasks, or one for each)."""
    from finetune.lora import main

    gguf, hf_dir = tiny
    repo = new_repo(tmp_path / "shapes")
    users = {f"use{i}.py": "from geom import area, perimeter\n\n" + "".join(
        f"def shape{i}_{k}(w, h):\n    return area(w, h) + perimeter(w, {k})\n\n" for k in range(10))
        for i in range(4)}
    text = BODY
    commit(repo, {"geom.py": text, **users}, "create")
    for i in range(8):
        text = text.replace(f"x{10 * i + 5} = ", f"y{10 * i + 5} = ").replace(f"x{10 * i + 7} = ", f"y{10 * i + 7} = ")
        commit(repo, {"geom.py": text}, f"rename {i}")
    older, _ = split_history(mine(repo), 2)
    cut = tmp_path / "cut"
    git(tmp_path, "clone", "-q", str(repo), str(cut))
    git(cut, "checkout", "-q", older[-1].sha)
    reports = {}
    for task, source in (("mixed", repo), ("fim", cut)):
        cfg = test_lora.config(tmp_path, hf_dir, gguf=str(gguf), repo=str(source), task=task, heldout_commits=2,
                               out=str(tmp_path / task), eval_lines=6, eval_examples=4, steps=2, grad_accum=1,
                               **({"seq_len": 1024} if task == "mixed" else {}))
        assert main(cfg) == 0
        reports[task] = json.loads((Path(cfg.out) / "eval.json").read_text())
    mixed, fim = reports["mixed"], reports["fim"]
    assert len(mixed["line_tasks"]) == 6 and mixed["line_tasks"] == fim["line_tasks"]
    assert len(mixed["after"]["lines"]) == len(fim["after"]["lines"]) == 6
    assert "own_names" in mixed["gate"]  # the mixed gate reports its own-name lines, as the FIM one does
    # One adapter for both tasks against one for each, on FIM: the command pairs them line by line.
    from slm_lsp.cli import main as cli_main

    reports_paths = [str(tmp_path / task / "eval.json") for task in ("fim", "mixed")]
    assert cli_main(["eval", "--compare", *reports_paths]) == 0
    assert "on 6 held-out lines both asked:" in capsys.readouterr().out


def test_decision_token_is_where_a_rewrite_and_no_edit_part() -> None:
    vocab = LlamaVocab(str(TINY_MODEL))
    parted = decision_token(vocab)
    assert parted is not None
    at, none, edit = parted
    assert vocab.tokenize(render_target(None))[at] == none
    assert vocab.tokenize(render_target("x\n"))[at] == edit and none != edit
    assert vocab.tokenize(render_target(None))[:at] == vocab.tokenize(render_target("x\n"))[:at]


def test_next_edit_decisions_reads_the_logits_where_the_answers_part() -> None:
    """A stand-in model prefers the edit token exactly when the last token it was given is even:
    the check must look right before the deciding answer token, count per kind, and skip examples
    whose answer does not reach a decision."""
    torch: Any = pytest.importorskip("torch")
    from finetune.data import Example
    from finetune.evaluate import next_edit_decisions

    NONE, EDIT = 7, 8

    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, input_ids, attention_mask):  # noqa: ANN001
            logits = torch.zeros(1, input_ids.shape[1], 10)
            logits[0, -1, EDIT if int(input_ids[0, -1]) % 2 == 0 else NONE] = 1.0
            return SimpleNamespace(logits=logits)

    def example(prompt: list[int], answer: list[int]) -> Example:
        return Example(prompt + answer, [IGNORE_INDEX] * len(prompt) + answer, "p", "next-edit:x", "next-edit", "")

    examples = [
        example([1, 2, 3], [5, 6, EDIT, 9]),  # before the decision: 6, even: edit chosen, right
        example([1, 2, 3], [5, 6, NONE, 9]),  # edit chosen, wrong
        example([1, 2, 3], [5, 1, NONE, 9]),  # 1, odd: no edit chosen, right
        example([1, 2, 3], [5, 1, 4, 9]),     # the answer's third token decides nothing: skipped
        example([1, 2, 3], [5]),              # too short: skipped
    ]
    d = next_edit_decisions(Model(), examples, (2, NONE, EDIT))
    assert d == {"edit": {"right": 1, "of": 1}, "none": {"right": 1, "of": 2}}
