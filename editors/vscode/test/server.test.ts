/**
 * The wire protocol against the REAL server: `slm-lsp serve` over stdio, driven through
 * vscode-jsonrpc (the layer under vscode-languageclient) with what the extension sends:
 * its own initializationOptions and workspace/configuration answers (built from package.json's
 * defaults by the extension's functions), its inline-item conversion and its status model.
 *
 * The server's command and model come from the environment (see `realServer.ts`); without them
 * the tests are skipped. tests/e2e/test_vscode_client.py sets them.
 */

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { after, before, describe, test } from 'node:test';
import type {
  ConfigurationParams,
  InitializeResult,
  InlineCompletionList,
  ShowMessageParams,
  WorkDoneProgressCreateParams,
} from 'vscode-languageclient';
import { CancellationTokenSource, MessageConnection, ResponseError } from 'vscode-jsonrpc/node';
import packageJson from '../package.json';
import { COMMAND_ACCEPTED, COMMAND_LOAD_ADAPTER, COMMAND_STATUS, CONFIG_SECTION, CURSOR_NOTIFICATION, STATUS_NOTIFICATION } from '../src/constants';
import { cursorParams, CursorRest } from '../src/cursorRest';
import { ghostTexts, inlineCompletionParams, VSCODE_TRIGGER } from '../src/inlineProtocol';
import { configurationItem, initializationOptions, PathContext } from '../src/settings';
import { StatusModel, StatusNotification } from '../src/statusText';
import { defaultSection, Section } from './packageSettings';
import { command, RealServer, skip, tinyModel } from './realServer';

const REQUEST_CANCELLED = -32800; // LSPErrorCodes.RequestCancelled
const INVALID_PARAMS = -32602;

/** `$/progress` for work-done progress: begin / report / end. */
interface WorkDoneProgress {
  token: string | number;
  value: { kind: 'begin' | 'report' | 'end'; title?: string; message?: string; percentage?: number };
}

const SOURCE = 'import math\n\n\ndef circle_area(radius):\n    return \n\n\ndef main():\n    print(circle_area(2.0))\n';

