/**
 * Tells the server where the cursor came to rest (`slm/cursor`), from VS Code's events: another
 * active editor, the window getting the focus back, and selection changes (the cursor moving,
 * typing included). Only for documents the server is sent (files and unsaved buffers in an
 * enabled language) while completions are on; the wait and the "not the line last sent" rule
 * are `CursorRest`'s (cursorRest.ts).
 */

import * as vscode from 'vscode';
import { DOCUMENT_SELECTOR, SlmClient } from './client';
import { CursorRest } from './cursorRest';
import { ClientSettings, languageEnabled } from './settings';

export class CursorWatcher implements vscode.Disposable {
  private readonly rest: CursorRest;

  constructor(
    private readonly client: SlmClient,
    private readonly settings: () => ClientSettings,
  ) {
    this.rest = new CursorRest((place) => client.cursorRested(place));
  }

  register(): vscode.Disposable[] {
    return [
      this,
      vscode.window.onDidChangeActiveTextEditor((editor) => this.moved(editor)),
      vscode.window.onDidChangeTextEditorSelection((event) => {
        // A selection changed in another visible editor (a split showing the same file) is not the cursor.
        if (event.textEditor === vscode.window.activeTextEditor) {
          this.moved(event.textEditor);
        }
      }),
      vscode.window.onDidChangeWindowState((state) => {
        if (state.focused) {
          this.moved(vscode.window.activeTextEditor);
        }
      }),
    ];
  }

  private moved(editor: vscode.TextEditor | undefined): void {
    this.rest.moved(editor && this.serves(editor.document) ? this.client.cursorPlace(editor.document, editor.selection.active) : undefined);
  }

  private serves(document: vscode.TextDocument): boolean {
    const settings = this.settings();
    return settings.enabled && vscode.languages.match(DOCUMENT_SELECTOR, document) > 0 && languageEnabled(settings.enabledLanguages, document.languageId);
  }

  dispose(): void {
    this.rest.dispose();
  }
}
