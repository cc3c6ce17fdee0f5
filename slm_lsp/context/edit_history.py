"""The recent edits of the open documents as small unified diffs: what a next-edit prompt shows
the model (``engine/next_edit.py``).

Fed from ``textDocument/didChange`` with each document's lines after the change: the history
keeps the last snapshot of every open document and diffs the new one against it. Only the lines
that changed are compared (the common head and tail are skipped first, by identity: a document's
snapshots share their untouched line strings), so a keystroke costs a pass over the lines, not a
diff of the file.

Consecutive typing on the same lines is one edit, not one per keystroke: while the newest edit of
the ring is this document's and the change touches its lines, the edit is diffed again from where
it started (typing ``count`` over ``total`` is one ``-total``/``+count`` edit). An edit somewhere
else, in this document or another, starts a new one. The ring holds the newest ``size`` edits
across files. An edit whose diff would be larger than ``max_diff_lines`` (a paste, a reformat, a
reload) is not kept: it would fill the prompt and says little about the next small edit.

Privacy: every edit remembers its file's path (``origin``), and is marked private when its own
text looks like a secret (``privacy.content_reason``). ``diffs(remote=True)`` leaves out the
marked edits and those whose file ``file_private`` says is private (asked then, off the event
loop: it may read ``.gitignore`` files). The local model sees them all: it never leaves the
machine.

Thread-safe: the event loop writes, the engine's worker and executors read.
"""

from __future__ import annotations

import difflib
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .privacy import content_reason

__all__ = ["Edit", "EditHistory", "changed_span", "hunk_diff"]

RING_SIZE = 32
CONTEXT_LINES = 1
"""Unchanged lines shown around each change in a diff (few: the region shows the code itself)."""
MAX_DIFF_LINES = 40
COALESCE_S = 30.0
"""Typing on the same lines after a pause this long starts a new edit."""

_HUNK = re.compile(r"^@@ -(\d+)(,\d+)? \+(\d+)(,\d+)? @@")


@dataclass
class Edit:
    key: str
    """The document's key (its URI)."""
    path: str
    """The path the diff names (relative to its workspace)."""
    origin: str
    """The file's own path (absolute for a file on disk): what privacy is decided on."""
    diff: str
    """``--- a/path\\n+++ b/path\\n@@ ...``, each line with its ``\\n``."""
    start: int
    end: int
    """The lines ``[start, end)`` of the document that the edit wrote (empty for a deletion)."""
    time: float
    private: bool = False
    """Its text looks like a secret: never in a remote prompt."""


@dataclass
class _Document:
    path: str
    origin: str
    lines: Sequence[str]
    base: Sequence[str] | None = None
    """The lines before the edit that is being typed (the ring's newest, while it grows)."""
    edit: Edit | None = None


def _content(line: str) -> str:
    return line.rstrip("\r\n")


def changed_span(old: Sequence[str], new: Sequence[str]) -> tuple[int, int, int] | None:
    """``(start, old_end, new_end)``: the lines ``old[start:old_end]`` became ``new[start:new_end]``
    and the rest is the same; None when nothing changed. Line ends do not count."""
    n = min(len(old), len(new))
    start = 0
    while start < n and (old[start] is new[start] or _content(old[start]) == _content(new[start])):
        start += 1
    if start == len(old) == len(new):
        return None
    old_end, new_end = len(old), len(new)
    while old_end > start and new_end > start and (
            old[old_end - 1] is new[new_end - 1] or _content(old[old_end - 1]) == _content(new[new_end - 1])):
        old_end -= 1
        new_end -= 1
    return start, old_end, new_end


def hunk_diff(path: str, old: Sequence[str], new: Sequence[str], span: tuple[int, int, int],
              context: int = CONTEXT_LINES) -> str:
    """The unified diff of ``span`` (``changed_span(old, new)``) with ``context`` lines around it,
    its hunk headers numbered as in the whole documents."""
    start, old_end, new_end = span
    lo = max(0, start - context)
    a = [_content(x) for x in old[lo:old_end + context]]
    b = [_content(x) for x in new[lo:new_end + context]]
    out = [f"--- a/{path}\n", f"+++ b/{path}\n"]
    for line in list(difflib.unified_diff(a, b, n=context, lineterm=""))[2:]:
        m = _HUNK.match(line)
        if m is not None:
            line = (f"@@ -{int(m.group(1)) + lo}{m.group(2) or ''} +{int(m.group(3)) + lo}{m.group(4) or ''} @@"
                    + line[m.end():])
        out.append(line + "\n")
    return "".join(out)


