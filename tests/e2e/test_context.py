"""Repo-aware context over LSP (pytest-lsp, tiny model): the workspace is indexed with progress,
a completion request carries definitions from other files into the prompt, and open buffers
update the index from didChange (not from the disk)."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

import pytest_lsp
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient

from tests.conftest import TEST_TMP, TINY_MODEL, server_command

REPO = Path(tempfile.mkdtemp(prefix="slm-ctx-e2e-", dir=TEST_TMP)) / "repo"
shutil.copytree(Path(__file__).parent.parent / "data" / "context_repo", REPO)
CHECKOUT = REPO / "app" / "checkout.py"


@pytest_lsp.fixture(config=ClientServerConfig(server_command=server_command("--model", str(TINY_MODEL))))
async def client(lsp_client: LanguageClient):
    await lsp_client.initialize_session(types.InitializeParams(
        capabilities=types.ClientCapabilities(window=types.WindowClientCapabilities(work_done_progress=True)),
        root_uri=REPO.as_uri(),
        workspace_folders=[types.WorkspaceFolder(uri=REPO.as_uri(), name="repo")],
        initialization_options={"completion": {"maxTokens": 4, "timeBudgetMs": 5000},
                                "context": {"timeBudgetMs": 5000}},
    ))
    yield
    await lsp_client.shutdown_session()


async def status(client: LanguageClient) -> dict:
    return await client.workspace_execute_command_async(types.ExecuteCommandParams(command="slm.status"))


async def wait_ready(client: LanguageClient) -> dict:
    for _ in range(200):
        s = await status(client)
        if s["context"]["indexes"] and all(i["ready"] for i in s["context"]["indexes"]):
            return s
        await asyncio.sleep(0.05)
    raise AssertionError(f"the index never became ready: {s}")


async def inline(client: LanguageClient, uri: str, line: int, character: int) -> types.InlineCompletionList:
    result = await client.text_document_inline_completion_async(types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line, character),
        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic)))
    assert isinstance(result, types.InlineCompletionList)
    return result


def open_doc(client: LanguageClient, path: Path, text: str) -> str:
    uri = path.as_uri()
    client.text_document_did_open(types.DidOpenTextDocumentParams(
        text_document=types.TextDocumentItem(uri=uri, language_id="python", version=1, text=text)))
    return uri


async def test_index_progress_and_cross_file_context(client: LanguageClient):
    s = await wait_ready(client)
    assert s["context"]["indexes"][0]["files"] == 6
    titles = [r.title for rs in client.progress_reports.values() for r in rs
              if isinstance(r, types.WorkDoneProgressBegin)]
    assert any("indexing repo" in t for t in titles)
    uri = open_doc(client, CHECKOUT, CHECKOUT.read_text())
    await inline(client, uri, 8, 10)
    files = (await status(client))["context"]["lastPromptFiles"]
    assert "shop/pricing.py" in files and "shop/cart.py" in files


async def test_open_buffers_feed_the_index(client: LanguageClient):
    await wait_ready(client)
    # A module that exists only in the editor (never saved) defines a function...
    new = REPO / "shop" / "unsaved.py"
    new_uri = open_doc(client, new, "def refund_order(order_id: int) -> bool:\n    return True\n")
    # ...that the file being edited imports and uses.
    text = "from shop.unsaved import refund_order\n\n\ndef cancel(order_id):\n    ok = refund_order(order_id)\n    \n"
    uri = open_doc(client, REPO / "app" / "cancel.py", text)
    # Both buffers reach the index after a debounce; a request before that would be answered
    # without the definition and then again from the type-through cache.
    for _ in range(100):
        if (await status(client))["context"]["indexes"][0]["files"] >= 8:
            break
        await asyncio.sleep(0.1)
    for _ in range(100):
        await inline(client, uri, 5, 4)
        files = (await status(client))["context"]["lastPromptFiles"]
        if "shop/unsaved.py" in files:
            break
        await asyncio.sleep(0.1)
    assert "shop/unsaved.py" in files
    # didChange renames the function in the open buffer: the index follows the buffer.
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=new_uri, version=2),
        content_changes=[types.TextDocumentContentChangeWholeDocument(text="X = 1\n")]))
    for i in range(100):
        await asyncio.sleep(0.1)
        client.text_document_did_change(types.DidChangeTextDocumentParams(  # typing: no cached answer
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=2 + i),
            content_changes=[types.TextDocumentContentChangePartial(
                range=types.Range(types.Position(5, 4 + i), types.Position(5, 4 + i)), text="x")]))
        await inline(client, uri, 5, 5 + i)
        context = (await status(client))["context"]["lastPromptContext"]
        if not any("refund_order" in c["text"] for c in context if c["path"] == "shop/unsaved.py"):
            break
    assert not any("def refund_order" in c["text"] for c in context)


async def test_context_settings_apply_without_a_restart(client: LanguageClient):
    await wait_ready(client)
    text = CHECKOUT.read_text()
    uri = open_doc(client, CHECKOUT, text)
    await inline(client, uri, 8, 10)
    assert "shop/pricing.py" in (await status(client))["context"]["lastPromptFiles"]

    def configure(context: dict) -> None:
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
            settings={"slm": {"completion": {"maxTokens": 4, "timeBudgetMs": 5000},
                              "context": {"timeBudgetMs": 5000, **context}}}))

    version = [1]

    async def ask_fresh() -> list[str]:
        """A request the result cache cannot answer (a blank line typed at the top)."""
        version[0] += 1
        client.text_document_did_change(types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version[0]),
            content_changes=[types.TextDocumentContentChangePartial(
                range=types.Range(types.Position(0, 0), types.Position(0, 0)), text="\n")]))
        await inline(client, uri, 8 + version[0] - 1, 10)
        return (await status(client))["context"]["lastPromptFiles"]

    # Exclude a file: the workspace is indexed again without it.
    configure({"exclude": ["shop/pricing.py"]})
    for _ in range(200):
        indexes = (await status(client))["context"]["indexes"]
        if indexes and indexes[0]["ready"] and indexes[0]["files"] == 5:
            break
        await asyncio.sleep(0.05)
    assert indexes[0]["files"] == 5
    files = await ask_fresh()
    assert "shop/pricing.py" not in files and "shop/cart.py" in files
    # Disabled: no index, no context; enabled again: the index is back.
    configure({"enabled": False})
    for _ in range(200):
        if not (await status(client))["context"]["indexes"]:
            break
        await asyncio.sleep(0.05)
    assert await ask_fresh() == []
    configure({})
    s = await wait_ready(client)
    assert s["context"]["indexes"][0]["files"] == 6
