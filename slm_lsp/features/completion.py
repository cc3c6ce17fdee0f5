"""textDocument/completion: the same completion as one item, for clients without inline support.

The item's edit replaces the identifier being typed (so clients that filter by the word before
the cursor keep showing it) with that identifier plus the completion.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from lsprotocol import types

from .accept import accepted_command
from .documents import run_completion

if TYPE_CHECKING:
    from ..server import SlmLanguageServer

WORD_BEFORE = re.compile(r"[A-Za-z0-9_$]*$")


def _documentation(ls: "SlmLanguageServer", text: str) -> types.MarkupContent | str:
    """The whole completion as documentation, in markdown where the client renders it."""
    td = ls.client_capabilities.text_document
    item_caps = td.completion.completion_item if td and td.completion else None
    if item_caps and item_caps.documentation_format and types.MarkupKind.Markdown in item_caps.documentation_format:
        return types.MarkupContent(kind=types.MarkupKind.Markdown, value=f"```\n{text}\n```")
    return text


def register(server: "SlmLanguageServer") -> None:
    @server.feature(types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions(trigger_characters=[".", "(", " "]))
    async def completion(ls: "SlmLanguageServer", params: types.CompletionParams) -> types.CompletionList:
        answer = await run_completion(ls, params.text_document.uri, params.position)
        if answer is None or not answer.result.text:
            return types.CompletionList(is_incomplete=True, items=[])
        # The line as it was asked about (not re-read: the buffer may have changed meanwhile).
        word = WORD_BEFORE.search(answer.line_prefix).group(0)  # type: ignore[union-attr]
        start = types.Position(params.position.line, max(0, params.position.character - len(word)))  # ASCII
        text = word + answer.result.text
        first_line = text.split("\n", 1)[0].strip()
        item = types.CompletionItem(
            label=first_line[:80] or text.strip()[:80],
            kind=types.CompletionItemKind.Text,
            detail="slm-lsp",
            documentation=_documentation(ls, text),
            filter_text=text,
            sort_text="0",
            insert_text_format=types.InsertTextFormat.PlainText,
            text_edit=types.TextEdit(range=types.Range(start=start, end=params.position), new_text=text),
            # Run by the client once the item is inserted: the next completion is computed at once.
            command=accepted_command(params.text_document.uri, answer.version, params.position, answer.result.text,
                                     answer.encoding) if ls.config.completion.prefetch_on_accept else None,
        )
        # Incomplete: the client asks again as the user types, so the completion follows the text.
        return types.CompletionList(is_incomplete=True, items=[item])
