"""Shared fixtures: the network is blocked for the whole run (this process and every Python
subprocess), the tiny generated GGUF models, and the real model from SLM_LSP_TEST_MODEL."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

TESTS = Path(__file__).parent
NETBLOCK = TESTS / "netblock"
sys.path.insert(0, str(NETBLOCK))
import sitecustomize  # noqa: E402,F401  (blocks the network in this process)

from tests.tiny_model import build_tiny_gguf  # noqa: E402

if TYPE_CHECKING:
    from slm_lsp.engine.model import LlamaRunner
    from slm_lsp.engine.service import CompletionEngine

_TMP = Path(tempfile.mkdtemp(prefix="slm-lsp-tests-"))
TEST_TMP = _TMP
"""What the tests write outside pytest's ``tmp_path`` (models, caches, the e2e workspaces made at
import time) lives under this folder; it is removed when the session ends (kept with
SLM_LSP_KEEP_TEST_TMP=1, to look at the servers' logs)."""
TINY_MODEL = build_tiny_gguf(_TMP / "tiny-qwen-coder.gguf")
TINY_MODEL_NO_FIM_METADATA = build_tiny_gguf(_TMP / "tiny-no-fim-metadata.gguf", fim_metadata=False)
CORRUPT_MODEL = _TMP / "corrupt.gguf"
CORRUPT_MODEL.write_bytes(b"GGUF" + os.urandom(4096))

# Subprocesses (the server, Neovim's server) inherit these.
os.environ["PYTHONPATH"] = os.pathsep.join([str(NETBLOCK), str(TESTS.parent), os.environ.get("PYTHONPATH", "")])
os.environ["SLM_LSP_CACHE"] = str(_TMP / "cache")  # never the user's cache
os.environ["HF_HOME"] = os.environ["HF_HUB_CACHE"] = str(_TMP / "huggingface")  # nor the user's Hugging Face cache
for _name in ("HF_ENDPOINT", "HF_HUB_OFFLINE", "HF_TOKEN", "OLLAMA_MODELS"):
    os.environ.pop(_name, None)
os.environ.pop("SLM_LSP_MODEL", None)
os.environ["SLM_LSP_TINY_MODEL"] = str(TINY_MODEL)

REAL_MODEL = os.environ.get("SLM_LSP_TEST_MODEL", "")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not os.environ.get("SLM_LSP_KEEP_TEST_TMP"):
        shutil.rmtree(_TMP, ignore_errors=True)


def server_command(*args: str) -> list[str]:
    """The command an editor runs, with one CPU thread so parallel work stays predictable."""
    return [sys.executable, "-m", "slm_lsp", "serve", "--threads", "1", *args]


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    return TINY_MODEL


@pytest.fixture(scope="session")
def real_model() -> Path:
    if not REAL_MODEL:
        pytest.skip("SLM_LSP_TEST_MODEL is not set (see README: Tests)")
    path = Path(REAL_MODEL)
    assert path.is_file(), f"SLM_LSP_TEST_MODEL points at a missing file: {path}"
    return path


TOTAL_TEXT = "def total(items):\n    result = 0\n    for item in items:\n        result += \n    return result\n"
"""A small document with a hole at line 3, column 18 (``result += |``): the engine tests' usual request."""

PREFIX = "import os\n\n\ndef load(path):\n    with open(path) as fh:\n        data = fh.read()\n    return "
SUFFIX = "\n\n\ndef save(path, data):\n    with open(path, 'w') as fh:\n        fh.write(data)\n" * 3
"""A prefix and a long suffix for the runner's KV reuse tests."""


def tiny_engine() -> Iterator[CompletionEngine]:
    """A CompletionEngine on the tiny model with small budgets (one thread); for a fixture to yield from."""
    from slm_lsp.config import merge_config
    from slm_lsp.engine.service import CompletionEngine

    cfg = merge_config({"model": {"threads": 1, "n_ctx": 1024},
                        "completion": {"max_tokens": 10, "prefix_tokens": 256, "suffix_tokens": 64}}).config
    engine = CompletionEngine(cfg)
    engine.load(str(TINY_MODEL)).result(timeout=60)
    yield engine
    engine.close()


def tiny_runner() -> Iterator[LlamaRunner]:
    """A LlamaRunner on the tiny model (one thread, 2048 tokens); for a fixture to yield from."""
    from slm_lsp.engine.model import LlamaRunner

    runner = LlamaRunner(str(TINY_MODEL), threads=1, n_ctx=2048)
    yield runner
    runner.close()
