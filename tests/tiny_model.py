"""Build a tiny, deterministic GGUF model for tests (no downloads needed).

The model is a 2-layer, 64-wide "llama" architecture network with a real
byte-level BPE tokenizer in the Qwen2.5-Coder style: the 256 GPT-2
byte-to-unicode tokens, a few hundred merges that spell common code tokens
("def", "return", "    ", ...) and Qwen's special tokens (<|endoftext|>,
<|fim_prefix|>, <|fim_middle|>, <|fim_suffix|>, <|fim_pad|>, <|repo_name|>,
<|file_sep|>). llama-cpp-python loads it in a few milliseconds.

Weight shaping trick
--------------------
Purely random weights make greedy decoding pick whatever token happens to
score best -- often <|endoftext|> (empty completion), a newline or a stray
UTF-8 continuation byte. Language-server tests want a *visible* completion,
so the weights are random (seeded, small std) except for one "bias" channel:

* every token embedding has a large constant in dimension 0, so the residual
  stream always carries a big positive x[0] (the layers only add small
  random updates, and RMSNorm keeps x[0] at roughly the same scale);
* output.weight[:, 0] is therefore a per-token bias on the final logits: high
  for identifier-like tokens ("self", " return", "x"), strongly negative for
  the end-of-text and other special tokens, whitespace, newlines and
  non-ASCII bytes.

Among the favoured tokens the winner is decided by the remaining (random)
dimensions, i.e. by the prompt, so greedy output is a deterministic run of
identifier-like text that varies with the prompt and never stops early
(generation always runs to max_tokens).
"""

from __future__ import annotations

import itertools
import os
import pathlib
import re

import gguf
import numpy as np

SPECIAL_TOKENS = [
    "<|endoftext|>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>",
    "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
]
# Code fragments that get their own token (a leading space is written "Ġ",
# a newline "Ċ", exactly as in GPT-2's byte-level vocabularies).
_WORDS = """in is if or as def del for and not try int str len None True False
self return import from class elif else while with pass break continue yield
lambda print range raise except finally assert async await global type list
dict set tuple object value name args kwargs result data path file line text
index count key item items append get open json os sys re np test main init
__init__ __name__ __main__ const let var function this new null true false
void public static string""".split()  # noqa: SIM905 (readable word list)
_PUNCT = ["()", "):", "(self", "),", "->", "==", "!=", "+=", "[]", "{}", "''",
          '""', "):Ċ", ":Ċ", "ĊĊ", "ĠĠ", "ĠĠĠ", "ĠĠĠĠ", "ĠĠĠĠĠĠĠ", "ĠĠĠĠĠĠĠĠ",
          ":Ġ", ",Ġ", "Ġ=", "Ġ==", "Ġ+", "Ġ-", "Ġ(", "Ġ{", "Ġ}", "Ġ->"]


