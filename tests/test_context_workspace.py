"""slm_lsp.context.workspace: the workspace service without a server. Buffers reach the index
through the one debounce scheduler (no thread per keystroke), a closed buffer goes back to the
disk, changed settings apply without a restart, and progress is reported through a callback."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest

from slm_lsp.config import ContextConfig
from slm_lsp.context.workspace import WorkspaceService

FIXTURE = Path(__file__).parent / "data" / "context_repo"


class Progress:
    def __init__(self, title: str, log: list[tuple[str, str]]) -> None:
        self.title, self.log = title, log
        log.append(("begin", title))

    def report(self, done: int, total: int) -> None:
        self.log.append(("report", f"{done}/{total}"))

    def end(self, message: str) -> None:
        self.log.append(("end", message))


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    shutil.copytree(FIXTURE, root)
    return root


def started(repo: Path, tmp_path: Path, config: ContextConfig | None = None,
            progress: list[tuple[str, str]] | None = None) -> WorkspaceService:
    service = WorkspaceService(tmp_path / "cache", (lambda t: Progress(t, progress)) if progress is not None else None,
                               buffer_debounce_s=0.05)
    service.configure(config or ContextConfig(watch=False))
    service.start([str(repo)])
    wait_ready(service)
    return service


def wait_ready(service: WorkspaceService) -> None:
    assert service.flush(timeout=10)
    for thread in list(service.builds):
        thread.join(10)
    assert all(i.ready.is_set() for i in service.provider.indexes)


def lines_of(text: str) -> list[str]:
    return text.splitlines(True) + ([""] if text.endswith("\n") else [])


def test_index_with_progress_through_the_callback(repo: Path, tmp_path: Path):
    log: list[tuple[str, str]] = []
    service = started(repo, tmp_path, progress=log)
    try:
        (index,) = service.provider.indexes
        assert index.stats["files"] == 6
        assert log[0] == ("begin", "slm-lsp: indexing repo") and log[-1][0] == "end"
        assert "6 files" in log[-1][1]
    finally:
        service.stop()


def test_buffers_reach_the_index_without_a_thread_per_keystroke(repo: Path, tmp_path: Path, monkeypatch):
    service = started(repo, tmp_path)
    timers: list[object] = []
    real_timer = threading.Timer
    monkeypatch.setattr(threading, "Timer", lambda *a, **k: timers.append(a) or real_timer(*a, **k))
    threads_before = threading.active_count()
    path = str(repo / "shop" / "unsaved.py")
    try:
        text = ""
        for ch in "def refund_order(order_id):\n    return True\n":
            text += ch
            service.buffer_changed(path, lines_of(text), text.count("\n"))
        assert threading.active_count() <= threads_before + 1  # the scheduler's one thread at most
        assert service.flush(timeout=10)
        (index,) = service.provider.indexes
        entry = index.snapshot.entry("shop/unsaved.py")
        assert entry is not None and entry.buffer and [d.name for d in entry.definitions] == ["refund_order"]
        assert any(c.path == "shop/unsaved.py" for c in service.provider.recent.chunks())
        assert timers == []
        # Closed: back to the disk, where the file does not exist.
        service.buffer_closed(path)
        assert service.flush(timeout=10)
        assert index.snapshot.entry("shop/unsaved.py") is None
    finally:
        service.stop()


def test_changed_settings_apply_without_a_restart(repo: Path, tmp_path: Path):
    service = started(repo, tmp_path)
    try:
        path = str(repo / "app" / "checkout.py")
        text = (repo / "app" / "checkout.py").read_text()
        assert {f.path for f in service.gather("k", path, text, 8).files} >= {"shop/pricing.py"}
        # Sources and time budget: at once.
        service.configure(ContextConfig(watch=False, sources=["similar"], time_budget_ms=200))
        assert service.provider.options.sources == ["similar"] and service.provider.options.time_budget_ms == 200
        # Exclude: the index is built again without the file.
        service.configure(ContextConfig(watch=False, exclude=["shop/pricing.py"]))
        wait_ready(service)
        (index,) = service.provider.indexes
        assert index.snapshot.entry("shop/pricing.py") is None and index.stats["files"] == 5
        assert "shop/pricing.py" not in {f.path for f in service.gather("k2", path, text, 8).files}
        # Disabled: no index; enabled again: back.
        service.configure(ContextConfig(watch=False, enabled=False))
        wait_ready(service)
        assert service.provider.indexes == []
        service.configure(ContextConfig(watch=False))
        wait_ready(service)
        assert service.provider.indexes[0].stats["files"] == 6
    finally:
        service.stop()


def test_watching_uses_the_services_scheduler(repo: Path, tmp_path: Path):
    service = started(repo, tmp_path, ContextConfig(watch=True))
    try:
        for _ in range(100):
            if service._watchers:
                break
            threading.Event().wait(0.05)
        (watcher,) = service._watchers
        assert watcher._debouncer is service.debouncer
    finally:
        service.stop()
