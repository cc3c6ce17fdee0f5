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

COMMAND_ACCEPTED = "slm.accepted"
"""workspace/executeCommand, set by the server as each inline completion item's ``command`` (the
editor runs it when the item is accepted): ``[{"uri", "version", "position", "text"}]``, as
``ACCEPTED_NOTIFICATION``. The server then computes the completion at ``position`` at once."""

ACCEPTED_NOTIFICATION = "slm/accepted"
"""Client → server: a suggestion (or part of it) was accepted: ``{"uri": str, "position":
{"line", "character"}`` (the cursor after the accepted text), ``"text": str`` (the accepted text,
which the document has before ``position`` once the edit reached the server), ``"version": int``
(optional: the document version that has it)}."""

COMMAND_EDIT = "slm.edit"
"""workspace/executeCommand: ``[{"uri", "range", "action", "instruction"}]`` edits the lines of
``range`` with the model (``action``: rewrite, docstring, type_hints, simplify or fix; ``rewrite``
follows ``instruction``) and applies the edit with workspace/applyEdit; returns ``{"applied",
"message"}``. ``:SlmEdit`` and VS Code's "Rewrite Selection" command send it."""

COMMAND_REWRITE_SELECTION = "slm.rewriteSelection"
"""The editor's own command, set by the server on the "Rewrite selection…" code action with
``[{"uri", "version", "range", "action"}]``: the editor asks the user for an instruction and sends
``COMMAND_EDIT`` with these arguments and ``"instruction"``."""

NEXT_EDIT_REQUEST = "slm/nextEdit"
"""Client → server request: ``{"textDocument": {"uri"}, "position": {"line", "character"}}`` →
``null`` (no edit likely) or ``{"range": Range, "newText": str, "cause": str}``: replace ``range``
(anywhere in the editable region around ``position``, in the negotiated position encoding) with
``newText``; ``cause`` says what it follows, for the editor to show (``features/next_edit.py``)."""

CURSOR_NOTIFICATION = "slm/cursor"
"""Client → server: the cursor came to rest somewhere: ``{"textDocument": {"uri"}, "position":
{"line", "character"}}``, sent when the editor focuses a document or the cursor stops (debounced)
on another line than the last one sent. LSP says nothing about the cursor until the user types;
this lets the server warm the prompt there during the pause before typing (when it is another
document than the last place, or more than ``engine.warmup.JUMP_LINES`` lines from it)."""

CONFIG_SECTION = "slm"
"""The workspace/configuration section the server asks for."""

COMMANDS = [COMMAND_LOAD_ADAPTER, COMMAND_STATUS]
"""The commands users run (the editors offer them); ``COMMAND_ACCEPTED`` is the editor's own."""
