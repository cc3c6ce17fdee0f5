"""The recent edits as diffs (``context/edit_history.py``)."""

from __future__ import annotations

import threading

from slm_lsp.context.edit_history import EditHistory, changed_span, hunk_diff

SOURCE = "def tally(items):\n    total = 0\n    for item in items:\n        total += item\n    return total\n"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def lines(text: str) -> list[str]:
    return text.splitlines(True)


def typed(history: EditHistory, key: str, steps: list[str]) -> None:
    """Feed each text of ``steps`` as one didChange."""
    for text in steps:
        history.change(key, lines(text))


def test_changed_span_skips_the_common_head_and_tail() -> None:
    old = lines(SOURCE)
    new = lines(SOURCE.replace("    total = 0", "    count = 0"))
    assert changed_span(old, new) == (1, 2, 2)
    assert changed_span(old, list(old)) is None
    assert changed_span(old, old[:2] + ["    x = 1\n"] + old[2:]) == (2, 2, 3)  # an insertion
    assert changed_span(old, old[:1] + old[2:]) == (1, 2, 1)  # a deletion
    assert changed_span(["a\n", "b"], ["a\r\n", "b"]) is None  # line ends do not count


def test_hunk_diff_is_numbered_as_in_the_document() -> None:
    old = lines("\n".join(f"line {i}" for i in range(50)) + "\n")
    new = list(old)
    new[30] = "line thirty\n"
    diff = hunk_diff("pkg/a.py", old, new, (30, 31, 31))
    assert diff == ("--- a/pkg/a.py\n+++ b/pkg/a.py\n@@ -30,3 +30,3 @@\n line 29\n-line 30\n+line thirty\n"
                    " line 31\n")


def test_typing_on_the_same_line_is_one_edit() -> None:
    history = EditHistory(clock=Clock())
    history.open("u", "app.py", lines(SOURCE))
    # "total" on line 1 deleted letter by letter, then "count" typed: ten didChanges.
    word = "total"
    steps = [SOURCE.replace("    total = 0", "    " + word[:i] + " = 0") for i in range(4, -1, -1)]
    steps += [SOURCE.replace("    total = 0", "    " + "count"[:i] + " = 0") for i in range(1, 6)]
    typed(history, "u", steps)
    edits = history.edits()
    assert len(edits) == 1
    assert edits[0].diff == ("--- a/app.py\n+++ b/app.py\n@@ -1,3 +1,3 @@\n def tally(items):\n-    total = 0\n"
                             "+    count = 0\n     for item in items:\n")
    assert (edits[0].start, edits[0].end) == (1, 2)


def test_an_edit_elsewhere_starts_a_new_one_and_a_new_line_joins_the_typing() -> None:
    history = EditHistory(clock=Clock())
    history.open("u", "app.py", lines(SOURCE))
    first = SOURCE.replace("    total = 0", "    count = 0")
    history.change("u", lines(first))
    # Enter at the end of line 1, then typing on the new line: still the same edit.
    second = first.replace("    count = 0\n", "    count = 0\n\n")
    third = first.replace("    count = 0\n", "    count = 0\n    seen = 0\n")
    history.change("u", lines(second))
    history.change("u", lines(third))
    assert len(history.edits()) == 1
    assert "+    count = 0\n+    seen = 0\n" in history.edits()[0].diff
    # Line 4 (return) is away from lines 1-2: a new edit.
    fourth = third.replace("    return total", "    return count")
    history.change("u", lines(fourth))
    diffs = history.diffs(8)
    assert len(diffs) == 2
    assert "-    return total\n+    return count\n" in diffs[1]
    # Back on line 1: the newest edit is elsewhere, so a third one.
    history.change("u", lines(fourth.replace("count = 0", "count = 1")))
    assert len(history.edits()) == 3


def test_a_pause_starts_a_new_edit() -> None:
    clock = Clock()
    history = EditHistory(clock=clock, coalesce_s=5)
    history.open("u", "app.py", lines(SOURCE))
    history.change("u", lines(SOURCE.replace("total = 0", "total = 1")))
    clock.now += 6
    history.change("u", lines(SOURCE.replace("total = 0", "total = 2")))
    assert [e.diff.splitlines()[-2] for e in history.edits()] == ["+    total = 1", "+    total = 2"]