/** Poll `check` until it holds (or fail after `ms`, with `what` and the server's stderr). */
async function until(check: () => boolean, what: string, ms: number, stderr: () => string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) {
      assert.fail(`timed out waiting for ${what}\nserver stderr:\n${stderr().slice(-3000)}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe('the real slm-lsp server over stdio', { skip, timeout: 180_000 }, () => {
  const workspace = mkdtempSync(join(tmpdir(), 'slm-vscode-wire-'));
  const paths: PathContext = { home: tmpdir(), workspaceFolder: workspace };
  const docUri = pathToFileURL(join(workspace, 'circle.py')).href;
  // What VS Code would hand the extension: package.json defaults plus the user's settings.
  // The client-only keys (enabled, debounceMs, serverPath) are in it: the extension must strip them.
  let section: Section = defaultSection({
    'model.path': tinyModel,
    'model.threads': 1,
    'completion.maxTokens': 12,
    'completion.timeBudgetMs': 5000,
    debounceMs: 40,
  });

  let server: RealServer;
  let connection: MessageConnection;
  const statuses: StatusNotification[] = [];
  const messages: ShowMessageParams[] = [];
  const configurationRequests: ConfigurationParams[] = [];
  const progressTokens: Array<string | number> = [];
  const progress: WorkDoneProgress[] = [];
  let initializeResult: InitializeResult;

  /** `request`, or a failure with the server's log once `ms` pass without an answer. */
  const answered = <T>(request: Promise<T>, what: string, ms = 30_000): Promise<T> => server.within(request, what, ms);
  /** The request as the extension builds it, from VS Code's trigger kind (typing, by default). */
  const inline = (line: number, character: number, vscodeTrigger: number = VSCODE_TRIGGER.Automatic, uri = docUri, token?: CancellationTokenSource) => {
    const params = inlineCompletionParams(uri, { line, character }, vscodeTrigger);
    // No `undefined` for a missing token: vscode-jsonrpc would send [params, null] as positional parameters.
    const method = 'textDocument/inlineCompletion';
    const request = token
      ? connection.sendRequest<InlineCompletionList | null>(method, params, token.token)
      : connection.sendRequest<InlineCompletionList | null>(method, params);
    return token ? request : answered(request, `inlineCompletion at ${line}:${character}`);
  };
  const open = (uri: string, text: string, languageId = 'python') =>
    connection.sendNotification('textDocument/didOpen', { textDocument: { uri, languageId, version: 1, text } });

  before(async () => {
    server = new RealServer(command as string[], workspace);
    connection = server.connection;
    connection.onRequest('window/workDoneProgress/create', (params: WorkDoneProgressCreateParams) => {
      progressTokens.push(params.token);
      return null;
    });
    // Answered like the extension's middleware does: the `slm` section with the client-only keys removed.
    connection.onRequest('workspace/configuration', (params: ConfigurationParams) => {
      configurationRequests.push(params);
      return params.items.map((item) => configurationItem(item.section, item.section === CONFIG_SECTION ? section : null, paths));
    });
    connection.onNotification('$/progress', (params: WorkDoneProgress) => progress.push(params));
    connection.onNotification(STATUS_NOTIFICATION, (params: StatusNotification) => statuses.push(params));
    connection.onNotification('window/showMessage', (params: ShowMessageParams) => messages.push(params));
    connection.onNotification('window/logMessage', () => undefined);
    connection.listen();

    initializeResult = await connection.sendRequest<InitializeResult>('initialize', {
      processId: process.pid,
      clientInfo: { name: 'slm-lsp wire test', version: packageJson.version },
      rootUri: pathToFileURL(workspace).href,
      workspaceFolders: [{ uri: pathToFileURL(workspace).href, name: 'wire' }],
      capabilities: {
        window: { workDoneProgress: true },
        workspace: { configuration: true, didChangeConfiguration: { dynamicRegistration: false } },
        textDocument: { synchronization: { dynamicRegistration: false }, inlineCompletion: { dynamicRegistration: false } },
      },
      initializationOptions: initializationOptions(section, paths),
    });
    await connection.sendNotification('initialized', {});
  });

  after(async () => {
    server?.stop();
    rmSync(workspace, { recursive: true, force: true });
  });

  test('initialize: the server is the version the extension follows, and offers inline completion', () => {
    assert.equal(initializeResult.serverInfo?.name, 'slm-lsp');
    assert.equal(initializeResult.serverInfo?.version, packageJson.version);
    assert.ok(initializeResult.capabilities.inlineCompletionProvider, 'no inlineCompletionProvider');
  });

  test('the model loads: slm/status goes to ready, with work-done progress', async () => {
    const states = () => statuses.map((s) => s.state);
    await until(() => states().includes('ready') || states().includes('error'), 'slm/status ready', 120_000, () => server.stderr);
    const ready = states().indexOf('ready');
    assert.ok(ready > 0 && states().slice(0, ready).includes('loading'), `slm/status: ${JSON.stringify(statuses)}`);
    // What the status bar said at that moment.
    const bar = new StatusModel();
    statuses.slice(0, ready + 1).forEach((s) => bar.onNotification(s));
    assert.equal(bar.view.text, '$(check) slm ready');
    // Other work (workspace indexing) may report progress too, under its own token.
    const load = () => {
      const begin = progress.find((p) => p.value.kind === 'begin' && /loading model/.test(p.value.title ?? ''));
      return begin ? progress.filter((p) => p.token === begin.token) : [];
    };
    await until(() => load().some((p) => p.value.kind === 'end'), 'the end of the load progress', 10_000, () => server.stderr);
    const [begin, ...rest] = load();
    assert.ok(progressTokens.includes(begin.token), 'progress on a token the server did not create');
    assert.equal(begin.value.kind, 'begin');
    assert.deepEqual(rest.at(-1)?.value, { kind: 'end', message: 'ready' });
  });

  test('the settings the extension sends are all accepted', () => {
    assert.deepEqual(configurationRequests.flatMap((r) => r.items.map((i) => i.section)), [CONFIG_SECTION]);
    // The server reports every unknown or invalid key with window/showMessage.
    assert.deepEqual(messages, [], `the server complained about the settings: ${JSON.stringify(messages)}`);
  });

  test('inlineCompletion: an item with insertText at the cursor, shown as ghost text', async () => {
    await open(docUri, SOURCE);
    const position = { line: 4, character: 11 };
    const result = await inline(position.line, position.character);
    assert.ok(result && result.items.length === 1, JSON.stringify(result));
    const [item] = result.items;
    assert.equal(typeof item.insertText, 'string');
    assert.ok((item.insertText as string).trim().length > 0);
    assert.deepEqual(item.range, { start: position, end: position });
    assert.deepEqual(ghostTexts(result, position), [
      { text: item.insertText, snippet: false, range: { start: position, end: position }, command: item.command },
    ]);
  });

  test("both of VS Code's trigger kinds are accepted (typing, and Trigger Inline Suggestion)", async () => {
    for (const trigger of [VSCODE_TRIGGER.Automatic, VSCODE_TRIGGER.Invoke]) {
      const result = await inline(4, 11, trigger);
      assert.equal(result?.items.length, 1, `trigger ${trigger}`);
    }
  });

  test('a cancelled request ($/cancelRequest) is answered, and the server goes on', async () => {
    const uri = pathToFileURL(join(workspace, 'cancel.py')).href;
    await open(uri, 'def f(x):\n    ');
    const source = new CancellationTokenSource();
    const request = inline(1, 4, VSCODE_TRIGGER.Invoke, uri, source);
    source.cancel(); // vscode-jsonrpc sends $/cancelRequest; the promise waits for the server's answer
    const outcome = await Promise.race([
      request.then(
        () => 'answered with a result',
        (err: unknown) => err,
      ),
      new Promise((resolve) => setTimeout(() => resolve('no answer in 30 s'), 30_000)),
    ]);
    assert.ok(outcome instanceof ResponseError, `expected a RequestCancelled error, got ${String(outcome)}`);
    assert.equal(outcome.code, REQUEST_CANCELLED);
    const again = await inline(4, 11);
    assert.ok(again && again.items.length === 1);
  });

  test(`an accepted item: VS Code's edit, then its ${COMMAND_ACCEPTED} command; the next suggestion comes from the cache`, async () => {
    const uri = pathToFileURL(join(workspace, 'accept.py')).href;
    await open(uri, SOURCE);
    const at = { line: 4, character: 11 };
    const [ghost] = ghostTexts(await inline(at.line, at.character, VSCODE_TRIGGER.Automatic, uri), at);
    assert.ok(ghost?.command, `no command on the item: ${JSON.stringify(ghost)}`);
    assert.equal(ghost.command.command, COMMAND_ACCEPTED);
    const [args] = ghost.command.arguments as Array<{ uri: string; version: number; position: { line: number; character: number }; text: string }>;
    assert.deepEqual(args, { uri, version: 2, text: ghost.text, position: { line: 4, character: 11 + ghost.text.length } });
    const status = () => connection.sendRequest<Record<string, unknown>>('workspace/executeCommand', { command: COMMAND_STATUS, arguments: [] });
    const before = await status();
    // What VS Code does on Tab: the edit (vscode-languageclient's didChange), then the item's command,
    // which the extension's `slm.accepted` forwards to the server with the item's arguments.
    await connection.sendNotification('textDocument/didChange', {
      textDocument: { uri, version: 2 },
      contentChanges: [{ range: { start: at, end: at }, text: ghost.text }],
    });
    await answered(connection.sendRequest('workspace/executeCommand', { command: COMMAND_ACCEPTED, arguments: [args] }), COMMAND_ACCEPTED);
    let counts: Record<string, number> = {};
    const settled = async () => {
      counts = (await status()).prefetch as Record<string, number>;
      const finished = (counts.answered ?? 0) + (counts.empty ?? 0) + (counts.dropped ?? 0);
      return (counts.queued ?? 0) >= 1 && finished === counts.queued;
    };
    for (let i = 0; i < 200 && !(await settled()); i++) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    assert.ok((counts.answered ?? 0) >= 1, `no prefetch answered: ${JSON.stringify(counts)}\n${server.stderr.slice(-2000)}`);
    const next = await inline(args.position.line, args.position.character, VSCODE_TRIGGER.Automatic, uri);
    assert.equal(next?.items.length, 1);
    const after = await status();
    assert.equal(after.cacheHits, (before.cacheHits as number) + 1, 'the next suggestion was not a cache hit');
  });

  test(`${CURSOR_NOTIFICATION}: the cursor resting far away warms the prompt there; on the next line it does not`, async () => {
    // kvStates: the warmups done and stopped (a warmup runs for a while, then counts as one or the other).
    const warmups = async () => {
      const status = await answered(connection.sendRequest<Record<string, unknown>>('workspace/executeCommand', { command: COMMAND_STATUS, arguments: [] }), COMMAND_STATUS);
      const kv = status.kvStates as { warmups: number; warmups_stopped: number };
      return kv.warmups + kv.warmups_stopped;
    };
    const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
    /** The count once it has grown past `n` (a warmup asked for has finished), within 15 s. */
    const grown = async (n: number, what: string) => {
      for (let i = 0; i < 300; i++) {
        const now = await warmups();
        if (now > n) {
          return now;
        }
        await pause(50);
      }
      assert.fail(`no warmup after ${what} (still ${n})\n${server.stderr.slice(-2000)}`);
    };
    /** The count once earlier tests' warmups are over: three equal readings 300 ms apart. */
    let before = await warmups();
    for (let same = 0; same < 2; ) {
      await pause(300);
      const now = await warmups();
      same = now === before ? same + 1 : 0;
      before = now;
    }
    const uri = pathToFileURL(join(workspace, 'long.py')).href;
    await open(uri, Array.from({ length: 60 }, (_, i) => `def f${i}(x):\n    return x + ${i}\n\n`).join(''));
    // The open's own warmup (its top window) is over before the cursor moves: the next one is the cursor's.
    const opened = await grown(before, 'the open');
    // What the extension does on selection changes, with a shorter rest: the server hears of line 100 only.
    const rest = new CursorRest((place) => {
      void connection.sendNotification(CURSOR_NOTIFICATION, cursorParams(place));
      return true;
    }, 20);
    rest.moved({ server: connection, uri, position: { line: 40, character: 4 } });
    rest.moved({ server: connection, uri, position: { line: 100, character: 4 } });
    const jumped = await grown(opened, 'the jump');
    rest.moved({ server: connection, uri, position: { line: 101, character: 0 } });
    await until(() => rest.stats.sent === 2, 'the second rest', 5000, () => server.stderr);
    await pause(1000);
    assert.equal(await warmups(), jumped, `a move to the next line warmed\n${server.stderr.slice(-2000)}`);
    assert.equal(rest.stats.sent, 2);
  });

  test(`executeCommand ${COMMAND_STATUS}: model, state and last latency`, async () => {
    const result = await connection.sendRequest<Record<string, unknown>>('workspace/executeCommand', { command: COMMAND_STATUS, arguments: [] });
    assert.equal(result.state, 'ready');
    assert.equal(result.model, tinyModel);
    assert.equal(typeof result.template, 'string');
    assert.equal(result.adapter, null);
    assert.equal(typeof result.lastLatencyMs, 'number');
  });

  test(`executeCommand ${COMMAND_LOAD_ADAPTER}: a missing file is InvalidParams, "" removes the adapter`, async () => {
    const missing = join(workspace, 'no-such-adapter.gguf');
    await assert.rejects(
      connection.sendRequest('workspace/executeCommand', { command: COMMAND_LOAD_ADAPTER, arguments: [missing] }),
      (err: unknown) => err instanceof ResponseError && err.code === INVALID_PARAMS,
    );
    await until(() => messages.length > 0, 'the error message', 5000, () => server.stderr);
    assert.match(messages[messages.length - 1].message, /adapter/);
    messages.length = 0;
    const removed = await connection.sendRequest('workspace/executeCommand', { command: COMMAND_LOAD_ADAPTER, arguments: [''] });
    assert.deepEqual(removed, { adapter: null });
  });

  test('a settings change reaches the server through workspace/configuration', async () => {
    const asked = configurationRequests.length;
    section = defaultSection({ ...flatten(section), 'completion.enabledLanguages': ['rust'] });
    // What vscode-languageclient sends for `synchronize.configurationSection`; the server pulls the section.
    await connection.sendNotification('workspace/didChangeConfiguration', { settings: null });
    await until(() => configurationRequests.length > asked, 'workspace/configuration after the change', 10_000, () => server.stderr);
    await new Promise((resolve) => setTimeout(resolve, 200));
    const disabled = await inline(4, 11);
    assert.deepEqual(disabled?.items, []);
    section = defaultSection({ ...flatten(section), 'completion.enabledLanguages': ['*'] });
    await connection.sendNotification('workspace/didChangeConfiguration', { settings: null });
    await until(() => configurationRequests.length > asked + 1, 'workspace/configuration after the second change', 10_000, () => server.stderr);
    await new Promise((resolve) => setTimeout(resolve, 200));
    assert.equal((await inline(4, 11))?.items.length, 1);
    assert.deepEqual(messages, []);
  });

  test('shutdown and exit: the process ends with status 0', async () => {
    assert.equal(await connection.sendRequest('shutdown'), null);
    await connection.sendNotification('exit');
    await until(() => server.exitCode !== undefined, 'the server to exit', 15_000, () => server.stderr);
    assert.equal(server.exitCode, 0, server.stderr.slice(-3000));
  });
});

/** `{model: {path: 'x'}}` → `{'model.path': 'x'}` (arrays are values). */
function flatten(section: Section, prefix = ''): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(section)) {
    if (typeof value === 'object' && value !== null && !Array.isArray(value)) {
      Object.assign(out, flatten(value as Section, `${prefix}${key}.`));
    } else {
      out[`${prefix}${key}`] = value;
    }
  }
  return out;
}
