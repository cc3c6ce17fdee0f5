"""The completion engine: one worker thread owns the model; requests queue up to it.

A newer request for a document supersedes an older one: a queued one is dropped, a running one
is stopped between tokens. The features layer turns LSP params into ``CompletionRequest`` and
awaits ``submit(...).future``; nothing here knows about LSP.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

from ..config import Config
from .cache import ResultCache
from .model import Generation, LlamaRunner, ModelLoadError
from .prompt import ContextFile, PromptBuilder, PromptRequest
from .shaping import CompletionShaper

log = logging.getLogger(__name__)


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


class RequestHandle:
    def __init__(self, request: CompletionRequest) -> None:
        self.request = request
        self.future: Future[CompletionResult] = Future()
        self._cancel = threading.Event()
        # An awaiting LSP handler that is cancelled cancels this future: stop the work too.
        self.future.add_done_callback(lambda f: self._cancel.set() if f.cancelled() else None)

    def resolve(self, result: CompletionResult) -> None:
        if not self.future.done():
            try:
                self.future.set_result(result)
            except Exception:  # cancelled between the check and the set
                pass

    def cancel(self) -> None:
        self._cancel.set()

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


class CompletionEngine:
    def __init__(self, config: Config, on_state: Callable[[str, str], None] | None = None) -> None:
        self.config = config
        self.runner: LlamaRunner | None = None
        self.builder: PromptBuilder | None = None
        self.cache = ResultCache()
        self.state = "no-model"
        self.state_detail = ""
        self._on_state = on_state or (lambda state, detail: None)
        self._jobs: deque[Callable[[], None] | RequestHandle] = deque()
        self._lock = threading.Condition()
        self._running: RequestHandle | None = None
        self._gate: threading.Event | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._work, name="slm-engine", daemon=True)
        self._thread.start()

    # -- state ------------------------------------------------------------------------------
    def _set_state(self, state: str, detail: str = "") -> None:
        self.state, self.state_detail = state, detail
        try:
            self._on_state(state, detail)
        except Exception:  # a reporting failure must not kill the worker
            log.exception("state callback failed")

    def expect_model(self, timeout: float = 120.0) -> None:
        """Hold requests until ``load`` or ``no_model`` is called (the server knows a model is
        coming at initialize, but reads its settings first): early requests wait, not fail."""
        gate = threading.Event()
        self._gate = gate
        self.state = "loading"
        def hold() -> None:
            gate.wait(timeout)

        self._enqueue(hold)

    def _open_gate(self) -> None:
        gate, self._gate = self._gate, None
        if gate is not None:
            gate.set()

    def no_model(self, detail: str) -> None:
        self._set_state("no-model", detail)
        self._open_gate()

    def load(self, model_path: str, progress: Callable[[float], None] | None = None) -> Future[None]:
        """Load (or replace) the model in the worker thread."""
        done: Future[None] = Future()
        cfg = self.config
        self.state = "loading"  # at once: requests from now on wait for the model

        def job() -> None:
            self._set_state("loading", model_path)
            try:
                if self.runner is not None:
                    self.runner.close()
                    self.runner = None
                t0 = time.perf_counter()
                runner = LlamaRunner(model_path, n_gpu_layers=cfg.model.n_gpu_layers, threads=cfg.model.threads,
                                     n_ctx=cfg.model.n_ctx, kv_shift=cfg.completion.kv_shift,
                                     refresh_after=cfg.completion.suffix_refresh_tokens, progress=progress)
                if cfg.model.adapter:
                    runner.set_adapter(cfg.model.adapter)
                self.runner = runner
                self._rebuild_builder()
                self.cache = ResultCache()
                log.info("model %s loaded in %.1f s (template %s, %d GPU layers, %d threads)", runner.name,
                         time.perf_counter() - t0, runner.template.name, runner.n_gpu_layers, runner.threads)
                self._set_state("ready", runner.name)
                done.set_result(None)
            except Exception as exc:
                self._set_state("error", str(exc))
                done.set_exception(exc)

        self._enqueue(job, first=True)  # before requests already waiting for a model
        self._open_gate()
        return done

    def reconfigure(self, config: Config) -> None:
        """Apply new completion settings without reloading the model."""
        self.config = config

        def job() -> None:
            runner, cc = self.runner, config.completion
            if runner is None:
                return
            runner.kv_shift, runner.refresh_after = cc.kv_shift, cc.suffix_refresh_tokens
            self._rebuild_builder()
            self.cache = ResultCache()

        self._enqueue(job)

    def _rebuild_builder(self) -> None:
        """A fresh PromptBuilder for the runner's current template and the completion settings."""
        runner, cc = self.runner, self.config.completion
        assert runner is not None
        self.builder = PromptBuilder(runner.template, runner, cc.prefix_tokens, cc.suffix_tokens, runner.bos,
                                     cc.near_lines)

    def call(self, fn: Callable[[LlamaRunner], object]) -> Future[object]:
        """Run ``fn(runner)`` in the worker thread (e.g. to swap adapters)."""
        done: Future[object] = Future()

        def job() -> None:
            try:
                if self.runner is None:
                    raise ModelLoadError("no model is loaded")
                result = fn(self.runner)
                self.cache = ResultCache()
                if self.builder is not None and self.builder.template != self.runner.template:
                    self._rebuild_builder()  # an adapter brought (or took away) its own FIM template
                done.set_result(result)
            except Exception as exc:
                done.set_exception(exc)

        self._enqueue(job)
        return done

    # -- requests ---------------------------------------------------------------------------
    def language_enabled(self, language_id: str) -> bool:
        langs = self.config.completion.enabled_languages
        return "*" in langs or language_id in langs

    def submit(self, request: CompletionRequest) -> RequestHandle:
        handle = RequestHandle(request)
        t0 = time.perf_counter()
        if not self.language_enabled(request.language_id):
            handle.future.set_result(CompletionResult("", reason="disabled"))
            return handle
        with self._lock:
            # Whatever was asked for this document before is stale now, answered or not.
            for job in list(self._jobs):
                if isinstance(job, RequestHandle) and job.request.document_key == request.document_key:
                    self._jobs.remove(job)
                    job.resolve(CompletionResult("", reason="superseded"))
            if self._running is not None and self._running.request.document_key == request.document_key:
                self._running.cancel()
        prefix, suffix = split_at_cursor(request.text, request.line, request.column)
        hit = self.cache.get(request.document_key, prefix, suffix)
        if hit is not None:
            total_ms = (time.perf_counter() - t0) * 1000
            handle.resolve(CompletionResult(hit, "\n" in hit, True, "cache", total_ms=total_ms))
            return handle
        if self.runner is None and self.state != "loading":
            handle.resolve(CompletionResult("", reason="no-model"))
            return handle
        with self._lock:
            self._jobs.append(handle)
            self._lock.notify()
        return handle

    def complete(self, request: CompletionRequest, timeout: float | None = None) -> CompletionResult:
        return self.submit(request).future.result(timeout)

    def _enqueue(self, job: Callable[[], None], first: bool = False) -> None:
        with self._lock:
            if first:
                self._jobs.appendleft(job)
            else:
                self._jobs.append(job)
            self._lock.notify()

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._jobs and not self._closed:
                    self._lock.wait()
                if self._closed:
                    return
                job = self._jobs.popleft()
                if isinstance(job, RequestHandle):
                    self._running = job
            try:
                if isinstance(job, RequestHandle):
                    job.resolve(CompletionResult("", reason="cancelled") if job.cancelled else self._complete(job))
                else:
                    job()
            except Exception as exc:
                log.exception("completion failed")
                if self.runner is not None:
                    self.runner.reset_cache()  # its cells may be half-written
                if isinstance(job, RequestHandle):
                    job.resolve(CompletionResult("", reason="error: " + str(exc)))
            finally:
                with self._lock:
                    self._running = None

    def _complete(self, handle: RequestHandle) -> CompletionResult:
        req = handle.request
        runner, builder, cc = self.runner, self.builder, self.config.completion
        if runner is None or builder is None:
            return CompletionResult("", reason="no-model")
        t0 = time.perf_counter()
        budget = req.context_tokens
        if budget is not None:
            room = runner.n_ctx - builder.prefix_tokens - builder.suffix_tokens - cc.max_tokens - 64
            budget = max(0, min(budget, room))  # what a short file leaves unused stays within room
        prompt = builder.build(PromptRequest(req.text, req.line, req.column, req.repo_path or req.path,
                                             req.document_key, req.context, req.repo_name, budget,
                                             req.file_headers))
        shaper = CompletionShaper.for_cursor(prompt.prefix, prompt.suffix, cc.max_lines)
        gen = runner.generate(prompt, max_tokens=cc.max_tokens, stop_at=shaper.stop_at,
                              cancelled=lambda: handle.cancelled, time_budget_ms=cc.time_budget_ms)
        if gen.stop_reason == "cancelled":
            return CompletionResult("", reason="cancelled", generation=gen)
        text = shaper.finish(gen.text, complete=gen.stop_reason in ("eog", "stop"))
        total = (time.perf_counter() - t0) * 1000
        log.info("completion %s: %d evaluated / %d reused prompt tokens, prompt %.0f ms, %d tokens in %.0f ms "
                 "(%s), %d chars", req.document_key.rsplit("/", 1)[-1], gen.n_evaluated, gen.n_reused,
                 gen.prompt_ms, gen.n_generated, gen.gen_ms, gen.stop_reason, len(text))
        if text:
            prefix, suffix = split_at_cursor(req.text, req.line, req.column)
            self.cache.put(req.document_key, prefix, suffix, text)
        return CompletionResult(text, shaper.multiline, False, gen.stop_reason, gen, total)

    def forget(self, document_key: str) -> None:
        self.cache.forget(document_key)
        if self.builder is not None:
            self.builder.forget(document_key)

    def close(self) -> None:
        self._open_gate()
        with self._lock:
            self._closed = True
            for job in self._jobs:
                if isinstance(job, RequestHandle):
                    job.resolve(CompletionResult("", reason="cancelled"))
            self._jobs.clear()
            if self._running is not None:
                self._running.cancel()
            self._lock.notify()
        self._thread.join(timeout=10)
        if self.runner is not None:
            self.runner.close()
            self.runner = None
