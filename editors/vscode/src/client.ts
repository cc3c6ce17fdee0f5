/**
 * The language client: starts `slm-lsp serve` on stdio, sends the settings as
 * initializationOptions and answers workspace/configuration `slm` (client-only keys removed),
 * forwards `slm/status` to the status bar, and offers the two requests the rest of the
 * extension needs: inline completion and executeCommand.
 *
 * A server that dies on its own (a model that trips a llama.cpp assertion, a segfault) is
 * restarted by this class, not by vscode-languageclient: `RestartPolicy` (restartPolicy.ts)
 * says after how long, or that it crashed too often; the user sees a message each time and the
 * status bar says `restarting` / `crashed`.
 *
 * Three built-in features of vscode-languageclient are left out (see `SKIPPED_FEATURES`).
 */

import * as os from 'node:os';
import * as vscode from 'vscode';
import {
  CloseAction,
  CloseHandlerResult,
  DynamicFeature,
  ErrorAction,
  ErrorHandlerResult,
  ExecuteCommandRequest,
  InlineCompletionRequest,
  LanguageClient,
  LanguageClientOptions,
  RequestType,
  ServerOptions,
  StaticFeature,
  State,
  TransportKind,
} from 'vscode-languageclient/node';
import { COMMAND_ACCEPTED, CONFIG_SECTION, CURSOR_NOTIFICATION, EXTENSION_COMMANDS, NEXT_EDIT_REQUEST, STATUS_NOTIFICATION } from './constants';
import { CursorPlace, cursorParams } from './cursorRest';
import { ghostTexts, inlineCompletionParams, InlineCompletionRequestParams } from './inlineProtocol';
import { NextEdit, nextEditFrom, nextEditParams, NextEditParams, rangedEdits } from './nextEditProtocol';
import { PythonInterpreter } from './python';
import { CrashRestarter, DEFAULT_RESTART_POLICY, formatDelay } from './restartPolicy';
import {
  cli,
  clientSettings,
  commandLine,
  configurationItem,
  initializationOptions,
  PathContext,
  resolveServerCommand,
  ServerCommand,
} from './settings';
import { StatusBar, StatusNotification } from './status';

/**
 * Documents the server sees: files and unsaved buffers (not output channels, git views...).
 * `satisfies`, not a type annotation: the literal's type fits both VS Code's and the LSP client's selector types.
 */
export const DOCUMENT_SELECTOR = [{ scheme: 'file' }, { scheme: 'untitled' }] satisfies vscode.DocumentFilter[];

/**
 * Built-in features we do not register:
 * - textDocument/completion: the same completion as the ghost text, in the suggest widget.
 *   VS Code would ask for both on the same keystroke, and the server drops the older request
 *   for a document when a newer one comes, so the two would cancel each other.
 * - workspace/executeCommand: it registers VS Code commands named like the server's
 *   (`slm.loadAdapter`, `slm.status`), which are this extension's own commands (with a file
 *   picker, a status view); they call the server with `executeCommand()` below.
 * - textDocument/inlineCompletion is only in `registerProposedFeatures()`, which we never call:
 *   `InlineProvider` (inline.ts) does it, with the debounce and the status bar.
 */
const SKIPPED_FEATURES = new Set<string>(['textDocument/completion', 'workspace/executeCommand']);

/** `textDocument/inlineCompletion` with LSP 3.18's params (`InlineCompletionRequest.type` has the proposal's trigger kinds). */
const INLINE_COMPLETION = new RequestType<InlineCompletionRequestParams, unknown, void>(InlineCompletionRequest.method);

/** `slm/nextEdit` (nextEditProtocol.ts). */
const NEXT_EDIT = new RequestType<NextEditParams, unknown, void>(NEXT_EDIT_REQUEST);

class SlmLanguageClient extends LanguageClient {
  // Called from the base constructor for every built-in feature.
  public override registerFeature(feature: StaticFeature | DynamicFeature<unknown>): void {
    const method = (feature as Partial<DynamicFeature<unknown>>).registrationType?.method;
    if (method !== undefined && SKIPPED_FEATURES.has(method)) {
      return;
    }
    super.registerFeature(feature);
  }
}

