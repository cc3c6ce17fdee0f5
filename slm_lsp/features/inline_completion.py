"""textDocument/inlineCompletion: ghost text at the cursor (VS Code, Neovim 0.12+, Helix...).

The completion after the answer is computed ahead, as if it were accepted; each item's ``command``
is ``slm.accepted``, which the editor runs when the item is accepted (``features/accept.py``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lsprotocol import types

from .accept import accepted_command
from .documents import run_completion

if TYPE_CHECKING:
    from ..server import SlmLanguageServer


def register(server: "SlmLanguageServer") -> None:
    # pygls only advertises inlineCompletionProvider when it is given options.
    @server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
    async def inline_completion(ls: "SlmLanguageServer", params: types.InlineCompletionParams
                                ) -> types.InlineCompletionList:
        answer = await run_completion(ls, params.text_document.uri, params.position)
        if answer is None or not answer.result.text:
            return types.InlineCompletionList(items=[])
        at, text = params.position, answer.result.text
        command = (accepted_command(params.text_document.uri, answer.version, at, text, answer.encoding)
                   if ls.config.completion.prefetch_on_accept else None)
        ls.accepts.speculate(answer)  # the completion after this one, while the user looks at it
        return types.InlineCompletionList(items=[
            types.InlineCompletionItem(insert_text=text, range=types.Range(start=at, end=at), command=command)
        ])
