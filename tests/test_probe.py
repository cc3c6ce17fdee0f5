"""slm_lsp.engine.probe: a new model or adapter is tried in a child process first."""

from __future__ import annotations

import os
import shutil
import sys

import pytest

from slm_lsp.engine import probe
from slm_lsp.engine.modelfile import ModelLoadError
from tests.conftest import CORRUPT_MODEL, TINY_MODEL
from tests.test_modelfile import lora_adapter


@pytest.fixture(autouse=True)
def no_remembered_verdicts(monkeypatch):
    monkeypatch.setattr(probe, "_verdicts", {})


def test_a_working_model_and_adapter_pass(tmp_path):
    probe.probe(str(TINY_MODEL))
    probe.probe(str(TINY_MODEL), str(lora_adapter(tmp_path / "a.gguf")))


def test_a_model_llama_cpp_refuses_is_reported_with_its_message():
    with pytest.raises(ModelLoadError, match="could not load"):
        probe.probe(str(CORRUPT_MODEL))


@pytest.mark.parametrize(("code", "message"), [
    ("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)", "crashed with SIGSEGV"),
    ("import os, signal; os.kill(os.getpid(), signal.SIGABRT)", "crashed with SIGABRT"),  # a GGML_ASSERT
    ("import sys; sys.exit(3)", "exited with code 3"),
])
def test_a_child_that_dies_becomes_a_clear_error(monkeypatch, tmp_path, code, message):
    monkeypatch.setattr(probe, "_child_command", lambda model, adapter: [sys.executable, "-c", code])
    with pytest.raises(ModelLoadError, match=f"llama.cpp {message} in a test load of tiny"):
        probe.probe(str(TINY_MODEL))


def test_a_child_that_hangs_is_stopped(monkeypatch):
    monkeypatch.setattr(probe, "_child_command",
                        lambda model, adapter: [sys.executable, "-c", "import time; time.sleep(60)"])
    with pytest.raises(ModelLoadError, match="did not finish within 1 s"):
        probe.probe(str(TINY_MODEL), timeout=1)


def test_the_verdict_is_remembered_until_the_file_changes(monkeypatch, tmp_path):
    model = tmp_path / "m.gguf"
    shutil.copy(TINY_MODEL, model)
    runs = []
    real = probe._run_child
    monkeypatch.setattr(probe, "_run_child", lambda *a: (runs.append(a[0]), real(*a))[1])
    probe.probe(str(model))
    probe.probe(str(model))
    assert len(runs) == 1
    os.utime(model, ns=(1, 1))  # same path and size, another modification time
    probe.probe(str(model))
    assert len(runs) == 2


def test_a_failure_is_remembered_too(monkeypatch):
    runs = []
    monkeypatch.setattr(probe, "_run_child", lambda *a: (runs.append(1), "llama.cpp crashed with SIGSEGV")[1])
    for _ in range(2):
        with pytest.raises(ModelLoadError, match="SIGSEGV"):
            probe.probe(str(TINY_MODEL))
    assert runs == [1]


def test_llama_cpp_assertion_text_is_kept(monkeypatch):
    code = ("import os, sys; print('/src/ggml.c:42: GGML_ASSERT(n_tokens > 0) failed', file=sys.stderr); "
            "sys.stderr.flush(); os.abort()")
    monkeypatch.setattr(probe, "_child_command", lambda model, adapter: [sys.executable, "-c", code])
    with pytest.raises(ModelLoadError, match=r"SIGABRT in a test load of .*GGML_ASSERT\(n_tokens > 0\) failed"):
        probe.probe(str(TINY_MODEL))
