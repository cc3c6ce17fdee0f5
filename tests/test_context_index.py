"""slm_lsp.context.index (with ignore rules and parsing): the walk, skip rules, import
resolution, live updates, snapshots, and persistence that survives a kill during a write."""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from slm_lsp.context.files import IgnoreRules
from slm_lsp.context.index import ContextIndex, import_keys, index_file_for
from slm_lsp.context.parsing import ParsedFile, parse_source

FIXTURE = Path(__file__).parent / "data" / "context_repo"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    shutil.copytree(FIXTURE, root)
    # What the walk must skip (made here: the project's own .gitignore would keep some out of git).
    (root / "debug.log").write_text("log\n")
    (root / "keep.log").write_text("not code\n")
    (root / "notes").mkdir()
    (root / "notes" / "draft.py").write_text("def ignored_by_gitignore():\n    pass\n")
    (root / "build").mkdir()
    (root / "build" / "out.py").write_text("def built():\n    pass\n")
    (root / "node_modules" / "lib").mkdir(parents=True)
    (root / "node_modules" / "lib" / "index.js").write_text("export function vendored() {}\n")
    (root / "app" / "bundle.js").write_text("var a=1;" * 2000)  # minified: one huge line
    (root / "app" / "blob.py").write_bytes(b"\x00\x01binary" * 100)
    (root / "app" / "huge.py").write_text("x = 1\n" * 200_000)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.py").write_text("def outside_secret():\n    pass\n")
    os.symlink(outside / "secret.py", root / "app" / "linked.py")
    os.symlink(outside, root / "linked_dir")
    return root


def _index(root: Path, tmp_path: Path) -> ContextIndex:
    from slm_lsp.context.index import IndexOptions

    return ContextIndex(str(root), tmp_path / "cache", IndexOptions(max_file_bytes=256 * 1024))


def test_walk_respects_ignore_rules_and_skips(repo: Path, tmp_path: Path):
    index = _index(repo, tmp_path)
    snap = index.build()
    assert sorted(snap.files) == ["app/checkout.py", "shop/__init__.py", "shop/cart.py", "shop/pricing.py",
                                  "web/format.ts", "web/view.ts"]
    # Generated (protobuf marker), minified, binary, too big, vendored, gitignored and linked-out
    # files are all absent; the stats count what was parsed.
    assert index.stats["files"] == 6 and index.stats["parsed"] == 6
    assert index.ready.is_set()


def test_gitignore_matcher():
    rules = IgnoreRules("/nonexistent", ["*.log", "!keep.log", "build/", "/top.py", "docs/**/gen", "a?c.py"])
    assert rules.ignored("x/debug.log")
    assert not rules.ignored("keep.log")
    assert rules.ignored("src/build/y.py")  # inside an ignored directory
    assert not rules.ignored("build")  # a file named like a directory-only rule
    assert rules.ignored("top.py") and not rules.ignored("sub/top.py")  # anchored
    assert rules.ignored("docs/a/b/gen/x.py") and rules.ignored("docs/gen/x.py")
    assert rules.ignored("abc.py") and not rules.ignored("abbc.py")
    assert rules.ignored("node_modules/x.js") and rules.ignored("a/.git/config")
    assert not rules.ignored("src/main.py")


def test_nested_gitignore(repo: Path, tmp_path: Path):
    (repo / "shop" / ".gitignore").write_text("cart.py\n")
    snap = _index(repo, tmp_path).build()
    assert "shop/cart.py" not in snap.files and "shop/pricing.py" in snap.files


