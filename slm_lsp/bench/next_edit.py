"""``slm-lsp eval REPO --task next-edit``: next-edit suggestions replayed on held-out commits.

The repository's history is mined (``finetune.history.mine``) and its most recent
``--heldout-commits`` commits are held out: the same cut (``split_history``) that ``slm-lsp
finetune --task next-edit`` trains before, so none of them was ever trained on. Each held-out
commit is replayed hunk by hunk; after each hunk the model is asked for the next edit, as the
server asks it: the recent edits as diffs, the region around the cursor (the end of the hunk just
made), and the answer read by ``engine.next_edit.parse_output``. An adapter whose ``template.json``
says ``"next_edit": true`` gets the raw ``render_prompt`` it was trained on; any other model its
chat template with ``chat_messages`` (zero-shot). ``--prompt`` forces one.

Per step the expected answer is the commit's next hunk applied to the region when that hunk is
in the region, else nothing. Reported:

* exact match: the predicted region equals the expected one (steps with an expected edit);
* edit similarity of the predicted change to the expected one (their removed and added lines:
  1 for the exact edit, 0 for no edit where one was expected);
* no-edit steps answered with nothing, and the false-positive rate (an edit suggested where
  none was expected), and wrong edits (suggested, but not the expected one, on edit steps);
* latency p50/p95 of one suggestion.

``--jsonl`` writes every step; ``--compare A.jsonl B.jsonl`` pairs two such runs step by step
(wins, losses and the sign test on "answered right": the exact edit, or nothing where nothing
was expected).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, cast

from finetune.evaluate import edit_similarity
from finetune.history import HELDOUT_COMMITS, REGION_LINES, Step, history_steps, mine, split_history

from ..engine.model import ADAPTER_TEMPLATE
from ..engine.next_edit import NextEditRequest, NextEditResult, parse_output, run_next_edit, trained_for_next_edit
from . import percentile
from .humaneval import sign_test


@dataclass
class StepOutcome:
    commit: str
    path: str
    index: int
    kind: str
    expected_edit: bool
    predicted_edit: bool
    exact: bool
    similarity: float
    ms: float
    prompt_tokens: int
    generated_tokens: int
    answer: str
    reason: str = ""
    """The server's reason when it offered nothing (no-edit, unusable, implausible, cut, ...)."""

    @property
    def right(self) -> bool:
        """The exact edit, or nothing where nothing was expected."""
        return self.exact if self.expected_edit else not self.predicted_edit

    @property
    def key(self) -> str:
        return f"{self.commit}:{self.index}"


def edit_text(region: str, new: str | None) -> str:
    """The change from ``region`` to ``new`` as its removed and added lines (``-``/``+``, the common
    head and tail left out); empty when ``new`` is None or the same."""
    if new is None:
        return ""
    r, n = region.splitlines(keepends=True), new.splitlines(keepends=True)
    head = 0
    while head < min(len(r), len(n)) and r[head] == n[head]:
        head += 1
    tail = 0
    while tail < min(len(r), len(n)) - head and r[-1 - tail] == n[-1 - tail]:
        tail += 1
    return "".join("-" + x for x in r[head:len(r) - tail]) + "".join("+" + x for x in n[head:len(n) - tail])


def changed_similarity(region: str, target: str, predicted: str | None) -> float:
    """Edit similarity of the predicted change to the expected one (``edit_text`` of each):
    1.0 for the exact edit, 0.0 for no edit where one was expected, in between for an edit at
    the right lines that differs in some characters."""
    return edit_similarity(edit_text(region, predicted), edit_text(region, target))


def spread(items: list[Step], n: int) -> list[Step]:
    """``n`` of ``items`` spread evenly over them (all when there are no more)."""
    if n >= len(items):
        return list(items)
    return [items[round(i * len(items) / n)] for i in range(n)]


