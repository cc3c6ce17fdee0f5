"""The repository index: per-file definitions and imports, kept live, persisted, read as snapshots.

Writers (the initial walk, watchdog events, open-buffer edits) run in background threads and
publish a new immutable ``Snapshot``; a completion request reads ``index.snapshot`` once and sees
one consistent state, never waiting for a writer. The index is saved under the user cache dir,
keyed by workspace, written to a temporary file and renamed over the old one (a kill during the
write leaves the old index), so a restart only parses files whose mtime or size changed. When it
cannot be saved (a read-only or broken cache folder), it works in memory and says so once.

Threads: the walk, the watcher's batches, buffer edits (debounced) and saves run on different
threads. ``_lock`` guards everything they share (``snapshot`` publication, ``_buffers``,
``_version``, ``_dirty``); parsing and disk reads happen outside it. ``_save_lock`` lets one save
run at a time, each through its own temporary file.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import posixpath
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .files import IgnoreRules, file_skip_reason, name_skip_reason
from .parsing import Definition, Import, language_of, parse_source

log = logging.getLogger(__name__)

SCHEMA = 1
FAMILY = {"python": "py", "javascript": "js", "typescript": "js", "tsx": "js", "go": "go", "rust": "rs",
          "java": "java", "c": "c", "cpp": "c", "ruby": "rb", "php": "php", "csharp": "cs", "kotlin": "kt",
          "swift": "swift", "lua": "lua", "bash": "sh", "scala": "scala"}
JS_EXTENSIONS = ("", ".ts", ".tsx", ".js", ".jsx", ".mjs", ".d.ts")


@dataclass
class FileEntry:
    path: str
    """Relative to the workspace root, with ``/`` separators."""
    language: str
    mtime_ns: int
    size: int
    lines: int
    definitions: list[Definition]
    imports: list[Import]
    version: int = 0
    """Bumped on every change of this file (sticky context notices material changes with it)."""
    buffer: bool = False
    """Parsed from an open editor buffer rather than from disk."""

    @functools.cached_property
    def imported_names(self) -> frozenset[str]:
        """The local names this file's imports bind (an entry is replaced, never changed)."""
        return imported_names(self.imports)

    def to_json(self) -> list[Any]:
        return [self.path, self.language, self.mtime_ns, self.size, self.lines,
                [d.to_list() for d in self.definitions], [i.to_list() for i in self.imports]]

    @classmethod
    def from_json(cls, data: list[Any]) -> "FileEntry":
        return cls(data[0], data[1], data[2], data[3], data[4], [Definition.from_list(d) for d in data[5]],
                   [Import.from_list(i) for i in data[6]])


def imported_names(imports: Iterable[Import]) -> frozenset[str]:
    return frozenset(local for imp in imports for _, local in imp.names if local != "*")


def module_keys(path: str, language: str) -> list[str]:
    """The keys under which other files' imports find ``path``."""
    fam = FAMILY[language]
    stem, _ext = posixpath.splitext(path)
    parts = stem.split("/")
    if fam == "py":
        if parts[-1] == "__init__":
            parts = parts[:-1]
        return [f"py:{'.'.join(parts[i:])}" for i in range(len(parts))]
    if fam == "java":
        return [f"java:{'.'.join(parts[i:])}" for i in range(len(parts))]
    if fam == "go":
        dirs = parts[:-1]
        return [f"go:{'/'.join(dirs[i:])}" for i in range(len(dirs))] + ["go:."]
    if fam == "rs":
        if parts and parts[0] == "src":
            parts = parts[1:]
        if parts and parts[-1] in ("lib", "main"):
            return ["rs:crate"]
        if parts and parts[-1] == "mod":
            parts = parts[:-1]
        return ["rs:crate::" + "::".join(parts)] + [f"rs:{'::'.join(parts[i:])}" for i in range(len(parts))]
    if fam == "js":
        keys = [f"js:{path}", f"js:{stem}"]
        if stem.endswith(".d"):
            keys.append(f"js:{stem[:-2]}")
        if parts[-1] == "index":
            keys.append(f"js:{'/'.join(parts[:-1])}")
        return keys
    if fam == "rb":  # require "shop/cart" from the load path (lib/), require_relative by path
        return [f"rb:{'/'.join(parts[i:])}" for i in range(len(parts))]
    if fam == "lua":  # require "shop.cart": lua/shop/cart.lua, or shop/cart/init.lua
        if parts[-1] == "init" and len(parts) > 1:
            parts = parts[:-1]
        return [f"lua:{'.'.join(parts[i:])}" for i in range(len(parts))]
    if fam == "php":  # PSR-4: App\Billing\Invoice in src/Billing/Invoice.php; require by path
        return [f"php:{path}"] + ["php:" + "\\".join(parts[i:]) for i in range(len(parts))]
    if fam in ("kt", "scala", "cs"):  # a package (C#: namespace) is a folder, a class may be a file
        dirs = parts[:-1]
        return [f"{fam}:{'.'.join(dirs[i:])}" for i in range(len(dirs))] + [
            f"{fam}:{'.'.join(parts[i:])}" for i in range(len(parts))]
    if fam == "swift":  # a module is a target's folder: Sources/<Module>/...
        return [f"swift:{d}" for d in parts[:-1]]
    # C/C++, shell scripts: every path suffix, extension included
    full = path.split("/")
    return [f"{fam}:{'/'.join(full[i:])}" for i in range(len(full))]


