"""slm_lsp.engine.shaping: single- or multi-line, streaming stops and the final text."""

from __future__ import annotations

import json

import pytest

from slm_lsp.engine.shaping import AnswerLengthChoice, CompletionShaper, indent_of


def _shaper(prefix: str, suffix: str = "", max_lines: int = 12) -> CompletionShaper:
    return CompletionShaper.for_cursor(prefix, suffix, max_lines)


def test_indent_of():
    assert indent_of("x") == 0
    assert indent_of("    x") == 4
    assert indent_of("\tx") == 4
    assert indent_of("  \tx") == 4


# -- mode -------------------------------------------------------------------------------------
@pytest.mark.parametrize(("prefix", "suffix"), [
    ("x = foo(", ")\n"),  # text right of the cursor
    ("print(", ")"),
    ("def f():\n    return ", "\n"),  # mid-statement
    ("def f():\n    x = compute", ""),
    ("for i in ", "\n"),
    ("def f():\n    a = 1\n    ", "\n    b = 2\n"),  # blank line between lines of a block
    ("def f():\n    ", "\n    return 1\n"),  # after an opener whose body exists: fill one line
    ("if x:\n    ", "\n\n    y = 2\n"),  # same, with blank lines in between
])
def test_single_line_mode(prefix, suffix):
    s = _shaper(prefix, suffix)
    assert not s.multiline
    assert s.line_start == prefix.rsplit("\n", 1)[-1]
    assert s.rest_of_line == suffix.partition("\n")[0]


@pytest.mark.parametrize(("prefix", "suffix", "base"), [
    ("def f():\n    ", "", 0),  # empty body, nothing below
    ("def f():\n    ", "\n", 0),
    ("class A:\n    def f(self):\n        ", "\n", 4),
    ("def f():\n    ", "\n\ndef g():\n    pass\n", 0),  # the next line is not in the body
    ("if x:  # why\n    ", "", 0),  # an opener with a trailing comment
    ("function f() {\n  ", "\n}\n", 0),
    ("xs = [\n    ", "", 0),
])
def test_multiline_after_a_block_opener(prefix, suffix, base):
    s = _shaper(prefix, suffix)
    assert s.multiline
    assert s.base_indent == base


@pytest.mark.parametrize(("prefix", "suffix", "base"), [
    ("def f():\n    a = 1\n    ", "", 3),  # end of the block and of the file
    ("def f():\n    a = 1\n    ", "\n\ndef g():\n    pass\n", 3),
    ("def f():\n    a = 1\n\n    ", "\n\n    b = 2\n", 3),  # a blank line below, the block goes on
    ("x = 1\n", "", -1),  # top level: never dedents
])
def test_multiline_at_the_end_of_a_block(prefix, suffix, base):
    s = _shaper(prefix, suffix)
    assert s.multiline
    assert s.base_indent == base


def test_next_line_is_the_first_non_blank_suffix_line():
    s = _shaper("def f():\n    ", "\n\n\n    return x\n")
    assert s.next_line == "    return x"
    assert _shaper("x = 1\n", "").next_line is None


# -- streaming stops --------------------------------------------------------------------------
def test_single_line_stops_at_the_newline():
    s = _shaper("x = foo(", ")")
    assert s.stop_at("bar") is None
    assert s.stop_at("bar, baz") is None
    assert s.stop_at("bar, baz\n    y") == len("bar, baz")
    assert s.stop_at("\n") == 0


def test_block_stops_when_indentation_returns():
    s = _shaper("def f():\n    ", "")
    text = "a = 1\n    return a\n"
    assert s.stop_at(text) is None  # still in the body
    assert s.stop_at(text + "\n") is None  # blank lines do not end it
    assert s.stop_at(text + "def") is None  # an incomplete line may still grow
    assert s.stop_at(text + "def g():\n") == len("a = 1\n    return a")
    assert s.stop_at(text + "\ndef g():\n") == len("a = 1\n    return a\n")


def test_nested_block_stops_at_its_own_level():
    s = _shaper("class A:\n    def f(self):\n        ", "")
    text = "x = 1\n        if x:\n            y = 2\n"
    assert s.stop_at(text) is None  # deeper lines are fine
    assert s.stop_at(text + "    def g(self):\n") == len(text) - 1