def test_definitions_and_imports_are_resolved(repo: Path, tmp_path: Path):
    snap = _index(repo, tmp_path).build()
    pricing = snap.files["shop/pricing.py"]
    by_name = {d.name: d for d in pricing.definitions}
    assert by_name["apply_discount"].signature == "def apply_discount(amount: float, percent: float) -> float:"
    assert by_name["apply_discount"].doc == "Return amount reduced by percent (0-100)."
    cart = {d.name: d for d in snap.files["shop/cart.py"].definitions}
    assert cart["LineItem"].kind == "class" and "    sku: str" in cart["LineItem"].fields
    assert cart["add_item"].parent == "ShoppingCart" and cart["add_item"].kind == "method"
    checkout = snap.files["app/checkout.py"]
    resolved = {imp.module: [p for k in import_keys("app/checkout.py", "python", imp) for p in snap.module_files(k)]
                for imp in checkout.imports}
    assert resolved == {"shop": ["shop/__init__.py"], "shop.cart": ["shop/cart.py"],
                        "shop.pricing": ["shop/pricing.py"]}
    view = snap.files["web/view.ts"]
    keys = import_keys("web/view.ts", "typescript", view.imports[0])
    assert next(snap.module_files(k) for k in keys if snap.module_files(k)) == ["web/format.ts"]
    assert snap.defining("formatPrice") == ["web/format.ts"]


@pytest.mark.parametrize(("lang", "source", "defs", "imports"), [
    ("go", 'package x\nimport (\n f "fmt"\n "a/b/c"\n)\n// Do does it.\nfunc (c *C) Do(x int) error { return nil }\n',
     [("Do", "function", "func (c *C) Do(x int) error", "Do does it.")], [("fmt", "f"), ("a/b/c", "c")]),
    ("rust", "use crate::a::{B, c::D as E};\n/// Adds.\npub fn add(x: i32) -> i32 { x }\n",
     [("add", "function", "pub fn add(x: i32) -> i32", "Adds.")], [("crate::a", ""), ("crate::a::c", "")]),
    ("java", "import a.b.C;\nclass A {\n  /** Mm. */\n  int m(int x) { return 1; }\n}\n",
     [("A", "class", "class A", ""), ("m", "method", "  int m(int x)", "Mm.")], [("a.b", "")]),
    ("c", '#include "x.h"\nstatic int *f(int a) { return 0; }\n',
     [("f", "function", "static int *f(int a)", "")], [("x.h", "")]),
    ("cpp", '#include "y.hpp"\nint A::b(int x) { return 2; }\n', [("b", "function", "int A::b(int x)", "")],
     [("y.hpp", "")]),
    ("javascript", 'import d, {a as b} from "./x";\nconst g = (x) => x;\n',
     [("g", "function", "const g = (x) => x;", "")], [("./x", "")]),
    ("tsx", 'import {a} from "./x";\nexport interface I { a: number }\n', [("I", "class", "interface I", "")],
     [("./x", "")]),
])
def test_languages(lang, source, defs, imports):
    parsed = parse_source(source, lang)
    assert [(d.name, d.kind, d.signature, d.doc) for d in parsed.definitions] == defs
    assert [(i.module, i.alias) for i in parsed.imports] == imports


def test_restart_reparses_only_changed_files(repo: Path, tmp_path: Path):
    first = _index(repo, tmp_path)
    first.build()
    assert first.cache_file is not None and first.cache_file.is_file()
    time.sleep(0.01)
    (repo / "shop" / "pricing.py").write_text("def renamed_price(x):\n    return x\n")
    again = _index(repo, tmp_path)
    snap = again.build()
    assert again.stats["parsed"] == 1 and again.stats["reused"] == 5
    assert snap.defining("renamed_price") == ["shop/pricing.py"] and not snap.defining("apply_discount")


def test_damaged_saved_index_is_rebuilt(repo: Path, tmp_path: Path):
    index = _index(repo, tmp_path)
    assert index.cache_file is not None
    index.cache_file.parent.mkdir(parents=True)
    index.cache_file.write_text('{"schema": 1, "root": "x", "fil')
    snap = index.build()
    assert len(snap.files) == 6 and index.stats["parsed"] == 6


KILLER = """
import os, sys, time, json
from pathlib import Path
from slm_lsp.context.index import ContextIndex
index = ContextIndex(sys.argv[1], Path(sys.argv[2]))
index.build()                      # the good index, saved
real_dump = json.dump
def slow_dump(data, fh, **kw):     # the next save writes half of its data, then hangs
    text = json.dumps(data)
    fh.write(text[: len(text) // 2])
    fh.flush()
    print("WRITING", flush=True)
    time.sleep(60)
json.dump = slow_dump
index.save(force=True)
"""


