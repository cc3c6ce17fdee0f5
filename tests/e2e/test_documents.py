"""Open documents over the real wire (pytest-lsp, tiny model): the server keeps its own copy of
each open buffer and never reads a path because a message named it, text enters sanitized, and
a typed lone surrogate does not poison later completions."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import pytest_lsp
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient

from tests.conftest import TEST_TMP, TINY_MODEL, server_command

SOURCE = "import math\n\n\ndef circle_area(radius):\n    return \n\n\ndef main():\n    print(circle_area(2.0))\n"
REPO = Path(tempfile.mkdtemp(prefix="slm-docs-e2e-", dir=TEST_TMP)) / "repo"
shutil.copytree(Path(__file__).parent.parent / "data" / "context_repo", REPO)


@pytest_lsp.fixture(config=ClientServerConfig(server_command=server_command("--model", str(TINY_MODEL))))
async def client(lsp_client: LanguageClient):
    await lsp_client.initialize_session(types.InitializeParams(
        capabilities=types.ClientCapabilities(),
        root_uri=REPO.as_uri(),
        workspace_folders=[types.WorkspaceFolder(uri=REPO.as_uri(), name="repo")],
        initialization_options={"completion": {"maxTokens": 4, "timeBudgetMs": 5000},
                                "context": {"timeBudgetMs": 5000}},
    ))
    yield
    await lsp_client.shutdown_session()


def open_doc(client: LanguageClient, uri: str, text: str = SOURCE, version: int = 1) -> None:
    client.text_document_did_open(types.DidOpenTextDocumentParams(
        text_document=types.TextDocumentItem(uri=uri, language_id="python", version=version, text=text)))


def change(client: LanguageClient, uri: str, version: int, *changes: types.TextDocumentContentChangeEvent) -> None:
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
        content_changes=list(changes)))


def insert(line: int, character: int, text: str) -> types.TextDocumentContentChangePartial:
    at = types.Position(line, character)
    return types.TextDocumentContentChangePartial(range=types.Range(at, at), text=text)


async def inline(client: LanguageClient, uri: str, line: int, character: int) -> types.InlineCompletionList:
    result = await asyncio.wait_for(client.text_document_inline_completion_async(types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line, character),
        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic))), 30)
    assert isinstance(result, types.InlineCompletionList)
    return result


async def status(client: LanguageClient) -> dict:
    return await asyncio.wait_for(
        client.workspace_execute_command_async(types.ExecuteCommandParams(command="slm.status")), 30)


async def test_a_change_to_a_document_nobody_opened_reads_nothing(client: LanguageClient, tmp_path: Path):
    fifo = tmp_path / "pipe.py"
    os.mkfifo(fifo)  # reading it blocks until a writer comes: never
    inside = REPO / "shop" / "pipe.py"
    os.mkfifo(inside)
    try:
        for uri in (fifo.as_uri(), inside.as_uri(), "file:///dev/zero"):
            change(client, uri, 2)  # no content changes: pygls would hand the handler a disk document
            change(client, uri, 3, insert(0, 0, "x"))
            change(client, uri, 4, types.TextDocumentContentChangeWholeDocument(text="y = 1\n"))
        uri = (REPO / "app" / "checkout.py").as_uri()
        open_doc(client, uri)
        assert (await inline(client, uri, 4, 11)).items
        assert "state" in await status(client)
    finally:
        inside.unlink()


async def test_a_lone_surrogate_does_not_poison_later_completions(client: LanguageClient):
    typed = (REPO / "app" / "typed.py").as_uri()
    open_doc(client, typed)
    # Typed at line 4 after "return ": the chunk around it enters the recent-edits ring.
    change(client, typed, 2, insert(4, 11, "'\ud800'"))
    other = (REPO / "app" / "other.py").as_uri()
    open_doc(client, other, "def g(x):\n    return \n\n\nvalue = g(1)\n")
    # Another file's completion, its context gathered afresh, carries the ring: still answered.
    assert (await inline(client, other, 1, 11)).items
    context = (await status(client))["context"]["lastPromptContext"]
    # (relative to the workspace once it is indexed; absolute for an edit noted before that)
    recent = [c["text"] for c in context if c["path"].endswith("app/typed.py")]
    assert recent and "'\ufffd'" in recent[0], context  # one UTF-16 unit for one: positions stay right
    # The buffer itself holds the replacement, and positions after it still line up.
    change(client, typed, 3, insert(4, 14, "  # ok"))
    assert (await inline(client, typed, 4, 20)).items


async def test_a_lone_surrogate_in_didopen_is_replaced(client: LanguageClient):
    uri = (REPO / "app" / "opened.py").as_uri()
    open_doc(client, uri, "s = '\udc80'\n" + SOURCE)
    assert (await inline(client, uri, 5, 11)).items


@pytest.mark.parametrize("uri", ["untitled:Untitled-1", "file:///work/ghost.py"])
async def test_completion_for_a_closed_document_is_an_error(client: LanguageClient, uri: str):
    open_doc(client, uri)
    client.text_document_did_close(types.DidCloseTextDocumentParams(text_document=types.TextDocumentIdentifier(uri)))
    with pytest.raises(Exception, match="unknown document"):
        await inline(client, uri, 4, 11)
