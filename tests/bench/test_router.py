"""bench router: auto's decisions replayed from a local and a remote run's jsonl files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slm_lsp.bench.router import Setting, Task, load_runs, outcome, pick, problem_number, run_router_bench, sign_test
from slm_lsp.cli import build_parser
from slm_lsp.engine.router import SIGNAL_OFF


def task(problem: int, local_pass: bool, remote_pass: bool, mean: float, *, multiline: bool = False,
         text: str = "x = 1", lowest: float = -0.5) -> Task:
    return Task(f"SingleLineInfilling/HumanEval/{problem}/L0", problem, local_pass, text, 100.0, multiline, mean,
                lowest, remote_pass, 1000.0)


def test_the_sign_test_is_exact_and_two_sided():
    assert sign_test(0, 0) == 1.0
    assert sign_test(5, 0) == pytest.approx(2 / 32)
    assert sign_test(0, 5) == sign_test(5, 0)
    assert sign_test(3, 3) == 1.0
    assert sign_test(8, 2) == pytest.approx(2 * (1 + 10 + 45) / 1024)


def test_a_setting_sends_what_the_engine_would():
    setting = Setting(blocks=True, empty=True, mean_logprob=-0.2, min_logprob=-3.0)
    assert setting.sends(task(1, True, True, -0.01, multiline=True)) == "a block"
    assert setting.sends(task(1, True, True, -0.01, text="  ")) == "empty answer"
    assert setting.sends(task(1, True, True, -0.3)) == "unsure (mean)"
    assert setting.sends(task(1, True, True, -0.1, lowest=-4.0)) == "unsure (lowest)"
    assert setting.sends(task(1, True, True, -0.1)) == ""
    off = Setting(False, False, SIGNAL_OFF, SIGNAL_OFF)
    assert off.sends(task(1, True, True, -9.0, multiline=True, text="", lowest=-50.0)) == ""


def test_auto_takes_the_servers_answer_where_it_sends_and_counts_paired_wins():
    tasks = [task(0, False, True, -0.9), task(1, True, False, -0.9), task(2, True, True, -0.01),
             task(3, False, True, -0.01)]
    auto = outcome(tasks, Setting(False, True, -0.5, SIGNAL_OFF))
    assert (auto.passed, auto.sent, auto.won, auto.lost) == (2, 2, 1, 1)
    assert auto.p50_ms in (100.0, 1100.0)  # a task sent after the local answer costs both
    local, remote = outcome(tasks, None, "local"), outcome(tasks, None, "remote")
    assert (local.passed, local.sent, remote.passed, remote.sent) == (2, 0, 3, 4)


def test_pick_respects_the_share_it_may_send():
    # Sure answers pass, unsure ones fail locally and pass on the server.
    tasks = [task(i, mean > -0.3, True, mean) for i, mean in enumerate([-0.01, -0.05, -0.1, -0.4, -0.6, -0.9])]
    setting, result = pick(tasks, max_sent=0.5)
    assert result.passed == 6 and result.sent == 3
    setting, result = pick(tasks, max_sent=0.34)
    assert result.sent <= 2 and result.passed == 3 + result.sent


def test_problem_numbers_come_from_the_task_id():
    assert problem_number("SingleLineInfilling/HumanEval/12/L3") == 12
    with pytest.raises(SystemExit):
        problem_number("nonsense")


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _row(problem: int, passed: bool, backend: str, mean: float | None = -0.1) -> dict:
    return {"task_id": f"SingleLineInfilling/HumanEval/{problem}/L0", "pass": passed, "text": "y = 2",
            "backend": backend, "route": "", "ms": 50.0, "multiline": False, "mean_logprob": mean,
            "min_logprob": mean}


def test_the_cli_reports_both_draws(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    local = _write(tmp_path / "local.jsonl", [_row(p, p % 2 == 0, "local", -0.05 if p % 2 == 0 else -0.7)
                                              for p in range(12)])
    remote = _write(tmp_path / "remote.jsonl", [_row(p, True, "remote", None) for p in range(12)])
    args = build_parser().parse_args(["bench", "router", str(local), str(remote), "--json", str(tmp_path / "o.json")])
    assert run_router_bench(args) == 0
    out = capsys.readouterr().out
    assert "thresholds picked on 3 tasks" in out and "held-out draw: 9 tasks" in out
    result = json.loads((tmp_path / "o.json").read_text())
    assert result["held_out"]["local"]["passed"] == 3 and result["held_out"]["remote"]["passed"] == 9


def test_a_remote_run_that_fell_back_is_refused(tmp_path: Path):
    local = _write(tmp_path / "local.jsonl", [_row(1, True, "local")])
    remote = _write(tmp_path / "remote.jsonl", [_row(1, True, "local")])
    with pytest.raises(SystemExit, match="not answered by the server"):
        load_runs(local, remote)
