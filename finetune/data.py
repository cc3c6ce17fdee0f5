"""Training data from a repository: files, filters, a by-file split, and FIM examples.

* Files: ``git ls-files`` in a git repo (``.gitignore`` respected by git), else a walk that
  honours the ``.gitignore`` files. Generated, vendored, minified, binary, huge, tiny and
  duplicate files are dropped (``FileSet.dropped`` counts why), by the same file filter as the
  server's index (``slm_lsp.context.files``).
* Split: each file goes to train or held-out by a seeded hash of its path, so an example never
  shares a file with the evaluation and adding files does not reshuffle the others.
* Examples: the middle is a tree-sitter syntax node (expression, statement, block, function
  body), the rest of a line from a random cursor (what the editor asks for while typing), or a
  random span. The prompt is built by the server's own ``PromptBuilder`` (same windows, repo
  context format and PSM/SPM layout, with the tokenizer of the model being trained), so what
  the model learns is exactly what it is asked at serving time. Example ``i`` is a pure
  function of ``(seed, i)``: resuming, or sharding across processes, needs only the index.
* General corpus (``--general-corpus stdlib,site-packages``): one repository may be too little
  code to teach a general skill (FIM to a base model without it), so a share of the examples
  (``--general-fraction``) comes from Python's standard library source and the installed
  packages under permissive licences, tests left out. Held-out files are the repository's only.
"""

from __future__ import annotations

import builtins
import dataclasses
import hashlib
import keyword
import os
import random
import re
import subprocess
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slm_lsp.context.files import IgnoreRules, content_skip_reason, name_skip_reason
from slm_lsp.context.parsing import language_of, parser_for
from slm_lsp.engine.fim import SPM, FimTemplate
from slm_lsp.engine.prompt import ContextFile, PromptBuilder, PromptRequest, Tokenizer

IGNORE_INDEX = -100

MIN_FILE_BYTES = 64
"""Smaller files are dropped as "tiny" (an empty ``__init__.py`` teaches nothing)."""

# Syntax nodes worth hiding: their type names across the grammars above.
NODE_TYPES = {"block", "statement_block", "compound_statement", "constructor_body", "function_body",
              "argument_list", "arguments", "call", "call_expression", "method_invocation", "assignment",
              "return_statement", "expression_statement", "lambda", "list_comprehension", "dictionary",
              "list", "conditional_expression", "binary_expression", "binary_operator", "boolean_operator",
              "comparison_operator", "keyword_argument", "pair", "subscript"}
NODE_SUFFIXES = ("_statement", "_expression", "_definition", "_declaration")


# -- files --------------------------------------------------------------------------------------
@dataclass
class SourceFile:
    path: str
    """Path relative to the repository, with ``/``."""
    text: str

    @property
    def language(self) -> str | None:
        """The tree-sitter language of the file (None: lines and random spans only)."""
        return language_of(self.path)


@dataclass
class FileSet:
    train: list[SourceFile]
    heldout: list[SourceFile]
    dropped: Counter[str] = field(default_factory=Counter)
    """Why files were left out: generated, vendored, minified, huge, binary, duplicate, ..."""


def list_files(repo: Path) -> list[str]:
    """Candidate paths (relative, ``/``-separated): git-tracked ones in a git work tree."""
    repo = Path(repo)
    if (repo / ".git").exists():
        try:
            out = subprocess.run(["git", "-C", str(repo), "ls-files", "-z", "--cached"], check=True,
                                 capture_output=True, timeout=60).stdout
            return sorted(p for p in out.decode("utf-8", "replace").split("\0") if p)
        except (OSError, subprocess.SubprocessError):
            pass  # no git: walk, honouring .gitignore
    return _walk(repo)


def _walk(repo: Path) -> list[str]:
    """Files under ``repo`` that its ``.gitignore`` files keep (vendored folders are listed:
    ``load_files`` counts them as dropped)."""
    rules = IgnoreRules(str(repo), vendored=False)
    found: list[str] = []
    for root, dirs, files in os.walk(repo):
        rel_root = os.path.relpath(root, repo).replace(os.sep, "/")
        rel_root = "" if rel_root == "." else rel_root + "/"
        dirs[:] = sorted(d for d in dirs if not rules.ignored(rel_root + d, is_dir=True))
        found += [rel_root + f for f in sorted(files) if not rules.ignored(rel_root + f)]
    return sorted(found)


