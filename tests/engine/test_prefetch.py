"""CompletionEngine.prefetch: a completion computed ahead (after an accept) lands in the
type-through cache; a real request at the same place joins it, any other real request goes
first and stops it; a newer prefetch replaces an older one. The tiny model, in process."""

from __future__ import annotations

import dataclasses
import threading

import pytest

from slm_lsp.config import merge_config
from slm_lsp.engine.service import CompletionEngine, CompletionRequest
from tests.conftest import TOTAL_TEXT, tiny_engine

TEXT = TOTAL_TEXT


@pytest.fixture
def engine():
    yield from tiny_engine()


class Gate:
    """Holds every generation until ``open``; counts them."""

    def __init__(self, engine: CompletionEngine) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.calls = 0
        original = engine.runner.generate

        def generate(prompt, **kw):
            self.calls += 1
            self.started.set()
            assert self.release.wait(30)
            return original(prompt, **kw)

        engine.runner.generate = generate  # type: ignore[method-assign]

    def open(self) -> None:
        self.release.set()


def req(line=3, col=18, key="file:///a.py", text=TEXT) -> CompletionRequest:
    return CompletionRequest(key, text, line, col, "python")


def prefetch_counts(engine: CompletionEngine) -> dict[str, int]:
    return dict(engine.status().prefetch)


def test_a_prefetched_answer_is_served_from_the_cache(engine):
    handle = engine.prefetch(req())
    assert handle is not None
    ahead = handle.future.result(30)
    assert ahead.text and not ahead.cached
    answer = engine.complete(req(), timeout=30)
    assert answer.cached and answer.backend == "cache" and answer.text == ahead.text
    assert engine.cache.hits == 1 and engine.cache.misses == 0  # the prefetch's look-up is not counted
    assert prefetch_counts(engine) == {"queued": 1, "answered": 1}
    # Only the real request counts as answered (by the cache): the prefetch answered nobody.
    assert dict(engine.status().answered) == {"cache": 1}
    assert engine.prefetch(req()) is None  # already cached: nothing to do


def test_a_request_at_the_same_place_joins_the_running_prefetch(engine):
    gate = Gate(engine)
    handle = engine.prefetch(req())
    assert handle is not None and gate.started.wait(10)
    real = engine.submit(req())
    gate.open()
    ahead, answer = handle.future.result(30), real.future.result(30)
    assert gate.calls == 1  # computed once
    assert answer.text == ahead.text and answer.route == "prefetched" and answer.backend == "local"
    assert prefetch_counts(engine) == {"queued": 1, "answered": 1, "joined": 1}


def test_a_request_elsewhere_stops_the_prefetch(engine):
    gate = Gate(engine)
    handle = engine.prefetch(req())
    assert handle is not None and gate.started.wait(10)
    real = engine.submit(req(col=10))  # the user moved on: the prefetch is stale
    gate.open()
    assert handle.future.result(30).reason == "cancelled"
    assert real.future.result(30).reason in ("length", "time", "eog", "stop")
    assert prefetch_counts(engine) == {"queued": 1, "dropped": 1}


def test_a_request_for_another_document_goes_first(engine):
    gate = Gate(engine)
    blocker = engine.submit(req(key="file:///c.py"))
    assert gate.started.wait(10)
    queued = engine.prefetch(req())
    other = engine.submit(req(key="file:///b.py"))  # queued after the prefetch, served before it
    order: list[str] = []
    queued.future.add_done_callback(lambda _: order.append("prefetch"))
    other.future.add_done_callback(lambda _: order.append("b.py"))
    gate.open()
    blocker.future.result(30)
    assert other.future.result(30).text and queued.future.result(30).text
    assert order == ["b.py", "prefetch"]


def test_a_real_request_for_another_document_preempts_a_running_prefetch(engine):
    gate = Gate(engine)
    handle = engine.prefetch(req())
    assert handle is not None and gate.started.wait(10)
    other = engine.submit(req(key="file:///b.py"))
    gate.open()
    assert handle.future.result(30).reason == "cancelled"
    assert other.future.result(30).text


def test_no_prefetch_while_a_real_request_for_the_document_waits_and_a_newer_one_replaces_the_older(engine):
    gate = Gate(engine)
    blocker = engine.submit(req(key="file:///c.py"))
    assert gate.started.wait(10)
    real = engine.submit(req())
    assert engine.prefetch(req(col=10)) is None
    first = engine.submit(req(key="file:///d.py"))  # keeps a.py's queue state apart from the real one
    older = engine.prefetch(req(key="file:///e.py"))
    newer = engine.prefetch(req(key="file:///e.py", col=12))
    assert older is not None and newer is not None
    gate.open()
    for handle in (blocker, real, first):
        handle.future.result(30)
    assert older.future.result(30).reason == "superseded"
    assert newer.future.result(30).reason != "superseded"
    assert prefetch_counts(engine)["dropped"] == 1


def test_no_prefetch_when_a_server_answers(engine):
    cfg = merge_config({"model": {"threads": 1, "n_ctx": 1024},
                        "remote": {"route": "auto", "url": "http://127.0.0.1:9"}}).config
    engine.config = cfg  # the route alone decides; no lane is needed to refuse
    assert engine.prefetch(req()) is None
    private = req()
    private.private = True  # a private buffer is answered locally whatever the route
    handle = engine.prefetch(private)
    assert handle is not None and handle.future.result(30).text


def test_a_disabled_language_or_no_model_gets_no_prefetch():
    cfg = merge_config({"completion": {"enabled_languages": ["rust"]}}).config
    e = CompletionEngine(cfg)
    try:
        assert e.prefetch(req()) is None  # no model loaded
    finally:
        e.close()


def test_typing_through_a_cached_answer_leaves_the_prefetch_running(engine):
    shown = engine.complete(req(), timeout=30)  # in the cache now
    assert shown.text
    gate = Gate(engine)
    ahead = engine.prefetch(req(line=3, col=18 + len(shown.text),
                                text=TEXT.replace("result += ", "result += " + shown.text, 1)))
    assert ahead is not None and gate.started.wait(10)
    typed = TEXT.replace("result += ", "result += " + shown.text[:1], 1)
    assert engine.submit(req(col=19, text=typed)).future.result(10).cached  # types the suggestion's first char
    assert engine.prefetch(ahead.request) is ahead  # the same place: the one under way
    gate.open()
    assert ahead.future.result(30).reason != "cancelled"


def test_a_prefetch_that_finds_nothing_answers_nothing_at_once(engine):
    original = engine.runner.generate

    def nothing(prompt, **kw):  # the model's own run, ending before it wrote anything
        return dataclasses.replace(original(prompt, **kw), text="", stop_reason="eog")

    engine.runner.generate = nothing  # type: ignore[method-assign]
    handle = engine.prefetch(req())
    assert handle is not None and handle.future.result(30).text == ""
    answer = engine.complete(req(), timeout=30)
    assert answer.cached and answer.text == "" and answer.backend == "cache"
    assert prefetch_counts(engine) == {"queued": 1, "empty": 1}
    engine.runner.generate = original  # type: ignore[method-assign]
    assert not engine.complete(req(col=10), timeout=30).cached  # another place: asked anew
