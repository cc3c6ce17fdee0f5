"""Speculative decoding (engine/speculative.py and LlamaRunner.generate): drafts verified in one
batch give the answer plain greedy decoding gives, token for token, on the tiny model and on the
real Qwen (SLM_LSP_TEST_MODEL)."""

from __future__ import annotations

import pytest

from slm_lsp.engine.model import SEQ_GEN, LlamaRunner, ModelLoadError
from slm_lsp.engine.prompt import PromptBuilder
from slm_lsp.engine.shaping import CompletionShaper
from slm_lsp.engine.speculative import DraftBudget, PromptLookup, Speculation
from tests.conftest import CORRUPT_MODEL, REAL_MODEL, TINY_MODEL

PREFIX = "import os\n\n\ndef load(path):\n    with open(path) as fh:\n        data = fh.read()\n    return "
SUFFIX = "\n\n\ndef save(path, data):\n    with open(path, 'w') as fh:\n        fh.write(data)\n" * 3
MODES = (Speculation(mode="off"),  # (adaptive off: every draft is checked, whatever it costs here)
         Speculation(mode="lookup", draft_tokens=8, ngram_min=1, ngram_max=3, adaptive=False),
         Speculation(mode="draft", draft_tokens=6, draft_p_min=0.0, adaptive=False))


@pytest.fixture(scope="module")
def runner():
    r = LlamaRunner(str(TINY_MODEL), threads=1, n_ctx=2048)
    r.set_draft(LlamaRunner(str(TINY_MODEL), threads=1, n_ctx=2048))  # the model drafting for itself
    yield r
    r.close()


@pytest.fixture(scope="module")
def builder(runner):
    return PromptBuilder(runner.template, runner, 512, 256, runner.bos, near_lines=1)


def generate_each_way(runner, prompt, **kw):
    out = {}
    for spec in MODES:
        runner.speculation = spec
        runner.reset_cache()
        out[spec.mode] = runner.generate(prompt, **kw)
    runner.speculation = Speculation()
    return out


def test_prompt_lookup_copies_what_followed_the_latest_longest_match():
    # ... 5 6 7 [8 9] ... 6 7 [1 2] ... then 6 7 generated: the 2-gram "6 7" last occurred before 1 2.
    look = PromptLookup([5, 6, 7, 8, 9, 0, 6, 7, 1, 2, 3], ngram_min=1, ngram_max=3)
    assert look.draft([4, 6, 7], 3) == [1, 2, 3]
    # A longer match wins over a later shorter one: "5 6 7" occurred only at the start.
    assert look.draft([4, 6, 7, 4, 5, 6, 7], 2) == [8, 9]
    # Nothing below ngram_min: the single token 3 recurs, but "X 3" does not.
    strict = PromptLookup([1, 3, 4, 5], ngram_min=2, ngram_max=3)
    assert strict.draft([9, 3], 4) == []
    assert PromptLookup([1, 3, 4, 5], ngram_min=1, ngram_max=3).draft([9, 3], 4) == [4, 5, 9, 3]
    # A draft never runs past what is known, and k bounds it.
    assert PromptLookup([1, 2, 3], ngram_min=1).draft([2], 5) == [3, 2]
    assert PromptLookup([1, 2, 3, 4, 5], ngram_min=1).draft([1], 2) == [2, 3]


def test_drafts_are_skipped_where_they_cost_more_than_they_save():
    # A busy CPU thread: a plain step 180 ms, each drafted token 100 ms more, 40% of them right.
    cpu = DraftBudget()
    assert cpu.worth_it()  # nothing known yet: try
    for _ in range(20):
        cpu.plain_step(180.0)
        cpu.checked(80.0 + 100.0 * 6, drafted=5, accepted=2)
    decisions = [cpu.worth_it() for _ in range(32)]
    assert decisions.count(True) == 32 // DraftBudget.PROBE_EVERY  # only the probes
    # A GPU: a batch costs about a plain step; the same 40% pays.
    gpu = DraftBudget()
    for _ in range(20):
        gpu.plain_step(10.0)
        gpu.checked(12.0, drafted=5, accepted=2)
    assert all(gpu.worth_it() for _ in range(32))
    # Drafts that turn right again win the CPU back.
    for _ in range(20):
        cpu.checked(180.0 + 100.0 * 5, drafted=5, accepted=5)
    assert all(cpu.worth_it() for _ in range(8))