def test_end_of_block_stops_at_the_enclosing_level():
    s = _shaper("def f():\n    a = 1\n    ", "")
    assert s.stop_at("b = 2\n    c = 3\n") is None
    assert s.stop_at("b = 2\n    c = 3\nprint(f())\n") == len("b = 2\n    c = 3")


def test_block_stops_when_a_line_repeats_the_suffix():
    s = _shaper("def f():\n    a = 1\n    ", "\n\n    return a\n")
    assert s.multiline and s.next_line == "    return a"
    assert s.stop_at("b = 2\n") is None
    assert s.stop_at("b = 2\n    return a\n") == len("b = 2")


def test_first_line_repeating_the_suffix_gives_nothing():
    s = _shaper("def f():\n    a = 1\n    ", "\n\n    return a\n")
    assert s.stop_at("return a\n") == 0
    assert s.finish("return a\n    b = 1") == ""


def test_max_lines():
    s = _shaper("def f():\n    ", "", max_lines=2)
    assert s.stop_at("a = 1\n") is None
    assert s.stop_at("a = 1\n    b = 2\n") == len("a = 1\n    b = 2")
    # Several lines may arrive at once (a multi-newline token, or finish()): still two at most.
    assert s.stop_at("a = 1\n    b = 2\n    c = 3\n    d = 4\n") == len("a = 1\n    b = 2")
    assert s.finish("a = 1\n    b = 2\n    c = 3\n    d = 4") == "a = 1\n    b = 2"


# -- final text -------------------------------------------------------------------------------
@pytest.mark.parametrize(("prefix", "suffix"), [
    ("x = ", "\n"),
    ("def f():\n    ", ""),
    ("def f():\n    a = 1\n    ", ""),
])
@pytest.mark.parametrize("text", ["", "   ", "\n", " \n\t\n  ", "\r\n"])
def test_whitespace_only_results_are_dropped(prefix, suffix, text):
    assert _shaper(prefix, suffix).finish(text) == ""
    assert _shaper(prefix, suffix).finish(text, complete=False) == ""


def test_single_line_finish():
    s = _shaper("x = ", "\n")
    assert s.finish("foo(1)  \nprint(x)") == "foo(1)"
    assert s.finish("foo(1)\r") == "foo(1)"


def test_single_line_keeps_spaces_before_text_on_the_right():
    s = _shaper("x = foo(", "b)")
    assert s.finish("a, ") == "a, "


@pytest.mark.parametrize(("line_start", "rest", "text", "shown"), [
    ("x = ", ")", "foo(bar)", "foo(bar"),  # the auto-inserted ")" is already there
    ("x = foo(", ")", "bar)", "bar"),
    ("if f(", "):", "x):", "x"),
    ("s = [", "]", "1, 2, 3]", "1, 2, 3"),
    ("s = '", "'", "abc'", "abc"),
    ("x = foo(", ")", "bar", "bar"),  # nothing to drop
    ("x = foo(", ")", "bar) + 1", "bar) + 1"),  # not a closing run at the end
    ("x = foo(", ") + 1", "bar) + 1", "bar"),  # the whole rest of the line written again
    # Closers the answer opened itself are its own, not the rest of the line written again
    # (HumanEval span, 1.5B: 3 tasks failed on the ")" taken away).
    ("return len(", ")", "set(s.lower())", "set(s.lower())"),
    ("return ' '.join(", ")", "str(i) for i in range(n + 1)", "str(i) for i in range(n + 1)"),
    ("x = [f(", ")]", "a), g(b)]", "a), g(b"),  # one of each too many: both go
    ('print("', '")', 'hi")', "hi"),  # a quote left unpaired and a ")" too many
])
def test_duplicate_closers_are_dropped(line_start, rest, text, shown):
    s = _shaper(line_start, rest + "\n")
    assert not s.multiline
    assert s.finish(text) == shown


