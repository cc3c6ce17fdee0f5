"""Open documents: textDocument/didOpen, didChange and didClose, and from an LSP (uri, position)
to an engine request.

The server keeps its own copy of each open buffer instead of pygls's: pygls rebuilds the whole
document (every line split, then joined again) on each incremental change, on the event loop,
and hands a handler a document *read from disk* for any URI nobody opened: a ``didChange`` naming
a FIFO or ``/dev/zero`` blocked the server for good. Here a buffer is a list of lines: an edit
replaces the few lines it touches, and the text is joined only when something reads it. A
change to a document that was never opened is ignored; no path is read because a message
named it.

``slm/cursor`` (the cursor came to rest: a focused document, or a stop on another line) is read
here too and handed to the warmups (``features/warmup.py``).

Text enters sanitized: a lone surrogate (which no UTF-8 encoder accepts, so the tokenizer and
every prompt that carried it would fail) becomes U+FFFD, one UTF-16 code unit for one, so the
client's positions after it still point where the client means.

Positions arrive in the negotiated encoding (UTF-16 unless the client asked for another); the
engine works in Python string indices. A column past the end of its line is clamped (the LSP
spec says so); a line past the end of the document or an unknown document is an InvalidParams
error. Binary documents and documents over ``MAX_DOCUMENT_CHARS`` get no completion.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lsprotocol import types
from pygls import uris
from pygls.exceptions import JsonRpcInvalidParams

from .. import methods
from ..engine.service import CompletionRequest, CompletionResult

if TYPE_CHECKING:
    from ..server import SlmLanguageServer

log = logging.getLogger(__name__)

MAX_DOCUMENT_CHARS = 4 * 1024 * 1024
"""A document larger than this (a log, a minified bundle, generated data: some 100,000 lines of
code) gets no completion and is not indexed; its edits still keep the copy in step, so it gets
completions again once it is shorter."""

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_OTHER_BREAKS = re.compile("[\v\f\x1c\x1d\x1e\x85\u2028\u2029]")
"""What ``str.splitlines`` splits on besides the LSP's line ends (\\n, \\r\\n, \\r)."""


def sanitize(text: str) -> str:
    """``text`` with each lone surrogate replaced by U+FFFD. Both are one UTF-16 code unit (and a
    single code point), so every UTF-16 and code point position in the text stays the same; only
    UTF-8 offsets after it move (3 bytes, as the surrogate's own escape would have taken)."""
    if text.isascii():
        return text
    return _LONE_SURROGATE.sub("\ufffd", text)


def split_lines(text: str) -> list[str]:
    """LSP lines, each with its line end; the last one has none (it may be empty), so a
    document always has at least one line and ``len`` counts what a client can address."""
    lines = text.splitlines(True)
    if _OTHER_BREAKS.search(text) is not None:  # rare: join the pieces splitlines cut there
        merged: list[str] = []
        carry = ""
        for piece in lines:
            if piece.endswith(("\n", "\r")):
                merged.append(carry + piece)
                carry = ""
            else:
                carry += piece
        lines = merged + ([carry] if carry else [])
    if not lines or lines[-1].endswith(("\n", "\r")):
        lines.append("")
    return lines


def content(line: str) -> str:
    """A line without its line end."""
    return line.rstrip("\r\n")


def column_index(line: str, units: int, encoding: str) -> int:
    """The string index of client column ``units`` in ``line`` (without its line end), clamped
    to the line; a column inside a character counts as its start."""
    if units <= 0:
        return 0
    if encoding == types.PositionEncodingKind.Utf32 or line.isascii():
        return min(units, len(line))
    if encoding == types.PositionEncodingKind.Utf8:
        return len(line.encode("utf-8", "surrogatepass")[:units].decode("utf-8", "ignore"))
    return len(line.encode("utf-16-le", "surrogatepass")[:2 * units].decode("utf-16-le", "ignore"))


