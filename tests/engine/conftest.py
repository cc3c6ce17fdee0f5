"""A real llama-cpp-python server for the remote backends' tests: one per session (killed at the
end), with the tiny model and an API key that the tests send from the environment."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import TEST_TMP, TINY_MODEL
from tests.remote_servers import LlamaCppServer, SilentServer

API_KEY = "tiny-team-key"
KEY_ENV = "SLM_LSP_TEST_REMOTE_KEY"


@pytest.fixture(scope="session")
def llama_cpp_server() -> Iterator[LlamaCppServer]:
    server = LlamaCppServer(TINY_MODEL, TEST_TMP, api_key=API_KEY)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def api_key(monkeypatch: pytest.MonkeyPatch) -> str:
    """The key, in the environment variable the remote config names."""
    monkeypatch.setenv(KEY_ENV, API_KEY)
    return KEY_ENV


@pytest.fixture
def silent_server() -> Iterator[SilentServer]:
    server = SilentServer()
    try:
        yield server
    finally:
        server.close()
