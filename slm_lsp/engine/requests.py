"""A completion request, its result, and the handle its caller awaits: what the features layer
hands the engine, and what the engine's two lanes (the local worker and the remote lane) share.

``service`` re-exports these names (``from slm_lsp.engine.service import CompletionRequest``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

from .model import Generation
from .prompt import ContextFile, PromptRequest


@dataclass
class CompletionRequest:
    document_key: str
    text: str
    line: int
    column: int
    """Cursor as a Python string index into line ``line`` (the LSP layer converts UTF-16)."""
    language_id: str = ""
    path: str = ""
    context: list[ContextFile] = field(default_factory=list)
    context_tokens: int | None = None
    """Token budget for ``context`` (None: no context; also turns on the imports and scope headers
    of a cut prefix). Clamped so that the prompt fits the model's context window."""
    repo_name: str = ""
    repo_path: str = ""
    """The file's path inside the repository, for the repo-level prompt format."""
    file_headers: bool = True
    """With ``context_tokens``: give a cut prefix window its imports and scope headers back."""
    private: bool = False
    """The edited buffer must not leave the machine (a secret-looking or denied file): the
    request is answered by the local model, or not at all, never by a remote server."""

    def prompt_request(self, context_tokens: int | None, drop_private: bool = False) -> PromptRequest:
        """The prompt builder's view of this request; ``drop_private``: without the context pieces
        marked private (for a prompt that leaves the machine)."""
        context = [f for f in self.context if not getattr(f, "private", False)] if drop_private else self.context
        return PromptRequest(self.text, self.line, self.column, self.repo_path or self.path, self.document_key,
                             context, self.repo_name, context_tokens, self.file_headers, self.language_id)


@dataclass
class CompletionResult:
    text: str
    multiline: bool = False
    cached: bool = False
    reason: str = ""
    """Why the result is what it is: eog, stop, length, time, cancelled, superseded, cache,
    disabled, no-model, error."""
    generation: Generation | None = None
    total_ms: float = 0.0
    backend: str = ""
    """Who answered: ``local`` (the in-process model), ``remote`` (the team server) or ``cache``
    (the type-through cache); empty when nobody did (cancelled, disabled, no model)."""
    route: str = ""
    """Why that backend answered (the router's reason, e.g. ``block``, ``low confidence``, or
    ``remote failed: ...`` for a fallback)."""
    cause: str = ""
    """Why the local model had prompt work to do (``warmup.classify``): open, switch, context,
    window, jump, refresh or typing; ``cache`` for the type-through cache; empty otherwise."""


class RequestHandle:
    def __init__(self, request: CompletionRequest) -> None:
        self.request = request
        self.future: Future[CompletionResult] = Future()
        self._cancel = threading.Event()
        self._lock = threading.Lock()
        self._on_cancel: list[Callable[[], object]] = []
        self.route = ""
        """How the engine routes it: local, remote or auto (set by ``submit``)."""
        self.route_reason = ""
        """Why it went remote (auto) or why it stayed local."""
        self.local_only = False
        """Answer with the local model only (a private request, or the fallback after a remote failure)."""
        self.fallback: CompletionResult | None = None
        """A local answer already computed: what the user gets if the remote fails."""
        self.t0 = 0.0
        # An awaiting LSP handler that is cancelled cancels this future: stop the work too.
        self.future.add_done_callback(lambda f: self.cancel() if f.cancelled() else None)

    def resolve(self, result: CompletionResult) -> None:
        if not self.future.done():
            try:
                self.future.set_result(result)
            except Exception:  # cancelled between the check and the set
                pass

    def cancel(self) -> None:
        with self._lock:
            self._cancel.set()
            callbacks, self._on_cancel = self._on_cancel, []
        for callback in callbacks:
            callback()

    def on_cancel(self, callback: Callable[[], object]) -> None:
        """Call ``callback`` (from the cancelling thread) when the request is cancelled; at once if
        it already is. The remote lane closes its HTTP stream this way."""
        with self._lock:
            if not self._cancel.is_set():
                self._on_cancel.append(callback)
                return
        callback()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()


def split_at_cursor(text: str, line: int, column: int) -> tuple[str, str]:
    """(prefix, suffix) of the whole document around the cursor, clamped to the text."""
    offset, current = 0, 0
    start = 0
    while current < line:
        nl = text.find("\n", start)
        if nl < 0:
            break
        start = nl + 1
        current += 1
    end = text.find("\n", start)
    end = len(text) if end < 0 else end
    offset = min(start + max(column, 0), end)
    return text[:offset], text[offset:]
