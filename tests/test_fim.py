"""slm_lsp.engine.fim: template detection (metadata, token texts, fallback) and JSON files."""

from __future__ import annotations

from pathlib import Path

import pytest

from slm_lsp.engine.fim import FALLBACK, FAMILIES, PREFIX_ONLY, PSM, SPM, FimTemplate, detect_template
from tests.conftest import TINY_MODEL, TINY_MODEL_NO_FIM_METADATA

QWEN = dict(FAMILIES)["qwen"]


class FakeVocab:
    """A vocabulary of special tokens: ids are positions in ``texts``."""

    def __init__(self, *texts: str) -> None:
        self.texts = list(texts)

    def id(self, text: str) -> str:
        return str(self.texts.index(text))  # llama-cpp-python metadata values are strings

    def token_text(self, tid: int) -> str:
        return self.texts[tid]

    def is_single_token(self, text: str) -> bool:
        return text in self.texts


def _detect(metadata: dict[str, str], vocab: FakeVocab) -> FimTemplate:
    return detect_template(metadata, vocab.token_text, vocab.is_single_token)


QWEN_VOCAB = FakeVocab("<|endoftext|>", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "<|fim_pad|>",
                       "<|repo_name|>", "<|file_sep|>")


def _qwen_metadata(**extra: str) -> dict[str, str]:
    v = QWEN_VOCAB
    return {
        "general.name": "Qwen2.5 Coder 1.5B",
        "tokenizer.ggml.fim_pre_token_id": v.id("<|fim_prefix|>"),
        "tokenizer.ggml.fim_suf_token_id": v.id("<|fim_suffix|>"),
        "tokenizer.ggml.fim_mid_token_id": v.id("<|fim_middle|>"),
        "tokenizer.ggml.fim_pad_token_id": v.id("<|fim_pad|>"),
        "tokenizer.ggml.fim_rep_token_id": v.id("<|repo_name|>"),
        "tokenizer.ggml.fim_sep_token_id": v.id("<|file_sep|>"),
        **extra,
    }


# -- metadata ---------------------------------------------------------------------------------
def test_metadata_ids_of_a_known_family():
    t = _detect(_qwen_metadata(), QWEN_VOCAB)
    assert t.name == "qwen2.5-coder"
    assert t.layout == PSM
    assert (t.prefix, t.suffix, t.middle) == ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>")
    assert (t.repo_name, t.file_sep) == ("<|repo_name|>", "<|file_sep|>")
    assert t.stop[:len(QWEN.stop)] == QWEN.stop
    assert len(set(t.stop)) == len(t.stop)  # pad and file_sep are already in the family's stops
    assert t.is_fim


def test_metadata_wins_over_token_texts():
    """Token texts of another family are in the vocabulary; the metadata ids decide."""
    vocab = FakeVocab("<fim_prefix>", "<fim_suffix>", "<fim_middle>", "[PREFIX]", "[SUFFIX]", "[MIDDLE]")
    metadata = {"general.name": "starcoder-ish",
                "tokenizer.ggml.fim_pre_token_id": vocab.id("[PREFIX]"),
                "tokenizer.ggml.fim_suf_token_id": vocab.id("[SUFFIX]"),
                "tokenizer.ggml.fim_mid_token_id": vocab.id("[MIDDLE]")}
    t = _detect(metadata, vocab)
    assert t.name == "codestral"
    assert t.layout == SPM
    assert (t.prefix, t.suffix, t.middle) == ("[PREFIX]", "[SUFFIX]", "[MIDDLE]")


def test_metadata_of_an_unknown_family():
    vocab = FakeVocab("<PRE>", "<SUF>", "<MID>", "<PAD>", "<EOT>", "<SEP>")
    metadata = {"tokenizer.ggml.fim_pre_token_id": vocab.id("<PRE>"),
                "tokenizer.ggml.fim_suf_token_id": vocab.id("<SUF>"),
                "tokenizer.ggml.fim_mid_token_id": vocab.id("<MID>"),
                "tokenizer.ggml.fim_pad_token_id": vocab.id("<PAD>"),
                "tokenizer.ggml.fim_sep_token_id": vocab.id("<SEP>")}
    t = _detect(metadata, vocab)
    assert t.name == "gguf-metadata"
    assert t.layout == PSM
    assert (t.prefix, t.suffix, t.middle) == ("<PRE>", "<SUF>", "<MID>")
    assert t.stop == ("<PAD>", "<SEP>")
    assert t.repo_name == ""
    assert t.file_sep == "<SEP>"


