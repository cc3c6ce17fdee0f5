"""Source 1: definitions of the names the code near the cursor imports or uses.

Names are resolved through the current file's imports to other files of the repository (one
re-export hop is followed, e.g. a package ``__init__``); names used but not imported (methods
called on objects, globals of C includes) fall back to the repository's symbol table when only a
few files define them. A function is shown as its signature and first docstring line (no
placeholder body); a class as its header, fields and method signatures. Bodies are never shown.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from ..index import FileEntry, Snapshot, import_keys
from ..parsing import BRACE_LANGUAGES, Definition, Import, language_of

IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
ATTR = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*\.\s*([A-Za-z_][A-Za-z0-9_]*)")
LINES_BEFORE, LINES_AFTER = 60, 15
MAX_METHODS = 24
MAX_CLASS_LINES = 32
"""A class shown with more members is cut: a piece too big for the budget would be dropped whole."""
FALLBACK_MAX_FILES = 3
EXPLICIT_IMPORTS = ("python", "javascript", "typescript", "tsx", "java")
IMPORTED = 0.05
"""Score of a name the file imports from the repository before any use is counted: the import
list says what the code is about to call even where the window no longer shows the import."""
BOUND = re.compile(r"(?:^|[\s(,])\*{0,2}([A-Za-z_][A-Za-z0-9_]*)\s*(?::[^=\n]*)?=(?!=)"
                   r"|\bfor\s+([A-Za-z_][A-Za-z0-9_]*)\b|\bas\s+([A-Za-z_][A-Za-z0-9_]*)")
COMMON = {"self", "cls", "this", "None", "True", "False", "return", "import", "from", "def", "class", "if", "else",
          "for", "while", "in", "not", "and", "or", "is", "with", "as", "try", "except", "raise", "pass", "lambda",
          "const", "let", "var", "function", "new", "null", "undefined", "true", "false", "int", "str", "func",
          "string", "error", "nil", "fn", "pub", "use", "mut", "impl", "struct", "type", "interface", "public",
          "private", "static", "void", "char", "float", "double", "bool", "long", "auto", "include", "define",
          "len", "print", "range", "list", "dict", "set", "tuple", "super", "object", "Exception", "isinstance"}


@dataclass
class Found:
    path: str
    definition: Definition
    score: float
    text: str = ""

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.path, self.definition.parent, self.definition.name)


def usage(lines: list[str], line: int) -> tuple[dict[str, float], dict[tuple[str, str], float]]:
    """Identifier and ``base.attr`` weights: high next to the cursor, small elsewhere in the file."""
    names: dict[str, float] = {}
    attrs: dict[tuple[str, str], float] = {}
    lo, hi = max(0, line - LINES_BEFORE), min(len(lines), line + LINES_AFTER + 1)
    for i, text in enumerate(lines):
        near = lo <= i < hi
        w = 1.0 / (1.0 + abs(i - line) / 8.0) if near else 0.02
        if not near and (text.startswith(("import ", "from ", "#include", "use ")) or " import " in text[:40]):
            continue
        for m in IDENT.finditer(text):
            names[m.group(0)] = names.get(m.group(0), 0.0) + w
        if near:
            for m in ATTR.finditer(text):
                key = (m.group(1), m.group(2))
                attrs[key] = attrs.get(key, 0.0) + w
    return names, attrs


COMMENT_MARK = {"ruby": "#", "bash": "#", "lua": "--"}
"""The line comment of each language that does not write ``//``."""
END_LANGUAGES = ("ruby", "lua")
"""Blocks close with ``end``."""


