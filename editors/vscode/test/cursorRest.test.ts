import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, mock, test } from 'node:test';
import { CURSOR_REST_MS, cursorParams, CursorPlace, CursorRest } from '../src/cursorRest';

const server = {};
const A = 'file:///work/a.py';
const B = 'file:///work/b.py';

const at = (uri: string, line: number, character = 4, on: object = server): CursorPlace => ({ server: on, uri, position: { line, character } });

/** A CursorRest whose sends are recorded; `accept` says whether the server takes them. */
function recorder(accept = () => true) {
  const sent: CursorPlace[] = [];
  const rest = new CursorRest((place) => {
    if (!accept()) {
      return false;
    }
    sent.push(place);
    return true;
  });
  return { rest, sent };
}

describe('CursorRest (when slm/cursor is sent)', () => {
  beforeEach(() => mock.timers.enable({ apis: ['setTimeout'] }));
  afterEach(() => mock.timers.reset());

  test('sends once the cursor has rested, where it rests: each move restarts the wait', () => {
    const { rest, sent } = recorder();
    rest.moved(at(A, 30));
    mock.timers.tick(CURSOR_REST_MS - 1);
    rest.moved(at(A, 60));
    mock.timers.tick(CURSOR_REST_MS - 1);
    rest.moved(at(A, 100, 7));
    mock.timers.tick(CURSOR_REST_MS - 1);
    assert.deepEqual(sent, []);
    mock.timers.tick(1);
    assert.deepEqual(sent, [at(A, 100, 7)]);
    mock.timers.tick(10 * CURSOR_REST_MS);
    assert.equal(sent.length, 1);
  });

  test('another line or another document is sent; the line last sent is not, whatever the column', () => {
    const { rest, sent } = recorder();
    for (const place of [at(A, 10), at(A, 10, 9), at(A, 11), at(B, 11), at(A, 11), at(A, 11, 0)]) {
      rest.moved(place);
      mock.timers.tick(CURSOR_REST_MS);
    }
    assert.deepEqual(sent, [at(A, 10), at(A, 11), at(B, 11), at(A, 11)]);
    assert.deepEqual(rest.stats, { sent: 4, repeated: 2 });
  });

  test('a new server (a restart) hears of the place even if the old one had it', () => {
    const { rest, sent } = recorder();
    assert.equal(rest.rested(at(A, 5)), true);
    assert.equal(rest.rested(at(A, 5)), false);
    const restarted = {};
    assert.equal(rest.rested(at(A, 5, 4, restarted)), true);
    assert.deepEqual(sent, [at(A, 5), at(A, 5, 4, restarted)]);
  });

  test('a place the server did not take is not remembered as sent', () => {
    let running = false;
    const { rest, sent } = recorder(() => running);
    assert.equal(rest.rested(at(A, 5)), false);
    running = true;
    assert.equal(rest.rested(at(A, 5)), true);
    assert.deepEqual(sent, [at(A, 5)]);
  });

  test('moving into nothing the server is told about (or disposing) drops the place waiting', () => {
    const { rest, sent } = recorder();
    rest.moved(at(A, 50));
    mock.timers.tick(CURSOR_REST_MS - 1);
    rest.moved(undefined);
    mock.timers.tick(10 * CURSOR_REST_MS);
    rest.moved(at(B, 3));
    rest.dispose();
    mock.timers.tick(10 * CURSOR_REST_MS);
    assert.deepEqual(sent, []);
  });

  test('the params are {textDocument: {uri}, position}', () => {
    assert.deepEqual(cursorParams(at(A, 100, 7)), { textDocument: { uri: A }, position: { line: 100, character: 7 } });
  });
});
