"""Warm the prompt before the user pauses: from textDocument/didOpen and didChange
(``documents.py`` calls in here) to ``CompletionEngine.warm``.

* ``didOpen``: the file's first prefix window (``warm(..., top=True)``): a request anywhere in it
  reuses the evaluated head.
* ``didChange`` in another document than the last edit, or more than ``JUMP_LINES`` lines away
  from it (the cursor jumped): the prompt at the edit, with its repo context, so that the
  request the next pause sends finds it evaluated.
* ``slm/cursor`` (``methods.CURSOR_NOTIFICATION``), the same rule for where the cursor comes to
  rest: a focused document or a jump warms before the user types, during the pause in which they
  read and think, instead of at their first keystroke.

The engine runs a warmup only while idle and drops it for any request; the context is attached
as for a completion (``WorkspaceContext.attach``), on the event loop, without waiting on it here.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams

from ..engine.warmup import JUMP_LINES
from .documents import column_index, completion_request, content

if TYPE_CHECKING:
    from ..server import SlmLanguageServer
    from .documents import OpenDocument

log = logging.getLogger(__name__)


def edit_end(doc: "OpenDocument", change: types.TextDocumentContentChangeEvent, line: int) -> tuple[int, int]:
    """(line, string index) just after the text ``change`` inserted at ``line`` (applied already)."""
    text = change.text
    if "\n" in text:
        end = line + text.count("\n")
        return end, len(text.rsplit("\n", 1)[1])
    start = getattr(change, "range", None)
    start_col = 0
    if start is not None and line < len(doc.lines):
        start_col = column_index(content(doc.lines[line]), start.start.character, doc.encoding)
    return line, start_col + len(text)


class Warmups:
    """Where the user last was (edit or cursor), and the warmups being prepared (owned by the
    event loop)."""

    def __init__(self, ls: "SlmLanguageServer") -> None:
        self._ls = ls
        self._last: tuple[str, int] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def opened(self, doc: "OpenDocument") -> None:
        # The editor puts the cursor at the top of a file it opens and says so (slm/cursor): that
        # is near this place, so the top window's warmup, which any cursor in it reuses, is not
        # replaced by a prompt for line 0.
        self._last = (doc.uri, 0)
        self._start(doc.uri, 0, 0, top=True)

    def edited(self, doc: "OpenDocument", line: int, column: int) -> None:
        self.arrived(doc.uri, line, column)

    def arrived(self, uri: str, line: int, column: int) -> None:
        """The user is at ``line`` of ``uri`` (an edit ended there, or the cursor came to rest):
        warm there unless it is near the last place in the same document."""
        last, self._last = self._last, (uri, line)
        if last is not None and last[0] == uri and abs(last[1] - line) <= JUMP_LINES:
            return  # typing on (the completion requests keep the prompt warm), or a short move
        self._start(uri, line, column)

    def forget(self, uri: str) -> None:
        if self._last is not None and self._last[0] == uri:
            self._last = None

    def _start(self, uri: str, line: int, column: int, top: bool = False) -> None:
        if not self._ls.config.completion.warmup:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop (a handler called directly): nothing to schedule on
            return
        task = loop.create_task(self._warm(uri, line, column, top))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _warm(self, uri: str, line: int, column: int, top: bool) -> None:
        ls = self._ls
        doc = ls.documents.get(uri)
        if doc is None or line >= len(doc.lines):
            return
        try:
            prepared = completion_request(ls, uri, types.Position(line, 0))
        except JsonRpcInvalidParams:
            return
        if prepared is None:
            return
        request, _ = prepared
        request.column = min(column, len(content(doc.lines[line])))
        await ls.context.attach(ls, request)
        ls.engine.warm(request, top)
        log.debug("warmup asked at %s:%d:%d%s", uri, line, request.column, " (top window)" if top else "")