def _drop_reason(path: str, data: bytes, max_bytes: int) -> str | None:
    reason = name_skip_reason(path) or content_skip_reason(data, len(data), max_bytes, MIN_FILE_BYTES)
    if reason is None:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            return "binary"
    return reason


def read_source(rel: str, full: Path, max_file_bytes: int, seen: set[str]) -> tuple[SourceFile | None, str | None]:
    """The file as training text, or why it is left out (by name or size before reading it: a 1 GB
    dump is never read; unreadable, binary, generated, or a copy of one in ``seen``, which it joins)."""
    try:
        reason = name_skip_reason(rel) or ("huge" if full.stat().st_size > max_file_bytes else None)
        data = b"" if reason else full.read_bytes()
    except OSError:
        return None, "unreadable"
    reason = reason or _drop_reason(rel, data, max_file_bytes)
    if reason is not None:
        return None, reason
    text = data.decode("utf-8").replace("\r\n", "\n")
    digest = hashlib.sha1("\n".join(x.strip() for x in text.splitlines() if x.strip()).encode()).hexdigest()
    if digest in seen:
        return None, "duplicate"
    seen.add(digest)
    return SourceFile(rel, text), None


def split_key(seed: int, path: str) -> float:
    """A stable number in [0, 1) for ``path`` (the by-file split)."""
    digest = hashlib.sha256(f"{seed}:{path}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def held_out_count(n: int, fraction: float) -> int:
    """How many of ``n`` items a by-hash split holds out: ``fraction`` of them, at least one of
    two or more (a threshold on the hash would leave a short list with none)."""
    return max(1, round(n * fraction)) if n >= 2 else 0


def load_files(repo: Path, *, heldout_fraction: float = 0.1, max_file_bytes: int = 200_000,
               seed: int = 0) -> FileSet:
    """The repository's code files, filtered and split by file into train and held-out."""
    repo = Path(repo)
    dropped: Counter[str] = Counter()
    seen: set[str] = set()
    kept: list[SourceFile] = []
    for rel in list_files(repo):
        full = repo / rel
        if not full.is_file() or full.is_symlink():
            continue
        source, reason = read_source(rel, full, max_file_bytes, seen)
        if source is not None:
            kept.append(source)
        if reason is not None:
            dropped[reason] += 1
    ranked = sorted(kept, key=lambda f: split_key(seed, f.path))
    n_held = held_out_count(len(ranked), heldout_fraction)
    heldout = sorted(ranked[:n_held], key=lambda f: f.path)
    train = sorted(ranked[n_held:], key=lambda f: f.path)
    return FileSet(train, heldout, dropped)


# -- a general corpus -----------------------------------------------------------------------------
GENERAL_CORPORA = ("stdlib", "site-packages")
"""``--general-corpus`` sources: Python's standard library source, and the installed packages
whose licence is permissive (both are on every machine that runs finetune)."""

TEST_DIRS = frozenset({"test", "tests", "testing", "idle_test", "unittests", "test_data", "testdata"})
SKIPPED_STDLIB_DIRS = frozenset({
    "site-packages", "dist-packages",  # installed packages: the site-packages source, with licence checks
    "encodings",  # generated codec tables
    "lib2to3", "ensurepip", "pydoc_data", "idlelib", "turtledemo", "tkinter"})
"""Standard library folders that teach little code: generated tables, data, GUI demos."""

PERMISSIVE = re.compile(r"\b(MIT|BSD|Apache|PSF|Python Software Foundation|ISC|Unlicense|0BSD|Zlib|CC0|HPND)\b",
                        re.IGNORECASE)
COPYLEFT = re.compile(r"GPL|MPL|Mozilla|\bEPL\b|Eclipse|CDDL|EUPL|SSPL|Commons Clause|proprietary", re.IGNORECASE)


def is_test_path(rel: str) -> bool:
    """A test file or a file in a test folder (tests teach assertions, not the library's code)."""
    parts = rel.split("/")
    name = parts[-1]
    return (any(p in TEST_DIRS for p in parts[:-1]) or name.startswith("test_") or name.endswith("_test.py")
            or name == "conftest.py")


def permissive_licence(metadata: Any) -> str | None:
    """The licence of a distribution when it is permissive (MIT, BSD, Apache, PSF, ISC, ...), from
    ``License-Expression``, ``License`` or the ``License ::`` classifiers; None when it is
    copyleft (GPL, LGPL, MPL, ...), unknown or absent: such code is never trained on."""
    texts = [metadata.get("License-Expression") or "", (metadata.get("License") or "")[:300]]
    texts += [c for c in (metadata.get_all("Classifier") or []) if c.startswith("License ::")]
    text = " ".join(t for t in texts if t)
    if not text or COPYLEFT.search(text) or not PERMISSIVE.search(text):
        return None
    return " ".join(text.split())[:80]


@dataclass
class GeneralCorpus:
    files: list[SourceFile]
    dropped: Counter[str] = field(default_factory=Counter)
    """Why candidate files were left out: test, licence, huge, generated, duplicate, ..."""
    sources: Counter[str] = field(default_factory=Counter)
    """Files kept per source: ``stdlib`` or the distribution's name."""


def general_candidates(source: str, dropped: Counter[str]) -> list[tuple[str, Path, str]]:
    """``(relative path, file, source)`` of the Python files of ``source`` (``stdlib`` or
    ``site-packages``), tests and skipped folders already left out (counted in ``dropped``)."""
    import sysconfig

    found: list[tuple[str, Path, str]] = []
    if source == "stdlib":
        root = Path(sysconfig.get_paths()["stdlib"])
        for dirpath, dirs, names in os.walk(root):
            rel_dir = Path(dirpath).relative_to(root).as_posix()
            rel_dir = "" if rel_dir == "." else rel_dir + "/"
            dirs[:] = sorted(d for d in dirs if d not in SKIPPED_STDLIB_DIRS and not d.startswith(("config-", "."))
                             and d != "__pycache__")
            for name in sorted(names):
                if not name.endswith(".py"):
                    continue
                rel = rel_dir + name
                if is_test_path(rel):
                    dropped["test"] += 1
                else:
                    found.append((rel, Path(dirpath) / name, "stdlib"))
        return found
    if source != "site-packages":
        raise ValueError(f"unknown general corpus {source!r}: one of {', '.join(GENERAL_CORPORA)}")
    from importlib import metadata

    roots = sorted({Path(sysconfig.get_paths()[k]).resolve() for k in ("purelib", "platlib")})
    seen: set[str] = set()
    for dist in metadata.distributions(path=[str(r) for r in roots]):
        name = dist.metadata["Name"] or "?"
        py = [f for f in dist.files or [] if str(f).endswith(".py")]
        if name.lower() in seen or not py:
            continue
        seen.add(name.lower())
        if permissive_licence(dist.metadata) is None:
            dropped["licence"] += len(py)
            continue
        for f in py:
            rel = Path(str(f)).as_posix()
            full = Path(str(dist.locate_file(f))).resolve()
            if rel.startswith("..") or not any(full.is_relative_to(r) for r in roots):
                continue  # an editable install, scripts: not the package's source in site-packages
            if is_test_path(rel):
                dropped["test"] += 1
            else:
                found.append((rel, full, name))
    return found


def load_general_corpus(sources: str, *, max_files: int = 2000, max_file_bytes: int = 200_000,
                        seed: int = 0) -> GeneralCorpus:
    """Up to ``max_files`` Python files from the comma-separated ``sources`` (``stdlib``,
    ``site-packages``), a seeded sample, filtered like a repository's files (generated, minified,
    huge, tiny, duplicates dropped) and never tests or code under a licence that is not permissive."""
    dropped: Counter[str] = Counter()
    candidates: list[tuple[str, Path, str]] = []
    for source in [x.strip() for x in sources.split(",") if x.strip()]:
        candidates += general_candidates(source, dropped)
    candidates.sort(key=lambda c: split_key(seed, f"{c[2]}/{c[0]}"))
    corpus = GeneralCorpus([], dropped)
    seen: set[str] = set()
    for rel, full, source in candidates:
        if len(corpus.files) >= max_files:
            break
        found, reason = read_source(rel, full, max_file_bytes, seen)
        if found is not None:
            corpus.files.append(found)
            corpus.sources[source] += 1
        if reason is not None:
            dropped[reason] += 1
    corpus.files.sort(key=lambda f: f.path)
    return corpus


# -- spans --------------------------------------------------------------------------------------
def _is_wanted(node: Any) -> bool:
    t = node.type
    return node.is_named and (t in NODE_TYPES or t.endswith(NODE_SUFFIXES))


def node_spans(file: SourceFile, max_lines: int, max_chars: int = 600) -> list[tuple[int, int]]:
    """Character spans of syntax nodes (expressions, statements, blocks, function bodies) that
    fit ``max_lines`` lines and ``max_chars`` characters, in document order."""
    language = file.language
    if language is None:
        return []
    try:
        parser = parser_for(language)
    except Exception:  # a grammar that does not load: random spans and lines only
        return []
    data = file.text.encode("utf-8")
    tree = parser.parse(data)
    ascii_only = len(data) == len(file.text)
    spans: list[tuple[int, int]] = []
    stack = [tree.root_node]
    while stack:
        node = stack.pop()
        size = node.end_byte - node.start_byte
        if size > 2 and _is_wanted(node) and size <= max_chars \
                and node.end_point[0] - node.start_point[0] < max_lines and not node.has_error:
            spans.append((node.start_byte, node.end_byte))
        if size > 0:
            stack.extend(reversed(node.children))
    if not ascii_only:
        spans = [(len(data[:s].decode("utf-8", "ignore")), len(data[:e].decode("utf-8", "ignore")))
                 for s, e in spans]
    return sorted(set(spans))


def line_span(text: str, rng: random.Random, min_chars: int = 4) -> tuple[int, int] | None:
    """The rest of a random non-blank line from a random cursor inside it (not inside a word)."""
    starts = [m.start() for m in re.finditer(rf"(?m)^[ \t]*\S.{{{min_chars - 1},}}$", text)]
    if not starts:
        return None
    start = rng.choice(starts)
    end = text.find("\n", start)
    end = len(text) if end < 0 else end
    line = text[start:end]
    indent = len(line) - len(line.lstrip())
    cuts = [i for i in range(indent, len(line) - 1)
            if i == indent or not (line[i - 1].isalnum() or line[i - 1] == "_") or not line[i].isalnum()]
    cut = rng.choice(cuts)
    return start + cut, end


def random_span(text: str, rng: random.Random, max_lines: int, max_chars: int = 400) -> tuple[int, int] | None:
    if len(text) < 2:
        return None
    start = rng.randrange(len(text) - 1)
    end = min(len(text), start + rng.randint(1, max_chars))
    lines = text[start:end].split("\n")
    end = start + len("\n".join(lines[:max_lines]))
    return (start, end) if end > start else None


def whole_lines(text: str, span: tuple[int, int]) -> tuple[int, int] | None:
    """``span`` widened to whole lines, from the line's first column (its indentation included)
    to the end of its last line without the newline: the document keeps an empty line with the
    cursor at column 0, as when the user opened a new line (HumanEval's single- and multi-line
    sets ask that way). None when code other than blanks precedes or follows the span on its lines."""
    start, end = span
    line_start = text.rfind("\n", 0, start) + 1
    line_end = text.find("\n", end)
    line_end = len(text) if line_end < 0 else line_end
    if text[line_start:start].strip() or text[end:line_end].strip():
        return None
    return line_start, line_end


# -- the repository's own names -----------------------------------------------------------------
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Definitions across the languages the index reads, at the start of a line (so that prose in
# comments does not count): functions, classes, types, constants and variables (``def``/``class``,
# ``function``/``const``/``let``, Go/Rust ``func``/``fn``/``struct``, Go methods' receivers
# skipped), names assigned at the start of a line without indentation (module constants), and
# attributes set on ``self``/``this`` (what ``self.`` completes to).
DEFINITION = re.compile(
    r"^[ \t]*(?:(?:export|pub(?:\([a-z]+\))?|async|static|default|public|private|protected)\s+)*"
    r"(?:def|class|function|func|fn|struct|enum|trait|interface|type|const|let|var|val)\s+"
    r"\*?(?:\([^)]*\)\s*)?([A-Za-z_][A-Za-z0-9_]*)"
    r"|^([A-Za-z_][A-Za-z0-9_]*)\s*(?::[^=\n]*)?=(?!=)"
    r"|\b(?:self|this)\.([A-Za-z_][A-Za-z0-9_]*)\s*(?::[^=\n]*)?=(?!=)", re.M)
MIN_NAME_CHARS = 4
"""Shorter names (``i``, ``df``, ``run``) say little about a codebase."""
COMMON_NAMES = frozenset(dir(builtins)) | frozenset(keyword.kwlist) | frozenset(keyword.softkwlist)


def repo_names(files: Iterable[SourceFile]) -> set[str]:
    """The names ``files`` define (see ``DEFINITION``), less Python's builtins and keywords,
    dunder names and names shorter than ``MIN_NAME_CHARS``."""
    names: set[str] = set()
    for f in files:
        for m in DEFINITION.finditer(f.text):
            names.add(m.group(1) or m.group(2) or m.group(3))
    return {n for n in names if len(n) >= MIN_NAME_CHARS and n not in COMMON_NAMES and not n.startswith("__")}


def name_uses(text: str, names: set[str]) -> list[int]:
    """Where ``text`` uses one of ``names`` (the offsets of the identifiers)."""
    return [m.start() for m in IDENTIFIER.finditer(text) if m.group() in names]


def name_line_span(text: str, uses: list[int], rng: random.Random) -> tuple[int, int] | None:
    """The rest of the line from a random cursor at or before one of ``uses`` (offsets of the
    repository's names in ``text``, see ``name_uses``): the name is part of the middle, as in the
    gate's own-name lines (``evaluate.line_tasks``)."""
    if not uses:
        return None
    at = rng.choice(uses)
    line_start = text.rfind("\n", 0, at) + 1
    line_end = text.find("\n", at)
    line_end = len(text) if line_end < 0 else line_end
    # line_span cuts before the last two characters it is given: up to two into the name, so
    # the cut falls before the name or at its start
    cut = line_span(text[line_start:at + 2], rng, min_chars=2)
    return (line_start + cut[0], line_end) if cut is not None else None


# -- examples -----------------------------------------------------------------------------------
@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]
    path: str
    kind: str
    """node, line, name (the rest of a line from before a repository name) or random."""
    layout: str
    middle: str


@dataclass
class DataSettings:
    """What ``ExampleMaker`` needs from the finetune config."""

    seq_len: int = 384
    node_fraction: float = 0.6
    line_fraction: float = 0.25
    spm_fraction: float = 0.1
    context_fraction: float = 0.5
    max_middle_lines: int = 8
    loss_on: str = "middle"
    whole_line_fraction: float = 0.0
    own_names_fraction: float = 0.0

    @classmethod
    def from_config(cls, cfg: Any) -> DataSettings:
        return cls(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cls)})