@pytest.mark.parametrize("max_tokens", [1, 7, 40])
def test_every_mode_gives_the_plain_greedy_answer_token_for_token(runner, builder, max_tokens):
    prompt = builder.layout(PREFIX, SUFFIX)
    got = generate_each_way(runner, prompt, max_tokens=max_tokens)
    plain = got["off"]
    assert plain.n_drafted == 0 and plain.n_generated == max_tokens
    for mode in ("lookup", "draft"):
        g = got[mode]
        assert (g.text, g.n_generated, g.stop_reason) == (plain.text, plain.n_generated, plain.stop_reason), mode
        assert g.logprobs == pytest.approx(plain.logprobs, abs=1e-3), mode  # the model's, not the drafter's
    if max_tokens > 1:  # a model drafting for itself is always right
        assert got["draft"].n_accepted == got["draft"].n_drafted > 0
    if max_tokens >= 40:  # by then the tiny model repeats itself, and lookup finds it
        assert got["lookup"].n_accepted > 0


def test_stop_at_ends_inside_an_accepted_draft_and_the_cache_holds_only_the_answer(runner, builder):
    prompt = builder.layout(PREFIX, SUFFIX)

    def stop_at(text: str) -> int | None:
        return 12 if len(text) > 20 else None

    got = generate_each_way(runner, prompt, max_tokens=60, stop_at=stop_at)
    assert {g.text for g in got.values()} == {got["off"].text} and len(got["off"].text) == 12
    assert {g.n_generated for g in got.values()} == {got["off"].n_generated}
    for spec in MODES:
        runner.speculation = spec
        runner.reset_cache()
        g = runner.generate(prompt, max_tokens=60, stop_at=stop_at)
        # As after plain decoding: the prompt and all generated tokens but the last (rejected and
        # unused draft cells are gone).
        pos_max = runner._llama_cpp.llama_memory_seq_pos_max(runner._mem, SEQ_GEN)
        assert pos_max == len(prompt.tokens) + g.n_generated - 2, spec.mode
    runner.speculation = Speculation()


def test_cancel_during_speculation_then_the_next_answer_is_unchanged(runner, builder):
    prompt = builder.layout(PREFIX, SUFFIX)
    expected = generate_each_way(runner, prompt, max_tokens=30)["off"].text
    for spec in MODES[1:]:
        runner.speculation = spec
        calls = iter(range(1000))
        runner.reset_cache()
        g = runner.generate(prompt, max_tokens=200, cancelled=lambda calls=calls: next(calls) >= 14)
        assert g.stop_reason == "cancelled" and 0 < g.n_generated < 200, spec.mode
        assert runner.generate(prompt, max_tokens=30).text == expected, spec.mode
    runner.speculation = Speculation()


def test_a_draft_model_with_another_vocabulary_is_refused(runner, monkeypatch):
    other = LlamaRunner(str(TINY_MODEL), threads=1, n_ctx=256)
    try:
        monkeypatch.setattr(other, "token_text", lambda i: "Ġdef" if i == 300 else runner.token_text(i))
        with pytest.raises(ModelLoadError, match="another vocabulary.*token 300"):
            runner.set_draft(other)
        monkeypatch.setattr(other, "n_vocab", runner.n_vocab + 1000)
        with pytest.raises(ModelLoadError, match="must share the model's tokenizer"):
            runner.set_draft(other)
        assert runner.draft is not None and runner.draft is not other  # the old draft stays
    finally:
        other.close()


REAL_PREFIX = '''import math


def circle_area(radius: float) -> float:
    """Area of a circle."""
    return math.pi * radius ** 2


def circle_perimeter(radius: float) -> float:
    """Perimeter of a circle."""
    return 2 * math.pi * radius


def square_area(side: float) -> float:
    """Area of a square."""
    return side ** 2


def square_perimeter(side: float) -> float:
    """'''
REAL_SUFFIX = "\n\n\ndef main() -> None:\n    print(circle_area(1.0), square_area(2.0))\n"


