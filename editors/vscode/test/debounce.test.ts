import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, mock, test } from 'node:test';
// The token implementation vscode-languageclient uses under VS Code's own (same interface).
import { CancellationTokenSource } from 'vscode-jsonrpc/node';
import { elapsedMs, settle } from '../src/debounce';

/** Whether `promise` has settled yet, and with what. */
function track<T>(promise: Promise<T>): { done: boolean; value?: T } {
  const state: { done: boolean; value?: T } = { done: false };
  void promise.then((value) => {
    state.done = true;
    state.value = value;
  });
  return state;
}

const flush = () => new Promise<void>((resolve) => setImmediate(resolve));

describe('settle (the debounce)', () => {
  beforeEach(() => mock.timers.enable({ apis: ['setTimeout'] }));
  afterEach(() => mock.timers.reset());

  test('resolves true only once the whole delay has passed', async () => {
    const state = track(settle(150, new CancellationTokenSource().token));
    mock.timers.tick(149);
    await flush();
    assert.equal(state.done, false);
    mock.timers.tick(1);
    await flush();
    assert.deepEqual(state, { done: true, value: true });
  });

  test('a keystroke (cancellation) during the delay resolves false at once', async () => {
    const source = new CancellationTokenSource();
    const state = track(settle(150, source.token));
    mock.timers.tick(100);
    source.cancel();
    await flush();
    assert.deepEqual(state, { done: true, value: false });
    mock.timers.tick(100); // the timer was cleared: nothing changes
    await flush();
    assert.deepEqual(state, { done: true, value: false });
  });

  test('only the last request of a burst reaches the server', async () => {
    // VS Code cancels the previous request's token when it asks again.
    let previous: CancellationTokenSource | undefined;
    const requests = [0, 40, 80, 120].map((at) => ({ at, state: undefined as undefined | { done: boolean; value?: boolean } }));
    let now = 0;
    for (const request of requests) {
      mock.timers.tick(request.at - now);
      now = request.at;
      previous?.cancel();
      previous = new CancellationTokenSource();
      request.state = track(settle(100, previous.token));
    }
    mock.timers.tick(100);
    await flush();
    assert.deepEqual(requests.map((r) => r.state?.value), [false, false, false, true]);
  });

  test('an already cancelled token or no delay answers at once', async () => {
    const source = new CancellationTokenSource();
    source.cancel();
    assert.equal(await settle(150, source.token), false);
    assert.equal(await settle(0, new CancellationTokenSource().token), true);
    assert.equal(await settle(-5), true);
  });

  test('the cancellation listener is removed once the delay passed', async () => {
    let disposed = 0;
    const token = {
      isCancellationRequested: false,
      onCancellationRequested: () => ({ dispose: () => (disposed += 1) }),
    };
    const state = track(settle(10, token));
    mock.timers.tick(10);
    await flush();
    assert.deepEqual(state, { done: true, value: true });
    assert.equal(disposed, 1);
  });
});

describe('elapsedMs', () => {
  test('rounds to a tenth of a millisecond', () => {
    assert.equal(elapsedMs(100, 142.26), 42.3);
    assert.equal(elapsedMs(5, 5), 0);
  });
});
