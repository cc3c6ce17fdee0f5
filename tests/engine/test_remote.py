"""engine.remote: the HTTP backends against a real llama-cpp-python server (the tiny model) over
real sockets: streaming, early stops and cancellation (the server sees the disconnect),
connection reuse, the API key from the environment, a server that never answers and one that
dies mid-answer. The tiny model never ends an answer by itself: it runs to ``max_tokens``."""

from __future__ import annotations

import asyncio
import time

import pytest

from slm_lsp.config import RemoteConfig
from slm_lsp.context.privacy import is_loopback
from slm_lsp.engine.remote import (
    LlamaServerProtocol,
    OllamaProtocol,
    OpenAIProtocol,
    RemoteBackend,
    RemoteError,
    user_slot,
)
from tests.conftest import TEST_TMP, TINY_MODEL
from tests.remote_servers import LlamaCppServer, SilentServer, cancel_mid_stream

PROMPT = "<|fim_prefix|>def area(r):\n    return <|fim_suffix|>\n<|fim_middle|>"
STOP = ["<|endoftext|>", "<|fim_pad|>"]


def backend(url: str, key_env: str = "", **overrides) -> RemoteBackend:
    overrides.setdefault("timeout_ms", 30000)  # a busy test machine must not look like a dead server
    return RemoteBackend(RemoteConfig(route="remote", url=url, kind="openai", api_key_env=key_env, **overrides))


async def test_tokens_stream_one_by_one(llama_cpp_server: LlamaCppServer, api_key: str):
    remote = backend(llama_cpp_server.url, api_key)
    seen: list[str] = []

    def stop_at(text: str) -> int | None:
        seen.append(text)
        return None

    gen = await remote.stream(PROMPT, max_tokens=12, stop=STOP, stop_at=stop_at)
    await remote.aclose()
    assert gen.backend == "remote"
    assert gen.n_generated == 12 and gen.stop_reason == "length"
    assert len(seen) == 12  # shaping saw the text after every token
    assert all(len(a) < len(b) and b.startswith(a) for a, b in zip(seen, seen[1:]))
    assert gen.text == seen[-1] and gen.text.strip()


async def test_an_early_stop_closes_the_stream_and_the_server_sees_it(llama_cpp_server: LlamaCppServer,
                                                                     api_key: str):
    remote = backend(llama_cpp_server.url, api_key)
    before = llama_cpp_server.log().count("Disconnected from client")
    gen = await remote.stream(PROMPT, max_tokens=1000, stop=STOP, stop_at=lambda t: 0 if len(t) > 8 else None)
    await remote.aclose()
    assert gen.stop_reason == "stop" and gen.n_generated < 10 and gen.text == ""
    # llama-cpp-python's server notices the closed connection at its next token and stops.
    assert llama_cpp_server.wait_for("Disconnected from client", before + 1)


async def test_cancelling_mid_stream_disconnects(llama_cpp_server: LlamaCppServer, api_key: str):
    remote = backend(llama_cpp_server.url, api_key)
    before = llama_cpp_server.log().count("Disconnected from client")
    assert await cancel_mid_stream(remote, PROMPT, STOP, max_tokens=1000) < 1000
    assert llama_cpp_server.wait_for("Disconnected from client", before + 1)
    await remote.aclose()


async def test_the_connection_is_reused_across_requests(llama_cpp_server: LlamaCppServer, api_key: str):
    remote = backend(llama_cpp_server.url, api_key)
    before = len(llama_cpp_server.requests())
    for _ in range(3):
        gen = await remote.stream(PROMPT, max_tokens=4, stop=STOP)
        assert gen.n_generated == 4
    await remote.aclose()
    assert llama_cpp_server.wait_for(r'POST /v1/completions HTTP/1\.1" \d+', before + 3)
    clients = [address for address, _status in llama_cpp_server.requests()[before:]]
    assert len(clients) == 3 and len(set(clients)) == 1, clients  # one TCP connection (one client port)