class OpenDocument:
    """One open buffer, owned by the event loop. Other threads get ``snapshot()``s."""

    def __init__(self, uri: str, text: str, version: int, language_id: str, encoding: str) -> None:
        self.uri = uri
        self.path = uris.to_fs_path(uri) if uris.uri_scheme(uri) == "file" else None
        """The file system path, for ``file:`` URIs only (never read: a key into the index)."""
        self.version = version
        self.language_id = language_id
        self.encoding = encoding
        self._lines = split_lines(sanitize(text))
        self._shared = False
        """A snapshot holds ``_lines``: the next edit copies the list first."""
        self._source: str | None = None
        self._chars = len(text)

    @property
    def lines(self) -> Sequence[str]:
        return self._lines

    @property
    def source(self) -> str:
        if self._source is None:
            self._source = "".join(self._lines)
        return self._source

    @property
    def too_large(self) -> bool:
        return self._chars > MAX_DOCUMENT_CHARS

    def snapshot(self) -> Sequence[str]:
        """The lines as they are now, for another thread: later edits leave them alone."""
        self._shared = True
        return self._lines

    def apply(self, change: types.TextDocumentContentChangeEvent) -> int | None:
        """Apply one change; the line where it starts (None for a whole-document change)."""
        text = sanitize(change.text)
        self._source = None
        if not isinstance(change, types.TextDocumentContentChangePartial):
            self._lines = split_lines(text)
            self._shared = False
            self._chars = len(text)
            return None
        if self._shared:
            self._lines = list(self._lines)
            self._shared = False
        lines = self._lines
        start, end = change.range.start, change.range.end
        if (end.line, end.character) < (start.line, start.character):
            start, end = end, start  # an inverted range: the text between the two positions
        sl, sc = self._clamp(start)
        el, ec = self._clamp(end)
        # One untouched line on each side joins in, so that a "\r" left before a "\n" becomes
        # one line end and the lines stay split as a fresh split would split them.
        lo, hi = max(0, sl - 1), min(len(lines), el + 2)
        window = "".join(lines[lo:sl]) + lines[sl][:sc] + text + lines[el][ec:] + "".join(lines[el + 1:hi])
        pieces = split_lines(window)
        if hi < len(lines):
            pieces.pop()  # the window ended with a line end: no last line of the document here
        removed = sum(map(len, lines[lo:hi]))
        lines[lo:hi] = pieces
        self._chars += len(window) - removed
        return sl

    def _clamp(self, position: types.Position) -> tuple[int, int]:
        """(line, string index) of a client position, clamped to the document."""
        last = len(self._lines) - 1
        if position.line > last:
            return last, len(self._lines[last])
        line = self._lines[position.line]
        return position.line, column_index(content(line), position.character, self.encoding)


class DocumentStore:
    """The open documents by URI (as the client spelled it)."""

    def __init__(self) -> None:
        self._docs: dict[str, OpenDocument] = {}

    def get(self, uri: str) -> OpenDocument | None:
        return self._docs.get(uri)

    def all(self) -> list[OpenDocument]:
        return list(self._docs.values())

    def open(self, item: types.TextDocumentItem, encoding: str) -> OpenDocument:
        doc = OpenDocument(item.uri, item.text, item.version, item.language_id or "", encoding)
        self._docs[item.uri] = doc
        return doc

    def close(self, uri: str) -> OpenDocument | None:
        return self._docs.pop(uri, None)


@dataclass
class Answer:
    request: CompletionRequest
    result: CompletionResult
    line_prefix: str
    """The cursor's line up to the cursor when the request was made (the document may have
    changed or closed while the engine worked)."""
    version: int = 0
    """The document's version when the request was made."""
    encoding: str = types.PositionEncodingKind.Utf16
    """The position encoding of the document's client."""


def document_at(ls: "SlmLanguageServer", uri: str, position: types.Position) -> tuple[OpenDocument, int] | None:
    """The open document and the cursor's column (a Python index into its line) at ``position``;
    None for a document the model is not asked about (binary, or over ``MAX_DOCUMENT_CHARS``).
    An unknown document or a position past the end is the client's error."""
    doc = ls.documents.get(uri)
    if doc is None:
        raise JsonRpcInvalidParams(f"unknown document {uri}: send textDocument/didOpen first")
    if doc.too_large:
        log.debug("%s is over %d characters: not sent to the model", uri, MAX_DOCUMENT_CHARS)
        return None
    if "\x00" in doc.source:
        return None
    lines = doc.lines
    if position.line >= len(lines):
        raise JsonRpcInvalidParams(
            f"position {position.line}:{position.character} is past the end of {uri} ({len(lines)} lines)")
    return doc, column_index(content(lines[position.line]), position.character, doc.encoding)


