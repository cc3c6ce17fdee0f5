"""Held-out evaluation, before and after training, and the publish gate.

* ``heldout_loss``: mean cross-entropy per middle token on FIM examples from held-out files
  (torch; the adapter switched off gives "before").
* ``line_tasks`` + ``complete_lines``: line completions on held-out files answered by the
  server's own ``CompletionEngine`` on the GGUF (with the exported adapter and its template for
  "after"), so the numbers are what an editor user gets. The cursor sits at a random point of
  a line (not inside a word), the rest of the line is removed and the following lines stay as
  the suffix; exact match and edit similarity compare the first completed line with the
  removed text. Each task is a different line, spread over the held-out files round-robin;
  a share of them is drawn from lines whose removed text uses a name the training files
  define (``repo_names``), the part of a completion a repository's adapter can teach.
* ``compare_paired`` + ``decide``: the gate. Base and adapter answer the SAME tasks, so each
  task gives a paired difference: exact-match wins and losses with the exact sign test, and
  the mean edit-similarity difference with a paired bootstrap interval.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from slm_lsp.bench.humaneval import sign_test

from .data import IDENTIFIER, IGNORE_INDEX, Example, SourceFile, collate, line_span


@dataclass
class LineTask:
    path: str
    text: str
    """The document with the rest of the cursor line removed."""
    line: int
    column: int
    target: str
    own_names: bool = False
    """The removed text uses a name that the repository's training files define."""


@dataclass
class LineOutcome:
    """One task answered: what came back and how it scores against the removed text."""

    completion: str
    exact: bool
    similarity: float
    ms: float


@dataclass
class CompletionScores:
    exact_match: float
    edit_similarity: float
    n: int
    mean_ms: float

    @classmethod
    def of(cls, outcomes: list[LineOutcome]) -> CompletionScores:
        n = max(len(outcomes), 1)
        return cls(sum(o.exact for o in outcomes) / n, sum(o.similarity for o in outcomes) / n, len(outcomes),
                   sum(o.ms for o in outcomes) / n)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def next_edit_decisions(model: Any, examples: list[Example], decision: tuple[int, int, int]) -> dict[str, Any]:
    """How often the model takes the right branch where a next-edit answer decides between an
    edit and none: at answer token ``decision[0]``, the no-edit token ``decision[1]`` against the
    edit token ``decision[2]``, the larger logit wins. Per kind (``edit``: the example's answer is
    a rewrite; ``none``: the no-edit marker), right out of all. The held-out loss cannot show this:
    it is mostly the copied region's tokens, and an adapter that answers no edit everywhere
    still lowers it."""
    import torch

    offset, no_edit, edit = decision
    device = next(model.parameters()).device
    counts = {"edit": [0, 0], "none": [0, 0]}
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for ex in examples:
            first = next((i for i, x in enumerate(ex.labels) if x != IGNORE_INDEX), None)
            if first is None or first + offset >= len(ex.input_ids):
                continue
            at = first + offset
            truth = ex.input_ids[at]
            if truth not in (no_edit, edit):
                continue
            ids = torch.tensor([ex.input_ids[:at]], device=device)
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0, -1].float()
            chosen = edit if logits[edit] > logits[no_edit] else no_edit
            kind = "edit" if truth == edit else "none"
            counts[kind][0] += chosen == truth
            counts[kind][1] += 1
    model.train(was_training)
    return {kind: {"right": right, "of": n} for kind, (right, n) in counts.items()}


def describe_decisions(d: dict[str, Any]) -> str:
    return (f"edit chosen on {d['edit']['right']}/{d['edit']['of']} questions with an edit, "
            f"no edit on {d['none']['right']}/{d['none']['of']} without")


