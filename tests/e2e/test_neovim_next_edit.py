"""Next-edit suggestions in the Neovim plugin (``editors/nvim/lua/slm/next_edit.lua``), in a real
headless Neovim against the real server (``tests/e2e/nvim/next_edit_init.lua`` drives it).

The wire: edits typed in Insert mode and in Normal mode make the plugin send ``slm/nextEdit``
after its debounce, once per edit, for the cursor, and the server answers it (the tiny model: no
error; what it answers is whatever it is, and whatever it is, the plugin shows it or nothing).
The rendering: edits the server could answer are passed to the plugin's ``show()`` (the result
object, no mock of the server), and the test checks the extmarks drawn (text removed struck
through, text added inline or as virtual lines), that ``<Tab>`` jumps to the edit and ``<Tab>``
again applies it (the buffer as the edit's UTF-16 range and newText say), and that ``<Esc>``, an
edit elsewhere or a change made meanwhile dismiss it. The expected buffers are computed here from
the LSP edit, independently of the plugin. With the real Qwen (``SLM_LSP_TEST_MODEL``) the model's
own answer is shown and, when it suggests an edit, applied with two ``<Tab>``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import server_command
from tests.e2e.test_nvim import run_driver

pytestmark = pytest.mark.nvim

DRIVER = Path(__file__).parent / "nvim" / "next_edit_init.lua"
DEBOUNCE_MS = 200  # the driver's next_edit.debounce_ms

SOURCE = "def area(r):\n    return 3.14 * r * r\n\n\ndef main():\n    print(area(2.0))\n"


def lsp_range(start: tuple[int, int], end: tuple[int, int]) -> dict[str, Any]:
    return {"start": {"line": start[0], "character": start[1]}, "end": {"line": end[0], "character": end[1]}}


def utf16(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def from_utf16(line: str, units: int) -> int:
    """The str index of a UTF-16 offset in ``line``."""
    count = 0
    for i, ch in enumerate(line):
        if count >= units:
            return i
        count += utf16(ch)
    return len(line)


def apply_edit(lines: list[str], edit: dict[str, Any]) -> list[str]:
    """``lines`` with an LSP edit (UTF-16 positions) applied, as a client must apply it."""
    text = "\n".join(lines)

    def offset(position: dict[str, int]) -> int:
        if position["line"] >= len(lines):
            return len(text)
        line = lines[position["line"]]
        return sum(len(x) + 1 for x in lines[: position["line"]]) + from_utf16(line, position["character"])

    start, end = offset(edit["range"]["start"]), offset(edit["range"]["end"])
    return (text[:start] + edit["newText"] + text[end:]).split("\n")


def byte_col(line: str, units: int) -> int:
    return len(line[: from_utf16(line, units)].encode())


RENAMED = ["def area(radius):", "    return 3.14 * r * r", "", "", "def main():", "    print(area(2.0))"]
RENAME_EDIT = {"range": lsp_range((1, 0), (1, 23)), "newText": "    return 3.14 * radius * radius",
               "cause": "next-edit"}
# What the real Qwen2.5-Coder-0.5B answered to the rename (the server's minimal replacement starts
# after the `r` it keeps): the plugin must still show whole words.
MID_WORD_EDIT = {"range": lsp_range((1, 19), (1, 23)), "newText": "adius * radius",
                 "cause": "follows your edit at line 1"}
LOOP = ["def total(items):", "    result = 0", "    return result"]
LOOP_EDIT = {"range": lsp_range((1, 0), (2, 0)),
             "newText": "    result = 0\n    for item in items:\n        result += item\n"}
WIDE = ['    label = "héllo😀" + r', "    return label"]
WIDE_EDIT = {"range": lsp_range((0, utf16('    label = "héllo😀" + ')), (0, utf16(WIDE[0]))), "newText": "str(radius)"}
NO_CHANGE = {"range": lsp_range((0, 0), (0, 3)), "newText": "def"}

CASES: list[dict[str, Any]] = [
    {"name": "rename", "lines": RENAMED, "cursor": [1, 0], "edit": RENAME_EDIT, "keys": ["<Tab>", "<Tab>"]},
    {"name": "mid_word", "lines": RENAMED, "cursor": [1, 0], "edit": MID_WORD_EDIT, "keys": ["<Tab>", "<Tab>"]},
    {"name": "lines_added", "lines": LOOP, "cursor": [1, 0], "edit": LOOP_EDIT, "keys": ["<Tab>", "<Tab>"]},
    {"name": "utf16", "lines": WIDE, "cursor": [2, 0], "edit": WIDE_EDIT, "keys": ["<Tab>", "<Tab>"]},
    {"name": "utf8_client", "lines": WIDE, "cursor": [2, 0], "encoding": "utf-8",
     "edit": {"range": lsp_range((0, len('    label = "héllo😀" + '.encode())), (0, len(WIDE[0].encode()))),
              "newText": "str(radius)"}, "keys": ["<Tab>", "<Tab>"]},
    {"name": "insert_mode", "lines": RENAMED, "cursor": [6, 0], "edit": RENAME_EDIT, "keys": ["i", "<Tab>", "<Tab>"]},
    {"name": "escape", "lines": RENAMED, "cursor": [1, 0], "edit": RENAME_EDIT, "keys": ["<Esc>", "<Tab>"]},
    {"name": "edit_elsewhere", "lines": RENAMED, "cursor": [5, 0], "edit": RENAME_EDIT, "keys": ["x", "<Tab>"]},
    {"name": "changed_meanwhile", "lines": RENAMED, "cursor": [1, 0], "edit": RENAME_EDIT,
     "keys": ["@modify", "<Tab>"]},
    {"name": "nothing_to_change", "lines": RENAMED, "cursor": [1, 0], "edit": NO_CHANGE, "keys": ["A", "<Tab>"]},
    {"name": "out_of_view", "lines": [f"x{i} = {i}" for i in range(80)], "cursor": [1, 0],
     "edit": {"range": lsp_range((60, 0), (60, 3)), "newText": "y60"}, "keys": ["<Tab>", "<Tab>"]},
    {"name": "inline_item", "lines": RENAMED, "cursor": [1, 17], "position": {"line": 0, "character": 17},
     "inline": {"items": [{"insertText": RENAME_EDIT["newText"], "range": RENAME_EDIT["range"]}]},
     "keys": ["<Tab>", "<Tab>"]},
    {"name": "inline_ghost", "lines": RENAMED, "cursor": [1, 17], "position": {"line": 0, "character": 17},
     "inline": {"items": [{"insertText": "  # r", "range": lsp_range((0, 17), (0, 17))}]}, "keys": []},
    {"name": "outside_the_buffer", "lines": LOOP, "cursor": [1, 0],
     "edit": {"range": lsp_range((7, 0), (7, 0)), "newText": "x"}, "keys": []},
]


def run(tmp_path: Path, model: str, wire_ms: int, only_rename: bool = False) -> dict[str, Any]:
    return run_driver(DRIVER, tmp_path, "area.py", SOURCE, {
        "SLM_NVIM_SERVER_CMD": json.dumps(server_command("--model", model)),
        "SLM_NVIM_CASES": json.dumps(CASES), "SLM_NVIM_WIRE_MS": str(wire_ms),
        "SLM_NVIM_ONLY_RENAME": "1" if only_rename else "0"}, timeout=2 * wire_ms / 1000 + 300)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from tests.conftest import TINY_MODEL

    return run(tmp_path_factory.mktemp("nvim-next-edit"), str(TINY_MODEL), 30000)


def check_wire_step(step: dict[str, Any]) -> None:
    """One edit: one request, for the cursor, after the debounce, answered without an error; the
    plugin shows the answer when it is an edit that changes something."""
    assert step["requests"] == 1, step
    row, col = step["cursor"]
    assert step["params"] == {"textDocument": {"uri": step["uri"]}, "position": {"line": row - 1, "character": col}}
    assert step["since_keys_ms"] >= DEBOUNCE_MS, step
    assert step["err"] is None, f"slm/nextEdit failed: {step['err']}"
    result, state = step["result"], step["state"]
    if result is None:
        assert not state["visible"] and state["marks"] == [] and state["stats"]["empty"] >= 1
        return
    assert set(result) >= {"range", "newText"}, result
    if state["visible"]:
        assert state["marks"], "an edit is shown without extmarks"
    else:  # the answer changes nothing (or is not in the buffer): nothing is drawn
        assert state["marks"] == [] and state["stats"]["empty"] + state["stats"]["invalid"] >= 1


def test_edits_ask_the_real_server_for_the_next_edit(report: dict[str, Any]) -> None:
    assert report["filetype"] == "python"
    assert report["method"] == "slm/nextEdit"
    assert [step["name"] for step in report["wire"]] == ["insert", "normal", "accepted"]
    for step in report["wire"][:2]:
        check_wire_step(step)
    assert report["wire"][0]["state"]["lines"][0] == "def area(radius):"  # what was typed reached the buffer
    assert report["quiet_requests"] == 0  # no edit, no request


def test_an_accepted_completion_asks_for_the_next_edit(report: dict[str, Any]) -> None:
    step = report["wire"][2]
    # <Tab> accepted the ghost text (it comes before a next edit, and before a plain tab)...
    assert step["ghost_shown"] is True and step["line"] == "    total = 0"  # after the autoindent of `O`
    # ...and the next edit was asked for at the cursor after it, in Insert mode, after the debounce.
    check_wire_step(step)
    assert step["mode_at_answer"] == "i"
    assert step["params"]["position"] == {"line": 1, "character": len("    total = 0")}
    # Leaving Insert mode, where the text changed, asks once more.
    assert step["after_leaving"]["requests"] == 2 and step["after_leaving"]["err"] is None


def test_checkhealth_reports_next_edits(report: dict[str, Any]) -> None:
    health = report["health"]
    assert health["ok"], health["err"]
    text = "\n".join(health["lines"])
    assert (f"OK next edits: asked for {DEBOUNCE_MS} ms after an edit; <Tab> jumps to one and applies it, "
            "<Esc> dismisses it") in text
    counts = re.search(r"next edits: (\d+) asked, (\d+) shown, (\d+) applied", text)
    assert counts, text
    asked = sum(step["requests"] for step in report["wire"][:2]) + report["wire"][2]["after_leaving"]["requests"]
    assert int(counts.group(1)) == asked and int(counts.group(3)) == 0
    assert not [line for line in health["lines"] if "ERROR" in line or "WARNING" in line], text


def test_setup_refuses_invalid_next_edit_options(report: dict[str, Any]) -> None:
    assert [s["returned"] for s in report["invalid_setups"]] == [False, False, False]
    messages = [s["message"] for s in report["invalid_setups"]]
    assert messages[0].startswith("[slm] invalid option: next_edit.debounce_ms: expected a number >= 0")
    assert messages[1] == '[slm] invalid option: next_edit.keymaps: unknown option "jump"'
    assert messages[2] == "[slm] invalid option: next_edit: expected a table or false, got true"
    assert report["setup"] is True


def test_keys_and_highlights(report: dict[str, Any]) -> None:
    assert report["maps"]["n_tab"] == "[slm] jump to or apply the next edit"
    assert report["maps"]["n_esc"] == "[slm] dismiss the next edit"
    # Insert mode: the ghost text first, then the next edit, then a plain tab.
    assert report["maps"]["i_tab"] == "[slm] accept the suggestion, else jump to or apply the next edit"
    assert report["hl"]["delete"].get("strikethrough") is True
    assert report["hl"]["insert"].get("link") == "DiffAdd"


def cases(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    by_name = {case["name"]: case for case in report["cases"]}
    assert list(by_name) == [case["name"] for case in CASES]
    return by_name


def test_a_rename_is_struck_through_and_shown_inline_then_tab_jumps_and_tab_applies(report: dict[str, Any]) -> None:
    case = cases(report)["rename"]
    assert case["shown"] is True
    # The words that change: "r * r" struck through, "radius * radius" after it.
    assert case["initial"]["marks"] == [
        {"row": 1, "col": 18, "end_row": 1, "end_col": 23, "hl": "SlmNextEditDelete", "text": None, "text_hl": None,
         "pos": None, "virt_lines": [], "above": False},
        {"row": 1, "col": 23, "end_row": None, "end_col": None, "hl": None, "text": "radius * radius",
         "text_hl": "SlmNextEditInsert", "pos": "inline", "virt_lines": [], "above": False},
    ]
    jump, apply = case["steps"]
    assert jump["cursor"] == [2, 18] and jump["lines"] == RENAMED and jump["visible"] and jump["marks"]
    assert jump["stats"]["jumped"] == case["initial"]["stats"]["jumped"] + 1
    assert apply["lines"] == apply_edit(RENAMED, RENAME_EDIT)
    assert apply["lines"][1] == "    return 3.14 * radius * radius"
    assert not apply["visible"] and apply["marks"] == []
    assert apply["stats"]["applied"] == case["initial"]["stats"]["applied"] + 1
    assert apply["cursor"] == [2, len("    return 3.14 * radius * radius") - 1]  # on the last character added


def test_a_range_cut_inside_a_word_shows_the_whole_words(report: dict[str, Any]) -> None:
    case = cases(report)["mid_word"]
    rename = cases(report)["rename"]
    assert case["initial"]["marks"] == rename["initial"]["marks"]  # `r * r` struck, `radius * radius` after it
    jump, apply = case["steps"]
    assert jump["cursor"] == [2, 18]
    assert apply["lines"] == apply_edit(RENAMED, MID_WORD_EDIT) == apply_edit(RENAMED, RENAME_EDIT)


def test_lines_added_show_as_virtual_lines_where_they_go(report: dict[str, Any]) -> None:
    case = cases(report)["lines_added"]
    (mark,) = case["initial"]["marks"]
    assert (mark["row"], mark["above"]) == (2, True)  # above `return result`: where they will be
    assert [line["text"] for line in mark["virt_lines"]] == ["    for item in items:", "        result += item"]
    assert {line["hl"] for line in mark["virt_lines"]} == {"SlmNextEditInsert"}
    jump, apply = case["steps"]
    assert jump["cursor"] == [3, 0] and jump["lines"] == LOOP
    assert apply["lines"] == apply_edit(LOOP, LOOP_EDIT)
    assert apply["cursor"] == [4, len("        result += item") - 1]


@pytest.mark.parametrize("name", ["utf16", "utf8_client"])
def test_positions_in_the_clients_encoding(report: dict[str, Any], name: str) -> None:
    case = cases(report)[name]
    start = byte_col(WIDE[0], WIDE_EDIT["range"]["start"]["character"])
    assert start == len('    label = "héllo😀" + '.encode())  # bytes, not UTF-16 units: the check means something
    delete, insert = case["initial"]["marks"]
    assert (delete["col"], delete["end_col"]) == (start, len(WIDE[0].encode()))
    assert insert["text"] == "str(radius)"
    jump, apply = case["steps"]
    assert jump["cursor"] == [1, start]
    assert apply["lines"] == apply_edit(WIDE, WIDE_EDIT)


def test_tab_jumps_and_applies_in_insert_mode_too(report: dict[str, Any]) -> None:
    case = cases(report)["insert_mode"]
    enter, jump, apply = case["steps"]
    assert enter["mode"] == "i" and enter["visible"]  # entering Insert mode keeps it
    assert jump["cursor"] == [2, 18] and jump["lines"] == RENAMED
    assert apply["lines"] == apply_edit(RENAMED, RENAME_EDIT)
    assert apply["cursor"] == [2, len("    return 3.14 * radius * radius")]  # Insert mode: after it


@pytest.mark.parametrize("name, first",
                         [("escape", "<Esc>"), ("edit_elsewhere", "x"), ("changed_meanwhile", "@modify")])
def test_escape_and_other_edits_dismiss_it(report: dict[str, Any], name: str, first: str) -> None:
    case = cases(report)[name]
    assert case["shown"] is True and case["initial"]["marks"]
    dismissed, tab = case["steps"]
    assert dismissed["keys"] == first
    assert not dismissed["visible"] and dismissed["marks"] == []
    assert dismissed["stats"]["dismissed"] == case["initial"]["stats"]["dismissed"] + 1
    # <Tab> afterwards is Normal mode's own (<C-i>): the edit is not applied.
    assert tab["lines"] == dismissed["lines"]
    assert tab["stats"]["applied"] == case["initial"]["stats"]["applied"]
    assert tab["lines"][1] == RENAMED[1]


def test_an_edit_that_changes_nothing_is_not_shown_and_tab_stays_a_tab(report: dict[str, Any]) -> None:
    case = cases(report)["nothing_to_change"]
    assert case["shown"] is False and case["initial"]["marks"] == []
    _append, tab = case["steps"]
    # A tab, or the spaces to the next 'softtabstop' stop (Python's ftplugin sets expandtab).
    assert tab["lines"][0] in (RENAMED[0] + "\t", RENAMED[0] + "   ")


def test_an_edit_out_of_view_gets_a_hint_on_the_cursor_line_until_the_jump(report: dict[str, Any]) -> None:
    case = cases(report)["out_of_view"]
    hints = [m for m in case["initial"]["marks"] if m["pos"] == "eol"]
    assert hints == [{"row": 0, "col": 0, "end_row": None, "end_col": None, "hl": None,
                      "text": "  ↓ next edit: line 61 (<Tab>)", "text_hl": "SlmNextEditHint", "pos": "eol",
                      "virt_lines": [], "above": False}]
    jump, apply = case["steps"]
    assert jump["cursor"] == [61, 0]
    assert [m for m in jump["marks"] if m["pos"] == "eol"] == [] and jump["marks"]  # the hint went, the edit stays
    assert apply["lines"][60] == "y60 = 60"


def test_an_inline_item_away_from_the_cursor_is_shown_as_a_next_edit(report: dict[str, Any]) -> None:
    case = cases(report)["inline_item"]
    assert case["shown"] == "next_edit" and case["ghost"] is None
    assert case["initial"]["marks"] == cases(report)["rename"]["initial"]["marks"]
    jump, apply = case["steps"]
    assert jump["cursor"] == [2, 18]
    assert apply["lines"] == apply_edit(RENAMED, RENAME_EDIT)
    # An item at the cursor is still ghost text, not a next edit.
    ghost = cases(report)["inline_ghost"]
    assert ghost["shown"] == "ghost" and ghost["ghost"] == "  # r" and not ghost["initial"]["visible"]


def test_an_edit_outside_the_buffer_is_not_shown(report: dict[str, Any]) -> None:
    case = cases(report)["outside_the_buffer"]
    assert case["shown"] is False and case["initial"]["marks"] == [] and not case["initial"]["visible"]


@pytest.mark.skipif(not os.environ.get("SLM_LSP_TEST_MODEL"), reason="set SLM_LSP_TEST_MODEL to a Qwen instruct GGUF")
def test_the_real_models_next_edit_is_shown_and_applied(tmp_path: Path) -> None:
    # The parameter renamed on the `def` line: its uses below are the next edit. Whether the model
    # suggests one is its call; what the plugin does with the answer is checked either way.
    data = run(tmp_path, os.environ["SLM_LSP_TEST_MODEL"], 240000, only_rename=True)
    (step,) = data["wire"]
    check_wire_step(step)
    print(f"slm/nextEdit answered in {step['answered_after_ms']} ms: {step['result']!r}")
    applied = data.get("applied_answer")
    if applied is None:
        assert not step["state"]["visible"]
        return
    assert step["result"] is not None and applied["edit"]["newText"] == step["result"]["newText"]
    jump, apply = applied["steps"]
    assert jump["lines"] == applied["before"]
    assert apply["lines"] == apply_edit(applied["before"], applied["edit"])
    assert not apply["visible"]
