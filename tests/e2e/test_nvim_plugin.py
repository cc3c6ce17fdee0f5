"""The Neovim plugin (``editors/nvim``) in a real headless Neovim 0.11, against the real server and
the tiny model.

``tests/e2e/nvim/plugin_init.lua`` puts the plugin on the runtimepath, calls
``require("slm").setup{...}`` with the server command, opens a Python file and types in insert
mode with ``nvim_input`` (Neovim's own insert loop runs the mappings and autocommands): ghost text
appears, follows matching typing, is cleared by other typing, accepted whole / by word / by line,
dismissed, cleared on leaving insert mode; ``<Tab>`` without ghost text stays a tab; a request
overtaken by typing is cancelled and its late answer dropped; ``:checkhealth slm``,
``:SlmStatus``, ``:SlmToggle`` and ``:SlmLoadAdapter`` work; invalid ``setup()`` options are
refused. Two more sessions (``SLM_NVIM_SCENARIO``) crash the server: one kills it and the plugin
restarts it; in the other the server command exits at once, again and again, and the plugin backs
off and gives up. It writes what it saw as JSON; the asserts are here. The tiny model writes random
identifier-like words, so no test looks at what the text says: each compares what the plugin
shows or inserts with the insertText the server answered (the driver records every
inlineCompletion answer the plugin receives).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from slm_lsp import __version__
from tests.conftest import TINY_MODEL, server_command
from tests.e2e.test_nvim import find_nvim
from tests.e2e.test_nvim import run_driver as run_headless_driver

pytestmark = pytest.mark.nvim

ROOT = Path(__file__).parent.parent.parent
PLUGIN = ROOT / "editors" / "nvim"
DRIVER = Path(__file__).parent / "nvim" / "plugin_init.lua"

RETURN = "    return "  # the driver types after its trailing space
SOURCE = f'''import math


def circle_area(radius):
    """Area of a circle of the given radius."""
{RETURN}


def main():
    print(circle_area(2.0))
'''
RETURN_LINE = 6  # 1-based: the ``return`` line
TYPED = "rad"  # what the driver types there first
# What accept-word takes: spaces, then a word or a run of punctuation (Lua's %w is ASCII).
NEXT_WORD = re.compile(r"\s*\w+|\s*[^\w\s]+|\s+", re.ASCII)


def run_driver(tmp_path_factory: pytest.TempPathFactory, scenario: str, server_cmd: list[str]) -> dict[str, Any]:
    """Runs the driver's ``scenario`` in a headless Neovim and returns its report."""
    return run_headless_driver(DRIVER, tmp_path_factory.mktemp(f"nvim-plugin-{scenario}"), "circle.py", SOURCE, {
        "SLM_NVIM_SERVER_CMD": json.dumps(server_cmd),
        "SLM_NVIM_SCENARIO": scenario,
        "SLM_NVIM_LINE": str(RETURN_LINE),
    }, timeout=150)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return run_driver(tmp_path_factory, "main", server_command("--model", str(TINY_MODEL)))


def at_cursor(state: dict[str, Any]) -> dict[str, int]:
    """The LSP position of a state's cursor (the lines are ASCII: bytes are characters)."""
    row, col = state["cursor"]
    return {"line": row - 1, "character": col}


def assert_ghost_at_cursor(state: dict[str, Any]) -> None:
    """One extmark at the cursor draws the ghost text: its first line inline, the rest as
    virtual lines, in the ghost-text highlight."""
    first, *rest = state["ghost"].split("\n")
    (mark,) = state["marks"]
    assert (mark["row"], mark["col"]) == (state["cursor"][0] - 1, state["cursor"][1])
    assert mark["virt_lines"] == rest
    if first:
        assert (mark["text"], mark["hl"], mark["pos"]) == (first, "SlmGhostText", "inline")
    else:
        assert mark["text"] is None


def assert_no_ghost(state: dict[str, Any]) -> None:
    assert state["ghost"] is None and state["marks"] == []


