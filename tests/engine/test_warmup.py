"""Request causes, warmups preempted by real requests, and per-document KV states that give the
same answer as a cold prompt: on the tiny generated model (the real one where
SLM_LSP_TEST_MODEL is set)."""

from __future__ import annotations

import threading
import time

import pytest

from slm_lsp.config import merge_config
from slm_lsp.engine.model import KvState, LlamaRunner, _common_prefix
from slm_lsp.engine.prompt import PromptBuilder
from slm_lsp.engine.service import CompletionEngine, CompletionRequest
from slm_lsp.engine.warmup import DocumentStates, Seen, classify, first_window_end
from tests.conftest import PREFIX, SUFFIX, TINY_MODEL, TOTAL_TEXT, tiny_runner

OTHER_PREFIX = "class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, x):\n        "
OTHER_SUFFIX = "\n\n    def pop(self):\n        return self.items.pop()\n" * 4
never = lambda: False  # noqa: E731


# -- causes --------------------------------------------------------------------------------------
def test_each_cause_is_named_from_what_changed():
    seen = Seen(10, (0, 20), 7)
    assert classify(None, seen, False, False) == "open"
    assert classify(seen, seen, True, False) == "switch"
    assert classify(seen, Seen(40, (30, 20), 8), False, False) == "jump"  # before window and context
    assert classify(seen, Seen(11, (0, 20), 8), False, False) == "context"
    assert classify(seen, Seen(11, (5, 20), 7), False, False) == "window"
    assert classify(seen, Seen(11, (0, 21), 7), False, False) == "window"  # the suffix window too
    assert classify(seen, Seen(12, (0, 20), 7), False, True) == "refresh"
    assert classify(seen, Seen(12, (0, 20), 7), False, False) == "typing"


def test_first_window_end_holds_the_top_of_the_file_within_the_budget():
    lines = ["abcd\n"] * 10
    assert first_window_end(lines, len, 20) == 3  # lines 0..3 are 20 characters: the next one would overflow
    assert first_window_end(lines, len, 1000) == 9
    assert first_window_end(["x" * 50], len, 20) == 0


def test_document_states_stay_within_their_limit_least_recently_used_out():
    def state(n: int) -> KvState:
        return KvState([1], [], [], 1, 0, b"x" * n, b"")

    states = DocumentStates(100)
    states.put("a", state(40))
    states.put("b", state(40))
    states.put("c", state(40))  # a goes
    assert len(states) == 2 and states.nbytes == 80 and states.evicted == 1
    assert states.take("a") is None and states.take("b") is not None
    assert states.nbytes == 40 and states.restored == 1
    states.put("huge", state(101))  # never fits
    assert states.take("huge") is None
    states.resize(10)
    assert len(states) == 0 and states.nbytes == 0


# -- the runner: warm, save, restore ---------------------------------------------------------------
@pytest.fixture(scope="module")
def runner():
    yield from tiny_runner()


@pytest.fixture(scope="module")
def builder(runner):
    return PromptBuilder(runner.template, runner, 512, 256, runner.bos, near_lines=1)


def test_a_warmed_prompt_leaves_only_the_tail_to_evaluate(runner, builder):
    prompt = builder.layout(PREFIX, SUFFIX)
    runner.reset_cache()
    cold = runner.generate(prompt, max_tokens=6)
    runner.reset_cache()
    assert runner.warm(prompt, never, batch=16) == len(prompt.tokens)
    warm = runner.generate(prompt, max_tokens=6)
    assert warm.n_evaluated == len(prompt.tail) and warm.text == cold.text


def test_a_stopped_warmup_keeps_what_it_evaluated(runner, builder):
    prompt = builder.layout(PREFIX, SUFFIX)
    runner.reset_cache()
    calls = 0

    def after_two_batches() -> bool:
        nonlocal calls
        calls += 1
        return calls > 2

    assert runner.warm(prompt, after_two_batches, batch=8) == 0  # stopped: nothing finished
    gen = runner.generate(prompt, max_tokens=2)
    assert gen.n_reused == 16  # the two batches of the head it got to
    assert gen.n_evaluated == len(prompt.tokens) - 16


@pytest.mark.parametrize("near_lines", [0, 1])
def test_a_restored_state_answers_as_a_cold_prompt(runner, near_lines):
    b = PromptBuilder(runner.template, runner, 512, 256, runner.bos, near_lines=near_lines)
    mine, other = b.layout(PREFIX, SUFFIX), b.layout(OTHER_PREFIX, OTHER_SUFFIX)
    runner.reset_cache()
    cold = runner.generate(mine, max_tokens=8)
    state = runner.save_state()
    assert state is not None and state.nbytes > 0
    runner.reset_cache()
    runner.generate(other, max_tokens=8)  # another document fills the cache
    assert runner.restore_state(state)
    back = runner.generate(mine, max_tokens=8)
    assert back.n_evaluated == len(mine.tail) and back.n_reused == len(mine.tokens) - len(mine.tail)
    assert back.text == cold.text
    typed = b.layout(PREFIX + "da", SUFFIX)  # and typing goes on from it as from a live cache
    runner.reset_cache()
    runner.generate(mine, max_tokens=2)
    live = runner.generate(typed, max_tokens=8)
    assert runner.restore_state(state)
    restored = runner.generate(typed, max_tokens=8)
    assert (restored.text, restored.n_evaluated) == (live.text, live.n_evaluated)


