"""The server over stdio, driven the way an editor drives it (pytest-lsp), with the tiny model.

initialize → didOpen → inlineCompletion / completion → didChange → cancellation → shutdown,
and bad input: unknown URIs, positions past the end, invalid UTF-16 offsets, binary content,
a 5 MB file. After each bad request the server must still answer a good one.
"""

from __future__ import annotations

import asyncio
import json
import re
from types import SimpleNamespace

import pytest
import pytest_lsp
from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pytest_lsp import ClientServerConfig, LanguageClient

from tests.conftest import TEST_TMP, TINY_MODEL, server_command

URI = "file:///work/demo.py"
SOURCE = "import math\n\n\ndef circle_area(radius):\n    return \n\n\ndef main():\n    print(circle_area(2.0))\n"


@pytest_lsp.fixture(config=ClientServerConfig(server_command=server_command("--model", str(TINY_MODEL))))
async def client(lsp_client: LanguageClient):
    lsp_client.init_result = await lsp_client.initialize_session(types.InitializeParams(  # type: ignore[attr-defined]
        capabilities=types.ClientCapabilities(window=types.WindowClientCapabilities(work_done_progress=True),
                                              workspace=types.WorkspaceClientCapabilities(configuration=True)),
        initialization_options={"completion": {"maxTokens": 12, "timeBudgetMs": 5000}},
    ))
    yield
    await lsp_client.shutdown_session()


def open_doc(client: LanguageClient, text: str = SOURCE, uri: str = URI, language: str = "python") -> None:
    client.text_document_did_open(types.DidOpenTextDocumentParams(
        text_document=types.TextDocumentItem(uri=uri, language_id=language, version=1, text=text)))


async def inline(client: LanguageClient, line: int, character: int, uri: str = URI) -> types.InlineCompletionList:
    result = await client.text_document_inline_completion_async(types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line, character),
        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic)))
    assert isinstance(result, types.InlineCompletionList)
    return result


async def test_capabilities_advertised(client: LanguageClient):
    caps = client.init_result.capabilities  # type: ignore[attr-defined]
    assert caps.inline_completion_provider is not None
    assert caps.completion_provider is not None
    assert caps.text_document_sync.change == types.TextDocumentSyncKind.Incremental


async def test_model_load_reports_progress(client: LanguageClient):
    # Up to a minute: on a loaded machine the load (and its probe in a child process) took over
    # the 5 s this waited before.
    for _ in range(1200):
        reports = [r for token, rs in client.progress_reports.items() for r in rs]
        if any(isinstance(r, types.WorkDoneProgressEnd) for r in reports):
            break
        await asyncio.sleep(0.05)
    assert isinstance(reports[0], types.WorkDoneProgressBegin) and "loading model" in reports[0].title
    assert isinstance(reports[-1], types.WorkDoneProgressEnd) and reports[-1].message == "ready"


async def change_settings(client: LanguageClient, settings: dict) -> None:
    """Send didChangeConfiguration and wait until the server has fetched the new ``slm``
    settings (its workspace/configuration request is the event: no sleeping)."""
    fetched = asyncio.Event()
    answer = client.get_configuration

    def get_configuration(*args, **kwargs):
        fetched.set()
        return answer(*args, **kwargs)

    client.set_configuration(settings, section="slm")
    client.get_configuration = get_configuration  # type: ignore[method-assign]
    try:
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings=None))
        await asyncio.wait_for(fetched.wait(), 30)
    finally:
        client.get_configuration = answer  # type: ignore[method-assign]


async def until(check, tries: int = 20):
    """Ask again (each try a round trip through the server) until ``check`` holds: the server
    applies fetched settings in a task of its own, a message or two after the answer."""
    for _ in range(tries):
        if await check():
            return True
    return False


async def test_configuration_change_applies_without_restart(client: LanguageClient):
    open_doc(client)
    assert (await inline(client, 4, 11)).items
    await change_settings(client, {"completion": {"enabledLanguages": ["rust"]}})
    open_doc(client, uri="file:///work/other.py")

    async def disabled() -> bool:
        return not (await inline(client, 4, 11, uri="file:///work/other.py")).items

    assert await until(disabled)
    await change_settings(client, {"completion": {"enabledLanguages": ["*"], "prefixTokens": 64}})

    async def enabled() -> bool:
        return bool((await inline(client, 4, 11, uri="file:///work/other.py")).items)

    assert await until(enabled)


