"""Repo-aware context in the server: the workspace index and what feeds it.

* after ``initialized``: each workspace folder is indexed in a background thread, with
  work-done progress; then watchdog keeps it live;
* ``textDocument/didOpen`` and ``textDocument/didChange``: open buffers update the index (from
  the editor's text, not the disk; debounced) and the ring of recent edits;
* before a completion, ``attach_context`` adds the context to the engine request, under a time
  limit: without an answer in time the completion goes ahead without it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

from lsprotocol import types

from ..context.index import ContextIndex, IndexOptions
from ..context.provider import ContextOptions, ContextProvider
from ..context.watch import IndexWatcher
from ..engine.service import CompletionRequest
from ..models import cache_dir

if TYPE_CHECKING:
    from ..server import SlmLanguageServer

log = logging.getLogger(__name__)

BUFFER_DEBOUNCE_S = 0.3
ATTACH_TIMEOUT_S = 0.5
"""The longest a completion waits for its context, unless the sources' own budget is longer."""


class WorkspaceContext:
    """The server's indexes, watchers and context provider."""

    def __init__(self) -> None:
        self.provider = ContextProvider()
        self.watchers: list[IndexWatcher] = []
        self._timers: dict[str, threading.Timer] = {}
        self._lock = threading.Lock()
        self.started = False

    def configure(self, ls: "SlmLanguageServer") -> None:
        cc = ls.config.context
        self.provider.options = ContextOptions(sources=list(cc.sources), time_budget_ms=cc.time_budget_ms)

    def roots(self, ls: "SlmLanguageServer") -> list[str]:
        folders = ls.workspace.folders
        uris = [f.uri for f in folders.values()] if folders else []
        if not uris and ls.workspace.root_uri:
            uris = [ls.workspace.root_uri]
        return [unquote(urlparse(u).path) for u in uris if u.startswith("file:")]

    async def start(self, ls: "SlmLanguageServer") -> None:
        """Index every workspace folder in the background, reporting progress."""
        cc = ls.config.context
        if self.started or not cc.enabled:
            return
        self.started = True
        self.configure(ls)
        options = IndexOptions(max_file_bytes=cc.max_file_kb * 1024, max_files=cc.max_files, exclude=list(cc.exclude))
        for root in self.roots(ls):
            index = ContextIndex(root, cache_dir(), options)
            self.provider.add_index(index)
            for doc in list(ls.workspace.text_documents.values()):  # opened before the walk
                rel = index.relative(doc.path)
                if rel:
                    index.update_buffer(rel, doc.source)
            asyncio.ensure_future(self._build(ls, index, cc.watch))

    async def _build(self, ls: "SlmLanguageServer", index: ContextIndex, watch: bool) -> None:
        loop = asyncio.get_running_loop()
        token = await _progress_begin(ls, f"slm-lsp: indexing {index.name}")
        last = [-1]

        def progress(done: int, total: int) -> None:
            pct = int(100 * done / max(total, 1))
            if token is not None and pct >= last[0] + 5:
                last[0] = pct
                loop.call_soon_threadsafe(ls.work_done_progress.report, token,
                                          types.WorkDoneProgressReport(percentage=pct, message=f"{done}/{total} files"))

        message = "failed"
        try:
            await loop.run_in_executor(None, lambda: index.build(progress))
            self.provider.windows(index)  # starts the whole-repository window index in the background
            message = f"{index.stats.get('files', 0)} files, {index.stats.get('definitions', 0)} definitions"
            if watch:
                watcher = IndexWatcher(index)
                await loop.run_in_executor(None, watcher.start)
                self.watchers.append(watcher)
        except Exception as exc:
            log.exception("indexing %s failed", index.root)
            message = f"failed: {exc}"
        finally:
            if token is not None:
                ls.work_done_progress.end(token, types.WorkDoneProgressEnd(message=message))

    # -- open buffers -----------------------------------------------------------------------
    def buffer_changed(self, path: str, text: str, line: int | None, immediate: bool = False) -> None:
        """Debounced: the index re-parses the buffer once typing pauses; the edit ring at once."""
        index, rel = self.provider.locate(path)
        if line is not None:
            self.provider.note_edit(path, text, line)
        if index is None:
            return

        def apply() -> None:
            with self._lock:
                self._timers.pop(rel, None)
            try:
                index.update_buffer(rel, text)
            except Exception:
                log.exception("could not index the buffer %s", rel)

        with self._lock:
            old = self._timers.pop(rel, None)
            if old is not None:
                old.cancel()
            if immediate:
                timer = threading.Timer(0, apply)
            else:
                timer = threading.Timer(BUFFER_DEBOUNCE_S, apply)
            timer.daemon = True
            self._timers[rel] = timer
            timer.start()

    def buffer_closed(self, path: str) -> None:
        index, rel = self.provider.locate(path)
        if index is not None:
            with self._lock:
                old = self._timers.pop(rel, None)
            if old is not None:
                old.cancel()
            index.close_buffer(rel)

    def stop(self) -> None:
        for watcher in self.watchers:
            watcher.stop()
        for index in self.provider.indexes:
            index.save()
        self.provider.close()

    # -- requests ---------------------------------------------------------------------------
    async def attach(self, ls: "SlmLanguageServer", request: CompletionRequest) -> None:
        """Add the repo context to ``request`` (no-op when disabled or when it is late)."""
        cc = ls.config.context
        if not cc.enabled:
            return
        request.context_tokens = cc.max_tokens
        if not self.started:
            return
        loop = asyncio.get_running_loop()
        try:
            result = await asyncio.wait_for(loop.run_in_executor(
                None, self.provider.gather, request.document_key, request.path, request.text, request.line),
                max(ATTACH_TIMEOUT_S, 4 * cc.time_budget_ms / 1000))
        except Exception as exc:
            log.warning("no repo context for this request: %s", exc or type(exc).__name__)
            return
        request.context, request.repo_name, request.repo_path = result.files, result.repo_name, result.repo_path


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


def _changed_line(change: object) -> int | None:
    rng = getattr(change, "range", None)
    return rng.start.line if rng is not None else None


def register(server: "SlmLanguageServer") -> None:
    server.context = WorkspaceContext()

    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: "SlmLanguageServer", params: types.DidOpenTextDocumentParams) -> None:
        doc = ls.workspace.get_text_document(params.text_document.uri)
        ls.context.buffer_changed(doc.path, doc.source, None, immediate=True)

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: "SlmLanguageServer", params: types.DidChangeTextDocumentParams) -> None:
        doc = ls.workspace.get_text_document(params.text_document.uri)
        lines = [x for x in (_changed_line(c) for c in params.content_changes) if x is not None]
        ls.context.buffer_changed(doc.path, doc.source, lines[-1] if lines else None)
