"""The workspace service: the indexes of the workspace folders, their watchers, the open buffers
that feed them, and the context provider that reads them. No LSP here (progress goes through a
callback); ``features/context.py`` adapts it to the server.

* ``start(roots)``: each folder is indexed in a thread of its own, then watched;
* ``buffer_changed``: an open buffer reaches the index once typing pauses (one debounce
  scheduler for all buffers and watchers), the ring of recent edits at once; the buffer's text
  is joined from its lines there, off the event loop;
* ``configure``: changed settings apply without a restart: sources and time budget at once;
  ``enabled``, ``exclude``, ``maxFileKb``, ``maxFiles`` and ``watch`` rebuild the indexes;
  ``remote.deny_files`` and the workspace folders reach the privacy filter;
* ``private_reason``: why the buffer being completed must not go into a remote prompt (the
  pieces of context carry their own ``private`` marks).

Index lifecycle work (creating, stopping, closing buffers) runs on the scheduler's thread, so
the caller (the event loop) never waits on the disk.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from ..config import ContextConfig
from .debounce import Debouncer
from .index import ContextIndex, IndexOptions
from .provider import ContextProvider, ContextResult
from .watch import IndexWatcher

log = logging.getLogger(__name__)

BUFFER_DEBOUNCE_S = 0.3
"""An open buffer is parsed into the index once typing has paused this long."""
RECENT_REGION_LINES = 32
"""Edits this many lines apart are noted in the ring of recent edits separately; of nearer ones
waiting together only the last is (the ring would merge their chunks anyway)."""
INDEX_FIELDS = ("enabled", "max_file_kb", "max_files", "exclude", "watch")
"""Settings whose change rebuilds the indexes."""


class Progress(Protocol):
    """How an index build reports (work-done progress in the server)."""

    def report(self, done: int, total: int) -> None: ...

    def end(self, message: str) -> None: ...


class WorkspaceService:
    def __init__(self, cache_dir: Path | None, progress: Callable[[str], Progress] | None = None,
                 buffer_debounce_s: float = BUFFER_DEBOUNCE_S) -> None:
        self.cache_dir = cache_dir
        self.provider = ContextProvider()
        self.debouncer = Debouncer("slm-context")
        """The one scheduler of this workspace: buffers, watchers, index lifecycle."""
        self.config = ContextConfig()
        self.buffer_debounce_s = buffer_debounce_s
        self._progress = progress
        self._roots: list[str] = []
        self._started = False
        self._lock = threading.Lock()
        self._noting = threading.Lock()
        """Held while edits taken off the queue go into the ring: a request that finds the queue
        empty waits for a drain in flight, so its ring is never behind the keystrokes."""
        self._buffers: dict[str, Sequence[str]] = {}
        """Open buffers by path: their latest lines (snapshots nobody changes)."""
        self._edits: list[tuple[str, Sequence[str], int]] = []
        """Edits not yet in the ring of recent edits (path, lines, line), oldest first."""
        self._privacy: tuple[list[str] | None, list[str] | None] | None = None
        """Folders and deny patterns not yet given to the privacy filter (it resolves links and
        marks the ring again: not on the caller's thread)."""
        self._watchers: list[IndexWatcher] = []
        self._generation = 0
        """Bumped when the indexes are replaced: a build of an older generation stops."""
        self.builds: list[threading.Thread] = []

    @property
    def started(self) -> bool:
        return self._started

    # -- settings and lifecycle -------------------------------------------------------------
    def configure(self, config: ContextConfig, deny_files: Sequence[str] | None = None) -> None:
        """Apply ``config``: sources and time budget at once, index settings by a rebuild.
        ``deny_files`` (``remote.deny_files``; None: unchanged) reaches the privacy filter before
        the next request is answered."""
        if deny_files is not None:
            self._set_privacy(None, list(deny_files))
        old, self.config = self.config, dataclasses.replace(config, sources=list(config.sources),
                                                           exclude=list(config.exclude))
        self.provider.options = dataclasses.replace(
            self.provider.options, sources=list(config.sources), time_budget_ms=config.time_budget_ms)
        if self._started and any(getattr(old, f) != getattr(config, f) for f in INDEX_FIELDS):
            log.info("context settings changed: indexing the workspace again")
            self.debouncer.schedule("indexes", 0, self._open_indexes)

    def start(self, roots: list[str]) -> None:
        """Index ``roots`` in the background (when enabled); later settings changes rebuild."""
        if self._started:
            return
        self._roots = list(roots)
        self._started = True
        self._set_privacy(list(roots), None)
        self.debouncer.schedule("indexes", 0, self._open_indexes)

    def stop(self) -> None:
        """Stop the watchers and builds, save the indexes, and stop the scheduler."""
        with self._lock:
            self._generation += 1
            watchers, self._watchers = self._watchers, []
        self.debouncer.close()
        for watcher in watchers:
            watcher.stop()
        for index in self.provider.indexes:
            try:
                index.save()
            except Exception:
                log.exception("could not save the index of %s", index.root)
        self.provider.close()

    def _set_privacy(self, roots: list[str] | None, deny_files: list[str] | None) -> None:
        with self._lock:
            old_roots, old_deny = self._privacy or (None, None)
            self._privacy = (roots if roots is not None else old_roots,
                             deny_files if deny_files is not None else old_deny)
        self.debouncer.schedule("privacy", 0, self._apply_privacy)

    def _apply_privacy(self) -> None:
        """(Scheduler thread, or a request's) Give the privacy filter what changed."""
        with self._lock:
            pending, self._privacy = self._privacy, None
        if pending is not None:
            self.provider.configure_privacy(*pending)

    def _open_indexes(self) -> None:
        """(Scheduler thread) Replace the indexes by new ones built with the current settings."""
        with self._lock:
            self._generation += 1
            generation = self._generation
            watchers, self._watchers = self._watchers, []
            buffers = dict(self._buffers)
        for watcher in watchers:
            watcher.stop()
        for old in self.provider.indexes:
            old.save()
        config = self.config
        if not config.enabled:
            self.provider.set_indexes([])
            return
        options = IndexOptions(max_file_bytes=config.max_file_kb * 1024, max_files=config.max_files,
                               exclude=list(config.exclude))
        indexes = [ContextIndex(root, self.cache_dir, options) for root in self._roots]
        for index in indexes:
            for path, lines in buffers.items():  # opened before the walk: the buffer wins
                rel = index.relative(path)
                if rel:
                    index.update_buffer(rel, "".join(lines))
        self.provider.set_indexes(indexes)
        for index in indexes:
            thread = threading.Thread(target=self._build, args=(index, generation, config.watch),
                                      name=f"slm-index-{index.name}", daemon=True)
            self.builds.append(thread)
            thread.start()

    def _current(self, generation: int) -> bool:
        with self._lock:
            return generation == self._generation

    def _build(self, index: ContextIndex, generation: int, watch: bool) -> None:
        """(Its own thread) Index one folder with progress, then watch it."""
        progress = self._progress(f"slm-lsp: indexing {index.name}") if self._progress else None
        last = [-5]

        def report(done: int, total: int) -> None:
            pct = int(100 * done / max(total, 1))
            if progress is not None and pct >= last[0] + 5:
                last[0] = pct
                progress.report(done, total)

        message = "failed"
        try:
            index.build(report, cancelled=lambda: not self._current(generation))
            if not self._current(generation):
                message = "replaced by a new index (settings changed)"
                return
            self.provider.windows(index)  # starts the whole-repository window index in the background
            # What exists now (modules, converters, the index) lives as long as the server: out of
            # the collector's sight, a full collection no longer walks it. Those ran 25-35 ms on
            # whichever thread allocated, the event loop's included (more with a large index).
            gc.freeze()
            message = f"{index.stats.get('files', 0)} files, {index.stats.get('definitions', 0)} definitions"
            if watch:
                watcher = IndexWatcher(index, debouncer=self.debouncer)
                watcher.start()
                with self._lock:
                    keep = generation == self._generation
                    if keep:
                        self._watchers.append(watcher)
                if not keep:
                    watcher.stop()
        except Exception as exc:
            log.exception("indexing %s failed", index.root)
            message = f"failed: {exc}"
        finally:
            if progress is not None:
                progress.end(message)

    # -- open buffers -----------------------------------------------------------------------
    def buffer_changed(self, path: str, lines: Sequence[str], line: int | None, immediate: bool = False) -> None:
        """An open buffer changed (``line``: where the edit was, None for an open or a whole
        replacement). ``lines`` must not change afterwards. Returns at once: the ring of recent
        edits is fed right away and the index once typing pauses, both off the caller's thread."""
        with self._lock:
            self._buffers[path] = lines
            if line is not None:
                self._edits.append((path, lines, line))
        if line is not None:
            self.debouncer.schedule("recent", 0, self._note_edits)
        self.debouncer.schedule(("buffer", path), 0 if immediate else self.buffer_debounce_s,
                                lambda: self._index_buffer(path))

    def _note_edits(self) -> None:
        """(Scheduler thread, or a request's) Put the edits waiting into the ring of recent
        edits. A request drains them itself first, so its ring is never behind the keystrokes."""
        with self._noting:
            with self._lock:
                edits, self._edits = self._edits, []
            for i, (path, lines, line) in enumerate(edits):
                later = edits[i + 1] if i + 1 < len(edits) else None
                if later is not None and later[0] == path and abs(later[2] - line) < RECENT_REGION_LINES:
                    continue  # typing on: the next edit's chunk covers this one
                self.provider.note_edit(path, lines, line)

    def buffer_closed(self, path: str) -> None:
        """The buffer was closed (or is no longer offered): the index goes back to the disk."""
        with self._lock:
            self._buffers.pop(path, None)
        self.debouncer.schedule(("buffer", path), 0, lambda: self._index_buffer(path))

    def _index_buffer(self, path: str) -> None:
        """(Scheduler thread) Bring the index up to the buffer's latest text, or to the disk."""
        index, rel = self.provider.locate(path)
        if index is None:
            return
        with self._lock:
            lines = self._buffers.get(path)
        if lines is None:
            index.close_buffer(rel)
        else:
            index.update_buffer(rel, "".join(lines))

    def flush(self, timeout: float | None = None) -> bool:
        """Run what waits on the scheduler now (tests and benchmarks)."""
        return self.debouncer.flush(timeout=timeout)

    # -- requests ---------------------------------------------------------------------------
    def gather(self, key: str, path: str, text: str, line: int) -> ContextResult:
        """The context for a request at ``line`` of ``path`` (blocking: run it off the loop)."""
        self._apply_privacy()
        self._note_edits()
        return self.provider.gather(key, path, text, line)

    def private_reason(self, path: str, text: str, line: int | None = None) -> str | None:
        """Why the buffer of ``path`` ("" for an unsaved one) whose text is ``text`` must never
        go into a remote prompt; None when it may. With the cursor's ``line``, a large buffer's
        text is scanned around it (``privacy.around``). Blocking: run it off the loop."""
        self._apply_privacy()
        return self.provider.privacy.reason(path, text, line)

