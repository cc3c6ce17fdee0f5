"""slm_lsp.engine.prompt: budgets, line-boundary cuts, sticky windows and the three layouts,
with the tiny model's real byte-level BPE tokenizer."""

from __future__ import annotations

import time

import pytest

from slm_lsp.engine.fim import FALLBACK, PREFIX_ONLY, SPM, FimTemplate
from slm_lsp.engine.prompt import REFILL_FRACTION, ContextFile, PromptBuilder, PromptRequest, _near_end
from tests.conftest import TINY_MODEL

PRE, SUF, MID = "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"


@pytest.fixture(scope="module")
def tok():
    from slm_lsp.engine.model import LlamaRunner

    runner = LlamaRunner(str(TINY_MODEL), threads=1, n_ctx=512)
    assert runner.bos == []  # the tiny model adds no BOS: heads start with the FIM token
    yield runner
    runner.close()


def _builder(tok, template=None, prefix_tokens=256, suffix_tokens=96, near_lines=1) -> PromptBuilder:
    return PromptBuilder(template or tok.template, tok, prefix_tokens, suffix_tokens, near_lines=near_lines)


def _file(n: int = 2000) -> str:
    """Unique lines of about 15 tokens each."""
    return "".join(f"    value_{i} = compute(index, {i})  # line {i}\n" for i in range(n))


def _offset(text: str, line: int, column: int) -> int:
    start = 0
    for _ in range(line):
        start = text.index("\n", start) + 1
    return start + column


def _insert(text: str, line: int, column: int, typed: str) -> str:
    at = _offset(text, line, column)
    return text[:at] + typed + text[at:]


def _first_line(prompt) -> str:
    return prompt.prefix.split("\n", 1)[0]


def _check_cuts(text: str, line: int, column: int, prompt) -> None:
    """The prefix ends at the cursor and starts at a line start; the suffix starts at the cursor
    and ends at a line end."""
    at = _offset(text, line, column)
    start = at - len(prompt.prefix)
    assert text[start:at] == prompt.prefix
    assert start == 0 or text[start - 1] == "\n"
    end = at + len(prompt.suffix)
    assert text[at:end] == prompt.suffix
    assert end == len(text) or prompt.suffix.endswith("\n")


# -- PSM layout -------------------------------------------------------------------------------
def test_psm_segments(tok):
    b = _builder(tok)
    text = "import os\n\ndef f(x):\n    y = x\n    return y\n\nprint(f(1))\n"
    p = b.build(PromptRequest(text, 3, 5))  # after "    y"
    assert p.prefix == "import os\n\ndef f(x):\n    y"
    assert p.suffix == " = x\n    return y\n\nprint(f(1))\n"
    assert p.head[0] == tok.special(PRE)
    assert p.head == [tok.special(PRE)] + tok.tokenize(p.prefix)
    assert p.near[0] == tok.special(SUF)
    assert p.near == [tok.special(SUF)] + tok.tokenize(" = x\n    return y\n")
    assert p.far == tok.tokenize("\nprint(f(1))\n")
    assert p.tail == [tok.special(MID)]
    assert p.tokens == p.head + p.near + p.far + p.tail


def test_cursor_is_clamped(tok):
    b = _builder(tok)
    text = "a = 1\nb = 2\n"
    p = b.build(PromptRequest(text, 1, 999))
    assert (p.prefix, p.suffix) == ("a = 1\nb = 2", "\n")
    p = b.build(PromptRequest(text, 99, 0))  # past the last line: the empty line after the final newline
    assert (p.prefix, p.suffix) == (text, "")
    p = b.build(PromptRequest(text, -3, -3))
    assert (p.prefix, p.suffix) == ("", text)
    p = b.build(PromptRequest("", 0, 0))
    assert (p.prefix, p.suffix) == ("", "")
    assert p.head == [tok.special(PRE)] and p.near == [tok.special(SUF)] and p.far == []


def test_crlf_line_endings(tok):
    text = "a = 1\r\nb = \r\nc = 3\r\n"
    p = _builder(tok).build(PromptRequest(text, 1, 99))
    assert p.prefix == "a = 1\r\nb = "
    assert p.suffix == "\r\nc = 3\r\n"


