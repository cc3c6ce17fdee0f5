"""slm_lsp.context.sources.windows: the whole-repository window index (inverted identifier index),
its ranking against the per-request search, updates, compaction, and how the provider uses it."""

from __future__ import annotations

import random
import shutil
import time
from pathlib import Path

from slm_lsp.context.index import ContextIndex
from slm_lsp.context.provider import INLINE_SYNC_FILES, ContextOptions, ContextProvider
from slm_lsp.context.sources.similar import LOOK_AHEAD, STRONG_SIMILAR, WINDOW, query_tokens, rank_windows
from slm_lsp.context.sources.windows import WindowIndex

FIXTURE = Path(__file__).parent / "data" / "context_repo"
CHECKOUT = "app/checkout.py"

NEEDLE = """def settle_invoice(invoice, ledger):
    balance = ledger.balance_for(invoice.customer_id)
    if balance.overdue_days > invoice.grace_days:
        ledger.charge_late_fee(invoice, balance.overdue_days)
    ledger.post(invoice.total, reference=invoice.number)
    return ledger.receipt(invoice.number)
"""


def _filler(rng: random.Random, n: int) -> str:
    words = ["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "theta", "zeta", "iota"]
    return "\n".join(f"def f{rng.randrange(10**6)}(x):\n    return {rng.choice(words)}(x) + {rng.choice(words)}"
                     for _ in range(n))


def test_query_ranks_like_the_per_request_search():
    rng = random.Random(1)
    files = {f"pkg/mod{i}.py": _filler(rng, 30) for i in range(40)}
    files["far/away/billing.py"] = _filler(rng, 5) + "\n\n" + NEEDLE + "\n" + _filler(rng, 5)
    windows = WindowIndex()
    for path, text in files.items():
        windows.add_file(path, text)
    query = query_tokens(NEEDLE.split("\n")[:4], 3)
    got = windows.query(query, 4, read_text=files.__getitem__)
    assert got and got[0].path == "far/away/billing.py"
    assert "ledger.charge_late_fee(invoice, balance.overdue_days)" in got[0].text
    # The same windows and scores as scanning every file (the per-request search's ranking).
    scanned = rank_windows(query, ((p, t, 1.0) for p, t in files.items()), 4)
    def key(s):
        return (s.path, s.start, round(s.score, 6))

    assert [key(s) for s in got] == [key(s) for s in scanned]
    # Excluded files are skipped; a bonus lifts a file's windows; at most two windows per file.
    assert all(s.path != "far/away/billing.py" for s in windows.query(query, 4, exclude=lambda p: p.startswith("far/")))
    boosted = windows.query(query, 4, bonus=lambda p: 3.0 if p == "pkg/mod7.py" else 1.0, min_score=0.0)
    assert sum(s.path == "pkg/mod7.py" for s in boosted) <= 2
    assert windows.query({"no_such_identifier"}, 4) == []


def test_a_near_copy_is_shown_with_the_lines_after_it():
    # The code before the cursor, and a file that copies it: the copy of the line about to be
    # written comes *after* the window that matches the query, and must be shown with it.
    before = [f"    step_{i} = stage_{i}(order_{i}, ledger)" for i in range(20)]
    rng = random.Random(3)
    files = {
        "shop/copy.py": _filler(rng, 12) + "\ndef settle(order_0, ledger):\n" + "\n".join(before)
        + "\n" + "\n".join(f"    after_{i} = 0" for i in range(10))
        + "\n    return ledger.finalize_settlement(step_19)\n" + _filler(rng, 30),
        # Weakly alike: shown as the window alone.
        "shop/weak.py": "\n".join(before[:4]) + "\n" + _filler(rng, 20) + "\n    unrelated_tail_marker = 1\n",
    }
    query = query_tokens(before, 19)
    windows = WindowIndex()
    for path, text in files.items():
        windows.add_file(path, text)
    got = windows.query(query, 4, read_text=files.__getitem__)
    scanned = rank_windows(query, ((p, t, 1.0) for p, t in files.items()), 4)
    for snippets in (got, scanned):
        copy = next(s for s in snippets if s.path == "shop/copy.py")
        assert copy.score >= STRONG_SIMILAR
        assert "return ledger.finalize_settlement(step_19)" in copy.text
        assert len(copy.text.split("\n")) == WINDOW + LOOK_AHEAD
        weak = [s for s in snippets if s.path == "shop/weak.py"]
        assert all(s.score < STRONG_SIMILAR and len(s.text.split("\n")) == WINDOW for s in weak)
        # Two windows of one file never show the same lines twice.
        mine = sorted((s for s in snippets if s.path == "shop/copy.py"), key=lambda s: s.start)
        assert all(a.start + len(a.text.split("\n")) <= b.start for a, b in zip(mine, mine[1:]))
    assert [(s.path, s.start, s.text) for s in got] == [(s.path, s.start, s.text) for s in scanned]


def test_changed_and_removed_files():
    windows = WindowIndex()
    windows.add_file("a.py", NEEDLE)
    windows.add_file("b.py", "def unrelated():\n    return 1\n")
    query = query_tokens(NEEDLE.split("\n"), 5)
    assert [s.path for s in windows.query(query, 4)] == ["a.py"]
    windows.add_file("a.py", "def other():\n    return 2\n")  # re-indexed: the old windows are gone
    assert windows.query(query, 4) == []
    windows.add_file("b.py", NEEDLE)
    assert [s.path for s in windows.query(query, 4)] == ["b.py"]
    windows.remove_file("b.py")
    assert windows.query(query, 4) == []
    assert windows.stats()["files"] == 1


def test_compaction_keeps_the_results():
    files = {"a.py": NEEDLE, "b.py": "x = 1\n"}
    windows = WindowIndex(window=4, step=1)
    for path, text in files.items():
        windows.add_file(path, text)
    for i in range(400):  # many edits of b.py leave dead windows behind
        files["b.py"] = "\n".join(f"value_{i}_{j} = {j}" for j in range(8))
        windows.add_file("b.py", files["b.py"], (i, 0, 0, False))
    before = windows.stats()
    windows._compact(files.__getitem__)
    after = windows.stats()
    assert after["windows"] == before["windows"] and after["postings"] < before["postings"]
    query = query_tokens(NEEDLE.split("\n"), 5)
    assert windows.query(query, 1, read_text=files.__getitem__)[0].path == "a.py"


def _repo(tmp_path: Path, extra: int) -> tuple[Path, ContextIndex, ContextProvider]:
    root = tmp_path / "repo"
    shutil.copytree(FIXTURE, root)
    rng = random.Random(2)
    for i in range(extra):  # more files than the per-request search looks at
        (root / "pkg" / f"mod{i:03d}.py").parent.mkdir(parents=True, exist_ok=True)
        (root / "pkg" / f"mod{i:03d}.py").write_text(_filler(rng, 10) + "\n")
    (root / "zz_far").mkdir()
    (root / "zz_far" / "billing.py").write_text(NEEDLE)
    index = ContextIndex(str(root), None)
    index.build()
    provider = ContextProvider(ContextOptions(time_budget_ms=2000))
    provider.add_index(index)
    return root, index, provider


def _document() -> tuple[str, int]:
    head = NEEDLE.split("\n")[:4]
    text = "from shop import apply_discount\n\n\n" + "\n".join(head).replace("settle_invoice", "settle") + "\n    \n"
    return text, text.count("\n") - 1


def test_provider_finds_a_near_copy_anywhere_in_the_repository(tmp_path: Path, monkeypatch):
    root, index, provider = _repo(tmp_path, 40)
    text, line = _document()
    path = str(root / CHECKOUT)
    # Before the window index exists (it is built in the background; held back here, a small
    # repository is done before the request looks) the request searches its own candidates:
    # open and recent files, import siblings, imported modules, the same folder.
    with monkeypatch.context() as m:
        m.setattr(WindowIndex, "start_sync", lambda *a, **k: None)
        first = provider.gather("doc", path, text, line)
    assert not any(f.path == "zz_far/billing.py" for f in first.files)
    windows = provider.windows(index, wait=True)
    assert windows is not None and windows.stats()["files"] == len(index.snapshot.files)
    provider.forget("doc")
    found = provider.gather("doc", path, text, line)
    assert any(f.path == "zz_far/billing.py" and "ledger.charge_late_fee" in f.text
               and f.priority >= 2.0 and f.share > 0 for f in found.files)


def test_provider_keeps_the_window_index_live(tmp_path: Path):
    root, index, provider = _repo(tmp_path, 3)
    provider.windows(index, wait=True)
    text, line = _document()
    path = str(root / CHECKOUT)
    # A saved file: synced by the next request itself.
    (root / "zz_far" / "billing.py").write_text("def nothing_here():\n    return None\n")
    (root / "app" / "ledger_copy.py").write_text(NEEDLE)
    index.update_paths(["zz_far/billing.py", "app/ledger_copy.py"])
    result = provider.gather("doc", path, text, line)
    paths = {f.path for f in result.files}
    assert "app/ledger_copy.py" in paths and "zz_far/billing.py" not in paths
    # Many changed files at once (a branch switch): synced in the background, requests go on.
    for i in range(INLINE_SYNC_FILES + 2):
        (root / "pkg" / f"new{i}.py").write_text(NEEDLE.replace("settle_invoice", f"settle_{i}"))
    index.update_paths([f"pkg/new{i}.py" for i in range(INLINE_SYNC_FILES + 2)])
    windows = provider.windows(index)
    assert windows is not None
    for _ in range(200):
        if not windows.syncing and windows.stats()["files"] == len(index.snapshot.files):
            break
        time.sleep(0.05)
    assert windows.stats()["files"] == len(index.snapshot.files)
