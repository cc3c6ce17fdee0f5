"""``slm-lsp eval REPO``: line completion on a real repository, in-file only vs. repo context.

Tasks: one file at a time is hidden from the index (as if it were being written); a line
inside a function body is blanked (its indentation kept, the cursor after it) and the model
must write it back. Lines that use names imported from other files of the repository
("cross-file" lines) are favoured, 3 to 1. Every mode asks the same engine the server uses
(``CompletionEngine`` with ``CompletionRequest.context``):

* ``infile``: the file's own prefix and suffix only;
* ``repo``: plus the context the server would attach (``ContextProvider.gather``);
* ``baseline``: plus the top-8 Jaccard-ranked 30-line windows of the other files, in the
  model's repo-level format (the usual retrieval baseline), and nothing else (no imports or
  scope headers of a cut prefix window). All eight, whatever ``--context-tokens`` is (within the
  model's context window), unless ``--baseline-tokens`` caps them.

Prints exact match (first line, whitespace-trimmed), edit similarity and latency per mode, for
all tasks and for the cross-file ones. With ``--route remote|auto --remote URL`` the engine routes
as the server would, and the table adds the share of requests the team server answered.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..config import merge_config
from ..context.index import ContextIndex, Snapshot, import_keys
from ..context.provider import ContextOptions, ContextProvider
from ..context.sources.definitions import IDENT, is_test_or_example
from ..context.sources.similar import jaccard, query_tokens, tokens, window_starts
from ..engine.prompt import ContextFile
from ..engine.service import CompletionEngine, CompletionRequest
from ..models import resolve_model
from . import percentile

SKIP_STARTS = ("#", "//", '"""', "'''", "@", "else", "try:", "finally:", "pass", "break", "continue", "}", ")",
               "]", "return\n", "*", "/*")
BASELINE_K, BASELINE_WINDOW, BASELINE_STEP = 8, 30, 15


@dataclass
class Task:
    path: str
    line: int
    indent: str
    expected: str
    cross_file: bool
    text: str = ""


@dataclass
class Outcome:
    mode: str
    task: Task
    predicted: str
    exact: bool
    similarity: float
    ms: float
    evaluated: int = 0
    context_files: list[str] = field(default_factory=list)
    backend: str = ""
    """Who answered: local, remote or cache."""


