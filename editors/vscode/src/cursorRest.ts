/**
 * Where the cursor came to rest (`slm/cursor`), the decision part: the cursor moved or an editor
 * got the focus (`moved`); once it has stayed put for `CURSOR_REST_MS` the place is sent, unless
 * it is on the document and line last sent to the same server. The server warms the completion
 * prompt there when it is another document or a jump (it applies the distance), so the pause in
 * which the user reads before typing evaluates the prompt and the first suggestion after a jump
 * or an editor switch is fast. `cursor.ts` feeds it VS Code's events.
 *
 * Pure: no `vscode` import; the Node tests load it.
 */

import type { Position } from 'vscode-languageclient';
import { nextEditParams, NextEditParams } from './nextEditProtocol';

/**
 * How long the cursor stays put before the server hears of it (as the Neovim plugin's): holding
 * an arrow key or scrolling sends nothing until it stops, and a glance longer than this is
 * already worth warming for.
 */
export const CURSOR_REST_MS = 300;

/** A place to tell the server about. */
export interface CursorPlace {
  /** The server it is for (the running client: a new one after each start), as an identity. */
  server: object;
  /** The document's URI and the cursor, as the protocol has them. */
  uri: string;
  position: Position;
}

/** The `slm/cursor` params: `{textDocument: {uri}, position}`, the same shape as `slm/nextEdit`'s. */
export function cursorParams(place: CursorPlace): NextEditParams {
  return nextEditParams(place.uri, place.position);
}

/** Whether `a` is on the line of `b`, in the same document, for the same server. */
function sameLine(a: CursorPlace, b: CursorPlace): boolean {
  return a.server === b.server && a.uri === b.uri && a.position.line === b.position.line;
}

export class CursorRest {
  private timer: ReturnType<typeof setTimeout> | undefined;
  private lastSent: CursorPlace | undefined;
  /** Counters, for tests and the log: rests sent, and rests on the line last sent (not sent). */
  readonly stats = { sent: 0, repeated: 0 };

  constructor(
    /** Sends `slm/cursor` for `place`; false when it could not (the server is not running). */
    private readonly send: (place: CursorPlace) => boolean,
    private readonly restMs = CURSOR_REST_MS,
  ) {}

  /**
   * The cursor is now at `place` (it moved, or its editor got the focus); `undefined`: in nothing
   * the server is told about. Restarts the wait: what is sent is where the cursor rests.
   */
  moved(place: CursorPlace | undefined): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (place) {
      this.timer = setTimeout(() => {
        this.timer = undefined;
        this.rested(place);
      }, this.restMs);
    }
  }

  /** The cursor rests at `place`: sends it unless it is on the line last sent. Returns whether it was sent. */
  rested(place: CursorPlace): boolean {
    if (this.lastSent && sameLine(this.lastSent, place)) {
      this.stats.repeated++;
      return false;
    }
    if (!this.send(place)) {
      return false;
    }
    this.lastSent = place;
    this.stats.sent++;
    return true;
  }

  /** Drops the place waiting to be sent (completions turned off, the extension going). */
  dispose(): void {
    this.moved(undefined);
  }
}
