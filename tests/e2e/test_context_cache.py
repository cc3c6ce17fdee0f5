"""The index when its cache folder cannot be written (pytest-lsp, tiny model): indexing still
finishes, completions still get cross-file context, and shutdown still closes the engine."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest_lsp
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient

from tests.conftest import TINY_MODEL, server_command

FIXTURE = Path(__file__).parent.parent / "data" / "context_repo"
BLOCKER = Path(os.environ["SLM_LSP_CACHE"]).parent / "cache_blocked_by_a_file"
"""A regular file where the cache folder's parent should be (root ignores permissions, not this)."""


@pytest_lsp.fixture(config=ClientServerConfig(
    server_command=server_command("--model", str(TINY_MODEL)),
    server_env={**os.environ, "SLM_LSP_CACHE": str(BLOCKER / "cache")}))
async def client(lsp_client: LanguageClient, tmp_path: Path):
    BLOCKER.parent.mkdir(parents=True, exist_ok=True)
    BLOCKER.write_text("not a folder\n")
    repo = tmp_path / "repo"
    shutil.copytree(FIXTURE, repo)
    lsp_client.repo = repo  # type: ignore[attr-defined]
    await lsp_client.initialize_session(types.InitializeParams(
        capabilities=types.ClientCapabilities(window=types.WindowClientCapabilities(work_done_progress=True)),
        root_uri=repo.as_uri(), workspace_folders=[types.WorkspaceFolder(uri=repo.as_uri(), name="repo")],
        initialization_options={"completion": {"maxTokens": 4, "timeBudgetMs": 5000},
                                "context": {"timeBudgetMs": 5000}},
    ))
    yield
    BLOCKER.unlink()


async def _status(client: LanguageClient) -> dict:
    return await client.workspace_execute_command_async(types.ExecuteCommandParams(command="slm.status"))


async def test_an_unwritable_cache_keeps_the_index_in_memory(client: LanguageClient):
    for _ in range(200):  # ready, and the progress's end (sent after ready) has arrived
        s = await _status(client)
        ends = [r.message for rs in client.progress_reports.values() for r in rs
                if isinstance(r, types.WorkDoneProgressEnd)]
        if s["context"]["indexes"] and all(i["ready"] for i in s["context"]["indexes"]) and ends:
            break
        await asyncio.sleep(0.05)
    assert s["context"]["indexes"][0] == {**s["context"]["indexes"][0], "ready": True, "files": 6}
    assert ends and not [m for m in ends if m and "failed" in m]
    checkout = client.repo / "app" / "checkout.py"  # type: ignore[attr-defined]
    uri = checkout.as_uri()
    client.text_document_did_open(types.DidOpenTextDocumentParams(
        text_document=types.TextDocumentItem(uri=uri, language_id="python", version=1, text=checkout.read_text())))
    await client.text_document_inline_completion_async(types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(8, 10),
        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic)))
    assert "shop/pricing.py" in (await _status(client))["context"]["lastPromptFiles"]
    await client.shutdown_session()  # the shutdown request is answered: the engine was closed
    assert not BLOCKER.is_dir()
