"""``:SlmEdit`` and the "Rewrite selection…" code action's command in a real headless Neovim,
against the real server (``tests/e2e/nvim/edit_init.lua`` drives it). With the tiny chat model the
answer never parses: nothing changes and the server's message reaches the user. With the real Qwen
(SLM_LSP_TEST_MODEL) the edit is applied to the buffer."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import server_command
from tests.e2e.test_code_action import SOURCE, TINY_CHAT_MODEL
from tests.e2e.test_nvim import run_driver

pytestmark = pytest.mark.nvim

DRIVER = Path(__file__).parent / "nvim" / "edit_init.lua"


def run(tmp_path: Path, model: str) -> dict[str, Any]:
    return run_driver(DRIVER, tmp_path, "add.py", SOURCE,
                      {"SLM_NVIM_SERVER_CMD": json.dumps(server_command("--model", model, "--threads", "1"))},
                      timeout=600)


def test_slm_edit_with_an_unparsable_answer_changes_nothing(tmp_path: Path) -> None:
    data = run(tmp_path, str(TINY_CHAT_MODEL))
    titles = set(data["titles"])
    assert {"Add docstring (slm-lsp)", "Add type hints (slm-lsp)", "Rewrite selection… (slm-lsp)"} <= titles
    assert data["prompt"] == "[slm] rewrite: "  # the code action's command asked for the instruction
    assert [step["name"] for step in data["steps"]] == ["SlmEdit", "rewriteSelection"]
    for step in data["steps"]:
        assert step["result"]["applied"] is False and "does not parse" in step["result"]["message"]
        assert "\n".join(step["lines"]) + "\n" == SOURCE
    assert any(n["msg"].startswith("[slm] no edit: the model's edit does not parse") for n in data["notifications"])


@pytest.mark.skipif(not os.environ.get("SLM_LSP_TEST_MODEL"), reason="set SLM_LSP_TEST_MODEL to a Qwen instruct GGUF")
def test_slm_edit_applies_the_real_models_edit(tmp_path: Path) -> None:
    data = run(tmp_path, os.environ["SLM_LSP_TEST_MODEL"])
    first = data["steps"][0]
    assert first["result"]["applied"] is True, data["notifications"]
    assert first["lines"][:3] == SOURCE.splitlines()[:3]  # outside the selection: untouched
    assert "\n".join(first["lines"]) + "\n" != SOURCE