def import_keys(from_path: str, language: str, imp: Import) -> list[str]:
    """Module keys an import may refer to, best first."""
    fam = FAMILY[language]
    here = posixpath.dirname(from_path)
    if fam == "py":
        if imp.level:
            base = here.split("/") if here else []
            up = imp.level - 1
            base = base[:len(base) - up] if up else base
            mod = ".".join([*base, imp.module] if imp.module else base)
            return [f"py:{mod}"]
        return [f"py:{imp.module}"]
    if fam == "java":
        return [f"java:{imp.module}"]
    if fam == "go":
        parts = imp.module.split("/")
        return [f"go:{'/'.join(parts[i:])}" for i in range(len(parts))]
    if fam == "rs":
        mod = imp.module
        if mod.startswith(("self::", "super::")) or mod in ("self", "super"):
            own = module_keys(from_path, language)[0][3:]  # crate::a::b
            segs = own.split("::")
            rest = mod.split("::")
            while rest and rest[0] in ("self", "super"):
                if rest[0] == "super" and len(segs) > 1:
                    segs = segs[:-1]
                rest = rest[1:]
            mod = "::".join(segs + rest)
        return [f"rs:{mod}"]
    if fam == "js":
        if not imp.module.startswith("."):
            return [f"js:{imp.module}"]
        target = posixpath.normpath(posixpath.join(here, imp.module))
        return [f"js:{target}"] + [f"js:{target}{ext}" for ext in JS_EXTENSIONS[1:]]
    if fam == "rb":
        module = imp.module.removesuffix(".rb")
        if module.startswith("."):
            return [f"rb:{posixpath.normpath(posixpath.join(here, module))}"]
        return [f"rb:{module}"]
    if fam == "php":
        if "\\" not in imp.module and "/" in imp.module:  # require 'x/y.php'
            return [f"php:{posixpath.normpath(posixpath.join(here, imp.module))}", f"php:{imp.module}"]
        # The namespace's root (App\) is a folder (src/) that its name does not tell: longest first.
        parts = imp.module.split("\\")
        return ["php:" + "\\".join(parts[i:]) for i in range(len(parts))]
    if fam in ("kt", "scala", "cs", "swift", "lua"):
        return [f"{fam}:{imp.module}"]
    target = posixpath.normpath(posixpath.join(here, imp.module))
    return [f"{fam}:{target}", f"{fam}:{imp.module}"]