def test_setup_validates_and_runs_once(report: dict[str, Any]):
    expected = ["debounce_ms: expected a number >= 0, got soon", "opts: unknown option \"modle\"",
                "keymaps.accept: expected a key, a list of keys or false, got 3",
                "cmd: expected a non-empty list of strings, got ",  # then vim.validate's "table: 0x..."
                "restart.max_crashes: expected an integer >= 0, got -1", "restart: unknown option \"delay_ms\""]
    for invalid, message in zip(report["invalid_setups"], expected, strict=True):
        assert invalid["returned"] is False
        assert invalid["message"].startswith("[slm] invalid option: " + message), invalid["message"]
    assert report["setup"] is True  # the invalid calls left nothing half set up
    assert report["setup_again"] is False  # guarded: runs once
    assert report["version"] == __version__  # the plugin is released with the server
    assert report["methods"]["STATUS_NOTIFICATION"] == "slm/status"
    assert report["filetype"] == "python"
    assert report["client_name"] == "slm-lsp"
    assert report["clients"] == 1
    assert report["status_ready"]["state"] == "ready"
    assert report["hl_link"] == "Comment"
    assert report["elapsed"] < 90, f"the Neovim session took {report['elapsed']:.1f} s"


def test_typing_shows_the_servers_suggestion_as_ghost_text(report: dict[str, Any]):
    first = report["first"]
    assert first["mode"] == "i"
    assert first["line"] == RETURN + TYPED
    assert first["cursor"] == [RETURN_LINE, len(first["line"])]
    answer = first["answer"]
    assert first["uri"] == report["buffer_uri"]
    assert answer["position"] == at_cursor(first)
    assert isinstance(answer["insert_text"], str) and answer["insert_text"]
    assert first["ghost"] == answer["insert_text"]
    assert_ghost_at_cursor(first)
    # "A" and three keys inside one debounce: one request (the InsertEnter one never went out).
    assert first["stats"]["requests"] == 1, first["stats"]


def test_typing_the_next_character_keeps_the_rest(report: dict[str, Any]):
    tt = report["type_through"]
    if tt["skipped"]:
        pytest.skip(f"the suggestion {tt['before']['ghost']!r} is a single character")
    before, after, later = tt["before"], tt["after"], tt["later"]
    assert after["line"] == before["line"] + tt["char"]
    assert after["ghost"] == before["ghost"][len(tt["char"]):]
    assert_ghost_at_cursor(after)
    # Past the debounce: no new request, the same ghost text.
    assert later["stats"]["requests"] == before["stats"]["requests"]
    assert later["ghost"] == after["ghost"] and later["marks"] == after["marks"]


def test_accept_word_then_tab_accepts_the_rest(report: dict[str, Any]):
    acc = report["accept"]
    before, after = acc["before"], acc["after"]
    if not acc["word_skipped"]:
        word = acc["word"]
        expected = NEXT_WORD.match(before["ghost"])
        assert expected, before["ghost"]
        assert word["line"] == before["line"] + expected.group(0)
        assert word["ghost"] == before["ghost"][expected.end():]
        assert word["cursor"] == [RETURN_LINE, len(word["line"])]
        assert_ghost_at_cursor(word)
        assert word["stats"]["requests"] == before["stats"]["requests"]  # the rest needs no new request
    suggested = report["first"]["answer"]["insert_text"]
    assert "\n" not in suggested  # mid-statement: the server completes the line only
    # Typed through, accepted by word and whole: the line ends with exactly what the server suggested.
    assert after["line"] == RETURN + TYPED + suggested
    assert after["line"] == before["line"] + before["ghost"]
    assert after["cursor"] == [RETURN_LINE, len(after["line"])]  # at the end of the inserted text
    assert_no_ghost(after)
    assert after["mode"] == "i"
    assert after["stats"]["accepted"] == before["stats"]["accepted"] + 1


