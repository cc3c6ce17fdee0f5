"""The typed configuration tree: one dataclass per section, a default and a docstring per field.

Sources are merged in order: defaults < initializationOptions < workspace/configuration
section ``slm`` < CLI flags. Keys may be snake_case or camelCase (VS Code style). An invalid
value never stops the server: it is reported (``ConfigResult.errors``) and the default is kept.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, get_type_hints


@dataclass
class ModelConfig:
    path: str = ""
    """GGUF model file, or ``hf:REPO/FILE.gguf`` (downloaded by ``slm-lsp pull``). Empty: the
    ``SLM_LSP_MODEL`` environment variable, then the default model in the user cache."""

    n_gpu_layers: int = -1
    """Layers offloaded to the GPU. -1: all of them when the llama.cpp build can offload, else 0."""

    threads: int = 0
    """CPU threads for llama.cpp. 0: the number of CPU cores (at most 8)."""

    n_ctx: int = 4096
    """Context window in tokens. Must hold the prompt budgets plus ``completion.max_tokens``."""

    adapter: str = ""
    """A GGUF LoRA adapter to apply on top of the model (made by ``slm-lsp finetune``)."""


@dataclass
class CompletionConfig:
    prefix_tokens: int = 1024
    """Token budget for the code before the cursor (cut at a line boundary)."""

    suffix_tokens: int = 320
    """Token budget for the code after the cursor (cut at a line boundary). About 1/3 of the
    prefix budget: the suffix matters less and costs prompt time on every cold request."""

    max_tokens: int = 128
    """Most tokens generated for one completion."""

    max_lines: int = 12
    """Most lines in a multi-line completion."""

    time_budget_ms: int = 2000
    """Generation time budget: once spent, generation stops at the next line boundary."""

    enabled_languages: list[str] = field(default_factory=lambda: ["*"])
    """Language ids to complete (``"*"``: all). Example: ``["python", "rust"]``."""

    near_lines: int = 0
    """Lines after the cursor line that are evaluated again on every request, with the rest of
    the cursor line; the suffix beyond them is moved in the KV cache. The first suffix tokens'
    keys depend strongly on what was just typed (reusing them stale changes the answer); the
    ones further away barely do."""

    kv_shift: bool = True
    """Reuse the cached suffix across keystrokes by shifting it in the KV cache instead of
    re-evaluating it (what llama-server's ``--cache-reuse`` cannot do for insertions)."""

    suffix_refresh_tokens: int = 512
    """Re-evaluate the shifted suffix once this many prefix tokens changed under it, so its
    cached keys never drift far from what an exact evaluation would give."""


@dataclass
class ContextConfig:
    enabled: bool = True
    """Put code from other files of the workspace before the current one (repo-aware context):
    definitions of the names used near the cursor, similar snippets, recent edits, and the
    headers of the scopes around a cut prefix."""

    max_tokens: int = 1024
    """Token budget for that context. A file shorter than its prefix/suffix budgets lends them
    what it leaves unused. Clamped so that the prompt fits ``model.n_ctx``."""

    sources: list[str] = field(default_factory=lambda: ["definitions", "similar", "same_file", "recent"])
    """Context sources to use: ``definitions``, ``similar``, ``same_file``, ``recent``."""

    time_budget_ms: int = 50
    """Time budget of each context source per request; a late or failing source is skipped."""

    max_file_kb: int = 512
    """Files larger than this are not indexed."""

    max_files: int = 50000
    """At most this many files are indexed per workspace folder."""

    exclude: list[str] = field(default_factory=list)
    """Extra gitignore-style patterns of files not to index (``.gitignore`` files apply too)."""

    watch: bool = True
    """Keep the index live with file system events (watchdog)."""


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    """The GGUF model and how llama.cpp runs it."""

    completion: CompletionConfig = field(default_factory=CompletionConfig)
    """Prompt budgets and the shape of completions."""

    context: ContextConfig = field(default_factory=ContextConfig)
    """Repo-aware context: the workspace index and what goes into the prompt from it."""

    log_level: str = "info"
    """Server log level: debug, info, warning or error."""


LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass
class ConfigResult:
    config: Config
    errors: list[str]


def _snake(key: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()


def _check_value(name: str, value: Any, kind: Any) -> Any:
    """Return ``value`` converted to ``kind`` or raise ValueError with a message naming ``name``."""
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
            return int(value)
    elif kind is str:
        if isinstance(value, str):
            return value
    elif kind == list[str]:
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
    raise ValueError(f"{name}: expected {getattr(kind, '__name__', str(kind))}, got {value!r}")


def _merge_section(obj: Any, values: dict[str, Any], prefix: str, errors: list[str]) -> None:
    hints = get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    for raw_key, value in values.items():
        key = _snake(raw_key)
        name = f"{prefix}{key}"
        if key not in names:
            errors.append(f"{name}: unknown setting")
            continue
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if isinstance(value, dict):
                _merge_section(current, value, f"{name}.", errors)
            else:
                errors.append(f"{name}: expected a table of settings, got {value!r}")
            continue
        if value is None:
            continue
        try:
            setattr(obj, key, _check_value(name, value, hints[key]))
        except ValueError as exc:
            errors.append(str(exc))


def _validate(config: Config, errors: list[str]) -> None:
    """Range checks; an out-of-range field goes back to its default."""
    defaults = Config()
    checks: list[tuple[str, Any, Any, bool]] = [
        ("model.n_gpu_layers", config.model, "n_gpu_layers", config.model.n_gpu_layers >= -1),
        ("model.threads", config.model, "threads", 0 <= config.model.threads <= 256),
        ("model.n_ctx", config.model, "n_ctx", 256 <= config.model.n_ctx <= 1 << 20),
        ("completion.prefix_tokens", config.completion, "prefix_tokens", config.completion.prefix_tokens >= 16),
        ("completion.suffix_tokens", config.completion, "suffix_tokens", config.completion.suffix_tokens >= 0),
        ("completion.max_tokens", config.completion, "max_tokens", 1 <= config.completion.max_tokens <= 4096),
        ("completion.near_lines", config.completion, "near_lines", config.completion.near_lines >= 0),
        ("completion.max_lines", config.completion, "max_lines", config.completion.max_lines >= 1),
        ("completion.time_budget_ms", config.completion, "time_budget_ms", config.completion.time_budget_ms >= 50),
        ("completion.suffix_refresh_tokens", config.completion, "suffix_refresh_tokens",
         config.completion.suffix_refresh_tokens >= 0),
        ("context.max_tokens", config.context, "max_tokens", config.context.max_tokens >= 0),
        ("context.time_budget_ms", config.context, "time_budget_ms", config.context.time_budget_ms >= 1),
        ("context.max_file_kb", config.context, "max_file_kb", config.context.max_file_kb >= 1),
        ("context.max_files", config.context, "max_files", config.context.max_files >= 1),
        ("log_level", config, "log_level", config.log_level in LOG_LEVELS),
    ]
    for name, section, key, ok in checks:
        if not ok:
            section_default = defaults if section is config else getattr(defaults, name.split(".")[0])
            default = getattr(section_default, key)
            errors.append(f"{name}: {getattr(section, key)!r} is out of range; using {default!r}")
            setattr(section, key, default)
    needed = config.completion.prefix_tokens + config.completion.suffix_tokens + config.completion.max_tokens + 16
    if needed > config.model.n_ctx:
        errors.append(
            f"model.n_ctx: {config.model.n_ctx} cannot hold prefix_tokens + suffix_tokens + max_tokens "
            f"({needed}); raising it to {needed}"
        )
        config.model.n_ctx = needed


def merge_config(*sources: dict[str, Any] | None) -> ConfigResult:
    """Merge setting dictionaries over the defaults, later sources winning."""
    config = Config()
    errors: list[str] = []
    for source in sources:
        if source is None:
            continue
        if not isinstance(source, dict):
            errors.append(f"settings: expected a table of settings, got {source!r}")
            continue
        # initializationOptions may wrap the settings in a "slm" section, like VS Code does.
        if set(source) == {"slm"} and isinstance(source["slm"], dict):
            source = source["slm"]
        _merge_section(config, source, "", errors)
    _validate(config, errors)
    return ConfigResult(config, errors)


def describe(section: Any = None, prefix: str = "") -> list[tuple[str, Any, str]]:
    """(dotted name, default, docstring) for every field: used by the README and ``doctor``."""
    import ast
    import inspect

    section = section or Config()
    docs: dict[str, str] = {}
    tree = ast.parse(inspect.getsource(type(section)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    for node, nxt in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
            docs[node.target.id] = " ".join(str(nxt.value.value).split())  # type: ignore[union-attr]
    rows: list[tuple[str, Any, str]] = []
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if dataclasses.is_dataclass(value):
            rows.extend(describe(value, f"{prefix}{f.name}."))
        else:
            rows.append((f"{prefix}{f.name}", value, docs.get(f.name, "")))
    return rows