@dataclass(frozen=True)
class Snapshot:
    """One consistent state of the index (never mutated after it is published)."""

    root: str
    files: Mapping[str, FileEntry] = field(default_factory=dict)
    modules: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    symbols: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    version: int = 0
    hidden: frozenset[str] = frozenset()
    """Paths left out of this view (the evaluation hides the file being written)."""

    @classmethod
    def build(cls, root: str, files: Mapping[str, FileEntry], version: int = 0) -> "Snapshot":
        modules: dict[str, tuple[str, ...]] = {}
        symbols: dict[str, tuple[str, ...]] = {}
        for entry in files.values():
            _add_keys(modules, symbols, entry)
        return cls(root, dict(files), modules, symbols, version)

    def with_entry(self, entry: FileEntry) -> "Snapshot":
        files, modules, symbols = dict(self.files), dict(self.modules), dict(self.symbols)
        old = files.get(entry.path)
        if old is not None:
            _remove_keys(modules, symbols, old)
        files[entry.path] = entry
        _add_keys(modules, symbols, entry)
        return Snapshot(self.root, files, modules, symbols, self.version + 1, self.hidden)

    def without_entry(self, path: str) -> "Snapshot":
        if path not in self.files:
            return self
        files, modules, symbols = dict(self.files), dict(self.modules), dict(self.symbols)
        _remove_keys(modules, symbols, files.pop(path))
        return Snapshot(self.root, files, modules, symbols, self.version + 1, self.hidden)

    def hide(self, path: str) -> "Snapshot":
        """A view without ``path`` (cheap: lookups skip it)."""
        return replace(self, hidden=self.hidden | {path})

    def entry(self, path: str) -> FileEntry | None:
        return None if path in self.hidden else self.files.get(path)

    def module_files(self, key: str) -> list[str]:
        return [p for p in self.modules.get(key, ()) if p not in self.hidden]

    def defining(self, name: str) -> list[str]:
        return [p for p in self.symbols.get(name, ()) if p not in self.hidden]

    def paths(self) -> Iterator[str]:
        return (p for p in self.files if p not in self.hidden)


def _add_keys(modules: dict[str, tuple[str, ...]], symbols: dict[str, tuple[str, ...]], entry: FileEntry) -> None:
    for key in module_keys(entry.path, entry.language):
        modules[key] = modules.get(key, ()) + (entry.path,)
    for name in {d.name for d in entry.definitions}:
        symbols[name] = symbols.get(name, ()) + (entry.path,)


def _remove_keys(modules: dict[str, tuple[str, ...]], symbols: dict[str, tuple[str, ...]], entry: FileEntry) -> None:
    for key in module_keys(entry.path, entry.language):
        rest = tuple(p for p in modules.get(key, ()) if p != entry.path)
        if rest:
            modules[key] = rest
        else:
            modules.pop(key, None)
    for name in {d.name for d in entry.definitions}:
        rest = tuple(p for p in symbols.get(name, ()) if p != entry.path)
        if rest:
            symbols[name] = rest
        else:
            symbols.pop(name, None)


def index_file_for(root: str, cache_dir: Path) -> Path:
    real = os.path.realpath(root)
    digest = hashlib.sha1(real.encode("utf-8")).hexdigest()[:16]
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in os.path.basename(real)) or "root"
    return cache_dir / "index" / f"{name}-{digest}.json"


@dataclass
class IndexOptions:
    max_file_bytes: int = 512 * 1024
    max_files: int = 50000
    exclude: list[str] = field(default_factory=list)


