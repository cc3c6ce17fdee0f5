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
from collections.abc import Callable
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
    # One line is scored, and the rules end the answer there (the model's own length would
    # only generate lines past it).
    settings.setdefault("completion", {}).update({
        "prefix_tokens": args.prefix_tokens, "suffix_tokens": args.suffix_tokens, "max_tokens": 48,
        "max_lines": 1, "answer_length": "rules"})
    config = merge_config(settings).config
    # No time budget: a benchmark scores the model's line, not how busy the machine was. (The
    # setting's range ends at 60 s; asking for more gave the default 2 s, and on 2 busy cores the
    # 1.5B's lines ended after about 4 tokens.)
    config.completion.time_budget_ms = 10 ** 9
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
                out.write(json.dumps({"repo": repo, "mode": mode, "path": task.path, "line": task.line,
                                      "cross_file": task.cross_file, "expected": task.expected,
                                      "predicted": predicted, "exact": o.exact,
                                      "es": o.similarity, "ms": o.ms, "evaluated": o.evaluated,
                                      "context_files": o.context_files, "backend": result.backend,
                                      "route": result.route, "stop": gen.stop_reason if gen else "",
                                      # the answer's token log-probabilities, to replay a confidence
                                      # check between modes offline (empty from a team server)
                                      "logprobs": [round(x, 4) for x in gen.logprobs] if gen else [],
                                      # what the prompt kept of the context, to tell a line copied
                                      # from it from one written after the file's own pattern
                                      "context": [[f.path, f.text] for f in last] if mode != "infile" else []})
                          + "\n")
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


# -- comparing two modes of finished runs (``slm-lsp eval --report RUN.jsonl ...``) --------------

CONFIDENCE_SIGNALS = ("mean", "min")
"""The answer's mean token log-probability, or its least likely token's."""


def load_runs(paths: list[str]) -> list[dict]:
    """Every row of the ``--jsonl`` files, each run labelled by its repository's folder name."""
    rows: list[dict] = []
    for path in paths:
        with open(path) as fh:
            for line in fh:
                if line.strip():
                    row = json.loads(line)
                    row.setdefault("repo", os.path.basename(path))
                    row["run"] = os.path.basename(row["repo"].rstrip("/"))
                    rows.append(row)
    return rows


def pairs(rows: list[dict], a: str = "infile", b: str = "repo") -> list[tuple[dict, dict]]:
    """(mode ``a``, mode ``b``) outcomes of the same task, in task order; tasks one mode lacks
    (a run cut short) are left out."""
    by_task: dict[tuple[str, str, int], dict[str, dict]] = {}
    for r in rows:
        by_task.setdefault((r["run"], r["path"], r["line"]), {})[r["mode"]] = r
    return [(m[a], m[b]) for m in by_task.values() if a in m and b in m]


@dataclass
class Paired:
    n: int
    em_a: float
    em_b: float
    es_a: float
    es_b: float
    wins: int
    """Tasks ``b`` got exactly right and ``a`` did not."""
    losses: int
    es_wins: int
    """Tasks where ``b``'s edit similarity is higher."""
    es_losses: int

    @property
    def ratio(self) -> float:
        return self.em_b / self.em_a if self.em_a else float("inf")

    @property
    def p(self) -> float:
        from .humaneval import sign_test

        return sign_test(self.wins, self.losses)

    @property
    def es_p(self) -> float:
        from .humaneval import sign_test

        return sign_test(self.es_wins, self.es_losses)


def paired(ps: list[tuple[dict, dict]]) -> Paired:
    """Exact match and edit similarity (percent) of both sides, with paired win/loss counts."""
    n = len(ps)

    def pct(xs: list[float]) -> float:
        return 100 * sum(xs) / n if n else float("nan")

    return Paired(n, pct([a["exact"] for a, _ in ps]), pct([b["exact"] for _, b in ps]),
                  pct([a["es"] for a, _ in ps]), pct([b["es"] for _, b in ps]),
                  sum(b["exact"] and not a["exact"] for a, b in ps), sum(a["exact"] and not b["exact"] for a, b in ps),
                  sum(b["es"] > a["es"] for a, b in ps), sum(a["es"] > b["es"] for a, b in ps))


def _blanked_file(row: dict) -> str:
    """The file as the task showed it (the hidden line blanked), read from the run's checkout."""
    try:
        with open(os.path.join(row["repo"], row["path"]), encoding="utf-8", errors="replace") as fh:
            lines = fh.read().split("\n")
    except OSError:
        return ""
    if 0 <= row["line"] < len(lines):
        lines[row["line"]] = ""
    return "\n".join(lines)


DISTRACTIONS = ("copied a context line", "a name from the context", "opened a block", "another line of the file",
                "empty", "other")


def distraction(with_context: dict) -> str:
    """Why an answer given with context may differ from the in-file one, judged by where it came
    from: a line of a context piece word for word (that is not also in the file); a name that
    only the context shows; a block header (``if ...:``, ``else:``) where the hidden line is a
    statement; a line of the file itself (another place's pattern); nothing; else the model wrote
    something new from what both prompts share."""
    predicted = with_context["predicted"].strip()
    if not predicted:
        return "empty"
    own = _blanked_file(with_context)
    own_lines = {x.strip() for x in own.split("\n")}
    context_lines = {x.strip() for _, text in with_context.get("context", []) for x in text.split("\n")}
    if predicted in context_lines and predicted not in own_lines:
        return "copied a context line"
    names = set(IDENT.findall(predicted))
    context_names = {n for _, text in with_context.get("context", []) for n in IDENT.findall(text)}
    if own and (names - set(IDENT.findall(own))) & context_names:
        return "a name from the context"
    if predicted.endswith(":") and not with_context["expected"].endswith(":"):
        return "opened a block"  # a header (if/else/except ...) where a statement was hidden
    if predicted in own_lines:
        return "another line of the file"
    return "other"


