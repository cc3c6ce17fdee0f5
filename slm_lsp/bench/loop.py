"""``slm-lsp bench loop``: the event loop's longest stall while typing into a 50,000-line file.

Runs ``slm-lsp serve`` as a child and drives it over stdio the way an editor does: the file is
opened (in a temporary workspace, so the index and its watcher run too), then ``--chars``
characters are typed into its middle as incremental ``didChange`` keystrokes, ``--interval-ms``
apart, with an inline completion request every ``--every`` characters (the previous one
cancelled, as editors do). The server's heartbeat (``slm/loopStall``) measures how late the loop
ran during the typing only (opening the file is a one-off and is not counted). The target is
under 20 ms. Nothing is asserted: the numbers are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lsprotocol import types
from pygls.lsp.client import LanguageClient

from ..features.loop_stall import LOOP_STALL_REQUEST, STALL_MS

TYPED = "    total = compute_value(alpha, beta) + offset_{n}\n"


def synthetic_file(n_lines: int) -> str:
    """``n_lines`` lines of plain Python: small functions, one after another."""
    body: list[str] = []
    i = 0
    while len(body) < n_lines:
        body += [f"def function_{i}(alpha, beta):", f"    total = alpha * {i} + beta", "    return total", ""]
        i += 1
    return "\n".join(body[:n_lines]) + "\n"


async def replay(command: list[str], text: str, path: Path, chars: int, every: int, interval_ms: float,
                 root: Path, settings: dict[str, Any] | None = None) -> dict[str, Any]:
    client = LanguageClient("slm-lsp-bench-loop", "1")

    @client.feature("slm/status")
    def _status(_ls: LanguageClient, _params: Any) -> None:  # the server's status notifications
        pass

    await client.start_io(*command)
    await client.initialize_async(types.InitializeParams(
        capabilities=types.ClientCapabilities(), root_uri=root.as_uri(), initialization_options=settings,
        workspace_folders=[types.WorkspaceFolder(uri=root.as_uri(), name=root.name)]))
    client.initialized(types.InitializedParams())
    uri = path.as_uri()
    await client.protocol.send_request_async(LOOP_STALL_REQUEST, {"reset": True})  # starts the heartbeat
    t0 = time.perf_counter()
    client.text_document_did_open(types.DidOpenTextDocumentParams(
        text_document=types.TextDocumentItem(uri=uri, language_id="python", version=1, text=text)))
    open_stall = await client.protocol.send_request_async(LOOP_STALL_REQUEST, {"reset": True})
    open_ms = (time.perf_counter() - t0) * 1000
    version = 1

    async def type_in(script: str, typed_line: int) -> int:
        """Type ``script`` at the start of ``typed_line``; the number of completion requests."""
        nonlocal version
        column = 0
        pending: asyncio.Future[Any] | None = None
        requests = 0
        for i, ch in enumerate(script):
            version += 1
            at = types.Position(typed_line, column)
            client.text_document_did_change(types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
                content_changes=[types.TextDocumentContentChangePartial(range=types.Range(at, at), text=ch)]))
            typed_line, column = (typed_line + 1, 0) if ch == "\n" else (typed_line, column + 1)
            if (i + 1) % every == 0:
                if pending is not None and not pending.done():
                    pending.cancel()
                pending = asyncio.ensure_future(client.text_document_inline_completion_async(
                    types.InlineCompletionParams(
                        text_document=types.TextDocumentIdentifier(uri=uri),
                        position=types.Position(typed_line, column),
                        context=types.InlineCompletionContext(
                            trigger_kind=types.InlineCompletionTriggerKind.Automatic))))
                requests += 1
            await asyncio.sleep(interval_ms / 1000)
        if pending is not None:
            try:
                await asyncio.wait_for(pending, 60)
            except Exception:
                pass
        return requests

    # Warm up far from where the typing is measured: the first message of each kind builds its
    # converters (cattrs) once, and the first request imports and sizes what it needs.
    await type_in("".join(TYPED.format(n=n) for n in range(2)), 10)
    await asyncio.sleep(1.0)  # the index walk and the first parse of the buffer settle
    await client.protocol.send_request_async(LOOP_STALL_REQUEST, {"reset": True})

    script = "".join(TYPED.format(n=n) for n in range(chars // len(TYPED) + 1))[:chars]
    t_type = time.perf_counter()
    requests = await type_in(script, len(text.split("\n")) // 2)
    typing_s = time.perf_counter() - t_type
    stall = await client.protocol.send_request_async(LOOP_STALL_REQUEST, {})
    await client.shutdown_async(None)
    client.exit(None)
    await client.stop()
    return {"open_ms": open_ms, "open_stall": _as_dict(open_stall), "typing": _as_dict(stall),
            "keystrokes": len(script), "requests": requests, "typing_s": typing_s}


def _as_dict(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    return {k: getattr(value, k) for k in ("maxStallMs", "beats", "stallsOver20Ms", "seconds") if hasattr(value, k)}


def run_loop_bench(args: argparse.Namespace) -> int:
    # A cancelled request's late answer makes pygls's client log a traceback: noise here.
    logging.getLogger("pygls").setLevel(logging.CRITICAL)
    with tempfile.TemporaryDirectory(prefix="slm-bench-loop-") as tmp:
        root = Path(tmp) / "workspace"
        root.mkdir()
        text = Path(args.file).read_text(encoding="utf-8") if args.file else synthetic_file(args.lines)
        path = root / (Path(args.file).name if args.file else "big_module.py")
        path.write_text(text, encoding="utf-8")
        command = [sys.executable, "-m", "slm_lsp", "serve", "--log-file", str(Path(tmp) / "server.log")]
        if args.model:
            command += ["--model", args.model]
        if args.threads:
            command += ["--threads", str(args.threads)]
        result = asyncio.run(replay(command, text, path, args.chars, args.every, args.interval_ms, root))
    n_lines = text.count("\n")
    typing = result["typing"]
    print(f"file: {n_lines} lines, {len(text) / 1e6:.1f} MB; opened in {result['open_ms']:.0f} ms "
          f"(longest stall while opening: {result['open_stall'].get('maxStallMs')} ms, not counted)")
    print(f"typing: {result['keystrokes']} keystrokes in {result['typing_s']:.1f} s, "
          f"{result['requests']} inline completion requests")
    print(f"event loop: longest stall {typing.get('maxStallMs')} ms, {typing.get('stallsOver20Ms')} stalls over "
          f"{STALL_MS:.0f} ms, {typing.get('beats')} heartbeats (target: under {STALL_MS:.0f} ms)")
    return 0
