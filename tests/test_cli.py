"""The command line, run as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import TINY_MODEL
from tests.test_models import ollama_model


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    # MAKELEVEL: set when the tests run under `make test`; the CLI's advice depends on it.
    inherited = {k: v for k, v in os.environ.items() if k != "MAKELEVEL"}
    return subprocess.run([sys.executable, "-m", "slm_lsp", *args], capture_output=True, text=True, timeout=120,
                          env={**inherited, **(env or {})})


def empty_home(tmp_path: Path) -> dict[str, str]:
    """A HOME without Ollama or LM Studio models (the Hugging Face cache is the test run's own, empty)."""
    (tmp_path / "home").mkdir()
    return {"HOME": str(tmp_path / "home")}


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


def test_complete_pull_without_the_hub_is_one_clear_error(tmp_path):
    """`make demo` on a machine that cannot reach the Hugging Face hub (the tests block the network)."""
    src = tmp_path / "a.py"
    src.write_text("x = 1\n")
    out = run("complete", f"{src}:1:5", "--pull", env=empty_home(tmp_path))
    assert out.returncode == 2
    assert "Traceback" not in out.stderr, out.stderr
    first, *advice = out.stderr.strip().splitlines()
    assert first.startswith("error: could not download llama-3.2-3b: the Hugging Face hub (https://huggingface.co) "
                            "could not be reached")
    assert advice[0] == f"Use a GGUF model file instead: SLM_LSP_MODEL=/path/to.gguf slm-lsp complete {src}:1:5"
    assert "no GGUF model found" in advice[1]


def test_make_demo_without_the_hub_names_the_models_on_disk(tmp_path):
    env = empty_home(tmp_path)
    ollama_model(Path(env["HOME"]) / ".ollama" / "models", "qwen2.5-coder:1.5b", TINY_MODEL.read_bytes())
    src = tmp_path / "a.py"
    src.write_text("x = 1\n")
    out = run("complete", f"{src}:1:5", "--pull", env={**env, "MAKELEVEL": "1"})
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert "SLM_LSP_MODEL=/path/to.gguf make demo" in out.stderr
    assert "or one already on disk:\n  SLM_LSP_MODEL=ollama:qwen2.5-coder:1.5b  (Ollama, 1 MB)" in out.stderr


def test_complete_pull_does_not_download_in_place_of_a_missing_file(tmp_path):
    src = tmp_path / "a.py"
    src.write_text("x = 1\n")
    out = run("complete", f"{src}:1:5", "--pull", "--model", str(tmp_path / "gone.gguf"))
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert "model file not found" in out.stderr and "download" not in out.stderr


def test_completion_flags_become_completion_settings_and_no_flag_sets_none():
    from slm_lsp.cli import build_parser, cli_settings
    from slm_lsp.config import merge_config

    for command in (["serve"], ["complete", "a.py:1:1"], ["bench", "humaneval"], ["bench", "typing", "a.py"]):
        assert "completion" not in cli_settings(build_parser().parse_args(command)), command
        args = build_parser().parse_args([*command, "--empty-on-blank-lines", "--answer-length", "rules"])
        completion = merge_config(cli_settings(args)).config.completion
        assert (completion.write_on_blank_lines, completion.answer_length) == (False, "rules"), command
