"""Warmups from the editor's messages (features/warmup.py), over LSP with the tiny model: opening a
document warms its top window, an edit far from the last one (or in another document) warms the
prompt there, typing on does not; the cursor coming to rest (``slm/cursor``) follows the same rule
and shares the last place with the edits; ``slm.status`` reports them and the kept KV states."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest_lsp
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient

from slm_lsp import methods
from slm_lsp.features.warmup import edit_end
from tests.conftest import TINY_MODEL, server_command

SOURCE = "".join(f"def f{i}(x):\n    return x + {i}\n\n" for i in range(40))


@pytest_lsp.fixture(config=ClientServerConfig(server_command=server_command("--model", str(TINY_MODEL))))
async def client(lsp_client: LanguageClient):
    await lsp_client.initialize_session(types.InitializeParams(
        capabilities=types.ClientCapabilities(),
        initialization_options={"completion": {"maxTokens": 4, "prefixTokens": 256, "suffixTokens": 64},
                                "context": {"enabled": False}},
    ))
    yield
    await lsp_client.shutdown_session()


async def kv_states(client: LanguageClient) -> dict[str, Any]:
    status = await client.workspace_execute_command_async(types.ExecuteCommandParams(command=methods.COMMAND_STATUS))
    return status["kvStates"]


async def warmups(client: LanguageClient, n: int) -> dict[str, Any]:
    for _ in range(400):
        states = await kv_states(client)
        if states["warmups"] + states["warmups_stopped"] >= n:
            return states
        await asyncio.sleep(0.05)
    raise AssertionError(f"fewer than {n} warmups: {states}")


def edit(client: LanguageClient, uri: str, version: int, line: int, text: str) -> None:
    at = types.Position(line, 4)
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
        content_changes=[types.TextDocumentContentChangePartial(range=types.Range(at, at), text=text)]))


async def test_open_and_jumps_warm_the_prompt_typing_on_does_not(client: LanguageClient):
    for uri in ("file:///work/a.py", "file:///work/b.py"):
        client.text_document_did_open(types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(uri=uri, language_id="python", version=1, text=SOURCE)))
    await warmups(client, 1)  # the second open replaced the first's before the worker took it, or after
    a, b = "file:///work/a.py", "file:///work/b.py"
    before = await warmups(client, 1)
    edit(client, a, 2, 100, "y = 1")  # far from any edit so far: warm here
    after_jump = await warmups(client, before["warmups"] + before["warmups_stopped"] + 1)
    edit(client, a, 3, 101, "z")  # typing on nearby: no warmup
    edit(client, b, 2, 101, "z")  # another document: warm there
    after_switch = await warmups(client, after_jump["warmups"] + after_jump["warmups_stopped"] + 1)
    result = await client.text_document_inline_completion_async(types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=b), position=types.Position(101, 5),
        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic)))
    assert isinstance(result, types.InlineCompletionList)
    states = await kv_states(client)
    assert states["warmups"] + states["warmups_stopped"] == after_switch["warmups"] + after_switch["warmups_stopped"]
    assert states["limit_mib"] == 256 and states["documents"] >= 1  # a's prompt was saved when b's was warmed


def cursor(client: LanguageClient, params: Any) -> None:
    client.protocol.notify(methods.CURSOR_NOTIFICATION, params)


def at(uri: str, line: int) -> dict[str, Any]:
    return {"textDocument": {"uri": uri}, "position": {"line": line, "character": 4}}


def settled(states: dict[str, Any]) -> int:
    return states["warmups"] + states["warmups_stopped"]


async def quiet(client: LanguageClient) -> dict[str, Any]:
    """The warmup counts once they stop changing (0.5 s alike)."""
    states = await kv_states(client)
    for _ in range(40):
        await asyncio.sleep(0.5)
        now = await kv_states(client)
        if settled(now) == settled(states):
            return now
        states = now
    raise AssertionError(f"warmups never settled: {states}")


async def test_the_cursor_resting_far_away_or_in_another_document_warms_there(client: LanguageClient):
    a, b = "file:///work/a.py", "file:///work/b.py"
    for uri in (a, b):
        client.text_document_did_open(types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(uri=uri, language_id="python", version=1, text=SOURCE)))
    await warmups(client, 1)
    before = await quiet(client)  # both opens' warmups settled (or the first replaced)
    cursor(client, at(b, 1))  # where the editor puts the cursor of the file it opened: warm already
    await asyncio.sleep(0.5)
    assert settled(await kv_states(client)) == settled(before)
    cursor(client, at(a, 100))  # a jump
    after_jump = await warmups(client, settled(before) + 1)
    cursor(client, at(b, 90))  # focus on another document
    after_focus = await warmups(client, settled(after_jump) + 1)
    # Near the last place, bad params, an unknown document, a line past the end: no warmup, no reply,
    # and the server goes on answering.
    cursor(client, at(b, 92))
    cursor(client, {"position": {"line": 1}})
    cursor(client, at("file:///work/never-opened.py", 3))
    cursor(client, at(a, 10_000))
    edit(client, b, 2, 93, "q")  # typing where the cursor rests: the prompt there is already warm
    await asyncio.sleep(1.0)
    assert settled(await kv_states(client)) == settled(after_focus)
    cursor(client, at(a, 20))  # and the rule still holds after them
    await warmups(client, settled(after_focus) + 1)


def test_edit_end_is_after_the_inserted_text():
    from slm_lsp.features.documents import OpenDocument

    doc = OpenDocument("file:///x.py", "ab\ncd\n", 1, "python", types.PositionEncodingKind.Utf16)
    change = types.TextDocumentContentChangePartial(range=types.Range(types.Position(1, 1), types.Position(1, 1)),
                                                    text="XY")
    assert edit_end(doc, change, doc.apply(change)) == (1, 3)
    change = types.TextDocumentContentChangePartial(range=types.Range(types.Position(0, 0), types.Position(0, 0)),
                                                    text="q\nrs")
    assert edit_end(doc, change, doc.apply(change)) == (1, 2)
