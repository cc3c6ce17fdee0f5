"""Whole-repository similar-window search: an inverted index from identifiers to line windows.

The per-request similar search (``similar.py``) can only afford a few dozen candidate files
inside its time budget; the near-copy that would help most (another provider of the same
interface, the sibling test of the same fixture) is often elsewhere in the repository. This
index keeps, for every window of every indexed file, its identifier count and, per identifier,
the windows that contain it (``array('i')`` postings, about 4 bytes per identifier occurrence:
8 MB for a 470k-line repository). A query counts the shared identifiers of every window at once
(``numpy.bincount`` over the query's postings) and ranks by Jaccard similarity, the same score as
the per-request search, in a few milliseconds.

It follows the index's snapshots: ``sync`` (re)indexes the files whose entry changed and drops the
deleted ones. The provider runs the first sync (and any large one, a branch switch) in the
background, so a request never waits for it and uses the per-request search until the first sync
is complete; a few changed files (an edit, a save) are synced by the request itself. Windows of
a changed file are marked dead and new ones appended; the postings are rebuilt when the dead
outnumber the live.
"""

from __future__ import annotations

import logging
import threading
import time
from array import array
from collections.abc import Callable

import numpy as np

from ..index import FileEntry, Snapshot
from .similar import MIN_SCORE, STEP, TOKEN, WINDOW, Snippet, span, window_starts

log = logging.getLogger(__name__)

MAX_FILE_LINES = 20000
PER_FILE = 2
"""Windows taken from one file at most (non-overlapping)."""


def _stamp(entry: FileEntry) -> tuple[int, int, int, bool]:
    return (entry.mtime_ns, entry.size, entry.version, entry.buffer)


