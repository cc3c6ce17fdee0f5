import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import packageJson from '../package.json';
import { EXTENSION_COMMANDS, NEXT_EDIT_REQUEST, NEXT_EDIT_VISIBLE_CONTEXT } from '../src/constants';
import { ghostTexts } from '../src/inlineProtocol';
import { addedLabel, advance, contains, editHunk, nextEditFrom, nextEditParams, rangedEdits } from '../src/nextEditProtocol';

const pos = (line: number, character: number) => ({ line, character });
const range = (sl: number, sc: number, el: number, ec: number) => ({ start: pos(sl, sc), end: pos(el, ec) });

/** `text` with `edit` applied (LSP positions are UTF-16 code units, as JavaScript indices). */
function apply(text: string, r: { start: { line: number; character: number }; end: { line: number; character: number } }, newText: string): string {
  const lines = text.split('\n');
  const offset = (p: { line: number; character: number }) =>
    lines.slice(0, p.line).reduce((n, l) => n + l.length + 1, 0) + p.character;
  return text.slice(0, offset(r.start)) + newText + text.slice(offset(r.end));
}

describe('slm/nextEdit params and answers', () => {
  test('the request: the document and the cursor, nothing else', () => {
    assert.equal(NEXT_EDIT_REQUEST, 'slm/nextEdit');
    const cursor = { line: 3, character: 8, extra: 1 } as { line: number; character: number };
    assert.deepEqual(nextEditParams('file:///w/a.py', cursor), { textDocument: { uri: 'file:///w/a.py' }, position: pos(3, 8) });
  });

  test('an answer: range, newText and cause; null is no edit', () => {
    const answer = { range: range(5, 4, 5, 9), newText: 'total', cause: 'next-edit' };
    assert.deepEqual(nextEditFrom(answer), answer);
    assert.deepEqual(nextEditFrom({ range: range(0, 0, 0, 0), newText: 'x' }), { range: range(0, 0, 0, 0), newText: 'x' });
    assert.equal(nextEditFrom(null), undefined);
  });

  test('malformed answers are dropped, not trusted', () => {
    for (const bad of [
      undefined,
      [],
      'edit',
      { range: range(1, 0, 1, 2) },
      { newText: 'x' },
      { range: range(1, 0, 1, 2), newText: 3 },
      { range: { start: pos(1, 0) }, newText: 'x' },
      { range: range(2, 0, 1, 0), newText: 'x' }, // ends before it starts
      { range: range(1, 5, 1, 2), newText: 'x' },
      { range: range(-1, 0, 1, 0), newText: 'x' },
      { range: range(0, 1.5, 1, 0), newText: 'x' },
    ]) {
      assert.equal(nextEditFrom(bad), undefined, JSON.stringify(bad));
    }
  });
});

describe('ranged inline items', () => {
  const at = pos(4, 11);
  test('an item VS Code cannot show as ghost text is a next edit; ghostTexts drops it', () => {
    const elsewhere = { insertText: 'total = 0', range: range(8, 4, 8, 13) };
    const multiLine = { insertText: 'a\nb', range: range(4, 0, 5, 3) };
    const ghost = { insertText: 'radius', range: range(4, 11, 4, 11) };
    const answer = { items: [elsewhere, ghost, multiLine] };
    assert.deepEqual(rangedEdits(answer, at), [
      { range: elsewhere.range, newText: 'total = 0' },
      { range: multiLine.range, newText: 'a\nb' },
    ]);
    assert.deepEqual(ghostTexts(answer, at).map((g) => g.text), ['radius']);
  });

  test('items without a range, snippets and malformed items are not next edits', () => {
    const answer = [
      { insertText: 'x' },
      { insertText: { kind: 'snippet', value: 'f(${1})' }, range: range(1, 0, 1, 1) },
      { insertText: 'y', range: { start: pos(1, 0) } },
      null,
    ];
    assert.deepEqual(rangedEdits(answer, at), []);
    assert.deepEqual(rangedEdits(null, at), []);
  });
});

