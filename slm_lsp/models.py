"""Where models live, how a configured name becomes a file, and ``slm-lsp pull``.

``pull`` is the only code in slm-lsp that opens a network connection, through ``huggingface_hub``:
its shared cache (files that other tools downloaded are reused, ``HF_HOME`` / ``HF_HUB_CACHE``
are honoured), ``HF_ENDPOINT``, ``HF_TOKEN``, ``HF_HUB_OFFLINE``, its resume and progress bars.
Everything else resolves models from local files: the config, then ``SLM_LSP_MODEL``, then the
default model in the Hugging Face cache. A configured name may be a GGUF path,
``hf:OWNER/REPO/FILE.gguf[@REVISION]``, ``ollama:NAME[:TAG]`` (a model that Ollama pulled) or a
catalog name. ``find_local_models`` lists the GGUF files already on disk, for ``slm-lsp doctor``
and for the advice given when a download is not possible.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

log = logging.getLogger(__name__)

DEFAULT_MODEL = "llama-3.2-3b"

# Short names for `slm-lsp pull NAME`. Base (not instruct) models where one exists: completion
# continues code, it does not chat.
CATALOG: dict[str, str] = {
    "llama-3.2-3b": "hf:QuantFactory/Llama-3.2-3B-GGUF/Llama-3.2-3B.Q4_K_M.gguf",
    "qwen2.5-coder-0.5b": "hf:Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    "qwen2.5-coder-1.5b": "hf:Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    "qwen2.5-coder-7b": "hf:Qwen/Qwen2.5-Coder-7B-Instruct-GGUF/qwen2.5-coder-7b-instruct-q4_k_m.gguf",
}

GGUF_MAGIC = b"GGUF"
OLLAMA_MODEL_LAYER = "application/vnd.ollama.image.model"
OLLAMA_REGISTRY = "registry.ollama.ai"
# One component of an Ollama name (host, namespace, model, tag): no separators, no "..".
_OLLAMA_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_GIT_SHA1_HEX = re.compile(r"[0-9a-f]{40}")
# A split GGUF is loaded from its first shard; the others are not models on their own.
_LATER_SHARD = re.compile(r"-(?!00001-)\d{5}-of-\d{5}\.gguf$")


class ModelNotFound(Exception):
    """No model file for the configured name; the message says which command or setting fixes it."""


class PullError(Exception):
    """A download that did not end with a verified GGUF file in the cache; the message says why."""


def cache_dir() -> Path:
    base = os.environ.get("SLM_LSP_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "slm-lsp")
    return Path(base)


def models_dir() -> Path:
    """Where slm-lsp before its use of the Hugging Face cache saved ``pull``'s files: still read, no longer written."""
    return cache_dir() / "models"


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache (``HF_HUB_CACHE``, else ``HF_HOME``/hub, else ~/.cache/huggingface/hub)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def hf_endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def hf_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


# -- names ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HfFile:
    """One file of a Hugging Face model repository, at a branch, tag or commit (None: ``main``)."""

    repo: str
    filename: str
    revision: str | None = None

    @property
    def spec(self) -> str:
        return f"hf:{self.repo}/{self.filename}" + (f"@{self.revision}" if self.revision else "")


def parse_hf(spec: str) -> HfFile:
    """``hf:OWNER/REPO/FILE.gguf[@REVISION]`` → ``HfFile``; the revision pins a branch, tag or commit."""
    body = spec[3:] if spec.startswith("hf:") else spec
    body, at, revision = body.partition("@")
    parts = body.split("/")
    if len(parts) < 3 or not all(parts) or not parts[-1].endswith(".gguf") or (at and not revision):
        raise ValueError(f"expected hf:OWNER/REPO/FILE.gguf or hf:OWNER/REPO/FILE.gguf@REVISION, got {spec!r}")
    return HfFile("/".join(parts[:2]), "/".join(parts[2:]), revision or None)


def legacy_cached_path(ref: HfFile) -> Path:
    """Where an earlier slm-lsp saved ``ref`` (always the ``main`` revision)."""
    return models_dir() / f"{ref.repo.replace('/', '--')}--{ref.filename.replace('/', '--')}"


