"""GGUF LoRA export: llama.cpp with the exported adapter computes what the PEFT model computes.

The base is the tiny f32 "llama" GGUF of tests/tiny_model.py; transformers loads the very same
weights from it (``gguf_file=``), and the HF-directory case saves them as safetensors first,
so both sides share weights exactly. "llama" GGUFs store q/k rows permuted for RoPE; the
export must permute ``lora_b`` the same way, which the last test shows matters.
"""

from __future__ import annotations

import numpy as np
import pytest

from finetune.export import LoraWeight, lora_tensors, permute_rows, write_gguf_adapter
from slm_lsp.engine.fim import FimTemplate
from slm_lsp.engine.model import LlamaRunner, ModelLoadError
from tests.tiny_model import build_tiny_gguf

PROMPTS = ["def area(self):\n    return self.width * self.height\n",
           "<|fim_prefix|>import os\n<|fim_suffix|>\n<|fim_middle|>"]


def test_lora_tensors_shapes_and_names_without_torch():
    rng = np.random.default_rng(0)

    def rand(*shape):
        return rng.normal(size=shape).astype(np.float32)

    weights = {"model.layers.1.self_attn.q_proj": LoraWeight(rand(4, 64), rand(64, 4)),
               "model.layers.0.mlp.down_proj": LoraWeight(rand(4, 128), rand(64, 4))}
    tensors = lora_tensors(weights, arch="qwen2", n_blocks=2, n_head=4, n_head_kv=2)
    assert {k: v.shape for k, v in tensors.items()} == {
        "blk.1.attn_q.weight.lora_a": (4, 64), "blk.1.attn_q.weight.lora_b": (64, 4),
        "blk.0.ffn_down.weight.lora_a": (4, 128), "blk.0.ffn_down.weight.lora_b": (64, 4)}
    # qwen2 is not permuted; llama permutes q (and k) rows.
    assert np.array_equal(tensors["blk.1.attn_q.weight.lora_b"], weights["model.layers.1.self_attn.q_proj"].b)
    llama = lora_tensors(weights, arch="llama", n_blocks=2, n_head=4, n_head_kv=2)
    assert np.array_equal(llama["blk.1.attn_q.weight.lora_b"],
                          permute_rows(weights["model.layers.1.self_attn.q_proj"].b, 4))


def test_adapter_file_metadata(tmp_path):
    import gguf

    rng = np.random.default_rng(0)
    tensors = lora_tensors({"model.layers.0.self_attn.v_proj": LoraWeight(rng.normal(size=(2, 64)),
                                                                          rng.normal(size=(32, 2)))},
                           arch="llama", n_blocks=2, n_head=4, n_head_kv=2)
    path = write_gguf_adapter(tmp_path / "adapter.gguf", tensors, arch="llama", alpha=4.0)
    reader = gguf.GGUFReader(str(path))
    assert reader.get_field("general.type").contents() == "adapter"
    assert reader.get_field("general.architecture").contents() == "llama"
    assert reader.get_field("adapter.type").contents() == "lora"
    assert reader.get_field("adapter.lora.alpha").contents() == 4.0
    shapes = {t.name: tuple(int(x) for x in t.shape) for t in reader.tensors}  # GGUF ne order: (in, rank)
    assert shapes == {"blk.0.attn_v.weight.lora_a": (64, 2), "blk.0.attn_v.weight.lora_b": (2, 32)}
    assert [p.name for p in tmp_path.iterdir()] == ["adapter.gguf"]  # no temporary file left


# -- with torch: PEFT vs llama.cpp ------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("peft")
    d = tmp_path_factory.mktemp("tiny-f32")
    path = build_tiny_gguf(d / "tiny.gguf", seed=3, name="tiny-llama-f32")
    runner = LlamaRunner(str(path), threads=1, n_ctx=512)
    yield path, runner
    runner.close()


