/**
 * Settings → what the server gets, and which command starts the server.
 *
 * Pure functions (no `vscode` import): the extension passes in the plain `slm` settings object
 * (`workspace.getConfiguration().get('slm')`), the unit tests pass in literals.
 */

import { CONFIG_SECTION } from './constants';

/** Settings only the extension reads; the server would reject them as unknown. */
export const CLIENT_ONLY_KEYS = ['enabled', 'debounceMs', 'serverPath'] as const;

export interface ClientSettings {
  /** Show inline completions at all (`slm.toggle` flips it). */
  enabled: boolean;
  /** Pause after the last keystroke before asking the server. */
  debounceMs: number;
  /** Command that starts the server; empty: find it. */
  serverPath: string;
  /** `completion.enabledLanguages`, read here too so that disabled languages cost no request. */
  enabledLanguages: string[];
}

export const CLIENT_DEFAULTS: ClientSettings = {
  enabled: true,
  debounceMs: 150,
  serverPath: '',
  enabledLanguages: ['*'],
};

/** Largest accepted `slm.debounceMs`; anything longer feels broken rather than calm. */
export const MAX_DEBOUNCE_MS = 5000;

export type SettingsObject = Record<string, unknown>;

function isObject(value: unknown): value is SettingsObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** The extension's own settings from the `slm` section, invalid values replaced by defaults. */
export function clientSettings(section: unknown): ClientSettings {
  const s = isObject(section) ? section : {};
  const completion = isObject(s.completion) ? s.completion : {};
  const debounce = typeof s.debounceMs === 'number' && Number.isFinite(s.debounceMs)
    ? Math.min(Math.max(Math.round(s.debounceMs), 0), MAX_DEBOUNCE_MS)
    : CLIENT_DEFAULTS.debounceMs;
  return {
    enabled: typeof s.enabled === 'boolean' ? s.enabled : CLIENT_DEFAULTS.enabled,
    debounceMs: debounce,
    serverPath: typeof s.serverPath === 'string' ? s.serverPath.trim() : CLIENT_DEFAULTS.serverPath,
    enabledLanguages: languageList(completion.enabledLanguages),
  };
}

function languageList(value: unknown): string[] {
  if (Array.isArray(value) && value.every((v) => typeof v === 'string')) {
    return value.map((v) => v.trim()).filter((v) => v.length > 0);
  }
  if (typeof value === 'string') {
    return value.split(',').map((v) => v.trim()).filter((v) => v.length > 0);
  }
  return [...CLIENT_DEFAULTS.enabledLanguages];
}

/** Same rule as the server's `CompletionEngine.language_enabled`. */
export function languageEnabled(enabledLanguages: readonly string[], languageId: string): boolean {
  return enabledLanguages.includes('*') || enabledLanguages.includes(languageId);
}

export interface PathContext {
  /** The user's home directory, for `~`. */
  home?: string;
  /** The first workspace folder, for `${workspaceFolder}`. */
  workspaceFolder?: string;
}

/** Expand a leading `~` and `${workspaceFolder}` / `${userHome}` in a path setting. */
export function expandPath(value: string, ctx: PathContext = {}): string {
  let out = value.trim();
  if (ctx.workspaceFolder !== undefined) {
    out = out.split('${workspaceFolder}').join(ctx.workspaceFolder);
  }
  if (ctx.home !== undefined) {
    out = out.split('${userHome}').join(ctx.home);
    if (out === '~' || out.startsWith('~/') || out.startsWith('~\\')) {
      out = ctx.home + out.slice(1);
    }
  }
  return out;
}

/** Path-valued server settings that get `expandPath` (model names like `hf:...` pass through). */
const PATH_SETTINGS: ReadonlyArray<[string, string]> = [['model', 'path'], ['model', 'adapter']];

function plainCopy(value: unknown): unknown {
  if (Array.isArray(value)) {
    return value.map(plainCopy);
  }
  if (isObject(value)) {
    const out: SettingsObject = {};
    for (const [key, inner] of Object.entries(value)) {
      if (inner !== undefined && typeof inner !== 'function') {
        out[key] = plainCopy(inner);
      }
    }
    return out;
  }
  return value;
}

