"""Refactoring edits on a selection: the model rewrites whole lines, the answer becomes a minimal
line diff, and only an answer that parses is offered.

``run_edit`` runs on the engine's worker thread (``CompletionEngine.run_on_model``: the runner's one
owner). The prompt is the model's own chat template from the GGUF metadata
(``tokenizer.chat_template``), rendered by llama.cpp's ``llama_chat_apply_template``: llama.cpp
recognises the common templates (ChatML for Qwen, Llama 3, Gemma, Mistral...) from their text. A
model without a chat template (a base model such as Llama 3.2 3B) gets no edit actions: a base
model asked to "add a docstring" continues the text instead of following the request, so its
edits would be noise (``chat_template`` says why). The selection goes in dedented, with the
definitions of the names it uses (the repo context built for completion) before it; the answer is
the first fenced code block of the reply, indented back.

Nothing here knows about LSP: the features layer turns ``EditResult.edits`` (line ranges of the
document) into a WorkspaceEdit.
"""

from __future__ import annotations

import ctypes
import difflib
import re
import textwrap
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..context.parsing import language_of, parse_tree
from ..context.types import ContextFile
from .modelfile import ModelFileError, read_gguf
from .prompt import Prompt

__all__ = ["ACTIONS", "Action", "EditError", "EditRequest", "EditResult", "LineEdit", "apply_chat_template",
           "chat_template", "edit_language", "enclosing_definition", "extract_code", "has_chat_template",
           "line_edits", "parse_errors", "run_edit", "split_lines"]


@dataclass(frozen=True)
class Action:
    id: str
    title: str
    """What the editor shows in its code action menu."""
    task: str
    """What the model is asked to do (``{instruction}`` and ``{diagnostics}`` are filled in)."""
    kind: str = "refactor.rewrite"
    """The LSP CodeActionKind."""


ACTIONS: dict[str, Action] = {a.id: a for a in [
    Action("rewrite", "Rewrite selection…", "Rewrite the code as follows: {instruction}"),
    Action("docstring", "Add docstring",
           "Add a docstring to every function and class in the code that has none. Change nothing else: "
           "every line of code stays exactly as it is."),
    Action("type_hints", "Add type hints",
           "Add type hints to the parameters and return values of every function in the code. Change "
           "nothing else: keep the names, the logic and the comments exactly as they are."),
    Action("simplify", "Simplify",
           "Simplify the code: make it shorter and clearer with exactly the same behaviour for every input."),
    Action("fix", "Fix this diagnostic",
           "Fix this problem that a tool reported in the code, changing as little as possible:\n{diagnostics}",
           "quickfix"),
]}
"""The edit actions, by id (the code action's ``data.action``)."""

SYSTEM = ("You are an expert programmer who edits code exactly as asked. Reply with the complete edited "
          "code in one fenced code block, and nothing else.")
MAX_CONTEXT_CHARS = 6000
"""Repo context put before the code (about 1,500 tokens): the definitions it uses, not whole files."""
DEFAULT_MAX_TOKENS = 2048
EXTRA_TOKENS = 256
"""An answer may be this much longer than twice the selection (a docstring, hints)."""
_SPECIAL = re.compile(r"<\|[A-Za-z0-9_]+\|>|<start_of_turn>|<end_of_turn>|<bos>|<s>|</s>|\[INST\]|\[/INST\]")
_FENCE = re.compile(r"^[ \t]*```[^\n`]*\n(.*?)^[ \t]*```", re.DOTALL | re.MULTILINE)
_OPEN_FENCE = re.compile(r"^[ \t]*```[^\n`]*\n", re.MULTILINE)
_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+$")
"""One LSP line with its end (\\n, \\r\\n or \\r only: not ``str.splitlines``'s other breaks)."""
_DEFINITIONS = ("function_definition", "function_declaration", "method_definition", "method_declaration",
                "class_definition", "class_declaration", "function_item", "impl_item", "decorated_definition",
                "constructor_declaration", "interface_declaration", "struct_item", "enum_item", "trait_item")
"""Tree-sitter node types an empty selection's action applies to (the innermost one around it)."""


class EditError(Exception):
    """An edit that cannot be offered; the message says why, for the user."""

    def __init__(self, message: str, answer: str = "") -> None:
        super().__init__(message)
        self.answer = answer
        """The model's reply, when it was refused (for benchmarks and logs)."""


@dataclass
class EditRequest:
    action: str
    """An ``ACTIONS`` id."""
    document_key: str
    text: str
    """The whole document."""
    start_line: int
    end_line: int
    """The selected lines are ``[start_line, end_line)`` (whole lines)."""
    path: str = ""
    language_id: str = ""
    instruction: str = ""
    """``rewrite``: what to do, as the user typed it."""
    diagnostics: list[tuple[int, str]] = field(default_factory=list)
    """``fix``: (document line, message) of each diagnostic to fix."""
    context: list[ContextFile] = field(default_factory=list)
    """Repo context: definitions of the names the selection uses."""
    max_tokens: int = DEFAULT_MAX_TOKENS


