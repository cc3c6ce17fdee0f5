"""Over the wire: bad adapters and settings are refused with a message, and the working model
keeps answering (issue 13, items 3, 4 and 5)."""

from __future__ import annotations

import asyncio

import pytest
import pytest_lsp
from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pytest_lsp import ClientServerConfig, LanguageClient

from tests.conftest import CORRUPT_MODEL, TINY_MODEL, server_command

URI = "file:///work/demo.py"
SOURCE = "import math\n\n\ndef circle_area(radius):\n    return \n\n\ndef main():\n    print(circle_area(2.0))\n"


@pytest_lsp.fixture(config=ClientServerConfig(server_command=server_command("--model", str(TINY_MODEL))))
async def client(lsp_client: LanguageClient):
    await lsp_client.initialize_session(types.InitializeParams(
        capabilities=types.ClientCapabilities(),
        initialization_options={"completion": {"maxTokens": 8, "timeBudgetMs": 5000}},
    ))
    lsp_client.text_document_did_open(types.DidOpenTextDocumentParams(
        text_document=types.TextDocumentItem(uri=URI, language_id="python", version=1, text=SOURCE)))
    yield
    await lsp_client.shutdown_session()


async def answers(client: LanguageClient, character: int = 11) -> None:
    result = await client.text_document_inline_completion_async(types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=URI), position=types.Position(4, character),
        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked)))
    assert isinstance(result, types.InlineCompletionList) and result.items, result


async def status(client: LanguageClient) -> dict:
    return await client.workspace_execute_command_async(types.ExecuteCommandParams(command="slm.status"))


async def message_about(client: LanguageClient, text: str) -> str:
    for _ in range(600):
        for m in client.messages:
            if text in m.message:
                return m.message
        await asyncio.sleep(0.05)
    raise AssertionError(f"no message about {text!r}: {[m.message for m in client.messages]}")


async def test_a_fake_adapter_is_refused_and_completions_go_on(client: LanguageClient):
    await answers(client)
    with pytest.raises(JsonRpcException, match="not a valid GGUF file"):
        await client.workspace_execute_command_async(types.ExecuteCommandParams(
            command="slm.loadAdapter", arguments=[str(CORRUPT_MODEL)]))
    assert (await status(client))["adapter"] is None
    await answers(client, 10)  # used to crash the server (SIGSEGV in llama_decode)


async def test_a_huge_prompt_budget_is_refused_and_the_context_stays(client: LanguageClient):
    await answers(client)
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
        settings={"slm": {"completion": {"prefixTokens": 1_000_000_000}}}))
    message = await message_about(client, "completion.prefix_tokens")
    assert "out of range" in message
    await answers(client, 10)
    assert (await status(client))["nCtx"] == 4096


async def test_an_invalid_adapter_setting_keeps_the_working_model(client: LanguageClient):
    await answers(client)
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
        settings={"slm": {"model": {"adapter": str(CORRUPT_MODEL)}}}))
    await message_about(client, "could not load the model")
    state = await status(client)
    assert state["state"] == "ready" and state["model"] == str(TINY_MODEL) and state["adapter"] is None
    await answers(client, 10)
