"""``--remote URL --route ...`` on ``complete``, ``eval`` and ``bench humaneval``, run as a user runs
them, against a real llama-cpp-python server with the tiny model."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import TEST_TMP, TINY_MODEL
from tests.remote_servers import LlamaCppServer

FIXTURE = Path(__file__).parent.parent / "data" / "context_repo"


@pytest.fixture(scope="module")
def team_server() -> Iterator[LlamaCppServer]:
    server = LlamaCppServer(TINY_MODEL, TEST_TMP, name="cli-team")
    try:
        yield server
    finally:
        server.stop()


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "slm_lsp", *args, "--model", str(TINY_MODEL), "--threads", "1"],
                          capture_output=True, text=True, timeout=300)


def test_complete_asks_the_team_server(team_server: LlamaCppServer, tmp_path: Path):
    source = tmp_path / "demo.py"
    source.write_text("def circle_area(radius):\n    return \n")
    before = len(team_server.requests())
    out = run("complete", f"{source}:2:12", "--remote", team_server.url, "--route", "remote", "--repeat", "1")
    assert out.returncode == 0, out.stderr
    assert f"prompts go to the OpenAI-compatible server at {team_server.url}" in out.stderr
    assert "# request 1 by remote (route remote)" in out.stderr
    assert out.stdout.strip()
    assert len(team_server.requests()) == before + 1


def test_eval_routes_to_the_team_server(team_server: LlamaCppServer, tmp_path: Path):
    jsonl = tmp_path / "tasks.jsonl"
    out = run("eval", str(FIXTURE), "-n", "3", "--mode", "infile", "--remote", team_server.url, "--route", "remote",
              "--jsonl", str(jsonl))
    assert out.returncode == 0, out.stderr
    rows = [json.loads(x) for x in jsonl.read_text().splitlines()]
    assert rows and all(r["backend"] == "remote" for r in rows)
    assert f"infile: {len(rows)}/{len(rows)} answered by the team server (100%, route remote)" in out.stdout


def test_bench_humaneval_reports_the_share_sent_to_the_server(team_server: LlamaCppServer, tmp_path: Path):
    jsonl = tmp_path / "he.jsonl"
    out = run("bench", "humaneval", "-n", "3", "--remote", team_server.url, "--route", "auto", "--jsonl", str(jsonl))
    if "not found; pass --data" in out.stderr + out.stdout:
        pytest.skip("the HumanEval infilling data (shared/benchmarks) is not beside this checkout")
    assert out.returncode == 0, out.stderr
    rows = [json.loads(x) for x in jsonl.read_text().splitlines()]
    assert len(rows) == 3 and all(r["backend"] in ("local", "remote") for r in rows)
    remote = sum(r["backend"] == "remote" for r in rows)
    assert f"sent to the server: {remote}/3" in out.stdout
    assert "latency p50" in out.stdout and "p95" in out.stdout
    # The local answers' confidence is recorded: what auto decided on.
    assert all(r["mean_logprob"] is not None for r in rows if r["backend"] == "local")


def test_bench_remote_replays_typing_against_the_server(team_server: LlamaCppServer, tmp_path: Path):
    source = tmp_path / "geometry.py"
    source.write_text("import math\n\n\ndef circle_area(radius):\n    return math.pi * radius ** 2\n\n\n"
                      "def square_area(side):\n    return side * side\n")
    before = len(team_server.requests())
    out = run("bench", "remote", str(source), "--remote", team_server.url, "--lines", "1", "--start-line", "4",
              "--every", "10", "-v")
    assert out.returncode == 0, out.stderr
    answered = int(out.stdout.split("answered by: ", 1)[1].split("remote ", 1)[1].split()[0].rstrip(","))
    assert answered >= 2 and len(team_server.requests()) == before + answered
    assert "first token p50" in out.stdout
    # llama-cpp-python's server reports no cache counts; its log has them.
    assert "the server reports no prompt token counts" in out.stdout
    assert team_server.wait_for(r"Llama\.generate: \d+ prefix-match hit", 1)


@pytest.mark.parametrize("command", [["serve"], ["complete", "f.py:1:1"], ["bench", "humaneval"],
                                     ["bench", "remote", "f.py"], ["eval", "repo"]])
def test_the_remote_flags_set_the_remote_section(command: list[str]):
    from slm_lsp.cli import build_parser, cli_settings
    from slm_lsp.config import merge_config

    args = build_parser().parse_args([*command, "--remote", "https://gpu-box:8443/", "--remote-kind", "llama-server",
                                      "--remote-model", "team-7b", "--remote-timeout-ms", "900", "--route", "auto"])
    result = merge_config(cli_settings(args))
    assert result.errors == []
    rc = result.config.remote
    assert (rc.url, rc.kind, rc.model, rc.timeout_ms, rc.route) == (
        "https://gpu-box:8443", "llama-server", "team-7b", 900, "auto")
    assert "remote" not in cli_settings(build_parser().parse_args(command))  # no flags: nothing set


def test_complete_keeps_a_secret_file_on_this_machine(team_server: LlamaCppServer, tmp_path: Path):
    secret = tmp_path / ".env"
    secret.write_text("DATABASE_URL=postgres://shop:hunter2@db/shop\nDEBUG=\n")
    before = len(team_server.requests())
    out = run("complete", f"{secret}:2:7", "--remote", team_server.url, "--route", "remote", "--repeat", "1")
    assert out.returncode == 0, out.stderr
    assert ".env stays on this machine" in out.stderr and "# request 1 by local (private" in out.stderr
    assert len(team_server.requests()) == before  # nothing was sent
