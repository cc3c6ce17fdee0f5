"""``slm-lsp bench team`` run as a user runs it, against real servers over real HTTP with the tiny
generated model: llama-cpp-python's OpenAI server (always there with the server extra) and
llama.cpp's llama-server (when ``make llama-server`` built it)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from slm_lsp.bench.team import (
    LevelRun,
    LlamaServer,
    UserRun,
    find_llama_server,
    free_port,
    knee,
    parse_users,
    user_requests,
)
from slm_lsp.engine.service import split_at_cursor
from tests.conftest import TEST_TMP


def team_file(name: str, seed: int) -> str:
    """A Python module whose every line has code, written once under the tests' folder: the users
    retype its middle, so the requests do not change when a source file of this repository does."""
    lines = [f'"""Module {name}: totals and scales for the team bench."""', ""]
    for i in range(30):
        lines += [f"def scale_{seed}_{i}(values, factor={i + 2}):",
                  f"    total_{i} = sum(value * factor for value in values if value > {i})",
                  f"    return [round(value / (total_{i} or 1), {i % 4 + 1}) for value in values]"]
    path = TEST_TMP / f"team-{name}.py"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


FILES = [team_file("orders", 1), team_file("invoices", 2)]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "slm_lsp", "bench", "team", *args], capture_output=True, text=True,
                          timeout=600)


def test_each_user_retypes_the_middle_of_its_file():
    requests = user_requests(FILES[0], 3, 7, "key#user0")
    text = Path(FILES[0]).read_text()
    assert len(requests) >= 10
    typed = []
    for request in requests:
        prefix, suffix = split_at_cursor(request.text, request.line, request.column)
        # The file with its region cut after the characters typed so far: the cursor has the
        # file's own text before it, and the rest of the file after the region follows.
        assert text.startswith(prefix) and text.endswith(suffix)
        typed.append(len(prefix))
        assert request.document_key == "key#user0"
    assert all(b - a == 7 for a, b in zip(typed, typed[1:]))


def test_users_and_knee():
    assert parse_users("8,1, 2,4,2") == [1, 2, 4, 8]
    with pytest.raises(SystemExit):
        parse_users("0,2")
    with pytest.raises(SystemExit):
        parse_users("two")
    rows = [{"label": "in-process (local)", "users": 1, "p50_ms": 10.0},
            {"label": "server", "users": 1, "p50_ms": 100.0}, {"label": "server", "users": 2, "p50_ms": 150.0},
            {"label": "server", "users": 4, "p50_ms": 210.0}, {"label": "server", "users": 8, "p50_ms": 900.0}]
    assert knee(rows) == 2
    assert knee(rows[:1]) is None


def test_a_level_row_pools_the_users_and_skips_unknown_prompt_counts():
    fast = UserRun(0, "a.py", requests=4, answered=4, model_latencies_ms=[1000.0, 2000.0, 4000.0], generated=14,
                   evaluated=30, reused=900, prompt_counts=3, cache_hits=1)
    slow = UserRun(1, "b.py", requests=2, answered=1, model_latencies_ms=[5000.0], generated=5)  # counts unknown
    row = LevelRun("server", [fast, slow], wall_s=10.0).row()
    assert (row["requests"], row["answered"], row["cache_hits"]) == (6, 5, 1)
    assert (row["p50_ms"], row["p95_ms"], row["worst_user_p95_ms"]) == (4000.0, 5000.0, 5000.0)
    assert row["over_3s"] == 0.5
    assert row["user_tok_s"] == (14 / 7 + 5 / 5) / 2 and row["total_tok_s"] == 1.9
    assert (row["evaluated"], row["reused"]) == (10, 300)
    assert math.isnan(row["warmup_p50_ms"])


def check_report(rows: list[dict], users: list[int], local: bool, log: str) -> None:
    labels = [r["label"] for r in rows]
    assert labels == (["in-process (local)"] if local else []) + ["server"] * len(users)
    assert [r["users"] for r in rows if r["label"] == "server"] == users
    for row in rows:
        # Every request got its answer, and the model answered some of them (not only the
        # type-through cache): their latency and token rate are measured.
        assert row["requests"] > 0 and row["answered"] == row["requests"], log
        assert row["cache_hits"] < row["requests"]
        assert 0 < row["p50_ms"] <= row["p95_ms"] and row["worst_user_p95_ms"] > 0, row
        assert not math.isnan(row["user_tok_s"]) and row["total_tok_s"] >= 0, row


@pytest.fixture
def openai_server(tiny_model: Path) -> Iterator[str]:
    pytest.importorskip("llama_cpp.server", reason="the server extra (llama-cpp-python[server]) is not installed")
    port = free_port()
    # --interrupt_requests False: by default this server abandons the request it is answering
    # when another one arrives, so of two users typing at once only one gets answers.
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(tiny_model), "--host",
                             "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--n_threads", "1",
                             "--interrupt_requests", "False"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    import httpx

    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            try:
                if httpx.get(f"{url}/v1/models", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "llama_cpp.server did not start"
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def test_team_bench_against_an_openai_server(openai_server: str, tiny_model: Path, tmp_path: Path):
    out_json = tmp_path / "rows.json"
    out = run(*FILES, "--endpoint", openai_server, "--kind", "openai", "--users", "1,2", "--lines", "2",
              "--every", "25", "--model", str(tiny_model), "--threads", "1", "--json", str(out_json))
    assert out.returncode == 0, out.stdout + out.stderr
    rows = json.loads(out_json.read_text())
    check_report(rows, [1, 2], local=True, log=out.stdout)
    assert "p50 ms" in out.stdout and "knee:" in out.stdout


def test_team_bench_starts_llama_server(tiny_model: Path, tmp_path: Path):
    binary = find_llama_server()
    if binary is None:
        pytest.skip("no llama-server binary (build it with `make llama-server`, or set SLM_LSP_LLAMA_SERVER)")
    out_json = tmp_path / "rows.json"
    out = run(*FILES, "--serve-model", str(tiny_model), "--kind", "llama-server", "--users", "2", "--lines", "2",
              "--every", "25", "--server-threads", "1", "--no-local",
              "--model", str(tiny_model), "--json", str(out_json))
    assert out.returncode == 0, out.stdout + out.stderr
    check_report(json.loads(out_json.read_text()), [2], local=False, log=out.stdout)
    assert "-np 2" in out.stderr and "--cache-reuse 256" in out.stderr


def test_llama_server_process_stops_and_reports_a_bad_model(tmp_path: Path):
    binary = find_llama_server()
    if binary is None:
        pytest.skip("no llama-server binary (build it with `make llama-server`, or set SLM_LSP_LLAMA_SERVER)")
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + os.urandom(256))
    with pytest.raises(RuntimeError, match="exited"):
        with LlamaServer(binary, str(bad), startup_timeout_s=60):
            pass


def test_team_bench_fails_when_requests_go_unanswered(tiny_model: Path, tmp_path: Path):
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there: every request fails
    out_json = tmp_path / "rows.json"
    out = run(*FILES, "--endpoint", dead, "--kind", "openai", "--users", "1", "--lines", "2", "--every", "25",
              "--no-local", "--model", str(tiny_model), "--json", str(out_json))
    rows = json.loads(out_json.read_text())
    assert rows and all(row["answered"] < row["requests"] for row in rows), rows
    assert out.returncode == 1, out.stdout + out.stderr
