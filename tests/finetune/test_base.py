"""The base model side of finetune: reserved tokens as FIM sentinels for a model without FIM
(Gemma's ``<unusedN>``), the loss on the labelled positions only, and, where
``SLM_LSP_TEST_GEMMA`` names the Gemma 3 270M base GGUF, a short real run whose adapter the
server loads with the template it was trained with."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from finetune.base import GEMMA_UNUSED, LLAMA3_RESERVED, choose_template, served_template
from slm_lsp.engine.fim import FALLBACK, PSM, SPM, FimTemplate

GEMMA = os.environ.get("SLM_LSP_TEST_GEMMA", "")


class _Vocab:
    """A tokenizer stand-in that only knows which token texts exist (``choose_template`` reads no
    more), laid out like the real vocabularies."""

    def __init__(self, texts: list[str]) -> None:
        self.ids = {t: i for i, t in enumerate(texts)}

    def has_token(self, text: str) -> bool:
        return text in self.ids

    def token_text(self, tid: int) -> str:
        return next(t for t, i in self.ids.items() if i == tid)


# Gemma 3's first ids: <pad> <eos> <bos> <unk> <mask> [multimodal] <unused0>..<unused98>
# <start_of_turn> <end_of_turn>, then text; <unused99>..<unused6241> at the end.
GEMMA3_VOCAB = (["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "[multimodal]"]
                + [f"<unused{i}>" for i in range(99)] + ["<start_of_turn>", "<end_of_turn>", "\n", "def", "▁return"])


def test_gemma_gets_unused_tokens_as_fim_sentinels():
    template = choose_template({"general.name": "Gemma 3 270m", "general.basename": "gemma-3"},
                               _Vocab(GEMMA3_VOCAB))  # type: ignore[arg-type]
    assert template.name == GEMMA_UNUSED.name and template.layout == PSM
    sentinels = [template.prefix, template.suffix, template.middle, template.repo_name, template.file_sep]
    assert all(s.startswith("<unused") for s in sentinels) and len(set(sentinels)) == 5
    # A middle ends with <eos>, whose output row is trained (an <unusedN> end could not be
    # predicted: the adapter cannot move the tied output rows); the other sentinels also stop.
    assert template.stop[0] == "<eos>" and {"<unused3>", "<unused4>", "<end_of_turn>"} <= set(template.stop)
    assert FimTemplate.from_json(template.to_json()) == template  # what template.json holds


def test_reserved_templates_need_every_sentinel_and_the_end_token():
    few = ["<pad>", "<eos>", "<bos>"] + [f"<unused{i}>" for i in range(3)]  # no <unused3>, <unused4>
    assert choose_template({}, _Vocab(few)) == FALLBACK  # type: ignore[arg-type]
    no_eos = [t for t in GEMMA3_VOCAB if t != "<eos>"]
    assert choose_template({}, _Vocab(no_eos)) == FALLBACK  # type: ignore[arg-type]
    # Stop tokens a vocabulary lacks are left out (Gemma 1 has no <end_of_turn>).
    gemma1 = [t for t in GEMMA3_VOCAB if t != "<end_of_turn>"]
    assert "<end_of_turn>" not in choose_template({}, _Vocab(gemma1)).stop  # type: ignore[arg-type]


def test_own_fim_tokens_win_over_reserved_ones():
    codegemma = GEMMA3_VOCAB + ["<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "<|file_separator|>"]
    template = choose_template({"general.name": "codegemma 2b"}, _Vocab(codegemma))  # type: ignore[arg-type]
    assert template.name == "codegemma"
    llama3 = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"] + [f"<|reserved_special_token_{i}|>"
                                                                     for i in range(248)]
    assert choose_template({}, _Vocab(llama3)).name == LLAMA3_RESERVED.name  # type: ignore[arg-type]


def test_the_served_template_has_the_layout_most_examples_were_trained_in():
    """Mostly-SPM training serves SPM (the prefix last, continued by the middle), under its own
    name; otherwise, and for a prefix-only model, the template is the one trained with."""
    spm = served_template(GEMMA_UNUSED, 1.0)
    assert spm.layout == SPM and spm.name == f"{GEMMA_UNUSED.name}-spm"
    assert (spm.prefix, spm.suffix, spm.middle, spm.stop) == (GEMMA_UNUSED.prefix, GEMMA_UNUSED.suffix,
                                                              GEMMA_UNUSED.middle, GEMMA_UNUSED.stop)
    assert FimTemplate.from_json(spm.to_json()) == spm
    assert served_template(GEMMA_UNUSED, 0.5) == GEMMA_UNUSED
    assert served_template(GEMMA_UNUSED, 0.0) == GEMMA_UNUSED
    assert served_template(spm, 1.0) == spm  # already SPM: not renamed twice
    assert served_template(FALLBACK, 1.0) == FALLBACK


def test_loss_on_labelled_positions_equals_the_full_forward(tmp_path):
    """``causal_lm_loss`` applies the output matrix only where a label follows: the same loss and
    the same gradients as ``model(**batch).loss``, on a real (tiny) model with rows labelled at
    different positions."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("peft")
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from finetune.base import causal_lm_loss
    from tests.tiny_model import build_tiny_gguf

    path = build_tiny_gguf(tmp_path / "tiny.gguf", seed=3, name="tiny-llama-f32")
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file=path.name, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(10, 200, (2, 40), generator=gen)
    labels = torch.full_like(ids, -100)
    labels[0, 30:36] = ids[0, 30:36]
    labels[1, 12:15] = ids[1, 12:15]
    mask = torch.ones_like(ids)
    mask[1, 37:] = 0
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}

    def loss_and_grads(fn):
        model.zero_grad()
        loss = fn()
        loss.backward()
        return float(loss.detach()), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    full, full_grads = loss_and_grads(lambda: model(**batch).loss)
    kept, kept_grads = loss_and_grads(lambda: causal_lm_loss(model, batch))
    assert kept == pytest.approx(full, rel=1e-5)
    assert all(torch.allclose(kept_grads[n], g, atol=1e-6) for n, g in full_grads.items())
    # loss_per token: the sum over the labelled positions instead of their mean.
    n = int((labels[:, 1:] != -100).sum())
    summed = float(causal_lm_loss(model, batch, "sum").detach())
    assert summed == pytest.approx(full * n, rel=1e-5)
    most = labels.clone()
    most[:, 5:] = ids[:, 5:]  # most positions labelled: the plain forward path sums too
    batch_most = {**batch, "labels": most}
    mean_most = float(model(**batch_most).loss.detach())
    assert float(causal_lm_loss(model, batch_most, "sum").detach()) == pytest.approx(
        mean_most * int((most[:, 1:] != -100).sum()), rel=1e-5)


