"""The base model for training: a GGUF file (dequantized by transformers) or an HF directory,
its tokenizer, the GGUF architecture the adapter is written for, and the FIM template.

The template is chosen with the server's ``detect_template`` (from the GGUF metadata when the
base is a GGUF file, so training and serving agree). A model without FIM tokens but with
reserved tokens gets some of them as FIM sentinels (``RESERVED_FIM``: Llama 3's
``<|reserved_special_token_N|>``, Gemma's ``<unusedN>``): the LoRA run teaches it FIM, and
``template.json`` beside the adapter makes the server use them.

The sentinels' embedding rows stay as they are. llama.cpp applies a LoRA of ``token_embd`` to
the input embedding, but a model with tied embeddings (Gemma 3, Llama 3.2 1B/3B) also uses
``token_embd`` as its output matrix, and its output projection would then multiply by the
embedding's LoRA pair with the wrong shapes: no GGUF adapter can move those rows for such a
model. Nor do they need to move: the reserved rows of these models are not zero (Gemma 3 270M:
norm 1.03 like every row, cosine about 0.7 between two ``<unusedN>``), so each sentinel is a
distinct input vector that the attention and MLP LoRA learn to read. A middle ends with the
model's own end-of-text token, whose output row is trained (an untrained sentinel as the end
would have to be predicted through a row the adapter cannot change).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slm_lsp.engine.fim import FALLBACK, PSM, SPM, FimTemplate, detect_template

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
# Gemma (1 to 3) has no FIM tokens (CodeGemma's are not in the base vocabulary) and reserves
# <unused0>..<unused98> and, in Gemma 3, <unused99>..<unused6241>: control tokens in llama.cpp
# that no text tokenizes to. A middle ends with <eos>, as Gemma's own documents do.
GEMMA_UNUSED = FimTemplate(
    "gemma-unused-fim", PSM, "<unused0>", "<unused1>", "<unused2>", ("<eos>", "<end_of_turn>", "<unused3>",
                                                                       "<unused4>"),
    "<unused3>", "<unused4>")
RESERVED_FIM = (LLAMA3_RESERVED, GEMMA_UNUSED)
"""Reserved-token templates, tried in order when the model has no FIM tokens of its own."""

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
    """The model's own FIM template, else the first of ``RESERVED_FIM`` whose sentinels are all
    in the vocabulary (its stop tokens cut to those present, the end-of-text one first), else
    prefix-only."""
    template = detect_template(metadata, tok.token_text, tok.has_token)
    if template != FALLBACK:
        return template
    for reserved in RESERVED_FIM:
        sentinels = (reserved.prefix, reserved.suffix, reserved.middle, reserved.repo_name, reserved.file_sep)
        stop = tuple(t for t in reserved.stop if tok.has_token(t))
        if all(tok.has_token(t) for t in sentinels) and stop and stop[0] == reserved.stop[0]:
            return dataclasses.replace(reserved, stop=stop)
    log.warning("the model has no FIM tokens: training plain left-to-right completion")
    return template


def served_template(template: FimTemplate, spm_fraction: float) -> FimTemplate:
    """The template saved beside the adapter, which the server lays its prompts out with: the
    layout most training examples had. Mostly suffix-prefix-middle training (``spm_fraction``
    over one half) gives an SPM template named ``<name>-spm``: the prompt ends with the prefix,
    so the middle continues it as plain text, which a base model taught FIM (``--preset
    teach-fim``) already knows how to do."""
    if not template.is_fim or template.layout == SPM or spm_fraction <= 0.5:
        return template
    return dataclasses.replace(template, name=f"{template.name}-spm", layout=SPM)


def tokenizer_cache_dir(gguf_path: Path) -> Path:
    """Where the Hugging Face tokenizer converted from ``gguf_path`` is kept: one folder per
    file name, size and modification time, so a changed file is converted again."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "slm-lsp" / "tokenizers"
    st = gguf_path.stat()
    return root / f"{gguf_path.stem}-{st.st_size}-{int(st.st_mtime)}"


def load_tokenizer(path: Path, model_dir: str, kwargs: dict[str, Any]) -> Any:
    """The tokenizer of the base. transformers converts a GGUF's vocabulary anew on every load,
    which takes minutes for a large one (Gemma 3: 262,144 tokens, 5 minutes on 2 busy cores):
    the converted tokenizer is saved once and loaded from there next time (written to a
    temporary folder and renamed, so a half-written one is never read)."""
    from transformers import AutoTokenizer

    if not path.is_file():
        return AutoTokenizer.from_pretrained(model_dir, **kwargs)
    cached = tokenizer_cache_dir(path)
    if cached.is_dir():
        try:
            return AutoTokenizer.from_pretrained(str(cached))
        except (OSError, ValueError) as exc:  # a cache from another transformers version: convert again
            log.warning("cached tokenizer %s unreadable (%s): converting the GGUF's again", cached, exc)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, **kwargs)
    tmp: Path | None = None
    try:
        tmp = Path(tempfile.mkdtemp(prefix=cached.name + ".", dir=_made(cached.parent)))
        tokenizer.save_pretrained(str(tmp))
        os.replace(tmp, cached)
    except OSError as exc:  # a read-only cache, or another run saved it first: no harm
        log.debug("tokenizer not cached in %s: %s", cached, exc)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return tokenizer


def _made(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def load_base(base: str, gguf_file: str = "", precision: str = "fp32") -> Base:
    """Load the base model and tokenizer, and work out the template and GGUF architecture."""
    import torch
    from transformers import AutoModelForCausalLM

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
    tokenizer = load_tokenizer(path, model_dir, kwargs)
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


def causal_lm_loss(model: Any, batch: dict[str, Any], reduction: str = "mean") -> Any:
    """The next-token loss over the labelled positions of ``batch`` (``input_ids``,
    ``attention_mask``, ``labels`` with -100 where no loss is taken): their mean, what
    ``model(**batch).loss`` gives, or with ``reduction="sum"`` their sum; the output matrix is
    applied only where a label follows. FIM examples take the loss on the middle alone (a tenth
    of the tokens); the rest of the logits are wasted work, and a 262k-token vocabulary (Gemma 3)
    makes the output matrix as costly as all the layers."""
    import torch

    labels = batch["labels"]
    targets = labels[:, 1:]
    keep = (targets != -100).any(dim=0).nonzero().flatten()
    if len(keep) == 0 or len(keep) * 2 > targets.shape[1]:  # most positions labelled: plain forward
        if reduction == "mean":
            return model(**batch).loss
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        kept_targets = targets
    else:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       logits_to_keep=keep).logits
        kept_targets = targets[:, keep]
    return torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), kept_targets.reshape(-1),
                                             ignore_index=-100, reduction=reduction)


def labelled_tokens(examples: list[Any]) -> int:
    """Positions with a loss in ``examples`` (``Example.labels`` not -100, the first one aside:
    it predicts nothing), what ``causal_lm_loss(..., "sum")`` adds up."""
    return sum(sum(1 for x in ex.labels[1:] if x != -100) for ex in examples)