def heldout_loss(model: Any, examples: list[Example], pad_id: int, batch_size: int = 4) -> float:
    """Token-weighted mean loss over the labelled tokens of ``examples``."""
    import torch

    device = next(model.parameters()).device
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for i in range(0, len(examples), batch_size):
            batch = {k: torch.tensor(v, device=device) for k, v in collate(examples[i:i + batch_size], pad_id).items()}
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
            labels = batch["labels"][:, 1:]
            losses = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                                       labels.reshape(-1), ignore_index=IGNORE_INDEX,
                                                       reduction="sum")
            total += float(losses)
            count += int((labels != IGNORE_INDEX).sum())
    model.train(was_training)
    return total / max(count, 1)


# -- tasks --------------------------------------------------------------------------------------
def line_tasks(files: list[SourceFile], n: int, seed: int = 0, min_target: int = 6, *,
               names: set[str] | None = None, own_names_fraction: float = 0.0) -> list[LineTask]:
    """Up to ``n`` line completion tasks on different lines of ``files`` (deterministic for a
    seed): round-robin over the files so that they spread over all of them, first
    ``round(n * own_names_fraction)`` from lines that use one of ``names`` (the cursor placed
    before it), then from any line. Fewer than ``n`` only when the files do not have that many lines
    (non-blank, with at least ``min_target`` characters after the cursor)."""
    rng = random.Random(f"lines:{seed}")
    names = names or set()
    # (start of the removed text, end of the line, uses names) per file, in a seeded order
    candidates: list[list[tuple[int, int, bool]]] = []
    for f in files:
        found: list[tuple[int, int, bool]] = []
        offset = 0
        for line in f.text.split("\n"):
            # line_span cuts before the last two characters of what it is given: given the line
            # less its last min_target - 2, every cut leaves at least min_target characters;
            # given it up to 2 characters into the last of the repository's names it uses, the
            # cut comes before that name, so the name is part of what the model completes.
            named = [m.start() for m in IDENTIFIER.finditer(line) if m.group() in names]
            span = line_span(line[:min([len(line) - min_target, *named[-1:]]) + 2], rng)
            if span is not None and len(line[span[0]:].strip()) >= min_target:
                found.append((offset + span[0], offset + len(line), bool(named)))
            offset += len(line) + 1
        rng.shuffle(found)
        candidates.append(found)
    order = list(range(len(files)))
    rng.shuffle(order)
    picked: list[tuple[int, tuple[int, int, bool]]] = []

    def take(quota: int, want_names: bool) -> None:
        while len(picked) < quota:
            progressed = False
            for i in order:
                if len(picked) >= quota:
                    break
                pick = next((c for c in candidates[i] if c[2] or not want_names), None)
                if pick is not None:
                    candidates[i].remove(pick)
                    picked.append((i, pick))
                    progressed = True
            if not progressed:
                return

    take(min(n, round(n * own_names_fraction)), want_names=True)
    take(n, want_names=False)
    tasks: list[LineTask] = []
    for i, (start, end, own) in sorted(picked):
        source = files[i].text
        doc = source[:start] + source[end:]
        line_no = doc.count("\n", 0, start)
        column = start - (doc.rfind("\n", 0, start) + 1)
        tasks.append(LineTask(files[i].path, doc, line_no, column, source[start:end], own))
    return tasks


def edit_similarity(a: str, b: str) -> float:
    """1 - Levenshtein distance / the longer length (1.0 for two empty strings)."""
    if a == b:
        return 1.0
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return 1.0 - prev[-1] / max(len(a), len(b))


def score_line(completion: str, target: str, ms: float = 0.0) -> LineOutcome:
    """The first line of ``completion`` against the removed ``target`` (trailing blanks ignored)."""
    got, want = completion.split("\n", 1)[0].rstrip(), target.rstrip()
    return LineOutcome(got, got == want, edit_similarity(got, want), ms)


