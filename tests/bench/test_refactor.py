"""bench/refactor.py without a model: the functions it prepares for each action, and how it
judges an edit (applied line edits, tests, "did it")."""

from __future__ import annotations

import ast

from slm_lsp.bench.refactor import apply, did_it, functions, passes_tests, prepare
from slm_lsp.engine.edit import LineEdit

TASK = {
    "task_id": "SingleLineInfilling/HumanEval/0/L0", "entry_point": "add",
    "prompt": 'from typing import List\n\n\ndef add(xs: List[int], k: int) -> int:\n    """Sum plus k."""\n',
    "canonical_solution": "    total = sum(xs)\n", "suffix": "    return total + k\n",
    "test": "def check(candidate):\n    assert candidate([1, 2], 3) == 6\n",
}


def test_prepare_strips_what_the_action_adds() -> None:
    doc = prepare(TASK, "docstring")
    assert doc is not None and '"""' not in doc.source and "xs: List[int]" in doc.source
    hints = prepare(TASK, "type_hints")
    assert hints is not None and "def add(xs, k):" in hints.source and "->" not in hints.source
    fn = ast.parse(hints.source).body[-1]
    assert isinstance(fn, ast.FunctionDef) and (hints.start, hints.end) == (fn.lineno - 1, fn.end_lineno)
    assert passes_tests(TASK, doc.source) and passes_tests(TASK, hints.source)


def test_fix_gets_a_misspelt_parameter_and_its_diagnostic() -> None:
    fix = prepare(TASK, "fix")
    assert fix is not None and "return total + k_" in fix.source
    line = fix.source.splitlines().index("    return total + k_")
    assert fix.diagnostics == [(line, "undefined name 'k_' (pyflakes)")]
    assert not passes_tests(TASK, fix.source)
    fixed = fix.source.replace("k_", "k")
    assert did_it("fix", fix.source, fixed, "add", fix.typo) and passes_tests(TASK, fixed)


def test_did_it_and_apply() -> None:
    hints = prepare(TASK, "type_hints")
    assert hints is not None
    line = hints.source.splitlines(True).index("def add(xs, k):\n")
    after = apply(hints.source, [LineEdit(line, line + 1, "def add(xs: list[int], k: int) -> int:\n")])
    assert did_it("type_hints", hints.source, after, "add")
    assert not did_it("type_hints", hints.source, after.replace("k: int", "k"), "add")
    assert not did_it("docstring", hints.source, after, "add")
    assert not did_it("simplify", hints.source, hints.source, "add")


def test_functions_are_one_per_problem_and_shift_draws_others() -> None:
    first, second = functions(None, 10), functions(None, 10, 8)
    ids = [t["task_id"].split("/")[2] for t in first + second]
    assert len(ids) == len(set(ids)) == 20
