/**
 * Next-edit suggestions (`slm/nextEdit`): the **slm-lsp: Next Edit** command asks the server
 * where the next edit is likely and shows the answer in the editor: the text it removes struck
 * through on the diff editor's "removed" colour, the text it adds after it on the "inserted"
 * colour (a multi-line addition: its first line, and the whole edit in the hover). **Tab** (the
 * `slm.acceptNextEdit` command, bound while one is shown) jumps to it; pressed there, it applies
 * it. **Escape** (`slm.dismissNextEdit`), any change to the document or another editor hides it.
 *
 * The inline completion provider hands over the ranged items VS Code cannot show as ghost text
 * (`offer`), so next edits that arrive with typing are shown the same way; after an accepted
 * inline completion the next edit is asked for by itself (`afterAccept`).
 */

import * as vscode from 'vscode';
import type { SlmClient } from './client';
import { EXTENSION_COMMANDS, NEXT_EDIT_VISIBLE_CONTEXT } from './constants';
import { addedLabel, contains, editHunk, EditHunk, NextEdit } from './nextEditProtocol';

/** The pause after an accepted completion before the next edit is asked for (the text may still change). */
const AFTER_ACCEPT_MS = 500;

interface Shown {
  editor: vscode.TextEditor;
  version: number;
  edit: NextEdit;
  hunk: EditHunk;
}

export class NextEditController implements vscode.Disposable {
  private shown: Shown | undefined;
  private request: vscode.CancellationTokenSource | undefined;
  private afterAcceptTimer: NodeJS.Timeout | undefined;
  private readonly removed = vscode.window.createTextEditorDecorationType({
    textDecoration: 'line-through',
    backgroundColor: new vscode.ThemeColor('diffEditor.removedTextBackground'),
  });
  private readonly added = vscode.window.createTextEditorDecorationType({
    after: {
      color: new vscode.ThemeColor('editorGhostText.foreground'),
      backgroundColor: new vscode.ThemeColor('diffEditor.insertedTextBackground'),
    },
  });

  constructor(
    private readonly client: SlmClient,
    private readonly output: vscode.LogOutputChannel,
  ) {}

  register(): vscode.Disposable[] {
    const c = EXTENSION_COMMANDS;
    return [
      this,
      vscode.commands.registerCommand(c.nextEdit, () => this.requestAtCursor()),
      vscode.commands.registerCommand(c.acceptNextEdit, () => this.accept()),
      vscode.commands.registerCommand(c.dismissNextEdit, () => this.dismiss()),
      vscode.workspace.onDidChangeTextDocument((event) => {
        if (this.shown && event.document === this.shown.editor.document && event.contentChanges.length > 0) {
          this.dismiss();
        }
      }),
      vscode.window.onDidChangeActiveTextEditor(() => this.dismiss()),
    ];
  }

  /**
   * An inline completion was accepted: the next edit is asked for once the text has stayed the
   * same for `AFTER_ACCEPT_MS` (typing on cancels it), silently when there is none.
   */
  afterAccept(): void {
    clearTimeout(this.afterAcceptTimer);
    const editor = vscode.window.activeTextEditor;
    if (!editor) {
      return;
    }
    // The accepted text is in the document once VS Code runs the item's command.
    const version = editor.document.version;
    this.afterAcceptTimer = setTimeout(() => {
      if (vscode.window.activeTextEditor === editor && editor.document.version === version && !this.shown) {
        void this.requestAtCursor(true);
      }
    }, AFTER_ACCEPT_MS);
  }

  /** `slm/nextEdit` at the active editor's cursor; shows the answer, or (unless `quiet`) says there is none. */
  async requestAtCursor(quiet = false): Promise<void> {
    const editor = vscode.window.activeTextEditor;
    if (!editor) {
      return;
    }
    this.request?.cancel();
    const source = new vscode.CancellationTokenSource();
    this.request = source;
    const version = editor.document.version;
    try {
      const edit = await this.client.nextEdit(editor.document, editor.selection.active, source.token);
      if (source.token.isCancellationRequested || editor.document.version !== version) {
        return;
      }
      if ((!edit || !this.show(editor, edit)) && !quiet) {
        vscode.window.setStatusBarMessage('slm-lsp: no next edit', 3000);
      }
    } catch (err) {
      if (!source.token.isCancellationRequested && !quiet) {
        this.output.error(`slm/nextEdit failed: ${err instanceof Error ? err.message : String(err)}`);
        void vscode.window.showErrorMessage(`slm-lsp: next edit failed: ${err instanceof Error ? err.message : String(err)}`);
      }
    } finally {
      if (this.request === source) {
        this.request = undefined;
      }
      source.dispose();
    }
  }

