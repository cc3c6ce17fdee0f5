"""Next-edit suggestions: after the user edits, the model rewrites the region around the cursor
the way the next edit would (the rename continued on the next line, the new parameter passed at
the call below), or says that no edit is likely.

The format, after Zed's Zeta: the recent edits as small unified diffs, the editable region (some
20-30 whole lines around the cursor) between two markers with a cursor marker inside, and as the
answer the region rewritten between the same markers, or a distinct no-edit marker. Markers are
plain text (no model has them as special tokens, and a finetune learns them as text):

    ### Repository context        (only when there is some)
    ...
    ### Recent edits
    --- a/app.py
    +++ b/app.py
    @@ -3 +3 @@
    -    total = 0
    +    count = 0

    ### Excerpt of app.py
    <|region_start|>
    def tally(items):
        count = 0<|cursor|>
        for item in items:
            total += item
    <|region_end|>

    ### Next edit

and the answer either ``<|region_start|>\\n`` + the rewritten region + ``<|region_end|>``, or
``<|no_edit|>``. ``render_prompt`` + ``render_target`` are what finetuning trains on (an adapter
trained so says ``"next_edit": true`` in its ``template.json``, and the engine then sends
``render_prompt`` raw); an instruct model without such an adapter gets ``chat_messages`` through
its own chat template (zero-shot). Either way ``parse_output`` reads the answer.

This module's top part is pure and model-free (finetune and the eval import it); ``run_next_edit``
runs on the engine's worker thread with the runner, as ``engine/edit.py``'s edits do.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ADAPTER_KEY", "CURSOR", "NO_EDIT", "REGION_END", "REGION_START", "NextEditInput", "NextEditRequest",
           "NextEditResult", "Replacement", "chat_messages", "editable_region", "minimal_replacement", "parse_output",
           "render_prompt", "render_target", "run_next_edit", "trained_for_next_edit"]

CURSOR = "<|cursor|>"
REGION_START = "<|region_start|>"
REGION_END = "<|region_end|>"
NO_EDIT = "<|no_edit|>"
MARKERS = (CURSOR, REGION_START, REGION_END, NO_EDIT)
ANSWER_HEADER = "### Next edit\n"
"""The prompt's last line: the answer follows it."""

SYSTEM = (
    "You are a code editing assistant. You see the edits the user just made and an excerpt of the file "
    f"around their cursor, between {REGION_START} and {REGION_END}, with {CURSOR} where the cursor is. "
    "Predict the user's next edit in the excerpt: the change that their recent edits make necessary or "
    "obvious (continue a rename at the other uses, pass a new parameter where the function is called, "
    "make the matching change in a similar line). Do not add features, comments or documentation, and do "
    "not rewrite code that the recent edits do not concern.\n"
    f"If an edit is needed, reply with the whole excerpt with that edit made, between {REGION_START} and "
    f"{REGION_END}, without the {CURSOR} marker and with every other line exactly as it is. If no edit is "
    f"clearly needed, reply with {NO_EDIT} alone. Reply with nothing else.")
"""The zero-shot instruction for instruct models (``chat_messages``)."""


@dataclass
class NextEditInput:
    path: str
    """The file's path as the prompt names it (relative to its workspace, or its base name)."""
    edits: list[str]
    """Recent edits, oldest first, each a small unified diff (``--- a/p\\n+++ b/p\\n@@ ...``)."""
    region: str
    """The editable region (some 20-30 whole lines around the cursor) as it is now."""
    cursor: int
    """Character offset of the cursor inside ``region``."""
    context: str = ""
    """Repo context text (definitions the region uses); may be empty."""


def _region_block(region: str, cursor: int | None) -> str:
    """The region between its markers (the cursor marker inside when ``cursor`` is given); the end
    marker starts its own line when the region ends with a line end."""
    if cursor is not None:
        cursor = max(0, min(cursor, len(region)))
        region = region[:cursor] + CURSOR + region[cursor:]
    return f"{REGION_START}\n{region}{REGION_END}"


