"""CompletionEngine: the worker thread, superseding, the type-through cache, failures."""

from __future__ import annotations

import shutil
import sys
import threading
import time

import pytest

from slm_lsp.config import Config, merge_config
from slm_lsp.engine import modelfile
from slm_lsp.engine import probe as probe_module
from slm_lsp.engine.model import ModelLoadError
from slm_lsp.engine.prompt import ContextFile
from slm_lsp.engine.service import CompletionEngine, CompletionRequest, split_at_cursor
from tests.conftest import CORRUPT_MODEL, TINY_MODEL, TOTAL_TEXT, tiny_engine
from tests.test_modelfile import lora_adapter

TEXT = TOTAL_TEXT


@pytest.fixture
def engine():
    yield from tiny_engine()


def req(text=TEXT, line=3, col=18, key="file:///a.py", lang="python") -> CompletionRequest:
    return CompletionRequest(key, text, line, col, lang)


def test_split_at_cursor_clamps():
    assert split_at_cursor("ab\ncd", 1, 1) == ("ab\nc", "d")
    assert split_at_cursor("ab\ncd", 1, 99) == ("ab\ncd", "")
    assert split_at_cursor("ab\ncd", 9, 0) == ("ab\n", "cd")


def test_completion_and_type_through_cache(engine):
    first = engine.complete(req())
    assert first.text.strip() and not first.cached and first.generation is not None
    typed = first.text[:3]
    lines = TEXT.split("\n")
    lines[3] += typed
    second = engine.complete(req("\n".join(lines), col=18 + len(typed)))
    assert second.cached and second.text == first.text[3:]
    assert engine.cache.hits == 1


def test_disabled_language(engine):
    engine.config.completion.enabled_languages = ["rust"]
    assert engine.complete(req()).reason == "disabled"
    engine.config.completion.enabled_languages = ["*"]


def test_newer_request_supersedes_older(engine):
    # Block the worker so that both requests wait in the queue.
    gate = threading.Event()
    engine.call(lambda runner: gate.wait(10))
    old = engine.submit(req())
    new = engine.submit(req(col=10))
    other = engine.submit(req(key="file:///b.py"))
    gate.set()
    assert old.future.result(10).reason == "superseded"
    assert new.future.result(10).text
    assert other.future.result(10).text  # another document is not superseded


def test_running_request_is_cancelled_by_a_newer_one(engine):
    engine.config.completion.max_tokens = 4000
    engine.config.completion.time_budget_ms = 60_000
    started = threading.Event()
    original = engine.runner.generate

    def slow_generate(prompt, **kw):
        cancelled = kw["cancelled"]

        def watch():
            started.set()
            time.sleep(0.005)  # slow enough that the newer request arrives mid-generation
            return cancelled()
        return original(prompt, **{**kw, "cancelled": watch})

    engine.runner.generate = slow_generate  # type: ignore[method-assign]
    running = engine.submit(req())
    assert started.wait(10)
    newer = engine.submit(req(col=12))
    result = running.future.result(30)
    assert result.reason == "cancelled"
    assert newer.future.result(60).reason in ("length", "time", "eog", "stop")


def test_error_in_generation_is_reported_and_engine_recovers(engine):
    original = engine.runner.generate

    def boom(prompt, **kw):
        raise RuntimeError("decode failed")

    engine.runner.generate = boom  # type: ignore[method-assign]
    assert engine.complete(req()).reason.startswith("error")
    engine.runner.generate = original  # type: ignore[method-assign]
    assert engine.complete(req()).text


@pytest.mark.parametrize("write_on_blank_lines", [True, False])
def test_only_a_blank_line_with_write_on_blank_lines_may_not_end_empty_or_repeat_the_line_below(
        engine, write_on_blank_lines):
    engine.config.completion.write_on_blank_lines = write_on_blank_lines
    original, asked = engine.runner.generate, []

    def recording(prompt, **kw):
        asked.append((kw["blank_may_end"], kw["repeats_below"] is not None))
        return original(prompt, **kw)

    engine.runner.generate = recording  # type: ignore[method-assign]
    blank = "def total(items):\n    result = 0\n    \n    return result\n"
    assert engine.complete(req(blank, line=2, col=4, key="file:///blank.py")).generation is not None
    assert engine.complete(req()).generation is not None  # after `result += `: code left of the cursor
    engine.runner.generate = original  # type: ignore[method-assign]
    assert asked == [(not write_on_blank_lines, write_on_blank_lines), (True, False)]


