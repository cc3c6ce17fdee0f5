"""Next-edit training examples from a repository's older history (``slm-lsp finetune --task next-edit``).

The history is mined (``finetune.history.mine``) and cut where the evaluation's held-out commits
begin (``split_history``: the same cut as ``slm-lsp eval --task next-edit``), so no example
comes from a commit the evaluation replays. Each example is a next-edit question in the exact
text the server sends an adapter that knows the format (``engine.next_edit.render_prompt``),
followed by the answer it must learn (``render_target``: the rewritten region, or the no-edit
marker) and the end token; the loss is taken on the answer only.

The questions are the replayed steps of every older commit (``commit_steps``: after each hunk,
the next hunk if it is in the region around the cursor, else nothing) and two kinds that the
replay alone lacks: ``jump`` (the region around a next hunk the cursor was not near, the cursor
at the line above it: the user went there) and ``away`` (a region of a touched file far from
every change of the commit: nothing to do). A validation share of the older commits (by a hash
of the commit, ``heldout_fraction``) gives the held-out loss before and after training.

``--task mixed`` trains FIM and next-edit examples in one adapter: example ``i`` is a next-edit
one with probability ``next_edit_fraction``. Its FIM files are the repository as it was at the
cut (the code files of the last older commit), not the work tree: the work tree holds the
results of the held-out commits.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slm_lsp.context.files import name_skip_reason
from slm_lsp.engine.next_edit import NextEditInput, render_prompt, render_target
from slm_lsp.engine.prompt import Tokenizer

from .data import IGNORE_INDEX, Example, ExampleMaker, FileSet, held_out_count, load_files, split_key
from .history import (
    MAX_HISTORY,
    REGION_ABOVE,
    REGION_LINES,
    Commit,
    Replay,
    Step,
    commit_steps,
    fits_region,
    mine,
    read_blobs,
    region_bounds,
    split_history,
)

TEMPLATE_FLAG = "next_edit"
"""The key in an adapter's ``template.json`` that tells the server the adapter was trained on
``render_prompt`` (it then sends that raw prompt instead of the zero-shot chat prompt)."""


# -- questions ----------------------------------------------------------------------------------
def jump_steps(commit: Commit, rng: random.Random) -> list[Step]:
    """For each hunk after the first that a region holds: the region around it in its file as it
    is just before it, the cursor at the end of a line up to three lines above it."""
    hunks = commit.hunks
    if len(hunks) < 2 or len(hunks) > 40:
        return []
    replay = Replay(commit)
    diffs: list[str] = []
    out: list[Step] = []
    for k, h in enumerate(hunks):
        if k and fits_region(h):
            lines = replay.state[h.path]
            pos = replay.position(h)
            line = max(0, min(len(lines) - 1, pos - rng.randint(1, 3)))
            r0, r1 = region_bounds(len(lines), line, REGION_LINES, REGION_ABOVE)
            if lines and r0 <= pos and pos + len(h.old) <= r1 and (h.old or pos < r1):
                new = list(lines[r0:r1])
                new[pos - r0:pos - r0 + len(h.old)] = h.new
                region, target = "".join(lines[r0:r1]), "".join(new)
                column = len(lines[line].rstrip("\n"))
                cursor = sum(len(x) for x in lines[r0:line]) + column
                if target != region:
                    out.append(Step(commit.sha, h.path, k, diffs[-MAX_HISTORY:], region, cursor, r0, target,
                                    "jump", "", line, column))
        diff = replay.apply_next()[2]
        if diff:
            diffs.append(diff)
    return out


def away_steps(commit: Commit, rng: random.Random) -> list[Step]:
    """One region of a touched file (after the whole commit) that no hunk of the commit comes near:
    the commit's edits as history, and nothing to do."""
    hunks = commit.hunks
    if not hunks or len(hunks) > 40:
        return []
    replay = Replay(commit)
    diffs = []
    places: dict[str, list[int]] = {}
    for _ in hunks:
        h, at, diff = replay.apply_next()
        if diff:
            diffs.append(diff)
        places.setdefault(h.path, []).append(at)
    path = rng.choice(sorted(places))
    lines = replay.state[path]
    # Positions of earlier hunks of the file moved with the later ones; a margin covers that.
    touched = places[path]
    margin = REGION_LINES + sum(abs(h.delta) for h in hunks if h.path == path)
    free = [i for i in range(len(lines)) if all(abs(i - t) > margin for t in touched) and lines[i].strip()]
    if not free:
        return []
    line = rng.choice(free)
    r0, r1 = region_bounds(len(lines), line, REGION_LINES, REGION_ABOVE)
    column = len(lines[line].rstrip("\n"))
    cursor = sum(len(x) for x in lines[r0:line]) + column
    return [Step(commit.sha, path, len(hunks) - 1, diffs[-MAX_HISTORY:], "".join(lines[r0:r1]), cursor, r0, None,
                 "away", "", line, column)]