def test_lines_are_split_like_lsp_positions(tok):
    """LSP lines end at newlines only: a form feed or a Unicode line separator inside a line
    does not start a new line (str.splitlines would shift the cursor to another line)."""
    text = 'a = 1\n\x0cb = "x\u2028y"\nc = 3\nd = 4\n'
    p = _builder(tok).build(PromptRequest(text, 2, 4))
    assert p.prefix == 'a = 1\n\x0cb = "x\u2028y"\nc = '
    assert p.suffix == "3\nd = 4\n"


def test_repo_context_opens_the_head(tok):
    b = _builder(tok, prefix_tokens=512)
    req = PromptRequest("x = helper(", 0, 11, path="pkg/main.py", repo_name="proj",
                        context=[ContextFile("pkg/util.py", "def helper():\n    return 1\n\n")])
    p = b.build(req)
    t = tok.template
    context = ([tok.special(t.repo_name)] + tok.tokenize("proj\n")
               + [tok.special(t.file_sep)] + tok.tokenize("pkg/util.py\ndef helper():\n    return 1\n")
               + [tok.special(t.file_sep)] + tok.tokenize("pkg/main.py\n"))
    assert p.head == context + [tok.special(PRE)] + tok.tokenize("x = helper(")


def test_context_as_comments_without_repo_tokens(tok):
    plain = FimTemplate("plain", prefix=PRE, suffix=SUF, middle=MID)
    b = _builder(tok, template=plain)
    p = b.build(PromptRequest("y", 0, 1, context=[ContextFile("a.py", "x = 1\ny = 2")]))
    assert p.head == tok.tokenize("# Path: a.py\n# x = 1\n# y = 2\n\n") + [tok.special(PRE)] + tok.tokenize("y")


# -- budgets ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("line", "column"), [(1000, 8), (1999, 0), (5, 4), (0, 0), (2000, 0)])
def test_budgets_and_line_cuts_on_a_long_file(tok, line, column):
    text = _file()
    b = _builder(tok, prefix_tokens=256, suffix_tokens=96)
    p = b.build(PromptRequest(text, line, column))
    _check_cuts(text, line, column, p)
    n_prefix, n_suffix = len(tok.tokenize(p.prefix)), len(tok.tokenize(p.suffix))
    assert n_prefix <= 256
    assert n_suffix <= 96
    line_tokens = 20
    if _offset(text, line, column) - len(p.prefix) > 0:  # window cut: not far from its target size
        assert n_prefix >= REFILL_FRACTION * 256 - line_tokens
    if _offset(text, line, column) + len(p.suffix) < len(text):
        assert n_suffix >= 96 - line_tokens
    assert len(p.head) == 1 + n_prefix


def test_the_whole_file_when_it_fits(tok):
    text = _file(8)
    p = _builder(tok, prefix_tokens=1024, suffix_tokens=1024).build(PromptRequest(text, 4, 3))
    assert p.prefix + p.suffix == text


def test_no_suffix_budget(tok):
    text = _file(20)
    p = _builder(tok, suffix_tokens=0).build(PromptRequest(text, 10, 4))
    assert p.suffix == ""
    assert p.near == [tok.special(SUF)] and p.far == []
    assert p.tail == [tok.special(MID)]


# -- sticky windows ---------------------------------------------------------------------------
def test_typing_keeps_the_window_start(tok):
    b = _builder(tok)
    text, line, column = _file(), 1000, 8
    first = b.build(PromptRequest(text, line, column, document_key="doc"))
    assert first.prefix.startswith("    value_")  # the window is cut (not the file start)
    for typed in ["r", "re", "res", "resu"]:
        p = b.build(PromptRequest(_insert(text, line, column, typed), line, column + len(typed), document_key="doc"))
        assert p.prefix == first.prefix + typed
        assert p.suffix == first.suffix
        # Only the end of the head differs: its KV cells stay reusable.
        keep = len(first.head) - 2
        assert p.head[:keep] == first.head[:keep]
        assert p.near == first.near and p.far == first.far


