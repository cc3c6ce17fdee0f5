"""Model names → files: hf: specs, Ollama's manifests, LM Studio's folders, the Hugging Face cache
laid out as huggingface_hub lays it out, in a temporary HOME, with the tiny GGUF model as the file."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import constants

from slm_lsp import models
from slm_lsp.models import HfFile, ModelNotFound, OllamaName, find_local_models, parse_hf, parse_ollama, resolve_model
from tests.conftest import TINY_MODEL

GGUF = TINY_MODEL.read_bytes()


def hf_cache_file(cache: Path, repo: str, filename: str, content: bytes, *, ref: str | None = "main",
                  commit: str | None = None) -> Path:
    """A file in the Hugging Face cache as hf_hub_download leaves it: the blob named by its SHA-256,
    a snapshot link per commit, a ref file naming the commit of a branch."""
    storage = cache / f"models--{repo.replace('/', '--')}"
    commit = commit or hashlib.sha1(f"{repo}{ref}".encode()).hexdigest()
    blob = storage / "blobs" / hashlib.sha256(content).hexdigest()
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(content)
    pointer = storage / "snapshots" / commit / filename
    pointer.parent.mkdir(parents=True, exist_ok=True)
    pointer.symlink_to(os.path.relpath(blob, pointer.parent))
    if ref:
        (storage / "refs").mkdir(exist_ok=True)
        (storage / "refs" / ref).write_text(commit)
    return pointer


def ollama_model(store: Path, name: str, content: bytes, *, layer: str = models.OLLAMA_MODEL_LAYER) -> Path:
    """A model as `ollama pull NAME` leaves it: blobs by digest, a manifest per name and tag."""
    parsed = parse_ollama(name)
    blobs = store / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)

    def blob(data: bytes, media_type: str) -> dict:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / f"sha256-{digest}").write_bytes(data)
        return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}

    manifest = {
        "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": blob(b'{"model_format": "gguf"}', "application/vnd.docker.container.image.v1+json"),
        "layers": [blob(content, layer), blob(b"{{ .Prompt }}", "application/vnd.ollama.image.template")],
    }
    path = store / "manifests" / parsed.host / parsed.namespace / parsed.model / parsed.tag
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest))
    return blobs / f"sha256-{hashlib.sha256(content).hexdigest()}"


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A HOME with nothing in it, a Hugging Face cache and slm-lsp cache of its own."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("OLLAMA_MODELS", raising=False)
    monkeypatch.delenv("SLM_LSP_MODEL", raising=False)
    monkeypatch.setenv("SLM_LSP_CACHE", str(home / ".cache" / "slm-lsp"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / ".cache" / "huggingface" / "hub"))
    return home


# -- names -----------------------------------------------------------------------------------------


def test_hf_specs_with_and_without_a_revision():
    assert parse_hf("hf:Qwen/Repo-GGUF/q4.gguf") == HfFile("Qwen/Repo-GGUF", "q4.gguf")
    assert parse_hf("hf:o/r/sub/dir/m.gguf@v1.2") == HfFile("o/r", "sub/dir/m.gguf", "v1.2")
    assert parse_hf("hf:o/r/m.gguf@v1.2").spec == "hf:o/r/m.gguf@v1.2"
    for bad in ("hf:o/m.gguf", "hf:o/r/m.bin", "hf:o//m.gguf", "hf:o/r/m.gguf@"):
        with pytest.raises(ValueError):
            parse_hf(bad)


def test_ollama_names_as_ollama_writes_them():
    assert parse_ollama("ollama:qwen2.5-coder:1.5b") == OllamaName("registry.ollama.ai", "library", "qwen2.5-coder",
                                                                   "1.5b")
    assert parse_ollama("ollama:llama3.2").tag == "latest"
    assert parse_ollama("ollama:someone/coder:q4").namespace == "someone"
    named = parse_ollama("ollama:hf.co/bartowski/Qwen-GGUF:Q4_K_M")
    assert (named.host, named.namespace, named.model, named.tag) == ("hf.co", "bartowski", "Qwen-GGUF", "Q4_K_M")
    for name in ("qwen2.5-coder:1.5b", "llama3.2:latest", "someone/coder:q4", "hf.co/bartowski/Qwen-GGUF:Q4_K_M"):
        assert parse_ollama(name).short == name
    for bad in ("ollama:../../etc/passwd", "ollama:a/b/c/d", "ollama:", "ollama:x:"):
        with pytest.raises(ValueError):
            parse_ollama(bad)


# -- resolution ------------------------------------------------------------------------------------


def test_ollama_model_resolves_to_its_blob_through_the_manifest(home):
    blob = ollama_model(home / ".ollama" / "models", "qwen2.5-coder:1.5b", GGUF)
    assert resolve_model("ollama:qwen2.5-coder:1.5b") == blob
    with pytest.raises(ModelNotFound, match="ollama pull qwen2.5-coder:latest"):
        resolve_model("ollama:qwen2.5-coder")  # the default tag is latest, which was not pulled


def test_ollama_default_tag_and_ollama_models_folder(home, tmp_path, monkeypatch):
    store = tmp_path / "elsewhere"
    blob = ollama_model(store, "coder", GGUF)
    with pytest.raises(ModelNotFound, match="OLLAMA_MODELS"):
        resolve_model("ollama:coder")
    monkeypatch.setenv("OLLAMA_MODELS", str(store))
    assert resolve_model("ollama:coder") == blob == resolve_model("ollama:coder:latest")


def test_ollama_manifest_that_points_outside_the_blobs_is_refused(home):
    store = home / ".ollama" / "models"
    ollama_model(store, "coder:x", GGUF)
    manifest = store / "manifests" / "registry.ollama.ai" / "library" / "coder" / "x"
    data = json.loads(manifest.read_text())
    data["layers"][0]["digest"] = "sha256:../../../../etc/passwd"
    manifest.write_text(json.dumps(data))
    with pytest.raises(ModelNotFound, match="unexpected digest"):
        resolve_model("ollama:coder:x")


def test_ollama_blob_that_is_not_gguf_is_refused(home):
    ollama_model(home / ".ollama" / "models", "coder:safetensors", b"not a gguf file")
    with pytest.raises(ModelNotFound, match="not a GGUF"):
        resolve_model("ollama:coder:safetensors")


def test_hf_spec_resolves_from_the_shared_hf_cache_at_its_revision(home):
    cache = Path(constants.HF_HUB_CACHE)
    main = hf_cache_file(cache, "o/r", "m.gguf", GGUF)
    pinned = hf_cache_file(cache, "o/r", "m.gguf", GGUF + b"v1", ref="v1")
    assert resolve_model("hf:o/r/m.gguf") == main
    assert resolve_model("hf:o/r/m.gguf@v1") == pinned
    assert resolve_model(f"hf:o/r/m.gguf@{pinned.parent.name}") == pinned
    with pytest.raises(ModelNotFound, match="slm-lsp pull hf:o/r/m.gguf@v2"):
        resolve_model("hf:o/r/m.gguf@v2")


def test_default_model_comes_from_the_hf_cache_then_the_older_slm_lsp_cache(home):
    with pytest.raises(ModelNotFound, match="slm-lsp doctor"):
        resolve_model("")
    default = parse_hf(models.CATALOG[models.DEFAULT_MODEL])
    legacy = models.legacy_cached_path(default)
    legacy.parent.mkdir(parents=True)
    legacy.write_bytes(GGUF)
    assert resolve_model("") == legacy  # downloaded by an earlier slm-lsp: no second download
    cached = hf_cache_file(Path(constants.HF_HUB_CACHE), default.repo, default.filename, GGUF)
    assert resolve_model("") == cached == resolve_model(models.DEFAULT_MODEL)


# -- listing ---------------------------------------------------------------------------------------


def test_models_on_disk_are_listed_with_names_that_resolve_back(home):
    cache = Path(constants.HF_HUB_CACHE)
    hf_main = hf_cache_file(cache, "Qwen/Coder-GGUF", "coder-q4.gguf", GGUF)
    hf_pinned = hf_cache_file(cache, "Qwen/Coder-GGUF", "coder-q4.gguf", GGUF + b"old", ref=None,
                              commit="c" * 40)  # a revision that no branch points at any more
    hf_cache_file(cache, "Qwen/Coder-GGUF", "mmproj-coder-f16.gguf", GGUF)  # a vision projector
    hf_cache_file(cache, "o/split", "big-00002-of-00002.gguf", GGUF)  # not loadable on its own
    hf_cache_file(cache, "o/split", "big-00001-of-00002.gguf", GGUF)
    hf_cache_file(cache, "o/r", "config.json", b"{}")
    ollama_blob = ollama_model(home / ".ollama" / "models", "qwen2.5-coder:1.5b", GGUF + b"ollama")
    ollama_model(home / ".ollama" / "models", "someone/notgguf:1", b"safetensors")
    broken = home / ".ollama" / "models" / "manifests" / "registry.ollama.ai" / "library" / "broken" / "latest"
    broken.parent.mkdir(parents=True)
    broken.write_text("{not json")
    lmstudio = home / ".lmstudio" / "models" / "lmstudio-community" / "Coder-GGUF" / "Coder-Q4_K_M.gguf"
    old_lmstudio = home / ".cache" / "lm-studio" / "models" / "TheBloke" / "X-GGUF" / "x.Q4_K_M.gguf"
    for path in (lmstudio, old_lmstudio):
        path.parent.mkdir(parents=True)
        path.write_bytes(GGUF)
    (lmstudio.parent / "README.md").write_text("not a model")

    found, unreadable = find_local_models()
    assert unreadable == []
    by_name = {m.name: m for m in found}
    assert set(by_name) == {
        "hf:Qwen/Coder-GGUF/coder-q4.gguf", f"hf:Qwen/Coder-GGUF/coder-q4.gguf@{'c' * 40}",
        "hf:o/split/big-00001-of-00002.gguf", "ollama:qwen2.5-coder:1.5b", str(lmstudio), str(old_lmstudio)}
    assert by_name["hf:Qwen/Coder-GGUF/coder-q4.gguf"].path == hf_main
    assert by_name["ollama:qwen2.5-coder:1.5b"].source == "Ollama"
    assert by_name[str(lmstudio)].source == by_name[str(old_lmstudio)].source == "LM Studio"
    for model in found:  # what the listing offers is what model.path accepts
        assert resolve_model(model.name) == model.path
        assert model.size == model.path.stat().st_size
    assert resolve_model(f"hf:Qwen/Coder-GGUF/coder-q4.gguf@{'c' * 40}") == hf_pinned
    assert resolve_model("ollama:qwen2.5-coder:1.5b") == ollama_blob


def test_nothing_on_disk_lists_nothing(home):
    assert find_local_models() == ([], [])


# -- the command line, in a HOME of its own ----------------------------------------------------------


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HOME", "HF_HUB_CACHE", "XDG_CACHE_HOME")}
    env.update(HOME=str(home), SLM_LSP_CACHE=str(home / ".cache" / "slm-lsp"))
    return env


@pytest.mark.parametrize("hf_home", [None, "elsewhere/hf"])
def test_doctor_lists_the_models_on_disk(tmp_path, hf_home):
    home = tmp_path / "home"
    env = _env(home)
    hf_cache = home / ".cache" / "huggingface" / "hub"
    if hf_home:  # HF_HOME moves the Hugging Face cache to HF_HOME/hub
        env["HF_HOME"] = str(tmp_path / hf_home)
        hf_cache = tmp_path / hf_home / "hub"
    hf_cache_file(hf_cache, "Qwen/Coder-GGUF", "coder-q4.gguf", GGUF)
    ollama_model(home / ".ollama" / "models", "qwen2.5-coder:1.5b", GGUF)
    out = subprocess.run([sys.executable, "-m", "slm_lsp", "doctor"], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    listing = out.stdout.split("models on disk")[1].split("config:")[0]
    assert "hf:Qwen/Coder-GGUF/coder-q4.gguf  (Hugging Face cache" in listing
    assert "ollama:qwen2.5-coder:1.5b" in listing and "(Ollama," in listing


def test_complete_runs_a_model_that_ollama_pulled(tmp_path):
    home = tmp_path / "home"
    ollama_model(home / ".ollama" / "models", "tiny-coder:1.5b", GGUF)
    src = tmp_path / "a.py"
    src.write_text("def f(x):\n    return x\n")
    out = subprocess.run([sys.executable, "-m", "slm_lsp", "complete", f"{src}:2:12", "--model",
                          "ollama:tiny-coder:1.5b", "--threads", "1", "--repeat", "1"],
                         env=_env(home), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "# model" in out.stderr and out.stdout.strip()


def test_a_source_that_cannot_be_read_costs_only_itself(home):
    Path(constants.HF_HUB_CACHE).parent.mkdir(parents=True)
    Path(constants.HF_HUB_CACHE).write_text("a file where the cache folder should be")
    blob = ollama_model(home / ".ollama" / "models", "coder:1", GGUF)
    found, unreadable = find_local_models()
    assert [m.path for m in found] == [blob]
    assert len(unreadable) == 1 and unreadable[0].startswith("Hugging Face cache: ")
