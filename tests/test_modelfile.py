"""slm_lsp.engine.modelfile: GGUF metadata, the memory estimate, adapter checks against the base."""

from __future__ import annotations

import os
from pathlib import Path

import gguf
import numpy as np
import pytest

from finetune.export import LoraWeight, lora_tensors, write_gguf_adapter
from slm_lsp.engine import modelfile
from slm_lsp.engine.modelfile import ModelFileError, check_adapter, check_memory, read_gguf
from tests.conftest import CORRUPT_MODEL, TINY_MODEL
from tests.tiny_model import build_tiny_gguf


def lora_adapter(path: Path, *, n_embd: int = 64, n_ff: int = 128, arch: str = "llama",
                 modules: tuple[str, ...] = ("self_attn.q_proj", "mlp.up_proj")) -> Path:
    """A LoRA adapter (rank 4) for a tiny model of width ``n_embd``, written by finetune.export."""
    rng = np.random.default_rng(0)
    shapes = {"self_attn.q_proj": (n_embd, n_embd), "mlp.up_proj": (n_ff, n_embd)}
    weights = {f"model.layers.{i}.{m}": LoraWeight(rng.normal(0, 1, (4, shapes[m][1])).astype(np.float32),
                                                   rng.normal(0, 1, (shapes[m][0], 4)).astype(np.float32))
               for i in range(2) for m in modules}
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = lora_tensors(weights, arch="llama", n_blocks=2, n_head=4, n_head_kv=2)
    return write_gguf_adapter(path, tensors, arch=arch, alpha=8.0)


def test_read_gguf_reads_the_model_header():
    info = read_gguf(TINY_MODEL)
    assert info.type == "model" and info.arch == "llama"
    assert info.size == TINY_MODEL.stat().st_size
    assert info.tensors["blk.0.attn_q.weight"] == (64, 64)
    assert info.tensors["blk.1.ffn_up.weight"] == (64, 128)  # GGUF order: the input dimension first
    assert info.get_int("llama.block_count") == 2


def test_kv_cache_bytes_follow_the_metadata():
    # 2 layers x 2 KV heads x (16 + 16) values of 2 bytes per cell.
    assert read_gguf(TINY_MODEL).kv_cache_bytes(1000) == 1000 * 2 * 2 * 32 * 2


def test_compute_buffer_follows_the_vocabulary():
    info = read_gguf(TINY_MODEL)
    assert info.n_vocab == info.tensors["output.weight"][1] > 256
    assert info.compute_bytes() == modelfile.COMPUTE_UBATCH * info.n_vocab * 4


def test_large_metadata_arrays_are_stepped_over_and_the_rest_is_read(tmp_path):
    # The vocabulary is skipped for speed; the fields after it, and the tensor table, still read.
    path = build_tiny_gguf(tmp_path / "m.gguf")
    info = read_gguf(path)
    full = gguf.GGUFReader(str(path))
    assert info.tensors == {t.name: tuple(int(d) for d in t.shape) for t in full.tensors}
    assert len(full.fields["tokenizer.ggml.tokens"].data) > modelfile.LARGE_ARRAY
    assert modelfile._HeaderReader(str(path)).data_offset == full.data_offset
    assert info.metadata["general.name"] == "tiny-qwen-coder"


@pytest.mark.parametrize("content", [b"GGUF" + os.urandom(4096), b"GGUF\x03\x00\x00\x00" + os.urandom(4096), b"GGUF"],
                         ids=["random", "version-3-then-random", "magic-only"])
def test_damaged_files_are_refused(tmp_path, content):
    path = tmp_path / "bad.gguf"
    path.write_bytes(content)
    with pytest.raises(ModelFileError, match="not a valid GGUF file"):
        read_gguf(path)