def training_steps(commits: list[Commit], seed: int = 0) -> list[Step]:
    """The replayed steps of ``commits`` and their ``jump`` and ``away`` questions."""
    rng = random.Random(f"next-edit:{seed}")
    out: list[Step] = []
    for c in commits:
        out += list(commit_steps(c))
        out += jump_steps(c, rng)
        out += away_steps(c, rng)
    return out


def step_input(step: Step, context: str = "") -> NextEditInput:
    return NextEditInput(step.path, list(step.edits), step.region, step.cursor, context)


# -- examples -----------------------------------------------------------------------------------
class NextEditExampleMaker:
    """Tokenized next-edit examples: ``render_prompt`` then ``render_target`` and the end token,
    the loss on the latter. Example ``i`` is a pure function of ``(seed, i)``."""

    def __init__(self, steps: list[Step], tokenizer: Tokenizer, *, end_token: int, bos: list[int] | None = None,
                 seq_len: int = 768, seed: int = 0) -> None:
        if not steps:
            raise ValueError("no next-edit questions to make examples from")
        self.steps, self.tok, self.end_token = steps, tokenizer, end_token
        self.bos, self.seq_len, self.seed = bos or [], seq_len, seed

    def make(self, step: Step) -> Example | None:
        """The example of ``step``; the oldest edits are dropped until it fits ``seq_len`` (None:
        it does not fit even with one)."""
        answer = self.tok.tokenize(render_target(step.target)) + [self.end_token]
        edits = list(step.edits)
        while True:
            prompt = self.bos + self.tok.tokenize(render_prompt(NextEditInput(step.path, edits, step.region,
                                                                              step.cursor)))
            if len(prompt) + len(answer) <= self.seq_len:
                break
            if len(edits) <= 1:
                return None
            edits = edits[1:]
        return Example(prompt + answer, [IGNORE_INDEX] * len(prompt) + answer, step.path, f"next-edit:{step.kind}",
                       "next-edit", render_target(step.target))

    def example(self, index: int) -> Example:
        rng = random.Random(f"{self.seed}:next-edit:{index}")
        for _ in range(50):
            ex = self.make(rng.choice(self.steps))
            if ex is not None:
                return ex
        raise RuntimeError("could not make a next-edit example that fits seq_len; raise --seq-len")

    def examples(self, indices: Any) -> list[Example]:
        return [self.example(i) for i in indices]


class MixedExampleMaker:
    """FIM and next-edit examples in one stream: example ``i`` is a next-edit one with
    probability ``fraction`` (decided by ``(seed, i)`` alone)."""

    def __init__(self, fim: ExampleMaker, next_edit: NextEditExampleMaker, fraction: float, seed: int = 0) -> None:
        self.fim, self.next_edit, self.fraction, self.seed = fim, next_edit, fraction, seed

    def example(self, index: int) -> Example:
        if random.Random(f"{self.seed}:mix:{index}").random() < self.fraction:
            return self.next_edit.example(index)
        return self.fim.example(index)

    def examples(self, indices: Any) -> list[Example]:
        return [self.example(i) for i in indices]


# -- files at the cut ---------------------------------------------------------------------------
def files_at(repo: Path, sha: str, dest: Path) -> Path:
    """The code files of commit ``sha`` written under ``dest`` (what the FIM side of a mixed run
    trains on): read from git objects, so files a partial clone lacks (large binaries) are never
    needed."""
    out = subprocess.run(["git", "-C", str(repo), "ls-tree", "-r", "-z", "--name-only", sha], check=True,
                         capture_output=True, timeout=120).stdout.decode("utf-8", "replace")
    paths = [p for p in out.split("\0") if p and name_skip_reason(p) is None]
    for path, data in zip(paths, read_blobs(Path(repo), [f"{sha}:{p}" for p in paths])):
        if data is None:
            continue
        target = dest / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return dest


def split_commits(commits: list[Commit], seed: int, fraction: float) -> tuple[list[Commit], list[Commit]]:
    """Training and validation commits, each in history's order: ``fraction`` of them (at least
    one of two or more) for validation, chosen by hash. Ranked, as the by-file split is: a
    threshold on the hash would leave a short history (7 commits, 0.1) without a validation
    commit about half the time."""
    ranked = sorted(commits, key=lambda c: split_key(seed, c.sha))
    valid_shas = {c.sha for c in ranked[:held_out_count(len(ranked), fraction)]}
    return [c for c in commits if c.sha not in valid_shas], [c for c in commits if c.sha in valid_shas]


# -- what finetune/lora.py calls ----------------------------------------------------------------
@dataclass
class TaskData:
    maker: Any
    """What the training loop draws example ``i`` from (``.examples(indices)``)."""
    eval_examples: list[Example]
    """Held-out examples for the loss before and after."""
    fim_files: FileSet | None
    """The FIM files (mixed), at the cut; None for next-edit alone (no line completion evaluation)."""
    summary: dict[str, Any]
    decision_examples: list[Example] = field(default_factory=list)
    """One example per validation question (at most ``DECISION_QUESTIONS``, spread over them):
    the edit-or-not decision before and after (``evaluate.next_edit_decisions``)."""
    decision: tuple[int, int, int] | None = None
    """(answer token, no-edit token, edit token) where the two answers part (``decision_token``)."""