@pytest.mark.skipif(not REAL_MODEL, reason="SLM_LSP_TEST_MODEL is not set (see README: Tests)")
def test_real_model_speculation_is_token_for_token_plain_greedy():
    target = LlamaRunner(REAL_MODEL, threads=1, n_ctx=1024)
    try:
        tiny = LlamaRunner(str(TINY_MODEL), threads=1, n_ctx=256)
        try:
            with pytest.raises(ModelLoadError, match="another vocabulary"):
                target.set_draft(tiny)
        finally:
            tiny.close()
        target.set_draft(LlamaRunner(REAL_MODEL, threads=1, n_ctx=1024))  # same file: the identity check
        builder = PromptBuilder(target.template, target, 512, 128, target.bos)
        prompt = builder.layout(REAL_PREFIX, REAL_SUFFIX)
        shaper = CompletionShaper.for_cursor(prompt.prefix, prompt.suffix, 4)
        modes = (Speculation(mode="off"), Speculation(mode="lookup", draft_tokens=8, adaptive=False),
                 Speculation(mode="draft", draft_tokens=4, adaptive=False))
        got = {}
        for spec in modes:
            target.speculation = spec
            target.reset_cache()
            got[spec.mode] = target.generate(prompt, max_tokens=24, stop_at=shaper.stop_at, time_budget_ms=60000)
        plain = got["off"]
        assert plain.n_generated >= 4, plain.text
        for mode in ("lookup", "draft"):
            assert got[mode].text == plain.text, (mode, got[mode].text, plain.text)
            assert got[mode].n_generated == plain.n_generated
            assert got[mode].logprobs == pytest.approx(plain.logprobs, abs=0.05)
        assert got["lookup"].n_accepted > 0  # the docstring line repeats the ones above
        assert got["draft"].n_accepted > 0
    finally:
        target.close()


TEXT = "def total(items):\n    result = 0\n    for item in items:\n        result += item\n    return result\n\n\n" \
       "def count(items):\n    result = 0\n    for item in items:\n        result += \n    return result\n"


def settings(**speculative) -> dict:
    return {"model": {"threads": 1, "n_ctx": 1024}, "speculative": speculative,
            "completion": {"max_tokens": 40, "prefix_tokens": 256, "suffix_tokens": 64}}


def test_the_engine_loads_the_draft_model_and_switches_modes_without_a_reload(caplog):
    from slm_lsp.config import merge_config
    from slm_lsp.engine.service import CompletionEngine, CompletionRequest

    engine = CompletionEngine(merge_config(settings(mode="draft", draft_model=str(TINY_MODEL))).config,
                              probe_files=False)
    try:
        engine.load(str(TINY_MODEL)).result(timeout=60)
        assert engine.call(lambda r: (r.draft is not None, r.speculation.mode)).result() == (True, "draft")
        answers = {}
        for mode in ("draft", "lookup", "off"):
            config = merge_config(settings(mode=mode, draft_model=str(TINY_MODEL))).config
            assert engine.apply_config(config) is False  # the same draft model: no reload
            engine.cache.clear()
            res = engine.complete(CompletionRequest(f"file:///{mode}.py", TEXT, 10, 18, "python"))
            assert res.generation is not None and res.generation.n_generated > 0
            assert (res.generation.n_drafted > 0) == (mode != "off"), mode
            answers[mode] = res.text
        assert answers["draft"] == answers["lookup"] == answers["off"]
        # Another draft model needs a load (by the loader thread, not the worker).
        assert engine.apply_config(merge_config(settings(mode="draft", draft_model=str(CORRUPT_MODEL))).config)
        engine.load(str(TINY_MODEL)).result(timeout=60)
        # The model answers without drafts, and says why.
        assert engine.call(lambda r: r.draft).result() is None
        assert "speculative decoding without a draft model" in caplog.text
        res = engine.complete(CompletionRequest("file:///after.py", TEXT, 10, 18, "python"))
        assert res.text == answers["off"] and res.generation is not None and res.generation.n_drafted == 0
    finally:
        engine.close()


def test_going_back_over_a_rejected_line_gives_the_same_answer_in_every_mode(runner, builder):
    # The draft model is the model itself, so its drafts are accepted and the rejected line ends
    # inside a draft batch: going back must remove those cells and stop drafting, as plain decoding does.
    prompt = builder.layout("def f(x):\n    y = x + 1\n", "\n    return y\n")

    def line_end(text: str) -> int | None:  # the tiny model writes no newlines: a line is 20 characters
        return len(text) if len(text) >= 20 else None

    greedy = generate_each_way(runner, prompt, max_tokens=20, stop_at=line_end)
    assert len({g.text for g in greedy.values()}) == 1 and greedy["draft"].n_accepted > 0, greedy
    first = greedy["off"].text
    replaced = generate_each_way(runner, prompt, max_tokens=20, stop_at=line_end,
                                 repeats_below=lambda line: line == first)
    assert replaced["off"].text != first
    assert {mode: g.text for mode, g in replaced.items()} == {mode: replaced["off"].text for mode in replaced}
