"""Distributed finetuning, proven: ``torchrun --nproc-per-node 2`` (gloo, CPU) runs the real
``python -m slm_lsp finetune`` on the tiny model, and the test checks that

* the two processes train on different examples, and together on all of them;
* the gradients are averaged: after each step both processes hold the same LoRA weights, with
  the gradient norm and, at the end, the weights of one process training on both shards
  (each process accumulates two micro-batches, DDP synchronising on the second only; the one
  process accumulates four: the mean of the four examples' gradients either way);
* only the first process writes: an audit hook in every process (tests/finetune/write_audit) records
  each write under the output folder; the second process records none.

``--log-shards`` makes each process print the examples it trained on, the gradient norm and a
digest of its LoRA weights after every step."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("accelerate")

from finetune.config import FinetuneConfig
from finetune.lora import main
from tests.finetune.test_export import save_as_hf_dir
from tests.tiny_model import build_tiny_gguf

ROOT = Path(__file__).parent.parent.parent
REPO = Path(__file__).parent.parent / "data" / "finetune_repo"
WRITE_AUDIT = Path(__file__).parent / "write_audit"
STEPS = 2
# What the two processes and the single reference process share; the reference takes two
# micro-batches per step where each process takes one.
SHARED = dict(steps=STEPS, batch_size=1, seq_len=192, lr=1e-2, warmup_steps=1, save_every=100, eval_examples=4,
              eval_lines=0, threads=1, heldout_fraction=0.3, keep_anyway=True, lora_dropout=0.0,
              gradient_checkpointing=True, log_shards=True)
# The progress bar shares stderr (carriage returns, no newline): no anchors.
LINE = re.compile(r"finetune\[rank (\d+)/(\d+)\]: step (\d+) examples ([\d,]+) grad_norm (\S+) "
                  r"lora_sha256 ([0-9a-f]{64})")


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny-ddp")
    gguf = build_tiny_gguf(d / "tiny.gguf", seed=7, name="tiny-qwen-coder-f32")
    return gguf, save_as_hf_dir(gguf, d / "hf")


def step_lines(text: str) -> dict[tuple[int, int], dict]:
    """(rank, step) -> what that process printed after that step."""
    found = {}
    for rank, world, step, examples, grad_norm, digest in LINE.findall(text):
        found[int(rank), int(step)] = {"world": int(world), "examples": [int(x) for x in examples.split(",")],
                                       "grad_norm": float(grad_norm), "digest": digest}
    return found


def lora_weights(peft_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(peft_dir / "adapter_model.safetensors"))


def launch(launcher: list[str], tmp_path: Path, tiny_hf: tuple[Path, Path], **values) -> tuple[Path, Path, str]:
    """Run ``launcher -m slm_lsp finetune ...`` on two CPU processes with the write audit on;
    returns the output folder, the audit folder and the launcher's stderr."""
    gguf, hf_dir = tiny_hf
    out, audit = tmp_path / "ddp", tmp_path / "audit"
    audit.mkdir()
    flags = [f"--{k.replace('_', '-')}" if v is True else f"--{k.replace('_', '-')}={v}" for k, v in values.items()]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(WRITE_AUDIT), str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "SLM_LSP_WRITE_AUDIT_DIR": str(out), "SLM_LSP_WRITE_AUDIT_LOG": str(audit),
           "CUDA_VISIBLE_DEVICES": "", "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [*launcher, "-m", "slm_lsp", "finetune", str(REPO), "--base", str(hf_dir), "--gguf", str(gguf),
           "--out", str(out), *flags]
    run = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    return out, audit, run.stderr


def assert_only_rank_0_wrote(out: Path, audit: Path, stderr: str) -> None:
    assert sorted(p.name for p in out.iterdir()) == ["adapter.gguf", "checkpoints", "config.json", "eval.json",
                                                     "peft", "template.json"]
    assert json.loads((out / "eval.json").read_text())["processes"] == 2
    rank0 = (audit / "writes-0.txt").read_text()
    assert "adapter.gguf" in rank0 and "adapter_config.json" in rank0  # the hook sees rank 0's writes
    assert (audit / "writes-1.txt").read_text() == ""
    assert stderr.count("published") == 1


def test_torchrun_two_processes_shard_the_data_average_gradients_and_only_rank_0_writes(tiny_hf, tmp_path, capsys):
    gguf, hf_dir = tiny_hf
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    out, audit, stderr = launch(torchrun, tmp_path, tiny_hf, grad_accum=2, **SHARED)
    ddp = step_lines(stderr)
    assert sorted(ddp) == [(r, s) for r in (0, 1) for s in range(1, STEPS + 1)], stderr[-4000:]
    assert {line["world"] for line in ddp.values()} == {2}

    # The same training in one process: four micro-batches per step, the same examples.
    ref_cfg = FinetuneConfig(repo=str(REPO), base=str(hf_dir), gguf=str(gguf), out=str(tmp_path / "single"),
                             grad_accum=4, **SHARED)  # type: ignore[arg-type]
    assert main(ref_cfg) == 0
    single = step_lines(capsys.readouterr().err)
    assert sorted(single) == [(0, s) for s in range(1, STEPS + 1)]

    # Different shards: disjoint, together every example the single process saw.
    seen = [ddp[0, s]["examples"] + ddp[1, s]["examples"] for s in range(1, STEPS + 1)]
    for s in range(1, STEPS + 1):
        assert not set(ddp[0, s]["examples"]) & set(ddp[1, s]["examples"])
        assert sorted(seen[s - 1]) == sorted(single[0, s]["examples"])
    assert sorted(sum(seen, [])) == list(range(STEPS * 4))

    # Averaged gradients: both processes step alike, by the mean of their gradients (a sum
    # would double the norm; no averaging would leave each process its own norm and weights).
    for s in range(1, STEPS + 1):
        assert ddp[0, s]["digest"] == ddp[1, s]["digest"], s
        assert ddp[0, s]["grad_norm"] == ddp[1, s]["grad_norm"]
        assert ddp[0, s]["grad_norm"] == pytest.approx(single[0, s]["grad_norm"], rel=1e-4), s
    import torch

    got, want = lora_weights(out / "peft"), lora_weights(tmp_path / "single" / "peft")
    assert sorted(got) == sorted(want)
    assert any(float(w.abs().max()) > 1e-3 for w in want.values())  # training moved the weights
    for name in want:
        torch.testing.assert_close(got[name], want[name], atol=1e-5, rtol=1e-4, msg=name)

    # Only the first process writes: the published folder, its report, and the audit.
    assert_only_rank_0_wrote(out, audit, stderr)


def test_the_shipped_accelerate_ddp_config_launches_two_processes(tiny_hf, tmp_path):
    """The README's command with finetune/accelerate/ddp.yaml (no GPU here: CPU processes)."""
    accelerate = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                  str(ROOT / "finetune" / "accelerate" / "ddp.yaml"), "--num_processes", "2"]
    out, audit, stderr = launch(accelerate, tmp_path, tiny_hf, grad_accum=1, **{**SHARED, "steps": 1})
    ran = step_lines(stderr)
    assert sorted(ran) == [(0, 1), (1, 1)] and {line["world"] for line in ran.values()} == {2}
    assert sorted(ran[0, 1]["examples"] + ran[1, 1]["examples"]) == [0, 1]
    assert ran[0, 1]["digest"] == ran[1, 1]["digest"]
    assert_only_rank_0_wrote(out, audit, stderr)