def test_legacy_metadata_keys():
    """Older GGUFs name the FIM tokens tokenizer.ggml.prefix_token_id etc."""
    vocab = FakeVocab("<PRE>", "<SUF>", "<MID>")
    metadata = {"tokenizer.ggml.prefix_token_id": "0", "tokenizer.ggml.suffix_token_id": "1",
                "tokenizer.ggml.middle_token_id": "2"}
    t = _detect(metadata, vocab)
    assert (t.name, t.prefix, t.suffix, t.middle) == ("gguf-metadata", "<PRE>", "<SUF>", "<MID>")


def test_metadata_repo_tokens_missing_from_the_vocabulary_are_dropped():
    """A family's repo-level tokens are used only when the vocabulary has them."""
    vocab = FakeVocab("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>")
    metadata = {"tokenizer.ggml.fim_pre_token_id": "0", "tokenizer.ggml.fim_suf_token_id": "1",
                "tokenizer.ggml.fim_mid_token_id": "2"}
    t = _detect(metadata, vocab)
    assert t.prefix == "<|fim_prefix|>"
    assert (t.repo_name, t.file_sep) == ("", "")


def test_metadata_family_follows_the_name_hint():
    """CodeGemma and Qwen share their FIM token texts: the model's name tells them apart."""
    vocab = FakeVocab("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "<|file_separator|>")
    metadata = {"general.name": "CodeGemma 2B", "tokenizer.ggml.prefix_token_id": "0",
                "tokenizer.ggml.suffix_token_id": "1", "tokenizer.ggml.middle_token_id": "2"}
    t = _detect(metadata, vocab)
    assert t.name == "codegemma"
    assert "<|file_separator|>" in t.stop


@pytest.mark.parametrize("bad", [
    {"tokenizer.ggml.fim_mid_token_id": "-1"},  # "no such token"
    {"tokenizer.ggml.fim_mid_token_id": "n/a"},  # not a number
])
def test_incomplete_metadata_falls_back_to_token_texts(bad):
    metadata = _qwen_metadata(**bad)
    t = _detect(metadata, QWEN_VOCAB)
    assert t == QWEN  # found by its token texts instead


def test_incomplete_metadata_without_known_tokens_is_prefix_only():
    vocab = FakeVocab("<PRE>", "<SUF>")
    metadata = {"tokenizer.ggml.fim_pre_token_id": "0", "tokenizer.ggml.fim_suf_token_id": "1"}
    assert _detect(metadata, vocab) == FALLBACK


# -- token texts ------------------------------------------------------------------------------
@pytest.mark.parametrize(("hint", "family"), FAMILIES, ids=[t.name for _, t in FAMILIES])
def test_each_family_is_found_by_its_token_texts(hint, family):
    vocab = FakeVocab("<unk>", family.prefix, family.suffix, family.middle)
    t = _detect({"general.name": f"Some {hint} model"}, vocab)
    assert t is family


@pytest.mark.parametrize(("hint", "family"), FAMILIES, ids=[t.name for _, t in FAMILIES])
def test_family_tokens_without_a_name_hint(hint, family):
    vocab = FakeVocab(family.prefix, family.suffix, family.middle)
    t = _detect({}, vocab)
    # Families sharing token texts are ambiguous without a name: the first in FAMILIES wins.
    first = next(f for _, f in FAMILIES if (f.prefix, f.suffix, f.middle) == (family.prefix, family.suffix,
                                                                             family.middle))
    assert t is first


def test_name_hint_breaks_ties_between_families():
    codegemma = dict(FAMILIES)["codegemma"]
    vocab = FakeVocab(QWEN.prefix, QWEN.suffix, QWEN.middle)
    assert _detect({}, vocab) is QWEN
    assert _detect({"general.name": "CodeGemma 7B"}, vocab) is codegemma
    assert _detect({"general.basename": "codegemma"}, vocab) is codegemma
    assert _detect({"general.name": "Qwen2.5 Coder"}, vocab) is QWEN


def test_name_hint_alone_does_not_pick_a_family():
    vocab = FakeVocab("<|fim_prefix|>", "<|fim_suffix|>")  # no middle token
    assert _detect({"general.name": "qwen2.5-coder"}, vocab) == FALLBACK


def test_prefix_only_fallback():
    t = _detect({"general.name": "llama"}, FakeVocab("<s>", "</s>"))
    assert t == FALLBACK
    assert t.layout == PREFIX_ONLY
    assert not t.is_fim


# -- JSON -------------------------------------------------------------------------------------
def test_json_round_trip():
    t = FimTemplate("custom", SPM, "<a>", "<b>", "<c>", ("<x>", "<y>"), "<r>", "<f>", {"note": "hi"})
    back = FimTemplate.from_json(t.to_json())
    assert back == t
    assert back.stop == ("<x>", "<y>") and isinstance(back.stop, tuple)
    assert back.extra == {"note": "hi"}  # not part of ==, so checked by itself


@pytest.mark.parametrize("template", [t for _, t in FAMILIES] + [FALLBACK], ids=lambda t: t.name)
def test_known_templates_round_trip(template):
    assert FimTemplate.from_json(template.to_json()) == template


def test_from_json_ignores_unknown_keys_and_fills_defaults():
    t = FimTemplate.from_json('{"name": "x", "prefix": "<p>", "future_field": 1}')
    assert t == FimTemplate("x", PSM, "<p>")
    assert t.stop == ()


def test_save_and_load(tmp_path: Path):
    path = tmp_path / "fim.json"
    QWEN.save(path)
    assert FimTemplate.load(path) == QWEN
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fim.json"]  # no temporary file left
    FALLBACK.save(path)  # overwrite
    assert FimTemplate.load(path) == FALLBACK


def test_save_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The file is replaced in one step: a failure before the rename leaves the old one intact."""
    path = tmp_path / "fim.json"
    QWEN.save(path)
    before = path.read_text()

    def broken_replace(self: Path, target: Path) -> Path:
        raise OSError("disk gone")

    monkeypatch.setattr(Path, "replace", broken_replace)
    with pytest.raises(OSError):
        FALLBACK.save(path)
    assert path.read_text() == before
    assert FimTemplate.load(path) == QWEN


# -- real (tiny) models -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def runners():
    from slm_lsp.engine.model import LlamaRunner

    loaded = {name: LlamaRunner(str(path), threads=1, n_ctx=512)
              for name, path in [("fim", TINY_MODEL), ("no-fim", TINY_MODEL_NO_FIM_METADATA)]}
    yield loaded
    for runner in loaded.values():
        runner.close()


@pytest.mark.parametrize("which", ["fim", "no-fim"])
def test_tiny_models_are_qwen(runners, which):
    runner = runners[which]
    t = runner.template
    assert t.name == "qwen2.5-coder"
    assert t.layout == PSM
    assert (t.repo_name, t.file_sep) == ("<|repo_name|>", "<|file_sep|>")
    pre = runner.special("<|fim_prefix|>")
    assert runner.token_text(pre) == "<|fim_prefix|>"
    assert runner.tokenize("<|fim_prefix|>") != [pre]  # plain text is not parsed as a special token
    with pytest.raises(KeyError):
        runner.special("<|not_a_token|>")


def test_tiny_model_special_ids_match_metadata(runners):
    runner = runners["fim"]
    md = runner.metadata
    assert runner.special("<|fim_prefix|>") == int(md["tokenizer.ggml.fim_pre_token_id"])
    assert runner.special("<|fim_suffix|>") == int(md["tokenizer.ggml.fim_suf_token_id"])
    assert runner.special("<|fim_middle|>") == int(md["tokenizer.ggml.fim_mid_token_id"])
    # Both files share one vocabulary.
    assert runners["no-fim"].special("<|fim_prefix|>") == runner.special("<|fim_prefix|>")
    assert "tokenizer.ggml.fim_pre_token_id" not in runners["no-fim"].metadata
