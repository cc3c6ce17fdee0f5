"""The typed configuration tree: one dataclass per section, a default and a docstring per field.

Sources are merged in order: defaults < initializationOptions < workspace/configuration
section ``slm`` < CLI flags. Keys may be snake_case or camelCase (VS Code style). An invalid
value never stops the server: it is reported (``ConfigResult.errors``) and the default is kept.
Every numeric field has a range (``bounded``); validation never moves a field past its own.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, get_type_hints


def bounded(default: int, low: int, high: int) -> int:
    """A numeric field with its range (inclusive; the field's docstring states it too)."""
    return field(default=default, metadata={"range": (low, high)})


def bounded_float(default: float, low: float, high: float) -> float:
    """A real-valued field with its range (inclusive); NaN and infinities are out of every range."""
    return field(default=default, metadata={"range": (low, high)})


def bounds(section: Any, name: str) -> tuple[Any, Any] | None:
    """(low, high) of a numeric field, None for other fields."""
    for f in dataclasses.fields(section):
        if f.name == name:
            return f.metadata.get("range")
    raise KeyError(name)


@dataclass
class ModelConfig:
    path: str = ""
    """GGUF model file, ``hf:OWNER/REPO/FILE.gguf[@REVISION]`` (downloaded by ``slm-lsp pull`` into
    the Hugging Face cache), ``ollama:NAME[:TAG]`` (a model Ollama pulled) or a catalog name. Empty:
    the ``SLM_LSP_MODEL`` environment variable, then the default model in the Hugging Face cache."""

    n_gpu_layers: int = bounded(-1, -1, 1000)
    """Layers offloaded to the GPU. -1: all of them when the llama.cpp build can offload, else 0.
    Range: -1 to 1000."""

    threads: int = bounded(0, 0, 256)
    """CPU threads for llama.cpp. 0: the number of CPU cores (at most 8). Range: 0 to 256."""

    n_ctx: int = bounded(4096, 256, 1 << 20)
    """Context window in tokens. Must hold the prompt budgets plus ``completion.max_tokens``
    (raised to hold them, never past its range). A load whose KV cache and weights would not fit
    in the available memory is refused. Range: 256 to 1048576."""

    adapter: str = ""
    """A GGUF LoRA adapter to apply on top of the model (made by ``slm-lsp finetune``)."""


@dataclass
class CompletionConfig:
    prefix_tokens: int = bounded(1024, 16, 1 << 19)
    """Token budget for the code before the cursor (cut at a line boundary). Range: 16 to 524288."""

    suffix_tokens: int = bounded(320, 0, 1 << 19)
    """Token budget for the code after the cursor (cut at a line boundary). About 1/3 of the
    prefix budget: the suffix matters less and costs prompt time on every cold request.
    Range: 0 to 524288."""

    max_tokens: int = bounded(128, 1, 4096)
    """Most tokens generated for one completion. Range: 1 to 4096."""

    max_lines: int = bounded(12, 1, 1000)
    """Most lines in a multi-line completion. Range: 1 to 1000."""

    answer_length: str = "auto"
    """Who ends an answer where nothing is right of the cursor (a blank line, the end of a
    line): ``rules`` (the shaping rules guess one line or a block from the code around the
    cursor, and generation stops there), ``model`` (generation goes on until the model's own
    end-of-generation token, up to ``max_lines``, cut where it writes the code below again; the
    rules decide only when it runs on) or ``auto`` (the model while it ends at least 3 in 4 of the
    last 32 such answers itself, else the rules, trying the model again every 32 requests;
    counted for each model and adapter file, remembered across restarts). At the end of a
    line of code the model's length applies to an answer that goes on below it or finishes a
    line that opens a block (a ``for`` header and its body); a plain statement still ends
    with its line. ``model`` suits models that end their middles well (Qwen2.5-Coder 1.5B) and
    costs generating the longer answer; ``auto`` finds which kind the model is. One of: rules,
    model, auto."""

    write_on_blank_lines: bool = True
    """On a blank line (nothing but whitespace on the cursor's line) the local model's answer may
    not be empty: its end-of-generation token and line breaks are passed over until the answer
    holds code, and a first line that only repeats the code below the cursor (shown, it would be
    empty) is replaced by the model's next choice where that line began (once an answer). The
    user opened the line to write on it. Gemma 3 270M taught FIM repeated the line below on 54
    of HumanEval's 1,033 single-line holes; its next choice passed 10 of them. False: such
    answers show nothing."""

    time_budget_ms: int = bounded(2000, 50, 60000)
    """Generation time budget: once spent, generation stops at the next line boundary.
    Range: 50 to 60000."""

    enabled_languages: list[str] = field(default_factory=lambda: ["*"])
    """Language ids to complete (``"*"``: all). Example: ``["python", "rust"]``."""

    near_lines: int = bounded(0, 0, 1000)
    """Lines after the cursor line that are evaluated again on every request, with the rest of
    the cursor line; the suffix beyond them is moved in the KV cache. The first suffix tokens'
    keys depend strongly on what was just typed (reusing them stale changes the answer); the
    ones further away barely do. Range: 0 to 1000."""

    kv_shift: bool = True
    """Reuse the cached suffix across keystrokes by shifting it in the KV cache instead of
    re-evaluating it (what llama-server's ``--cache-reuse`` cannot do for insertions)."""

    suffix_refresh_tokens: int = bounded(512, 0, 1 << 20)
    """Re-evaluate the shifted suffix once this many prefix tokens changed under it, so its
    cached keys never drift far from what an exact evaluation would give. Range: 0 to 1048576."""

    warmup: bool = True
    """Evaluate the prompt in the background before the user pauses: when a document opens and
    when an edit lands far from the last one, while the model is idle. A real request stops the
    warmup at once (within a few tokens) and reuses what it evaluated."""

    kv_states_mb: int = bounded(256, 0, 65536)
    """Memory for the KV cells of recently used documents (about 12 KiB per prompt token for
    Qwen2.5-Coder-0.5B, 28 KiB for the 1.5B), so that going back to a file reuses its prompt
    instead of evaluating it again; the least recently used go first. 0: none kept.
    Range: 0 to 65536."""

    prefetch_on_accept: bool = True
    """Compute the completion that follows a suggestion ahead: while it is shown (as if it were
    accepted) and when the editor reports the accept, so that after an accept the next
    suggestion comes from the type-through cache without a model wait. Low priority (any real
    request goes first); the local model only."""


@dataclass
class ContextConfig:
    enabled: bool = True
    """Put code from other files of the workspace before the current one (repo-aware context):
    definitions of the names used near the cursor, similar snippets, recent edits, and the
    headers of the scopes around a cut prefix."""

    max_tokens: int = bounded(1024, 0, 1 << 19)
    """Token budget for that context. A file shorter than its prefix/suffix budgets lends them
    what it leaves unused. Clamped so that the prompt fits ``model.n_ctx``. Range: 0 to 524288."""

    sources: list[str] = field(default_factory=lambda: ["definitions", "similar", "same_file", "recent"])
    """Context sources to use: ``definitions``, ``similar``, ``same_file``, ``recent``."""

    time_budget_ms: int = bounded(50, 1, 10000)
    """Time budget of each context source per request; a late or failing source is skipped.
    Range: 1 to 10000."""

    max_file_kb: int = bounded(512, 1, 65536)
    """Files larger than this are not indexed. Range: 1 to 65536."""

    max_files: int = bounded(50000, 1, 1000000)
    """At most this many files are indexed per workspace folder. Range: 1 to 1000000."""

    exclude: list[str] = field(default_factory=list)
    """Extra gitignore-style patterns of files not to index (``.gitignore`` files apply too)."""

    watch: bool = True
    """Keep the index live with file system events (watchdog)."""


ROUTES = ("local", "remote", "auto")
ANSWER_LENGTHS = ("rules", "model", "auto")
REMOTE_KINDS = ("llama-server", "openai", "ollama")


@dataclass
class RemoteConfig:
    route: str = "local"
    """Where completions are computed: ``local`` (the in-process model; nothing leaves the
    machine), ``remote`` (the server at ``url``; the local model answers when it fails or times
    out) or ``auto`` (the local model first; a request it is not confident about, a block, a
    request whose repo context did not fit, or one that arrives while the local model is busy
    or slow goes to the server)."""

    url: str = ""
    """Base URL of the team server, e.g. ``http://gpu-box:8080`` (empty: none). Prompts go
    there only when ``route`` is ``remote`` or ``auto``. A plain ``http://`` URL that is not on
    this machine gets a warning: code would cross the network unencrypted."""

    kind: str = "openai"
    """The server's protocol: ``llama-server`` (``POST /completion``, prompt cache and a slot per
    user), ``openai`` (``POST /v1/completions`` with a raw prompt: vLLM, SGLang, llama-server,
    llama-cpp-python's server) or ``ollama`` (``POST /api/generate`` with ``raw: true``)."""

    model: str = ""
    """Model name sent to the server (vLLM: the served model or a LoRA adapter's name; Ollama:
    the model tag). Empty: the server's default where it has one."""

    api_key_env: str = "SLM_LSP_REMOTE_API_KEY"
    """Name of the environment variable holding the API key, sent as ``Authorization: Bearer``
    (unset or empty: no key). The key itself is never a setting."""

    timeout_ms: int = bounded(3000, 50, 600000)
    """How long to wait for the server's first token, and for each one after it, before the
    local model answers instead. Range: 50 to 600000."""

    connect_timeout_ms: int = bounded(1000, 10, 60000)
    """How long to wait for a connection to the server. Range: 10 to 60000."""

    deny_files: list[str] = field(default_factory=list)
    """Gitignore-style patterns of files whose text never goes into a remote prompt, neither as
    the edited buffer nor as context, added to the built-in ones (``.env*``, keys, certificates,
    files ignored by ``.gitignore``)."""

    slot: int = bounded(-1, -2, 4095)
    """llama-server only: the server slot (KV cache) to use, so that the server's prompt cache is
    reused across keystrokes. -1: one slot for this user (a hash of user and host over the
    server's ``total_slots``); -2: the server chooses (an idle slot, by prompt similarity);
    0 and up: that slot. Range: -2 to 4095."""

    template: str = ""
    """A ``template.json`` (``slm-lsp finetune`` writes one beside ``adapter.gguf`` when it taught
    a model FIM tokens of its own) describing the FIM template of the server's model: prompts for
    the server are laid out with it. Empty: the local model's template (its adapter's, when
    ``model.adapter`` has a ``template.json`` beside it)."""

    lora: int = bounded(-1, -1, 255)
    """llama-server only: the adapter this user's requests apply, by its id on the server (its
    place among the server's ``--lora`` flags: 0, 1, ...), sent as the request's ``lora`` field at
    scale 1 (the server's other adapters get scale 0 for the request). -1: no ``lora`` field (the
    server's own scales). vLLM and Ollama pick an adapter by ``model`` instead. Range: -1 to 255."""

    context_tokens: int = bounded(0, 0, 1 << 19)
    """Token budget for the repo context of a prompt that goes to the server, which usually has
    a larger context window than the local model. 0: ``context.max_tokens``. Range: 0 to 524288."""

    fallback: bool = True
    """With ``route = remote``: keep the local model loaded to answer when the server fails. Off:
    only the local model's vocabulary is loaded (to build prompts), and a failed request gets no
    completion."""

    auto_mean_logprob: float = bounded_float(-0.2, -100.0, 0.0)
    """``auto``: a local answer whose mean token log-probability is below this goes to the server
    (-0.2: about the least sure third of Qwen2.5-Coder-0.5B's answers on HumanEval infilling).
    -100 turns this signal off. Range: -100 to 0."""

    auto_min_logprob: float = bounded_float(-100.0, -100.0, 0.0)
    """``auto``: a local answer with a token whose log-probability is below this goes to the
    server. -100 turns this signal off. Range: -100 to 0."""

    auto_empty: bool = True
    """``auto``: an empty local answer (the model ended at once where a completion was asked for)
    goes to the server."""

    auto_blocks: bool = True
    """``auto``: multi-line (block) requests go to the server directly."""

    auto_context_cut: bool = True
    """``auto``: requests whose repo context did not fit the local budget go to the server directly."""

    auto_slow_ms: int = bounded(0, 0, 600000)
    """``auto``: while the local model's recent latency is above this, requests go to the server
    directly; so do requests that arrive while it is busy with another document. 0: neither.
    Range: 0 to 600000."""


SPECULATIVE_MODES = ("off", "lookup", "draft")


@dataclass
class SpeculativeConfig:
    mode: str = "off"
    """Speculative decoding of the local model: ``off`` (one token per model pass), ``lookup``
    (drafts copied from the prompt: what followed the last few generated tokens where they
    occurred before, in the file or the repo context) or ``draft`` (a smaller model with the
    same vocabulary, ``draft_model``, proposes the tokens). The model checks each draft in one
    batch and keeps the tokens it would have chosen itself: under greedy decoding the answer is
    the same token for token, only faster or slower."""

    draft_model: str = ""
    """``mode = draft``: the draft model, a GGUF file or any name ``model.path`` accepts (e.g.
    Qwen2.5-Coder-0.5B drafting for the 1.5B or 3B). It must share the model's vocabulary; a
    model that does not is refused with a message and completions go on without drafts."""

    draft_tokens: int = bounded(4, 1, 32)
    """Most tokens proposed for one batch. Each checked token costs some compute even when it is
    rejected; after a miss the next draft is shorter. Range: 1 to 32."""

    ngram_min: int = bounded(2, 1, 8)
    """``mode = lookup``: the fewest last generated tokens that must match earlier text before
    what followed them is proposed (1 proposes after any repeated token: more drafts, fewer
    right). Range: 1 to 8."""

    ngram_max: int = bounded(4, 1, 8)
    """``mode = lookup``: the most last generated tokens matched (longer matches are tried first).
    Range: 1 to 8."""

    draft_p_min: float = bounded_float(0.5, 0.0, 1.0)
    """``mode = draft``: the draft model stops proposing once its top token's probability is
    below this (a guess it is unsure of is probably rejected). Range: 0 to 1."""


@dataclass
class NextEditConfig:
    enabled: bool = True
    """Next-edit suggestions (``slm/nextEdit``, and inline completions that replace a range): after
    an edit, the local model rewrites the lines around the cursor the way the next edit would, or
    suggests nothing. Needs an instruct model (a chat template) or an adapter trained for next edits."""

    region_lines: int = bounded(20, 4, 80)
    """Lines of the editable region around the cursor (a third above it, the rest below): the
    model rewrites all of them, so its answer grows with them. Range: 4 to 80."""

    max_edits: int = bounded(6, 0, 32)
    """Recent edits (as diffs, newest kept, across files) shown to the model. Range: 0 to 32."""

    max_tokens: int = bounded(1024, 16, 4096)
    """Most tokens generated for one suggestion; the limit used is the region's size in tokens
    plus a margin, when that is smaller. Range: 16 to 4096."""

    time_budget_ms: int = bounded(20000, 100, 120000)
    """Generation time for one suggestion; an answer not finished by then is dropped (a cut
    region is no edit). Range: 100 to 120000."""


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    """The GGUF model and how llama.cpp runs it."""

    completion: CompletionConfig = field(default_factory=CompletionConfig)
    """Prompt budgets and the shape of completions."""

    context: ContextConfig = field(default_factory=ContextConfig)
    """Repo-aware context: the workspace index and what goes into the prompt from it."""

    remote: RemoteConfig = field(default_factory=RemoteConfig)
    """A team server (llama-server, vLLM, Ollama) and the router between it and the local model."""

    speculative: SpeculativeConfig = field(default_factory=SpeculativeConfig)
    """Speculative decoding of the local model (prompt lookup or a draft model)."""

    next_edit: NextEditConfig = field(default_factory=NextEditConfig)
    """Next-edit suggestions: the edit the recent edits call for, near the cursor."""

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
        if isinstance(value, str) and re.fullmatch(r"-?\d{1,30}", value.strip()):  # longer: out of any range
            return int(value)
    elif kind is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)  # an int past float's range raises OverflowError, caught below
        if isinstance(value, str) and re.fullmatch(r"-?\d{1,30}(\.\d{1,30})?", value.strip()):
            return float(value)
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
        except OverflowError:
            errors.append(f"{name}: {value!r} is out of range")


