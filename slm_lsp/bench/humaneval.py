"""``slm-lsp bench humaneval``: HumanEval infilling pass@1, exact match and a paired comparison,
server vs. raw model.

Three sets (``--set``), from ``shared/benchmarks/human-eval-infilling`` (or ``--data``):

* ``single`` (1,033 tasks): one whole line is missing. The server sees the hole as an empty line
  (prompt + empty line + suffix) with the cursor on it and answers as it would in an editor
  (windows, shaping); the raw model answers the plain PSM prompt, greedy, cut at the first newline.
* ``multi`` (5,815 tasks): one or more whole lines are missing. The server sees one empty line
  with the cursor on it, as above: its shaping decides whether the answer is a line or a block.
  The raw model generates until its end-of-generation token (or ``--raw-max-tokens``).
* ``span`` (random-span-light, 164 tasks): the hole starts and ends anywhere, mid-line too. The
  server's cursor sits where the hole starts, in prompt + suffix; the raw model generates until
  its end-of-generation token (or ``--raw-max-tokens``).

All tasks run by default; ``--sample N`` (alias ``-n``) takes N spread evenly over the set,
``--shard I/N`` every N-th of those from the I-th (N processes, one core each, split a set), and
``--skip K`` leaves out the first K (to finish a stopped run). ``--report A.jsonl B.jsonl ...``
adds up such runs' ``--jsonl`` rows into one table, paired task by task, without a model.
Every middle is run against the task's tests in a subprocess. Exact match compares the middle
with the canonical one, whitespace-normalised (see ``normalise``). With ``--typed K`` the server
is first asked with the last K characters of the prefix still untyped, so its answer goes
through KV reuse and the suffix shift as during typing (and may come from the type-through cache).

With ``--route remote|auto --remote URL`` the engine routes as the server would (the raw-model
pass is left out: it measures the local model alone) and the report adds who answered, the
share sent to the server, why, and p50/p95 latency. ``--jsonl`` writes each task's outcome,
with the local answer's mean and lowest token log-probability and whether it was a block request
(what ``auto`` decides on; ``bench router`` replays those decisions over two runs' files), the
generation before shaping and the raw model's answer.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..config import merge_config
from ..engine.prompt import Prompt, plain_fim_prompt
from ..engine.requests import split_at_cursor
from ..engine.router import confidence
from ..engine.service import CompletionEngine, CompletionRequest
from ..engine.shaping import AnswerLengthChoice, CompletionShaper
from ..models import resolve_model
from . import percentile
from .speculative import SpeculationComparison

SETS = {
    "single": "HumanEval-SingleLineInfilling.jsonl.gz",
    "multi": "HumanEval-MultiLineInfilling.jsonl.gz",
    "span": "HumanEval-RandomSpanInfillingLight.jsonl.gz",
}
DATA_NAME = SETS["single"]
RAW_MAX_TOKENS = 256
"""The raw model's cap on multi-line and span holes, where it runs to its end-of-generation
token: above the canonical middle of 99% of the multi-line tasks (616 characters, ~180 tokens)."""


def find_data(explicit: str | None, set_name: str = "single") -> Path:
    if explicit:
        return Path(explicit)
    name = SETS[set_name]
    for base in [Path.cwd(), *Path.cwd().parents]:
        for candidate in (base / "shared" / "benchmarks" / "human-eval-infilling" / name,
                          base.parent / "shared" / "benchmarks" / "human-eval-infilling" / name):
            if candidate.is_file():
                return candidate
    raise SystemExit(f"error: {name} not found; pass --data PATH")


def load_tasks(path: Path, n: int | None = None) -> list[dict]:
    """The tasks of a set; with ``n``, that many spread evenly over it (the same N picks the same
    tasks in every run, and in runs made before ``--set`` existed)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:  # type: ignore[operator]
        tasks = [json.loads(line) for line in fh if line.strip()]
    return sample(tasks, n)


def sample(tasks: list[dict], n: int | None) -> list[dict]:
    if not n or n >= len(tasks):
        return tasks
    return [tasks[round(i * len(tasks) / n)] for i in range(n)]  # spread evenly over the set


@dataclass(frozen=True)
class Hole:
    """How a task looks to the server: the document, the cursor, and how its answer becomes the
    middle that is tested."""

    document: str
    line: int
    column: int
    whole_lines: bool
    """The hole is whole lines (single, multi): the answer on the empty line gets its newline."""

    def middle(self, answer: str) -> str:
        if self.whole_lines and not answer.endswith("\n"):
            return answer + "\n"
        return answer


