"""textDocument/codeAction and codeAction/resolve: refactoring edits of a selection by the model
(``engine/edit.py``), and the ``slm.edit`` command behind "Rewrite selection…" and ``:SlmEdit``.

Listing the actions costs nothing: the model runs only when the user picks one (resolve). The
actions are offered when the loaded GGUF has a chat template (an instruct model) and the document's
language has a parser to check the answer. An empty selection means the innermost function or class
around the cursor; there the refactors are listed only when asked for (VS Code asks with trigger
kind Automatic on every cursor move: the lightbulb would always be lit). The answer comes back as a
minimal line diff in a WorkspaceEdit; when it does not parse, or was cut or cancelled, the user
gets a message (window/showMessage) and no edit.

"Rewrite selection…" needs an instruction, which LSP cannot ask for: its code action carries the
editor's own command ``slm.rewriteSelection`` (``methods.COMMAND_REWRITE_SELECTION``), which asks
for it (VS Code's InputBox, Neovim's ``vim.ui.input``) and then runs ``slm.edit``; the server
applies that edit with workspace/applyEdit.

While the model writes, work-done progress is reported (cancellable: cancelling it, or
$/cancelRequest on the resolve, stops the generation between two tokens).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import uuid
from typing import TYPE_CHECKING, Any

from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams

from .. import methods
from ..engine.edit import (
    ACTIONS,
    EditError,
    EditRequest,
    EditResult,
    edit_language,
    enclosing_definition,
    has_chat_template,
    run_edit,
    split_lines,
)
from ..engine.requests import CompletionRequest
from ..server import SlmLanguageServer  # at run time: pygls reads command handlers' type hints
from .documents import content

if TYPE_CHECKING:
    from .documents import OpenDocument

log = logging.getLogger(__name__)

PROGRESS_EVERY = 8
"""Generated tokens between two progress reports."""
KINDS = [types.CodeActionKind.RefactorRewrite, types.CodeActionKind.QuickFix]


def _units(text: str, encoding: str) -> int:
    """The length of ``text`` in the client's position units."""
    if encoding == types.PositionEncodingKind.Utf8:
        return len(text.encode("utf-8", "surrogatepass"))
    if encoding == types.PositionEncodingKind.Utf32:
        return len(text)
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def selected_lines(doc: "OpenDocument", rng: types.Range) -> tuple[int, int] | None:
    """The whole lines ``[start, end)`` an edit of ``rng`` rewrites: the lines it touches (not the
    line where it ends at column 0); for an empty range, the innermost definition around it."""
    last = len(doc.lines) - 1
    start, end = min(rng.start.line, last), min(rng.end.line, last)
    if (rng.start.line, rng.start.character) == (rng.end.line, rng.end.character):
        lang = edit_language(doc.path or "", doc.language_id)
        return enclosing_definition(lang, doc.source, start) if lang else None
    if rng.end.character == 0 and end > start:
        end -= 1
    return start, end + 1


def _available(ls: SlmLanguageServer, doc: "OpenDocument") -> bool:
    status = ls.engine.status()
    return (status.state == "ready" and status.model is not None and has_chat_template(status.model)
            and edit_language(doc.path or "", doc.language_id) is not None and not doc.too_large)


def _data(doc: "OpenDocument", action: str, rng: types.Range, diagnostics: list[types.Diagnostic]) -> dict[str, Any]:
    return {"uri": doc.uri, "version": doc.version, "action": action,
            "range": {"start": {"line": rng.start.line, "character": rng.start.character},
                      "end": {"line": rng.end.line, "character": rng.end.character}},
            "diagnostics": [[d.range.start.line, f"{d.message} ({d.source})" if d.source else d.message]
                            for d in diagnostics]}


def _range(value: Any) -> types.Range:
    try:
        s, e = value["start"], value["end"]
        return types.Range(types.Position(int(s["line"]), int(s["character"])),
                           types.Position(int(e["line"]), int(e["character"])))
    except (KeyError, TypeError, ValueError) as exc:
        raise JsonRpcInvalidParams(f"not an LSP range: {value!r}") from exc


