/**
 * The extension's commands, and `slm.accepted` (run by VS Code when an inline item is accepted;
 * not in the palette), which tells the server. Server commands (`slm.loadAdapter`, `slm.status`) go through
 * `SlmClient.executeCommand`; `pull` and `finetune` run the slm-lsp command line in a terminal.
 */

import * as vscode from 'vscode';
import { SlmClient } from './client';
import { CATALOG_MODELS, COMMAND_ACCEPTED, COMMAND_LOAD_ADAPTER, COMMAND_STATUS, CONFIG_SECTION, EXTENSION_COMMANDS } from './constants';
import { clientSettings } from './settings';
import { StatusBar } from './status';
import { formatLatency } from './statusText';
import { runInTerminal } from './terminal';

export class Commands {
  constructor(
    private readonly client: SlmClient,
    private readonly status: StatusBar,
    private readonly output: vscode.LogOutputChannel,
    /** Run after an inline item was accepted (the next edit is asked for). */
    private readonly onAccepted: () => void = () => undefined,
  ) {}

  register(): vscode.Disposable[] {
    const c = EXTENSION_COMMANDS;
    return [
      vscode.commands.registerCommand(c.toggle, () => this.toggle()),
      vscode.commands.registerCommand(c.restartServer, () => this.client.restart()),
      vscode.commands.registerCommand(c.pullModel, (name?: string) => this.pullModel(name)),
      vscode.commands.registerCommand(c.loadAdapter, (path?: string) => this.loadAdapter(path)),
      vscode.commands.registerCommand(c.finetune, (folder?: string) => this.finetune(folder)),
      vscode.commands.registerCommand(c.showLog, () => this.output.show()),
      vscode.commands.registerCommand(c.status, () => this.showStatus()),
      // Not in the palette (package.json does not contribute it): VS Code runs it when an inline item is accepted.
      vscode.commands.registerCommand(COMMAND_ACCEPTED, (...args: unknown[]) => {
        this.onAccepted();
        return this.client.accepted(args);
      }),
    ];
  }

  /** Flip `slm.enabled` where it is set (workspace or user settings). */
  async toggle(): Promise<void> {
    const config = vscode.workspace.getConfiguration(CONFIG_SECTION);
    const inspected = config.inspect<boolean>('enabled');
    const target =
      inspected?.workspaceFolderValue !== undefined
        ? vscode.ConfigurationTarget.WorkspaceFolder
        : inspected?.workspaceValue !== undefined
          ? vscode.ConfigurationTarget.Workspace
          : vscode.ConfigurationTarget.Global;
    const enabled = clientSettings(vscode.workspace.getConfiguration().get(CONFIG_SECTION)).enabled;
    await config.update('enabled', !enabled, target);
    vscode.window.setStatusBarMessage(`slm-lsp: inline completions ${enabled ? 'off' : 'on'}`, 3000);
  }

  /** `slm-lsp pull NAME` in a terminal; then restart the server or switch to the model. */
  async pullModel(name?: string): Promise<void> {
    if (!name) {
      const picked = await vscode.window.showQuickPick(
        [
          ...CATALOG_MODELS.map((label, i) => ({ label, description: i === 0 ? 'default, 2 GB' : '' })),
          { label: 'hf:OWNER/REPO/FILE.gguf…', description: 'any GGUF on the Hugging Face hub' },
        ],
        { title: 'slm-lsp: download a model into the user cache' },
      );
      if (!picked) {
        return;
      }
      name = picked.label.startsWith('hf:')
        ? await vscode.window.showInputBox({ prompt: 'Model to download', value: 'hf:', placeHolder: 'hf:OWNER/REPO/FILE.gguf' })
        : picked.label;
      if (!name) {
        return;
      }
    }
    const { command, args } = await this.client.cliCommand('pull', name);
    const code = await runInTerminal(`slm-lsp pull ${name}`, command, args);
    if (code !== 0) {
      return;
    }
    const current = vscode.workspace.getConfiguration(CONFIG_SECTION).get<string>('model.path', '');
    const alreadyUsed = current === name || (!current && name === CATALOG_MODELS[0]);
    if (!alreadyUsed) {
      const use = await vscode.window.showInformationMessage(`slm-lsp: ${name} is downloaded. Use it now?`, 'Use it');
      if (use) {
        // The server loads the new model when the configuration changes.
        await vscode.workspace.getConfiguration(CONFIG_SECTION).update('model.path', name, vscode.ConfigurationTarget.Global);
      }
      return;
    }
    if (['no-model', 'error', 'stopped', 'crashed'].includes(this.status.server)) {
      await this.client.restart();
    }
  }

