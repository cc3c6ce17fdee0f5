"""Prompt assembly: token budgets, line-boundary cuts, and a layout that keeps the KV cache warm.

A prompt is three token segments:

* ``head``: what changes least first (repo context, then the prefix window). Across keystrokes
  only its end changes, so the longest common prefix with the previous head is reused as is.
* ``near`` and ``far``: the suffix (PSM layout), split after the rest of the cursor line and
  ``near_lines`` more lines. Typing inserts tokens *before* it, so plain prefix reuse would
  re-evaluate all of it on every keystroke (what makes llama-server's /infill slow here). The
  runner evaluates the short near part again and moves the far part with a position shift.
* ``tail``: the few tokens that must always follow everything (``<fim_middle>``).

Window edges are sticky: the prefix window keeps its first line and the suffix window keeps its
line count while they fit the budget, so typing does not slide the window and invalidate the
cache on every request. When the prefix overflows, the window jumps forward to 3/4 of the
budget, leaving room to type before the next jump.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Protocol

from ..context.parsing import Outline, language_of, outline
from ..context.types import ContextFile
from .fim import PREFIX_ONLY, SPM, FimTemplate

REFILL_FRACTION = 0.75
CONTEXT_STEP = 256
MAX_SCOPE_HEADERS = 4
IMPORT_SHARE = 3
"""A cut prefix window gets the file's imports back within 1/IMPORT_SHARE of the context budget."""
COUNT_CACHE_SIZE = 20000
"""Token counts of this many texts (lines, mostly) are kept, the least recently used dropped first."""
OUTLINE_MAX_LINES = 20000
"""A cut window's scopes are parsed from about this many lines above it (back to a line that starts
at column 0) and this many below; its imports from the file's first ``OUTLINE_MAX_LINES``."""
OUTLINE_CACHE_SIZE = 16
DUPLICATE_FRACTION = 0.6
DUPLICATE_NEW_LINES = 3
"""A context piece is dropped as a repeat of the visible window when at least
``DUPLICATE_FRACTION`` of its lines are visible and it adds fewer than ``DUPLICATE_NEW_LINES``
others: a near-copy from a sibling module (another provider, the other half of a loop) repeats
most visible lines, and the few it adds are the ones the model is about to write."""


class Tokenizer(Protocol):
    def tokenize(self, text: str) -> list[int]: ...

    def special(self, text: str) -> int: ...


@dataclass
class PromptRequest:
    text: str
    line: int
    column: int
    """Cursor, as a Python string index into ``text``'s line ``line``."""
    path: str = ""
    document_key: str = ""
    context: list[ContextFile] = field(default_factory=list)
    repo_name: str = ""
    context_tokens: int | None = None
    """Budget for ``context`` (None: no limit). A file shorter than its prefix/suffix budgets
    lends what it leaves unused to the context, in steps of ``CONTEXT_STEP`` tokens."""
    file_headers: bool = True
    """With a context budget: a cut prefix window gets the file's imports and the headers of its
    enclosing scopes back (taken from the context budget)."""
    language_id: str = ""
    """The editor's ``languageId``: names the parser language of a document whose path does not
    (an untitled buffer, a script without an extension)."""


@dataclass
class Prompt:
    head: list[int]
    near: list[int]
    """Suffix next to the cursor: evaluated again on every request."""
    far: list[int]
    """The rest of the suffix: moved in the KV cache instead of evaluated again."""
    tail: list[int]
    prefix: str
    """The prefix text inside the window (the current line up to the cursor at its end)."""
    suffix: str
    """The suffix text inside the window (the rest of the current line at its start)."""

    @property
    def tokens(self) -> list[int]:
        return self.head + self.near + self.far + self.tail


@dataclass
class _Window:
    start_line: int
    lines_after: int


