/**
 * The `slm` settings section as VS Code hands it to the extension
 * (`workspace.getConfiguration().get('slm')`): every setting package.json contributes, at its
 * default, nested by the dots in its name. Tests start from it so that a setting added to
 * package.json is also checked against the server.
 */

import packageJson from '../package.json';

export type Section = Record<string, unknown>;

interface SettingSchema {
  default?: unknown;
}

export const CONTRIBUTED_SETTINGS: Record<string, SettingSchema> = packageJson.contributes.configuration.properties;

/** `{ "slm.model.path": "" }` → `{ model: { path: "" } }`, with `overrides` (dotted, without `slm.`) applied. */
export function defaultSection(overrides: Record<string, unknown> = {}): Section {
  const section: Section = {};
  const set = (dotted: string, value: unknown) => {
    const parts = dotted.split('.');
    let table = section;
    for (const part of parts.slice(0, -1)) {
      table[part] ??= {};
      table = table[part] as Section;
    }
    table[parts[parts.length - 1]] = structuredClone(value);
  };
  for (const [name, schema] of Object.entries(CONTRIBUTED_SETTINGS)) {
    set(name.replace(/^slm\./, ''), schema.default);
  }
  for (const [name, value] of Object.entries(overrides)) {
    set(name, value);
  }
  return section;
}
