"""Completion shaping: how much to generate, when to stop, and what to show.

* single-line when there is text right of the cursor, when the cursor is mid-statement, or when
  it sits on a blank line between existing lines of the same block (filling a hole); there, a
  line that opens a block (``if x:``) brings its body along, as it is no statement on its own;
* at the end of a line of code, an answer that starts with a line break ends that line as typed
  and goes on below it: shaped as if the cursor stood on a new line there (a block after
  ``def f(x):``, one line between two lines of a block);
* multi-line (a block) on a blank line after a block opener whose body is still empty, or at the
  end of a block; it stops when indentation returns to the enclosing level;
* stops when the output starts to repeat the suffix, never duplicates closing brackets or
  quotes already right of the cursor, and drops empty or whitespace-only results.

With ``answer_length="model"``, where nothing is right of the cursor, the model says how long the
answer is: generation goes on past the first line until its end-of-generation token, cut where it
writes the code below again; only an answer that runs on (past ``max_lines``, out of tokens or
time) is shaped by the rules above. That holds on a blank line, and at the end of a line of code
for an answer that goes on below it or finishes a line that opens a block (a ``for`` header and
its body); one that finishes a plain statement still ends with its line. Models that end their
middles well (Qwen2.5-Coder-1.5B: 256 of 300 multi-line answers) lose to the rules' guess of the
length on holes of several lines; the cost is generating the longer answer on every such request.

``CompletionShaper.stop_at(text)`` is called while tokens stream in, so generation ends as
soon as the answer is complete instead of running to ``max_tokens``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from collections import deque
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

BLOCK_OPENER = re.compile(r"(:|\{|\(|\[|=>|\bdo|\bthen|\belse|->)\s*(#.*|//.*)?$")
CLOSERS = set(")]}>\"'`;,")
PY_BLOCK_OPENER = re.compile(
    r"^\s*(if|elif|else|for|while|with|try|except|finally|def|class|async|match|case)\b.*:\s*(#.*)?$")


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

    expected_indent: int = -1
    """On a blank line at column 0: the indentation the code around the cursor implies (-1:
    unknown). Small models often drop it; ``finish`` puts it back when they do."""
    stop_at_blank: bool = False
    """Multi-line at the end of a block: a blank line ends the completion too."""
    below: CompletionShaper | None = None
    """At the end of a line with code before the cursor: the shaping of an answer that starts
    with a line break (the cursor on a new line after this one). Cutting such an answer at its
    first character left nothing to show where the model had the next lines."""
    model_ends: bool = False
    """The model's end-of-generation token ends the answer (``answer_length="model"``, nothing
    right of the cursor); the rules above decide only for an answer that runs on."""

    @property
    def blank_line(self) -> bool:
        """The cursor's line holds nothing but whitespace: a line opened to write on."""
        return not self.line_start.strip() and not self.rest_of_line.strip()

    @classmethod
    def for_cursor(cls, prefix: str, suffix: str, max_lines: int = 12,
                   answer_length: str = "rules") -> "CompletionShaper":
        shaper = cls._by_rules(prefix, suffix, max_lines)
        # Text right of the cursor: the answer is the rest of this line, which the rules end.
        shaper.model_ends = answer_length == "model" and not shaper.rest_of_line.strip()
        return shaper

    @classmethod
    def _by_rules(cls, prefix: str, suffix: str, max_lines: int) -> "CompletionShaper":
        line_start = prefix.rsplit("\n", 1)[-1]
        rest, _, below = suffix.partition("\n")
        next_line = _first_nonblank(below.split("\n"))
        if rest.strip():
            return cls(False, 0, rest, next_line, line_start, max_lines)
        if line_start.strip():
            below_cursor = cls._by_rules(prefix + "\n", suffix, max_lines)  # its line_start is ""
            return cls(False, 0, rest, next_line, line_start, max_lines, below=below_cursor)
        above = prefix[: len(prefix) - len(line_start)].rstrip("\n").split("\n")
        previous = _first_nonblank(list(reversed(above)))
        after_opener = previous is not None and BLOCK_OPENER.search(previous.rstrip()) is not None
        p_indent = indent_of(previous) if previous is not None else 0
        n_indent = indent_of(next_line) if next_line is not None else -1
        if after_opener:
            # Inside a new block: its body already exists below (fill one line of it), or not.
            expected = n_indent if n_indent > p_indent else -1
            if next_line is not None and n_indent > p_indent:
                return cls(False, 0, rest, next_line, line_start, max_lines, expected)
            return cls(True, p_indent, rest, next_line, line_start, max_lines, expected)
        next_physical = below.split("\n", 1)[0] if below else ""
        if next_line is not None and n_indent >= p_indent and next_physical.strip():
            # The next line is more code of the same block: the hole is one line of it.
            return cls(False, 0, rest, next_line, line_start, max_lines, min(p_indent, n_indent))
        # A gap before the code below, the end of a block, or of the file: write a paragraph of
        # the block at the cursor's level; stop at a dedent below it or at a blank line.
        level = len(line_start.expandtabs(4)) if line_start else p_indent
        expected = p_indent if p_indent > max(n_indent, 0) or (next_line is not None and n_indent == p_indent) else -1
        return cls(True, level - 1, rest, next_line, line_start, max_lines, expected, True)

    # -- streaming stop ---------------------------------------------------------------------
    def stop_at(self, text: str) -> int | None:
        """Index where the completion ends, once ``text`` (generated so far) is known to be
        complete; None to keep generating."""
        if self._model_decides(text):
            if self._runs_on(text):
                return len(text)  # all of it: ``finish`` sees it ran on and applies the rules
            return self._suffix_cut(text)
        return self._rules_stop(text)

    def model_decides(self, text: str) -> bool:
        """Whether ``text`` is an answer whose length the model decides (see ``_model_decides``)."""
        return self._model_decides(text)

    def _model_decides(self, text: str) -> bool:
        """Whether the model's end of answer applies to ``text``: on a blank line always; at the
        end of a line of code when the answer goes on below it, or when the line it finishes
        opens a block (``for x in`` + ``xs:``, then the body). Finishing a plain statement, the
        answer still ends with its line: that is most requests while typing, and going on past
        it would cost each of them the longer generation."""
        if not self.model_ends:
            return False
        if not self.line_start.strip() or text.startswith("\n"):
            return True
        first, newline, _ = text.partition("\n")
        return not newline or BLOCK_OPENER.search((self.line_start + first).rstrip()) is not None

    def _runs_on(self, text: str) -> bool:
        """Past ``max_lines`` lines below the cursor line (the model did not end its answer)."""
        return text.count("\n") > self.max_lines

    def _suffix_cut(self, text: str) -> int | None:
        """Where the model starts writing the code below the cursor again: the first complete
        line equal to the suffix's next non-blank line (its middle ended before it)."""
        offset = 0
        for i, line in enumerate(text.split("\n")[:-1]):
            if self._repeats_suffix(line if i else self.line_start + line):
                return max(offset - 1, 0)
            offset += len(line) + 1
        return None

    def _rules_stop(self, text: str) -> int | None:
        if self.below is not None and text.startswith("\n"):
            end = self.below.stop_at(text[1:])
            return None if end is None else end + 1
        if not self.multiline:
            nl = text.find("\n")
            if nl >= 0 and self._opens_block(text[:nl]):  # the block it opens ends it
                return self._block_end(text, indent_of(self.line_start + text[:nl]), True)
            return nl if nl >= 0 else None
        return self._block_end(text, self.base_indent, self.stop_at_blank)

    def _block_end(self, text: str, base_indent: int, stop_at_blank: bool) -> int | None:
        """End of a block of lines: before the first later line indented at or below
        ``base_indent`` (or blank, with ``stop_at_blank``) or repeating the suffix, or after
        ``max_lines``; None while it may still grow."""
        lines = text.split("\n")
        complete = lines[:-1]  # the last one may still grow
        offset = 0
        for i, line in enumerate(complete):
            if i >= self.max_lines:  # several lines may arrive at once (e.g. a "\n\n" token)
                return offset - 1
            if i > 0 and self._ends_block(line, base_indent, stop_at_blank):
                return max(offset - 1, 0)
            if i == 0 and self._repeats_suffix(self.line_start + line):
                return 0
            offset += len(line) + 1
        if len(complete) >= self.max_lines:
            return offset - 1
        return None

    def _opens_block(self, first: str) -> bool:
        """On a blank line, a one-line answer that opens an indented block (``if x:``) is no
        statement on its own: unless the code below is indented under it already (the body
        exists), the answer goes on to the block's body. Mid-statement it stays one line (the
        user is typing that line; a body would cost latency on every keystroke)."""
        line = self.line_start + first
        if not self.blank_line or PY_BLOCK_OPENER.search(line) is None:
            return False
        return self.next_line is None or indent_of(self.next_line) <= indent_of(line)

    def _ends_block(self, line: str, base_indent: int, stop_at_blank: bool) -> bool:
        if not line.strip():
            return stop_at_blank
        if indent_of(line) <= base_indent:
            return True
        return self._repeats_suffix(line)

    def repeats_code_below(self, line: str) -> bool:
        """Whether ``line``, a whole line written on the cursor's blank line, is the first line of
        code below the cursor again (an answer that adds nothing: shown, it would be empty)."""
        return self._repeats_suffix(self.line_start + line)

    def _repeats_suffix(self, line: str) -> bool:
        return self.next_line is not None and line.strip() == self.next_line.strip() and bool(line.strip())

    # -- final form -------------------------------------------------------------------------
    def finish(self, text: str, complete: bool = True) -> str:
        """The text to show. ``complete`` is False when generation was cut by a budget: then a
        multi-line answer keeps only whole lines."""
        if self.ended_by_model(text, complete):
            return self._finish_as_ended(text)
        if self.below is not None and text.startswith("\n"):
            lines_below = self.below.finish(text[1:], complete)
            return "\n" + lines_below if lines_below else ""
        end = self._rules_stop(text + "\n") if self.multiline else self._rules_stop(text)
        if end is not None:
            text = text[:end]
        elif not complete and "\n" in text:  # a block cut by the budget: whole lines only
            text = text[: text.rfind("\n")]
        text = self._repair_indent(text)
        if not self.multiline and "\n" in text:  # one line that opened a block, with its body
            text = "\n".join(x.rstrip() for x in text.rstrip().split("\n"))
        elif not self.multiline:
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

    def ended_by_model(self, text: str, complete: bool = True) -> bool:
        """Whether the model decides this answer's length: ``answer_length="model"`` applies
        here, and the model ended the answer (its end-of-generation token, or the code below
        written again) within ``max_lines``."""
        return self._model_decides(text) and complete and not self._runs_on(text)

    def _finish_as_ended(self, text: str) -> str:
        """The answer the model ended itself, up to where it writes the code below again."""
        end = self._suffix_cut(text + "\n")
        text = "\n".join(x.rstrip() for x in (text if end is None else text[:end]).rstrip().split("\n"))
        if self.below is not None and text.startswith("\n"):  # the lines below a line of code
            text = "\n" + self.below._repair_indent(text[1:])
        elif not self.line_start.strip():
            text = self._repair_indent(text.lstrip("\n"))
        return text if text.strip() else ""

    def _repair_indent(self, text: str) -> str:
        """Give back the indentation a model dropped on a blank line (it wrote the first line at
        column 0 where the surrounding block is indented): shift every line by it."""
        if self.line_start or self.expected_indent <= 0 or not text.strip():
            return text
        first = text.lstrip("\n")
        if first[:1] in (" ", "\t"):
            return text
        pad = " " * self.expected_indent
        return "\n".join(pad + x if x.strip() else x for x in text.split("\n"))

    def _drop_duplicate_closers(self, text: str) -> str:
        """Strip a run of closing characters at the end of ``text`` that the rest of the line
        already has (e.g. ``foo(bar)`` typed before an auto-inserted ``)``): only closers the
        line has too many of, so ``len(set(s.lower())`` + ``)`` keeps its own ``)``."""
        rest = self.rest_of_line.strip()
        if not rest:
            return text
        stripped = text.rstrip()
        line = self.line_start + stripped + rest
        for n in range(min(len(rest), len(stripped)), 0, -1):
            tail = stripped[-n:]
            if rest.startswith(tail) and all(c in CLOSERS for c in tail) and _surplus(line, tail):
                return stripped[:-n]
        if stripped.endswith(rest) and (not all(c in CLOSERS for c in rest) or _surplus(line, rest)):
            return stripped[: -len(rest)]  # the model wrote the whole rest of the line again
        return text