/**
 * The server's part of the `slm` section: everything but the client-only keys, as a plain
 * JSON object (nested, camelCase: the server accepts both). Used for `initializationOptions`
 * and to answer `workspace/configuration` for section `slm`.
 */
export function serverSettings(section: unknown, ctx: PathContext = {}): SettingsObject {
  const copy = plainCopy(isObject(section) ? section : {}) as SettingsObject;
  for (const key of CLIENT_ONLY_KEYS) {
    delete copy[key];
  }
  for (const [table, key] of PATH_SETTINGS) {
    const inner = copy[table];
    if (isObject(inner) && typeof inner[key] === 'string') {
      inner[key] = expandPath(inner[key] as string, ctx);
    }
  }
  return copy;
}

/** `initializationOptions` for `initialize`: the server settings (the server also accepts them wrapped in `{slm: ...}`). */
export function initializationOptions(section: unknown, ctx: PathContext = {}): SettingsObject {
  return serverSettings(section, ctx);
}

/** Answer one `workspace/configuration` item: section `slm` filtered, anything else untouched. */
export function configurationItem(section: string | undefined, value: unknown, ctx: PathContext = {}): unknown {
  return section === CONFIG_SECTION ? serverSettings(value, ctx) : value;
}

/** How to run the slm-lsp command line (the `serve`, `pull`, `finetune` subcommands go after `args`). */
export interface ServerCommand {
  command: string;
  args: string[];
  /** Where it came from, for the log and error messages. */
  source: 'serverPath' | 'python' | 'path';
}

export interface ResolveInput {
  /** `slm.serverPath` (a `slm-lsp` executable or a Python interpreter). */
  serverPath?: string;
  /** The interpreter the Python extension reports, if any. */
  python?: string;
  /** Whether `python` can import slm_lsp (false: skip it); undefined: not checked, use it. */
  pythonHasServer?: boolean;
  /** Platform, for the executable name on PATH. */
  platform?: string;
  paths?: PathContext;
}

/** `python`, `python3`, `python3.12`, `python.exe`, `pythonw.exe`, `pypy3`: a Python interpreter. */
export function isPythonInterpreter(file: string): boolean {
  const base = file.split(/[\\/]/).pop() ?? '';
  return /^(python|pythonw|pypy)[0-9.]*(\.exe)?$/i.test(base);
}

/**
 * Which command runs slm-lsp: `slm.serverPath` if set (an interpreter gets `-m slm_lsp`), else
 * the Python extension's interpreter when it has slm_lsp installed (`<python> -m slm_lsp`), else
 * `slm-lsp` on PATH.
 */
export function resolveServerCommand(input: ResolveInput): ServerCommand {
  const serverPath = expandPath(input.serverPath ?? '', input.paths);
  if (serverPath) {
    return isPythonInterpreter(serverPath)
      ? { command: serverPath, args: ['-m', 'slm_lsp'], source: 'serverPath' }
      : { command: serverPath, args: [], source: 'serverPath' };
  }
  if (input.python && input.pythonHasServer !== false) {
    return { command: input.python, args: ['-m', 'slm_lsp'], source: 'python' };
  }
  return { command: 'slm-lsp', args: [], source: 'path' };
}

/** `base` with a subcommand and its arguments: `cli(base, 'serve')`, `cli(base, 'pull', name)`. */
export function cli(base: ServerCommand, ...args: string[]): { command: string; args: string[] } {
  return { command: base.command, args: [...base.args, ...args] };
}

/**
 * The command as one line, for logs and messages: arguments are single-quoted where needed, as a
 * POSIX shell reads them (Windows paths stay readable: backslashes are not escaped).
 */
export function commandLine(command: string, args: readonly string[]): string {
  return [command, ...args].map((a) => (/^[\w@%+=:,./\\-]+$/.test(a) ? a : `'${a.replace(/'/g, "'\\''")}'`)).join(' ');
}