def complete_lines(gguf: Path, tasks: list[LineTask], *, adapter: Path | None = None, threads: int = 0,
                   max_tokens: int = 48, prompt_tokens: int = 0,
                   progress: Callable[[int, list[LineOutcome]], None] | None = None) -> list[LineOutcome]:
    """Run ``tasks`` through the server's completion engine (one line each); ``prompt_tokens``
    (split 3:1 between prefix and suffix) replaces the server's default budgets. ``progress``
    is called after each line with the number of tasks and the outcomes so far."""
    from slm_lsp.config import Config
    from slm_lsp.engine.service import CompletionEngine, CompletionRequest

    config = Config()
    config.model.path, config.model.threads = str(gguf), threads
    config.model.adapter = str(adapter) if adapter else ""
    # One line is scored: the rules end the answer there (the model's own length would only
    # generate past it), whatever the server's default.
    config.completion.max_lines, config.completion.max_tokens = 1, max_tokens
    config.completion.answer_length = "rules"
    config.completion.time_budget_ms = 60_000
    if prompt_tokens:
        config.completion.prefix_tokens = prompt_tokens * 3 // 4
        config.completion.suffix_tokens = prompt_tokens - config.completion.prefix_tokens
    engine = CompletionEngine(config)
    try:
        engine.load(str(gguf)).result()
        outcomes: list[LineOutcome] = []
        for i, task in enumerate(tasks):
            t0 = time.perf_counter()
            result = engine.complete(CompletionRequest(f"task-{i}", task.text, task.line, task.column,
                                                       path=task.path))
            outcomes.append(score_line(result.text, task.target, (time.perf_counter() - t0) * 1000))
            if progress is not None:
                progress(len(tasks), outcomes)
        return outcomes
    finally:
        engine.close()


def lines_key(gguf: Path, tasks: list[LineTask], *, max_tokens: int = 48, prompt_tokens: int = 0) -> str:
    """What the base model's answers to ``tasks`` depend on: the GGUF file (path, size, modified
    time), the prompt budget and each task (its document, cursor and removed text)."""
    stat = Path(gguf).stat()
    digest = hashlib.sha256(json.dumps([str(Path(gguf).resolve()), stat.st_size, stat.st_mtime_ns, max_tokens,
                                        prompt_tokens]).encode())
    for t in tasks:
        digest.update(json.dumps([t.path, t.line, t.column, t.target]).encode())
        digest.update(hashlib.sha256(t.text.encode()).digest())
    return digest.hexdigest()


def base_lines(cache: Path | None, gguf: Path, tasks: list[LineTask], *, max_tokens: int = 48,
               prompt_tokens: int = 0, **kw: Any) -> tuple[list[LineOutcome], bool]:
    """The base model's answers to ``tasks`` (``complete_lines`` without an adapter), kept in
    ``cache`` under ``lines_key``: another run on the same repository (another lever, another
    seed of training) skips the pass. Returns the outcomes and whether they came from the cache."""
    key = lines_key(gguf, tasks, max_tokens=max_tokens, prompt_tokens=prompt_tokens)
    path = cache / f"{key}.json" if cache is not None else None
    if path is not None and path.is_file():
        try:
            return [LineOutcome(**o) for o in json.loads(path.read_text())], True
        except (ValueError, TypeError):
            pass  # a damaged entry is computed again and replaced
    outcomes = complete_lines(gguf, tasks, max_tokens=max_tokens, prompt_tokens=prompt_tokens, **kw)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps([asdict(o) for o in outcomes]))
        os.replace(tmp, path)
    return outcomes, False


def completion_scores(gguf: Path, tasks: list[LineTask], **kw: Any) -> CompletionScores:
    """``complete_lines``, summed up."""
    return CompletionScores.of(complete_lines(gguf, tasks, **kw))


