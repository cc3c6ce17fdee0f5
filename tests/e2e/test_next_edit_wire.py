"""Next-edit suggestions over LSP (features/next_edit.py): the ``slm/nextEdit`` request's round trip,
its errors and its null result with tiny models (an instruct one answers random words, never a
region; a base one has no chat template: no edit either way), and with the real Qwen
(SLM_LSP_TEST_MODEL_1_5B: the 0.5B cannot) a parameter rename started on one line and
continued by the suggestion at the next use, its range checked by applying it. The range's UTF-16
units past non-ASCII text are checked in tests/features/test_next_edit.py."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest
import pytest_lsp
from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pytest_lsp import ClientServerConfig, LanguageClient

from slm_lsp import methods
from slm_lsp.features.accept import _plain
from tests.conftest import TINY_MODEL, server_command
from tests.e2e.session import TINY_CHAT_MODEL, open_document, start_ready

SOURCE = "def tally(items):\n    total = 0\n    for item in items:\n        total += item\n    return total\n"
REAL = os.environ.get("SLM_LSP_TEST_MODEL_1_5B", "")
"""The real test needs the 1.5B: on the measured cases the 0.5B (SLM_LSP_TEST_MODEL) did not continue
this rename (README: Next-edit suggestions)."""


async def start(client: LanguageClient, options: dict[str, Any] | None = None) -> None:
    await start_ready(client, options=options)


@pytest_lsp.fixture(config=ClientServerConfig(server_command=server_command("--model", str(TINY_CHAT_MODEL))))
async def client(lsp_client: LanguageClient):
    await start(lsp_client)
    yield
    await lsp_client.shutdown_session()


@pytest_lsp.fixture(config=ClientServerConfig(server_command=server_command("--model", str(TINY_MODEL))))
async def base_client(lsp_client: LanguageClient):
    await start(lsp_client)
    yield
    await lsp_client.shutdown_session()


def open_doc(client: LanguageClient, uri: str, text: str = SOURCE) -> None:
    open_document(client, uri, text)


def replace(client: LanguageClient, uri: str, version: int, line: int, start: int, end: int, text: str) -> None:
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
        content_changes=[types.TextDocumentContentChangePartial(
            range=types.Range(types.Position(line, start), types.Position(line, end)), text=text)]))


async def next_edit(client: LanguageClient, uri: str, line: int, character: int, timeout: float = 120) -> Any:
    return await asyncio.wait_for(client.protocol.send_request_async(methods.NEXT_EDIT_REQUEST, {
        "textDocument": {"uri": uri}, "position": {"line": line, "character": character}}), timeout)


def apply(text: str, result: dict[str, Any]) -> str:
    """``text`` with the suggestion applied (ASCII lines: UTF-16 units are string indices)."""
    result = _plain(result)  # (pygls hands a custom request's result back as named tuples)
    lines = text.splitlines(True)
    rng = result["range"]
    start = sum(map(len, lines[:rng["start"]["line"]])) + rng["start"]["character"]
    end = sum(map(len, lines[:rng["end"]["line"]])) + rng["end"]["character"]
    return text[:start] + result["newText"] + text[end:]


async def test_round_trip_answers_null_when_the_model_has_no_usable_edit(client: LanguageClient):
    uri = "file:///work/tally.py"
    open_doc(client, uri)
    replace(client, uri, 2, 1, 4, 9, "count")  # total -> count on line 1
    # The tiny model writes words, never a region between markers: no edit, as JSON null.
    assert await next_edit(client, uri, 1, 9) is None
    # The server still answers (the worker is free): a completion comes back.
    items = await asyncio.wait_for(client.text_document_inline_completion_async(types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(3, 8),
        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic))), 60)
    assert items is not None and isinstance(items, types.InlineCompletionList)


async def test_bad_params_and_unknown_documents_are_errors(client: LanguageClient):
    with pytest.raises(JsonRpcException, match="uri"):
        await asyncio.wait_for(client.protocol.send_request_async(methods.NEXT_EDIT_REQUEST, {"position": {}}), 30)
    with pytest.raises(JsonRpcException, match="didOpen"):
        await next_edit(client, "file:///work/never-opened.py", 0, 0)
    open_doc(client, "file:///work/short.py", "x = 1\n")
    with pytest.raises(JsonRpcException, match="past the end"):
        await next_edit(client, "file:///work/short.py", 9, 0)


async def test_a_base_model_suggests_nothing(base_client: LanguageClient):
    uri = "file:///work/base.py"
    open_doc(base_client, uri)
    replace(base_client, uri, 2, 1, 4, 9, "count")
    assert await next_edit(base_client, uri, 1, 9) is None


@pytest_lsp.fixture(config=ClientServerConfig(server_command=server_command("--model", REAL or str(TINY_MODEL))))
async def real_client(lsp_client: LanguageClient):
    # As the measured cases ran: a 12-line region, and time enough for a loaded 2-core machine.
    await start(lsp_client, {"nextEdit": {"regionLines": 12, "timeBudgetMs": 120000}})
    yield
    await lsp_client.shutdown_session()


AREA = "def area(w, h):\n    return w * h\n\n\ndef box(w, h, d):\n    return area(w, h) * d\n"


@pytest.mark.skipif(not REAL, reason="set SLM_LSP_TEST_MODEL_1_5B to Qwen2.5-Coder-1.5B-Instruct's GGUF")
async def test_real_model_continues_a_rename(real_client: LanguageClient):
    # Measured on 6 cases (README): Qwen2.5-Coder-1.5B continues this one, the 0.5B does not.
    uri = "file:///work/app.py"  # the name the measured case used (it is in the prompt)
    open_doc(real_client, uri, AREA)
    for i, ch in enumerate("idth"):  # the parameter w renamed to width, typed after the w
        replace(real_client, uri, 2 + i, 0, 10 + i, 10 + i, ch)
    renamed = AREA.replace("area(w, h):", "area(width, h):")
    result = await next_edit(real_client, uri, 0, 19, timeout=900)  # the cursor at the end of the line
    assert result is not None, "no next edit after the rename of w on line 1"
    after = apply(renamed, result)
    assert after == renamed.replace("return w * h", "return width * h"), after
    assert _plain(result)["range"]["start"]["line"] == 1  # the next use, not the line just edited
    assert _plain(result)["cause"] == "follows your edit at line 1"