class WindowIndex:
    def __init__(self, window: int = WINDOW, step: int = STEP) -> None:
        self.window, self.step = window, step
        self._lock = threading.Lock()
        self._vocab: dict[str, int] = {}
        self._postings: list[array] = []
        self._path_of: array = array("i")
        """Per window: the id of its file (an index into ``_paths``)."""
        self._start: array = array("i")
        self._size: array = array("i")
        self._alive = bytearray()
        self._paths: list[str] = []
        self._path_ids: dict[str, int] = {}
        self._files: dict[str, tuple[tuple[int, int, int, bool], range]] = {}
        """Indexed files: the entry stamp they were read at and their window ids."""
        self._dead = 0
        self._sync_lock = threading.Lock()
        self.version = -1
        """The snapshot version last synced, or being synced in the background."""
        self.synced = threading.Event()
        """Set after the first complete sync (before it, callers use their own search)."""

    # -- building ---------------------------------------------------------------------------
    def _path_id(self, path: str) -> int:
        pid = self._path_ids.get(path)
        if pid is None:
            pid = self._path_ids[path] = len(self._paths)
            self._paths.append(path)
        return pid

    def _drop(self, path: str) -> None:
        old = self._files.pop(path, None)
        if old is not None:
            for w in old[1]:
                if self._alive[w]:
                    self._alive[w] = 0
                    self._dead += 1

    def add_file(self, path: str, text: str, stamp: tuple[int, int, int, bool] = (0, 0, 0, False)) -> None:
        """Index (or re-index) one file's windows."""
        lines = text.split("\n")[:MAX_FILE_LINES]
        line_tokens = [set(TOKEN.findall(x)) for x in lines]
        windows: list[tuple[int, set[str]]] = []
        for start in window_starts(len(lines), self.window, self.step):
            toks: set[str] = set()
            for s in line_tokens[start:start + self.window]:
                toks |= s
            if toks:
                windows.append((start, toks))
        with self._lock:
            self._drop(path)
            pid = self._path_id(path)
            first = len(self._start)
            for start, toks in windows:
                w = len(self._start)
                self._path_of.append(pid)
                self._start.append(start)
                self._size.append(len(toks))
                self._alive.append(1)
                for t in toks:
                    tid = self._vocab.get(t)
                    if tid is None:
                        tid = self._vocab[t] = len(self._postings)
                        self._postings.append(array("i"))
                    self._postings[tid].append(w)
            self._files[path] = (stamp, range(first, len(self._start)))

    def remove_file(self, path: str) -> None:
        with self._lock:
            self._drop(path)

    def changed(self, snap: Snapshot) -> tuple[list[str], list[str]]:
        """Files of ``snap`` whose windows are missing or stale, and indexed files it no longer has."""
        stale = [p for p, e in snap.files.items() if (old := self._files.get(p)) is None or old[0] != _stamp(e)]
        gone = [p for p in self._files if p not in snap.files]
        return stale, gone

    def sync(self, snap: Snapshot, read_text: Callable[[str], str],
             cancelled: Callable[[], bool] = lambda: False) -> int:
        """Bring the index to ``snap`` (the files whose entry changed are read again); returns the
        number of files (re)indexed. One sync at a time."""
        with self._sync_lock:
            stale, gone = self.changed(snap)
            for path in gone:
                self.remove_file(path)
            done = 0
            for path in stale:
                if cancelled():
                    return done
                entry = snap.files.get(path)
                if entry is None:
                    continue
                try:
                    self.add_file(path, read_text(path), _stamp(entry))
                except Exception:
                    log.exception("could not index the windows of %s", path)
                done += 1
            if self._dead > max(1000, len(self._start) - self._dead):
                self._compact(read_text)
            self.synced.set()
            return done

    def _compact(self, read_text: Callable[[str], str]) -> None:
        fresh = WindowIndex(self.window, self.step)
        for path, (stamp, _ids) in list(self._files.items()):
            fresh.add_file(path, read_text(path), stamp)
        with self._lock:
            (self._vocab, self._postings, self._path_of, self._start, self._size, self._alive, self._paths,
             self._path_ids, self._files, self._dead) = (
                fresh._vocab, fresh._postings, fresh._path_of, fresh._start, fresh._size, fresh._alive,
                fresh._paths, fresh._path_ids, fresh._files, 0)

    @property
    def syncing(self) -> bool:
        return self._sync_lock.locked()

    def start_sync(self, snap: Snapshot, read_text: Callable[[str], str]) -> None:
        """``sync`` in a background thread unless one is running already."""
        if self.syncing:
            return

        def run() -> None:
            try:
                t0 = time.perf_counter()
                n = self.sync(snap, read_text)
                if n:
                    log.info("window index: %d files (re)indexed in %.2f s, %d windows", n,
                             time.perf_counter() - t0, len(self._start) - self._dead)
            except Exception:
                log.exception("window index sync failed")

        threading.Thread(target=run, name="slm-windows", daemon=True).start()

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"files": len(self._files), "windows": len(self._start) - self._dead,
                    "postings": sum(len(p) for p in self._postings), "identifiers": len(self._vocab)}

    # -- querying ---------------------------------------------------------------------------
    def query(self, query: set[str], k: int, exclude: Callable[[str], bool] = lambda p: False,
              bonus: Callable[[str], float] = lambda p: 1.0, min_score: float = MIN_SCORE,
              read_text: Callable[[str], str] | None = None) -> list[Snippet]:
        """The top ``k`` windows by Jaccard similarity to ``query`` (at most ``PER_FILE``
        non-overlapping ones per file), skipping files for which ``exclude`` is true."""
        with self._lock:
            n = len(self._start)
            tids = [self._vocab[t] for t in query if t in self._vocab]
            if not n or not tids:
                return []
            views = [np.frombuffer(self._postings[t], dtype=np.int32) for t in tids if len(self._postings[t])]
            hits = np.bincount(np.concatenate(views), minlength=n) if views else np.zeros(n, dtype=np.int64)
            del views  # release the arrays' buffers before they may grow again
            sizes = np.array(self._size, dtype=np.float64)
            alive = np.frombuffer(bytes(self._alive), dtype=np.uint8).astype(bool)
            path_of = np.array(self._path_of, dtype=np.int32)
            starts = np.array(self._start, dtype=np.int32)
            paths = list(self._paths)
        scores = np.where(alive & (hits > 0), hits / (len(query) + sizes - hits), 0.0)
        m = min(n, max(64, k * 16))
        top = np.argpartition(-scores, m - 1)[:m] if m < n else np.arange(n)
        order = top[np.lexsort((top, -scores[top]))]  # ties: the earlier window first, like the scan
        taken: dict[int, list[tuple[int, int]]] = {}
        skip: dict[int, bool] = {}
        out: list[Snippet] = []
        for w in order:
            base = float(scores[w])
            if base < min_score / 2:
                break
            pid = int(path_of[w])
            if pid not in skip:
                skip[pid] = exclude(paths[pid])
            if skip[pid]:
                continue
            score = base * bonus(paths[pid])
            start = int(starts[w])
            mine = taken.setdefault(pid, [])
            shown = span(score, self.window)
            if score < min_score or len(mine) >= PER_FILE or any(
                    start < s + n and s < start + shown for s, n in mine):
                continue
            mine.append((start, shown))
            text = ""
            if read_text is not None:
                text = "\n".join(read_text(paths[pid]).split("\n")[start:start + shown])
            out.append(Snippet(paths[pid], start, text, score))
        out.sort(key=lambda s: -s.score)
        return out[:k]
