"""Keep an index live with watchdog: created, modified, deleted and moved files, debounced.

Only the directories the index reads are watched: ``.git/``, ``node_modules/``, vendored and
gitignored folders get no inotify watch, so a large repository does not use up the per-user
limit (``fs.inotify.max_user_watches``); directories created later get their watch when they
appear. When the limit is hit anyway (``ENOSPC``; ``EMFILE`` for inotify instances), the watcher
polls the same directories instead, with one warning.

Events are collected per relative path and applied in one batch once no new event has come for
``debounce`` seconds (a save or a ``git checkout`` produces bursts), by one ``Debouncer``
thread rather than a timer thread per event. Directory events expand to the files below them.
Paths outside the root (through links) are ignored.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

from .debounce import Debouncer
from .index import ContextIndex

log = logging.getLogger(__name__)

WATCH_LIMIT_ERRNOS = frozenset({errno.ENOSPC, errno.EMFILE})
"""inotify_add_watch: ENOSPC when max_user_watches is reached; inotify_init: EMFILE for instances."""
POLL_INTERVAL_S = 2.0


class IndexWatcher:
    def __init__(self, index: ContextIndex, debounce: float = 0.3, *, debouncer: Debouncer | None = None,
                 poll_interval: float = POLL_INTERVAL_S) -> None:
        self.index = index
        self.debounce = debounce
        self.poll_interval = poll_interval
        self._debouncer = debouncer or Debouncer("slm-index-watch")
        self._own_debouncer = debouncer is None
        self._key = ("index-watch", index.root)
        self._changed: set[str] = set()
        self._deleted: set[str] = set()
        self._lock = threading.Lock()
        """Guards the pending changes and ``_observer`` (events, flushes, the fallback and stop)."""
        self._observer: Any = None
        self._stopped = False
        self.mode = ""
        """How the tree is watched: "inotify", "polling", or the name of watchdog's observer."""
        self.batches = 0
        """Batches applied (tests wait on it)."""

    # -- starting and stopping --------------------------------------------------------------
    def start(self) -> None:
        try:
            observer, mode = self._native_observer()
        except OSError as exc:
            if exc.errno not in WATCH_LIMIT_ERRNOS:
                raise
            self._fall_back_to_polling(exc)
            return
        with self._lock:
            self._observer, self.mode = observer, mode

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            observer, self._observer = self._observer, None
        _stop_observer(observer)
        self._debouncer.cancel(self._key)
        self._debouncer.cancel((*self._key, "poll"))
        if self._own_debouncer:
            self._debouncer.close()

    def _native_observer(self) -> tuple[Any, str]:
        """watchdog's observer for this platform, started (raises OSError at the watch limit)."""
        if sys.platform.startswith("linux"):
            observer = _pruned_inotify_observer(self._pruned, self._on_watch_limit)
            mode = "inotify"
        else:  # FSEvents and ReadDirectoryChangesW watch a tree with one handle
            from watchdog.observers import Observer

            observer = Observer()
            mode = type(observer).__name__
        observer.schedule(self._handler(), self.index.root, recursive=True)
        try:
            observer.start()
        except BaseException:
            _stop_observer(observer)
            raise
        return observer, mode

    def _on_watch_limit(self, exc: OSError) -> None:
        """A directory that appeared could not be watched (called on watchdog's inotify thread,
        which the switch must not stop from inside: the debouncer's thread does it)."""
        self._debouncer.schedule((*self._key, "poll"), 0, lambda: self._fall_back_to_polling(exc))

    def _fall_back_to_polling(self, exc: OSError) -> None:
        from watchdog.observers.polling import PollingObserverVFS

        with self._lock:
            if self._stopped or self.mode == "polling":
                return
            old = self._observer
        log.warning("cannot watch %s with inotify (%s): polling its files every %.0f s instead; raising "
                    "fs.inotify.max_user_watches (and max_user_instances) lets it use inotify",
                    self.index.root, exc, self.poll_interval)
        _stop_observer(old)
        observer = PollingObserverVFS(os.lstat, self._listdir, polling_interval=self.poll_interval)
        observer.schedule(self._handler(), self.index.root, recursive=True)
        observer.start()
        with self._lock:
            if self._stopped:
                stale, observer = observer, None
            else:
                stale = None
                self._observer, self.mode = observer, "polling"
        _stop_observer(stale)
        if observer is not None and old is not None:
            self._resync()

    def _resync(self) -> None:
        """Changes made while the watchers were switched: compare the whole tree once (only the
        files whose mtime or size changed are parsed again)."""
        on_disk = set(self.index.walk())
        with self._lock:
            self._changed |= on_disk
            self._deleted |= set(self.index.snapshot.files) - on_disk
        self._debouncer.schedule(self._key, 0, self.flush)

    # -- what is watched --------------------------------------------------------------------
    def _pruned(self, path: str) -> bool:
        """Whether the directory ``path`` is left unwatched (the index ignores what is inside)."""
        rel = self._rel(path)
        return rel is not None and self.index.rules.ignored(rel, is_dir=True)

    def _listdir(self, path: str | None) -> Iterator[os.DirEntry[str]]:
        """``os.scandir`` for the polling observer, without the directories the index ignores."""
        with os.scandir(path) as entries:
            for entry in entries:
                if not (entry.is_dir(follow_symlinks=False) and self._pruned(entry.path)):
                    yield entry

    def _handler(self) -> Any:
        from watchdog.events import FileSystemEvent, FileSystemEventHandler

        watcher = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                try:
                    watcher._event(event)
                except Exception:
                    log.exception("watch event %s failed", event)

        return Handler()

    # -- events -----------------------------------------------------------------------------
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
        below: set[str] = set()
        if event.is_directory and kind in ("created", "moved"):
            target = dest if kind == "moved" else src
            below = self._files_below(target) if target else set()
        with self._lock:
            if event.is_directory:
                if kind in ("deleted", "moved") and src:
                    self._deleted |= {p for p in self.index.snapshot.files if p.startswith(src + "/")}
                if kind in ("created", "moved"):
                    self._changed |= below
                    self._deleted -= below
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
        self._debouncer.schedule(self._key, self.debounce, self.flush)

    def _files_below(self, rel_dir: str) -> set[str]:
        """The files below a directory that appeared, without descending into ignored ones."""
        if self.index.rules.ignored(rel_dir, is_dir=True):
            return set()
        out = set()
        for dirpath, dirs, files in os.walk(os.path.join(self.index.root, rel_dir)):
            dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(dirpath, d))
                       and not self._pruned(os.path.join(dirpath, d))]
            for name in files:
                rel = self._rel(os.path.join(dirpath, name))
                if rel:
                    out.add(rel)
        return out

    def flush(self) -> None:
        with self._lock:
            changed, deleted = self._changed, self._deleted
            self._changed, self._deleted = set(), set()
        if not changed and not deleted:
            return
        try:
            self.index.update_paths(sorted(changed), sorted(deleted))
            self.index.save()
        except Exception:
            log.exception("applying file changes to the index failed")
        self.batches += 1


