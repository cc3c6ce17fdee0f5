-- Custom LSP method and command names shared with the server.
-- Mirrors slm_lsp/methods.py (tests/test_methods.py checks that they agree): keep names and
-- values identical.
local M = {}

--- Server → client: { state = "loading"|"ready"|"error"|"no-model"|"generating", detail = string,
--- latencyMs = number|nil }, for status lines.
M.STATUS_NOTIFICATION = "slm/status"

--- workspace/executeCommand: { path } applies a GGUF LoRA adapter, {} or { "" } removes it.
M.COMMAND_LOAD_ADAPTER = "slm.loadAdapter"

--- workspace/executeCommand: returns the model, template, state and last timings.
M.COMMAND_STATUS = "slm.status"

--- workspace/executeCommand, set by the server as each inline item's command (run on accept):
--- { { uri, version, position, text } }.
M.COMMAND_ACCEPTED = "slm.accepted"

--- Client → server: { uri, position, text, version? }, a suggestion (or part of it) was accepted;
--- the server computes the next suggestion at once. The plugin's accept keys send it.
M.ACCEPTED_NOTIFICATION = "slm/accepted"

--- workspace/executeCommand: { { uri, range, action, instruction } } edits the lines of range
--- with the model (action: rewrite, docstring, type_hints, simplify or fix) and applies the edit
--- with workspace/applyEdit. :SlmEdit sends it.
M.COMMAND_EDIT = "slm.edit"

--- The editor's own command on the "Rewrite selection…" code action: { { uri, version, range,
--- action } }; the plugin asks for an instruction (vim.ui.input), then sends COMMAND_EDIT.
M.COMMAND_REWRITE_SELECTION = "slm.rewriteSelection"

--- Client → server request: { textDocument = { uri }, position } → nil (no edit likely) or
--- { range, newText, cause }: replace range (anywhere in the editable region around position)
--- with newText. The plugin asks after edits and shows the answer as a diff (slm.next_edit).
M.NEXT_EDIT_REQUEST = "slm/nextEdit"

--- Client → server: { textDocument = { uri }, position }, the cursor came to rest (a focused
--- buffer, or the cursor stopped on another line); the server warms the prompt there when it is
--- another document or a jump (slm.cursor sends it, debounced).
M.CURSOR_NOTIFICATION = "slm/cursor"

--- The workspace/configuration section the server asks for.
M.CONFIG_SECTION = "slm"

M.COMMANDS = { M.COMMAND_LOAD_ADAPTER, M.COMMAND_STATUS }

return M