def test_accepts_tell_the_server_and_the_next_suggestion_needs_no_model_call(report: dict[str, Any]):
    acc = report["accept"]
    before, after = acc["before"], acc["after"]
    uri = report["buffer_uri"]
    if not acc["word_skipped"]:
        word = acc["word"]
        (note,) = acc["word_notes"]
        assert note == {"uri": uri, "position": at_cursor(word), "text": word["line"][len(before["line"]):]}
    (note,) = acc["tab_notes"]
    assert note["uri"] == uri and note["position"] == at_cursor(after)
    assert after["line"].endswith(note["text"]) and note["text"]
    assert after["stats"]["accept_notifications"] == before["stats"]["accept_notifications"] + 1 + (
        0 if acc["word_skipped"] else 1)
    # After a whole accept the next suggestion is asked for at once, not after the debounce: the
    # request is out by the time the plugin has handled the change.
    before_tab = before if acc["word_skipped"] else acc["word"]
    assert after["stats"]["requests"] == before_tab["stats"]["requests"] + 1
    # The suggestion after the accept was computed while the accepted one was shown: the request
    # for it is answered from the cache (or joins that computation if it is still running).
    s0, s1 = acc["status_before"], acc["status_after"]
    from_cache = s1["cacheHits"] - s0["cacheHits"]
    joined = s1["prefetch"].get("joined", 0) - s0["prefetch"].get("joined", 0)
    assert from_cache + joined == 1, (s0, s1)
    assert s1["answered"].get("local", 0) - s0["answered"].get("local", 0) == joined


def test_other_typing_clears_and_asks_again(report: dict[str, Any]):
    mm = report["mismatch"]
    before, after, nxt = mm["before"], mm["after"], mm["next"]
    assert before["ghost"] == mm["answer"]["insert_text"] and mm["answer"]["position"] == at_cursor(before)
    assert not before["ghost"].startswith(mm["typed"])
    assert after["line"] == before["line"] + mm["typed"]
    assert_no_ghost(after)  # at once, not after the debounce
    # One new request, for the new cursor position; its answer is shown there.
    assert nxt["stats"]["requests"] == after["stats"]["requests"] + 1
    assert mm["next_answer"]["position"] == at_cursor(after) == at_cursor(nxt)
    assert nxt["ghost"] == mm["next_answer"]["insert_text"]
    assert_ghost_at_cursor(nxt)


def test_dismiss_and_tab_without_ghost_text(report: dict[str, Any]):
    d = report["dismiss"]
    assert d["before"]["ghost"]
    assert_no_ghost(d["after"])
    assert d["after"]["line"] == d["before"]["line"]
    # Nothing is requested until the next edit.
    assert d["later"]["stats"]["requests"] == d["after"]["stats"]["requests"]
    assert_no_ghost(d["later"])
    # <Tab> without ghost text is Neovim's own <Tab> (indentation), not an accept.
    tab = d["tab"]
    assert tab["line"].startswith(d["later"]["line"])
    added = tab["line"][len(d["later"]["line"]):]
    assert added and not added.strip(), repr(added)
    assert tab["stats"]["accepted"] == d["later"]["stats"]["accepted"]


def test_multi_line_ghost_text_accepted_by_word_line_and_whole(report: dict[str, Any]):
    multi = report["multi"]
    shown = multi["shown"]
    start = shown["line"]
    row = multi["row"]
    assert shown["ghost"] == "alpha beta\n        gamma()\n    delta"
    assert_ghost_at_cursor(shown)  # "alpha beta" inline, the other two lines as virtual lines
    word, line1, line2, whole = multi["steps"]
    assert [s["key"] for s in multi["steps"]] == ["<M-w>", "<M-j>", "<M-j>", "<M-l>"]
    assert word["lines"][0] == start + "alpha"
    assert word["ghost"] == " beta\n        gamma()\n    delta"
    assert word["cursor"] == [row, len(start + "alpha")]
    assert_ghost_at_cursor(word)
    assert line1["lines"][0] == start + "alpha beta"
    assert line1["ghost"] == "\n        gamma()\n    delta"
    assert_ghost_at_cursor(line1)  # nothing inline any more: only the virtual lines
    assert line2["lines"][:2] == [start + "alpha beta", "        gamma()"]
    assert line2["cursor"] == [row + 1, len("        gamma()")]
    assert line2["ghost"] == "\n    delta"
    assert_ghost_at_cursor(line2)
    assert whole["lines"] == [start + "alpha beta", "        gamma()", "    delta"]
    assert whole["cursor"] == [row + 2, len("    delta")]
    assert_no_ghost(whole)
    assert all(s["mode"] == "i" for s in multi["steps"])
    # Word and line accepts keep the rest without asking the server again.
    assert word["stats"]["requests"] == line2["stats"]["requests"] == shown["stats"]["requests"]


