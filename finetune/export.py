"""Write a LoRA adapter as a GGUF LoRA file that llama.cpp applies (``llama_adapter_lora_init``).

The format (``src/llama-adapter.cpp`` and ``convert_lora_to_gguf.py`` in llama.cpp):

* metadata ``general.type = "adapter"``, ``general.architecture`` equal to the base model's
  (llama.cpp refuses an adapter of another architecture), ``adapter.type = "lora"`` and
  ``adapter.lora.alpha``; llama.cpp scales ``B @ A @ x`` by ``alpha / rank``, like PEFT;
* for each adapted weight ``W`` (GGUF name, e.g. ``blk.0.attn_q.weight``) two tensors
  ``blk.0.attn_q.weight.lora_a`` and ``.lora_b``. In numpy (row-major, the last axis first in
  GGUF's ``ne``) ``lora_a`` has PEFT's ``lora_A.weight`` shape ``(rank, in)`` and ``lora_b``
  PEFT's ``lora_B.weight`` shape ``(out, rank)``: llama.cpp checks ``W.ne[0] == a.ne[0]`` (in),
  ``W.ne[1] == b.ne[1]`` (out) and ``a.ne[1] == b.ne[0]`` (rank).

``convert_hf_to_gguf.py`` permutes the rows of the query and key projections of "llama"
models (rotary pairs interleaved); transformers undoes that when it loads a GGUF. A LoRA
trained on the HF layout therefore has its ``lora_b`` rows permuted the same way on export
(``lora_a`` acts on the input side, which is not permuted).

This module needs numpy and gguf only (no torch): ``lora_weights`` takes plain arrays.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

# GGUF architectures whose q/k projections convert_hf_to_gguf permutes (LlamaModel.permute).
PERMUTED_QK_ARCHS = {"llama"}
# HF model_type -> GGUF architecture, for an HF-directory base (a GGUF base states its own).
HF_TO_GGUF_ARCH = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "qwen3": "qwen3",
                   "starcoder2": "starcoder2", "gemma": "gemma", "gemma2": "gemma2", "gemma3": "gemma3",
                   "gemma3_text": "gemma3"}


class ExportError(Exception):
    """The adapter cannot be written in a form llama.cpp applies to the base model."""


@dataclass
class LoraWeight:
    a: np.ndarray
    """PEFT ``lora_A.weight``: (rank, in_features)."""
    b: np.ndarray
    """PEFT ``lora_B.weight``: (out_features, rank)."""


def gguf_arch_of(path: Path) -> tuple[str, int]:
    """(``general.architecture``, ``block_count``) of a GGUF model file."""
    reader = gguf.GGUFReader(str(path))

    def field(key: str) -> object:
        f = reader.get_field(key)
        if f is None:
            raise ExportError(f"{path}: no {key} in the GGUF metadata")
        return f.contents()

    arch = str(field("general.architecture"))
    return arch, int(field(f"{arch}.block_count"))  # type: ignore[call-overload]


def permute_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """convert_hf_to_gguf's LlamaModel.permute on the output rows of ``w`` (``n_head`` heads)."""
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2)
            .reshape(w.shape))


def gguf_tensor_name(arch: str, n_blocks: int, hf_module: str) -> str:
    """GGUF weight name of an HF linear module (``model.layers.0.self_attn.q_proj`` ->
    ``blk.0.attn_q.weight``)."""
    archs = {v: k for k, v in gguf.MODEL_ARCH_NAMES.items()}
    if arch not in archs:
        raise ExportError(f"gguf does not know the architecture {arch!r}")
    name_map = gguf.get_tensor_name_map(archs[arch], n_blocks)
    name = name_map.get_name(hf_module + ".weight", try_suffixes=(".weight",))
    if name is None:
        raise ExportError(f"no GGUF tensor for the module {hf_module!r} of a {arch} model "
                          "(choose other --target-modules)")
    return name


