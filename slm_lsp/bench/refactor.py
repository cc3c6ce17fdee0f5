"""``slm-lsp bench refactor``: the edit actions on functions that have their own tests.

Each HumanEval problem's canonical function is rebuilt from the single-line infilling set (prompt
+ canonical middle + suffix) and prepared for the action: ``docstring`` gets it without its
docstrings, ``type_hints`` without docstrings and annotations (``ast``, so the function is
rewritten by ``ast.unparse``), ``simplify`` and ``rewrite`` as it is, ``fix`` with the last use of
a parameter misspelt and the diagnostic a linter gives for it (the tests fail before the fix). The
entry-point function is the selection; the edit goes through the server's own path
(``CompletionEngine.run_on_model`` → ``engine.edit.run_edit``: chat template, minimal diff,
tree-sitter check), is applied, and the task's tests run on the result. Per action it reports the share
whose result parses (an edit was offered), the share that still passes the tests, and the share
that did the thing (a docstring or full hints present; the code changed; the misspelt name gone).
No repo context: each function is its own file.
"""

from __future__ import annotations

import argparse
import ast
import functools
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..config import merge_config
from ..engine.edit import EditError, EditRequest, EditResult, LineEdit, run_edit
from ..engine.service import CompletionEngine
from ..models import resolve_model
from .humaneval import find_data, load_tasks, passes, sample

ACTION_NAMES = ["docstring", "type_hints", "simplify", "rewrite", "fix"]
REWRITE_INSTRUCTION = "give the local variables longer, more descriptive names"
"""The instruction of the ``rewrite`` action in this benchmark."""


@dataclass
class Function:
    task: dict
    source: str
    """The whole file: imports, helpers and the entry-point function."""
    start: int
    end: int
    """The entry-point function's lines ``[start, end)``."""
    diagnostics: list[tuple[int, str]] = field(default_factory=list)
    """``fix``: the diagnostic of the typo put in (as pyflakes words it)."""
    typo: str = ""


def functions(path: str | None, n: int | None, shift: int = 0) -> list[dict]:
    """One task per HumanEval problem (its first single-line hole), ``n`` spread evenly; ``shift``
    moves each pick that many problems on (another draw of the same size, none in common)."""
    seen: dict[str, dict] = {}
    for task in load_tasks(find_data(path, "single")):
        seen.setdefault(task["task_id"].split("/")[2], task)
    everything = list(seen.values())
    picked = sample(everything, n)
    return [everything[(everything.index(task) + shift) % len(everything)] for task in picked]


def _typo(source: str, fn: ast.FunctionDef) -> tuple[str, int, str] | None:
    """``source`` with the last use of one of ``fn``'s parameters misspelt (``name_``), the line
    and the name: the bug a linter reports as an undefined name."""
    params = {a.arg for a in fn.args.args}
    uses = [n for n in ast.walk(fn) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load) and n.id in params]
    if not uses:
        return None
    use = max(uses, key=lambda n: (n.lineno, n.col_offset))
    lines = source.splitlines(True)
    line = lines[use.lineno - 1]
    lines[use.lineno - 1] = line[:use.col_offset] + use.id + "_" + line[use.end_col_offset:]
    return "".join(lines), use.lineno - 1, use.id + "_"