def hole(task: dict, set_name: str) -> Hole:
    prompt, suffix = task["prompt"], task["suffix"]
    if set_name == "span":
        # Mid-line holes: the cursor goes where the hole starts, nothing is added.
        line_start = prompt.rfind("\n") + 1
        return Hole(prompt + suffix, prompt.count("\n"), len(prompt) - line_start, False)
    # Whole lines missing: the editor shows one empty line there, with the cursor on it.
    return Hole(prompt + "\n" + suffix, prompt.count("\n"), 0, True)


SUFFIX_ECHO_CHARS = 24
"""How much of the suffix's start (leading whitespace dropped) a raw answer must write out, at a
line start on whole-line sets, to count as having run past the hole."""


def cut_at_suffix(answer: str, suffix: str, whole_lines: bool) -> str:
    """The raw answer up to where it starts to write the suffix out again: the Instruct builds
    seldom end a middle with their end-of-generation token and run on into the code after the
    hole. A fairer raw baseline than the sets' own stop rule; the answer is unchanged when it
    never repeats the suffix."""
    head = suffix.lstrip()[:SUFFIX_ECHO_CHARS]
    if len(head.strip()) < 8:  # too little suffix left to tell an echo from an answer
        return answer
    if not whole_lines:
        at = answer.find(head)
        return answer if at < 0 else answer[:at]
    offset = 0
    for line in answer.splitlines(keepends=True):
        rest = answer[offset:].lstrip()
        # The rest writes the suffix out, or is a cut-off start of it (the token cap hit).
        if rest.startswith(head) or (len(rest.rstrip()) >= 8 and head.startswith(rest.rstrip())):
            return answer[:offset]
        offset += len(line)
    return answer


def normalise(code: str) -> str:
    """Whitespace-normalised code for exact match: each line stripped, blank lines dropped.
    On one line this is Qwen's HumanEval-FIM rule (``answer.strip() == canonical.strip()``,
    qwencoder-eval fim-bench/hm_fim); on several it applies the same rule line by line."""
    return "\n".join(x.strip() for x in code.split("\n") if x.strip())


def exact_match(middle: str, canonical: str) -> bool:
    return normalise(middle) == normalise(canonical)


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact sign test (binomial, p = 1/2) over the tasks where the two differ; ties
    (both pass or both fail) carry no information and are left out."""
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(wins, losses) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def passes(task: dict, middle: str, timeout: float = 15.0) -> bool:
    program = task["prompt"] + middle + task["suffix"] + "\n" + task["test"] + f"\ncheck({task['entry_point']})\n"
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as fh:
        fh.write(program)
    try:
        proc = subprocess.run([sys.executable, fh.name], capture_output=True, timeout=timeout,
                              env={"PATH": os.environ.get("PATH", "")})
        return proc.returncode == 0
    except subprocess.TimeoutExpired:
        return False
    finally:
        os.unlink(fh.name)


def _tokens_per_s(tokens: int, ms: float) -> str:
    return f"{1000 * tokens / ms:.1f}" if ms > 0 else "n/a"


def select_tasks(tasks: list[dict], sample_n: int | None, shard: str | None, skip: int) -> list[dict]:
    """The tasks one run answers: ``sample_n`` spread over the set, then every N-th from the I-th
    (``shard`` "I/N", so N processes split a set between them), then all but the first ``skip``
    (so a stopped run, or a stopped shard, can be finished)."""
    chosen = sample(tasks, sample_n)
    if shard:
        index, count = parse_shard(shard)
        chosen = chosen[index - 1::count]
    return chosen[skip:]


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` -> (I, N), 1 <= I <= N; a clear error otherwise."""
    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard wants I/N, e.g. 1/2, not {text!r}") from None
    if not 1 <= index <= count:
        raise ValueError(f"--shard {text}: I must be between 1 and N")
    return index, count


