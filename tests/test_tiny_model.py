"""Checks that tests/tiny_model.py builds a GGUF that llama-cpp-python loads and runs."""

from __future__ import annotations

import time

import pytest

llama_cpp = pytest.importorskip("llama_cpp")

from tests.tiny_model import SPECIAL_TOKENS, build_tiny_gguf

FIM_KEYS = {
    "tokenizer.ggml.fim_pre_token_id": "<|fim_prefix|>",
    "tokenizer.ggml.fim_suf_token_id": "<|fim_suffix|>",
    "tokenizer.ggml.fim_mid_token_id": "<|fim_middle|>",
    "tokenizer.ggml.fim_pad_token_id": "<|fim_pad|>",
    "tokenizer.ggml.fim_rep_token_id": "<|repo_name|>",
    "tokenizer.ggml.fim_sep_token_id": "<|file_sep|>",
}
CODE = "def add(a, b):\n    return a + b\n"


def _load(path):
    # One thread: the tiny model gains nothing from more, and spinning worker
    # threads on a busy 2-core machine make it orders of magnitude slower.
    return llama_cpp.Llama(model_path=str(path), n_ctx=512, verbose=False,
                           n_threads=1, n_threads_batch=1)


@pytest.fixture(scope="module")
def llm(tmp_path_factory):
    t0 = time.perf_counter()
    path = build_tiny_gguf(tmp_path_factory.mktemp("tiny") / "tiny.gguf")
    t1 = time.perf_counter()
    model = _load(path)
    t2 = time.perf_counter()
    print(f"\nbuild {1000 * (t1 - t0):.1f} ms, load {1000 * (t2 - t1):.1f} ms, "
          f"{path.stat().st_size / 1024:.0f} KiB")
    return model


def test_build_is_atomic_and_returns_path(tmp_path):
    path = tmp_path / "m.gguf"
    assert build_tiny_gguf(path) == path
    assert path.is_file()
    assert not path.with_suffix(".tmp").exists()


def test_metadata(llm):
    md = llm.metadata
    assert md["general.architecture"] == "llama"
    assert md["general.name"] == "tiny-qwen-coder"
    assert md["tokenizer.ggml.model"] == "gpt2"
    assert md["tokenizer.ggml.pre"] == "qwen2"
    assert int(md["llama.block_count"]) == 2
    assert int(md["llama.context_length"]) == 4096


def test_special_tokens_resolve_to_metadata_ids(llm):
    for key, text in FIM_KEYS.items():
        ids = llm.tokenize(text.encode(), add_bos=False, special=True)
        assert ids == [int(llm.metadata[key])], text
    for text in SPECIAL_TOKENS:
        assert len(llm.tokenize(text.encode(), add_bos=False, special=True)) == 1
    eot = llm.tokenize(b"<|endoftext|>", add_bos=False, special=True)[0]
    assert llm.token_eos() == eot


def test_fim_metadata_can_be_omitted(tmp_path):
    model = _load(build_tiny_gguf(tmp_path / "nofim.gguf", fim_metadata=False, name="plain"))
    assert model.metadata["general.name"] == "plain"
    assert not any(key in model.metadata for key in FIM_KEYS)
    # The tokens themselves are still in the vocabulary.
    assert len(model.tokenize(b"<|fim_middle|>", add_bos=False, special=True)) == 1


def test_tokenizer_round_trip(llm):
    ids = llm.tokenize(CODE.encode(), add_bos=False)
    assert llm.detokenize(ids).decode() == CODE
    assert len(ids) < len(CODE)  # the merges actually merge
    assert len(llm.tokenize(b"def", add_bos=False)) == 1
    assert len(llm.tokenize(b" return", add_bos=False)) == 1


def test_greedy_completion_is_visible_and_deterministic(llm):
    outs = []
    for prompt in [CODE, "import os\n", "class Foo:", "x = 1"]:
        first = llm.create_completion(prompt, max_tokens=8, temperature=0)
        second = llm.create_completion(prompt, max_tokens=8, temperature=0)
        text = first["choices"][0]["text"]
        print(f"{prompt!r} -> {text!r}")
        assert text.strip(), "completion must contain visible text"
        assert "\n" not in text
        assert first["choices"][0]["finish_reason"] == "length"
        assert second["choices"][0]["text"] == text
        outs.append(text)
    assert len(set(outs)) > 1, "output should depend on the prompt"


def test_seed_changes_weights(tmp_path):
    a = build_tiny_gguf(tmp_path / "a.gguf", seed=0).read_bytes()
    b = build_tiny_gguf(tmp_path / "b.gguf", seed=0).read_bytes()
    c = build_tiny_gguf(tmp_path / "c.gguf", seed=1).read_bytes()
    assert a == b and a != c