def _edits_text(edits: list[str]) -> str:
    if not edits:
        return "(none)\n"
    return "\n".join(e if e.endswith("\n") else e + "\n" for e in edits)


def _body(inp: NextEditInput) -> str:
    """The sections every prompt shares: context, recent edits, the region with the cursor."""
    parts = []
    if inp.context.strip():
        parts.append("### Repository context\n" + inp.context.rstrip("\n") + "\n")
    parts.append("### Recent edits\n" + _edits_text(inp.edits))
    name = inp.path or "the file"
    parts.append(f"### Excerpt of {name}\n" + _region_block(inp.region, inp.cursor) + "\n")
    return "\n".join(parts)


def render_prompt(inp: NextEditInput) -> str:
    """The raw-text prompt (what finetuning trains on; the answer ``render_target`` follows it)."""
    return _body(inp) + "\n" + ANSWER_HEADER


def render_target(new_region: str | None) -> str:
    """The completion to learn after ``render_prompt``: the rewritten region between its markers,
    or the no-edit marker when ``new_region`` is None (an example whose region stays as it is)."""
    if new_region is None:
        return NO_EDIT + "\n"
    return _region_block(new_region, None) + "\n"


_FENCED = re.compile(r"```[^\n`]*\n(.*?)\n?[ \t]*```", re.DOTALL)


def parse_output(text: str, region: str) -> str | None:
    """The rewritten region in the model's answer ``text``; None when the answer says no edit, or
    is unusable: not exactly one region between its markers (optionally in one code fence, as
    instruct models like to reply), anything but white space around it, a stray marker inside, a
    region cut before its end marker, or the region unchanged. A cursor marker the model copied
    is dropped; a missing final line end (the end marker written at the end of the last line) is
    put back when the region has one."""
    body = text.strip()
    fenced = _FENCED.fullmatch(body)
    if fenced is not None:
        body = fenced.group(1).strip()
    if not body.startswith(REGION_START + "\n"):
        return None  # the no-edit marker, prose, or a region that does not start right
    end = body.find(REGION_END)
    if end < 0 or body[end + len(REGION_END):].strip():
        return None  # cut before its end, or something after it (a second region, prose)
    new = body[len(REGION_START) + 1:end]
    if REGION_START in new or NO_EDIT in new:
        return None
    new = new.replace(CURSOR, "")
    if region.endswith("\n") and new and not new.endswith("\n"):
        new += "\n"
    if new == region or new.replace("\r\n", "\n") == region.replace("\r\n", "\n"):
        return None
    return new


def chat_messages(inp: NextEditInput) -> list[dict[str, str]]:
    """The zero-shot prompt for an instruct model (no next-edit finetune): the system message says
    what to do and how to answer; the user message holds what ``render_prompt`` holds."""
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": _body(inp) + "\nPredict the next edit."}]


# -- the engine's side (worker thread) --------------------------------------------------------

ADAPTER_KEY = "next_edit"
"""``"next_edit": true`` in an adapter's ``template.json``: it was trained on ``render_prompt`` +
``render_target``, so the engine sends the raw prompt instead of the chat one."""
MAX_CONTEXT_CHARS = 3000
"""Repo context in a next-edit prompt (about 750 tokens: the region and the edits come first)."""
MAX_EDITS_CHARS = 4000
ANSWER_MARGIN = 32
"""Tokens an answer may have beyond the region's own (its markers and the edit's growth, plus a
quarter of the region)."""
PROSE_CHARS = 48
"""An answer that has not started with a marker after this many characters is prose: stopped."""
MAX_CHANGED_FRACTION = 0.5
"""An edit that replaces more than this share of the region's lines, or leaves less than this
share of its characters, is not a next edit but a rewrite: not offered."""


