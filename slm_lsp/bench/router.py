"""``slm-lsp bench router``: what ``auto`` would do, replayed from a local and a remote run.

The router is deterministic: for one task, the local model gives the same answer with the same
log-probabilities every time, and the server the same answer. So one ``bench humaneval --route
local --jsonl`` run and one ``--route remote --jsonl`` run over the same tasks decide, exactly,
the accuracy and the share sent of ``auto`` under any thresholds: a task goes to the server when it
is a block (``remote.auto_blocks``), when the local answer is empty (``auto_empty``) or when its
mean (or lowest) token log-probability is under the threshold; its answer is then the server's.

Thresholds chosen on the tasks they are reported on flatter them. The tasks are split by HumanEval
problem (a problem's tasks are holes in one function, so they are alike): every
``--pick-every``-th problem forms the draw the thresholds are picked on (the most accurate setting
that sends at most ``--max-sent`` of that draw's requests), and the other problems are the draw
the result is reported on, with local-only and remote-only on the same tasks and the paired
wins and losses of ``auto`` against local-only (an exact two-sided sign test).

Latency is computed too, from each run's own measured latencies (a task answered locally costs
its local time; one sent after the local answer costs both; a block sent at once costs the
server's): a model of ``auto``, not a measurement of it. ``bench humaneval --route auto`` measures it.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from ..engine.router import SIGNAL_OFF
from . import percentile
from .humaneval import sign_test

MEAN_THRESHOLDS = (SIGNAL_OFF, -1.0, -0.8, -0.6, -0.5, -0.4, -0.35, -0.3, -0.25, -0.2, -0.15, -0.1, -0.05)
MIN_THRESHOLDS = (SIGNAL_OFF, -6.0, -5.0, -4.0, -3.0, -2.5, -2.0, -1.5, -1.0)


@dataclass(frozen=True)
class Task:
    task_id: str
    problem: int
    local_pass: bool
    local_text: str
    local_ms: float
    multiline: bool
    mean_logprob: float
    min_logprob: float
    remote_pass: bool
    remote_ms: float


@dataclass(frozen=True)
class Setting:
    """The ``remote.auto_*`` settings that decide on a local answer."""

    blocks: bool
    empty: bool
    mean_logprob: float
    min_logprob: float

    def sends(self, task: Task) -> str:
        """Why ``task`` goes to the server under this setting ("" when it stays local; "a block"
        when it goes before the local model runs)."""
        if self.blocks and task.multiline:
            return "a block"
        if self.empty and not task.local_text.strip():
            return "empty answer"
        if self.mean_logprob > SIGNAL_OFF and task.mean_logprob < self.mean_logprob:
            return "unsure (mean)"
        if self.min_logprob > SIGNAL_OFF and task.min_logprob < self.min_logprob:
            return "unsure (lowest)"
        return ""

    def describe(self) -> str:
        def signal(value: float) -> str:
            return "off" if value <= SIGNAL_OFF else f"{value:g}"

        return (f"auto_blocks={str(self.blocks).lower()} auto_empty={str(self.empty).lower()} "
                f"auto_mean_logprob={signal(self.mean_logprob)} auto_min_logprob={signal(self.min_logprob)}")


@dataclass
class Outcome:
    tasks: int
    passed: int
    sent: int
    won: int
    """Tasks auto passes and local-only fails."""
    lost: int
    p50_ms: float
    p95_ms: float

    @property
    def accuracy(self) -> float:
        return self.passed / self.tasks if self.tasks else 0.0

    @property
    def share_sent(self) -> float:
        return self.sent / self.tasks if self.tasks else 0.0


def problem_number(task_id: str) -> int:
    """``SingleLineInfilling/HumanEval/12/L3`` -> 12."""
    match = re.search(r"HumanEval/(\d+)", task_id)
    if match is None:
        raise SystemExit(f"error: {task_id!r} is not a HumanEval task id")
    return int(match.group(1))


def load_runs(local_path: Path, remote_path: Path) -> list[Task]:
    """The tasks both runs answered, paired by task id, in the local run's order."""
    def read(path: Path) -> dict[str, dict]:
        rows: dict[str, dict] = {}
        with path.open(encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    row = json.loads(line)
                    rows[row["task_id"]] = row
        return rows

    local, remote = read(local_path), read(remote_path)
    tasks = []
    for task_id, row in local.items():
        if task_id not in remote:
            continue
        if row.get("backend") != "local" or row.get("mean_logprob") is None or "multiline" not in row:
            raise SystemExit(f"error: {local_path}: {task_id} was not answered by the local model with its "
                             "log-probabilities (run bench humaneval --route local --jsonl)")
        if remote[task_id].get("backend") != "remote":
            raise SystemExit(f"error: {remote_path}: {task_id} was not answered by the server "
                             f"({remote[task_id].get('route')}); rerun it with a longer --remote-timeout-ms")
        tasks.append(Task(task_id, problem_number(task_id), bool(row["pass"]), row["text"], float(row["ms"]),
                          bool(row["multiline"]), float(row["mean_logprob"]), float(row["min_logprob"]),
                          bool(remote[task_id]["pass"]), float(remote[task_id]["ms"])))
    return tasks


def outcome(tasks: list[Task], setting: Setting | None, route: str = "auto") -> Outcome:
    """``route`` local, remote, or auto under ``setting``, over ``tasks``."""
    passed = sent = won = lost = 0
    latencies = []
    for task in tasks:
        if route == "auto":
            assert setting is not None
            why = setting.sends(task)
        else:
            why = "route remote" if route == "remote" else ""
        ok = task.remote_pass if why else task.local_pass
        passed += ok
        sent += bool(why)
        won += ok and not task.local_pass
        lost += task.local_pass and not ok
        if not why:
            latencies.append(task.local_ms)
        elif why in ("a block", "route remote"):
            latencies.append(task.remote_ms)
        else:
            latencies.append(task.local_ms + task.remote_ms)
    return Outcome(len(tasks), passed, sent, won, lost, percentile(latencies, 50), percentile(latencies, 95))


def settings_grid() -> list[Setting]:
    return [Setting(blocks, True, mean, low) for blocks in (True, False) for mean in MEAN_THRESHOLDS
            for low in MIN_THRESHOLDS]


def pick(tasks: list[Task], max_sent: float) -> tuple[Setting, Outcome]:
    """The most accurate setting that sends at most ``max_sent`` of ``tasks`` (ties: fewer sent)."""
    best: tuple[Setting, Outcome] | None = None
    for setting in settings_grid():
        result = outcome(tasks, setting)
        if result.share_sent > max_sent + 1e-9:
            continue
        if best is None or (result.passed, -result.sent) > (best[1].passed, -best[1].sent):
            best = (setting, result)
    if best is None:  # every setting sends too much: nothing but blocks and empty answers
        setting = Setting(False, False, SIGNAL_OFF, SIGNAL_OFF)
        best = (setting, outcome(tasks, setting))
    return best


def gap_recovered(local: Outcome, remote: Outcome, auto: Outcome) -> float | None:
    gap = remote.passed - local.passed
    return (auto.passed - local.passed) / gap if gap > 0 else None


def report(name: str, tasks: list[Task], setting: Setting, defaults: Setting) -> dict:
    local, remote = outcome(tasks, None, "local"), outcome(tasks, None, "remote")
    picked, default = outcome(tasks, setting), outcome(tasks, defaults)
    n = len(tasks)
    print(f"\n{name}: {n} tasks of {len({t.problem for t in tasks})} problems")
    print("| route | pass@1 | sent to the server | won / lost vs local | sign test p | latency p50 | p95 |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    rows = {"local-only": local, "remote-only": remote, f"auto, picked ({setting.describe()})": picked,
            f"auto, the defaults ({defaults.describe()})": default}
    for label, result in rows.items():
        print(f"| {label} | {result.passed}/{n} = {100 * result.accuracy:.1f}% | {result.sent}/{n} = "
              f"{100 * result.share_sent:.1f}% | {result.won} / {result.lost} | "
              f"{sign_test(result.won, result.lost):.2g} | {result.p50_ms / 1000:.1f} s | "
              f"{result.p95_ms / 1000:.1f} s |")
    for label, result in (("picked", picked), ("defaults", default)):
        recovered = gap_recovered(local, remote, result)
        if recovered is not None:
            print(f"auto ({label}) recovers {result.passed - local.passed} of the {remote.passed - local.passed} tasks "
                  f"between local-only and remote-only ({100 * recovered:.0f}% of the gap), sending "
                  f"{100 * result.share_sent:.0f}% of the requests")
    return {"tasks": n, "local": asdict(local), "remote": asdict(remote), "picked": asdict(picked),
            "defaults": asdict(default)}


def run_router_bench(args: argparse.Namespace) -> int:
    from ..config import Config

    tasks = load_runs(Path(args.local), Path(args.remote))
    if not tasks:
        print("error: the two runs have no task in common", file=sys.stderr)
        return 1
    tuning = [t for t in tasks if t.problem % args.pick_every == 0]
    held_out = [t for t in tasks if t.problem % args.pick_every != 0]
    rc = Config().remote
    defaults = Setting(rc.auto_blocks, rc.auto_empty, rc.auto_mean_logprob, rc.auto_min_logprob)
    setting, tuned = pick(tuning, args.max_sent)
    print(f"{len(tasks)} tasks answered by both runs; thresholds picked on {len(tuning)} tasks (problems whose "
          f"number is a multiple of {args.pick_every}), reported on the other {len(held_out)}")
    print(f"picked on the tuning draw: {setting.describe()} ({tuned.passed}/{tuned.tasks} pass, "
          f"{100 * tuned.share_sent:.0f}% sent; at most {100 * args.max_sent:.0f}% allowed)")
    result = {"picked": asdict(setting), "defaults": asdict(defaults),
              "held_out": report("held-out draw", held_out, setting, defaults),
              "tuning": report("tuning draw (the thresholds were picked here: flattered)", tuning, setting, defaults)}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("local", help="bench humaneval --route local --jsonl output")
    parser.add_argument("remote", help="bench humaneval --route remote --jsonl output, the same tasks")
    parser.add_argument("--max-sent", type=float, default=0.4, help="the largest share of requests auto may send")
    parser.add_argument("--pick-every", type=int, default=4,
                        help="every K-th HumanEval problem is the draw the thresholds are picked on")
    parser.add_argument("--json", metavar="OUT", help="write the results here")
    parser.add_argument("-v", "--verbose", action="store_true")
