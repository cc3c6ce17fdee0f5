"""The language server: holds the config and the engine, registers the features. Nothing else."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, BinaryIO

from lsprotocol import types
from pygls.exceptions import JsonRpcException, JsonRpcInvalidRequest, JsonRpcParseError
from pygls.io_ import StdoutWriter
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol

from . import __version__, methods
from .config import Config, merge_config
from .engine.service import CompletionEngine
from .models import cache_dir

if TYPE_CHECKING:
    from .features.accept import AcceptTracker
    from .features.context import WorkspaceContext
    from .features.documents import DocumentStore
    from .features.next_edit import NextEdits

log = logging.getLogger(__name__)


ANSWER_LENGTHS_FILE = "answer-lengths.json"
"""In the cache directory: the last answers each model and adapter ended itself or ran on
(``completion.answer_length: auto``), so that a restart does not sample them again."""
MAX_MESSAGE_BYTES = 128 << 20
"""The largest message body the server reads. VS Code does not sync files over 50 MB to language
servers; a longer ``Content-Length`` is taken for a corrupt header, not allocated."""

MAX_HEADER_BYTES = 8 << 10
"""A header block longer than this (LSP sends one or two short lines) is garbage."""

READ_CHUNK_BYTES = 64 << 10
"""Input is read in chunks of at most this size, so memory grows only with the bytes that came."""

_CONTENT_LENGTH = re.compile(rb"content-length:", re.IGNORECASE)
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_HEADER_LINE = re.compile(rb"[A-Za-z][A-Za-z0-9-]*:[^\r\n]*")


class FrameReader:
    """Splits the client's byte stream into LSP message bodies, trusting no header.

    pygls 2.1 reads ``Content-Length`` bytes at once: a length of 2**40 allocates a terabyte
    (MemoryError) and 99999999999999999999 overflows; both end the server. A negative,
    non-numeric or missing length made it swallow the next message as well. Here a header with
    a bad length is rejected with a logged error, and bytes that are not a frame are skipped up
    to the next ``Content-Length`` header, so the next good message is read and answered.
    """

    def __init__(self, read_chunk: Callable[[], Awaitable[bytes]]) -> None:
        self._read_chunk = read_chunk
        self._buffer = bytearray()

    async def next_body(self) -> bytes | None:
        """The next message body; None at the end of the input."""
        while True:
            start = _CONTENT_LENGTH.search(self._buffer)
            if start is None:
                # Keep a tail that may be the start of a split "Content-Length:".
                self._skip(max(0, len(self._buffer) - len(b"content-length:") + 1))
                if not await self._fill():
                    return None
                continue
            self._skip(start.start())
            end = _HEADER_END.search(self._buffer, 0, MAX_HEADER_BYTES + 4)
            if end is None:
                if len(self._buffer) >= MAX_HEADER_BYTES + 4:
                    log.error("rejected a header block longer than %d bytes", MAX_HEADER_BYTES)
                    self._skip(len(b"content-length:"))
                elif not await self._fill():
                    return None
                continue
            header = bytes(self._buffer[:end.start()])
            del self._buffer[:end.end()]
            length = _content_length(header)
            if length is None:
                continue  # the body, if any, is skipped as garbage up to the next header
            while len(self._buffer) < length:
                if not await self._fill():
                    log.error("the input ended inside a %d-byte message", length)
                    return None
            body = bytes(self._buffer[:length])
            del self._buffer[:length]
            return body

    async def _fill(self) -> bool:
        chunk = await self._read_chunk()
        self._buffer += chunk
        return bool(chunk)

    def _skip(self, n: int) -> None:
        skipped = bytes(self._buffer[:n])
        del self._buffer[:n]
        # Headers other than Content-Length (Content-Type) may come first; anything else is garbage.
        if any(line.strip() and not _HEADER_LINE.fullmatch(line.strip()) for line in skipped.split(b"\n")):
            log.error("skipped %d bytes that are not an LSP message: %.80r", n, skipped)


def _content_length(header: bytes) -> int | None:
    """The body length the header block (which starts with Content-Length) announces; None, with a
    logged error, when it is not a number of bytes the server accepts."""
    value = header.split(b"\n", 1)[0][len(b"content-length:"):].strip()
    if not value.isdigit() or len(value) > 12 or int(value) > MAX_MESSAGE_BYTES:
        log.error("rejected a message with Content-Length %.40r (expected 0 to %d bytes)", value, MAX_MESSAGE_BYTES)
        return None
    return int(value)


def _json_int(text: str) -> int | float:
    # An integer over Python's 4300-digit limit becomes a float (inf), which settings validation
    # rejects, rather than failing the whole message so that its request goes unanswered.
    try:
        return int(text)
    except ValueError:
        return float(text)


def _request_id(data: Any) -> int | str | None:
    """The id to answer ``data`` with, when it is a request; None otherwise."""
    if isinstance(data, dict) and "method" in data and isinstance(data.get("id"), int | str) \
            and not isinstance(data["id"], bool):
        return data["id"]
    return None


class SlmProtocol(LanguageServerProtocol):
    """Decodes each frame body by itself and answers every request it can identify.

    pygls 2.1 decodes with ``structure_message`` as the JSON ``object_hook``, so every nested
    object with a ``"jsonrpc"`` key (say, in executeCommand arguments) was taken for a message;
    decoding then failed and the request was dropped unanswered. Here only the top-level object
    is a message. A request whose params do not parse gets an error response: pygls raises while
    decoding it and drops it (e.g. a VS Code inline trigger kind 0 instead of LSP's 1 or 2).
    """

    def handle_frame(self, body: bytes) -> None:
        """Decode one message body and dispatch it; never raises."""
        try:
            data = json.loads(body, parse_int=_json_int)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, nesting
            log.error("rejected a message that is not JSON (%d bytes): %s", len(body), exc)
            self._send_error(None, JsonRpcParseError.CODE, f"the message is not JSON: {exc}")
            return
        if isinstance(data, list):
            log.error("rejected a batch of %d messages: LSP sends one message per frame", len(data))
            ids: list[int | str | None] = [msg_id for msg_id in map(_request_id, data) if msg_id is not None]
            for msg_id in ids or [None]:
                self._send_error(msg_id, JsonRpcInvalidRequest.CODE, "batches are not supported")
            return
        if not isinstance(data, dict) or data.get("jsonrpc") != self.VERSION:
            log.error("rejected a message that is not a JSON-RPC 2.0 object: %.200r", data)
            self._send_error(_request_id(data), JsonRpcInvalidRequest.CODE, "not a JSON-RPC 2.0 message")
            return
        if self._shutdown and data.get("method") != types.EXIT:
            # LSP: requests after shutdown are answered with InvalidRequest (pygls drops them).
            if (request_id := _request_id(data)) is not None:
                self._send_error(request_id, JsonRpcInvalidRequest.CODE, "the server is shutting down")
            return
        try:
            message = self.structure_message(data)
        except JsonRpcException:
            return  # logged, and a request was answered
        try:
            self.handle_message(message)
        except Exception:
            log.exception("could not handle %.200r", data)

    def _send_error(self, msg_id: int | str | None, code: int, message: str) -> None:
        self._send_response(msg_id, error=types.ResponseError(code=code, message=message))  # type: ignore[arg-type]

    def structure_message(self, data: dict[str, Any]) -> Any:
        try:
            return super().structure_message(data)
        except JsonRpcException as exc:
            if "id" in data and "method" in data:
                cause = f": {exc.__cause__}" if exc.__cause__ is not None else ""
                error = types.ResponseError(code=exc.code, message=f"invalid {data['method']} message{cause}")
                self._send_response(data["id"], error=error)
            raise


class SlmLanguageServer(LanguageServer):
    context: "WorkspaceContext"
    """The workspace index and repo context (set by ``features.context``)."""
    documents: "DocumentStore"
    """The open documents (set by ``features.documents``)."""
    accepts: "AcceptTracker"
    """Accepted suggestions waiting for their edit (set by ``features.accept``)."""
    next_edits: "NextEdits"
    """The edit history and the next-edit suggestions (set by ``features.next_edit``)."""

    def __init__(self, cli_settings: dict[str, Any] | None = None) -> None:
        super().__init__("slm-lsp", __version__, protocol_cls=SlmProtocol,
                         text_document_sync_kind=types.TextDocumentSyncKind.Incremental)
        self.cli_settings = cli_settings or {}
        self.init_settings: dict[str, Any] = {}
        self.config: Config = merge_config(self.cli_settings).config
        self.engine = CompletionEngine(self.config, self._on_engine_state,
                                       answer_lengths=cache_dir() / ANSWER_LENGTHS_FILE)
        self.model_error = ""
        self.last_latency_ms: float | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def start_io(self, stdin: BinaryIO | None = None, stdout: BinaryIO | None = None) -> None:
        """Serve over stdio with ``FrameReader`` in place of pygls's reader (same lifecycle)."""
        self._stop_event = threading.Event()
        source = stdin or sys.stdin.buffer
        read = getattr(source, "read1", source.read)  # read1: what has arrived, without waiting for more
        self.protocol.set_writer(StdoutWriter(stdout or sys.stdout.buffer))

        async def read_chunk() -> bytes:
            return await asyncio.get_running_loop().run_in_executor(self.thread_pool, read, READ_CHUNK_BYTES)

        try:
            asyncio.run(self._serve(FrameReader(read_chunk)))
        except BrokenPipeError:
            log.error("the connection to the client is lost; shutting down")
        except (KeyboardInterrupt, SystemExit):
            pass
        finally:
            self.shutdown()

    def start_tcp(self, host: str, port: int) -> None:
        """Serve one TCP client at a time with ``FrameReader`` (pygls's start_tcp, another reader)."""
        self._stop_event = threading.Event()

        async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.protocol.set_writer(writer)  # type: ignore[arg-type]
            await self._serve(FrameReader(lambda: reader.read(READ_CHUNK_BYTES)))
            self.shutdown()

        async def serve() -> None:
            self._server = await asyncio.start_server(connection, host, port)
            log.info("serving on %s:%s", host, port)
            async with self._server:
                await self._server.serve_forever()

        try:
            asyncio.run(serve())
        except asyncio.CancelledError:
            log.debug("the TCP server was cancelled")

    async def _serve(self, frames: FrameReader) -> None:
        assert self._stop_event is not None
        while not self._stop_event.is_set():
            body = await frames.next_body()
            if body is None:
                break
            self.protocol.handle_frame(body)  # type: ignore[attr-defined]

    def notify_user(self, message: str, kind: types.MessageType = types.MessageType.Warning) -> None:
        """Tell the user (window/showMessage) and the log."""
        log.log(logging.ERROR if kind == types.MessageType.Error else logging.WARNING, "%s", message)
        self.window_show_message(types.ShowMessageParams(type=kind, message=f"slm-lsp: {message}"))

    def send_status(self, state: str, detail: str = "") -> None:
        engine = self.engine.status()
        # backend: who answered the last completion (local or remote), sent again when it changes.
        payload = {"state": state, "detail": detail, "latencyMs": self.last_latency_ms, "route": engine.route,
                   "backend": engine.backend, "backendReason": engine.backend_reason}
        self.protocol.notify(methods.STATUS_NOTIFICATION, payload)

    def _on_engine_state(self, state: str, detail: str) -> None:
        # Called from the engine's worker thread: hop onto the event loop to write to the client.
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.send_status, state, detail)


def create_server(cli_settings: dict[str, Any] | None = None) -> SlmLanguageServer:
    from .features import FEATURES

    server = SlmLanguageServer(cli_settings)
    for register in FEATURES:
        register(server)
    return server
