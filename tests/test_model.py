"""LlamaRunner on the tiny generated model: templates, KV reuse counters, shifting, cancellation."""

from __future__ import annotations

import numpy as np
import pytest

from slm_lsp.engine.model import SEQ_GEN, LlamaRunner, ModelLoadError
from slm_lsp.engine.prompt import PromptBuilder
from tests.conftest import CORRUPT_MODEL, PREFIX, SUFFIX, TINY_MODEL, TINY_MODEL_NO_FIM_METADATA, tiny_runner


@pytest.fixture(scope="module")
def runner():
    yield from tiny_runner()


@pytest.fixture(scope="module")
def builder(runner):
    return PromptBuilder(runner.template, runner, 512, 256, runner.bos, near_lines=1)


def fresh_text(runner, prompt, **kw) -> str:
    runner.reset_cache()
    return runner.generate(prompt, max_tokens=8, **kw).text


def test_template_from_metadata_and_from_token_texts():
    for path in (TINY_MODEL, TINY_MODEL_NO_FIM_METADATA):
        r = LlamaRunner(str(path), threads=1, n_ctx=256)
        try:
            assert r.template.name == "qwen2.5-coder"
            assert r.template.file_sep == "<|file_sep|>"
            assert r.special("<|fim_middle|>") in range(r.n_vocab)
            assert r.special("<|endoftext|>") in r.stop_ids
        finally:
            r.close()