def render(entry: FileEntry, d: Definition) -> str:
    """A definition without its body: signature, docstring line; classes with fields and methods."""
    python = entry.language == "python"
    brace = entry.language in BRACE_LANGUAGES
    ends = entry.language in END_LANGUAGES
    sig = d.signature
    indent = sig[:len(sig) - len(sig.lstrip())]
    out: list[str] = []
    if d.doc and not python:
        out.append(f"{indent}{COMMENT_MARK.get(entry.language, '//')} {d.doc}")
    if d.parent and d.kind == "method":
        owner = next((x for x in entry.definitions if x.name == d.parent and x.kind == "class"), None)
        if owner is not None:
            out.insert(0, owner.signature.split("\n")[0])
    out.append(sig)
    if d.kind == "class":
        inner = "    " if python else "  "
        if python and d.doc:
            out.append(f'{indent}{inner}"""{d.doc}"""')
        elif not python and sig.rstrip().endswith("{") is False and brace:
            out[-1] = sig + " {"
        out.extend(d.fields)
        methods = [m for m in entry.definitions if m.parent == d.name and m.kind == "method"][:MAX_METHODS]
        for m in methods:
            msig = m.signature
            if python:
                out.append(msig + " ...")
            elif ends or msig.endswith(";"):
                out.append(msig)
            else:
                out.append(msig + ";")
        if python and not d.fields and not methods and not d.doc:
            out.append(f"{indent}{inner}...")
        if len(out) > MAX_CLASS_LINES:
            out = out[:MAX_CLASS_LINES - 1] + [f"{indent}{inner}..."]
        if brace and not sig.rstrip().endswith("}"):
            out.append(indent + "}")
        elif ends:
            out.append(indent + "end")
    elif d.kind in ("function", "method"):
        if python:
            # No "..." body: each stub would show the model that a docstring is followed by
            # "...", and it writes just that as the first line of the function being written.
            if d.doc:
                out.append(f'{indent}    """{d.doc}"""')
        elif d.kind == "function" and not sig.rstrip().endswith(";") and not ends:
            out[-1] = sig + " { ... }"
    return "\n".join(out) + "\n"


LANGUAGE_FAMILY = {"javascript": "js", "typescript": "js", "tsx": "js", "c": "c", "cpp": "c"}


def same_family(a: str | None, b: str | None) -> bool:
    """Whether code in language ``a`` can use definitions from language ``b`` (JS/TS, C/C++)."""
    return a is not None and b is not None and LANGUAGE_FAMILY.get(a, a) == LANGUAGE_FAMILY.get(b, b)


def is_test_or_example(path: str) -> bool:
    """Tests and examples: code the rest of the repository does not call into."""
    return "test" in path.lower().rsplit("/", 1)[-1] or any(f"/{d}/" in f"/{path}" for d in ("tests", "examples"))


def bound_names(lines: list[str], line: int) -> set[str]:
    """Names the code near ``line`` binds itself (assignments, loop and ``as`` targets, keyword
    parameters): a local ``pending`` is not the repository's function of that name."""
    out: set[str] = set()
    for text in lines[max(0, line - LINES_BEFORE):line + LINES_AFTER + 1]:
        for m in BOUND.finditer(text):
            out.add(m.group(1) or m.group(2) or m.group(3))
    return out


def _top_level(entry: FileEntry, name: str) -> Definition | None:
    best = None
    for d in entry.definitions:
        if d.name == name:
            if not d.parent:
                return d
            best = best or d
    # Go, Rust and C methods are used by name; a Lua module's functions are fields of its table.
    return best if best is not None and entry.language in ("go", "rust", "c", "cpp", "lua") else None


def resolve_import(snap: Snapshot, path: str, lang: str, imp: Import) -> list[str]:
    for key in import_keys(path, lang, imp):
        files = snap.module_files(key)
        if files:
            return files
    return []


def _lookup(snap: Snapshot, files: list[str], name: str, hops: int = 1) -> tuple[str, Definition] | None:
    """``name`` defined in one of ``files``, or re-exported by one of them from another file."""
    for p in files:
        entry = snap.entry(p)
        if entry is None:
            continue
        d = _top_level(entry, name)
        if d is not None:
            return p, d
    if hops <= 0:
        return None
    for p in files:
        entry = snap.entry(p)
        if entry is None:
            continue
        for imp in entry.imports:
            for orig, local in imp.names:
                if local == name or orig == "*":
                    target = resolve_import(snap, p, entry.language, imp)
                    if target and target != [p]:
                        found = _lookup(snap, target, orig if orig != "*" else name, hops - 1)
                        if found is not None:
                            return found
    return None


