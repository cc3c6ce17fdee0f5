"""The workspace service marks what must not go into a remote prompt: the buffer being completed
(``private_reason``) and every piece of its context (``ContextFile.private``): chunks of the
recent-edits ring from a .env open in the editor, definitions from a gitignored buffer, snippets
whose text holds a key. Marked, not dropped: the pieces are still there for the local model."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from slm_lsp.config import ContextConfig
from slm_lsp.context.types import ContextFile
from slm_lsp.context.workspace import WorkspaceService

FIXTURE = Path(__file__).parent.parent / "data" / "context_repo"
ENV_MARKER = "ENV-MARKER-7f3a91"
KEY = "sk_live_4eC39HqLyjWDarjtT1zdp7dc"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    shutil.copytree(FIXTURE, root)
    (root / ".env").write_text(f"DATABASE_URL=postgres://localhost/shop\nSHOP_API_TOKEN={ENV_MARKER}\n")
    with open(root / ".gitignore", "a") as fh:
        fh.write("local_*.py\n")
    (root / "shop" / "billing.py").write_text(
        f'STRIPE_KEY = "{KEY}"\n\n\ndef charge_card(owner: str, amount: float) -> bool:\n'
        "    return bool(owner) and amount > 0\n")
    return root


@pytest.fixture
def service(repo: Path, tmp_path: Path):
    service = WorkspaceService(tmp_path / "cache", buffer_debounce_s=0.05)
    service.configure(ContextConfig(watch=False, time_budget_ms=2000))
    service.start([str(repo)])
    assert service.flush(timeout=10)
    for thread in list(service.builds):
        thread.join(10)
    assert all(i.ready.is_set() for i in service.provider.indexes)
    yield service
    service.stop()


def lines_of(text: str) -> list[str]:
    return text.splitlines(True) + ([""] if text.endswith("\n") else [])


def check_marks(service: WorkspaceService, root: Path, files: list[ContextFile]) -> None:
    """Every piece is marked exactly as the filter decides for its file and text."""
    for f in files:
        path = f.path if os.path.isabs(f.path) else str(root / f.path)
        assert f.private == service.provider.privacy.private(path, f.text), (f.path, f.private, f.text[:80])


CHECKOUT = """from shop.cart import ShoppingCart
from shop.billing import charge_card


def checkout(owner: str, amount: float) -> bool:
    cart = ShoppingCart(owner)
    return charge_card(owner, amount)
