"""The completion after a suggestion is computed ahead (features/accept.py), over LSP with the tiny
model. While an inline suggestion is shown, the one after it is computed as if it were accepted:
after the edit, the request at the new cursor is answered from the type-through cache. Items carry
the ``slm.accepted`` command; once the editor reports an accept (that command, or the
``slm/accepted`` notification) and the edit reached the server, in either order, the completion at
the new cursor is computed (shown here with a textDocument/completion item, which computes nothing
ahead by itself). An accept whose text never arrives computes nothing; bad params get an error and
the server goes on."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import pytest_lsp
from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pytest_lsp import ClientServerConfig, LanguageClient

from slm_lsp import methods
from tests.conftest import TINY_MODEL, server_command

SOURCE = "import math\n\n\ndef circle_area(radius):\n    return \n\n\ndef main():\n    print(circle_area(2.0))\n"
AT = types.Position(4, 11)


@pytest_lsp.fixture(config=ClientServerConfig(server_command=server_command("--model", str(TINY_MODEL))))
async def client(lsp_client: LanguageClient):
    await lsp_client.initialize_session(types.InitializeParams(
        capabilities=types.ClientCapabilities(),
        initialization_options={"completion": {"maxTokens": 12, "timeBudgetMs": 5000}, "context": {"enabled": False}},
    ))
    yield
    await lsp_client.shutdown_session()


def open_doc(client: LanguageClient, uri: str, text: str = SOURCE) -> None:
    client.text_document_did_open(types.DidOpenTextDocumentParams(
        text_document=types.TextDocumentItem(uri=uri, language_id="python", version=1, text=text)))


async def inline(client: LanguageClient, uri: str, at: types.Position) -> types.InlineCompletionList:
    result = await client.text_document_inline_completion_async(types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=at,
        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic)))
    assert isinstance(result, types.InlineCompletionList)
    return result


def insert(client: LanguageClient, uri: str, version: int, at: types.Position, text: str) -> None:
    """What the editor sends when the suggestion is inserted."""
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
        content_changes=[types.TextDocumentContentChangePartial(range=types.Range(at, at), text=text)]))


async def status(client: LanguageClient) -> dict[str, Any]:
    return await client.workspace_execute_command_async(types.ExecuteCommandParams(command=methods.COMMAND_STATUS))


async def prefetches_done(client: LanguageClient, queued: int) -> dict[str, int]:
    """Wait until the server queued ``queued`` prefetches in all and finished each."""
    for _ in range(300):
        counts = (await status(client))["prefetch"]
        if counts.get("queued", 0) >= queued and sum(
                counts.get(k, 0) for k in ("answered", "empty", "dropped")) == counts["queued"]:
            return counts
        await asyncio.sleep(0.05)
    raise AssertionError(f"the prefetches did not finish: {counts}")


async def first_suggestion(client: LanguageClient, uri: str) -> tuple[str, dict[str, Any]]:
    """A suggestion that computes nothing ahead by itself (a textDocument/completion item)."""
    open_doc(client, uri)
    completion = await client.text_document_completion_async(types.CompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=AT))
    assert isinstance(completion, types.CompletionList)
    (item,) = completion.items
    assert isinstance(item.text_edit, types.TextEdit) and item.text_edit.new_text
    assert item.command is not None and item.command.command == methods.COMMAND_ACCEPTED
    (args,) = item.command.arguments or []
    return item.text_edit.new_text, args


async def next_suggestion_is_cached(client: LanguageClient, uri: str, end: types.Position, before: dict[str, Any]):
    queued = before["prefetch"].get("queued", 0) + 1
    counts = await prefetches_done(client, queued)
    assert counts["queued"] == queued and counts.get("answered", 0) == before["prefetch"].get("answered", 0) + 1
    result = await inline(client, uri, end)
    assert result.items and result.items[0].insert_text
    after = await status(client)
    assert after["cacheHits"] == before["cacheHits"] + 1
    assert after["answered"].get("cache", 0) == before["answered"].get("cache", 0) + 1


async def test_the_completion_after_a_shown_suggestion_is_ready_when_it_is_accepted(client: LanguageClient):
    uri = "file:///work/shown.py"
    open_doc(client, uri)
    (item,) = (await inline(client, uri, AT)).items
    text = item.insert_text
    assert isinstance(text, str) and text and "\n" not in text  # one line here: the cursor moves along it
    assert item.command is not None and item.command.command == methods.COMMAND_ACCEPTED
    assert list(item.command.arguments or []) == [{"uri": uri, "version": 2, "text": text,
                                       "position": {"line": AT.line, "character": AT.character + len(text)}}]
    before = await status(client)
    counts = await prefetches_done(client, 1)  # computed while the suggestion is shown
    assert counts.get("answered") == 1, counts
    insert(client, uri, 2, AT, text)  # Tab; no accept message needed
    result = await inline(client, uri, types.Position(AT.line, AT.character + len(text)))
    assert result.items and result.items[0].insert_text
    after = await status(client)
    assert after["cacheHits"] == before["cacheHits"] + 1
    assert after["prefetch"]["queued"] == 2  # and the one after that is on its way: Tab, Tab, ...


async def test_accept_by_the_item_command_after_the_edit(client: LanguageClient):
    uri = "file:///work/edit_first.py"
    text, args = await first_suggestion(client, uri)
    assert args == {"uri": uri, "version": 2, "text": text,
                    "position": {"line": AT.line, "character": AT.character + len(text)}}
    before = await status(client)
    insert(client, uri, 2, AT, text)  # VS Code: the edit, then the item's command
    await client.workspace_execute_command_async(types.ExecuteCommandParams(
        command=methods.COMMAND_ACCEPTED, arguments=[args]))
    await next_suggestion_is_cached(client, uri, types.Position(**args["position"]), before)


async def test_accept_by_notification_before_the_edit(client: LanguageClient):
    uri = "file:///work/notify_first.py"
    _text, args = await first_suggestion(client, uri)
    before = await status(client)
    # Neovim: the notification goes out at once, the didChange after its debounce.
    client.protocol.notify(methods.ACCEPTED_NOTIFICATION, {
        "uri": uri, "position": args["position"], "text": args["text"], "version": 2})
    await asyncio.sleep(0.2)
    assert (await status(client))["prefetch"] == before["prefetch"]  # waits for the edit
    insert(client, uri, 2, AT, args["text"])
    await next_suggestion_is_cached(client, uri, types.Position(**args["position"]), before)


async def test_an_accept_whose_text_never_arrives_computes_nothing(client: LanguageClient):
    uri = "file:///work/other_edit.py"
    _text, args = await first_suggestion(client, uri)
    before = await status(client)
    client.protocol.notify(methods.ACCEPTED_NOTIFICATION, {"uri": uri, "position": args["position"],
                                                           "text": args["text"], "version": 2})
    insert(client, uri, 2, AT, "x" * len(args["text"]))  # the user typed something else
    await asyncio.sleep(0.3)
    assert (await status(client))["prefetch"] == before["prefetch"]


BAD_ARGS = [[], ["file:///work/x.py"], [{"uri": "file:///work/x.py", "text": "a"}],
            [{"uri": "file:///work/x.py", "text": "a", "position": {"line": -1, "character": 0}}]]


async def test_bad_accept_params_are_invalid_and_the_server_goes_on(client: LanguageClient):
    for args in BAD_ARGS:
        with pytest.raises(JsonRpcException, match="position|object|string"):
            await client.workspace_execute_command_async(types.ExecuteCommandParams(
                command=methods.COMMAND_ACCEPTED, arguments=args))
        client.protocol.notify(methods.ACCEPTED_NOTIFICATION, args[0] if args else None)  # logged, ignored
    uri = "file:///work/after_bad.py"
    open_doc(client, uri)
    assert (await inline(client, uri, AT)).items
