"""Where models live, how a configured name becomes a file, and ``slm-lsp pull``.

``pull`` is the only code in slm-lsp that opens a network connection. Everything else resolves
models from local files: the config, ``SLM_LSP_MODEL``, then the user cache.
"""

from __future__ import annotations

import os
import sys
import time
import urllib.request
from pathlib import Path

DEFAULT_MODEL = "llama-3.2-3b"

# Short names for `slm-lsp pull NAME`. Base (not instruct) models where one exists: completion
# continues code, it does not chat.
CATALOG: dict[str, str] = {
    "llama-3.2-3b": "hf:QuantFactory/Llama-3.2-3B-GGUF/Llama-3.2-3B.Q4_K_M.gguf",
    "qwen2.5-coder-0.5b": "hf:Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    "qwen2.5-coder-1.5b": "hf:Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    "qwen2.5-coder-7b": "hf:Qwen/Qwen2.5-Coder-7B-Instruct-GGUF/qwen2.5-coder-7b-instruct-q4_k_m.gguf",
}


class ModelNotFound(Exception):
    pass


def cache_dir() -> Path:
    base = os.environ.get("SLM_LSP_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "slm-lsp")
    return Path(base)


def models_dir() -> Path:
    return cache_dir() / "models"


def parse_hf(spec: str) -> tuple[str, str]:
    """``hf:OWNER/REPO/FILE.gguf`` → (``OWNER/REPO``, ``FILE.gguf``)."""
    body = spec[3:] if spec.startswith("hf:") else spec
    parts = body.split("/")
    if len(parts) < 3 or not parts[-1].endswith(".gguf"):
        raise ValueError(f"expected hf:OWNER/REPO/FILE.gguf, got {spec!r}")
    return "/".join(parts[:2]), "/".join(parts[2:])


def cached_path(spec: str) -> Path:
    repo, file = parse_hf(spec)
    return models_dir() / f"{repo.replace('/', '--')}--{file.replace('/', '--')}"


def resolve_model(configured: str) -> Path:
    """The model file to load: the config, then ``SLM_LSP_MODEL``, then the cached default.

    Raises ``ModelNotFound`` with the exact command or setting that fixes it.
    """
    spec = configured or os.environ.get("SLM_LSP_MODEL", "")
    if spec in CATALOG:
        spec = CATALOG[spec]
    if spec.startswith("hf:"):
        path = cached_path(spec)
        if not path.is_file():
            raise ModelNotFound(f"{spec} is not downloaded yet: run `slm-lsp pull {spec}`")
        return path
    if spec:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise ModelNotFound(f"model file not found: {path} (set slm.model.path or SLM_LSP_MODEL to a GGUF file)")
        return path
    default = cached_path(CATALOG[DEFAULT_MODEL])
    if default.is_file():
        return default
    raise ModelNotFound(
        "no model configured: run `slm-lsp pull` to download the default model "
        f"({DEFAULT_MODEL}, Q4_K_M GGUF), or set slm.model.path / SLM_LSP_MODEL to a GGUF file")


def pull(name: str = DEFAULT_MODEL, *, endpoint: str | None = None, out=sys.stderr) -> Path:
    """Download a model into the user cache with a progress bar; atomic and resumable."""
    spec = CATALOG.get(name, name)
    repo, file = parse_hf(spec)
    dest = cached_path(spec)
    if dest.is_file():
        print(f"already downloaded: {dest}", file=out)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    base = endpoint or os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    url = f"{base.rstrip('/')}/{repo}/resolve/main/{file}"
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    token = os.environ.get("HF_TOKEN")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    print(f"downloading {url}", file=out)
    with urllib.request.urlopen(request, timeout=60) as resp:
        if have and resp.status != 206:
            have = 0  # the server ignored the range: start over
        total = have + int(resp.headers.get("Content-Length") or 0)
        t0, done = time.monotonic(), have
        with part.open("ab" if have else "wb") as fh:
            while chunk := resp.read(1 << 20):
                fh.write(chunk)
                done += len(chunk)
                rate = (done - have) / max(time.monotonic() - t0, 1e-6) / 1e6
                pct = f"{100 * done / total:5.1f}%" if total else ""
                print(f"\r{pct} {done / 1e6:8.1f} MB  {rate:6.1f} MB/s", end="", file=out, flush=True)
    print(file=out)
    with part.open("rb") as fh:
        if fh.read(4) != b"GGUF":
            raise ValueError(f"{url} did not return a GGUF file")
    part.replace(dest)
    print(f"saved {dest}", file=out)
    return dest
