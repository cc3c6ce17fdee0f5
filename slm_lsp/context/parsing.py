"""tree-sitter parsing: what one source file defines and imports.

For each file we keep its definitions (functions, classes, methods, types: name, signature
lines, first docstring/comment line, class fields) and its imports, as plain data that is cheap
to persist. Bodies are not kept: the context shows what a name *is*, not how it is implemented.
Languages: Python, JavaScript, TypeScript/TSX, Go, Rust, Java, C, C++.

``outline`` serves prompt building: where the top-level import statements of a piece of code
are, and the headers of the scopes that enclose its last line (a cut prefix window gets them
back). It is the same parser as the index's, not a second set of regexes.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import Any

EXTENSIONS: dict[str, str] = {
    ".py": "python", ".pyi": "python",
    ".js": "javascript", ".mjs": "javascript", ".cjs": "javascript", ".jsx": "javascript",
    ".ts": "typescript", ".mts": "typescript", ".cts": "typescript", ".tsx": "tsx",
    ".go": "go", ".rs": "rust", ".java": "java",
    ".c": "c", ".h": "c",
    ".cc": "cpp", ".cpp": "cpp", ".cxx": "cpp", ".hpp": "cpp", ".hh": "cpp", ".hxx": "cpp",
}
BRACE_LANGUAGES = {"javascript", "typescript", "tsx", "go", "rust", "java", "c", "cpp"}
MAX_SIGNATURE_LINES = 10
MAX_TYPE_LINES = 15
MAX_FIELDS = 12


def language_of(path: str) -> str | None:
    dot = path.rfind(".")
    return EXTENSIONS.get(path[dot:].lower()) if dot >= 0 else None


@dataclass
class Definition:
    name: str
    kind: str
    """function, class, method or type."""
    line: int
    """0-based line of the signature's first line."""
    end_line: int
    signature: str
    """The source lines from the definition's start to its body, with their indentation."""
    doc: str = ""
    """First line of the docstring (Python) or of the comment just above (other languages)."""
    parent: str = ""
    """Enclosing class, impl or type name for methods."""
    fields: list[str] = field(default_factory=list)
    """Classes: the first lines of the non-method members (attributes, dataclass fields)."""

    def to_list(self) -> list[Any]:
        return [self.name, self.kind, self.line, self.end_line, self.signature, self.doc, self.parent, self.fields]

    @classmethod
    def from_list(cls, data: list[Any]) -> "Definition":
        return cls(*data)


@dataclass
class Import:
    module: str
    """As written: ``a.b`` (Python, Java), ``./x`` (JS), ``crate::a`` (Rust), ``x/y.h`` (C)."""
    names: list[tuple[str, str]] = field(default_factory=list)
    """(imported name, local name) pairs; empty for a module import."""
    alias: str = ""
    """Local name of the module itself (``import a.b as m``, Go package name, ``* as ns``)."""
    level: int = 0
    """Python relative import dots."""
    line: int = 0

    def to_list(self) -> list[Any]:
        return [self.module, [list(n) for n in self.names], self.alias, self.level, self.line]

    @classmethod
    def from_list(cls, data: list[Any]) -> "Import":
        return cls(data[0], [(a, b) for a, b in data[1]], data[2], data[3], data[4])


@dataclass
class ParsedFile:
    language: str
    definitions: list[Definition]
    imports: list[Import]


_local = threading.local()


_MODULES = {"python": ("tree_sitter_python", "language"), "javascript": ("tree_sitter_javascript", "language"),
            "typescript": ("tree_sitter_typescript", "language_typescript"),
            "tsx": ("tree_sitter_typescript", "language_tsx"), "go": ("tree_sitter_go", "language"),
            "rust": ("tree_sitter_rust", "language"), "java": ("tree_sitter_java", "language"),
            "c": ("tree_sitter_c", "language"), "cpp": ("tree_sitter_cpp", "language")}


