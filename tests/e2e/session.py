"""What the pytest-lsp wire tests do alike: the tiny chat model, start a session and wait for the model,
open a document."""

from __future__ import annotations

import asyncio
from typing import Any

from lsprotocol import types
from pytest_lsp import LanguageClient

from slm_lsp import methods
from tests.conftest import TEST_TMP
from tests.engine.test_edit import CHATML
from tests.tiny_model import build_tiny_gguf

TINY_CHAT_MODEL = build_tiny_gguf(TEST_TMP / "tiny-chat.gguf", chat_template=CHATML)
"""The tiny model with a ChatML template: what the edit actions and zero-shot next edits need."""


async def start_ready(client: LanguageClient, capabilities: types.ClientCapabilities | None = None,
                      options: dict[str, Any] | None = None, tries: int = 1200) -> types.InitializeResult:
    """Initialize with the repo context off (plus ``options``) and wait until the model is loaded."""
    result = await client.initialize_session(types.InitializeParams(
        capabilities=capabilities or types.ClientCapabilities(),
        initialization_options={"context": {"enabled": False}, **(options or {})}))
    for _ in range(tries):
        status = await client.workspace_execute_command_async(
            types.ExecuteCommandParams(command=methods.COMMAND_STATUS))
        if status["state"] == "ready":
            return result
        await asyncio.sleep(0.05)
    raise AssertionError(f"the model did not load: {status}")


def open_document(client: LanguageClient, uri: str, text: str, language_id: str = "python") -> None:
    client.text_document_did_open(types.DidOpenTextDocumentParams(
        text_document=types.TextDocumentItem(uri=uri, language_id=language_id, version=1, text=text)))
