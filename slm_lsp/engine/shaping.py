"""Completion shaping: how much to generate, when to stop, and what to show.

* single-line when there is text right of the cursor, when the cursor is mid-statement, or when
  it sits on a blank line between existing lines of the same block (filling a hole);
* multi-line (a block) on a blank line after a block opener whose body is still empty, or at the
  end of a block; it stops when indentation returns to the enclosing level;
* stops when the output starts to repeat the suffix, never duplicates closing brackets or
  quotes already right of the cursor, and drops empty or whitespace-only results.

``CompletionShaper.stop_at(text)`` is called while tokens stream in, so generation ends as
soon as the answer is complete instead of running to ``max_tokens``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

BLOCK_OPENER = re.compile(r"(:|\{|\(|\[|=>|\bdo|\bthen|\belse|->)\s*(#.*|//.*)?$")
CLOSERS = set(")]}>\"'`;,")


def indent_of(line: str) -> int:
    expanded = line.expandtabs(4)
    return len(expanded) - len(expanded.lstrip(" "))


def _first_nonblank(lines: list[str]) -> str | None:
    return next((x for x in lines if x.strip()), None)


@dataclass
class CompletionShaper:
    multiline: bool
    base_indent: int
    """Multi-line: a line indented at or below this ends the block."""
    rest_of_line: str
    next_line: str | None
    """First non-blank line of the suffix after the cursor line."""
    line_start: str
    """Text of the cursor line before the cursor."""
    max_lines: int = 12

    @classmethod
    def for_cursor(cls, prefix: str, suffix: str, max_lines: int = 12) -> "CompletionShaper":
        line_start = prefix.rsplit("\n", 1)[-1]
        rest, _, below = suffix.partition("\n")
        below_lines = below.split("\n")
        next_line = _first_nonblank(below_lines)
        if rest.strip() or line_start.strip():
            return cls(False, 0, rest, next_line, line_start, max_lines)
        above = prefix[: len(prefix) - len(line_start)].rstrip("\n").split("\n")
        opener = _first_nonblank(list(reversed(above)))
        after_opener = opener is not None and BLOCK_OPENER.search(opener.rstrip()) is not None
        next_physical = below_lines[0] if below else None
        if after_opener:
            assert opener is not None
            base = indent_of(opener)
            # The block body already exists below: fill one line of it.
            if next_line is not None and indent_of(next_line) > base:
                return cls(False, 0, rest, next_line, line_start, max_lines)
            return cls(True, base, rest, next_line, line_start, max_lines)
        if next_physical is not None and next_physical.strip():
            return cls(False, 0, rest, next_line, line_start, max_lines)
        # End of a block (or of the file): write until the code dedents out of it.
        base = (indent_of(opener) if opener is not None else 0) - 1
        if next_line is not None:
            base = max(base, indent_of(next_line) - 1)
        return cls(True, base, rest, next_line, line_start, max_lines)

    # -- streaming stop ---------------------------------------------------------------------
    def stop_at(self, text: str) -> int | None:
        """Index where the completion ends, once ``text`` (generated so far) is known to be
        complete; None to keep generating."""
        if not self.multiline:
            nl = text.find("\n")
            return nl if nl >= 0 else None
        lines = text.split("\n")
        complete = lines[:-1]  # the last one may still grow
        offset = 0
        for i, line in enumerate(complete):
            if i > 0 and self._ends_block(line, i):
                return max(offset - 1, 0)
            if i == 0 and self._repeats_suffix(self.line_start + line):
                return 0
            offset += len(line) + 1
        if len(complete) >= self.max_lines:
            return offset - 1
        return None

    def _ends_block(self, line: str, index: int) -> bool:
        if not line.strip():
            return False
        if indent_of(line) <= self.base_indent:
            return True
        return self._repeats_suffix(line)

    def _repeats_suffix(self, line: str) -> bool:
        return self.next_line is not None and line.strip() == self.next_line.strip() and bool(line.strip())

    # -- final form -------------------------------------------------------------------------
    def finish(self, text: str, complete: bool = True) -> str:
        """The text to show. ``complete`` is False when generation was cut by a budget: then a
        multi-line answer keeps only whole lines."""
        end = self.stop_at(text + "\n") if self.multiline else self.stop_at(text)
        if end is not None:
            text = text[:end]
        elif self.multiline and not complete and "\n" in text:
            text = text[: text.rfind("\n")]
        if not self.multiline:
            text = text.rstrip("\r")
            if self._repeats_suffix(self.line_start + text) and not self.rest_of_line.strip():
                return ""
            text = self._drop_duplicate_closers(text)
            text = text.rstrip() if not self.rest_of_line.strip() else text
        else:
            text = "\n".join(x.rstrip() for x in text.rstrip().split("\n"))
            if text.startswith("\n") or not text.strip():
                text = text.lstrip("\n")
        return text if text.strip() else ""

    def _drop_duplicate_closers(self, text: str) -> str:
        """Strip a run of closing characters at the end of ``text`` that the rest of the line
        already has (e.g. ``foo(bar)`` typed before an auto-inserted ``)``)."""
        rest = self.rest_of_line.strip()
        if not rest:
            return text
        stripped = text.rstrip()
        for n in range(min(len(rest), len(stripped)), 0, -1):
            tail = stripped[-n:]
            if rest.startswith(tail) and all(c in CLOSERS for c in tail):
                return stripped[:-n]
        if stripped.endswith(rest):  # the model wrote the whole rest of the line again
            return stripped[: -len(rest)]
        return text