  /** A next edit for `document` from elsewhere (a ranged inline item): shown in its visible editor. */
  offer(document: vscode.TextDocument, edit: NextEdit): void {
    const editor = vscode.window.activeTextEditor;
    if (editor && editor.document === document) {
      this.show(editor, edit);
    }
  }

  /** Shows `edit` in `editor`; false when its range is not in the document or it changes nothing. */
  show(editor: vscode.TextEditor, edit: NextEdit): boolean {
    this.clear();
    const document = editor.document;
    const range = new vscode.Range(edit.range.start.line, edit.range.start.character, edit.range.end.line, edit.range.end.character);
    if (range.start.line >= document.lineCount) {
      return false;
    }
    // A range may end on the line after the last (the end of the document).
    const valid = document.validateRange(range);
    const lineBefore = document.lineAt(valid.start.line).text.slice(0, valid.start.character);
    const lineAfter = document.lineAt(valid.end.line).text.slice(valid.end.character);
    const hunk = editHunk({ ...edit, range: { start: edit.range.start, end: { line: valid.end.line, character: valid.end.character } } }, document.getText(valid), lineBefore, lineAfter);
    if (!hunk) {
      return false;
    }
    const removed = new vscode.Range(hunk.removed.start.line, hunk.removed.start.character, hunk.removed.end.line, hunk.removed.end.character);
    const hover = new vscode.MarkdownString();
    const cause = edit.cause ? ` (${edit.cause})` : '';
    hover.appendText(`slm-lsp: next edit${cause}. Tab: go there, Tab again: apply, Escape: dismiss.`);
    hover.appendCodeblock(
      [...hunk.removedText.split('\n').map((l) => `- ${l}`), ...hunk.added.split('\n').map((l) => `+ ${l}`)].join('\n'),
      'diff',
    );
    editor.setDecorations(this.removed, hunk.removedText ? [{ range: removed, hoverMessage: hover }] : []);
    editor.setDecorations(this.added, [
      {
        range: new vscode.Range(removed.end, removed.end),
        hoverMessage: hunk.removedText ? undefined : hover,
        renderOptions: { after: { contentText: hunk.added ? addedLabel(hunk.added) : '' } },
      },
    ]);
    this.shown = { editor, version: document.version, edit, hunk };
    void vscode.commands.executeCommand('setContext', NEXT_EDIT_VISIBLE_CONTEXT, true);
    return true;
  }

  /** Tab: jump to the edit shown; when the cursor is on it already, apply it. */
  async accept(): Promise<boolean> {
    const shown = this.shown;
    if (!shown) {
      return false;
    }
    const { editor, hunk } = shown;
    if (editor.document.version !== shown.version) {
      this.dismiss();
      return false;
    }
    const start = new vscode.Position(hunk.removed.start.line, hunk.removed.start.character);
    const end = new vscode.Position(hunk.removed.end.line, hunk.removed.end.character);
    const cursor = editor.selection.active;
    if (!contains({ start, end }, { line: cursor.line, character: cursor.character })) {
      editor.selection = new vscode.Selection(start, start);
      editor.revealRange(new vscode.Range(start, end), vscode.TextEditorRevealType.InCenterIfOutsideViewport);
      return true;
    }
    const { range, newText } = shown.edit;
    this.clear();
    const target = editor.document.validateRange(
      new vscode.Range(range.start.line, range.start.character, range.end.line, range.end.character),
    );
    const applied = await editor.edit((builder) => builder.replace(target, newText));
    this.output.info(`slm/nextEdit: ${applied ? 'applied' : 'not applied (the document changed)'}`);
    return applied;
  }

  dismiss(): void {
    this.request?.cancel();
    this.clear();
  }

  private clear(): void {
    if (this.shown) {
      this.shown.editor.setDecorations(this.removed, []);
      this.shown.editor.setDecorations(this.added, []);
      this.shown = undefined;
      void vscode.commands.executeCommand('setContext', NEXT_EDIT_VISIBLE_CONTEXT, false);
    }
  }

  dispose(): void {
    clearTimeout(this.afterAcceptTimer);
    this.dismiss();
    this.removed.dispose();
    this.added.dispose();
  }
}
