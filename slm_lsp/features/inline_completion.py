"""textDocument/inlineCompletion: ghost text at the cursor (VS Code, Neovim 0.12+, Helix...).

The completion after the answer is computed ahead, as if it were accepted; each item's ``command``
is ``slm.accepted``, which the editor runs when the item is accepted (``features/accept.py``).

When the completion has nothing to insert and the newest edit was in this document, the next edit
(``features/next_edit.py``) is asked for; when it starts near the cursor it comes back as an item
whose ``range`` covers the text it replaces (LSP 3.18; VS Code shows such an item as an inline
edit)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lsprotocol import types

from .accept import accepted_command
from .documents import run_completion
from .next_edit import near_cursor

if TYPE_CHECKING:
    from ..server import SlmLanguageServer


STALE = ("superseded", "cancelled", "disabled", "no-model", "error")
"""Completion answers (their reasons' starts) that say nothing about this place: no next edit is
asked for after them."""


def register(server: "SlmLanguageServer") -> None:
    # pygls only advertises inlineCompletionProvider when it is given options.
    @server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
    async def inline_completion(ls: "SlmLanguageServer", params: types.InlineCompletionParams
                                ) -> types.InlineCompletionList:
        uri = params.text_document.uri
        answer = await run_completion(ls, uri, params.position)
        if answer is None or not answer.result.text:
            if answer is not None and answer.result.reason.startswith(STALE):
                return types.InlineCompletionList(items=[])
            return await next_edit_items(ls, uri, params.position)
        at, text = params.position, answer.result.text
        command = (accepted_command(params.text_document.uri, answer.version, at, text, answer.encoding)
                   if ls.config.completion.prefetch_on_accept else None)
        ls.accepts.speculate(answer)  # the completion after this one, while the user looks at it
        return types.InlineCompletionList(items=[
            types.InlineCompletionItem(insert_text=text, range=types.Range(start=at, end=at), command=command)
        ])


async def next_edit_items(ls: "SlmLanguageServer", uri: str, position: types.Position) -> types.InlineCompletionList:
    """The next edit near ``position`` as one item with its range; none when there is no such edit."""
    if not ls.config.next_edit.enabled or not ls.next_edits.has_recent_edit(uri):
        return types.InlineCompletionList(items=[])
    suggestion = await ls.next_edits.suggest(uri, position)
    if suggestion is None or not near_cursor(suggestion, position):
        return types.InlineCompletionList(items=[])
    return types.InlineCompletionList(items=[
        types.InlineCompletionItem(insert_text=suggestion.new_text, range=suggestion.range)])
