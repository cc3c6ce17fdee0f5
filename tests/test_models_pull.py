"""``slm-lsp pull`` through huggingface_hub, against a fake hub on 127.0.0.1 (tests/fake_hub.py):
the command runs as a user runs it, with ``HF_ENDPOINT`` pointed at the fake hub and a Hugging
Face cache of its own."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import constants

from tests.conftest import TINY_MODEL
from tests.fake_hub import FakeHub, HubFile

GGUF = TINY_MODEL.read_bytes()
REPO, FILE = "tiny/Coder-GGUF", "tiny-coder-q4.gguf"
SPEC = f"hf:{REPO}/{FILE}"


@pytest.fixture
def hub():
    hub = FakeHub().start()
    yield hub
    hub.stop()


def slm(hub_url: str, cache: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "HF_ENDPOINT": hub_url, "HF_HOME": str(cache.parent), "HF_HUB_CACHE": str(cache),
                **env}
    return subprocess.run([sys.executable, "-m", "slm_lsp", *args], env=full_env, capture_output=True, text=True,
                          timeout=120)


def clean_failure(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    return out.stderr


def test_pull_downloads_into_the_shared_cache_and_the_model_runs_from_there(hub, tmp_path):
    commit = hub.add(REPO, FILE, HubFile(GGUF))
    cache = tmp_path / "hf" / "hub"
    out = slm(hub.url, cache, "pull", SPEC)
    assert out.returncode == 0, out.stderr
    path = Path(out.stdout.strip())
    assert path == cache / f"models--{REPO.replace('/', '--')}" / "snapshots" / commit / FILE
    assert path.read_bytes() == GGUF
    assert "checking SHA-256" in out.stderr
    # the model is named by its spec from now on, without the hub
    src = tmp_path / "a.py"
    src.write_text("def f(x):\n    return x\n")
    out = slm("http://127.0.0.1:9", cache, "complete", f"{src}:2:12", "--model", SPEC, "--threads", "1",
              "--repeat", "1")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip()


def test_pull_pins_a_revision(hub, tmp_path):
    hub.add(REPO, FILE, HubFile(GGUF))
    v1 = hub.add(REPO, FILE, HubFile(GGUF + b"\0" * 64), revision="v1")
    cache = tmp_path / "hf" / "hub"
    out = slm(hub.url, cache, "pull", f"{SPEC}@v1")
    assert out.returncode == 0, out.stderr
    path = Path(out.stdout.strip())
    assert path.parent.name == v1 and path.read_bytes() == GGUF + b"\0" * 64
    assert {r.path for r in hub.gets()} == {f"/{REPO}/resolve/v1/{FILE}"}
    out = slm(hub.url, cache, "doctor", "--model", f"{SPEC}@v1")
    assert str(path) in out.stdout


def test_a_file_whose_sha256_differs_from_the_hubs_is_refused_and_removed(hub, tmp_path):
    hub.add(REPO, FILE, HubFile(GGUF, reported_sha256="0" * 64))
    cache = tmp_path / "hf" / "hub"
    err = clean_failure(slm(hub.url, cache, "pull", SPEC))
    assert "SHA-256" in err and "0" * 64 in err and "removed" in err
    assert not [p for p in cache.rglob("*") if p.is_file() and p.stat().st_size >= len(GGUF)]
    out = slm(hub.url, cache, "doctor", "--model", SPEC)
    assert "is not downloaded yet" in out.stdout


def test_a_small_file_is_checked_against_its_git_blob_hash(hub, tmp_path):
    hub.add(REPO, FILE, HubFile(GGUF, lfs=False))
    out = slm(hub.url, tmp_path / "hf" / "hub", "pull", SPEC)
    assert out.returncode == 0, out.stderr


def test_a_transfer_broken_halfway_is_resumed(hub, tmp_path):
    # huggingface_hub writes what it received in chunks of DOWNLOAD_CHUNK_SIZE (10 MB): a file of
    # several chunks, broken after the first, resumes from there.
    big = GGUF + bytes(3 * constants.DOWNLOAD_CHUNK_SIZE)
    hub.add(REPO, FILE, HubFile(big, break_first_get_at=2 * constants.DOWNLOAD_CHUNK_SIZE))
    out = slm(hub.url, tmp_path / "hf" / "hub", "pull", SPEC)
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()).read_bytes() == big
    first, resumed = hub.gets()
    assert first.range is None
    assert resumed.range is not None and 0 < int(resumed.range.removeprefix("bytes=").rstrip("-")) < len(big)


def test_a_file_another_tool_downloaded_is_not_downloaded_again(hub, tmp_path):
    hub.add(REPO, FILE, HubFile(GGUF))
    cache = tmp_path / "hf" / "hub"
    other_tool = (f"from huggingface_hub import hf_hub_download; "
                  f"print(hf_hub_download({REPO!r}, {FILE!r}, cache_dir={str(cache)!r}))")
    first = subprocess.run([sys.executable, "-c", other_tool], capture_output=True, text=True, timeout=60,
                           env={**os.environ, "HF_ENDPOINT": hub.url})
    assert first.returncode == 0, first.stderr
    assert len(hub.gets()) == 1
    out = slm(hub.url, cache, "pull", SPEC)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == first.stdout.strip()
    assert len(hub.gets()) == 1  # checked with HEAD requests only


def test_offline_pull_uses_the_cache_or_says_it_is_offline(hub, tmp_path):
    hub.add(REPO, FILE, HubFile(GGUF))
    cache = tmp_path / "hf" / "hub"
    err = clean_failure(slm(hub.url, cache, "pull", SPEC, HF_HUB_OFFLINE="1"))
    assert "HF_HUB_OFFLINE is set" in err and "not in the Hugging Face cache" in err
    assert hub.requests == []
    downloaded = slm(hub.url, cache, "pull", SPEC).stdout.strip()
    requests = len(hub.requests)
    out = slm(hub.url, cache, "pull", SPEC, HF_HUB_OFFLINE="1")
    assert out.returncode == 0 and out.stdout.strip() == downloaded
    assert len(hub.requests) == requests  # not even huggingface_hub's own /api requests


def test_an_unreachable_hub_is_one_clear_error(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    err = clean_failure(slm(closed, tmp_path / "hf" / "hub", "pull", SPEC))
    assert "could not be reached" in err and closed in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(("spec", "message"), [
    (f"hf:nobody/nothing/{FILE}", "nobody/nothing was not found on the hub"),
    (f"hf:{REPO}/other.gguf", f"other.gguf not found in {REPO} at revision main"),
    (f"{SPEC}@v9", f"revision v9 not found in {REPO}"),
    ("hf:not-a-spec", "expected hf:OWNER/REPO/FILE.gguf"),
])
def test_what_the_hub_does_not_have_is_named(hub, tmp_path, spec, message):
    hub.add(REPO, FILE, HubFile(GGUF))
    err = clean_failure(slm(hub.url, tmp_path / "hf" / "hub", "pull", spec))
    assert message in err


def test_a_file_that_is_not_gguf_is_refused(hub, tmp_path):
    hub.add(REPO, FILE, HubFile(b"<html>not a model</html>"))
    err = clean_failure(slm(hub.url, tmp_path / "hf" / "hub", "pull", SPEC))
    assert "not a GGUF file" in err
