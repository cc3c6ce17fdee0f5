"""Next-edit suggestions over LSP: the ``slm/nextEdit`` request (``methods.NEXT_EDIT_REQUEST``), and
the item with a ``range`` that ``textDocument/inlineCompletion`` adds when the next edit is near
the cursor (``features/inline_completion.py``).

The open documents' edits feed ``context.edit_history`` (``features/documents.py`` calls
``opened``/``changed``/``closed``); a request gathers the recent edits and the repo context and
runs ``engine.next_edit.run_next_edit`` on the engine's worker, preemptible: a completion
request stops it between two tokens, as do a newer suggestion for the document and
``$/cancelRequest``. The answer is dropped when the document changed meanwhile.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lsprotocol import types
from pygls import uris
from pygls.exceptions import JsonRpcInvalidParams

from .. import methods
from ..context.edit_history import EditHistory
from ..engine.next_edit import NextEditRequest, NextEditResult, Replacement, run_next_edit
from ..engine.requests import CompletionRequest
from ..server import SlmLanguageServer  # at run time: pygls reads handlers' type hints
from .accept import _plain
from .code_action import _units
from .documents import content, document_at

if TYPE_CHECKING:
    from .documents import OpenDocument

log = logging.getLogger(__name__)

NEAR_LINES = 3
"""An inline completion carries the next edit when it starts this close to the cursor's line."""
KV_KEY = "\x00next_edit"
"""The engine's KV state for next-edit prompts (kept apart from the documents' completion prompts)."""


@dataclass
class Suggestion:
    range: types.Range
    new_text: str
    cause: str
    result: NextEditResult

    def to_json(self) -> dict[str, Any]:
        r = self.range
        return {"range": {"start": {"line": r.start.line, "character": r.start.character},
                          "end": {"line": r.end.line, "character": r.end.character}},
                "newText": self.new_text, "cause": self.cause}


def lsp_range(doc: "OpenDocument", edit: Replacement) -> types.Range:
    """The edit's range in the client's position encoding."""
    lines = doc.lines

    def position(line: int, column: int) -> types.Position:
        if line >= len(lines):
            return types.Position(len(lines) - 1, _units(content(lines[-1]), doc.encoding))
        return types.Position(line, _units(content(lines[line])[:column], doc.encoding))

    return types.Range(position(edit.start_line, edit.start_column), position(edit.end_line, edit.end_column))


def display_path(ls: SlmLanguageServer, doc: "OpenDocument") -> str:
    """The document's path inside its workspace folder (its base name outside any)."""
    path = doc.path or doc.uri.rsplit("/", 1)[-1]
    try:
        folders = [f.uri for f in (ls.workspace.folders or {}).values()] or [ls.workspace.root_uri]
    except Exception:  # before initialize: no workspace yet
        folders = []
    for folder in folders:
        root = uris.to_fs_path(folder) if folder else None
        if root and doc.path and os.path.commonpath([root, doc.path]) == root:
            return os.path.relpath(doc.path, root).replace(os.sep, "/")
    return os.path.basename(path)