@dataclass(frozen=True)
class LineEdit:
    """Replace document lines ``[start, end)`` by ``text`` (whole lines, each with its line end,
    except where the region is the end of a document that has no final line end)."""

    start: int
    end: int
    text: str


@dataclass
class EditResult:
    edits: list[LineEdit]
    """Empty when the model changed nothing."""
    new_text: str
    """The selected lines as the model rewrote them."""
    n_generated: int = 0
    ms: float = 0.0
    stop_reason: str = ""


def edit_language(path: str, language_id: str) -> str | None:
    """The tree-sitter language that checks edits of this document; None: no edits (an edit that
    cannot be checked is not offered)."""
    return language_of(path, language_id)


def split_lines(text: str) -> list[str]:
    """The LSP lines of ``text``, each with its line end (the last one may have none)."""
    return _LINE.findall(text)


def has_chat_template(model_path: str) -> bool:
    """Whether the GGUF at ``model_path`` has a chat template (its header is read once and cached)."""
    try:
        template = read_gguf(model_path).metadata.get("tokenizer.chat_template")
    except ModelFileError:
        return False
    return isinstance(template, str) and bool(template)


def enclosing_definition(lang: str, text: str, line: int) -> tuple[int, int] | None:
    """The lines ``[start, end)`` of the innermost function or class around ``line``; None outside any."""
    node = parse_tree(lang, text.encode("utf-8", errors="replace")).root_node
    found = None
    while True:
        inner = next((c for c in node.children if c.start_point[0] <= line <= c.end_point[0]), None)
        if inner is None:
            break
        node = inner
        if node.type in _DEFINITIONS:
            found = node
    return (found.start_point[0], found.end_point[0] + 1) if found is not None else None


def chat_template(metadata: dict[str, str]) -> str | None:
    """The model's chat template, None for a base model (no edit actions: see the module docstring)."""
    return metadata.get("tokenizer.chat_template") or None


def apply_chat_template(template: str, messages: Sequence[tuple[str, str]]) -> str:
    """``messages`` (role, content) laid out by llama.cpp's ``llama_chat_apply_template`` for
    ``template`` (the GGUF's Jinja text, recognised by llama.cpp), ending with the assistant's turn."""
    import llama_cpp

    array = (llama_cpp.llama_chat_message * len(messages))()
    keep: list[bytes] = []  # c_char_p fields point into these: they must outlive the call
    for i, (role, content) in enumerate(messages):
        keep += [role.encode("utf-8"), content.encode("utf-8")]
        array[i].role, array[i].content = keep[-2], keep[-1]
    size = 2 * sum(map(len, keep)) + 1024
    for _ in range(2):
        buf = ctypes.create_string_buffer(size)
        n = llama_cpp.llama_chat_apply_template(template.encode("utf-8"), array, len(messages), True, buf, size)
        if n < 0:
            raise EditError("llama.cpp does not know this model's chat template")
        if n <= size:
            return buf.raw[:n].decode("utf-8", errors="replace")
        size = n
    raise EditError("the chat prompt did not fit its buffer")


def tokenize_chat(runner: Any, text: str) -> list[int]:
    """Tokens of a rendered chat prompt: the template's markers (``<|im_start|>``) as the special
    tokens they are, the rest (the code: never read as markers) as plain text."""
    tokens: list[int] = []
    pos = 0
    for m in _SPECIAL.finditer(text):
        if not runner.is_special_token(m.group(0)):
            continue
        tokens += runner.tokenize(text[pos:m.start()])
        tokens.append(runner.special(m.group(0)))
        pos = m.end()
    tokens += runner.tokenize(text[pos:])
    bos = list(runner.bos)
    return tokens if not bos or tokens[:1] == bos else bos + tokens


def build_messages(req: EditRequest, code: str, lang: str) -> list[tuple[str, str]]:
    action = ACTIONS[req.action]
    diagnostics = "\n".join(f"- line {line - req.start_line + 1}: {message}" for line, message in req.diagnostics)
    task = action.task.format(instruction=req.instruction.strip(), diagnostics=diagnostics)
    parts: list[str] = []
    used = 0
    for piece in req.context:
        text = piece.text.strip()
        if not text or used + len(text) > MAX_CONTEXT_CHARS:
            continue
        used += len(text)
        parts.append(f"# {piece.path}\n{text}")
    user = ""
    if parts:
        user += "Definitions from the repository that the code uses:\n```\n" + "\n\n".join(parts) + "\n```\n\n"
    where = f" from {req.path.rsplit('/', 1)[-1]}" if req.path else ""
    user += f"The code{where}:\n```{lang}\n{code}```\n\n{task}"
    return [("system", SYSTEM), ("user", user)]


def _fence_end(text: str) -> int | None:
    """Where the first complete fenced block of ``text`` ends (generation stops there)."""
    m = _FENCE.search(text)
    return m.end() if m else None


def extract_code(answer: str) -> str | None:
    """The code of a reply: its first fenced block; the whole reply when it has no fence; None
    when a block was opened but never closed (the answer was cut)."""
    m = _FENCE.search(answer)
    if m:
        return m.group(1)
    if _OPEN_FENCE.search(answer):
        return None
    return answer.strip("\n") + "\n" if answer.strip() else ""


