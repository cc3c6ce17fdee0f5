/** package.json against the code: commands, settings, activation and the bundle entry point. */

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import packageJson from '../package.json';
import { CATALOG_MODELS, COMMAND_LOAD_ADAPTER, COMMAND_STATUS, COMMANDS, CONFIG_SECTION, EXTENSION_COMMANDS } from '../src/constants';
import { CLIENT_DEFAULTS, CLIENT_ONLY_KEYS } from '../src/settings';
import { CONTRIBUTED_SETTINGS } from './packageSettings';

describe('package.json', () => {
  test('contributes exactly the commands the extension registers, each with a title', () => {
    const contributed = packageJson.contributes.commands.map((c) => c.command).sort();
    assert.deepEqual(contributed, Object.values(EXTENSION_COMMANDS).sort());
    for (const command of packageJson.contributes.commands) {
      assert.ok(command.title && command.category === 'slm-lsp', command.command);
    }
  });

  test("the server's commands are reachable as extension commands of the same name", () => {
    assert.deepEqual(COMMANDS, [COMMAND_LOAD_ADAPTER, COMMAND_STATUS]);
    const extensionCommands: readonly string[] = Object.values(EXTENSION_COMMANDS);
    for (const command of COMMANDS) {
      assert.ok(extensionCommands.includes(command), command);
    }
  });

  test('every setting lives in the slm section and has a typed default', () => {
    for (const [name, schema] of Object.entries(CONTRIBUTED_SETTINGS)) {
      assert.ok(name.startsWith(`${CONFIG_SECTION}.`), name);
      assert.ok('default' in schema, `${name} has no default`);
    }
    for (const key of CLIENT_ONLY_KEYS) {
      assert.deepEqual(CONTRIBUTED_SETTINGS[`${CONFIG_SECTION}.${key}`]?.default, CLIENT_DEFAULTS[key], key);
    }
  });

  test('the settings the issue asks for: model, GPU layers, enabled languages, debounce', () => {
    for (const name of ['slm.model.path', 'slm.model.nGpuLayers', 'slm.completion.enabledLanguages', 'slm.debounceMs']) {
      assert.ok(name in CONTRIBUTED_SETTINGS, name);
    }
  });

  test('paths that run code are restricted in untrusted workspaces', () => {
    const restricted = packageJson.capabilities.untrustedWorkspaces.restrictedConfigurations;
    assert.deepEqual([...restricted].sort(), ['slm.model.adapter', 'slm.model.path', 'slm.serverPath']);
  });

  test('the bundle is the entry point, and VS Code and its types agree on the engine', () => {
    assert.equal(packageJson.main, './dist/extension.js');
    const engine = packageJson.engines.vscode.replace(/^\^/, '');
    const types = packageJson.devDependencies['@types/vscode'].replace(/^[~^]/, '');
    assert.equal(types, engine, 'vsce rejects @types/vscode newer than engines.vscode');
  });

  test('the model picker offers catalog names', () => {
    assert.ok(CATALOG_MODELS.length > 0);
    for (const name of CATALOG_MODELS) {
      assert.match(name, /^[a-z0-9.-]+$/);
    }
  });
});