def test_the_converted_tokenizer_is_cached_and_tokenizes_alike(tmp_path, monkeypatch):
    """The tokenizer transformers converts from a GGUF is saved once (minutes for Gemma 3's
    262k tokens) and the saved one tokenizes exactly like a fresh conversion."""
    pytest.importorskip("transformers")
    from finetune.base import load_tokenizer, tokenizer_cache_dir
    from finetune.data import HFTokenizer
    from tests.tiny_model import build_tiny_gguf

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = build_tiny_gguf(tmp_path / "tiny.gguf", seed=3, name="tiny-llama-f32")
    kwargs = {"gguf_file": path.name}
    fresh = load_tokenizer(path, str(tmp_path), kwargs)
    cached_dir = tokenizer_cache_dir(path)
    assert (cached_dir / "tokenizer.json").is_file()
    assert not [p for p in cached_dir.parent.iterdir() if p != cached_dir]  # no temporary folder left
    cached = load_tokenizer(path, str(tmp_path), kwargs)
    assert cached.get_vocab() == fresh.get_vocab()
    text = "def area(w, h):\n    return w * h  # <|fim_prefix|> stays text\n\tprint('héllo')\n"
    assert HFTokenizer(cached).tokenize(text) == HFTokenizer(fresh).tokenize(text)
    st = path.stat()
    os.utime(path, (st.st_atime, st.st_mtime + 10))  # a changed file is converted again, kept apart
    assert tokenizer_cache_dir(path) != cached_dir


# -- the real base model ----------------------------------------------------------------------
needs_gemma = pytest.mark.skipif(not GEMMA, reason="SLM_LSP_TEST_GEMMA: the Gemma 3 270M base GGUF "
                                                  "(fetch-model gemma-3-270m)")


@needs_gemma
def test_gemma_base_loads_with_tied_output_and_unused_sentinels():
    """transformers 5 loads the Q4_K_M GGUF (dequantized), with its output matrix tied to the
    embedding (the GGUF has no output.weight: an untied, randomly initialised one would train
    against noise), and finetune picks the <unusedN> sentinels and <eos> as the end."""
    torch = pytest.importorskip("torch")
    from finetune.base import load_base

    base = load_base(GEMMA)
    assert base.template.name == GEMMA_UNUSED.name and base.arch == "gemma3"
    assert base.tokenizer.token_text(base.end_token) == "<eos>"
    assert torch.equal(base.model.get_output_embeddings().weight, base.model.get_input_embeddings().weight)


@needs_gemma
def test_gemma_finetune_writes_an_adapter_the_server_uses_with_its_sentinels(tmp_path):
    """Two steps of ``slm-lsp finetune --preset teach-fim`` on a small repo with a bit of the
    standard library: the adapter and template.json are written, and the server's runner applies
    the adapter and lays out prompts with the <unusedN> sentinels."""
    pytest.importorskip("torch")
    from finetune.config import from_args
    from finetune.lora import main
    from slm_lsp.engine.model import LlamaRunner
    from slm_lsp.engine.prompt import PromptBuilder, PromptRequest

    repo = Path(__file__).parent.parent / "data" / "finetune_repo"
    out = tmp_path / "out"
    cfg = from_args({"repo": str(repo), "base": GEMMA, "out": str(out), "preset": "teach-fim", "steps": 2,
                     "grad_accum": 1, "batch_size": 1, "seq_len": 128, "warmup_steps": 1, "eval_examples": 2,
                     "eval_lines": 0, "general_max_files": 20, "heldout_fraction": 0.3, "keep_anyway": True})
    assert main(cfg) == 0
    assert (out / "adapter.gguf").is_file()
    saved = FimTemplate.load(out / "template.json")
    assert saved == served_template(GEMMA_UNUSED, 1.0)  # the preset trains SPM only

    runner = LlamaRunner(GEMMA, threads=2, n_ctx=512)
    try:
        assert not runner.template.is_fim  # the base alone completes prefix-only
        runner.set_adapter(str(out / "adapter.gguf"))
        assert runner.template == saved
        prompt = PromptBuilder(runner.template, runner, 200, 100, runner.bos).build(
            PromptRequest("def add(a, b):\n    \n\nprint(add(1, 2))\n", 1, 4, "m.py"))
        ids = prompt.tokens
        pre, suf, mid = (runner.special(t) for t in (saved.prefix, saved.suffix, saved.middle))
        # SPM: the suffix first, then the prefix, which the middle continues (no middle token).
        assert ids.index(suf) < ids.index(pre) and mid not in ids
        assert ids[ids.index(pre) + 1:] == runner.tokenize(prompt.prefix)
        runner.set_adapter(None)
        assert runner.template == runner.base_template
    finally:
        runner.close()