def read_runs(paths: list[str]) -> list[dict]:
    """The rows of one or more ``--jsonl`` files (shards, or a stopped run and its ``--skip``
    rest), one per task: a task answered twice is an error, not a silent double count."""
    rows: dict[str, dict] = {}
    sets: set[str] = set()
    for path in paths:
        for number, line in enumerate(Path(path).read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not a JSON line ({exc.msg})") from None
            if row["task_id"] in rows:
                raise ValueError(f"{path}:{number}: task {row['task_id']} is already in an earlier line or file")
            rows[row["task_id"]] = row
            sets.add(row.get("set", "single"))
    if len(sets) > 1:
        raise ValueError(f"the files mix sets: {', '.join(sorted(sets))}")
    return list(rows.values())


def summarize(rows: list[dict], set_name: str, route: str | None = None, total_s: float | None = None) -> list[str]:
    """The report of a run (or of several runs' rows): pass@1 and exact match, server vs. raw,
    paired with a sign test; on multi and span also the raw answer cut where it repeats the suffix;
    tokens/s and latency; with ``route`` (a routed run), who answered and why. Everything comes
    from the rows, so ``--report`` prints what the run did."""
    n = len(rows)
    if n == 0:
        return ["no tasks"]
    with_raw = all(r.get("raw_pass") is not None for r in rows)
    server_ok = sum(bool(r["pass"]) for r in rows)
    server_em = sum(bool(r["em"]) for r in rows)
    local = [r for r in rows if r.get("backend") == "local" and r.get("tokens") is not None]
    server_tokens = sum(r["tokens"] for r in local)
    server_gen_ms = sum(r["gen_ms"] or 0.0 for r in local)
    lines = []
    if route is not None:
        backends = collections.Counter(r.get("backend") or r.get("stop_reason") or "-" for r in rows)
        reasons = collections.Counter(_reason_kind(r.get("route") or "") for r in rows)
        lines.append(f"pass@1 route {route}: {server_ok}/{n} = {100 * server_ok / n:.1f}%")
        remote = backends.get("remote", 0)
        lines.append("answered by: " + ", ".join(f"{k} {v}" for k, v in sorted(backends.items()))
                     + f"; sent to the server: {remote}/{n} = {100 * remote / n:.1f}%")
        lines.append("why: " + ", ".join(f"{k} {v}" for k, v in reasons.most_common()))
    else:
        lines.append(f"pass@1 server (windows + shaping): {server_ok}/{n} = {100 * server_ok / n:.1f}%")
    raw_ok = raw_em_n = raw_tokens = 0
    raw_gen_ms = 0.0
    if with_raw:
        raw_ok = sum(bool(r["raw_pass"]) for r in rows)
        raw_em_n = sum(bool(r["raw_em"]) for r in rows)
        raw_tokens = sum(r.get("raw_tokens") or 0 for r in rows)
        raw_gen_ms = sum(r.get("raw_gen_ms") or 0.0 for r in rows)
        lines.append(f"pass@1 raw model, plain FIM:        {raw_ok}/{n} = {100 * raw_ok / n:.1f}%")
    lines.append(f"exact match server: {server_em}/{n} = {100 * server_em / n:.1f}%"
                 + (f"; raw: {raw_em_n}/{n} = {100 * raw_em_n / n:.1f}%" if with_raw else ""))
    if with_raw:
        wins = sum(bool(r["pass"]) and not r["raw_pass"] for r in rows)
        losses = sum(bool(r["raw_pass"]) and not r["pass"] for r in rows)
        lines.append(f"paired vs raw: server won {wins}, lost {losses}, tied {n - wins - losses}; "
                     f"difference {100 * (server_ok - raw_ok) / n:+.1f} points; "
                     f"sign test p = {sign_test(wins, losses):.3g}")
        if set_name != "single" and all(r.get("raw_cut_pass") is not None for r in rows):
            cut_ok = sum(bool(r["raw_cut_pass"]) for r in rows)
            cut_em_n = sum(bool(r["raw_cut_em"]) for r in rows)
            cut_wins = sum(bool(r["pass"]) and not r["raw_cut_pass"] for r in rows)
            cut_losses = sum(bool(r["raw_cut_pass"]) and not r["pass"] for r in rows)
            lines.append(f"raw cut where it repeats the suffix: pass@1 {cut_ok}/{n} = {100 * cut_ok / n:.1f}%, "
                         f"exact match {cut_em_n}/{n} = {100 * cut_em_n / n:.1f}%; server won {cut_wins}, "
                         f"lost {cut_losses}; difference {100 * (server_ok - cut_ok) / n:+.1f} points; "
                         f"sign test p = {sign_test(cut_wins, cut_losses):.3g}")
    if all(r.get("rules_pass") is not None for r in rows):
        lines += model_or_rules(rows)
    if set_name == "multi":
        lines += line_or_block(rows)
    lines.append(f"generated tokens/s: server {_tokens_per_s(server_tokens, server_gen_ms)}"
                 + (f", raw {_tokens_per_s(raw_tokens, raw_gen_ms)}" if with_raw else "")
                 + f"; tokens per answer: server {server_tokens / n:.1f}"
                 + (f", raw {raw_tokens / n:.1f}" if with_raw else ""))
    server_ms = [r["ms"] for r in rows]
    total = total_s if total_s is not None else sum(server_ms) / 1000
    lines.append(f"latency p50 {percentile(server_ms, 50):.0f} ms, p95 {percentile(server_ms, 95):.0f} ms; "
                 f"total {total:.0f} s")
    return lines


def model_or_rules(rows: list[dict]) -> list[str]:
    """A run with ``--answer-length model``: the server's answers (the model's length where it
    ended them) against the rules' answers cut from the same generations, paired."""
    n = len(rows)
    rules_ok = sum(bool(r["rules_pass"]) for r in rows)
    rules_em_n = sum(bool(r["rules_em"]) for r in rows)
    wins = sum(bool(r["pass"]) and not r["rules_pass"] for r in rows)
    losses = sum(bool(r["rules_pass"]) and not r["pass"] for r in rows)
    by_model = sum(r.get("length_by") == "model" for r in rows)
    changed = sum((r.get("text") or "") != (r.get("rules_text") or "") for r in rows)
    return [f"the same generations shaped by the rules: pass@1 {rules_ok}/{n} = {100 * rules_ok / n:.1f}%, "
            f"exact match {rules_em_n}/{n} = {100 * rules_em_n / n:.1f}%",
            f"paired, model length vs rules: won {wins}, lost {losses}; difference "
            f"{100 * (sum(bool(r['pass']) for r in rows) - rules_ok) / n:+.1f} points; "
            f"sign test p = {sign_test(wins, losses):.3g}; the model ended {by_model}/{n} answers, "
            f"{changed} differ from the rules'"]


def hole_lines(task_id: str) -> int | None:
    """How many lines a multi-line task's hole has, from its id (``.../L3_L5``: 3)."""
    last = task_id.rsplit("/", 1)[-1]
    if not last.startswith("L") or "_L" not in last:
        return None
    first, end = last[1:].split("_L", 1)
    return int(end) - int(first) + 1 if first.isdigit() and end.isdigit() else None


def answer_lines(text: str) -> int:
    """Lines in an answer: 0 for nothing, 1 for a line, more for a block."""
    return len(text.rstrip("\n").split("\n")) if text.strip() else 0


def line_or_block(rows: list[dict]) -> list[str]:
    """Issue 15's shaping question on the multi-line set: when the hole is one line, did the server
    answer one line, and when it is a block, a block? Per hole size, how the answers were shaped and
    how many of each passed (the raw cut row beside them)."""
    groups: dict[str, list[dict]] = {"hole of 1 line": [], "hole of 2+ lines": []}
    for row in rows:
        size = hole_lines(row["task_id"])
        if size is not None:
            groups["hole of 1 line" if size == 1 else "hole of 2+ lines"].append(row)
    out = ["one line or a block (the server's answer against the hole):"]
    for name, group in groups.items():
        if not group:
            continue
        parts = []
        for shape, keep in (("nothing", lambda k: k == 0), ("one line", lambda k: k == 1),
                            ("a block", lambda k: k > 1)):
            chosen = [r for r in group if keep(answer_lines(r.get("text") or ""))]
            if chosen:
                parts.append(f"{shape} {len(chosen)} (pass {sum(bool(r['pass']) for r in chosen)})")
        with_cut = all(r.get("raw_cut_pass") is not None for r in group)  # not with --no-raw
        cut = f"raw cut {sum(bool(r['raw_cut_pass']) for r in group)}; " if with_cut else ""
        out.append(f"  {name}: {len(group)} tasks; server pass {sum(bool(r['pass']) for r in group)}, "
                   f"{cut}answered with " + ", ".join(parts))
    return out


def replay_auto(rows: list[dict], tasks: list[dict], set_name: str) -> list[str]:
    """``completion.answer_length: auto`` replayed on a model-length run (``--answer-length
    model``): ``AnswerLengthChoice`` decides task by task in the set's order from each recorded
    generation. Where it gives the model the length the answer is the run's; where it gives the
    rules, the rules' cut of the same generation (``rules_pass``), which is what a rules run
    answers. Exact, as long as the choice depends only on those generations (it does). Empty
    when the rows are not such a run."""
    if not rows or not all(r.get("generated") is not None and r.get("rules_pass") is not None for r in rows):
        return []
    by_id = {r["task_id"]: r for r in rows}
    ordered = [(t, by_id[t["task_id"]]) for t in tasks if t["task_id"] in by_id]
    if len(ordered) != len(rows):
        return []
    choice = AnswerLengthChoice()
    max_lines = merge_config({}).config.completion.max_lines
    got, model_got, used_model = [], [], 0
    for task, row in ordered:
        where = hole(task, set_name)
        prefix, suffix = split_at_cursor(where.document, where.line, where.column)
        generated, complete = row["generated"], row.get("stop_reason") in ("eog", "stop")
        # Where the model does not decide the length its answer is the rules' (runs before the
        # rule that a plain statement at a line end ends with its line let it decide there).
        decides = CompletionShaper.for_cursor(prefix, suffix, max_lines, "model").model_decides(generated)
        model_pass = bool(row["pass"]) if decides else bool(row["rules_pass"])
        mode = choice.mode("auto")
        choice.record("auto", CompletionShaper.for_cursor(prefix, suffix, max_lines, mode), generated, complete)
        used_model += mode == "model"
        got.append(model_pass if mode == "model" else bool(row["rules_pass"]))
        model_got.append(model_pass)
    n, rules = len(got), [bool(r["rules_pass"]) for _, r in ordered]
    won_r, lost_r = sum(a and not b for a, b in zip(got, rules)), sum(b and not a for a, b in zip(got, rules))
    won_m, lost_m = sum(a and not b for a, b in zip(got, model_got)), sum(b and not a for a, b in zip(got, model_got))
    end = choice.snapshot("auto")
    return [f"answer length auto, replayed on these generations: pass@1 {sum(got)}/{n} = {100 * sum(got) / n:.1f} "
            f"(rules {100 * sum(rules) / n:.1f}, model {100 * sum(model_got) / n:.1f}); the model's length on "
            f"{used_model} tasks, the rules' on {n - used_model}",
            f"  vs rules: won {won_r}, lost {lost_r}, sign test p = {sign_test(won_r, lost_r):.2g}; vs model: won "
            f"{won_m}, lost {lost_m}; at the end the model had ended {end['ended']} of the last {end['of']} answers "
            f"it could end ({end['using']} next)"]


def report_runs(args: argparse.Namespace) -> int:
    """``bench humaneval --report A.jsonl [B.jsonl ...]``: the table of earlier runs' rows, added
    up (shards, a stopped run and its rest), without loading a model."""
    try:
        rows = read_runs(args.report)
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    set_name = rows[0].get("set", "single") if rows else "single"
    # A routed run has no raw pass and a router's reason on its rows; its route is not in the rows.
    routed = bool(rows) and all(r.get("raw_pass") is None for r in rows) and any(r.get("route") for r in rows)
    noun = "random-span" if set_name == "span" else f"{set_name}-line"
    print(f"{len(rows)} HumanEval {noun} infilling tasks from {len(args.report)} run file(s)")
    print("\n".join(summarize(rows, set_name, "remote or auto" if routed else None)))
    if any(r.get("length_by") is not None for r in rows):  # a run with the model's length
        try:
            tasks = load_tasks(find_data(getattr(args, "data", None), set_name))
        except (OSError, ValueError) as exc:
            print(f"answer length auto not replayed: {exc}", file=sys.stderr)
        else:
            print("\n".join(replay_auto(rows, tasks, set_name)))
    return 0


def run_humaneval_bench(args: argparse.Namespace) -> int:
    from .. import cli

    if getattr(args, "report", None):
        return report_runs(args)
    settings = cli.cli_settings(args)
    if getattr(args, "time_budget_ms", None):
        settings.setdefault("completion", {})["time_budget_ms"] = args.time_budget_ms
    result = merge_config(settings)
    for error in result.errors:
        print(f"warning: {error}", file=sys.stderr)
    config = result.config
    set_name = getattr(args, "set", "single") or "single"
    try:
        tasks = select_tasks(load_tasks(find_data(args.data, set_name)), args.sample,
                             getattr(args, "shard", None), getattr(args, "skip", 0) or 0)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    model_path = str(resolve_model(config.model.path))
    engine = CompletionEngine(config)
    engine.load(model_path).result()
    status = engine.status()
    routed = status.remote is not None
    runner = engine.runner
    with_raw = runner is not None and not routed and not getattr(args, "no_raw", False)
    raw_max_tokens = getattr(args, "raw_max_tokens", None) or (
        config.completion.max_tokens if set_name == "single" else RAW_MAX_TOKENS)
    print(f"model {status.name} ({status.template}); {len(tasks)} HumanEval {set_name}-line infilling tasks"
          if set_name != "span" else
          f"model {status.name} ({status.template}); {len(tasks)} HumanEval random-span infilling tasks")
    if routed:
        print(f"route {status.route}: prompts go to the {status.remote}")
    rows: list[dict] = []
    out = open(args.jsonl, "w") if getattr(args, "jsonl", None) else None
    compare = SpeculationComparison(engine) if getattr(args, "speculative", None) == "compare" and not routed else None
    progress_every = max(1, min(25, len(tasks) // 20))
    t_start = time.perf_counter()
    for i, task in enumerate(tasks, 1):
        where = hole(task, set_name)
        if args.typed:
            # As in an editor: the last characters of the prefix were typed after an earlier
            # request, so this answer comes through prefix reuse and the shifted suffix.
            before = task["prompt"][: -args.typed]
            rest = where.document[len(task["prompt"]):]
            engine.complete(CompletionRequest(task["task_id"], before + rest, before.count("\n"),
                                              len(before.rsplit("\n", 1)[-1]), "python"))
        # who ends this answer (answer_length auto decides it request by request)
        length_used = str(dict(engine.status().answer_length).get("using", config.completion.answer_length))
        t0 = time.perf_counter()
        res = engine.complete(CompletionRequest(task["task_id"], where.document, where.line, where.column, "python"))
        elapsed_ms = (time.perf_counter() - t0) * 1000
        s_middle = where.middle(res.text)
        s_pass = passes(task, s_middle)
        s_em = exact_match(s_middle, task["canonical_solution"])
        if (compare is not None and res.generation is not None and res.backend == "local"
                and engine.builder is not None and engine.builder.last_prompt is not None):
            compare.add(engine.builder.last_prompt, res.generation)
        r_pass: bool | None = None
        r_em: bool | None = None
        raw_text: str | None = None
        raw_gen = None
        c_pass: bool | None = None
        c_em: bool | None = None
        if with_raw:
            assert runner is not None
            tokens = plain_fim_prompt(runner.template, runner.tokenize, runner.special, task["prompt"],
                                      task["suffix"], runner.bos)
            if set_name == "single":
                # The raw model on one missing line: plain PSM prompt, greedy, cut at the first newline.
                raw_gen = runner.generate(Prompt(tokens, [], [], [], "", ""), max_tokens=raw_max_tokens,
                                          stop_at=lambda t: t.find("\n") if "\n" in t else None)
                r_middle = raw_gen.text.split("\n", 1)[0] + "\n"
            else:
                # Several lines or a span: the model says where its middle ends (its
                # end-of-generation token), as the sets were made to be evaluated.
                raw_gen = runner.generate(Prompt(tokens, [], [], [], "", ""), max_tokens=raw_max_tokens)
                r_middle = where.middle(raw_gen.text)
            raw_text = raw_gen.text
            r_pass = passes(task, r_middle)
            r_em = exact_match(r_middle, task["canonical_solution"])
            if set_name != "single":
                c_middle = where.middle(cut_at_suffix(raw_gen.text, task["suffix"], where.whole_lines))
                c_pass = r_pass if c_middle == r_middle else passes(task, c_middle)
                c_em = exact_match(c_middle, task["canonical_solution"])
        local_gen = res.generation if res.generation is not None and res.generation.backend == "local" else None
        # answer_length "model": what the rules would have shown, from the same generation (the
        # rules' stop is a prefix of it), so the two lengths are paired on identical tokens.
        rules_text: str | None = None
        rules_pass: bool | None = None
        rules_em: bool | None = None
        length_by: str | None = None
        last_prompt = engine.builder.last_prompt if engine.builder is not None else None
        if length_used == "model" and local_gen is not None and last_prompt is not None:
            cc = config.completion
            complete = local_gen.stop_reason in ("eog", "stop")
            by_model = CompletionShaper.for_cursor(last_prompt.prefix, last_prompt.suffix, cc.max_lines, "model")
            length_by = "model" if by_model.ended_by_model(local_gen.text, complete) else "rules"
            rules_text = CompletionShaper.for_cursor(last_prompt.prefix, last_prompt.suffix,
                                                     cc.max_lines).finish(local_gen.text, complete)
            rules_middle = where.middle(rules_text)
            rules_pass = s_pass if rules_text == res.text else passes(task, rules_middle)
            rules_em = exact_match(rules_middle, task["canonical_solution"])
        mean, lowest = confidence(local_gen.logprobs) if local_gen is not None else (None, None)
        if args.verbose:
            conf = f" mean logprob {mean:.2f}" if mean is not None else ""
            print(f"  {task['task_id']:40s} {res.backend or '-':6s} {'PASS' if s_pass else 'fail'} {res.text!r:60.60}"
                  f"{conf} {res.route}" + (f" raw {'PASS' if r_pass else 'fail'} {raw_text!r:40.40}"
                                           if raw_text is not None else ""), file=sys.stderr)
        row = {
            "task_id": task["task_id"], "pass": s_pass, "text": res.text, "backend": res.backend,
            "route": res.route, "ms": elapsed_ms, "multiline": res.multiline, "mean_logprob": mean,
            "min_logprob": lowest, "set": set_name, "em": s_em,
            "generated": res.generation.text if res.generation is not None else None,
            "stop_reason": res.reason,
            "tokens": res.generation.n_generated if res.generation is not None else None,
            "gen_ms": res.generation.gen_ms if res.generation is not None else None,
            "evaluated": res.generation.n_evaluated if res.generation is not None else None,
            "reused": res.generation.n_reused if res.generation is not None else None,
            "answer_length": length_used,
            "length_by": length_by, "rules_text": rules_text, "rules_pass": rules_pass, "rules_em": rules_em,
            "raw_pass": r_pass, "raw_em": r_em, "raw_text": raw_text, "raw_cut_pass": c_pass, "raw_cut_em": c_em,
            "raw_stop_reason": raw_gen.stop_reason if raw_gen is not None else None,
            "raw_tokens": raw_gen.n_generated if raw_gen is not None else None,
            "raw_gen_ms": raw_gen.gen_ms if raw_gen is not None else None,
            "raw_evaluated": raw_gen.n_evaluated if raw_gen is not None else None,
            "raw_reused": raw_gen.n_reused if raw_gen is not None else None}
        rows.append(row)
        if out is not None:
            out.write(json.dumps(row) + "\n")
            out.flush()
        if i % progress_every == 0 or i == len(tasks):
            elapsed = time.perf_counter() - t_start
            # The running counts, from the rows so far (as summarize() will count them).
            server_ok = sum(bool(r["pass"]) for r in rows)
            raw_part = ""
            if with_raw:
                raw_ok = sum(bool(r["raw_pass"]) for r in rows)
                wins = sum(bool(r["pass"]) and not r["raw_pass"] for r in rows)
                losses = sum(bool(r["raw_pass"]) and not r["pass"] for r in rows)
                raw_part = f", raw {raw_ok}/{i} (+{wins} -{losses})"
            print(f"[{i}/{len(tasks)}] server {server_ok}/{i}{raw_part}; {elapsed / i:.1f} s/task, "
                  f"{elapsed * (len(tasks) - i) / i / 60:.0f} min left", file=sys.stderr, flush=True)
    length = dict(engine.status().answer_length)
    engine.close()
    print("\n".join(summarize(rows, set_name, status.route if routed else None, time.perf_counter() - t_start)))
    if length.get("setting") == "auto" and not routed:
        print(f"answer length auto: the model's own length on {sum(r['answer_length'] == 'model' for r in rows)} "
              f"of {len(rows)} tasks, the rules' on the rest; at the end the model had ended {length['ended']} of "
              f"the last {length['of']} answers it could end ({length['using']} next)")
    if compare is not None:
        print("\n".join(compare.report()))
    if out is not None:
        out.close()
    return 0


def _reason_kind(route: str) -> str:
    """The router's reason without its numbers (``unsure (mean ... -0.52 < -0.4)`` -> ``unsure``)."""
    return route.split(" (", 1)[0].split(":", 1)[0] or "-"
