"""Edit actions over LSP (features/code_action.py): textDocument/codeAction lists them, resolve runs
the model. With a tiny model that has a chat template, the answer is random words that never
parse: the edit is rejected with a message and no WorkspaceEdit. A long edit reports progress and
$/cancelRequest stops it between tokens. With the real Qwen (SLM_LSP_TEST_MODEL) the WorkspaceEdit
of "Add type hints" is applied to the text and checked, and ``slm.edit`` applies its edit through
workspace/applyEdit."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest
import pytest_lsp
from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pytest_lsp import ClientServerConfig, LanguageClient

from slm_lsp import methods
from slm_lsp.engine.edit import parse_errors
from tests.conftest import TINY_MODEL, server_command
from tests.e2e.session import TINY_CHAT_MODEL, open_document, start_ready

SOURCE = "import os\n\n\ndef add(a, b):\n    return a + b\n\n\nprint(add(1, 2))\n"
LONG = "def long():\n" + "".join(f"    x{i} = {i}\n" for i in range(80)) + "    return x0\n"
CAPS = types.ClientCapabilities(
    window=types.WindowClientCapabilities(work_done_progress=True),
    workspace=types.WorkspaceClientCapabilities(
        apply_edit=True, workspace_edit=types.WorkspaceEditClientCapabilities(document_changes=True)))


async def start(client: LanguageClient) -> None:
    client.init_result = await start_ready(client, CAPS, tries=600)  # type: ignore[attr-defined]


@pytest_lsp.fixture(config=ClientServerConfig(server_command=server_command("--model", str(TINY_CHAT_MODEL))))
async def client(lsp_client: LanguageClient):
    await start(lsp_client)
    yield
    await lsp_client.shutdown_session()


@pytest_lsp.fixture(config=ClientServerConfig(server_command=server_command("--model", str(TINY_MODEL))))
async def base_client(lsp_client: LanguageClient):
    await start(lsp_client)
    yield
    await lsp_client.shutdown_session()


def open_doc(client: LanguageClient, uri: str, text: str = SOURCE) -> None:
    open_document(client, uri, text)


async def actions(client: LanguageClient, uri: str, rng: types.Range,
                  diagnostics: list[types.Diagnostic] | None = None) -> list[types.CodeAction]:
    result = await client.text_document_code_action_async(types.CodeActionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), range=rng,
        context=types.CodeActionContext(diagnostics=diagnostics or [])))
    assert result is not None
    return result  # type: ignore[return-value]


def lines(a: int, b: int) -> types.Range:
    return types.Range(types.Position(a, 0), types.Position(b, 0))


def apply_edit(text: str, edit: types.WorkspaceEdit) -> str:
    (change,) = edit.document_changes or []
    assert isinstance(change, types.TextDocumentEdit)
    out = text.splitlines(True)
    for e in sorted(change.edits, key=lambda e: e.range.start.line, reverse=True):
        assert isinstance(e, types.TextEdit) and e.range.start.character == 0 and e.range.end.character == 0
        out[e.range.start.line:e.range.end.line] = [e.new_text]
    return "".join(out)


async def test_actions_are_listed_and_an_unparsable_answer_is_rejected(client: LanguageClient):
    caps = client.init_result.capabilities  # type: ignore[attr-defined]
    assert isinstance(caps.code_action_provider, types.CodeActionOptions)
    assert caps.code_action_provider.resolve_provider  # the model runs on resolve only
    assert methods.COMMAND_EDIT in caps.execute_command_provider.commands
    uri = "file:///work/edit.py"
    open_doc(client, uri)
    bug = types.Diagnostic(range=types.Range(types.Position(4, 11), types.Position(4, 12)),
                           message="Operator + not supported", source="pyright")
    listed = await actions(client, uri, lines(3, 5), [bug])
    titles = [a.title for a in listed]
    assert titles[0].startswith("Fix: Operator + not supported")
    assert {"Rewrite selection… (slm-lsp)", "Add docstring (slm-lsp)", "Add type hints (slm-lsp)",
            "Simplify (slm-lsp)"} <= set(titles)
    assert all(getattr(a, "edit", None) is None for a in listed)  # nothing ran yet
    rewrite = next(a for a in listed if a.title.startswith("Rewrite"))
    # The test client's lsprotocol reads a CodeAction with a command as a Command (the nested
    # command as its text); editors read the raw message, which has the editor command with the data.
    assert f"'command': '{methods.COMMAND_REWRITE_SELECTION}'" in str(rewrite.command)
    assert "'action': 'rewrite'" in str(rewrite.command)
    docstring = next(a for a in listed if a.title.startswith("Add docstring"))
    resolved = await asyncio.wait_for(client.code_action_resolve_async(docstring), 120)
    assert resolved.edit is None
    assert any("does not parse as python: nothing was changed" in m.message for m in client.messages)
    # the fix action takes the diagnostic's line with it, and is rejected the same way
    fixed = await asyncio.wait_for(client.code_action_resolve_async(listed[0]), 120)
    assert fixed.edit is None
    # progress was reported for the edit, and ended with the reason
    ends = [r for reports in client.progress_reports.values() for r in reports
            if isinstance(r, types.WorkDoneProgressEnd)]
    assert sum("does not parse" in (e.message or "") for e in ends) == 2


async def test_no_refactors_on_a_cursor_move(client: LanguageClient):
    uri = "file:///work/cursor.py"
    open_doc(client, uri)
    at = types.Range(types.Position(4, 4), types.Position(4, 4))

    async def listed(kind: types.CodeActionTriggerKind) -> list[str]:
        result = await client.text_document_code_action_async(types.CodeActionParams(
            text_document=types.TextDocumentIdentifier(uri=uri), range=at,
            context=types.CodeActionContext(diagnostics=[], trigger_kind=kind)))
        return [a.title for a in result or []]

    assert await listed(types.CodeActionTriggerKind.Automatic) == []
    assert "Add docstring (slm-lsp)" in await listed(types.CodeActionTriggerKind.Invoked)


async def test_rewrite_without_instruction_and_bad_arguments(client: LanguageClient):
    uri = "file:///work/edit2.py"
    open_doc(client, uri)
    args: dict[str, Any] = {"uri": uri, "range": {"start": {"line": 3, "character": 0},
                                                  "end": {"line": 5, "character": 0}}, "action": "rewrite"}
    result = await client.workspace_execute_command_async(types.ExecuteCommandParams(
        command=methods.COMMAND_EDIT, arguments=[args]))
    assert result == {"applied": False, "message": "no instruction: nothing to do"}
    with pytest.raises(JsonRpcException, match="unknown edit action"):
        await client.workspace_execute_command_async(types.ExecuteCommandParams(
            command=methods.COMMAND_EDIT, arguments=[{**args, "action": "poem"}]))
    with pytest.raises(JsonRpcException, match="not an LSP range"):
        await client.workspace_execute_command_async(types.ExecuteCommandParams(
            command=methods.COMMAND_EDIT, arguments=[{**args, "range": [1, 2]}]))
    # an empty selection outside any function: nothing to edit, said so
    result = await client.workspace_execute_command_async(types.ExecuteCommandParams(
        command=methods.COMMAND_EDIT, arguments=[{**args, "range": {"start": {"line": 0, "character": 0},
                                                                    "end": {"line": 0, "character": 0}},
                                                  "instruction": "x"}]))
    assert result["applied"] is False and "not inside a function" in result["message"]


async def test_cancel_stops_a_long_edit(client: LanguageClient):
    uri = "file:///work/long.py"
    open_doc(client, uri, LONG)
    simplify = next(a for a in await actions(client, uri, lines(0, LONG.count("\n")))
                    if a.title.startswith("Simplify"))
    known = set(client.progress_reports)
    task = asyncio.ensure_future(client.protocol.send_request_async(types.CODE_ACTION_RESOLVE, simplify))
    for _ in range(1200):  # the model is writing: a progress report came
        token = next((t for t in client.progress_reports if t not in known), None)
        reports = client.progress_reports.get(token, []) if token is not None else []
        if any(isinstance(r, types.WorkDoneProgressReport) for r in reports):
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("no progress report")
    msg_id = max(client.protocol._request_futures)  # type: ignore[attr-defined]
    client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id=msg_id))
    with pytest.raises((JsonRpcException, asyncio.CancelledError)):
        await asyncio.wait_for(task, 60)
    for _ in range(600):
        end = next((r for r in client.progress_reports[token] if isinstance(r, types.WorkDoneProgressEnd)), None)
        if end is not None:
            break
        await asyncio.sleep(0.05)
    assert end is not None and end.message == "cancelled"
    reports = [r for r in client.progress_reports[token] if isinstance(r, types.WorkDoneProgressReport)]
    assert int((reports[-1].message or "0").split()[0]) < 2048  # stopped before its token limit
    # the worker is free again: the next edit is answered (and rejected: the tiny model's words)
    open_doc(client, "file:///work/after.py")
    result = await asyncio.wait_for(client.workspace_execute_command_async(types.ExecuteCommandParams(
        command=methods.COMMAND_EDIT, arguments=[{"uri": "file:///work/after.py", "action": "docstring",
                                                  "range": {"start": {"line": 3, "character": 0},
                                                            "end": {"line": 5, "character": 0}}}])), 120)
    assert result["applied"] is False and "does not parse" in result["message"]


async def test_a_base_model_offers_no_edits(base_client: LanguageClient):
    # No chat template: a base model does not follow instructions (see engine/edit.py).
    uri = "file:///work/base.py"
    open_doc(base_client, uri)
    result = await base_client.text_document_code_action_async(types.CodeActionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), range=lines(3, 5),
        context=types.CodeActionContext(diagnostics=[])))
    assert not result


REAL = os.environ.get("SLM_LSP_TEST_MODEL", "")


@pytest_lsp.fixture(config=ClientServerConfig(server_command=server_command("--model", REAL or str(TINY_MODEL),
                                                                            "--threads", "1")))
async def real_client(lsp_client: LanguageClient):
    applied: list[types.ApplyWorkspaceEditParams] = []

    @lsp_client.feature(types.WORKSPACE_APPLY_EDIT)
    def apply(params: types.ApplyWorkspaceEditParams) -> types.ApplyWorkspaceEditResult:
        applied.append(params)
        return types.ApplyWorkspaceEditResult(applied=True)

    lsp_client.applied = applied  # type: ignore[attr-defined]
    await start(lsp_client)
    yield
    await lsp_client.shutdown_session()


@pytest.mark.skipif(not REAL, reason="set SLM_LSP_TEST_MODEL to a Qwen instruct GGUF")
async def test_real_model_type_hints_applied(real_client: LanguageClient):
    uri = "file:///work/real.py"
    open_doc(real_client, uri)
    hints = next(a for a in await actions(real_client, uri, lines(3, 5)) if a.title.startswith("Add type hints"))
    resolved = await asyncio.wait_for(real_client.code_action_resolve_async(hints), 300)
    assert resolved.edit is not None, [m.message for m in real_client.messages]
    after = apply_edit(SOURCE, resolved.edit)
    assert "def add(a: " in after and "->" in after and parse_errors("python", after) == 0
    assert after.endswith("\n\nprint(add(1, 2))\n")  # the lines around the selection are untouched
    # slm.edit: the same through workspace/applyEdit, with an instruction
    result = await asyncio.wait_for(real_client.workspace_execute_command_async(types.ExecuteCommandParams(
        command=methods.COMMAND_EDIT, arguments=[{"uri": uri, "action": "rewrite", "instruction": "rename b to y",
                                                  "range": {"start": {"line": 4, "character": 4},
                                                            "end": {"line": 4, "character": 4}}}])), 300)
    assert result["applied"] is True, result
    (params,) = real_client.applied  # type: ignore[attr-defined]
    assert "y" in apply_edit(SOURCE, params.edit)
