/**
 * The status-bar item: draws `StatusModel` (statusText.ts, pure) after every change. Clicking it
 * runs `slm.status` (the server's status and the commands).
 */

import * as vscode from 'vscode';
import { EXTENSION_COMMANDS } from './constants';
import { ServerState, ShownState, StatusModel, StatusNotification } from './statusText';

export type { StatusNotification };

export class StatusBar implements vscode.Disposable {
  private readonly item: vscode.StatusBarItem;
  private readonly model = new StatusModel();

  constructor() {
    this.item = vscode.window.createStatusBarItem('slm-lsp.status', vscode.StatusBarAlignment.Right, 100);
    this.item.name = 'slm-lsp';
    this.item.command = EXTENSION_COMMANDS.status;
    this.render();
    this.item.show();
  }

  /** The state shown now (after `disabled` and `generating` are applied). */
  get state(): ShownState {
    return this.model.state;
  }

  /** The last state the server (or the client, for the process) reported. */
  get server(): ServerState {
    return this.model.server;
  }

  /** From the `slm/status` notification. */
  onNotification(params: StatusNotification): void {
    this.model.onNotification(params);
    this.render();
  }

  setServerState(state: ServerState, detail = ''): void {
    this.model.setServerState(state, detail);
    this.render();
  }

  setEnabled(enabled: boolean): void {
    this.model.setEnabled(enabled);
    this.render();
  }

  /** An inline request went out; call the returned function when it is answered. */
  requestStarted(): (latencyMs?: number) => void {
    const done = this.model.requestStarted();
    this.render();
    return (latencyMs?: number) => {
      done(latencyMs);
      this.render();
    };
  }

  private render(): void {
    const view = this.model.view;
    this.item.text = view.text;
    this.item.tooltip = view.tooltip;
    this.item.backgroundColor =
      view.severity === 'error'
        ? new vscode.ThemeColor('statusBarItem.errorBackground')
        : view.severity === 'warning'
          ? new vscode.ThemeColor('statusBarItem.warningBackground')
          : undefined;
  }

  dispose(): void {
    this.item.dispose();
  }
}