def test_multiline_finish_cuts_the_block_and_trailing_spaces():
    s = _shaper("def f():\n    ", "")
    assert s.finish("a = 1   \n    return a\n\ndef g():\n    pass") == "a = 1\n    return a"
    assert s.finish("a = 1\n    return a\n\n\n") == "a = 1\n    return a"


def test_budget_cut_keeps_whole_lines():
    s = _shaper("def f():\n    ", "")
    text = "a = 1\n    b = 2\n    c = compu"
    assert s.finish(text, complete=False) == "a = 1\n    b = 2"
    assert s.finish(text, complete=True) == text  # ended by the model: the last line is whole
    # A single unfinished line is kept: there is nothing shorter to show.
    assert s.finish("a = compu", complete=False) == "a = compu"


def test_single_line_budget_cut_is_kept():
    s = _shaper("x = ", "\n")
    assert s.finish("compute(1, ", complete=False) == "compute(1,"


def test_single_line_repeating_the_next_line_is_dropped():
    s = _shaper("def f():\n    a = 1\n    ", "\n    return a\n")
    assert not s.multiline
    assert s.finish("return a") == ""
    assert s.finish("b = 2") == "b = 2"


def test_hole_between_lines_of_a_block_is_single_line():
    s = CompletionShaper.for_cursor('def f(x):\n    """Doc."""\n', "\n    for i in x:\n        pass\n")
    assert not s.multiline and s.expected_indent == 4


def test_dropped_indentation_is_given_back():
    s = CompletionShaper.for_cursor('def f(x):\n    """Doc."""\n', "\n    for i in x:\n        pass\n")
    assert s.finish("odd = []") == "    odd = []"
    assert s.finish("  odd = []") == "  odd = []"  # indented by the model: left alone
    mid = CompletionShaper.for_cursor("def f(x):\n    y = ", "\n")
    assert mid.finish("odd") == "odd"  # never inside a line


def test_paragraph_stops_at_a_blank_line():
    s = CompletionShaper.for_cursor("def f():\n    a = 1\n\n    ", "\n\n    b = 2\n")
    assert s.multiline and s.stop_at_blank
    text = "c = 3\n    d = 4\n\n    e = 5\n"
    assert s.finish(text) == "c = 3\n    d = 4"


def test_a_line_that_opens_a_block_brings_its_body():
    # The hole after ``try:`` (HumanEval/124): ``if len(date) == 0:`` alone would not parse.
    s = CompletionShaper.for_cursor("def f(date):\n    try:\n", "\n        a, b = date.split('-')\n")
    assert not s.multiline
    text = "        if len(date) == 0:\n            return False\n        a, b = date.split('-')\n"
    end = s.stop_at(text)
    assert end is not None and text[:end] == "        if len(date) == 0:\n            return False"
    assert s.stop_at("        if len(date) == 0:\n            return False") is None  # may still grow
    assert s.finish("        if len(date) == 0:\n            return False  ") == (
        "        if len(date) == 0:\n            return False")
    # Cut by the budget: whole lines only; a plain line still ends at its newline.
    assert s.finish("        if not date:\n            return Fa", complete=False) == "        if not date:"
    assert s.stop_at("        date = date.strip()\n        x") == len("        date = date.strip()")
    # Text right of the cursor, or a ':' that opens no block (a dict entry): one line.
    t = _shaper("d = {\n    'a': 1,\n    ", "\n    'c': 3,\n}\n")
    assert not t.multiline and t.stop_at("'b': {\n        'x': 2") == len("'b': {")
    u = _shaper("    if ", " pass\n")
    assert u.stop_at("x:\n        y") == len("x:")
    # Mid-statement (the user is typing the line): one line.
    w = _shaper("def f(x):\n    if ", "\n")
    assert not w.multiline and w.stop_at("x > 1:\n        return x") == len("x > 1:")
    # The body is below already (HumanEval/140): the opener is the whole answer.
    v = CompletionShaper.for_cursor("def f(t):\n    while t:\n", "\n            end += 1\n        else:\n")
    assert v.stop_at('        if t[0] == " ":\n            if x:') == len('        if t[0] == " ":')