async def test_inline_then_completion_then_edit(client: LanguageClient):
    open_doc(client)
    result = await inline(client, 4, 11)
    assert len(result.items) == 1
    item = result.items[0]
    assert isinstance(item.insert_text, str) and item.insert_text.strip()
    assert "\n" not in item.insert_text  # text right of the cursor is empty but the line is mid-statement
    assert item.range == types.Range(types.Position(4, 11), types.Position(4, 11))

    completion = await client.text_document_completion_async(types.CompletionParams(
        text_document=types.TextDocumentIdentifier(uri=URI), position=types.Position(4, 11)))
    assert isinstance(completion, types.CompletionList) and completion.is_incomplete
    edit = completion.items[0].text_edit
    assert isinstance(edit, types.TextEdit)
    assert edit.new_text == item.insert_text  # same completion; no identifier before the cursor here

    # Incremental edit: type "ma" after "return "; the identifier is now part of the edit.
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=URI, version=2),
        content_changes=[types.TextDocumentContentChangePartial(
            range=types.Range(types.Position(4, 11), types.Position(4, 11)), text="ma")]))
    completion = await client.text_document_completion_async(types.CompletionParams(
        text_document=types.TextDocumentIdentifier(uri=URI), position=types.Position(4, 13)))
    (item,) = completion.items  # the tiny model is deterministic: this prompt gets an answer
    edit = item.text_edit
    assert isinstance(edit, types.TextEdit)
    assert edit.range == types.Range(types.Position(4, 11), types.Position(4, 13)) and edit.new_text.startswith("ma")
    assert len(edit.new_text) > 2


async def test_type_through_is_answered_from_the_cache(client: LanguageClient):
    open_doc(client)
    first = (await inline(client, 4, 11)).items[0].insert_text
    assert isinstance(first, str) and len(first) > 2
    typed = first[:2]
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=URI, version=2),
        content_changes=[types.TextDocumentContentChangePartial(
            range=types.Range(types.Position(4, 11), types.Position(4, 11)), text=typed)]))
    second = (await inline(client, 4, 11 + len(typed))).items[0].insert_text
    assert second == first[2:]
    status = await client.workspace_execute_command_async(types.ExecuteCommandParams(command="slm.status"))
    assert status["cacheHits"] >= 1


async def test_answer_lengths_are_counted_and_remembered_for_the_next_start(client: LanguageClient):
    # A blank line between two lines of a block: an answer whose length the model may decide
    # (completion.answer_length auto, the default), counted and written to the cache directory.
    open_doc(client, "def f(x):\n    y = x + 1\n\n    return y\n", uri="file:///work/lengths.py")
    await inline(client, 2, 0, uri="file:///work/lengths.py")
    status = await client.workspace_execute_command_async(types.ExecuteCommandParams(command="slm.status"))
    length = status["answerLength"]
    assert length["setting"] == "auto" and length["using"] in ("model", "rules") and 1 <= length["of"] <= 32
    stored = json.loads((TEST_TMP / "cache" / "answer-lengths.json").read_text())
    key = next(k for k in stored if "tiny-qwen-coder.gguf" in k)
    assert len(stored[key]) == length["of"] and sum(stored[key]) == length["ended"]


CANCEL_LOG = TEST_TMP / "cancel-server.log"
MAX_TOKENS = 4096
"""The cap of the cancelled generation: all of it takes the tiny model about 3 s."""


@pytest_lsp.fixture(config=ClientServerConfig(server_command=server_command(
    "--model", str(TINY_MODEL), "--log-file", str(CANCEL_LOG))))
async def long_client(lsp_client: LanguageClient):
    await lsp_client.initialize_session(types.InitializeParams(
        capabilities=types.ClientCapabilities(),
        initialization_options={"logLevel": "debug", "completion": {
            "maxTokens": MAX_TOKENS, "maxLines": 1000, "timeBudgetMs": 60000}},
    ))
    yield
    await lsp_client.shutdown_session()


async def log_line(pattern: str) -> re.Match[str]:
    """Wait for the server's log to have a line that matches ``pattern``."""
    for _ in range(600):
        text = CANCEL_LOG.read_text() if CANCEL_LOG.exists() else ""
        if (match := re.search(pattern, text)) is not None:
            return match
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {pattern!r} in the server log:\n{text[-3000:]}")