"""


def test_an_env_edited_in_the_editor_is_private_in_the_ring(service: WorkspaceService, repo: Path):
    env = repo / ".env"
    env_text = env.read_text() + "EXTRA=1\n"
    service.buffer_changed(str(env), lines_of(env_text), 2)  # typed into the .env
    checkout = repo / "app" / "checkout.py"
    service.buffer_changed(str(checkout), lines_of(CHECKOUT), 6)
    result = service.gather("k", str(checkout), CHECKOUT, 6)
    env_pieces = [f for f in result.files if ENV_MARKER in f.text]
    assert env_pieces and all(f.private for f in env_pieces)  # still there, for the local model
    assert {f.path for f in env_pieces} == {".env"}
    public = [f for f in result.files if not f.private]
    assert public and all(ENV_MARKER not in f.text for f in public)
    check_marks(service, repo, result.files)
    # The buffer itself: the .env is private, the code is not.
    assert (service.private_reason(str(env), env_text) or "").startswith("named like a secret")
    assert service.private_reason(str(checkout), CHECKOUT) is None


def test_a_piece_whose_text_holds_a_key_is_private(service: WorkspaceService, repo: Path):
    checkout = repo / "app" / "checkout.py"
    service.buffer_changed(str(repo / "shop" / "billing.py"), lines_of((repo / "shop" / "billing.py").read_text()), 0)
    result = service.gather("k", str(checkout), CHECKOUT, 6)
    billing = [f for f in result.files if f.path == "shop/billing.py"]
    assert billing, [f.path for f in result.files]
    assert any(f.private for f in billing if KEY in f.text)
    assert all(f.private for f in result.files if KEY in f.text)
    check_marks(service, repo, result.files)
    # A buffer holding a key is private as a whole (its windows would carry it).
    with_key = CHECKOUT + f'\nFALLBACK = "{KEY}"\n'
    assert service.private_reason(str(checkout), with_key) == "a Stripe key"


def test_definitions_from_a_gitignored_buffer_are_private(service: WorkspaceService, repo: Path):
    local = repo / "app" / "local_rates.py"  # ignored by local_*.py; open in the editor, never saved
    service.buffer_changed(str(local), lines_of("def special_rate(owner: str) -> float:\n    return 0.5\n"), None,
                           immediate=True)
    assert service.flush(timeout=10)
    checkout = repo / "app" / "checkout.py"
    text = "from app.local_rates import special_rate\n\n\ndef total(owner):\n    return special_rate(owner)\n"
    result = service.gather("k", str(checkout), text, 4)
    local_pieces = [f for f in result.files if f.path == "app/local_rates.py"]
    assert local_pieces and all(f.private for f in local_pieces)
    check_marks(service, repo, result.files)


def test_deny_files_changed_at_run_time_marks_the_ring_again(service: WorkspaceService, repo: Path):
    cart = repo / "shop" / "cart.py"
    service.buffer_changed(str(cart), lines_of(cart.read_text()), 3)
    checkout = repo / "app" / "checkout.py"
    first = service.gather("k", str(checkout), CHECKOUT, 6)
    assert [f for f in first.files if f.path == "shop/cart.py" and not f.private]
    service.configure(ContextConfig(watch=False, time_budget_ms=2000), deny_files=["shop/"])
    again = service.gather("k", str(checkout), CHECKOUT, 6)  # applies the change before anything else
    cart_pieces = [f for f in again.files if f.path.startswith("shop/")]
    assert cart_pieces and all(f.private for f in cart_pieces)
    assert all(c.private for c in service.provider.recent.chunks() if c.path == "shop/cart.py")
    check_marks(service, repo, again.files)
    service.configure(ContextConfig(watch=False, time_budget_ms=2000), deny_files=[])
    third = service.gather("k", str(checkout), CHECKOUT, 6)
    assert not any(f.private for f in third.files if f.path == "shop/cart.py")


def test_a_file_outside_the_workspace_is_marked_in_the_ring(service: WorkspaceService, tmp_path: Path, repo: Path):
    outside = tmp_path / "elsewhere" / ".env.local"
    outside.parent.mkdir()
    text = f"TOKEN={ENV_MARKER}\n"
    service.buffer_changed(str(outside), lines_of(text), 0)
    result = service.gather("k", str(repo / "app" / "checkout.py"), CHECKOUT, 6)
    pieces = [f for f in result.files if ENV_MARKER in f.text]
    assert pieces and all(f.private for f in pieces)


def test_the_context_side_opens_no_connection(service: WorkspaceService, repo: Path, monkeypatch: pytest.MonkeyPatch):
    """Indexing, marking and the privacy checks never reach for a socket, loopback included (the
    test run's own guard lets loopback through)."""
    import socket

    from slm_lsp.config import Config, RemoteConfig
    from slm_lsp.context.privacy import destination

    calls: list[object] = []

    def refuse(*args: object, **kwargs: object) -> None:
        calls.append(args)
        raise OSError("no connection may be opened here")

    for name in ("connect", "connect_ex", "sendto"):
        monkeypatch.setattr(socket.socket, name, refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    checkout = repo / "app" / "checkout.py"
    service.buffer_changed(str(repo / ".env"), lines_of((repo / ".env").read_text()), 1)
    service.configure(ContextConfig(watch=False, time_budget_ms=2000), deny_files=["shop/"])
    assert service.gather("k", str(checkout), CHECKOUT, 6).files
    assert service.private_reason(str(repo / ".env"), "X=1\n") is not None
    assert destination(Config(remote=RemoteConfig(route="remote", url="https://gpu-box.example.com:8080"))).remote
    assert calls == []