def test_request_overtaken_by_typing_is_cancelled(report: dict[str, Any]):
    c = report["cancel"]
    before, in_flight, typed, released, after = (c["before"], c["in_flight"], c["after_typing"],
                                                 c["after_release"], c["after"])
    assert in_flight["stats"]["requests"] == before["stats"]["requests"] + 1
    assert c["old"]["held"] is True  # its answer reached the plugin only after the typing
    # Typing cancelled it ($/cancelRequest for its id)...
    assert typed["stats"]["cancelled"] == in_flight["stats"]["cancelled"] + 1
    assert c["old"]["id"] in c["cancelled_ids"]
    # ...and its late answer was dropped, not shown.
    assert released["stats"]["stale"] == typed["stats"]["stale"] + 1
    assert released["stats"]["shown"] == typed["stats"]["shown"]
    assert_no_ghost(released)
    # The suggestion shown is the newer request's, at the cursor after the typing.
    assert after["stats"]["requests"] == before["stats"]["requests"] + 2
    assert after["stats"]["shown"] == before["stats"]["shown"] + 1
    assert c["answer"]["position"] == at_cursor(typed) == at_cursor(after)
    assert after["ghost"] == c["answer"]["insert_text"]
    assert_ghost_at_cursor(after)


def test_insert_leave_clears(report: dict[str, Any]):
    assert report["insert_leave"] == {"marks": [], "visible": False}


def test_checkhealth(report: dict[str, Any]):
    health = report["health"]
    assert health["ok"], health["err"]
    text = "\n".join(health["lines"])
    assert not [line for line in health["lines"] if "ERROR" in line or "WARNING" in line], text
    for expected in ("OK setup() called", "OK completions enabled", "OK server command found",
                     "OK server attached", f"OK server version {__version__} matches the plugin",
                     "OK server provides textDocument/inlineCompletion", "OK model state: ready",
                     f"OK slm.status: state ready, model {TINY_MODEL}"):
        assert expected in text, text


def test_slm_status_command(report: dict[str, Any]):
    messages = [n["msg"] for n in report["slm_status"]]
    assert any(m.startswith("[slm] state: ready") and "last latency" in m for m in messages), messages
    server = [m for m in messages if m.startswith("[slm] server:")]
    assert server and "state ready" in server[0] and str(TINY_MODEL) in server[0], messages


def test_toggle(report: dict[str, Any]):
    toggle = report["toggle"]
    assert toggle["enabled_after_first"] is False
    assert toggle["off"]["line"].endswith("pri")  # typed while disabled...
    assert toggle["off"]["stats"]["requests"] == toggle["before"]["stats"]["requests"]  # ...without requests
    assert_no_ghost(toggle["off"])
    assert toggle["enabled_after_second"] is True
    assert toggle["on"]["stats"]["requests"] > toggle["off"]["stats"]["requests"]
    assert_ghost_at_cursor(toggle["on"])
    messages = [n["msg"] for n in toggle["messages"]]
    assert messages == ["[slm] completions disabled", "[slm] completions enabled"]


def test_load_adapter_command(report: dict[str, Any]):
    missing = [n for n in report["adapter_missing"] if n["msg"].startswith("[slm] could not load the adapter")]
    assert missing and missing[0]["level"] == 4 and "missing-adapter.gguf" in missing[0]["msg"], missing
    assert [n["msg"] for n in report["adapter_removed"]] == ["[slm] adapter removed"]


def test_server_exits_cleanly(report: dict[str, Any]):
    assert report["final_status"]["state"] == "stopped"
    assert report["final_status"]["detail"] == "exited with code 0"
    # Between setup and the (deliberately failing) adapter step: no warnings or errors for the
    # user. The invalid setup() calls and the second setup() warning come first.
    during = report["all_notifications"][len(report["invalid_setups"]) + 1:report["notifications_before_adapter"]]
    errors = [n for n in during if (n.get("level") or 0) >= 3]
    assert not errors, errors


@pytest.fixture(scope="module")
def crash_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return run_driver(tmp_path_factory, "crash", server_command("--model", str(TINY_MODEL)))