async def test_cancel_stops_the_generation(long_client: LanguageClient):
    for _ in range(600):  # the model is loaded: the engine starts on the request at once
        status = await long_client.workspace_execute_command_async(types.ExecuteCommandParams(command="slm.status"))
        if status["state"] == "ready":
            break
        await asyncio.sleep(0.05)
    uri = "file:///work/cancel.py"
    open_doc(long_client, "def f(x):\n    ", uri=uri)
    params = types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(1, 4),
        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked))
    task = asyncio.ensure_future(
        long_client.protocol.send_request_async(types.TEXT_DOCUMENT_INLINE_COMPLETION, params))
    await log_line(r"completion for file:///work/cancel.py:1:4 submitted")  # the engine has it
    msg_id = max(long_client.protocol._request_futures)  # type: ignore[attr-defined]
    long_client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id=msg_id))
    with pytest.raises((JsonRpcException, asyncio.CancelledError)):
        await asyncio.wait_for(task, 30)
    stopped = await log_line(r"completion cancel.py \(\w+\) cancelled: "
                             r"generation stopped after (\d+) of at most (\d+) tokens")
    assert int(stopped.group(2)) == MAX_TOKENS and int(stopped.group(1)) < MAX_TOKENS
    # still alive: the engine answers the next request (the tiny model may write all 4096 tokens
    # on one line, 10 s on a free machine and over a minute on a loaded one)
    open_doc(long_client, "x = 1\ny = ", uri="file:///work/after.py")
    assert isinstance(await asyncio.wait_for(long_client.text_document_inline_completion_async(
        types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri="file:///work/after.py"), position=types.Position(1, 4),
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic))), 300),
        types.InlineCompletionList)


async def test_unknown_document_is_an_error_and_server_survives(client: LanguageClient):
    with pytest.raises(JsonRpcException, match="unknown document"):
        await inline(client, 0, 0, uri="file:///nowhere.py")
    open_doc(client)
    assert (await inline(client, 4, 11)).items


async def test_unparsable_params_get_an_error_response(client: LanguageClient):
    # Trigger kind 0 does not exist in LSP (VS Code's own enum starts at 0): pygls cannot decode it.
    open_doc(client)
    bad_kind = SimpleNamespace(value=0)  # serialised as 0 by the client's enum converter
    params = types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=URI), position=types.Position(4, 11),
        context=types.InlineCompletionContext(trigger_kind=bad_kind))  # type: ignore[arg-type]
    with pytest.raises(JsonRpcException, match="invalid textDocument/inlineCompletion"):
        await asyncio.wait_for(client.protocol.send_request_async(types.TEXT_DOCUMENT_INLINE_COMPLETION, params), 30)
    assert (await inline(client, 4, 11)).items


async def test_position_past_the_end(client: LanguageClient):
    open_doc(client)
    with pytest.raises(JsonRpcException, match="past the end"):
        await inline(client, 500, 0)
    # A column past the end of its line is clamped (LSP spec), not an error.
    assert (await inline(client, 4, 400)).items


async def test_invalid_utf16_offset(client: LanguageClient):
    # "😀" is two UTF-16 units; character 7 points into the middle of the surrogate pair.
    text = 's = "😀"\nx = s\n'
    open_doc(client, text, uri="file:///work/emoji.py")
    result = await inline(client, 0, 6, uri="file:///work/emoji.py")
    assert isinstance(result, types.InlineCompletionList)
    result = await inline(client, 0, 7, uri="file:///work/emoji.py")
    assert isinstance(result, types.InlineCompletionList)
    open_doc(client)
    assert (await inline(client, 4, 11)).items


async def test_binary_content_gets_no_completion(client: LanguageClient):
    open_doc(client, "abc\x00\x01\x02def\n", uri="file:///work/blob.bin", language="plaintext")
    assert len((await inline(client, 0, 3, uri="file:///work/blob.bin")).items) == 0
    open_doc(client)
    assert (await inline(client, 4, 11)).items


async def test_five_megabyte_file(client: LanguageClient):
    line = "value_{0} = compute_{0}(value_{1}) + 1\n"
    text = "".join(line.format(i, i - 1) for i in range(120_000))
    assert len(text) > 5_000_000
    open_doc(client, text, uri="file:///work/huge.py")
    result = await asyncio.wait_for(inline(client, 60_000, 10, uri="file:///work/huge.py"), 60)
    assert isinstance(result, types.InlineCompletionList)
    open_doc(client)
    assert (await inline(client, 4, 11)).items
