/**
 * `slm/nextEdit` against the REAL server: `slm-lsp serve` over stdio through vscode-jsonrpc,
 * with the params the extension builds (`nextEditParams`) and its answer check (`nextEditFrom`),
 * after real edits (didChange) that the server's edit history records.
 *
 * The server's command and model come from the environment (see `realServer.ts`); without them
 * the tests are skipped. tests/e2e/test_vscode_client.py sets them. The tiny model
 * writes noise, which the server must never hand over as an edit it cannot place: its answer is
 * null or an edit inside the document.
 */

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { after, before, describe, test } from 'node:test';
import type { ConfigurationParams, InitializeResult } from 'vscode-languageclient';
import { MessageConnection, ResponseError } from 'vscode-jsonrpc/node';
import packageJson from '../package.json';
import { CONFIG_SECTION, NEXT_EDIT_REQUEST, STATUS_NOTIFICATION } from '../src/constants';
import { editHunk, nextEditFrom, nextEditParams } from '../src/nextEditProtocol';
import { configurationItem, initializationOptions, PathContext } from '../src/settings';
import { StatusNotification } from '../src/statusText';
import { defaultSection } from './packageSettings';
import { command, RealServer, skip, tinyModel } from './realServer';

const INVALID_PARAMS = -32602;

const SOURCE = 'def area(r):\n    return 3.14 * r * r\n\n\ndef main():\n    print(area(2.0))\n';

describe('slm/nextEdit on the real slm-lsp server', { skip, timeout: 180_000 }, () => {
  const workspace = mkdtempSync(join(tmpdir(), 'slm-vscode-next-edit-'));
  const paths: PathContext = { home: tmpdir(), workspaceFolder: workspace };
  const docUri = pathToFileURL(join(workspace, 'area.py')).href;
  const section = defaultSection({ 'model.path': tinyModel, 'model.threads': 1, 'context.enabled': false });
  let server: RealServer;
  let connection: MessageConnection;
  const statuses: StatusNotification[] = [];
  let initializeResult: InitializeResult;

  const within = <T>(request: Promise<T>, what: string, ms = 60_000): Promise<T> => server.within(request, what, ms);

  before(async () => {
    server = new RealServer(command as string[], workspace);
    connection = server.connection;
    connection.onRequest('window/workDoneProgress/create', () => null);
    connection.onRequest('workspace/configuration', (params: ConfigurationParams) =>
      params.items.map((item) => configurationItem(item.section, item.section === CONFIG_SECTION ? section : null, paths)),
    );
    connection.onNotification(STATUS_NOTIFICATION, (params: StatusNotification) => statuses.push(params));
    connection.onNotification('$/progress', () => undefined);
    connection.onNotification('window/showMessage', () => undefined);
    connection.onNotification('window/logMessage', () => undefined);
    connection.listen();
    initializeResult = await within(
      connection.sendRequest<InitializeResult>('initialize', {
        processId: process.pid,
        clientInfo: { name: 'slm-lsp next-edit wire test', version: packageJson.version },
        rootUri: pathToFileURL(workspace).href,
        workspaceFolders: [{ uri: pathToFileURL(workspace).href, name: 'wire' }],
        capabilities: {
          window: { workDoneProgress: true },
          workspace: { configuration: true },
          textDocument: { synchronization: { dynamicRegistration: false }, inlineCompletion: { dynamicRegistration: false } },
        },
        initializationOptions: initializationOptions(section, paths),
      }),
      'initialize',
    );
    await connection.sendNotification('initialized', {});
    const deadline = Date.now() + 120_000;
    while (!statuses.some((s) => s.state === 'ready' || s.state === 'error')) {
      assert.ok(Date.now() < deadline, `the model did not load\n${server.stderr.slice(-3000)}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    assert.ok(statuses.some((s) => s.state === 'ready'), JSON.stringify(statuses));
  });

  after(() => {
    server?.stop();
    rmSync(workspace, { recursive: true, force: true });
  });

  test('the server is the one the extension follows', () => {
    assert.equal(initializeResult.serverInfo?.version, packageJson.version);
  });

  test('after a rename, the answer is null or an edit inside the document that changes it', async () => {
    await connection.sendNotification('textDocument/didOpen', {
      textDocument: { uri: docUri, languageId: 'python', version: 1, text: SOURCE },
    });
    // The user renames the parameter: `r` → `radius` on the first line.
    await connection.sendNotification('textDocument/didChange', {
      textDocument: { uri: docUri, version: 2 },
      contentChanges: [{ range: { start: { line: 0, character: 9 }, end: { line: 0, character: 10 } }, text: 'radius' }],
    });
    const text = SOURCE.replace('area(r)', 'area(radius)');
    const result = await within(connection.sendRequest<unknown>(NEXT_EDIT_REQUEST, nextEditParams(docUri, { line: 0, character: 15 })), NEXT_EDIT_REQUEST);
    if (result === null) {
      return;
    }
    const edit = nextEditFrom(result);
    assert.ok(edit, `a malformed answer: ${JSON.stringify(result)}`);
    const lines = text.split('\n');
    assert.ok(edit.range.start.line < lines.length && edit.range.end.line <= lines.length, JSON.stringify(edit));
    assert.ok(typeof edit.cause === 'string', 'the server says what the edit follows');
    // What the extension shows must change something: the server does not suggest no-ops.
    const { start, end } = edit.range;
    const offset = (line: number, character: number) => lines.slice(0, line).reduce((n, l) => n + l.length + 1, 0) + character;
    const old = text.slice(offset(start.line, start.character), offset(end.line, end.character));
    assert.ok(editHunk(edit, old), `an edit that changes nothing: ${JSON.stringify(edit)}`);
  });

  test('a document the server has not opened: no edit (null, or refused as invalid)', async () => {
    const unknown = pathToFileURL(join(workspace, 'never-opened.py')).href;
    const answer = await within(
      connection.sendRequest<unknown>(NEXT_EDIT_REQUEST, nextEditParams(unknown, { line: 0, character: 0 })).then(
        (result) => ({ result }),
        (err: unknown) => ({ err }),
      ),
      NEXT_EDIT_REQUEST,
    );
    if ('err' in answer) {
      assert.ok(answer.err instanceof ResponseError && answer.err.code === INVALID_PARAMS, String(answer.err));
    } else {
      assert.equal(answer.result, null);
    }
  });

  test('malformed params are refused with InvalidParams', async () => {
    for (const params of [{ position: { line: 0, character: 0 } }, { textDocument: { uri: docUri }, position: { line: -1, character: 0 } }]) {
      await assert.rejects(
        within(connection.sendRequest(NEXT_EDIT_REQUEST, params), NEXT_EDIT_REQUEST),
        (err: unknown) => err instanceof ResponseError && err.code === INVALID_PARAMS && err.message.includes(NEXT_EDIT_REQUEST),
      );
    }
  });
});
