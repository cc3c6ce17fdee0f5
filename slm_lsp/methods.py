"""Custom LSP method and command names shared with the editor clients.

``editors/vscode/src/constants.ts`` and ``editors/nvim/lua/slm/methods.lua`` mirror this file;
``tests/test_methods.py`` checks that they agree.
"""

STATUS_NOTIFICATION = "slm/status"
"""Server → client: ``{"state": "loading"|"ready"|"error"|"no-model"|"generating", "detail": str,
"latencyMs": float | None}``, for status bars."""

COMMAND_LOAD_ADAPTER = "slm.loadAdapter"
"""workspace/executeCommand: ``[path]`` applies a GGUF LoRA adapter, ``[]`` or ``[""]`` removes it."""

COMMAND_STATUS = "slm.status"
"""workspace/executeCommand: returns the model, template, state and last timings."""

CONFIG_SECTION = "slm"
"""The workspace/configuration section the server asks for."""

COMMANDS = [COMMAND_LOAD_ADAPTER, COMMAND_STATUS]