def test_a_state_saved_after_a_stopped_warmup_restores_its_partial_head(runner, builder):
    prompt = builder.layout(PREFIX, SUFFIX)
    runner.reset_cache()
    calls = 0

    def after_one_batch() -> bool:
        nonlocal calls
        calls += 1
        return calls > 1

    runner.warm(prompt, after_one_batch, batch=8)
    state = runner.save_state()
    assert state is not None and state.head == prompt.head[:8]
    runner.reset_cache()
    assert runner.restore_state(state)
    gen = runner.generate(prompt, max_tokens=4)
    assert gen.n_reused == 8
    runner.reset_cache()
    assert gen.text == runner.generate(prompt, max_tokens=4).text


def test_real_model_restored_state_answers_as_a_cold_prompt(real_model):
    r = LlamaRunner(str(real_model), threads=2, n_ctx=512)
    try:
        b = PromptBuilder(r.template, r, 128, 48, r.bos)
        mine, other = b.layout("def add(a, b):\n    return ", "\n\nprint(add(1, 2))\n"), b.layout("x = [", "]\n")
        cold = r.generate(mine, max_tokens=6)
        state = r.save_state()
        assert state is not None
        r.generate(other, max_tokens=4)
        assert r.restore_state(state)
        back = r.generate(mine, max_tokens=6)
        assert back.n_evaluated == 1 and back.text == cold.text
    finally:
        r.close()


# -- the engine: causes, warmups, documents ----------------------------------------------------------
TEXT = TOTAL_TEXT
LONG = "".join(f"def f{i}(x):\n    return x + {i}\n\n" for i in range(60))


@pytest.fixture
def engine():
    cfg = merge_config({"model": {"threads": 1, "n_ctx": 1024},
                        "completion": {"max_tokens": 6, "prefix_tokens": 256, "suffix_tokens": 64}}).config
    e = CompletionEngine(cfg, probe_files=False)
    e.load(str(TINY_MODEL)).result(timeout=60)
    yield e
    e.close()


def req(text=TEXT, line=3, col=18, key="file:///a.py") -> CompletionRequest:
    return CompletionRequest(key, text, line, col, "python")