export function pathContext(): PathContext {
  return { home: os.homedir(), workspaceFolder: vscode.workspace.workspaceFolders?.[0]?.uri.fsPath };
}

/** The plain `slm` settings object, as the server would get it from VS Code. */
export function readSection(): unknown {
  return vscode.workspace.getConfiguration().get(CONFIG_SECTION);
}

export class SlmClient implements vscode.Disposable {
  private client: LanguageClient | undefined;
  private starting: Promise<void> | undefined;
  private serverCommand: ServerCommand | undefined;
  /** Restarts the server after a crash (`serverClosed`), with a delay, or gives up. */
  private readonly restarter = new CrashRestarter({
    restart: () => void this.start(),
    restarting: (message, _delayMs, crashes) => {
      this.output.warn(`${message} (crash ${crashes} in the last ${formatDelay(DEFAULT_RESTART_POLICY.windowMs)})`);
      this.status.setServerState('restarting', message);
      void vscode.window.showWarningMessage(message, 'Show Log').then((choice) => {
        if (choice === 'Show Log') {
          this.output.show();
        }
      });
    },
    gaveUp: (message) => {
      this.output.error(message);
      this.status.setServerState('crashed', message);
      void vscode.window.showErrorMessage(message, 'Show Log', 'Restart Server').then((choice) => {
        if (choice === 'Show Log') {
          this.output.show();
        } else if (choice === 'Restart Server') {
          void vscode.commands.executeCommand(EXTENSION_COMMANDS.restartServer);
        }
      });
    },
  });

  constructor(
    private readonly output: vscode.LogOutputChannel,
    private readonly status: StatusBar,
    private readonly python: PythonInterpreter,
  ) {}

  get running(): boolean {
    return this.client?.state === State.Running;
  }

  /** The command line last used (or that would be used) to run slm-lsp. */
  async command(): Promise<ServerCommand> {
    const settings = clientSettings(readSection());
    const interpreter = settings.serverPath ? undefined : await this.python.active(vscode.workspace.workspaceFolders?.[0]?.uri);
    return resolveServerCommand({
      serverPath: settings.serverPath,
      python: interpreter?.path,
      pythonHasServer: interpreter?.hasServer,
      paths: pathContext(),
    });
  }

  /** Start the server (no-op when it runs or is starting). */
  start(): Promise<void> {
    if (this.client?.state === State.Running) {
      return Promise.resolve();
    }
    this.starting ??= this.doStart().finally(() => {
      this.starting = undefined;
    });
    return this.starting;
  }

  private async doStart(): Promise<void> {
    this.status.setServerState('starting');
    const base = await this.command();
    this.serverCommand = base;
    const serve = cli(base, 'serve');
    this.output.info(`starting ${commandLine(serve.command, serve.args)} (from ${base.source})`);
    const cwd = vscode.workspace.workspaceFolders?.[0]?.uri.fsPath;
    const serverOptions: ServerOptions = {
      command: serve.command,
      args: serve.args,
      transport: TransportKind.stdio,
      options: cwd ? { cwd } : {},
    };
    const clientOptions: LanguageClientOptions = {
      documentSelector: DOCUMENT_SELECTOR,
      errorHandler: {
        error: (_error, _message, count) => connectionError(count),
        closed: () => this.serverClosed(client),
      },
      outputChannel: this.output,
      initializationOptions: () => initializationOptions(readSection(), pathContext()),
      synchronize: { configurationSection: CONFIG_SECTION },
      middleware: {
        workspace: {
          // The default answer is the whole `slm` section; the server rejects our own keys.
          configuration: async (params, token, next) => {
            const result = await next(params, token);
            if (!Array.isArray(result)) {
              return result;
            }
            return result.map((value, i) => configurationItem(params.items[i]?.section, value, pathContext()));
          },
        },
      },
    };
    const client = new SlmLanguageClient('slm-lsp', 'slm-lsp', serverOptions, clientOptions);
    client.onNotification(STATUS_NOTIFICATION, (params: StatusNotification) => {
      this.output.debug(`${STATUS_NOTIFICATION} ${JSON.stringify(params)}`);
      this.status.onNotification(params);
    });
    client.onDidChangeState((event) => {
      // After a crash the status says restarting or crashed (serverClosed), not just stopped.
      if (event.newState === State.Stopped && this.client === client && !['restarting', 'crashed'].includes(this.status.server)) {
        this.status.setServerState('stopped');
      }
    });
    this.client = client;
    this.restarter.started();
    try {
      await client.start();
      // The server reports `loading` when the load starts; until then it waits for settings.
      if (this.status.server === 'starting') {
        this.status.setServerState('loading');
      }
    } catch (err) {
      const message = startError(base, err);
      this.output.error(message);
      if (this.client === client && ['restarting', 'crashed'].includes(this.status.server)) {
        return; // the process died while starting: serverClosed has told the user
      }
      this.status.setServerState('error', message);
      void vscode.window.showErrorMessage(message, 'Open Settings', 'Show Log').then((choice) => {
        if (choice === 'Open Settings') {
          void vscode.commands.executeCommand('workbench.action.openSettings', 'slm.serverPath');
        } else if (choice === 'Show Log') {
          this.output.show();
        }
      });
    }
  }