def _language(lang: str) -> Any:
    import importlib

    import tree_sitter

    module, function = _MODULES[lang]
    return tree_sitter.Language(getattr(importlib.import_module(module), function)())


def parser_for(lang: str) -> Any:
    """The tree-sitter parser of ``lang``: one per language and thread (tree-sitter parsers are
    not thread-safe). Raises KeyError for an unknown language, ImportError without its grammar."""
    import tree_sitter

    cache = getattr(_local, "parsers", None)
    if cache is None:
        cache = _local.parsers = {}
    if lang not in cache:
        cache[lang] = tree_sitter.Parser(_language(lang))
    return cache[lang]


# Node types per language family.
_FUNCTIONS = {"function_definition", "function_declaration", "generator_function_declaration", "method_definition",
              "method_declaration", "constructor_declaration", "function_item", "function_signature_item",
              "method_signature", "abstract_method_signature"}
_CLASSES = {"class_definition", "class_declaration", "abstract_class_declaration", "interface_declaration",
            "enum_declaration", "record_declaration", "class_specifier", "struct_specifier", "trait_item",
            "struct_item", "enum_item", "union_item", "enum_specifier", "union_specifier"}
_TYPES = {"type_alias_declaration", "type_spec", "type_item"}
_CONTAINERS = {"impl_item", "namespace_definition", "export_statement", "decorated_definition", "mod_item",
               "declaration_list", "type_declaration", "template_declaration", "linkage_specification",
               "program", "module", "source_file", "translation_unit", "statement_block", "class_body",
               "field_declaration_list", "interface_body", "enum_body", "block"}
_COMMENTS = {"comment", "line_comment", "block_comment"}
IMPORT_NODES = frozenset({"import_statement", "import_from_statement", "future_import_statement",
                          "import_declaration", "use_declaration", "extern_crate_declaration", "preproc_include",
                          "using_declaration"})
"""Statements that bring names into a file, in every language above."""
_BLOCKS = frozenset({"block", "compound_statement", "statement_block", "class_body", "declaration_list",
                     "field_declaration_list", "interface_body", "enum_body", "constructor_body", "switch_body",
                     "switch_block", "match_block", "object_type", "enum_variant_list"})
"""Bodies: a node whose body encloses a line is a scope of that line, and its header is what
comes before the body."""
_DOC_OPEN = re.compile(r"^[rRbBuUfF]*(?:\"\"\"|\'\'\'|\"|\')")


def _text(node: Any) -> str:
    return node.text.decode("utf-8", errors="replace") if node is not None else ""


def _c_name(declarator: Any) -> str:
    """The name inside a C/C++ declarator chain (pointer, function, qualified...)."""
    node = declarator
    for _ in range(8):
        if node is None:
            return ""
        if node.type in ("identifier", "field_identifier", "type_identifier", "operator_name", "destructor_name"):
            return _text(node)
        if node.type == "qualified_identifier":
            return _text(node.child_by_field_name("name")) or _text(node).rsplit("::", 1)[-1]
        node = node.child_by_field_name("declarator") or (node.named_children[0] if node.named_children else None)
    return ""


def _name(node: Any) -> str:
    if node.type == "function_definition" and node.child_by_field_name("declarator") is not None:
        return _c_name(node.child_by_field_name("declarator"))
    name = node.child_by_field_name("name")
    if name is None and node.type == "impl_item":
        name = node.child_by_field_name("type")
    return _text(name)