class PromptBuilder:
    def __init__(self, template: FimTemplate, tokenizer: Tokenizer, prefix_tokens: int,
                 suffix_tokens: int, bos: list[int] | None = None, near_lines: int = 0) -> None:
        self.template = template
        self.tokenizer = tokenizer
        self.prefix_tokens = prefix_tokens
        self.suffix_tokens = suffix_tokens if template.is_fim else 0
        self.bos = bos or []
        self.near_lines = near_lines
        self._windows: dict[str, _Window] = {}
        self.last_prompt: Prompt | None = None
        """The last prompt built (benchmarks replay it through other code paths)."""
        self.last_context: list[ContextFile] = []
        """The context pieces that made it into the last prompt (status and tests read them)."""
        self.last_cut = 0
        """Context pieces the last prompt left out for lack of budget (not as repeats): a signal
        for the router that a larger prompt, on a server, would see more."""
        # Least recently used first out: a full cache never drops the lines being typed around.
        self._count_cached = functools.lru_cache(maxsize=COUNT_CACHE_SIZE)(self._count_uncached)
        self._outlines: OrderedDict[tuple[str, int, int, str], Outline] = OrderedDict()

    # -- token counting ---------------------------------------------------------------------
    def count(self, text: str) -> int:
        return self._count_cached(text)

    def _count_uncached(self, text: str) -> int:
        """For one-off probes of an over-long line: caching them would keep megabytes per keystroke."""
        return len(self.tokenizer.tokenize(text)) if text else 0

    def forget(self, document_key: str) -> None:
        self._windows.pop(document_key, None)

    def window(self, document_key: str) -> tuple[int, int] | None:
        """(first prefix line, suffix lines) of the document's last prompt, None before one."""
        w = self._windows.get(document_key)
        return None if w is None else (w.start_line, w.lines_after)

    # -- windows ----------------------------------------------------------------------------
    def _fits(self, lines: Iterable[str], budget: int) -> bool:
        """Whether ``lines`` fit ``budget`` tokens; stops counting as soon as they do not."""
        total = 0
        for x in lines:
            total += self.count(x)
            if total > budget:
                return False
        return True

    def _prefix_start(self, lines: list[str], line: int, current: int, previous: _Window | None) -> int:
        budget = self.prefix_tokens - current
        if previous is not None and previous.start_line <= line:
            if self._fits(reversed(lines[previous.start_line:line]), budget):
                return previous.start_line
        target = int(budget * REFILL_FRACTION)
        start, total = line, 0
        while start > 0 and total + self.count(lines[start - 1]) <= budget:
            start -= 1
            total += self.count(lines[start])
        if start == 0:
            return 0  # the whole file above fits: no window edge to move later
        start, total = line, 0
        while start > 0 and total + self.count(lines[start - 1]) <= target:
            start -= 1
            total += self.count(lines[start])
        return start

    def _suffix_lines(self, lines: list[str], line: int, current: int, previous: _Window | None) -> int:
        budget = self.suffix_tokens - current
        available = len(lines) - line - 1
        if previous is not None and previous.lines_after <= available:
            kept = lines[line + 1:line + 1 + previous.lines_after]
            if self._fits(kept, budget) and (previous.lines_after == available
                                             or not self._fits(kept, int(budget * REFILL_FRACTION))):
                return previous.lines_after
        n, total = 0, 0
        while n < available and total + self.count(lines[line + 1 + n]) <= budget:
            total += self.count(lines[line + 1 + n])
            n += 1
        return n

    # -- assembly ---------------------------------------------------------------------------
    def _fit_tail(self, text: str, budget: int) -> str:
        """The end of ``text`` that fits ``budget`` tokens (for a single over-long line)."""
        if self._count_uncached(text) <= budget:
            return text
        lo, hi = 0, len(text)
        while lo < hi:  # smallest cut whose remainder fits
            mid = (lo + hi) // 2
            if self._count_uncached(text[mid:]) <= budget:
                hi = mid
            else:
                lo = mid + 1
        return text[lo:]

    def _fit_head(self, text: str, budget: int) -> str:
        if self._count_uncached(text) <= budget:
            return text
        lo, hi = 0, len(text)
        while lo < hi:  # longest cut that fits
            mid = (lo + hi + 1) // 2
            if self._count_uncached(text[:mid]) <= budget:
                lo = mid
            else:
                hi = mid - 1
        return text[:lo]

    def build(self, req: PromptRequest) -> Prompt:
        # Lines end at "\n" only, like LSP positions and split_at_cursor (str.splitlines also
        # splits at form feeds, \x1c-\x1e, \x85 and \u2028/\u2029, moving the cursor to another line).
        lines = [x + "\n" for x in req.text.split("\n")]
        lines[-1] = lines[-1][:-1]  # the text after the last newline ("" when it ends with one)
        line = min(max(req.line, 0), len(lines) - 1)
        current = lines[line]
        column = min(max(req.column, 0), len(current.rstrip("\r\n")))
        before, after = current[:column], current[column:]

        before = self._fit_tail(before, self.prefix_tokens)
        after = self._fit_head(after, self.suffix_tokens) if self.suffix_tokens else ""
        previous = self._windows.get(req.document_key)
        start = self._prefix_start(lines, line, self.count(before), previous)
        n_after = self._suffix_lines(lines, line, self.count(after), previous) if self.suffix_tokens else 0
        if req.document_key:
            self._windows[req.document_key] = _Window(start, n_after)

        prefix = "".join(lines[start:line]) + before
        suffix = after + "".join(lines[line + 1:line + 1 + n_after]) if self.suffix_tokens else ""
        headers = ""
        lang = language_of(req.path, req.language_id)
        if req.context_tokens is not None and req.file_headers and start > 0 and lang is not None:
            shape = self.outline(lines, start, line, lang)
            headers = self.import_header(lines, start, req.context_tokens // IMPORT_SHARE, shape) + scope_headers(
                lines, shape)
        self.last_cut = 0
        if req.context:
            req = replace(req, context=self.fit_context(req, prefix, suffix, self.count(headers)))
        self.last_context = req.context
        self.last_prompt = self.layout(prefix, suffix, self.context_text(req), headers)
        return self.last_prompt

    def outline(self, lines: list[str], start: int, line: int, lang: str) -> Outline:
        """The imports of the file and the scopes enclosing the first non-blank line of a prefix
        window starting at ``start``, from tree-sitter (``context.parsing``), in line numbers of
        ``lines``. Parsed again only when the lines above the window change (the last
        ``OUTLINE_MAX_LINES`` of them): while typing inside it, the window's start stays
        (sticky) and so does what encloses it."""
        target = next((i for i in range(start, line + 1) if lines[i].strip()), start)
        near = max(0, target - OUTLINE_MAX_LINES)
        key = (lang, near, target, "".join(lines[near:target + 1]))
        hit = self._outlines.get(key)
        if hit is not None:
            self._outlines.move_to_end(key)
            return hit
        first = near
        while first > 0 and not _top_level(lines[first]):
            first -= 1  # a parse that starts inside a scope cannot tell what encloses the target
        found = outline("".join(lines[first:target + 1 + OUTLINE_MAX_LINES]), lang, target - first)
        scopes = tuple((a + first, b + first) for a, b in found.scopes)
        if first == 0:
            imports = found.imports
        else:  # imports are at the top, far above
            imports = outline("".join(lines[:min(start, OUTLINE_MAX_LINES)]), lang, -1).imports
        hit = Outline(imports, scopes)
        self._outlines[key] = hit
        if len(self._outlines) > OUTLINE_CACHE_SIZE:
            self._outlines.popitem(last=False)
        return hit

    def import_header(self, lines: list[str], start: int, budget: int, shape: Outline) -> str:
        """The file's import statements above a cut prefix window, whole statements in file
        order up to ``budget`` tokens: the names the code is about to use, even when the window
        no longer shows where they come from."""
        out: list[str] = []
        used = 0
        for statement in import_statements(lines, shape, start):
            cost = self.count(statement)
            if used + cost > budget:
                break
            out.append(statement)
            used += cost
        return "".join(out)

    def fit_context(self, req: PromptRequest, prefix: str, suffix: str, reserved: int = 0) -> list[ContextFile]:
        """The context pieces that fit the budget, highest priority first, in their given order;
        pieces whose lines the window already shows are dropped."""
        visible = {x.strip() for x in (prefix + suffix).split("\n") if len(x.strip()) > 3}
        kept = [f for f in req.context if not _duplicates(f.text, visible)]
        if req.context_tokens is None:
            return kept
        unused = max(0, self.prefix_tokens - self.count(prefix)) + max(0, self.suffix_tokens - self.count(suffix))
        budget = req.context_tokens + unused // CONTEXT_STEP * CONTEXT_STEP - reserved
        chosen: set[int] = set()
        order = sorted(range(len(kept)), key=lambda i: -kept[i].priority)
        cost = [self.count(f.text) + self.count(f.path) + 3 for f in kept]
        shared = 0
        for i in order:  # first the pieces with a share, within it
            if kept[i].share > 0 and shared + cost[i] <= budget * kept[i].share:
                chosen.add(i)
                shared += cost[i]
        budget -= shared
        for i in order:
            if i not in chosen and cost[i] <= budget:
                chosen.add(i)
                budget -= cost[i]
        self.last_cut = len(kept) - len(chosen)
        return [f for i, f in enumerate(kept) if i in chosen]

    def context_text(self, req: PromptRequest) -> list[int]:
        """Tokens of the repo context block that opens the head (empty without context)."""
        t, tok = self.template, self.tokenizer
        if not req.context:
            return []
        out: list[int] = []
        merged: list[ContextFile] = []
        for f in req.context:  # neighbouring pieces of one file: one block
            if merged and merged[-1].path == f.path:
                merged[-1] = ContextFile(f.path, merged[-1].text.rstrip() + "\n...\n" + f.text)
            else:
                merged.append(f)
        if t.repo_name and t.file_sep:
            out += [tok.special(t.repo_name)] + tok.tokenize((req.repo_name or "repo") + "\n")
            for f in merged:
                out += [tok.special(t.file_sep)] + tok.tokenize(f"{f.path}\n{f.text.rstrip()}\n")
            out += [tok.special(t.file_sep)] + tok.tokenize(f"{req.path or 'current'}\n")
        else:
            for f in merged:
                body = "\n".join("# " + x for x in f.text.rstrip().splitlines())
                out += tok.tokenize(f"# Path: {f.path}\n{body}\n\n")
        return out

    def layout(self, prefix: str, suffix: str, context: list[int] | None = None, headers: str = "") -> Prompt:
        """``headers``: the lines of the scopes enclosing a cut prefix window, placed before it."""
        t, tok = self.template, self.tokenizer
        context = context or []
        if t.layout == PREFIX_ONLY:
            return Prompt(self.bos + context + tok.tokenize(headers + prefix), [], [], [], prefix, "")
        pre, suf = tok.special(t.prefix), tok.special(t.suffix)
        if t.layout == SPM:
            # Suffix first: the growing prefix is at the very end, so plain prefix reuse suffices.
            head = self.bos + context + [suf] + tok.tokenize(suffix) + [pre] + tok.tokenize(headers + prefix)
            return Prompt(head, [], [], [], prefix, suffix)
        head = self.bos + context + [pre] + tok.tokenize(headers + prefix)
        cut = _near_end(suffix, self.near_lines)
        near = [suf] + tok.tokenize(suffix[:cut])
        return Prompt(head, near, tok.tokenize(suffix[cut:]), [tok.special(t.middle)], prefix, suffix)


