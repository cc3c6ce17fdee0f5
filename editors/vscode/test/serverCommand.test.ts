import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { activeInterpreter, canImportServer, EnvironmentPath, EnvironmentsApi, FIND_SERVER_CODE } from '../src/interpreter';
import { cli, commandLine, isPythonInterpreter, resolveServerCommand } from '../src/settings';

describe('isPythonInterpreter', () => {
  test('recognises interpreter file names on every platform', () => {
    for (const file of ['python', 'python3', '/usr/bin/python3.12', 'C:\\Py\\python.exe', 'pythonw.exe', '/opt/pypy3', '~/.venv/bin/Python3']) {
      assert.equal(isPythonInterpreter(file), true, file);
    }
  });

  test('an slm-lsp executable or a folder named python is not an interpreter', () => {
    for (const file of ['slm-lsp', '/home/a/.venv/bin/slm-lsp', 'C:\\slm\\slm-lsp.exe', '/opt/python/bin/slm-lsp', 'python-wrapper', 'ipython']) {
      assert.equal(isPythonInterpreter(file), false, file);
    }
  });
});

describe('resolveServerCommand', () => {
  test('slm.serverPath wins: an executable runs as is, an interpreter with -m slm_lsp', () => {
    assert.deepEqual(resolveServerCommand({ serverPath: '/opt/bin/slm-lsp', python: '/venv/bin/python' }), {
      command: '/opt/bin/slm-lsp',
      args: [],
      source: 'serverPath',
    });
    assert.deepEqual(resolveServerCommand({ serverPath: '~/venv/bin/python3', paths: { home: '/home/ada' } }), {
      command: '/home/ada/venv/bin/python3',
      args: ['-m', 'slm_lsp'],
      source: 'serverPath',
    });
  });

  test("then the Python extension's interpreter, unless it lacks slm_lsp", () => {
    assert.deepEqual(resolveServerCommand({ serverPath: '  ', python: '/venv/bin/python', pythonHasServer: true }), {
      command: '/venv/bin/python',
      args: ['-m', 'slm_lsp'],
      source: 'python',
    });
    assert.deepEqual(resolveServerCommand({ python: '/venv/bin/python', pythonHasServer: false }), { command: 'slm-lsp', args: [], source: 'path' });
  });

  test('else slm-lsp on PATH', () => {
    assert.deepEqual(resolveServerCommand({}), { command: 'slm-lsp', args: [], source: 'path' });
  });
});

describe('command lines for serve, pull and finetune', () => {
  const python = resolveServerCommand({ python: '/venv/bin/python', pythonHasServer: true });

  test('subcommands go after the base arguments and the base is not modified', () => {
    assert.deepEqual(cli(python, 'serve'), { command: '/venv/bin/python', args: ['-m', 'slm_lsp', 'serve'] });
    assert.deepEqual(cli(python, 'pull', 'hf:org/repo/model q8.gguf'), {
      command: '/venv/bin/python',
      args: ['-m', 'slm_lsp', 'pull', 'hf:org/repo/model q8.gguf'],
    });
    assert.deepEqual(cli(resolveServerCommand({}), 'finetune', '/src/my repo'), { command: 'slm-lsp', args: ['finetune', '/src/my repo'] });
    assert.deepEqual(python.args, ['-m', 'slm_lsp']);
  });

  test('commandLine quotes only the arguments that need it', () => {
    assert.equal(commandLine('/venv/bin/python', ['-m', 'slm_lsp', 'pull', 'qwen2.5-coder-0.5b']), '/venv/bin/python -m slm_lsp pull qwen2.5-coder-0.5b');
    assert.equal(commandLine('slm-lsp', ['finetune', '/src/my repo', '']), "slm-lsp finetune '/src/my repo' ''");
    assert.equal(commandLine('slm-lsp', ['pull', "it's.gguf"]), "slm-lsp pull 'it'\\''s.gguf'");
    assert.equal(commandLine('C:\\Program Files\\slm-lsp.exe', ['serve']), "'C:\\Program Files\\slm-lsp.exe' serve");
  });
});