# -- an answer that starts below the cursor's line ----------------------------------------------
def test_at_a_line_end_an_answer_starting_with_a_newline_goes_on_below():
    # After ``def f(x):`` with nothing below: the body, as on a new line (a block).
    s = _shaper("def f(x):", "\n")
    assert not s.multiline and s.below is not None and s.below.multiline
    assert s.stop_at("\n") is None
    assert s.stop_at("\n    y = x + 1\n") is None  # still in the body
    text = "\n    y = x + 1\n    return y\ndef g():\n"
    end = s.stop_at(text)
    assert end is not None and text[:end] == "\n    y = x + 1\n    return y"
    assert s.finish("\n    y = x + 1\n    return y\n\ndef g():") == "\n    y = x + 1\n    return y"
    # Between two lines of a block: the hole below is one line.
    t = _shaper("def f(a):\n    b = a + 1", "\n    return b\n")
    assert t.stop_at("\n    c = b * 2\n    d") == len("\n    c = b * 2")
    assert t.finish("\n    c = b * 2\n    d = c") == "\n    c = b * 2"
    # Nothing new below: the next line again, or only blank lines, shows nothing.
    assert t.finish("\n    return b\n") == ""
    assert t.finish("\n\n") == ""
    # An answer on the same line still ends at its newline.
    assert t.stop_at(" * 2\n    c = 3") == len(" * 2")
    assert t.finish(" * 2\n    c = 3") == " * 2"


def test_mid_line_an_answer_starting_with_a_newline_is_nothing():
    s = _shaper("x = foo(", ")\nprint(x)\n")
    assert s.below is None
    assert s.stop_at("\n    bar") == 0
    assert s.finish("\n    bar") == ""


# -- answer_length "model": the model's end-of-generation token ends the answer ----------------
def _model_shaper(prefix: str, suffix: str = "", max_lines: int = 12) -> CompletionShaper:
    return CompletionShaper.for_cursor(prefix, suffix, max_lines, answer_length="model")


def test_model_length_keeps_the_lines_the_model_ended():
    # A hole of two lines between two lines of a block: the rules show one, the model's two stay.
    prefix, suffix = "def f(a):\n    b = a + 1\n", "\n    return c\n"
    rules, model = _shaper(prefix, suffix), _model_shaper(prefix, suffix)
    answer = "    c = b * 2\n    c += 1"
    assert rules.stop_at(answer) == len("    c = b * 2")
    assert model.model_ends and model.stop_at(answer) is None  # it goes on to the model's end
    assert model.finish(answer) == answer
    assert rules.finish(answer) == "    c = b * 2"


def test_model_length_cuts_where_the_model_writes_the_code_below_again():
    model = _model_shaper("def f(a):\n    b = a + 1\n", "\n    return c\n")
    text = "    c = b * 2\n    return c\n"
    assert model.stop_at(text) == len("    c = b * 2")
    assert model.finish(text[: len("    c = b * 2")]) == "    c = b * 2"
    # Its first line is the code below: nothing to insert.
    assert model.stop_at("    return c\n") == 0
    assert model.finish("") == ""


def test_model_length_at_a_line_end_keeps_the_body_it_wrote():
    # ``for`` header finished on its line, then its body: the rules stop at the line's end.
    prefix, suffix = "def f(xs):\n    total = 0\n    for x in", "\n    return total\n"
    answer = " xs:\n        total += x"
    assert _shaper(prefix, suffix).finish(answer) == " xs:"
    assert _model_shaper(prefix, suffix).finish(answer) == answer
    # Lines below the line of code get the indentation the model dropped.
    s = _model_shaper("def f(a):\n    b = a + 1", "\n    return b\n")
    assert s.finish("\nc = b * 2\nd = c") == "\n    c = b * 2\n    d = c"


def test_model_length_falls_back_to_the_rules_when_the_model_runs_on():
    prefix, suffix = "def f(a):\n    b = a + 1\n", "\n    return c\n"
    model, rules = _model_shaper(prefix, suffix, max_lines=3), _shaper(prefix, suffix, max_lines=3)
    run_on = "".join(f"    c{i} = {i}\n" for i in range(5))
    end = model.stop_at(run_on)
    assert end == len(run_on)  # stopped, all of it kept for finish to judge
    assert model.finish(run_on) == rules.finish(run_on) == "    c0 = 0"
    # Cut by the time or token budget: the rules too, whole lines of a block only.
    assert model.finish("    c = 1\n    d = 2\n    e", complete=False) == "    c = 1"