def _duplicates(text: str, visible: set[str]) -> bool:
    lines = [x.strip() for x in text.split("\n") if len(x.strip()) > 3]
    shown = sum(x in visible for x in lines)
    return bool(lines) and shown >= DUPLICATE_FRACTION * len(lines) and len(lines) - shown < DUPLICATE_NEW_LINES


def import_statements(lines: list[str], shape: Outline, end: int) -> list[str]:
    """The text of the top-level import statements in ``shape`` that end above line ``end``."""
    return [_lines_text(lines, a, b) for a, b in shape.imports if b < end]


def scope_headers(lines: list[str], shape: Outline) -> str:
    """The header lines of the innermost ``MAX_SCOPE_HEADERS`` scopes in ``shape``, outermost first."""
    return "".join(_lines_text(lines, a, b) for a, b in shape.scopes[-MAX_SCOPE_HEADERS:])


def _top_level(text: str) -> bool:
    """Whether a line starts a top-level statement (or ends a top-level block)."""
    return bool(text.strip()) and not text[0].isspace()


def _lines_text(lines: list[str], first: int, last: int) -> str:
    text = "".join(lines[first:last + 1])
    return text if text.endswith("\n") else text + "\n"


def _near_end(suffix: str, lines: int) -> int:
    """End of the near suffix: the rest of the cursor line and ``lines`` more."""
    end = -1
    for _ in range(lines + 1):
        end = suffix.find("\n", end + 1)
        if end < 0:
            return len(suffix)
    return end + 1


def plain_fim_prompt(template: FimTemplate, tokenize: Callable[[str], list[int]],
                     special: Callable[[str], int], prefix: str, suffix: str, bos: list[int]) -> list[int]:
    """The reference PSM prompt with no windowing (baselines in the benchmarks)."""
    if not template.is_fim:
        return bos + tokenize(prefix)
    return (bos + [special(template.prefix)] + tokenize(prefix) + [special(template.suffix)]
            + tokenize(suffix) + [special(template.middle)])