class NextEdits:
    """The server's next-edit state: the edit history and the suggestion running per document."""

    def __init__(self, ls: SlmLanguageServer) -> None:
        self._ls = ls
        self.history = EditHistory()
        self._running: dict[str, threading.Event] = {}

    # -- fed by features/documents.py (event loop) ------------------------------------------
    def opened(self, doc: "OpenDocument") -> None:
        if not doc.too_large:
            self.history.open(doc.uri, display_path(self._ls, doc), doc.snapshot(), doc.path or doc.uri)

    def changed(self, doc: "OpenDocument") -> None:
        stop = self._running.get(doc.uri)
        if stop is not None:
            stop.set()  # its answer would be for the text before this edit
        if doc.too_large:
            self.history.close(doc.uri)
        elif not self.history.following(doc.uri):
            self.opened(doc)  # back under the size limit: followed again from here
        else:
            self.history.change(doc.uri, doc.snapshot())

    def closed(self, doc: "OpenDocument") -> None:
        self.history.close(doc.uri)
        stop = self._running.pop(doc.uri, None)
        if stop is not None:
            stop.set()

    # -- suggestions --------------------------------------------------------------------------
    def cause(self, uri: str) -> str:
        """What the suggestion follows, for the editor to show."""
        last = self.history.last()
        if last is None:
            return "no recent edit"
        if last.key == uri:
            return f"follows your edit at line {last.start + 1}"
        return f"follows your edit in {last.path}"

    async def suggest(self, uri: str, position: types.Position) -> Suggestion | None:
        """The next edit around ``position`` in ``uri``; None when none is likely (or the document
        changed before the answer came)."""
        ls = self._ls
        cfg = ls.config.next_edit
        found = document_at(ls, uri, position)
        if found is None or not cfg.enabled or ls.engine.status().state not in ("ready", "generating"):
            return None
        doc, column = found
        source = doc.source
        version = doc.version
        context = await self._context(doc, position.line)
        if ls.documents.get(uri) is not doc or doc.version != version:
            return None
        request = NextEditRequest(uri, source, position.line, column, display_path(ls, doc),
                                  self.history.diffs(cfg.max_edits), context, doc.language_id, cfg.region_lines,
                                  cfg.max_tokens, cfg.time_budget_ms)
        old = self._running.get(uri)
        if old is not None:
            old.set()  # a newer suggestion for the document: the older one is stale
        stop = self._running[uri] = threading.Event()
        future = ls.engine.run_on_model(functools.partial(_run, request, stop), key=KV_KEY, preemptible=True)
        try:
            result: NextEditResult = await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            stop.set()  # $/cancelRequest: the worker stops at the next token
            raise
        except Exception as exc:  # no model, a failed decode: no suggestion, and the log says why
            log.warning("next edit in %s failed: %s", uri, exc)
            return None
        finally:
            if self._running.get(uri) is stop:
                del self._running[uri]
        log.info("next edit %s:%d (%s): %s, %d prompt tokens, %d tokens in %.0f ms (%s)", uri.rsplit("/", 1)[-1],
                 position.line, result.mode, result.reason, result.n_prompt, result.n_generated, result.ms,
                 result.stop_reason)
        if result.edit is None or stop.is_set() or ls.documents.get(uri) is not doc or doc.version != version:
            return None
        return Suggestion(lsp_range(doc, result.edit), result.edit.new_text, self.cause(uri), result)

    async def _context(self, doc: "OpenDocument", line: int) -> str:
        """The repo context at ``line`` (definitions the region uses), as text; "" when off."""
        ls = self._ls
        if not ls.config.context.enabled:
            return ""
        request = CompletionRequest(document_key=doc.uri, text=doc.source, line=line, column=0,
                                    language_id=doc.language_id, path=doc.path or "")
        await ls.context.attach(ls, request)
        return "\n\n".join(f"# {piece.path}\n{piece.text.strip()}" for piece in request.context if piece.text.strip())

    def has_recent_edit(self, uri: str) -> bool:
        """Whether the newest edit is in ``uri`` (inline completions offer next edits only then)."""
        last = self.history.last()
        return last is not None and last.key == uri


def _run(request: NextEditRequest, stop: threading.Event, runner: Any, stopped: Any) -> NextEditResult:
    return run_next_edit(runner, request, lambda: stop.is_set() or stopped())


def near_cursor(suggestion: Suggestion, position: types.Position) -> bool:
    """Whether the suggested edit starts within ``NEAR_LINES`` of the cursor's line."""
    return abs(suggestion.range.start.line - position.line) <= NEAR_LINES


def register(server: SlmLanguageServer) -> None:
    server.next_edits = NextEdits(server)

    @server.feature(methods.NEXT_EDIT_REQUEST)
    async def next_edit(ls: SlmLanguageServer, params: Any) -> dict[str, Any] | None:
        uri, position = parse(params)
        suggestion = await ls.next_edits.suggest(uri, position)
        return suggestion.to_json() if suggestion is not None else None


def parse(params: Any, method: str = methods.NEXT_EDIT_REQUEST) -> tuple[str, types.Position]:
    """``(uri, position)`` of ``{textDocument: {uri}, position}`` params (``slm/nextEdit``'s, and
    ``slm/cursor``'s); InvalidParams saying what is wrong."""
    params = _plain(params)
    try:
        uri = params["textDocument"]["uri"]
        line, character = params["position"]["line"], params["position"]["character"]
    except (KeyError, TypeError) as exc:
        raise JsonRpcInvalidParams(f"{method} takes {{textDocument: {{uri}}, position: "
                                   f"{{line, character}}}}, got {params!r}") from exc
    if not isinstance(uri, str) or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 1 << 31
                                           for v in (line, character)):
        raise JsonRpcInvalidParams(f"{method}: uri must be a string and line, character "
                                   f"non-negative integers, got {params!r}")
    return uri, types.Position(line, character)