describe("the Python extension's active interpreter", () => {
  const fakeEnvironments = (
    envPath: EnvironmentPath | undefined,
    executable: string | undefined,
    calls: unknown[] = [],
  ): EnvironmentsApi<string> => ({
    getActiveEnvironmentPath(resource) {
      calls.push(['active', resource]);
      return envPath;
    },
    async resolveEnvironment(environment) {
      calls.push(['resolve', environment]);
      return executable === undefined ? undefined : { executable: { uri: { fsPath: executable } } };
    },
  });

  test('the resolved executable is preferred to the environment path (a venv folder)', async () => {
    const calls: unknown[] = [];
    const envPath = { id: 'venv', path: '/src/p/.venv' };
    const checked: string[] = [];
    const interpreter = await activeInterpreter(fakeEnvironments(envPath, '/src/p/.venv/bin/python', calls), 'file:///src/p', async (python) => {
      checked.push(python);
      return true;
    });
    assert.deepEqual(interpreter, { path: '/src/p/.venv/bin/python', hasServer: true });
    assert.deepEqual(calls, [['active', 'file:///src/p'], ['resolve', envPath]]);
    assert.deepEqual(checked, ['/src/p/.venv/bin/python']);
  });

  test('falls back to the environment path when it does not resolve; reports a missing slm_lsp', async () => {
    const interpreter = await activeInterpreter(fakeEnvironments({ id: 'sys', path: '/usr/bin/python3' }, undefined), undefined, async () => false);
    assert.deepEqual(interpreter, { path: '/usr/bin/python3', hasServer: false });
    const fed = resolveServerCommand({ python: interpreter?.path, pythonHasServer: interpreter?.hasServer });
    assert.equal(fed.source, 'path');
  });

  test('no interpreter selected: undefined, and nothing is run', async () => {
    let ran = false;
    const none = await activeInterpreter(fakeEnvironments(undefined, '/x/python'), undefined, async () => (ran = true));
    assert.equal(none, undefined);
    const empty = await activeInterpreter(fakeEnvironments({ id: '', path: '' }, undefined), undefined, async () => (ran = true));
    assert.equal(empty, undefined);
    assert.equal(ran, false);
  });
});

describe('canImportServer', () => {
  // A fake interpreter: exits 0 only when run as `-c FIND_SERVER_CODE` and told slm_lsp is there.
  const dir = mkdtempSync(join(tmpdir(), 'slm-vscode-python-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const fakePython = (hasServer: boolean): string => {
    const file = join(dir, `python-${hasServer}`);
    writeFileSync(file, `#!/bin/sh\n[ "$1" = "-c" ] && [ "$2" = '${FIND_SERVER_CODE}' ] && ${hasServer ? 'exit 0' : 'exit 1'}\nexit 2\n`);
    chmodSync(file, 0o755);
    return file;
  };

  test('true when the interpreter finds slm_lsp, false when not', { skip: process.platform === 'win32' && 'needs /bin/sh' }, async () => {
    assert.equal(await canImportServer(fakePython(true)), true);
    assert.equal(await canImportServer(fakePython(false)), false);
  });

  test('false for a missing interpreter or one that hangs', { skip: process.platform === 'win32' && 'needs /bin/sh' }, async () => {
    assert.equal(await canImportServer(join(dir, 'no-such-python')), false);
    const hanging = join(dir, 'python-hangs');
    writeFileSync(hanging, '#!/bin/sh\nexec sleep 30\n');
    chmodSync(hanging, 0o755);
    const start = Date.now();
    assert.equal(await canImportServer(hanging, 300), false);
    assert.ok(Date.now() - start < 5000);
  });

  // The real thing when the test run says which interpreter has slm-lsp (tests/e2e/test_vscode_client.py does).
  const realPython = process.env.SLM_LSP_PYTHON;
  test('a real interpreter with slm-lsp installed', { skip: !realPython && 'SLM_LSP_PYTHON is not set' }, async () => {
    assert.equal(await canImportServer(realPython as string), true);
  });
});
