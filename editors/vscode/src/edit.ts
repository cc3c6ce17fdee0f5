/**
 * Edits of a selection by the model (the server's code actions, `slm_lsp/features/code_action.py`).
 * The lightbulb lists them through the language client (Add Docstring, Add Type Hints, Simplify,
 * Fix: ...); VS Code resolves the one picked, and the model runs then. "Rewrite selection…" needs
 * an instruction: its code action carries `slm.rewriteSelection`, registered here, which asks for
 * it in an InputBox and sends `slm.edit`; the server applies the edit (workspace/applyEdit).
 * The same command from the palette rewrites the active editor's selection.
 */

import * as vscode from 'vscode';
import type { SlmClient } from './client';
import { COMMAND_EDIT, COMMAND_REWRITE_SELECTION } from './constants';

/** What the server's code action passes (and what `slm.edit` takes, less the instruction). */
interface EditTarget {
  uri: string;
  range: { start: { line: number; character: number }; end: { line: number; character: number } };
  version?: number;
}

export class EditCommands {
  constructor(
    private readonly client: SlmClient,
    private readonly output: vscode.LogOutputChannel,
  ) {}

  register(): vscode.Disposable[] {
    return [vscode.commands.registerCommand(COMMAND_REWRITE_SELECTION, (target?: EditTarget) => this.rewrite(target))];
  }

  /** The code action's target, else the active editor's selection (whole lines). */
  private target(given?: EditTarget): EditTarget | undefined {
    if (given && typeof given.uri === 'string' && given.range) {
      return given;
    }
    const editor = vscode.window.activeTextEditor;
    if (!editor) {
      return undefined;
    }
    const { start, end } = editor.selection;
    return {
      uri: editor.document.uri.toString(),
      range: { start: { line: start.line, character: start.character }, end: { line: end.line, character: end.character } },
    };
  }

  async rewrite(given?: EditTarget): Promise<void> {
    const target = this.target(given);
    if (!target) {
      void vscode.window.showWarningMessage('slm-lsp: open a file and select the code to rewrite');
      return;
    }
    const instruction = await vscode.window.showInputBox({
      title: 'slm-lsp: Rewrite Selection',
      prompt: 'How should the model rewrite the selected code?',
      placeHolder: 'e.g. use a list comprehension',
      ignoreFocusOut: true,
    });
    if (!instruction?.trim()) {
      return;
    }
    try {
      // The server shows why when nothing is applied (window/showMessage).
      const result = (await this.client.executeCommand(COMMAND_EDIT, [{ ...target, action: 'rewrite', instruction }])) as
        | { applied?: boolean; message?: string }
        | undefined;
      this.output.info(`${COMMAND_EDIT}: ${result?.applied ? 'applied' : 'not applied'} (${result?.message ?? ''})`);
    } catch (err) {
      void vscode.window.showErrorMessage(`slm-lsp: the edit failed: ${err instanceof Error ? err.message : String(err)}`);
    }
  }
}