def completion_request(ls: "SlmLanguageServer", uri: str, position: types.Position
                       ) -> tuple[CompletionRequest, str] | None:
    """The engine request for ``position`` in ``uri`` and the cursor's line up to the cursor;
    None when the document is binary or over ``MAX_DOCUMENT_CHARS``."""
    found = document_at(ls, uri, position)
    if found is None:
        return None
    doc, column = found
    source = doc.source
    stripped = content(doc.lines[position.line])
    request = CompletionRequest(document_key=uri, text=source, line=position.line, column=column,
                                language_id=doc.language_id, path=doc.path or "")
    return request, stripped[:column]


async def run_completion(ls: "SlmLanguageServer", uri: str, position: types.Position) -> Answer | None:
    """Submit to the engine and await it; a cancelled request stops the generation."""
    prepared = completion_request(ls, uri, position)
    if prepared is None:
        return None
    request, line_prefix = prepared
    doc = ls.documents.get(uri)
    assert doc is not None  # completion_request found it
    version, encoding = doc.version, doc.encoding
    await ls.context.attach(ls, request)
    handle = ls.engine.submit(request)
    log.debug("completion for %s:%d:%d submitted to the engine", uri, position.line, position.character)
    try:
        result = await asyncio.wrap_future(handle.future)
    except asyncio.CancelledError:
        handle.cancel()
        raise
    if not result.cached and result.generation is not None:
        ls.last_latency_ms = result.total_ms
    return Answer(request, result, line_prefix, version, encoding)


def _encoding(ls: "SlmLanguageServer") -> str:
    try:
        return str(ls.workspace.position_encoding or types.PositionEncodingKind.Utf16)
    except Exception:  # before initialize: no workspace yet
        return types.PositionEncodingKind.Utf16


def register(server: "SlmLanguageServer") -> None:
    from .next_edit import parse as text_document_position
    from .warmup import Warmups, edit_end  # (they read this module's documents)

    server.documents = DocumentStore()
    ls = server
    warmups = Warmups(server)

    def did_open(params: types.DidOpenTextDocumentParams) -> None:
        doc = ls.documents.open(params.text_document, _encoding(ls))
        ls.context.buffer_opened(doc)
        ls.next_edits.opened(doc)
        warmups.opened(doc)

    def did_change(params: types.DidChangeTextDocumentParams) -> None:
        doc = ls.documents.get(params.text_document.uri)
        if doc is None:
            log.debug("didChange for %s, which is not open: ignored", params.text_document.uri)
            return
        line: int | None = None
        for change in params.content_changes:
            line = doc.apply(change)
        doc.version = params.text_document.version
        ls.context.buffer_changed(doc, line)
        ls.next_edits.changed(doc)  # the recent edits, as diffs
        ls.accepts.changed(doc.uri)  # an accept may wait for this edit
        if line is not None:  # the cursor is where the last edit ended: warm there if it jumped
            warmups.edited(doc, *edit_end(doc, params.content_changes[-1], line))

    def did_close(params: types.DidCloseTextDocumentParams) -> None:
        uri = params.text_document.uri
        doc = ls.documents.close(uri)
        ls.engine.forget(uri)
        ls.accepts.forget(uri)
        warmups.forget(uri)
        ls.context.provider.forget(uri)
        if doc is not None:
            ls.context.buffer_closed(doc)
            ls.next_edits.closed(doc)

    # In place of pygls's own document sync (see the module docstring). Registered as built-in
    # features, so the capabilities still announce open/close and incremental changes.
    features = server.protocol.fm
    features.add_builtin_feature(types.TEXT_DOCUMENT_DID_OPEN, did_open)
    features.add_builtin_feature(types.TEXT_DOCUMENT_DID_CHANGE, did_change)
    features.add_builtin_feature(types.TEXT_DOCUMENT_DID_CLOSE, did_close)

    @server.feature(methods.CURSOR_NOTIFICATION)
    def cursor(ls: "SlmLanguageServer", params: Any) -> None:
        try:
            uri, position = text_document_position(params, methods.CURSOR_NOTIFICATION)
        except JsonRpcInvalidParams as exc:
            log.warning("%s ignored: %s", methods.CURSOR_NOTIFICATION, exc)  # a notification has no reply
            return
        doc = ls.documents.get(uri)
        if doc is None or position.line >= len(doc.lines):
            log.debug("%s at %s:%d: not an open line, ignored", methods.CURSOR_NOTIFICATION, uri, position.line)
            return
        warmups.arrived(uri, position.line, column_index(content(doc.lines[position.line]), position.character,
                                                         doc.encoding))