describe('what an edit changes', () => {
  test('the text kept at either end is left out: a rename in the middle of a line', () => {
    const text = 'def area(r):\n    return 3.14 * r * r\n';
    const edit = { range: range(1, 0, 1, 23), newText: '    return 3.14 * radius * r' };
    const hunk = editHunk(edit, '    return 3.14 * r * r');
    // Whole words: "r" becomes "radius" (not "adius" added after an "r" that stays).
    assert.deepEqual(hunk, { removed: range(1, 18, 1, 19), removedText: 'r', added: 'radius' });
    assert.equal(apply(text, edit.range, edit.newText), apply(text, hunk!.removed, hunk!.added));
  });

  test('lines added after a line, lines removed, the whole range replaced', () => {
    const text = 'a = 1\nb = 2\nc = 3\n';
    const cases = [
      { range: range(0, 0, 1, 5), newText: 'a = 1\nb = 2\nb2 = 4', old: 'a = 1\nb = 2' },
      { range: range(0, 0, 2, 5), newText: 'a = 1\nc = 3', old: 'a = 1\nb = 2\nc = 3' },
      { range: range(1, 0, 1, 5), newText: 'z', old: 'b = 2' },
    ];
    for (const c of cases) {
      const hunk = editHunk(c, c.old);
      assert.ok(hunk, JSON.stringify(c));
      assert.equal(apply(text, hunk.removed, hunk.added), apply(text, c.range, c.newText), JSON.stringify(c));
    }
    assert.deepEqual(editHunk(cases[0], cases[0].old), { removed: range(1, 5, 1, 5), removedText: '', added: '\nb2 = 4' });
    assert.deepEqual(editHunk(cases[1], cases[1].old), { removed: range(1, 0, 2, 0), removedText: 'b = 2\n', added: '' });
  });

  test("a range cut inside a word (the server's minimal replacement) shows the whole words", () => {
    // `    return 3.14 * r * r`: the server replaces ` * r` after the first `r` with `adius * radius`.
    const line = '    return 3.14 * r * r';
    const edit = { range: range(1, 19, 1, 23), newText: 'adius * radius' };
    const hunk = editHunk(edit, line.slice(19, 23), line.slice(0, 19), line.slice(23));
    assert.deepEqual(hunk, { removed: range(1, 18, 1, 23), removedText: 'r * r', added: 'radius * radius' });
    // Widening never changes what the edit does.
    const text = `def area(radius):\n${line}\n`;
    assert.equal(apply(text, hunk!.removed, hunk!.added), apply(text, edit.range, edit.newText));
    assert.equal(apply(text, edit.range, edit.newText).split('\n')[1], '    return 3.14 * radius * radius');
  });

  test('an edit that changes nothing has no hunk', () => {
    assert.equal(editHunk({ range: range(0, 0, 0, 3), newText: 'abc' }, 'abc'), undefined);
  });

  test('a surrogate pair is never split', () => {
    // 😀 is two UTF-16 code units (\ud83d\ude00), 😁 shares the high one.
    const hunk = editHunk({ range: range(0, 0, 0, 4), newText: '= 😁' }, '= 😀');
    assert.deepEqual(hunk, { removed: range(0, 2, 0, 4), removedText: '😀', added: '😁' });
    const tail = editHunk({ range: range(0, 0, 0, 3), newText: '\ud83e\ude00 ' }, '\ud83d\ude00 ');
    assert.deepEqual(tail?.removed, range(0, 0, 0, 2));
  });

  test('an edit inside punctuation keeps what is not a word', () => {
    assert.deepEqual(editHunk({ range: range(0, 0, 0, 9), newText: 'f(a, b, c)' }, 'f(a, b)  '), {
      removed: range(0, 6, 0, 9),
      removedText: ')  ',
      added: ', c)',
    });
  });

  test('advance, contains and the label of added text', () => {
    assert.deepEqual(advance(pos(2, 4), 'ab'), pos(2, 6));
    assert.deepEqual(advance(pos(2, 4), 'ab\ncde'), pos(3, 3));
    assert.ok(contains(range(1, 2, 3, 0), pos(1, 2)) && contains(range(1, 2, 3, 0), pos(3, 0)));
    assert.ok(!contains(range(1, 2, 3, 0), pos(1, 1)) && !contains(range(1, 2, 3, 0), pos(3, 1)));
    assert.equal(addedLabel('radius'), 'radius');
    assert.equal(addedLabel('\nb2 = 4'), 'b2 = 4');
    assert.equal(addedLabel('x = 1\ny = 2\nz'), 'x = 1  (+2 lines)');
    assert.equal(addedLabel('    for x in xs:\n        t += x\n'), '    for x in xs:  (+1 line)');
  });
});

describe('package.json: the next-edit keys', () => {
  test('Tab and Escape act only while a next edit is shown and no inline suggestion is', () => {
    const bindings = (packageJson.contributes as { keybindings: Array<{ command: string; key: string; when: string }> }).keybindings;
    const tab = bindings.find((b) => b.command === EXTENSION_COMMANDS.acceptNextEdit);
    const escape = bindings.find((b) => b.command === EXTENSION_COMMANDS.dismissNextEdit);
    assert.equal(tab?.key, 'tab');
    assert.equal(escape?.key, 'escape');
    for (const binding of [tab, escape]) {
      assert.ok(binding?.when.includes(NEXT_EDIT_VISIBLE_CONTEXT), binding?.when);
      assert.ok(binding?.when.includes('!inlineSuggestionVisible'), binding?.when);
    }
  });
});
