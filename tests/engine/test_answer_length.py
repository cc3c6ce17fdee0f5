"""completion.answer_length through the engine, on the real model: where the hole is two lines
the rules' guess is one, and the model's own length keeps both; ``auto`` starts with the model's
length and counts whether the model ended the answer."""

from __future__ import annotations

import pytest

from slm_lsp.config import merge_config
from slm_lsp.engine.service import CompletionEngine, CompletionRequest
from slm_lsp.engine.shaping import CompletionShaper
from tests.conftest import REAL_MODEL

DOCUMENT = "def area_and_perimeter(w, h):\n    \n    return area, perimeter\n"


def _complete(mode: str, shaped_as: str | None = None) -> tuple[str, str, dict[str, object]]:
    config = merge_config({"model": {"threads": 1, "n_ctx": 1024},
                           "completion": {"answer_length": mode, "time_budget_ms": 60000, "warmup": False}}).config
    engine = CompletionEngine(config, probe_files=False)
    try:
        engine.load(REAL_MODEL).result()
        result = engine.complete(CompletionRequest("file:///shapes.py", DOCUMENT, 1, 4, "python"))
        assert result.generation is not None and engine.builder is not None and engine.builder.last_prompt
        prompt = engine.builder.last_prompt
        complete = result.generation.stop_reason in ("eog", "stop")
        # What the server showed is what this mode's shaper makes of the generation.
        shaper = CompletionShaper.for_cursor(prompt.prefix, prompt.suffix, config.completion.max_lines,
                                             shaped_as or mode)
        assert result.text == shaper.finish(result.generation.text, complete)
        return result.text, result.generation.text, dict(engine.status().answer_length)
    finally:
        engine.close()


@pytest.mark.skipif(not REAL_MODEL, reason="SLM_LSP_TEST_MODEL is not set (see README: Tests)")
def test_the_model_length_keeps_both_lines_of_a_two_line_hole():
    rules, rules_generated, _ = _complete("rules")
    model, model_generated, _ = _complete("model")
    assert "\n" not in rules and "area" in rules  # the rules: one line after an opener whose body exists
    assert model.startswith(rules + "\n") and "perimeter" in model.split("\n", 1)[1], model
    # The rules stopped generating at the end of the first line; the model went on to its end.
    assert len(model_generated) > len(rules_generated)


@pytest.mark.skipif(not REAL_MODEL, reason="SLM_LSP_TEST_MODEL is not set (see README: Tests)")
def test_auto_starts_with_the_model_length_and_counts_the_answer_the_model_ended():
    auto, generated, status = _complete("auto", shaped_as="model")
    assert "\n" in auto and "perimeter" in auto.split("\n", 1)[1], auto
    # One answer the model could end, and it did: still the model's length for the next.
    assert status == {"setting": "auto", "using": "model", "ended": 1, "of": 1}