  /**
   * The connection to the server closed while the client was running or starting (a stop that
   * `stop()` asked for never gets here). The library is told not to restart it: this class
   * does, after the policy's delay, with a new client and a fresh look at the server command.
   */
  private serverClosed(client: LanguageClient): CloseHandlerResult {
    if (this.client !== client) {
      return { action: CloseAction.DoNotRestart, handled: true };
    }
    const decision = this.restarter.crashed();
    // handled: the restarter's hooks have told the user; the library only logs it.
    return { action: CloseAction.DoNotRestart, message: `the server stopped; ${decision.restart ? 'restarting it' : 'not restarted'}`, handled: true };
  }

  async stop(): Promise<void> {
    this.restarter.cancel();
    await this.starting?.catch(() => undefined);
    const client = this.client;
    this.client = undefined;
    if (client?.needsStop()) {
      try {
        await client.stop(5000);
      } catch (err) {
        this.output.warn(`stopping the server: ${String(err)}`);
      }
    }
    this.status.setServerState('stopped');
  }

  /** A restart the user asked for: the crash count starts again. */
  async restart(): Promise<void> {
    this.restarter.reset();
    await this.stop();
    await this.start();
  }

  /**
   * `textDocument/inlineCompletion`, cancelled with `token` (VS Code cancels on the next keystroke).
   * Ranged items VS Code cannot show as ghost text (another line, several lines) go to `onNextEdit`.
   */
  async inlineCompletion(
    document: vscode.TextDocument,
    position: vscode.Position,
    context: vscode.InlineCompletionContext,
    token: vscode.CancellationToken,
    onNextEdit?: (edit: NextEdit) => void,
  ): Promise<vscode.InlineCompletionItem[] | undefined> {
    const client = this.client;
    if (!client || client.state !== State.Running) {
      return undefined;
    }
    const c2p = client.code2ProtocolConverter;
    const selected = context.selectedCompletionInfo;
    const params = inlineCompletionParams(
      c2p.asUri(document.uri),
      c2p.asPosition(position),
      context.triggerKind,
      selected && { range: c2p.asRange(selected.range), text: selected.text },
    );
    const result = await client.sendRequest(INLINE_COMPLETION, params, token);
    if (token.isCancellationRequested) {
      return undefined;
    }
    const edit = onNextEdit && rangedEdits(result, params.position)[0];
    if (edit) {
      onNextEdit(edit);
    }
    return ghostTexts(result, params.position).map((ghost) => {
      const text = ghost.snippet ? new vscode.SnippetString(ghost.text) : ghost.text;
      const range = ghost.range && client.protocol2CodeConverter.asRange(ghost.range);
      const item = new vscode.InlineCompletionItem(text, range);
      if (ghost.filterText !== undefined) {
        item.filterText = ghost.filterText;
      }
      // VS Code runs it after inserting the item; `slm.accepted` (commands.ts) tells the server.
      if (ghost.command?.command === COMMAND_ACCEPTED) {
        item.command = { title: ghost.command.title, command: COMMAND_ACCEPTED, arguments: ghost.command.arguments };
      }
      return item;
    });
  }

