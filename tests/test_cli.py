"""The command line, run as a user runs it."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import TINY_MODEL


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "slm_lsp", *args], capture_output=True, text=True, timeout=120)


def test_complete_prints_a_completion_and_timings(tmp_path):
    src = tmp_path / "a.py"
    src.write_text("def f(x):\n    return x\n")
    out = run("complete", f"{src}:2:12", "--model", str(TINY_MODEL), "--threads", "1")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip()
    assert "request 1: prompt" in out.stderr and "request 2: prompt" in out.stderr
    assert "0 reused" in out.stderr.split("request 2")[0]


def test_complete_without_a_model_says_what_to_do(tmp_path):
    src = tmp_path / "a.py"
    src.write_text("x = 1\n")
    out = run("complete", f"{src}:1:5")
    assert out.returncode == 2
    assert "slm-lsp pull" in out.stderr


def test_bad_location():
    out = run("complete", "nowhere")
    assert out.returncode != 0 and "FILE:LINE:COL" in out.stderr


def test_doctor():
    out = run("doctor", "--model", str(TINY_MODEL))
    assert out.returncode == 0
    assert "GPU offload" in out.stdout and str(TINY_MODEL) in out.stdout
    assert "completion.prefix_tokens = 1024" in out.stdout


def test_pull_is_refused_offline(tmp_path):
    out = run("pull", "qwen2.5-coder-0.5b")
    assert out.returncode == 1 and "download failed" in out.stderr