def test_model_length_leaves_text_right_of_the_cursor_to_the_rules():
    s = _model_shaper("x = foo(", ")\nprint(x)\n")
    assert not s.model_ends
    assert s.stop_at("a, b\n    c") == len("a, b")


def test_model_length_at_a_line_end_ends_a_plain_statement_with_its_line():
    # Typing ``total = compute(`` at a line end: the line ends at its newline, as by the rules,
    # so a typing request never pays for the lines after it.
    s = _model_shaper("def f(xs):\n    total = compute(", "\n    return total\n")
    assert s.stop_at("xs)\n    print(total)\n") == len("xs)")
    assert s.finish("xs)\n    print(total)") == "xs)"
    # The same line finishing a block header goes on to its body, until the model ends it.
    h = _model_shaper("def f(xs):\n    for x in", "\n    return total\n")
    assert h.stop_at(" xs:\n        total += x\n") is None


# -- answer_length "auto": the model while it ends its answers itself ---------------------------
HOLE = ("def f(a):\n    b = a + 1\n", "\n    return c\n")
"""A blank line between two lines of a block: an answer whose length the model may decide."""


def _answer(choice: AnswerLengthChoice, text: str, complete: bool = True, where: tuple[str, str] = HOLE) -> str:
    """One request: the shaper for the length ``choice`` picks, and the outcome recorded."""
    mode = choice.mode("auto")
    shaper = CompletionShaper.for_cursor(*where, max_lines=3, answer_length=mode)
    choice.record("auto", shaper, text, complete)
    return mode


ENDED = "    c = b * 2\n    c += 1"
RUN_ON = "".join(f"    c{i} = {i}\n" for i in range(6))


def test_auto_keeps_the_model_length_for_a_model_that_ends_its_answers():
    choice = AnswerLengthChoice()
    window = AnswerLengthChoice.SAMPLE
    for i in range(3 * window):
        # one in ten runs on (or is cut by the budget): still at least three in four
        assert _answer(choice, RUN_ON if i % 10 == 9 else ENDED) == "model"
    ran_on = sum(i % 10 == 9 for i in range(2 * window, 3 * window))
    assert choice.snapshot("auto") == {"setting": "auto", "using": "model", "ended": window - ran_on, "of": window}


