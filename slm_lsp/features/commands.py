"""workspace/executeCommand: ``slm.loadAdapter`` (swap LoRA adapters without restart), ``slm.status``."""

from __future__ import annotations

import asyncio
from typing import Any

from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams

from .. import methods
from ..engine.service import EngineStatus
from ..server import SlmLanguageServer  # at run time: pygls reads command handlers' type hints


def register(server: SlmLanguageServer) -> None:
    @server.command(methods.COMMAND_LOAD_ADAPTER)
    async def load_adapter(ls: SlmLanguageServer, *args: Any) -> dict[str, Any]:
        path = args[0] if args else ""
        if path is not None and not isinstance(path, str):
            raise JsonRpcInvalidParams(f"{methods.COMMAND_LOAD_ADAPTER} takes a path, got {path!r}")
        try:
            # Checked against the model and tried in a child process first: success means applied.
            await asyncio.wrap_future(ls.engine.set_adapter(path or None))
        except Exception as exc:
            ls.notify_user(f"could not load the adapter: {exc}", types.MessageType.Error)
            raise JsonRpcInvalidParams(str(exc)) from exc
        return {"adapter": path or None}

    @server.command(methods.COMMAND_STATUS)
    def status(ls: SlmLanguageServer, *args: Any) -> dict[str, Any]:
        snapshot = ls.engine.status()
        return {
            "state": snapshot.state,
            "detail": ls.model_error or snapshot.detail,
            "model": snapshot.model,
            "template": snapshot.template,
            "adapter": snapshot.adapter,
            "nGpuLayers": snapshot.n_gpu_layers,
            "nCtx": snapshot.n_ctx,
            "lastLatencyMs": ls.last_latency_ms,
            "cacheHits": snapshot.cache_hits,
            "context": _context_status(ls, snapshot),
            "route": snapshot.route,
            "remote": snapshot.remote,
            "backend": snapshot.backend,
            "backendReason": snapshot.backend_reason,
            "answered": dict(snapshot.answered),
            "remoteRetryS": snapshot.remote_retry_s,
            "prefetch": dict(snapshot.prefetch),
            "kvStates": dict(snapshot.kv_states),
            "answerLength": dict(snapshot.answer_length),
        }


def _context_status(ls: SlmLanguageServer, engine: EngineStatus) -> dict[str, Any]:
    """The indexes, and which other files the last prompt drew on."""
    last = engine.last_context
    return {
        "indexes": [{"root": i.root, "ready": i.ready.is_set(), "files": len(i.snapshot.files)}
                    for i in ls.context.provider.indexes],
        "lastPromptFiles": sorted({f.path for f in last}),
        "lastPromptContext": [{"path": f.path, "text": f.text[:400]} for f in last],
    }
