"""Secrets never reach a remote model, over the wire: the server (stdio, tiny model) sends every
completion to a real llama-cpp-python server (route remote) through a recording proxy, a process
of its own that writes down every byte the server sent out. The workspace holds a ``.env``, a
file git ignores, a folder ``remote.deny_files`` names and a module with a Stripe key in it, each
with a unique marker, open and edited in the editor (so they are in the recent-edits ring) and
used by the file being completed (so their definitions and snippets are in its context). Public
twins of each (a definition, a ring chunk, the buffer itself) carry markers that must arrive:
the same channels are open, only the private pieces are held back."""

from __future__ import annotations

import asyncio
import secrets
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient

from tests.conftest import TEST_TMP, TINY_MODEL, server_command
from tests.recording_proxy import RecordingProxy
from tests.remote_servers import LlamaCppServer

TAG = secrets.token_hex(6)
ENV_SECRET = f"ENV-SECRET-{TAG}"
IGNORED_SECRET = f"IGNORED-SECRET-{TAG}"
DENIED_SECRET = f"DENIED-SECRET-{TAG}"
STRIPE_KEY = f"sk_live_{TAG}{secrets.token_hex(8)}"
SECRETS = {"the .env": ENV_SECRET, "the gitignored file": IGNORED_SECRET, "the denied folder": DENIED_SECRET,
           "the key in a code file": STRIPE_KEY}
PUBLIC_BUFFER = f"PUBLIC-BUFFER-{TAG}"
PUBLIC_DEF = f"PUBLIC-DEF-{TAG}"
PUBLIC_RING = f"PUBLIC-RING-{TAG}"

FILES = {
    ".gitignore": "local_rates.py\n",
    ".env": f"SHOP_API_TOKEN={ENV_SECRET}\nDB_HOST=localhost\n",
    "app/__init__.py": "",
    "app/rates.py": f'def public_rate(region: str) -> float:\n    """{PUBLIC_DEF} rate of a region."""\n'
                    "    return 0.2\n",
    "app/local_rates.py": f'def local_rate(region: str) -> float:\n    """{IGNORED_SECRET} rate."""\n'
                          "    return 0.1\n",
    "internal/__init__.py": "",
    "internal/margins.py": f'def margin(region: str) -> float:\n    """{DENIED_SECRET} margin."""\n'
                           "    return 0.3\n",
    "app/keys.py": f'STRIPE_KEY = "{STRIPE_KEY}"\n\n\ndef stripe_client(key: str) -> str:\n    return key\n',
    "app/notes.py": "def note(text: str) -> str:\n    return text\n",
}
BILLING = f"""from app.keys import STRIPE_KEY, stripe_client
from app.local_rates import local_rate
from app.rates import public_rate
from internal.margins import margin

# {PUBLIC_BUFFER}


def total(region: str, amount: float) -> float:
    client = stripe_client(STRIPE_KEY)
    rate = public_rate(region) + local_rate(region) + margin(region)
    return amount * rate + len(client) * """
CURSOR = types.Position(line=BILLING.count("\n"), character=len(BILLING.rsplit("\n", 1)[1]))


@pytest.fixture(scope="module")
def repo() -> Path:
    root = TEST_TMP / f"privacy-repo-{TAG}"
    if root.exists():
        shutil.rmtree(root)
    for rel, text in FILES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (root / "app" / "billing.py").write_text(BILLING)
    return root


@pytest.fixture(scope="module")
def team_server() -> Iterator[LlamaCppServer]:
    server = LlamaCppServer(TINY_MODEL, TEST_TMP, name="privacy-team-server")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def proxy(team_server: LlamaCppServer, tmp_path: Path) -> Iterator[RecordingProxy]:
    proxy = RecordingProxy(f"127.0.0.1:{team_server.port}", tmp_path / "sent-to-the-server.bin")
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest_asyncio.fixture
async def client(proxy: RecordingProxy, repo: Path) -> AsyncIterator[LanguageClient]:
    command = server_command("--model", str(TINY_MODEL), "--remote", proxy.url, "--remote-kind", "openai",
                             "--route", "remote")
    lsp = await ClientServerConfig(server_command=command).start()
    assert isinstance(lsp, LanguageClient)
    await lsp.initialize_session(types.InitializeParams(
        capabilities=types.ClientCapabilities(),
        root_uri=repo.as_uri(),
        workspace_folders=[types.WorkspaceFolder(uri=repo.as_uri(), name="repo")],
        initialization_options={
            "completion": {"maxTokens": 4, "timeBudgetMs": 10000, "prefixTokens": 600, "suffixTokens": 100},
            "context": {"timeBudgetMs": 5000, "maxTokens": 2400},
            "remote": {"denyFiles": ["internal/"], "timeoutMs": 30000},
        },
    ))
    try:
        yield lsp
    finally:
        await lsp.shutdown_session()
        await lsp.stop()