def pullable(spec: str) -> bool:
    """Whether ``slm-lsp pull`` can fetch this name: a catalog name or an ``hf:`` spec (empty: the default)."""
    return not spec or spec in CATALOG or spec.startswith("hf:")


@dataclass(frozen=True)
class OllamaName:
    host: str
    namespace: str
    model: str
    tag: str

    @property
    def short(self) -> str:
        """The name as ``ollama list`` writes it: the host and namespace only when they are not the defaults."""
        if self.host != OLLAMA_REGISTRY:
            prefix = f"{self.host}/{self.namespace}/"
        elif self.namespace != "library":
            prefix = f"{self.namespace}/"
        else:
            prefix = ""
        return f"{prefix}{self.model}:{self.tag}"


def parse_ollama(spec: str) -> OllamaName:
    """``ollama:[[HOST/]NAMESPACE/]MODEL[:TAG]`` → ``OllamaName`` (defaults as Ollama's: library, latest)."""
    body = spec[len("ollama:"):] if spec.startswith("ollama:") else spec
    last = body.rsplit("/", 1)[-1]
    name, tag = (body.rsplit(":", 1) if ":" in last else (body, "latest"))
    parts = name.split("/")
    if len(parts) == 1:
        parts = [OLLAMA_REGISTRY, "library", *parts]
    elif len(parts) == 2:
        parts = [OLLAMA_REGISTRY, *parts]
    if len(parts) != 3 or not all(_OLLAMA_PART.fullmatch(p) for p in [*parts, tag]):
        raise ValueError(f"expected ollama:NAME or ollama:NAME:TAG (as `ollama list` shows it), got {spec!r}")
    return OllamaName(parts[0], parts[1], parts[2], tag)


def ollama_models_dir() -> Path:
    """Ollama's store: ``OLLAMA_MODELS``, else ~/.ollama/models."""
    return Path(os.environ.get("OLLAMA_MODELS") or "~/.ollama/models").expanduser()


def _ollama_blob(manifest_path: Path) -> tuple[Path, int]:
    """The model layer's blob of one Ollama manifest, and its size; ValueError when there is none."""
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    for layer in manifest.get("layers") or []:
        if isinstance(layer, dict) and layer.get("mediaType") == OLLAMA_MODEL_LAYER:
            algorithm, _, digest = str(layer.get("digest", "")).partition(":")
            if algorithm != "sha256" or not _SHA256_HEX.fullmatch(digest):
                raise ValueError(f"{manifest_path}: model layer has an unexpected digest {layer.get('digest')!r}")
            blobs = ollama_models_dir() / "blobs"
            # Ollama names blobs sha256-HEX; its first releases wrote sha256:HEX.
            blob = next((b for b in (blobs / f"sha256-{digest}", blobs / f"sha256:{digest}") if b.is_file()),
                        blobs / f"sha256-{digest}")
            return blob, int(layer.get("size") or 0)
    raise ValueError(f"{manifest_path}: no {OLLAMA_MODEL_LAYER} layer")