def lora_tensors(weights: Mapping[str, LoraWeight], *, arch: str, n_blocks: int, n_head: int,
                 n_head_kv: int) -> dict[str, np.ndarray]:
    """The GGUF tensors (name -> float32 array) of LoRA weights keyed by HF module name."""
    out: dict[str, np.ndarray] = {}
    for module, w in sorted(weights.items()):
        if w.a.shape[0] != w.b.shape[1]:
            raise ExportError(f"{module}: lora_A {w.a.shape} and lora_B {w.b.shape} disagree on the rank")
        name = gguf_tensor_name(arch, n_blocks, module)
        b = w.b
        if arch in PERMUTED_QK_ARCHS and name.endswith(".attn_q.weight"):
            b = permute_rows(b, n_head)
        elif arch in PERMUTED_QK_ARCHS and name.endswith(".attn_k.weight"):
            b = permute_rows(b, n_head_kv)
        out[name + ".lora_a"] = np.ascontiguousarray(w.a, dtype=np.float32)
        out[name + ".lora_b"] = np.ascontiguousarray(b, dtype=np.float32)
    return out


def write_gguf_adapter(path: Path, tensors: Mapping[str, np.ndarray], *, arch: str, alpha: float,
                       metadata: Mapping[str, str] | None = None) -> Path:
    """Write a GGUF LoRA adapter to ``path`` atomically (a temporary file, then a rename)."""
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        w = gguf.GGUFWriter(tmp_name, arch)
        w.add_type(gguf.GGUFType.ADAPTER)
        w.add_string(gguf.Keys.Adapter.TYPE, "lora")
        w.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha))
        for key, value in (metadata or {}).items():
            w.add_string(key, value)
        for name, array in tensors.items():
            w.add_tensor(name, array)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_name, 0o666 & ~umask)  # mkstemp made it private; an adapter is an ordinary file
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def peft_lora_weights(model: object, adapter_name: str = "default") -> tuple[dict[str, LoraWeight], float, int]:
    """The LoRA weights of a PEFT model as arrays keyed by the HF module name, with the alpha
    that gives llama.cpp's ``alpha / rank`` scale PEFT's scale, and the rank."""
    import torch  # only here: the rest of the module works without it

    weights: dict[str, LoraWeight] = {}
    scales: set[float] = set()
    ranks: set[int] = set()
    for name, module in model.named_modules():  # type: ignore[attr-defined]
        lora_a = getattr(module, "lora_A", None)
        if lora_a is None or adapter_name not in lora_a:
            continue
        a = lora_a[adapter_name].weight.detach().to(torch.float32).cpu().numpy()
        b = module.lora_B[adapter_name].weight.detach().to(torch.float32).cpu().numpy()
        scales.add(float(module.scaling[adapter_name]))
        ranks.add(a.shape[0])
        hf_name = name
        for prefix in ("base_model.model.",):
            if hf_name.startswith(prefix):
                hf_name = hf_name[len(prefix):]
        weights[hf_name] = LoraWeight(a, b)
    if not weights:
        raise ExportError("the model has no LoRA weights")
    if len(scales) != 1 or len(ranks) != 1:
        raise ExportError(f"one rank and scale for all modules expected, got ranks {ranks}, scales {scales}")
    rank, scale = ranks.pop(), scales.pop()
    return weights, scale * rank, rank


def export_peft_model(model: object, path: Path, *, arch: str, n_blocks: int, n_head: int, n_head_kv: int,
                      metadata: Mapping[str, object] | None = None) -> Path:
    """Export the LoRA weights of a PEFT model as a GGUF adapter for a base of GGUF ``arch``."""
    weights, alpha, _rank = peft_lora_weights(model)
    tensors = lora_tensors(weights, arch=arch, n_blocks=n_blocks, n_head=n_head, n_head_kv=n_head_kv)
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()}
    return write_gguf_adapter(path, tensors, arch=arch, alpha=alpha, metadata=meta)
