"""Property-based fuzzing of the LSP surface over the real wire (hypothesis), with the tiny model.

Each example is a batch of fuzzed messages (``slm_lsp.bench.fuzz.Fuzzer``: positions in and out
of range, inverted ranges, lone surrogates, NULs, huge lines, unknown methods and documents,
garbage frames, cancels, garbage settings and adapter commands) sent to one server for the whole
module. After every batch, each request of the batch has its answer, a normal inline completion
is answered with a result, and the process is alive. CI's share is small (``max_examples``);
``slm-lsp bench fuzz`` runs 10,000 messages and a cancel storm.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slm_lsp.bench.fuzz import Fuzzer, checkpoint, serve_command, start_server
from slm_lsp.bench.wire import WireClient
from tests.conftest import TINY_MODEL

T = TypeVar("T")


class HypothesisDraw:
    """The fuzzer's choices drawn by hypothesis, so that a failing batch shrinks."""

    def __init__(self, data: st.DataObject) -> None:
        self.data = data

    def integer(self, lo: int, hi: int) -> int:
        return self.data.draw(st.integers(lo, hi))

    def choice(self, options: Sequence[T]) -> T:
        return self.data.draw(st.sampled_from(options))


@pytest.fixture(scope="module")
def fuzzer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzer]:
    tmp = tmp_path_factory.mktemp("fuzz")
    junk_adapter = tmp / "junk-adapter.gguf"
    junk_adapter.write_bytes(b"GGUF" + bytes(range(256)) * 16)
    client = start_server(serve_command(str(TINY_MODEL)) + ["--log-file", str(tmp / "server.log")])
    assert checkpoint(client), "the server answers before any fuzzing"
    yield Fuzzer(client, junk_adapter)
    client.close()


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_every_request_is_answered_and_the_server_stays_up(fuzzer: Fuzzer, data: Any):
    draw = HypothesisDraw(data)
    for _ in range(draw.integer(1, 15)):
        fuzzer.step(draw)
    assert fuzzer.settle(timeout=60) == []
    assert checkpoint(fuzzer.client), "a normal inline completion got no result after the batch"
    assert fuzzer.client.alive


def test_lone_surrogates_do_not_poison_later_completions(fuzzer: Fuzzer):
    client: WireClient = fuzzer.client
    client.notify("textDocument/didOpen", {"textDocument": {
        "uri": "file:///fuzz/surrogate.py", "languageId": "python", "version": 1, "text": "x = '\ud800'\n"}})
    for i in range(3):
        client.notify("textDocument/didChange", {
            "textDocument": {"uri": "file:///fuzz/surrogate.py", "version": 2 + i},
            "contentChanges": [{"range": {"start": {"line": 0, "character": 5}, "end": {"line": 0, "character": 5}},
                                "text": "\udfff\x00\ud83d"}]})
    response = client.request("textDocument/inlineCompletion", {
        "textDocument": {"uri": "file:///fuzz/known.py"}, "position": {"line": 5, "character": 15},
        "context": {"triggerKind": 2}})
    assert response["result"]["items"], "the tiny model always completes the known document"


def test_bench_fuzz_short_run(tmp_path: Path):
    result = subprocess.run([sys.executable, "-m", "slm_lsp", "bench", "fuzz", "--model", str(TINY_MODEL),
                             "--messages", "300", "--checkpoint-every", "100", "--storm-seconds", "2"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "unanswered 0" in result.stdout
    assert "checkpoints answered 5/5" in result.stdout