class _Strip(ast.NodeTransformer):
    def __init__(self, hints: bool) -> None:
        self.hints = hints

    def _body(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> None:
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        self._body(node)
        if self.hints:
            node.returns = None
            for arg in [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs,
                        node.args.vararg, node.args.kwarg]:
                if arg is not None:
                    arg.annotation = None
        self.generic_visit(node)
        return node

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.AST:
        self._body(node)
        self.generic_visit(node)
        return node


def prepare(task: dict, action: str) -> Function | None:
    """The file for ``action``; None when the entry point is not a plain function."""
    source = task["prompt"] + task["canonical_solution"] + task["suffix"]
    tree = ast.parse(source)
    if action in ("docstring", "type_hints"):
        tree = ast.fix_missing_locations(_Strip(action == "type_hints").visit(tree))
        source = ast.unparse(tree) + "\n"
        tree = ast.parse(source)
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == task["entry_point"]:
            assert node.end_lineno is not None
            if action != "fix":
                return Function(task, source, node.lineno - 1, node.end_lineno)
            broken = _typo(source, node)
            if broken is None:
                return None
            text, line, name = broken
            return Function(task, text, node.lineno - 1, node.end_lineno,
                            [(line, f"undefined name '{name}' (pyflakes)")], name)
    return None


def apply(text: str, edits: list[LineEdit]) -> str:
    lines = text.splitlines(True)
    for e in sorted(edits, key=lambda e: e.start, reverse=True):
        lines[e.start:e.end] = [e.text]
    return "".join(lines)


def did_it(action: str, before: str, after: str, entry: str, typo: str = "") -> bool:
    """Whether the edit did what the action asks (on the entry-point function)."""
    if action == "fix":
        return typo not in after
    try:
        fn = next(n for n in ast.parse(after).body if isinstance(n, ast.FunctionDef) and n.name == entry)
    except (SyntaxError, StopIteration):
        return False
    if action == "docstring":
        return ast.get_docstring(fn) is not None
    if action == "type_hints":
        args = [*fn.args.posonlyargs, *fn.args.args, *fn.args.kwonlyargs]
        return fn.returns is not None and all(a.annotation is not None for a in args)
    return ast.dump(ast.parse(after)) != ast.dump(ast.parse(before))


def _edit(req: EditRequest, runner: Any, stopped: Callable[[], bool]) -> EditResult:
    return run_edit(runner, req, stopped)


def passes_tests(task: dict, source: str) -> bool:
    return passes({**task, "prompt": source, "suffix": ""}, "")


def run_refactor_bench(args: argparse.Namespace) -> int:
    from .. import cli

    result = merge_config(cli.cli_settings(args))
    for error in result.errors:
        print(f"warning: {error}", file=sys.stderr)
    config = result.config
    actions = args.actions.split(",") if args.actions else ACTION_NAMES
    unknown = [a for a in actions if a not in ACTION_NAMES]
    if unknown:
        raise SystemExit(f"error: unknown action(s) {', '.join(unknown)} (known: {', '.join(ACTION_NAMES)})")
    tasks = functions(args.data, args.sample, args.shift)
    engine = CompletionEngine(config)
    engine.load(str(resolve_model(config.model.path))).result()
    status = engine.status()
    print(f"model {status.name}; {len(tasks)} HumanEval functions; actions {', '.join(actions)}", flush=True)
    rows: dict[str, Counter[str]] = {a: Counter() for a in actions}
    t_start = time.perf_counter()
    try:
        for i, task in enumerate(tasks, 1):
            for action in actions:
                fn = prepare(task, action)
                counts = rows[action]
                if fn is None or passes_tests(task, fn.source) == (action == "fix"):  # fix: it must fail first
                    counts["skipped"] += 1
                    continue
                req = EditRequest(action, task["task_id"], fn.source, fn.start, fn.end, path="task.py",
                                  instruction=REWRITE_INSTRUCTION, diagnostics=fn.diagnostics)
                t0 = time.perf_counter()
                try:
                    res = engine.run_on_model(functools.partial(_edit, req)).result()
                except EditError as exc:
                    counts["does not parse" if "parse" in str(exc) else "cut or empty"] += 1
                    outcome = f"rejected: {exc}" + (f"\n{exc.answer[:600]}" if args.verbose > 1 else "")
                else:
                    counts["parses"] += 1
                    counts["tokens"] += res.n_generated
                    after = apply(fn.source, res.edits)
                    ok = passes_tests(task, after)
                    did = did_it(action, fn.source, after, task["entry_point"], fn.typo)
                    counts["passes"] += ok
                    counts["did"] += did
                    counts["both"] += ok and did
                    outcome = f"{'pass' if ok else 'FAIL'}, {'did it' if did else 'did not'}"
                counts["n"] += 1  # only now: an interrupted edit is not counted
                counts["ms"] += int((time.perf_counter() - t0) * 1000)
                if args.verbose:
                    print(f"  {task['task_id'].split('/')[2]:>4} {action:<10} {outcome}", flush=True)
            print(f"[{i}/{len(tasks)}] {time.perf_counter() - t_start:.0f} s", flush=True)
    except KeyboardInterrupt:  # Ctrl-C: the table of the edits done so far
        print(f"interrupted after {time.perf_counter() - t_start:.0f} s", flush=True)
    finally:
        engine.close()
    print(f"\n{'action':<11} {'n':>4} {'parses':>8} {'passes':>8} {'did it':>8} {'both':>8} {'s/edit':>7}")
    for action, c in rows.items():
        n = c["n"] or 1
        print(f"{action:<11} {c['n']:>4} {c['parses'] / n:>8.0%} {c['passes'] / n:>8.0%} {c['did'] / n:>8.0%} "
              f"{c['both'] / n:>8.0%} {c['ms'] / n / 1000:>7.1f}"
              + (f"   ({c['skipped']} skipped)" if c["skipped"] else ""))
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sample", "-n", dest="sample", type=int, metavar="N",
                   help="only N functions, spread evenly over HumanEval's 164 (default: all)")
    p.add_argument("--shift", type=int, default=0, metavar="K",
                   help="move each picked function K problems on: another draw of the same size")
    p.add_argument("--actions", help=f"a comma list of {', '.join(ACTION_NAMES)} (default: all)")
    p.add_argument("--data", help="the single-line set's .jsonl(.gz) (default: shared/benchmarks/human-eval-infilling)")
    p.add_argument("-v", "--verbose", action="count", default=0,
                   help="print every edit's outcome (-vv: and the answer of a refused one)")