def test_a_killed_server_is_restarted_with_a_message(crash_report: dict[str, Any]):
    before, after = crash_report["before"], crash_report["after"]
    (old_pid,) = before["pids"]
    # What the user is told, at once: WARN, the exit code and signal, and when it restarts.
    (message,) = crash_report["restart_messages"]
    assert message["level"] == 3, message  # vim.log.levels.WARN
    assert message["msg"] == "[slm] the server exited (code 0, signal 9); restarting it in 0.5 s (see :LspLog)", message
    status = crash_report["status_after_kill"]
    assert status["state"] == "restarting", status
    assert status["detail"] == "exited with code 0, signal 9; restarting in 0.5 s"
    assert crash_report["statusline_after_kill"] == "slm: restarting"
    # A new server process and client, attached to the buffer that was open.
    assert after["client_id"] != before["client_id"]
    assert len(after["pids"]) == 1 and after["pids"][0] != old_pid
    assert after["attached"] is True
    assert after["clients"] == 1
    # ...and it completes: the ghost text is the new server's answer.
    assert after["requests"] >= 1
    assert isinstance(after["answer"]["insert_text"], str) and after["answer"]["insert_text"]
    assert after["ghost"] == after["answer"]["insert_text"]
    # The status line went ready -> restarting -> (the new server) loading ... ready.
    states = [s["state"] for s in after["states"]]
    assert states.count("restarting") == 1, states
    tail = states[states.index("restarting"):]
    assert tail[1] == "loading" and tail[-1] == "ready", states


def test_slm_restart_restarts_a_running_server(crash_report: dict[str, Any]):
    restarted = crash_report["restart_command"]
    states = [s["state"] for s in restarted["states"]]
    assert states[0] == "stopped" and states[-1] == "ready" and "restarting" not in states, states
    assert restarted["messages"] == []  # asked for: no warning
    assert restarted["attached"] is True
    assert len(restarted["pids"]) == 1 and restarted["pids"] != crash_report["after"]["pids"]


def test_a_stop_that_was_asked_for_is_not_restarted(crash_report: dict[str, Any]):
    stopped = crash_report["after_stop"]
    assert stopped["status"]["state"] == "stopped"
    assert stopped["status"]["detail"] == "exited with code 0"
    assert stopped["clients"] == 0 and stopped["pids"] == []
    assert stopped["messages"] == []


@pytest.fixture(scope="module")
def crash_loop_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return run_driver(tmp_path_factory, "crash_loop", ["sh", "-c", "exit 3"])


def test_repeated_crashes_back_off_then_give_up_with_a_message(crash_loop_report: dict[str, Any]):
    gave_up = crash_loop_report["gave_up"]
    messages = gave_up["messages"]
    # restart = { initial_delay_ms = 50, max_crashes = 3 }: three restarts, each delay doubled...
    assert [m["msg"] for m in messages[:3]] == [
        f"[slm] the server exited (code 3, signal 0); restarting it in {delay} s (see :LspLog)"
        for delay in ("0.05", "0.1", "0.2")
    ]
    assert [m["level"] for m in messages[:3]] == [3, 3, 3]
    # ...then the fourth exit within 3 minutes is not restarted, and the user is told what to do.
    assert len(messages) == 4, messages
    assert messages[3]["level"] == 4, messages[3]  # vim.log.levels.ERROR
    assert messages[3]["msg"].startswith(
        "[slm] the server exited (code 3, signal 0), 4 times in 3 min: not restarting it.")
    assert ":LspLog" in messages[3]["msg"] and ":SlmRestart" in messages[3]["msg"]
    assert gave_up["status"]["state"] == "crashed"
    assert gave_up["statusline"] == "slm: crashed"
    assert gave_up["clients"] == 0
    states = [s["state"] for s in gave_up["states"]]
    assert states == ["restarting"] * 3 + ["crashed"], states


def test_slm_restart_starts_a_new_series(crash_loop_report: dict[str, Any]):
    # After giving up, :SlmRestart starts the server again; its crash is restarted after the
    # first delay again, not refused.
    first = crash_loop_report["after_restart_command"]["messages"][0]
    assert first["msg"] == "[slm] the server exited (code 3, signal 0); restarting it in 0.05 s (see :LspLog)"