def test_auto_hands_the_length_to_the_rules_for_a_model_that_runs_on_and_tries_again_later():
    choice = AnswerLengthChoice()
    window, every = AnswerLengthChoice.SAMPLE, AnswerLengthChoice.PROBE_EVERY
    # The first answers it could end: half ran on (past max_lines, or out of tokens or time).
    modes = [_answer(choice, RUN_ON if i % 2 else ENDED, complete=i % 4 != 1) for i in range(window)]
    assert modes == ["model"] * window
    assert choice.snapshot("auto") == {"setting": "auto", "using": "rules", "ended": window // 2, "of": window}
    # The rules decide now; after PROBE_EVERY requests the model decides once more.
    assert [_answer(choice, ENDED) for _ in range(every)] == ["rules"] * every
    assert choice.mode("auto") == "model"
    # A probe where the model does not decide (text right of the cursor) keeps the probe open.
    assert _answer(choice, "a, b", where=("x = foo(", ")\nprint(x)\n")) == "model"
    assert _answer(choice, ENDED) == "model"  # this one counts (it replaces an ended one)
    assert choice.mode("auto") == "rules" and choice.snapshot("auto")["ended"] == window // 2
    # If it now ends its answers (another model, an adapter), the probes bring the model back:
    # each probe that ends replaces the oldest answer, and the run-ons leave the window one by one.
    probes = 0
    while choice.mode("auto") == "rules" and probes < window:
        assert [_answer(choice, ENDED) for _ in range(every)] == ["rules"] * every
        assert _answer(choice, ENDED) == "model"
        probes += 1
    assert choice.mode("auto") == "model" and probes < window
    assert choice.snapshot("auto")["ended"] >= AnswerLengthChoice.MIN_SHARE * window
    for _ in range(window):
        assert _answer(choice, ENDED) == "model"
    assert choice.snapshot("auto")["ended"] == window


def test_auto_counts_only_answers_the_model_could_end_and_starts_afresh_on_reset():
    choice = AnswerLengthChoice()
    # Mid-line (text right of the cursor) and a plain statement finished at a line end: the
    # rules end those whatever the setting, so they say nothing about the model.
    for _ in range(30):
        _answer(choice, "a, b", where=("x = foo(", ")\nprint(x)\n"))
        _answer(choice, "xs)\n    print(total)", where=("def f(xs):\n    total = compute(", "\n    return total\n"))
    assert choice.snapshot("auto")["of"] == 0 and choice.mode("auto") == "model"
    for _ in range(AnswerLengthChoice.SAMPLE):
        _answer(choice, RUN_ON)
    assert choice.mode("auto") == "rules"
    choice.reset()
    assert choice.mode("auto") == "model" and choice.snapshot("auto")["of"] == 0
    # The fixed settings are what they say, and record nothing.
    assert choice.mode("rules") == "rules" and choice.mode("model") == "model"
    shaper = CompletionShaper.for_cursor(*HOLE, max_lines=3, answer_length="model")
    choice.record("model", shaper, RUN_ON, True)
    assert choice.snapshot("model") == {"setting": "model", "using": "model", "ended": 0, "of": 0}


def test_auto_remembers_each_models_answers_in_its_store(tmp_path):
    store = tmp_path / "cache" / "answer-lengths.json"
    first = AnswerLengthChoice(store)
    first.reset("model-a")
    for _ in range(AnswerLengthChoice.SAMPLE):
        _answer(first, RUN_ON)
    assert first.mode("auto") == "rules"
    # A restart: the same model file goes on with the rules at once; another starts afresh.
    again = AnswerLengthChoice(store)
    again.reset("model-a")
    assert again.mode("auto") == "rules"
    assert again.snapshot("auto") == {"setting": "auto", "using": "rules", "ended": 0, "of": AnswerLengthChoice.SAMPLE}
    again.reset("model-b")
    assert again.mode("auto") == "model" and again.snapshot("auto")["of"] == 0
    _answer(again, ENDED)
    assert set(json.loads(store.read_text())) == {"model-a", "model-b"}
    # Only the most recently used models are kept; an unreadable store is an empty one.
    for i in range(AnswerLengthChoice.KEEP_MODELS + 2):
        again.reset(f"model-{i}")
        _answer(again, ENDED)
    kept = json.loads(store.read_text())
    assert len(kept) == AnswerLengthChoice.KEEP_MODELS and "model-a" not in kept
    store.write_text("{not json")
    broken = AnswerLengthChoice(store)
    broken.reset("model-a")
    assert broken.mode("auto") == "model"
    _answer(broken, ENDED)
    assert json.loads(store.read_text()) == {"model-a": [1]}
    assert not [p for p in store.parent.iterdir() if p.name.endswith(".tmp")]  # no temporary files left


@pytest.mark.parametrize(("prefix", "suffix", "blank"), [
    ("def f():\n", "\n    return 1\n", True),        # column 0 of an empty line
    ("def f():\n    ", "\n    return 1\n", True),    # the indentation typed
    ("def f():\n    x = ", "\n", False),             # code left of the cursor
    ("def f():\n    ", "x = 1\n", False),            # code right of the cursor
])
def test_a_blank_line_is_one_with_nothing_but_whitespace_around_the_cursor(prefix, suffix, blank):
    assert CompletionShaper.for_cursor(prefix, suffix).blank_line is blank


def test_a_line_written_on_a_blank_line_repeats_the_code_below_when_it_is_its_first_line():
    shaper = CompletionShaper.for_cursor("def f(x):\n    y = x\n", "\n    return y\n")
    assert shaper.repeats_code_below("    return y")
    assert shaper.repeats_code_below("return y  ")  # indentation aside
    assert not shaper.repeats_code_below("    return x")
    assert not shaper.repeats_code_below("   ")
