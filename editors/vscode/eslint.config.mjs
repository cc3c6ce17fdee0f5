import js from '@eslint/js';
import { defineConfig } from 'eslint/config';
import tseslint from 'typescript-eslint';

// Modules the Node tests load: they must not load `vscode` (not available outside VS Code), nor
// vscode-languageclient, which loads it; type-only imports are erased, so they are fine.
const NEEDS_VSCODE = 'pure module: the Node tests load it without VS Code';
const PURE = [
  'src/constants.ts',
  'src/settings.ts',
  'src/statusText.ts',
  'src/debounce.ts',
  'src/inlineProtocol.ts',
  'src/interpreter.ts',
  'src/restartPolicy.ts',
  'test/**/*.ts',
];

export default defineConfig(
  { ignores: ['dist/', 'out/', 'node_modules/'] },
  js.configs.recommended,
  tseslint.configs.recommended,
  {
    files: ['**/*.ts'],
    rules: {
      eqeqeq: 'error',
      curly: 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_' }],
    },
  },
  {
    files: PURE,
    rules: {
      '@typescript-eslint/no-restricted-imports': [
        'error',
        {
          paths: [
            { name: 'vscode', message: NEEDS_VSCODE },
            { name: 'vscode-languageclient', message: NEEDS_VSCODE, allowTypeImports: true },
            { name: 'vscode-languageclient/node', message: NEEDS_VSCODE, allowTypeImports: true },
          ],
        },
      ],
    },
  },
  {
    files: ['**/*.mjs'],
    languageOptions: { globals: { process: 'readonly', console: 'readonly' } },
  },
);
