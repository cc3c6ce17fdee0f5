"""tree-sitter parsing: what one source file defines and imports.

For each file we keep its definitions (functions, classes, methods, types: name, signature
lines, first docstring/comment line, class fields) and its imports, as plain data that is cheap
to persist. Bodies are not kept: the context shows what a name *is*, not how it is implemented.
Languages: Python, JavaScript, TypeScript/TSX, Go, Rust, Java, C, C++, Ruby, PHP, C#, Kotlin, Swift,
Lua, Bash, Scala (one grammar wheel each, nothing downloaded at run time).

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
    ".rb": "ruby", ".rake": "ruby", ".gemspec": "ruby", ".ru": "ruby", ".php": "php", ".cs": "csharp",
    ".kt": "kotlin", ".kts": "kotlin", ".swift": "swift", ".lua": "lua", ".sh": "bash", ".bash": "bash",
    ".scala": "scala", ".sc": "scala",
}
FILENAMES: dict[str, str] = {"Rakefile": "ruby", "Gemfile": "ruby", "Podfile": "ruby", "Fastfile": "ruby"}
"""Files known by their whole name (no extension)."""
LANGUAGE_IDS: dict[str, str] = {
    "python": "python", "javascript": "javascript", "javascriptreact": "javascript", "typescript": "typescript",
    "typescriptreact": "tsx", "go": "go", "rust": "rust", "java": "java", "c": "c", "cpp": "cpp", "ruby": "ruby",
    "php": "php", "csharp": "csharp", "kotlin": "kotlin", "swift": "swift", "lua": "lua", "shellscript": "bash",
    "sh": "bash", "bash": "bash", "scala": "scala",
}
"""LSP ``languageId`` → parser language, for a document whose name does not tell (an untitled
buffer, a script without an extension). VS Code calls shell scripts ``shellscript``, Neovim ``sh``."""
BRACE_LANGUAGES = {"javascript", "typescript", "tsx", "go", "rust", "java", "c", "cpp", "php", "csharp", "kotlin",
                   "swift", "scala", "bash"}
MAX_SIGNATURE_LINES = 10
MAX_TYPE_LINES = 15
MAX_FIELDS = 12


def language_of(path: str, language_id: str = "") -> str | None:
    """The parser language of ``path`` by its extension (or whole name), else by the editor's
    ``language_id``; None when neither is known."""
    name = path[path.rfind("/") + 1:]
    dot = name.rfind(".")
    lang = EXTENSIONS.get(name[dot:].lower()) if dot > 0 else FILENAMES.get(name)
    return lang or LANGUAGE_IDS.get(language_id)


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
    """As written: ``a.b`` (Python, Java, Kotlin, Scala, C#, Lua), ``./x`` (JS; Ruby's ``require_relative``),
    ``crate::a`` (Rust), ``x/y.h`` (C, a sourced script), ``A\\B\\C`` (the class a PHP ``use`` names)."""
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
            "c": ("tree_sitter_c", "language"), "cpp": ("tree_sitter_cpp", "language"),
            "ruby": ("tree_sitter_ruby", "language"), "php": ("tree_sitter_php", "language_php"),
            "csharp": ("tree_sitter_c_sharp", "language"), "kotlin": ("tree_sitter_kotlin", "language"),
            "swift": ("tree_sitter_swift", "language"), "lua": ("tree_sitter_lua", "language"),
            "bash": ("tree_sitter_bash", "language"), "scala": ("tree_sitter_scala", "language")}


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
_COMMENTS = {"comment", "line_comment", "block_comment", "multiline_comment"}
IMPORT_NODES = frozenset({"import_statement", "import_from_statement", "future_import_statement",
                          "import_declaration", "use_declaration", "extern_crate_declaration", "preproc_include",
                          "using_declaration", "namespace_use_declaration", "using_directive"})
"""Statements that bring names into a file (``_is_import`` adds the calls and the node types
that mean an import in one language only: Ruby's ``require``, Lua's, Bash's ``source``...)."""
_BLOCKS = frozenset({"block", "compound_statement", "statement_block", "class_body", "declaration_list",
                     "field_declaration_list", "interface_body", "enum_body", "constructor_body", "switch_body",
                     "switch_block", "match_block", "object_type", "enum_variant_list", "body_statement",
                     "function_body", "enum_class_body", "protocol_body", "template_body", "enum_declaration_list",
                     "enum_member_declaration_list", "do_block"})
"""Bodies: a node whose body encloses a line is a scope of that line, and its header is what
comes before the body."""
_BODY_CHILDREN = frozenset({"class_body", "enum_class_body", "function_body"})
"""Bodies that are a plain child, not a ``body`` field (Kotlin)."""


@dataclass(frozen=True)
class _Kinds:
    """The node types that define or hold definitions in one language."""

    functions: frozenset[str]
    classes: frozenset[str]
    types: frozenset[str]
    containers: frozenset[str]


_LANGUAGE_KINDS: dict[str, dict[str, set[str]]] = {
    # Node types that mean a definition in one grammar only ("module" is Python's root and a
    # TypeScript namespace; "type_definition" is a C typedef; "class" a Ruby class).
    "ruby": {"functions": {"method", "singleton_method"}, "classes": {"class", "module"},
             "containers": {"singleton_class", "body_statement"}},
    "php": {"classes": {"trait_declaration"}, "containers": {"compound_statement"}},
    "csharp": {"classes": {"struct_declaration", "record_struct_declaration"},
               "types": {"delegate_declaration"},
               "containers": {"namespace_declaration", "file_scoped_namespace_declaration"}},
    "kotlin": {"classes": {"object_declaration"}, "functions": {"secondary_constructor"}, "types": {"type_alias"},
               "containers": {"companion_object"}},
    "swift": {"classes": {"protocol_declaration"}, "types": {"typealias_declaration"},
              "functions": {"protocol_function_declaration", "init_declaration", "deinit_declaration"}},
    "scala": {"classes": {"object_definition", "trait_definition", "enum_definition"}, "types": {"type_definition"}},
}
_DOC_OPEN = re.compile(r"^[rRbBuUfF]*(?:\"\"\"|\'\'\'|\"|\')")
_XML_TAG = re.compile(r"</?[A-Za-z][^>]*>")
_LUA_REQUIRE = re.compile(r"^(?:local\s+)?(?:([A-Za-z_][\w.]*)\s*=\s*)?require\s*\(?\s*[\"']([^\"']+)[\"']")
_RUBY_REQUIRE = re.compile(r"^(require|require_relative)\s*\(?\s*[\"']([^\"']+)[\"']")
_SHELL_DIR_PREFIX = re.compile(r"^(?:.*[)}]/|\$\w+/)")


def _kinds(lang: str) -> _Kinds:
    extra = _LANGUAGE_KINDS.get(lang, {})
    return _Kinds(frozenset(_FUNCTIONS | extra.get("functions", set())),
                  frozenset(_CLASSES | extra.get("classes", set())),
                  frozenset(_TYPES | extra.get("types", set())),
                  frozenset(_CONTAINERS | extra.get("containers", set())))


_KINDS = {lang: _kinds(lang) for lang in set(EXTENSIONS.values())}


def _is_import(node: Any, lang: str) -> bool:
    """Whether ``node`` (a statement) brings names or another file into the file."""
    t = node.type
    if t in IMPORT_NODES:
        return not (lang == "php" and t == "use_declaration")  # a trait used in a class body
    if lang == "kotlin":
        return t == "import"
    if lang == "ruby":
        return t == "call" and _text(node.child_by_field_name("method")) in ("require", "require_relative")
    if lang == "lua":
        return t in ("variable_declaration", "assignment_statement", "function_call") \
            and _LUA_REQUIRE.match(_text(node)) is not None
    if lang == "bash":
        return t == "command" and _text(node.child_by_field_name("name")) in ("source", ".")
    if lang == "php":
        return t == "expression_statement" and node.named_children != [] and node.named_children[0].type in (
            "require_expression", "require_once_expression", "include_expression", "include_once_expression")
    return False


def _body(node: Any) -> Any:
    body = node.child_by_field_name("body")
    if body is None:
        body = next((c for c in node.named_children if c.type in _BODY_CHILDREN), None)
    return body


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
    t = node.type
    if t == "function_definition" and node.child_by_field_name("declarator") is not None:
        return _c_name(node.child_by_field_name("declarator"))
    if t in ("init_declaration", "deinit_declaration"):  # Swift
        return t.removesuffix("_declaration")
    if t == "secondary_constructor":  # Kotlin
        return "constructor"
    name = node.child_by_field_name("name")
    if name is None and t in ("impl_item", "type_alias"):  # Rust impl, Kotlin typealias
        name = node.child_by_field_name("type")
    if name is not None and name.type in ("dot_index_expression", "method_index_expression"):  # Lua a.b, a:b
        name = name.child_by_field_name("field") or name.child_by_field_name("method")
    elif name is not None and name.type == "scope_resolution":  # Ruby class A::B
        name = name.child_by_field_name("name")
    return _text(name)


def _owner(node: Any) -> str:
    """The table a Lua function is defined on (``function M.f`` → ``M``), else ""."""
    name = node.child_by_field_name("name") if node.type == "function_declaration" else None
    if name is not None and name.type in ("dot_index_expression", "method_index_expression"):
        return _text(name.child_by_field_name("table"))
    return ""


class _Extractor:
    def __init__(self, source: bytes, lang: str) -> None:
        self.lines = source.decode("utf-8", errors="replace").split("\n")
        self.lang = lang
        self.defs: list[Definition] = []
        self.imports: list[Import] = []
        self.kinds = _KINDS.get(lang) or _kinds(lang)

    def signature(self, node: Any) -> str:
        body = _body(node)
        start = node.start_point[0]
        kinds = self.kinds
        if body is None or node.type in kinds.types:
            most = MAX_TYPE_LINES if node.type in kinds.types or node.type in kinds.classes else 1
            end = min(node.end_point[0], start + most - 1)
        else:
            end = body.start_point[0]
            if body.start_point[1] <= len(self.lines[end]) - len(self.lines[end].lstrip()) and end > start:
                end -= 1  # the body starts on a line of its own (a Python block, a K&R brace)
            if self.lang == "ruby":  # a comment above the body's first statement is the node's child
                end = next((c.start_point[0] - 1 for c in node.named_children
                            if c.type in _COMMENTS and start < c.start_point[0] <= end), end)
        lines = self.lines[start:end + 1]
        if len(lines) > MAX_SIGNATURE_LINES:  # a long parameter list: its start and its last line
            last = lines[-1]
            lines = lines[:MAX_SIGNATURE_LINES - 2] + [last[:len(last) - len(last.lstrip())] + "...", last]
        if body is not None and node.type not in kinds.types and body.start_point[0] <= end:
            cut = body.start_point[1]
            if body.start_point[0] == end:
                lines[-1] = lines[-1][:cut].rstrip()
        if self.lang == "scala" and body is not None:  # def f: Long = <body>
            lines[-1] = lines[-1].rstrip().removesuffix("=").rstrip()
        first = lines[0]
        indent = first[:len(first) - len(first.lstrip())]
        lines[0] = indent + first[max(node.start_point[1], len(indent)):]  # not what precedes it on its line
        return "\n".join(x.rstrip() for x in lines)

    def doc(self, node: Any) -> str:
        if self.lang == "python":
            body = _body(node)
            first = body.named_children[0] if body is not None and body.named_children else None
            if first is not None and first.type == "expression_statement" and first.named_children \
                    and first.named_children[0].type == "string":
                text = _DOC_OPEN.sub("", _text(first.named_children[0])).rstrip().rstrip("\"'")
                return next((x.strip() for x in text.split("\n") if x.strip()), "")
            return ""
        prev = node.prev_named_sibling
        if prev is None and node.parent is not None and node.parent.start_point == node.start_point:
            prev = node.parent.prev_named_sibling  # the first statement of a Ruby body: the comment is above the body
        comments: list[Any] = []
        if prev is not None and prev.type in _COMMENTS and prev.end_point[0] >= node.start_point[0] - 1:
            comments.append(prev)
            while prev.prev_named_sibling is not None and prev.prev_named_sibling.type in _COMMENTS \
                    and prev.prev_named_sibling.end_point[0] >= prev.start_point[0] - 1:
                prev = prev.prev_named_sibling
                comments.append(prev)
        marks = "/*#!-" if self.lang == "lua" else "/*#!"
        for comment in reversed(comments):  # from the first line: a C# <summary> may stand alone on it
            for raw in _text(comment).split("\n"):
                x = raw.strip().lstrip(marks).removesuffix("*/").strip()
                if self.lang == "csharp":
                    x = _XML_TAG.sub("", x).strip()
                if x:
                    return x
        return ""

    def fields(self, node: Any) -> list[str]:
        body = _body(node)
        if body is None:
            return []
        kinds = self.kinds
        out: list[str] = []
        for child in body.named_children:
            if child.type in kinds.functions or child.type in kinds.classes or child.type in _COMMENTS \
                    or child.type in kinds.containers or child.type == "decorated_definition":
                continue
            if self.lang == "python" and child.type == "expression_statement" and child.named_children \
                    and child.named_children[0].type == "string":
                continue  # the docstring
            if child.start_point[0] == node.start_point[0]:
                continue  # a one-line body (enum class E { A, B }): the signature shows it
            line = self.lines[child.start_point[0]].rstrip()
            if line.strip() and line not in out:
                out.append(line)
            if len(out) >= MAX_FIELDS:
                break
        return out

    def walk(self, node: Any, parent: str, depth: int = 0) -> None:
        if depth > 12:
            return
        kinds = self.kinds
        for child in node.named_children:
            t = child.type
            if t in kinds.functions:
                owner = _owner(child) if self.lang == "lua" else ""
                self.add(child, "method" if parent or owner else "function", parent or owner)
            elif t in kinds.classes:
                name = _name(child)
                if child.child_by_field_name("body") is None and t in ("struct_specifier", "enum_specifier",
                                                                         "union_specifier", "class_specifier"):
                    continue  # a use of the type, not its definition
                if _text(child.child_by_field_name("declaration_kind")) != "extension":  # Swift: its methods only
                    self.add(child, "class", parent)
                body = _body(child)
                if body is not None and name:
                    self.walk(body, name, depth + 1)
            elif t in kinds.types:
                self.add(child, "type", parent)
            elif _is_import(child, self.lang):
                self.add_import(child)
            elif self.lang == "lua" and t in ("assignment_statement", "variable_declaration") and not parent:
                self.add_lua_function_value(child)
            elif t in ("lexical_declaration", "variable_declaration") and not parent:
                for decl in child.named_children:
                    value = decl.child_by_field_name("value")
                    if decl.type == "variable_declarator" and value is not None \
                            and value.type in ("arrow_function", "function_expression", "function"):
                        d = self.add(decl, "function", parent, sig_node=child)
                        d.signature = self.lines[child.start_point[0]].rstrip()
            elif t == "import_spec":
                self.add_import(child)
            elif t in kinds.containers or t == "import_spec_list" or t.startswith("preproc_if"):
                inner = parent
                if t == "impl_item":
                    inner = _name(child)
                self.walk(child, inner, depth + 1)

    def add_lua_function_value(self, node: Any) -> None:
        """``M.f = function(x) ... end`` and ``local f = function() ... end``."""
        assign = node.named_children[0] if node.type == "variable_declaration" and node.named_children else node
        targets = next((c for c in assign.named_children if c.type == "variable_list"), None)
        values = next((c for c in assign.named_children if c.type == "expression_list"), None)
        if targets is None or values is None or not targets.named_children or not values.named_children \
                or values.named_children[0].type != "function_definition":
            return
        target, value = targets.named_children[0], values.named_children[0]
        owner, name = "", _text(target)
        if target.type == "dot_index_expression":
            owner, name = _text(target.child_by_field_name("table")), _text(target.child_by_field_name("field"))
        elif target.type != "identifier":
            return
        line = self.lines[node.start_point[0]]
        body = value.child_by_field_name("body")
        if body is not None and body.start_point[0] == node.start_point[0]:
            line = line[:body.start_point[1]]
        self.defs.append(Definition(name, "method" if owner else "function", node.start_point[0], node.end_point[0],
                                    line.rstrip(), self.doc(node), owner))

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
        if self.lang in _IMPORT_READERS:
            self.imports.extend(_IMPORT_READERS[self.lang](node, line))
        elif t == "import_statement" and self.lang == "python":
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


def _ruby_imports(node: Any, line: int) -> list[Import]:
    """``require "a/b"`` (the load path) and ``require_relative "b"`` (kept as ``./b``)."""
    m = _RUBY_REQUIRE.match(_text(node))
    if m is None:
        return []
    module = m.group(2)
    if m.group(1) == "require_relative" and not module.startswith("."):
        module = "./" + module
    return [Import(module, line=line)]


def _lua_imports(node: Any, line: int) -> list[Import]:
    """``local m = require("a.b")``: the module ``a.b`` known in this file as ``m``."""
    m = _LUA_REQUIRE.match(_text(node))
    return [Import(m.group(2), alias=m.group(1) or "", line=line)] if m is not None else []


def _bash_imports(node: Any, line: int) -> list[Import]:
    """``source "$(dirname "$0")/lib/x.sh"`` and ``. ./lib/x.sh``: the path after the script's
    own folder (a variable or a command substitution), relative to the script."""
    arg = node.child_by_field_name("argument")
    path = _SHELL_DIR_PREFIX.sub("", _text(arg).strip("\"'"))
    return [Import(path, line=line)] if path and "$" not in path else []


def _php_imports(node: Any, line: int) -> list[Import]:
    """``use A\\B\\C as D`` (grouped too: ``use A\\{B, C}``): the class ``A\\B\\C`` bound as ``D``;
    ``require`` of a literal path (``__DIR__ . '/x.php'`` is relative to the file: ``./x.php``)."""
    if node.type == "expression_statement":
        expr = node.named_children[0]
        arg = expr.named_children[0] if expr.named_children else None
        if arg is not None and arg.type == "binary_expression":
            arg = arg.child_by_field_name("right")
        if arg is None or arg.type not in ("string", "encapsed_string"):
            return []
        path = _text(arg).strip("\"'")
        if "__DIR__" in _text(expr):
            path = "./" + path.lstrip("/")
        return [Import(path, line=line)]
    out: list[Import] = []
    prefix = ""
    group = node.child_by_field_name("body")
    if group is not None:
        prefix = next((_text(c) for c in node.named_children if c.type == "namespace_name"), "") + "\\"
    for clause in (group or node).named_children:
        if clause.type != "namespace_use_clause":
            continue
        alias = _text(clause.child_by_field_name("alias"))
        named = next((c for c in clause.named_children if c.type in ("qualified_name", "name")
                      and c != clause.child_by_field_name("alias")), None)
        full = (prefix + _text(named)).lstrip("\\")
        if full:
            name = full.rsplit("\\", 1)[-1]
            out.append(Import(full, [(name, alias or name)], line=line))
    return out


def _csharp_imports(node: Any, line: int) -> list[Import]:
    """``using A.B;`` (a namespace), ``using static A.B;``, ``using M = A.B;`` (``M``)."""
    alias = node.child_by_field_name("name")
    target = next((c for c in node.named_children if c.type in ("qualified_name", "identifier") and c != alias), None)
    return [Import(_text(target), alias=_text(alias), line=line)] if target is not None else []


def _jvm_import(path: str, wildcard: bool, alias: str, line: int) -> Import:
    if wildcard:
        return Import(path, [("*", "*")], line=line)
    module, _, name = path.rpartition(".")
    return Import(module, [(name, alias or name)], line=line)


def _kotlin_imports(node: Any, line: int) -> list[Import]:
    """``import a.b.C``, ``import a.b.C as D``, ``import a.b.*``."""
    path = next((c for c in node.named_children if c.type == "qualified_identifier"), None)
    if path is None:
        return []
    alias = next((_text(c) for c in node.named_children if c.type == "identifier"), "")
    return [_jvm_import(_text(path), _text(node).rstrip().endswith("*"), alias, line)]


def _scala_imports(node: Any, line: int) -> list[Import]:
    """``import a.b.C``, ``import a.b.{C, D => E}``, ``import a.b._`` (and Scala 3's ``*``, ``as``)."""
    parts: list[str] = []
    out: list[Import] = []
    for i, child in enumerate(node.children):
        if not child.is_named:
            continue
        if node.field_name_for_child(i) == "path":
            parts.append(_text(child))
        elif child.type == "namespace_wildcard":
            out.append(_jvm_import(".".join(parts), True, "", line))
        elif child.type == "namespace_selectors":
            imp = Import(".".join(parts), line=line)
            for sel in child.named_children:
                if sel.type == "identifier":
                    imp.names.append((_text(sel), _text(sel)))
                elif sel.type in ("arrow_renamed_identifier", "as_renamed_identifier"):
                    alias = _text(sel.child_by_field_name("alias"))
                    if alias != "_":  # ``C => _`` hides C
                        imp.names.append((_text(sel.child_by_field_name("name")), alias))
                elif sel.type == "namespace_wildcard":
                    imp.names.append(("*", "*"))
            out.append(imp)
        elif child.type == "as_renamed_identifier":
            parts.append(_text(child.child_by_field_name("name")))
            out.append(_jvm_import(".".join(parts), False, _text(child.child_by_field_name("alias")), line))
    if not out and parts:
        out.append(_jvm_import(".".join(parts), False, "", line))
    return out


def _swift_imports(node: Any, line: int) -> list[Import]:
    """``import Module`` (``import struct Module.Type`` names the type)."""
    ident = next((c for c in node.named_children if c.type == "identifier"), None)
    if ident is None:
        return []
    module, _, name = _text(ident).partition(".")
    return [Import(module, [(name.rsplit(".", 1)[-1], name.rsplit(".", 1)[-1])] if name else [], line=line)]


_IMPORT_READERS = {"ruby": _ruby_imports, "lua": _lua_imports, "bash": _bash_imports, "php": _php_imports,
                   "csharp": _csharp_imports, "kotlin": _kotlin_imports, "scala": _scala_imports,
                   "swift": _swift_imports}
"""Each new language's import statements → ``Import``s (the older languages' are in ``add_import``)."""


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
    _top_level_imports(root, imports, lang)
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


def _top_level_imports(node: Any, out: list[tuple[int, int]], lang: str) -> None:
    for child in node.named_children:
        t = child.type
        if _is_import(child, lang) or (t in ("lexical_declaration", "variable_declaration")
                                       and b"require(" in child.text):
            first, last = child.start_point[0], _last_row(child)
            if not out or first > out[-1][1]:  # two statements on one line: the line once
                out.append((first, last))
        elif t.startswith("preproc_if"):  # #ifdef-guarded includes
            _top_level_imports(child, out, lang)


def _last_row(node: Any) -> int:
    """The last line of ``node`` (a preprocessor line ends at the start of the next one)."""
    row, column = node.end_point
    return row - 1 if column == 0 and row > node.start_point[0] else row
