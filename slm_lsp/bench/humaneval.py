"""``slm-lsp bench humaneval``: HumanEval single-line infilling pass@1, server vs. raw model.

Each task's hole becomes an empty line in a document (prompt + empty line + suffix) with the
cursor on it, and the server's engine answers as it would in an editor (windows, shaping).
In the same run the raw model answers the plain PSM prompt, greedy, cut at the first newline.
Every completion is run against the task's tests in a subprocess. With ``--typed K`` the server
is first asked with the last K characters of the prefix still untyped, so its answer goes
through KV reuse and the suffix shift as during typing (and may come from the type-through cache).

With ``--route remote|auto --remote URL`` the engine routes as the server would (the raw-model
pass is left out: it measures the local model alone) and the report adds who answered, the
share sent to the server, why, and p50/p95 latency. ``--jsonl`` writes each task's outcome,
with the local answer's mean and lowest token log-probability and whether it was a block request
(what ``auto`` decides on; ``bench router`` replays those decisions over two runs' files).
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..config import merge_config
from ..engine.prompt import Prompt, plain_fim_prompt
from ..engine.router import confidence
from ..engine.service import CompletionEngine, CompletionRequest
from ..models import resolve_model
from . import percentile

DATA_NAME = "HumanEval-SingleLineInfilling.jsonl.gz"


def find_data(explicit: str | None) -> Path:
    if explicit:
        return Path(explicit)
    for base in [Path.cwd(), *Path.cwd().parents]:
        for candidate in (base / "shared" / "benchmarks" / "human-eval-infilling" / DATA_NAME,
                          base.parent / "shared" / "benchmarks" / "human-eval-infilling" / DATA_NAME):
            if candidate.is_file():
                return candidate
    raise SystemExit(f"error: {DATA_NAME} not found; pass --data PATH")


def load_tasks(path: Path, n: int) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:  # type: ignore[operator]
        tasks = [json.loads(line) for line in fh if line.strip()]
    if n >= len(tasks):
        return tasks
    return [tasks[round(i * len(tasks) / n)] for i in range(n)]  # spread evenly over the set


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


def run_humaneval_bench(args: argparse.Namespace) -> int:
    from .. import cli

    settings = cli.cli_settings(args)
    if getattr(args, "time_budget_ms", None):
        settings.setdefault("completion", {})["time_budget_ms"] = args.time_budget_ms
    result = merge_config(settings)
    for error in result.errors:
        print(f"warning: {error}", file=sys.stderr)
    config = result.config
    model_path = str(resolve_model(config.model.path))
    tasks = load_tasks(find_data(args.data), args.n)
    engine = CompletionEngine(config)
    engine.load(model_path).result()
    status = engine.status()
    routed = status.remote is not None
    runner = engine.runner
    print(f"model {status.name} ({status.template}); {len(tasks)} HumanEval single-line infilling tasks")
    if routed:
        print(f"route {status.route}: prompts go to the {status.remote}")
    server_ok = raw_ok = 0
    server_ms: list[float] = []
    backends: collections.Counter[str] = collections.Counter()
    reasons: collections.Counter[str] = collections.Counter()
    out = open(args.jsonl, "w") if getattr(args, "jsonl", None) else None
    t_start = time.perf_counter()
    for task in tasks:
        # The server, as in an editor: the hole is an empty line with the cursor on it.
        doc = task["prompt"] + "\n" + task["suffix"]
        line = task["prompt"].count("\n")
        if args.typed:
            # As in an editor: the last characters of the prefix were typed after an earlier
            # request, so this answer comes through prefix reuse and the shifted suffix.
            before = task["prompt"][: -args.typed]
            engine.complete(CompletionRequest(task["task_id"], before + "\n" + task["suffix"],
                                              before.count("\n"), len(before.rsplit("\n", 1)[-1]), "python"))
        t0 = time.perf_counter()
        res = engine.complete(CompletionRequest(task["task_id"], doc, line, 0, "python"))
        server_ms.append((time.perf_counter() - t0) * 1000)
        s_pass = passes(task, res.text + "\n")
        server_ok += s_pass
        backends[res.backend or res.reason] += 1
        reasons[_reason_kind(res.route)] += 1
        r_pass, raw_text = False, ""
        if runner is not None and not routed and not getattr(args, "no_raw", False):
            # The raw model: plain PSM prompt, greedy, cut at the first newline.
            tokens = plain_fim_prompt(runner.template, runner.tokenize, runner.special, task["prompt"],
                                      task["suffix"], runner.bos)
            gen = runner.generate(Prompt(tokens, [], [], [], "", ""), max_tokens=config.completion.max_tokens,
                                  stop_at=lambda t: t.find("\n") if "\n" in t else None)
            raw_text = gen.text
            r_pass = passes(task, gen.text.split("\n", 1)[0] + "\n")
            raw_ok += r_pass
        local_gen = res.generation if res.generation is not None and res.generation.backend == "local" else None
        mean, lowest = confidence(local_gen.logprobs) if local_gen is not None else (None, None)
        if args.verbose:
            conf = f" mean logprob {mean:.2f}" if mean is not None else ""
            print(f"  {task['task_id']:40s} {res.backend or '-':6s} {'PASS' if s_pass else 'fail'} {res.text!r:60.60}"
                  f"{conf} {res.route}" + (f" raw {'PASS' if r_pass else 'fail'} {raw_text!r:40.40}"
                                           if raw_text else ""), file=sys.stderr)
        if out is not None:
            out.write(json.dumps({"task_id": task["task_id"], "pass": s_pass, "text": res.text,
                                  "backend": res.backend, "route": res.route, "ms": server_ms[-1],
                                  "multiline": res.multiline, "mean_logprob": mean, "min_logprob": lowest}) + "\n")
            out.flush()
    engine.close()
    n = len(tasks)
    if routed:
        print(f"pass@1 route {status.route}: {server_ok}/{n} = {100 * server_ok / n:.1f}%")
        remote = backends.get("remote", 0)
        print("answered by: " + ", ".join(f"{k} {v}" for k, v in sorted(backends.items()))
              + f"; sent to the server: {remote}/{n} = {100 * remote / n:.1f}%")
        print("why: " + ", ".join(f"{k} {v}" for k, v in reasons.most_common()))
    else:
        print(f"pass@1 server (windows + shaping): {server_ok}/{n} = {100 * server_ok / n:.1f}%")
        if not getattr(args, "no_raw", False):
            print(f"pass@1 raw model, plain FIM:        {raw_ok}/{n} = {100 * raw_ok / n:.1f}%")
    print(f"latency p50 {percentile(server_ms, 50):.0f} ms, p95 {percentile(server_ms, 95):.0f} ms; "
          f"total {time.perf_counter() - t_start:.0f} s")
    if out is not None:
        out.close()
    return 0


def _reason_kind(route: str) -> str:
    """The router's reason without its numbers (``unsure (mean ... -0.52 < -0.4)`` -> ``unsure``)."""
    return route.split(" (", 1)[0].split(":", 1)[0] or "-"
