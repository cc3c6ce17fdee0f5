"""CompletionEngine: the worker thread, superseding, the type-through cache, failures."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import pytest

from slm_lsp.config import merge_config
from slm_lsp.engine.service import CompletionEngine, CompletionRequest, split_at_cursor
from slm_lsp.engine.shaping import CompletionShaper
from tests.conftest import TINY_MODEL

TEXT = "def total(items):\n    result = 0\n    for item in items:\n        result += \n    return result\n"


@pytest.fixture
def engine():
    cfg = merge_config({"model": {"threads": 1, "n_ctx": 1024},
                        "completion": {"max_tokens": 10, "prefix_tokens": 256, "suffix_tokens": 64}}).config
    e = CompletionEngine(cfg)
    e.load(str(TINY_MODEL)).result(timeout=60)
    yield e
    e.close()


def req(text=TEXT, line=3, col=18, key="file:///a.py", lang="python") -> CompletionRequest:
    return CompletionRequest(key, text, line, col, lang)


def test_split_at_cursor_clamps():
    assert split_at_cursor("ab\ncd", 1, 1) == ("ab\nc", "d")
    assert split_at_cursor("ab\ncd", 1, 99) == ("ab\ncd", "")
    assert split_at_cursor("ab\ncd", 9, 0) == ("ab\n", "cd")


def test_completion_and_type_through_cache(engine):
    first = engine.complete(req())
    assert first.text.strip() and not first.cached and first.generation is not None
    typed = first.text[:3]
    lines = TEXT.split("\n")
    lines[3] += typed
    second = engine.complete(req("\n".join(lines), col=18 + len(typed)))
    assert second.cached and second.text == first.text[3:]
    assert engine.cache.hits == 1


def test_disabled_language(engine):
    engine.config.completion.enabled_languages = ["rust"]
    assert engine.complete(req()).reason == "disabled"
    engine.config.completion.enabled_languages = ["*"]


def test_newer_request_supersedes_older(engine):
    # Block the worker so that both requests wait in the queue.
    gate = threading.Event()
    engine.call(lambda runner: gate.wait(10))
    old = engine.submit(req())
    new = engine.submit(req(col=10))
    other = engine.submit(req(key="file:///b.py"))
    gate.set()
    assert old.future.result(10).reason == "superseded"
    assert new.future.result(10).text
    assert other.future.result(10).text  # another document is not superseded


def test_running_request_is_cancelled_by_a_newer_one(engine):
    engine.config.completion.max_tokens = 4000
    engine.config.completion.time_budget_ms = 60_000
    started = threading.Event()
    original = engine.runner.generate

    def slow_generate(prompt, **kw):
        cancelled = kw["cancelled"]

        def watch():
            started.set()
            time.sleep(0.005)  # slow enough that the newer request arrives mid-generation
            return cancelled()
        return original(prompt, **{**kw, "cancelled": watch})

    engine.runner.generate = slow_generate  # type: ignore[method-assign]
    running = engine.submit(req())
    assert started.wait(10)
    newer = engine.submit(req(col=12))
    result = running.future.result(30)
    assert result.reason == "cancelled"
    assert newer.future.result(60).reason in ("length", "time", "eog", "stop")


def test_error_in_generation_is_reported_and_engine_recovers(engine):
    original = engine.runner.generate

    def boom(prompt, **kw):
        raise RuntimeError("decode failed")

    engine.runner.generate = boom  # type: ignore[method-assign]
    assert engine.complete(req()).reason.startswith("error")
    engine.runner.generate = original  # type: ignore[method-assign]
    assert engine.complete(req()).text


def test_no_model():
    e = CompletionEngine(merge_config().config)
    try:
        assert e.complete(req(), timeout=5).reason == "no-model"
        e.expect_model()
        pending = e.submit(req())
        e.no_model("nothing configured")
        assert pending.future.result(5).reason == "no-model"
    finally:
        e.close()


def test_an_answer_that_repeats_the_line_below_is_asked_again(engine):
    """The model writes the suffix's next line into a hole (shaping drops it): the engine asks once
    more with that first token banned, reusing the prompt, and shows the second answer."""
    prefix, suffix = "def total(items):\n    result = 0\n    ", "\n    return result\n"
    real, calls = engine.runner.generate, []

    def generate(prompt, **kw):
        g = real(prompt, **kw)
        if not calls:  # as if the model had written the next line
            g = replace(g, text="return result\n", stop_reason="stop")
        calls.append((kw.get("avoid_first", ()), g))
        return g

    engine.runner.generate = generate
    try:
        result = engine.complete(req(prefix + suffix, line=2, col=4, key="file:///hole.py"))
    finally:
        engine.runner.generate = real
    assert len(calls) == 2
    (avoid0, first), (avoid1, second) = calls
    assert not avoid0 and set(avoid1) == {first.first_token} and second.first_token != first.first_token
    assert second.n_evaluated == 1  # the prompt's cells were reused
    shaper = CompletionShaper.for_cursor(prefix, suffix)
    assert result.text == shaper.finish(second.text, complete=second.stop_reason in ("eog", "stop"))
    assert result.generation is not None
    assert result.generation.n_generated == first.n_generated + second.n_generated


def test_an_answer_that_is_kept_is_not_asked_again(engine):
    real, calls = engine.runner.generate, []
    engine.runner.generate = lambda prompt, **kw: calls.append(kw) or real(prompt, **kw)
    try:
        result = engine.complete(req(key="file:///once.py"))
    finally:
        engine.runner.generate = real
    assert result.text and len(calls) == 1
