/**
 * Ghost text: an InlineCompletionItemProvider that waits `slm.debounceMs` after the last
 * keystroke, then forwards to the server's `textDocument/inlineCompletion` with VS Code's
 * cancellation token (a newer keystroke cancels it: `$/cancelRequest`, and the server stops
 * generating). Accepting is VS Code's own: Tab, Ctrl+Right (word), and "Accept Line". A whole
 * accept runs the item's `slm.accepted` command (client.ts): the server computes the next suggestion.
 * A ranged item away from the cursor (a next edit) is shown by `NextEditController` instead.
 */

import * as vscode from 'vscode';
import { SlmClient } from './client';
import { elapsedMs, settle } from './debounce';
import type { NextEditController } from './nextEdit';
import type { NextEdit } from './nextEditProtocol';
import { ClientSettings, languageEnabled } from './settings';
import { StatusBar } from './status';

export class InlineProvider implements vscode.InlineCompletionItemProvider {
  constructor(
    private readonly client: SlmClient,
    private readonly status: StatusBar,
    private readonly settings: () => ClientSettings,
    private readonly log: vscode.LogOutputChannel,
    /** Shows the ranged items VS Code cannot show as ghost text (next edits). */
    private readonly nextEdits?: NextEditController,
  ) {}

  async provideInlineCompletionItems(
    document: vscode.TextDocument,
    position: vscode.Position,
    context: vscode.InlineCompletionContext,
    token: vscode.CancellationToken,
  ): Promise<vscode.InlineCompletionList | vscode.InlineCompletionItem[] | undefined> {
    const settings = this.settings();
    if (!settings.enabled || !this.client.running || !languageEnabled(settings.enabledLanguages, document.languageId)) {
      return undefined;
    }
    // An explicit "Trigger Inline Suggestion" is not debounced.
    const wait = context.triggerKind === vscode.InlineCompletionTriggerKind.Automatic ? settings.debounceMs : 0;
    if (!(await settle(wait, token))) {
      return undefined;
    }
    const start = performance.now();
    const done = this.status.requestStarted();
    try {
      const nextEdits = this.nextEdits;
      const onNextEdit = nextEdits && ((edit: NextEdit) => nextEdits.offer(document, edit));
      const result = await this.client.inlineCompletion(document, position, context, token, onNextEdit);
      done(token.isCancellationRequested ? undefined : elapsedMs(start));
      return result;
    } catch (err) {
      done();
      if (!token.isCancellationRequested && !(err instanceof vscode.CancellationError)) {
        this.log.error(`inline completion failed: ${err instanceof Error ? err.message : String(err)}`);
      }
      return undefined;
    }
  }
}
