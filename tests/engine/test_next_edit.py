"""engine/next_edit.py: the format (prompts, targets, the strict answer parser), the minimal replacement
and its checks, and run_next_edit on real (tiny) models, preempted on the engine's worker."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from slm_lsp.config import merge_config
from slm_lsp.engine.model import LlamaRunner
from slm_lsp.engine.next_edit import (
    ADAPTER_KEY,
    ANSWER_HEADER,
    ANSWER_MARGIN,
    CURSOR,
    NO_EDIT,
    PROSE_CHARS,
    REGION_END,
    REGION_START,
    FirstChange,
    NextEditInput,
    NextEditRequest,
    build_input,
    chat_messages,
    close_region,
    complete_answer,
    complete_tail,
    editable_region,
    implausible,
    keep_blank_lines,
    minimal_replacement,
    parse_output,
    region_position,
    render_prompt,
    render_target,
    reverts,
    run_next_edit,
    trained_for_next_edit,
)
from slm_lsp.engine.requests import CompletionRequest
from slm_lsp.engine.service import CompletionEngine
from tests.engine.test_edit import CHATML
from tests.tiny_model import build_tiny_gguf

REGION = "def tally(items):\n    count = 0\n    for item in items:\n        total += item\n    return total\n"
EDIT = "--- a/app.py\n+++ b/app.py\n@@ -2 +2 @@\n-    total = 0\n+    count = 0\n"
RENAMED = REGION.replace("total", "count")


def make_input(**kw: object) -> NextEditInput:
    args: dict[str, object] = {"path": "app.py", "edits": [EDIT], "region": REGION,
                               "cursor": REGION.index("count = 0") + len("count = 0")}
    args.update(kw)
    return NextEditInput(**args)  # type: ignore[arg-type]


def test_prompt_has_the_edits_the_region_and_the_cursor_in_order() -> None:
    prompt = render_prompt(make_input())
    assert prompt.endswith(ANSWER_HEADER)
    assert prompt.index("### Recent edits\n" + EDIT) < prompt.index(REGION_START) < prompt.index(REGION_END)
    marked = REGION.replace("count = 0", "count = 0" + CURSOR)
    assert f"### Excerpt of app.py\n{REGION_START}\n{marked}{REGION_END}\n" in prompt
    assert "Repository context" not in prompt


def test_prompt_edits_oldest_first_and_context_first() -> None:
    older = "--- a/app.py\n+++ b/app.py\n@@ -1 +1 @@\n-def total(items):\n+def tally(items):"  # no final line end
    prompt = render_prompt(make_input(edits=[older, EDIT], context="def helper(): ..."))
    assert prompt.startswith("### Repository context\ndef helper(): ...\n\n### Recent edits\n")
    assert prompt.index("+def tally(items):\n") < prompt.index("+    count = 0")


def test_prompt_without_edits_says_none_and_clamps_the_cursor() -> None:
    prompt = render_prompt(make_input(edits=[], cursor=10_000))
    assert "### Recent edits\n(none)\n" in prompt
    assert f"{REGION}{CURSOR}{REGION_END}" in prompt
    assert f"{REGION_START}\n{CURSOR}def" in render_prompt(make_input(cursor=-3))


def test_target_round_trips_through_the_parser() -> None:
    target = render_target(RENAMED)
    assert target == f"{REGION_START}\n{RENAMED}{REGION_END}\n"
    assert parse_output(target, REGION) == RENAMED
    assert render_target(None) == NO_EDIT + "\n"
    assert parse_output(render_target(None), REGION) is None


def test_region_without_final_line_end_round_trips() -> None:
    region = REGION.rstrip("\n")
    new = RENAMED.rstrip("\n")
    assert parse_output(render_target(new), region) == new


def test_fenced_answer_and_copied_cursor_are_accepted() -> None:
    answer = f"```python\n{REGION_START}\n{RENAMED.replace('count = 0', 'count = 0' + CURSOR)}{REGION_END}\n```\n"
    assert parse_output(answer, REGION) == RENAMED


def test_end_marker_on_the_last_line_gets_its_line_end_back() -> None:
    answer = f"{REGION_START}\n{RENAMED.rstrip(chr(10))}{REGION_END}"
    assert parse_output(answer, REGION) == RENAMED


@pytest.mark.parametrize("answer", [
    f"{REGION_START}\n{REGION}{REGION_END}",                            # unchanged
    f"{REGION_START}\n{RENAMED}",                                       # cut before its end
    f"{RENAMED}{REGION_END}",                                           # no start marker
    f"Here is the edit:\n{REGION_START}\n{RENAMED}{REGION_END}",        # prose before
    f"{REGION_START}\n{RENAMED}{REGION_END}\nI renamed total.",         # prose after
    f"{REGION_START}{RENAMED}{REGION_END}",                             # start marker not on its own line
    f"{REGION_START}\n{RENAMED}{REGION_START}\n{RENAMED}{REGION_END}",  # a second region inside
    f"{REGION_START}\n{RENAMED}{NO_EDIT}{REGION_END}",                  # a stray marker
    f"{REGION_START}\n{RENAMED}{REGION_END}\n{REGION_START}\n{RENAMED}{REGION_END}",  # two regions
    NO_EDIT, f"  {NO_EDIT}\n", "", "no edit needed",
])
def test_unusable_or_no_edit_answers_are_none(answer: str) -> None:
    assert parse_output(answer, REGION) is None


def test_chat_messages_carry_the_same_body_and_the_answer_format() -> None:
    messages = chat_messages(make_input(context="CTX"))
    assert [m["role"] for m in messages] == ["system", "user"]
    for marker in (REGION_START, REGION_END, NO_EDIT, CURSOR):
        assert marker in messages[0]["content"]
    body = render_prompt(make_input(context="CTX")).removesuffix(ANSWER_HEADER)
    assert messages[1]["content"].startswith(body)
    assert ANSWER_HEADER not in messages[1]["content"]


# -- the engine's side ---------------------------------------------------------------------------

DOC = "import os\n\n\n" + REGION + "\n\nprint(tally([1, 2]))\n"


@pytest.fixture(scope="module")
def tiny_chat_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_gguf(tmp_path_factory.mktemp("chat") / "tiny-chat.gguf", chat_template=CHATML)


def request(**kw: object) -> NextEditRequest:
    args: dict[str, object] = {"document_key": "file:///r/app.py", "text": DOC, "line": 4, "column": 13,
                               "path": "app.py", "edits": [EDIT], "language_id": "python", "region_lines": 8,
                               "max_tokens": 256}
    args.update(kw)
    return NextEditRequest(**args)  # type: ignore[arg-type]


def test_editable_region_is_a_third_above_the_cursor() -> None:
    assert editable_region(100, 50, 21) == (43, 64)
    assert editable_region(100, 2, 21) == (0, 21)
    assert editable_region(100, 99, 21) == (79, 100)
    assert editable_region(5, 3, 21) == (0, 5)


@pytest.mark.parametrize("old, new, expected", [
    ("a = total + 1\n", "a = count + 1\n", (4, 9, "count")),
    ("f(a)\n", "f(a, b)\n", (3, 3, ", b")),
    ("x = 1\ny = 2\nz = 3\n", "x = 1\nz = 3\n", (6, 12, "")),
    ("abc", "abc", (3, 3, "")),
])
def test_minimal_replacement_leaves_out_the_common_head_and_tail(old: str, new: str,
                                                                 expected: tuple[int, int, str]) -> None:
    start, end, text = minimal_replacement(old, new)
    assert (start, end, text) == expected
    assert old[:start] + text + old[end:] == new


def test_edits_that_rewrite_or_delete_most_of_the_region_are_implausible() -> None:
    assert implausible(REGION, RENAMED, *minimal_replacement(REGION, RENAMED)) is None
    gutted = "def tally(items):\n    pass\n"
    assert "deletes most" in (implausible(REGION, gutted, *minimal_replacement(REGION, gutted)) or "")
    rewritten = "".join(line.replace("    ", "\t") + "# x\n" for line in REGION.splitlines())
    assert "rewrites most" in (implausible(REGION, rewritten, *minimal_replacement(REGION, rewritten)) or "")
    grown = REGION + "".join(f"    extra{i} = {i}\n" for i in range(8))
    assert "adds more lines" in (implausible(REGION, grown, *minimal_replacement(REGION, grown)) or "")
    long = "".join(f"x{i} = {i}\n" for i in range(12))
    dropped = long.replace("x4 = 4\nx5 = 5\nx6 = 6\n", "")
    assert "only deletes" in (implausible(long, dropped, *minimal_replacement(long, dropped)) or "")
    two = long.replace("x4 = 4\nx5 = 5\n", "")  # two lines (the unused ones after a change) may go
    assert implausible(long, two, *minimal_replacement(long, two)) is None


def test_region_positions_are_document_lines_and_columns() -> None:
    lines = ["ab\n", "cd\r\n", "ef"]
    assert region_position(lines, 10, 0) == (10, 0)
    assert region_position(lines, 10, 2) == (10, 2)  # the end of the first line, before its line end
    assert region_position(lines, 10, 3) == (11, 0)
    assert region_position(lines, 10, 7) == (12, 0)  # after "\r\n"
    assert region_position(lines, 10, 9) == (12, 2)


def test_build_input_marks_the_cursor_and_keeps_the_newest_edits() -> None:
    inp, (first, last) = build_input(request(edits=["x" * 3000, "y" * 1500, EDIT]), DOC.splitlines(True))
    assert (first, last) == (2, 10)
    assert inp.region == "".join(DOC.splitlines(True)[2:10])
    assert inp.region[inp.cursor - 13:inp.cursor] == "    count = 0"
    assert inp.edits == ["y" * 1500, EDIT]  # the oldest did not fit MAX_EDITS_CHARS


def test_the_adapter_flag_is_read_from_template_json(tmp_path: Path) -> None:
    file = tmp_path / "template.json"
    assert not trained_for_next_edit(file)  # none
    file.write_text(json.dumps({"name": "qwen2.5-coder", ADAPTER_KEY: True}))
    assert trained_for_next_edit(file)
    file.write_text(json.dumps({"name": "qwen2.5-coder", ADAPTER_KEY: "yes"}))
    assert not trained_for_next_edit(file)
    file.write_text("{not json")
    assert not trained_for_next_edit(file)


def test_a_base_model_without_an_adapter_gets_no_next_edit(tiny_model: Path) -> None:
    runner = LlamaRunner(str(tiny_model), threads=1, n_ctx=1024)
    try:
        result = run_next_edit(runner, request(), lambda: False)
    finally:
        runner.close()
    assert (result.edit, result.reason, result.mode, result.n_generated) == (None, "no-template", "chat", 0)


def test_answers_that_are_not_a_region_are_no_edit(tiny_chat_model: Path) -> None:
    # The tiny model writes identifier-like words and never a marker nor an end of turn.
    runner = LlamaRunner(str(tiny_chat_model), threads=1, n_ctx=2048)
    try:
        # The chat answer starts inside the region (prefilled): it runs to its token limit, the
        # region's tokens and a margin, and is cut.
        result = run_next_edit(runner, request(), lambda: False)
        assert (result.edit, result.reason, result.mode, result.stop_reason) == (None, "cut (length)", "chat",
                                                                                 "length")
        region_tokens = len(runner.tokenize("".join(DOC.splitlines(True)[2:10])))
        assert region_tokens < result.n_generated <= region_tokens * 5 // 4 + ANSWER_MARGIN
        assert result.answer.startswith(REGION_START + "\n") and result.region == (2, 10)
        # The raw prompt (an adapter's "next_edit": true sets the flag): no marker after
        # PROSE_CHARS is prose, stopped there.
        runner.next_edit_prompt = True
        raw = run_next_edit(runner, request(), lambda: False)
        assert (raw.edit, raw.reason, raw.mode, raw.stop_reason) == (None, "unusable", "adapter", "stop")
        assert PROSE_CHARS < len(raw.answer) < PROSE_CHARS + 40
        assert raw.n_prompt != result.n_prompt
    finally:
        runner.close()


@pytest.mark.parametrize("written, expected", [
    (RENAMED + REGION_END, RENAMED),                          # the marker
    (RENAMED, RENAMED),                                       # the end of the turn after the last line
    (RENAMED + "```\n", RENAMED),                             # a closing fence
    ("```python\n" + RENAMED + "```", RENAMED),               # a whole code block
    (RENAMED.rsplit("    return", 1)[0], REGION.replace("        total", "        count")),  # ended after its change
    (REGION.rsplit("    return", 1)[0], None),                # ended early with no change
    (RENAMED + "print(count)\n", None),                       # a line past the region's last
    (RENAMED.replace("return count", "return len(items) > 0"), None),  # a last line unlike the region's
    (NO_EDIT, None),
])
def test_a_prefilled_chat_answer_is_closed_only_when_it_ends_right(written: str, expected: str | None) -> None:
    assert parse_output(close_region(REGION_START + "\n" + written, REGION), REGION) == expected
    if REGION_END not in written:  # cut by the token limit, not ended by the model: never closed
        assert parse_output(close_region(REGION_START + "\n" + written, REGION, finished=False), REGION) is None


def test_a_cancelled_suggestion_stops_before_answering(tiny_chat_model: Path) -> None:
    runner = LlamaRunner(str(tiny_chat_model), threads=1, n_ctx=2048)
    try:
        result = run_next_edit(runner, request(), lambda: True)
    finally:
        runner.close()
    assert (result.edit, result.reason, result.n_generated) == (None, "cancelled", 0)


def test_a_prompt_over_the_context_window_drops_the_repo_context_first(tiny_chat_model: Path) -> None:
    runner = LlamaRunner(str(tiny_chat_model), threads=1, n_ctx=2048)
    try:
        plain = run_next_edit(runner, request(), lambda: False)
        result = run_next_edit(runner, request(context="def helper():\n    pass\n" * 400), lambda: False)
    finally:
        runner.close()
    assert result.reason == "cut (length)"
    assert result.n_prompt == plain.n_prompt  # (the tiny tokenizer spends a token on most characters)
    assert result.n_prompt + 64 < 2048


def test_a_completion_request_preempts_a_suggestion_on_the_worker(tiny_chat_model: Path) -> None:
    engine = CompletionEngine(merge_config({"model": {"threads": 1, "n_ctx": 2048}}).config, probe_files=False)
    engine.load(str(tiny_chat_model)).result(60)
    started = threading.Event()

    def work(runner: LlamaRunner, stopped: Callable[[], bool]) -> bool:
        started.set()
        deadline = time.monotonic() + 30
        while not stopped() and time.monotonic() < deadline:
            time.sleep(0.01)
        return stopped()

    try:
        suggestion = engine.run_on_model(work, key="\x00next_edit", preemptible=True)
        assert started.wait(30)
        completion = engine.submit(CompletionRequest(document_key="k", text=DOC, line=4, column=13))
        assert suggestion.result(30) is True  # stopped by the waiting request, not by its deadline
        assert completion.future.result(60).reason != "cancelled"
        # Without preemptible, only closing the engine stops it.
        plain = engine.run_on_model(lambda runner, stopped: [stopped() for _ in range(3)])
        assert plain.result(30) == [False, False, False]
    finally:
        engine.close()


LETTERS = "a\nb\nc\nd\ne\nf\n"


@pytest.mark.parametrize("region, written, expected", [
    (LETTERS, "a\nB\nc\nd\n", "a\nB\nc\nd\ne\nf\n"),        # a changed line, then two of the region's
    (LETTERS, "a\nb\nNEW\nc\nd\n", "a\nb\nNEW\nc\nd\ne\nf\n"),  # an inserted line
    (LETTERS, "a\nc\nd\n", "a\nc\nd\ne\nf\n"),               # a deleted line (b)
    ("a\nb\n\nd\ne\n", "a\nB\n\nd\n", "a\nB\n\nd\ne\n"),   # a blank line and a line: one is not blank
])
def test_an_answer_stops_once_its_first_change_is_over(region: str, written: str, expected: str) -> None:
    change = FirstChange(region)
    cuts = [change.stop_at(written[:i]) for i in range(len(written) + 1)]
    assert cuts[:-1] == [None] * len(written)  # not before the last line of the resync is complete
    assert cuts[-1] == len(written)
    assert change.finish(written) == expected


def test_blank_lines_alone_do_not_resync_and_no_change_never_stops() -> None:
    change = FirstChange("a\nb\n\n\nc\n")
    assert all(change.stop_at("a\nB\n\n\n"[:i]) is None for i in range(9))
    change = FirstChange(REGION)
    assert all(change.stop_at(REGION[:i]) is None for i in range(len(REGION) + 1))
    # REGION's rename on its line 3 resyncs only with its last line: written to the end.
    continued = REGION.replace("        total", "        count")
    assert all(change.stop_at(continued[:i]) is None for i in range(len(continued) + 1))


def test_an_edit_that_takes_back_the_last_one_is_recognised() -> None:
    undone = REGION.replace("count = 0", "total = 0")
    assert reverts(REGION, undone, EDIT)  # count -> total again, where the user wrote total -> count
    assert not reverts(REGION, RENAMED, EDIT)  # the rename continued
    assert not reverts(RENAMED.replace("count = 0", "n = 0"), RENAMED, EDIT)  # the edit is not in the region
    assert not reverts(REGION, undone, "--- a/app.py\n+++ b/app.py\n@@ -1 +1 @@\n")


AREA = "def area(w, h):\n    return w * h\n\n\ndef box(w, h, d):\n    return area(w, h) * d\n"


@pytest.mark.parametrize("body, expected", [
    # the 1.5B's answer to a parameter renamed: the use below renamed, then the region closed
    ("def area(width, h):\n    return width * h\n",
     AREA.replace("(w, h):\n    return w", "(width, h):\n    return width")),
    ('def area(width, h):\n    """Area."""\n    return w * h\n',  # a line inserted
     AREA.replace("(w, h):\n", '(width, h):\n    """Area."""\n')),
    ("def area(w, h):\n    return w * h\n", None),    # no change: nothing to complete
    (AREA, None),                                     # as long as the region
    ("x = 1\ny = 2\nz = 3\nw = 4\n", None),           # a rewrite, not an edit
])
def test_a_region_ended_right_after_its_change_gets_the_regions_rest(body: str, expected: str | None) -> None:
    assert complete_tail(body, AREA) == expected


def test_complete_answer_needs_the_end_marker() -> None:
    body = "def area(width, h):" + CURSOR + "\n    return width * h\n"
    assert parse_output(complete_answer(f"{REGION_START}\n{body}{REGION_END}", AREA), AREA) == AREA.replace(
        "(w, h):\n    return w", "(width, h):\n    return width")
    assert complete_answer(f"{REGION_START}\n{body}", AREA) == f"{REGION_START}\n{body}"  # cut: as it is



@pytest.mark.parametrize("new, expected", [
    # the 1.5B's suggestion: the use renamed, one of the two blank lines after it dropped
    ("def area(w, h):\n    return width * h\n\ndef box(w, h, d):\n    return area(w, h) * d\n",
     AREA.replace("return w * h", "return width * h")),
    (AREA.replace("\n\n\n", "\n\n\n\n"), AREA),                      # a blank line added: none
    (AREA.replace("h):\n    return w", "h):\n    x = 1\n    return w"),  # a line inserted keeps its place
     AREA.replace("h):\n    return w", "h):\n    x = 1\n    return w")),
    (AREA.replace("\n\n\ndef box", "\ndef box").replace("return w * h", "return w"),  # a change and a blank line
     AREA.replace("return w * h", "return w")),
    (AREA.rstrip("\n").replace("* d", "* d * 2"), AREA.replace("* d", "* d * 2")),  # the last line end
])
def test_blank_lines_stay_the_regions(new: str, expected: str) -> None:
    assert keep_blank_lines(AREA, new) == expected


def test_blank_lines_without_a_final_line_end() -> None:
    assert keep_blank_lines("a\n\nb", "a\nB\n") == "a\n\nB"