def test_no_model():
    e = CompletionEngine(merge_config().config)
    try:
        assert e.complete(req(), timeout=5).reason == "no-model"
        e.expect_model()
        pending = e.submit(req())
        e.no_model("nothing configured")
        assert pending.future.result(5).reason == "no-model"
    finally:
        e.close()


# -- model and adapter changes keep the working model (issue 13, items 3, 4, 5 and 11) ---------

def _config(**model) -> Config:
    return merge_config({"model": {"threads": 1, "n_ctx": 1024, **model},
                         "completion": {"max_tokens": 10, "prefix_tokens": 256, "suffix_tokens": 64}}).config


def _still_answers(engine: CompletionEngine) -> None:
    result = engine.complete(req(col=17), timeout=30)  # not the type-through cache: a new cursor
    assert result.text and result.reason in ("length", "time", "eog", "stop"), result


def test_a_fake_adapter_is_refused_and_the_model_keeps_answering(engine):
    # Issue 13, item 3: slm.loadAdapter with b"GGUF" + 4 KB of random bytes reported success and
    # the next completion crashed the process.
    with pytest.raises(ModelLoadError, match="not a valid GGUF file"):
        engine.set_adapter(str(CORRUPT_MODEL)).result(timeout=30)
    assert engine.status().adapter is None
    _still_answers(engine)


def test_set_adapter_applies_a_fitting_adapter_and_removes_it(engine, tmp_path):
    adapter = lora_adapter(tmp_path / "a.gguf")
    engine.set_adapter(str(adapter)).result(timeout=60)
    assert engine.status().adapter == str(adapter)
    _still_answers(engine)
    engine.set_adapter(None).result(timeout=30)
    assert engine.status().adapter is None


def test_an_invalid_adapter_setting_keeps_the_working_model(engine):
    # Issue 13, item 5: the reload closed the working model before the adapter failed, and
    # completions stayed empty until the next reload.
    config = _config(adapter=str(CORRUPT_MODEL))
    assert engine.apply_config(config) is True
    with pytest.raises(ModelLoadError):
        engine.load(str(TINY_MODEL)).result(timeout=60)
    status = engine.status()
    assert status.state == "ready" and status.model == str(TINY_MODEL) and status.adapter is None
    _still_answers(engine)


