"""initialize / initialized / workspace/didChangeConfiguration / shutdown.

Settings are merged defaults < initializationOptions < workspace/configuration ``slm`` < CLI.
Invalid settings are shown to the user and replaced by defaults; the model loads in the
engine's worker thread with work-done progress, and a missing model leaves the server up,
answering with empty completions and saying exactly what to do.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import TYPE_CHECKING, Any

from lsprotocol import types

from .. import methods
from ..config import merge_config
from ..models import ModelNotFound, resolve_model

if TYPE_CHECKING:
    from ..server import SlmLanguageServer

log = logging.getLogger(__name__)


def apply_settings(ls: "SlmLanguageServer", workspace_settings: Any = None) -> bool:
    """Merge all setting sources into ``ls.config``; True when the model must be (re)loaded."""
    result = merge_config(ls.init_settings, workspace_settings, ls.cli_settings)
    for error in result.errors:
        ls.notify_user(f"invalid setting {error}; using the default")
    ls.config = result.config
    logging.getLogger("slm_lsp").setLevel(result.config.log_level.upper())
    ls.context.configure(result.config.context)  # sources, budgets and index settings, live
    return ls.engine.apply_config(result.config)


async def fetch_workspace_settings(ls: "SlmLanguageServer") -> Any:
    caps = ls.client_capabilities.workspace
    if not (caps and caps.configuration):
        return None
    try:
        items = [types.ConfigurationItem(section=methods.CONFIG_SECTION)]
        result = await asyncio.wait_for(ls.workspace_configuration_async(types.ConfigurationParams(items=items)), 10)
        return result[0] if result else None
    except Exception as exc:  # a client that fails here still gets completions
        log.warning("workspace/configuration failed: %s", exc)
        return None


async def load_model(ls: "SlmLanguageServer") -> None:
    loop = asyncio.get_running_loop()
    try:
        # stat calls and an Ollama manifest read: a path on a dead network mount must not stall the loop
        path = await loop.run_in_executor(None, resolve_model, ls.config.model.path)
    except ModelNotFound as exc:
        ls.model_error = str(exc)
        ls.engine.no_model(str(exc))
        ls.notify_user(str(exc))
        return
    window = ls.client_capabilities.window
    token: str | None = None
    if window and window.work_done_progress:
        token = f"slm-load-{uuid.uuid4()}"
        try:
            await asyncio.wait_for(ls.work_done_progress.create_async(token), 5)
            ls.work_done_progress.begin(token, types.WorkDoneProgressBegin(
                title="slm-lsp: loading model", message=path.name, percentage=0, cancellable=False))
        except Exception:
            token = None
    last = [-1]

    def progress(fraction: float) -> None:
        pct = int(fraction * 100)
        if token is None or pct < last[0] + 5:
            return
        last[0] = pct
        loop.call_soon_threadsafe(ls.work_done_progress.report, token,
                                  types.WorkDoneProgressReport(percentage=pct, message=path.name))

    try:
        await asyncio.wrap_future(ls.engine.load(str(path), progress))
        ls.model_error = ""
    except Exception as exc:
        ls.model_error = str(exc)
        ls.notify_user(f"could not load the model: {exc}", types.MessageType.Error)
    finally:
        if token is not None:
            message = "ready" if not ls.model_error else "failed"
            ls.work_done_progress.end(token, types.WorkDoneProgressEnd(message=message))


def register(server: "SlmLanguageServer") -> None:
    @server.feature(types.INITIALIZE)
    def initialize(ls: "SlmLanguageServer", params: types.InitializeParams) -> None:
        ls.loop = asyncio.get_running_loop()
        options = params.initialization_options
        if options is not None and not isinstance(options, dict):
            ls.notify_user(f"initializationOptions must be an object, got {options!r}; ignored")
            options = None
        ls.init_settings = options or {}
        apply_settings(ls)
        ls.engine.expect_model()  # completion requests that arrive before the load starts wait for it

    @server.feature(types.INITIALIZED)
    async def initialized(ls: "SlmLanguageServer", params: types.InitializedParams) -> None:
        settings = await fetch_workspace_settings(ls)
        apply_settings(ls, settings)
        await ls.context.start(ls)  # indexes the workspace in the background
        await load_model(ls)

    @server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    async def did_change_configuration(ls: "SlmLanguageServer", params: types.DidChangeConfigurationParams) -> None:
        settings = await fetch_workspace_settings(ls)
        if settings is None and isinstance(params.settings, dict):
            settings = params.settings.get(methods.CONFIG_SECTION, params.settings)
        if apply_settings(ls, settings):
            await load_model(ls)

    @server.feature(types.SHUTDOWN)
    async def shutdown(ls: "SlmLanguageServer", params: None) -> None:
        ls.context.stop()
        # The worker closes the model once its job is done: wait for that off the event loop.
        await asyncio.to_thread(ls.engine.close)
