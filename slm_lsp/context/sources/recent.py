"""Source 3: a ring of recently edited chunks (as llama.vim does: 16 chunks of up to 64 lines).

Fed from ``textDocument/didChange``: the lines around each edit. A new chunk that mostly
overlaps one already in the ring replaces it, so typing in one place keeps one chunk fresh
instead of filling the ring with near copies.

A chunk is marked private when its file is (``context/privacy.py``, decided by the caller from
the file's path) or when its own text looks like a secret.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..privacy import content_reason

RING_SIZE = 16
CHUNK_LINES = 64


@dataclass
class Chunk:
    path: str
    start: int
    text: str
    private: bool = False
    """Never goes into a remote prompt (its file is private, or its text looks like a secret)."""
    origin: str = ""
    """The path the edit was noted with (absolute for a file on disk): what privacy is decided on."""


class RecentChunks:
    def __init__(self, size: int = RING_SIZE, chunk_lines: int = CHUNK_LINES) -> None:
        self.size, self.chunk_lines = size, chunk_lines
        self._ring: deque[Chunk] = deque()
        self._lock = threading.Lock()
        self.version = 0

    def note(self, path: str, text: str | Sequence[str], line: int, private: bool = False, origin: str = "") -> None:
        """An edit at ``line`` of ``path`` whose new text is ``text``: the whole text, or its
        lines (with or without their line ends: only the chunk's lines are read). ``private``:
        the file is private; the chunk also is when its text looks like a secret."""
        lines = text.split("\n") if isinstance(text, str) else text
        half = self.chunk_lines // 2
        start = max(0, min(line - half, len(lines) - self.chunk_lines))
        body = "\n".join(x.rstrip("\r\n") for x in lines[start:start + self.chunk_lines]).strip("\n")
        if not body.strip():
            return
        private = private or content_reason(body) is not None
        with self._lock:
            for old in list(self._ring):
                if old.path == path and abs(old.start - start) < half:
                    self._ring.remove(old)
            self._ring.append(Chunk(path, start, body, private, origin or path))
            while len(self._ring) > self.size:
                self._ring.popleft()
            self.version += 1

    def forget(self, path: str) -> None:
        with self._lock:
            for old in [c for c in self._ring if c.path == path]:
                self._ring.remove(old)
            self.version += 1

    def remark(self, file_private: Callable[[str], bool]) -> None:
        """Mark the chunks again (the privacy settings changed): ``file_private(origin)``."""
        with self._lock:
            ring = list(self._ring)
        marks = [file_private(c.origin) or content_reason(c.text) is not None for c in ring]
        with self._lock:
            for chunk, private in zip(ring, marks):
                chunk.private = private
            self.version += 1

    def chunks(self, exclude_path: str = "", exclude_lines: tuple[int, int] | None = None) -> list[Chunk]:
        """Oldest first; chunks of ``exclude_path`` overlapping ``exclude_lines`` are left out."""
        with self._lock:
            out = list(self._ring)
        if exclude_lines is None:
            return [c for c in out if c.path != exclude_path]
        lo, hi = exclude_lines
        return [c for c in out if c.path != exclude_path
                or c.start + c.text.count("\n") < lo or c.start > hi]
