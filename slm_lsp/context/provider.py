"""Repo-aware context for one completion request: the sources, their budgets, and stickiness.

Sources, each run under its own time budget and guarded (a failing or slow one is skipped):
recent edits (a ring fed from didChange), windows of the same file away from the cursor,
similar snippets of other files, and definitions of the names used near the cursor. The scope
headers of a cut prefix are added by the prompt builder. The result is ordered for the KV cache:
the parts that change least come first (recent, same file, similar), the definitions last,
nearest the file; within a scope the whole context is *sticky*: it is computed again only when
the cursor enters another scope, a file it was drawn from changes in the index, or the code now
uses a name whose definition it lacks. So typing inside a function reuses the cached context
tokens on every keystroke.

Every piece is marked ``private`` when its file or its text must not go into a remote prompt
(``privacy.PrivacyFilter``): marked, not dropped, so local prompts keep it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import TypeVar

from .index import ContextIndex, Snapshot, imported_names
from .parsing import Import, language_of, parse_source
from .privacy import PrivacyFilter
from .sources.definitions import Found, find_definitions, is_test_or_example, resolve_import, same_family
from .sources.recent import Chunk, RecentChunks
from .sources.similar import RECENT_BONUS, STRONG_SIMILAR, Snippet, own_snippets, query_tokens, similar_snippets
from .sources.windows import WindowIndex
from .types import ContextFile

log = logging.getLogger(__name__)

SOURCES = ("definitions", "similar", "same_file", "recent")
SCOPE_START = re.compile(r"^(?:[A-Za-z_@]|\S.*[({]\s*$)")
MAX_SIMILAR = 8
MAX_CANDIDATE_FILES = 24
MAX_SIBLINGS = 8
MAX_DEFINITIONS = 24
STRONG_USE = 0.1
"""A definition scored above this (its name is used near the cursor) must be in the context..."""
STICKY_RANK = MAX_DEFINITIONS // 2
"""...if it ranks among the first ``STICKY_RANK``. Near the cut (``MAX_DEFINITIONS``) the ranking
churns as the cursor moves, since the scores weigh uses by their distance: two definitions swapping
places there recomputed the context, and re-evaluated its KV cells, every few keystrokes."""
SIMILAR_SHARE = 0.65
"""Windows of this file and similar snippets of others are kept before the definitions, best
first, within this share of the budget: code that already makes the calls this file is about to
make is worth more per token than the signatures (on the 30 cross-file lines of the openai-agents
evaluation, the exact line was in the kept context of 6 tasks instead of 3 once every snippet had a
share, not only the strongest two), but must not crowd them out. 0.65 rather than 0.5 since the
same file's windows came to share it: at 0.5 they pushed out two of those six."""
STRONG_SNIPPETS = 2
"""A near-copy (``STRONG_SIMILAR``) among the best ``STRONG_SNIPPETS`` also competes with the
definitions for the rest of the budget as their equal; the others only fill what the definitions
leave."""
MAX_SAME_FILE = 4
SAME_FILE_PRIORITY = 0.7
"""Windows of the file being edited, away from the cursor, share the similar snippets' budget: of
the names in the evaluation's hidden lines that the prompt's own window did not show, 77%
(openai-agents), 67% (smolagents) and 83% (httpx) occur elsewhere in the same file, against 46%,
41% and 58% in the context from other files. They rank after the strong snippets of other files
and a shade below weak ones of equal similarity, since a near-copy in another file is worth more:
ranked first (2.5), they took smolagents from 4 to 8 exact lines of 23 but pushed out such a copy
and cost openai-agents 3 of 30; ranked here, 8 of 23 and 8 of 30 (1.5B, cross-file lines)."""
INLINE_SYNC_FILES = 8
"""Up to this many changed files, a request brings the window index up to date itself."""
MAX_SOURCE_LINES = 4000
"""The sources read a file being edited through this many lines around the cursor: they scan
what they read in Python on every request (the names used, windows like the cursor's), and
threads that compute hold the GIL the event loop needs; on a 50,000-line file the whole scan
took 70 ms per request and stalled the loop past 100 ms."""
CURRENT_PARSE_CHARS = 100_000
"""A file being edited that the index does not hold parsed (not indexed, or too large) is parsed
for its imports and own names up to about this many characters, whole lines: it is parsed again
whenever that part changed, and tree-sitter holds the GIL while it parses (150 ms for 50,000
lines, a stall of the server's event loop on every request). Imports are at the top; names
defined further down only go missing from the file's own names."""

T = TypeVar("T")


@dataclass
class ContextOptions:
    sources: list[str] = field(default_factory=lambda: list(SOURCES))
    time_budget_ms: int = 50
    """Per source."""
    max_similar: int = MAX_SIMILAR