def run_lua(script: Path, source: str) -> Any:
    """Run a Lua script with the plugin on the runtime path (``nvim -l``); what it wrote to stdout, as JSON."""
    nvim = find_nvim()
    if nvim is None:
        pytest.skip("no Neovim >= 0.11 binary found")
    script.write_text(source, encoding="utf-8")
    proc = subprocess.run([nvim, "--headless", "--clean", "-l", str(script)], capture_output=True, text=True,
                          timeout=30, env={**os.environ, "SLM_NVIM_PLUGIN_DIR": str(PLUGIN)})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


POLICY_SCRIPT = r"""
vim.opt.rtp:prepend(assert(os.getenv("SLM_NVIM_PLUGIN_DIR")))
local restart = require("slm.restart")
local out = {}
-- Crashes 1 s after each start: delays double up to the 30 s cap (no window limit here).
local p = restart.new({ max_crashes = 100, window_ms = 1e9 })
local now, delays = 0, {}
for _ = 1, 9 do
  p:started(now)
  local d = p:crashed(now + 1000)
  delays[#delays + 1] = d.delay_ms
  now = now + 1000 + d.delay_ms
end
out.delays = delays
-- A server up for a minute starts the series again; 1 ms less does not.
p = restart.new()
p:started(0); p:crashed(1000)
p:started(2000); p:crashed(3000)
p:started(10000); out.after_stable = p:crashed(70000).delay_ms
p:started(400000); out.after_unstable = p:crashed(459999).delay_ms
-- Six crashes within 3 minutes: the sixth is not restarted; older crashes leave the window.
p = restart.new()
local decisions = {}
for i = 0, 5 do
  local d = p:crashed(i * 1000)
  decisions[#decisions + 1] = { restart = d.restart, crashes = d.crashes }
end
out.decisions = decisions
out.later = p:crashed(5000 + 180000)
-- reset() forgets them.
p:reset()
out.after_reset = p:crashed(190000)
out.formats = { restart.format_delay(500), restart.format_delay(2000), restart.format_delay(180000),
  restart.format_delay(50) }
io.stdout:write(vim.json.encode(out))
"""


def test_restart_policy(tmp_path: Path):
    """The Neovim plugin's policy, alone: the same numbers as the VS Code extension's
    (editors/vscode/test/restartPolicy.test.ts)."""
    out = run_lua(tmp_path / "policy.lua", POLICY_SCRIPT)
    assert out["delays"] == [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
    assert out["after_stable"] == 500
    assert out["after_unstable"] == 1000
    assert out["decisions"] == [{"restart": True, "crashes": n} for n in range(1, 6)] + [
        {"restart": False, "crashes": 6}]
    # Five minutes on, the first crashes are out of the 3-minute window: restarted again.
    assert out["later"]["restart"] is True and out["later"]["crashes"] == 1
    assert out["after_reset"] == {"restart": True, "delay_ms": 500, "crashes": 1}
    assert out["formats"] == ["0.5 s", "2 s", "3 min", "0.05 s"]


STATUS_SCRIPT = r"""
vim.opt.rtp:prepend(assert(os.getenv("SLM_NVIM_PLUGIN_DIR")))
local status = require("slm.status")
local out = {}
status.on_notification(nil, { state = "ready", latencyMs = 80, backend = "remote",
  backendReason = "unsure (mean log-probability -0.41 < -0.2)" })
out.remote = { line = status.statusline(), describe = status.describe() }
status.on_notification(nil, { state = "ready", latencyMs = 30, backend = "local", backendReason = "confident" })
out["local"] = { line = status.statusline(), describe = status.describe() }
status.on_notification(nil, { state = "ready", backend = vim.NIL })
out.none = { line = status.statusline(), describe = status.describe() }
io.stdout:write(vim.json.encode(out))
"""


def test_status_says_who_answered(tmp_path: Path):
    """slm/status's backend: the statusline marks an answer from the team server, :SlmStatus says who and why."""
    out = run_lua(tmp_path / "status.lua", STATUS_SCRIPT)
    assert out["remote"]["line"] == "slm: ready (remote)"
    assert out["remote"]["describe"].endswith(
        "last latency: 80 ms, answered by the team server (unsure (mean log-probability -0.41 < -0.2))")
    assert out["local"]["line"] == "slm: ready"
    assert out["local"]["describe"].endswith("last latency: 30 ms, answered by the local model (confident)")
    assert out["none"] == {"line": "slm: ready", "describe": "state: ready, last latency: -"}
