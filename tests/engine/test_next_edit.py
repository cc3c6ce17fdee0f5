"""The next-edit format (``engine/next_edit.py``): prompts, targets and the strict answer parser."""

from __future__ import annotations

import pytest

from slm_lsp.engine.next_edit import (
    ANSWER_HEADER,
    CURSOR,
    NO_EDIT,
    REGION_END,
    REGION_START,
    NextEditInput,
    chat_messages,
    parse_output,
    render_prompt,
    render_target,
)

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
