"""``slm-lsp doctor``: what the server would run with, and why; and where prompts go."""

from __future__ import annotations

import os
import platform
from typing import Any

from . import __version__
from .config import describe, merge_config
from .context.privacy import SECRET_FILES, destination, redact
from .models import (
    ModelNotFound,
    cache_dir,
    describe_local_models,
    find_local_models,
    hf_cache_dir,
    lmstudio_models_dirs,
    models_dir,
    ollama_models_dir,
    resolve_model,
)


def report(settings: dict[str, Any]) -> str:
    import llama_cpp

    from .engine.model import default_threads

    result = merge_config(settings)
    cfg = result.config
    gpu = bool(llama_cpp.llama_supports_gpu_offload())
    info = llama_cpp.llama_print_system_info().decode(errors="replace")
    backend = next((b for b in ("CUDA", "Metal", "Vulkan", "HIP", "SYCL") if b.upper() in info.upper()), "CPU")
    lines = [
        f"slm-lsp {__version__} (Python {platform.python_version()}, llama-cpp-python {llama_cpp.__version__})",
        f"build:        {backend}; GPU offload {'supported' if gpu else 'not supported (CPU-only build)'}",
        f"system:       {info.strip()}",
        f"threads:      {cfg.model.threads or default_threads()} ({'auto' if not cfg.model.threads else 'configured'}; "
        f"{os.cpu_count()} CPUs)",
        f"GPU layers:   {cfg.model.n_gpu_layers if cfg.model.n_gpu_layers >= 0 else ('all' if gpu else 0)}",
    ]
    try:
        path = resolve_model(cfg.model.path)
        lines.append(f"model:        {path} ({path.stat().st_size / 1e6:.0f} MB)")
    except ModelNotFound as exc:
        lines.append(f"model:        none: {exc}")
    lines += prompt_lines(cfg)
    lines += [f"cache:        {cache_dir()}", f"models dir:   {models_dir()} (older slm-lsp downloads)",
              f"HF cache:     {hf_cache_dir()} (slm-lsp pull downloads here)",
              f"Ollama:       {ollama_models_dir()}",
              f"LM Studio:    {', '.join(str(d) for d in lmstudio_models_dirs())}",
              f"SLM_LSP_MODEL={os.environ.get('SLM_LSP_MODEL', '')}"]
    found, unreadable = find_local_models()
    lines.append("models on disk (set slm.model.path or SLM_LSP_MODEL to a name below):" if found
                 else "models on disk: none found in the Hugging Face cache, Ollama or LM Studio folders")
    lines += [f"  {line}" for line in describe_local_models(found)]
    lines += [f"  could not read {error}" for error in unreadable]
    lines.append("config:")
    shown = {"remote.url": redact(cfg.remote.url)}  # a password in the URL is never printed
    lines += [f"  {name} = {shown.get(name, value)!r}" for name, value, _doc in describe(cfg)]
    lines += [f"config error: {e}" for e in result.errors]
    return "\n".join(lines)


def prompt_lines(cfg: Any) -> list[str]:
    """Where prompts (the user's code) go, what never goes there, and warnings."""
    where = destination(cfg)
    lines = [f"prompts:      {where.summary}"]
    if where.remote:
        remote = cfg.remote
        env = remote.api_key_env
        key = "set" if env and os.environ.get(env) else "not set: no key is sent"
        deny = ", ".join(remote.deny_files) or "none"
        lines += [f"API key:      from ${env} ({key})" if env else "API key:      none (remote.api_key_env is empty)",
                  f"never sent:   files named like secrets ({len(SECRET_FILES)} patterns: .env*, keys, certificates, "
                  f"credential files), files git ignores, remote.deny_files ({deny}), and text that looks "
                  "like a secret"]
    lines += [f"WARNING:      {warning}" for warning in where.warnings]
    return lines
