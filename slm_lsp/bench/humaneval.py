"""``slm-lsp bench humaneval``: HumanEval single-line infilling pass@1, server vs. raw model.

Each task's hole becomes an empty line in a document (prompt + empty line + suffix) with the
cursor on it, and the server's engine answers as it would in an editor (windows, shaping).
In the same run the raw model answers the plain PSM prompt, greedy, cut at the first newline.
Every completion is run against the task's tests in a subprocess. With ``--typed K`` the server
is first asked with the last K characters of the prefix still untyped, so its answer goes
through KV reuse and the suffix shift as during typing (and may come from the type-through cache).
"""

from __future__ import annotations

import argparse
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
from ..engine.service import CompletionEngine, CompletionRequest
from ..models import resolve_model

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

    config = merge_config(cli.cli_settings(args)).config
    model_path = str(resolve_model(config.model.path))
    tasks = load_tasks(find_data(args.data), args.n)
    engine = CompletionEngine(config)
    engine.load(model_path).result()
    runner = engine.runner
    assert runner is not None
    print(f"model {runner.name} ({runner.template.name}); {len(tasks)} HumanEval single-line infilling tasks")
    server_ok = raw_ok = 0
    server_ms: list[float] = []
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
        # The raw model: plain PSM prompt, greedy, cut at the first newline.
        tokens = plain_fim_prompt(runner.template, runner.tokenize, runner.special, task["prompt"], task["suffix"],
                                  runner.bos)
        gen = runner.generate(Prompt(tokens, [], [], [], "", ""), max_tokens=config.completion.max_tokens,
                              stop_at=lambda t: t.find("\n") if "\n" in t else None)
        r_pass = passes(task, gen.text.split("\n", 1)[0] + "\n")
        server_ok += s_pass
        raw_ok += r_pass
        if args.verbose:
            print(f"  {task['task_id']:40s} server {'PASS' if s_pass else 'fail'} {res.text!r:60.60} "
                  f"raw {'PASS' if r_pass else 'fail'} {gen.text!r:60.60}", file=sys.stderr)
    engine.close()
    n = len(tasks)
    print(f"pass@1 server (windows + shaping): {server_ok}/{n} = {100 * server_ok / n:.1f}%")
    print(f"pass@1 raw model, plain FIM:        {raw_ok}/{n} = {100 * raw_ok / n:.1f}%")
    print(f"server latency p50 {sorted(server_ms)[n // 2]:.0f} ms; total {time.perf_counter() - t_start:.0f} s")
    return 0
