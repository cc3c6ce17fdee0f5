"""Why a request is slow, and the KV states that keep going back to a file warm.

* ``classify`` names each request's cause from what the engine already knows (the document's
  last request, the prompt builder's window, the context pieces, the tokens the runner
  evaluated): ``open`` (first request in a document), ``switch`` (the last request was in
  another document), ``jump`` (the cursor moved more than ``JUMP_LINES`` lines), ``context``
  (the repo context changed), ``window`` (the prefix or suffix window moved), ``refresh`` (the
  shifted suffix drifted too far and was evaluated again) or ``typing``; the engine adds
  ``cache`` (type-through cache). Each cold cause costs a long prompt evaluation; typing costs
  a few tokens.
* ``DocumentStates`` keeps the KV cells of recently used documents (``LlamaRunner.save_state``)
  within a byte limit (``completion.kv_states_mb``), least recently used out first.

The worker owns both (they hold no lock).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from ..context.types import ContextFile
from .model import KvState

__all__ = ["CAUSES", "JUMP_LINES", "WARM_BATCH", "DocumentStates", "Seen", "classify", "context_digest",
           "first_window_end"]

CAUSES = ("open", "switch", "jump", "context", "window", "refresh", "typing", "cache")
"""Every cause, in the order ``classify`` checks them (the first that applies wins)."""
JUMP_LINES = 2
"""The cursor moved by more lines than this since the document's last request: a jump (typing
moves it one line at a time)."""
WARM_BATCH = 16
"""Tokens per decode call while warming: a real request waits at most this many tokens' time
for the warmup to stop (the requests' own batches are larger: ``model.PROMPT_BATCH``)."""


@dataclass(frozen=True)
class Seen:
    """What the last real request in a document looked like (``classify`` compares with it)."""

    line: int
    window: tuple[int, int] | None
    """The prompt builder's (first prefix line, suffix lines) for it."""
    context: int
    """``context_digest`` of its context pieces."""


def context_digest(pieces: list[ContextFile] | tuple[ContextFile, ...]) -> int:
    return hash(tuple((f.path, f.text) for f in pieces))


def classify(seen: Seen | None, now: Seen, other_document: bool, refreshed: bool) -> str:
    """The cause of a request's prompt work: ``seen`` is the document's last request (None: the
    first since it opened), ``now`` this one, ``other_document`` whether the request before
    was in another document, ``refreshed`` whether the runner evaluated the far suffix afresh
    (``LlamaRunner.refreshed``)."""
    if seen is None:
        return "open"
    if other_document:
        return "switch"
    if abs(now.line - seen.line) > JUMP_LINES:
        return "jump"  # (a jump usually moves the window and the context too)
    if now.context != seen.context:
        return "context"
    if now.window != seen.window:
        return "window"
    if refreshed:
        return "refresh"
    return "typing"


class DocumentStates:
    """KV states of documents not in the context now, by document key, within ``limit`` bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._states: OrderedDict[str, KvState] = OrderedDict()
        self.nbytes = 0
        self.restored = 0
        """States taken back into the context so far."""
        self.evicted = 0
        """States dropped to stay within the limit."""

    def __len__(self) -> int:
        return len(self._states)

    def put(self, key: str, state: KvState) -> None:
        self.forget(key)
        if state.nbytes > self.limit:
            self.evicted += 1
            return
        self._states[key] = state
        self.nbytes += state.nbytes
        while self.nbytes > self.limit:
            _, old = self._states.popitem(last=False)
            self.nbytes -= old.nbytes
            self.evicted += 1

    def take(self, key: str) -> KvState | None:
        state = self._states.pop(key, None)
        if state is not None:
            self.nbytes -= state.nbytes
            self.restored += 1
        return state

    def forget(self, key: str) -> None:
        old = self._states.pop(key, None)
        if old is not None:
            self.nbytes -= old.nbytes

    def clear(self) -> None:
        """Drop every state (their cells were computed by a model, adapter or setting now gone)."""
        self._states.clear()
        self.nbytes = 0

    def resize(self, limit: int) -> None:
        self.limit = limit
        while self.nbytes > self.limit and self._states:
            _, old = self._states.popitem(last=False)
            self.nbytes -= old.nbytes
            self.evicted += 1


def first_window_end(lines: list[str], count: Callable[[str], int], budget: int) -> int:
    """The last line of a document's first prefix window of ``budget`` tokens: a cursor there
    puts the most of the file's top in the prompt head, which any request above it reuses."""
    total = 0
    for i, line in enumerate(lines):
        total += count(line)
        if total > budget:
            return max(0, i - 1)
    return max(0, len(lines) - 1)
