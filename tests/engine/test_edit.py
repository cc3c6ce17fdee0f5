"""engine/edit.py: the minimal line diff, the answer's code, the chat prompt, and run_edit on a
real (tiny) model through the engine's worker."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from slm_lsp.config import merge_config
from slm_lsp.context.types import ContextFile
from slm_lsp.engine.edit import (
    EditError,
    EditRequest,
    LineEdit,
    apply_chat_template,
    build_messages,
    enclosing_definition,
    extract_code,
    line_edits,
    parse_errors,
    reindent,
    run_edit,
    split_lines,
)
from slm_lsp.engine.model import LlamaRunner
from slm_lsp.engine.service import CompletionEngine
from tests.tiny_model import build_tiny_gguf

CHATML = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def apply(lines: list[str], edits: list[LineEdit], start: int = 0) -> str:
    out = list(lines)
    for e in sorted(edits, key=lambda e: e.start, reverse=True):
        out[e.start - start:e.end - start] = [e.text]
    return "".join(out)


def test_line_edits_are_the_changed_runs_only() -> None:
    old = ["def f(a, b):\n", "    x = a\n", "    y = b\n", "    return x + y\n"]
    new = "def f(a: int, b: int) -> int:\n    x = a\n    y = b\n    return x + y\n"
    edits = line_edits(old, new, 10)
    assert edits == [LineEdit(10, 11, "def f(a: int, b: int) -> int:\n")]
    assert apply(old, edits, 10) == new


def test_line_edits_insert_delete_and_several_runs() -> None:
    old = ["def f(a):\n", "    a += 1\n", "    a += 1\n", "    return a\n", "\n", "def g():\n", "    pass\n"]
    new = 'def f(a):\n    """Add two."""\n    a += 2\n    return a\n\ndef g():\n    return None\n'
    edits = line_edits(old, new, 0)
    assert [e.start for e in edits] == [1, 6]  # two runs, the lines between untouched
    assert apply(old, edits) == new


def test_line_edits_keep_the_documents_line_ends() -> None:
    old = ["a = 1\r\n", "b = 2\r\n"]
    edits = line_edits(old, "a = 1\nb = 3\n", 0)
    assert edits == [LineEdit(1, 2, "b = 3\r\n")]


def test_line_edits_at_the_end_without_a_final_line_end() -> None:
    old = ["x = 1\n", "y = 2"]
    edits = line_edits(old, "x = 1\ny = 3\n", 0)
    assert edits == [LineEdit(1, 2, "y = 3")]  # the document still ends without one
    assert line_edits(old, "x = 1\ny = 2\n", 0) == []


def test_extract_code() -> None:
    assert extract_code("Here:\n```python\ndef f():\n    pass\n```\nDone.") == "def f():\n    pass\n"
    assert extract_code("def f(): pass") == "def f(): pass\n"
    assert extract_code("```python\ndef f():\n") is None  # cut: never offered
    assert extract_code("") == ""


def test_reindent_puts_the_selection_back_at_its_depth() -> None:
    assert reindent("def f():\n    pass\n\nx = 1\n", "    ") == "    def f():\n        pass\n\n    x = 1\n"
    assert reindent("  a\n  b\n", "\t") == "\ta\n\tb\n"


def test_parse_errors() -> None:
    assert parse_errors("python", "def f():\n    return 1\n") == 0
    assert parse_errors("python", "def f(:\n    return 1\n") > 0
    assert parse_errors("python", "self return value name") > 0


def test_chat_prompt_is_the_templates_layout_with_context_and_task() -> None:
    req = EditRequest("fix", "k", "x = y\n", 0, 1, path="/r/a.py", diagnostics=[(0, "undefined name 'y'")],
                      context=[ContextFile("b.py", "def y() -> int: ...")])
    messages = build_messages(req, "x = y\n", "python")
    text = apply_chat_template(CHATML, messages)
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\n")
    assert "def y() -> int" in text and "line 1: undefined name 'y'" in text and "```python\nx = y\n```" in text
    with pytest.raises(EditError, match="chat template"):
        apply_chat_template("{{ nothing llama.cpp knows }}", messages)


@pytest.fixture(scope="module")
def tiny_chat_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_gguf(tmp_path_factory.mktemp("chat") / "tiny-chat.gguf", chat_template=CHATML)


def _engine(model: Path) -> CompletionEngine:
    engine = CompletionEngine(merge_config({"model": {"threads": 1, "n_ctx": 2048}}).config, probe_files=False)
    engine.load(str(model)).result(60)
    return engine


DOC = "import os\n\n\ndef add(a, b):\n    return a + b\n"


def test_unparsable_answer_is_rejected(tiny_chat_model: Path) -> None:
    # The tiny model writes identifier-like words on one line: never Python that parses.
    engine = _engine(tiny_chat_model)
    try:
        req = EditRequest("docstring", "k", DOC, 3, 5, path="/r/a.py", max_tokens=24)
        future = engine.run_on_model(lambda runner, stopped: run_edit(runner, req, stopped))
        with pytest.raises(EditError, match="does not parse as python"):
            future.result(60)
    finally:
        engine.close()


def test_base_model_and_unknown_language_get_no_edit(tiny_model: Path, tiny_chat_model: Path) -> None:
    runner = LlamaRunner(str(tiny_model), threads=1, n_ctx=512)
    try:
        with pytest.raises(EditError, match="no chat template"):
            run_edit(runner, EditRequest("docstring", "k", DOC, 3, 5, path="/r/a.py"), lambda: False)
    finally:
        runner.close()
    runner = LlamaRunner(str(tiny_chat_model), threads=1, n_ctx=512)
    try:
        with pytest.raises(EditError, match="none for this language"):
            run_edit(runner, EditRequest("docstring", "k", DOC, 0, 1, path="/r/notes.txt"), lambda: False)
        with pytest.raises(EditError, match="not in the document"):
            run_edit(runner, EditRequest("docstring", "k", DOC, 3, 99, path="/r/a.py"), lambda: False)
    finally:
        runner.close()


def test_cancel_stops_between_tokens(tiny_chat_model: Path) -> None:
    engine = _engine(tiny_chat_model)
    stop = threading.Event()
    seen: list[int] = []

    def progress(done: int, total: int) -> None:
        seen.append(done)
        if done == 3:
            stop.set()

    try:
        req = EditRequest("simplify", "k", DOC, 3, 5, path="/r/a.py", max_tokens=500)
        future = engine.run_on_model(lambda runner, stopped: run_edit(
            runner, req, lambda: stopped() or stop.is_set(), progress))
        with pytest.raises(EditError, match="cancelled"):
            future.result(60)
        assert max(seen) < 20  # stopped at the next decode, not after 500 tokens
    finally:
        engine.close()


@pytest.mark.skipif(not os.environ.get("SLM_LSP_TEST_MODEL"), reason="set SLM_LSP_TEST_MODEL to a Qwen instruct GGUF")
def test_real_model_adds_type_hints_as_a_minimal_diff() -> None:
    engine = _engine(Path(os.environ["SLM_LSP_TEST_MODEL"]))
    try:
        req = EditRequest("type_hints", "k", DOC, 3, 5, path="/r/a.py", max_tokens=48)
        result = engine.run_on_model(lambda runner, stopped: run_edit(runner, req, stopped)).result(300)
    finally:
        engine.close()
    after = apply(DOC.splitlines(True), result.edits)
    assert "def add(a: " in after and "->" in after
    assert all(e.start == 3 and e.end == 4 for e in result.edits)  # the body line is left alone


def test_split_lines_are_lsp_lines() -> None:
    assert split_lines("a\r\nb\x0cc\rd\n") == ["a\r\n", "b\x0cc\r", "d\n"]
    assert split_lines("x\ny") == ["x\n", "y"]


def test_enclosing_definition_of_an_empty_selection() -> None:
    text = "import os\n\n\nclass A:\n    def f(self):\n        return 1\n\n    x = 2\n"
    assert enclosing_definition("python", text, 5) == (4, 6)
    assert enclosing_definition("python", text, 7) == (3, 8)
    assert enclosing_definition("python", text, 0) is None
