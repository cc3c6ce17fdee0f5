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

import difflib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ADAPTER_KEY", "CURSOR", "NO_EDIT", "REGION_END", "REGION_START", "NextEditInput", "NextEditRequest",
           "NextEditResult", "Replacement", "chat_messages", "editable_region", "minimal_replacement", "parse_output",
           "render_prompt", "render_target", "reverts", "run_next_edit", "trained_for_next_edit"]

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

EXAMPLE = (
    "Example. Recent edits:\n--- a/shop.py\n+++ b/shop.py\n@@ -1,2 +1,2 @@\n-def price(qty):\n+def price(quantity):\n"
    f"     return qty * 3\nExcerpt:\n{REGION_START}\ndef price(quantity):{CURSOR}\n    return qty * 3\n{REGION_END}\n"
    f"Reply:\n{REGION_START}\ndef price(quantity):\n    return quantity * 3\n{REGION_END}")
"""One worked example after the instruction (a rename continued): small models copy the form."""


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
    return [{"role": "system", "content": SYSTEM + ("\n\n" + EXAMPLE if EXAMPLE else "")},
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
MAX_DELETED_LINES = 2
"""An edit that only deletes more lines than this is not offered: small models drop lines while
copying the region (Qwen2.5-Coder-0.5B deleted 5 lines of an untouched file)."""
LOOKUP_DRAFT_TOKENS = 8
"""Tokens drafted from the prompt per model pass while the region is copied."""
RESYNC_LINES = 2
"""Lines of the region written again after a change that end the answer (``FirstChange``)."""
TAIL_SLACK = 2
MAX_TAIL_CHANGED = 3
"""A region ended early is completed with the region's rest (``complete_tail``) when it differs
from the region's start in at most this many lines (a small edit, not a rewrite)."""
LAST_LINE_SIMILARITY = 0.6
"""A prefilled chat answer without its end marker ends right when its last line is this like the
region's (``difflib`` ratio; "return count" for "return total" is 0.67) and it has as many lines."""
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
    first_change_only: bool = True
    """Stop the answer once its first change is over (``FirstChange``): what an editor shows. An
    evaluation against whole rewritten regions turns it off."""


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
    if not text.strip() and region[start:end].count("\n") > MAX_DELETED_LINES:
        return "it only deletes lines"
    return None


def reverts(region: str, new_region: str, diff: str) -> bool:
    """Whether ``new_region`` takes back the edit ``diff`` (its added lines, present in ``region``,
    are gone and its removed lines are back): the model "fixing" what the user just did."""
    body = diff.splitlines()[2:]
    added = [line[1:].strip() for line in body if line.startswith("+") and line[1:].strip()]
    removed = [line[1:].strip() for line in body if line.startswith("-") and line[1:].strip()]
    if not added and not removed:
        return False
    old_lines = {line.strip() for line in region.splitlines()}
    new_lines = {line.strip() for line in new_region.splitlines()}
    if not all(line in old_lines for line in added):
        return False  # the edit is not (all) in this region
    return all(line not in new_lines for line in added) and all(line in new_lines for line in removed)


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


def _stop_in_region(text: str) -> int | None:
    """Where an answer that starts inside the region (the chat prompt's prefill) ends: after the
    end marker or the no-edit marker, or at a closing code fence (instruct models close their
    block with one instead of the marker)."""
    if (i := text.find(REGION_END)) >= 0:
        return i + len(REGION_END)
    if (i := text.find(NO_EDIT)) >= 0:
        return i + len(NO_EDIT)
    if (i := text.find("\n```", 1)) >= 0 and not text.startswith("```"):
        return i + 1
    if text.startswith("```") and (i := text.find("\n```", text.find("\n") + 1)) >= 0:
        return i + 1
    return None


class FirstChange:
    """Stops an answer once its first change is over: the model has written lines unlike the
    region's and then ``RESYNC_LINES`` lines of the region again (one not blank). The rest of the
    region is the region's own (``finish``): the next edit is one change, and copying the lines
    after it costs a model pass per token for nothing. ``text`` is what the model wrote inside
    the region (after its start marker)."""

    def __init__(self, region: str) -> None:
        self.region = region.splitlines(True)
        self.resumed: int | None = None
        """The region line after which the answer is the region's again (set once stopped)."""

    def stop_at(self, text: str) -> int | None:
        done = text.split("\n")[:-1]  # the complete lines
        n = len(done)
        if n < RESYNC_LINES:
            return None
        lines = [line.rstrip("\r") for line in done]
        region = [line.rstrip("\r\n") for line in self.region]
        first = next((i for i, (a, b) in enumerate(zip(lines, region)) if a != b), None)
        if first is None:
            return None  # no change yet
        tail = lines[n - RESYNC_LINES:]
        if not any(line.strip() for line in tail):
            return None
        for j in range(first, len(region) - RESYNC_LINES + 1):
            if region[j:j + RESYNC_LINES] == tail:
                self.resumed = j + RESYNC_LINES
                return sum(len(line) + 1 for line in done)
        return None

    def finish(self, written: str) -> str:
        """The whole rewritten region: ``written`` (cut by ``stop_at``) and the region's rest."""
        assert self.resumed is not None
        return written + "".join(self.region[self.resumed:])


def keep_blank_lines(region: str, new_region: str) -> str:
    """``new_region`` with the region's blank lines where they were and none of its own: small
    models drop or add a blank line while copying (the 1.5B's rename suggestion deleted one
    beside its change), and a next edit is about code, not spacing. The non-blank lines are
    matched with ``difflib``; each changed run takes the place of the region's lines it replaces."""
    old = region.splitlines(True)
    new = [line if line.endswith(("\n", "\r")) else line + "\n" for line in new_region.splitlines(True)
           if line.strip()]
    kept = [i for i, line in enumerate(old) if line.strip()]
    matcher = difflib.SequenceMatcher(None, [old[i].rstrip("\r\n") for i in kept],
                                      [line.rstrip("\r\n") for line in new], autojunk=False)
    instead: dict[int, list[str]] = {}
    before: dict[int, list[str]] = {}
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        if i1 < i2:
            instead[kept[i1]] = new[j1:j2]
            for k in range(i1 + 1, i2):
                instead[kept[k]] = []
        else:  # inserted after the region's previous non-blank line
            before.setdefault(kept[i1 - 1] + 1 if i1 > 0 else 0, []).extend(new[j1:j2])
    out: list[str] = []
    for i, line in enumerate(old):
        out += before.get(i, [])
        out += instead.get(i, [line])
    out += before.get(len(old), [])
    text = "".join(out)
    return text if region.endswith(("\n", "\r")) or not text.endswith("\n") else text[:-1]


def complete_tail(body: str, region: str) -> str | None:
    """``body``, a region rewritten only up to its change and ended there by the model (the 1.5B
    often closes the region right after its edit), with the region's own rest after it; None when
    ``body`` is not such a start: as long as the region, unchanged, or changed in more than
    ``MAX_TAIL_CHANGED`` lines. Where the rest starts is the end of the region's start that
    ``body`` differs least from (within ``TAIL_SLACK`` lines of its length: lines inserted or
    deleted by the edit)."""
    got = body.splitlines(True)
    want = region.splitlines(True)
    k = len(got)
    if k == 0 or k >= len(want):
        return None
    plain = [line.rstrip("\r\n") for line in got]
    best: tuple[tuple[int, int], int] | None = None
    for j in range(max(1, k - TAIL_SLACK), min(len(want) - 1, k + TAIL_SLACK) + 1):
        opcodes = difflib.SequenceMatcher(None, plain, [line.rstrip("\r\n") for line in want[:j]],
                                          autojunk=False).get_opcodes()
        changed = sum(max(i2 - i1, j2 - j1) for tag, i1, i2, j1, j2 in opcodes if tag != "equal")
        if best is None or (changed, abs(j - k)) < best[0]:
            best = ((changed, abs(j - k)), j)
    assert best is not None
    (changed, _), j = best
    if changed == 0 or changed > MAX_TAIL_CHANGED:
        return None
    return (body if body.endswith("\n") else body + "\n") + "".join(want[j:])


def close_region(answer: str, region: str, finished: bool = True) -> str:
    """The prefilled chat answer (the region's start marker, then what the model wrote) as
    ``parse_output`` reads it. The model may end the region with the end of its turn or a closing
    code fence instead of the end marker (``finished``): then the marker is put back, but only
    when the region ends right: the answer's last line is the region's, or as many lines as the
    region ends with a line like its last (a rename there); anything else was cut short. A code
    fence opening the answer is dropped."""
    body = answer[len(REGION_START) + 1:]
    if body.startswith("```"):
        body = body[body.find("\n") + 1:] if "\n" in body else ""
    if REGION_END in body or NO_EDIT in body:
        return REGION_START + "\n" + body
    body = body.rstrip()
    if body.endswith("```"):
        body = body[:-3].rstrip()
    want = [line.rstrip() for line in region.splitlines() if line.strip()] or [""]
    got = [line.rstrip() for line in body.splitlines() if line.strip()] or [""]
    ends_right = got[-1] == want[-1] or (
        len(got) == len(want) and difflib.SequenceMatcher(None, got[-1], want[-1]).ratio() >= LAST_LINE_SIMILARITY)
    if finished and not ends_right and (whole := complete_tail(body + "\n", region)) is not None:
        return REGION_START + "\n" + whole + REGION_END  # ended right after its change
    if not finished or not ends_right:
        return REGION_START + "\n" + body  # no end marker: parse_output refuses it
    return REGION_START + "\n" + body + "\n" + REGION_END


def complete_answer(answer: str, region: str) -> str:
    """``answer`` with a region that its end marker closes right after the change completed by
    the region's rest (``complete_tail``); otherwise as it is."""
    if not answer.startswith(REGION_START + "\n") or (end := answer.find(REGION_END)) < 0:
        return answer
    whole = complete_tail(answer[len(REGION_START) + 1:end].replace(CURSOR, ""), region)
    return answer if whole is None else REGION_START + "\n" + whole + answer[end:]


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
    from .speculative import Speculation

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
        # The answer is begun for the model: small instruct models otherwise reply with a code
        # block of their own and no markers (Qwen2.5-Coder-0.5B did on every case tried).
        return tokenize_chat(runner, apply_chat_template(template, messages) + REGION_START + "\n")

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
    speculation = getattr(runner, "speculation", None)
    if speculation is not None and speculation.mode == "off":
        # The answer copies the region but for the edit: drafts looked up in the prompt are
        # mostly right, and each accepted run of them saves that many model passes.
        runner.speculation = Speculation("lookup", draft_tokens=LOOKUP_DRAFT_TOKENS, line_cut=False)
    change = FirstChange(inp.region)
    head = "" if mode == "adapter" else REGION_START + "\n"  # the chat answer is prefilled with it

    def stop_at(text: str) -> int | None:
        end = (_stop_at if mode == "adapter" else _stop_in_region)(text)
        if end is not None:
            return end
        inside = head + text
        if not req.first_change_only or not inside.startswith(REGION_START + "\n"):
            return None
        end = change.stop_at(inside[len(REGION_START) + 1:])
        return None if end is None else end + len(REGION_START) + 1 - len(head)

    try:
        gen = runner.generate(Prompt(tokens, [], [], [], "", ""), max_tokens=max_tokens, stop_at=stop_at,
                              cancelled=cancelled, time_budget_ms=req.time_budget_ms)
    finally:
        if speculation is not None:
            runner.speculation = speculation
    ms = (time.perf_counter() - t0) * 1000
    if change.resumed is not None and gen.stop_reason == "stop":
        answer = head + gen.text
        answer = REGION_START + "\n" + change.finish(answer[len(REGION_START) + 1:]) + REGION_END
    elif mode == "adapter":
        answer = complete_answer(gen.text.strip(), inp.region)
    else:
        answer = complete_answer(close_region(head + gen.text, inp.region, gen.stop_reason in ("eog", "stop")),
                                 inp.region)
    result = NextEditResult(None, "", mode, (first, last), answer, len(tokens), gen.n_generated, ms,
                            gen.stop_reason)
    if gen.stop_reason == "cancelled":
        result.reason = "cancelled"
        return result
    new_region = parse_output(answer, inp.region)
    if new_region is None:
        if NO_EDIT in answer:
            result.reason = "no-edit"
        elif REGION_END not in answer and gen.stop_reason in ("time", "length"):
            result.reason = f"cut ({gen.stop_reason})"
        else:  # well formed with the region as it was (it parses against another region), or not
            result.reason = "unchanged" if parse_output(answer, "\x00") is not None else "unusable"
        return result
    new_region = keep_blank_lines(inp.region, new_region)
    if inp.region.startswith(new_region):
        result.reason = "unchanged"  # the region's start copied as it is, then closed
        return result
    start, end, text = minimal_replacement(inp.region, new_region)
    why = implausible(inp.region, new_region, start, end, text)
    if why is None and inp.edits and reverts(inp.region, new_region, inp.edits[-1]):
        why = "it takes back the last edit"
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