def trained_for_next_edit(template_file: Path) -> bool:
    """Whether the adapter whose ``template.json`` is ``template_file`` was trained for next edits."""
    try:
        data = json.loads(template_file.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get(ADAPTER_KEY) is True


@dataclass
class NextEditRequest:
    document_key: str
    text: str
    """The whole document."""
    line: int
    column: int
    """The cursor (a string index in its line)."""
    path: str = ""
    """The path the prompt names (relative to the workspace)."""
    edits: list[str] = field(default_factory=list)
    """Recent edits as diffs, oldest first (``context.edit_history``)."""
    context: str = ""
    language_id: str = ""
    region_lines: int = 20
    max_tokens: int = 1024
    time_budget_ms: float = 20000.0


@dataclass(frozen=True)
class Replacement:
    """Replace the document's text from ``(start_line, start_column)`` to ``(end_line,
    end_column)`` (string indices) by ``new_text``."""

    start_line: int
    start_column: int
    end_line: int
    end_column: int
    new_text: str


@dataclass
class NextEditResult:
    edit: Replacement | None
    reason: str
    """Why there is no edit (``no-edit``, ``unusable``, ``unchanged``, ``implausible``, ``unparsable``,
    ``cancelled``, ``no-template``); ``edit`` when there is one."""
    mode: str = ""
    """``chat`` (zero-shot through the chat template) or ``adapter`` (the raw prompt)."""
    region: tuple[int, int] = (0, 0)
    """The editable region's lines ``[start, end)``."""
    answer: str = ""
    n_prompt: int = 0
    n_generated: int = 0
    ms: float = 0.0
    stop_reason: str = ""


def editable_region(n_lines: int, line: int, region_lines: int) -> tuple[int, int]:
    """The lines ``[start, end)`` of the region around ``line``: a third above it, the rest below
    (the next edit is more often below: the uses after a definition, the call after a change)."""
    start = max(0, line - region_lines // 3)
    end = min(n_lines, start + region_lines)
    return max(0, end - region_lines), end


def minimal_replacement(region: str, new_region: str) -> tuple[int, int, str]:
    """``(start, end, text)``: replacing ``region[start:end]`` by ``text`` makes ``new_region``, with
    the range as small as it can be (the common head and tail left out)."""
    n = min(len(region), len(new_region))
    head = 0
    while head < n and region[head] == new_region[head]:
        head += 1
    tail = 0
    while tail < n - head and region[-1 - tail] == new_region[-1 - tail]:
        tail += 1
    return head, len(region) - tail, new_region[head:len(new_region) - tail]


def implausible(region: str, new_region: str, start: int, end: int, text: str) -> str | None:
    """Why the edit ``region[start:end] -> text`` is not a likely next edit (None: it may be)."""
    lines = max(1, region.count("\n"))
    if len(new_region.strip()) < MAX_CHANGED_FRACTION * len(region.strip()):
        return "it deletes most of the region"
    if region[start:end].count("\n") > MAX_CHANGED_FRACTION * lines:
        return "it rewrites most of the region"
    if text.count("\n") > MAX_CHANGED_FRACTION * lines + 1:
        return "it adds more lines than half the region"
    return None


def region_position(lines: list[str], first: int, offset: int) -> tuple[int, int]:
    """(line, column) of character ``offset`` of the text of ``lines`` starting at line ``first``."""
    line = first
    for text in lines:
        if offset <= len(text.rstrip("\r\n")) or offset < len(text):
            break
        offset -= len(text)
        line += 1
    return line, offset


def _stop_at(text: str) -> int | None:
    """Where the answer ends: after its end marker or the no-edit marker; at once when it is prose."""
    if (i := text.find(REGION_END)) >= 0:
        return i + len(REGION_END)
    if (i := text.find(NO_EDIT)) >= 0:
        return i + len(NO_EDIT)
    if len(text) > PROSE_CHARS and REGION_START not in text:
        return len(text)
    return None


def build_input(req: NextEditRequest, lines: list[str]) -> tuple[NextEditInput, tuple[int, int]]:
    """The pure input for ``req`` (its document split into ``lines``) and the region's lines."""
    start, end = editable_region(len(lines), req.line, req.region_lines)
    region = "".join(lines[start:end])
    cursor = sum(map(len, lines[start:req.line])) + req.column if req.line < len(lines) else len(region)
    context = req.context[:MAX_CONTEXT_CHARS]
    edits: list[str] = []
    used = 0
    for diff in reversed(req.edits):
        used += len(diff)
        if used > MAX_EDITS_CHARS:
            break
        edits.insert(0, diff)
    return NextEditInput(req.path or "file", edits, region, cursor, context), (start, end)


def run_next_edit(runner: Any, req: NextEditRequest, cancelled: Callable[[], bool]) -> NextEditResult:
    """(worker) The model's next edit around ``req``'s cursor, checked: the rewritten region as one
    minimal replacement, or no edit with the reason."""
    from .edit import apply_chat_template, chat_template, edit_language, parse_errors, split_lines, tokenize_chat
    from .prompt import Prompt

    lines = split_lines(req.text)
    inp, (first, last) = build_input(req, lines)
    mode = "adapter" if getattr(runner, "next_edit_prompt", False) else "chat"
    template = chat_template(runner.metadata)
    if mode == "chat" and template is None:
        return NextEditResult(None, "no-template", mode, (first, last))

    def tokens_for(item: NextEditInput) -> list[int]:
        if mode == "adapter":
            return list(runner.bos) + runner.tokenize(render_prompt(item))
        assert template is not None
        messages = [(m["role"], m["content"]) for m in chat_messages(item)]
        return tokenize_chat(runner, apply_chat_template(template, messages))

    region_tokens = len(runner.tokenize(inp.region))
    max_tokens = min(req.max_tokens, region_tokens + region_tokens // 4 + ANSWER_MARGIN)
    tokens = tokens_for(inp)
    # Too long for the context window: the repo context goes first, then the oldest edits.
    while len(tokens) + max_tokens >= runner.n_ctx and (inp.context or inp.edits):
        if inp.context:
            inp.context = ""
        else:
            inp.edits = inp.edits[1:]
        tokens = tokens_for(inp)
    t0 = time.perf_counter()
    gen = runner.generate(Prompt(tokens, [], [], [], "", ""), max_tokens=max_tokens, stop_at=_stop_at,
                          cancelled=cancelled, time_budget_ms=req.time_budget_ms)
    ms = (time.perf_counter() - t0) * 1000
    result = NextEditResult(None, "", mode, (first, last), gen.text, len(tokens), gen.n_generated, ms,
                            gen.stop_reason)
    if gen.stop_reason == "cancelled":
        result.reason = "cancelled"
        return result
    new_region = parse_output(gen.text, inp.region)
    if new_region is None:
        answer = gen.text.strip()
        if answer.endswith(NO_EDIT):
            result.reason = "no-edit"
        elif REGION_END not in answer and gen.stop_reason in ("time", "length"):
            result.reason = f"cut ({gen.stop_reason})"
        else:  # well formed with the region as it was (it parses against another region), or not
            result.reason = "unchanged" if parse_output(gen.text, "\x00") is not None else "unusable"
        return result
    start, end, text = minimal_replacement(inp.region, new_region)
    why = implausible(inp.region, new_region, start, end, text)
    if why is not None:
        result.reason = f"implausible: {why}"
        return result
    lang = edit_language(req.path, req.language_id)
    if lang is not None:
        before = req.text
        after = "".join(lines[:first]) + new_region + "".join(lines[last:])
        if parse_errors(lang, after) > parse_errors(lang, before):
            result.reason = "unparsable"
            return result
    region_lines = lines[first:last]
    sl, sc = region_position(region_lines, first, start)
    el, ec = region_position(region_lines, first, end)
    result.edit, result.reason = Replacement(sl, sc, el, ec, text), "edit"
    return result