class _Extractor:
    def __init__(self, source: bytes, lang: str) -> None:
        self.lines = source.decode("utf-8", errors="replace").split("\n")
        self.lang = lang
        self.defs: list[Definition] = []
        self.imports: list[Import] = []

    def signature(self, node: Any) -> str:
        body = node.child_by_field_name("body")
        start = node.start_point[0]
        if body is None or node.type in _TYPES:
            end = min(node.end_point[0], start + (MAX_TYPE_LINES if node.type in _TYPES | _CLASSES else 1) - 1)
        else:
            end = body.start_point[0]
            if body.start_point[1] <= len(self.lines[end]) - len(self.lines[end].lstrip()) and end > start:
                end -= 1  # the body starts on a line of its own (a Python block, a K&R brace)
        lines = self.lines[start:end + 1]
        if len(lines) > MAX_SIGNATURE_LINES:  # a long parameter list: its start and its last line
            last = lines[-1]
            lines = lines[:MAX_SIGNATURE_LINES - 2] + [last[:len(last) - len(last.lstrip())] + "...", last]
        if body is not None and node.type not in _TYPES and body.start_point[0] <= end:
            cut = body.start_point[1]
            if body.start_point[0] == end:
                lines[-1] = lines[-1][:cut].rstrip()
        first = lines[0]
        indent = first[:len(first) - len(first.lstrip())]
        lines[0] = indent + first[max(node.start_point[1], len(indent)):]  # not what precedes it on its line
        return "\n".join(x.rstrip() for x in lines)

    def doc(self, node: Any) -> str:
        if self.lang == "python":
            body = node.child_by_field_name("body")
            first = body.named_children[0] if body is not None and body.named_children else None
            if first is not None and first.type == "expression_statement" and first.named_children \
                    and first.named_children[0].type == "string":
                text = _DOC_OPEN.sub("", _text(first.named_children[0])).rstrip().rstrip("\"'")
                return next((x.strip() for x in text.split("\n") if x.strip()), "")
            return ""
        prev = node.prev_named_sibling
        if prev is not None and prev.type in _COMMENTS and prev.end_point[0] >= node.start_point[0] - 1:
            while prev.prev_named_sibling is not None and prev.prev_named_sibling.type in _COMMENTS \
                    and prev.prev_named_sibling.end_point[0] >= prev.start_point[0] - 1:
                prev = prev.prev_named_sibling
            for raw in _text(prev).split("\n"):
                x = raw.strip().lstrip("/*#!").removesuffix("*/").strip()
                if x:
                    return x
        return ""

    def fields(self, node: Any) -> list[str]:
        body = node.child_by_field_name("body")
        if body is None:
            return []
        out: list[str] = []
        for child in body.named_children:
            if child.type in _FUNCTIONS or child.type in _CLASSES or child.type in _COMMENTS \
                    or child.type == "decorated_definition":
                continue
            if self.lang == "python" and child.type == "expression_statement" and child.named_children \
                    and child.named_children[0].type == "string":
                continue  # the docstring
            line = self.lines[child.start_point[0]].rstrip()
            if line.strip() and line not in out:
                out.append(line)
            if len(out) >= MAX_FIELDS:
                break
        return out

    def walk(self, node: Any, parent: str, depth: int = 0) -> None:
        if depth > 12:
            return
        for child in node.named_children:
            t = child.type
            if t in _FUNCTIONS:
                self.add(child, "method" if parent else "function", parent)
            elif t in _CLASSES:
                name = _name(child)
                if child.child_by_field_name("body") is None and t in ("struct_specifier", "enum_specifier",
                                                                         "union_specifier", "class_specifier"):
                    continue  # a use of the type, not its definition
                self.add(child, "class", parent)
                body = child.child_by_field_name("body")
                if body is not None and name:
                    self.walk(body, name, depth + 1)
            elif t in _TYPES:
                self.add(child, "type", parent)
            elif t in ("lexical_declaration", "variable_declaration") and not parent:
                for decl in child.named_children:
                    value = decl.child_by_field_name("value")
                    if decl.type == "variable_declarator" and value is not None \
                            and value.type in ("arrow_function", "function_expression", "function"):
                        d = self.add(decl, "function", parent, sig_node=child)
                        d.signature = self.lines[child.start_point[0]].rstrip()
            elif t in IMPORT_NODES or t == "import_spec":
                self.add_import(child)
            elif t in _CONTAINERS or t == "import_spec_list" or t.startswith("preproc_if"):
                inner = parent
                if t == "impl_item":
                    inner = _name(child)
                self.walk(child, inner, depth + 1)

    def add(self, node: Any, kind: str, parent: str, sig_node: Any = None) -> Definition:
        d = Definition(_name(node), kind, (sig_node or node).start_point[0], node.end_point[0],
                       self.signature(node), self.doc(sig_node or node), parent)
        if kind == "class":
            d.fields = self.fields(node)
        if d.name:
            self.defs.append(d)
        return d

    def add_import(self, node: Any) -> None:
        t, line = node.type, node.start_point[0]
        if t == "import_statement" and self.lang == "python":
            for n in node.named_children:
                if n.type == "aliased_import":
                    self.imports.append(Import(_text(n.child_by_field_name("name")),
                                               alias=_text(n.child_by_field_name("alias")), line=line))
                elif n.type == "dotted_name":
                    module = _text(n)
                    self.imports.append(Import(module, alias=module.split(".")[0], line=line))
        elif t == "import_from_statement":
            mod = node.child_by_field_name("module_name")
            level, module = 0, _text(mod)
            if mod is not None and mod.type == "relative_import":
                prefix = next((c for c in mod.children if c.type == "import_prefix"), None)
                level = len(_text(prefix))
                module = module[level:]
            names: list[tuple[str, str]] = []
            for n in node.named_children:
                if n == mod:
                    continue
                if n.type == "aliased_import":
                    names.append((_text(n.child_by_field_name("name")), _text(n.child_by_field_name("alias"))))
                elif n.type == "dotted_name":
                    names.append((_text(n), _text(n)))
                elif n.type == "wildcard_import":
                    names.append(("*", "*"))
            self.imports.append(Import(module, names, level=level, line=line))
        elif t == "import_statement":  # JavaScript / TypeScript
            source = node.child_by_field_name("source")
            imp = Import(_text(source).strip("\"'`"), line=line)
            for clause in node.named_children:
                if clause.type != "import_clause":
                    continue
                for c in clause.named_children:
                    if c.type == "identifier":
                        imp.names.append(("default", _text(c)))
                    elif c.type == "namespace_import":
                        imp.alias = _text(c.named_children[0]) if c.named_children else ""
                    elif c.type == "named_imports":
                        for spec in c.named_children:
                            if spec.type == "import_specifier":
                                name = _text(spec.child_by_field_name("name"))
                                alias = _text(spec.child_by_field_name("alias")) or name
                                imp.names.append((name, alias))
            self.imports.append(imp)
        elif t == "import_spec":  # Go
            path = _text(node.child_by_field_name("path")).strip("\"`")
            alias = _text(node.child_by_field_name("name")) or path.rsplit("/", 1)[-1]
            self.imports.append(Import(path, alias=alias, line=line))
        elif t == "import_declaration":  # Java (Go's is a container handled by walk)
            if self.lang == "go":
                self.walk(node, "", 1)
                return
            text = _text(node).removeprefix("import").strip().rstrip(";").removeprefix("static").strip()
            module, _, name = text.rpartition(".")
            self.imports.append(Import(module, [(name, name)] if name != "*" else [("*", "*")], line=line))
        elif t == "use_declaration":  # Rust
            arg = _text(node.child_by_field_name("argument"))
            for path in _expand_use(re.sub(r"\s+", "", re.sub(r"\s+as\s+", "@", arg))):
                module, _, name = path.rpartition("::")
                name, _, alias = name.partition("@")
                if name == "self":
                    self.imports.append(Import(module, alias=alias or module.rsplit("::", 1)[-1], line=line))
                else:
                    self.imports.append(Import(module, [(name, alias or name)], line=line))
        elif t == "preproc_include":
            path = node.child_by_field_name("path")
            if path is not None and path.type == "string_literal":
                self.imports.append(Import(_text(path).strip('"'), line=line))