async def run_action(ls: SlmLanguageServer, args: dict[str, Any]) -> tuple["OpenDocument", EditResult]:
    """Run the edit that ``args`` (a code action's data, or ``slm.edit``'s argument) describes;
    raises EditError with the user's message when there is none to offer."""
    uri, action = args.get("uri"), args.get("action", "rewrite")
    doc = ls.documents.get(uri) if isinstance(uri, str) else None
    if doc is None:
        raise JsonRpcInvalidParams(f"unknown document {uri!r}: send textDocument/didOpen first")
    if action not in ACTIONS:
        raise JsonRpcInvalidParams(f"unknown edit action {action!r} (known: {', '.join(ACTIONS)})")
    if "version" in args and args["version"] != doc.version:
        raise EditError("the document changed since the action was offered: ask again")
    lines = selected_lines(doc, _range(args.get("range")))
    if lines is None:
        raise EditError("select the code to edit (the cursor is not inside a function or class)")
    start, end = lines
    diagnostics = [(int(d[0]), str(d[1])) for d in args.get("diagnostics") or []]
    if diagnostics:  # the lines of the diagnostics are part of the edit
        start, end = min(start, *(d[0] for d in diagnostics)), max(end, *(d[0] + 1 for d in diagnostics))
        end = min(end, len(doc.lines))
    instruction = args.get("instruction") or ""
    if action == "rewrite" and not (isinstance(instruction, str) and instruction.strip()):
        raise EditError("no instruction: nothing to do")
    # The repo context of completion (definitions of the names used), gathered at the selection.
    context_request = CompletionRequest(document_key=doc.uri, text=doc.source, line=(start + end - 1) // 2, column=0,
                                        language_id=doc.language_id, path=doc.path or "")
    await ls.context.attach(ls, context_request)
    request = EditRequest(action, doc.uri, doc.source, start, end, path=doc.path or "", language_id=doc.language_id,
                          instruction=instruction, diagnostics=diagnostics, context=context_request.context)
    stop = threading.Event()
    progress = await _Progress.start(ls, ACTIONS[action].title.rstrip("…"), stop)
    future = ls.engine.run_on_model(functools.partial(_edit, request, stop, progress.from_worker))
    message = "cancelled"
    try:
        result: EditResult = await asyncio.wrap_future(future)
        message = f"{len(result.edits)} change(s)" if result.edits else "no change"
        return doc, result
    except asyncio.CancelledError:
        stop.set()  # $/cancelRequest: the worker stops at the next token
        raise
    except EditError as exc:
        message = str(exc)
        raise
    except Exception as exc:  # no model, a failed decode: the user hears why
        message = str(exc)
        raise EditError(f"the edit failed: {exc}") from exc
    finally:
        progress.end(message)


def _edit(request: EditRequest, stop: threading.Event, progress: Any, runner: Any, stopped: Any) -> EditResult:
    return run_edit(runner, request, lambda: stop.is_set() or stopped(), progress)


def workspace_edit(ls: SlmLanguageServer, doc: "OpenDocument", result: EditResult) -> types.WorkspaceEdit:
    """The result's line edits as LSP TextEdits (versioned when the client takes document changes)."""
    lines = split_lines(doc.source)
    edits: list[types.TextEdit] = []
    for e in result.edits:
        start = types.Position(e.start, 0)
        if e.end < len(lines) or doc.source.endswith(("\n", "\r")):
            end = types.Position(e.end, 0)
        else:  # the region runs to the end of a document without a final line end
            end = types.Position(e.end - 1, _units(content(lines[e.end - 1]), doc.encoding))
        edits.append(types.TextEdit(types.Range(start, end), e.text))
    caps = ls.client_capabilities.workspace
    if caps and caps.workspace_edit and caps.workspace_edit.document_changes:
        ident = types.OptionalVersionedTextDocumentIdentifier(uri=doc.uri, version=doc.version)
        return types.WorkspaceEdit(document_changes=[types.TextDocumentEdit(ident, edits)])  # type: ignore[list-item]
    return types.WorkspaceEdit(changes={doc.uri: edits})


class _Progress:
    """Server-created work-done progress for one edit; cancelling it stops the generation."""

    def __init__(self, ls: SlmLanguageServer, token: str | None) -> None:
        self._ls, self._token = ls, token
        self._loop = asyncio.get_running_loop()

    @classmethod
    async def start(cls, ls: SlmLanguageServer, title: str, stop: threading.Event) -> "_Progress":
        window = ls.client_capabilities.window
        if not (window and window.work_done_progress):
            return cls(ls, None)
        token = f"slm-edit-{uuid.uuid4()}"
        try:
            await asyncio.wait_for(ls.work_done_progress.create_async(token), 5)
            ls.work_done_progress.begin(token, types.WorkDoneProgressBegin(
                title=f"slm-lsp: {title}", cancellable=True, message="waiting for the model", percentage=0))
        except Exception:
            return cls(ls, None)
        cancelled = ls.work_done_progress.tokens.get(token)
        if cancelled is not None:  # pygls cancels it on window/workDoneProgress/cancel
            cancelled.add_done_callback(lambda f: stop.set() if f.cancelled() else None)
        return cls(ls, token)

    def from_worker(self, done: int, expected: int) -> None:
        if self._token is None or done % PROGRESS_EVERY:
            return
        pct = min(99, int(100 * done / max(expected, 1)))
        report = types.WorkDoneProgressReport(message=f"{done} tokens", percentage=pct)
        try:
            self._loop.call_soon_threadsafe(self._ls.work_done_progress.report, self._token, report)
        except RuntimeError:  # the loop is closed (shutdown)
            pass

    def end(self, message: str) -> None:
        if self._token is not None:
            self._ls.work_done_progress.end(self._token, types.WorkDoneProgressEnd(message=message))
            self._ls.work_done_progress.tokens.pop(self._token, None)