def test_a_missing_model_keeps_the_working_model(engine, tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        engine.load(str(tmp_path / "gone.gguf")).result(timeout=30)
    assert engine.status().model == str(TINY_MODEL)
    _still_answers(engine)


def test_a_reload_that_would_not_fit_in_memory_is_refused(engine, monkeypatch):
    # Issue 13, item 4: a huge n_ctx reloaded the model with a 17.6 GB KV cache.
    monkeypatch.setattr(modelfile, "available_memory", lambda: 4 << 20)
    engine.apply_config(_config(n_ctx=1 << 20))
    with pytest.raises(ModelLoadError, match="not enough memory"):
        engine.load(str(TINY_MODEL)).result(timeout=30)
    assert engine.status().n_ctx == 1024
    _still_answers(engine)


def test_a_model_that_crashes_the_probe_is_not_loaded(engine, tmp_path, monkeypatch):
    # Issue 13, item 11: a file that crashes llama.cpp is tried in a child process first. The child
    # here crashes the way llama.cpp does (SIGSEGV); the engine reports it and keeps its model.
    other = tmp_path / "other.gguf"
    shutil.copy(TINY_MODEL, other)
    crash = [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"]
    monkeypatch.setattr(probe_module, "_child_command", lambda model, adapter: crash)
    with pytest.raises(ModelLoadError, match="SIGSEGV"):
        engine.load(str(other)).result(timeout=60)
    assert engine.status().model == str(TINY_MODEL)
    _still_answers(engine)


def test_the_old_model_answers_while_the_new_one_loads(engine, monkeypatch):
    loading, release = threading.Event(), threading.Event()

    def slow_probe(model, adapter=None):
        loading.set()
        assert release.wait(30)

    monkeypatch.setattr("slm_lsp.engine.service.probe", slow_probe)
    pending = engine.load(str(TINY_MODEL))
    assert loading.wait(30)
    _still_answers(engine)  # the worker is not held by the load
    release.set()
    pending.result(timeout=60)
    _still_answers(engine)


# -- the public surface the features use --------------------------------------------------------

def test_status_reports_the_model_and_the_last_context(engine):
    status = engine.status()
    assert status.state == "ready" and status.model == str(TINY_MODEL)
    assert status.template == "qwen2.5-coder" and status.n_ctx == 1024 and status.adapter is None
    request = req()
    request.context = [ContextFile("lib/util.py", "def helper():\n    return 1\n")]
    request.context_tokens = 200
    engine.complete(request)
    assert [f.path for f in engine.status().last_context] == ["lib/util.py"]


def test_apply_config_says_when_a_reload_is_needed(engine):
    same = _config()
    assert engine.apply_config(same) is False
    faster = _config()
    faster.completion.prefix_tokens = 128
    assert engine.apply_config(faster) is False  # applied without a reload
    engine.call(lambda runner: None).result(timeout=10)  # the worker took it
    assert engine.builder is not None and engine.builder.prefix_tokens == 128
    assert engine.apply_config(_config(n_ctx=2048)) is True


# -- threads (issue 13, item 7) --------------------------------------------------------------

def test_a_failure_outside_the_model_keeps_the_kv_cache(engine, monkeypatch):
    # The worker's error path wiped the whole KV cache on any exception, e.g. a prompt that
    # could not be built; only a failed decode may leave cells half-written.
    resets = []
    runner = engine.runner
    original = runner.reset_cache
    monkeypatch.setattr(runner, "reset_cache", lambda: (resets.append(1), original()))
    engine.complete(req())

    def broken_build(request):
        raise UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed")

    monkeypatch.setattr(engine.builder, "build", broken_build)
    assert engine.complete(req(col=17)).reason.startswith("error")
    assert resets == []


def test_a_failed_decode_resets_the_kv_cache(engine, monkeypatch):
    resets = []
    runner = engine.runner
    original = runner.reset_cache
    monkeypatch.setattr(runner, "reset_cache", lambda: (resets.append(1), original()))

    def failing_prepare(prompt, cancelled):
        raise RuntimeError("llama_decode failed (1)")

    monkeypatch.setattr(runner, "_prepare", failing_prepare)
    assert engine.complete(req()).reason.startswith("error")
    assert resets == [1]


def test_the_worker_closes_the_runner_after_its_last_job():
    # close() joined the worker for 10 s and then closed the runner from the calling thread, while
    # a job could still be using it (a use-after-free in llama.cpp).
    e = CompletionEngine(_config())
    e.load(str(TINY_MODEL)).result(timeout=60)
    runner = e.runner
    closed_on = []
    original = runner.close
    runner.close = lambda: (closed_on.append(threading.current_thread().name), original())
    busy, release = threading.Event(), threading.Event()

    def long_job(r):
        busy.set()
        release.wait(30)
        r.tokenize("still using the runner")

    e.call(long_job)
    assert busy.wait(10)
    threading.Timer(0.5, release.set).start()
    e.close()
    assert closed_on == ["slm-engine"]


def test_an_adapter_set_by_command_survives_other_setting_changes(engine, tmp_path):
    adapter = lora_adapter(tmp_path / "a.gguf")
    engine.set_adapter(str(adapter)).result(timeout=60)
    other = _config()
    other.completion.max_lines = 3
    assert engine.apply_config(other) is False
    engine.call(lambda runner: None).result(timeout=10)
    assert engine.status().adapter == str(adapter)


def test_after_close_loads_and_adapters_fail_instead_of_waiting_for_ever(tmp_path):
    e = CompletionEngine(_config())
    e.load(str(TINY_MODEL)).result(timeout=60)
    e.close()
    with pytest.raises(ModelLoadError, match="closed"):
        e.load(str(TINY_MODEL)).result(timeout=10)
    with pytest.raises(ModelLoadError, match="closed"):
        e.set_adapter(str(lora_adapter(tmp_path / "a.gguf"))).result(timeout=10)
    assert e.complete(req(), timeout=10).reason in ("cancelled", "no-model")


def test_a_load_whose_caller_gave_up_still_completes_quietly(engine, tmp_path, caplog):
    other = tmp_path / "other.gguf"
    shutil.copy(TINY_MODEL, other)
    pending = engine.load(str(other))
    assert pending.cancel()  # e.g. the awaiting LSP handler was cancelled
    for _ in range(600):
        if engine.status().model == str(other):
            break
        time.sleep(0.05)
    assert engine.status().model == str(other)
    _still_answers(engine)
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
