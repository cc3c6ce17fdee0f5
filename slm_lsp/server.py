"""The language server: holds the config and the engine, registers the features. Nothing else."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol

from . import __version__, methods
from .config import Config, merge_config
from .engine.service import CompletionEngine

if TYPE_CHECKING:
    from .features.context import WorkspaceContext
    from .features.documents import DocumentStore

log = logging.getLogger(__name__)


class SlmProtocol(LanguageServerProtocol):
    """Answers a request whose params do not parse with an error response.

    pygls 2.1 raises while decoding such a message and drops it, so the client would wait for an
    answer that never comes (e.g. a VS Code inline trigger kind 0 instead of LSP's 1 or 2).
    """

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

    def __init__(self, cli_settings: dict[str, Any] | None = None) -> None:
        super().__init__("slm-lsp", __version__, protocol_cls=SlmProtocol,
                         text_document_sync_kind=types.TextDocumentSyncKind.Incremental)
        self.cli_settings = cli_settings or {}
        self.init_settings: dict[str, Any] = {}
        self.config: Config = merge_config(self.cli_settings).config
        self.engine = CompletionEngine(self.config, self._on_engine_state)
        self.model_error = ""
        self.last_latency_ms: float | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def notify_user(self, message: str, kind: types.MessageType = types.MessageType.Warning) -> None:
        """Tell the user (window/showMessage) and the log."""
        log.log(logging.ERROR if kind == types.MessageType.Error else logging.WARNING, "%s", message)
        self.window_show_message(types.ShowMessageParams(type=kind, message=f"slm-lsp: {message}"))

    def send_status(self, state: str, detail: str = "") -> None:
        payload = {"state": state, "detail": detail, "latencyMs": self.last_latency_ms}
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