def in_context(row: dict) -> bool:
    """The hidden line is a line of a context piece the prompt kept."""
    return any(row["expected"] == x.strip() for _, text in row.get("context", []) for x in text.split("\n"))


def signal(row: dict, kind: str) -> float:
    """The answer's confidence: the mean or least token log-probability (0 for a cached answer)."""
    from ..engine.router import confidence

    mean, lowest = confidence(row.get("logprobs") or [])
    return mean if kind == "mean" else lowest


def choose(a: dict, b: dict, kind: str, margin: float) -> dict:
    """The with-context answer ``b``, unless the in-file answer ``a`` is surer by more than ``margin``."""
    return a if signal(a, kind) - signal(b, kind) > margin else b


def pick_margin(ps: list[tuple[dict, dict]], kind: str) -> float:
    """The margin with the best exact match, then edit similarity, on ``ps`` (the smallest of equals)."""
    candidates = sorted({0.0} | {round(signal(a, kind) - signal(b, kind), 4) for a, b in ps})
    best = max(candidates, key=lambda m: (sum(choose(a, b, kind, m)["exact"] for a, b in ps),
                                          sum(choose(a, b, kind, m)["es"] for a, b in ps), -abs(m)))
    return best


def report(paths: list[str], pick_on: list[str], a: str = "infile", b: str = "repo") -> None:
    """Per repository and pooled: the two modes' exact match and edit similarity with paired
    counts; the lines mode ``b`` lost, by cause; a confidence check choosing between the two
    answers against the oracle (the better of the two, known only to the evaluation). Margins are
    picked on the ``pick_on`` runs only and reported on the others."""
    rows = load_runs(paths)
    picking = load_runs(pick_on) if pick_on else []
    runs = list(dict.fromkeys(r["run"] for r in rows))
    groups = [(run, pairs([r for r in rows if r["run"] == run], a, b)) for run in runs]
    groups.append(("pooled", pairs(rows, a, b)))

    print(f"{'repo':24s} {'n':>3s} {a + ' EM':>10s} {b + ' EM':>9s} {'ratio':>6s} {a + ' ES':>10s} {b + ' ES':>9s} "
          f"{'EM won/lost':>11s} {'p':>6s} {'ES up/down':>10s} {'p':>6s}")
    for name, ps in groups:
        s = paired(ps)
        print(f"{name:24s} {s.n:3d} {s.em_a:10.1f} {s.em_b:9.1f} {s.ratio:5.2f}x {s.es_a:10.1f} {s.es_b:9.1f} "
              f"{s.wins:5d}/{s.losses:<5d} {s.p:6.3f} {str(s.es_wins) + '/' + str(s.es_losses):>10s} {s.es_p:6.3f}")

    print(f"\nthe hidden line word for word in {b}'s kept context (it could be copied) / exact there:")
    for name, ps in groups:
        shown = [y for _, y in ps if in_context(y)]
        print(f"  {name:22s} {len(shown):3d} of {len(ps):3d} / {sum(y['exact'] for y in shown):3d}")

    print(f"\nlines {a} had right and {b} got wrong / tasks whose edit similarity fell, by cause:")
    for name, ps in groups:
        lost = [y for x, y in ps if x["exact"] and not y["exact"]]
        fell = [y for x, y in ps if x["es"] > y["es"]]
        causes = {c: (sum(distraction(y) == c for y in lost), sum(distraction(y) == c for y in fell))
                  for c in DISTRACTIONS}
        print(f"  {name:22s} lost {len(lost):3d}, fell {len(fell):3d}: "
              + "; ".join(f"{c} {x}/{y}" for c, (x, y) in causes.items() if x or y))

    pick_pairs = pairs(picking, a, b)
    margins = {k: pick_margin(pick_pairs, k) if pick_pairs else 0.0 for k in CONFIDENCE_SIGNALS}
    print(f"\nchoosing between the two answers (margins picked on "
          f"{', '.join(dict.fromkeys(r['run'] for r in picking)) or 'nothing: 0'}):")
    def check(kind: str, margin: float) -> Callable[[dict, dict], dict]:
        return lambda x, y: choose(x, y, kind, margin)

    rules: list[tuple[str, Callable[[dict, dict], dict]]] = [(a, lambda x, y: x), (b, lambda x, y: y)]
    for k in CONFIDENCE_SIGNALS:
        rules.append((f"surer by {k} (margin 0)", check(k, 0.0)))
        if pick_pairs:
            rules.append((f"surer by {k} (margin {margins[k]:g})", check(k, margins[k])))
    rules.append(("oracle", lambda x, y: max((x, y), key=lambda r: (r["exact"], r["es"]))))
    print(f"{'rule':30s} " + " ".join(f"{name[:16]:>16s}" for name, _ in groups)
          + f"   (EM / ES, won/lost vs {b})")
    for label, rule in rules:
        cells = []
        for _, ps in groups:
            chosen = [(y, rule(x, y)) for x, y in ps]
            s = paired(chosen)
            cells.append(f"{s.em_b:4.1f}/{s.es_b:4.1f} {s.wins:2d}/{s.losses:<2d}")
        print(f"{label:30s} " + " ".join(f"{c:>16s}" for c in cells))
