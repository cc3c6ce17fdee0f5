"""Type-through cache: answer without the model while the user types what was suggested.

After a completion ``C`` was shown at (prefix ``P``, suffix ``S``), a request at prefix
``P + t`` with the same suffix, where ``t`` is a prefix of ``C``, is answered with the rest of
``C`` at once. Exact repeats (``t == ""``) hit too, e.g. a client re-asking after a cursor blink.
An empty answer is kept only when asked (``put(..., empty=True)``: the engine's look-ahead, which
found there is nothing to suggest after an accept) and answers the exact place only.

The event loop reads and forgets entries while the engine's worker adds them: every method
holds the cache's lock (``put`` used to find its document's entries gone between two steps
when the loop forgot them, and failed with a ``KeyError``).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

KEEP = 2048  # characters of context kept per entry: enough to tell documents apart, small for huge files


@dataclass(frozen=True)
class _Entry:
    prefix_len: int
    prefix_tail: str
    suffix_len: int
    suffix_head: str
    completion: str

    def matches(self, prefix: str, suffix: str) -> bool:
        return (len(suffix) == self.suffix_len and suffix.startswith(self.suffix_head)
                and len(prefix) >= self.prefix_len
                and prefix[max(0, self.prefix_len - KEEP):self.prefix_len] == self.prefix_tail)


class ResultCache:
    def __init__(self, per_document: int = 8, documents: int = 64) -> None:
        self.per_document = per_document
        self.documents = documents
        self._entries: OrderedDict[str, list[_Entry]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def put(self, key: str, prefix: str, suffix: str, completion: str, empty: bool = False) -> None:
        if not completion and not empty:
            return
        entry = _Entry(len(prefix), prefix[-KEEP:], len(suffix), suffix[:KEEP], completion)
        with self._lock:
            entries = self._entries.setdefault(key, [])
            self._entries.move_to_end(key)
            entries.insert(0, entry)
            del entries[self.per_document:]
            while len(self._entries) > self.documents:
                self._entries.popitem(last=False)

    def get(self, key: str, prefix: str, suffix: str, count: bool = True) -> str | None:
        """The rest of a cached completion that the text at (prefix, suffix) continues; ``count``:
        add the lookup to ``hits`` / ``misses`` (an engine looking ahead does not)."""
        with self._lock:
            entries = list(self._entries.get(key, ()))
        for entry in entries:  # entries are immutable: matched outside the lock
            if not entry.matches(prefix, suffix):
                continue
            typed = prefix[entry.prefix_len:]
            if entry.completion.startswith(typed) and (len(typed) < len(entry.completion) or not entry.completion):
                if count:
                    with self._lock:
                        self.hits += 1
                return entry.completion[len(typed):]
        if count:
            with self._lock:
                self.misses += 1
        return None

    def forget(self, key: str) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def clear(self) -> None:
        """Drop every entry (a new model or new settings give other answers); counts stay."""
        with self._lock:
            self._entries.clear()
