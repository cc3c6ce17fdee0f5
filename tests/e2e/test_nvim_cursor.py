"""The Neovim plugin tells the server where the cursor came to rest (``slm/cursor``,
``editors/nvim/lua/slm/cursor.lua``), in a real headless Neovim against the real server and the tiny
model (``tests/e2e/nvim/cursor_init.lua`` drives it with the user's keys).

A jump made of several moves sends one notification, once the cursor rests, at the place it rests
(its character in the client's position encoding), and the server warms there (``slm.status``'s
``kvStates``); a move to the next line is sent but warms nothing; a move along the same line sends
nothing, and neither does anything while completions are off; entering another buffer and coming
back each send, and coming back warms.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TINY_MODEL, server_command
from tests.e2e.test_nvim import run_driver

pytestmark = pytest.mark.nvim

DRIVER = Path(__file__).parent / "nvim" / "cursor_init.lua"

LINES = [line for i in range(60) for line in (f"def f{i}(x):", f"    return x + {i}", "")]
# Line 100 (1-based), where the jump rests with the cursor on its last character: the text before
# it is 2-byte, 4-byte and 3-byte characters, so bytes, UTF-16 units and characters all differ.
JUMP_ROW = 100
LINES[JUMP_ROW - 1] = '    label = "naïve 😀 €"  # x'
SOURCE = "\n".join(LINES) + "\n"
OTHER = "def other():\n    return 1\n"


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("nvim-cursor")
    other = tmp / "other.py"
    other.write_text(OTHER, encoding="utf-8")
    return run_driver(DRIVER, tmp, "long.py", SOURCE, {
        "SLM_NVIM_SERVER_CMD": json.dumps(server_command("--model", str(TINY_MODEL))),
        "SLM_NVIM_OTHER": str(other),
    }, timeout=120)


def steps(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in report["steps"]}


def character(line: str, byte_col: int, encoding: str) -> int:
    """The LSP character of byte column ``byte_col`` in ``line``, in ``encoding``."""
    before = line.encode()[:byte_col]
    if encoding == "utf-8":
        return len(before)
    return len(before.decode().encode("utf-16-le" if encoding == "utf-16" else "utf-32-le")) // (
        2 if encoding == "utf-16" else 4)


def sent_at(s: dict[str, Any], encoding: str) -> dict[str, Any]:
    """What the plugin should have sent for the cursor where a step left it."""
    c = s["cursor"]
    return {"uri": c["uri"], "line": c["row"] - 1, "character": character(c["line"], c["col"], encoding)}


def place(note: dict[str, Any]) -> dict[str, Any]:
    return {k: note[k] for k in ("uri", "line", "character")}


def test_attaching_sends_the_top_once(report: dict[str, Any]):
    (note,) = report["on_attach"]
    assert (note["line"], note["character"]) == (0, 0)
    assert note["uri"].endswith("/long.py")


def test_a_jump_sends_once_where_the_cursor_rests_and_the_server_warms_there(report: dict[str, Any]):
    jump = steps(report)["jump"]
    assert jump["cursor"]["row"] == JUMP_ROW and jump["cursor"]["line"] == LINES[JUMP_ROW - 1]
    # The cursor is on the `x` at the end; its byte column is not its character in any encoding but UTF-8.
    assert jump["cursor"]["col"] == len(LINES[JUMP_ROW - 1].encode()) - 1
    (note,) = jump["sent"]  # 30G and 60G were passed through before the cursor rested
    assert place(note) == sent_at(jump, report["offset_encoding"])
    if report["offset_encoding"] == "utf-16":
        assert note["character"] == len(LINES[JUMP_ROW - 1]) - 1 + 1  # the emoji is two UTF-16 units
    assert jump["warmups_after"] > jump["warmups_before"]


def test_the_next_line_is_sent_but_not_warmed(report: dict[str, Any]):
    near = steps(report)["one line down"]
    (note,) = near["sent"]
    assert place(note) == sent_at(near, report["offset_encoding"])
    assert note["line"] == JUMP_ROW  # 0-based: the line below the jump's
    assert near["warmups_after"] == near["warmups_before"]


def test_a_move_along_the_same_line_sends_nothing(report: dict[str, Any]):
    same = steps(report)["same line"]
    assert same["cursor"]["row"] == JUMP_ROW + 1 and same["cursor"]["col"] == 0
    assert same["sent"] == [] and same["counted"] == 0
    assert same["repeated"] == 1  # it did rest, and was recognised as the place last sent


def test_nothing_is_sent_while_completions_are_off(report: dict[str, Any]):
    s = steps(report)
    off = s["disabled"]
    assert off["cursor"]["row"] == 50
    assert off["sent"] == [] and off["repeated"] == 0
    on = s["enabled again"]
    (note,) = on["sent"]
    assert place(note) == sent_at(on, report["offset_encoding"]) and note["line"] == 48


def test_another_buffer_and_back_are_sent_and_coming_back_warms(report: dict[str, Any]):
    s = steps(report)
    other, back = s["other buffer"], s["back"]
    assert [place(n) for n in other["sent"]] == [sent_at(other, report["offset_encoding"])]
    assert other["sent"][0]["uri"].endswith("/other.py")
    (note,) = back["sent"]
    assert note["uri"].endswith("/long.py") and place(note) == sent_at(back, report["offset_encoding"])
    assert note["line"] == 48  # where the cursor was left in that buffer
    assert back["warmups_after"] > back["warmups_before"]
    assert report["notifications_total"] == 1 + sum(len(x["sent"]) for x in report["steps"])
