"""slm_lsp.context.provider and its sources: definitions through imports, similar snippets, the
recent-edit ring, per-source time budgets and failures, and sticky context across keystrokes."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from slm_lsp.context.index import ContextIndex
from slm_lsp.context.provider import ContextOptions, ContextProvider, scope_key
from slm_lsp.context.sources.recent import RecentChunks
from slm_lsp.context.sources.similar import jaccard, own_snippets, query_tokens, rank_windows, tokens
from slm_lsp.engine.model import LlamaRunner
from slm_lsp.engine.prompt import PromptBuilder, PromptRequest

FIXTURE = Path(__file__).parent / "data" / "context_repo"
CHECKOUT = "app/checkout.py"


@pytest.fixture
def setup(tmp_path: Path):
    root = tmp_path / "repo"
    shutil.copytree(FIXTURE, root)
    index = ContextIndex(str(root), None)
    index.build()
    provider = ContextProvider(ContextOptions(time_budget_ms=2000))
    provider.add_index(index)
    return root, index, provider


def _gather(provider: ContextProvider, root: Path, text: str, line: int, key: str = "doc", **kw):
    return provider.gather(key, str(root / CHECKOUT), text, line, **kw)


def test_definitions_of_used_names_through_imports(setup):
    root, _index, provider = setup
    text = (root / CHECKOUT).read_text()
    result = _gather(provider, root, text, 8)
    assert (result.repo_name, result.repo_path) == ("repo", CHECKOUT)
    by_path: dict[str, str] = {}
    for f in result.files:
        if f.priority >= 1.0:  # definitions (similar snippets and recent edits rank below 1)
            by_path[f.path] = by_path.get(f.path, "") + f.text
    # Resolved through "from shop import apply_discount" → shop/__init__.py re-exports pricing.py.
    pricing = by_path["shop/pricing.py"]
    assert "def apply_discount(amount: float, percent: float) -> float:" in pricing
    assert '"""Return amount reduced by percent (0-100)."""' in pricing
    assert "return amount * (1 - percent / 100)" not in pricing  # signatures, not bodies
    # A class: its header, fields and method signatures.
    cart = by_path["shop/cart.py"]
    assert "class ShoppingCart:" in cart and "def add_item(self, sku: str, quantity: int, unit_price: float)" in cart
    assert "self.items.append(item)" not in cart
    # The names used right at the cursor rank highest (they are last: nearest the file).
    assert result.files[-1].path in ("shop/pricing.py", "shop/cart.py")
    assert max(f.priority for f in result.files if f.path == "shop/pricing.py") > 1.5


def test_hidden_file_and_no_self_context(setup):
    root, _index, provider = setup
    text = (root / CHECKOUT).read_text()
    result = _gather(provider, root, text, 8, hide_current=True)
    assert all(f.path != CHECKOUT for f in result.files)
    assert any(f.path == "shop/pricing.py" for f in result.files)


def test_typescript_definitions(setup):
    root, _index, provider = setup
    text = (root / "web" / "view.ts").read_text()
    result = provider.gather("ts", str(root / "web" / "view.ts"), text, 3)
    texts = "".join(f.text for f in result.files if f.path == "web/format.ts")
    assert "export function formatPrice(value: number, currency: string): string" in texts
    assert "// Formats a price for display." in texts


def test_context_is_sticky_while_typing_in_a_scope(setup):
    root, _index, provider = setup
    text = (root / CHECKOUT).read_text()
    first = _gather(provider, root, text, 8)
    lines = text.split("\n")
    for typed in ["n", "ne", "net2 = "]:
        lines[8] = "    " + typed
        again = _gather(provider, root, "\n".join(lines), 8)
        assert again.reused and again.files is first.files  # the same tokens: the KV cache is reused
    # Another scope: computed again.
    moved = _gather(provider, root, text + "\n\ndef other():\n    x = 1\n", 14)
    assert not moved.reused


def test_context_changes_when_a_used_definition_changes(setup):
    root, index, provider = setup
    text = (root / CHECKOUT).read_text()
    _gather(provider, root, text, 8)
    index.update_buffer("shop/pricing.py", "def apply_discount(amount, percent, rounding):\n    pass\n"
                        "def with_tax(amount):\n    pass\n")
    again = _gather(provider, root, text, 8)
    assert not again.reused
    assert any("rounding" in f.text for f in again.files)


def test_a_newly_used_name_brings_its_definition(setup):
    root, _index, provider = setup
    text = "from shop.pricing import with_tax, apply_discount\n\n\ndef f(x):\n    y = x\n    return y\n"
    first = _gather(provider, root, text, 4)
    lines = text.split("\n")
    lines[4] = "    y = with_tax(x)"
    again = _gather(provider, root, "\n".join(lines), 4)
    # with_tax was already there (imported names are always candidates): nothing changes...
    assert again.reused and again.files is first.files


def test_failing_and_slow_sources_are_skipped(setup, monkeypatch):
    root, _index, provider = setup
    import slm_lsp.context.provider as mod

    def boom(*a, **k):
        raise RuntimeError("broken source")

    monkeypatch.setattr(mod, "similar_snippets", boom)
    text = (root / CHECKOUT).read_text()
    result = _gather(provider, root, text, 8)
    assert any(f.path == "shop/pricing.py" for f in result.files)  # definitions still there

    def slow(*a, **k):
        time.sleep(1.0)
        return []

    monkeypatch.setattr(mod, "find_definitions", slow)
    provider.options.time_budget_ms = 50
    t0 = time.monotonic()
    result = _gather(provider, root, text, 8, key="other")
    assert time.monotonic() - t0 < 0.6  # not held up by the slow source
    assert result.timings_ms["definitions"] < 500


def test_a_source_with_unencodable_text_costs_only_itself(setup):
    root, _index, provider = setup
    other = root / "shop" / "cart.py"
    # A lone surrogate that got past the server's boundary (the ring does not clean its input).
    provider.note_edit(str(other), other.read_text().replace("def add_item", "def add_\ud800item"), 20)
    result = _gather(provider, root, (root / CHECKOUT).read_text(), 8)
    assert "recent" in result.timings_ms
    for f in result.files:
        f.text.encode("utf-8")  # what the tokenizer does with every piece
    assert any(f.path == "shop/pricing.py" for f in result.files)  # the other sources still count


def test_a_raising_source_costs_only_itself(setup, monkeypatch):
    root, _index, provider = setup
    provider.note_edit(str(root / "shop" / "cart.py"), (root / "shop" / "cart.py").read_text(), 20)

    def boom(*a, **k):
        raise RuntimeError("broken source")

    monkeypatch.setattr(provider.recent, "chunks", boom)
    result = _gather(provider, root, (root / CHECKOUT).read_text(), 8)
    assert not [f for f in result.files if f.priority < 0.6]  # no recent edits...
    assert any(f.path == "shop/pricing.py" for f in result.files)  # ...and the rest is there


def test_recent_ring_reads_only_the_chunk_of_a_line_list():
    ring = RecentChunks(size=3, chunk_lines=8)
    lines = [f"line {i}\r\n" for i in range(100)] + [""]
    ring.note("a.py", lines, 50)
    (chunk,) = ring.chunks()
    assert chunk.start == 46 and chunk.text == "\n".join(f"line {i}" for i in range(46, 54))


def test_recent_ring():
    ring = RecentChunks(size=3, chunk_lines=8)
    text = "\n".join(f"line {i}" for i in range(100))
    ring.note("a.py", text, 50)
    ring.note("a.py", text, 51)  # overlaps the previous chunk: replaces it
    assert len(ring.chunks()) == 1
    for i, path in enumerate(["b.py", "c.py", "d.py"]):
        ring.note(path, text, 10 * i)
    chunks = ring.chunks()
    assert [c.path for c in chunks] == ["b.py", "c.py", "d.py"]  # oldest dropped, oldest first
    assert all(len(c.text.split("\n")) <= 8 for c in chunks)
    assert [c.path for c in ring.chunks(exclude_path="c.py")] == ["b.py", "d.py"]
    assert [c.path for c in ring.chunks("b.py", (90, 99))] == ["b.py", "c.py", "d.py"]  # far from the cursor


def test_recent_edits_in_context(setup):
    root, _index, provider = setup
    other = root / "shop" / "cart.py"
    provider.note_edit(str(other), other.read_text(), 20)
    text = (root / CHECKOUT).read_text()
    result = _gather(provider, root, text, 8)
    recent = [f for f in result.files if f.priority < 0.8]
    assert recent and recent[0].path == "shop/cart.py" and "def add_item" in recent[0].text


def test_similar_snippets_keep_a_share_of_a_budget_the_definitions_would_fill(setup, tiny_model: Path):
    root, _index, provider = setup
    text = (root / CHECKOUT).read_text()
    files = _gather(provider, root, text, 8).files
    windows = [f for f in files if f.share > 0]
    definitions = [f for f in files if not f.share]
    # Every snippet here ranks below every definition (none is alike enough to compete with them)...
    assert windows and definitions and max(f.priority for f in windows) < min(f.priority for f in definitions)
    tokenizer = LlamaRunner(str(tiny_model), threads=1, n_ctx=256)
    try:
        builder = PromptBuilder(tokenizer.template, tokenizer, 64, 0)
        budget = sum(builder.count(f.text) + builder.count(f.path) + 3 for f in definitions)
        kept = builder.fit_context(PromptRequest(text, 8, 0, context=files, context_tokens=budget), text, "")
    finally:
        tokenizer.close()
    # ...yet they are kept, best first, within their share of a budget the definitions alone would
    # fill (before, the definitions took it all); the definitions get the rest.
    assert any(f in kept for f in windows) and any(f in kept for f in definitions) and len(kept) < len(files)


def test_similar_windows():
    query = tokens("total = compute_total(items, tax_rate)\nreturn round(total, 2)")
    files = [("a.py", "x = 1\n" * 40 + "total = compute_total(items, tax_rate)\nreturn round(total, 2)\n", 1.0),
             ("b.py", "def unrelated():\n    pass\n" * 10, 1.0)]
    best = rank_windows(query, files, k=2, window=10, step=5)
    assert best and best[0].path == "a.py" and "compute_total" in best[0].text
    assert all(s.path != "b.py" for s in best)
    assert jaccard({"a", "b"}, {"b", "c"}) == pytest.approx(1 / 3)


def test_scope_key():
    lines = ["import os", "", "class A:", "    def f(self):", "        x = 1", "", "def g():", "    y"]
    assert scope_key(lines, 4) == scope_key(lines, 3) != scope_key(lines, 7)
    assert scope_key(lines, 0).startswith("0:")


def test_definitions_and_snippets_come_from_the_same_language_family(tmp_path: Path):
    root = tmp_path / "repo"
    shutil.copytree(FIXTURE, root)
    # Neither file is imported by checkout.py: only the by-name fallback can find them.
    (root / "shop" / "audit.py").write_text("def audit_totals(order):\n    \"\"\"Check an order's sums.\"\"\"\n"
                                            "    return True\n")
    (root / "web" / "totals.js").write_text("export function reconcile_totals(a, b) {\n  return a + b;\n}\n")
    index = ContextIndex(str(root), None)
    index.build()
    provider = ContextProvider(ContextOptions(time_budget_ms=2000))
    provider.add_index(index)
    text = (root / CHECKOUT).read_text() + "\n\ndef close(order):\n    audit_totals(order)\n"
    text += "    reconcile_totals(order)\n"
    result = _gather(provider, root, text, text.count("\n") - 1)
    paths = {f.path for f in result.files}
    assert "shop/audit.py" in paths
    assert not any(p.endswith((".js", ".ts")) for p in paths)


def test_fallback_skips_locals_attributes_and_tests(tmp_path: Path):
    root = tmp_path / "repo"
    shutil.copytree(FIXTURE, root)
    (root / "shop" / "audit.py").write_text("def audit_totals(order):\n    return True\n")
    (root / "tests").mkdir()
    (root / "tests" / "helpers.py").write_text("def pending_orders():\n    return []\n")
    (root / "shop" / "queue.py").write_text("class Queue:\n    def drain_all(self):\n        return []\n")
    index = ContextIndex(str(root), None)
    index.build()
    provider = ContextProvider(ContextOptions(time_budget_ms=2000))
    provider.add_index(index)
    # ``pending_orders`` is a local here, ``drain_all`` a method of an object of unknown type:
    # the repository's function and method of those names are not what this code uses.
    text = (root / CHECKOUT).read_text() + (
        "\n\ndef close(order, queue):\n    pending_orders = []\n    pending_orders.append(order)\n"
        "    queue.drain_all()\n    queue.drain_all()\n    audit_totals(order)\n")
    paths = {f.path for f in _gather(provider, root, text, text.count("\n") - 1).files}
    assert "shop/audit.py" in paths
    assert "tests/helpers.py" not in paths and "shop/queue.py" not in paths


def test_files_importing_the_same_names_feed_similar_snippets(setup):
    from slm_lsp.context.provider import import_siblings

    root, index, provider = setup
    (root / "app" / "refund.py").write_text(
        "from shop import apply_discount\nfrom shop.cart import ShoppingCart\n\n\n"
        "def refund(owner: str, coupon: float) -> float:\n    cart = ShoppingCart(owner)\n"
        "    cart.add_item(\"apple\", 3, 0.5)\n    return -apply_discount(cart.subtotal(), coupon)\n")
    (root / "app" / "unrelated.py").write_text("from shop.cart import ShoppingCart\n")
    index.update_paths(["app/refund.py", "app/unrelated.py"])
    snap = index.snapshot
    imports = snap.entry(CHECKOUT).imports
    assert import_siblings(snap, CHECKOUT, imports, time.monotonic() + 5) == ["app/refund.py"]
    text = (root / CHECKOUT).read_text()
    result = _gather(provider, root, text, 8)
    assert any(f.path == "app/refund.py" and "-apply_discount(cart.subtotal(), coupon)" in f.text
               for f in result.files)


def test_ranking_churn_at_the_cut_does_not_recompute_the_context(tmp_path: Path):
    # More used definitions than the context holds: as the cursor moves down, the names near the
    # cut swap places (uses are weighed by distance). Only a missing definition that ranks well
    # inside the cut may recompute the context (and re-evaluate its KV cells).
    root = tmp_path / "repo"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "lib.py").write_text("".join(f"def helper_{i}(value):\n    return value + {i}\n\n\n"
                                                 for i in range(40)))
    names = ", ".join(f"helper_{i}" for i in range(40))
    body = "".join(f"    total = helper_{i}(total)\n" for i in range(40))
    text = f"from pkg.lib import {names}\n\n\ndef run(total):\n{body}    return total\n"
    (root / "main.py").write_text(text)
    index = ContextIndex(str(root), None)
    index.build()
    provider = ContextProvider(ContextOptions(time_budget_ms=2000))
    provider.add_index(index)
    reused = [provider.gather("doc", str(root / "main.py"), text, line).reused for line in range(14, 21)]
    assert reused[0] is False and all(reused[1:]), reused


def _long_module() -> tuple[str, int]:
    """A helper at the top, unrelated code in between, and a function at the bottom that uses
    the helper's names; the cursor is on the bottom function's last (blank) line."""
    top = ("def normalise_sku(raw_sku: str) -> str:\n"
           "    cleaned = raw_sku.strip().upper()\n"
           "    return cleaned.replace(' ', '-')\n\n\n")
    filler = "".join(f"def unrelated_{i}(x):\n    return x * {i}\n\n\n" for i in range(25))
    bottom = ("def register(cart, raw_sku: str, quantity: int):\n"
              "    cleaned = raw_sku.strip().upper()\n"
              "    if not cleaned:\n"
              "        raise ValueError(raw_sku)\n"
              "    \n")
    text = top + filler + bottom
    return text, text.count("\n") - 1


def test_same_file_windows_come_from_away_from_the_cursor():
    text, line = _long_module()
    lines = text.split("\n")
    got = own_snippets("mod.py", lines, line, query_tokens(lines, line), 4)
    # The helper at the top is the one alike; the windows near the cursor (shown anyway) are left out.
    assert got and got[0].start == 0 and "def normalise_sku" in got[0].text
    assert all(s.start + 20 <= line - 20 for s in got)
    assert all(abs(a.start - b.start) >= 20 for a in got for b in got if a is not b)
    assert own_snippets("mod.py", lines, line, query_tokens(lines, line), 4, near=(line + 1, 5)) == []


def test_same_file_source_reads_the_buffer_and_can_be_switched_off(setup):
    root, index, _provider = setup
    text, line = _long_module()
    for sources, expect in ((["same_file"], True), (["definitions", "similar", "recent"], False)):
        provider = ContextProvider(ContextOptions(sources=sources, time_budget_ms=2000))
        provider.add_index(index)
        # hide_current: the file is not in the index (as in the evaluation); its buffer still is.
        files = provider.gather("doc", str(root / CHECKOUT), text, line, hide_current=True).files
        mine = [f for f in files if f.path == CHECKOUT]
        assert bool(mine) == expect
        if expect:
            assert "def normalise_sku" in mine[-1].text and mine[-1].share > 0
            assert mine[-1].priority == max(f.priority for f in mine)  # the best nearest the file


def test_typing_in_an_open_file_keeps_its_own_windows_sticky(setup):
    root, index, provider = setup
    text, line = _long_module()
    index.update_buffer(CHECKOUT, text)  # open in the editor: each keystroke updates the index
    first = provider.gather("doc", str(root / CHECKOUT), text, line)
    assert any(f.path == CHECKOUT for f in first.files)
    lines = text.split("\n")
    for typed in ["r", "re", "return cle"]:
        lines[line] = "    " + typed
        typing = "\n".join(lines)
        index.update_buffer(CHECKOUT, typing)
        again = provider.gather("doc", str(root / CHECKOUT), typing, line)
        assert again.reused and again.files is first.files  # the file's own change does not recompute them
