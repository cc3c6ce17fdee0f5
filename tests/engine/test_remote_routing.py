"""The engine's routes against a real llama-cpp-python server with the tiny model: ``remote``
answers from the server (the same text the local model gives: the same prompt, sent as text),
``auto`` escalates a scripted low-confidence answer, a failing server is replaced by the local
model at once, cancelling closes the stream, private requests and context never leave.

The tiny model never ends an answer by itself: a single-line request runs to ``max_tokens``."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import pytest

from slm_lsp.config import merge_config
from slm_lsp.engine.fim import SPM, FimTemplate
from slm_lsp.engine.model import LlamaVocab, ModelLoadError
from slm_lsp.engine.prompt import ContextFile
from slm_lsp.engine.router import confidence, stop_strings
from slm_lsp.engine.service import CompletionEngine, CompletionRequest
from tests.conftest import TEST_TMP, TINY_MODEL
from tests.remote_servers import LlamaCppServer, SilentServer

SOURCE = "import math\n\n\ndef circle_area(radius):\n    return \n\n\ndef main():\n    print(circle_area(2.0))\n"
LINE, COL = 4, 11


def make_engine(url: str = "", route: str = "local", key_env: str = "", max_tokens: int = 8,
                **remote: object) -> CompletionEngine:
    settings = {"model": {"threads": 1},
                "completion": {"maxTokens": max_tokens, "timeBudgetMs": 60000},
                # A long first-token timeout: a machine busy with other tests must not look like a dead server.
                "remote": {"url": url, "route": route, "kind": "openai", "apiKeyEnv": key_env, "timeoutMs": 30000,
                           **remote}}
    result = merge_config(settings)
    assert result.errors == []
    engine = CompletionEngine(result.config, probe_files=False)
    engine.load(str(TINY_MODEL)).result(60)
    return engine


def request(key: str = "file:///demo.py", **fields: object) -> CompletionRequest:
    return CompletionRequest(key, SOURCE, LINE, COL, "python", **fields)  # type: ignore[arg-type]


@pytest.fixture
def local_answer() -> Iterator[str]:
    engine = make_engine()
    try:
        result = engine.complete(request(), timeout=60)
        assert result.backend == "local" and result.text
        yield result.text
    finally:
        engine.close()


def test_route_remote_answers_from_the_server(llama_cpp_server: LlamaCppServer, api_key: str, local_answer: str):
    engine = make_engine(llama_cpp_server.url, "remote", api_key)
    before = len(llama_cpp_server.requests())
    try:
        result = engine.complete(request(), timeout=60)
        status = engine.status()
    finally:
        engine.close()
    assert result.backend == "remote" and result.route == "route remote"
    assert result.text == local_answer  # same model, same prompt: built here, sent as text, greedy
    assert len(llama_cpp_server.requests()) == before + 1
    assert status.backend == "remote" and status.route == "remote"
    assert status.remote is not None and llama_cpp_server.url in status.remote
    assert dict(status.answered) == {"remote": 1}


def test_route_remote_without_fallback_needs_only_the_vocabulary(llama_cpp_server: LlamaCppServer, api_key: str,
                                                                 local_answer: str):
    engine = make_engine(llama_cpp_server.url, "remote", api_key, fallback=False)
    try:
        assert engine.runner is None and engine.status().state == "ready"
        result = engine.complete(request(), timeout=60)
    finally:
        engine.close()
    assert result.backend == "remote" and result.text == local_answer


def test_the_type_through_cache_stays_local(llama_cpp_server: LlamaCppServer, api_key: str):
    engine = make_engine(llama_cpp_server.url, "remote", api_key)
    try:
        first = engine.complete(request(), timeout=60)
        before = len(llama_cpp_server.requests())
        typed = first.text[:2]
        lines = SOURCE.split("\n")
        lines[LINE] = lines[LINE][:COL] + typed + lines[LINE][COL:]
        again = engine.complete(CompletionRequest("file:///demo.py", "\n".join(lines), LINE, COL + 2, "python"),
                                timeout=60)
    finally:
        engine.close()
    assert again.backend == "cache" and again.text == first.text[2:]
    assert len(llama_cpp_server.requests()) == before  # nothing sent


def test_auto_escalates_a_scripted_low_confidence_answer(llama_cpp_server: LlamaCppServer, api_key: str):
    probe = make_engine()
    try:
        local = probe.complete(request(), timeout=60)
    finally:
        probe.close()
    assert local.generation is not None
    mean, _lowest = confidence(local.generation.logprobs)
    assert len(local.generation.logprobs) == 8 and mean < 0

    # A threshold just above the answer's confidence: it goes to the server.
    unsure = make_engine(llama_cpp_server.url, "auto", api_key, autoMeanLogprob=mean + 0.01)
    before = len(llama_cpp_server.requests())
    try:
        escalated = unsure.complete(request(), timeout=60)
    finally:
        unsure.close()
    assert escalated.backend == "remote" and escalated.route.startswith("unsure (mean log-probability")
    assert len(llama_cpp_server.requests()) == before + 1

    # Just below it: the local answer stands and nothing is sent.
    sure = make_engine(llama_cpp_server.url, "auto", api_key, autoMeanLogprob=mean - 0.01)
    try:
        kept = sure.complete(request(), timeout=60)
        status = sure.status()
    finally:
        sure.close()
    assert kept.backend == "local" and kept.route == "confident" and kept.text == local.text
    assert len(llama_cpp_server.requests()) == before + 1
    assert status.backend == "local" and status.route == "auto"


def test_auto_sends_blocks_to_the_server(llama_cpp_server: LlamaCppServer, api_key: str):
    engine = make_engine(llama_cpp_server.url, "auto", api_key, autoMeanLogprob=-100)
    text = "def circle_area(radius):\n    \n"  # the empty body of a new function: a block
    try:
        block = engine.complete(CompletionRequest("file:///b.py", text, 1, 4, "python"), timeout=60)
        line = engine.complete(request(), timeout=60)
    finally:
        engine.close()
    assert block.backend == "remote" and block.route == "a block"
    assert line.backend == "local"


def test_auto_sends_requests_whose_context_did_not_fit(llama_cpp_server: LlamaCppServer, api_key: str):
    engine = make_engine(llama_cpp_server.url, "auto", api_key, autoMeanLogprob=-100, autoBlocks=False)
    pieces = [ContextFile(f"lib/m{i}.py", f"def helper_{i}(x):\n    return x * {i}\n" * 20) for i in range(6)]
    try:
        cut = engine.complete(request(context=pieces, context_tokens=64), timeout=60)
        fits = engine.complete(request("file:///other.py", context=pieces[:1], context_tokens=100000), timeout=60)
    finally:
        engine.close()
    assert cut.backend == "remote" and cut.route.startswith("repo context did not fit")
    assert fits.backend == "local"


def test_a_server_that_never_answers_is_replaced_by_the_local_model(silent_server: SilentServer,
                                                                    local_answer: str):
    engine = make_engine(silent_server.url, "remote", timeoutMs=300)
    try:
        t0 = time.perf_counter()
        result = engine.complete(request(), timeout=60)
        waited = time.perf_counter() - t0
        connections = silent_server.connections
        # The server failed: the next requests stay local without waiting for it.
        again = engine.complete(request("file:///two.py"), timeout=60)
        status = engine.status()
    finally:
        engine.close()
    assert result.backend == "local" and result.text == local_answer
    assert result.route.startswith("remote failed: the server did not answer within 300 ms")
    assert waited < 10
    assert again.backend == "local" and again.route == "the server failed recently"
    assert silent_server.connections == connections
    assert status.backend == "local" and status.remote_retry_s > 0


def test_a_server_that_dies_mid_answer_is_replaced_by_the_local_model(local_answer: str):
    server = LlamaCppServer(TINY_MODEL, TEST_TMP, name="dies-engine")
    engine = make_engine(server.url, "remote", max_tokens=2000)
    try:
        handle = engine.submit(request())
        # The stream has started once uvicorn logs the request (at the response's first bytes).
        assert server.wait_for(r'POST /v1/completions HTTP/1\.1" 200', timeout=30)
        server.kill()
        result = handle.future.result(60)
    finally:
        engine.close()
        server.stop()
    assert result.backend == "local" and result.route.startswith("remote failed")
    assert result.generation is not None and result.generation.n_generated == 2000
    assert result.text.startswith(local_answer)


def test_cancelling_a_remote_request_closes_its_stream(llama_cpp_server: LlamaCppServer, api_key: str):
    engine = make_engine(llama_cpp_server.url, "remote", api_key, max_tokens=2000)
    disconnects = llama_cpp_server.log().count("Disconnected from client")
    answered = llama_cpp_server.log().count('POST /v1/completions HTTP/1.1" 200')
    try:
        handle = engine.submit(request())
        assert llama_cpp_server.wait_for(r'POST /v1/completions HTTP/1\.1" 200', answered + 1, timeout=30)
        handle.cancel()
        result = handle.future.result(30)
    finally:
        engine.close()
    assert result.reason == "cancelled" and result.text == ""
    assert llama_cpp_server.wait_for("Disconnected from client", disconnects + 1)


def test_a_newer_request_for_the_document_supersedes_the_remote_one(llama_cpp_server: LlamaCppServer,
                                                                     api_key: str):
    engine = make_engine(llama_cpp_server.url, "remote", api_key, max_tokens=2000)
    answered = llama_cpp_server.log().count('POST /v1/completions HTTP/1.1" 200')
    try:
        first = engine.submit(request())
        assert llama_cpp_server.wait_for(r'POST /v1/completions HTTP/1\.1" 200', answered + 1, timeout=30)
        engine.config.completion.max_tokens = 4  # the newer request is a short one
        second = engine.complete(request(), timeout=60)
        old = first.future.result(30)
    finally:
        engine.close()
    assert old.reason == "cancelled"
    assert second.backend == "remote" and second.generation is not None and second.generation.n_generated == 4


def test_private_requests_never_leave(silent_server: SilentServer, local_answer: str):
    engine = make_engine(silent_server.url, "remote", timeoutMs=300)
    try:
        result = engine.complete(request(private=True), timeout=60)
    finally:
        engine.close()
    assert result.backend == "local" and result.route.startswith("private")
    assert result.text == local_answer
    assert silent_server.connections == 0 and silent_server.body() == ""


def test_private_context_never_goes_into_a_remote_prompt(silent_server: SilentServer):
    engine = make_engine(silent_server.url, "remote", timeoutMs=300)
    secret = ContextFile(".env", "API_TOKEN=hunter2-very-secret\n", private=True)  # type: ignore[call-arg]
    shared = ContextFile("lib/geometry.py", "def square_area(side):\n    return side * side\n")
    try:
        result = engine.complete(request(context=[secret, shared], context_tokens=1024), timeout=60)
    finally:
        engine.close()
    body = silent_server.body()
    assert "square_area" in body  # the request with its context arrived
    assert "hunter2" not in body and ".env" not in body
    assert result.backend == "local"  # the silent server timed out: the local model answered


def test_remote_prompts_are_the_local_prompts_as_text():
    vocab = LlamaVocab(str(TINY_MODEL))
    try:
        tokens = [vocab.special("<|fim_prefix|>")] + vocab.tokenize("def f(x):\n    return ") + \
                 [vocab.special("<|fim_middle|>")]
        text = vocab.render(tokens)
        assert text == "<|fim_prefix|>def f(x):\n    return <|fim_middle|>"
        assert "<|endoftext|>" in stop_strings(vocab) and "<|fim_middle|>" in stop_strings(vocab)
    finally:
        vocab.close()


def test_remote_prompts_use_the_servers_template(silent_server: SilentServer, tmp_path):
    # The server's model was finetuned with its own template (template.json beside adapter.gguf):
    # here suffix-first (SPM), against the tiny model's own prefix-first (PSM).
    spm = FimTemplate("server-spm", SPM, "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>",
                      ("<|endoftext|>",), "<|repo_name|>", "<|file_sep|>")
    template = tmp_path / "template.json"
    spm.save(template)
    engine = make_engine(silent_server.url, "remote", timeoutMs=300, template=str(template))
    try:
        result = engine.complete(request(), timeout=60)
    finally:
        engine.close()
    body = json.loads(silent_server.body().split("\r\n\r\n", 1)[1])
    assert body["prompt"].index("<|fim_suffix|>") < body["prompt"].index("<|fim_prefix|>")
    assert result.backend == "local"  # the silent server timed out


def test_a_template_the_vocabulary_cannot_spell_is_refused(tmp_path):
    bad = FimTemplate("bad", "psm", "<PRE>", "<SUF>", "<MID>", ("<EOT>",))
    template = tmp_path / "template.json"
    bad.save(template)
    with pytest.raises(ModelLoadError, match="no single token for <PRE>"):
        LlamaVocab(str(TINY_MODEL), str(template))


def test_plain_http_to_another_machine_is_warned_about_once(caplog: pytest.LogCaptureFixture):
    from slm_lsp.engine.router import warn_plain_http

    with caplog.at_level("WARNING", logger="slm_lsp.engine.router"):
        warn_plain_http("http://gpu-box.internal:8080")
        warn_plain_http("http://gpu-box.internal:8080")
        warn_plain_http("http://127.0.0.1:8080")
        warn_plain_http("https://gpu-box.internal:8443")
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "unencrypted" in warnings[0]


def test_nothing_is_sent_with_route_local(silent_server: SilentServer):
    engine = make_engine(silent_server.url, "local")
    try:
        result = engine.complete(request(), timeout=60)
        assert engine.lane is None
    finally:
        engine.close()
    assert result.backend == "local" and silent_server.connections == 0


def test_close_ends_a_request_in_flight(silent_server: SilentServer):
    engine = make_engine(silent_server.url, "remote", timeoutMs=60000)
    handle = engine.submit(request())
    deadline = time.monotonic() + 10
    while silent_server.connections == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    closer = threading.Thread(target=engine.close)
    closer.start()
    closer.join(20)
    assert not closer.is_alive()
    assert handle.future.result(5).text == ""


def test_the_router_signals_on_a_local_answer():
    from slm_lsp.engine.model import Generation
    from slm_lsp.engine.router import unsure

    def gen(logprobs: list[float], text: str = "x") -> Generation:
        return Generation(text, len(logprobs), 10, 0, 1.0, 1.0, "eog", logprobs)

    config = merge_config({"remote": {"autoMeanLogprob": -0.5, "autoMinLogprob": -3}}).config
    assert unsure(gen([-0.1, -0.2]), "x", config) == ""
    assert unsure(gen([-0.1, -1.5]), "x", config).startswith("unsure (mean log-probability -0.80 < -0.5)")
    assert unsure(gen([-0.01] * 9 + [-3.5]), "x", config).startswith("unsure (a token's log-probability -3.50")
    assert unsure(gen([-0.01]), "", config) == "empty answer"
    quiet = merge_config({"remote": {"autoMeanLogprob": -100, "autoMinLogprob": -100, "autoEmpty": False}}).config
    assert unsure(gen([-9.0]), "", quiet) == ""


def test_auto_sends_requests_to_the_server_while_the_local_model_is_slow(llama_cpp_server: LlamaCppServer,
                                                                          api_key: str):
    engine = make_engine(llama_cpp_server.url, "auto", api_key, autoMeanLogprob=-100, autoSlowMs=1)
    try:
        first = engine.complete(request(), timeout=60)  # no local latency known yet: local
        second = engine.complete(request("file:///two.py"), timeout=60)
    finally:
        engine.close()
    assert first.backend == "local"
    assert second.backend == "remote" and second.route.startswith("the local model is slow")


def test_auto_sends_requests_to_the_server_while_the_local_model_is_busy(llama_cpp_server: LlamaCppServer,
                                                                          api_key: str):
    engine = make_engine(llama_cpp_server.url, "auto", api_key, autoMeanLogprob=-100, autoSlowMs=600000,
                         max_tokens=2500)
    try:
        long = engine.submit(request())  # 2500 local tokens: the worker is busy for a while
        time.sleep(0.1)
        assert not long.future.done()
        engine.config.completion.max_tokens = 4
        other = engine.complete(request("file:///other.py"), timeout=60)
        long.cancel()
    finally:
        engine.close()
    assert other.backend == "remote" and other.route == "the local model is busy"


def test_new_remote_settings_take_effect_without_a_reload(silent_server: SilentServer,
                                                          llama_cpp_server: LlamaCppServer, api_key: str):
    engine = make_engine(silent_server.url, "remote", api_key)
    try:
        assert engine.status().remote is not None and silent_server.url in engine.status().remote
        config = merge_config({"model": {"threads": 1}, "completion": {"maxTokens": 8},
                               "remote": {"url": llama_cpp_server.url, "route": "remote", "apiKeyEnv": api_key,
                                          "timeoutMs": 30000}}).config
        assert engine.apply_config(config) is False  # the model stays
        deadline = time.monotonic() + 10
        while llama_cpp_server.url not in (engine.status().remote or "") and time.monotonic() < deadline:
            time.sleep(0.01)
        result = engine.complete(request(), timeout=60)
        local = merge_config({"model": {"threads": 1}, "completion": {"maxTokens": 8}}).config
        assert engine.apply_config(local) is False
        deadline = time.monotonic() + 10
        while engine.status().remote is not None and time.monotonic() < deadline:
            time.sleep(0.01)
        back = engine.complete(request("file:///two.py"), timeout=60)
    finally:
        engine.close()
    assert result.backend == "remote" and silent_server.connections == 0
    assert back.backend == "local" and engine.status().route == "local"


def test_a_mid_line_request_lets_the_server_stop_at_the_newline(silent_server: SilentServer):
    import json

    def sent_stop(req: CompletionRequest) -> list[str]:
        before = len(silent_server.body())
        engine = make_engine(silent_server.url, "remote", timeoutMs=300)
        try:
            engine.complete(req, timeout=60)
        finally:
            engine.close()
        body = silent_server.body()[before:]
        data, _end = json.JSONDecoder().raw_decode(body[body.index('{"prompt"'):])
        return list(data["stop"])

    # "    return g(|)": the answer is the middle of this line.
    mid = sent_stop(CompletionRequest("file:///m.py", "def f(x):\n    return g()\n", 1, 13, "python"))
    # "    return |": the rest of this line, or lines below it when the answer starts with a newline.
    end = sent_stop(request())
    blank = sent_stop(CompletionRequest("file:///b.py", "def f(x):\n    \n", 1, 4, "python"))  # a block
    assert "\n" in mid and "<|endoftext|>" in mid
    assert "\n" not in end and "<|endoftext|>" in end
    assert "\n" not in blank and "<|endoftext|>" in blank


def test_the_server_gets_its_own_context_budget(silent_server: SilentServer):
    pieces = [ContextFile(f"lib/m{i}.py", f"def helper_{i}(x):\n    return x * {i}\n" * 20) for i in range(6)]

    def sent_helpers(**remote: object) -> int:
        before = len(silent_server.body())
        engine = make_engine(silent_server.url, "remote", timeoutMs=300, **remote)
        try:
            engine.complete(request(context=pieces, context_tokens=64), timeout=60)
        finally:
            engine.close()
        body = silent_server.body()[before:]
        return sum(f"def helper_{i}(" in body for i in range(6))

    assert sent_helpers() < 6  # the request's own budget: the pieces do not all fit
    assert sent_helpers(contextTokens=100000) == 6  # remote.context_tokens: the server's larger window
