"""Fill-in-the-middle templates: which special tokens a model was trained with, and in what order.

Detection order: the GGUF metadata (``tokenizer.ggml.fim_*_token_id``), then a table of known
families found by their token texts, then a prefix-only fallback for models without FIM.
A template is plain data (JSON-serialisable) so that ``finetune`` can save the one it trained
with beside the adapter, and the server can load exactly that one.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

PSM = "psm"  # <pre> prefix <suf> suffix <mid>   (what nearly every coder model was trained on)
SPM = "spm"  # <suf> suffix <pre> prefix         (Codestral; the prefix comes last, so it is cheap to extend)
PREFIX_ONLY = "prefix-only"  # no FIM tokens: plain left-to-right continuation


@dataclass(frozen=True)
class FimTemplate:
    name: str
    layout: str = PSM
    prefix: str = ""
    """Text of the token that opens the prefix."""
    suffix: str = ""
    middle: str = ""
    stop: tuple[str, ...] = ()
    """Token texts that end a completion besides the model's end-of-generation tokens."""
    repo_name: str = ""
    """Repo-level format (Qwen2.5-Coder, StarCoder2): token that opens the repository name."""
    file_sep: str = ""
    """Repo-level format: token that opens each file, followed by its path."""
    extra: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    @property
    def is_fim(self) -> bool:
        return self.layout != PREFIX_ONLY

    def to_json(self) -> str:
        data = asdict(self)
        data["stop"] = list(self.stop)
        return json.dumps(data, indent=2)

    @classmethod
    def from_json(cls, text: str) -> "FimTemplate":
        data = json.loads(text)
        data["stop"] = tuple(data.get("stop", ()))
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(self.to_json())
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> "FimTemplate":
        return cls.from_json(path.read_text())


# Known families, most specific first. `name_hint` matches general.name / basename.
FAMILIES: list[tuple[str, FimTemplate]] = [
    ("qwen", FimTemplate("qwen2.5-coder", PSM, "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>",
                         ("<|endoftext|>", "<|fim_pad|>", "<|file_sep|>", "<|repo_name|>", "<|im_end|>"),
                         "<|repo_name|>", "<|file_sep|>")),
    ("codegemma", FimTemplate("codegemma", PSM, "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>",
                              ("<|file_separator|>", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"))),
    ("starcoder", FimTemplate("starcoder2", PSM, "<fim_prefix>", "<fim_suffix>", "<fim_middle>",
                              ("<|endoftext|>", "<file_sep>", "<fim_pad>"), "<repo_name>", "<file_sep>")),
    ("deepseek", FimTemplate("deepseek-coder", PSM, "<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>",
                             ("<|EOT|>", "<｜end▁of▁sentence｜>"))),
    ("codellama", FimTemplate("codellama", PSM, "▁<PRE>", "▁<SUF>", "▁<MID>", ("▁<EOT>",))),
    ("codestral", FimTemplate("codestral", SPM, "[PREFIX]", "[SUFFIX]", "[MIDDLE]", ())),
]

FALLBACK = FimTemplate("prefix-only", PREFIX_ONLY)

METADATA_KEYS = {
    "prefix": ("tokenizer.ggml.fim_pre_token_id", "tokenizer.ggml.prefix_token_id"),
    "suffix": ("tokenizer.ggml.fim_suf_token_id", "tokenizer.ggml.suffix_token_id"),
    "middle": ("tokenizer.ggml.fim_mid_token_id", "tokenizer.ggml.middle_token_id"),
    "repo_name": ("tokenizer.ggml.fim_rep_token_id",),
    "file_sep": ("tokenizer.ggml.fim_sep_token_id",),
    "pad": ("tokenizer.ggml.fim_pad_token_id",),
}


def _meta_token(metadata: Mapping[str, str], role: str, token_text: Callable[[int], str]) -> str:
    for key in METADATA_KEYS[role]:
        raw = metadata.get(key)
        if raw is None:
            continue
        try:
            tid = int(raw)
        except ValueError:
            continue
        if tid >= 0:
            return token_text(tid)
    return ""


def detect_template(
    metadata: Mapping[str, str],
    token_text: Callable[[int], str],
    is_single_token: Callable[[str], bool],
) -> FimTemplate:
    """Choose the FIM template of a loaded model.

    ``token_text(id)`` gives a token's text; ``is_single_token(text)`` says whether a special
    token with that exact text exists in the vocabulary.
    """
    name = (metadata.get("general.name", "") + " " + metadata.get("general.basename", "")).lower()
    # Families sharing token texts (Qwen and CodeGemma) are told apart by the model's name.
    ordered = sorted(FAMILIES, key=lambda ht: ht[0] not in name)
    pre, suf, mid = (_meta_token(metadata, r, token_text) for r in ("prefix", "suffix", "middle"))
    if pre and suf and mid:
        family = next((t for _hint, t in ordered if t.prefix == pre and t.suffix == suf), None)
        stop = list(family.stop if family else ())
        pad = _meta_token(metadata, "pad", token_text)
        if pad and pad not in stop:
            stop.append(pad)
        rep = _meta_token(metadata, "repo_name", token_text) or (family.repo_name if family else "")
        sep = _meta_token(metadata, "file_sep", token_text) or (family.file_sep if family else "")
        if sep and sep not in stop:
            stop.append(sep)
        layout = family.layout if family else PSM
        return FimTemplate(family.name if family else "gguf-metadata", layout, pre, suf, mid,
                           tuple(stop), rep if rep and is_single_token(rep) else "",
                           sep if sep and is_single_token(sep) else "")
    # No (complete) metadata: look for a known family's tokens, preferring one the name hints at.
    for _hint, template in ordered:
        if all(is_single_token(t) for t in (template.prefix, template.suffix, template.middle)):
            return template
    return FALLBACK