# -- paired statistics --------------------------------------------------------------------------
def bootstrap_interval(diffs: list[float], *, confidence: float = 0.95, resamples: int = 2000,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``diffs`` (paired differences: the tasks
    are resampled, each with both of its answers). Deterministic for a seed; (-1, 1), the
    widest a difference of two scores in [0, 1] can be, when there is nothing to resample."""
    if not diffs:
        return -1.0, 1.0
    rng = random.Random(f"bootstrap:{seed}")
    n = len(diffs)
    means = sorted(sum(rng.choices(diffs, k=n)) / n for _ in range(resamples))
    tail = (1 - confidence) / 2
    low = means[max(0, int(tail * resamples))]
    high = means[min(resamples - 1, int((1 - tail) * resamples))]
    return low, high


@dataclass
class PairedComparison:
    """Base vs adapter on the same ``n`` tasks. Differences are after minus before, in [-1, 1]."""

    n: int
    exact_before: float
    exact_after: float
    wins: int
    """Tasks the adapter matches exactly and the base does not."""
    losses: int
    """Tasks the base matches exactly and the adapter does not."""
    sign_p: float
    """Two-sided exact sign test over wins and losses (ties carry no information)."""
    exact_interval: tuple[float, float]
    similarity_before: float
    similarity_after: float
    similarity_interval: tuple[float, float]
    confidence: float

    @property
    def exact_diff(self) -> float:
        return self.exact_after - self.exact_before

    @property
    def similarity_diff(self) -> float:
        return self.similarity_after - self.similarity_before

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "exact_diff": self.exact_diff, "similarity_diff": self.similarity_diff}

    def describe(self, indent: str = "  ") -> str:
        pct = f"{self.confidence:.0%}"
        lo, hi = self.exact_interval
        slo, shi = self.similarity_interval
        return (f"{indent}exact match     {100 * self.exact_before:5.1f}% -> {100 * self.exact_after:5.1f}%  "
                f"{100 * self.exact_diff:+.1f} points [{100 * lo:+.1f}, {100 * hi:+.1f}] {pct}; "
                f"{self.wins} wins, {self.losses} losses, sign test p={self.sign_p:.3g}\n"
                f"{indent}edit similarity {100 * self.similarity_before:5.1f}  -> {100 * self.similarity_after:5.1f}   "
                f"{100 * self.similarity_diff:+.1f} points [{100 * slo:+.1f}, {100 * shi:+.1f}] {pct} "
                f"(paired bootstrap)")


def compare_paired(before: list[LineOutcome], after: list[LineOutcome], *, confidence: float = 0.95,
                   resamples: int = 2000, seed: int = 0) -> PairedComparison:
    """Base (``before``) and adapter (``after``) answers to the same tasks, in the same order."""
    if len(before) != len(after):
        raise ValueError(f"paired outcomes differ in length: {len(before)} before, {len(after)} after")
    n = len(before)
    wins = sum(a.exact and not b.exact for b, a in zip(before, after))
    losses = sum(b.exact and not a.exact for b, a in zip(before, after))
    exact = [float(a.exact) - float(b.exact) for b, a in zip(before, after)]
    similarity = [a.similarity - b.similarity for b, a in zip(before, after)]

    def mean(xs: list[float]) -> float:
        return statistics.fmean(xs) if xs else 0.0

    return PairedComparison(
        n=n, exact_before=mean([float(o.exact) for o in before]), exact_after=mean([float(o.exact) for o in after]),
        wins=wins, losses=losses, sign_p=sign_test(wins, losses),
        exact_interval=bootstrap_interval(exact, confidence=confidence, resamples=resamples, seed=seed),
        similarity_before=mean([o.similarity for o in before]), similarity_after=mean([o.similarity for o in after]),
        similarity_interval=bootstrap_interval(similarity, confidence=confidence, resamples=resamples, seed=seed),
        confidence=confidence)


def compare_reports(a: dict[str, Any], b: dict[str, Any], **kw: Any) -> tuple[PairedComparison, int]:
    """Two finetune runs' adapters (``eval.json``: ``after`` of each) on the gate lines both asked,
    paired by file, line and column (``line_tasks``): "before" is A's adapter, "after" B's. Also
    returns how many lines only one of them asked. Raises ValueError for a report without them."""
    def answers(report: dict[str, Any], name: str) -> dict[tuple[str, int, int], LineOutcome]:
        if not isinstance(report, dict) or not isinstance(report.get("after"), dict):
            raise ValueError(f"{name}: not a finetune report (eval.json)")
        asked, lines = report.get("line_tasks"), report["after"].get("lines")
        if not asked or not lines or len(asked) != len(lines):
            raise ValueError(f"{name}: no gate lines with their places (line_tasks: a finetune run with "
                             "--eval-lines, from this version on)")
        return {(t["path"], t["line"], t["column"]): LineOutcome(**o) for t, o in zip(asked, lines)}

    in_a, in_b = answers(a, "A"), answers(b, "B")
    both = [k for k in in_a if k in in_b]
    if not both:
        raise ValueError("A and B asked no gate line in common (different files or seeds)")
    return (compare_paired([in_a[k] for k in both], [in_b[k] for k in both], **kw),
            len(in_a) + len(in_b) - 2 * len(both))


# -- the decision -------------------------------------------------------------------------------
@dataclass
class Decision:
    publish: bool
    metric: str
    """The metric that decided: ``held-out loss``, ``exact match`` or ``edit similarity``."""
    reason: str


def decide(loss_before: float, loss_after: float, lines: PairedComparison | None, *, min_loss_gain: float,
           max_similarity_drop: float, exact_match_alpha: float) -> Decision:
    """Whether to publish the adapter, which metric decided and why.

    1. The held-out loss must drop by ``min_loss_gain`` (cheap, and it sees every middle token).
    2. Without line completions the loss decides alone.
    3. Exact match vetoes only: an adapter that loses significantly more exact lines than it
       wins (sign test p < ``exact_match_alpha``) is refused. It does not decide for the
       adapter because at a few hundred lines only a few dozen differ in exact match, too few
       for the sign test to see a gain of a few points.
    4. Edit similarity decides: it scores every line, so its paired interval narrows with the
       number of lines. The mean must not fall, and the lower end of its interval must stay
       above ``-max_similarity_drop``: a set too small to rule out a larger loss refuses.
    """
    gain = loss_before - loss_after
    loss = f"held-out loss {loss_before:.3f} -> {loss_after:.3f}"
    if gain < min_loss_gain:
        return Decision(False, "held-out loss", f"{loss}: gain {gain:.3f} < --min-loss-gain {min_loss_gain}")
    if lines is None or lines.n == 0:
        return Decision(True, "held-out loss", f"{loss} (gain {gain:.3f}); no line completions to check "
                                               "(no GGUF, or --eval-lines 0)")
    em = (f"exact match {100 * lines.exact_before:.1f}% -> {100 * lines.exact_after:.1f}% "
          f"({lines.wins} wins, {lines.losses} losses, p={lines.sign_p:.3g})")
    if lines.losses > lines.wins and lines.sign_p < exact_match_alpha:
        return Decision(False, "exact match", f"{loss}, but {em}: significantly worse "
                                              f"(p < --exact-match-alpha {exact_match_alpha})")
    low, high = lines.similarity_interval
    es = (f"edit similarity {100 * lines.similarity_diff:+.1f} points "
          f"[{100 * low:+.1f}, {100 * high:+.1f}] {lines.confidence:.0%} on {lines.n} lines")
    if lines.similarity_diff < 0:
        return Decision(False, "edit similarity", f"{loss}, but {es} fell; {em}")
    if low <= -max_similarity_drop:
        return Decision(False, "edit similarity",
                        f"{loss}, but {es}: the interval reaches below -{100 * max_similarity_drop:.1f} points "
                        f"(--max-similarity-drop), too few lines or too much spread to rule out a loss; {em}")
    return Decision(True, "edit similarity", f"{loss}, {es} stays above -{100 * max_similarity_drop:.1f} points; {em}")
