"""Source 3: a ring of recently edited chunks (as llama.vim does: 16 chunks of up to 64 lines).

Fed from ``textDocument/didChange``: the lines around each edit. A new chunk that mostly
overlaps one already in the ring replaces it, so typing in one place keeps one chunk fresh
instead of filling the ring with near copies.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

RING_SIZE = 16
CHUNK_LINES = 64


@dataclass
class Chunk:
    path: str
    start: int
    text: str


class RecentChunks:
    def __init__(self, size: int = RING_SIZE, chunk_lines: int = CHUNK_LINES) -> None:
        self.size, self.chunk_lines = size, chunk_lines
        self._ring: deque[Chunk] = deque()
        self._lock = threading.Lock()
        self.version = 0

    def note(self, path: str, text: str | Sequence[str], line: int) -> None:
        """An edit at ``line`` of ``path`` whose new text is ``text``: the whole text, or its
        lines (with or without their line ends: only the chunk's lines are read)."""
        lines = text.split("\n") if isinstance(text, str) else text
        half = self.chunk_lines // 2
        start = max(0, min(line - half, len(lines) - self.chunk_lines))
        body = "\n".join(x.rstrip("\r\n") for x in lines[start:start + self.chunk_lines]).strip("\n")
        if not body.strip():
            return
        with self._lock:
            for old in list(self._ring):
                if old.path == path and abs(old.start - start) < half:
                    self._ring.remove(old)
            self._ring.append(Chunk(path, start, body))
            while len(self._ring) > self.size:
                self._ring.popleft()
            self.version += 1

    def forget(self, path: str) -> None:
        with self._lock:
            for old in [c for c in self._ring if c.path == path]:
                self._ring.remove(old)
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