def test_kill_during_write_leaves_the_old_index(repo: Path, tmp_path: Path):
    cache = tmp_path / "cache"
    proc = subprocess.Popen([sys.executable, "-c", KILLER, str(repo), str(cache)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "WRITING"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = index_file_for(str(repo), cache)
    assert json.loads(saved.read_text())["schema"] == 1  # the old file, whole
    assert list(saved.parent.glob("*.tmp"))  # the half-written one is beside it, unused
    index = ContextIndex(str(repo), cache)
    index.build()
    assert index.stats["reused"] == 6 and index.stats["parsed"] == 0


def test_buffers_override_disk_and_snapshots_stay_consistent(repo: Path, tmp_path: Path):
    index = _index(repo, tmp_path)
    before = index.build()
    index.update_buffer("shop/pricing.py", "def typed_in_editor(a):\n    return a\n")
    after = index.snapshot
    assert after is not before and after.version > before.version
    assert before.defining("apply_discount") == ["shop/pricing.py"]  # an old snapshot never changes
    assert after.defining("typed_in_editor") == ["shop/pricing.py"] and not after.defining("apply_discount")
    index.update_paths(["shop/pricing.py"])  # a disk event for an open buffer: the buffer wins
    assert index.snapshot.defining("typed_in_editor")
    index.close_buffer("shop/pricing.py")
    assert index.snapshot.defining("apply_discount") == ["shop/pricing.py"]
    hidden = index.snapshot.hide("shop/pricing.py")
    assert hidden.defining("apply_discount") == [] and hidden.entry("shop/pricing.py") is None


def test_update_paths_create_modify_delete(repo: Path, tmp_path: Path):
    index = _index(repo, tmp_path)
    index.build()
    (repo / "shop" / "stock.py").write_text("def restock(sku):\n    pass\n")
    index.update_paths(["shop/stock.py"])
    assert index.snapshot.defining("restock") == ["shop/stock.py"]
    (repo / "shop" / "stock.py").unlink()
    index.update_paths([], ["shop/stock.py"])
    assert not index.snapshot.defining("restock")
    index.update_paths(["debug.log", "notes/draft.py"])  # ignored paths stay out
    assert "notes/draft.py" not in index.snapshot.files


# -- threads: the walk, buffer edits, the watcher's batches and saves run at once ---------------
@pytest.fixture
def fast_switching():
    """Threads switch every microsecond, so races show up in a short test."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(old)


def _hammer(target, n_threads: int = 4) -> tuple[threading.Event, list[BaseException], list[threading.Thread]]:
    stop = threading.Event()
    errors: list[BaseException] = []

    def run(seed: int) -> None:
        rng = random.Random(seed)
        try:
            while not stop.is_set():
                target(rng)
        except BaseException as exc:  # noqa: BLE001 - the test reports what a thread hit
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n_threads)]
    for t in threads:
        t.start()
    return stop, errors, threads


class _YieldingFiles(dict):
    """A snapshot's files whose lookups let other threads run: the walk's merge of the open
    buffers (one lookup per buffer) is then interleaved with the editor's edits."""

    def get(self, key, default=None):
        time.sleep(0)
        return super().get(key, default)


def test_buffer_edits_during_the_walk_never_abort_it(repo: Path, tmp_path: Path, fast_switching):
    index = _index(repo, tmp_path)
    walked = dict(index.build().files)

    def edit(rng: random.Random) -> None:
        rel = f"open/buffer_{rng.randrange(300)}.py"
        if rng.random() < 0.6:
            index.update_buffer(rel, f"def edited_{rng.randrange(9)}():\n    pass\n")
        else:
            index.close_buffer(rel)

    for i in range(100):
        index.update_buffer(f"open/buffer_{i}.py", "x = 1\n")
    stop, errors, threads = _hammer(edit)
    try:
        for _ in range(100):  # what the walk does every 2 s and at its end
            time.sleep(0.002)  # the editors' threads get going between two merges
            with index._lock:  # unlocked, this swap could undo an edit published meanwhile
                index.snapshot = replace(index.snapshot, files=_YieldingFiles(index.snapshot.files))
            index._publish_full(walked)
        index.build()
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert not errors
    assert set(walked) <= set(index.snapshot.files)
    # What the index holds of the buffers is exactly what is open, whatever the interleaving.
    assert {p for p, e in index.snapshot.files.items() if e.buffer} == set(index.open_buffers())


def test_every_parse_gets_its_own_version(repo: Path, tmp_path: Path, fast_switching, monkeypatch):
    index = _index(repo, tmp_path)

    # Parsing is not what is tested: a stub keeps each thread close to the version counter.
    monkeypatch.setattr("slm_lsp.context.index.parse_source", lambda text, lang: ParsedFile(lang, [], []))
    text = "x = 1\n" * 20000

    def edit_many(thread: int) -> None:
        for i in range(150):
            index.update_buffer(f"t{thread}/module_{i}.py", text)

    threads = [threading.Thread(target=edit_many, args=(t,)) for t in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    versions = [e.version for e in index.snapshot.files.values()]
    assert len(versions) == 900 and len(set(versions)) == 900


def test_concurrent_saves_each_write_a_whole_index(repo: Path, tmp_path: Path, monkeypatch, caplog):
    index = _index(repo, tmp_path)
    index.build()
    real_dump = json.dump

    def slow_dump(data, fh, **kw):  # half, a pause, the rest: the two writers overlap
        text = json.dumps(data, **kw)
        fh.write(text[: len(text) // 2])
        fh.flush()
        time.sleep(0.02)
        fh.write(text[len(text) // 2:])

    monkeypatch.setattr(json, "dump", slow_dump)
    results: list[bool] = []
    threads = [threading.Thread(target=lambda: results.extend(index.save(force=True) for _ in range(5)))
               for _ in range(2)]  # the watcher's batch and the shutdown
    with caplog.at_level(logging.WARNING, logger="slm_lsp.context.index"):
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    monkeypatch.setattr(json, "dump", real_dump)
    assert results == [True] * 10 and not caplog.records
    assert index.cache_file is not None
    saved = json.loads(index.cache_file.read_text())
    assert sorted(e[0] for e in saved["files"]) == sorted(index.snapshot.files)
    assert not list(index.cache_file.parent.glob("*.tmp"))


def test_an_unwritable_cache_works_in_memory_and_says_so_once(repo: Path, tmp_path: Path, caplog):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the cache folder should be\n")  # root ignores permissions, not this
    index = ContextIndex(str(repo), blocker / "cache")
    with caplog.at_level(logging.WARNING, logger="slm_lsp.context.index"):
        snap = index.build()
        assert index.ready.is_set() and len(snap.files) == 6
        assert index.save_error
        (repo / "shop" / "stock.py").write_text("def restock(sku):\n    pass\n")
        index.update_paths(["shop/stock.py"])
        assert index.save(force=True) is False  # the watcher's batch: still in memory, no new warning
        assert index.snapshot.defining("restock") == ["shop/stock.py"]
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "in memory" in warnings[0].getMessage()


def test_a_full_text_cache_keeps_the_files_in_use(tmp_path: Path, monkeypatch):
    import slm_lsp.context.index as index_module

    root = tmp_path / "many"
    root.mkdir()
    for i in range(400):
        (root / f"m{i}.py").write_text(f"def f{i}():\n    return {i}\n")
    index = ContextIndex(str(root), tmp_path / "cache")
    opened: list[str] = []

    def counting_open(path, *args, **kwargs):
        opened.append(os.fspath(path))
        return open(path, *args, **kwargs)

    monkeypatch.setattr(index_module, "open", counting_open, raising=False)
    for i in range(400):  # the window index reads every file; the file being completed is read often
        index.read_text(f"m{i}.py")
        if i % 50 == 0:
            assert index.read_text("m0.py") == "def f0():\n    return 0\n"
    assert sum(p.endswith(f"{os.sep}m0.py") for p in opened) == 1