def test_new_lines_keep_the_window_start_until_it_overflows(tok):
    text, line = _file(), 1000
    sticky, plain = _builder(tok), _builder(tok)
    first = sticky.build(PromptRequest(text, line, 0, document_key="doc"))
    start = _first_line(first)
    plain_starts = set()
    jumped = None
    for i in range(40):  # the user writes new lines at the cursor, one per request
        text = _insert(text, line, 0, f"    new_{i} = {i}\n")
        line += 1
        p = sticky.build(PromptRequest(text, line, 0, document_key="doc"))
        _check_cuts(text, line, 0, p)
        assert len(tok.tokenize(p.prefix)) <= 256
        plain_starts.add(_first_line(plain.build(PromptRequest(text, line, 0))))
        if _first_line(p) != start:
            jumped = p
            break
        # While it fits, the window start stays and the suffix window too.
        assert p.prefix.startswith(first.prefix)
        assert p.suffix == first.suffix
        assert p.head[:len(first.head) - 1] == first.head[:-1]
    # Without a document key the window slides on every line.
    assert len(plain_starts) > 1
    # Eventually the prefix overflows and the window jumps forward, refilled to 3/4 of the budget.
    assert jumped is not None
    old_start = text.index(start + "\n")
    new_start = text.index(_first_line(jumped) + "\n")
    assert new_start > old_start
    assert len(tok.tokenize(text[old_start:_offset(text, line, 0)])) > 256  # it had to jump
    assert len(tok.tokenize(jumped.prefix)) <= REFILL_FRACTION * 256


def test_window_is_recomputed_when_the_cursor_moves_above_it(tok):
    b = _builder(tok)
    text = _file()
    b.build(PromptRequest(text, 1500, 0, document_key="doc"))
    p = b.build(PromptRequest(text, 100, 0, document_key="doc"))
    _check_cuts(text, 100, 0, p)
    assert p.prefix.endswith("# line 99\n")
    assert len(tok.tokenize(p.prefix)) > 100


def test_forget_drops_the_window(tok):
    b = _builder(tok)
    text = _file()
    first = b.build(PromptRequest(text, 1000, 0, document_key="doc"))
    text2 = _insert(text, 1000, 0, "    extra = 1\n" * 4)
    b.forget("doc")
    again = b.build(PromptRequest(text2, 1004, 0, document_key="doc"))
    fresh = _builder(tok).build(PromptRequest(text2, 1004, 0))
    assert again.prefix == fresh.prefix
    assert _first_line(again) != _first_line(first)


# -- near / far ---------------------------------------------------------------------------------
def test_near_end():
    suffix = "rest\nl1\nl2\nl3\n"
    assert suffix[:_near_end(suffix, 0)] == "rest\n"
    assert suffix[:_near_end(suffix, 1)] == "rest\nl1\n"
    assert suffix[:_near_end(suffix, 2)] == "rest\nl1\nl2\n"
    assert _near_end(suffix, 10) == len(suffix)
    assert _near_end("no newline", 1) == len("no newline")
    assert _near_end("", 1) == 0


@pytest.mark.parametrize(("near_lines", "near", "far"), [
    (0, ")\n", "    b = 2\n    c = 3\n"),
    (1, ")\n    b = 2\n", "    c = 3\n"),
    (2, ")\n    b = 2\n    c = 3\n", ""),
    (5, ")\n    b = 2\n    c = 3\n", ""),
])
def test_near_far_split(tok, near_lines, near, far):
    text = "def f():\n    a = g(\n    b = 2\n    c = 3\n"
    p = _builder(tok, near_lines=near_lines).build(PromptRequest(_insert(text, 1, 10, ")"), 1, 10))
    assert p.suffix == near + far
    assert p.near == [tok.special(SUF)] + tok.tokenize(near)
    assert p.far == tok.tokenize(far)


# -- other layouts ----------------------------------------------------------------------------
def test_spm_layout(tok):
    spm = FimTemplate("spm-test", SPM, PRE, SUF, MID)
    text = "def f(x):\n    return x\n\nprint(f(1))\n"
    p = _builder(tok, template=spm).build(PromptRequest(text, 1, 4))
    assert (p.prefix, p.suffix) == ("def f(x):\n    ", "return x\n\nprint(f(1))\n")
    assert p.head == [tok.special(SUF)] + tok.tokenize(p.suffix) + [tok.special(PRE)] + tok.tokenize(p.prefix)
    assert p.near == [] and p.far == [] and p.tail == []
    assert p.tokens == p.head