def _expand_use(text: str) -> list[str]:
    """``a::{b,c::{d,e@f}}`` → ``a::b``, ``a::c::d``, ``a::c::e@f`` (``@`` stands for ``as``)."""
    brace = text.find("{")
    if brace < 0:
        return [text] if text else []
    base, inner = text[:brace], text[brace + 1:text.rfind("}")]
    parts, depth, cur = [], 0, ""
    for ch in inner:
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        depth += ch == "{"
        depth -= ch == "}"
        cur += ch
    parts.append(cur)
    out: list[str] = []
    for p in parts:
        if p:
            out.extend(_expand_use(base + p))
    return out


PARSE_CHUNK = 16 * 1024
"""Tree-sitter reads the source through a callback this many bytes at a time: parsing holds the
GIL, and only between two calls of a Python callback can another thread (the server's event
loop) take it. Parsed from one bytes object, 50,000 lines held it 140 ms in one stretch."""


def parse_tree(lang: str, source: bytes) -> Any:
    """The tree-sitter tree of ``source`` (the same tree ``parser.parse(source)`` gives)."""
    return parser_for(lang).parse(lambda offset, _point: source[offset:offset + PARSE_CHUNK])


def parse_source(text: str, lang: str) -> ParsedFile:
    """Definitions and imports of ``text`` in ``lang`` (raises KeyError for an unknown language)."""
    source = text.encode("utf-8", errors="replace")
    tree = parse_tree(lang, source)
    ex = _Extractor(source, lang)
    ex.walk(tree.root_node, "")
    return ParsedFile(lang, ex.defs, ex.imports)