  /**
   * A suggestion was accepted: `slm.accepted` on the server with the item's arguments, which
   * computes the next suggestion at once. Never waits for a server that is starting, never throws.
   */
  async accepted(args: unknown[]): Promise<void> {
    const client = this.client;
    if (!client || client.state !== State.Running) {
      return;
    }
    try {
      await client.sendRequest(ExecuteCommandRequest.type, { command: COMMAND_ACCEPTED, arguments: args });
    } catch (err) {
      this.output.debug(`${COMMAND_ACCEPTED}: ${err instanceof Error ? err.message : String(err)}`);
    }
  }

  /** `slm/nextEdit` at `position`: the edit the server suggests, or undefined (none, or not running). */
  async nextEdit(document: vscode.TextDocument, position: vscode.Position, token: vscode.CancellationToken): Promise<NextEdit | undefined> {
    await this.starting;
    const client = this.client;
    if (!client || client.state !== State.Running) {
      throw new Error('the slm-lsp server is not running (see "slm-lsp: Show Log")');
    }
    const c2p = client.code2ProtocolConverter;
    const result = await client.sendRequest(NEXT_EDIT, nextEditParams(c2p.asUri(document.uri), c2p.asPosition(position)), token);
    return token.isCancellationRequested ? undefined : nextEditFrom(result);
  }

  /** Where the cursor rests in `document`, as `slm/cursor` says it; undefined when the server is not running. */
  cursorPlace(document: vscode.TextDocument, position: vscode.Position): CursorPlace | undefined {
    const client = this.client;
    if (!client || client.state !== State.Running) {
      return undefined;
    }
    const c2p = client.code2ProtocolConverter;
    return { server: client, uri: c2p.asUri(document.uri), position: c2p.asPosition(position) };
  }

  /** `slm/cursor` at `place`; false when its server is no longer the one running. Never throws. */
  cursorRested(place: CursorPlace): boolean {
    const client = this.client;
    if (!client || client !== place.server || client.state !== State.Running) {
      return false;
    }
    client.sendNotification(CURSOR_NOTIFICATION, cursorParams(place)).catch((err: unknown) => {
      this.output.debug(`${CURSOR_NOTIFICATION}: ${err instanceof Error ? err.message : String(err)}`);
    });
    return true;
  }

  /** `workspace/executeCommand` on the server. */
  async executeCommand(command: string, args: unknown[] = []): Promise<unknown> {
    await this.starting;
    const client = this.client;
    if (!client || client.state !== State.Running) {
      throw new Error('the slm-lsp server is not running (see "slm-lsp: Show Log")');
    }
    return client.sendRequest(ExecuteCommandRequest.type, { command, arguments: args });
  }

  /** The base command of the server last started, for `pull` and `finetune`. */
  async cliCommand(...args: string[]): Promise<{ command: string; args: string[] }> {
    return cli(this.serverCommand ?? (await this.command()), ...args);
  }

  dispose(): void {
    void this.stop();
  }
}

function startError(base: ServerCommand, err: unknown): string {
  const text = err instanceof Error ? err.message : String(err);
  const hint =
    base.source === 'serverPath'
      ? 'check slm.serverPath'
      : 'install slm-lsp (pip install slm-lsp, or `make install` in its repository) and put `slm-lsp` on PATH, select an interpreter that has it, or set slm.serverPath';
  return `slm-lsp: could not start ${commandLine(base.command, base.args)}: ${text}. ${hint}.`;
}

/**
 * A read or write on the connection failed (a message the server could not take): go on for
 * the first three, then stop the client, as vscode-languageclient's default does. A server that
 * died also closes the connection, which `serverClosed` handles.
 */
function connectionError(count: number | undefined): ErrorHandlerResult {
  return { action: count !== undefined && count <= 3 ? ErrorAction.Continue : ErrorAction.Shutdown };
}
