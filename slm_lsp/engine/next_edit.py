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

import re
from dataclasses import dataclass

__all__ = ["CURSOR", "NO_EDIT", "REGION_END", "REGION_START", "NextEditInput", "chat_messages", "parse_output",
           "render_prompt", "render_target"]

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
