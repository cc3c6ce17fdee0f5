"""The completion that follows a suggestion is computed ahead, so that after an accept the next
ghost text comes from the type-through cache instead of a model wait (llama.vim does this).

* While a suggestion is shown: as soon as the server has answered, the completion after it is
  computed as if it were accepted (the document with the suggestion inserted, the cursor at its
  end), at low priority: the next keystroke's request stops it, unless the cache answers that
  request (the user types what the suggestion shows). After a Tab, the request at the new cursor
  finds the answer in the cache, or joins the computation still running.
* When the editor reports the accept, the same is done for the document as it then is (a partial
  accept, an edit the suggestion did not foresee, a stopped look-ahead); nothing when the answer
  is cached or being computed already.

Editors report accepts two ways, with the same params ``{uri, position, text, version?}``:
* ``slm.accepted`` (workspace/executeCommand): the ``command`` of every inline completion item
  the server returns; VS Code (and any client that runs an item's command) runs it on accept.
  Its arguments are set here: the cursor after the inserted text, and the version after the
  edit (one more than the version the request saw);
* ``slm/accepted`` (a notification): the Neovim plugin sends it from its accept keys, whole or
  partial.

The accept and its ``didChange`` come in either order. The prefetch starts once the document has
the accepted text before ``position`` (and is at least ``version``): at once when it already
has, else after the ``didChange`` that brings it; an accept whose edit does not arrive within
``ACCEPT_WAIT_S`` is forgotten. The request is then built like a real one (with its repo context)
and handed to ``engine.prefetch``; a document that changed meanwhile gets none.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams

from .. import methods
from ..engine.service import split_at_cursor
from ..server import SlmLanguageServer  # at run time: pygls reads command handlers' type hints
from .documents import column_index, completion_request, content

if TYPE_CHECKING:
    from .documents import Answer, OpenDocument

log = logging.getLogger(__name__)

ACCEPT_WAIT_S = 2.0
"""How long an accept waits for the edit that inserts its text (the ``didChange``)."""


@dataclass(frozen=True)
class Accept:
    uri: str
    position: types.Position
    """The cursor after the accepted text, in the negotiated position encoding."""
    text: str
    version: int | None
    deadline: float


def position_after(start: types.Position, text: str, encoding: str) -> types.Position:
    """Where the cursor is once ``text`` is inserted at ``start`` (in ``encoding``'s units)."""
    lines = text.split("\n")
    last = lines[-1]
    if encoding == types.PositionEncodingKind.Utf32:
        units = len(last)
    elif encoding == types.PositionEncodingKind.Utf8:
        units = len(last.encode("utf-8", "surrogatepass"))
    else:
        units = len(last.encode("utf-16-le", "surrogatepass")) // 2
    if len(lines) == 1:
        return types.Position(start.line, start.character + units)
    return types.Position(start.line + len(lines) - 1, units)


def accepted_command(uri: str, version: int, start: types.Position, text: str, encoding: str) -> types.Command:
    """The ``command`` of an item that inserts ``text`` at ``start`` in ``uri`` at ``version``."""
    end = position_after(start, text, encoding)
    return types.Command(title="slm-lsp: accepted", command=methods.COMMAND_ACCEPTED, arguments=[{
        "uri": uri, "version": version + 1, "position": {"line": end.line, "character": end.character},
        "text": text}])


def _plain(value: Any) -> Any:
    """JSON values from what pygls hands a handler (a notification's objects are namedtuples)."""
    if hasattr(value, "_asdict"):
        return {k: _plain(v) for k, v in value._asdict().items()}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def parse(params: Any) -> Accept:
    """An accept from its JSON params; raises ``ValueError`` saying what is wrong."""
    params = _plain(params)
    if not isinstance(params, dict):
        raise ValueError(f"expected an object {{uri, position, text, version?}}, got {params!r}")
    uri, text, version, position = params.get("uri"), params.get("text"), params.get("version"), params.get("position")
    line, character = (position.get("line"), position.get("character")) if isinstance(position, dict) else (None, None)
    if not isinstance(uri, str) or not isinstance(text, str):
        raise ValueError("uri and text must be strings")
    if not (isinstance(line, int) and isinstance(character, int) and not isinstance(line, bool)
            and not isinstance(character, bool) and 0 <= line < 1 << 31 and 0 <= character < 1 << 31):
        raise ValueError(f"position must be {{line, character}}, two non-negative integers, got {position!r}")
    if version is not None and (not isinstance(version, int) or isinstance(version, bool)):
        raise ValueError(f"version must be an integer, got {version!r}")
    return Accept(uri, types.Position(line, character), text, version, time.monotonic() + ACCEPT_WAIT_S)


def applied(doc: "OpenDocument", accept: Accept) -> bool:
    """Whether ``doc`` has the accepted text just before the accept's position (and its version)."""
    if accept.version is not None and doc.version < accept.version:
        return False
    lines = doc.lines
    pos = accept.position
    if pos.line >= len(lines):
        return False
    line = content(lines[pos.line])
    before = line[:column_index(line, pos.character, doc.encoding)]
    want = accept.text.replace("\r\n", "\n")
    first = max(0, pos.line - want.count("\n") - 1)
    # The lines the text spans, with the editor's line ends made "\n" (it may insert "\r\n").
    tail = ("".join(lines[first:pos.line]) + before).replace("\r\n", "\n").replace("\r", "\n")
    return tail.endswith(want)


class AcceptTracker:
    """The accepts waiting for their edit, one per document (owned by the event loop)."""

    def __init__(self, ls: SlmLanguageServer) -> None:
        self._ls = ls
        self._waiting: dict[str, Accept] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def accepted(self, accept: Accept) -> None:
        if not self._ls.config.completion.prefetch_on_accept:
            return
        self._waiting[accept.uri] = accept  # a newer accept replaces an older one
        self.changed(accept.uri)

    def changed(self, uri: str) -> None:
        """(after each didChange, and on an accept) Start the prefetch once the edit is in."""
        accept = self._waiting.get(uri)
        if accept is None:
            return
        doc = self._ls.documents.get(uri)
        if doc is None or time.monotonic() > accept.deadline:
            del self._waiting[uri]
            log.debug("accept in %s: its edit did not arrive; no prefetch", uri)
            return
        if not applied(doc, accept):
            return
        del self._waiting[uri]
        task = asyncio.get_running_loop().create_task(self._prefetch(accept, doc.version))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def speculate(self, answer: "Answer") -> None:
        """Compute the completion after ``answer`` as if it were accepted (while it is shown)."""
        text = answer.result.text
        if not text or not self._ls.config.completion.prefetch_on_accept:
            return
        req = answer.request
        prefix, suffix = split_at_cursor(req.text, req.line, req.column)
        lines = text.split("\n")
        column = req.column + len(text) if len(lines) == 1 else len(lines[-1])
        self._ls.engine.prefetch(dataclasses.replace(req, text=prefix + text + suffix, line=req.line + len(lines) - 1,
                                                     column=column))

    def forget(self, uri: str) -> None:
        self._waiting.pop(uri, None)

    async def _prefetch(self, accept: Accept, version: int) -> None:
        ls = self._ls
        try:
            prepared = completion_request(ls, accept.uri, accept.position)
        except JsonRpcInvalidParams as exc:
            log.debug("no prefetch after the accept: %s", exc)
            return
        if prepared is None:
            return
        request, _ = prepared
        await ls.context.attach(ls, request)
        doc = ls.documents.get(accept.uri)
        if doc is None or doc.version != version:
            log.debug("%s changed while the prefetch was prepared: dropped", accept.uri)
            return
        if ls.engine.prefetch(request) is not None:
            log.debug("prefetch at %s:%d:%d after an accept", accept.uri, accept.position.line,
                      accept.position.character)


def register(server: SlmLanguageServer) -> None:
    server.accepts = AcceptTracker(server)

    @server.command(methods.COMMAND_ACCEPTED)
    def accepted_by_command(ls: SlmLanguageServer, *args: Any) -> None:
        try:
            accept = parse(args[0] if args else None)
        except ValueError as exc:
            raise JsonRpcInvalidParams(f"{methods.COMMAND_ACCEPTED}: {exc}") from exc
        ls.accepts.accepted(accept)

    @server.feature(methods.ACCEPTED_NOTIFICATION)
    def accepted_by_notification(ls: SlmLanguageServer, params: Any) -> None:
        try:
            accept = parse(params)
        except ValueError as exc:  # a notification has no answer: the log says why
            log.warning("%s ignored: %s", methods.ACCEPTED_NOTIFICATION, exc)
            return
        ls.accepts.accepted(accept)