def pick_steps(steps: list[Step], n: int) -> list[Step]:
    """``n`` steps (0: all), half with an expected edit and half without where both kinds have
    enough, each half spread evenly over the history, in history order. Most replayed steps
    expect no edit; an even split measures both exact match and false positives on as many
    steps as a small ``n`` allows (each is reported on its own)."""
    if not n or n >= len(steps):
        return steps
    order = {id(s): i for i, s in enumerate(steps)}
    edits = [s for s in steps if s.target is not None]
    none = [s for s in steps if s.target is None]
    n_edits = min(len(edits), max(n // 2, n - len(none)))
    chosen = spread(edits, n_edits) + spread(none, n - n_edits)
    return sorted(chosen, key=lambda s: order[id(s)])


def steps_to_replay(repo: Path, heldout: int, n: int) -> tuple[list[Step], dict[str, Any]]:
    """The held-out commits' steps (``pick_steps``: ``n`` of them, all when 0) and where the cut is."""
    commits = mine(repo)
    older, recent = split_history(commits, heldout)
    steps = pick_steps(history_steps(recent), n)
    info = {"commits": len(commits), "heldout_commits": len(recent),
            "heldout_from": recent[0].sha if recent else None, "cut": older[-1].sha if older else None,
            "first_date": time.strftime("%Y-%m-%d", time.gmtime(recent[0].time)) if recent else None,
            "last_date": time.strftime("%Y-%m-%d", time.gmtime(recent[-1].time)) if recent else None}
    return steps, info


def prompt_mode(adapter: str, model_has_chat: bool, forced: str = "auto") -> str:
    """``raw`` for an adapter trained on next edits (``template.json`` says so), else ``chat``
    for an instruct model; ``forced`` (raw or chat) wins."""
    if forced != "auto":
        return forced
    if adapter and trained_for_next_edit(Path(adapter).expanduser().with_name(ADAPTER_TEMPLATE)):
        return "raw"
    return "chat" if model_has_chat else "raw"


def predicted_region(step: Step, result: NextEditResult) -> str | None:
    """The region as the server's suggestion would leave it (None: no suggestion)."""
    edit = result.edit
    if edit is None:
        return None
    first, last = result.region
    lines = step.text.splitlines(keepends=True)
    region = "".join(lines[first:last])

    def offset(line: int, column: int) -> int:
        return sum(len(x) for x in lines[first:line]) + column

    return region[:offset(edit.start_line, edit.start_column)] + edit.new_text + region[offset(edit.end_line,
                                                                                              edit.end_column):]


def ask(engine: Any, step: Step, mode: str, budget_ms: float, max_tokens: int) -> NextEditResult:
    """The server's next edit at ``step`` (``engine.next_edit.run_next_edit`` on the engine's worker)."""
    req = NextEditRequest(f"{step.commit}:{step.index}", step.text, step.line, step.column, path=step.path,
                          edits=list(step.edits), region_lines=REGION_LINES, max_tokens=max_tokens,
                          time_budget_ms=budget_ms)

    def work(runner: Any, stopped: Callable[[], bool]) -> NextEditResult:
        runner.next_edit_prompt = mode == "raw"  # what the engine sets from the adapter's template.json
        return run_next_edit(runner, req, stopped)

    return cast(NextEditResult, engine.run_on_model(work).result())


def score(step: Step, predicted: str | None, answer: str, ms: float, prompt_tokens: int, generated: int,
          reason: str = "") -> StepOutcome:
    target = step.target
    expected = target is not None
    if target is not None:
        sim = changed_similarity(step.region, target, predicted)
    else:
        sim = 1.0 if predicted is None else 0.0
    return StepOutcome(step.commit, step.path, step.index, step.kind, expected, predicted is not None,
                       expected and predicted == target, sim, ms, prompt_tokens, generated, answer, reason)


def summarize(outcomes: list[StepOutcome]) -> dict[str, Any]:
    edits = [o for o in outcomes if o.expected_edit]
    none = [o for o in outcomes if not o.expected_edit]
    ms = [o.ms for o in outcomes]

    def share(xs: list[bool]) -> float:
        return sum(xs) / len(xs) if xs else float("nan")

    return {
        "steps": len(outcomes), "edit_steps": len(edits), "no_edit_steps": len(none),
        "exact_match": share([o.exact for o in edits]),
        "edit_similarity": statistics.fmean(o.similarity for o in edits) if edits else float("nan"),
        "suggested_on_edit_steps": share([o.predicted_edit for o in edits]),
        "wrong_edit": share([o.predicted_edit and not o.exact for o in edits]),
        "no_edit_right": share([not o.predicted_edit for o in none]),
        "false_positive": share([o.predicted_edit for o in none]),
        "cut": sum(o.reason.startswith("cut") for o in outcomes),
        "right": share([o.right for o in outcomes]),
        "p50_ms": percentile(ms, 50), "p95_ms": percentile(ms, 95),
        "prompt_tokens": statistics.fmean(o.prompt_tokens for o in outcomes) if outcomes else 0.0,
        "generated_tokens": statistics.fmean(o.generated_tokens for o in outcomes) if outcomes else 0.0,
    }


def print_summary(name: str, s: dict[str, Any], out: Any = sys.stdout) -> None:
    def pct(x: float) -> str:
        return "  n/a" if x != x else f"{100 * x:5.1f}%"

    print(f"{name}: {s['steps']} steps ({s['edit_steps']} with an edit expected, {s['no_edit_steps']} without)\n"
          f"  exact match {pct(s['exact_match'])}   edit similarity {s['edit_similarity']:.3f}"
          f"   suggested on edit steps {pct(s['suggested_on_edit_steps'])}"
          f"   wrong edit {pct(s['wrong_edit'])}\n"
          f"  no-edit steps answered with nothing {pct(s['no_edit_right'])}   false positives "
          f"{pct(s['false_positive'])}   right overall {pct(s['right'])}   cut by the time budget {s['cut']}\n"
          f"  latency p50 {s['p50_ms']:.0f} ms  p95 {s['p95_ms']:.0f} ms   prompt {s['prompt_tokens']:.0f} tokens, "
          f"generated {s['generated_tokens']:.0f}", file=out)


def load_outcomes(path: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def outcomes_of(rows: list[dict[str, Any]]) -> list[StepOutcome]:
    """``--jsonl`` rows back as outcomes (to summarize a finished or cut run again), the edit
    similarity scored again from the row's region, target and predicted region."""
    names = {f.name for f in fields(StepOutcome)}
    out = []
    for row in rows:
        o = StepOutcome(**{k: v for k, v in row.items() if k in names})
        if o.expected_edit and "region" in row and row.get("target") is not None:
            predicted = row.get("predicted")
            if predicted is None and o.predicted_edit:  # runs before "predicted" was written
                predicted = parse_output(o.answer, row["region"])
            o.similarity = changed_similarity(row["region"], row["target"], predicted)
        out.append(o)
    return out


def compare(a_path: str, b_path: str) -> dict[str, Any]:
    """Two ``--jsonl`` runs paired by step: B's wins and losses over A on "answered right" and on
    exact match (edit steps), with the sign test; and on the edit steps' edit similarity (scored
    again as ``outcomes_of`` does), where a step is won when B's is higher: exact match is rare on
    new-code hunks, so a partly right edit must count too."""
    a_rows, b_rows = load_outcomes(a_path), load_outcomes(b_path)
    a = {f"{r['commit']}:{r['index']}": r for r in a_rows}
    b = {f"{r['commit']}:{r['index']}": r for r in b_rows}
    both = sorted(set(a) & set(b))
    sim_a = {o.key: o.similarity for o in outcomes_of(a_rows)}
    sim_b = {o.key: o.similarity for o in outcomes_of(b_rows)}

    def right(r: dict[str, Any]) -> bool:
        return bool(r["exact"]) if r["expected_edit"] else not r["predicted_edit"]

    out: dict[str, Any] = {"paired_steps": len(both)}
    for name, keys, fn in (("right", both, right),
                           ("exact", [k for k in both if a[k]["expected_edit"]], lambda r: bool(r["exact"]))):
        wins = sum(fn(b[k]) and not fn(a[k]) for k in keys)
        losses = sum(fn(a[k]) and not fn(b[k]) for k in keys)
        out[name] = {"n": len(keys), "a": sum(fn(a[k]) for k in keys), "b": sum(fn(b[k]) for k in keys),
                     "b_wins": wins, "b_losses": losses, "p": sign_test(wins, losses)}
    edit_keys = [k for k in both if a[k]["expected_edit"]]
    wins = sum(sim_b[k] > sim_a[k] for k in edit_keys)
    losses = sum(sim_b[k] < sim_a[k] for k in edit_keys)
    out["similarity"] = {"n": len(edit_keys),
                         "a": statistics.fmean(sim_a[k] for k in edit_keys) if edit_keys else float("nan"),
                         "b": statistics.fmean(sim_b[k] for k in edit_keys) if edit_keys else float("nan"),
                         "b_wins": wins, "b_losses": losses, "p": sign_test(wins, losses)}
    return out


def run_next_edit_eval(args: argparse.Namespace) -> int:
    from .. import cli
    from ..config import merge_config
    from ..engine.edit import chat_template
    from ..engine.service import CompletionEngine
    from ..models import resolve_model

    if args.compare:
        for name, path in zip("AB", args.compare):
            print_summary(f"{name} {path}", summarize(outcomes_of(load_outcomes(path))))
        result = compare(*args.compare)
        for name in ("right", "exact"):
            r = result[name]
            print(f"{name}: A {r['a']}/{r['n']}, B {r['b']}/{r['n']}; B won {r['b_wins']}, lost {r['b_losses']} "
                  f"(sign test p={r['p']:.3g})")
        r = result["similarity"]
        print(f"edit similarity on the {r['n']} edit steps: A {r['a']:.3f}, B {r['b']:.3f}; B higher on "
              f"{r['b_wins']}, lower on {r['b_losses']} (sign test p={r['p']:.3g})")
        return 0
    if not args.repo:
        print("slm-lsp eval --task next-edit: a repository, or --compare A.jsonl B.jsonl", file=sys.stderr)
        return 2
    repo = Path(args.repo).resolve()
    t0 = time.perf_counter()
    steps, info = steps_to_replay(repo, args.heldout_commits, args.n)
    if not steps:
        print(f"error: no next-edit steps in the last {args.heldout_commits} commits of {repo}", file=sys.stderr)
        return 2
    kinds: dict[str, int] = {}
    for s in steps:
        kinds[s.kind] = kinds.get(s.kind, 0) + 1
    print(f"repo {repo}: {info['commits']} commits, the last {info['heldout_commits']} held out "
          f"({info['first_date']} to {info['last_date']}, from {str(info['heldout_from'])[:12]}); {len(steps)} steps "
          f"{kinds}; mined in {time.perf_counter() - t0:.1f} s", flush=True)
    config = merge_config(cli.cli_settings(args)).config
    engine = CompletionEngine(config)
    engine.load(str(resolve_model(config.model.path))).result()
    runner = engine.runner
    assert runner is not None
    mode = prompt_mode(config.model.adapter, chat_template(runner.metadata) is not None, args.prompt)
    status = engine.status()
    print(f"model {status.name}" + (f" + adapter {config.model.adapter}" if config.model.adapter else "")
          + f", {mode} prompt, {runner.threads} threads", flush=True)
    out = open(args.jsonl, "w") if args.jsonl else None
    outcomes: list[StepOutcome] = []
    try:
        for i, step in enumerate(steps):
            t1 = time.perf_counter()
            res = ask(engine, step, mode, args.edit_budget_ms, config.next_edit.max_tokens)
            if res.region != (step.region_start, step.region_start + step.region.count("\n")) and res.edit:
                print(f"warning: step {i}: the server's region {res.region} is not the step's", file=sys.stderr)
            n_prompt, n_gen = res.n_prompt, res.n_generated
            o = score(step, predicted_region(step, res), res.answer, (time.perf_counter() - t1) * 1000, n_prompt,
                      n_gen, res.reason)
            outcomes.append(o)
            if args.verbose:
                mark = "=" if o.right else ("+" if o.predicted_edit else " ")
                print(f"  {i:3d} {mark} {o.kind:10s} {step.path}:{step.region_start + 1} es {o.similarity:.2f} "
                      f"{o.ms:.0f} ms {n_prompt}+{n_gen} tok", file=sys.stderr, flush=True)
            if out is not None:
                row = asdict(o)
                row.update(region=step.region, cursor=step.cursor, target=step.target, edits=step.edits,
                           predicted=predicted_region(step, res),
                           mode=mode, model=status.name, adapter=config.model.adapter)
                out.write(json.dumps(row) + "\n")
                out.flush()
    except KeyboardInterrupt:
        print(f"interrupted after {len(outcomes)} steps", file=sys.stderr)
    finally:
        engine.close()
        if out is not None:
            out.close()
    print_summary(f"{status.name} ({mode})", summarize(outcomes))
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The next-edit options of ``slm-lsp eval`` (``--task next-edit``)."""
    p.add_argument("--heldout-commits", type=int, default=HELDOUT_COMMITS,
                   help=f"next-edit: the most recent commits replayed (never trained on by finetune "
                        f"--task next-edit with the same number; default {HELDOUT_COMMITS})")
    p.add_argument("--prompt", choices=["auto", "raw", "chat"], default="auto",
                   help="next-edit: raw (the finetuned format), chat (zero-shot instruct) or auto (raw for an "
                        "adapter whose template.json says next_edit, else chat)")
    p.add_argument("--edit-budget-ms", type=int, default=300_000,
                   help="next-edit: generation time of one suggestion (next_edit.time_budget_ms; the default is "
                        "long so that a slow machine measures the model, not the budget)")
    p.add_argument("--compare", nargs=2, metavar=("A", "B"),
                   help="no model: pair two runs, B against A (wins and losses, sign test). next-edit: two --jsonl "
                        "runs, step by step; otherwise two finetune reports (OUT/eval.json), their adapters on "
                        "the held-out lines both gates asked, line by line (one adapter for two tasks or two)")