def test_missing_and_corrupt_model_files(tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        LlamaRunner(str(tmp_path / "nope.gguf"))
    text_file = tmp_path / "notes.gguf"
    text_file.write_text("hello")
    with pytest.raises(ModelLoadError, match="not a GGUF"):
        LlamaRunner(str(text_file))
    with pytest.raises(ModelLoadError, match="could not load"):
        LlamaRunner(str(CORRUPT_MODEL))


def test_repeat_request_reuses_everything_but_the_tail(runner, builder):
    prompt = builder.layout(PREFIX, SUFFIX)
    runner.reset_cache()
    first = runner.generate(prompt, max_tokens=8)
    assert first.n_evaluated == len(prompt.tokens) and first.n_reused == 0
    second = runner.generate(prompt, max_tokens=8)
    assert second.n_evaluated == len(prompt.tail) == 1
    assert second.n_reused == len(prompt.tokens) - 1
    assert second.text == first.text


def test_typing_reuses_head_and_shifts_far_suffix(runner, builder):
    p1 = builder.layout(PREFIX, SUFFIX)
    p2 = builder.layout(PREFIX + "data", SUFFIX)
    assert p1.far == p2.far and p1.far
    runner.reset_cache()
    runner.generate(p1, max_tokens=4)
    g = runner.generate(p2, max_tokens=4)
    common = next(i for i, (a, b) in enumerate(zip(p1.head, p2.head)) if a != b) if p1.head != p2.head[:len(p1.head)] \
        else len(p1.head)
    assert g.n_reused == common + len(p2.far)
    assert g.n_evaluated == len(p2.tokens) - g.n_reused
    # The sequence the model generates from ends right after the prompt and the generated tokens.
    pos_max = runner._llama_cpp.llama_memory_seq_pos_max(runner._mem, SEQ_GEN)
    assert pos_max == len(p2.tokens) + g.n_generated - 2  # the last generated token is not decoded


def test_without_shift_reuse_is_exact(runner, builder):
    p1 = builder.layout(PREFIX, SUFFIX)
    p2 = builder.layout(PREFIX + "da", SUFFIX)
    p3 = builder.layout(PREFIX[:-3], SUFFIX)  # deleting characters works too
    runner.kv_shift = False
    try:
        expected = [fresh_text(runner, p) for p in (p2, p3)]
        runner.reset_cache()
        runner.generate(p1, max_tokens=8)
        got = [runner.generate(p, max_tokens=8) for p in (p2, p3)]
        assert [g.text for g in got] == expected
        assert all(0 < g.n_reused <= len(p1.head) for g in got), [(g.n_reused, len(p1.head)) for g in got]
    finally:
        runner.kv_shift = True


def test_shifted_far_suffix_matches_a_fresh_evaluation_closely(runner, builder):
    """Moving the far cells must give (near) the same next-token distribution as evaluating
    them at their new place: if the position shift were wrong, the argmax would wander."""
    import numpy as np

    never = lambda: False  # noqa: E731
    agree = 0
    for step in range(1, 9):
        p1 = builder.layout(PREFIX + "x" * step, SUFFIX)
        p2 = builder.layout(PREFIX + "x" * step + " + y", SUFFIX)
        runner.reset_cache()
        ref = runner._prepare(p2, never)[0].copy()
        runner.reset_cache()
        runner._prepare(p1, never)
        got, _evaluated, reused = runner._prepare(p2, never)
        assert reused >= len(p2.far)
        agree += int(np.argmax(got) == np.argmax(ref))
    assert agree >= 7


def test_refresh_after_bounds_the_drift(runner, builder):
    runner.refresh_after = 0
    try:
        p1 = builder.layout(PREFIX, SUFFIX)
        p2 = builder.layout(PREFIX + "data", SUFFIX)
        runner.reset_cache()
        runner.generate(p1, max_tokens=2)
        g = runner.generate(p2, max_tokens=2)
        assert g.n_reused < len(p2.head)  # the far suffix was evaluated again
    finally:
        runner.refresh_after = 512


def test_cancel_mid_generation_stops_between_tokens(runner, builder):
    prompt = builder.layout(PREFIX, SUFFIX)
    calls = []

    def cancelled() -> bool:
        calls.append(1)
        return len(calls) > 12  # a few prompt batches, then 5 generated tokens or so

    runner.reset_cache()
    g = runner.generate(prompt, max_tokens=100, cancelled=cancelled)
    assert g.stop_reason == "cancelled"
    assert 0 < g.n_generated < 100
    # The cache stays usable: the next request gives what a fresh one gives.
    g2 = runner.generate(prompt, max_tokens=8)
    assert g2.text == fresh_text(runner, prompt)


def test_cancel_during_prompt_then_recover(runner, builder):
    prompt = builder.layout(PREFIX * 6, SUFFIX)
    runner.reset_cache()
    count = iter(range(1000))
    g = runner.generate(prompt, max_tokens=8, cancelled=lambda: next(count) >= 2)
    assert g.stop_reason == "cancelled" and g.n_generated == 0
    after = runner.generate(prompt, max_tokens=8)
    assert after.n_reused > 0  # the part evaluated before the cancel is kept
    assert after.text == fresh_text(runner, prompt)


def test_stop_at_and_time_budget(runner, builder):
    prompt = builder.layout(PREFIX, SUFFIX)
    runner.reset_cache()
    g = runner.generate(prompt, max_tokens=50, stop_at=lambda text: 3 if len(text) > 10 else None)
    assert g.stop_reason == "stop" and len(g.text) == 3
    g = runner.generate(prompt, max_tokens=2000, time_budget_ms=1)
    assert g.stop_reason == "time" and g.n_generated < 2000


def test_a_control_token_ends_the_answer(runner, builder, monkeypatch):
    # The model's next tokens, scripted: a word, the FIM middle marker (a control token that is not
    # one of the template's stop tokens), the word again.
    middle = runner.special("<|fim_middle|>")
    assert middle not in runner.stop_ids
    word = runner.tokenize("value")[0]
    script = iter([word, middle] + [word] * 8)

    def logits(*_args):
        out = np.zeros(runner.n_vocab, dtype=np.float32)
        out[next(script)] = 1.0
        return out

    monkeypatch.setattr(runner, "_prepare", lambda prompt, cancelled: (logits(), 0, 0))
    monkeypatch.setattr(runner, "_decode", lambda tokens, pos, seq, cancelled: logits())
    gen = runner.generate(builder.layout(PREFIX, SUFFIX), max_tokens=8)
    assert (gen.text, gen.n_generated, gen.stop_reason) == (runner.detokenize([word]), 1, "eog")
    assert not runner.is_eog(word)


@pytest.mark.parametrize("blank_may_end", [True, False])
def test_the_end_token_is_passed_over_while_a_blank_answer_may_not_end(runner, builder, monkeypatch,
                                                                        blank_may_end):
    # The model's logits, scripted: the end token first, a space second; then a line break first
    # (the answer is still blank), the end token second, a word third; then the end token alone.
    eog, space, word = min(runner.stop_ids), runner.tokenize(" ")[0], runner.tokenize("value")[0]
    newline = runner.tokenize("\n")[0]
    steps = iter([[(eog, 2.0), (space, 1.0)], [(newline, 3.0), (eog, 2.0), (word, 1.0)], [(eog, 1.0)]])

    def logits(*_args):
        out = np.zeros(runner.n_vocab, dtype=np.float32)
        for tok, value in next(steps):
            out[tok] = value
        return out

    monkeypatch.setattr(runner, "_prepare", lambda prompt, cancelled: (logits(), 0, 0))
    monkeypatch.setattr(runner, "_decode", lambda tokens, pos, seq, cancelled: logits())
    gen = runner.generate(builder.layout(PREFIX, SUFFIX), max_tokens=8, blank_may_end=blank_may_end)
    expected = ("", 0) if blank_may_end else (runner.detokenize([space, word]), 2)
    assert (gen.text, gen.n_generated, gen.stop_reason) == (*expected, "eog")


def test_a_first_line_that_repeats_the_code_below_is_replaced_by_the_next_choice(runner, builder, monkeypatch):
    # A scripted model whose logits depend on the tokens decoded so far, by position (as a real
    # context's do): it prefers "value" then the end token; after "other", the end token too.
    value, other = runner.tokenize("value")[0], runner.tokenize("other")[0]
    eog = min(runner.stop_ids)
    prompt = builder.layout(PREFIX, SUFFIX)
    decoded: list[int] = []
    choices = {(): [(value, 2.0), (other, 1.0)], (value,): [(eog, 1.0)], (other,): [(eog, 1.0)]}

    def logits_after() -> np.ndarray:
        out = np.zeros(runner.n_vocab, dtype=np.float32)
        for tok, weight in choices[tuple(decoded)]:
            out[tok] = weight
        return out

    def decode(tokens, pos, seq, cancelled):
        del decoded[pos - len(prompt.tokens):]  # a rewound position is written again
        decoded.extend(tokens)
        return logits_after()

    def prepare(prompt, cancelled):
        decoded.clear()
        return logits_after(), 0, 0

    monkeypatch.setattr(runner, "_prepare", prepare)
    monkeypatch.setattr(runner, "_decode", decode)
    asked: list[str] = []

    def repeats_below(line: str) -> bool:
        asked.append(line)
        return line == "value"  # (one token; "other" is several: its first one, "o", is the next choice)

    gen = runner.generate(prompt, max_tokens=8)
    assert (gen.text, gen.stop_reason) == ("value", "eog")
    gen = runner.generate(prompt, max_tokens=8, repeats_below=repeats_below)
    assert (gen.text, gen.n_generated, gen.stop_reason) == (runner.detokenize([other]), 1, "eog")
    assert asked == ["value"]  # one going back an answer: the next choice is not checked again


def test_going_back_over_a_rejected_line_leaves_the_kv_cache_right(runner, builder):
    # The real tiny model: reject its greedy first line. The answer must change, be the same when
    # asked again, and a plain request afterwards must get the original answer (the rewound cells
    # were removed, not left to poison the cache).
    prompt = builder.layout("def f(x):\n    y = x + 1\n", "\n    return y\n")

    def line_end(text: str) -> int | None:  # the tiny model writes no newlines: a line is 20 characters
        return len(text) if len(text) >= 20 else None

    greedy = runner.generate(prompt, max_tokens=20, stop_at=line_end)
    assert greedy.stop_reason == "stop" and greedy.text.strip(), greedy
    kw = {"max_tokens": 20, "stop_at": line_end, "repeats_below": lambda line: line == greedy.text}
    replaced = runner.generate(prompt, **kw)
    assert replaced.stop_reason == "stop" and replaced.text != greedy.text
    assert runner.generate(prompt, **kw).text == replaced.text
    assert runner.generate(prompt, max_tokens=20, stop_at=line_end).text == greedy.text
    fresh = LlamaRunner(str(TINY_MODEL), threads=1, n_ctx=2048)  # no cache at all
    try:
        assert fresh.generate(prompt, **kw).text == replaced.text
    finally:
        fresh.close()


def test_prompt_larger_than_context_is_an_error(runner, builder):
    big = builder.layout("x = 1\n" * 3000, "")
    with pytest.raises(RuntimeError, match="does not fit"):
        runner.generate(big, max_tokens=4)


@pytest.mark.parametrize("adapter", ["random-bytes", "other-width", "the-model-itself"])
def test_an_adapter_that_does_not_fit_is_refused_before_llama_cpp_sees_it(runner, builder, tmp_path, adapter):
    # Issue 13, item 3: llama.cpp accepted b"GGUF" + 4 KB of random bytes as an adapter and the next
    # decode crashed the process (SIGSEGV in llama_decode).
    from tests.test_modelfile import lora_adapter

    path = {"random-bytes": lambda: CORRUPT_MODEL,
            "other-width": lambda: lora_adapter(tmp_path / "a.gguf", n_embd=32, n_ff=64),
            "the-model-itself": lambda: TINY_MODEL}[adapter]()
    with pytest.raises(ModelLoadError):
        runner.set_adapter(str(path))
    assert runner.adapter_path is None
    assert fresh_text(runner, builder.layout(PREFIX, SUFFIX))  # and the model still decodes
