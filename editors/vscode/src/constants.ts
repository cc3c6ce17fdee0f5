/**
 * Names shared with the server. Mirrors `slm_lsp/methods.py` (same names, same values);
 * `tests/test_methods.py` at the repository root checks that they agree.
 *
 * Pure: no `vscode` import, so the Node tests can load it.
 */

/** Server → client: `{state, detail, latencyMs}` for the status bar. */
export const STATUS_NOTIFICATION = 'slm/status';

/** workspace/executeCommand: `[path]` applies a GGUF LoRA adapter, `[]` or `[""]` removes it. */
export const COMMAND_LOAD_ADAPTER = 'slm.loadAdapter';

/** workspace/executeCommand: returns the model, template, state and last timings. */
export const COMMAND_STATUS = 'slm.status';

/**
 * workspace/executeCommand, set by the server as each inline item's `command` (run on accept):
 * `[{uri, version, position, text}]`. The extension registers a VS Code command of this name
 * that forwards it to the server, so the next suggestion is computed at once.
 */
export const COMMAND_ACCEPTED = 'slm.accepted';

/** Client → server: `{uri, position, text, version?}`, a suggestion (or part of it) was accepted. */
export const ACCEPTED_NOTIFICATION = 'slm/accepted';

/**
 * workspace/executeCommand: `[{uri, range, action, instruction}]` edits the lines of `range` with
 * the model (action: rewrite, docstring, type_hints, simplify or fix) and applies the edit with
 * workspace/applyEdit. The "Rewrite Selection" command sends it.
 */
export const COMMAND_EDIT = 'slm.edit';

/**
 * The editor's own command on the "Rewrite selection…" code action: `[{uri, version, range, action}]`;
 * the extension asks for an instruction (InputBox), then sends `COMMAND_EDIT`.
 */
export const COMMAND_REWRITE_SELECTION = 'slm.rewriteSelection';

/**
 * Client → server request: `{textDocument: {uri}, position}` → `null` (no edit likely) or
 * `{range, newText, cause}`: replace `range` (anywhere in the editable region around `position`)
 * with `newText`. The "Next Edit" command sends it (nextEdit.ts).
 */
export const NEXT_EDIT_REQUEST = 'slm/nextEdit';

/**
 * Client → server: `{textDocument: {uri}, position}`, the cursor came to rest (a focused editor, or
 * the selection stopped on another line; debounced). The server warms the prompt there when it is
 * another document or a jump, so the first suggestion after the pause finds it evaluated.
 */
export const CURSOR_NOTIFICATION = 'slm/cursor';

/** The workspace/configuration section the server asks for (and the prefix of our settings). */
export const CONFIG_SECTION = 'slm';

/** The commands the server implements. */
export const COMMANDS = [COMMAND_LOAD_ADAPTER, COMMAND_STATUS];

/** The extension's own VS Code commands (package.json `contributes.commands`). */
export const EXTENSION_COMMANDS = {
  toggle: 'slm.toggle',
  restartServer: 'slm.restartServer',
  pullModel: 'slm.pullModel',
  loadAdapter: COMMAND_LOAD_ADAPTER,
  finetune: 'slm.finetune',
  showLog: 'slm.showLog',
  status: COMMAND_STATUS,
  rewriteSelection: COMMAND_REWRITE_SELECTION,
  nextEdit: 'slm.nextEdit',
  acceptNextEdit: 'slm.acceptNextEdit',
  dismissNextEdit: 'slm.dismissNextEdit',
} as const;

/** The `when`-clause context key that is true while a next edit is shown (Tab and Escape bind to it). */
export const NEXT_EDIT_VISIBLE_CONTEXT = 'slm.nextEditVisible';

/** Models `slm-lsp pull` knows by name (slm_lsp/models.py CATALOG); the first is the default. */
export const CATALOG_MODELS = ['llama-3.2-3b', 'qwen2.5-coder-0.5b', 'qwen2.5-coder-1.5b', 'qwen2.5-coder-7b'];