class ExampleMaker:
    """FIM training examples from a list of files, laid out by the server's PromptBuilder."""

    def __init__(self, files: list[SourceFile], template: FimTemplate, tokenizer: Tokenizer, *,
                 end_token: int, bos: list[int] | None = None, settings: DataSettings | None = None,
                 repo_name: str = "repo", seed: int = 0, names: set[str] | None = None) -> None:
        if not files:
            raise ValueError("no files to make examples from")
        self.files, self.template, self.tok = files, template, tokenizer
        self.names = names or set()
        self._uses: dict[str, list[int]] = {}
        self.end_token, self.bos = end_token, bos or []
        self.s = settings or DataSettings()
        self.repo_name, self.seed = repo_name, seed
        self._weights = [len(f.text) ** 0.5 for f in files]  # big files count more, not linearly
        self._nodes: dict[str, list[tuple[int, int]]] = {}
        self.max_middle_tokens = self.s.seq_len // 4

    def _node_spans(self, f: SourceFile) -> list[tuple[int, int]]:
        if f.path not in self._nodes:
            self._nodes[f.path] = node_spans(f, self.s.max_middle_lines)
        return self._nodes[f.path]

    def _name_uses(self, f: SourceFile) -> list[int]:
        if f.path not in self._uses:
            self._uses[f.path] = name_uses(f.text, self.names)
        return self._uses[f.path]

    def example(self, index: int) -> Example:
        """Example ``index`` (deterministic); retries other spans when one does not fit."""
        rng = random.Random(f"{self.seed}:{index}")
        for _ in range(50):
            ex = self._try(rng)
            if ex is not None:
                return ex
        raise RuntimeError("could not make an example that fits seq_len; raise --seq-len")

    def examples(self, indices: Iterable[int]) -> list[Example]:
        return [self.example(i) for i in indices]

    def _try(self, rng: random.Random) -> Example | None:
        s = self.s
        f = rng.choices(self.files, self._weights)[0]
        span: tuple[int, int] | None = None
        kind = "random"
        # drawn only when asked for, so that other settings make the same examples as before
        if s.own_names_fraction and self.names and rng.random() < s.own_names_fraction \
                and (span := name_line_span(f.text, self._name_uses(f), rng)) is not None:
            return self.make(f, span, kind="name",
                             context=self._context(f, rng) if rng.random() < s.context_fraction else [])
        roll = rng.random()
        if roll < s.node_fraction and (nodes := self._node_spans(f)):
            span, kind = rng.choice(nodes), "node"
        elif roll < s.node_fraction + s.line_fraction:
            span, kind = line_span(f.text, rng), "line"
        if span is None:
            span, kind = random_span(f.text, rng, s.max_middle_lines), "random"
        if span is None:
            return None
        if kind != "random" and rng.random() < s.whole_line_fraction:
            if kind == "line":  # the whole line, not the rest of it
                span = (f.text.rfind("\n", 0, span[0]) + 1, span[1])
            span = whole_lines(f.text, span) or span
        spm = self.template.is_fim and rng.random() < s.spm_fraction
        use_context = rng.random() < s.context_fraction
        return self.make(f, span, kind=kind, spm=spm, context=self._context(f, rng) if use_context else [])

    def _context(self, f: SourceFile, rng: random.Random) -> list[ContextFile]:
        """One or two other files, nearest directories first, cut to a quarter of seq_len."""
        others = [o for o in self.files if o.path != f.path]
        if not others:
            return []
        here = f.path.rsplit("/", 1)[0] if "/" in f.path else ""
        near = [o for o in others if (o.path.rsplit("/", 1)[0] if "/" in o.path else "") == here] or others
        picked = rng.sample(near, min(len(near), rng.randint(1, 2)))
        budget = self.s.seq_len // 4 // len(picked)
        out = []
        for o in picked:
            lines, total = [], 0
            for line in o.text.splitlines(keepends=True):
                n = len(self.tok.tokenize(line))
                if total + n > budget:
                    break
                lines.append(line)
                total += n
            if lines:
                out.append(ContextFile(o.path, "".join(lines)))
        return out

    def make(self, f: SourceFile, span: tuple[int, int], *, kind: str = "node", spm: bool = False,
             context: list[ContextFile] | None = None) -> Example | None:
        """The example hiding ``f.text[span]``: the server's prompt for the document without the
        middle and the cursor where it was, then the middle and the end token. None when the
        middle is empty or too long for ``seq_len``."""
        start, end = span
        middle = f.text[start:end]
        if not middle.strip():
            return None
        mid_ids = self.tok.tokenize(middle) + [self.end_token]
        if len(mid_ids) > self.max_middle_tokens:
            return None
        template = dataclasses.replace(self.template, layout=SPM) if spm else self.template
        doc = f.text[:start] + f.text[end:]
        line = doc.count("\n", 0, start)
        column = start - (doc.rfind("\n", 0, start) + 1)
        budget = self.s.seq_len - len(mid_ids) - len(self.bos) - 8
        builder = PromptBuilder(template, self.tok, 16, 0, self.bos)
        ctx_ids = builder.context_text(PromptRequest(doc, line, column, f.path, context=context or [],
                                                     repo_name=self.repo_name))
        budget -= len(ctx_ids)
        if budget < 32:
            return None
        prefix_budget = budget * 3 // 4 if template.is_fim else budget
        builder = PromptBuilder(template, self.tok, prefix_budget, budget - prefix_budget, self.bos)
        # With context, the server passes a context budget (which also adds the headers of the
        # scopes a cut prefix window hides); without, none.
        prompt = builder.build(PromptRequest(doc, line, column, f.path, context=context or [],
                                             repo_name=self.repo_name,
                                             context_tokens=len(ctx_ids) + 16 if context else None))
        ids = prompt.tokens
        if len(ids) + len(mid_ids) > self.s.seq_len:
            return None
        labels = ([IGNORE_INDEX] * len(ids) if self.s.loss_on == "middle" else list(ids)) + mid_ids
        return Example(ids + mid_ids, labels, f.path, kind, template.layout, middle)


