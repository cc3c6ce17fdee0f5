/**
 * Which Python interpreter the Python extension (`ms-python.python`) has selected, and whether
 * it has slm-lsp installed: `environments.getActiveEnvironmentPath()` → `resolveEnvironment()`
 * → the executable, then `python -c "find_spec('slm_lsp')"`.
 *
 * No `vscode` import: the API is described structurally (the subset of
 * `@vscode/python-extension` used here), so the unit tests pass in a fake one.
 */

import { execFile } from 'node:child_process';

export interface EnvironmentPath {
  readonly id: string;
  readonly path: string;
}

export interface ResolvedEnvironment {
  readonly executable: { readonly uri?: { readonly fsPath: string } };
}

/** `PythonExtension.environments`, the part of it we call. */
export interface EnvironmentsApi<Resource = unknown> {
  getActiveEnvironmentPath(resource?: Resource): EnvironmentPath | undefined;
  resolveEnvironment(environment: EnvironmentPath | string): Promise<ResolvedEnvironment | undefined>;
}

export interface Interpreter {
  /** Path of the Python executable. */
  path: string;
  /** Whether it can import slm_lsp. */
  hasServer: boolean;
}

/**
 * The active interpreter for `resource`, or undefined when none is selected. The resolved
 * executable is preferred: the environment path may be a folder (a venv, a conda prefix).
 */
export async function activeInterpreter<Resource>(
  environments: EnvironmentsApi<Resource>,
  resource: Resource | undefined,
  canImport: (python: string) => Promise<boolean> = canImportServer,
): Promise<Interpreter | undefined> {
  const envPath = environments.getActiveEnvironmentPath(resource);
  if (!envPath) {
    return undefined;
  }
  const resolved = await environments.resolveEnvironment(envPath);
  const path = resolved?.executable.uri?.fsPath || envPath.path;
  if (!path) {
    return undefined;
  }
  return { path, hasServer: await canImport(path) };
}

/** Python code that exits 0 when slm_lsp is importable (without importing it: no model load). */
export const FIND_SERVER_CODE = 'import importlib.util, sys; sys.exit(0 if importlib.util.find_spec("slm_lsp") else 1)';

/** `python -c FIND_SERVER_CODE`: true when slm_lsp is importable (false on any failure, 10 s at most). */
export function canImportServer(python: string, timeoutMs = 10_000): Promise<boolean> {
  return new Promise((resolve) => {
    execFile(python, ['-c', FIND_SERVER_CODE], { timeout: timeoutMs, windowsHide: true }, (error) => resolve(!error));
  });
}
