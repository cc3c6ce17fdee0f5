"""What a GGUF file says before llama.cpp touches it: model metadata, the memory a load needs,
and whether a LoRA adapter fits its base model.

llama.cpp trusts the files it is given: an adapter whose tensors do not match the base model
(or a file that is ``GGUF`` followed by random bytes) is accepted by ``llama_adapter_lora_init``
and crashes the process in ``llama_decode``. Everything here is read with the ``gguf`` library
(a memory map of the header and tensor table; no weights are read) and fails with a
``ModelFileError`` naming what is wrong.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import gguf
import numpy as np

KV_BYTES_PER_VALUE = 2
"""llama.cpp's default KV cache type is f16."""
COMPUTE_UBATCH = 512
"""Tokens per llama.cpp micro-batch (the runner's ``n_ubatch``): the compute buffer holds about
that many rows of logits (Qwen2.5-Coder-0.5B: 302 MiB for 512 x 151936 floats)."""
LOAD_OVERHEAD = 1.10
"""Graph, tokenizer and allocator slack on top of weights, KV cache and logits (an estimate)."""


class ModelLoadError(Exception):
    """The model file is missing, not a GGUF file, or llama.cpp could not load it."""


class ModelFileError(ModelLoadError):
    """The file is not a usable GGUF model or adapter, or does not fit in memory."""