@dataclass
class ContextResult:
    files: list[ContextFile]
    repo_name: str = ""
    repo_path: str = ""
    reused: bool = False
    """The sticky context of the previous request was kept as it was."""
    timings_ms: dict[str, float] = field(default_factory=dict)


@dataclass
class _Sticky:
    scope: str
    head: list[ContextFile]
    defs: list[ContextFile]
    def_keys: set[tuple[str, str, str]]
    versions: dict[str, int]
    files: list[ContextFile] = field(default_factory=list)
    privacy: int = 0
    """The privacy filter's generation its pieces were marked under: stale once it changes."""


def scope_key(lines: list[str], line: int) -> str:
    """The nearest unindented line that opens a scope at or above ``line`` (a def, a class, a
    function signature): requests in the same top-level scope share their context."""
    for j in range(min(line, len(lines) - 1), max(-1, line - 2000), -1):
        text = lines[j]
        if text and not text[0].isspace() and SCOPE_START.match(text) and not text.startswith(("#", "//", "}")):
            return f"{j}:{text.strip()[:120]}"
    return "0:"


class ContextProvider:
    def __init__(self, options: ContextOptions | None = None) -> None:
        self.options = options or ContextOptions()
        self.indexes: list[ContextIndex] = []
        self.recent = RecentChunks()
        self.privacy = PrivacyFilter()
        """Decides which pieces are private; the workspace service sets its folders and patterns."""
        self._sticky: dict[str, _Sticky] = {}
        self._parsed: dict[str, tuple[str, list[Import], set[str]]] = {}
        self._windows: dict[int, WindowIndex] = {}
        """Per index (by id): its whole-repository window index."""
        self._pool = ThreadPoolExecutor(max_workers=3, thread_name_prefix="slm-context")
        self._lock = threading.Lock()
        self.last: ContextResult | None = None
        """The last result (status and tests read it)."""

    # -- workspace --------------------------------------------------------------------------
    def add_index(self, index: ContextIndex) -> None:
        self.set_indexes([*self.indexes, index])

    def set_indexes(self, indexes: list[ContextIndex]) -> None:
        """Replace the indexes (settings changed). The list is replaced, not changed in place:
        a request running in another thread keeps reading the one it started with."""
        windows = {id(i): self._windows.get(id(i)) or WindowIndex() for i in indexes}
        self._windows = windows
        self.indexes = list(indexes)
        self._sticky.clear()

    def windows(self, index: ContextIndex, wait: bool = False) -> WindowIndex | None:
        """The whole-repository window index of ``index``, brought up to its current snapshot:
        a few changed files now, many (the first build, a branch switch) in the background, or
        all now with ``wait`` (the evaluation and benchmarks). None until the first sync is done."""
        windows = self._windows.get(id(index))
        if windows is None:
            return None
        snap = index.snapshot
        if wait:  # waits for a background sync in progress, then brings in what it missed
            windows.sync(snap, index.read_text)
            windows.version = snap.version
        elif windows.version != snap.version and not windows.syncing:
            stale, gone = windows.changed(snap)
            if windows.synced.is_set() and len(stale) + len(gone) <= INLINE_SYNC_FILES:
                windows.sync(snap, index.read_text)
            else:
                windows.start_sync(snap, index.read_text)
            windows.version = snap.version
        return windows if windows.synced.is_set() else None

    def locate(self, path: str) -> tuple[ContextIndex | None, str]:
        """The index whose root holds ``path`` (the deepest one) and the path relative to it."""
        best: tuple[ContextIndex | None, str] = (None, "")
        for index in self.indexes:
            rel = index.relative(path)
            if rel is not None and (best[0] is None or len(index.root) > len(best[0].root)):
                best = (index, rel)
        return best

    def note_edit(self, path: str, text: str | Sequence[str], line: int) -> None:
        """An edit at ``line`` of ``path`` (its whole text, or its lines) for the recent ring."""
        index, rel = self.locate(path)
        private = self.privacy.path_reason(path) is not None
        self.recent.note(rel or path, text, line, private, origin=path)

    def configure_privacy(self, roots: Sequence[str] | None = None, deny_files: Sequence[str] | None = None) -> None:
        """Set the workspace folders and ``remote.deny_files`` of the privacy filter (None:
        unchanged). When that changes what is private, the ring is marked again and the sticky
        contexts, marked by the old rules, are computed again."""
        if self.privacy.configure(roots, deny_files):  # the sticky contexts go stale by its generation
            self.recent.remark(lambda origin: self.privacy.path_reason(origin) is not None)

    def forget(self, key: str) -> None:
        self._sticky.pop(key, None)
        self._parsed.pop(key, None)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- sources ----------------------------------------------------------------------------
    def _run(self, name: str, fn: Callable[[float], T], default: T, timings: dict[str, float]) -> T:
        """``fn(deadline)`` in a worker thread; its result, or ``default`` when it fails or is late."""
        if name not in self.options.sources:
            return default
        budget = self.options.time_budget_ms / 1000
        t0 = time.monotonic()
        try:
            result = self._pool.submit(fn, t0 + budget).result(timeout=budget * 2)
            _check_encodable(result)
        except FutureTimeout:
            log.warning("context source %s took more than %.0f ms: skipped", name, budget * 2000)
            result = default
        except Exception:
            log.exception("context source %s failed: skipped", name)
            result = default
        timings[name] = (time.monotonic() - t0) * 1000
        return result

    def _current(self, key: str, snap: Snapshot, rel: str, text: str) -> tuple[list[Import], set[str]]:
        """Imports and own definitions of the file being edited (the index's live buffer entry,
        else parsed now and kept for this text)."""
        entry = snap.entry(rel)
        if entry is not None and entry.buffer:
            return entry.imports, {d.name for d in entry.definitions}
        lang = language_of(rel)
        if lang is None:
            return [], set()
        if len(text) > CURRENT_PARSE_CHARS:  # the head, in whole lines: imports are at the top
            text = text[:text.rfind("\n", 0, CURRENT_PARSE_CHARS) + 1]
        digest = hashlib.blake2b(text.encode("utf-8", "replace"), digest_size=16).hexdigest()
        hit = self._parsed.get(key)
        if hit is not None and hit[0] == digest:
            return hit[1], hit[2]
        parsed = parse_source(text, lang)
        own = {d.name for d in parsed.definitions}
        self._parsed[key] = (digest, parsed.imports, own)
        return parsed.imports, own

    # -- the request ------------------------------------------------------------------------
    def gather(self, key: str, path: str, text: str, line: int, hide_current: bool = False) -> ContextResult:
        """Context for a request at ``line`` of ``path`` (whose current text is ``text``).
        ``hide_current`` leaves the file itself out of the index (the evaluation's setting)."""
        timings: dict[str, float] = {}
        privacy = self.privacy.generation  # before marking: a change meanwhile makes this stale
        index, rel = self.locate(path)
        if index is None:
            recent = self._recent_part(path, line, timings)
            result = ContextResult(recent, "", "", timings_ms=timings)
            self.last = result
            return result
        snap = index.snapshot.hide(rel) if hide_current else index.snapshot
        lines = text.split("\n")
        scope = scope_key(lines, line)
        full_line = line
        if len(lines) > MAX_SOURCE_LINES:  # the sources see the part of a huge file around the cursor
            first = max(0, min(line - MAX_SOURCE_LINES // 2, len(lines) - MAX_SOURCE_LINES))
            lines, line = lines[first:first + MAX_SOURCE_LINES], line - first
        lang = language_of(rel) or ""
        imports: list[Import] = []
        own: set[str] = set()
        try:
            if lang:
                imports, own = self._current(key, snap, rel, text)
        except Exception:
            log.exception("could not parse %s for its imports", rel)
        found: list[Found] = self._run(
            "definitions", lambda d: find_definitions(snap, rel, lang, lines, line, imports, own, d),
            [], timings) if lang else []
        found = found[:MAX_DEFINITIONS]
        sticky = self._sticky.get(key)
        fresh = sticky is not None and sticky.scope == scope and sticky.privacy == privacy and all(
            (e.version if (e := snap.entry(p)) is not None else -1) == v for p, v in sticky.versions.items())
        if sticky is not None and fresh:
            strong = {f.key for f in found[:STICKY_RANK] if f.score >= STRONG_USE}
            if strong <= sticky.def_keys:
                result = ContextResult(sticky.files, index.name, rel, True, timings)
                self.last = result
                return result
            head = sticky.head  # only the definitions part changes: the head keeps its KV cells
        else:
            head = self._recent_part(rel, full_line, timings) + self._mark(index, (
                self._same_file_part(rel, lines, line, timings)
                + self._similar_part(index, snap, rel, lines, line, imports, lang, timings)))
        defs = self._mark(index, _definition_files(found))
        # The file's own windows do not make it stale: its buffer changes on every keystroke.
        versions = {p: e.version for p in {f.path for f in head} | {f.path for f in found}
                    if p != rel and (e := snap.entry(p)) is not None}
        state = _Sticky(scope, head, defs, {f.key for f in found}, versions, head + defs, privacy)
        self._sticky[key] = state
        result = ContextResult(state.files, index.name, rel, False, timings)
        self.last = result
        return result

    def _recent_part(self, rel: str, line: int, timings: dict[str, float]) -> list[ContextFile]:
        none: list[Chunk] = []
        chunks = self._run("recent", lambda d: self.recent.chunks(rel, (line - 64, line + 64)), none, timings)
        return [ContextFile(c.path, c.text, 0.5 + 0.01 * i, private=c.private) for i, c in enumerate(chunks)]

    def _mark(self, index: ContextIndex, files: list[ContextFile]) -> list[ContextFile]:
        """Mark the pieces drawn from ``index`` that are private by their file or their text."""
        for f in files:
            f.private = f.private or self.privacy.private(os.path.join(index.root, f.path), f.text)
        return files

    def _same_file_part(self, rel: str, lines: list[str], line: int, timings: dict[str, float]) -> list[ContextFile]:
        none: list[Snippet] = []
        snippets = self._run("same_file", lambda d: own_snippets(rel, lines, line, query_tokens(lines, line),
                                                                 MAX_SAME_FILE), none, timings)
        return [ContextFile(s.path, s.text, SAME_FILE_PRIORITY + s.score, SIMILAR_SHARE) for s in reversed(snippets)]

    def _similar_part(self, index: ContextIndex, snap: Snapshot, rel: str, lines: list[str], line: int,
                      imports: list[Import], lang: str, timings: dict[str, float]) -> list[ContextFile]:
        def run(deadline: float) -> list[Snippet]:
            recent = {c.path for c in self.recent.chunks()} | set(index.open_buffers())
            query = query_tokens(lines, line)
            whole = self.windows(index)
            if whole is not None:
                family = lang or language_of(rel)
                return whole.query(
                    query, self.options.max_similar,
                    exclude=lambda p: p == rel or snap.entry(p) is None or not same_family(language_of(p), family),
                    bonus=lambda p: RECENT_BONUS if p in recent else 1.0, read_text=index.read_text)
            candidates: list[str] = []

            def push(p: str) -> None:
                if (p != rel and p not in candidates and snap.entry(p) is not None
                        and same_family(language_of(p), lang or language_of(rel))):
                    candidates.append(p)

            for p in sorted(recent):
                push(p)
            for p in import_siblings(snap, rel, imports, deadline)[:MAX_SIBLINGS]:
                push(p)
            if lang:
                for imp in imports:
                    for p in resolve_import(snap, rel, lang, imp)[:2]:
                        push(p)
            folder = rel.rsplit("/", 1)[0] + "/" if "/" in rel else ""
            for p in snap.paths():
                if len(candidates) >= MAX_CANDIDATE_FILES:
                    break
                if p.startswith(folder) and "/" not in p[len(folder):]:
                    push(p)
            return similar_snippets(query, candidates[:MAX_CANDIDATE_FILES], index.read_text, recent,
                                    self.options.max_similar, deadline)

        none: list[Snippet] = []
        snippets = self._run("similar", run, none, timings)
        snippets.sort(key=lambda s: s.score)  # the best nearest the file
        # All of them first within their share; beyond it the best, when they are really alike,
        # compete with the definitions of names used near the cursor, the rest fill what is left.
        strong = [s for s in snippets[-STRONG_SNIPPETS:] if s.score >= STRONG_SIMILAR]
        return [ContextFile(s.path, s.text, (2.0 if s in strong else 0.8) + s.score, SIMILAR_SHARE)
                for s in snippets]


def _check_encodable(result: object) -> None:
    """Raise when a piece of a source's result cannot be encoded as UTF-8 (a lone surrogate):
    the tokenizer would fail on it, and with it the whole prompt."""
    for item in result if isinstance(result, list) else ():
        text = getattr(item, "text", None)
        if isinstance(text, str) and not text.isascii():
            text.encode("utf-8")  # UnicodeEncodeError: the source is skipped


def import_siblings(snap: Snapshot, rel: str, imports: list[Import], deadline: float) -> list[str]:
    """Other files that import the same names as this one, most shared first: code that calls
    the same APIs is where the calls this file is about to make are already written."""
    mine = imported_names(imports)
    if not mine:
        return []
    scored: list[tuple[int, str]] = []
    for p in snap.paths():
        if time.monotonic() > deadline:
            break
        entry = snap.entry(p)
        if p == rel or entry is None or is_test_or_example(p):
            continue
        shared = len(mine & entry.imported_names)
        if shared >= 2:
            scored.append((shared, p))
    scored.sort(key=lambda x: (-x[0], x[1]))
    return [p for _, p in scored]


def _definition_files(found: list[Found]) -> list[ContextFile]:
    """One piece per definition, grouped by file (source order inside a file); the files with the
    best-used names come last, nearest the cursor."""
    by_path: dict[str, list[Found]] = {}
    for f in found:
        by_path.setdefault(f.path, []).append(f)
    groups = sorted(by_path.values(), key=lambda fs: max(f.score for f in fs))
    out: list[ContextFile] = []
    for fs in groups:
        for f in sorted(fs, key=lambda f: f.definition.line):
            out.append(ContextFile(f.path, f.text, 1.0 + 2.0 * f.score))
    return out