class MixedExamples:
    """Training examples from two makers: example ``i`` comes from ``general`` with probability
    ``fraction``, else from ``own`` (the user's repository); like ``ExampleMaker``'s, a pure
    function of the seed and ``i``, so resuming and sharding need only the index."""

    def __init__(self, own: ExampleMaker | MixedExamples, general: ExampleMaker, fraction: float,
                 seed: int = 0) -> None:
        self.own, self.general, self.fraction, self.seed = own, general, fraction, seed

    def example(self, index: int) -> Example:
        pick = random.Random(f"{self.seed}:mix:{index}").random()
        return (self.general if pick < self.fraction else self.own).example(index)

    def examples(self, indices: Iterable[int]) -> list[Example]:
        return [self.example(i) for i in indices]


def collate(examples: list[Example], pad_id: int) -> dict[str, list[list[int]]]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` (plain lists)."""
    n = max(len(e.input_ids) for e in examples)
    return {
        "input_ids": [e.input_ids + [pad_id] * (n - len(e.input_ids)) for e in examples],
        "attention_mask": [[1] * len(e.input_ids) + [0] * (n - len(e.input_ids)) for e in examples],
        "labels": [e.labels + [IGNORE_INDEX] * (n - len(e.labels)) for e in examples],
    }


# -- tokenizer ----------------------------------------------------------------------------------
class HFTokenizer:
    """A transformers tokenizer behind the ``Tokenizer`` protocol of ``PromptBuilder``: text
    is tokenized as llama.cpp's ``tokenize(special=False)`` does (special-token texts inside
    code stay plain text) and special tokens are looked up by their exact text."""

    def __init__(self, tokenizer: Any) -> None:
        self.hf = tokenizer
        self._vocab: dict[str, int] = tokenizer.get_vocab()
        self._cache: dict[str, list[int]] = {}

    def tokenize(self, text: str) -> list[int]:
        if not text:
            return []
        ids = self._cache.get(text)
        if ids is None:
            ids = list(self.hf(text, add_special_tokens=False, split_special_tokens=True)["input_ids"])
            if len(self._cache) < 50000 and len(text) < 200:
                self._cache[text] = ids
        return list(ids)

    def special(self, text: str) -> int:
        tid = self._vocab.get(text)
        if tid is None:
            raise KeyError(f"the tokenizer has no token {text!r}")
        return tid

    def has_token(self, text: str) -> bool:
        return bool(text) and text in self._vocab

    def token_text(self, tid: int) -> str:
        return str(self.hf.convert_ids_to_tokens(tid))


def count_by(examples: list[Example], key: Callable[[Example], str]) -> dict[str, int]:
    return dict(Counter(key(e) for e in examples))
