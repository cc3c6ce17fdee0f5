/**
 * Interpreter discovery through the Python extension (`ms-python.python`), when it is installed.
 * The interpreter is only used when it can import slm_lsp (the active interpreter is often the
 * project's own venv, without slm-lsp in it); otherwise `slm-lsp` on PATH is used. The lookup
 * itself is in the pure `interpreter.ts`; this class activates the extension and follows changes.
 */

import * as vscode from 'vscode';
import { activeInterpreter, EnvironmentsApi, Interpreter } from './interpreter';

const PYTHON_EXTENSION = 'ms-python.python';

/** The part of the Python extension's API we use (`@vscode/python-extension`, not bundled). */
interface PythonExtensionApi {
  readonly environments?: EnvironmentsApi<vscode.Uri> & {
    readonly onDidChangeActiveEnvironmentPath: vscode.Event<unknown>;
  };
}

export class PythonInterpreter implements vscode.Disposable {
  private readonly disposables: vscode.Disposable[] = [];
  private readonly changed = new vscode.EventEmitter<void>();
  private subscribed = false;
  /** Fires when the user picks another interpreter in the Python extension. */
  readonly onDidChange = this.changed.event;

  constructor(private readonly log: vscode.LogOutputChannel) {
    this.disposables.push(this.changed);
  }

  /** The active interpreter for `resource`, or undefined without the Python extension. */
  async active(resource?: vscode.Uri): Promise<Interpreter | undefined> {
    const api = await this.api();
    const environments = api?.environments;
    if (!environments) {
      return undefined;
    }
    try {
      const interpreter = await activeInterpreter(environments, resource);
      if (interpreter) {
        this.log.info(`Python extension interpreter: ${interpreter.path} (${interpreter.hasServer ? 'has' : 'has no'} slm_lsp)`);
      }
      return interpreter;
    } catch (err) {
      this.log.warn(`could not ask the Python extension for the interpreter: ${String(err)}`);
      return undefined;
    }
  }

  private async api(): Promise<PythonExtensionApi | undefined> {
    const extension = vscode.extensions.getExtension<PythonExtensionApi>(PYTHON_EXTENSION);
    if (!extension) {
      return undefined;
    }
    try {
      const api = extension.isActive ? extension.exports : await extension.activate();
      if (api?.environments && !this.subscribed) {
        this.subscribed = true;
        this.disposables.push(api.environments.onDidChangeActiveEnvironmentPath(() => this.changed.fire()));
      }
      return api;
    } catch (err) {
      this.log.warn(`could not activate ${PYTHON_EXTENSION}: ${String(err)}`);
      return undefined;
    }
  }

  dispose(): void {
    this.disposables.forEach((d) => d.dispose());
  }
}
