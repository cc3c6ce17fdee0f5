/**
 * Next-edit suggestions on the wire: the `slm/nextEdit` request, its answer, and what part of
 * the document an answer changes.
 *
 * `slm/nextEdit` takes `{textDocument: {uri}, position}` and answers `null` (no edit likely) or
 * `{range, newText, cause}`: replace `range` (anywhere in the editable region around the
 * position, not necessarily at the cursor) with `newText`. The server may also answer
 * `textDocument/inlineCompletion` with such a ranged item; VS Code shows an inline item only
 * when its range is on the cursor's line and contains the cursor (`rangeFitsCursor`), so the
 * others are turned into next edits here and shown by `nextEdit.ts`.
 *
 * The answer comes from another process, so it is checked rather than trusted. Positions are
 * LSP's UTF-16 code units, the same units as JavaScript string indices.
 *
 * Pure: no `vscode` import; the Node tests load it.
 */

import type { Position, Range } from 'vscode-languageclient';
import { inlineItems, isObject, isRange, rangeFitsCursor } from './inlineProtocol';

/** The `slm/nextEdit` params. */
export interface NextEditParams {
  textDocument: { uri: string };
  position: Position;
}

/** An edit to suggest: replace `range` with `newText`. */
export interface NextEdit {
  range: Range;
  newText: string;
  /** Why the server suggests it (e.g. `next-edit`), when it says. */
  cause?: string;
}

export function nextEditParams(uri: string, position: Position): NextEditParams {
  return { textDocument: { uri }, position: { line: position.line, character: position.character } };
}

/** Whether `a` comes after `b`. */
function after(a: Position, b: Position): boolean {
  return a.line > b.line || (a.line === b.line && a.character > b.character);
}

/** A well-formed range whose start does not come after its end. */
function isOrderedRange(value: unknown): value is Range {
  return isRange(value) && !after(value.start, value.end);
}

/** A `slm/nextEdit` answer as an edit; undefined for `null` or anything malformed. */
export function nextEditFrom(result: unknown): NextEdit | undefined {
  if (!isObject(result) || typeof result.newText !== 'string' || !isOrderedRange(result.range)) {
    return undefined;
  }
  const edit: NextEdit = {
    range: { start: { ...result.range.start }, end: { ...result.range.end } },
    newText: result.newText,
  };
  if (typeof result.cause === 'string') {
    edit.cause = result.cause;
  }
  return edit;
}

/**
 * The items of a `textDocument/inlineCompletion` answer that VS Code cannot show as ghost text
 * (a plain-text item whose range leaves the cursor's line or does not contain the cursor), as
 * next edits. `ghostTexts` drops the same items.
 */
export function rangedEdits(result: unknown, position: Position): NextEdit[] {
  const items = inlineItems(result);
  const out: NextEdit[] = [];
  for (const item of items) {
    if (!isObject(item) || typeof item.insertText !== 'string' || !isOrderedRange(item.range)) {
      continue;
    }
    if (rangeFitsCursor(item.range, position)) {
      continue;
    }
    out.push({ range: { start: { ...item.range.start }, end: { ...item.range.end } }, newText: item.insertText });
  }
  return out;
}

/** The position after `text` written from `start`. */
export function advance(start: Position, text: string): Position {
  const lines = text.split('\n');
  if (lines.length === 1) {
    return { line: start.line, character: start.character + text.length };
  }
  return { line: start.line + lines.length - 1, character: lines[lines.length - 1].length };
}

/** What an edit changes, with the text it keeps at either end left out. */
export interface EditHunk {
  /** The text removed (empty for a pure insertion: start = end). */
  removed: Range;
  removedText: string;
  /** The text that replaces it. */
  added: string;
}

/** A letter, digit, `_` or any non-ASCII code unit (never a cut between two halves of a character). */
function isWordUnit(code: number): boolean {
  return !Number.isNaN(code) && (code >= 0x80 || /[A-Za-z0-9_]/.test(String.fromCharCode(code)));
}

/**
 * The part of `edit` that changes `oldText` (the document's text in `edit.range`); undefined
 * when nothing changes. The text kept is cut only between words, so a rename shows the whole old
 * word removed and the whole new one added (and a surrogate pair is never split).
 */
export function editHunk(edit: NextEdit, oldText: string, lineBefore = '', lineAfter = ''): EditHunk | undefined {
  if (oldText === edit.newText) {
    return undefined;
  }
  // A range that starts or ends inside a word (a minimal replacement may turn `r` into `radius`
  // by adding `adius`) is widened to the whole word on both sides (`lineBefore`: its line before
  // the range, `lineAfter`: after it); trimming below undoes that wherever no word is cut.
  const head = /[A-Za-z0-9_\u0080-\uffff]*$/.exec(lineBefore)?.[0] ?? '';
  const tail = /^[A-Za-z0-9_\u0080-\uffff]*/.exec(lineAfter)?.[0] ?? '';
  if (head || tail) {
    const start = { line: edit.range.start.line, character: edit.range.start.character - head.length };
    const end = { line: edit.range.end.line, character: edit.range.end.character + tail.length };
    return editHunk({ range: { start, end }, newText: head + edit.newText + tail }, head + oldText + tail);
  }
  const next = edit.newText;
  const limit = Math.min(oldText.length, next.length);
  let prefix = 0;
  while (prefix < limit && oldText.charCodeAt(prefix) === next.charCodeAt(prefix)) {
    prefix++;
  }
  while (prefix > 0 && isWordUnit(oldText.charCodeAt(prefix - 1)) && (isWordUnit(oldText.charCodeAt(prefix)) || isWordUnit(next.charCodeAt(prefix)))) {
    prefix--;
  }
  let suffix = 0;
  while (
    suffix < limit - prefix &&
    oldText.charCodeAt(oldText.length - 1 - suffix) === next.charCodeAt(next.length - 1 - suffix)
  ) {
    suffix++;
  }
  while (
    suffix > 0 &&
    isWordUnit(oldText.charCodeAt(oldText.length - suffix)) &&
    (isWordUnit(oldText.charCodeAt(oldText.length - suffix - 1)) || isWordUnit(next.charCodeAt(next.length - suffix - 1)))
  ) {
    suffix--;
  }
  const removedText = oldText.slice(prefix, oldText.length - suffix);
  const start = advance(edit.range.start, oldText.slice(0, prefix));
  return {
    removed: { start, end: advance(start, removedText) },
    removedText,
    added: next.slice(prefix, next.length - suffix),
  };
}

/** Whether `position` lies in `range` (ends included). */
export function contains(range: Range, position: Position): boolean {
  return !after(range.start, position) && !after(position, range.end);
}

/** Added text as a decoration shows it (one line): its first line, and how many more. */
export function addedLabel(added: string): string {
  const lines = added.split('\n');
  // An addition that starts with a line break (lines added after a line's end) reads from the next line.
  if (lines.length > 1 && lines[0] === '') {
    lines.shift();
  }
  // Whole lines added end with a line break: no line after it.
  if (lines.length > 1 && lines[lines.length - 1] === '') {
    lines.pop();
  }
  const more = lines.length - 1;
  return more > 0 ? `${lines[0]}  (+${more} line${more === 1 ? '' : 's'})` : lines[0];
}
