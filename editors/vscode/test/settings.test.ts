import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { CONFIG_SECTION } from '../src/constants';
import {
  CLIENT_DEFAULTS,
  CLIENT_ONLY_KEYS,
  clientSettings,
  configurationItem,
  expandPath,
  initializationOptions,
  languageEnabled,
  MAX_DEBOUNCE_MS,
} from '../src/settings';
import { CONTRIBUTED_SETTINGS, defaultSection } from './packageSettings';

describe('clientSettings', () => {
  test('package.json defaults are the client defaults', () => {
    assert.deepEqual(clientSettings(defaultSection()), CLIENT_DEFAULTS);
  });

  test('reads the extension-only settings and the language list', () => {
    const settings = clientSettings(
      defaultSection({ enabled: false, debounceMs: 75, serverPath: '  /opt/slm/bin/slm-lsp ', 'completion.enabledLanguages': ['python', ' rust '] }),
    );
    assert.deepEqual(settings, { enabled: false, debounceMs: 75, serverPath: '/opt/slm/bin/slm-lsp', enabledLanguages: ['python', 'rust'] });
  });

  test('invalid values fall back to the defaults; the debounce is clamped and rounded', () => {
    assert.deepEqual(clientSettings({ enabled: 'yes', debounceMs: 'soon', serverPath: 3 }), CLIENT_DEFAULTS);
    assert.equal(clientSettings({ debounceMs: -20 }).debounceMs, 0);
    assert.equal(clientSettings({ debounceMs: 99_999 }).debounceMs, MAX_DEBOUNCE_MS);
    assert.equal(clientSettings({ debounceMs: 12.6 }).debounceMs, 13);
    assert.equal(clientSettings({ debounceMs: Number.NaN }).debounceMs, CLIENT_DEFAULTS.debounceMs);
    assert.deepEqual(clientSettings(undefined), CLIENT_DEFAULTS);
    assert.deepEqual(clientSettings(['not', 'an', 'object']), CLIENT_DEFAULTS);
  });

  test('a comma-separated language string is accepted like the server accepts it', () => {
    assert.deepEqual(clientSettings({ completion: { enabledLanguages: 'python, go,,' } }).enabledLanguages, ['python', 'go']);
    assert.deepEqual(clientSettings({ completion: { enabledLanguages: [1, 2] } }).enabledLanguages, ['*']);
  });
});

describe('languageEnabled', () => {
  test('"*" enables every language, otherwise only the listed ids', () => {
    assert.equal(languageEnabled(['*'], 'cobol'), true);
    assert.equal(languageEnabled(['python', 'rust'], 'rust'), true);
    assert.equal(languageEnabled(['python', 'rust'], 'typescript'), false);
    assert.equal(languageEnabled([], 'python'), false);
  });
});

describe('expandPath', () => {
  const ctx = { home: '/home/ada', workspaceFolder: '/src/project' };

  test('expands ~, ${userHome} and ${workspaceFolder}', () => {
    assert.equal(expandPath('~/models/a.gguf', ctx), '/home/ada/models/a.gguf');
    assert.equal(expandPath('~', ctx), '/home/ada');
    assert.equal(expandPath('${userHome}/m.gguf', ctx), '/home/ada/m.gguf');
    assert.equal(expandPath('${workspaceFolder}/.slm/lora.gguf', ctx), '/src/project/.slm/lora.gguf');
    assert.equal(expandPath('  ~\\models\\a.gguf ', ctx), '/home/ada\\models\\a.gguf');
  });

  test('leaves model names, other tildes and unknown variables alone', () => {
    assert.equal(expandPath('hf:Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF/q8_0.gguf', ctx), 'hf:Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF/q8_0.gguf');
    assert.equal(expandPath('qwen2.5-coder-1.5b', ctx), 'qwen2.5-coder-1.5b');
    assert.equal(expandPath('~ada/m.gguf', ctx), '~ada/m.gguf');
    assert.equal(expandPath('${workspaceFolder}/m.gguf', { home: '/home/ada' }), '${workspaceFolder}/m.gguf');
  });
});

describe('initializationOptions', () => {
  test('the default section minus the client-only keys, nested and camelCase', () => {
    const options = initializationOptions(defaultSection(), {});
    for (const key of CLIENT_ONLY_KEYS) {
      assert.equal(key in options, false, `${key} must not reach the server`);
    }
    assert.deepEqual(options, {
      model: { path: '', nGpuLayers: -1, threads: 0, nCtx: 4096, adapter: '' },
      completion: { enabledLanguages: ['*'], maxTokens: 128, maxLines: 12, answerLength: 'auto', timeBudgetMs: 2000, prefetchOnAccept: true },
      logLevel: 'info',
    });
  });

  test('path settings are expanded, model names are not, the input is not modified', () => {
    const section = defaultSection({ 'model.path': '~/m.gguf', 'model.adapter': '${workspaceFolder}/lora.gguf', 'model.nGpuLayers': 20 });
    const before = structuredClone(section);
    const options = initializationOptions(section, { home: '/home/ada', workspaceFolder: '/src/p' });
    assert.deepEqual(options.model, { path: '/home/ada/m.gguf', nGpuLayers: 20, threads: 0, nCtx: 4096, adapter: '/src/p/lora.gguf' });
    assert.deepEqual(section, before);
    const named = initializationOptions(defaultSection({ 'model.path': 'qwen2.5-coder-0.5b' }), { home: '/home/ada' });
    assert.equal((named.model as Record<string, unknown>).path, 'qwen2.5-coder-0.5b');
  });

  test('drops undefined and function values so the result is plain JSON', () => {
    const options = initializationOptions({ model: { path: 'a.gguf', threads: undefined, has: () => true }, logLevel: 'debug' });
    assert.deepEqual(options, { model: { path: 'a.gguf' }, logLevel: 'debug' });
    assert.deepEqual(JSON.parse(JSON.stringify(options)), options);
  });

  test('a missing or malformed section gives empty options', () => {
    assert.deepEqual(initializationOptions(undefined), {});
    assert.deepEqual(initializationOptions('slm'), {});
  });

  test('every contributed setting is either client-only or sent to the server', () => {
    const sent = initializationOptions(defaultSection());
    const dotted = (obj: Record<string, unknown>, prefix = ''): string[] =>
      Object.entries(obj).flatMap(([key, value]) =>
        typeof value === 'object' && value !== null && !Array.isArray(value)
          ? dotted(value as Record<string, unknown>, `${prefix}${key}.`)
          : [`${prefix}${key}`],
      );
    const contributed = Object.keys(CONTRIBUTED_SETTINGS).map((name) => name.replace(/^slm\./, ''));
    assert.deepEqual([...dotted(sent), ...CLIENT_ONLY_KEYS].sort(), contributed.sort());
  });
});

describe('configurationItem', () => {
  test('answers section slm with the server settings, other sections untouched', () => {
    const section = defaultSection({ 'model.path': '~/m.gguf', debounceMs: 10 });
    const answer = configurationItem(CONFIG_SECTION, section, { home: '/h' }) as Record<string, unknown>;
    assert.deepEqual(answer, initializationOptions(section, { home: '/h' }));
    assert.equal('debounceMs' in answer, false);
    const editor = { tabSize: 4 };
    assert.equal(configurationItem('editor', editor), editor);
    assert.equal(configurationItem(undefined, section), section);
  });
});