@dataclass(frozen=True)
class Outline:
    """Line spans (0-based, first and last line included) in a piece of code."""

    imports: tuple[tuple[int, int], ...] = ()
    """Each top-level import statement (``require`` declarations in JavaScript too)."""
    scopes: tuple[tuple[int, int], ...] = ()
    """The header of each scope (class, function, method, block statement) that encloses the
    line asked about, outermost first: its lines before its body, at most
    ``MAX_SIGNATURE_LINES``, none at or below that line."""


def outline(text: str, lang: str, row: int) -> Outline:
    """The ``Outline`` of ``text`` in ``lang`` for line ``row`` (raises KeyError for an unknown
    language). Give it the code below ``row`` too: an unclosed brace above it would otherwise
    make the scopes an ERROR node."""
    source = text.encode("utf-8", errors="replace")
    root = parse_tree(lang, source).root_node
    imports: list[tuple[int, int]] = []
    _top_level_imports(root, imports)
    lines = source.split(b"\n")
    if not 0 <= row < len(lines) or not lines[row].strip():
        return Outline(tuple(imports))
    column = len(lines[row]) - len(lines[row].lstrip())
    child = root.named_descendant_for_point_range((row, column), (row, column))
    scopes: list[tuple[int, int]] = []
    node = child.parent if child is not None else None
    while node is not None:
        first = node.start_point[0]
        if child.type in _BLOCKS and node.type not in _BLOCKS and first < row:
            before = child.prev_sibling
            while before is not None and before.type in _COMMENTS:
                before = before.prev_sibling
            last = max(first, _last_row(before)) if before is not None else first
            scopes.append((first, min(last, row - 1, first + MAX_SIGNATURE_LINES - 1)))
        child, node = node, node.parent
    return Outline(tuple(imports), tuple(reversed(scopes)))


def _top_level_imports(node: Any, out: list[tuple[int, int]]) -> None:
    for child in node.named_children:
        t = child.type
        if t in IMPORT_NODES or (t in ("lexical_declaration", "variable_declaration") and b"require(" in child.text):
            first, last = child.start_point[0], _last_row(child)
            if not out or first > out[-1][1]:  # two statements on one line: the line once
                out.append((first, last))
        elif t.startswith("preproc_if"):  # #ifdef-guarded includes
            _top_level_imports(child, out)


def _last_row(node: Any) -> int:
    """The last line of ``node`` (a preprocessor line ends at the start of the next one)."""
    row, column = node.end_point
    return row - 1 if column == 0 and row > node.start_point[0] else row