async def wait_ready(client: LanguageClient) -> None:
    """The model loaded (the remote lane opens with it) and the workspace indexed."""
    for _ in range(400):
        s = await client.workspace_execute_command_async(types.ExecuteCommandParams(command="slm.status"))
        if s["state"] == "ready" and s["context"]["indexes"] and all(i["ready"] for i in s["context"]["indexes"]):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not ready: {s}")


def open_and_edit(client: LanguageClient, path: Path, language: str = "python") -> str:
    """Open ``path`` in the editor and type a line at its end: it is in the recent-edits ring."""
    uri, text = path.as_uri(), path.read_text()
    client.text_document_did_open(types.DidOpenTextDocumentParams(
        text_document=types.TextDocumentItem(uri=uri, language_id=language, version=1, text=text)))
    end = types.Position(line=text.count("\n"), character=0)
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=2),
        content_changes=[types.TextDocumentContentChangePartial(range=types.Range(start=end, end=end),
                                                                 text="# edited\n")]))
    return uri


async def inline(client: LanguageClient, uri: str, at: types.Position) -> types.InlineCompletionList:
    result = await client.text_document_inline_completion_async(types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=at,
        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked)))
    assert isinstance(result, types.InlineCompletionList)
    return result


async def test_secrets_never_reach_the_team_server(client: LanguageClient, proxy: RecordingProxy, repo: Path):
    await wait_ready(client)
    env_uri = open_and_edit(client, repo / ".env", "dotenv")
    open_and_edit(client, repo / "app" / "local_rates.py")  # gitignored: indexed only as an open buffer
    open_and_edit(client, repo / "internal" / "margins.py")
    open_and_edit(client, repo / "app" / "keys.py")
    (repo / "app" / "notes.py").write_text(f"def note(text: str) -> str:\n    # {PUBLIC_RING}\n    return text\n")
    open_and_edit(client, repo / "app" / "notes.py")
    billing = repo / "app" / "billing.py"
    uri = billing.as_uri()
    client.text_document_did_open(types.DidOpenTextDocumentParams(
        text_document=types.TextDocumentItem(uri=uri, language_id="python", version=1, text=BILLING)))
    await asyncio.sleep(0.5)  # the buffers reach the index once typing pauses (0.3 s)

    result = await inline(client, uri, CURSOR)
    assert result.items and result.items[0].insert_text  # answered (by the team server)
    sent = proxy.sent()
    assert "POST /v1/completions" in sent, sent[:2000]
    # The channels are open: the buffer, a definition of another file and a ring chunk arrived.
    for marker in (PUBLIC_BUFFER, PUBLIC_DEF, PUBLIC_RING):
        assert marker in sent, (marker, sent[-4000:])
    leaked = [where for where, marker in SECRETS.items() if marker in sent]
    assert leaked == [], f"reached the team server: {leaked}"

    # Completing inside the .env itself: answered on this machine, nothing sent.
    before = len(proxy.sent())
    await inline(client, env_uri, types.Position(line=1, character=0))
    await asyncio.sleep(0.3)
    after = proxy.sent()
    assert len(after) == before, after[before:][:2000]
    assert ENV_SECRET not in after


def test_complete_on_the_command_line_never_sends_a_env(proxy: RecordingProxy, repo: Path):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "slm_lsp", "complete", f"{repo / '.env'}:2:3", "--model",
                          str(TINY_MODEL), "--remote", proxy.url, "--route", "remote", "--threads", "1"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert ENV_SECRET not in proxy.sent()