def _is_gguf(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            return fh.read(4) == GGUF_MAGIC
    except OSError:
        return False


def resolve_ollama(spec: str) -> Path:
    """The GGUF blob of a model that Ollama pulled, found through its manifest."""
    try:
        name = parse_ollama(spec)
    except ValueError as exc:
        raise ModelNotFound(str(exc)) from None
    manifest = ollama_models_dir() / "manifests" / name.host / name.namespace / name.model / name.tag
    if not manifest.is_file():
        raise ModelNotFound(
            f"Ollama model {name.short} not found (no manifest {manifest}): run `ollama pull {name.short}`, "
            "or set OLLAMA_MODELS to Ollama's models folder; `slm-lsp doctor` lists the models on disk")
    try:
        blob, _size = _ollama_blob(manifest)
    except (OSError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
        raise ModelNotFound(f"Ollama model {name.short}: cannot read its manifest: {exc}") from None
    if not blob.is_file():
        raise ModelNotFound(f"Ollama model {name.short}: its model blob {blob} is missing; "
                            f"run `ollama pull {name.short}` again")
    if not _is_gguf(blob):
        raise ModelNotFound(f"Ollama model {name.short}: {blob} is not a GGUF file")
    return blob


def resolve_hf_cached(ref: HfFile) -> Path | None:
    """``ref`` from the Hugging Face cache or slm-lsp's older cache, without the network; None if absent."""
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(ref.repo, ref.filename, cache_dir=hf_cache_dir(), revision=ref.revision)
    if isinstance(cached, str):
        return Path(cached)
    legacy = legacy_cached_path(ref)
    return legacy if ref.revision is None and legacy.is_file() else None


def _no_model_message() -> str:
    return ("no model configured: run `slm-lsp pull` to download the default model "
            f"({DEFAULT_MODEL}, Q4_K_M GGUF), or set slm.model.path / SLM_LSP_MODEL to a GGUF file or "
            "to a model already on disk (`slm-lsp doctor` lists them)")


def resolve_model(configured: str) -> Path:
    """The model file to load: the config, then ``SLM_LSP_MODEL``, then the cached default.

    Reads only local files (a few ``stat`` calls and at most one small manifest). Raises
    ``ModelNotFound`` with the exact command or setting that fixes it.
    """
    spec = configured or os.environ.get("SLM_LSP_MODEL", "")
    spec = CATALOG.get(spec, spec)
    if spec.startswith("hf:"):
        try:
            ref = parse_hf(spec)
        except ValueError as exc:
            raise ModelNotFound(str(exc)) from None
        path = resolve_hf_cached(ref)
        if path is None:
            raise ModelNotFound(f"{spec} is not downloaded yet: run `slm-lsp pull {spec}`")
        return path
    if spec.startswith("ollama:"):
        return resolve_ollama(spec)
    if spec:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise ModelNotFound(f"model file not found: {path} (set slm.model.path or SLM_LSP_MODEL to a GGUF file)")
        return path
    default = resolve_hf_cached(parse_hf(CATALOG[DEFAULT_MODEL]))
    if default is not None:
        return default
    raise ModelNotFound(_no_model_message())


# -- models already on disk -----------------------------------------------------------------------


@dataclass(frozen=True)
class LocalModel:
    """A GGUF model file found on disk, and the name that ``model.path`` / ``SLM_LSP_MODEL`` accepts for it."""

    name: str
    path: Path
    source: str
    size: int


def _is_model_file(name: str) -> bool:
    lower = name.lower()
    # mmproj files are vision projectors that come with a model, not models.
    return lower.endswith(".gguf") and "mmproj" not in lower and not _LATER_SHARD.search(lower)


def _hf_cache_models() -> Iterator[LocalModel]:
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        info = scan_cache_dir(hf_cache_dir())
    except CacheNotFound:
        return
    seen: set[Path] = set()
    for repo in sorted(info.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model":
            continue
        # A revision that a branch points at first: its name needs no @COMMIT.
        for revision in sorted(repo.revisions, key=lambda r: ("main" not in r.refs, not r.refs, r.commit_hash)):
            for file in sorted(revision.files, key=lambda f: str(f.file_path)):
                if not _is_model_file(file.file_name) or file.blob_path in seen:
                    continue
                seen.add(file.blob_path)
                filename = file.file_path.relative_to(revision.snapshot_path).as_posix()
                ref = sorted(revision.refs)[0] if revision.refs else revision.commit_hash
                spec = HfFile(repo.repo_id, filename, None if ref == "main" else ref).spec
                yield LocalModel(spec, file.file_path, "Hugging Face cache", file.size_on_disk)


def _ollama_models() -> Iterator[LocalModel]:
    manifests = ollama_models_dir() / "manifests"
    if not manifests.is_dir():
        return
    for manifest in sorted(manifests.glob("*/*/*/*")):
        if not manifest.is_file():
            continue
        host, namespace, model, tag = manifest.relative_to(manifests).parts
        name = OllamaName(host, namespace, model, tag)
        try:
            blob, size = _ollama_blob(manifest)
        except (OSError, ValueError) as exc:
            log.debug("skipping Ollama manifest %s: %s", manifest, exc)
            continue
        if _is_gguf(blob):
            yield LocalModel(f"ollama:{name.short}", blob, "Ollama", size or blob.stat().st_size)


def lmstudio_models_dirs() -> list[Path]:
    """LM Studio's model folders: ~/.lmstudio/models, and ~/.cache/lm-studio/models of its older releases."""
    return [Path("~/.lmstudio/models").expanduser(), Path("~/.cache/lm-studio/models").expanduser()]


def _gguf_files_under(root: Path, source: str) -> Iterator[LocalModel]:
    if not root.is_dir():
        return
    for folder, dirs, files in os.walk(root):  # symlinked folders are not followed: no loops
        dirs.sort()
        for name in sorted(files):
            path = Path(folder) / name
            if _is_model_file(name) and path.is_file():
                yield LocalModel(str(path), path, source, path.stat().st_size)


def _lmstudio_models() -> Iterator[LocalModel]:
    for root in lmstudio_models_dirs():
        yield from _gguf_files_under(root, "LM Studio")


def _legacy_models() -> Iterator[LocalModel]:
    yield from _gguf_files_under(models_dir(), "slm-lsp cache")


_SOURCES: list[tuple[str, Callable[[], Iterator[LocalModel]]]] = [
    ("Hugging Face cache", _hf_cache_models), ("Ollama", _ollama_models), ("LM Studio", _lmstudio_models),
    ("slm-lsp cache", _legacy_models),
]


def find_local_models() -> tuple[list[LocalModel], list[str]]:
    """GGUF models already on disk (Hugging Face cache, Ollama, LM Studio, slm-lsp's older cache).

    Returns the models and one line per source that could not be read: a broken source costs
    only itself.
    """
    found: list[LocalModel] = []
    errors: list[str] = []
    for source, scan in _SOURCES:
        try:
            found.extend(scan())
        except Exception as exc:  # a permission error, a corrupt cache: the other sources still count
            errors.append(f"{source}: {exc}")
    return found, errors


def describe_local_models(models: list[LocalModel], *, assignment: str = "") -> list[str]:
    """One line per model: its name (after ``assignment``, e.g. ``SLM_LSP_MODEL=``), source and size."""
    width = max((len(assignment + m.name) for m in models), default=0)
    return [f"{assignment + m.name:<{width}}  ({m.source}, {m.size / 1e6:.0f} MB)" for m in models]


# -- downloads ------------------------------------------------------------------------------------


def _file_hash(path: Path, algorithm: str, prefix: bytes = b"") -> str:
    digest = hashlib.new(algorithm, prefix)
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _verify(path: Path, etag: str | None, spec: str, out: TextIO) -> None:
    """Check the file against the hash the hub reports: the SHA-256 of an LFS file, the git blob SHA-1 otherwise."""
    if etag and _SHA256_HEX.fullmatch(etag):
        print(f"checking SHA-256 of {path.name}", file=out, flush=True)
        actual, kind = _file_hash(path, "sha256"), "SHA-256"
    elif etag and _GIT_SHA1_HEX.fullmatch(etag):
        actual, kind = _file_hash(path, "sha1", b"blob %d\0" % path.stat().st_size), "git SHA-1"
    else:
        raise PullError(f"{spec}: the hub reported no checksum for the file (ETag {etag!r}); not using it")
    if actual != etag:
        blob = Path(os.path.realpath(path))
        path.unlink(missing_ok=True)
        blob.unlink(missing_ok=True)
        raise PullError(f"{spec}: the downloaded file's {kind} is {actual} but the hub reports {etag}; "
                        "the file was removed, run `slm-lsp pull` again")


def _hub_error(exc: BaseException, ref: HfFile) -> PullError:
    """One sentence for what went wrong talking to the hub."""
    import httpx2
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    revision = ref.revision or "main"
    if isinstance(exc, GatedRepoError):
        return PullError(f"{ref.repo} is gated: accept its license on the hub and set HF_TOKEN")
    if isinstance(exc, RepositoryNotFoundError):
        return PullError(f"{ref.repo} was not found on the hub (if it is private, set HF_TOKEN)")
    if isinstance(exc, RevisionNotFoundError):
        return PullError(f"revision {revision} not found in {ref.repo}")
    if isinstance(exc, RemoteEntryNotFoundError):
        return PullError(f"{ref.filename} not found in {ref.repo} at revision {revision}")
    if isinstance(exc, HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else "?"
        return PullError(f"the Hugging Face hub ({hf_endpoint()}) answered HTTP {status} for {ref.spec}")
    if isinstance(exc, (httpx2.TransportError, OSError)):  # OSError: the connection, before httpx2 wraps it
        return PullError(f"the Hugging Face hub ({hf_endpoint()}) could not be reached ({exc})")
    return PullError(f"{ref.spec}: {exc}")


def pull(name: str = DEFAULT_MODEL, *, out: TextIO = sys.stderr) -> Path:
    """Download a model into the Hugging Face cache (or find it there) and verify it; raises ``PullError``.

    ``huggingface_hub`` downloads (resuming a broken transfer, with its progress bar) and keeps
    the file in its shared cache, where other tools find it too; the file's hash is then
    checked against the one the hub reports. With ``HF_HUB_OFFLINE`` set, or the hub out of
    reach, a file already in the cache is used as it is.
    """
    import httpx2
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError

    try:
        ref = parse_hf(CATALOG.get(name, name))
    except ValueError as exc:
        raise PullError(f"{exc} (or one of: {', '.join(CATALOG)})") from None
    legacy = legacy_cached_path(ref)
    if ref.revision is None and legacy.is_file():
        print(f"already downloaded: {legacy}", file=out)
        return legacy
    cache = hf_cache_dir()
    if hf_offline():
        cached = resolve_hf_cached(ref)
        if cached is None:
            raise PullError(f"HF_HUB_OFFLINE is set and {ref.spec} is not in the Hugging Face cache ({cache})")
        print(f"HF_HUB_OFFLINE is set; using the cached file without checking the hub: {cached}", file=out)
        return cached
    try:
        # One request without retries first: an unreachable hub is reported at once, not after
        # huggingface_hub's backoff, and the answer carries the hash to check the file against.
        metadata = get_hf_file_metadata(hf_hub_url(ref.repo, ref.filename, revision=ref.revision))
    except (httpx2.TransportError, OSError) as exc:
        if isinstance(exc, HfHubHTTPError) and exc.response is not None and exc.response.status_code < 500:
            raise _hub_error(exc, ref) from None
        cached = resolve_hf_cached(ref)
        if cached is None:
            raise _hub_error(exc, ref) from None
        print(f"the hub is out of reach ({exc}); using the cached file without checking it: {cached}", file=out)
        return cached
    except HFValidationError as exc:
        raise PullError(f"{ref.spec}: {exc}") from None
    print(f"downloading {ref.spec} into {cache}", file=out, flush=True)
    try:
        path = Path(hf_hub_download(ref.repo, ref.filename, revision=ref.revision, cache_dir=cache))
        commit = path.parents[len(Path(ref.filename).parts) - 1].name
        if metadata.commit_hash != commit:  # the branch moved between the two requests
            metadata = get_hf_file_metadata(hf_hub_url(ref.repo, ref.filename, revision=commit))
    except (httpx2.TransportError, HfHubHTTPError) as exc:
        raise _hub_error(exc, ref) from None
    except (OSError, HFValidationError) as exc:  # a full disk, a size that does not match the hub's
        raise PullError(f"downloading {ref.spec} failed: {exc}") from None
    _verify(path, metadata.etag, ref.spec, out)
    if not _is_gguf(path):
        raise PullError(f"{ref.spec} is not a GGUF file (it does not start with {GGUF_MAGIC!r})")
    print(f"saved {path}", file=out)
    return path


def download_advice(retry_command: str, models: list[LocalModel]) -> str:
    """What to do when no model can be downloaded: name a GGUF file, or one already on disk."""
    lines = [f"Use a GGUF model file instead: SLM_LSP_MODEL=/path/to.gguf {retry_command}"]
    if models:
        lines.append("or one already on disk:")
        lines += [f"  {line}" for line in describe_local_models(models, assignment="SLM_LSP_MODEL=")]
    else:
        lines.append("(no GGUF model found in the Hugging Face cache, Ollama or LM Studio folders)")
    return "\n".join(lines)
