"""slm_lsp.context.watch: watchdog events (create, modify, delete, rename) reach the index,
debounced into batches; ignored files stay out."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import sys
import time
from pathlib import Path

import pytest

from slm_lsp.context.index import ContextIndex
from slm_lsp.context.watch import IndexWatcher

FIXTURE = Path(__file__).parent / "data" / "context_repo"


def _wait(predicate, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def watched(tmp_path: Path):
    root = tmp_path / "repo"
    shutil.copytree(FIXTURE, root)
    index = ContextIndex(str(root), tmp_path / "cache")
    index.build()
    watcher = IndexWatcher(index, debounce=0.1)
    watcher.start()
    yield root, index, watcher
    watcher.stop()


def test_create_modify_rename_delete(watched):
    root, index, _watcher = watched
    (root / "shop" / "stock.py").write_text("def restock(sku):\n    pass\n")
    assert _wait(lambda: index.snapshot.defining("restock") == ["shop/stock.py"])
    (root / "shop" / "stock.py").write_text("def restock_all():\n    pass\n")
    assert _wait(lambda: index.snapshot.defining("restock_all") == ["shop/stock.py"])
    assert not index.snapshot.defining("restock")
    (root / "shop" / "stock.py").rename(root / "shop" / "inventory.py")
    assert _wait(lambda: index.snapshot.defining("restock_all") == ["shop/inventory.py"])
    assert "shop/stock.py" not in index.snapshot.files
    (root / "shop" / "inventory.py").unlink()
    assert _wait(lambda: not index.snapshot.defining("restock_all"))


def test_directory_moves_and_ignored_files(watched):
    root, index, watcher = watched
    (root / "debug.log").write_text("x\n")
    (root / "notes").mkdir()
    (root / "notes" / "n.py").write_text("def note():\n    pass\n")  # /notes/ is gitignored
    shutil.move(str(root / "shop"), str(root / "store"))
    assert _wait(lambda: index.snapshot.defining("apply_discount") == ["store/pricing.py"])
    assert not any(p.startswith("shop/") for p in index.snapshot.files)
    assert "notes/n.py" not in index.snapshot.files


def test_bursts_are_debounced(watched):
    root, index, watcher = watched
    start = watcher.batches
    for i in range(20):
        (root / "shop" / "burst.py").write_text(f"def burst_{i}():\n    pass\n")
    assert _wait(lambda: index.snapshot.defining("burst_19") == ["shop/burst.py"])
    time.sleep(0.3)
    assert watcher.batches - start <= 3


# -- what is watched: ignored directories never, new ones when they appear; polling at the limit --
@pytest.fixture
def watch_calls(monkeypatch):
    """The directories watchdog's inotify backend is asked to watch."""
    from watchdog.observers.inotify_c import InotifyFD

    calls: list[str] = []
    real = InotifyFD.add_callback

    def recording(self, path, mask, callback, id_):
        calls.append(os.fsdecode(path))
        return real(self, path, mask, callback, id_)

    monkeypatch.setattr(InotifyFD, "add_callback", recording)
    return calls


def _repo_with_vendored_dirs(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    shutil.copytree(FIXTURE, root)
    for sub in ("node_modules/lib/deep", ".git/objects/ab", "notes/drafts", "shop/__pycache__"):
        (root / sub).mkdir(parents=True)
    (root / "node_modules" / "lib" / "index.js").write_text("export function vendored() {}\n")
    return root


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify")
def test_ignored_directories_are_not_watched_and_new_ones_are(tmp_path: Path, watch_calls):
    root = _repo_with_vendored_dirs(tmp_path)
    index = ContextIndex(str(root), tmp_path / "cache")
    index.build()
    watcher = IndexWatcher(index, debounce=0.1)
    watcher.start()
    try:
        assert watcher.mode == "inotify"
        rel = {os.path.relpath(p, root).replace(os.sep, "/") for p in watch_calls}
        assert {".", "shop", "app", "web"} <= rel
        # node_modules/ and shop/__pycache__/ are vendored, .git/ is git's, notes/ is gitignored
        assert not [p for p in rel if p.split("/")[0] in ("node_modules", ".git", "notes") or "__pycache__" in p]
        (root / "pkg" / "sub").mkdir(parents=True)
        (root / "pkg" / "node_modules" / "x").mkdir(parents=True)
        (root / "pkg" / "sub" / "mod.py").write_text("def first():\n    pass\n")
        assert _wait(lambda: index.snapshot.defining("first") == ["pkg/sub/mod.py"])
        (root / "pkg" / "sub" / "mod.py").write_text("def second():\n    pass\n")  # the new folder is watched
        assert _wait(lambda: index.snapshot.defining("second") == ["pkg/sub/mod.py"])
        rel = {os.path.relpath(p, root).replace(os.sep, "/") for p in watch_calls}
        assert "pkg/sub" in rel and not [p for p in rel if "node_modules" in p]
    finally:
        watcher.stop()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify")
def test_the_watch_limit_falls_back_to_polling(tmp_path: Path, monkeypatch, caplog):
    from watchdog.observers.inotify_c import InotifyFD

    def limit_reached(self, path, mask, callback, id_):
        raise OSError(errno.ENOSPC, "inotify watch limit reached")

    monkeypatch.setattr(InotifyFD, "add_callback", limit_reached)
    root = _repo_with_vendored_dirs(tmp_path)
    index = ContextIndex(str(root), tmp_path / "cache")
    index.build()
    listed: list[str] = []
    real_scandir = os.scandir

    def recording_scandir(path="."):
        listed.append(os.fsdecode(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", recording_scandir)
    watcher = IndexWatcher(index, debounce=0.1, poll_interval=0.1)
    with caplog.at_level(logging.WARNING, logger="slm_lsp.context.watch"):
        watcher.start()
    try:
        assert watcher.mode == "polling"
        assert [r for r in caplog.records if "polling" in r.getMessage()]
        (root / "shop" / "stock.py").write_text("def restock(sku):\n    pass\n")
        assert _wait(lambda: index.snapshot.defining("restock") == ["shop/stock.py"])
        rel = {os.path.relpath(p, root).replace(os.sep, "/") for p in listed if p.startswith(str(root))}
        assert "shop" in rel and not [p for p in rel if p.split("/")[0] in ("node_modules", ".git", "notes")]
    finally:
        watcher.stop()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify")
def test_the_limit_hit_by_a_new_directory_switches_to_polling(watched, monkeypatch):
    from watchdog.observers.inotify_c import InotifyFD

    root, index, watcher = watched
    assert watcher.mode == "inotify"

    def limit_reached(self, path, mask, callback, id_):
        raise OSError(errno.ENOSPC, "inotify watch limit reached")

    monkeypatch.setattr(InotifyFD, "add_callback", limit_reached)
    watcher.poll_interval = 0.1
    (root / "grown").mkdir()
    assert _wait(lambda: watcher.mode == "polling")
    (root / "grown" / "later.py").write_text("def grown_later():\n    pass\n")
    assert _wait(lambda: index.snapshot.defining("grown_later") == ["grown/later.py"])