async def test_the_api_key_comes_from_the_environment(llama_cpp_server: LlamaCppServer,
                                                      monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TEAM_KEY_UNDER_TEST", "not-the-key")
    wrong = backend(llama_cpp_server.url, "TEAM_KEY_UNDER_TEST")
    with pytest.raises(RemoteError, match="HTTP 401.*TEAM_KEY_UNDER_TEST"):
        await wrong.stream(PROMPT, max_tokens=2, stop=STOP)
    await wrong.aclose()
    monkeypatch.delenv("TEAM_KEY_UNDER_TEST")
    missing = backend(llama_cpp_server.url, "TEAM_KEY_UNDER_TEST")
    with pytest.raises(RemoteError, match="HTTP 401"):
        await missing.stream(PROMPT, max_tokens=2, stop=STOP)
    await missing.aclose()
    from tests.engine.conftest import API_KEY
    monkeypatch.setenv("TEAM_KEY_UNDER_TEST", API_KEY)
    right = backend(llama_cpp_server.url, "TEAM_KEY_UNDER_TEST")
    assert (await right.stream(PROMPT, max_tokens=2, stop=STOP)).n_generated == 2
    await right.aclose()


async def test_a_server_that_never_answers_times_out(silent_server: SilentServer):
    remote = backend(silent_server.url, timeout_ms=300)
    t0 = time.perf_counter()
    with pytest.raises(RemoteError, match="did not answer within 300 ms"):
        await remote.stream(PROMPT, max_tokens=4, stop=STOP)
    waited = time.perf_counter() - t0
    await remote.aclose()
    assert waited < 5  # the read timeout, not a hang
    assert '"prompt"' in silent_server.body()  # the request did arrive


async def test_nothing_listening_fails_at_once():
    from tests.remote_servers import free_port

    remote = backend(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(RemoteError, match="ConnectError"):
        await remote.stream(PROMPT, max_tokens=4, stop=STOP)
    await remote.aclose()


async def test_a_server_that_dies_mid_answer_is_an_error():
    server = LlamaCppServer(TINY_MODEL, TEST_TMP, name="dies")
    remote = backend(server.url)
    tokens: list[str] = []

    def kill_after_three(text: str) -> int | None:
        tokens.append(text)
        if len(tokens) == 3:
            server.kill()
        return None

    try:
        with pytest.raises(RemoteError):
            await remote.stream(PROMPT, max_tokens=1000, stop=STOP, stop_at=kill_after_three)
    finally:
        server.stop()
        await remote.aclose()
    assert 3 <= len(tokens) < 1000


async def test_stop_strings_end_the_answer_when_the_server_writes_them_out(llama_cpp_server: LlamaCppServer,
                                                                          api_key: str):
    remote = backend(llama_cpp_server.url, api_key)
    first = await remote.stream(PROMPT, max_tokens=6, stop=STOP)
    word = first.text.split()[1]  # a word of the answer, taken for a stop string
    cut = await remote.stream(PROMPT, max_tokens=6, stop=[word])
    await remote.aclose()
    assert cut.text == first.text[:first.text.index(word)]
    assert cut.stop_reason == "eog"


def test_openai_base_urls_with_v1_are_accepted():
    remote = backend("http://127.0.0.1:9/v1")
    assert remote.endpoint == "http://127.0.0.1:9/v1/completions"
    asyncio.run(remote.aclose())


def test_local_hosts():
    assert is_loopback("localhost") and is_loopback("127.0.0.1") and is_loopback("[::1]")
    assert not is_loopback("gpu-box") and not is_loopback("10.0.0.7")


def test_a_user_keeps_one_slot():
    assert user_slot(4) == user_slot(4) and 0 <= user_slot(4) < 4
    assert user_slot(1) == 0


def test_request_bodies_ask_for_greedy_streams():
    llama = LlamaServerProtocol().body("P", 7, "", ["<|x|>"], 2)
    assert llama["cache_prompt"] is True and llama["stream"] is True and llama["id_slot"] == 2
    assert llama["n_predict"] == 7 and llama["temperature"] == 0.0 and llama["timings_per_token"] is True
    openai = OpenAIProtocol().body("P", 7, "m", [], None)
    assert openai["max_tokens"] == 7 and openai["model"] == "m" and openai["stream"] is True
    assert "model" not in OpenAIProtocol().body("P", 7, "", [], None)  # the server picks
    ollama = OllamaProtocol().body("P", 7, "qwen2.5-coder:1.5b", [], None)
    assert ollama["raw"] is True and ollama["options"]["num_predict"] == 7


def test_final_chunks_report_the_prompt_cache():
    # llama-server's last /completion event (README: timings, tokens_evaluated).
    last = LlamaServerProtocol().chunk({"content": "", "stop": True, "stop_type": "eos", "tokens_evaluated": 120,
                                        "timings": {"prompt_n": 7, "cache_n": 113}})
    assert (last.done, last.finish, last.evaluated, last.cached, last.prompt_tokens) == (True, "eog", 7, 113, 120)
    # With timings_per_token the first token carries them: a stream closed early still reports its cache.
    first = LlamaServerProtocol().chunk({"content": " x", "stop": False, "tokens_evaluated": 120,
                                         "timings": {"prompt_n": 7, "cache_n": 113}})
    assert (first.done, first.text, first.evaluated, first.cached) == (False, " x", 7, 113)
    # vLLM's usage chunk with prompt token details.
    usage = OpenAIProtocol().chunk({"choices": [], "usage": {"prompt_tokens": 50,
                                                            "prompt_tokens_details": {"cached_tokens": 48}}})
    assert (usage.evaluated, usage.cached) == (2, 48)
    done = OllamaProtocol().chunk({"response": "", "done": True, "done_reason": "length", "prompt_eval_count": 9})
    assert (done.done, done.finish, done.evaluated) == (True, "length", 9)