def _wait(predicate, timeout=30.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


def test_the_engine_names_each_requests_cause(engine):
    first = engine.complete(req())
    assert first.cause == "open"
    lines = TEXT.split("\n")
    lines[3] += "it"
    assert engine.complete(req("\n".join(lines), col=20)).cause == "typing"
    assert engine.complete(req(key="file:///b.py")).cause == "open"
    lines[3] += "em"
    assert engine.complete(req("\n".join(lines), col=22)).cause == "switch"
    far = LONG.split("\n")
    assert engine.complete(req(LONG, line=1, col=4, key="file:///c.py")).cause == "open"
    assert engine.complete(req(LONG, line=len(far) - 10, col=4, key="file:///c.py")).cause == "jump"
    again = engine.complete(req(LONG, line=len(far) - 10, col=4, key="file:///c.py"))
    assert again.cause == "cache"  # the same place again: the type-through cache answers


def test_going_back_to_a_document_restores_its_prompt(engine):
    a = engine.complete(req())
    engine.complete(req(LONG, line=20, col=4, key="file:///b.py"))
    engine.cache.clear()  # the same place again: the model, not the type-through cache, answers
    back = engine.complete(req())
    assert back.cause == "switch"
    assert back.generation.n_evaluated == 1 and back.text == a.text
    report = engine.kv_report()
    assert report["restored"] == 1 and report["documents"] == 1 and report["bytes"] > 0


def test_without_kept_states_going_back_evaluates_the_prompt_again(engine):
    engine.config.completion.kv_states_mb = 0
    engine.states.resize(0)
    a = engine.complete(req())
    engine.complete(req(LONG, line=20, col=4, key="file:///b.py"))
    engine.cache.clear()  # the same place again: the model, not the type-through cache, answers
    back = engine.complete(req())
    assert back.generation.n_evaluated > 10 and back.text == a.text
    assert engine.kv_report()["restored"] == 0


def test_a_warmup_leaves_the_request_only_its_tail(engine):
    engine.warm(req(LONG, line=40, col=4, key="file:///c.py"))
    _wait(lambda: engine.kv_report()["warmups"] == 1)
    result = engine.complete(req(LONG, line=40, col=4, key="file:///c.py"))
    assert result.cause == "open" and result.generation.n_evaluated == 1


def test_a_warmup_at_the_top_of_a_file_serves_a_request_above_its_end(engine):
    engine.warm(req(LONG, line=0, col=0, key="file:///c.py"), top=True)
    _wait(lambda: engine.kv_report()["warmups"] == 1)
    result = engine.complete(req(LONG, line=6, col=4, key="file:///c.py"))
    prompt = engine.builder.last_prompt
    assert result.generation.n_reused >= len(prompt.head) - 1  # the head came from the warmup


def test_a_request_stops_a_running_warmup_at_once(engine):
    started, saw_request = threading.Event(), threading.Event()
    original = engine.runner.warm

    def watched_warm(prompt, cancelled, batch):
        started.set()
        end = time.monotonic() + 30
        while not cancelled() and time.monotonic() < end:  # a warmup that would run for ever
            time.sleep(0.005)
        if cancelled():
            saw_request.set()
        return original(prompt, cancelled, batch)

    engine.runner.warm = watched_warm  # type: ignore[method-assign]
    engine.warm(req(LONG, line=40, col=4, key="file:///c.py"))
    assert started.wait(10)
    result = engine.complete(req(), timeout=30)
    assert saw_request.is_set() and result.text and result.cause == "open"
    assert engine.kv_report()["warmups_stopped"] == 1


def test_warmup_off_does_nothing(engine):
    engine.config.completion.warmup = False
    engine.warm(req())
    time.sleep(0.2)
    assert engine.kv_report()["warmups"] == 0
    assert engine.complete(req()).generation.n_reused == 0


def test_a_far_suffix_evaluated_afresh_is_a_refresh(engine):
    engine.complete(req(LONG, line=20, col=4))
    engine.runner.refresh_after = 0  # every change under the far suffix refreshes it
    typed = LONG.split("\n")
    typed[20] = typed[20][:4] + "re" + typed[20][4:]
    result = engine.complete(req("\n".join(typed), line=20, col=6))
    assert result.cause == "refresh"


# -- the far suffix evaluated afresh while idle --------------------------------------------------------
def test_refresh_far_gives_the_far_cells_of_a_fresh_evaluation(runner, builder):
    import numpy as np

    p1, p2 = builder.layout(PREFIX, SUFFIX), builder.layout(PREFIX + "data + x", SUFFIX)
    runner.reset_cache()
    ref = runner._prepare(p2, never)[0].copy()
    runner.reset_cache()
    runner._prepare(p1, never)
    runner._prepare(p2, never)  # the far cells were shifted, not evaluated: they drifted
    assert runner._drift > 0 and runner.refresh_due(0.0)
    assert runner.refresh_far(never, batch=16) == len(p2.far)
    assert runner._drift == 0 and not runner.refresh_due(0.0)
    got, evaluated, _ = runner._prepare(p2, never)
    assert evaluated == len(p2.tail)
    assert np.allclose(got, ref, atol=1e-3)


def test_a_stopped_refresh_keeps_its_cells_when_the_drift_runs_out(runner, builder):
    p1, p2, p3 = (builder.layout(PREFIX + t, SUFFIX) for t in ("", "data + xyz", "data + xy"))
    runner.reset_cache()
    runner.generate(p1, max_tokens=2)
    runner.generate(p2, max_tokens=2)
    calls = 0

    def after_two_batches() -> bool:
        nonlocal calls
        calls += 1
        return calls > 2

    assert runner.refresh_far(after_two_batches, batch=8) == 16
    # The next change (smaller than the last) takes the old far cells past the limit, not the refreshed ones.
    runner.refresh_after = runner._drift
    try:
        g = runner.generate(p3, max_tokens=2)
    finally:
        runner.refresh_after = 512
    assert runner.refreshed
    common = _common_prefix(p2.head, p3.head)
    assert g.n_reused == common + 16  # the head's common part and the refreshed far cells
    runner.reset_cache()
    assert g.text == runner.generate(p3, max_tokens=2).text


def test_the_idle_engine_refreshes_the_far_suffix_before_a_request_must(engine):
    engine.config.completion.suffix_refresh_tokens = 8
    engine.runner.refresh_after = 8
    lines = LONG.split("\n")
    causes = []
    for typed in ("r", "re", "ret", "retu", "retur"):
        lines[20] = "    " + typed
        causes.append(engine.complete(req("\n".join(lines), line=20, col=4 + len(typed))).cause)
        _wait(lambda: not engine.runner.refresh_due())  # the idle worker refreshed it
    assert engine.kv_report()["refreshed_tokens"] > 0
    assert "refresh" not in causes, causes