  /** Pick a GGUF LoRA adapter and apply it (`slm.loadAdapter [path]`); `""` removes it. */
  async loadAdapter(path?: string): Promise<void> {
    if (path === undefined) {
      const picked = await vscode.window.showOpenDialog({
        title: 'slm-lsp: load a LoRA adapter',
        openLabel: 'Load adapter',
        canSelectMany: false,
        filters: { 'GGUF LoRA adapter': ['gguf'], 'All files': ['*'] },
        defaultUri: vscode.workspace.workspaceFolders?.[0]?.uri,
      });
      if (!picked?.[0]) {
        return;
      }
      path = picked[0].fsPath;
    }
    try {
      await this.client.executeCommand(COMMAND_LOAD_ADAPTER, [path]);
      void vscode.window.showInformationMessage(path ? `slm-lsp: adapter ${path} loaded` : 'slm-lsp: adapter removed');
    } catch (err) {
      // The server has shown its own message (window/showMessage) when the file was the problem.
      this.output.error(`${COMMAND_LOAD_ADAPTER}: ${err instanceof Error ? err.message : String(err)}`);
      void vscode.window.showErrorMessage(`slm-lsp: could not load the adapter: ${err instanceof Error ? err.message : String(err)}`);
    }
  }

  /** `slm-lsp finetune REPO` in a terminal, then offer to load the adapter it wrote. */
  async finetune(folder?: string): Promise<void> {
    if (!folder) {
      const picked = await vscode.window.showOpenDialog({
        title: 'slm-lsp: fine-tune a LoRA adapter on a repository',
        openLabel: 'Fine-tune on this repository',
        canSelectFiles: false,
        canSelectFolders: true,
        canSelectMany: false,
        defaultUri: vscode.workspace.workspaceFolders?.[0]?.uri,
      });
      if (!picked?.[0]) {
        return;
      }
      folder = picked[0].fsPath;
    }
    const { command, args } = await this.client.cliCommand('finetune', folder);
    const code = await runInTerminal('slm-lsp finetune', command, args, folder);
    if (code === 0) {
      const load = await vscode.window.showInformationMessage('slm-lsp: fine-tuning finished.', 'Load the adapter…');
      if (load) {
        await this.loadAdapter();
      }
    }
  }

  /** The server's `slm.status`, with the actions, in a quick pick (the status-bar item's click). */
  async showStatus(): Promise<void> {
    const lines: vscode.QuickPickItem[] = [];
    try {
      const s = (await this.client.executeCommand(COMMAND_STATUS, [])) as Record<string, unknown>;
      lines.push({ label: `$(info) ${String(s.state)}`, description: String(s.detail ?? '') });
      if (s.model) {
        lines.push({ label: `$(file-binary) ${String(s.model)}`, description: `template ${String(s.template)}, GPU layers ${String(s.nGpuLayers)}` });
      }
      if (s.adapter) {
        lines.push({ label: `$(layers) adapter ${String(s.adapter)}` });
      }
      const latency = formatLatency(s.lastLatencyMs as number | null);
      if (latency) {
        lines.push({ label: `$(watch) last completion ${latency}`, description: `${String(s.cacheHits ?? 0)} type-through cache hits` });
      }
    } catch (err) {
      lines.push({ label: `$(error) ${err instanceof Error ? err.message : String(err)}` });
    }
    const enabled = clientSettings(vscode.workspace.getConfiguration().get(CONFIG_SECTION)).enabled;
    const actions: Array<vscode.QuickPickItem & { command: string }> = [
      { label: enabled ? '$(circle-slash) Turn inline completions off' : '$(check) Turn inline completions on', command: EXTENSION_COMMANDS.toggle },
      { label: '$(debug-restart) Restart the server', command: EXTENSION_COMMANDS.restartServer },
      { label: '$(cloud-download) Download a model…', command: EXTENSION_COMMANDS.pullModel },
      { label: '$(layers) Load a LoRA adapter…', command: EXTENSION_COMMANDS.loadAdapter },
      { label: '$(beaker) Fine-tune on a repository…', command: EXTENSION_COMMANDS.finetune },
      { label: '$(output) Show the log', command: EXTENSION_COMMANDS.showLog },
    ];
    const picked = await vscode.window.showQuickPick(
      [...lines, { label: '', kind: vscode.QuickPickItemKind.Separator }, ...actions],
      { title: `slm-lsp: ${this.status.state}` },
    );
    if (picked && 'command' in picked) {
      await vscode.commands.executeCommand((picked as { command: string }).command);
    }
  }
}
