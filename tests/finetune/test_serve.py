"""Serving a finetuned adapter: the engine's completion changes when an adapter is loaded and
the adapter's ``template.json`` replaces the prompt template; over LSP, ``slm.loadAdapter``
swaps it without a restart. A team server: llama.cpp's ``llama-server`` runs the README's
commands (``--lora``, ``--lora-init-without-apply`` and the per-request ``lora`` field) when a
binary is there (``make llama-server``). The adapter is a random one written by finetune.export
with numpy (no torch needed)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import pytest_lsp
from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pytest_lsp import ClientServerConfig, LanguageClient

from finetune.export import LoraWeight, lora_tensors, write_gguf_adapter
from slm_lsp.config import merge_config
from slm_lsp.engine.fim import FimTemplate
from slm_lsp.engine.service import CompletionEngine, CompletionRequest
from tests.conftest import TEST_TMP, TINY_MODEL, server_command
from tests.remote_servers import free_port

TEXT = "def total(items):\n    result = 0\n    for item in items:\n        result += \n    return result\n"


def random_adapter(directory: Path, seed: int = 0) -> Path:
    """A strong random LoRA on every projection of the tiny model, with a template.json."""
    rng = np.random.default_rng(seed)
    shapes = {"self_attn.q_proj": (64, 64), "self_attn.v_proj": (32, 64), "mlp.down_proj": (64, 128),
              "mlp.up_proj": (128, 64)}
    weights = {f"model.layers.{i}.{name}": LoraWeight(rng.normal(0, 1.0, (4, n_in)).astype(np.float32),
                                                      rng.normal(0, 1.0, (n_out, 4)).astype(np.float32))
               for i in range(2) for name, (n_out, n_in) in shapes.items()}
    directory.mkdir(parents=True, exist_ok=True)
    path = write_gguf_adapter(directory / "adapter.gguf", lora_tensors(weights, arch="llama", n_blocks=2, n_head=4,
                                                                       n_head_kv=2), arch="llama", alpha=8.0)
    FimTemplate("tiny-finetuned", "psm", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>",
                ("<|endoftext|>", "<|fim_pad|>"), "<|repo_name|>", "<|file_sep|>").save(directory / "template.json")
    return path


ADAPTER = random_adapter(Path(tempfile.mkdtemp(prefix="slm-lsp-adapter-", dir=TEST_TMP)))


def test_engine_completion_changes_with_the_adapter_and_its_template():
    cfg = merge_config({"model": {"threads": 1, "n_ctx": 1024},
                        "completion": {"max_tokens": 8, "prefix_tokens": 256, "suffix_tokens": 64}}).config
    engine = CompletionEngine(cfg)
    try:
        engine.load(str(TINY_MODEL)).result(timeout=60)
        req = CompletionRequest("file:///a.py", TEXT, 3, 18, "python")
        before = engine.complete(req).text
        engine.call(lambda runner: runner.set_adapter(str(ADAPTER))).result(timeout=30)
        assert engine.builder is not None and engine.builder.template.name == "tiny-finetuned"
        after = engine.complete(req).text
        assert after and after != before  # the adapter changes the completion (not a cache hit)
        engine.call(lambda runner: runner.set_adapter(None)).result(timeout=30)
        assert engine.builder.template.name == "qwen2.5-coder"
        assert engine.complete(req).text == before
    finally:
        engine.close()


def test_engine_loads_the_configured_adapter():
    cfg = merge_config({"model": {"threads": 1, "n_ctx": 1024, "adapter": str(ADAPTER)}}).config
    engine = CompletionEngine(cfg)
    try:
        engine.load(str(TINY_MODEL)).result(timeout=60)
        assert engine.runner is not None and engine.runner.adapter_path == str(ADAPTER)
        assert engine.builder is not None and engine.builder.template.name == "tiny-finetuned"
    finally:
        engine.close()


URI = "file:///work/total.py"


@pytest_lsp.fixture(config=ClientServerConfig(server_command=server_command("--model", str(TINY_MODEL))))
async def client(lsp_client: LanguageClient):
    await lsp_client.initialize_session(types.InitializeParams(
        capabilities=types.ClientCapabilities(),
        initialization_options={"completion": {"maxTokens": 8, "timeBudgetMs": 5000}},
    ))
    yield
    await lsp_client.shutdown_session()


async def _inline(client: LanguageClient) -> str:
    result = await client.text_document_inline_completion_async(types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=URI), position=types.Position(3, 18),
        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked)))
    assert isinstance(result, types.InlineCompletionList) and result.items
    text = result.items[0].insert_text
    assert isinstance(text, str)
    return text


async def test_load_adapter_command_swaps_without_restart(client: LanguageClient):
    client.text_document_did_open(types.DidOpenTextDocumentParams(
        text_document=types.TextDocumentItem(uri=URI, language_id="python", version=1, text=TEXT)))
    before = await _inline(client)
    reply = await client.workspace_execute_command_async(types.ExecuteCommandParams(
        command="slm.loadAdapter", arguments=[str(ADAPTER)]))
    assert reply == {"adapter": str(ADAPTER)}
    status = await client.workspace_execute_command_async(types.ExecuteCommandParams(command="slm.status"))
    assert status["adapter"] == str(ADAPTER) and status["template"] == "tiny-finetuned"
    assert await _inline(client) != before
    await client.workspace_execute_command_async(types.ExecuteCommandParams(command="slm.loadAdapter",
                                                                            arguments=[]))
    assert await _inline(client) == before
    with pytest.raises(JsonRpcException, match="not found"):
        await client.workspace_execute_command_async(types.ExecuteCommandParams(
            command="slm.loadAdapter", arguments=[str(ADAPTER.parent / "missing.gguf")]))


# -- a team server: llama-server with the adapter ------------------------------------------------
REPO_ROOT = Path(__file__).resolve().parents[2]
FIM_PROMPT = "<|fim_prefix|>def total(items):\n    result = 0\n    for item in items:\n        result += " \
             "<|fim_suffix|>\n    return result\n<|fim_middle|>"


def llama_server_binary() -> Path | None:
    """$SLM_LSP_LLAMA_SERVER, the one ``make llama-server`` builds, or one on PATH."""
    built = REPO_ROOT / ".cache" / "llama-server" / "bin" / "llama-server"
    for candidate in (os.environ.get("SLM_LSP_LLAMA_SERVER"), str(built), shutil.which("llama-server")):
        if candidate and os.access(candidate, os.X_OK):
            return Path(candidate)
    return None


@pytest.fixture
def llama_server(tmp_path: Path) -> Iterator[Callable[..., str]]:
    """Starts ``llama-server -m TINY_MODEL ARGS...`` on a free port; returns its URL."""
    binary = llama_server_binary()
    if binary is None:
        pytest.skip("no llama-server binary: `make llama-server` builds one")
    started: list[subprocess.Popen] = []

    def start(*args: str) -> str:
        port = free_port()
        log = tmp_path / f"llama-server-{port}.log"
        with log.open("wb") as out:
            process = subprocess.Popen([str(binary), "-m", str(TINY_MODEL), "--host", "127.0.0.1", "--port", str(port),
                                        "-t", "1", "-c", "512", "-np", "1", *args],
                                       stdout=out, stderr=subprocess.STDOUT)
        started.append(process)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert process.poll() is None, f"llama-server exited with {process.returncode}: {log.read_text()[-2000:]}"
            try:
                if httpx.get(url + "/health", timeout=1.0, trust_env=False).status_code == 200:
                    return url
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"llama-server was not ready in 60 s: {log.read_text()[-2000:]}")

    yield start
    for process in started:
        process.terminate()
        process.wait(timeout=10)


def infill(url: str, **fields: object) -> str:
    """The greedy completion of FIM_PROMPT (``/completion``, no prompt cache)."""
    reply = httpx.post(url + "/completion", json={"prompt": FIM_PROMPT, "n_predict": 8, "temperature": 0,
                                                  "cache_prompt": False, **fields}, timeout=60, trust_env=False)
    reply.raise_for_status()
    return str(reply.json()["content"])


def test_llama_server_serves_the_adapter_and_a_request_picks_it_with_the_lora_field(llama_server, tmp_path):
    other = random_adapter(tmp_path / "other", seed=1)
    base = infill(llama_server())
    # README: one repository's adapter, applied to every request.
    applied = infill(llama_server("--lora", str(ADAPTER)))
    assert applied != base
    # README: several adapters, switched off server-wide (--lora-init-without-apply alone does
    # not: llama.cpp issue 28674), and a request names the one it wants.
    url = llama_server("--lora", str(ADAPTER), "--lora", str(other), "--lora-init-without-apply")
    off = [{"id": 0, "scale": 0.0}, {"id": 1, "scale": 0.0}]
    httpx.post(url + "/lora-adapters", json=off, timeout=10, trust_env=False).raise_for_status()
    listed = httpx.get(url + "/lora-adapters", timeout=10, trust_env=False).json()
    assert [(a["id"], a["path"], a["scale"]) for a in listed] == [(0, str(ADAPTER), 0.0), (1, str(other), 0.0)]
    assert infill(url) == base  # no lora field: the base model
    assert infill(url, lora=[{"id": 0, "scale": 1.0}]) == applied
    picked_other = infill(url, lora=[{"id": 1, "scale": 1.0}])
    assert picked_other not in (base, applied)
    assert infill(url) == base  # a request's choice does not stay behind


def _engine_answer(**remote: object) -> tuple[str, str]:
    """slm-lsp's engine completing TEXT (the local model, or through ``remote``): (text, backend)."""
    settings: dict = {"model": {"threads": 1, "n_ctx": 1024},
                      "completion": {"max_tokens": 8, "prefix_tokens": 256, "suffix_tokens": 64,
                                     "time_budget_ms": 60000}}
    if remote:
        settings["remote"] = {"route": "remote", "kind": "llama-server", "timeout_ms": 60000, "fallback": False,
                              **remote}
    result = merge_config(settings)
    assert result.errors == []
    engine = CompletionEngine(result.config, probe_files=False)
    try:
        engine.load(str(TINY_MODEL)).result(timeout=60)
        answer = engine.complete(CompletionRequest("file:///a.py", TEXT, 3, 18, "python"), timeout=120)
        return answer.text, answer.backend
    finally:
        engine.close()


