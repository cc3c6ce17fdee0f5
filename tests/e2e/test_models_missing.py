"""A missing, corrupt or absent model leaves the server up: it says what to do and answers empty."""

from __future__ import annotations

import pytest
import pytest_lsp
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient

from tests.conftest import CORRUPT_MODEL, server_command

URI = "file:///work/demo.py"


async def _start(client: LanguageClient) -> None:
    await client.initialize_session(types.InitializeParams(capabilities=types.ClientCapabilities()))


async def _empty_completion(client: LanguageClient) -> None:
    client.text_document_did_open(types.DidOpenTextDocumentParams(
        text_document=types.TextDocumentItem(uri=URI, language_id="python", version=1, text="def f():\n    return ")))
    result = await client.text_document_inline_completion_async(types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=URI), position=types.Position(1, 11),
        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked)))
    assert result is not None and len(result.items) == 0


async def _message(client: LanguageClient) -> str:
    for _ in range(100):
        if client.messages:
            return " ".join(m.message for m in client.messages)
        import asyncio

        await asyncio.sleep(0.1)
    raise AssertionError("the server did not show a message")


@pytest_lsp.fixture(config=ClientServerConfig(server_command=server_command()))
async def no_model(lsp_client: LanguageClient):
    await _start(lsp_client)
    yield
    await lsp_client.shutdown_session()


@pytest_lsp.fixture(config=ClientServerConfig(server_command=server_command("--model", "/nonexistent/model.gguf")))
async def missing_model(lsp_client: LanguageClient):
    await _start(lsp_client)
    yield
    await lsp_client.shutdown_session()


@pytest_lsp.fixture(config=ClientServerConfig(server_command=server_command("--model", str(CORRUPT_MODEL))))
async def corrupt_model(lsp_client: LanguageClient):
    await _start(lsp_client)
    yield
    await lsp_client.shutdown_session()


async def test_no_model_says_what_to_do(no_model: LanguageClient):
    assert "slm-lsp pull" in await _message(no_model)
    await _empty_completion(no_model)


async def test_missing_model_file(missing_model: LanguageClient):
    assert "not found" in await _message(missing_model)
    await _empty_completion(missing_model)


async def test_corrupt_model_file(corrupt_model: LanguageClient):
    assert "could not load" in await _message(corrupt_model)
    await _empty_completion(corrupt_model)


@pytest.mark.parametrize("options", [{"completion": {"maxTokens": "lots"}}, {"model": 3}, {"bogus": 1}])
async def test_broken_config_is_reported_and_defaults_used(options):
    from tests.conftest import TINY_MODEL

    client = await ClientServerConfig(server_command=server_command("--model", str(TINY_MODEL))).start()
    try:
        await client.initialize_session(types.InitializeParams(
            capabilities=types.ClientCapabilities(), initialization_options=options))
        assert "invalid setting" in await _message(client)
        client.text_document_did_open(types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(uri=URI, language_id="python", version=1, text="x = ")))
        result = await client.text_document_inline_completion_async(types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=URI), position=types.Position(0, 4),
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked)))
        assert result is not None and result.items
    finally:
        await client.shutdown_session()


@pytest.mark.parametrize(("pulled", "message"), [(True, None), (False, "ollama pull tiny-coder:1.5b")])
async def test_a_model_that_ollama_pulled_is_served(tmp_path, pulled, message):
    """model.path names a model by its Ollama name; one Ollama does not have is reported with the fix."""
    import os

    from tests.conftest import TINY_MODEL
    from tests.test_models import ollama_model

    store = tmp_path / "ollama"
    store.mkdir()
    if pulled:
        ollama_model(store, "tiny-coder:1.5b", TINY_MODEL.read_bytes())
    client = await ClientServerConfig(server_command=server_command("--model", "ollama:tiny-coder:1.5b"),
                                      server_env={**os.environ, "OLLAMA_MODELS": str(store)}).start()
    try:
        await _start(client)
        if message:
            assert message in await _message(client)
            await _empty_completion(client)
            return
        client.text_document_did_open(types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(uri=URI, language_id="python", version=1, text="x = ")))
        result = await client.text_document_inline_completion_async(types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=URI), position=types.Position(0, 4),
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked)))
        assert result is not None and result.items
    finally:
        await client.shutdown_session()
