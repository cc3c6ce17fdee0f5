import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { COMMAND_ACCEPTED } from '../src/constants';
import { ghostTexts, inlineCompletionParams, LSP_TRIGGER, lspTriggerKind, rangeFitsCursor, VSCODE_TRIGGER } from '../src/inlineProtocol';

const at = { line: 4, character: 11 };
const range = (startChar: number, endChar: number, line = 4) => ({ start: { line, character: startChar }, end: { line, character: endChar } });

describe('inlineCompletionParams', () => {
  test("VS Code's trigger kinds (0, 1) become LSP 3.18's (1, 2)", () => {
    assert.equal(lspTriggerKind(VSCODE_TRIGGER.Invoke), LSP_TRIGGER.Invoked);
    assert.equal(lspTriggerKind(VSCODE_TRIGGER.Automatic), LSP_TRIGGER.Automatic);
    assert.deepEqual([lspTriggerKind(0), lspTriggerKind(1), lspTriggerKind(7)], [1, 2, 2]);
  });

  test('the request: document, position, context; the selected suggestion when there is one', () => {
    const cursor = { line: 4, character: 11, extra: true } as { line: number; character: number };
    assert.deepEqual(inlineCompletionParams('file:///w/circle.py', cursor, VSCODE_TRIGGER.Automatic), {
      textDocument: { uri: 'file:///w/circle.py' },
      position: { line: 4, character: 11 },
      context: { triggerKind: 2 },
    });
    const selected = { range: range(7, 11), text: 'radius' };
    assert.deepEqual(inlineCompletionParams('untitled:Untitled-1', at, VSCODE_TRIGGER.Invoke, selected).context, {
      triggerKind: 1,
      selectedCompletionInfo: selected,
    });
  });
});

describe('ghostTexts', () => {
  test("the server's answer: one insertion at the cursor", () => {
    const answer = { items: [{ insertText: 'math.pi * radius ** 2', range: range(11, 11) }] };
    assert.deepEqual(ghostTexts(answer, at), [{ text: 'math.pi * radius ** 2', snippet: false, range: range(11, 11) }]);
  });

  test('a bare item array, a range replacing the typed word, filterText and snippets', () => {
    const answer = [
      { insertText: 'radius ** 2', range: range(7, 11), filterText: 'rad' },
      { insertText: { kind: 'snippet', value: 'print(${1:x})' } },
    ];
    assert.deepEqual(ghostTexts(answer, at), [
      { text: 'radius ** 2', snippet: false, range: range(7, 11), filterText: 'rad' },
      { text: 'print(${1:x})', snippet: true },
    ]);
  });

  test('multi-line text is kept whole (the range, not the text, must stay on one line)', () => {
    const text = 'math.pi * radius ** 2\n\n\ndef area(r):\n    return r';
    assert.equal(ghostTexts({ items: [{ insertText: text, range: range(11, 11) }] }, at)[0].text, text);
  });

  test('items VS Code cannot show are dropped: empty, off the cursor line, not containing the cursor', () => {
    const answer = {
      items: [
        { insertText: '' },
        { insertText: 'x', range: range(11, 11, 5) },
        { insertText: 'x', range: { start: { line: 3, character: 0 }, end: { line: 4, character: 11 } } },
        { insertText: 'x', range: range(12, 14) },
        { insertText: 'x', range: range(3, 10) },
        { insertText: 'kept', range: range(11, 15) },
      ],
    };
    assert.deepEqual(ghostTexts(answer, at), [{ text: 'kept', snippet: false, range: range(11, 15) }]);
  });

  test('malformed answers give no items instead of throwing', () => {
    for (const answer of [null, undefined, 'text', 42, {}, { items: 'x' }, { items: [null, 3, 'x', {}] }]) {
      assert.deepEqual(ghostTexts(answer, at), [], JSON.stringify(answer));
    }
    const broken = [
      { insertText: 7 },
      { insertText: { kind: 'plaintext', value: 'x' } },
      { insertText: 'x', range: { start: { line: 4 } } },
      { insertText: 'x', range: { start: { line: 4, character: -1 }, end: { line: 4, character: 11 } } },
      { insertText: 'x', range: { start: { line: 4, character: 1.5 }, end: { line: 4, character: 11 } } },
    ];
    assert.deepEqual(ghostTexts({ items: broken }, at), []);
  });

  test("the item's command is kept for VS Code to run on accept; a malformed one is left out", () => {
    const args = [{ uri: 'file:///w/circle.py', version: 2, position: { line: 4, character: 32 }, text: 'math.pi * radius ** 2' }];
    const command = { title: 'slm-lsp: accepted', command: COMMAND_ACCEPTED, arguments: args };
    const [ghost] = ghostTexts({ items: [{ insertText: 'math.pi * radius ** 2', range: range(11, 11), command }] }, at);
    assert.deepEqual(ghost.command, command);
    args[0].version = 9;
    assert.equal((ghost.command?.arguments[0] as { version: number }).version, 9, 'arguments are passed on as given');
    assert.deepEqual(ghostTexts({ items: [{ insertText: 'x', command: { command: COMMAND_ACCEPTED } }] }, at)[0].command, {
      title: COMMAND_ACCEPTED,
      command: COMMAND_ACCEPTED,
      arguments: [],
    });
    for (const bad of [7, 'slm.accepted', {}, { command: '' }, { command: COMMAND_ACCEPTED, arguments: 'x' }]) {
      const [item] = ghostTexts({ items: [{ insertText: 'x', command: bad }] }, at);
      assert.equal(item.command, undefined, JSON.stringify(bad));
      assert.equal(item.text, 'x', 'the item itself is still shown');
    }
  });

  test('the result does not share objects with the answer', () => {
    const answer = { items: [{ insertText: 'y', range: range(11, 11) }] };
    const [ghost] = ghostTexts(answer, at);
    answer.items[0].range.start.character = 0;
    assert.equal(ghost.range?.start.character, 11);
  });
});

describe('rangeFitsCursor', () => {
  test('same line, cursor inside or at either end', () => {
    assert.equal(rangeFitsCursor(range(11, 11), at), true);
    assert.equal(rangeFitsCursor(range(0, 11), at), true);
    assert.equal(rangeFitsCursor(range(11, 30), at), true);
    assert.equal(rangeFitsCursor(range(12, 30), at), false);
    assert.equal(rangeFitsCursor(range(0, 10), at), false);
    assert.equal(rangeFitsCursor(range(11, 11, 3), at), false);
  });
});
