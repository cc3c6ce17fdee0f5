"""End to end with a real FIM model (SLM_LSP_TEST_MODEL, e.g. Qwen2.5-Coder-0.5B Q4_K_M): obvious
completions must come out right, through the server over stdio."""

from __future__ import annotations

import os

import pytest
import pytest_lsp
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient

from tests.conftest import REAL_MODEL, server_command

pytestmark = pytest.mark.skipif(not REAL_MODEL, reason="SLM_LSP_TEST_MODEL is not set (see README: Tests)")

CMD = server_command("--model", REAL_MODEL or "unset", "--threads", str(min(os.cpu_count() or 1, 4)))


@pytest_lsp.fixture(config=ClientServerConfig(server_command=CMD))
async def client(lsp_client: LanguageClient):
    # These tests are about what the model writes, not speed: no time budget cuts it short on a busy machine.
    await lsp_client.initialize_session(types.InitializeParams(
        capabilities=types.ClientCapabilities(), initialization_options={"completion": {"timeBudgetMs": 60000}}))
    yield
    await lsp_client.shutdown_session()


async def complete(client: LanguageClient, uri: str, text: str, line: int, character: int) -> str:
    client.text_document_did_open(types.DidOpenTextDocumentParams(
        text_document=types.TextDocumentItem(uri=uri, language_id="python", version=1, text=text)))
    result = await client.text_document_inline_completion_async(types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line, character),
        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic)))
    assert result is not None
    return result.items[0].insert_text if result.items else ""  # type: ignore[return-value]


async def test_circle_area(client: LanguageClient):
    text = 'import math\n\n\ndef circle_area(radius):\n    """Area of a circle."""\n    return \n'
    got = await complete(client, "file:///w/circle.py", text, 5, 11)
    assert got.replace(" ", "") in ("math.pi*radius**2", "math.pi*radius*radius", "math.pi*(radius**2)")


async def test_fills_the_middle_using_the_suffix(client: LanguageClient):
    # The suffix uses `total`: the completion must define it, not ignore what follows.
    text = "def mean(values):\n    \n    return total / len(values)\n"
    got = await complete(client, "file:///w/mean.py", text, 1, 4)
    assert got.strip().startswith("total")
    # The rules would answer one line in a hole between lines of a block; with
    # completion.answer_length auto (the default) a new model's first answers end where it ends
    # them (the 0.5B: `total = 0` and the loop that sums), never writing the code below again.
    assert "return" not in got


async def test_multiline_block_after_opener(client: LanguageClient):
    text = "def is_even(n):\n    "
    got = await complete(client, "file:///w/even.py", text, 1, 4)
    assert "return" in got and "%" in got
    assert "def " not in got  # stops at the end of the block