def _byte_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable unicode character mapping."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def _bpe(word: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    """Plain BPE: repeatedly merge the lowest-ranked adjacent pair."""
    parts = list(word)
    while len(parts) > 1:
        pairs = [(ranks.get(p, 1 << 30), i) for i, p in enumerate(itertools.pairwise(parts))]
        rank, i = min(pairs)
        if rank == 1 << 30:
            break
        parts[i:i + 2] = [parts[i] + parts[i + 1]]
    return parts


def build_vocab() -> tuple[list[str], list[str], list[int]]:
    """Return (tokens, merges, token_types) of the tiny byte-level BPE tokenizer."""
    tokens = list(_byte_unicode().values())
    ranks: dict[tuple[str, str], int] = {}
    for target in _PUNCT + _WORDS + ["Ġ" + w for w in _WORDS]:
        # Add merges until the target is one token; each new merge has the
        # highest rank, so earlier targets keep tokenizing as one token.
        while len(parts := _bpe(target, ranks)) > 1:
            ranks[(parts[0], parts[1])] = len(ranks)
            tokens.append(parts[0] + parts[1])
    merges = [f"{a} {b}" for (a, b), _ in sorted(ranks.items(), key=lambda kv: kv[1])]
    types = [gguf.TokenType.NORMAL] * len(tokens) + [gguf.TokenType.CONTROL] * len(SPECIAL_TOKENS)
    return tokens + SPECIAL_TOKENS, merges, [int(t) for t in types]


def _logit_bias(tokens: list[str]) -> np.ndarray:
    """Per-token value of output.weight[:, 0] (see module docstring)."""
    u2b = {c: b for b, c in _byte_unicode().items()}
    bias = np.empty(len(tokens), dtype=np.float32)
    for i, tok in enumerate(tokens):
        if tok in SPECIAL_TOKENS:
            bias[i] = -4.0
            continue
        raw = bytes(u2b[c] for c in tok)
        text = raw.decode("ascii", errors="replace")
        if text.strip() in _WORDS:
            bias[i] = 3.0 if text.startswith(" ") else 2.5  # whole words: preferred
        elif re.fullmatch(r" ?[A-Za-z_][A-Za-z0-9_]*", text):
            bias[i] = 1.0  # letters and word fragments: fine, but words win
        elif re.fullmatch(r"[!-~]+", text):
            bias[i] = 0.0  # visible punctuation / digits: neutral
        else:
            bias[i] = -4.0  # whitespace, newlines, control and non-ASCII bytes
    return bias


def build_tiny_gguf(path: pathlib.Path, *, fim_metadata: bool = True, name: str = "tiny-qwen-coder",
                    seed: int = 0, n_layer: int = 2, n_embd: int = 64,
                    n_ctx_train: int = 4096, n_head: int = 4, n_head_kv: int = 2,
                    n_ff: int = 0, chat_template: str | None = None) -> pathlib.Path:
    """Write a tiny llama-architecture GGUF to `path` and return it (atomically: the
    file is written beside it, then renamed)."""
    path = pathlib.Path(path)
    tokens, merges, types = build_vocab()
    tid = {t: i for i, t in enumerate(tokens)}
    n_vocab, n_ff = len(tokens), n_ff or 2 * n_embd
    head_dim = n_embd // n_head
    rng = np.random.default_rng(seed)

    def rand(*shape: int, std: float = 0.05) -> np.ndarray:
        return (rng.standard_normal(shape) * std).astype(np.float32)

    tmp = path.with_suffix(".tmp")
    w = gguf.GGUFWriter(str(tmp), "llama")
    w.add_name(name)
    w.add_context_length(n_ctx_train)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_rope_dimension_count(head_dim)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)

    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    eot = tid["<|endoftext|>"]
    w.add_bos_token_id(eot)
    w.add_eos_token_id(eot)
    w.add_pad_token_id(eot)
    w.add_add_bos_token(False)
    if chat_template is not None:  # an "instruct" tiny model (edit actions need one)
        w.add_chat_template(chat_template)
    if fim_metadata:
        keys = gguf.Keys.Tokenizer
        for attr, literal, tok in [
            ("FIM_PRE_ID", "tokenizer.ggml.fim_pre_token_id", "<|fim_prefix|>"),
            ("FIM_SUF_ID", "tokenizer.ggml.fim_suf_token_id", "<|fim_suffix|>"),
            ("FIM_MID_ID", "tokenizer.ggml.fim_mid_token_id", "<|fim_middle|>"),
            ("FIM_PAD_ID", "tokenizer.ggml.fim_pad_token_id", "<|fim_pad|>"),
            ("FIM_REP_ID", "tokenizer.ggml.fim_rep_token_id", "<|repo_name|>"),
            ("FIM_SEP_ID", "tokenizer.ggml.fim_sep_token_id", "<|file_sep|>"),
        ]:
            w.add_uint32(getattr(keys, attr, literal), tid[tok])

    # Weights (numpy shapes are (out, in), as in torch.nn.Linear).
    emb = rand(n_vocab, n_embd, std=1.0)
    emb[:, 0] = 20.0  # the constant "bias" channel
    out = rand(n_vocab, n_embd, std=1.0)
    out[:, 0] = _logit_bias(tokens)
    ones = np.ones(n_embd, dtype=np.float32)
    w.add_tensor("token_embd.weight", emb)
    for i in range(n_layer):
        w.add_tensor(f"blk.{i}.attn_norm.weight", ones)
        w.add_tensor(f"blk.{i}.attn_q.weight", rand(n_embd, n_embd))
        w.add_tensor(f"blk.{i}.attn_k.weight", rand(n_head_kv * head_dim, n_embd))
        w.add_tensor(f"blk.{i}.attn_v.weight", rand(n_head_kv * head_dim, n_embd))
        w.add_tensor(f"blk.{i}.attn_output.weight", rand(n_embd, n_embd))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", ones)
        w.add_tensor(f"blk.{i}.ffn_gate.weight", rand(n_ff, n_embd))
        w.add_tensor(f"blk.{i}.ffn_up.weight", rand(n_ff, n_embd))
        w.add_tensor(f"blk.{i}.ffn_down.weight", rand(n_embd, n_ff))
    w.add_tensor("output_norm.weight", ones)
    w.add_tensor("output.weight", out)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    os.replace(tmp, path)
    return path
