"""The router's signals and the remote lane: which model answers, and how a request reaches the
team server.

``remote.route``: ``local`` (the in-process model; nothing leaves the machine), ``remote`` (the
server; the local model answers when it fails) or ``auto``. In ``auto`` the engine sends a
request to the server directly when the local model would be a poor choice before it runs
(a block, repo context that did not fit the local budget, the local model busy or slow), and
after it ran when its answer is unsure (the mean, or the lowest, log-probability of its tokens
under a threshold). The local answer stays at hand: when the server fails, it is shown at once.

The remote lane is a thread with its own asyncio loop. It owns the HTTP client (one
``RemoteBackend``) and a ``PromptBuilder`` over the local model's vocabulary, loaded without
weights (``LlamaVocab``): prompts for the server are built here by the same code as local ones
(template, repo context, windows), with their own sticky windows so the server's prefix cache
sees the same stable prompt head the local KV cache does. Requests run there as tasks, one per
document at a time; cancelling a request cancels its task, which closes the HTTP stream.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from urllib.parse import urlsplit

from ..config import Config
from ..context.privacy import is_loopback, redact
from .model import ADAPTER_TEMPLATE, Generation, LlamaVocab
from .prompt import PromptBuilder
from .remote import RemoteBackend, RemoteError
from .requests import CompletionResult, RequestHandle
from .shaping import AnswerLengthChoice, CompletionShaper

log = logging.getLogger(__name__)

SIGNAL_OFF = -100.0
"""A log-probability threshold at this value turns its signal off."""

_warned_urls: set[str] = set()


def confidence(logprobs: list[float]) -> tuple[float, float]:
    """(mean, lowest) log-probability of an answer's tokens; (0, 0) for none."""
    if not logprobs:
        return 0.0, 0.0
    return sum(logprobs) / len(logprobs), min(logprobs)


def unsure(generation: Generation, text: str, config: Config) -> str:
    """Why a local answer (``text``, shaped from ``generation``) is not good enough under
    ``config.remote`` ("" when it is)."""
    rc = config.remote
    if rc.auto_empty and not text.strip() and generation.stop_reason != "cancelled":
        return "empty answer"
    mean, lowest = confidence(generation.logprobs)
    if rc.auto_mean_logprob > SIGNAL_OFF and mean < rc.auto_mean_logprob:
        return f"unsure (mean log-probability {mean:.2f} < {rc.auto_mean_logprob:g})"
    if rc.auto_min_logprob > SIGNAL_OFF and lowest < rc.auto_min_logprob:
        return f"unsure (a token's log-probability {lowest:.2f} < {rc.auto_min_logprob:g})"
    return ""


def warn_plain_http(url: str) -> None:
    """Warn once per URL that code would cross a network unencrypted (the server's settings log
    says so too, when they change; this covers ``complete``, ``bench`` and ``eval``)."""
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        host = ""
    if url.startswith("http://") and not is_loopback(host) and url not in _warned_urls:
        _warned_urls.add(url)
        log.warning("remote.url %s is plain http:// to another machine: your code crosses the network "
                    "unencrypted (use https://, or an SSH tunnel to a localhost port)", redact(url))


def remote_template_file(config: Config) -> str:
    """The ``template.json`` that lays out prompts for the server: ``remote.template``, else the
    one beside the local adapter (the server runs the same adapter), else none (the model's own)."""
    if config.remote.template:
        return config.remote.template
    if config.model.adapter:
        beside = Path(config.model.adapter).expanduser().with_name(ADAPTER_TEMPLATE)
        if beside.is_file():
            return str(beside)
    return ""


def stop_strings(vocab: LlamaVocab) -> list[str]:
    """Texts that end an answer, for servers that write special tokens out."""
    t = vocab.template
    return [s for s in dict.fromkeys((*t.stop, t.prefix, t.suffix, t.middle)) if s]