def register(server: SlmLanguageServer) -> None:
    @server.feature(types.TEXT_DOCUMENT_CODE_ACTION,
                    types.CodeActionOptions(code_action_kinds=KINDS, resolve_provider=True))
    async def code_action(ls: SlmLanguageServer, params: types.CodeActionParams) -> list[types.CodeAction] | None:
        doc = ls.documents.get(params.text_document.uri)
        if doc is None:
            return None
        loop = asyncio.get_running_loop()
        if not await loop.run_in_executor(None, _available, ls, doc):  # the GGUF header is read once
            return None
        only = params.context.only
        wanted = (lambda kind: any(kind.startswith(o) for o in only)) if only else (lambda kind: True)
        rng = params.range
        actions: list[types.CodeAction] = []
        for diagnostic in params.context.diagnostics:
            if wanted(types.CodeActionKind.QuickFix):
                actions.append(types.CodeAction(
                    title=f"Fix: {diagnostic.message.splitlines()[0][:70]} (slm-lsp)",
                    kind=types.CodeActionKind.QuickFix, diagnostics=[diagnostic],
                    data=_data(doc, "fix", rng, [diagnostic])))
        # VS Code asks on every cursor move (trigger kind Automatic): without a selection the
        # refactors wait for an explicit request (Ctrl+.), so the lightbulb is not always lit.
        idle = rng.start == rng.end and params.context.trigger_kind == types.CodeActionTriggerKind.Automatic
        if wanted(types.CodeActionKind.RefactorRewrite) and not idle:
            for action in ACTIONS.values():
                if action.id in ("fix", "rewrite"):
                    continue
                actions.append(types.CodeAction(title=f"{action.title} (slm-lsp)", kind=action.kind,
                                                data=_data(doc, action.id, rng, [])))
            args = _data(doc, "rewrite", rng, [])
            fixes = len(actions)
            actions.insert(fixes, types.CodeAction(
                title=f"{ACTIONS['rewrite'].title} (slm-lsp)", kind=types.CodeActionKind.RefactorRewrite,
                command=types.Command(title=ACTIONS["rewrite"].title, command=methods.COMMAND_REWRITE_SELECTION,
                                      arguments=[args])))
        return actions

    @server.feature(types.CODE_ACTION_RESOLVE)
    async def resolve(ls: SlmLanguageServer, action: types.CodeAction) -> types.CodeAction:
        if not isinstance(action.data, dict) or action.edit is not None:
            return action
        try:
            doc, result = await run_action(ls, action.data)
        except EditError as exc:
            ls.notify_user(str(exc))
            return action
        if not result.edits:
            ls.notify_user("the model left the code as it was", types.MessageType.Info)
            return action
        action.edit = workspace_edit(ls, doc, result)
        return action

    @server.command(methods.COMMAND_EDIT)
    async def edit(ls: SlmLanguageServer, *args: Any) -> dict[str, Any]:
        arg = args[0] if args else None
        if not isinstance(arg, dict):
            raise JsonRpcInvalidParams(f"{methods.COMMAND_EDIT} takes {{uri, range, action, instruction}}, "
                                       f"got {arg!r}")
        try:
            doc, result = await run_action(ls, arg)
        except EditError as exc:
            ls.notify_user(str(exc))
            return {"applied": False, "message": str(exc)}
        if not result.edits:
            ls.notify_user("the model left the code as it was", types.MessageType.Info)
            return {"applied": False, "message": "no change"}
        label = f"slm-lsp: {ACTIONS[arg.get('action', 'rewrite')].title.rstrip('…')}"
        answer = await ls.workspace_apply_edit_async(types.ApplyWorkspaceEditParams(
            workspace_edit(ls, doc, result), label=label))
        if not answer.applied:
            ls.notify_user(f"the editor did not apply the edit: {answer.failure_reason or 'no reason given'}")
        return {"applied": answer.applied, "message": f"{len(result.edits)} change(s)"}