def test_typed_then_taken_back_is_no_edit() -> None:
    history = EditHistory(clock=Clock())
    history.open("u", "app.py", lines(SOURCE))
    history.change("u", lines(SOURCE.replace("total = 0", "total = 01")))
    history.change("u", lines(SOURCE))
    assert history.edits() == []


def test_edits_across_files_are_ordered_and_bounded() -> None:
    history = EditHistory(size=3, clock=Clock())
    for name in "abcd":
        history.open(name, f"{name}.py", lines(SOURCE))
    for name in "abcd":
        history.change(name, lines(SOURCE.replace("return total", f"return {name}")))
    assert [e.path for e in history.edits()] == ["b.py", "c.py", "d.py"]
    assert [d.splitlines()[0] for d in history.diffs(2)] == ["--- a/c.py", "--- a/d.py"]
    history.close("d")
    assert history.change("d", lines(SOURCE)) is None  # not followed any more; its edit stays
    assert len(history.edits()) == 3
    history.forget("c")
    assert [e.path for e in history.edits()] == ["b.py", "d.py"]
    assert history.last().path == "d.py" and history.last("b").path == "b.py"  # type: ignore[union-attr]


def test_large_edits_are_not_kept() -> None:
    history = EditHistory(max_diff_lines=10, clock=Clock())
    history.open("u", "app.py", lines(SOURCE))
    pasted = SOURCE + "".join(f"x{i} = {i}\n" for i in range(30))
    assert history.change("u", lines(pasted)) is None
    assert history.edits() == []
    assert history.change("u", lines(pasted.replace("x3 = 3", "x3 = 4"))) is not None  # diffed from the paste


def test_diffs_keep_the_newest_within_the_character_budget() -> None:
    history = EditHistory(clock=Clock())
    history.open("u", "app.py", lines(SOURCE))
    history.change("u", lines(SOURCE.replace("total = 0", "total = 1")))
    history.change("u", lines(SOURCE.replace("total = 0", "total = 1").replace("return total", "return 2")))
    size = len(history.edits()[-1].diff)
    assert history.diffs(8, max_chars=size) == [history.edits()[-1].diff]
    assert history.diffs(8, max_chars=size - 1) == []


def test_private_edits_never_go_into_a_remote_prompt() -> None:
    history = EditHistory(clock=Clock())
    history.open("env", ".env", lines("A=1\n"), origin="/w/.env")
    history.open("app", "app.py", lines(SOURCE), origin="/w/app.py")
    history.change("app", lines(SOURCE + 'AWS_SECRET_ACCESS_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY9"\n'))
    history.change("env", lines("A=2\n"))
    secret = 'AWS_SECRET_ACCESS_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY9"\n'
    history.change("app", lines(SOURCE.replace("total = 0", "total = 1") + secret))  # the secret not in its diff
    assert [e.private for e in history.edits()] == [True, False, False]
    assert len(history.diffs(8)) == 3  # the local model sees everything
    remote = history.diffs(8, remote=True, file_private=lambda origin: origin.endswith(".env"))
    assert len(remote) == 1 and remote[0].startswith("--- a/app.py")
    assert history.diffs(8, remote=True) == []  # nobody said which files are safe: none is


def test_concurrent_writers_and_readers() -> None:
    history = EditHistory(size=8, clock=Clock())
    errors: list[BaseException] = []

    def write(name: str) -> None:
        try:
            history.open(name, name, lines(SOURCE))
            for i in range(200):
                history.change(name, lines(SOURCE.replace("return total", f"return {i % 7}")))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def read() -> None:
        try:
            for _ in range(200):
                for diff in history.diffs(8):
                    assert diff.startswith("--- a/")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(f"f{i}",)) for i in range(4)] + [threading.Thread(target=read)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert 1 <= len(history.edits()) <= 8
