"""The finetune script end to end on the tiny model: training lowers the held-out loss, the
adapter is exported and published with its template, config and report; Ctrl-C saves a
checkpoint that ``--resume`` continues from; an adapter that does not help is not published;
a published adapter is never overwritten."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")

from finetune import lora
from finetune.config import FinetuneConfig
from finetune.lora import FinetuneError, main
from slm_lsp.engine.fim import FimTemplate
from slm_lsp.engine.model import LlamaRunner
from tests.finetune.test_export import save_as_hf_dir
from tests.tiny_model import build_tiny_gguf

REPO = Path(__file__).parent.parent / "data" / "finetune_repo"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny-train")
    gguf = build_tiny_gguf(d / "tiny.gguf", seed=5, name="tiny-qwen-coder-f32")
    return gguf, save_as_hf_dir(gguf, d / "hf")


def config(tmp_path, base, **kw) -> FinetuneConfig:
    values = dict(repo=str(REPO), base=str(base), out=str(tmp_path / "out"), steps=8, seq_len=192, lr=1e-2,
                  warmup_steps=1, grad_accum=2, save_every=4, eval_examples=6, eval_lines=3, threads=1,
                  heldout_fraction=0.3, keep_anyway=True, lora_dropout=0.0)
    values.update(kw)
    cfg = FinetuneConfig(**values)
    cfg.validate()
    return cfg


def test_training_lowers_heldout_loss_and_publishes(tiny, tmp_path):
    gguf, hf_dir = tiny
    cfg = config(tmp_path, hf_dir, gguf=str(gguf))  # an HF directory base, served as the GGUF
    assert main(cfg) == 0
    out = Path(cfg.out)
    assert sorted(p.name for p in out.iterdir()) == ["adapter.gguf", "checkpoints", "config.json", "eval.json",
                                                     "peft", "template.json"]
    report = json.loads((out / "eval.json").read_text())
    assert report["after"]["loss"] < report["before"]["loss"] - 0.5, report
    assert report["published"] and report["steps"] == 8
    assert {"exact_match", "edit_similarity", "n"} <= set(report["after"]["completion"])
    assert json.loads((out / "config.json").read_text())["lr"] == 1e-2
    template = FimTemplate.load(out / "template.json")
    runner = LlamaRunner(str(gguf), threads=1, n_ctx=512)
    try:
        runner.set_adapter(str(out / "adapter.gguf"))  # llama.cpp accepts it; its template comes along
        assert runner.template == template and runner.adapter_path == str(out / "adapter.gguf")
    finally:
        runner.close()
    with pytest.raises(FinetuneError, match="never overwritten"):
        main(cfg)


def test_the_peft_directory_loads_back_with_the_trained_weights(tiny, tmp_path):
    """OUT/peft is what vLLM loads (--lora-modules NAME=OUT/peft): PEFT reads it back onto the
    base, and its weights are the ones adapter.gguf was exported from."""
    import gguf as gguf_py
    import numpy as np
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from finetune.export import lora_tensors, peft_lora_weights

    gguf, hf_dir = tiny
    cfg = config(tmp_path, hf_dir, gguf=str(gguf), steps=3, eval_lines=0, lora_r=4, lora_alpha=8.0)
    assert main(cfg) == 0
    peft_dir = Path(cfg.out) / "peft"
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in peft_dir.iterdir()}
    assert not list(Path(cfg.out).glob("*.tmp")) and not (Path(cfg.out) / "staging").exists()
    adapter_config = json.loads((peft_dir / "adapter_config.json").read_text())
    assert adapter_config["peft_type"] == "LORA" and adapter_config["task_type"] == "CAUSAL_LM"
    assert adapter_config["r"] == 4 and adapter_config["lora_alpha"] == 8.0
    assert sorted(adapter_config["target_modules"]) == sorted(cfg.target_modules)
    # What vLLM's PEFTHelper refuses (modules_to_save, DoRA) and the weight names it parses.
    assert not adapter_config["modules_to_save"] and not adapter_config["use_dora"]
    assert adapter_config["bias"] == "none" and not adapter_config["use_rslora"]
    from safetensors import safe_open

    with safe_open(str(peft_dir / "adapter_model.safetensors"), "pt") as f:
        names = list(f.keys())
    assert len(names) == 2 * 2 * len(cfg.target_modules)  # lora_A and lora_B of each module of 2 layers
    assert all(re.fullmatch(r"base_model\.model\.model\.layers\.\d\.self_attn\.[qkvo]_proj\.lora_[AB]\.weight", n)
               for n in names), names

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(hf_dir)), str(peft_dir))
    weights, alpha, rank = peft_lora_weights(model)
    assert (alpha, rank) == (8.0, 4) and len(weights) == 2 * len(cfg.target_modules)
    assert all(float(np.abs(w.b).max()) > 0 for w in weights.values())  # trained: lora_B starts at zero
    # adapter.gguf was exported from the model in memory: the same numbers, to the bit.
    reader = gguf_py.GGUFReader(str(Path(cfg.out) / "adapter.gguf"))
    exported = {t.name: np.asarray(t.data) for t in reader.tensors}
    loaded = lora_tensors(weights, arch="llama", n_blocks=2, n_head=4, n_head_kv=2)
    assert sorted(exported) == sorted(loaded)
    for name, array in loaded.items():
        np.testing.assert_array_equal(exported[name], array, err_msg=name)


def test_ctrl_c_saves_a_checkpoint_and_resume_continues(tiny, tmp_path, monkeypatch):
    gguf, _hf_dir = tiny
    cfg = config(tmp_path, gguf, steps=6, save_every=100, eval_lines=0)  # the GGUF itself as the base
    calls = {"n": 0}
    real_collate = lora.collate

    def interrupting_collate(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 7:  # during step 4 (2 micro-batches per step)
            raise KeyboardInterrupt
        return real_collate(*args, **kwargs)

    monkeypatch.setattr(lora, "collate", interrupting_collate)
    assert main(cfg) == 130
    ckpt = Path(cfg.out) / "checkpoints"
    assert [p.name for p in ckpt.glob("step-*")] == ["step-000003"]
    assert not (Path(cfg.out) / "adapter.gguf").exists()
    monkeypatch.setattr(lora, "collate", real_collate)
    with pytest.raises(FinetuneError, match="--resume"):
        main(cfg)
    cfg.resume = True
    assert main(cfg) == 0
    progress = json.loads((ckpt / "step-000006" / "progress.json").read_text())
    assert progress["step"] == 6 and len(progress["history"]) == 6
    assert json.loads((Path(cfg.out) / "eval.json").read_text())["steps"] == 6


def test_steps_0_trains_the_steps_scaled_to_the_repository_and_records_them(tiny, tmp_path, capsys):
    gguf, _hf_dir = tiny
    lines = sum(f.text.count("\n") + 1 for f in lora.load_files(REPO, heldout_fraction=0.3, seed=1234).train)
    steps = lines // 3
    assert 30 < steps < 120  # between the bounds, so the division decides
    cfg = config(tmp_path, gguf, steps=0, lines_per_step=3, save_every=100, eval_lines=0, eval_examples=2)
    assert main(cfg) == 0
    assert f"finetune: {steps} steps for {lines} lines of training files (one per 3, 30 to 120" \
        in capsys.readouterr().err
    assert json.loads((Path(cfg.out) / "config.json").read_text())["steps"] == steps
    assert json.loads((Path(cfg.out) / "eval.json").read_text())["steps"] == steps


def test_an_adapter_that_does_not_help_is_not_published(tiny, tmp_path):
    gguf, _hf_dir = tiny
    cfg = config(tmp_path, gguf, steps=2, keep_anyway=False, min_loss_gain=1000.0, eval_lines=0)
    assert main(cfg) == lora.EXIT_NOT_PUBLISHED
    out = Path(cfg.out)
    assert not (out / "adapter.gguf").exists()
    assert (out / "rejected" / "adapter.gguf").is_file()
    assert (out / "rejected" / "peft" / "adapter_config.json").is_file()
    report = json.loads((out / "rejected" / "eval.json").read_text())
    assert not report["published"] and "gain" in report["reason"]


def test_an_out_holding_a_peft_directory_is_refused(tiny, tmp_path):
    gguf, _hf_dir = tiny
    cfg = config(tmp_path, gguf)
    (Path(cfg.out) / "peft").mkdir(parents=True)  # a vLLM server may be reading it
    with pytest.raises(FinetuneError, match="never overwritten"):
        main(cfg)


def test_move_dir_no_clobber(tmp_path):
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "adapter_config.json").write_text("new")
    (tmp_path / "in-use").mkdir()  # empty: rename(2) alone would replace it
    with pytest.raises(FinetuneError):
        lora.move_dir_no_clobber(tmp_path / "new", tmp_path / "in-use")
    assert not list((tmp_path / "in-use").iterdir())
    lora.move_dir_no_clobber(tmp_path / "new", tmp_path / "peft")
    assert (tmp_path / "peft" / "adapter_config.json").read_text() == "new" and not (tmp_path / "new").exists()


def test_move_no_clobber(tmp_path):
    (tmp_path / "a").write_text("new")
    (tmp_path / "b").write_text("in use")
    with pytest.raises(FinetuneError):
        lora.move_no_clobber(tmp_path / "a", tmp_path / "b")
    assert (tmp_path / "b").read_text() == "in use"
    lora.move_no_clobber(tmp_path / "a", tmp_path / "c")
    assert (tmp_path / "c").read_text() == "new" and not (tmp_path / "a").exists()


def test_lr_schedule():
    factors = [lora.lr_factor(s, 2, 10) for s in range(10)]
    assert factors[0] < factors[1] < factors[2] == 1.0 and factors[-1] >= 0.1
    assert all(a >= b for a, b in zip(factors[2:], factors[3:]))