BRACKETS = {")": "(", "]": "[", "}": "{"}
QUOTES = set("\"'`")


def _surplus(line: str, closers: str) -> bool:
    """Whether ``line`` has each bracket of ``closers`` that many times more closed than opened,
    and an unpaired count of each quote in them (other closers, ``;`` ``,`` ``>``, always)."""
    for closer in set(closers):
        wanted = closers.count(closer)
        if closer in BRACKETS:
            if line.count(closer) - line.count(BRACKETS[closer]) < wanted:
                return False
        elif closer in QUOTES and line.count(closer) % 2 == 0:
            return False
    return True


class AnswerLengthChoice:
    """Who ends the answers under ``completion.answer_length: auto``: the model while it ends
    them itself, the rules once it runs on.

    Models differ here. Qwen2.5-Coder-1.5B ended 297 of 300 single-line and 275 of 300
    multi-line answers with its end-of-generation token, and its own length beat the rules 87
    to 1 on the multi-line set; the 0.5B Instruct ended about half and ran on to the token cap in
    the rest (70.7 tokens an answer where the rules stop at 9) and lost 7 to 2 on single-line.
    So the first ``SAMPLE`` answers the model could end are its own; while at least
    ``MIN_SHARE`` of the last ``SAMPLE`` of them ended by the model, it keeps deciding; else the
    rules decide, and after ``PROBE_EVERY`` requests the model decides once more, to notice a
    change (another model or adapter starts afresh: ``reset``). A run-on answer costs its
    request up to ``completion.max_tokens`` or the time budget. Replayed on the recorded
    HumanEval runs (README, *Who ends the answer*), the 1.5B's share never fell below three in
    four and the 0.5B's was under it after its first 32 answers (16 and 22 of 32); a window of
    16 at four in five sent the 1.5B to the rules on a stretch of long multi-line holes, where
    it loses 53 tasks.

    With a ``store`` (the language server's: a JSON file in the cache directory) the last answers
    are remembered per model and adapter file across restarts, so a model that runs on costs its
    first answers once, not in every session. Benchmarks start afresh (no store).

    Owned by one thread (the engine worker, or a remote lane's); ``snapshot`` is safe anywhere."""

    SAMPLE = 32
    MIN_SHARE = 0.75
    PROBE_EVERY = 32
    KEEP_MODELS = 16
    """Most model and adapter files remembered in the store (the least recently used go)."""

    def __init__(self, store: Path | None = None) -> None:
        self.store = store
        self._key = ""
        self._ended: deque[bool] = deque(maxlen=self.SAMPLE)
        self._since_model = 0
        self._summary: tuple[str, int, int] = ("model", 0, 0)

    def reset(self, key: str = "") -> None:
        """A new model or adapter (``key`` names the files): its answers are counted afresh, or
        from what the store remembers of it."""
        self._key = key
        self._ended.clear()
        self._since_model = 0
        if self.store is not None and key:
            remembered = self._read().get(key, [])
            self._ended.extend(bool(x) for x in remembered[-self.SAMPLE:] if isinstance(x, (bool, int)))
        self._summary = (self.mode("auto"), sum(self._ended), len(self._ended))

    def _read(self) -> dict[str, list]:
        """The store's answers per key; empty when it is missing or unreadable (it is a cache)."""
        assert self.store is not None
        try:
            data = json.loads(self.store.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, list)} \
            if isinstance(data, dict) else {}

    def _save(self) -> None:
        """Write this key's answers to the store (atomically: a temporary file renamed), this
        key last so that it is the most recently used; a failure costs only the memory."""
        if self.store is None or not self._key:
            return
        data = self._read()
        data.pop(self._key, None)
        data[self._key] = [int(x) for x in self._ended]
        data = dict(list(data.items())[-self.KEEP_MODELS:])
        tmp = None
        try:
            self.store.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=self.store.name + ".", suffix=".tmp", dir=self.store.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(data, fh)
            os.replace(tmp, self.store)
        except OSError as exc:
            log.warning("could not remember the answer lengths in %s: %s", self.store, exc)
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass

    def mode(self, setting: str) -> str:
        """``rules`` or ``model`` for the next request under ``completion.answer_length``."""
        if setting != "auto":
            return setting
        if len(self._ended) < self.SAMPLE or sum(self._ended) >= self.MIN_SHARE * self.SAMPLE:
            return "model"
        return "model" if self._since_model >= self.PROBE_EVERY else "rules"

    def record(self, setting: str, shaper: CompletionShaper, text: str, complete: bool) -> None:
        """After a request shaped by ``shaper`` generated ``text`` (``complete``: it ended by
        itself, not by a token or time budget)."""
        if setting != "auto":
            return
        if shaper.model_decides(text):
            self._ended.append(shaper.ended_by_model(text, complete))
            self._since_model = 0
            self._save()
        else:
            self._since_model += 1
        self._summary = (self.mode(setting), sum(self._ended), len(self._ended))

    def snapshot(self, setting: str) -> dict[str, object]:
        """What ``slm.status`` shows: the setting, what the next answer uses, and how many of the
        last answers the model could end it ended."""
        using, ended, of = self._summary
        return {"setting": setting, "using": setting if setting != "auto" else using, "ended": ended, "of": of}
