"""The completion engine: one worker thread owns the model; requests queue up to it.

A newer request for a document supersedes an older one: a queued one is dropped, a running one
is stopped between tokens. The features layer turns LSP params into ``CompletionRequest`` and
awaits ``submit(...).future``; nothing here knows about LSP. ``prefetch`` computes a completion
ahead (after an accepted suggestion) into the type-through cache, at low priority: real requests
go first and stop it, except one at the same place, which takes over its answer.

Threads: the worker owns the runner and the prompt builder (it alone calls, swaps and closes
them). A loader thread prepares new models and adapters (file checks, the memory estimate, the
probe in a child process, the load itself) while the worker keeps answering with the old
model; it hands the result to the worker, which swaps it in. The event loop calls ``submit``,
``status``, ``apply_config``, ``load``, ``set_adapter``, ``forget`` and ``close``.

With ``remote.route`` ``remote`` or ``auto`` (and ``remote.url``), a second lane asks a team
server (``router.RemoteLane``: its own thread, HTTP client and prompt builder). ``submit``
decides where a request goes (``remote``: the lane; ``auto``: the worker first, unless the
local model is busy or slow); the worker hands an ``auto`` request on to the lane when the
router's signals say so. A request that fails remotely is answered locally at once: with the
local answer when one was computed, else by the worker ahead of its queue. After a failure the
server is left alone for a while (``REMOTE_RETRY_S``, doubling), so typing does not wait for a
dead server's timeout on every keystroke. A private request never goes to the lane.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import Config, ModelConfig
from .cache import ResultCache
from .model import LlamaRunner, LlamaVocab, ModelLoadError, check_model_file, gpu_offload_supported
from .modelfile import ModelFileError, check_adapter, check_memory, file_key, read_gguf
from .probe import probe
from .prompt import ContextFile, PromptBuilder
from .requests import CompletionRequest, CompletionResult, RequestHandle, split_at_cursor
from .router import RemoteLane, remote_template_file, unsure
from .shaping import AnswerLengthChoice, CompletionShaper
from .speculative import Speculation
from .warmup import WARM_BATCH, DocumentStates, Seen, classify, context_digest, first_window_end

__all__ = ["CompletionEngine", "CompletionRequest", "CompletionResult", "EngineStatus", "RequestHandle",
           "split_at_cursor"]

log = logging.getLogger(__name__)

REMOTE_RETRY_S = 5.0
"""After a remote failure the server is not asked for this long (doubling with each failure in a
row, up to ``REMOTE_RETRY_MAX_S``): requests go local at once instead of waiting for a timeout."""
REMOTE_RETRY_MAX_S = 60.0
LOCAL_LATENCY_WEIGHT = 0.3
"""Weight of the newest local latency in the running average that ``remote.auto_slow_ms`` reads."""


@dataclass(frozen=True)
class EngineStatus:
    """What the engine is doing, for ``slm.status`` and the status bar (a snapshot)."""

    state: str
    """no-model, loading, ready or error."""
    detail: str = ""
    model: str | None = None
    """Path of the loaded GGUF file."""
    name: str | None = None
    template: str | None = None
    """Name of the FIM template in use (the adapter's when it brought one)."""
    adapter: str | None = None
    n_gpu_layers: int | None = None
    n_ctx: int | None = None
    cache_hits: int = 0
    last_context: tuple[ContextFile, ...] = ()
    """The context pieces that made it into the last prompt."""
    route: str = "local"
    """``remote.route`` in effect: local, remote or auto (local while no server is set up)."""
    remote: str | None = None
    """The team server prompts may go to (kind, URL, model), None when none."""
    backend: str | None = None
    """Who answered the last completion the model or server computed: local or remote."""
    backend_reason: str = ""
    """Why (the router's reason, or the remote failure that made the local model answer)."""
    answered: tuple[tuple[str, int], ...] = ()
    """Completions answered so far by each of local, remote and cache."""
    remote_retry_s: float = 0.0
    """Seconds until a server that failed is asked again (0: it is asked)."""
    prefetch: tuple[tuple[str, int], ...] = ()
    """Completions computed ahead (``prefetch``): ``queued``, ``answered`` (the answer went into
    the cache), ``joined`` (a request came while it ran and took its answer), ``dropped``
    (stopped by a real request, or stale)."""
    kv_states: tuple[tuple[str, float], ...] = ()
    """The KV states kept for recently used documents (count, MiB, limit, restored, evicted) and
    the warmups done and stopped (``CompletionEngine.kv_report``)."""
    answer_length: tuple[tuple[str, object], ...] = ()
    """``completion.answer_length``, who ends the local model's answers now, and how many of the
    last it could end it ended itself (``AnswerLengthChoice.snapshot``)."""


@dataclass(frozen=True)
class _Loaded:
    """Facts about the worker's runner that other threads may read (replaced, never changed)."""

    model: str | None = None
    name: str | None = None
    template: str | None = None
    adapter: str | None = None
    n_gpu_layers: int | None = None
    n_ctx: int | None = None


def _vocab_only(config: Config) -> bool:
    """Whether only the local model's vocabulary is loaded (to build prompts for the server)."""
    rc = config.remote
    return rc.route == "remote" and not rc.fallback and bool(rc.url)


def _draft_model(config: Config) -> str:
    """The draft model the settings ask for (empty: none)."""
    sc = config.speculative
    return sc.draft_model if sc.mode == "draft" else ""


class _Close:
    """The last job: the worker closes the runner and stops."""


class _Prefetch(RequestHandle):
    """A completion computed ahead for the type-through cache (``CompletionEngine.prefetch``):
    nobody awaits it. It waits behind real requests and is stopped by one, except a request at
    the same place, which takes over its answer."""


def _files_key(model: str | Path, adapter: str | Path | None) -> str:
    """Names a model and adapter by their files (``modelfile.file_key``): what the answer
    lengths are remembered under."""
    parts = []
    for path in (model, adapter):
        try:
            parts.append(":".join(map(str, file_key(path))) if path else "")
        except OSError:
            parts.append(str(path))
    return "|".join(parts)


def _same_place(a: CompletionRequest, b: CompletionRequest) -> bool:
    return a.document_key == b.document_key and a.line == b.line and a.column == b.column and a.text == b.text


def _settle(future: Future[Any], result: object = None, error: BaseException | None = None) -> None:
    """Resolve a future that its caller may have cancelled meanwhile (then nobody waits for it)."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except InvalidStateError:
        pass


class CompletionEngine:
    def __init__(self, config: Config, on_state: Callable[[str, str], None] | None = None, *,
                 probe_files: bool = True, answer_lengths: Path | None = None) -> None:
        self.config = config
        self.probe_files = probe_files
        """Try new model and adapter files in a child process first (``engine.probe``)."""
        self.runner: LlamaRunner | None = None
        """Owned by the worker thread: only it may read or call it once the engine runs."""
        self.builder: PromptBuilder | None = None
        """Owned by the worker thread, like ``runner``."""
        self.cache = ResultCache()
        self.state = "no-model"
        self.state_detail = ""
        self._loaded = _Loaded()
        self._last_context: tuple[ContextFile, ...] = ()
        self._model_config: ModelConfig | None = None
        self._draft_asked = ""
        """The draft model of the last load asked for (kept, unused, while drafts are off)."""
        """The model settings of the last load asked for (``apply_config`` compares with them)."""
        self._pending_loads = 0
        self._model_path: str | None = None
        """The GGUF file of the last successful load (its weights, or its vocabulary alone)."""
        self.lane: RemoteLane | None = None
        """The remote lane, when a server is set up and the route may use it (any thread reads
        it; ``_set_lane`` replaces it under ``_lock``)."""
        self._remote_inflight: dict[str, RequestHandle] = {}
        self._remote_failures = 0
        self._remote_retry_at = 0.0
        self._local_ms: float | None = None
        """Running average of local completion latency (``remote.auto_slow_ms``)."""
        self._answered: Counter[str] = Counter()
        self.answer_length = AnswerLengthChoice(answer_lengths)
        """(worker) Who ends the local model's answers under ``completion.answer_length: auto``
        (remembered per model and adapter in ``answer_lengths``, the language server's file)."""
        self._prefetched: Counter[str] = Counter()
        self._last_backend: str | None = None
        self._last_backend_reason = ""
        self._on_state = on_state or (lambda state, detail: None)
        self.states = DocumentStates(config.completion.kv_states_mb << 20)
        """(worker) KV states of recently used documents besides the one in the KV cache."""
        self._kv_document: str | None = None
        """(worker) The document whose prompt the runner's KV cache holds."""
        self._seen: dict[str, Seen] = {}
        """(worker) Each document's last request, which its next one's cause compares with."""
        self._last_document: str | None = None
        self._warm_request: tuple[CompletionRequest, bool] | None = None
        """The latest place to warm the prompt for (``warm``) and whether at the file's top
        window; under ``_lock``. The worker takes it when no job waits."""
        self._warmups: Counter[str] = Counter()
        self._idle_due = False
        """(worker) A request or warmup ran since the worker was last idle: see what to do then."""
        self._jobs: deque[Callable[[], None] | RequestHandle | _Close] = deque()
        self._lock = threading.Condition()
        self._running: RequestHandle | None = None
        self._gate: threading.Event | None = None
        self._closed = False
        self._loader_jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name="slm-engine", daemon=True)
        self._thread.start()
        self._loader = threading.Thread(target=self._load_loop, name="slm-engine-loader", daemon=True)
        self._loader.start()

    # -- state ------------------------------------------------------------------------------
    def _set_state(self, state: str, detail: str = "") -> None:
        self.state, self.state_detail = state, detail
        try:
            self._on_state(state, detail)
        except Exception:  # a reporting failure must not kill the worker
            log.exception("state callback failed")

    def status(self) -> EngineStatus:
        """A snapshot of the engine's state and model, safe to take from any thread."""
        loaded, lane = self._loaded, self.lane
        with self._lock:
            answered = tuple(sorted(self._answered.items()))
            prefetched = tuple(sorted(self._prefetched.items()))
            retry = max(0.0, self._remote_retry_at - time.monotonic())
        return EngineStatus(self.state, self.state_detail, loaded.model, loaded.name, loaded.template,
                            loaded.adapter, loaded.n_gpu_layers, loaded.n_ctx, self.cache.hits,
                            self._last_context, self.config.remote.route if lane is not None else "local",
                            lane.describe() if lane is not None else None, self._last_backend,
                            self._last_backend_reason, answered, round(retry, 1), prefetched,
                            tuple(self.kv_report().items()),
                            tuple(self.answer_length.snapshot(self.config.completion.answer_length).items()))

    def _publish(self) -> None:
        """(worker) Refresh what ``status`` reports about the runner."""
        runner = self.runner
        self._loaded = _Loaded() if runner is None else _Loaded(
            str(runner.path), runner.name, runner.template.name, runner.adapter_path, runner.n_gpu_layers,
            runner.n_ctx)

    def apply_config(self, config: Config) -> bool:
        """Take new settings; True when the model must be (re)loaded for them (then call ``load``).
        Completion settings apply without a reload."""
        old, self.config = self.config, config
        if self._model_config is None or config.model != self._model_config:
            return True
        if _vocab_only(old) != _vocab_only(config):
            return True  # the model's weights are needed now, or only its vocabulary
        if self._model_path is None and self._pending_loads == 0:
            return True  # the last load failed: try again
        if _draft_model(config) not in ("", self._draft_asked):
            return True  # the draft model is loaded with the model (by the loader, not the worker)
        if old.completion != config.completion or old.speculative != config.speculative:
            self._reconfigure(config)
        if (old.remote != config.remote or old.completion != config.completion) and self._model_path:
            self._reopen_lane(self._model_path, config)
        return False

    def expect_model(self, timeout: float = 120.0) -> None:
        """Hold requests until ``load`` or ``no_model`` is called (the server knows a model is
        coming at initialize, but reads its settings first): early requests wait, not fail."""
        gate = threading.Event()
        self._gate = gate
        self.state = "loading"

        def hold() -> None:
            # A load in progress opens the gate when its model is ready, however long it takes.
            if not gate.wait(timeout) and self._pending_loads:
                gate.wait()

        self._enqueue(hold)

    def _open_gate(self) -> None:
        gate, self._gate = self._gate, None
        if gate is not None:
            gate.set()

    def no_model(self, detail: str) -> None:
        self._set_state("no-model", detail)
        self._open_gate()

    def load(self, model_path: str, progress: Callable[[float], None] | None = None) -> Future[None]:
        """Load (or replace) the model with the current ``config.model`` settings.

        The new model is checked and loaded beside the old one, which keeps answering; the
        worker swaps it in only when it loaded, then frees the old one. On failure the old model
        stays. Both are in memory for a moment (the estimate of ``modelfile.check_memory``
        counts the new one against what is available)."""
        done: Future[None] = Future()
        cfg = self.config
        self._model_config = dataclasses.replace(cfg.model)
        self._draft_asked = _draft_model(cfg)
        with self._lock:
            if self._closed:
                done.set_exception(ModelLoadError("the engine is closed"))
                return done
            self._pending_loads += 1
        if self._loaded.model is None and self._gate is None:
            self.expect_model()  # requests wait for this model instead of failing with no-model
        self.state = "loading"

        def prepare() -> None:
            self._set_state("loading", model_path)
            runner: LlamaRunner | None = None
            error: Exception | None = None
            try:
                if self._closed:
                    raise ModelLoadError("the engine is closed")
                if _vocab_only(cfg):
                    check_model_file(model_path)  # the lane reads its vocabulary below
                else:
                    runner = self._open(model_path, cfg, progress)
            except Exception as exc:
                runner, error = None, exc
            if error is None:
                self._model_path = model_path
                self._reopen_lane(model_path, cfg, now=True)
            with self._lock:
                if self._closed:
                    if runner is not None:
                        runner.close()  # never handed over: this thread still owns it
                    self._pending_loads -= 1
                    _settle(done, error=ModelLoadError("the engine is closed"))
                    self._open_gate()
                    return
                self._jobs.appendleft(lambda: self._swap(runner, error, done))  # before waiting requests
                self._lock.notify()
            self._open_gate()

        self._loader_jobs.put(prepare)
        return done

    def _open(self, model_path: str, cfg: Config, progress: Callable[[float], None] | None) -> LlamaRunner:
        """(loader) Check the files, then load them: a refusal or failure leaves the old model."""
        mc = cfg.model
        path = check_model_file(model_path)
        try:
            info = read_gguf(path)
        except ModelFileError as exc:
            if mc.adapter:
                raise
            info = None  # llama.cpp may read what the gguf library does not know yet: the probe decides
            log.warning("%s; the memory of the load is not estimated", exc)
        if info is not None:
            offload = mc.n_gpu_layers != 0 and gpu_offload_supported()
            if not offload:  # on a GPU, llama.cpp reports allocation failures itself
                check_memory(info, mc.n_ctx, weights_shared=self._loaded.model == str(path))
            if mc.adapter:
                check_adapter(mc.adapter, info)
        if self.probe_files:
            probe(str(path), mc.adapter or None)
        t0 = time.perf_counter()
        runner = LlamaRunner(str(path), n_gpu_layers=mc.n_gpu_layers, threads=mc.threads, n_ctx=mc.n_ctx,
                             kv_shift=cfg.completion.kv_shift, refresh_after=cfg.completion.suffix_refresh_tokens,
                             progress=progress)
        try:
            if mc.adapter:
                runner.set_adapter(mc.adapter)
        except BaseException:
            runner.close()
            raise
        runner.speculation = Speculation.of(cfg.speculative)
        if _draft_model(cfg):
            self._open_draft(runner, cfg)
        elif cfg.speculative.mode == "draft":
            log.error("speculative.mode is draft but speculative.draft_model is empty: no drafts")
        log.info("model %s loaded in %.1f s (template %s, %d GPU layers, %d threads)", runner.name,
                 time.perf_counter() - t0, runner.template.name, runner.n_gpu_layers, runner.threads)
        if not runner.template.is_fim:
            log.warning("%s has no fill-in-the-middle tokens: completing from the prefix only", runner.name)
        return runner

    def _open_draft(self, runner: LlamaRunner, cfg: Config) -> None:
        """(loader) Load ``speculative.draft_model`` for ``runner``; a file that cannot be loaded or
        has another vocabulary is logged and the model answers without drafts."""
        from ..models import ModelNotFound, resolve_model

        mc, cc = cfg.model, cfg.completion
        try:
            path = check_model_file(str(resolve_model(cfg.speculative.draft_model)))
            if self.probe_files:
                probe(str(path), None)
            draft = LlamaRunner(str(path), n_gpu_layers=mc.n_gpu_layers, threads=mc.threads, n_ctx=mc.n_ctx,
                                kv_shift=cc.kv_shift, refresh_after=cc.suffix_refresh_tokens)
            try:
                runner.set_draft(draft)
            except BaseException:
                draft.close()
                raise
            log.info("draft model %s drafts for %s (speculative decoding)", draft.name, runner.name)
        except (ModelLoadError, ModelNotFound, OSError) as exc:
            log.error("speculative decoding without a draft model: %s", exc)

    def _swap(self, runner: LlamaRunner | None, error: Exception | None, done: Future[None]) -> None:
        """(worker) Put a loaded runner in place of the old one, or keep the old one."""
        with self._lock:
            self._pending_loads -= 1
        if runner is None and error is None:  # remote only: the lane has the model's vocabulary
            old, self.runner, self.builder = self.runner, None, None
            self.cache.clear()
            self._publish()
            if old is not None:
                old.close()
            lane = self.lane
            self._set_state("ready", f"remote: {lane.describe()}" if lane is not None else "no remote server")
            _settle(done, None)
            return
        if runner is None:
            assert error is not None
            if self.runner is not None:
                log.warning("kept %s: %s", self.runner.name, error)
                self._set_state("ready", self.runner.name)
            else:
                self._set_state("error", str(error))
            _settle(done, error=error)
            return
        old, self.runner = self.runner, runner
        self.answer_length.reset(_files_key(runner.path, runner.adapter_path))
        self._forget_kv()
        self._rebuild_builder()
        self.cache.clear()
        self._publish()
        if old is not None:
            old.close()
        self._set_state("ready", runner.name)
        _settle(done, None)

    # -- the remote lane ----------------------------------------------------------------------
    def _reopen_lane(self, model_path: str, config: Config, now: bool = False) -> None:
        """Replace the remote lane for ``config`` (none when the route is local or no server is
        set): on the loader thread, which reads the vocabulary, or here with ``now``."""
        def open_lane() -> None:
            lane: RemoteLane | None = None
            if config.remote.route != "local" and config.remote.url:
                try:
                    vocab = LlamaVocab(model_path, remote_template_file(config))
                    lane = RemoteLane(config, vocab, self._remote_done, self._remote_failed)
                except Exception as exc:
                    log.error("no remote completions: %s", exc)
            elif config.remote.route != "local":
                log.warning("remote.route is %s but remote.url is empty: completions stay local",
                            config.remote.route)
            with self._lock:
                old, self.lane = self.lane, lane
                self._remote_failures, self._remote_retry_at = 0, 0.0
            if old is not None:
                old.close()  # its requests in flight end as cancelled

        if now:
            open_lane()
        else:
            self._loader_jobs.put(open_lane)

    def _remote_available(self) -> RemoteLane | None:
        """The lane, unless the server failed recently (then requests stay local for a while)."""
        lane = self.lane
        if lane is None or time.monotonic() < self._remote_retry_at:
            return None
        return lane

    def _send_remote(self, handle: RequestHandle, lane: RemoteLane, reason: str) -> None:
        handle.route_reason = reason
        key = handle.request.document_key
        with self._lock:
            if handle.cancelled:  # superseded while the worker decided: a newer request owns the slot below
                handle.resolve(CompletionResult("", reason="cancelled"))
                return
            self._remote_inflight[key] = handle
        handle.future.add_done_callback(lambda _f: self._forget_inflight(key, handle))
        lane.submit(handle)

    def _forget_inflight(self, key: str, handle: RequestHandle) -> None:
        with self._lock:
            if self._remote_inflight.get(key) is handle:
                del self._remote_inflight[key]

    def _remote_done(self, handle: RequestHandle, result: CompletionResult) -> None:
        """(lane) The server answered."""
        with self._lock:
            self._remote_failures, self._remote_retry_at = 0, 0.0
        if result.text:
            prefix, suffix = split_at_cursor(handle.request.text, handle.request.line, handle.request.column)
            self.cache.put(handle.request.document_key, prefix, suffix, result.text)
        self._finish(handle, result)

    def _remote_failed(self, handle: RequestHandle, error: str) -> None:
        """(lane) The server failed: answer locally at once, and leave the server alone a while."""
        with self._lock:
            self._remote_failures += 1
            wait = min(REMOTE_RETRY_S * 2 ** (self._remote_failures - 1), REMOTE_RETRY_MAX_S)
            self._remote_retry_at = time.monotonic() + wait
        reason = f"remote failed: {error}"
        log.warning("%s; answering with the local model, and asking the server again in %.0f s", reason, wait)
        if handle.cancelled:
            handle.resolve(CompletionResult("", reason="cancelled"))
        elif handle.fallback is not None:
            fallback = dataclasses.replace(handle.fallback, route=reason)
            if fallback.text:
                prefix, suffix = split_at_cursor(handle.request.text, handle.request.line, handle.request.column)
                self.cache.put(handle.request.document_key, prefix, suffix, fallback.text)
            self._finish(handle, fallback)
        elif self._loaded.model is not None:
            handle.local_only, handle.route_reason = True, reason
            with self._lock:
                if not self._closed:
                    self._jobs.appendleft(handle)  # ahead of the queue: the user waited already
                    self._lock.notify()
                    return
            handle.resolve(CompletionResult("", reason="cancelled"))
        else:
            self._finish(handle, CompletionResult("", reason="error: " + reason, route=reason))

    def _finish(self, handle: RequestHandle, result: CompletionResult) -> None:
        """Answer ``handle``, counting who answered (status)."""
        notify = False
        if isinstance(handle, _Prefetch):
            with self._lock:
                self._prefetched["answered" if result.text else
                                 "dropped" if result.reason == "cancelled" else "empty"] += 1
        elif result.backend:
            with self._lock:
                self._answered[result.backend] += 1
                if result.backend != "cache":
                    notify = result.backend != self._last_backend
                    self._last_backend, self._last_backend_reason = result.backend, result.route
        handle.resolve(result)
        if notify:  # the status notification says who answers now
            self._set_state(self.state, self.state_detail)

    def set_adapter(self, path: str | None) -> Future[None]:
        """Apply a GGUF LoRA adapter to the loaded model (None: remove it). The file is checked
        against the model and tried in a child process first; the future fails, and nothing
        changes, when it does not fit. It lasts until the model is loaded again (then
        ``model.adapter`` applies): other setting changes keep it."""
        done: Future[None] = Future()
        model = self._loaded.model
        if self._closed:
            done.set_exception(ModelLoadError("the engine is closed"))
            return done

        def prepare() -> None:
            try:
                if model is None:
                    raise ModelLoadError("no model is loaded")
                if path:
                    check_model_file(path)
                    check_adapter(path, read_gguf(model))
                    if self.probe_files:
                        probe(model, path)
            except Exception as exc:
                _settle(done, error=exc)
                return

            def apply(runner: LlamaRunner) -> None:
                if str(runner.path) != model:
                    raise ModelLoadError("the model changed while the adapter was checked; try again")
                runner.set_adapter(path)
                # (worker) another adapter may end its answers otherwise
                self.answer_length.reset(_files_key(runner.path, runner.adapter_path))

            def applied(f: Future[object]) -> None:
                error = f.exception()
                _settle(done, None, error)

            self.call(apply).add_done_callback(applied)

        self._loader_jobs.put(prepare)
        return done

    def _load_loop(self) -> None:
        closing = False
        while True:
            try:
                job = self._loader_jobs.get(block=not closing)
            except queue.Empty:
                return
            if job is None:
                closing = True  # run what was queued before or during close: it fails its future
                continue
            try:
                job()
            except Exception:  # each job reports to its own future; this is a bug
                log.exception("model loader job failed")

    def _reconfigure(self, config: Config) -> None:
        """Apply new completion settings without reloading the model."""
        def job() -> None:
            runner, cc = self.runner, config.completion
            if runner is None:
                return
            runner.kv_shift, runner.refresh_after = cc.kv_shift, cc.suffix_refresh_tokens
            runner.speculation = Speculation.of(config.speculative)
            if runner.draft is not None:
                runner.draft.kv_shift, runner.draft.refresh_after = cc.kv_shift, cc.suffix_refresh_tokens
            self.states.resize(cc.kv_states_mb << 20)
            self._rebuild_builder()
            self.cache.clear()

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
                self.cache.clear()
                self._forget_kv()
                if self.builder is not None and self.builder.template != self.runner.template:
                    self._rebuild_builder()  # an adapter brought (or took away) its own FIM template
                self._publish()
                _settle(done, result)
            except Exception as exc:
                _settle(done, error=exc)

        if not self._enqueue(job):
            done.set_exception(ModelLoadError("the engine is closed"))
        return done

    def run_on_model(self, work: Callable[[LlamaRunner, Callable[[], bool]], Any], *, key: str = "\x00run_on_model",
                     preemptible: bool = False) -> Future[Any]:
        """Run ``work(runner, stopped)`` in the worker thread, queued behind the requests before
        it (an edit's generation, ``engine/edit.py``); ``stopped()`` turns true when the engine
        closes, and with ``preemptible`` also as soon as a completion request waits (a next-edit
        suggestion gives way to typing). The KV cache then holds its prompt, kept as the
        document ``key``'s: the document's cells are saved first."""
        done: Future[Any] = Future()

        def stopped() -> bool:
            return self._closed or (preemptible and self._request_waiting())

        def job() -> None:
            try:
                if self.runner is None:
                    raise ModelLoadError("no local model is loaded")
                self._use_document(self.runner, key)
                _settle(done, work(self.runner, stopped))
            except Exception as exc:
                _settle(done, error=exc)

        if not self._enqueue(job):
            done.set_exception(ModelLoadError("the engine is closed"))
        return done

    def _request_waiting(self) -> bool:
        """Whether a completion request (not a prefetch) waits for the worker."""
        with self._lock:
            return any(isinstance(job, RequestHandle) and not isinstance(job, _Prefetch) for job in self._jobs)

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
        prefix, suffix = split_at_cursor(request.text, request.line, request.column)
        hit = self.cache.get(request.document_key, prefix, suffix)
        joined: _Prefetch | None = None
        with self._lock:
            # Whatever was asked for this document before is stale now, answered or not; except a
            # prefetch when the cache answers (typing through a suggestion, whose next one it computes).
            for job in list(self._jobs):
                if isinstance(job, RequestHandle) and job.request.document_key == request.document_key and not (
                        hit is not None and isinstance(job, _Prefetch)):
                    self._jobs.remove(job)
                    self._drop(job)
            running = self._running
            if hit is not None and isinstance(running, _Prefetch):
                pass
            elif isinstance(running, _Prefetch) and _same_place(running.request, request) and not running.cancelled:
                joined = running  # computing this very answer: wait for it instead of starting again
            elif running is not None and (running.request.document_key == request.document_key
                                          or isinstance(running, _Prefetch)):
                running.cancel()  # stale, or a prefetch that a real request goes before
            stale = self._remote_inflight.pop(request.document_key, None)
            # The local model is busy when it works, or will, for another document.
            busy = any(isinstance(job, RequestHandle) and not isinstance(job, _Prefetch) for job in self._jobs) or (
                running is not None and not isinstance(running, _Prefetch)
                and running.request.document_key != request.document_key)
        if stale is not None:
            stale.cancel()  # closes its HTTP stream
        if hit is not None:
            total_ms = (time.perf_counter() - t0) * 1000
            self._finish(handle, CompletionResult(hit, "\n" in hit, True, "cache", total_ms=total_ms, backend="cache",
                                                  cause="cache"))
            return handle
        if joined is not None:
            self._join(handle, joined, t0)
            return handle
        handle.t0 = t0
        rc = self.config.remote
        route = rc.route if rc.url else "local"  # before its lane is ready, the worker decides
        if request.private:
            handle.local_only, handle.route_reason = True, "private: the buffer stays on this machine"
            route = "local"
        handle.route = route
        lane = self._remote_available() if route != "local" else None
        if lane is not None:
            slow_ms = self.config.remote.auto_slow_ms
            if route == "remote":
                self._send_remote(handle, lane, "route remote")
                return handle
            if slow_ms and busy:
                self._send_remote(handle, lane, "the local model is busy")
                return handle
            if slow_ms and self._local_ms is not None and self._local_ms > slow_ms:
                self._send_remote(handle, lane, f"the local model is slow ({self._local_ms:.0f} ms)")
                return handle
        elif route != "local" and self.lane is not None:
            handle.local_only, handle.route_reason = True, "the server failed recently"
        if self._loaded.model is None and self.state != "loading":
            handle.resolve(CompletionResult("", reason="no-model", route=handle.route_reason))
            return handle
        with self._lock:
            if self._closed:
                handle.resolve(CompletionResult("", reason="cancelled"))
                return handle
            # Ahead of the prefetches that wait: they are for later, this one is for now.
            ahead = next((i for i, job in enumerate(self._jobs) if isinstance(job, _Prefetch)), len(self._jobs))
            self._jobs.insert(ahead, handle)
            self._lock.notify()
        return handle

    def prefetch(self, request: CompletionRequest) -> RequestHandle | None:
        """Compute the completion at ``request`` ahead of time, into the type-through cache, so
        that a request there is answered at once (the cursor after an accepted suggestion).
        Low priority: it waits behind real requests and a real request stops it, unless it asks
        at the same place, when it takes over the answer. A newer prefetch for the document
        replaces it. Local model only. None when there is nothing to do: a disabled language, no
        local model, a route that sends requests to a server, an answer already cached, or a
        real request for the document under way."""
        if not self.language_enabled(request.language_id) or self._loaded.model is None:
            return None
        if self.config.remote.url and self.config.remote.route != "local" and not request.private:
            return None  # the server answers these; a local answer in the cache would go before it
        prefix, suffix = split_at_cursor(request.text, request.line, request.column)
        if self.cache.get(request.document_key, prefix, suffix, count=False) is not None:
            return None
        handle = _Prefetch(request)
        handle.route, handle.local_only, handle.t0 = "local", True, time.perf_counter()
        with self._lock:
            if self._closed:
                return None
            running = self._running
            if running is not None and running.future.done() and not isinstance(running, _Prefetch):
                running = None  # answered: the worker is about to let it go
            if running is not None and running.request.document_key == request.document_key:
                if not isinstance(running, _Prefetch):
                    return None  # the real request there is newer than what was accepted
                if _same_place(running.request, request) and not running.cancelled:
                    return running  # computing it already
                running.cancel()
            for job in list(self._jobs):
                if isinstance(job, RequestHandle) and job.request.document_key == request.document_key:
                    if not isinstance(job, _Prefetch):
                        return None
                    if _same_place(job.request, request):
                        return job
                    self._jobs.remove(job)
                    self._drop(job)
            self._prefetched["queued"] += 1
            self._jobs.append(handle)
            self._lock.notify()
        return handle

    def _drop(self, job: RequestHandle) -> None:
        """(under the lock) A queued request that a newer one replaced."""
        if isinstance(job, _Prefetch):
            self._prefetched["dropped"] += 1
        job.resolve(CompletionResult("", reason="superseded"))

    def _join(self, handle: RequestHandle, prefetch: _Prefetch, t0: float) -> None:
        """Answer ``handle`` with the answer ``prefetch`` is computing for the same place."""
        with self._lock:
            self._prefetched["joined"] += 1

        def done(future: Future[CompletionResult]) -> None:
            result = future.result() if not future.cancelled() else CompletionResult("", reason="cancelled")
            if result.backend:  # the time this request waited, not the prefetch's whole time
                result = dataclasses.replace(result, total_ms=(time.perf_counter() - t0) * 1000, route="prefetched")
            self._finish(handle, result)

        prefetch.future.add_done_callback(done)

    def complete(self, request: CompletionRequest, timeout: float | None = None) -> CompletionResult:
        return self.submit(request).future.result(timeout)

    def _enqueue(self, job: Callable[[], None], first: bool = False) -> bool:
        with self._lock:
            if self._closed:
                return False
            if first:
                self._jobs.appendleft(job)
            else:
                self._jobs.append(job)
            self._lock.notify()
        return True

    def _work(self) -> None:
        while True:
            if self._idle_due and not self._preempted():
                self._idle_due = False
                self._idle()
                continue
            with self._lock:
                while not self._jobs and self._warm_request is None:
                    self._lock.wait()
                warm = None if self._jobs else self._warm_request
                if warm is not None:
                    self._warm_request = None
                else:
                    job = self._jobs.popleft()
                    if isinstance(job, RequestHandle):
                        self._running = job
            self._idle_due = True
            if warm is not None:
                self._warm(*warm)
                continue
            if isinstance(job, _Close):
                # The runner is closed here, by its owner: never while a job still uses it.
                if self.runner is not None:
                    self.runner.close()
                    self.runner = None
                self.builder = None
                self._publish()
                return
            try:
                if isinstance(job, RequestHandle):
                    if job.cancelled:
                        job.resolve(CompletionResult("", reason="cancelled"))
                    elif (result := self._complete(job)) is not None:
                        self._finish(job, result)
                else:
                    job()
            except Exception as exc:
                # The runner resets its own KV cache when a decode fails (LlamaRunner.generate);
                # a failure elsewhere (the prompt, the cache) leaves the cells intact.
                log.exception("completion failed")
                if isinstance(job, RequestHandle):
                    job.resolve(CompletionResult("", reason="error: " + str(exc)))
            finally:
                with self._lock:
                    self._running = None

    def _complete(self, handle: RequestHandle) -> CompletionResult | None:
        """(worker) Answer with the local model; None when the request went on to the server."""
        req = handle.request
        runner, builder, cc = self.runner, self.builder, self.config.completion
        if runner is None or builder is None:
            return CompletionResult("", reason="no-model", route=handle.route_reason)
        t0 = time.perf_counter()
        self._use_document(runner, req.document_key)
        prompt = builder.build(req.prompt_request(self._context_budget(runner, builder, req)))
        self._last_context = tuple(builder.last_context)
        shaper = CompletionShaper.for_cursor(prompt.prefix, prompt.suffix, cc.max_lines,
                                             self.answer_length.mode(cc.answer_length))
        if handle.route == "remote" and not handle.local_only and (lane := self._remote_available()) is not None:
            self._send_remote(handle, lane, "route remote")  # it waited here for the lane to open
            return None
        auto = handle.route == "auto" and not handle.local_only
        if auto and (lane := self._remote_available()) is not None:
            if self.config.remote.auto_blocks and shaper.multiline:
                self._send_remote(handle, lane, "a block")
                return None
            if self.config.remote.auto_context_cut and builder.last_cut:
                self._send_remote(handle, lane, f"repo context did not fit ({builder.last_cut} pieces left out)")
                return None
        writes = cc.write_on_blank_lines and shaper.blank_line  # a line opened to write on
        gen = runner.generate(prompt, max_tokens=cc.max_tokens, stop_at=shaper.stop_at,
                              cancelled=lambda: handle.cancelled, time_budget_ms=cc.time_budget_ms,
                              blank_may_end=not writes, repeats_below=shaper.repeats_code_below if writes else None)
        cause = self._cause(req, builder, runner.refreshed)
        if gen.stop_reason == "cancelled":
            log.info("completion %s (%s) cancelled: generation stopped after %d of at most %d tokens",
                     req.document_key.rsplit("/", 1)[-1], cause, gen.n_generated, cc.max_tokens)
            return CompletionResult("", reason="cancelled", generation=gen, cause=cause)
        complete = gen.stop_reason in ("eog", "stop")
        self.answer_length.record(cc.answer_length, shaper, gen.text, complete)
        text = shaper.finish(gen.text, complete=complete)
        total = (time.perf_counter() - t0) * 1000
        log.info("completion %s (%s): %d evaluated / %d reused prompt tokens, prompt %.0f ms, %d tokens in %.0f ms "
                 "(%s), %d chars", req.document_key.rsplit("/", 1)[-1], cause, gen.n_evaluated, gen.n_reused,
                 gen.prompt_ms, gen.n_generated, gen.gen_ms, gen.stop_reason, len(text))
        self._local_ms = total if self._local_ms is None else (
            (1 - LOCAL_LATENCY_WEIGHT) * self._local_ms + LOCAL_LATENCY_WEIGHT * total)
        result = CompletionResult(text, shaper.multiline, False, gen.stop_reason, gen, total, "local",
                                  handle.route_reason or ("confident" if auto else ""), cause)
        if auto and (why := unsure(gen, text, self.config)) and (lane := self._remote_available()) is not None:
            handle.fallback = result  # shown at once if the server fails
            self._send_remote(handle, lane, why)
            return None
        # A look-ahead that found nothing to suggest says so too (the request after the accept
        # then gets "nothing" at once), when the model finished rather than ran out of time.
        empty = isinstance(handle, _Prefetch) and gen.stop_reason in ("eog", "stop")
        if text or empty:
            prefix, suffix = split_at_cursor(req.text, req.line, req.column)
            self.cache.put(req.document_key, prefix, suffix, text, empty=empty)
        return result

    # -- warm prompts ---------------------------------------------------------------------------
    def warm(self, request: CompletionRequest, top: bool = False) -> None:
        """Evaluate the prompt for a request at ``request``'s cursor in the background, once the
        model is idle (``completion.warmup``), so that the request finds it evaluated: when a
        document opens (``top``: at the end of its first prefix window, which every cursor
        above reuses) and when an edit lands far from the last one. Any request, or a newer
        warmup, stops it within ``warmup.WARM_BATCH`` tokens; what it evaluated stays. Nothing
        for a disabled language or a server's requests; one asked while the model loads runs once
        it is loaded."""
        if not self.config.completion.warmup or not self.language_enabled(request.language_id):
            return
        if self.config.remote.url and self.config.remote.route == "remote" and not request.private:
            return
        with self._lock:
            if not self._closed:
                self._warm_request = (request, top)
                self._lock.notify()

    def _preempted(self) -> bool:
        """Whether a warmup must stop: a job waits, a newer warmup does, or the engine closes."""
        return bool(self._jobs) or self._warm_request is not None or self._closed

    def _warm(self, request: CompletionRequest, top: bool) -> None:
        """(worker) Evaluate the prompt at ``request`` until something else is to be done."""
        runner, builder = self.runner, self.builder
        if runner is None or builder is None or not self.config.completion.warmup:
            return
        t0 = time.perf_counter()
        try:
            if top:
                lines = request.text.split("\n")
                line = first_window_end(lines, lambda x: builder.count(x + "\n"), builder.prefix_tokens)
                request = dataclasses.replace(request, line=line, column=len(lines[line]))
            self._use_document(runner, request.document_key)
            prompt = builder.build(request.prompt_request(self._context_budget(runner, builder, request)))
            evaluated = runner.warm(prompt, self._preempted, WARM_BATCH)
        except Exception:
            log.exception("warmup failed")
            return
        stopped = self._preempted()
        self._warmups["stopped" if stopped else "done"] += 1
        name, ms = request.document_key.rsplit("/", 1)[-1], (time.perf_counter() - t0) * 1000
        if stopped:  # (what it evaluated stays; the request that stopped it counts it as reused)
            log.info("warmup of %s at %d:%d stopped by a request after %.0f ms", name, request.line, request.column, ms)
        else:
            log.info("warmed %s at %d:%d: %d prompt tokens evaluated in %.0f ms", name, request.line, request.column,
                     evaluated, ms)

    def _idle(self) -> None:
        """(worker) Nothing waits: evaluate the far suffix afresh before typing drifts it past
        ``completion.suffix_refresh_tokens`` (``LlamaRunner.refresh_far``), so that no request
        pays for it; any request stops it within ``warmup.WARM_BATCH`` tokens."""
        runner = self.runner
        if runner is None or not self.config.completion.warmup or not runner.refresh_due():
            return
        t0 = time.perf_counter()
        try:
            n = runner.refresh_far(self._preempted, WARM_BATCH)
        except Exception:
            log.exception("refreshing the far suffix failed")
            return
        self._warmups["refreshed"] += n
        log.debug("far suffix: %d tokens evaluated afresh in %.0f ms%s", n, (time.perf_counter() - t0) * 1000,
                  ", stopped by a request" if self._preempted() else "")

    def _use_document(self, runner: LlamaRunner, key: str) -> bool:
        """(worker) Make ``key`` the document whose prompt the KV cache holds: the cells of the
        one there are saved (``completion.kv_states_mb``) and ``key``'s put back when they were
        kept (True). Without a saved state the cells stay: what the documents share (the repo
        context's start) is reused."""
        if self._kv_document == key:
            return False
        previous, self._kv_document = self._kv_document, key
        if self.states.limit <= 0:
            return False
        if previous is not None and (state := runner.save_state()) is not None:
            self.states.put(previous, state)
        saved = self.states.take(key)
        return saved is not None and runner.restore_state(saved)

    def _forget_kv(self) -> None:
        """(worker) The KV cache was emptied or holds another model's cells: nothing saved fits."""
        self.states.clear()
        self._kv_document = None

    def _context_budget(self, runner: LlamaRunner, builder: PromptBuilder, req: CompletionRequest) -> int | None:
        budget = req.context_tokens
        if budget is not None:
            cc = self.config.completion
            room = runner.n_ctx - builder.prefix_tokens - builder.suffix_tokens - cc.max_tokens - 64
            budget = max(0, min(budget, room))  # what a short file leaves unused stays within room
        return budget

    def _cause(self, req: CompletionRequest, builder: PromptBuilder, refreshed: bool) -> str:
        """(worker) Why this request had prompt work (``warmup.classify``); it becomes the
        document's last request."""
        now = Seen(req.line, builder.window(req.document_key), context_digest(builder.last_context))
        cause = classify(self._seen.get(req.document_key), now,
                         self._last_document not in (None, req.document_key), refreshed)
        self._seen[req.document_key] = now
        self._last_document = req.document_key
        return cause

    def kv_report(self) -> dict[str, float]:
        """The saved KV states and warmups so far (any thread; counts may lag by a job)."""
        states = self.states
        return {"documents": len(states), "bytes": states.nbytes, "mib": round(states.nbytes / (1 << 20), 1),
                "limit_mib": states.limit >> 20, "restored": states.restored, "evicted": states.evicted,
                "warmups": self._warmups["done"], "warmups_stopped": self._warmups["stopped"],
                "refreshed_tokens": self._warmups["refreshed"]}

    def forget(self, document_key: str) -> None:
        self.cache.forget(document_key)
        if (lane := self.lane) is not None:
            lane.forget(document_key)

        def job() -> None:
            if self.builder is not None:
                self.builder.forget(document_key)
            self.states.forget(document_key)
            self._seen.pop(document_key, None)

        self._enqueue(job)

    def close(self, timeout: float = 10.0) -> None:
        """Stop: queued requests are cancelled, the running one is stopped between tokens, and the
        worker closes the runner once it is done with it."""
        self._open_gate()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for job in list(self._jobs):
                if isinstance(job, RequestHandle):
                    self._jobs.remove(job)
                    job.resolve(CompletionResult("", reason="cancelled"))
            if self._running is not None:
                self._running.cancel()
            self._jobs.append(_Close())
            self._lock.notify()
        self._loader_jobs.put(None)
        self._thread.join(timeout)
        self._loader.join(timeout)
        with self._lock:
            lane, self.lane = self.lane, None
        if lane is not None:
            lane.close()