def save_as_hf_dir(gguf_path, hf_dir):
    """The GGUF's weights as an HF directory (config, safetensors, tokenizer): a model loaded
    from a GGUF cannot be saved as such, so a fresh one gets its state dict."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    loaded = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    fresh = AutoModelForCausalLM.from_config(loaded.config)
    fresh.load_state_dict(loaded.state_dict())
    fresh.save_pretrained(hf_dir)
    AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name).save_pretrained(hf_dir)
    return hf_dir


def build_tiny_qwen2(directory):
    """A random Qwen2-architecture model (q/k/v biases, NEOX RoPE, no q/k permutation) built
    with transformers and saved as safetensors, and the same weights converted to an f32 GGUF
    with the gguf package (tokenizer from tests/tiny_model.py)."""
    import gguf
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from tests.tiny_model import SPECIAL_TOKENS, build_vocab

    tokens, merges, types = build_vocab()
    cfg = Qwen2Config(vocab_size=len(tokens), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024, rms_norm_eps=1e-6,
                      rope_theta=10000.0, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" not in name:
                param.normal_(0, 0.3 if param.dim() == 1 else 0.15)
    hf_dir = directory / "qwen2-hf"
    model.save_pretrained(hf_dir)
    path = directory / "tiny-qwen2.gguf"
    w = gguf.GGUFWriter(str(path), "qwen2")
    w.add_name("tiny-qwen2")
    w.add_context_length(1024)
    w.add_embedding_length(64)
    w.add_block_count(2)
    w.add_feed_forward_length(128)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    eot = tokens.index(SPECIAL_TOKENS[0])
    w.add_bos_token_id(eot)
    w.add_eos_token_id(eot)
    w.add_add_bos_token(False)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.QWEN2, 2)
    for name, tensor in model.state_dict().items():
        gguf_name = names.get_name(name, try_suffixes=(".weight", ".bias"))
        assert gguf_name is not None, name
        w.add_tensor(gguf_name, tensor.float().numpy())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path, hf_dir


def _peft_model(base_dir, **kwargs):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32, **kwargs)
    peft_model = get_peft_model(model, LoraConfig(
        r=4, lora_alpha=8, lora_dropout=0.0,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:  # PEFT starts B at zero (a no-op adapter): make it do something
                param.copy_(torch.randn(param.shape, generator=gen) * 0.3)
    return peft_model.eval()


def _llama_logits(runner: LlamaRunner, tokens: list[int]) -> np.ndarray:
    runner.reset_cache()
    logits = runner._decode(tokens, 0, 0, lambda: False)
    assert logits is not None
    return np.array(logits)


@pytest.mark.parametrize("base_kind", ["llama-gguf", "llama-hf-safetensors", "qwen2-hf-safetensors"])
def test_exported_adapter_logits_match_peft(tiny, tmp_path, base_kind):
    import torch

    from finetune.export import export_peft_model, gguf_arch_of

    path, runner = tiny
    if base_kind == "llama-gguf":  # transformers reads the GGUF itself
        model = _peft_model(path.parent, gguf_file=path.name)
    elif base_kind == "llama-hf-safetensors":  # the same weights saved as an HF directory
        hf_dir = save_as_hf_dir(path, tmp_path / "hf")
        assert (hf_dir / "model.safetensors").is_file()
        model = _peft_model(hf_dir)
    else:  # built by transformers, converted to GGUF with the gguf package
        path, hf_dir = build_tiny_qwen2(tmp_path)
        model = _peft_model(hf_dir)
        runner = LlamaRunner(str(path), threads=1, n_ctx=512)
    cfg = model.base_model.model.config
    arch, n_blocks = gguf_arch_of(path)
    adapter = export_peft_model(model, tmp_path / "adapter.gguf", arch=arch, n_blocks=n_blocks,
                                n_head=cfg.num_attention_heads, n_head_kv=cfg.num_key_value_heads)
    try:
        for text in PROMPTS:
            tokens = runner.tokenize(text) if "<|" not in text else [
                runner.special("<|fim_prefix|>"), *runner.tokenize("import os\n"), runner.special("<|fim_suffix|>"),
                *runner.tokenize("\n"), runner.special("<|fim_middle|>")]
            with torch.no_grad():
                with model.disable_adapter():
                    hf_base = model(torch.tensor([tokens])).logits[0, -1].numpy()
                hf_lora = model(torch.tensor([tokens])).logits[0, -1].numpy()
            runner.set_adapter(None)
            ll_base = _llama_logits(runner, tokens)
            runner.set_adapter(str(adapter))
            ll_lora = _llama_logits(runner, tokens)
            # f32 on both sides: what differs is summation order (about 1e-3 of the logit range
            # here), while the adapter moves logits by more than 5% of it; a wrong orientation,
            # permutation or scale would show as an error of the adapter's own size.
            scale, effect = np.abs(hf_lora).max(), np.abs(hf_lora - hf_base).max()
            assert np.abs(hf_base - ll_base).max() < 2e-3 * scale
            assert effect > 0.05 * scale
            error = np.abs(hf_lora - ll_lora).max()
            assert error < 2e-3 * scale and error < 0.01 * effect, (error, effect, scale)
            assert int(np.argmax(hf_lora)) == int(np.argmax(ll_lora))
    finally:
        runner.set_adapter(None)
        if base_kind.startswith("qwen2"):
            runner.close()


def test_unpermuted_export_would_not_match(tiny, tmp_path, monkeypatch):
    """Guards the test above: skipping the q/k permutation gives visibly different logits."""
    import torch

    import finetune.export as export

    path, runner = tiny
    model = _peft_model(path.parent, gguf_file=path.name)
    monkeypatch.setattr(export, "PERMUTED_QK_ARCHS", set())
    cfg = model.base_model.model.config
    adapter = export.export_peft_model(model, tmp_path / "adapter.gguf", arch="llama", n_blocks=2,
                                       n_head=cfg.num_attention_heads, n_head_kv=cfg.num_key_value_heads)
    tokens = runner.tokenize(PROMPTS[0])
    with torch.no_grad():
        hf_lora = model(torch.tensor([tokens])).logits[0, -1].numpy()
    try:
        runner.set_adapter(str(adapter))
        # twice the error bound the test above allows, tens of times the error it measures
        assert np.abs(hf_lora - _llama_logits(runner, tokens)).max() > 4e-3 * np.abs(hf_lora).max()
    finally:
        runner.set_adapter(None)


def test_adapter_template_is_used_and_checked(tiny, tmp_path):
    _path, runner = tiny
    rng = np.random.default_rng(1)
    tensors = lora_tensors({"model.layers.0.self_attn.q_proj": LoraWeight(rng.normal(size=(2, 64)),
                                                                          rng.normal(size=(64, 2)))},
                           arch="llama", n_blocks=2, n_head=4, n_head_kv=2)
    adapter = write_gguf_adapter(tmp_path / "adapter.gguf", tensors, arch="llama", alpha=2.0)
    base = runner.template
    custom = FimTemplate("trained", "spm", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", ("<|fim_pad|>",))
    custom.save(tmp_path / "template.json")
    try:
        runner.set_adapter(str(adapter))
        assert runner.template == custom and runner.stop_ids == {runner.special("<|fim_pad|>")}
        runner.set_adapter(None)
        assert runner.template == base
        FimTemplate("bad", "psm", "<|no_such|>", "<|fim_suffix|>", "<|fim_middle|>").save(tmp_path / "template.json")
        with pytest.raises(ModelLoadError, match="no_such"):
            runner.set_adapter(str(adapter))
        assert runner.template == base and runner.adapter_path is None
    finally:
        runner.set_adapter(None)
