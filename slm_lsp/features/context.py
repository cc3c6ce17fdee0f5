"""Repo-aware context in the server: adapts the workspace service (``context/workspace.py``).

* after ``initialized``: the workspace folders are indexed in the background, with work-done
  progress, then watched;
* open buffers (``features/documents.py`` calls in here) feed the index and the ring of recent
  edits, without waiting on either;
* changed ``context`` settings reach the service through ``configure``;
* before a completion, ``attach`` adds the context to the engine request, under a time limit:
  without an answer in time the completion goes ahead without it; and it marks a request whose
  buffer must not leave the machine ``private`` (``context/privacy.py``), failing closed;
* where prompts go is logged at start and whenever the settings change it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

from lsprotocol import types
from pygls import uris

from ..config import ContextConfig
from ..context.privacy import Destination, destination
from ..context.provider import ContextProvider
from ..context.workspace import WorkspaceService
from ..engine.service import CompletionRequest
from ..models import cache_dir

if TYPE_CHECKING:
    from ..server import SlmLanguageServer
    from .documents import OpenDocument

log = logging.getLogger(__name__)

ATTACH_TIMEOUT_S = 0.5
"""The longest a completion waits for its context, unless the sources' own budget is longer."""


class WorkspaceContext:
    """The server's side of the workspace service."""

    def __init__(self, ls: "SlmLanguageServer") -> None:
        self._ls = ls
        self.service = WorkspaceService(cache_dir(), self._progress)
        self._destination: Destination | None = None

    @property
    def provider(self) -> ContextProvider:
        return self.service.provider

    def configure(self, config: ContextConfig) -> None:
        # ls.config is already the new tree here: the remote section comes from it.
        remote = getattr(self._ls.config, "remote", None)
        self.service.configure(config, list(getattr(remote, "deny_files", None) or []))
        self._log_destination()

    def _log_destination(self) -> None:
        """Say where prompts go, once at start and again when a settings change moves them."""
        where = destination(self._ls.config)
        if where == self._destination:
            return
        self._destination = where
        log.info("where prompts go: %s", where.summary)
        for warning in where.warnings:
            log.warning("%s", warning)

    async def start(self, ls: "SlmLanguageServer") -> None:
        """Index every workspace folder in the background, reporting progress."""
        self.configure(ls.config.context)
        folders = ls.workspace.folders
        folder_uris = [f.uri for f in folders.values()] if folders else []
        if not folder_uris and ls.workspace.root_uri:
            folder_uris = [ls.workspace.root_uri]
        roots = [path for u in folder_uris if uris.uri_scheme(u) == "file" and (path := uris.to_fs_path(u))]
        self.service.start(roots)

    def stop(self) -> None:
        self.service.stop()

    # -- open buffers -----------------------------------------------------------------------
    def buffer_opened(self, doc: "OpenDocument") -> None:
        self._changed(doc, None, immediate=True)

    def buffer_changed(self, doc: "OpenDocument", line: int | None) -> None:
        self._changed(doc, line)

    def _changed(self, doc: "OpenDocument", line: int | None, immediate: bool = False) -> None:
        key = doc.path or doc.uri
        if doc.too_large:
            self.service.buffer_closed(key)  # not indexed: the index keeps (or goes back to) the disk
            return
        self.service.buffer_changed(key, doc.snapshot(), line, immediate)

    def buffer_closed(self, doc: "OpenDocument") -> None:
        self.service.buffer_closed(doc.path or doc.uri)

    # -- requests ---------------------------------------------------------------------------
    async def attach(self, ls: "SlmLanguageServer", request: CompletionRequest) -> None:
        """Mark ``request`` private when a remote backend is configured and its buffer must not
        leave the machine; add the repo context to it (none when disabled or when it is late)."""
        loop = asyncio.get_running_loop()
        if destination(ls.config).remote:  # with every prompt local the mark would change nothing
            try:
                reason = await loop.run_in_executor(None, self.service.private_reason, request.path, request.text,
                                                    request.line)
            except Exception as exc:  # fail closed: a buffer not known to be safe stays here
                log.exception("could not check whether %s is private: kept on this machine", request.path)
                reason = f"the check failed ({exc})"
            if reason is not None:
                request.private = True
                log.debug("%s stays on this machine: %s", request.path or request.document_key, reason)
        cc = ls.config.context
        if not cc.enabled:
            return
        request.context_tokens = cc.max_tokens
        if not self.service.started:
            return
        try:
            result = await asyncio.wait_for(loop.run_in_executor(
                None, self.service.gather, request.document_key, request.path, request.text, request.line),
                max(ATTACH_TIMEOUT_S, 4 * cc.time_budget_ms / 1000))
        except Exception as exc:
            log.warning("no repo context for this request: %s", exc or type(exc).__name__)
            return
        request.context, request.repo_name, request.repo_path = result.files, result.repo_name, result.repo_path

    # -- progress (called from the service's build threads) ---------------------------------
    def _progress(self, title: str) -> "_LspProgress":
        return _LspProgress(self._ls, title)


class _LspProgress:
    """Work-done progress driven from another thread: every call hops onto the event loop,
    where the calls wait in order until the client has accepted the token."""

    def __init__(self, ls: "SlmLanguageServer", title: str) -> None:
        self._ls = ls
        self._loop = ls.loop
        self._token: concurrent.futures.Future[str | None] | None = None
        self._pending: list[Callable[[str], None]] = []
        self._waiting = False
        if self._loop is not None:
            try:
                self._token = asyncio.run_coroutine_threadsafe(_progress_begin(ls, title), self._loop)
            except RuntimeError:  # the loop is closed (shutdown)
                self._token = None

    def report(self, done: int, total: int) -> None:
        pct = int(100 * done / max(total, 1))
        self._send(lambda token: self._ls.work_done_progress.report(
            token, types.WorkDoneProgressReport(percentage=pct, message=f"{done}/{total} files")))

    def end(self, message: str) -> None:
        self._send(lambda token: self._ls.work_done_progress.end(token, types.WorkDoneProgressEnd(message=message)))

    def _send(self, send: Callable[[str], None]) -> None:
        if self._token is None or self._loop is None:
            return
        try:
            self._loop.call_soon_threadsafe(self._enqueue, send)
        except RuntimeError:  # the loop is closed (shutdown)
            pass

    def _enqueue(self, send: Callable[[str], None]) -> None:
        self._pending.append(send)
        self._drain()

    def _drain(self) -> None:
        token_future, loop = self._token, self._loop
        assert token_future is not None and loop is not None
        if not token_future.done():
            if not self._waiting:
                self._waiting = True
                token_future.add_done_callback(lambda _: loop.call_soon_threadsafe(self._drain))
            return
        token = None if token_future.cancelled() or token_future.exception() else token_future.result()
        pending, self._pending = self._pending, []
        for send in pending:
            if token is not None:
                send(token)


async def _progress_begin(ls: "SlmLanguageServer", title: str) -> str | None:
    window = ls.client_capabilities.window
    if not (window and window.work_done_progress):
        return None
    token = f"slm-index-{uuid.uuid4()}"
    try:
        await asyncio.wait_for(ls.work_done_progress.create_async(token), 5)
        ls.work_done_progress.begin(token, types.WorkDoneProgressBegin(title=title, percentage=0, cancellable=False))
    except Exception:
        return None
    return token


def register(server: "SlmLanguageServer") -> None:
    server.context = WorkspaceContext(server)