class ContextIndex:
    def __init__(self, root: str, cache_dir: Path | None = None, options: IndexOptions | None = None) -> None:
        self.root = os.path.realpath(root)
        self.name = os.path.basename(self.root)
        self.options = options or IndexOptions()
        self.cache_file = index_file_for(self.root, cache_dir) if cache_dir is not None else None
        self.rules = IgnoreRules(self.root, self.options.exclude)
        self.snapshot = Snapshot(self.root)
        self.ready = threading.Event()
        """Set once the first full walk has been published."""
        self.stats: dict[str, Any] = {}
        self.save_error: str | None = None
        """Why the last save failed (None when it worked): the index then lives in memory only."""
        self._lock = threading.Lock()
        self._save_lock = threading.Lock()
        self._buffers: dict[str, str] = {}
        self._dirty = False
        self._version = 0
        # Disk texts by (path, mtime, size): a changed file is a new key, the old one ages out.
        self._read_disk = functools.lru_cache(maxsize=256)(_read_file)

    # -- paths ------------------------------------------------------------------------------
    def relative(self, path: str) -> str | None:
        """``path`` relative to the root, or None when it is outside (links are resolved)."""
        if not path:
            return None
        real = os.path.realpath(path)
        if real != self.root and not real.startswith(self.root + os.sep):
            return None
        rel = os.path.relpath(real, self.root)
        return rel.replace(os.sep, "/") if rel != "." else None

    def wants(self, rel: str) -> bool:
        return language_of(rel) is not None and not self.rules.ignored(rel)

    def walk(self) -> Iterator[str]:
        """Indexable files under the root: ignore rules applied, links out of the root not followed."""
        for dirpath, dirnames, filenames in os.walk(self.root, followlinks=False):
            rel_dir = os.path.relpath(dirpath, self.root).replace(os.sep, "/")
            rel_dir = "" if rel_dir == "." else rel_dir
            dirnames[:] = sorted(d for d in dirnames
                                 if not self.rules.ignored(f"{rel_dir}/{d}" if rel_dir else d, is_dir=True)
                                 and not os.path.islink(os.path.join(dirpath, d)))
            for name in sorted(filenames):
                rel = f"{rel_dir}/{name}" if rel_dir else name
                if language_of(name) is None or self.rules.ignored(rel):
                    continue
                full = os.path.join(dirpath, name)
                if os.path.islink(full) and self.relative(full) is None:
                    continue  # a link out of the workspace
                yield rel

    # -- parsing ----------------------------------------------------------------------------
    def _parse(self, rel: str, text: str, mtime_ns: int, size: int, buffer: bool = False) -> FileEntry:
        lang = language_of(rel)
        assert lang is not None
        parsed = parse_source(text, lang)
        with self._lock:
            self._version += 1
            version = self._version
        return FileEntry(rel, lang, mtime_ns, size, text.count("\n") + 1, parsed.definitions, parsed.imports,
                         version, buffer)

    def _load_disk(self, rel: str, previous: FileEntry | None = None) -> FileEntry | None:
        full = os.path.join(self.root, rel)
        try:
            st = os.stat(full)
        except OSError:
            return None
        if previous is not None and not previous.buffer and previous.mtime_ns == st.st_mtime_ns \
                and previous.size == st.st_size:
            return previous
        if name_skip_reason(rel) or file_skip_reason(full, st.st_size, self.options.max_file_bytes):
            return None
        try:
            with open(full, encoding="utf-8", errors="replace") as fh:
                text = fh.read()
        except OSError:
            return None
        return self._parse(rel, text, st.st_mtime_ns, st.st_size)

    # -- the full walk ----------------------------------------------------------------------
    def build(self, progress: Callable[[int, int], None] | None = None,
              cancelled: Callable[[], bool] = lambda: False) -> Snapshot:
        """Walk the workspace, reuse unchanged entries from the saved index, parse the rest."""
        t0 = time.perf_counter()
        saved = self.load_saved()
        paths = list(self.walk())[: self.options.max_files]
        files: dict[str, FileEntry] = {}
        parsed = 0
        last_publish = time.monotonic()
        for i, rel in enumerate(paths):
            if cancelled():
                break
            try:
                entry = self._load_disk(rel, saved.get(rel))
            except Exception:
                log.exception("could not index %s", rel)
                entry = None
            if entry is not None:
                parsed += entry is not saved.get(rel)
                files[rel] = entry
            if progress is not None and (i % 50 == 0 or i == len(paths) - 1):
                progress(i + 1, len(paths))
            if time.monotonic() - last_publish > 2.0:  # early completions get a partial index
                self._publish_full(files)
                last_publish = time.monotonic()
        self._publish_full(files)
        self.stats = {"files": len(files), "parsed": parsed, "reused": len(files) - parsed,
                      "lines": sum(e.lines for e in files.values()),
                      "definitions": sum(len(e.definitions) for e in files.values()),
                      "seconds": time.perf_counter() - t0}
        with self._lock:
            self._dirty = parsed > 0 or len(files) != len(saved)
        self.save()
        self.ready.set()
        log.info("indexed %s: %d files (%d parsed, %d from the saved index), %d definitions in %.1f s", self.root,
                 len(files), parsed, len(files) - parsed, self.stats["definitions"], self.stats["seconds"])
        return self.snapshot

    def _publish_full(self, files: dict[str, FileEntry]) -> None:
        with self._lock:
            # Buffers edited during the walk win over what the walk read from disk.
            merged = dict(files)
            for rel in self._buffers:
                current = self.snapshot.files.get(rel)
                if current is not None and current.buffer:
                    merged[rel] = current
            self.snapshot = Snapshot.build(self.root, merged, self.snapshot.version + 1)

    # -- live updates -----------------------------------------------------------------------
    def update_paths(self, changed: Iterable[str], deleted: Iterable[str] = ()) -> None:
        """Files changed or appeared on disk (watchdog), or were deleted. Open buffers are skipped."""
        for rel in deleted:
            with self._lock:
                if rel not in self._buffers:
                    self.snapshot = self.snapshot.without_entry(rel)
                    self._dirty = True
        for rel in changed:
            if posixpath.basename(rel) == ".gitignore":
                self.rules.reload(posixpath.dirname(rel))
                continue
            if not self.wants(rel):
                with self._lock:
                    if rel not in self._buffers:
                        self.snapshot = self.snapshot.without_entry(rel)
                continue
            with self._lock:
                if rel in self._buffers:
                    continue
                previous = self.snapshot.files.get(rel)
            entry = self._load_disk(rel, previous)
            with self._lock:
                if rel in self._buffers:
                    continue  # opened while the disk was read: the buffer wins
                if entry is None:
                    self.snapshot = self.snapshot.without_entry(rel)
                elif entry is not self.snapshot.files.get(rel):
                    self.snapshot = self.snapshot.with_entry(entry)
                self._dirty = True

    def update_buffer(self, rel: str, text: str) -> None:
        """An open document changed: index its text, not the file on disk."""
        if language_of(rel) is None or len(text) > self.options.max_file_bytes or "\x00" in text:
            return
        with self._lock:
            self._buffers[rel] = text
        entry = self._parse(rel, text, 0, len(text), buffer=True)
        with self._lock:
            if self._buffers.get(rel) is text:  # not closed, nor changed again, while it was parsed
                self.snapshot = self.snapshot.with_entry(entry)

    def close_buffer(self, rel: str) -> None:
        """The document was closed: back to what is on disk."""
        with self._lock:
            if self._buffers.pop(rel, None) is None:
                return
        entry = self._load_disk(rel) if self.wants(rel) else None
        with self._lock:
            if rel in self._buffers:
                return  # opened again while the disk was read
            self.snapshot = self.snapshot.with_entry(entry) if entry else self.snapshot.without_entry(rel)

    def open_buffers(self) -> list[str]:
        with self._lock:
            return list(self._buffers)

    def read_text(self, rel: str) -> str:
        """The text of a file: the open buffer, else the disk (cached while mtime and size hold)."""
        with self._lock:
            text = self._buffers.get(rel)
        if text is not None:
            return text
        full = os.path.join(self.root, rel)
        try:
            st = os.stat(full)
            return self._read_disk(full, st.st_mtime_ns, st.st_size)
        except OSError:
            return ""

    # -- persistence ------------------------------------------------------------------------
    def load_saved(self) -> dict[str, FileEntry]:
        if self.cache_file is None or not self.cache_file.is_file():
            return {}
        try:
            data = json.loads(self.cache_file.read_text(encoding="utf-8"))
            if data.get("schema") != SCHEMA or data.get("root") != self.root:
                return {}
            return {e[0]: FileEntry.from_json(e) for e in data["files"]}
        except Exception as exc:  # a damaged index is rebuilt, never fatal
            log.warning("ignoring the saved index %s: %s", self.cache_file, exc)
            return {}

    def save(self, force: bool = False) -> bool:
        """Write the index atomically: a temporary file of its own in the same folder, then
        ``os.replace``. True when it was written; a failure is logged once and the index stays
        in memory (the next save tries again)."""
        if self.cache_file is None:
            return False
        with self._save_lock:
            with self._lock:
                if not (self._dirty or force):
                    return False
                snap = self.snapshot
                self._dirty = False
            data = {"schema": SCHEMA, "root": self.root,
                    "files": [e.to_json() for e in snap.files.values() if not e.buffer]}
            tmp: str | None = None
            try:
                self.cache_file.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(prefix=f"{self.cache_file.name}.", suffix=".tmp",
                                           dir=self.cache_file.parent)
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    json.dump(data, fh, separators=(",", ":"))
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, self.cache_file)
            except OSError as exc:
                with self._lock:
                    self._dirty = True
                if tmp is not None:
                    try:
                        os.unlink(tmp)
                    except OSError:
                        pass
                if self.save_error is None:
                    log.warning("the index of %s is kept in memory only: it cannot be saved to %s (%s)",
                                self.root, self.cache_file, exc)
                self.save_error = str(exc)
                return False
            if self.save_error is not None:
                log.info("the index of %s is saved again to %s", self.root, self.cache_file)
                self.save_error = None
            return True


def _read_file(path: str, mtime_ns: int, size: int) -> str:
    """The text of ``path`` (``mtime_ns`` and ``size`` only key the cache around it)."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        return fh.read()
