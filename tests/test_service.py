"""CompletionEngine: the worker thread, superseding, the type-through cache, failures."""

from __future__ import annotations

import threading
import time

import pytest

from slm_lsp.config import merge_config
from slm_lsp.engine.service import CompletionEngine, CompletionRequest, split_at_cursor
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