def test_remote_lora_picks_the_adapter_on_a_shared_llama_server(llama_server, tmp_path):
    other = random_adapter(tmp_path / "other", seed=1)
    # One slot per adapter: llama-server reuses a slot's prompt cache across requests with another
    # adapter (llama.cpp#26207), as each user pinned to a slot of their own (remote.slot -1) avoids.
    url = llama_server("--lora", str(ADAPTER), "--lora", str(other), "--lora-init-without-apply", "-np", "3",
                       "-c", "1536")
    off = [{"id": 0, "scale": 0.0}, {"id": 1, "scale": 0.0}]
    httpx.post(url + "/lora-adapters", json=off, timeout=10, trust_env=False).raise_for_status()
    base, _ = _engine_answer()
    with_adapter = _engine_answer(url=url, lora=0, slot=0)
    # The same prompt, the same weights: the server's answer is the local model's with the adapter.
    local_adapter = CompletionEngine(merge_config({"model": {"threads": 1, "n_ctx": 1024, "adapter": str(ADAPTER)},
                                                   "completion": {"max_tokens": 8, "prefix_tokens": 256,
                                                                  "suffix_tokens": 64}}).config, probe_files=False)
    try:
        local_adapter.load(str(TINY_MODEL)).result(timeout=60)
        expected = local_adapter.complete(CompletionRequest("file:///a.py", TEXT, 3, 18, "python"), timeout=120).text
    finally:
        local_adapter.close()
    # The tiny model writes random bytes: the server turns a byte that is not UTF-8 into U+FFFD,
    # the local runner leaves it out.
    assert (with_adapter[0].replace("\ufffd", ""), with_adapter[1]) == (expected, "remote") and expected != base
    plain, backend = _engine_answer(url=url, slot=1)
    assert (plain.replace("\ufffd", ""), backend) == (base, "remote")  # no lora field: the base model
    other_text, backend = _engine_answer(url=url, lora=1, slot=2)
    assert backend == "remote" and other_text not in (base, expected)