def test_prefix_only_layout(tok):
    assert FALLBACK.layout == PREFIX_ONLY
    b = _builder(tok, template=FALLBACK)
    assert b.suffix_tokens == 0
    text = "def f(x):\n    return x\n\nprint(f(1))\n"
    p = b.build(PromptRequest(text, 1, 4))
    assert (p.prefix, p.suffix) == ("def f(x):\n    ", "")
    assert p.head == tok.tokenize(p.prefix)
    assert p.near == [] and p.far == [] and p.tail == []
    fim_ids = {tok.special(PRE), tok.special(SUF), tok.special(MID)}
    assert not fim_ids & set(p.tokens)


# -- huge inputs ------------------------------------------------------------------------------
def _huge_line() -> str:
    return "x = foo(bar) + 1; " * (200_000 // 18)


def test_huge_single_line_at_the_end(tok):
    big = _huge_line()
    b = _builder(tok)
    p = b.build(PromptRequest(big, 0, len(big)))
    n = len(tok.tokenize(p.prefix))
    assert big.endswith(p.prefix)
    assert 240 <= n <= 256  # filled up to the budget, not beyond
    assert p.suffix == ""


def test_huge_single_line_in_the_middle(tok):
    big = _huge_line()
    mid = len(big) // 2
    b = _builder(tok)
    p = b.build(PromptRequest(big, 0, mid, document_key="big"))
    assert big[:mid].endswith(p.prefix) and big[mid:].startswith(p.suffix)
    assert 240 <= len(tok.tokenize(p.prefix)) <= 256
    assert 80 <= len(tok.tokenize(p.suffix)) <= 96
    # Probes of the huge line (a binary search: dozens of cuts) are not kept in the token-count
    # cache (it would grow by megabytes per keystroke): only the two window texts are.
    assert b._count_cached.cache_info().currsize <= 2


class _CountingTokenizer:
    def __init__(self, tok) -> None:
        self.tok, self.calls = tok, []

    def tokenize(self, text: str) -> list[int]:
        self.calls.append(text)
        return self.tok.tokenize(text)

    def special(self, text: str) -> int:
        return self.tok.special(text)


def test_a_full_count_cache_keeps_the_lines_in_use(tok):
    from slm_lsp.engine.prompt import COUNT_CACHE_SIZE

    counting = _CountingTokenizer(tok)
    b = PromptBuilder(tok.template, counting, 256, 96)
    hot = "    total = compute(index, count)\n"
    for i in range(COUNT_CACHE_SIZE + 500):  # a long session: more distinct lines than the cache holds
        b.count(f"line {i}\n")
        if i % 1000 == 0:
            b.count(hot)  # the lines around the cursor are counted again and again
    assert counting.calls.count(hot) == 1


def test_five_megabyte_document_is_fast(tok):
    line = "    value = compute(index, count) + 1  # comment\n"
    doc = line * (5_000_000 // len(line))
    n_lines = doc.count("\n")
    b = _builder(tok, prefix_tokens=1024, suffix_tokens=320)
    times = []
    for row, column in [(n_lines // 2, 4), (n_lines // 2, 5), (n_lines - 1, 10), (0, 0)]:
        t0 = time.perf_counter()
        p = b.build(PromptRequest(doc, row, column, document_key="big"))
        times.append(time.perf_counter() - t0)
        assert len(tok.tokenize(p.prefix)) <= 1024
        assert len(tok.tokenize(p.suffix)) <= 320
        _check_cuts(doc, row, column, p)
    print(f"\n5 MB document: builds in {', '.join(f'{1000 * t:.1f}' for t in times)} ms")
    assert max(times) < 5.0  # tokenizing the whole file alone takes seconds


# -- repo context budget, duplicates, scope headers -------------------------------------------
def test_context_budget_keeps_the_highest_priorities_in_order(tok):
    b = _builder(tok, prefix_tokens=64, suffix_tokens=0)
    text = _file(50)  # longer than the prefix budget: nothing unused to lend the context
    pieces = [ContextFile(f"f{i}.py", f"def function_{i}(argument):\n    return {i}\n", priority=p)
              for i, p in enumerate([1.0, 5.0, 3.0, 4.0])]
    one = len(tok.tokenize(pieces[0].text)) + len(tok.tokenize("f0.py")) + 3
    req = PromptRequest(text, 40, 0, context=pieces, context_tokens=2 * one + 1)
    kept = b.fit_context(req, "", "")
    assert [f.path for f in kept] == ["f1.py", "f3.py"]  # the two best, in their given order
    b.build(req)
    assert [f.path for f in b.last_context] == ["f1.py", "f3.py"]
    unlimited = b.fit_context(PromptRequest(text, 40, 0, context=pieces), "", "")
    assert len(unlimited) == 4


def test_pieces_with_a_share_are_kept_first_within_it(tok):
    b = _builder(tok, prefix_tokens=64, suffix_tokens=0)
    text = _file(50)
    pieces = [ContextFile(f"f{i}.py", f"def function_{i}(argument):\n    return {i}\n", priority=p, share=s)
              for i, (p, s) in enumerate([(5.0, 0.0), (4.0, 0.0), (2.0, 0.5), (2.1, 0.5), (3.0, 0.0)])]
    one = len(tok.tokenize(pieces[0].text)) + len(tok.tokenize("f0.py")) + 3
    # Budget for four pieces: the shared ones may take two of them, before f0, f1 and f4.
    req = PromptRequest(text, 40, 0, context=pieces, context_tokens=4 * one)
    assert [f.path for f in b.fit_context(req, "", "")] == ["f0.py", "f1.py", "f2.py", "f3.py"]
    # A smaller share holds one of them (the better); the other competes by priority and loses.
    small = [ContextFile(f.path, f.text, f.priority, 0.25 if f.share else 0.0) for f in pieces]
    req = PromptRequest(text, 40, 0, context=small, context_tokens=4 * one)
    assert [f.path for f in b.fit_context(req, "", "")] == ["f0.py", "f1.py", "f3.py", "f4.py"]


def test_a_short_file_lends_its_unused_budget_to_the_context(tok):
    b = _builder(tok, prefix_tokens=1024, suffix_tokens=0)
    pieces = [ContextFile(f"f{i}.py", f"def function_{i}(argument):\n    return {i}\n") for i in range(40)]
    short = b.fit_context(PromptRequest("x = 1\n", 1, 0, context=pieces, context_tokens=32), "x = 1\n", "")
    long_prefix = "\n".join(f"v{i} = {i}" for i in range(400))
    tight = b.fit_context(PromptRequest(long_prefix, 1, 0, context=pieces, context_tokens=32), long_prefix, "")
    assert len(short) > len(tight) >= 1


def test_context_that_repeats_the_visible_code_is_dropped(tok):
    b = _builder(tok, prefix_tokens=512)
    text = "def helper(a):\n    return a * 2\n\nvalue = helper(3)\n"
    dup = ContextFile("copy.py", "def helper(a):\n    return a * 2\n")
    other = ContextFile("util.py", "def different(b):\n    return b + 1\n")
    b.build(PromptRequest(text, 3, 8, context=[dup, other], context_tokens=512))
    assert [f.path for f in b.last_context] == ["util.py"]


def test_a_near_copy_that_goes_on_past_the_visible_code_is_kept(tok):
    # A sibling module repeats most visible lines; the lines it adds are the next ones to write.
    b = _builder(tok, prefix_tokens=512, suffix_tokens=0)
    shared = "".join(f"    step_{i} = run_step({i})\n" for i in range(6))
    text = "def run_local():\n" + shared + "\n"
    near_copy = ContextFile("remote.py", "def run_remote():\n" + shared + "    report = summarize(step_5)\n"
                            "    upload(report)\n    return report\n")
    one_more = ContextFile("other.py", "def run_other():\n" + shared + "    return step_5\n")
    b.build(PromptRequest(text, 7, 4, context=[near_copy, one_more], context_tokens=512))
    assert [f.path for f in b.last_context] == ["remote.py"]


def test_neighbouring_pieces_of_one_file_share_a_block(tok):
    b = _builder(tok, prefix_tokens=512)
    req = PromptRequest("y", 0, 1, path="main.py", repo_name="r",
                        context=[ContextFile("u.py", "def a():\n    ..."), ContextFile("u.py", "def b():\n    ...")])
    t = tok.template
    ids = b.context_text(req)
    assert ids.count(tok.special(t.file_sep)) == 2  # u.py once, then the current file
    assert tok.detokenize(ids).count("u.py") == 1


def test_imports_and_scope_headers_when_the_prefix_is_cut(tok):
    body = "".join(f"        total_{i} = compute(index, {i})\n" for i in range(300))
    text = ("import os\nfrom .ledger import (\n    compute,\n    Entry,\n)\n\nclass Ledger:\n    \"\"\"Doc.\"\"\"\n\n"
            "    def balance(self, index):\n" + body)
    line = text.count("\n") - 1
    b = _builder(tok, prefix_tokens=128, suffix_tokens=0)
    p = b.build(PromptRequest(text, line, 8, path="ledger.py", context_tokens=256))
    head_text = tok.detokenize(p.head)
    want = ("import os\nfrom .ledger import (\n    compute,\n    Entry,\n)\n"
            "class Ledger:\n    def balance(self, index):\n")
    assert head_text.index(want) < head_text.index(p.prefix[:30])
    assert "Doc." not in head_text
    # Without context (the server's context switched off), or with the headers switched off
    # (the evaluation's plain baseline), the head is the plain window.
    plain = _builder(tok, prefix_tokens=128, suffix_tokens=0).build(PromptRequest(text, line, 8, path="ledger.py"))
    assert "class Ledger" not in tok.detokenize(plain.head) and "import os" not in tok.detokenize(plain.head)
    bare = _builder(tok, prefix_tokens=128, suffix_tokens=0).build(
        PromptRequest(text, line, 8, path="ledger.py", context_tokens=256, file_headers=False))
    assert "class Ledger" not in tok.detokenize(bare.head) and "import os" not in tok.detokenize(bare.head)
    # A language without a grammar here: no headers (they come from the parser).
    other = _builder(tok, prefix_tokens=128, suffix_tokens=0).build(
        PromptRequest(text, line, 8, path="ledger.dart", context_tokens=256))
    assert "class Ledger" not in tok.detokenize(other.head)
    # An untitled buffer: the editor's languageId names the parser, so the headers come back.
    untitled = _builder(tok, prefix_tokens=128, suffix_tokens=0).build(
        PromptRequest(text, line, 8, context_tokens=256, language_id="python"))
    assert tok.detokenize(untitled.head).index(want) < tok.detokenize(untitled.head).index(untitled.prefix[:30])
    unnamed = _builder(tok, prefix_tokens=128, suffix_tokens=0).build(PromptRequest(text, line, 8, context_tokens=256))
    assert "class Ledger" not in tok.detokenize(unnamed.head)


def test_imports_stay_within_their_share_of_the_context_budget(tok):
    imports = "".join(f"from pkg.module_{i} import name_{i}\n" for i in range(200))
    body = "".join(f"    x_{i} = name_{i}(x_{i - 1})\n" for i in range(1, 300))
    text = imports + "def run(x_0):\n" + body
    b = _builder(tok, prefix_tokens=128, suffix_tokens=0)
    b.build(PromptRequest(text, text.count("\n") - 1, 4, path="run.py", context_tokens=300))
    lines = [x + "\n" for x in text.split("\n")]
    header = b.import_header(lines, 250, 100, b.outline(lines, 250, 250, "python"))
    assert header.startswith("from pkg.module_0 import name_0\n") and header.endswith("\n")
    assert 0 < b.count(header) <= 100 and header.count("\n") < 200  # whole statements, cut at the budget


def _outline(src: str, lang: str, row: int):
    from slm_lsp.engine.prompt import PromptBuilder

    lines = [x + "\n" for x in src.split("\n")]
    return lines, PromptBuilder.outline(_OutlineOnly(), lines, row, row, lang)


class _OutlineOnly:
    """What ``PromptBuilder.outline`` uses of the builder (no tokenizer needed)."""

    def __init__(self) -> None:
        from collections import OrderedDict

        self._outlines = OrderedDict()


@pytest.mark.parametrize(("lang", "src", "want"), [
    ("python", "import os\nfrom x import (\n    a,\n    b,\n)\nfrom .y import z  # c\n\"\"\"Doc:\nimport this\n"
     "from here import nothing\n\"\"\"\nx = 1\nif x:\n    import inner\nend = 2\n",
     ["import os\n", "from x import (\n    a,\n    b,\n)\n", "from .y import z  # c\n"]),
    ("typescript", "import {\n  q,\n} from \"m\";\nimport d from './d'; import e from './e';\nconst r = require('r');\n"
     "const end = 1;\n", ["import {\n  q,\n} from \"m\";\n", "import d from './d'; import e from './e';\n",
                          "const r = require('r');\n"]),
    ("rust", "use std::{\n    io,\n};\nextern crate alloc;\nfn end() {}\n",
     ["use std::{\n    io,\n};\n", "extern crate alloc;\n"]),
    ("c", "#include <stdio.h>\n#ifdef X\n#include \"x.h\"\n#endif\nint end;\n",
     ["#include <stdio.h>\n", "#include \"x.h\"\n"]),
    ("go", "package main\n\nimport (\n\t\"fmt\"\n)\n\nvar end = 1\n", ["import (\n\t\"fmt\"\n)\n"]),
    ("java", "package a;\nimport a.b.C;\nimport static a.D.e;\nclass End {}\n",
     ["import a.b.C;\n", "import static a.D.e;\n"]),
])
def test_import_statements_of_each_language(lang, src, want):
    """Top-level import statements, whole, found by the parser: not text that looks like one
    inside a string, not an import nested in a block."""
    from slm_lsp.engine.prompt import import_statements

    lines, shape = _outline(src, lang, src.count("\n") - 1)
    assert import_statements(lines, shape, len(lines)) == want


def test_scope_headers_function():
    from slm_lsp.engine.prompt import scope_headers

    src = "class A:\n    x = 1\n    def f(self):\n        # c\n        y = 2\n        z = 3\n"
    assert scope_headers(*_outline(src, "python", 4)) == "class A:\n    def f(self):\n"
    assert scope_headers(*_outline(src, "python", 0)) == ""
    brace = "int main() {\n  if (x) {\n    a();\n  }\n  b();\n}\n"
    assert scope_headers(*_outline(brace, "c", 2)) == "int main() {\n  if (x) {\n"
    assert scope_headers(*_outline(brace, "c", 4)) == "int main() {\n"
    # A signature over several lines is the whole header (up to its colon), decorators are not.
    long_def = "@cached\ndef total(\n    items,\n    tax,\n) -> float:\n    s = 0\n    return s\n"
    assert scope_headers(*_outline(long_def, "python", 5)) == "def total(\n    items,\n    tax,\n) -> float:\n"
    js = "export class Cart {\n  add(item) {\n    for (const x of this.items) {\n      use(x);\n    }\n  }\n}\n"
    assert scope_headers(*_outline(js, "javascript", 3)) == (
        "export class Cart {\n  add(item) {\n    for (const x of this.items) {\n")


def test_headers_of_a_window_far_down_a_huge_file(tok):
    """Past ``OUTLINE_MAX_LINES`` the parse starts at a top-level line above the window, and the
    imports come from the top of the file."""
    from slm_lsp.engine.prompt import OUTLINE_MAX_LINES

    methods = "".join(f"    def m{i}(self, x):\n        y = x + {i}\n        return y\n\n" for i in range(7000))
    text = "import os\nfrom a import b\n\nclass Big:\n" + methods
    assert text.count("\n") > OUTLINE_MAX_LINES
    line = text.count("\n") - 2  # "return y" of the last method
    b = _builder(tok, prefix_tokens=64, suffix_tokens=0)
    p = b.build(PromptRequest(text, line, 8, path="big.py", document_key="big", context_tokens=256))
    assert p.prefix.startswith("        y = x + 6998\n")  # the window starts inside m6998
    assert tok.detokenize(p.head).startswith("import os\nfrom a import b\nclass Big:\n    def m6998(self, x):\n"
                                             + p.prefix)