def test_a_vocabulary_with_a_damaged_length_is_refused_at_once(tmp_path):
    # The length of the token list says 2**62 strings: stepping over them must stop at the end of
    # the file, not loop for ever.
    data = bytearray(TINY_MODEL.read_bytes())
    key = b"tokenizer.ggml.tokens"
    at = data.index(key) + len(key) + 4 + 4  # after the key, its value type and the item type
    data[at:at + 8] = (1 << 62).to_bytes(8, "little")
    path = tmp_path / "damaged.gguf"
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="not a valid GGUF file"):
        read_gguf(path)


def test_a_truncated_file_is_refused(tmp_path):
    path = tmp_path / "truncated.gguf"
    path.write_bytes(TINY_MODEL.read_bytes()[:-1000])
    with pytest.raises(ModelFileError, match="not a valid GGUF file"):
        read_gguf(path)


def test_a_rewritten_file_is_read_again(tmp_path):
    path = build_tiny_gguf(tmp_path / "m.gguf", n_layer=2)
    assert read_gguf(path).get_int("llama.block_count") == 2
    build_tiny_gguf(path, n_layer=3)
    assert read_gguf(path).get_int("llama.block_count") == 3


def test_an_adapter_for_the_model_passes(tmp_path):
    adapter = check_adapter(lora_adapter(tmp_path / "a.gguf"), read_gguf(TINY_MODEL))
    assert adapter.type == "adapter"


@pytest.mark.parametrize(("make", "message"), [
    (lambda d: lora_adapter(d / "a.gguf", n_embd=32, n_ff=64), "do not fit"),
    (lambda d: lora_adapter(d / "a.gguf", arch="qwen2"), "for a qwen2 model"),
    (lambda d: Path(TINY_MODEL), "not an adapter"),
    (lambda d: Path(CORRUPT_MODEL), "not a valid GGUF file"),
], ids=["other-width", "other-architecture", "a-model", "random-bytes"])
def test_adapters_that_do_not_fit_the_model_are_refused(tmp_path, make, message):
    with pytest.raises(ModelFileError, match=message):
        check_adapter(make(tmp_path), read_gguf(TINY_MODEL))


def test_an_adapter_for_a_tensor_the_model_lacks_is_refused(tmp_path):
    base = read_gguf(build_tiny_gguf(tmp_path / "one-layer.gguf", n_layer=1))
    with pytest.raises(ModelFileError, match="no tensor blk.1"):
        check_adapter(lora_adapter(tmp_path / "a.gguf"), base)


def test_a_load_that_does_not_fit_in_memory_is_refused():
    info = read_gguf(TINY_MODEL)
    need = modelfile.load_memory_bytes(info, 1 << 20)
    assert need > info.kv_cache_bytes(1 << 20) + info.size + info.compute_bytes()  # with the slack
    check_memory(info, 1 << 20, available=need)
    with pytest.raises(ModelFileError, match="not enough memory.*model.n_ctx = 1048576"):
        check_memory(info, 1 << 20, available=need - 1)
    # A reload of the file already mapped counts the KV cache only.
    check_memory(info, 1 << 20, available=need - info.size, weights_shared=True)


def test_the_estimate_of_a_real_model_counts_its_kv_cache_like_llama_cpp(real_model):
    # llama.cpp: "llama_kv_cache: size = 48.00 MiB (4096 cells, 24 layers)" for Qwen2.5-Coder-0.5B;
    # for another model, the same formula from its metadata.
    info = read_gguf(real_model)
    arch = info.arch
    n_layer = info.get_int(f"{arch}.block_count")
    n_head = info.get_int(f"{arch}.attention.head_count")
    n_head_kv = info.get_int(f"{arch}.attention.head_count_kv")
    head = info.get_int(f"{arch}.embedding_length") // n_head
    assert info.kv_cache_bytes(4096) == 4096 * n_layer * n_head_kv * head * 2 * 2
    if "qwen2.5-coder-0.5b" in real_model.name.lower():
        assert info.kv_cache_bytes(4096) == 48 << 20


def test_available_memory_is_known_here():
    have = modelfile.available_memory()
    assert have is not None and have > 0