def levenshtein(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def edit_similarity(a: str, b: str) -> float:
    if not a and not b:
        return 1.0
    return 1.0 - levenshtein(a, b) / max(len(a), len(b))


def _repo_names(snap: Snapshot, path: str) -> set[str]:
    """Local names a file imports from other files of the repository (and module aliases)."""
    entry = snap.entry(path)
    out: set[str] = set()
    if entry is None:
        return out
    for imp in entry.imports:
        if not any(snap.module_files(k) for k in import_keys(path, entry.language, imp)) \
                and not any(snap.module_files(f"py:{imp.module}.{o}") for o, _ in imp.names):
            continue
        out |= {local for _, local in imp.names if local != "*"}
        if imp.alias:
            out.add(imp.alias)
    return out


def build_tasks(index: ContextIndex, n: int, seed: int = 0, languages: tuple[str, ...] = ("python",)) -> list[Task]:
    snap = index.snapshot
    rng = random.Random(seed)
    cross: list[Task] = []
    other: list[Task] = []
    for path in sorted(snap.paths()):
        entry = snap.entry(path)
        if entry is None or entry.language not in languages or is_test_or_example(path):
            continue
        names = _repo_names(snap, path)
        lines = index.read_text(path).split("\n")
        for d in entry.definitions:
            if d.kind not in ("function", "method"):
                continue
            first = d.line + d.signature.count("\n") + 1
            in_doc = False
            for i in range(first, min(d.end_line + 1, len(lines))):
                raw = lines[i]
                s = raw.strip()
                if s.count('"""') % 2 or s.count("'''") % 2:
                    in_doc = not in_doc
                    continue
                if in_doc or len(s) < 8 or s.startswith(SKIP_STARTS) or s.endswith((":", "(", "[", "{", ",")):
                    continue
                used = set(IDENT.findall(s))
                task = Task(path, i, raw[:len(raw) - len(raw.lstrip())], s, bool(used & names))
                (cross if task.cross_file else other).append(task)
    rng.shuffle(cross)
    rng.shuffle(other)
    want_cross = min(len(cross), n - n // 4)
    per_file = max(2, n // 10)
    chosen: list[Task] = []
    counts: dict[str, int] = {}
    for pool, want in ((cross, want_cross), (other, n - want_cross)):
        taken = 0
        for t in pool:
            if taken >= want:
                break
            if counts.get(t.path, 0) >= per_file:
                continue
            counts[t.path] = counts.get(t.path, 0) + 1
            chosen.append(t)
            taken += 1
    for t in chosen:
        lines = index.read_text(t.path).split("\n")
        lines[t.line] = t.indent
        t.text = "\n".join(lines)
    return sorted(chosen, key=lambda t: (t.path, t.line))


class JaccardBaseline:
    """Top-k Jaccard-ranked windows over every other file of the repository."""

    def __init__(self, index: ContextIndex) -> None:
        self.windows: list[tuple[str, str, set[str]]] = []
        for path in index.snapshot.paths():
            lines = index.read_text(path).split("\n")
            for start in window_starts(len(lines), BASELINE_WINDOW, BASELINE_STEP):
                text = "\n".join(lines[start:start + BASELINE_WINDOW])
                self.windows.append((path, text, tokens(text)))

    def context(self, task: Task) -> list[ContextFile]:
        query = query_tokens(task.text.split("\n"), task.line, BASELINE_WINDOW)
        scored = [(jaccard(query, toks), path, text) for path, text, toks in self.windows if path != task.path]
        scored.sort(key=lambda x: -x[0])
        best = scored[:BASELINE_K]
        return [ContextFile(path, text, score) for score, path, text in reversed(best)]


def run_eval(args: argparse.Namespace) -> int:
    from .. import cli

    repo = os.path.realpath(args.repo)
    settings = cli.cli_settings(args)
    settings.setdefault("completion", {}).update({
        "prefix_tokens": args.prefix_tokens, "suffix_tokens": args.suffix_tokens, "max_tokens": 48,
        "max_lines": 1, "time_budget_ms": 120000})
    config = merge_config(settings).config
    modes = {"both": ["infile", "repo"], "all": ["infile", "repo", "baseline"]}.get(args.mode, args.mode.split(","))
    cache = Path(tempfile.mkdtemp(prefix="slm-eval-"))
    t0 = time.perf_counter()
    index = ContextIndex(repo, cache)
    index.build()
    print(f"repo {repo}: {index.stats['files']} files, {index.stats['lines']} lines, "
          f"{index.stats['definitions']} definitions, indexed in {time.perf_counter() - t0:.1f} s")
    tasks = build_tasks(index, args.n, args.seed)
    if args.cross_file_only:
        tasks = [t for t in tasks if t.cross_file]
    print(f"{len(tasks)} tasks in {len({t.path for t in tasks})} files, {sum(t.cross_file for t in tasks)} cross-file")
    # The server's sources and budget; a longer budget keeps a busy machine from skipping sources.
    provider = ContextProvider(ContextOptions(sources=list(config.context.sources),
                                              time_budget_ms=args.source_budget_ms or config.context.time_budget_ms))
    provider.add_index(index)
    provider.windows(index, wait=True)  # the server builds it in the background, before the first requests
    baseline = JaccardBaseline(index) if "baseline" in modes else None
    engine = CompletionEngine(config)
    engine.load(str(resolve_model(config.model.path))).result()
    status = engine.status()
    runner = engine.runner
    print(f"model {status.name} ({status.template}), prefix {args.prefix_tokens} / suffix {args.suffix_tokens} / "
          f"context {args.context_tokens} tokens" + (f", {runner.threads} threads" if runner is not None else ""))
    if status.remote is not None:
        print(f"route {status.route}: prompts go to the {status.remote}")
    n_ctx = runner.n_ctx if runner is not None else config.model.n_ctx
    outcomes: list[Outcome] = []
    out = open(args.jsonl, "w") if args.jsonl else None
    for i, task in enumerate(tasks):  # task by task: a run cut short still compares the modes
        full = os.path.join(repo, task.path)
        for mode in modes:
            req = CompletionRequest(f"{mode}:{task.path}", task.text, task.line, len(task.indent), path=full)
            if mode == "repo":
                res = provider.gather(req.document_key, full, task.text, task.line, hide_current=True)
                req.context, req.repo_name, req.repo_path = res.files, res.repo_name, res.repo_path
                req.context_tokens = args.context_tokens
            elif mode == "baseline" and baseline is not None:
                req.context, req.repo_name, req.repo_path = baseline.context(task), index.name, task.path
                # The plain baseline: all of its windows (within the model's context window) unless
                # --baseline-tokens caps it; no imports or scope headers of a cut prefix window.
                req.context_tokens, req.file_headers = args.baseline_tokens or n_ctx, False
            result = engine.complete(req)
            predicted = result.text.split("\n")[0].strip()
            gen = result.generation
            last = engine.builder.last_context if engine.builder is not None else []
            o = Outcome(mode, task, predicted, predicted == task.expected, edit_similarity(predicted, task.expected),
                        result.total_ms, gen.n_evaluated if gen and gen.n_evaluated >= 0 else 0,
                        sorted({f.path for f in last}),
                        result.backend)
            outcomes.append(o)
            if args.verbose:
                mark = "=" if o.exact else " "
                print(f"  {mode:8s} {i:3d} {mark} {task.path}:{task.line + 1} {task.expected[:50]!r} -> "
                      f"{predicted[:50]!r} ({o.ms:.0f} ms, {o.evaluated} tok)", file=sys.stderr, flush=True)
            if out is not None:
                out.write(json.dumps({"mode": mode, "path": task.path, "line": task.line, "cross_file": task.cross_file,
                                      "expected": task.expected, "predicted": predicted, "exact": o.exact,
                                      "es": o.similarity, "ms": o.ms, "evaluated": o.evaluated,
                                      "context_files": o.context_files, "backend": result.backend,
                                      "route": result.route}) + "\n")
                out.flush()
    engine.close()
    print_table(outcomes, modes)
    if status.remote is not None:
        for mode in modes:
            rows = [o for o in outcomes if o.mode == mode]
            remote = sum(o.backend == "remote" for o in rows)
            print(f"{mode}: {remote}/{len(rows)} answered by the team server "
                  f"({100 * remote / max(len(rows), 1):.0f}%, route {status.route})")
    return 0


def print_table(outcomes: list[Outcome], modes: list[str]) -> None:
    print(f"{'mode':9s} {'EM all':>7s} {'EM cross':>9s} {'EM other':>9s} {'ES all':>7s} {'ES cross':>9s} "
          f"{'p50 ms':>8s} {'p95 ms':>8s} {'prompt tok':>10s}")
    for mode in modes:
        rows = [o for o in outcomes if o.mode == mode]
        cross = [o for o in rows if o.task.cross_file]
        other = [o for o in rows if not o.task.cross_file]

        def pct(xs: list[Outcome]) -> str:
            return f"{100 * sum(o.exact for o in xs) / len(xs):5.1f}%" if xs else "  n/a"

        def es(xs: list[Outcome]) -> str:
            return f"{statistics.fmean(o.similarity for o in xs):.3f}" if xs else "n/a"

        ms = [o.ms for o in rows]
        tok = statistics.fmean(o.evaluated for o in rows) if rows else 0
        print(f"{mode:9s} {pct(rows):>7s} {pct(cross):>9s} {pct(other):>9s} {es(rows):>7s} {es(cross):>9s} "
              f"{percentile(ms, 50):8.0f} {percentile(ms, 95):8.0f} {tok:10.0f}")
    print(f"(n={len([o for o in outcomes if o.mode == modes[0]])} tasks per mode; EM: exact match of the first "
          "line; ES: edit similarity; prompt tok: evaluated (not reused) prompt tokens)")