def _looks_secret(diff: str) -> bool:
    """Whether the lines of ``diff`` (read without their ``+``/``-``/`` `` marks, which would hide a
    secret's assignment from the patterns) look like they hold a secret."""
    body = diff.splitlines()[2:]
    return content_reason("\n".join(line[1:] for line in body if not line.startswith("@@"))) is not None


class EditHistory:
    """Per-document snapshots and the ring of recent edits (see the module docstring)."""

    def __init__(self, size: int = RING_SIZE, max_diff_lines: int = MAX_DIFF_LINES,
                 coalesce_s: float = COALESCE_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.size, self.max_diff_lines, self.coalesce_s = size, max_diff_lines, coalesce_s
        self._clock = clock
        self._docs: dict[str, _Document] = {}
        self._ring: deque[Edit] = deque()
        self._lock = threading.Lock()

    def open(self, key: str, path: str, lines: Sequence[str], origin: str = "") -> None:
        """Start following ``key`` (its lines must not change afterwards: a snapshot)."""
        with self._lock:
            self._docs[key] = _Document(path, origin or path, lines)

    def following(self, key: str) -> bool:
        """Whether ``key`` is open here (its changes are diffed)."""
        with self._lock:
            return key in self._docs

    def close(self, key: str) -> None:
        """Stop following ``key``; its edits stay in the ring (the next edit may follow them)."""
        with self._lock:
            self._docs.pop(key, None)

    def forget(self, key: str) -> None:
        """Drop ``key`` and its edits."""
        with self._lock:
            self._docs.pop(key, None)
            for edit in [e for e in self._ring if e.key == key]:
                self._ring.remove(edit)

    def change(self, key: str, lines: Sequence[str]) -> Edit | None:
        """``key``'s lines after a change (a snapshot); the edit now newest in the ring, if any."""
        now = self._clock()
        with self._lock:
            doc = self._docs.get(key)
            if doc is None:
                return None
            old, doc.lines = doc.lines, lines
            span = changed_span(old, lines)
            if span is None:
                return None
            start, old_end, new_end = span
            growing = doc.edit
            if (growing is None or doc.base is None or not self._ring or self._ring[-1] is not growing
                    or now - growing.time > self.coalesce_s
                    or not (start <= growing.end and old_end >= growing.start)):
                growing = None  # a new edit, from the lines before this change
                doc.base = old
            else:
                self._ring.pop()  # the edit being typed is diffed again from its start
            base = doc.base
            assert base is not None
            whole = changed_span(base, lines) if growing is not None else span
            if whole is None:  # typed, then taken back: no edit
                doc.edit, doc.base = None, None
                return None
            diff = hunk_diff(doc.path, base, lines, whole)
            if diff.count("\n") - 2 > self.max_diff_lines:
                doc.edit, doc.base = None, None
                return None
            edit = Edit(key, doc.path, doc.origin, diff, whole[0], whole[2], now, _looks_secret(diff))
            doc.edit = edit
            self._ring.append(edit)
            while len(self._ring) > self.size:
                self._ring.popleft()
            return edit

    def edits(self) -> list[Edit]:
        """The ring, oldest first."""
        with self._lock:
            return list(self._ring)

    def diffs(self, n: int, *, max_chars: int = 4000, remote: bool = False,
              file_private: Callable[[str], bool] | None = None) -> list[str]:
        """The newest ``n`` edits' diffs, oldest first, within ``max_chars`` (the oldest go first).
        ``remote``: for a prompt that leaves the machine, without private edits (marked, or of a
        file that ``file_private(origin)`` says is private; without it every file is)."""
        picked: list[str] = []
        used = 0
        for edit in reversed(self.edits()):
            if len(picked) >= n:
                break
            if remote and (edit.private or file_private is None or file_private(edit.origin)):
                continue
            if used + len(edit.diff) > max_chars:
                break
            used += len(edit.diff)
            picked.append(edit.diff)
        return picked[::-1]

    def last(self, key: str | None = None) -> Edit | None:
        """The newest edit (of ``key``, when given)."""
        with self._lock:
            return next((e for e in reversed(self._ring) if key is None or e.key == key), None)
