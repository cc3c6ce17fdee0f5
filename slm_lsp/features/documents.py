"""Open documents: from an LSP (uri, position) to an engine request, and cleanup on didClose.

Positions arrive in UTF-16 code units; the engine works in Python string indices. A column past
the end of its line is clamped (the LSP spec says so); a line past the end of the document or
an unknown document is an InvalidParams error. Binary documents get no completion.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams

from ..engine.service import CompletionRequest, CompletionResult

if TYPE_CHECKING:
    from ..server import SlmLanguageServer


def completion_request(ls: "SlmLanguageServer", uri: str, position: types.Position) -> CompletionRequest | None:
    """The engine request for ``position`` in ``uri``; None when the document is binary."""
    doc = ls.workspace.text_documents.get(uri)
    if doc is None:
        from urllib.parse import unquote

        doc = ls.workspace.text_documents.get(unquote(uri))
    if doc is None:
        raise JsonRpcInvalidParams(f"unknown document {uri}: send textDocument/didOpen first")
    source = doc.source
    if "\x00" in source:
        return None
    lines = doc.lines
    n_lines = len(lines) + (1 if not lines or lines[-1].endswith("\n") else 0)
    if position.line >= n_lines:
        raise JsonRpcInvalidParams(
            f"position {position.line}:{position.character} is past the end of {uri} ({n_lines} lines)")
    line_text = lines[position.line] if position.line < len(lines) else ""
    stripped = line_text.rstrip("\r\n")
    column = doc.position_codec.position_from_client_units([stripped], types.Position(0, position.character)).character
    column = min(column, len(stripped))
    return CompletionRequest(document_key=uri, text=source, line=position.line, column=column,
                             language_id=doc.language_id or "", path=doc.path)


async def run_completion(ls: "SlmLanguageServer", uri: str, position: types.Position) -> CompletionResult | None:
    """Submit to the engine and await it; a cancelled request stops the generation."""
    request = completion_request(ls, uri, position)
    if request is None:
        return None
    await ls.context.attach(ls, request)
    handle = ls.engine.submit(request)
    try:
        result = await asyncio.wrap_future(handle.future)
    except asyncio.CancelledError:
        handle.cancel()
        raise
    if not result.cached and result.generation is not None:
        ls.last_latency_ms = result.total_ms
    return result


def register(server: "SlmLanguageServer") -> None:
    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: "SlmLanguageServer", params: types.DidCloseTextDocumentParams) -> None:
        ls.engine.forget(params.text_document.uri)
        ls.context.provider.forget(params.text_document.uri)
        ls.context.buffer_closed(Path(unquote(urlparse(params.text_document.uri).path)).as_posix())
