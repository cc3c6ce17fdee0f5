"""Held-out evaluation, before and after training.

* ``heldout_loss``: mean cross-entropy per middle token on FIM examples from held-out files
  (torch; the adapter switched off gives "before").
* ``line_tasks`` + ``completion_scores``: line completions on held-out files answered by the
  server's own ``CompletionEngine`` on the GGUF (with the exported adapter and its template for
  "after"), so the numbers are what an editor user gets. The cursor sits at a random point of
  a line (not inside a word), the rest of the line is removed and the following lines stay as
  the suffix; exact match and edit similarity compare the first completed line with the
  removed text.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .data import IGNORE_INDEX, Example, SourceFile, collate, line_span


@dataclass
class LineTask:
    path: str
    text: str
    """The document with the rest of the cursor line removed."""
    line: int
    column: int
    target: str


@dataclass
class CompletionScores:
    exact_match: float
    edit_similarity: float
    n: int
    mean_ms: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


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


def line_tasks(files: list[SourceFile], n: int, seed: int = 0, min_target: int = 6) -> list[LineTask]:
    """``n`` line completion tasks spread over ``files`` (deterministic for a seed)."""
    rng = random.Random(f"lines:{seed}")
    tasks: list[LineTask] = []
    weights = [len(f.text) ** 0.5 for f in files]
    for _ in range(n * 20):
        if len(tasks) >= n or not files:
            break
        f = rng.choices(files, weights)[0]
        span = line_span(f.text, rng)
        if span is None:
            continue
        start, end = span
        target = f.text[start:end]
        if len(target.strip()) < min_target:
            continue
        doc = f.text[:start] + f.text[end:]
        line = doc.count("\n", 0, start)
        column = start - (doc.rfind("\n", 0, start) + 1)
        tasks.append(LineTask(f.path, doc, line, column, target))
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


def completion_scores(gguf: Path, tasks: list[LineTask], *, adapter: Path | None = None, threads: int = 0,
                      max_tokens: int = 48, prompt_tokens: int = 0) -> CompletionScores:
    """Run ``tasks`` through the server's completion engine (one line each); ``prompt_tokens``
    (split 3:1 between prefix and suffix) replaces the server's default budgets."""
    from slm_lsp.config import Config
    from slm_lsp.engine.service import CompletionEngine, CompletionRequest

    config = Config()
    config.model.path, config.model.threads = str(gguf), threads
    config.model.adapter = str(adapter) if adapter else ""
    config.completion.max_lines, config.completion.max_tokens = 1, max_tokens
    config.completion.time_budget_ms = 60_000
    if prompt_tokens:
        config.completion.prefix_tokens = prompt_tokens * 3 // 4
        config.completion.suffix_tokens = prompt_tokens - config.completion.prefix_tokens
    engine = CompletionEngine(config)
    try:
        engine.load(str(gguf)).result()
        em = es = ms = 0.0
        for i, task in enumerate(tasks):
            t0 = time.perf_counter()
            result = engine.complete(CompletionRequest(f"task-{i}", task.text, task.line, task.column,
                                                       path=task.path))
            ms += (time.perf_counter() - t0) * 1000
            got = result.text.split("\n", 1)[0].rstrip()
            want = task.target.rstrip()
            em += float(got == want)
            es += edit_similarity(got, want)
        n = max(len(tasks), 1)
        return CompletionScores(em / n, es / n, len(tasks), ms / n)
    finally:
        engine.close()
