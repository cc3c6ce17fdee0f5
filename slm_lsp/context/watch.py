"""Keep an index live with watchdog: created, modified, deleted and moved files, debounced.

Events are collected per relative path and applied in one batch once no new event has come for
``debounce`` seconds (a save or a ``git checkout`` produces bursts). Directory events expand to
the files below them. Paths outside the root (through links) are ignored.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from .index import ContextIndex

log = logging.getLogger(__name__)


class IndexWatcher:
    def __init__(self, index: ContextIndex, debounce: float = 0.3) -> None:
        self.index = index
        self.debounce = debounce
        self._changed: set[str] = set()
        self._deleted: set[str] = set()
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._observer: Any = None
        self.batches = 0
        """Batches applied (tests wait on it)."""

    def start(self) -> None:
        from watchdog.events import FileSystemEvent, FileSystemEventHandler
        from watchdog.observers import Observer

        watcher = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                try:
                    watcher._event(event)
                except Exception:
                    log.exception("watch event %s failed", event)

        observer = Observer()
        observer.schedule(Handler(), self.index.root, recursive=True)
        observer.daemon = True
        observer.start()
        self._observer = observer

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()

    def _rel(self, path: str | bytes) -> str | None:
        p = os.fsdecode(path)
        if not p.startswith(self.index.root):
            return None
        rel = os.path.relpath(p, self.index.root).replace(os.sep, "/")
        return None if rel.startswith("..") or rel == "." else rel

    def _event(self, event: Any) -> None:
        kind = event.event_type
        if kind in ("opened", "closed_no_write"):
            return
        src = self._rel(event.src_path)
        dest = self._rel(getattr(event, "dest_path", "") or "") if kind == "moved" else None
        with self._lock:
            if event.is_directory:
                if kind in ("deleted", "moved") and src:
                    self._deleted |= {p for p in self.index.snapshot.files if p.startswith(src + "/")}
                if kind in ("created", "moved"):
                    target = dest if kind == "moved" else src
                    if target:
                        self._changed |= self._files_below(target)
            else:
                if kind == "deleted" and src:
                    self._deleted.add(src)
                    self._changed.discard(src)
                elif kind == "moved":
                    if src:
                        self._deleted.add(src)
                        self._changed.discard(src)
                    if dest:
                        self._changed.add(dest)
                        self._deleted.discard(dest)
                elif src:
                    self._changed.add(src)
                    self._deleted.discard(src)
            if self._timer is not None:
                self._timer.cancel()
            self._timer = threading.Timer(self.debounce, self.flush)
            self._timer.daemon = True
            self._timer.start()

    def _files_below(self, rel_dir: str) -> set[str]:
        out = set()
        for dirpath, _dirs, files in os.walk(os.path.join(self.index.root, rel_dir)):
            for name in files:
                rel = self._rel(os.path.join(dirpath, name))
                if rel:
                    out.add(rel)
        return out

    def flush(self) -> None:
        with self._lock:
            changed, deleted = self._changed, self._deleted
            self._changed, self._deleted = set(), set()
            self._timer = None
        if not changed and not deleted:
            return
        try:
            self.index.update_paths(sorted(changed), sorted(deleted))
            self.index.save()
        except Exception:
            log.exception("applying file changes to the index failed")
        self.batches += 1