def _stop_observer(observer: Any) -> None:
    if observer is None:
        return
    try:
        observer.stop()
        if observer.is_alive():
            observer.join(timeout=5)
    except Exception:
        log.exception("stopping the file watcher failed")


def _pruned_inotify_observer(prune: Callable[[str], bool], on_limit: Callable[[OSError], None]) -> Any:
    """watchdog's inotify observer, with no watch on the directories ``prune`` rejects.

    watchdog (7.1) has no such option: its recursive watch group adds a watch on every directory
    below the root, at start and whenever one appears, and drops (silently) the watches it cannot
    add. This group overrides the two directory walks (``_add_all_callbacks``,
    ``_recursive_simulate``) to skip pruned directories, and ``_add_callback`` so that hitting
    the watch limit raises at start and reaches ``on_limit`` later, instead of leaving part of
    the tree unwatched without a word. (These are watchdog's internals: pyproject pins 7.x.)
    """
    from watchdog.observers.inotify import InotifyEmitter, InotifyObserver, InotifyWatchGroup
    from watchdog.observers.inotify_c import InotifyConstants, InotifyEvent, Mask

    def pruned(root: bytes, name: bytes) -> bool:
        full = os.path.join(root, name)
        return os.path.islink(full) or prune(os.fsdecode(full))

    class PrunedWatchGroup(InotifyWatchGroup):
        def _add_all_callbacks(self, path: bytes) -> None:
            if path != self.path and prune(os.fsdecode(path)):
                return
            self._add_callback(path)
            if self.is_recursive and os.path.isdir(path):
                for root, dirnames, _files in os.walk(path):
                    dirnames[:] = [d for d in dirnames if not pruned(root, d)]
                    for d in dirnames:
                        self._add_callback(os.path.join(root, d))

        def _add_callback(self, path: bytes) -> None:
            try:
                wd = self._inotify_fd.add_callback(path, self.event_mask, self._callback, self._id)
            except OSError as exc:
                if exc.errno in WATCH_LIMIT_ERRNOS and self.is_active:
                    on_limit(exc)  # a directory that appeared later
                    return
                if exc.errno in WATCH_LIMIT_ERRNOS or path == self.path:
                    raise
                return  # removed or unreadable meanwhile
            self._active_callbacks_by_path[path] = wd
            self._active_callbacks_by_watch[wd] = path

        def _recursive_simulate(self, src_path: bytes) -> list[InotifyEvent]:
            events: list[InotifyEvent] = []
            if prune(os.fsdecode(src_path)):
                return events
            for root, dirnames, filenames in os.walk(src_path):
                dirnames[:] = [d for d in dirnames if not pruned(root, d)]
                wd_root = self._active_callbacks_by_path.get(root)
                if wd_root is None:
                    continue
                events += [InotifyEvent(wd_root, Mask(InotifyConstants.IN_CREATE | InotifyConstants.IN_ISDIR), 0, d)
                           for d in dirnames]
                events += [InotifyEvent(wd_root, InotifyConstants.IN_CREATE, 0, f) for f in filenames]
            return events

    class PrunedEmitter(InotifyEmitter):
        def on_thread_start(self) -> None:
            self._inotify = PrunedWatchGroup(self._inotify_fd, os.fsencode(self.watch.path),
                                             is_recursive=self.watch.is_recursive,
                                             event_mask=self.get_event_mask_from_filter(),
                                             follow_symlink=self.watch.follow_symlink)

    class PrunedObserver(InotifyObserver):
        def __init__(self) -> None:
            super().__init__()
            self._emitter_class = PrunedEmitter

    return PrunedObserver()