DECISION_QUESTIONS = 64


def decision_token(tokenizer: Tokenizer) -> tuple[int, int, int] | None:
    """Where a no-edit answer and a rewrite first differ, in tokens (the markers are plain text
    to the tokenizer: ``<``, ``|``, then ``no`` or ``region`` for Qwen2.5-Coder): (index, the
    no-edit answer's token, the rewrite's token); None if one is a prefix of the other."""
    none = tokenizer.tokenize(render_target(None))
    edit = tokenizer.tokenize(render_target("x\n"))
    for i, (a, b) in enumerate(zip(none, edit)):
        if a != b:
            return i, a, b
    return None


def task_data(cfg: Any, base: Any, repo_name: str, fim_settings: Any) -> TaskData:
    """Training and held-out examples for ``cfg.task`` (``next-edit`` or ``mixed``) from the
    repository's history older than the evaluation's held-out commits."""
    repo = Path(cfg.repo)
    commits = mine(repo, max_file_bytes=cfg.max_file_bytes)
    older, recent = split_history(commits, cfg.heldout_commits)
    if not older:
        raise ValueError(f"{repo}: {len(commits)} commits, all of them held out (--heldout-commits "
                         f"{cfg.heldout_commits}): no older history to learn from")
    train, valid = split_commits(older, cfg.seed, cfg.heldout_fraction)
    train_steps = training_steps(train, cfg.seed)
    valid_steps = [s for c in valid for s in commit_steps(c)]
    if not train_steps or not valid_steps:
        raise ValueError(f"{repo}: too little history: {len(train_steps)} training and {len(valid_steps)} "
                         f"validation next-edit questions from {len(older)} older commits")
    ne = NextEditExampleMaker(train_steps, base.tokenizer, end_token=base.end_token, bos=base.bos,
                              seq_len=cfg.seq_len, seed=cfg.seed)
    ne_eval = NextEditExampleMaker(valid_steps, base.tokenizer, end_token=base.end_token, bos=base.bos,
                                   seq_len=cfg.seq_len, seed=cfg.seed + 1)
    n_eval = cfg.eval_examples
    summary: dict[str, Any] = {
        "commits": len(commits), "older": len(older), "heldout_commits": len(recent),
        "cut": older[-1].sha, "heldout_from": recent[0].sha if recent else None,
        "train_commits": len(train), "validation_commits": len(valid),
        "train_questions": dict(Counter(s.kind for s in train_steps)),
        "validation_questions": dict(Counter(s.kind for s in valid_steps)),
    }
    picked = [valid_steps[round(i * len(valid_steps) / DECISION_QUESTIONS)] for i in range(DECISION_QUESTIONS)] \
        if len(valid_steps) > DECISION_QUESTIONS else valid_steps
    decisions = [ex for ex in (ne_eval.make(s) for s in picked) if ex is not None]
    decision = decision_token(base.tokenizer)
    if cfg.task == "next-edit":
        return TaskData(ne, ne_eval.examples(range(n_eval)), None, summary, decisions, decision)
    tmp = Path(tempfile.mkdtemp(prefix="slm-finetune-cut-"))
    files = load_files(files_at(repo, older[-1].sha, tmp), heldout_fraction=cfg.heldout_fraction,
                       max_file_bytes=cfg.max_file_bytes, seed=cfg.seed)
    if not files.train or not files.heldout:
        raise ValueError(f"{repo}: too few code files at {older[-1].sha[:12]} for the FIM half of --task mixed")
    fim = ExampleMaker(files.train, base.template, base.tokenizer, end_token=base.end_token, bos=base.bos,
                       settings=fim_settings, repo_name=repo_name, seed=cfg.seed)
    fim_eval = ExampleMaker(files.heldout, base.template, base.tokenizer, end_token=base.end_token, bos=base.bos,
                            settings=fim_settings, repo_name=repo_name, seed=cfg.seed + 1)
    n_ne = round(n_eval * cfg.next_edit_fraction)
    evals = ne_eval.examples(range(n_ne)) + fim_eval.examples(range(n_eval - n_ne))
    summary["fim_files"] = {"train": len(files.train), "heldout": len(files.heldout), "at": older[-1].sha}
    return TaskData(MixedExampleMaker(fim, ne, cfg.next_edit_fraction, cfg.seed), evals, files, summary,
                    decisions, decision)


def mark_template(path: Path) -> None:
    """Add ``"next_edit": true`` to an adapter's ``template.json`` (atomically)."""
    data = json.loads(path.read_text())
    data[TEMPLATE_FLAG] = True
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2)
    os.chmod(tmp, 0o644)  # mkstemp made it private; template.json is an ordinary file beside the adapter
    os.replace(tmp, path)
