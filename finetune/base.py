"""The base model for training: a GGUF file (dequantized by transformers) or an HF directory,
its tokenizer, the GGUF architecture the adapter is written for, and the FIM template.

The template is chosen with the server's ``detect_template`` (from the GGUF metadata when the
base is a GGUF file, so training and serving agree). A model without FIM tokens but with
Llama 3's reserved special tokens gets them as FIM sentinels (``LLAMA3_RESERVED``): the LoRA
run teaches it FIM, and ``template.json`` beside the adapter makes the server use them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slm_lsp.engine.fim import FALLBACK, PSM, FimTemplate, detect_template

from .data import HFTokenizer
from .export import HF_TO_GGUF_ARCH, gguf_arch_of

log = logging.getLogger(__name__)

# Llama 3.x has no FIM tokens; these reserved special tokens exist in 3.0 to 3.3 (the low ones
# were renamed in 3.1: finetune_right_pad_id, eom_id, python_tag), are single control tokens in
# llama.cpp, and were never trained, so nothing else competes for them.
LLAMA3_RESERVED = FimTemplate(
    "llama3-reserved-fim", PSM, "<|reserved_special_token_10|>", "<|reserved_special_token_11|>",
    "<|reserved_special_token_12|>", ("<|end_of_text|>", "<|eot_id|>", "<|reserved_special_token_13|>",
                                      "<|reserved_special_token_14|>"),
    "<|reserved_special_token_13|>", "<|reserved_special_token_14|>")

META_KEYS = ("general.name", "general.basename", "tokenizer.ggml.add_bos_token", "tokenizer.ggml.bos_token_id",
             "tokenizer.ggml.fim_pre_token_id", "tokenizer.ggml.fim_suf_token_id", "tokenizer.ggml.fim_mid_token_id",
             "tokenizer.ggml.fim_pad_token_id", "tokenizer.ggml.fim_rep_token_id", "tokenizer.ggml.fim_sep_token_id",
             "tokenizer.ggml.prefix_token_id", "tokenizer.ggml.suffix_token_id", "tokenizer.ggml.middle_token_id")


@dataclass
class Base:
    model: Any
    """A transformers causal LM (float32, or bfloat16 for ``--precision bf16``)."""
    tokenizer: HFTokenizer
    template: FimTemplate
    end_token: int
    """Ends a middle: the template's first stop token, else the tokenizer's EOS."""
    bos: list[int]
    arch: str
    """GGUF architecture (``general.architecture``) the adapter is written for."""
    n_blocks: int
    gguf: Path | None
    """The GGUF the server runs (the completion evaluation needs it)."""


def gguf_metadata(path: Path) -> dict[str, str]:
    """The few metadata keys template detection and BOS handling read, as strings (like
    llama.cpp's metadata)."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    out: dict[str, str] = {}
    for key in META_KEYS:
        f = reader.get_field(key)
        if f is not None:
            value = f.contents()
            out[key] = str(value).lower() if isinstance(value, bool) else str(value)
    return out


def choose_template(metadata: dict[str, str], tok: HFTokenizer) -> FimTemplate:
    template = detect_template(metadata, tok.token_text, tok.has_token)
    if template == FALLBACK and all(tok.has_token(t) for t in (LLAMA3_RESERVED.prefix, LLAMA3_RESERVED.suffix,
                                                               LLAMA3_RESERVED.middle, LLAMA3_RESERVED.file_sep)):
        stop = tuple(t for t in LLAMA3_RESERVED.stop if tok.has_token(t))
        return FimTemplate(LLAMA3_RESERVED.name, PSM, LLAMA3_RESERVED.prefix, LLAMA3_RESERVED.suffix,
                           LLAMA3_RESERVED.middle, stop, LLAMA3_RESERVED.repo_name, LLAMA3_RESERVED.file_sep)
    if template == FALLBACK:
        log.warning("the model has no FIM tokens: training plain left-to-right completion")
    return template


def load_base(base: str, gguf_file: str = "", precision: str = "fp32") -> Base:
    """Load the base model and tokenizer, and work out the template and GGUF architecture."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    path = Path(base).expanduser()
    server_gguf = Path(gguf_file).expanduser() if gguf_file else None
    if path.is_file():
        kwargs: dict[str, Any] = {"gguf_file": path.name}
        model_dir = str(path.parent)
        server_gguf = server_gguf or path
    elif path.is_dir():
        kwargs, model_dir = {}, str(path)
    else:
        raise FileNotFoundError(f"--base: no such file or directory: {path}")
    tokenizer = AutoTokenizer.from_pretrained(model_dir, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, **kwargs)
    model.config.use_cache = False
    tok = HFTokenizer(tokenizer)
    if server_gguf is not None:
        arch, n_blocks = gguf_arch_of(server_gguf)
        metadata = gguf_metadata(server_gguf)
        add_bos = metadata.get("tokenizer.ggml.add_bos_token", "false") == "true"
        bos_id = int(metadata.get("tokenizer.ggml.bos_token_id", "-1"))
    else:
        model_type = model.config.model_type
        if model_type not in HF_TO_GGUF_ARCH:
            raise ValueError(f"--base: no GGUF architecture known for model type {model_type!r}; pass --gguf")
        arch, n_blocks = HF_TO_GGUF_ARCH[model_type], model.config.num_hidden_layers
        metadata = {"general.name": Path(model_dir).name}
        probe = tokenizer("a")["input_ids"]
        bos_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else -1
        add_bos = bool(probe) and probe[0] == bos_id
    template = choose_template(metadata, tok)
    end = next((t for t in template.stop if tok.has_token(t)), None)
    end_token = tok.special(end) if end else tokenizer.eos_token_id
    if end_token is None:
        raise ValueError("the tokenizer has no end-of-text token to end a middle with")
    return Base(model, tok, template, int(end_token), [bos_id] if add_bos and bos_id >= 0 else [], arch, n_blocks,
                server_gguf)
