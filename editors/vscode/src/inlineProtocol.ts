/**
 * `textDocument/inlineCompletion` both ways: VS Code's request → the LSP params, and the
 * server's answer → what VS Code can show as ghost text.
 *
 * The trigger kind is translated, not copied: VS Code numbers it Invoke = 0, Automatic = 1, while
 * LSP 3.18 (and the server's lsprotocol) has Invoked = 1, Automatic = 2. vscode-languageclient
 * 9 copies VS Code's number (it follows the 3.18 proposal, which used 0 and 1), so the server
 * would reject every explicitly triggered request and read typing as an explicit trigger.
 *
 * VS Code only shows an inline item whose range lies on the cursor's line and contains the
 * cursor (its API says the range "must begin and end on the same line"); an item without a
 * range is inserted at the cursor. The answer comes from another process, so it is checked
 * rather than trusted: malformed or empty items are dropped instead of failing the request.
 *
 * Pure: no `vscode` import; `client.ts` converts positions and ranges and builds the
 * `vscode.InlineCompletionItem`s.
 */

import type { Position, Range } from 'vscode-languageclient';

/** `vscode.InlineCompletionTriggerKind` (VS Code's own numbering). */
export const VSCODE_TRIGGER = { Invoke: 0, Automatic: 1 } as const;

/** `InlineCompletionTriggerKind` in LSP 3.18. */
export const LSP_TRIGGER = { Invoked: 1, Automatic: 2 } as const;

export type LspTriggerKind = (typeof LSP_TRIGGER)[keyof typeof LSP_TRIGGER];

/** VS Code's trigger kind as the server expects it; anything unknown counts as typing. */
export function lspTriggerKind(vscodeTriggerKind: number): LspTriggerKind {
  return vscodeTriggerKind === VSCODE_TRIGGER.Invoke ? LSP_TRIGGER.Invoked : LSP_TRIGGER.Automatic;
}

/** The item selected in the suggest widget, which the inline completion should extend. */
export interface SelectedCompletionInfo {
  range: Range;
  text: string;
}

/** `InlineCompletionParams` as LSP 3.18 defines them (not vscode-languageclient 9's proposal types). */
export interface InlineCompletionRequestParams {
  textDocument: { uri: string };
  position: Position;
  context: { triggerKind: LspTriggerKind; selectedCompletionInfo?: SelectedCompletionInfo };
}

export function inlineCompletionParams(
  uri: string,
  position: Position,
  vscodeTriggerKind: number,
  selectedCompletionInfo?: SelectedCompletionInfo,
): InlineCompletionRequestParams {
  const context: InlineCompletionRequestParams['context'] = { triggerKind: lspTriggerKind(vscodeTriggerKind) };
  if (selectedCompletionInfo) {
    context.selectedCompletionInfo = selectedCompletionInfo;
  }
  return { textDocument: { uri }, position: { line: position.line, character: position.character }, context };
}

/** A command the server asks the editor to run on accept (LSP `Command`). */
export interface ServerCommand {
  title: string;
  command: string;
  arguments: unknown[];
}

/** One item to show: `text` is plain text, or snippet syntax when `snippet` is true. */
export interface GhostText {
  text: string;
  snippet: boolean;
  /** Replaced by `text`; undefined: insert at the cursor. */
  range?: Range;
  filterText?: string;
  /**
   * Run by VS Code when the item is accepted whole (not on word or line accepts): the server's
   * `slm.accepted`, which computes the next suggestion at once.
   */
  command?: ServerCommand;
}

/** The item's `command`, when it is a well-formed LSP `Command`. */
function serverCommand(value: unknown): ServerCommand | undefined {
  if (!isObject(value) || typeof value.command !== 'string' || value.command === '') {
    return undefined;
  }
  if (value.arguments !== undefined && !Array.isArray(value.arguments)) {
    return undefined;
  }
  return {
    title: typeof value.title === 'string' ? value.title : value.command,
    command: value.command,
    arguments: Array.isArray(value.arguments) ? [...(value.arguments as unknown[])] : [],
  };
}

/** A plain object: not null, not an array. */
export function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** An LSP position from another process: whole, non-negative line and character. */
export function isPosition(value: unknown): value is Position {
  return (
    isObject(value) &&
    Number.isInteger(value.line) &&
    Number.isInteger(value.character) &&
    (value.line as number) >= 0 &&
    (value.character as number) >= 0
  );
}

export function isRange(value: unknown): value is Range {
  return isObject(value) && isPosition(value.start) && isPosition(value.end);
}

/** The items of a `textDocument/inlineCompletion` answer (a list, or an `InlineCompletionList`), unchecked. */
export function inlineItems(result: unknown): unknown[] {
  return Array.isArray(result) ? result : isObject(result) && Array.isArray(result.items) ? result.items : [];
}

/** Whether VS Code can show an item with `range` for a request at `position`. */
export function rangeFitsCursor(range: Range, position: Position): boolean {
  return (
    range.start.line === position.line &&
    range.end.line === position.line &&
    range.start.character <= position.character &&
    position.character <= range.end.character
  );
}

function ghostText(item: unknown, position: Position): GhostText | undefined {
  if (!isObject(item)) {
    return undefined;
  }
  const insert = item.insertText;
  let text: string;
  let snippet = false;
  if (typeof insert === 'string') {
    text = insert;
  } else if (isObject(insert) && insert.kind === 'snippet' && typeof insert.value === 'string') {
    text = insert.value;
    snippet = true;
  } else {
    return undefined;
  }
  if (text.length === 0) {
    return undefined;
  }
  let range: Range | undefined;
  if (item.range !== undefined && item.range !== null) {
    if (!isRange(item.range) || !rangeFitsCursor(item.range, position)) {
      return undefined;
    }
    range = { start: { ...item.range.start }, end: { ...item.range.end } };
  }
  const out: GhostText = { text, snippet };
  if (range) {
    out.range = range;
  }
  if (typeof item.filterText === 'string') {
    out.filterText = item.filterText;
  }
  const command = serverCommand(item.command);
  if (command) {
    out.command = command;
  }
  return out;
}

/** The showable items of an answer: an `InlineCompletionList`, a bare `InlineCompletionItem[]`, or null. */
export function ghostTexts(result: unknown, position: Position): GhostText[] {
  const items = inlineItems(result);
  const out: GhostText[] = [];
  for (const item of items) {
    const converted = ghostText(item, position);
    if (converted) {
      out.push(converted);
    }
  }
  return out;
}