class RemoteLane:
    """The thread that asks the team server. ``submit`` hands it a request; it answers through
    ``done(handle, result)`` or reports ``failed(handle, error)`` (the engine falls back)."""

    def __init__(self, config: Config, vocab: LlamaVocab,
                 done: Callable[[RequestHandle, CompletionResult], None],
                 failed: Callable[[RequestHandle, str], None]) -> None:
        self.config = config
        self.vocab = vocab
        self.backend = RemoteBackend(config.remote)
        cc = config.completion
        # Owned by the lane's thread, like the backend's client.
        self.builder = PromptBuilder(vocab.template, vocab, cc.prefix_tokens, cc.suffix_tokens, vocab.bos,
                                     cc.near_lines)
        self.stop = stop_strings(vocab)
        self.answer_length = AnswerLengthChoice()
        """(lane thread) Who ends the server's answers under ``completion.answer_length: auto``:
        its model is not the local one (a new lane, for a new server, counts afresh)."""
        self._done, self._failed = done, failed
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="slm-remote", daemon=True)
        self._thread.start()
        self._closed = False
        warn_plain_http(config.remote.url)
        log.info("route %s: prompts go to the %s (template %s, vocabulary of %s)", config.remote.route,
                 self.backend.describe(), vocab.template.name, vocab.name)

    def describe(self) -> str:
        return self.backend.describe()

    def submit(self, handle: RequestHandle) -> None:
        """Ask the server for ``handle`` (any thread)."""
        if self._closed:
            self._failed(handle, "the remote lane is closed")
            return
        future = asyncio.run_coroutine_threadsafe(self._answer(handle), self._loop)
        # Cancelling the concurrent future cancels the task: the HTTP stream closes.
        handle.on_cancel(future.cancel)

    async def _answer(self, handle: RequestHandle) -> None:
        try:
            result = await self._generate(handle)
        except asyncio.CancelledError:
            handle.resolve(CompletionResult("", reason="cancelled"))
            raise
        except RemoteError as exc:
            self._failed(handle, str(exc))
            return
        except Exception as exc:  # a bug here must not leave the request unanswered
            log.exception("remote completion failed")
            self._failed(handle, f"{type(exc).__name__}: {exc}")
            return
        self._done(handle, result)

    async def _generate(self, handle: RequestHandle) -> CompletionResult:
        req, cc, rc = handle.request, self.config.completion, self.config.remote
        t0 = time.perf_counter()
        budget = req.context_tokens
        if budget is not None and rc.context_tokens:
            budget = rc.context_tokens
        # Private context pieces (secrets, denied files) never go into a prompt that leaves.
        prompt = self.builder.build(req.prompt_request(budget, drop_private=True))
        shaper = CompletionShaper.for_cursor(prompt.prefix, prompt.suffix, cc.max_lines,
                                             self.answer_length.mode(cc.answer_length))
        tokens = prompt.tokens
        if self.vocab.bos and tokens[:len(self.vocab.bos)] == self.vocab.bos:
            tokens = tokens[len(self.vocab.bos):]  # the server adds its own BOS to a text prompt
        stop = self.stop
        if not shaper.multiline and shaper.line_start.strip() and shaper.below is None:
            # Mid-line the answer ends at the first newline (shaping would cut it there): the
            # server stops by itself and ends the stream, so the connection stays open for the next
            # keystroke instead of being closed to stop it. At a line's end an answer may start
            # with a newline and go on below, so there shaping stops it.
            stop = [*stop, "\n"]
        gen = await self.backend.stream(self.vocab.render(tokens), max_tokens=cc.max_tokens, stop=stop,
                                        stop_at=shaper.stop_at, time_budget_ms=cc.time_budget_ms)
        complete = gen.stop_reason in ("eog", "stop")
        self.answer_length.record(cc.answer_length, shaper, gen.text, complete)
        text = shaper.finish(gen.text, complete=complete)
        total = (time.perf_counter() - t0) * 1000
        log.info("completion %s by the %s (%s): %d prompt tokens, server evaluated %s / cached %s, first token "
                 "%.0f ms, %d tokens in %.0f ms (%s), %d chars", req.document_key.rsplit("/", 1)[-1],
                 self.backend.describe(), handle.route_reason or rc.route, len(tokens), _known(gen.n_evaluated),
                 _known(gen.n_reused), gen.prompt_ms, gen.n_generated, gen.gen_ms, gen.stop_reason, len(text))
        return CompletionResult(text, shaper.multiline, False, gen.stop_reason, gen, total, "remote",
                                handle.route_reason)

    def forget(self, document_key: str) -> None:
        def job() -> None:
            self.builder.forget(document_key)

        if not self._closed:
            self._loop.call_soon_threadsafe(job)

    def close(self, timeout: float = 5.0) -> None:
        """Cancel what is in flight, close the HTTP client and stop the thread."""
        if self._closed:
            return
        self._closed = True

        async def shutdown() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.backend.aclose()

        done: Future[None] = asyncio.run_coroutine_threadsafe(shutdown(), self._loop)
        try:
            done.result(timeout)
        except Exception as exc:
            log.warning("the remote lane did not close cleanly: %s", exc)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self._loop.close()
        self.vocab.close()


def _known(n: int) -> str:
    return "?" if n < 0 else str(n)