@dataclass(frozen=True)
class GgufInfo:
    path: str
    size: int
    """File size in bytes (the weights, memory-mapped)."""
    type: str
    """``general.type``: ``model`` (also when absent) or ``adapter``."""
    arch: str
    metadata: dict[str, object] = field(repr=False)
    tensors: dict[str, tuple[int, ...]] = field(repr=False)
    """Tensor name -> shape in GGUF order (``ne``: the innermost dimension first)."""

    def get_int(self, key: str) -> int | None:
        value = self.metadata.get(key)
        if isinstance(value, list):  # per-layer values (e.g. head_count_kv of some models): the largest
            value = max((v for v in value if isinstance(v, int)), default=None)
        return int(value) if isinstance(value, int) else None

    @property
    def n_vocab(self) -> int:
        shape = self.tensors.get("token_embd.weight") or self.tensors.get("output.weight") or (0, 0)
        return shape[1] if len(shape) > 1 else 0

    def compute_bytes(self) -> int:
        """The compute buffer, dominated by a micro-batch of float32 logits."""
        return COMPUTE_UBATCH * self.n_vocab * 4

    def kv_cache_bytes(self, n_ctx: int) -> int:
        """Bytes of an f16 KV cache of ``n_ctx`` cells: 2 (K, V) x layers x KV heads x head size."""
        arch = self.arch
        n_layer = self.get_int(f"{arch}.block_count") or 0
        n_embd = self.get_int(f"{arch}.embedding_length") or 0
        n_head = self.get_int(f"{arch}.attention.head_count") or 0
        n_head_kv = self.get_int(f"{arch}.attention.head_count_kv") or n_head
        head_k = self.get_int(f"{arch}.attention.key_length") or (n_embd // n_head if n_head else 0)
        head_v = self.get_int(f"{arch}.attention.value_length") or head_k
        return n_ctx * n_layer * n_head_kv * (head_k + head_v) * KV_BYTES_PER_VALUE


LARGE_ARRAY = 256
"""Metadata arrays longer than this (the vocabulary, its scores and merges) are skipped."""


class _HeaderReader(gguf.GGUFReader):
    """``gguf.GGUFReader`` that steps over large metadata arrays instead of building a numpy view
    per element: a 150k-token vocabulary took 7 to 12 s to read, the rest takes milliseconds.
    A skipped field keeps its type but no values."""

    def _get_field_parts(self, orig_offs: int, raw_type: int) -> tuple[int, list[Any], list[int], list[Any]]:
        if raw_type != gguf.GGUFValueType.ARRAY:
            return super()._get_field_parts(orig_offs, raw_type)
        raw_itype = self._get(orig_offs, np.uint32)
        alen = self._get(orig_offs + 4, np.uint64)
        count = int(alen[0])
        if count <= LARGE_ARRAY:
            return super()._get_field_parts(orig_offs, raw_type)
        itype = gguf.GGUFValueType(int(raw_itype[0]))
        offs = orig_offs + 12
        if itype == gguf.GGUFValueType.STRING:
            data = memoryview(self.data)  # type: ignore[arg-type]
            order = sys.byteorder if self.byte_order == "I" else ("big" if sys.byteorder == "little" else "little")
            end = len(data)
            for _ in range(count):  # a damaged count ends at the end of the file, not after 2**64 steps
                offs += 8 + int.from_bytes(data[offs:offs + 8], order)  # type: ignore[arg-type]
                if offs > end:
                    break
        elif (nptype := self.gguf_scalar_to_np.get(itype)) is not None:
            offs += count * np.dtype(nptype).itemsize
        else:
            raise ValueError(f"unhandled array of {itype.name}")
        if offs > len(self.data):
            raise ValueError("the metadata runs past the end of the file")
        return offs - orig_offs, [raw_itype, alen], [], [gguf.GGUFValueType.ARRAY, itype]


def file_key(path: str | os.PathLike[str]) -> tuple[str, int, int]:
    """A file as its resolved path, size and modification time: a different or rewritten file
    gets another key (OSError when it cannot be read)."""
    p = Path(path).expanduser().resolve()
    st = p.stat()
    return str(p), st.st_size, st.st_mtime_ns


def read_gguf(path: str | os.PathLike[str]) -> GgufInfo:
    """Header and tensor table of a GGUF file (cached by path, size and modification time)."""
    try:
        key = file_key(path)
    except OSError as exc:
        raise ModelFileError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return _read_gguf(*key)


@lru_cache(maxsize=16)
def _read_gguf(path: str, size: int, _mtime_ns: int) -> GgufInfo:
    try:
        reader = _HeaderReader(path)
        metadata: dict[str, object] = {}
        for name, f in reader.fields.items():
            if name.startswith("GGUF.") or name.startswith("tokenizer.ggml."):
                continue  # the vocabulary: large and not needed here
            try:
                metadata[name] = f.contents()
            except (ValueError, UnicodeDecodeError):
                metadata[name] = None
        tensors = {t.name: tuple(int(d) for d in t.shape) for t in reader.tensors}
    except ModelFileError:
        raise
    except Exception as exc:  # gguf raises ValueError, IndexError, KeyError... on a damaged file
        raise ModelFileError(f"{path} is not a valid GGUF file ({type(exc).__name__}: {exc})") from exc
    arch = metadata.get("general.architecture")
    if not isinstance(arch, str) or not arch:
        raise ModelFileError(f"{path} has no general.architecture in its GGUF metadata")
    kind = metadata.get("general.type")
    return GgufInfo(path, size, kind if isinstance(kind, str) else "model", arch, metadata, tensors)


def check_adapter(adapter_path: str | os.PathLike[str], base: GgufInfo) -> GgufInfo:
    """Check that a GGUF LoRA adapter applies to ``base``: the metadata llama.cpp reads, and for
    every adapted weight a ``lora_a``/``lora_b`` pair whose shapes fit the base tensor
    (``W.ne[0] == a.ne[0]``, ``W.ne[1] == b.ne[1]``, ``a.ne[1] == b.ne[0]``, as in
    ``llama-adapter.cpp``)."""
    info = read_gguf(adapter_path)
    name = Path(adapter_path).name
    if info.type != "adapter":
        raise ModelFileError(f"{name} is not an adapter (general.type is {info.type!r}, not 'adapter')")
    if info.metadata.get("adapter.type") != "lora":
        raise ModelFileError(f"{name} is not a LoRA adapter (adapter.type is {info.metadata.get('adapter.type')!r})")
    if info.arch != base.arch:
        raise ModelFileError(f"{name} is an adapter for a {info.arch} model, the model is {base.arch}")
    if not info.tensors:
        raise ModelFileError(f"{name} has no tensors")
    pairs: dict[str, dict[str, tuple[int, ...]]] = {}
    for tensor, shape in info.tensors.items():
        weight, dot, part = tensor.rpartition(".")
        if not dot or part not in ("lora_a", "lora_b"):
            raise ModelFileError(f"{name}: unexpected tensor {tensor} (a LoRA adapter has .lora_a/.lora_b pairs)")
        pairs.setdefault(weight, {})[part] = shape
    for weight, parts in sorted(pairs.items()):
        if set(parts) != {"lora_a", "lora_b"}:
            raise ModelFileError(f"{name}: {weight} has a lora_a or a lora_b, not both")
        if weight not in base.tensors:
            raise ModelFileError(f"{name}: the model has no tensor {weight} (adapter for another model?)")
        w, a, b = base.tensors[weight], parts["lora_a"], parts["lora_b"]
        if len(a) != 2 or len(b) != 2 or len(w) < 2 or w[0] != a[0] or w[1] != b[1] or a[1] != b[0]:
            raise ModelFileError(f"{name}: {weight}: lora_a {list(a)} and lora_b {list(b)} do not fit the model's "
                                 f"{list(w)} (adapter for another model?)")
    return info


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (``MemAvailable``), None when unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None


def load_memory_bytes(info: GgufInfo, n_ctx: int, *, weights_shared: bool = False) -> int:
    """Estimated host memory of loading ``info`` on the CPU with a context of ``n_ctx`` tokens:
    weights (the file, memory-mapped), the f16 KV cache (exact: llama.cpp reports 48.00 MiB for
    Qwen2.5-Coder-0.5B at 4096 cells, as computed here) and the compute buffer, plus slack.
    ``weights_shared``: the same file is already mapped (a reload), its pages cost nothing new."""
    weights = 0 if weights_shared else info.size
    return int((weights + info.kv_cache_bytes(n_ctx) + info.compute_bytes()) * LOAD_OVERHEAD)


def check_memory(info: GgufInfo, n_ctx: int, *, weights_shared: bool = False,
                 available: int | None = None) -> None:
    """Refuse a load whose estimated memory does not fit what is available."""
    need = load_memory_bytes(info, n_ctx, weights_shared=weights_shared)
    have = available_memory() if available is None else available
    if have is not None and need > have:
        gib = 1 << 30
        raise ModelFileError(
            f"not enough memory for {Path(info.path).name} with model.n_ctx = {n_ctx}: about "
            f"{need / gib:.1f} GiB needed (weights, KV cache, compute buffer), {have / gib:.1f} GiB available; "
            f"lower model.n_ctx")
