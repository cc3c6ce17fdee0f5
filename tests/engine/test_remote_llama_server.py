"""The ``llama-server`` kind against llama.cpp's own llama-server (built by ``make llama-server``
from the llama.cpp inside the llama-cpp-python sdist; skipped without it), with the tiny model:
streaming from ``/completion``, the prompt cache reused across keystrokes on this user's slot,
a cancelled stream that the server stops, and the engine's answer equal to the local one."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from slm_lsp.config import RemoteConfig, merge_config
from slm_lsp.engine.remote import RemoteBackend, user_slot
from slm_lsp.engine.service import CompletionEngine, CompletionRequest
from tests.conftest import TEST_TMP, TINY_MODEL
from tests.remote_servers import LlamaServer, cancel_mid_stream, llama_server_binary

PROMPT = "<|fim_prefix|>def area(r):\n    return <|fim_suffix|>\n<|fim_middle|>"
STOP = ["<|endoftext|>"]


@pytest.fixture(scope="module")
def llama_server() -> Iterator[LlamaServer]:
    binary = llama_server_binary()
    if binary is None:
        pytest.skip("no llama-server binary (make llama-server, or set SLM_LSP_LLAMA_SERVER)")
    server = LlamaServer(binary, TINY_MODEL, TEST_TMP, slots=2)
    try:
        yield server
    finally:
        server.stop()


def backend(url: str, slot: int = -1) -> RemoteBackend:
    return RemoteBackend(RemoteConfig(route="remote", url=url, kind="llama-server", slot=slot, timeout_ms=30000))


async def test_streams_and_reuses_the_prompt_cache_on_this_users_slot(llama_server: LlamaServer):
    remote = backend(llama_server.url)
    seen: list[str] = []

    def stop_at(text: str) -> int | None:
        seen.append(text)
        return None

    first = await remote.stream(PROMPT, max_tokens=6, stop=STOP, stop_at=stop_at)
    assert first.n_generated == 6 and len(seen) == 6 and first.stop_reason == "length"
    # A keystroke later: the same prompt head with one more character.
    typed = PROMPT.replace("return ", "return r")
    second = await remote.stream(typed, max_tokens=6, stop=STOP)
    # A stream that shaping closes at its first token still has the server's counts.
    third = await remote.stream(PROMPT.replace("return ", "return r "), max_tokens=50, stop=STOP,
                                stop_at=lambda text: 0)
    assert third.stop_reason == "stop" and third.n_generated == 1 and third.n_reused > 0
    await remote.aclose()
    prompt_tokens = second.n_evaluated + second.n_reused
    assert second.n_reused >= prompt_tokens - 8 and second.n_evaluated <= 8, (second.n_evaluated, second.n_reused)
    mine = user_slot(2)
    busy = {s["id"] for s in llama_server.slots() if s.get("id_task") is not None}
    assert busy == {mine}  # every request of this user went to its slot


async def test_a_fixed_slot_is_used(llama_server: LlamaServer):
    other = 1 - user_slot(2)
    tasks_before = {s["id"]: s.get("id_task") for s in llama_server.slots()}
    remote = backend(llama_server.url, slot=other)
    await remote.stream(PROMPT, max_tokens=2, stop=STOP)
    await remote.aclose()
    tasks_after = {s["id"]: s.get("id_task") for s in llama_server.slots()}
    assert tasks_after[other] is not None and tasks_after[other] != tasks_before[other]
    assert tasks_after[1 - other] == tasks_before[1 - other]  # the other slot was left alone


async def test_the_server_stops_a_cancelled_stream(llama_server: LlamaServer):
    remote = backend(llama_server.url)
    cancels = llama_server.log().count("cancel task")
    assert await cancel_mid_stream(remote, PROMPT, STOP, max_tokens=3000) < 3000
    await remote.aclose()
    assert llama_server.wait_for("cancel task", cancels + 1)
    # The slot stopped long before the 3000 tokens it was asked for.
    stopped = [int(n) for n in re.findall(r"stop processing: n_tokens = (\d+)", llama_server.log())]
    assert stopped and stopped[-1] < 3000


def test_the_engine_gets_the_local_answer_from_llama_server(llama_server: LlamaServer):
    source = "import math\n\n\ndef circle_area(radius):\n    return \n\n\ndef main():\n    print(circle_area(2.0))\n"
    answers = {}
    for route in ("local", "remote"):
        config = merge_config({"model": {"threads": 1}, "completion": {"maxTokens": 8},
                               "remote": {"route": route, "url": llama_server.url, "kind": "llama-server",
                                          "timeoutMs": 30000}}).config
        engine = CompletionEngine(config, probe_files=False)
        try:
            engine.load(str(TINY_MODEL)).result(60)
            result = engine.complete(CompletionRequest("file:///demo.py", source, 4, 11, "python"), timeout=60)
        finally:
            engine.close()
        assert result.backend == route
        answers[route] = result.text
    assert answers["remote"] == answers["local"] and answers["local"].strip()


async def test_the_openai_kind_talks_to_llama_servers_v1_endpoint(llama_server: LlamaServer):
    remote = RemoteBackend(RemoteConfig(route="remote", url=llama_server.url + "/v1", kind="openai",
                                        timeout_ms=30000))
    seen: list[str] = []

    def stop_at(text: str) -> int | None:
        seen.append(text)
        return None

    gen = await remote.stream(PROMPT, max_tokens=5, stop=STOP, stop_at=stop_at)
    again = await remote.stream(PROMPT, max_tokens=5, stop=STOP)
    await remote.aclose()
    assert gen.n_generated == 5 and len(seen) == 5 and gen.stop_reason == "length"
    assert again.text == gen.text  # greedy
    # The stream ran to its end: llama-server's last chunk has its timings (the prompt cache).
    assert again.n_reused > 0 and again.n_evaluated >= 0
