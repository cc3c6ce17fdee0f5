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
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Protocol

from ..context.types import ContextFile
from .fim import PREFIX_ONLY, SPM, FimTemplate

REFILL_FRACTION = 0.75
CONTEXT_STEP = 256
MAX_SCOPE_HEADERS = 4
IMPORT_SHARE = 3
COUNT_CACHE_SIZE = 20000
"""Token counts of this many texts (lines, mostly) are kept, the least recently used dropped first."""
"""A cut prefix window gets the file's imports back within 1/IMPORT_SHARE of the context budget."""
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
        # Least recently used first out: a full cache never drops the lines being typed around.
        self._count_cached = functools.lru_cache(maxsize=COUNT_CACHE_SIZE)(self._count_uncached)

    # -- token counting ---------------------------------------------------------------------
    def count(self, text: str) -> int:
        return self._count_cached(text)

    def _count_uncached(self, text: str) -> int:
        """For one-off probes of an over-long line: caching them would keep megabytes per keystroke."""
        return len(self.tokenizer.tokenize(text)) if text else 0

    def forget(self, document_key: str) -> None:
        self._windows.pop(document_key, None)

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
        if req.context_tokens is not None and req.file_headers and start > 0:
            headers = self.import_header(lines, start, req.context_tokens // IMPORT_SHARE) + scope_headers(
                lines, start, line)
        if req.context:
            req = replace(req, context=self.fit_context(req, prefix, suffix, self.count(headers)))
        self.last_context = req.context
        self.last_prompt = self.layout(prefix, suffix, self.context_text(req), headers)
        return self.last_prompt

    def import_header(self, lines: list[str], start: int, budget: int) -> str:
        """The file's import statements above a cut prefix window, whole statements in file
        order up to ``budget`` tokens: the names the code is about to use, even when the window
        no longer shows where they come from."""
        out: list[str] = []
        used = 0
        for statement in import_statements(lines[:start]):
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


IMPORT_STARTS = ("import ", "from ", "use ", "pub use ", "#include", "import(", "import{", "using ", "require ")


def import_statements(lines: list[str]) -> list[str]:
    """Top-level import statements (Python, JS/TS, Go, Rust, Java, C/C++) among ``lines``,
    each with its continuation lines (until brackets balance)."""
    out: list[str] = []
    i = 0
    while i < len(lines):
        text = lines[i]
        if not text.startswith(IMPORT_STARTS) or (text.startswith("from ") and " import" not in text
                                                  and not text.rstrip().endswith("\\")):
            i += 1
            continue
        statement = [text]
        depth = _depth(text)
        while (depth > 0 or statement[-1].rstrip().endswith("\\")) and i + 1 < len(lines) and len(statement) < 200:
            i += 1
            statement.append(lines[i])
            depth += _depth(lines[i])
        out.append("".join(statement) if statement[-1].endswith("\n") else "".join(statement) + "\n")
        i += 1
    return out


def _depth(text: str) -> int:
    return text.count("(") + text.count("{") - text.count(")") - text.count("}")


def scope_headers(lines: list[str], start: int, line: int) -> str:
    """The header lines (``class``/``def``/function lines) of the scopes that enclose a prefix
    window starting at ``start``, found by indentation, outermost first ("" when not cut)."""
    if start <= 0:
        return ""
    first = next((x for x in lines[start:line + 1] if x.strip()), "")
    threshold = len(first) - len(first.lstrip())
    found: list[str] = []
    for j in range(start - 1, -1, -1):
        text = lines[j]
        stripped = text.strip()
        if threshold == 0 or len(found) >= MAX_SCOPE_HEADERS:
            break
        if not stripped or stripped[0] in ")]}#@/*" or stripped.startswith(("//", "--")):
            continue
        indent = len(text) - len(text.lstrip())
        if indent < threshold:
            found.append(text if text.endswith("\n") else text + "\n")
            threshold = indent
    return "".join(reversed(found))


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
