/**
 * Entry point: wires the small classes together. Nothing else lives here.
 *   python.ts    Python extension API        client.ts         the language client
 *   status.ts    status-bar item             inline.ts         ghost text provider
 *   commands.ts  the commands                terminal.ts       pull / finetune in a terminal
 *   edit.ts      Rewrite Selection (instruction box → slm.edit)
 *   nextEdit.ts  Next Edit (slm/nextEdit → a diff in the editor; Tab jumps, Tab applies)
 *   cursor.ts    where the cursor rests (slm/cursor: the server warms there)
 * Pure (no `vscode` import; the Node tests load them):
 *   settings.ts  settings → server, which command runs it
 *   interpreter.ts  the active interpreter, and whether it has slm-lsp
 *   inlineProtocol.ts  inline requests and answers    statusText.ts  status-bar state and text
 *   nextEditProtocol.ts  slm/nextEdit requests and answers, what an edit changes
 *   debounce.ts  the debounce                constants.ts      names shared with the server
 *   cursorRest.ts  when a cursor rest is sent (the wait, not the line last sent)
 *   restartPolicy.ts  when to restart a server that crashed, and what to tell the user
 */

import * as vscode from 'vscode';
import { DOCUMENT_SELECTOR, readSection, SlmClient } from './client';
import { Commands } from './commands';
import { CONFIG_SECTION } from './constants';
import { CursorWatcher } from './cursor';
import { EditCommands } from './edit';
import { InlineProvider } from './inline';
import { NextEditController } from './nextEdit';
import { PythonInterpreter } from './python';
import { clientSettings } from './settings';
import { StatusBar } from './status';

let client: SlmClient | undefined;

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  const output = vscode.window.createOutputChannel('slm-lsp', { log: true });
  const status = new StatusBar();
  const python = new PythonInterpreter(output);
  client = new SlmClient(output, status, python);
  const settings = () => clientSettings(readSection());
  const nextEdits = new NextEditController(client, output);
  const inline = new InlineProvider(client, status, settings, output, nextEdits);
  const slm = client;

  context.subscriptions.push(
    output,
    status,
    python,
    vscode.languages.registerInlineCompletionItemProvider(DOCUMENT_SELECTOR, inline),
    ...new Commands(slm, status, output, () => nextEdits.afterAccept()).register(),
    ...new EditCommands(slm, output).register(),
    ...nextEdits.register(),
    ...new CursorWatcher(slm, settings).register(),
    vscode.workspace.onDidChangeConfiguration(async (event) => {
      if (!event.affectsConfiguration(CONFIG_SECTION)) {
        return;
      }
      const { enabled } = settings();
      status.setEnabled(enabled);
      if (event.affectsConfiguration(`${CONFIG_SECTION}.serverPath`)) {
        await slm.restart();
      } else if (enabled && !slm.running) {
        await slm.start();
      }
      // Everything else reaches the server as workspace/didChangeConfiguration.
    }),
    python.onDidChange(async () => {
      if (!settings().serverPath && slm.running) {
        output.info('the Python interpreter changed: restarting the server');
        await slm.restart();
      }
    }),
  );

  const { enabled } = settings();
  status.setEnabled(enabled);
  // Disabled at startup: no server and no model in memory until it is turned on.
  if (enabled) {
    void slm.start();
  }
}

export async function deactivate(): Promise<void> {
  await client?.stop();
  client = undefined;
}