def _sections(config: Config) -> list[tuple[str, Any, Any]]:
    """(name prefix, section, default section) of the config tree."""
    defaults = Config()
    return [("", config, defaults)] + [
        (f"{f.name}.", getattr(config, f.name), getattr(defaults, f.name))
        for f in dataclasses.fields(config) if dataclasses.is_dataclass(getattr(config, f.name))]


def _validate(config: Config, errors: list[str]) -> None:
    """Range checks; an out-of-range field goes back to its default."""
    for prefix, section, defaults in _sections(config):
        for f in dataclasses.fields(section):
            limits = f.metadata.get("range")
            value = getattr(section, f.name)
            if limits is not None and not limits[0] <= value <= limits[1]:
                default = getattr(defaults, f.name)
                errors.append(f"{prefix}{f.name}: {value!r} is out of range ({limits[0]} to {limits[1]}); "
                              f"using {default!r}")
                setattr(section, f.name, default)
    for name, value, allowed in (("remote.route", config.remote.route, ROUTES),
                                 ("remote.kind", config.remote.kind, REMOTE_KINDS)):
        if value not in allowed:
            default = getattr(RemoteConfig(), name.split(".")[1])
            errors.append(f"{name}: {value!r} is out of range ({', '.join(allowed)}); using {default!r}")
            setattr(config.remote, name.split(".")[1], default)
    if config.completion.answer_length not in ANSWER_LENGTHS:
        errors.append(f"completion.answer_length: {config.completion.answer_length!r} is out of range "
                      f"({', '.join(ANSWER_LENGTHS)}); using {CompletionConfig().answer_length!r}")
        config.completion.answer_length = CompletionConfig().answer_length
    sc = config.speculative
    if sc.mode not in SPECULATIVE_MODES:
        errors.append(f"speculative.mode: {sc.mode!r} is out of range ({', '.join(SPECULATIVE_MODES)}); using "
                      f"{SpeculativeConfig().mode!r}")
        sc.mode = SpeculativeConfig().mode
    if sc.ngram_min > sc.ngram_max:
        errors.append(f"speculative.ngram_min ({sc.ngram_min}) is above speculative.ngram_max ({sc.ngram_max}); "
                      f"using {sc.ngram_max} for both")
        sc.ngram_min = sc.ngram_max
    url = config.remote.url.strip()
    if url and not re.match(r"https?://[^/\s]+", url):
        errors.append(f"remote.url: {url!r} is not an http:// or https:// URL; using ''")
        url = ""
    config.remote.url = url.rstrip("/")
    if config.log_level not in LOG_LEVELS:
        errors.append(f"log_level: {config.log_level!r} is out of range ({', '.join(LOG_LEVELS)}); "
                      f"using {Config().log_level!r}")
        config.log_level = Config().log_level
    _fit_context(config, errors)


def _needed_context(config: Config) -> int:
    cc = config.completion
    return cc.prefix_tokens + cc.suffix_tokens + cc.max_tokens + 16


def _fit_context(config: Config, errors: list[str]) -> None:
    """Make ``model.n_ctx`` hold the prompt budgets: raise it up to its own cap, and when even
    the cap cannot hold them, put the budgets back to their defaults instead."""
    needed = _needed_context(config)
    if needed <= config.model.n_ctx:
        return
    cap = bounds(config.model, "n_ctx")[1]  # type: ignore[index]
    if needed > cap:
        defaults = CompletionConfig()
        errors.append(
            f"completion: prefix_tokens + suffix_tokens + max_tokens ({needed}) do not fit the largest "
            f"model.n_ctx ({cap}); using their defaults ({defaults.prefix_tokens}, {defaults.suffix_tokens}, "
            f"{defaults.max_tokens})")
        cc = config.completion
        cc.prefix_tokens, cc.suffix_tokens, cc.max_tokens = (defaults.prefix_tokens, defaults.suffix_tokens,
                                                             defaults.max_tokens)
        needed = _needed_context(config)
        if needed <= config.model.n_ctx:
            return
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