def _indent_of(lines: Sequence[str]) -> str:
    """The leading whitespace that every non-blank line shares."""
    indents = [line[:len(line) - len(line.lstrip(" \t"))] for line in lines if line.strip()]
    if not indents:
        return ""
    common = indents[0]
    for indent in indents[1:]:
        while not indent.startswith(common):
            common = common[:-1]
    return common


def reindent(code: str, indent: str) -> str:
    """``code`` dedented, then indented by ``indent`` (blank lines stay empty)."""
    code = textwrap.dedent(code)
    return "".join(indent + line if line.strip() else line.lstrip(" \t") for line in split_lines(code))


def line_edits(old: Sequence[str], new_text: str, start: int) -> list[LineEdit]:
    """The minimal line edits turning ``old`` (the selected lines, each with its line end but
    perhaps the last) into ``new_text``: difflib's opcodes, one ``LineEdit`` per changed run."""
    new = split_lines(new_text)
    ending = next((line[len(line.rstrip("\r\n")):] for line in old if line.endswith(("\n", "\r"))), "\n")
    new = [line.rstrip("\r\n") + ending if line.endswith(("\n", "\r")) else line for line in new]
    old_ends = bool(old) and old[-1].endswith(("\n", "\r"))
    if new and old_ends and not new[-1].endswith(("\n", "\r")):
        new[-1] += ending
    if new and not old_ends and old and new[-1].endswith(("\n", "\r")):
        new[-1] = new[-1].rstrip("\r\n")  # the document ends without a line end: it still does
    matcher = difflib.SequenceMatcher(None, list(old), new, autojunk=False)
    return [LineEdit(start + i1, start + i2, "".join(new[j1:j2]))
            for tag, i1, i2, j1, j2 in matcher.get_opcodes() if tag != "equal"]


def parse_errors(lang: str, text: str) -> int:
    """Syntax errors (ERROR and MISSING nodes) tree-sitter finds in ``text``."""
    root = parse_tree(lang, text.encode("utf-8", errors="replace")).root_node
    if not root.has_error:
        return 0
    count = 0
    stack = [root]
    while stack:
        node = stack.pop()
        if node.is_error or node.is_missing:
            count += 1
        stack.extend(child for child in node.children if child.has_error or child.is_missing)
    return count


def run_edit(runner: Any, req: EditRequest, cancelled: Callable[[], bool],
             progress: Callable[[int, int], None] | None = None) -> EditResult:
    """(worker) The model's edit of ``req``'s lines, checked: raises ``EditError`` when there is
    none to offer (no chat template, a cut or unparsable answer, cancelled)."""
    if req.action not in ACTIONS:
        raise EditError(f"unknown edit action {req.action!r} (known: {', '.join(ACTIONS)})")
    lang = edit_language(req.path, req.language_id)
    if lang is None:
        raise EditError("edits are checked with a parser, and there is none for this language")
    template = chat_template(runner.metadata)
    if template is None:
        raise EditError(f"{runner.name} has no chat template (a base model): edits need an instruct model")
    lines = split_lines(req.text)
    if not (0 <= req.start_line < req.end_line <= len(lines)):
        raise EditError(f"lines {req.start_line}-{req.end_line} are not in the document ({len(lines)} lines)")
    old = lines[req.start_line:req.end_line]
    indent = _indent_of(old)
    code = textwrap.dedent("".join(old))
    if not code.endswith("\n"):
        code += "\n"
    tokens = tokenize_chat(runner, apply_chat_template(template, build_messages(req, code, lang)))
    expected = len(runner.tokenize(code)) + 16
    max_tokens = min(req.max_tokens, 2 * expected + EXTRA_TOKENS)
    generated = 0

    def stop_at(text: str) -> int | None:
        nonlocal generated
        generated += 1
        if progress is not None:
            progress(generated, expected)
        return _fence_end(text)

    t0 = time.perf_counter()
    generation = runner.generate(Prompt(tokens, [], [], [], "", ""), max_tokens=max_tokens, stop_at=stop_at,
                                 cancelled=cancelled)
    ms = (time.perf_counter() - t0) * 1000
    if generation.stop_reason == "cancelled":
        raise EditError("the edit was cancelled")
    answer = extract_code(generation.text)
    if answer is None:
        raise EditError(f"the model's answer was cut at {generation.n_generated} tokens", generation.text)
    if not answer.strip():
        raise EditError("the model answered with no code", generation.text)
    new_text = reindent(answer, indent)
    before = "".join(lines)
    after = "".join(lines[:req.start_line]) + new_text + "".join(lines[req.end_line:])
    if parse_errors(lang, after) > parse_errors(lang, before):
        raise EditError(f"the model's edit does not parse as {lang}: nothing was changed", generation.text)
    return EditResult(line_edits(old, new_text, req.start_line), new_text, generation.n_generated, ms,
                      generation.stop_reason)
