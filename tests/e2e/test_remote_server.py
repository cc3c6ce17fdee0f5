"""The language server with a team server behind it (a real llama-cpp-python server with the tiny
model), driven over stdio: completions come from the server, ``slm.status`` and the
``slm/status`` notification say so, and when the server goes away the local model answers."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import pytest_lsp
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient

from tests.conftest import TEST_TMP, TINY_MODEL, server_command
from tests.remote_servers import LlamaCppServer

URI = "file:///work/demo.py"
SOURCE = "import math\n\n\ndef circle_area(radius):\n    return \n\n\ndef main():\n    print(circle_area(2.0))\n"


@pytest.fixture(scope="module")
def team_server() -> Iterator[LlamaCppServer]:
    server = LlamaCppServer(TINY_MODEL, TEST_TMP, name="e2e-team")
    try:
        yield server
    finally:
        server.stop()


@pytest_lsp.fixture(config=ClientServerConfig(server_command=server_command("--model", str(TINY_MODEL))))
async def client(lsp_client: LanguageClient, team_server: LlamaCppServer):
    notes: list[dict[str, Any]] = []
    lsp_client.status_notes = notes  # type: ignore[attr-defined]

    @lsp_client.feature("slm/status")
    def on_status(params: Any) -> None:
        keys = ("state", "route", "backend", "backendReason")
        notes.append({k: params.get(k) if isinstance(params, dict) else getattr(params, k, None) for k in keys})

    await lsp_client.initialize_session(types.InitializeParams(
        capabilities=types.ClientCapabilities(),
        initialization_options={"completion": {"maxTokens": 8, "timeBudgetMs": 5000},
                                "remote": {"url": team_server.url, "route": "remote", "timeoutMs": 30000}},
    ))
    lsp_client.text_document_did_open(types.DidOpenTextDocumentParams(
        text_document=types.TextDocumentItem(uri=URI, language_id="python", version=1, text=SOURCE)))
    yield
    await lsp_client.shutdown_session()


async def inline(client: LanguageClient, character: int = 11) -> str:
    result = await client.text_document_inline_completion_async(types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=URI), position=types.Position(4, character),
        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked)))
    assert isinstance(result, types.InlineCompletionList) and result.items, result
    return str(result.items[0].insert_text)


async def status(client: LanguageClient) -> dict:
    return await client.workspace_execute_command_async(types.ExecuteCommandParams(command="slm.status"))


async def test_completions_come_from_the_team_server(client: LanguageClient, team_server: LlamaCppServer):
    before = len(team_server.requests())
    text = await inline(client)
    assert text.strip()
    assert len(team_server.requests()) == before + 1
    report = await status(client)
    assert report["route"] == "remote" and report["backend"] == "remote"
    assert team_server.url in report["remote"] and report["answered"] == {"remote": 1}
    notes = client.status_notes  # type: ignore[attr-defined]
    for _ in range(100):
        if any(n.get("backend") == "remote" for n in notes):
            break
        await asyncio.sleep(0.05)
    assert any(n.get("backend") == "remote" and n.get("route") == "remote" for n in notes), notes


async def test_the_local_model_answers_when_the_team_server_is_gone(client: LanguageClient,
                                                                   team_server: LlamaCppServer):
    await inline(client)
    team_server.kill()
    text = await inline(client, 10)  # another prompt: not from the type-through cache
    assert text.strip()
    report = await status(client)
    assert report["backend"] == "local" and report["backendReason"].startswith("remote failed")
    assert report["remoteRetryS"] > 0