def find_definitions(snap: Snapshot, path: str, lang: str, lines: list[str], line: int, imports: list[Import],
                     local_names: set[str], deadline: float) -> list[Found]:
    """Definitions from other files for the names used near ``line``, best first."""
    names, attrs = usage(lines, line)
    found: dict[tuple[str, str, str], Found] = {}
    resolved: set[str] = set()

    def add(p: str, d: Definition, score: float) -> None:
        if p == path:
            return
        f = Found(p, d, score)
        old = found.get(f.key)
        if old is None or old.score < score:
            found[f.key] = f

    for imp in imports:
        if time.monotonic() > deadline:
            break
        files = resolve_import(snap, path, lang, imp)
        for orig, local in imp.names:
            if local == "*" or orig == "default":
                continue
            score = names.get(local, 0.0) + IMPORTED
            hit = _lookup(snap, files, orig) if files else None
            if hit is None and lang == "java":  # import a.b.C: the class C in a/b/C.java
                hit = _lookup(snap, snap.module_files(f"java:{imp.module}.{orig}"), orig, 0)
            if hit is not None:
                add(hit[0], hit[1], score + 0.01)
                resolved.add(local)
                continue
            # ``from pkg import module``: a module used through its attributes.
            sub = snap.module_files(f"py:{imp.module}.{orig}") if lang == "python" else []
            for (base, attr), w in attrs.items():
                if base == local and sub:
                    hit = _lookup(snap, sub, attr)
                    if hit is not None:
                        add(hit[0], hit[1], w + score * 0.1)
                        resolved.add(local)
        alias = imp.alias
        if alias and files:
            for (base, attr), w in attrs.items():
                if base == alias:
                    hit = _lookup(snap, files, attr)
                    if hit is not None:
                        add(hit[0], hit[1], w)
                        resolved.add(alias)
        if not imp.names and not imp.alias and files and lang in ("c", "cpp"):
            for p in files[:1]:
                entry = snap.entry(p)
                for d in entry.definitions if entry else []:
                    if not d.parent and names.get(d.name, 0.0) > 0.05:
                        add(p, d, names[d.name])
                        resolved.add(d.name)
    # Fallback: used names that only a few files of the repository define. Where every name
    # from another file is imported (Python, JS/TS, Java) only bare names the imports missed
    # qualify (a star import, a global of the package): an attribute's owner is unknown, so a
    # method of that name elsewhere is a guess, and mostly a wrong one.
    bound = bound_names(lines, line)
    attributes = {attr for _, attr in attrs} if lang in EXPLICIT_IMPORTS else set()
    in_test = is_test_or_example(path)
    for name, w in sorted(names.items(), key=lambda kv: -kv[1])[:60]:
        if time.monotonic() > deadline:
            break
        if (w < 0.2 or name in resolved or name in local_names or name in COMMON or len(name) < 3
                or name in bound or name in attributes):
            continue
        # Only files the current one could call into: a JS function is no definition for Python
        # code, and code outside the tests does not call into them.
        files = [p for p in snap.defining(name) if p != path and same_family(language_of(p), lang)
                 and (in_test or not is_test_or_example(p))]
        if not files or len(files) > FALLBACK_MAX_FILES:
            continue
        for p in files:
            entry = snap.entry(p)
            if entry is None:
                continue
            for d in entry.definitions:
                if d.name == name and not (attributes and d.parent):
                    add(p, d, w * 0.5)
                    break
    classes = {(f.path, f.definition.name) for f in found.values() if f.definition.kind == "class"}
    out = sorted((f for f in found.values() if (f.path, f.definition.parent) not in classes),
                 key=lambda f: -f.score)  # a method whose class is shown already: the class has it
    for f in out:
        entry = snap.entry(f.path)
        if entry is not None:
            f.text = render(entry, f.definition)
    return [f for f in out if f.text]
