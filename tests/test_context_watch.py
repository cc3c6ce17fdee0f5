"""slm_lsp.context.watch: watchdog events (create, modify, delete, rename) reach the index,
debounced into batches; ignored files stay out."""

from __future__ import annotations

import shutil
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
